"""Real-image overlap on scikit-learn's bundled digits: Δ per KD method against the overlap.

  xdistill run --config=configs/digits_overlap.py --workdir=runs/digits_overlap

The student sees pixel columns 0..3 of each 8 × 8 digit, the teacher columns (4−o)..(7−o),
o ∈ {0, 1, 2, 3, 4} shared columns (xdistill_jax/generators/digits_bands.py), other pixels
zeroed; 200 random training images per seed, the other 1,597 for testing. 5 overlaps × 20
seeds = 100 settings; each trains a linear teacher, a linear baseline student and one linear
student per KD method (kl, kl_omega, dkd, dkd_omega: one results row each) for 300 full-batch
SGD steps, all in one compiled, vmapped program: about 22 s of CPU time on 2 cores, most of it
compilation (53 s wall on a heavily shared 2-core machine). Needs scikit-learn
(pip install "xdistill_jax[digits]"); nothing is downloaded.

Writes results.csv (one row per overlap × seed × method), summary.csv (per method × overlap),
bounds.json, config.json, correlation.json (Spearman ρ between Δ and the non-target
divergence nckd_test), digits_overlap.png (accuracy, Δ and NCKD against the overlap),
digits_overlap_delta_vs_nckd.png and digits_overlap_bounds_kl.png (bounds for the first method).
Variants: --config.fill=noise (hidden pixels replaced by label-free pixel noise);
--config.hidden='(32,)' --config.momentum=0.9 --config.learning_rate=0.3 (MLPs 64 → 32 → 10,
trained until they interpolate the training set, so ω = 1 everywhere); --config.runs=5.
"""

from xdistill_jax.experiments import digits_overlap


def get_config():
  return digits_overlap.default_config()
