"""NTDH Table 1: all nine KD methods (KL, KL+ω, CRD, FitNet, RKD, PKT, SP, DKD, DKD+ω).

  xdistill run --config=configs/ntdh_table1.py --workdir=runs/table1_g
  xdistill run --config=configs/ntdh_table1.py:S --workdir=runs/table1_s
  (equivalently --config.protocol=S: the S node carries protocol S's own weights; on a CPU
  protocol S runs one setting per vmap group, `ntdh_kclass.CPU_VMAP_WIDTH`)

Protocol G (default): 6 overlaps × 100 seeds = 600 settings; per setting the teacher and the
baseline train once, then the nine students (a loop of 1000 full-batch steps each).
Writes results.csv / summary.csv (one row per setting × method), table1.csv, table1.md
(Δ mean ± std per method × overlap, best per column in bold), ntdh_table1_divergence.png
(Δ against the measured divergence with Spearman ρ; effect of ω) and
ntdh_table1_bounds.png. Measured: 47 s end to end on a 2-core CPU, cold (~7 s of it
compiling; benchmarks/bench_table1.py).

Protocol S: 5 overlaps × 20 seeds, MLP 50 → 16 → 16 → 4 on 6000 examples: much heavier
(10 seeds: 7.6 min end to end, cold, on a quiet 2-core CPU). Smaller: --config.S.runs=3; fewer
methods: --config.methods="('kl','kl_omega','dkd','dkd_omega')". The relational terms see a
fixed 256-example subset per setting on S (--config.S.relational_batch), RKD a 48-example
minibatch on both protocols (--config.G.rkd_angle_rows=0 for exact full-batch RKD).

Method weights per protocol (docs/protocols.md §T), in the nodes G and S: on G the authors'
`gauss/main.py` (CE : term = 1 : 1, CRD 1 : 0.02, DKD α = β = 1, T = 0.7); on S the
authors' protocol-S settings of `sklearn/main.py`: KD and KL+ω at T = 1, DKD and DKD+ω with
α = 16, β = 1, T = 0.7, CRD + KL (1 : 1), 0.1 · FitNet hint + KL, RKD + 0.1 · KL, PKT and
SP + KL as on G. `:S_g_weights` runs protocol S with the protocol-G weights (the defaults of
S before they followed the authors' script); single fields: --config.S.dkd_alpha=1 etc.
"""

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax.experiments import base


def method_weights(protocol: str) -> dict:
  """The per-protocol method settings: the authors' Table-1 scripts (docs/protocols.md §T)."""
  weights = {  # protocol G (gauss/main.py): CE : term = 1 : 1, except CRD 1 : 0.02
      'dkd_alpha': 1.0, 'dkd_beta': 1.0, 'dkd_temperature': 0.7,
      'crd_weight': 0.02, 'crd_kl_weight': 0.0,  # CRD alone
      'fitnet_weight': 1.0, 'fitnet_kl_weight': 0.0,  # hint alone
      'rkd_kl_weight': 0.0,  # RKD alone
  }
  if protocol == 'S':  # sklearn/main.py; KD and KL+ω at the protocol's T = 1
    weights |= {'dkd_alpha': 16.0,  # DKD and DKD+ω: α = 16, β = 1, T = 0.7
                'crd_weight': 1.0, 'crd_kl_weight': 1.0,  # CRD + KL
                'fitnet_weight': 0.1, 'fitnet_kl_weight': 1.0,  # 0.1 · hint + KL
                'rkd_kl_weight': 0.1}  # RKD + 0.1 · KL
  return weights


def get_config(protocol='G'):
  """protocol: 'G', 'S' (the authors' protocol-S weights) or 'S_g_weights' (protocol S with
  protocol G's method weights, the defaults of S before they followed the authors' script)."""
  protocol = protocol or 'G'
  if protocol not in ('G', 'S', 'S_g_weights'):
    raise config_schema.ConfigError(
        f'configs/ntdh_table1.py:{protocol} is invalid; allowed: G, S or S_g_weights.')
  config = base.common_config('ntdh_table1')
  config.protocol = protocol[0]  # which of the nodes G and S below the sweep runs
  config.methods = ('kl', 'kl_omega', 'crd', 'fitnet', 'rkd', 'pkt', 'sp', 'dkd', 'dkd_omega')
  # Shared by both protocols (docs/protocols.md §T):
  config.ce_weight = 1.0
  config.kd_weight = 1.0  # KL, KL+ω, PKT, SP, DKD, DKD+ω and the scale of RKD
  config.crd_dim = 8  # CRD's embedding dimension
  config.crd_temperature = 0.07
  config.omega_threshold = 0.996  # cosine threshold of the sample mask ω
  config.rkd_distance_weight = 25.0
  config.rkd_angle_weight = 50.0
  config.G = config_files.sibling(__file__, 'ntdh_overlap').protocol_g()
  config.G.update(method_weights('G'))
  config.G.relational_batch = 0  # 0 = the whole batch (n = 200)
  config.G.rkd_angle_rows = 16  # RKD on a fixed 3×16-row minibatch (16³ angle triplets)
  kclass = config_files.sibling(__file__, 'ntdh_kclass')
  config.S = kclass.protocol_s()
  config.S.update(method_weights('G' if protocol == 'S_g_weights' else 'S'))
  config.S.relational_batch = 256  # of 6000 training examples
  config.S.rkd_angle_rows = 16
  return config
