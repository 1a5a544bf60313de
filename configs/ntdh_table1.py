"""NTDH Table 1: all nine KD methods (KL, KL+ω, CRD, FitNet, RKD, PKT, SP, DKD, DKD+ω).

  xdistill run --config=configs/ntdh_table1.py --workdir=runs/table1_g
  xdistill run --config=configs/ntdh_table1.py:S --workdir=runs/table1_s
  (equivalently --config.protocol=S)

Protocol G (default): 6 overlaps × 100 seeds = 600 settings; per setting the teacher and the
baseline train once, then the nine students (a loop of 1000 full-batch steps each).
Writes results.csv / summary.csv (one row per setting × method), table1.csv, table1.md
(Δ mean ± std per method × overlap, best per column in bold), ntdh_table1_divergence.png
(Δ against the measured divergence with Spearman ρ; effect of ω) and
ntdh_table1_bounds.png. Measured: 47 s end to end on a 2-core CPU, cold (~7 s of it
compiling; benchmarks/bench_table1.py).

Protocol S: 5 overlaps × 20 seeds, MLP 50 → 16 → 16 → 4 on 6000 examples: much heavier
(10 seeds took 14.5 min on the shared 2-core CPU). Smaller: --config.S.runs=3; fewer
methods: --config.methods="('kl','kl_omega','dkd','dkd_omega')". The relational terms see a
fixed 256-example subset per setting on S (--config.S.relational_batch), RKD a 48-example
minibatch on both protocols (--config.G.rkd_angle_rows=0 for exact full-batch RKD).
"""

from xdistill_jax.experiments import ntdh_table1


def get_config(protocol='G'):
  return ntdh_table1.default_config(protocol or 'G')
