"""CMCD ε sweep: target error of every method against the exact modality gap (cmcd.md).

  xdistill run --config=configs/cmcd_tv.py --workdir=runs/cmcd_tv

7 gaps ε = 0, 0.1, …, 0.6 × 10 seeds = 70 settings; in each, one InfoNCE-pre-trained source
encoder and all six methods (CMD, CMC, CMC B→A, L2, target-only, target SSL + probe) trained in
one fused loop, on M = 256 unlabelled pairs and m = 16 labelled target examples. One compiled,
vmapped program: about 1 minute on a 2-core CPU, compilation (~22 s) included (61 s measured
with load average ≈ 3.7 from other jobs). Writes results.csv (one row per setting × method),
summary.csv, bounds.json (C3 violations, C4/C5 rates), config.json and the figures
cmcd_error_vs_epsilon.png, cmcd_tv_estimate.png and cmcd_bounds_<method>.png.

Sizes (chosen for a ≤ 3 min budget): latent d = 8, K = 8 classes (class balls of radius 1 at
2·e_k), observations in R^16 (A) and R^12 (B); ReLU MLP encoders 32 × 2 → 16-d normalised
features, projection heads 32 → 16 (SSL only); 256 unlabelled source examples for InfoNCE;
full-batch Adam, 300 steps per stage (pre-training, distillation, probes); 1000 test pairs.
With K = 8 and m = 16 (2 labels per class) target-only training is label-starved, which is
the regime where distillation can help. Smaller: --config.runs=3; other gaps:
--config.epsilons='(0.0,0.3)'.
"""

from xdistill_jax.experiments import cmcd


def get_config():
  return cmcd.default_config()
