"""Measured quantities of a trained teacher–student pair: the inputs of every bound.

All divergences are between teacher p = softmax(z_t) and student q = softmax(z_s) at T = 1
(theory.md §1); the column names are the contract of `xdistill_jax.bound_registry`.
"""

import jax
import jax.numpy as jnp

from xdistill_jax import bounds
from xdistill_jax import divergences
from xdistill_jax import training

TEACHER_WRONG_COLUMNS = ('teacher_wrong_count', 'teacher_wrong_teacher_p', 'teacher_wrong_kd_p')


def teacher_student_divergences(teacher_logits, student_logits, labels, suffix=''):
  """Mean KL, TCKD, NCKD, NT-JS, NT-TV, JS, TV; teacher p_y extremes; disagreement (N1, N2)."""
  per_example = {
      'kl': divergences.kl(teacher_logits, student_logits),
      'tckd': divergences.target_kl(teacher_logits, student_logits, labels),
      'nckd': divergences.non_target_kl(teacher_logits, student_logits, labels),
      'nt_js': divergences.non_target_js(teacher_logits, student_logits, labels),
      'nt_tv': divergences.non_target_tv(teacher_logits, student_logits, labels),
      'js': divergences.js(teacher_logits, student_logits),
      'tv': divergences.tv(teacher_logits, student_logits),
  }
  p = jax.nn.softmax(teacher_logits)
  p_y = jnp.take_along_axis(p, labels[:, None], -1)[:, 0]
  disagree = jnp.argmax(teacher_logits, -1) != jnp.argmax(student_logits, -1)
  pinsker = bounds.pinsker_disagreement_bound(per_example['kl'], bounds.top2_margin(p))
  out = {name: jnp.mean(v) for name, v in per_example.items()}
  out |= {'max_teacher_py': jnp.max(p_y), 'min_teacher_py': jnp.min(p_y),
          'disagreement': jnp.mean(disagree.astype(jnp.float32)),
          'pinsker_disagreement': pinsker}
  return {name + suffix: v for name, v in out.items()}


def teacher_wrong_softmax(teacher_logits, student_logits, labels, cls=0, weights=None):
  """Mean softmax of teacher and student on examples of class `cls` the teacher gets wrong.

  NaN (with count 0) when there are no such examples (docs/protocols.md §G, report). A 0/1
  `weights` mask restricts the examples considered.
  """
  wrong = (labels == cls) & (jnp.argmax(teacher_logits, -1) != cls)
  if weights is not None:
    wrong &= weights > 0
  count = jnp.sum(wrong)
  mean = lambda z: jnp.sum(jnp.where(wrong[:, None], jax.nn.softmax(z), 0.0), 0) / count
  return {'teacher_wrong_count': count.astype(jnp.float32),
          'teacher_wrong_teacher_p': mean(teacher_logits),
          'teacher_wrong_kd_p': mean(student_logits)}


def augmented_weights(params):
  """W̃ = [W; b], ``[d + 1, K]``, of a linear head (one kernel ``[d, K]`` and one bias ``[K]``)."""
  leaves = jax.tree.leaves(params)
  kernels = [w for w in leaves if w.ndim == 2]
  biases = [w for w in leaves if w.ndim == 1]
  if len(kernels) != 1 or len(biases) > 1:
    raise ValueError('margin-bound inputs need a linear head: one kernel and at most one bias')
  kernel = kernels[0]
  bias = biases[0] if biases else jnp.zeros(kernel.shape[-1], kernel.dtype)
  return jnp.concatenate([kernel, bias[None]], 0)


def margin_bound_inputs(logits, inputs, labels, params, rho, prefix='', weights=None):
  """Inputs of the empirical-Rademacher margin bound of a linear head (N4-margin, C4).

  Training error, the ρ-margin risk, the weight norm (Frobenius, biases included), the Λ of
  the bound (`bounds.margin_weight_norm`: ‖w̃₁ − w̃₀‖ for K = 2, Frobenius for K > 2) and
  ‖X̃‖_F = sqrt(Σ_i (‖x_i‖² + 1)) over the training inputs with the bias feature. A 0/1
  `weights` mask selects the training examples.
  """
  keep = jnp.ones(labels.shape, bool) if weights is None else weights > 0
  margin_risk = bounds.empirical_margin_risk(logits, labels, rho, mask=keep)
  w_aug = augmented_weights(params)
  wrong = (jnp.argmax(logits, -1) != labels).astype(jnp.float32)
  sq = jnp.where(keep, jnp.sum(inputs ** 2, -1) + 1.0, 0.0)
  return {prefix + 'train_err': training.weighted_mean(wrong, weights),
          prefix + 'margin_risk': margin_risk,
          prefix + 'weight_norm': jnp.sqrt(jnp.sum(w_aug ** 2)),
          prefix + 'margin_norm': bounds.margin_weight_norm(w_aug),
          'input_frobenius_norm': jnp.sqrt(jnp.sum(sq))}


def error_columns(table):
  """Test errors (1 − accuracy) of every `*_acc` column, and Δ = 100·(kd − baseline)."""
  out = {name[:-4] + '_err': 1.0 - table[name] for name in table if name.endswith('_acc')}
  if 'kd_acc' in table and 'baseline_acc' in table:
    out['delta'] = 100.0 * (table['kd_acc'] - table['baseline_acc'])
  return out
