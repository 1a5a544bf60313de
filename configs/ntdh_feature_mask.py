"""NTDH feature mask guided by the non-target divergence, on protocol S (four classes).

  xdistill run --config=configs/ntdh_feature_mask.py --workdir=runs/feature_mask

Per setting (o ∈ {20, 15, 10, 5, 0} × 10 seeds): joint teacher–student training with
CE_t + CE_s + NCKD, per-column permutation tags (10 repeats, min–max normalised), three
modes keeping k = 5 teacher columns (highest tags, lowest tags, random), the teacher
retrained on the kept columns and distilled (KL, T = 1). Protocol S, not G: with two classes
the non-target divergence — hence every tag — is zero by construction.
Writes results.csv, summary.csv (per mode × overlap), feature_mask.md and
ntdh_feature_mask.png. 6–7.5 minutes end to end, cold, on a 2-core CPU (BENCHMARKS.md; 11 MLP
trainings on 6000 examples per setting); smaller: --config.runs=2 --config.num_examples=2000
--config.steps=300.
Authors' parity: --config.divergence=nt_js_reversed.
"""

from xdistill_jax import config_files
from xdistill_jax.experiments import base


def get_config():
  config = base.common_config('ntdh_feature_mask')
  kclass = config_files.sibling(__file__, 'ntdh_kclass')
  config.update(kclass.protocol_s())
  config.runs = 10
  config.keep = 5  # k teacher columns kept (at most the smallest positive overlap, 5)
  config.tag_repeats = 10  # permutations per column; a column's tag is their mean divergence
  config.divergence = 'nckd'  # joint-training term and tag: nckd, nt_js or nt_js_reversed
  config.joint_momentum = 0.9  # SGD momentum of the joint teacher–student training
  config.modes = ('highest', 'lowest', 'random')  # which k columns are kept (tags)
  config.ce_weight = 1.0  # final distillation: ce_weight · CE + kd_weight · KL (T = 1)
  config.kd_weight = 1.0
  return config
