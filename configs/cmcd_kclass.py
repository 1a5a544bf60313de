"""CMCD against the number of classes: does CMC's deficit come from same-class negatives?

  xdistill run --config=configs/cmcd_kclass.py --workdir=runs/cmcd_kclass

With K classes about M/K of a batch's M in-batch negatives share the anchor's class, the
explanation docs/protocols.md §C gives for CMC's failure at τ = 0.1. K ∈ {2, 8, 32} (inner
axis `num_classes`: one copy of the pipeline per K in one compiled program, every K on the same
key), in a latent of dimension d = 32 (class means 2·e_k, balls of radius 1; observations in
R⁴⁸ and R⁴⁰), encoders 64 × 2 → 32-d features (so that 32 classes fit), m = 64 labels (2 per
class at K = 32), M = 256 pairs, ε = 0 × 10 seeds = 10 settings, methods CMD, CMC, L2 and
target-only, the three temperature profiles of configs/cmcd_tv.py selected on 64 labelled
target validation examples. Writes the files of configs/cmcd_tv.py (its figures at K = 32)
and cmcd_error_vs_classes.png; cmcd_table.md has a block per K. Measured cost: see docs/protocols.md §C. Smaller:
--config.num_classes='(2,32)' --config.runs=4.
"""

from xdistill_jax import config_files


def get_config():
  config = config_files.sibling(__file__, 'cmcd_tv').get_config()
  config.epsilons = (0.0,)  # no gap: the question is the loss, not the TV
  config.runs = 10
  config.methods = ('cmd', 'cmc', 'l2', 'target_only')
  config.num_classes = (2, 8, 32)
  config.latent_dim = 32
  config.obs_dim_a, config.obs_dim_b = 48, 40
  config.width = 64
  config.feature_dim = config.proj_dim = 32
  config.m_labelled = (64,)
  config.n_labelled = 128  # 64 training labels + 64 validation
  config.sweep.vmap_width = 5  # 10 settings: groups of 5 divide them on 1 or 2 devices
  return config
