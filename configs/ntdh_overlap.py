"""NTDH protocol G, the paper's Figures 3 and 4: decisive-feature overlap × 100 seeds.

  xdistill run --config=configs/ntdh_overlap.py --workdir=runs/ntdh_overlap

Trains 600 settings × (teacher, baseline student, KD student) × 1000 full-batch SGD steps in
one compiled, vmapped program and writes results.csv, summary.csv, bounds.json, config.json,
ntdh_overlap.png and ntdh_overlap_bounds.png. On a 2-core CPU the whole process takes about
10 s the first time (most of the difference XLA compilation) and 3–5 s on a re-run, which
loads the compiled program from the cache (BENCHMARKS.md).
Smaller: --config.runs=10; fewer overlaps: --config.overlaps='(0,10)'.
"""

import ml_collections

from xdistill_jax.experiments import base


def protocol_g() -> ml_collections.ConfigDict:
  """Protocol G's data, model and training numbers (docs/protocols.md §G)."""
  config = ml_collections.ConfigDict()
  config.overlaps = (0, 2, 4, 6, 8, 10)  # o; a tuple: ml_collections overrides tuples, not lists
  config.runs = 100  # seeds per overlap
  config.num_decisive = 20  # D: decisive features, hyperplane a ~ N(0, I_D)
  config.student_decisive = 10  # s: the student sees decisive features 0..s-1
  config.dim = 25  # columns per modality (decisive features + N(0, 1) noise)
  config.n_train = 200
  config.n_test = 1000
  config.steps = 1000  # full-batch SGD steps of every model
  config.learning_rate = 0.1
  config.temperature = 0.7  # T of the KD term, no T² factor
  config.margin_rho = 1.0  # logit margin ρ of the margin bound (N4)
  return config


def get_config():
  config = base.common_config('ntdh_overlap')
  config.update(protocol_g())
  config.ce_weight = 1.0  # KD student: ce_weight · CE + kd_weight · KL(p_t^T ‖ p_s^T)
  config.kd_weight = 1.0
  config.moments = 5  # K of CMD_K between the raw inputs and between the softmax outputs
  return config
