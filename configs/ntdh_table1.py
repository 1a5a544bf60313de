"""NTDH Table 1: all nine KD methods (KL, KL+ω, CRD, FitNet, RKD, PKT, SP, DKD, DKD+ω).

  xdistill run --config=configs/ntdh_table1.py --workdir=runs/table1_g
  xdistill run --config=configs/ntdh_table1.py:S --workdir=runs/table1_s
  (equivalently --config.protocol=S)

Protocol G (default): 6 overlaps × 100 seeds = 600 settings; per setting the teacher and the
baseline train once and the nine students train in one fused loop (1000 full-batch steps).
Writes results.csv / summary.csv (one row per setting × method), table1.csv, table1.md
(Δ mean ± std per method × overlap, best per column in bold), ntdh_table1_divergence.png
(Δ against the measured divergence with Spearman ρ; effect of ω) and
ntdh_table1_bounds.png. About a minute on an idle 2-core CPU.

Protocol S: 5 overlaps × 20 seeds, MLP 50 → 16 → 16 → 4 on 6000 examples: much heavier
(tens of minutes on 2 CPU cores; seconds per setting on a GPU). Smaller:
--config.S.runs=3, fewer methods: --config.methods="('kl','kl_omega','dkd','dkd_omega')".
"""

from xdistill_jax.experiments import ntdh_table1


def get_config(protocol='G'):
  return ntdh_table1.default_config(protocol or 'G')
