"""NTDH protocol G, the paper's Figures 3 and 4: decisive-feature overlap × 100 seeds.

  xdistill run --config=configs/ntdh_overlap.py --workdir=runs/ntdh_overlap

Trains 600 settings × (teacher, baseline student, KD student) × 1000 full-batch SGD steps in
one compiled, vmapped program (a few seconds on a 2-core CPU) and writes results.csv,
summary.csv, bounds.json, config.json, ntdh_overlap.png and ntdh_overlap_bounds.png.
Smaller: --config.runs=10; fewer overlaps: --config.overlaps='(0,10)'.
"""

from xdistill_jax.experiments import ntdh_overlap


def get_config():
  return ntdh_overlap.default_config()
