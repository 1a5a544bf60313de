"""Certified CMCD measurements: the domain-classifier TV lower bound and C3 with
Clopper–Pearson terms (docs/theory.md C2, C3), against SciPy and by Monte Carlo coverage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xdistill_jax import bound_registry
from xdistill_jax.experiments import cmcd_pipeline as pipeline


def _tv_lower(acc, n, delta):
  return bound_registry.get('tv_domain_lower')(
      {'domain_acc_heldout': acc, 'n_domain_heldout': n, 'confidence_delta': delta})


def _c3_certified(err_a, disagreement, n, delta):
  return bound_registry.get('c3_certified_upper')(
      {'source_err': err_a, 'pair_disagreement': disagreement, 'n_test': n,
       'confidence_delta': delta})


def test_registered_as_test_set_bounds_on_the_right_targets():
  tv, c3 = bound_registry.get('tv_domain_lower'), bound_registry.get('c3_certified_upper')
  assert (tv.kind, tv.side, tv.target) == ('test-set', 'lower', 'tv_estimate_heldout')
  assert (c3.kind, c3.side, c3.target) == ('test-set', 'upper', 'target_err')
  assert 'target_err' not in c3.requires  # no target labels


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_tv_lower_matches_scipy_beta_quantile(dtype):
  rng = np.random.default_rng(0)
  n = rng.integers(5, 3000, 200)
  k = rng.integers(0, n + 1)
  delta = rng.uniform(0.01, 0.3, 200)
  got = _tv_lower((k / n).astype(dtype), n.astype(dtype), delta.astype(dtype))
  cp = np.where(k > 0, stats.beta.ppf(delta, np.maximum(k, 1), n - k + 1), 0.0)
  want = np.maximum(0.0, 2 * cp - 1)
  np.testing.assert_allclose(got, want, atol=2e-4 if dtype == np.float32 else 1e-9)
  assert np.all(got <= np.maximum(0.0, 2 * k / n - 1) + 1e-6)  # below the point estimate


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_c3_certified_matches_scipy_with_half_delta_each(dtype):
  rng = np.random.default_rng(1)
  n = rng.integers(5, 3000, 200)
  k_a, k_d = rng.integers(0, n + 1), rng.integers(0, n + 1)
  delta = rng.uniform(0.01, 0.3, 200)
  upper = lambda k: np.where(k < n, stats.beta.ppf(1 - delta / 2, k + 1, np.maximum(n - k, 1)),
                             1.0)
  want = np.minimum(1.0, upper(k_a) + upper(k_d))
  got = _c3_certified(*(v.astype(dtype) for v in (k_a / n, k_d / n, n, delta)))
  np.testing.assert_allclose(got, want, atol=2e-4 if dtype == np.float32 else 1e-9)
  assert np.all(got >= np.minimum(1.0, (k_a + k_d) / n) - 1e-6)


def test_heldout_indicators_follow_the_coin():
  side = jnp.array([True, False, True, False])
  a_called_b = jnp.array([True, True, False, False])
  b_called_b = jnp.array([True, False, False, True])
  # pair 0: B shown, called B → 1; pair 1: A shown, called B → 0; pair 2: B, called A → 0;
  # pair 3: A shown, called A → 1.
  np.testing.assert_array_equal(
      pipeline.heldout_domain_correct(side, a_called_b, b_called_b), [1, 0, 0, 1])


def test_certified_tv_lower_bound_covers_a_known_tv():
  """P_A = U[0, 1], P_B = U[θ, 1 + θ]: TV = θ; h calls A iff x < θ, so its balanced accuracy
  is (1 + θ)/2 and 2·acc − 1 = TV (the tightest case for coverage). Many held-out sets of n
  coupled pairs with a fair coin per pair: the bound exceeds θ in at most ≈ δ of them."""
  theta, n, delta, trials = 0.4, 200, 0.1, 4000

  @jax.jit
  def one(key):
    k_a, k_b, k_side = jax.random.split(key, 3)
    x_a = jax.random.uniform(k_a, (n,))
    x_b = theta + jax.random.uniform(k_b, (n,))  # paired draws; only one side is used
    side = jax.random.bernoulli(k_side, 0.5, (n,))
    return jnp.mean(pipeline.heldout_domain_correct(side, x_a >= theta, x_b >= theta))

  acc = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(0), trials)), np.float64)
  lower = _tv_lower(acc, np.full(trials, n), np.full(trials, delta))
  failure = np.mean(lower > theta)
  assert failure <= delta + 3 * np.sqrt(delta * (1 - delta) / trials), failure
  assert failure > 0.02  # CP is nearly exact here: the check has power
  assert np.mean(lower) > 0.25  # and the bound is not vacuous


def test_certified_c3_covers_the_expected_target_error():
  """Pairs of three kinds: source wrong and predictions agree (target wrong, prob p1), source
  right and predictions differ (target wrong, p2), both right. R_A = p1, D = p2 and
  R_B = p1 + p2: C3 is tight, so the certified bound fails in at most ≈ δ of the test sets."""
  p1, p2, n, delta, trials = 0.08, 0.05, 500, 0.1, 4000
  rng = np.random.default_rng(2)
  counts = rng.multinomial(n, [p1, p2, 1 - p1 - p2], trials)
  upper = _c3_certified(counts[:, 0] / n, counts[:, 1] / n, np.full(trials, n),
                        np.full(trials, delta))
  failure = np.mean(upper < p1 + p2)
  assert failure <= delta + 3 * np.sqrt(delta * (1 - delta) / trials), failure
  assert np.mean(upper) < p1 + p2 + 0.08  # informative at n = 500
