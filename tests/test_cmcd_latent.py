"""CMCD latent generators (theory.md C1): exact TV and Bayes floors against Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import bounds
from xdistill_jax import divergences
from xdistill_jax.generators import cmcd_latent

K, D, SEP, R = 4, 8, 2.0, 1.0
N = 40_000


def _within(estimate, exact, se, k=3.0):
  assert abs(estimate - exact) <= k * max(se, 1e-12), (estimate, exact, se)


@pytest.fixture(scope='module')
def means():
  return cmcd_latent.class_means(K, D, SEP)


@pytest.fixture(scope='module')
def maps():
  k_a, k_b = jax.random.split(jax.random.key(7))
  return (cmcd_latent.make_observation_map(k_a, D + 1, 16),
          cmcd_latent.make_observation_map(k_b, D + 1, 12))


def _invert(obs_map, x, iterations=40):
  """z from x = ψ(z W + b): ψ⁻¹(x), ψ(t) = t + ½ tanh(t), by Newton's method in float64,
  then z = (t − b) Wᵀ (W has orthonormal rows)."""
  x = np.asarray(x, np.float64)
  t = x.copy()
  for _ in range(iterations):
    t -= (t + 0.5 * np.tanh(t) - x) / (1.5 - 0.5 * np.tanh(t) ** 2)
  return (t - np.asarray(obs_map.bias, np.float64)) @ np.asarray(obs_map.weight, np.float64).T


def _nearest_mean(z, means):
  return np.argmin(((z[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1), -1)


@pytest.mark.parametrize('epsilon', [0.0, 0.3, 0.6])
def test_exact_tv_coupling_flags_and_supports(means, epsilon):
  lat = jax.tree.map(np.asarray, cmcd_latent.sample_exact_tv(jax.random.key(1), N, epsilon,
                                                             means, R))
  intact = ~lat.broken
  # Intact pairs share the latent exactly; broken ones carry the flag; the source never does.
  np.testing.assert_array_equal(lat.z_b[intact], lat.z_a[intact])
  assert np.all(lat.z_b[lat.broken, -1] == 1) and np.all(lat.z_a[:, -1] == 0)
  # Every latent lies in the ball of its class, balls are disjoint: source Bayes error 0.
  z = lat.z_a[:, :-1]
  assert np.all(np.linalg.norm(z - np.asarray(means)[lat.y], axis=-1) <= R + 1e-5)
  assert np.mean(_nearest_mean(z, means) != lat.y) == 0.0
  # Coupling: TV ≤ P[z_A ≠ z_B] = P[broken]; the flag event gives TV ≥ P_B[flag = 1] − 0. Both
  # are the broken fraction, whose Monte Carlo estimate matches ε.
  p = lat.broken.mean()
  _within(p, epsilon, np.sqrt(epsilon * (1 - epsilon) / N))
  assert np.mean(lat.y == 0) == pytest.approx(1 / K, abs=3 * np.sqrt((1 / K) * (1 - 1 / K) / N))


def test_exact_tv_by_classifying_observations(means, maps):
  """A balanced domain classifier on the *observed* x: TV ≥ 2·acc − 1, and the flag rule
  (read through the inverse of the injective map) attains it: 2·acc − 1 ≈ ε."""
  epsilon = 0.35
  k_a, k_b = jax.random.split(jax.random.key(2))
  map_a, map_b = maps
  # Independent samples of the source and target marginals, observed by the *same* map so
  # that a classifier can compare them (TV is a property of the latent laws).
  lat_a = cmcd_latent.sample_exact_tv(k_a, N, epsilon, means, R)
  lat_b = cmcd_latent.sample_exact_tv(k_b, N, epsilon, means, R)
  x = jnp.concatenate([cmcd_latent.observe(map_b, lat_a.z_a),
                       cmcd_latent.observe(map_b, lat_b.z_b)])
  flag = _invert(map_b, x)[:, -1]
  is_b = np.repeat([False, True], N)
  acc = np.mean((flag > 0.5) == is_b)
  tv = divergences.classifier_tv_estimate(acc)
  _within(float(tv), epsilon, 2 * np.sqrt(acc * (1 - acc) / (2 * N)))


@pytest.mark.parametrize('epsilon', [0.2, 0.5])
def test_exact_tv_target_bayes_floor(means, epsilon):
  """The Bayes rule of the target — nearest mean when unflagged, any fixed guess when
  flagged — has error ε(1 − 1/K)."""
  lat = cmcd_latent.sample_exact_tv(jax.random.key(3), N, epsilon, means, R)
  z_b, y = np.asarray(lat.z_b), np.asarray(lat.y)
  pred = np.where(z_b[:, -1] > 0.5, 0, _nearest_mean(z_b[:, :-1], means))
  err = np.mean(pred != y)
  floor = float(bounds.exact_tv_latent_bayes_floor(epsilon, K))
  _within(err, floor, np.sqrt(floor * (1 - floor) / N))


def test_observation_maps_are_injective_and_different(maps):
  map_a, map_b = maps
  assert map_a.weight.shape == (D + 1, 16) and map_b.weight.shape == (D + 1, 12)
  for m in maps:  # orthonormal rows: a full-column-rank linear part
    np.testing.assert_allclose(m.weight @ m.weight.T, np.eye(D + 1), atol=1e-5)
  z = jax.random.normal(jax.random.key(4), (500, D + 1)) * 3
  for m in maps:
    np.testing.assert_allclose(_invert(m, cmcd_latent.observe(m, z)), z, atol=1e-4)


def test_one_compiled_program_covers_every_gap_and_broken_sets_nest(means):
  traces = []

  @jax.jit
  def broken(epsilon):
    traces.append(1)
    return cmcd_latent.sample_exact_tv(jax.random.key(5), 2000, epsilon, means, R).broken

  sets = [np.asarray(broken(jnp.float32(e))) for e in (0.0, 0.2, 0.4, 0.6)]
  assert len(traces) == 1
  assert not sets[0].any()
  for small, large in zip(sets, sets[1:]):
    assert np.all(large[small])  # same key: the broken set grows with ε


@pytest.mark.parametrize('tv', [0.1, 0.4, 0.8])
def test_gaussian_shift_tv_by_density_ratio(means, tv):
  """TV((z_A, y), (z_B, y)) = E_P[(1 − q/p)_+] by Monte Carlo equals 2Φ(‖δ‖/(2σ)) − 1."""
  sigma = 0.7
  shift = cmcd_latent.shift_for_tv(tv, sigma)
  np.testing.assert_allclose(divergences.gaussian_tv(shift, sigma), tv, rtol=1e-5)
  lat = cmcd_latent.sample_gaussian_shift(jax.random.key(6), N, shift, means, sigma)
  z_a, z_b, y = (np.asarray(a, np.float64) for a in (lat.z_a, lat.z_b, lat.y))
  delta = (z_b - z_a)[:, :-1]
  np.testing.assert_allclose(np.linalg.norm(delta, axis=-1), float(shift), rtol=1e-5)
  centred = z_a[:, :-1] - np.asarray(means, np.float64)[y.astype(int)]
  log_ratio = (2 * (centred * delta).sum(-1) - (delta ** 2).sum(-1)) / (2 * sigma ** 2)
  values = np.maximum(0.0, 1.0 - np.exp(log_ratio))
  _within(values.mean(), tv, values.std(ddof=1) / np.sqrt(N))
  assert not np.asarray(lat.broken).any()


def test_gaussian_bayes_floor_by_the_optimal_rule(means):
  """The Bayes rule argmax_k z_k (nearest of the means s·e_k) on the source, and on the
  target after undoing the shift, errs at the quadrature value of the floor."""
  sigma = 0.9
  shift = cmcd_latent.shift_for_tv(0.5, sigma)
  lat = cmcd_latent.sample_gaussian_shift(jax.random.key(8), N, shift, means, sigma)
  floor = float(cmcd_latent.gaussian_bayes_floor(SEP, sigma, K))
  assert 0.05 < floor < 0.5
  direction = np.eye(D)[-1]
  for z in (np.asarray(lat.z_a)[:, :-1], np.asarray(lat.z_b)[:, :-1] - float(shift) * direction):
    err = np.mean(_nearest_mean(z, means) != np.asarray(lat.y))
    _within(err, floor, np.sqrt(floor * (1 - floor) / N))


def test_generators_reject_impossible_shapes():
  with pytest.raises(ValueError, match='num_classes'):
    cmcd_latent.class_means(9, 8, 2.0)
  with pytest.raises(ValueError, match='obs_dim'):
    cmcd_latent.make_observation_map(jax.random.key(0), 9, 8)
  assert cmcd_latent.supports_disjoint(2.0, 1.0) and not cmcd_latent.supports_disjoint(1.4, 1.0)
