"""(P1) PAC-Bayes-kl bounds for linear classifiers (Seeger 2002; Maurer 2004).

Statement (docs/theory.md, P1). A linear classifier scores x̃ = [x, 1] ∈ R^D (the bias is the
weight of the constant feature). The prior P = N(0, σ₀² I) is fixed before the data. For the
trained weights normalised to unit length, u, the posterior is Q_{β,t} = N(β σ₀ u, t² σ₀² I).
For every δ ∈ (0, 1) and n i.i.d. training examples, with probability ≥ 1 − δ over the
sample, **simultaneously for every posterior Q**:

    kl(Ĝ_n(Q) ‖ G(Q)) ≤ [KL(Q‖P) + ln(2√n/δ)] / n,      so G(Q) ≤ kl⁻¹(Ĝ_n(Q), ·),

with G, Ĝ_n the expected and training Gibbs (randomised-classifier) errors, kl the Bernoulli
KL and kl⁻¹ its upper inversion (Maurer 2004, Thm 5; Germain et al. 2009). The only random
event of the proof is Markov's inequality on E_{h∼P} exp(n kl(Ĝ_n(h) ‖ G(h))) ≤ ξ(n) ≤ 2√n
(ξ(n) = Σ_k C(n, k) (k/n)^k (1 − k/n)^(n−k); Maurer proves ξ(n) ≤ 2√n for n ≥ 8, and the
tests check it for every n ≤ 2000, so the statement holds for every n ≥ 1), which
does not involve Q; Donsker–Varadhan then moves every Q at once. So a Q chosen after seeing
the sample — the trained direction u, and the (β, t) minimising the bound over a grid — costs
no union bound. The grid is fixed before the data anyway (:func:`posterior_grid`).

Closed forms (σ₀ cancels: the classifier is scale-invariant):

* binary, Q on the D-vector u of the score difference s₁ − s₀:
  KL(Q‖P) = β²/2 + (D/2)(t² − 1 − 2 ln t); Gibbs loss on (x̃, y ∈ ±1) = Φ̄(β γ / t),
  γ = y u·x̃ / ‖x̃‖ (the score w·x̃ is N(β σ₀ u·x̃, t² σ₀² ‖x̃‖²));
* K classes, Q isotropic on all K rows, U the K × D weight matrix of unit Frobenius norm:
  Q and P are Gaussians on R^{KD}, so KL(Q‖P) = β²/2 + (KD/2)(t² − 1 − 2 ln t). The scores
  s_k = m_k + s g_k (m_k = β σ₀ U_k·x̃, s = t σ₀ ‖x̃‖, g_k i.i.d. N(0, 1)) give
  P[correct] = P[g_k < (m_y − m_k)/s + g_y ∀k ≠ y] = E_g Π_{k≠y} Φ((m_y − m_k)/s + g), a 1-D
  Gauss–Hermite integral; (m_y − m_k)/s = (β/t)(U_y − U_k)·x̃/‖x̃‖.

Both losses depend on (β, t) only through r = β/t, and at fixed r the KL is smallest at
t² = D/(r² + D) (its derivative in t vanishes there), so the grid is a fixed ladder of
ratios r with that t: nothing is lost against a full (β, t) grid.

Majority vote. A symmetric Gaussian posterior votes like its mean (binary: sign(u·x̃); K
classes: i.i.d. score noise favours the largest mean score), and wherever the vote errs Q
errs with probability ≥ 1/2, so the deterministic classifier's expected error is ≤ 2 G(Q)
(Langford & Shawe-Taylor 2003): :func:`deterministic_upper`.

Every function is pure and works under ``jit`` and ``vmap``, in float32 and float64.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr

# Ratios r = β/t of the posterior grid, fixed before any data: 0.25 … 256, 4 per octave.
RATIOS = tuple(float(2.0 ** (k / 4)) for k in range(-8, 33))
# Gauss–Hermite nodes for the multiclass Gibbs loss (exact for polynomials of degree < 64).
GIBBS_NODES = 32


def normal_quadrature(nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Gauss–Hermite rule for E f(g), g ~ N(0, 1): points √2·x_i, weights w_i/√π (sum to 1)."""
  x, w = np.polynomial.hermite.hermgauss(nodes)
  return math.sqrt(2.0) * x, w / math.sqrt(math.pi)


def bernoulli_kl(q, p):
  """kl(q‖p) = q ln(q/p) + (1 − q) ln((1 − q)/(1 − p)), with 0 ln 0 = 0 (nats).

  Each logarithm is taken as log1p of an exactly computed difference, so the result keeps
  its relative precision as p → q (differences of logs would leave an absolute error of
  one ulp, which decides kl⁻¹ at small c in float32).
  """
  q, p = jnp.asarray(q), jnp.asarray(p)
  target = q * jnp.log1p((q - p) / p)
  rest = (1 - q) * jnp.log1p((p - q) / (1 - p))
  return jnp.where(q > 0, target, 0.0) + jnp.where(q < 1, rest, 0.0)


@functools.partial(jax.jit, static_argnames='iterations')  # one compilation per shape
def kl_inverse_upper(q, c, iterations: int = 64):
  """kl⁻¹(q, c) = sup{p ∈ [q, 1] : kl(q‖p) ≤ c}, by bisection (upper inversion).

  Returns the upper end of the final bracket, which is never below the exact value (the
  bound stays valid whatever the float rounding). 64 halvings reach the float64 resolution;
  in float32 the bracket stops shrinking after ~24 and the rest are no-ops. NaN in q or c
  gives NaN; c = +inf gives 1; c ≤ 0 gives q (up to the bracket width).
  """
  q, c = jnp.broadcast_arrays(jnp.asarray(q), jnp.asarray(c))
  dtype = jnp.result_type(q, c, jnp.float32)
  q = jnp.clip(q.astype(dtype), 0.0, 1.0)
  c = c.astype(dtype)

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    inside = bernoulli_kl(q, mid) <= c
    return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid)

  _, hi = jax.lax.fori_loop(0, iterations, halve, (q, jnp.ones_like(q)))
  bad = jnp.isnan(q) | jnp.isnan(c)
  return jnp.where(bad, jnp.nan, hi)


def gaussian_posterior_kl(beta, t, dim):
  """KL(N(β σ₀ u, t² σ₀² I_dim) ‖ N(0, σ₀² I_dim)) = β²/2 + (dim/2)(t² − 1 − 2 ln t), ‖u‖ = 1.

  For K rows use dim = K·D (the multiclass posterior is one Gaussian on R^{KD}).
  """
  beta, t = jnp.asarray(beta), jnp.asarray(t)
  return 0.5 * beta ** 2 + 0.5 * dim * (t ** 2 - 1.0 - 2.0 * jnp.log(t))


def posterior_grid(dim, ratios=RATIOS) -> tuple[jax.Array, jax.Array]:
  """(β, t) of the fixed grid: r = β/t from `ratios`, t² = dim/(r² + dim) (the KL-minimising t)."""
  r = jnp.asarray(ratios, float)
  t = jnp.sqrt(dim / (r ** 2 + dim))
  return r * t, t


def seeger_maurer_bound(gibbs_train_err, posterior_kl, n, delta):
  """G(Q) ≤ kl⁻¹(Ĝ_n, [KL(Q‖P) + ln(2√n/δ)]/n) (Maurer 2004), prob ≥ 1 − δ for all Q at once."""
  n = jnp.asarray(n)
  c = (posterior_kl + jnp.log(2.0 * jnp.sqrt(n) / delta)) / n
  return kl_inverse_upper(gibbs_train_err, c)


def deterministic_upper(gibbs_bound):
  """min(1, 2 G): the majority vote (= the mean classifier) errs at most twice as often as Q."""
  return jnp.minimum(1.0, 2.0 * jnp.asarray(gibbs_bound))


# ----------------------------------------------------------------------------------------------
# Directions and normalised scores of a trained linear layer (kernel [d, K], bias [K]).
# ----------------------------------------------------------------------------------------------
def dense_layer(params):
  """(kernel [d, K], bias [K]) of a linear `models.MLP` (no hidden layer): its only layer."""
  (layer,) = params['params'].values()
  return layer['kernel'], layer['bias']


def augment(x):
  """x̃ = [x, 1]: the bias becomes the weight of a constant feature."""
  x = jnp.asarray(x)
  return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], -1)


def _unit(v):
  norm2 = jnp.sum(v ** 2)
  return v * jax.lax.rsqrt(jnp.where(norm2 > 0, norm2, 1.0))  # zero weights stay zero


def binary_direction(kernel, bias):
  """u ∈ R^{d+1}: [w₁ − w₀, b₁ − b₀] (the score difference s₁ − s₀) normalised to unit length."""
  return _unit(jnp.concatenate([kernel[:, 1] - kernel[:, 0], (bias[1] - bias[0])[None]]))


def multiclass_direction(kernel, bias):
  """U ∈ R^{K×(d+1)}: rows [w_k, b_k], normalised to unit Frobenius norm."""
  return _unit(jnp.concatenate([kernel, bias[None, :]], 0).T)


def normalised_scores(direction, x):
  """u·x̃/‖x̃‖ for u [D] (→ [n]) or U x̃/‖x̃‖ for U [K, D] (→ [n, K])."""
  xt = augment(x)
  unit_x = xt * jax.lax.rsqrt(jnp.sum(xt ** 2, -1, keepdims=True))  # ‖x̃‖ ≥ 1
  return unit_x @ direction.T


def binary_margins(direction, x, labels):
  """γ = y u·x̃/‖x̃‖ with y = 2·label − 1 ∈ ±1."""
  return (2.0 * labels - 1.0) * normalised_scores(direction, x)


def binary_gibbs_loss(margins, ratio):
  """Φ̄(r γ), r = β/t: the probability that w ~ Q misclassifies (per example)."""
  return ndtr(-jnp.asarray(ratio) * margins)


def multiclass_gibbs_loss(scores, labels, ratio, nodes: int = GIBBS_NODES):
  """1 − E_g Π_{k≠y} Φ(r (a_y − a_k) + g), a = U x̃/‖x̃‖ [n, K], r = β/t (per example).

  The product is summed in log space (`log_ndtr`) at each Gauss–Hermite node g.
  """
  g, w = normal_quadrature(nodes)
  a_y = jnp.take_along_axis(scores, labels[:, None], -1)
  z = jnp.asarray(ratio) * (a_y - scores)  # [n, K]; the k = y entry is dropped below
  others = jnp.arange(scores.shape[-1]) != labels[:, None]
  log_phi = log_ndtr(z[:, None, :] + jnp.asarray(g, scores.dtype)[None, :, None])  # [n, G, K]
  log_correct = jnp.sum(jnp.where(others[:, None, :], log_phi, 0.0), -1)
  correct = jnp.exp(log_correct) @ jnp.asarray(w, scores.dtype)
  return jnp.clip(1.0 - correct, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# The bound of one trained linear classifier, minimised over the fixed grid.
# ----------------------------------------------------------------------------------------------
def _weighted_mean(values, weights):
  if weights is None:
    return jnp.mean(values, -1)
  return values @ weights / jnp.maximum(jnp.sum(weights), 1.0)


def minimise_over_grid(loss_fn, train, test, dim, n, delta, weights=None, ratios=RATIOS):
  """P1 minimised over the fixed grid, with the chosen posterior's measured test Gibbs error.

  Args:
    loss_fn: (data, ratio) -> per-example Gibbs loss of Q_{β,t} (r = β/t).
    train, test: the data `loss_fn` reads (e.g. margins), training and test examples.
    dim: dimension of the posterior (D binary, K·D multiclass).
    n: number of training examples the bound is about (Σ weights when `weights` is given).
    delta: confidence parameter.
    weights: optional 0/1 [n_train] mask selecting the training examples.

  Returns:
    {'gibbs_bound': the P1 bound kl⁻¹(Ĝ_n, ·), 'gibbs_train_err': Ĝ_n, 'posterior_kl':
     KL(Q‖P), 'posterior_beta': β, 'posterior_t': t, 'gibbs_err': the test Gibbs error} of
    the minimising posterior.
  """
  beta, t = posterior_grid(dim, ratios)
  ratio = jnp.asarray(ratios, float)
  train_err = jax.vmap(lambda r: _weighted_mean(loss_fn(train, r), weights))(ratio)
  kl_qp = gaussian_posterior_kl(beta, t, dim)
  bound = seeger_maurer_bound(train_err, kl_qp, n, delta)
  best = jnp.argmin(jnp.where(jnp.isnan(bound), jnp.inf, bound))
  return {'gibbs_train_err': train_err[best], 'posterior_kl': kl_qp[best],
          'posterior_beta': beta[best], 'posterior_t': t[best], 'gibbs_bound': bound[best],
          'gibbs_err': jnp.mean(loss_fn(test, ratio[best]))}


def _named(out, prefix):
  """Columns `<prefix>gibbs_bound` (read by the `p1_upper_<model>` registry entries),
  `<prefix>gibbs_err`, `<prefix>gibbs_train_err`, `<prefix>posterior_kl`, `…_beta`, `…_t`.

  The bound is computed here, in the compiled program, where the grid's bisections run
  anyway: recomputing it on the results table costs a small XLA compilation per table
  shape (≈ 1 s on a loaded 2-core CPU), more than the whole in-program cost (< 0.1 s for
  600 settings). `seeger_maurer_bound` recomputes it from the other columns.
  """
  return {prefix + k: v for k, v in out.items()}


def binary_p1(kernel, bias, x_train, y_train, x_test, y_test, delta, weights=None,
              prefix=''):
  """P1 of a two-class linear layer (binary form, D = d + 1), as registry input columns."""
  u = binary_direction(kernel, bias)
  n = y_train.shape[0] if weights is None else jnp.sum(weights)
  out = minimise_over_grid(binary_gibbs_loss, binary_margins(u, x_train, y_train),
                           binary_margins(u, x_test, y_test), u.shape[0], n, delta, weights)
  return _named(out, prefix)


def multiclass_p1(kernel, bias, x_train, y_train, x_test, y_test, delta, weights=None,
                  prefix=''):
  """P1 of a K-class linear layer (multiclass Gauss–Hermite form, dim = K(d + 1))."""
  u = multiclass_direction(kernel, bias)
  loss = lambda data, r: multiclass_gibbs_loss(data[0], data[1], r)
  n = y_train.shape[0] if weights is None else jnp.sum(weights)
  out = minimise_over_grid(loss, (normalised_scores(u, x_train), y_train),
                           (normalised_scores(u, x_test), y_test), u.size, n, delta, weights)
  return _named(out, prefix)
