"""Digits → Digits-M: the NTDH paper's MNIST → MNIST-M on scikit-learn's bundled data.

  xdistill run --config=configs/digits_m.py --workdir=runs/digits_m

The teacher sees the grey 8 × 8 digit (64 features), the student the RGB Digits-M image
(192 features): the digit blended into a random 8 × 8 crop of one of scikit-learn's two
sample photographs by the MNIST-M rule, mixed by the gap α (0: the digit in colour; 1: full
Digits-M; xdistill_jax/datasets.py). 5 values of α × 10 seeds; per setting a teacher, a
baseline student and one student per method (KL, KL+ω, DKD, DKD+ω), MLPs 64/192 → 32 → 10
trained as the authors train on MNIST: minibatch SGD, batch 128, learning rate 1e-3,
momentum 0.9, CE : KD = 0.5 : 0.5. The authors' 50 epochs over 60,000 MNIST digits are
~23,000 steps; on 1,024 training digits (8 batches an epoch) `epochs` sets the steps.
Writes results.csv, summary.csv, bounds.json, digits_m.md (per α: accuracies, Δ, TCKD,
NCKD; Spearman ρ(Δ, NCKD) per method with a bootstrap 95 % interval), correlation.json,
digits_m.png, digits_m_examples.png and digits_m_bounds_kl.png.
Measured: 98 s wall (174 s CPU) end to end, cold, on a quiet 2-core CPU (load ≈ 1.7).
Variants: the authors' noise dial as a second gap axis --config.noises='(0.0,0.5)';
longer training --config.epochs=800 (teacher 94.7 % instead of 92.8 %, on 4 seeds).
"""

from xdistill_jax.experiments import base


def get_config():
  config = base.common_config('digits_m')
  config.alphas = (0.0, 0.25, 0.5, 0.75, 1.0)  # the gap α (traced: one compiled program)
  config.noises = (0.0,)  # σ of additive N(0, σ²) pixel noise on the student's images
  config.runs = 10  # seeds: split, noise draw, initialisation, batch order
  config.n_train = 1024  # of the 1,797 digits; the other 773 are the test set
  config.hidden = (32,)  # MLP hidden widths (teacher and students)
  config.epochs = 400  # 8 minibatches each: 3,200 SGD steps per model
  config.batch_size = 128
  config.learning_rate = 1e-3
  config.momentum = 0.9
  config.temperature = 1.0
  config.ce_weight = 0.5
  config.kd_weight = 0.5
  config.dkd_alpha = 1.0  # DKD, DKD+ω: T²(α TCKD + β NCKD)
  config.dkd_beta = 1.0
  config.omega_threshold = 0.996  # cosine threshold of the sample mask ω
  config.threshold = 0.5  # binarisation level of the digit in the MNIST-M rule
  config.methods = ('kl', 'kl_omega', 'dkd', 'dkd_omega')
  # 5 settings vmapped per CPU device: 2 devices × 5 divide the 50 settings (the default 8
  # would pad them to 64); on an accelerator --config.sweep.vmap_width=-1.
  config.sweep.vmap_width = 5
  return config
