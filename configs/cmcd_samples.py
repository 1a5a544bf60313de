"""CMCD sample sizes: target error and bounds against m labels and M pairs at a fixed gap.

  xdistill run --config=configs/cmcd_samples.py --workdir=runs/cmcd_samples

ε = 0.2 (exact TV; Bayes floor 0.175 with K = 8) × 20 seeds = 20 settings. Inside each, the
source encoder is pre-trained once; every method is trained for every number of unlabelled
pairs M ∈ {32, 64, 128, 256} (inner axis `num_pairs`) in one fused loop, and every probe /
target-only model for every number of labels m ∈ {8, 16, 32, 64, 128} (inner axis
`m_labelled`, stacked and masked so that one program serves all m). 20 × 4 × 5 × 6 = 2400
results rows. Writes results.csv, summary.csv, bounds.json, config.json,
cmcd_error_vs_samples.png (error against m and against M, log x, with the floor and C3),
cmcd_tv_estimate.png and cmcd_bounds_<method>.png (bounds against m at M = 256), at two
temperature profiles (the defaults and τ = 0.5, selected on 64 validation labels; the
figures show the defaults, cmcd_table.md both). About 1 minute per profile on a 2-core CPU. Other sizes:
--config.m_labelled='(8,32,128)' --config.num_pairs='(64,256)'; other gap:
--config.epsilons='(0.4,)'.
"""

from xdistill_jax import config_files


def get_config():
  config = config_files.sibling(__file__, 'cmcd_tv').get_config()
  config.epsilons = (0.2,)
  config.runs = 20
  config.num_pairs = (32, 64, 128, 256)
  config.m_labelled = (8, 16, 32, 64, 128)
  config.temperature_grid = (0.5,)  # one extra profile beside the defaults (cost ×2, not ×5)
  config.n_labelled = 192  # max m = 128 training labels + 64 validation
  config.sweep.vmap_width = 5  # 20 settings = 2 groups of 5 on each of 2 devices, none padded
  return config
