"""Real-image overlap on scikit-learn's bundled digits: Δ per KD method against the overlap.

  xdistill run --config=configs/digits_overlap.py --workdir=runs/digits_overlap

The student sees pixel columns 0..3 of each 8 × 8 digit, the teacher columns (4−o)..(7−o),
o ∈ {0, 1, 2, 3, 4} shared columns (xdistill_jax/generators/digits_bands.py), other pixels
zeroed; 200 random training images per seed, the other 1,597 for testing. 5 overlaps × 20
seeds = 100 settings; each trains a linear teacher, a linear baseline student and one linear
student per KD method (kl, kl_omega, dkd, dkd_omega: one results row each) for 300 full-batch
SGD steps, all in one compiled, vmapped program: about 22 s of CPU time on 2 cores, most of it
compilation (53 s wall on a heavily shared 2-core machine). The images come with
scikit-learn (a dependency of the package); nothing is downloaded.

Writes results.csv (one row per overlap × seed × method), summary.csv (per method × overlap),
bounds.json, config.json, correlation.json (Spearman ρ between Δ and the non-target
divergence nckd_test), digits_overlap.png (accuracy, Δ and NCKD against the overlap),
digits_overlap_delta_vs_nckd.png and digits_overlap_bounds_kl.png (bounds for the first method).
Variants: --config.fill=noise (hidden pixels replaced by label-free pixel noise);
--config.hidden='(32,)' --config.momentum=0.9 --config.learning_rate=0.3 (MLPs 64 → 32 → 10,
trained until they interpolate the training set, so ω = 1 everywhere); --config.runs=5.
"""

from xdistill_jax.experiments import base


def get_config():
  config = base.common_config('digits_overlap')
  config.overlaps = (0, 1, 2, 3, 4)  # shared pixel columns o
  config.runs = 20  # seeds: split + noise + initialisation
  config.band_width = 4  # w: pixel columns per modality
  config.fill = 'zero'  # hidden pixels: 'zero' or 'noise' (see generators/digits_bands.py)
  config.n_train = 200  # 20 images per class on average: the small-data regime of KD
  config.n_test = 1597  # the rest of the 1,797 images
  # Softmax regression 64 → 10 (as protocol G's linear models; adds the N4 margin bound);
  # (32,) = MLP 64 → 32 → 10 with ReLU.
  config.hidden = ()
  # Full-batch SGD, not run to convergence: the teacher still errs on a few per cent of its
  # training images, which is where the sample mask ω acts (a teacher that interpolates its
  # training set has ω = 1 everywhere and KL+ω = KL).
  config.steps = 300
  config.learning_rate = 0.5
  config.momentum = 0.0  # heavy-ball momentum; 0 = plain SGD
  config.temperature = 0.7  # protocol G's T (docs/protocols.md §T)
  config.ce_weight = 1.0
  config.kd_weight = 1.0
  config.dkd_alpha = 1.0  # DKD, DKD+ω: T²(α TCKD + β NCKD) at T
  config.dkd_beta = 1.0
  config.mask_threshold = 0.996  # cosine threshold τ of ω
  config.methods = ('kl', 'kl_omega', 'dkd', 'dkd_omega')  # one student (and row) each
  config.margin_rho = 1.0  # N4 margin (linear models only)
  return config
