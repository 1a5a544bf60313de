"""CMCD synthetic paired modalities with an exactly known gap (docs/protocols.md §C; theory.md C1).

Two latent families, both observed through fixed random injective maps:

* **Exact-TV latent generator.** y ~ Uniform{0..K-1}; z = μ_y + r·u with u uniform in the unit
  ball of R^d and class means μ_k = s·e_k (s > √2·r, so class supports are disjoint and the
  source Bayes error is 0). Source latent z_A = [z, 0]. Target latent: with probability ε the
  correspondence is broken, z_B = [ξ, 1] with ξ an independent draw from the same marginal;
  otherwise z_B = [z, 0]. Then TV((z_A, y), (z_B, y)) = ε and the target Bayes error is
  ε(1 − 1/K), exactly (`bounds.exact_tv_latent_bayes_floor`).
* **Gaussian-shift family** (an alignable gap). z = μ_y + σ·g, g ~ N(0, I); z_A = [z, 0],
  z_B = [z + δ, 0] with δ = ‖δ‖·v for a fixed unit vector v. Every class conditional is shifted
  by the same δ, so TV((z_A, y), (z_B, y)) = 2Φ(‖δ‖/(2σ)) − 1 (`divergences.gaussian_tv`), and the
  Bayes error of both modalities is that of the unshifted mixture,
  1 − E_g[Φ(s/σ + g)^(K−1)] (:func:`gaussian_bayes_floor`). Its counterpart on the same
  Gaussian latents, the broken correspondence at probability ε (TV = ε), is drawn by the same
  :func:`sample_gaussian_pairs`, so the two kinds of gap can be compared at equal TV.

Observations x = f(z) = ψ(z W + b): W has orthonormal rows (a full-column-rank linear map of
the (d+1)-dimensional latent into R^D, D > d), ψ(t) = t + ½·tanh(t) elementwise (strictly
increasing). f is injective, so neither TV nor the Bayes error changes (z = (ψ⁻¹(x) − b) Wᵀ;
the tests recover z so). The two modalities use two different maps into spaces of different
dimension.

The gap (ε or ‖δ‖) is an ordinary traced array, so one compiled program covers every gap. For
a fixed key, `broken = U < ε` with U fixed: the broken set grows monotonically with ε (common
random numbers across a sweep's ε axis). The observation maps are built from their own key;
the CMCD experiment derives it from `config.map_seed`, so the maps are fixed for a whole sweep
(the same for every setting and seed).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm


class LatentPairs(NamedTuple):
  """Coupled latent pairs and their labels."""

  z_a: jax.Array  # [n, d + 1] source latents [z, 0]
  z_b: jax.Array  # [n, d + 1] target latents
  y: jax.Array  # [n] int32 labels (of the source latent z)
  broken: jax.Array  # [n] bool, correspondence broken (always False for the Gaussian shift)


class ObservationMap(NamedTuple):
  """x = ψ(z W + b), W [d + 1, D] with orthonormal rows, ψ(t) = t + ½ tanh(t)."""

  weight: jax.Array  # [d + 1, D]
  bias: jax.Array  # [D]


def class_means(num_classes: int, latent_dim: int, separation: float) -> jax.Array:
  """[K, d] class means μ_k = s·e_k (pairwise distance s·√2; needs K ≤ d)."""
  if num_classes > latent_dim:
    raise ValueError(f'num_classes={num_classes} must be <= latent_dim={latent_dim}')
  return separation * jnp.eye(num_classes, latent_dim)


def supports_disjoint(separation: float, radius: float) -> bool:
  """True when balls of radius r around the means s·e_k do not meet: s·√2 > 2r."""
  return separation * np.sqrt(2.0) > 2.0 * radius


def _ball(g, u, dim):
  """Uniform points in the unit ball from Gaussian directions g [..., dim] and uniforms u."""
  return g / jnp.linalg.norm(g, axis=-1, keepdims=True) * (u ** (1.0 / dim))[..., None]


def _class(u, num_classes):
  """A uniform class in {0..K-1} from u ~ U[0, 1)."""
  return jnp.minimum(jnp.floor(u * num_classes), num_classes - 1).astype(jnp.int32)


def _with_flag(z, flag):
  return jnp.concatenate([z, jnp.broadcast_to(flag, z.shape[:-1] + (1,)).astype(z.dtype)], -1)


def sample_exact_tv(key, n: int, epsilon, means: jax.Array, radius: float) -> LatentPairs:
  """n coupled latent pairs of the exact-TV generator (theory.md C1).

  Two PRNG draws in all (one Gaussian block, one uniform block), which keeps compilation fast.

  Args:
    key: typed PRNG key.
    n: number of pairs.
    epsilon: probability of a broken correspondence, in [0, 1] (may be traced).
    means: [K, d] class means with disjoint radius-r balls (:func:`class_means`).
    radius: r, radius of each class's ball.

  Returns:
    `LatentPairs`; TV((z_A, y), (z_B, y)) = ε, target Bayes error ε(1 − 1/K).
  """
  k_g, k_u = jax.random.split(key)
  num_classes, d = means.shape
  g = jax.random.normal(k_g, (2, n, d))  # directions of z and of the independent ξ
  u = jax.random.uniform(k_u, (5, n))  # classes of z and ξ, their radii, the broken flag
  y, y_xi = _class(u[0], num_classes), _class(u[1], num_classes)
  z = means[y] + radius * _ball(g[0], u[2], d)
  xi = means[y_xi] + radius * _ball(g[1], u[3], d)
  broken = u[4] < epsilon
  z_a = _with_flag(z, 0.0)
  z_b = jnp.where(broken[:, None], _with_flag(xi, 1.0), z_a)
  return LatentPairs(z_a, z_b, y, broken)


def shift_for_tv(tv, sigma):
  """‖δ‖ whose Gaussian-shift TV is `tv`: the inverse of 2Φ(‖δ‖/(2σ)) − 1 (tv < 1)."""
  return 2.0 * jnp.sqrt(2.0) * sigma * jax.scipy.special.erfinv(jnp.asarray(tv, jnp.float32))


def sample_gaussian_pairs(key, n: int, shift_norm, epsilon, means: jax.Array, sigma: float,
                          direction: jax.Array | None = None) -> LatentPairs:
  """n coupled latent pairs with Gaussian class conditionals and both kinds of gap.

  z = μ_y + σ·g. Intact pairs (probability 1 − ε) are shifted, z_B = [z + δ, 0], δ = ‖δ‖·v;
  broken ones are z_B = [ξ, 1], ξ an independent draw of the same mixture. With ε = 0 this is
  the Gaussian-shift family, TV = 2Φ(‖δ‖/(2σ)) − 1 (an alignable gap); with ‖δ‖ = 0 the
  broken-correspondence family on Gaussian latents, TV = ε (nothing can undo it). Target Bayes
  error: :func:`gaussian_target_bayes_floor`. Two PRNG draws, like :func:`sample_exact_tv`.

  Args:
    key: typed PRNG key.
    n: number of pairs.
    shift_norm: ‖δ‖ (may be traced).
    epsilon: probability of a broken correspondence, in [0, 1] (may be traced).
    means: [K, d] class means.
    sigma: class-conditional standard deviation σ.
    direction: [d] unit vector v of the shift; default the last latent axis.
  """
  k_g, k_u = jax.random.split(key)
  num_classes, d = means.shape
  direction = jnp.eye(d)[-1] if direction is None else direction
  g = jax.random.normal(k_g, (2, n, d))  # noise of z and of the independent ξ
  u = jax.random.uniform(k_u, (3, n))  # classes of z and ξ, the broken flag
  y, y_xi = _class(u[0], num_classes), _class(u[1], num_classes)
  z = means[y] + sigma * g[0]
  xi = means[y_xi] + sigma * g[1]
  broken = u[2] < epsilon
  shifted = _with_flag(z + shift_norm * direction, 0.0)
  z_b = jnp.where(broken[:, None], _with_flag(xi, 1.0), shifted)
  return LatentPairs(_with_flag(z, 0.0), z_b, y, broken)


def sample_gaussian_shift(key, n: int, shift_norm, means: jax.Array, sigma: float,
                          direction: jax.Array | None = None) -> LatentPairs:
  """n coupled latent pairs of the Gaussian-shift family (theory.md C1, alignable gap):
  :func:`sample_gaussian_pairs` at ε = 0, so z_B = z_A + [δ, 0] and `broken` is all False;
  TV = `divergences.gaussian_tv(shift_norm, sigma)`."""
  return sample_gaussian_pairs(key, n, shift_norm, 0.0, means, sigma, direction)


def gaussian_bayes_floor(separation, sigma, num_classes: int, nodes: int = 96):
  """Bayes error of the Gaussian mixture with means s·e_k and covariance σ²I, equal priors.

  The Bayes rule is argmax_k z_k; it is right iff s + σg_y > σg_k for all k ≠ y, so
  P(error) = 1 − E_g[Φ(s/σ + g)^(K−1)], g ~ N(0, 1), computed by Gauss–Hermite quadrature
  (`nodes` points; exact to float precision for the default). A shift of both modalities'
  conditionals by the same δ leaves it unchanged, so it is the floor of source and target.
  """
  x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x²/2)
  w = w / np.sqrt(2.0 * np.pi)
  inner = norm.cdf(jnp.asarray(separation) / sigma + jnp.asarray(x, jnp.float32))
  return 1.0 - jnp.sum(jnp.asarray(w, jnp.float32) * inner ** (num_classes - 1))


def gaussian_target_bayes_floor(epsilon, separation, sigma, num_classes: int):
  """Target Bayes error of :func:`sample_gaussian_pairs`: (1 − ε)·floor + ε(1 − 1/K).

  Unflagged targets are the mixture shifted by a known δ (Bayes error `gaussian_bayes_floor`);
  on a flagged target ξ is independent of y, so every rule errs with probability 1 − 1/K.
  The shift does not enter.
  """
  floor = gaussian_bayes_floor(separation, sigma, num_classes)
  return (1.0 - epsilon) * floor + epsilon * (1.0 - 1.0 / num_classes)


def _psi(t):
  return t + 0.5 * jnp.tanh(t)


def make_observation_map(key, latent_dim: int, obs_dim: int) -> ObservationMap:
  """A random injective map R^(latent_dim) → R^(obs_dim) (latent_dim ≤ obs_dim).

  W = Qᵀ with Q the orthonormal factor of a Gaussian [obs_dim, latent_dim] matrix (full column
  rank by construction, well conditioned), b ~ N(0, ¼ I).
  """
  if latent_dim > obs_dim:
    raise ValueError(f'obs_dim={obs_dim} must be >= latent_dim={latent_dim} for injectivity')
  k_w, k_b = jax.random.split(key)
  q, r = jnp.linalg.qr(jax.random.normal(k_w, (obs_dim, latent_dim)))
  q = q * jnp.sign(jnp.diagonal(r))  # the unique QR with positive diagonal
  return ObservationMap(q.T, 0.5 * jax.random.normal(k_b, (obs_dim,)))


def observe(obs_map: ObservationMap, z: jax.Array) -> jax.Array:
  """x = ψ(z W + b), ψ(t) = t + ½ tanh(t) (strictly increasing, so x determines z)."""
  return _psi(z @ obs_map.weight + obs_map.bias)
