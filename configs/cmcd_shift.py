"""CMCD on an alignable gap against a broken correspondence at the same TV (docs/protocols.md §C).

  xdistill run --config=configs/cmcd_shift.py --workdir=runs/cmcd_shift

Gaussian latents z = μ_y + σ·g (σ = 0.5, means 2·e_k, K = 8 in d = 8: source Bayes error
0.014). Traced gap ‖δ‖ ∈ {0, 0.5, 1, 1.5, 2}, whose closed-form TV 2Φ(‖δ‖/(2σ)) − 1 is 0,
0.38, 0.68, 0.87, 0.95 (the x-axis), in two families: `shift` (z_B = z_A + δ along the last
latent axis, class 7's: pairs stay in correspondence, an encoder can undo it, the target Bayes
error stays 0.014) and `broken` (no shift; the correspondence broken with probability ε = that
TV: target Bayes error 0.014 + ε(1 − 1/K − 0.014), nothing can undo it). 2 families × 5 gaps ×
6 seeds = 60 settings, each with the pipeline of configs/cmcd_tv.py (all six methods, M = 256
pairs, m = 16 labels, temperature profiles default / 0.5 / 1 selected on 64 labelled target
validation examples), one compiled program; every family and gap of a seed shares draws and
initialisations. Writes results.csv, summary.csv, bounds.json, config.json, cmcd_table.md /
.csv (method × ‖δ‖ per family), cmcd_shift_error_vs_tv.png and cmcd_shift_tv_estimate.png.
Measured cost: see docs/protocols.md §C. Smaller: --config.runs=3 --config.shift_norms='(0,1,2)';
one family: --config.families='("shift",)'.
"""

from xdistill_jax import config_files


def get_config():
  config = config_files.sibling(__file__, 'cmcd_tv').get_config()
  config.experiment = 'cmcd_shift'
  del config['epsilons'], config['latent_radius']  # the gap is ‖δ‖; the latents are Gaussian
  config.families = ('shift', 'broken')
  config.shift_norms = (0.0, 0.5, 1.0, 1.5, 2.0)  # ‖δ‖; TV = 2Φ(‖δ‖/(2σ)) − 1
  config.latent_sigma = 0.5  # σ of the class conditionals N(2·e_k, σ²I)
  config.runs = 6
  config.sweep.vmap_width = 6  # 60 settings: groups of 6 divide them on 1 or 2 devices
  return config
