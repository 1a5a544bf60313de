"""Divergences between teacher and student predictions, and domain-gap measures.

Implements the per-example divergences of theory.md §1, the project's mathematical contract
(KL, JS, TV, the target / non-target split of Decoupled KD, TCKD, NCKD, NT-JS, NT-TV), so that
the identities of theory.md §2 hold to float tolerance:

* (D1) ``kl = target_kl + (1 - p_y) * non_target_kl``;
* (D2) Pinsker, ``tv <= sqrt(kl / 2)``;
* (D3) ``0 <= js <= ln 2`` and ``0 <= tv <= 1``;
* (D4) with K = 2 classes ``non_target_kl = non_target_js = non_target_tv = 0`` exactly, with
  zero (finite) gradients.

It also provides the raw-input domain-gap measure of the NTDH code
(:func:`central_moment_discrepancy`) and the total-variation quantities of the CMCD side
(theory.md §4, C1 and the domain-classifier estimate): :func:`gaussian_tv` and
:func:`classifier_tv_estimate`.

Conventions (optax-like): functions take logits, work in log space, return one value per
example (shape ``logits.shape[:-1]``) and leave the reduction to the caller; they are pure and
work under ``jit``, ``vmap`` and ``grad``. ``p`` is always the teacher (first argument), ``q``
the student. All logarithms are natural (nats). ``temperature`` is a scalar or an array
broadcastable against the logits (``[..., 1]`` gives per-example temperatures). Logits may be
``-inf`` (masked classes): zero probabilities contribute exactly 0, never NaN.
"""

import math

import jax
import jax.numpy as jnp

__all__ = [
    'kl',
    'js',
    'tv',
    'target_split',
    'target_kl',
    'non_target_kl',
    'non_target_js',
    'non_target_tv',
    'non_target_js_reversed',
    'central_moment_discrepancy',
    'gaussian_tv',
    'classifier_tv_estimate',
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# One implementation of KL / JS / TV between two log-distributions (last axis).
# --------------------------------------------------------------------------------------------
def _kl_log(log_p, log_q):
  r"""KL(p‖q) = Σ_k p_k δ_k, δ_k = log p_k − log q_k, from normalised log-probabilities.

  Summed as it stands, Σ p_k δ_k adds terms of size |δ_k| into a total of size O(δ²), and
  a rounding c of the normaliser of log p or log q (≈ 1 ulp of log K) enters it in full: in
  float32 a KL near 1e-6 comes out with a large relative error, even negative. Since
  Σ p = Σ q = 1, the same value is

  .. math:: \mathrm{KL} = \sum_{k:\,p_k > 0} p_k\,(\delta_k + e^{-\delta_k} - 1)
            + \sum_{k:\,p_k = 0} q_k ,

  a sum of non-negative terms of size O(δ²), and a rounding c of a normaliser shifts every
  δ_k by c, which changes the sum by c²/2 only (the +c of δ and the −c of e^{−δ} cancel):
  the result keeps float32's relative precision and is never negative. ``expm1`` gives the
  small terms; for δ_k <= −1 a term is computed as ``p_k δ_k + q_k − p_k`` (no overflow
  for q_k ≫ p_k). q_k = 0 < p_k gives +inf. "Double wheres" keep inf and NaN out of the
  backward pass.
  """
  support = log_p != -jnp.inf  # NaN is in the support: it must reach the result
  lp = jnp.where(support, log_p, 0.0)
  lq = jnp.where(support, log_q, 0.0)
  delta = lp - lq
  infinite = delta == jnp.inf  # q_k = 0 < p_k
  near = delta > -1.0
  d_near = jnp.where(near & ~infinite, delta, 0.0)
  d_far = jnp.where(near, -1.0, delta)
  p = jnp.exp(lp)
  terms = jnp.where(near, p * (d_near + jnp.expm1(-d_near)), p * d_far + jnp.exp(lq) - p)
  terms = jnp.where(infinite, jnp.inf, terms)
  return jnp.sum(jnp.where(support, terms, jnp.exp(log_q)), axis=-1)


def _log_mixture(log_p, log_q):
  """log m with m = (p + q) / 2; ``-inf`` where p = q = 0 (NaN-free values and gradients)."""
  either = (log_p != -jnp.inf) | (log_q != -jnp.inf)
  log_m = jnp.logaddexp(jnp.where(either, log_p, 0.0), jnp.where(either, log_q, 0.0)) - _LN2
  return jnp.where(either, log_m, -jnp.inf)


def _js_log(log_p, log_q):
  """JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, from log-probabilities."""
  log_m = _log_mixture(log_p, log_q)
  return 0.5 * (_kl_log(log_p, log_m) + _kl_log(log_q, log_m))


def _js_reversed_log(log_p, log_q):
  """½ [KL(m‖p) + KL(m‖q)], m = (p + q)/2 (the NTDH code's arguments; unbounded)."""
  log_m = _log_mixture(log_p, log_q)
  return 0.5 * (_kl_log(log_m, log_p) + _kl_log(log_m, log_q))


def _tv_log(log_p, log_q):
  """TV(p, q) = ½ Σ_k |p_k − q_k| from log-probabilities."""
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1)


def _log_softmax(logits, temperature):
  return jax.nn.log_softmax(logits / temperature, axis=-1)


# --------------------------------------------------------------------------------------------
# Full-distribution divergences.
# --------------------------------------------------------------------------------------------
def kl(p_logits, q_logits, temperature=1.0):
  r"""Kullback–Leibler divergence KL(p‖q) between two softmax distributions.

  .. math:: \mathrm{KL}(p\|q) = \sum_k p_k (\log p_k - \log q_k),\quad
            p = \mathrm{softmax}(z_p/T),\; q = \mathrm{softmax}(z_q/T).

  Reference: Kullback & Leibler (1951); used as the KD loss by Hinton et al. (2015).
  theory.md §1. Computed from log-softmax; zero probabilities contribute exactly 0.

  Args:
    p_logits: ``[..., K]`` logits of p (the teacher).
    q_logits: ``[..., K]`` logits of q (the student).
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example KL in nats (no T² factor).

  Example:
    >>> import jax.numpy as jnp
    >>> float(kl(jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0])))
    0.0
    >>> round(float(kl(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1])))), 4)
    0.5108
  """
  return _kl_log(_log_softmax(p_logits, temperature), _log_softmax(q_logits, temperature))


def js(p_logits, q_logits, temperature=1.0):
  r"""Jensen–Shannon divergence between two softmax distributions.

  .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m),
            \quad m = (p + q)/2 .

  Symmetric, ``0 <= js <= ln 2`` (theory.md D3). Reference: Lin, "Divergence measures based
  on the Shannon entropy", IEEE Trans. Inf. Theory 1991.

  Args:
    p_logits: ``[..., K]`` logits of p (the teacher).
    q_logits: ``[..., K]`` logits of q (the student).
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example JS in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(js(jnp.array([1e4, 0.0]), jnp.array([0.0, 1e4]))), 4)  # ln 2
    0.6931
  """
  return _js_log(_log_softmax(p_logits, temperature), _log_softmax(q_logits, temperature))


def tv(p_logits, q_logits, temperature=1.0):
  r"""Total variation distance between two softmax distributions.

  .. math:: \mathrm{TV}(p, q) = \tfrac12 \sum_k |p_k - q_k| .

  Symmetric, ``0 <= tv <= 1`` (theory.md D3) and ``tv <= sqrt(kl / 2)`` (Pinsker, D2).

  Args:
    p_logits: ``[..., K]`` logits of p (the teacher).
    q_logits: ``[..., K]`` logits of q (the student).
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example TV.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(tv(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1])))), 4)
    0.4
  """
  return _tv_log(_log_softmax(p_logits, temperature), _log_softmax(q_logits, temperature))


# --------------------------------------------------------------------------------------------
# Target / non-target decomposition (Decoupled KD).
# --------------------------------------------------------------------------------------------
def target_split(logits, labels, temperature=1.0):
  r"""Split a softmax distribution into its binary target part and non-target part.

  With p = softmax(z/T) and target class y:

  .. math:: b(p) = (p_y,\; 1 - p_y), \qquad
            \hat p_k = p_k / (1 - p_y) \;(k \neq y), \quad \hat p_y = 0 .

  Everything is computed in log space from the logits shifted by their maximum,
  ``z' = z/T − stop_gradient(max_k z_k/T)`` (no value or gradient changes: log-softmax is
  shift invariant): ``log p_y = log_softmax(z')_y``, ``log(1 − p_y) = LSE_{k≠y}(z') −
  LSE(z')`` and ``log p̂ = log_softmax`` of ``z'`` with the target entry set to ``-inf``.
  After the shift every log-sum-exp lies in ``[max_{k≠y} z'_k, log K]``, so float32 keeps
  its relative precision whatever max|z|/T is (unshifted, ``z_y − LSE(z)`` loses
  ``max|z|/T`` ulps). There is no log(0), no 0/0 and no cancelling difference; values and
  gradients are NaN-free (the masked target entry is a constant ``-inf``). Reference: Zhao
  et al., "Decoupled Knowledge Distillation", CVPR 2022; theory.md §1. Requires K >= 2.

  Args:
    logits: ``[..., K]`` logits.
    labels: ``[...]`` integer target classes in ``[0, K)``.
    temperature: softmax temperature T.

  Returns:
    ``(log_binary, log_non_target)``: ``log_binary`` ``[..., 2]`` = (log p_y, log(1 − p_y));
    ``log_non_target`` ``[..., K]`` = log p̂, with ``-inf`` at the target class.

  Example:
    >>> import jax.numpy as jnp
    >>> log_b, log_nt = target_split(jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.array(0))
    >>> [round(float(v), 4) for v in jnp.exp(jnp.concatenate([log_b, log_nt]))]
    [0.5, 0.5, 0.0, 0.6, 0.4]
  """
  z = logits / temperature
  z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  is_target = jnp.arange(z.shape[-1]) == jnp.asarray(labels)[..., None]
  rest = jnp.where(is_target, -jnp.inf, z)
  log_p_target = jnp.sum(jnp.where(is_target, jax.nn.log_softmax(z, axis=-1), 0.0), axis=-1)
  log_p_rest = jax.nn.logsumexp(rest, axis=-1) - jax.nn.logsumexp(z, axis=-1)
  log_binary = jnp.stack([log_p_target, log_p_rest], axis=-1)
  return log_binary, jax.nn.log_softmax(rest, axis=-1)


def _binary_non_target(teacher_logits, student_logits, labels, temperature):
  """The non-target divergences at K = 2, known without computing them (D4): p̂ and q̂ are
  the same point mass, so every one is exactly 0 — NaN where a logit over T is NaN or
  +inf, as the general computation gives. Traced, this is one comparison instead of the
  split's log-sum-exps."""
  t, s = (jnp.asarray(z) / temperature for z in (teacher_logits, student_logits))
  invalid = lambda z: jnp.any(jnp.isnan(z) | (z == jnp.inf), axis=-1)
  shape = jnp.broadcast_shapes(t.shape[:-1], s.shape[:-1], jnp.shape(labels))
  zero = jnp.zeros(shape, jnp.result_type(t, s))
  return jnp.where(invalid(t) | invalid(s), jnp.nan, zero)


def _non_target(divergence, teacher_logits, student_logits, labels, temperature):
  """`divergence(log p̂, log q̂)` of the non-target distributions (known at K = 2)."""
  if jnp.shape(teacher_logits)[-1] == 2:
    return _binary_non_target(teacher_logits, student_logits, labels, temperature)
  _, (p_hat, q_hat) = _split_pair(teacher_logits, student_logits, labels, temperature)
  return divergence(p_hat, q_hat)


def _split_pair(teacher_logits, student_logits, labels, temperature):
  """((log b(p), log b(q)), (log p̂, log q̂))."""
  (b_p, p_hat), (b_q, q_hat) = (target_split(z, labels, temperature)
                                for z in (teacher_logits, student_logits))
  return (b_p, b_q), (p_hat, q_hat)


def target_kl(teacher_logits, student_logits, labels, temperature=1.0):
  r"""Target-class KD (TCKD): KL between the binary target distributions.

  .. math:: \mathrm{TCKD} = \mathrm{KL}(b(p)\|b(q)), \quad b(p) = (p_y, 1 - p_y).

  Reference: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (Eq. 1–4);
  theory.md §1 and D1.

  Args:
    teacher_logits: ``[..., K]`` teacher logits (p).
    student_logits: ``[..., K]`` student logits (q).
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example TCKD in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> t, s = jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.log(jnp.array([0.5, 0.1, 0.4]))
    >>> round(float(target_kl(t, s, jnp.array(0))), 6)  # same p_y: binary parts agree
    0.0
  """
  (b_p, b_q), _ = _split_pair(teacher_logits, student_logits, labels, temperature)
  return _kl_log(b_p, b_q)


def non_target_kl(teacher_logits, student_logits, labels, temperature=1.0):
  r"""Non-target-class KD (NCKD): KL between the renormalised non-target distributions.

  .. math:: \mathrm{NCKD} = \mathrm{KL}(\hat p\|\hat q), \quad
            \hat p_k = p_k/(1-p_y),\; k \neq y .

  With (D1) ``kl = target_kl + (1 - p_y) * non_target_kl``. For K = 2, p̂ is a point mass and
  the result is exactly 0 with zero gradient (D4). This is the primary "non-target
  divergence" D_NT of NTDH (Chen et al., arXiv 2409.02438). Reference: Zhao et al., CVPR 2022.

  Args:
    teacher_logits: ``[..., K]`` teacher logits (p).
    student_logits: ``[..., K]`` student logits (q).
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example NCKD in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> t, s = jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.log(jnp.array([0.8, 0.12, 0.08]))
    >>> round(float(non_target_kl(t, s, jnp.array(0))), 6)  # p̂ = q̂ = (0, .6, .4)
    0.0
  """
  return _non_target(_kl_log, teacher_logits, student_logits, labels, temperature)


def non_target_js(teacher_logits, student_logits, labels, temperature=1.0):
  r"""Jensen–Shannon divergence between the non-target distributions, NT-JS = JS(p̂, q̂).

  Symmetric, in ``[0, ln 2]``; exactly 0 for K = 2 (theory.md D3, D4). See
  :func:`non_target_kl` for p̂ and :func:`js` for JS.

  Args:
    teacher_logits: ``[..., K]`` teacher logits (p).
    student_logits: ``[..., K]`` student logits (q).
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example NT-JS in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> float(non_target_js(jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0]), jnp.array(1)))
    0.0
  """
  return _non_target(_js_log, teacher_logits, student_logits, labels, temperature)


def non_target_tv(teacher_logits, student_logits, labels, temperature=1.0):
  r"""Total variation between the non-target distributions: NT-TV = ½ Σ_k |p̂_k − q̂_k|.

  Symmetric, in ``[0, 1]``; exactly 0 for K = 2 (theory.md D3, D4).

  Args:
    teacher_logits: ``[..., K]`` teacher logits (p).
    student_logits: ``[..., K]`` student logits (q).
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example NT-TV.

  Example:
    >>> import jax.numpy as jnp
    >>> t, s = jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.log(jnp.array([0.5, 0.1, 0.4]))
    >>> round(float(non_target_tv(t, s, jnp.array(0))), 4)  # p̂=(.6,.4), q̂=(.2,.8)
    0.4
  """
  return _non_target(_tv_log, teacher_logits, student_logits, labels, temperature)


def non_target_js_reversed(teacher_logits, student_logits, labels, temperature=1.0):
  r"""The NTDH authors' "JS" on the non-target distributions, for parity only.

  .. math:: \tfrac12 [\mathrm{KL}(m\|\hat p) + \mathrm{KL}(m\|\hat q)], \quad
            m = (\hat p + \hat q)/2 .

  The KL arguments are reversed with respect to the Jensen–Shannon divergence, so this is
  **not** bounded by ln 2 (it grows without bound as p̂ and q̂ separate); use
  :func:`non_target_js` for the true JS. Reference: the public code of Chen et al.,
  arXiv 2409.02438; theory.md §1.

  Args:
    teacher_logits: ``[..., K]`` teacher logits (p).
    student_logits: ``[..., K]`` student logits (q).
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example values in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> t = jnp.array([0.0, 30.0, 0.0])
    >>> s = jnp.array([0.0, 0.0, 30.0])
    >>> bool(non_target_js_reversed(t, s, jnp.array(0)) > jnp.log(2.0))
    True
  """
  return _non_target(_js_reversed_log, teacher_logits, student_logits, labels, temperature)


# --------------------------------------------------------------------------------------------
# Domain-gap measures.
# --------------------------------------------------------------------------------------------
def _safe_sqrt(sq):
  """sqrt(sq) for sq >= 0, with a finite (zero) gradient at sq = 0."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _safe_norm(v, axis=-1):
  """Euclidean norm with a finite (zero) gradient at v = 0."""
  return _safe_sqrt(jnp.sum(v * v, axis=axis))


def _weighted_mean(x, weights):
  if weights is None:
    return jnp.mean(x, axis=0)
  weights = jnp.asarray(weights, x.dtype)
  return jnp.tensordot(weights, x, axes=(0, 0)) / jnp.sum(weights)


def central_moment_discrepancy(x, y, moments=5, x_weights=None, y_weights=None):
  r"""Central moment discrepancy between two samples, as in the NTDH / MFH code.

  .. math:: d_K(X, Y) = \|\mathbb E[X] - \mathbb E[Y]\|_2 +
            \sum_{k=2}^{K} \|\mathbb E[(X - \mathbb E X)^k] - \mathbb E[(Y - \mathbb E Y)^k]\|_2,

  moments taken per feature (column) over the examples (rows). This is the raw form used by
  the NTDH code to measure the gap between x_a and x_b (docs/protocols.md §G): there is **no**
  interval normalisation ``1/|b-a|^k`` of Zellinger et al., "Central Moment Discrepancy
  (CMD) for Domain-Invariant Representation Learning", ICLR 2017, so the value is not
  bounded and depends on the scale of the inputs. Norms have a finite gradient at 0.

  Args:
    x: ``[n, d]`` samples from the first distribution (rows = examples).
    y: ``[m, d]`` samples from the second distribution.
    moments: highest central moment K (static int, >= 1).
    x_weights: optional ``[n]`` non-negative example weights (e.g. a 0/1 subset mask); the
      expectations become weighted means.
    y_weights: optional ``[m]`` example weights for ``y``.

  Returns:
    scalar discrepancy (>= 0).

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.0], [2.0]]); y = jnp.array([[1.0], [5.0]])
    >>> float(central_moment_discrepancy(x, y, moments=2))  # |1 - 3| + |1 - 4|
    5.0
  """
  mean_x, mean_y = _weighted_mean(x, x_weights), _weighted_mean(y, y_weights)
  total = _safe_norm(mean_x - mean_y)
  cx, cy = x - mean_x, y - mean_y
  for k in range(2, moments + 1):
    total = total + _safe_norm(_weighted_mean(cx**k, x_weights)
                               - _weighted_mean(cy**k, y_weights))
  return total


def gaussian_tv(shift_norm, sigma):
  r"""Total variation between two isotropic Gaussians that differ by a mean shift.

  .. math:: \mathrm{TV}(N(\mu, \sigma^2 I), N(\mu + \delta, \sigma^2 I))
            = 2\Phi(\|\delta\| / (2\sigma)) - 1 = \mathrm{erf}(\|\delta\| / (2\sqrt2\,\sigma)).

  theory.md C1 (Gaussian-shift variant); the erf form keeps full precision for small shifts.

  Args:
    shift_norm: ``‖δ‖`` (any shape, >= 0).
    sigma: standard deviation σ (> 0), broadcastable with ``shift_norm``.

  Returns:
    TV, same shape as the broadcast inputs, in ``[0, 1)``.

  Example:
    >>> round(float(gaussian_tv(2.0, 1.0)), 4)  # 2Φ(1) − 1
    0.6827
  """
  return jax.scipy.special.erf(jnp.asarray(shift_norm) / (2.0 * jnp.sqrt(2.0) * sigma))


def classifier_tv_estimate(accuracy):
  r"""Lower estimate of TV from a balanced domain classifier's accuracy.

  .. math:: \widehat{\mathrm{TV}} = \mathrm{clip}(2\,\mathrm{acc} - 1, 0, 1).

  For balanced samples from P and Q, any classifier has accuracy ``acc <= (1 + TV)/2``, so
  ``TV >= 2 acc − 1`` (docs/protocols.md §C; theory.md §4).

  Args:
    accuracy: held-out accuracy of a P-vs-Q classifier (any shape).

  Returns:
    estimate, same shape, in ``[0, 1]``.

  Example:
    >>> float(classifier_tv_estimate(0.75)), float(classifier_tv_estimate(0.4))
    (0.5, 0.0)
  """
  return jnp.clip(2.0 * jnp.asarray(accuracy) - 1.0, 0.0, 1.0)
