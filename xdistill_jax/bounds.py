"""Bounds of the theory contract (N1–N5, C1–C5, T1) as pure functions of measured quantities.

Every function here takes the numbers one setting of a sweep measured (errors, divergences,
sample sizes, norms) and returns the value of one side of one bound, elementwise, so one call
handles a whole column of settings. The statements, assumptions and derivations are in
``docs/theory.md``; the label of each statement (N1 … C5) is cited in every docstring.

Array conventions
-----------------
* Closed forms accept numpy arrays, jax arrays or Python scalars and broadcast elementwise.
  With numpy inputs they compute in numpy float64 (so a results table is checked at full
  precision); with any jax input (or inside ``jit``/``vmap``) they compute in ``jax.numpy``.
* Per-example helpers put the examples on the last axis (``[..., n]``) and class scores on a
  trailing class axis (``[..., n, K]``). An optional ``mask`` of the same shape as the
  per-example axis (0/1 or bool; non-zero keeps the example) lets a fixed-size array stand
  for a smaller sample, as the sample-size sweeps need; the sample size is then the mask sum.
* Errors are fractions in [0, 1]; divergences are in nats.
* Monte Carlo helpers use ``jax.random`` with keys from ``jax.random.key`` and return
  ``(estimate, standard_error)``.

Kinds (``docs/theory.md`` has the table and how each is judged): deterministic bounds
(N1, N2, C3, C3-split) hold on every evaluation set; probabilistic ones (N4-VC,
N4-margin, C4) hold with probability at least 1 − δ over the training sample, for the
*expected* error; the test-set bound T1 (Clopper–Pearson) holds with probability at least
1 − δ over the test sample; N3 and C1/C5 are exact values of an *expected* error
(expected-floor: a finite test set can fall below them); N5 is a reference slope, not a
bound. Closed forms of divergences (e.g. the Gaussian-shift TV of C1) live in
``xdistill_jax.divergences``, not here.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # numpy array, jax array or Python scalar

__all__ = [
    # N1
    'approximation_error_sandwich',
    'approximation_error_lower',
    'approximation_error_upper',
    'approximation_error_sandwich_inputs',
    'approximation_error_sandwich_from_examples',
    # N2
    'teacher_agreement_sandwich',
    'top2_margin',
    'argmax_disagreement',
    'pinsker_disagreement_bound',
    # N3
    'decisive_feature_bayes_floor',
    'decisive_feature_bayes_floor_monte_carlo',
    'monte_carlo_bayes_floor',
    # N4 / C4
    'vc_bound',
    'linear_vc_dimension',
    'margin_weight_grid',
    'margin_weight_norm',
    'margin_bound',
    'empirical_margin_risk',
    'rademacher_linear_closed_form',
    'rademacher_linear_monte_carlo',
    # N5
    'rate_reference',
    # C1 / C3 / C5
    'exact_tv_latent_bayes_floor',
    'pair_disagreement_bound',
    'pair_disagreement_split',
    'coupled_pair_statistics',
    # T1
    'beta_quantile',
    'error_count',
    'clopper_pearson_upper',
    'clopper_pearson_lower',
    'clopper_pearson_interval',
]


# --------------------------------------------------------------------------------------
# Array-namespace helpers: numpy in, numpy float64 out; jax in (or traced), jax out.
# --------------------------------------------------------------------------------------


def _xp(*args: Array):
  """``jax.numpy`` if any argument is a jax array (tracers included), else ``numpy``."""
  return jnp if any(isinstance(a, jax.Array) for a in args) else np


def _float(xp, x: Array):
  """``x`` as a floating array of namespace ``xp`` (float64 for numpy)."""
  if xp is np:
    return np.asarray(x, dtype=np.float64)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _keep(xp, mask: Array | None):
  """Boolean keep-mask (non-zero entries are kept), or None."""
  return None if mask is None else xp.asarray(mask) != 0


def _mean(xp, x, keep, axis=-1):
  """Mean over ``axis``, restricted to ``keep`` where given (sample size = keep count)."""
  if keep is None:
    return xp.mean(x, axis=axis)
  keep = xp.broadcast_to(keep, x.shape)
  count = xp.sum(keep, axis=axis)
  return xp.sum(xp.where(keep, x, 0.0), axis=axis) / count


# --------------------------------------------------------------------------------------
# N1: approximation-error sandwich.
# --------------------------------------------------------------------------------------


def approximation_error_sandwich(d_nt: Array, d_tc: Array, max_py: Array, min_py: Array):
  """(N1) Lower and upper bound on the KD approximation error ε(f) = mean KL(p‖q_f).

  Statement: on any evaluation set,
  ``D_TC + (1 − max_i p_{y_i}) · D_NT ≤ ε ≤ D_TC + (1 − min_i p_{y_i}) · D_NT``,
  with D_NT = mean NCKD, D_TC = mean TCKD and p_{y_i} the teacher's probability of the
  true class, all at the same temperature and on the same examples as ε.

  Assumptions: none beyond the identity D1 (KL = TCKD + (1 − p_y)·NCKD per example) and
  NCKD ≥ 0. Deterministic (holds on every evaluation set, to float tolerance). For K = 2
  NCKD ≡ 0 and both sides equal D_TC = ε.

  Args:
    d_nt: mean non-target KL (NCKD), nats, any shape.
    d_tc: mean target-class KL (TCKD), nats, broadcastable with ``d_nt``.
    max_py: largest teacher target probability over the evaluation set.
    min_py: smallest teacher target probability over the evaluation set.

  Returns:
    ``(lower, upper)``, broadcast shape of the inputs.

  Example:
    >>> lo, hi = approximation_error_sandwich(0.5, 0.1, 0.9, 0.2)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.15, 0.5)
  """
  return (
      approximation_error_lower(d_nt, d_tc, max_py),
      approximation_error_upper(d_nt, d_tc, min_py),
  )


def approximation_error_lower(d_nt: Array, d_tc: Array, max_py: Array):
  """(N1, lower side) ``D_TC + (1 − max_i p_{y_i}) · D_NT ≤ ε``. Deterministic.

  Proof: ε = mean_i [TCKD_i + (1 − p_{y_i})·NCKD_i] (D1) and (1 − p_{y_i}) ≥ 1 − max p_y
  with NCKD_i ≥ 0. See :func:`approximation_error_sandwich` for the shapes.

  Example:
    >>> round(float(approximation_error_lower(0.5, 0.1, 0.9)), 4)
    0.15
  """
  xp = _xp(d_nt, d_tc, max_py)
  return _float(xp, d_tc) + (1.0 - _float(xp, max_py)) * _float(xp, d_nt)


def approximation_error_upper(d_nt: Array, d_tc: Array, min_py: Array):
  """(N1, upper side) ``ε ≤ D_TC + (1 − min_i p_{y_i}) · D_NT``. Deterministic.

  See :func:`approximation_error_sandwich` for the statement and shapes.

  Example:
    >>> round(float(approximation_error_upper(0.5, 0.1, 0.2)), 4)
    0.5
  """
  xp = _xp(d_nt, d_tc, min_py)
  return _float(xp, d_tc) + (1.0 - _float(xp, min_py)) * _float(xp, d_nt)


def approximation_error_sandwich_inputs(
    tckd: Array, nckd: Array, p_y: Array, mask: Array | None = None
) -> dict:
  """(N1) The four inputs of :func:`approximation_error_sandwich` from per-example values.

  Args:
    tckd: per-example TCKD, ``[..., n]``.
    nckd: per-example NCKD, ``[..., n]``.
    p_y: per-example teacher probability of the true class, ``[..., n]``.
    mask: optional ``[..., n]`` keep-mask (the sample is the kept examples).

  Returns:
    dict with ``d_tc``, ``d_nt`` (means), ``max_py``, ``min_py`` (extremes over kept
    examples), each of shape ``[...]``. These are the columns ``tckd_test``,
    ``nckd_test``, ``max_teacher_py_test``, ``min_teacher_py_test`` of the registry.

  Example:
    >>> s = approximation_error_sandwich_inputs([0.1, 0.3], [1.0, 2.0], [0.5, 0.8])
    >>> {k: round(float(v), 4) for k, v in s.items()}
    {'d_tc': 0.2, 'd_nt': 1.5, 'max_py': 0.8, 'min_py': 0.5}
  """
  xp = _xp(tckd, nckd, p_y, mask)
  tckd, nckd, p_y = (_float(xp, v) for v in (tckd, nckd, p_y))
  keep = _keep(xp, mask)
  if keep is None:
    max_py, min_py = xp.max(p_y, axis=-1), xp.min(p_y, axis=-1)
  else:
    keep_p = xp.broadcast_to(keep, p_y.shape)
    max_py = xp.max(xp.where(keep_p, p_y, -xp.inf), axis=-1)
    min_py = xp.min(xp.where(keep_p, p_y, xp.inf), axis=-1)
  return {
      'd_tc': _mean(xp, tckd, keep),
      'd_nt': _mean(xp, nckd, keep),
      'max_py': max_py,
      'min_py': min_py,
  }


def approximation_error_sandwich_from_examples(
    tckd: Array, nckd: Array, p_y: Array, mask: Array | None = None
):
  """(N1) ``(lower, upper)`` on mean KL directly from per-example TCKD, NCKD and p_y.

  Deterministic. Shapes as in :func:`approximation_error_sandwich_inputs`; returns two
  arrays of shape ``[...]``.

  Example:
    >>> lo, hi = approximation_error_sandwich_from_examples([0.1, 0.3], [1.0, 2.0], [0.5, 0.8])
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.5, 0.95)
  """
  s = approximation_error_sandwich_inputs(tckd, nckd, p_y, mask)
  return approximation_error_sandwich(s['d_nt'], s['d_tc'], s['max_py'], s['min_py'])


# --------------------------------------------------------------------------------------
# N2: teacher-agreement sandwich on 0-1 error, and its Pinsker bound on disagreement.
# --------------------------------------------------------------------------------------


def teacher_agreement_sandwich(err_t: Array, dis: Array):
  """(N2) ``err_t − dis ≤ err_s ≤ err_t + dis`` on the student's 0-1 error.

  Statement: on one evaluation set, with err_t the teacher's error, err_s the student's
  and dis the fraction of examples where the two argmax predictions differ, the student's
  error lies in ``[err_t − dis, err_t + dis]``. (Where the two agree, they are both right
  or both wrong.)

  Assumptions: teacher and student are evaluated on the same examples with the same
  argmax tie-breaking. Deterministic.

  Args:
    err_t: teacher 0-1 error, any shape. dis: disagreement rate, broadcastable.

  Returns:
    ``(lower, upper)``.

  Example:
    >>> lo, hi = teacher_agreement_sandwich(0.2, 0.05)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.15, 0.25)
  """
  xp = _xp(err_t, dis)
  err_t, dis = _float(xp, err_t), _float(xp, dis)
  return err_t - dis, err_t + dis


def top2_margin(probs: Array, axis: int = -1):
  """(N2 helper) Top-two probability margin ``p_(1) − p_(2)`` along the class axis.

  Args:
    probs: probabilities ``[..., K]`` (K ≥ 2) with classes on ``axis``.

  Returns:
    ``[...]`` margins in [0, 1]; 0 when the top two tie.

  Example:
    >>> round(float(top2_margin([0.1, 0.6, 0.3])), 4)
    0.3
  """
  xp = _xp(probs)
  probs = xp.moveaxis(_float(xp, probs), axis, -1)
  top = xp.sort(probs, axis=-1)
  return top[..., -1] - top[..., -2]


def argmax_disagreement(teacher_scores: Array, student_scores: Array, mask: Array | None = None):
  """(N2 helper) Fraction of examples where the two argmax predictions differ.

  Args:
    teacher_scores, student_scores: logits or probabilities ``[..., n, K]``.
    mask: optional ``[..., n]`` keep-mask.

  Returns:
    ``[...]`` disagreement rates (``dis`` of N2).

  Example:
    >>> float(argmax_disagreement([[2., 1.], [0., 1.]], [[3., 0.], [1., 0.]]))
    0.5
  """
  xp = _xp(teacher_scores, student_scores, mask)
  differ = xp.argmax(xp.asarray(teacher_scores), axis=-1) != xp.argmax(
      xp.asarray(student_scores), axis=-1
  )
  return _mean(xp, _float(xp, differ), _keep(xp, mask))


def pinsker_disagreement_bound(
    kl_per_example: Array,
    teacher_margin: Array,
    mask: Array | None = None,
    atol: float = 1e-6,
):
  """(N2) Upper bound on the disagreement rate: ``dis ≤ (1/n) Σ_i 1[KL_i ≥ m_i²/2]``.

  Statement: if argmax q ≠ argmax p on example i then TV(p_i, q_i) ≥ m_i/2, where m_i is
  the teacher's top-two margin (:func:`top2_margin`); Pinsker (D2) then forces
  KL(p_i‖q_i) ≥ 2·TV² ≥ m_i²/2. Counting the examples that *could* disagree bounds the
  examples that do. Combined with :func:`teacher_agreement_sandwich` this gives
  ``err_s ≤ err_t + (1/n) Σ_i 1[KL_i ≥ m_i²/2]``.

  Assumptions: KL_i = KL(p_i‖q_i) at T = 1 (the distributions whose argmaxes are
  compared), natural logs. Deterministic. An example counts when
  ``KL_i ≥ m_i²/2 − atol``: the slack absorbs the rounding of a KL computed in float32
  (a near-tie of the teacher makes both sides tiny) and only ever adds examples, so the
  bound stays valid; ``atol=0`` is the exact statement.

  Args:
    kl_per_example: ``[..., n]`` per-example KL(p‖q) in nats.
    teacher_margin: ``[..., n]`` teacher top-two probability margins.
    mask: optional ``[..., n]`` keep-mask.
    atol: rounding slack (see above).

  Returns:
    ``[...]`` bound on the disagreement rate.

  Example:
    >>> float(pinsker_disagreement_bound([0.001, 0.5], [0.5, 0.5]))
    0.5
  """
  xp = _xp(kl_per_example, teacher_margin, mask)
  kl, m = _float(xp, kl_per_example), _float(xp, teacher_margin)
  could_flip = _float(xp, kl >= 0.5 * m * m - atol)
  return _mean(xp, could_flip, _keep(xp, mask))


# --------------------------------------------------------------------------------------
# N3: Bayes floor of a modality on the decisive-feature generator.
# --------------------------------------------------------------------------------------


def decisive_feature_bayes_floor(a: Array, observed_mask: Array):
  """(N3) Bayes error ``(1/π)·arctan(‖a_{S^c}‖ / ‖a_S‖)`` of a modality observing S.

  Statement: for the generator ``y = 1[a · x_s > 0]``, ``x_s ~ N(0, I_D)``, a modality
  that observes the decisive coordinates S (everything else it sees is independent
  noise) has Bayes error ``arctan(‖a_{S^c}‖/‖a_S‖)/π``: u = a_S·x_S and v = a_{S^c}·x_{S^c}
  are independent centred Gaussians, the Bayes rule is sign(u), and
  P(sign(u + v) ≠ sign(u)) = arctan(σ_v/σ_u)/π.

  Assumptions: Gaussian isotropic decisive features, noiseless labelling rule.
  Exact (not a sample quantity): it bounds the *expected* error of any model of that
  modality from below; the error on a finite test set can dip below it.
  Edge cases: ‖a_S‖ = 0 < ‖a_{S^c}‖ gives ½ (the modality sees nothing useful);
  a = 0 gives 0 (the label is constant). No NaN in either case.

  Args:
    a: ``[..., D]`` hyperplane(s).
    observed_mask: ``[..., D]`` bool / 0-1, true on the coordinates the modality sees.

  Returns:
    ``[...]`` Bayes floors in [0, ½].

  Example:
    >>> round(float(decisive_feature_bayes_floor([1., 1.], [True, False])), 4)
    0.25
  """
  xp = _xp(a, observed_mask)
  a = _float(xp, a)
  seen = xp.asarray(observed_mask) != 0
  # Scale-invariant: divide by max|a| so huge or tiny hyperplanes neither over- nor underflow.
  scale = xp.max(xp.abs(a), axis=-1, keepdims=True)
  a = a / xp.where(scale > 0, scale, 1.0)
  norm_seen = xp.sqrt(xp.sum(xp.where(seen, a, 0.0) ** 2, axis=-1))
  norm_unseen = xp.sqrt(xp.sum(xp.where(seen, 0.0, a) ** 2, axis=-1))
  return xp.arctan2(norm_unseen, norm_seen) / math.pi


def monte_carlo_bayes_floor(
    key: jax.Array,
    sample_fn: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]],
    bayes_rule: Callable[[jax.Array], jax.Array],
    num_samples: int,
):
  """(N3) Monte Carlo estimate of an error floor for generators without a closed form.

  Draws ``x, y = sample_fn(key, num_samples)`` with the generator's true labelling rule
  and returns the error rate of ``bayes_rule(x)`` (the rule that sees only the modality's
  coordinates) with its binomial standard error sqrt(p̂(1 − p̂)/N). If ``bayes_rule`` is
  the Bayes-optimal rule of that modality the estimate is unbiased for the Bayes floor;
  otherwise it estimates an upper bound on the floor.

  Probabilistic (a Monte Carlo estimate, reported with its standard error).

  Args:
    key: typed key from ``jax.random.key``.
    sample_fn: ``(key, n) -> (x [n, ...], y [n])``.
    bayes_rule: ``x -> predictions [n]`` comparable with ``y``.
    num_samples: N (memory ~ N × input size).

  Returns:
    ``(estimate, standard_error)``, scalars.

  Example:
    >>> def sample(key, n):  # y = 1[x > 0]; the "modality" sees nothing, so it guesses 1
    ...     x = jax.random.normal(key, (n,))
    ...     return x, x > 0
    >>> guess = lambda x: jnp.ones(x.shape, bool)
    >>> est, se = monte_carlo_bayes_floor(jax.random.key(0), sample, guess, 10_000)
    >>> bool(abs(est - 0.5) < 3 * se)
    True
  """
  x, y = sample_fn(key, num_samples)
  wrong = jnp.asarray(bayes_rule(x) != y, dtype=jnp.result_type(float))
  p = jnp.mean(wrong)
  return p, jnp.sqrt(p * (1.0 - p) / num_samples)


def decisive_feature_bayes_floor_monte_carlo(
    key: jax.Array, a: Array, observed_mask: Array, num_samples: int
):
  """(N3) Monte Carlo check of :func:`decisive_feature_bayes_floor` for one hyperplane.

  Samples x_s ~ N(0, I_D), labels y = 1[a·x_s > 0], predicts with the Bayes rule
  1[a_S·x_S > 0] and returns ``(error_rate, standard_error)`` (see
  :func:`monte_carlo_bayes_floor`). Use ``jax.vmap`` for many hyperplanes.

  Args:
    key: typed key. a: ``[D]``. observed_mask: ``[D]``. num_samples: N.

  Example:
    >>> est, se = decisive_feature_bayes_floor_monte_carlo(
    ...     jax.random.key(0), jnp.ones(2), jnp.array([True, False]), 100_000)
    >>> bool(abs(est - 0.25) < 3 * se)
    True
  """
  a = _float(jnp, a)
  a_seen = jnp.where(jnp.asarray(observed_mask) != 0, a, 0.0)

  def sample(k, n):
    x = jax.random.normal(k, (n, a.shape[-1]), dtype=a.dtype)
    return x, x @ a > 0

  return monte_carlo_bayes_floor(key, sample, lambda x: x @ a_seen > 0, num_samples)


# --------------------------------------------------------------------------------------
# N4 / C4: generalisation bounds.
# --------------------------------------------------------------------------------------


def vc_bound(empirical_risk: Array, n: Array, h: Array, delta: Array):
  """(N4) Vapnik's VC bound for binary classifiers.

  Statement (Vapnik 1998): for a class of VC dimension h and n i.i.d. training examples,
  with probability at least 1 − δ, simultaneously for every f in the class,
  ``R(f) ≤ R̂_n(f) + sqrt((h·(ln(2n/h) + 1) − ln(δ/4)) / n)``.

  Assumptions: binary 0-1 loss, i.i.d. training sample, ``empirical_risk`` measured on the
  same n training examples, h ≤ n for the formula to be meaningful. Probabilistic. The
  value is not clipped at 1 (a value above 1 is vacuous and is kept so that curves show
  it).

  Args:
    empirical_risk: training 0-1 error. n: training-set size. h: VC dimension
      (:func:`linear_vc_dimension`). delta: confidence parameter. All broadcast.

  Example:
    >>> round(float(vc_bound(0.1, 1000, 26, 0.05)), 4)
    0.4785
  """
  xp = _xp(empirical_risk, n, h, delta)
  r, n, h, delta = (_float(xp, v) for v in (empirical_risk, n, h, delta))
  return r + xp.sqrt((h * (xp.log(2.0 * n / h) + 1.0) - xp.log(delta / 4.0)) / n)


def linear_vc_dimension(d: Array):
  """(N4) VC dimension ``d + 1`` of affine binary classifiers sign(w·x + b) on R^d.

  A two-logit linear model with biases (as in protocol G) decides by
  sign((w_1 − w_0)·x + (b_1 − b_0)), so it has the same VC dimension.

  Example:
    >>> linear_vc_dimension(25)
    26
  """
  return d + 1


def margin_weight_grid(weight_norm: Array):
  """(N4-margin, C4) Round Λ up to the grid Λ_j = 2^j (j ≥ 1): returns ``(Λ_j, j)``.

  The margin bounds hold for a class {‖w‖ ≤ Λ} fixed before the data; the trained norm is
  data-dependent, so the bound is stated for every Λ_j at confidence δ_j = δ/(j(j + 1))
  (Σ_j δ_j = δ: a union bound) and applied at the smallest Λ_j ≥ Λ. Λ ≤ 2 gives j = 1.
  A non-finite or negative Λ gives NaN.

  Example:
    >>> lam, j = margin_weight_grid(np.array([0.3, 2.0, 2.5, 8.0]))
    >>> lam.tolist(), j.tolist()
    ([2.0, 2.0, 4.0, 8.0], [1.0, 1.0, 2.0, 3.0])
  """
  xp = _xp(weight_norm)
  lam = _float(xp, weight_norm)
  with np.errstate(divide='ignore', invalid='ignore'):
    j = xp.maximum(xp.ceil(xp.log2(xp.maximum(lam, 1e-30))), 1.0)
    j = j + (2.0**j < lam)  # guard the rounding of log2 at exact powers of two
  bad = ~xp.isfinite(lam) | (lam < 0)
  j = xp.where(bad, xp.nan, j)
  return 2.0**j, j


def margin_weight_norm(weights: Array):
  """(N4-margin, C4) Λ of a linear scorer with augmented weights W̃ = [W; b], ``[..., D, K]``.

  K = 2: ‖w̃₁ − w̃₀‖, the norm of h = s₁ − s₀ (the binary margin bound). K > 2: the
  Frobenius norm sqrt(Σ_k ‖w̃_k‖²) (the multiclass one). K is the last axis (static).

  Example:
    >>> float(margin_weight_norm([[1., 4.], [0., 4.]]))  # columns w̃₀ = (1, 0), w̃₁ = (4, 4)
    5.0
  """
  xp = _xp(weights)
  w = _float(xp, weights)
  if w.shape[-1] == 2:
    return xp.sqrt(xp.sum((w[..., 1] - w[..., 0]) ** 2, axis=-1))
  return xp.sqrt(xp.sum(w * w, axis=(-2, -1)))


def margin_bound(
    margin_risk: Array,
    n: Array,
    k: Array,
    rho: Array,
    weight_norm: Array,
    input_frobenius_norm: Array,
    delta: Array,
):
  """(N4-margin, C4) Margin bound with the empirical Rademacher complexity of a linear class.

  Statement: for scores linear in x̃ = [x, 1] and n i.i.d. training examples, with
  probability at least 1 − δ, simultaneously for every such classifier,
  ``R(h) ≤ R̂_ρ(h) + c_K·(Λ_j/ρ)·sqrt(Σ_i ‖x̃_i‖²)/n + 3·sqrt(ln(2/δ_j)/(2n))``,
  with Λ_j, δ_j = δ/(j(j + 1)) from :func:`margin_weight_grid`.

  * K = 2: c_K = 2, h = s₁ − s₀ and Λ ≥ ‖w̃₁ − w̃₀‖ (biases included) — the binary margin
    bound, Mohri, Rostamizadeh, Talwalkar, *Foundations of Machine Learning* (2nd ed.),
    Thm 5.8 (empirical-Rademacher form), with ℜ̂_S ≤ (Λ/n)·‖X̃‖_F.
  * K > 2: c_K = 4K and Λ ≥ the Frobenius norm of the augmented weight matrix — the
    multiclass margin bound (Thm 9.2) with the same linear-class Rademacher bound.

  ``input_frobenius_norm`` is ‖X̃‖_F = sqrt(Σ_i (‖x_i‖² + 1)) over the n training inputs
  (data-dependent radii are allowed in the empirical form; no bound on ‖x‖ is assumed).
  ``margin_risk`` is the fraction of training examples with margin ≤ ρ
  (:func:`empirical_margin_risk`), which dominates the ramp-loss risk of the theorems.
  Assumptions: i.i.d. sample, ρ > 0 fixed before the data, a fixed feature map (it does
  not certify MLPs). Probabilistic. Not clipped at 1 (a value above 1 is vacuous).

  Example:
    >>> round(float(margin_bound(0.05, 200, 2, 1.0, 3.0, 72.0, 0.05)), 4)
    3.2812
  """
  xp = _xp(margin_risk, n, k, rho, weight_norm, input_frobenius_norm, delta)
  risk, n, k, rho, frob, delta = (
      _float(xp, v) for v in (margin_risk, n, k, rho, input_frobenius_norm, delta)
  )
  lam, j = margin_weight_grid(_float(xp, weight_norm))
  c_k = xp.where(k == 2, 2.0, 4.0 * k)
  delta_j = delta / (j * (j + 1.0))
  return risk + c_k * lam / rho * frob / n + 3.0 * xp.sqrt(xp.log(2.0 / delta_j) / (2.0 * n))


def empirical_margin_risk(
    scores: Array, labels: Array, rho: Array, mask: Array | None = None
):
  """(N4, C4) Fraction of examples whose margin is at most ρ (the empirical ρ-margin risk).

  Multiclass (``scores`` ``[..., n, K]``, integer ``labels`` ``[..., n]``): the margin of
  example i is ``s_{i,y_i} − max_{y ≠ y_i} s_{i,y}`` (Mohri et al. ch. 9).
  Binary convention (``scores`` ``[..., n]``, same shape as ``labels``): scores are a
  real-valued h(x); labels ``> 0`` mean +1 and all others −1 (so {0, 1} and {−1, +1} both
  work), and the margin is ``y·h(x)`` (ch. 5). For K = 2 the two conventions agree with
  h = s_1 − s_0. A margin equal to ρ counts as inside the margin (≤ ρ), so the returned
  fraction upper-bounds the book's ramp-loss risk.

  Args:
    scores: see above. labels: see above. rho: margin (scalar or broadcastable to
      ``[...]``). mask: optional ``[..., n]`` keep-mask.

  Returns:
    ``[...]`` fractions in [0, 1].

  Example:
    >>> float(empirical_margin_risk([[2., 0.], [0., 0.5]], [0, 1], 1.0))
    0.5
    >>> float(empirical_margin_risk([2., -0.5], [1, 0], 1.0))
    0.5
  """
  xp = _xp(scores, labels, rho, mask)
  scores = _float(xp, scores)
  labels = xp.asarray(labels)
  rho = _float(xp, rho)
  if scores.ndim == labels.ndim:  # binary: real-valued h(x)
    signs = xp.where(labels > 0, 1.0, -1.0)
    margins = signs * scores
  else:
    num_classes = scores.shape[-1]
    is_label = xp.arange(num_classes) == labels[..., None]
    target = xp.sum(xp.where(is_label, scores, 0.0), axis=-1)
    runner_up = xp.max(xp.where(is_label, -xp.inf, scores), axis=-1)
    margins = target - runner_up
  inside = _float(xp, margins <= xp.expand_dims(rho, -1))
  return _mean(xp, inside, _keep(xp, mask))


def rademacher_linear_closed_form(
    features: Array, weight_norm: Array, mask: Array | None = None
):
  """(C4) Upper bound ``(Λ/m)·sqrt(Σ_i ‖z_i‖²)`` on the empirical Rademacher complexity.

  Statement: for H = {z ↦ w·z : ‖w‖ ≤ Λ} and a sample z_1..z_m,
  ℜ̂_m(H) = (Λ/m)·E_σ‖Σ_i σ_i z_i‖ ≤ (Λ/m)·sqrt(Σ_i ‖z_i‖²) by Jensen
  (Mohri et al. ch. 5/6). Deterministic.

  Args:
    features: ``[..., m, d]``.
    weight_norm: Λ, broadcastable to ``[...]``.
    mask: optional ``[..., m]`` keep-mask; m is then the number of kept rows.

  Returns:
    ``[...]``.

  Example:
    >>> round(float(rademacher_linear_closed_form([[3., 4.], [0., 0.]], 2.0)), 4)
    5.0
  """
  xp = _xp(features, weight_norm, mask)
  z = _float(xp, features)
  sq = xp.sum(z * z, axis=-1)
  keep = _keep(xp, mask)
  if keep is None:
    m = z.shape[-2]
  else:
    keep = xp.broadcast_to(keep, sq.shape)
    sq = xp.where(keep, sq, 0.0)
    m = xp.sum(keep, axis=-1)
  return _float(xp, weight_norm) / m * xp.sqrt(xp.sum(sq, axis=-1))


@functools.partial(jax.jit, static_argnames=('chunk_size',))
def _rademacher_mc(key, z, keep, weight_norm, draws, chunk_size):
  z = jnp.where(keep[..., None], z, 0.0)
  m = jnp.sum(keep, axis=-1)
  # Shift by the closed form (≥ every mean) so the running sums of squares do not cancel.
  shift = jnp.sqrt(jnp.sum(z * z, axis=(-2, -1)))
  rows = jnp.arange(z.shape[-2])

  def body(chunk, carry):
    s1, s2 = carry
    chunk_key = jax.random.fold_in(key, chunk)
    # Signs of example i depend only on (key, chunk, i): a mask keeping the first m'
    # rows reproduces exactly the run on features[:m'].
    sigma = jax.vmap(
        lambda i: jax.random.rademacher(
            jax.random.fold_in(chunk_key, i), (chunk_size,), dtype=z.dtype
        )
    )(rows)  # [m, chunk]
    norms = jnp.linalg.norm(jnp.einsum('mb,...md->...bd', sigma, z), axis=-1)
    valid = chunk * chunk_size + jnp.arange(chunk_size) < draws
    dev = jnp.where(valid, norms - shift[..., None], 0.0)
    return s1 + dev.sum(-1), s2 + (dev * dev).sum(-1)

  zeros = jnp.zeros(shift.shape, z.dtype)
  # The draw count is traced (a while loop), so one compilation serves every `draws`.
  num_chunks = (draws + chunk_size - 1) // chunk_size
  s1, s2 = jax.lax.fori_loop(0, num_chunks, body, (zeros, zeros))
  n = draws.astype(z.dtype)
  mean_dev = s1 / n
  var = jnp.maximum(s2 / n - mean_dev**2, 0.0) * n / jnp.maximum(n - 1.0, 1.0)
  scale = weight_norm / m
  return scale * (shift + mean_dev), scale * jnp.sqrt(var / n)


def rademacher_linear_monte_carlo(
    key: jax.Array,
    features: Array,
    weight_norm: Array,
    draws: int,
    mask: Array | None = None,
    chunk_size: int = 1024,
):
  """(C4) Monte Carlo empirical Rademacher complexity ``(Λ/m)·E_σ‖Σ_i σ_i z_i‖``.

  Statement: for H = {z ↦ w·z : ‖w‖ ≤ Λ}, sup_w Σ σ_i w·z_i = Λ‖Σ σ_i z_i‖, so
  ℜ̂_m(H) = (Λ/m)·E_σ‖Σ_i σ_i z_i‖ exactly; this averages ``draws`` independent sign
  vectors. By Jensen the result is at most :func:`rademacher_linear_closed_form`.
  Probabilistic (a Monte Carlo estimate with its standard error).

  The signs of example i depend only on (key, chunk index, i), so a mask that keeps the
  first m' rows gives exactly the result on ``features[:m']`` (common random numbers
  across a sample-size sweep).

  Args:
    key: typed key from ``jax.random.key``.
    features: ``[..., m, d]`` (leading axes share the sign draws).
    weight_norm: Λ, broadcastable to ``[...]``.
    draws: number of sign vectors (may be traced; one compilation serves all counts).
    mask: optional ``[..., m]`` keep-mask; m is then the number of kept rows.
    chunk_size: sign vectors drawn per scan step (memory ~ chunk_size × m × d).

  Returns:
    ``(estimate, standard_error)``, each ``[...]``.

  Example:
    >>> z = jnp.array([[3., 4.], [0., 0.]])
    >>> est, se = rademacher_linear_monte_carlo(jax.random.key(0), z, 2.0, draws=100)
    >>> round(float(est), 4), round(float(se), 4)
    (5.0, 0.0)
  """
  z = _float(jnp, features)
  keep = jnp.ones(z.shape[:-1], bool) if mask is None else jnp.asarray(mask) != 0
  keep = jnp.broadcast_to(keep, z.shape[:-1])
  draws = jnp.asarray(draws, dtype=jnp.int32)
  return _rademacher_mc(key, z, keep, _float(jnp, weight_norm), draws, int(chunk_size))


# --------------------------------------------------------------------------------------
# N5: rate reference slopes.
# --------------------------------------------------------------------------------------


def rate_reference(n: Array, n0: Array, e0: Array, alpha: Array):
  """(N5) Reference slope ``e0·(n/n0)^(−α)`` through the anchor point (n0, e0).

  In the framework of Lopez-Paz et al. (2016), the student's excess error over the best in
  its class decays as O(n^(−α)) with α ∈ [1/2, 1] (½ for the slow rate, 1 for the fast
  rate distillation can give). The constants are unknown, so this is a **reference
  slope, not a bound**: plot it on a log-log error-versus-n sweep anchored at a measured
  point, labelled as such.

  Example:
    >>> round(float(rate_reference(400, 100, 0.2, 0.5)), 4)
    0.1
  """
  xp = _xp(n, n0, e0, alpha)
  n, n0, e0, alpha = (_float(xp, v) for v in (n, n0, e0, alpha))
  return e0 * (n / n0) ** (-alpha)


# --------------------------------------------------------------------------------------
# C1 / C3 / C5: CMCD side.
# --------------------------------------------------------------------------------------


def exact_tv_latent_bayes_floor(epsilon: Array, k: Array):
  """(C1, C5 lower) Target Bayes error ``ε·(1 − 1/K)`` of the exact-TV latent generator.

  Statement: in the CMCD synthetic generator, the target latent is an independent draw
  with probability ε (correspondence broken, flagged) and the source latent otherwise;
  class supports are disjoint. A broken example carries no information about y, so the
  best guess is right with probability 1/K; an intact one is classified perfectly.
  Hence the target Bayes error is exactly ε(1 − 1/K), and TV((z_A, y), (z_B, y)) = ε.

  Exact value of an *expected* error: it bounds the expected target error of any head
  from below; a finite test set can dip below it.

  Example:
    >>> round(float(exact_tv_latent_bayes_floor(0.3, 4)), 4)
    0.225
  """
  xp = _xp(epsilon, k)
  epsilon, k = _float(xp, epsilon), _float(xp, k)
  return epsilon * (1.0 - 1.0 / k)


def pair_disagreement_bound(err_source: Array, disagreement: Array):
  """(C3, middle line) ``err_B(g∘φ_B) ≤ err_A(g∘φ_A) + P[g(φ_B(x_B)) ≠ g(φ_A(x_A))]``.

  Statement: on an evaluation set of coupled pairs (x_A, x_B, y), the target prediction
  is wrong only if the source prediction is wrong or the two predictions differ
  (triangle inequality for the 0-1 loss). Deterministic on that set.

  Args:
    err_source: source error of the head on the pairs. disagreement: fraction of pairs
      whose two predictions differ. Broadcast.

  Example:
    >>> round(float(pair_disagreement_bound(0.1, 0.05)), 4)
    0.15
  """
  xp = _xp(err_source, disagreement)
  return _float(xp, err_source) + _float(xp, disagreement)


def pair_disagreement_split(err_source: Array, broken_fraction: Array, clean_disagreement: Array):
  """(C3-split) ``err_B ≤ err_A + ε̂ + (1 − ε̂)·a_clean`` with the observed broken fraction ε̂.

  Statement: on an evaluation set of coupled pairs, a fraction ε̂ of which have a broken
  correspondence, the pair disagreement is P[disagree ∧ broken] + P[disagree ∧ intact]
  ≤ ε̂ + (1 − ε̂)·a_clean, a_clean the disagreement rate among the intact pairs; the
  middle line of C3 then gives the bound. Deterministic on that set (ε̂ and a_clean are
  measured on the same pairs as the errors; see :func:`coupled_pair_statistics`).

  Example:
    >>> round(float(pair_disagreement_split(0.1, 0.2, 0.05)), 4)
    0.34
  """
  xp = _xp(err_source, broken_fraction, clean_disagreement)
  eps = _float(xp, broken_fraction)
  return _float(xp, err_source) + eps + (1.0 - eps) * _float(xp, clean_disagreement)


def coupled_pair_statistics(
    labels: Array,
    pred_source: Array,
    pred_target: Array,
    broken: Array,
    mask: Array | None = None,
) -> dict:
  """(C3 helper) The measured quantities of C3 on an evaluation set of coupled pairs.

  Args:
    labels: ``[..., n]`` true classes. pred_source: ``[..., n]`` predictions g(φ_A(x_A)).
    pred_target: ``[..., n]`` predictions g(φ_B(x_B)). broken: ``[..., n]`` bool, true
      where the pair's correspondence is broken. mask: optional ``[..., n]`` keep-mask.

  Returns:
    dict of ``[...]`` arrays: ``source_err``, ``target_err``, ``pair_disagreement``,
    ``broken_fraction`` and ``clean_disagreement`` (disagreement rate among intact pairs;
    0 when there are none).

  Example:
    >>> s = coupled_pair_statistics([0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1],
    ...                             [False, False, True, True])
    >>> {k: round(float(v), 4) for k, v in s.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'source_err': 0.25, 'target_err': 0.75, 'pair_disagreement': 0.5,
     'broken_fraction': 0.5, 'clean_disagreement': 0.5}
  """
  xp = _xp(labels, pred_source, pred_target, broken, mask)
  labels, pred_a, pred_b = (xp.asarray(v) for v in (labels, pred_source, pred_target))
  broken = xp.asarray(broken) != 0
  keep = _keep(xp, mask)
  keep_all = xp.ones(broken.shape, bool) if keep is None else xp.broadcast_to(keep, broken.shape)
  differ = pred_a != pred_b
  clean = keep_all & ~broken
  n_clean = xp.sum(clean, axis=-1)
  clean_dis = xp.sum(differ & clean, axis=-1) / xp.maximum(n_clean, 1)
  return {
      'source_err': _mean(xp, _float(xp, pred_a != labels), keep),
      'target_err': _mean(xp, _float(xp, pred_b != labels), keep),
      'pair_disagreement': _mean(xp, _float(xp, differ), keep),
      'broken_fraction': _mean(xp, _float(xp, broken), keep),
      'clean_disagreement': _float(xp, clean_dis),
  }


# --------------------------------------------------------------------------------------
# T1: the test-set bound (Clopper–Pearson limits of a binomial error rate).
# --------------------------------------------------------------------------------------

_BISECTION_STEPS = 64  # halves [0, 1] down to float64 resolution; float32 saturates earlier


def _beta_query(xp, q, a, b):
  """Broadcast (q, a, b), the validity mask, and harmless stand-ins where invalid."""
  ok = (a > 0) & (b > 0) & (q >= 0) & (q <= 1)
  return ok, xp.where(ok, q, 0.5), xp.where(ok, a, 1.0), xp.where(ok, b, 1.0)


@jax.jit
def _beta_quantile_jax(q, a, b):
  """Bisection on I_x(a, b) = q over x ∈ [0, 1] (``jax.scipy.special.betainc``)."""
  dtype = jnp.result_type(q, a, b, float)
  q, a, b = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (q, a, b)))
  ok, q, a, b = _beta_query(jnp, q, a, b)

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    below = jax.scipy.special.betainc(a, b, mid) < q
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
  lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (jnp.zeros_like(q), jnp.ones_like(q)))
  return jnp.where(ok, 0.5 * (lo + hi), jnp.nan)


def _beta_quantile_numpy(q, a, b):
  """``scipy.special.betaincinv`` in float64 (results tables; 28× faster than a NumPy
  bisection on a 16,384-row table, equal to it within 2e-14)."""
  from scipy import special

  q, a, b = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q, a, b)))
  with np.errstate(invalid='ignore'):
    ok, q, a, b = _beta_query(np, q, a, b)
  return np.where(ok, special.betaincinv(a, b, q), np.nan)


def beta_quantile(q: Array, a: Array, b: Array):
  """(T1 helper) Quantile function of Beta(a, b): the x ∈ [0, 1] with I_x(a, b) = q.

  Elementwise and broadcasting: with jax inputs (or under ``jit``/``vmap``) bisection (64
  halvings of [0, 1]) on ``jax.scipy.special.betainc`` in the inputs' precision; with numpy
  inputs ``scipy.special.betaincinv`` in float64 (a results table). NaN where a ≤ 0,
  b ≤ 0, q ∉ [0, 1] or any input is NaN.

  Example:
    >>> round(float(beta_quantile(0.5, 2.0, 2.0)), 6)
    0.5
  """
  if _xp(q, a, b) is jnp:
    return _beta_quantile_jax(q, a, b)
  return _beta_quantile_numpy(q, a, b)


def error_count(err: Array, n: Array):
  """(T1 helper) Number of errors k = round(err·n) from an error fraction over n examples."""
  xp = _xp(err, n)
  return xp.round(_float(xp, err) * _float(xp, n))


def _cp_inputs(k, n, delta):
  xp = _xp(k, n, delta)
  k, n, delta = (_float(xp, v) for v in (k, n, delta))
  valid = (n >= 1) & (k >= 0) & (k <= n) & (delta > 0) & (delta < 1) & (k == xp.round(k))
  return xp, k, n, delta, valid


def clopper_pearson_upper(k: Array, n: Array, delta: Array):
  """(T1, upper) One-sided Clopper–Pearson upper limit ``Beta⁻¹(1 − δ; k + 1, n − k)``.

  Statement: for a classifier fixed before n i.i.d. test examples are drawn, with k the
  number of its test errors, ``P[R > CP_upper(k, n, δ)] ≤ δ`` over the test sample
  (Clopper & Pearson 1934; Langford 2005, "Tutorial on practical prediction theory",
  the test-set bound). 1 at k = n. Kind test-set: it must never be judged against the
  test set it was computed from. NaN where k ∉ {0, …, n}, n < 1 or δ ∉ (0, 1).

  Example:
    >>> round(float(clopper_pearson_upper(0, 100, 0.05)), 6)  # 1 − 0.05^(1/100)
    0.029513
  """
  xp, k, n, delta, valid = _cp_inputs(k, n, delta)
  q = beta_quantile(1.0 - delta, k + 1.0, xp.where(k < n, n - k, 1.0))
  return xp.where(valid, xp.where(k >= n, 1.0, q), xp.nan)


def clopper_pearson_lower(k: Array, n: Array, delta: Array):
  """(T1, lower) One-sided Clopper–Pearson lower limit ``Beta⁻¹(δ; k, n − k + 1)``.

  Statement: ``P[R < CP_lower(k, n, δ)] ≤ δ`` over the test sample, for a classifier
  fixed before it is drawn. 0 at k = 0. Kind test-set. NaN on invalid inputs as for
  :func:`clopper_pearson_upper`.

  Example:
    >>> round(float(clopper_pearson_lower(100, 100, 0.05)), 6)  # 0.05^(1/100)
    0.970487
  """
  xp, k, n, delta, valid = _cp_inputs(k, n, delta)
  q = beta_quantile(delta, xp.where(k > 0, k, 1.0), n - k + 1.0)
  return xp.where(valid, xp.where(k <= 0, 0.0, q), xp.nan)


def clopper_pearson_interval(err: Array, n: Array, delta: Array):
  """(T1) ``(lower, upper)`` Clopper–Pearson limits on R from a test error fraction.

  k = round(err·n) (:func:`error_count`), then :func:`clopper_pearson_lower` and
  :func:`clopper_pearson_upper`, each at level δ (one-sided; both together hold with
  probability ≥ 1 − 2δ).

  Example:
    >>> lo, hi = clopper_pearson_interval(0.3, 1000, 0.05)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.2761, 0.3248)
  """
  k = error_count(err, n)
  return clopper_pearson_lower(k, n, delta), clopper_pearson_upper(k, n, delta)
