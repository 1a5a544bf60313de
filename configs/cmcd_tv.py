"""CMCD ε sweep (docs/protocols.md §C): target error of every method against the exact gap ε.

  xdistill run --config=configs/cmcd_tv.py --workdir=runs/cmcd_tv

7 gaps ε = 0, 0.1, …, 0.6 × 10 seeds = 70 settings; in each, one InfoNCE-pre-trained source
encoder and all six methods (CMD, CMC, CMC B→A, L2, target-only, target SSL + probe) trained in
one fused loop, on M = 256 unlabelled pairs and m = 16 labelled target examples, at three
temperature profiles (the defaults below and τ = 0.5, 1: inner axis `temperature`), selected per
seed and method on 64 labelled target validation examples. One compiled, vmapped program;
measured 176 s end to end, cold, on a quiet 2-core CPU (323 CPU-s; one profile alone was
about 1 minute; docs/protocols.md §C says how the grid was sized). Writes results.csv (one row per setting ×
profile × method), summary.csv, bounds.json, config.json, cmcd_table.md / cmcd_table.csv
(method × ε at the validation-selected and at the default temperatures) and, at the default
temperatures, the figures cmcd_error_vs_epsilon.png, cmcd_tv_estimate.png and
cmcd_bounds_<method>.png. Fewer profiles: --config.temperature_grid='(0.5,)' (the grid may
not be empty).

Sizes (chosen for a ≤ 3 min budget): latent d = 8, K = 8 classes (class balls of radius 1 at
2·e_k), observations in R^16 (A) and R^12 (B); ReLU MLP encoders 32 × 2 → 16-d normalised
features, projection heads 32 → 16 (SSL only); 256 unlabelled source examples for InfoNCE;
full-batch Adam, 300 steps per stage (pre-training, distillation, probes); 1000 test pairs.
With K = 8 and m = 16 (2 labels per class) target-only training is label-starved, which is
the regime where distillation can help. Smaller: --config.runs=3; other gaps:
--config.epsilons='(0.0,0.3)'.
"""

from xdistill_jax.experiments import base


def get_config():
  config = base.common_config('cmcd')
  config.epsilons = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # exact TV between the modalities
  config.runs = 10  # seeds
  # CMD, CMC, CMC B → A, L2 (distillation, then a linear probe); target-only; target SSL + probe
  config.methods = ('cmd', 'cmc', 'cmc_b2a', 'l2', 'target_only', 'target_ssl')
  config.num_pairs = (256,)  # M: unlabelled pairs for distillation (and for target SSL)
  config.m_labelled = (16,)  # m: labelled target examples for the probes / target-only
  # Generator (docs/protocols.md §C): y ~ U{K}, z = s·e_y + r·u, u uniform in the unit ball
  # of R^d.
  config.latent_dim = 8
  config.num_classes = (8,)  # K: an inner axis (a Python loop; needs K ≤ latent_dim)
  config.class_separation = 2.0  # s; supports are disjoint iff s·√2 > 2r
  config.latent_radius = 1.0  # r
  config.obs_dim_a = 16  # D_A: source observations ψ([z, flag] W_A + b_A)
  config.obs_dim_b = 12  # D_B: target observations, a different map and dimension
  config.map_seed = 0  # the observation maps are fixed per sweep, from this seed
  config.aug_sigma = 0.3  # views f(z + σ_aug η)
  config.n_pretrain = 256  # unlabelled source examples for InfoNCE pre-training
  config.n_domain = 256  # held-out pairs per side to train the domain classifiers
  config.n_test = 1000  # coupled test pairs (errors, C3 statistics, domain accuracy)
  # Models: ReLU MLP encoders width × depth → feature_dim (L2-normalised), SSL head → proj_dim.
  config.width = 32
  config.depth = 2
  config.feature_dim = 16
  config.proj_dim = 16
  config.domain_width = 0  # domain classifier: 0 = logistic regression, else a hidden layer
  # Optimisation: full-batch Adam.
  config.learning_rate = 3e-3  # encoders (pre-training, distillation, SSL, target-only)
  config.probe_learning_rate = 1e-2  # linear probes and domain classifiers
  config.pretrain_steps = 300
  config.distill_steps = 300
  config.probe_steps = 300
  config.infonce_temperature = 0.1
  config.cmc_temperature = 0.1
  config.cmd_teacher_temperature = 0.05  # τ_A < τ_B (SEED-style)
  config.cmd_student_temperature = 0.2
  # Temperature inner axis: profile 'default' (the four values above), then one per grid value
  # τ (InfoNCE = CMC = CMD student = τ, CMD teacher = τ/4), all in one compiled program.
  # Selected per seed and method on the validation split; both reported in cmcd_table.md.
  config.temperature_grid = (0.5, 1.0)  # with the default 0.1: InfoNCE/CMC τ ∈ {0.1, 0.5, 1}
  config.n_labelled = 80  # labelled target examples: the first max(m) train, the last
  config.n_validation = 64  # n_validation select temperatures (never the test pairs)
  config.margin_rho = 1.0  # logit margin ρ of the probe's margin risk (C4)
  # Execution only: groups of 7 settings divide 70 on 1 or 2 devices (no padded settings).
  config.sweep.vmap_width = 7
  return config
