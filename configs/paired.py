"""NTDH Table 1 on your own paired arrays: teacher, baseline and all nine KD methods × seeds.

  xdistill run --config=configs/paired.py --config.data=PAIRS.npz --workdir=runs/paired

PAIRS.npz holds x_a [n, d_a] (the teacher's modality), x_b [n, d_b] (the student's), y [n]
(integer labels 0..K−1) and optionally split [n] (0 train, 1 test; without it every seed
draws its own split, test_fraction of the rows for testing). The file is checked before
anything compiles (a missing key, mismatched rows, NaN or infinite features, bad labels or
split: one line `xdistill: error: …`, exit 2). Defaults: protocol G's training (linear
models, 1000 full-batch SGD steps at learning rate 0.1, T = 0.7) and its Table-1 method
weights (configs/ntdh_table1.py), on standardised features; 10 seeds. MLPs:
--config.hidden='(32,)'. Writes results.csv, summary.csv, bounds.json, table1.csv,
table1.md, paired_divergence.png and paired_bounds.png.
Measured: 2,000 rows × (50 + 50) features (4 classes), 10 seeds, all nine methods: 85 s
wall (148 s CPU) end to end, cold, on a quiet 2-core CPU (load ≈ 1.7). The data are
constants of the compiled program, so each file compiles anew.
"""

from xdistill_jax import config_files
from xdistill_jax.experiments import base


def get_config():
  config = base.common_config('paired')
  config.data = ''  # the .npz file (required: --config.data=PAIRS.npz)
  config.num_classes = 0  # K; 0 = one more than the largest label
  config.standardize = True  # z-score every feature column over the whole file
  config.runs = 10  # seeds: split (without `split` in the file) and initialisation
  config.test_fraction = 0.5  # of the rows, when the file has no `split`
  config.hidden = ()  # () = linear softmax regression; (32,) = MLP d → 32 → K
  config.steps = 1000  # full-batch SGD steps of every model
  config.learning_rate = 0.1
  config.margin_rho = 1.0  # logit margin of the N4 margin bound (linear models)
  table1 = config_files.sibling(__file__, 'ntdh_table1')
  config.methods = ('kl', 'kl_omega', 'crd', 'fitnet', 'rkd', 'pkt', 'sp', 'dkd', 'dkd_omega')
  config.temperature = 0.7
  config.ce_weight = 1.0
  config.kd_weight = 1.0
  config.crd_dim = 8
  config.crd_temperature = 0.07
  config.omega_threshold = 0.996
  config.rkd_distance_weight = 25.0
  config.rkd_angle_weight = 50.0
  config.update(table1.method_weights('G'))
  config.relational_batch = 0  # rows the relational terms see; 0 = every training row
  config.rkd_angle_rows = 16  # RKD on a fixed 3 × 16-row sample (0 = exact full batch)
  return config
