"""P1 (PAC-Bayes-kl): every formula against an independent NumPy/SciPy computation.

Closed forms are checked against the generic Gaussian KL (numpy linear algebra) and Monte
Carlo; the Gibbs losses against sampled weights; kl⁻¹ against a brute-force grid; the
grid-minimised bound against a SciPy root-finding recomputation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

from xdistill_jax import bound_registry
from xdistill_jax import pac_bayes as pb

binary_p1 = jax.jit(pb.binary_p1, static_argnames='prefix')
multiclass_p1 = jax.jit(pb.multiclass_p1, static_argnames='prefix')


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=['f32', 'f64'])
def dtype(request):
  with jax.enable_x64(request.param == jnp.float64):
    yield request.param


def np_kl(q, p):
  return special.xlogy(q, q) - special.xlogy(q, p) + special.xlogy(1 - q, 1 - q) - special.xlogy(
      1 - q, 1 - p)


def np_kl_inverse(q, c):
  """sup{p ≥ q : kl(q‖p) ≤ c} by Brent's method (1 if kl(q‖1) ≤ c)."""
  if q >= 1 or np_kl(q, 1 - 1e-15) <= c:
    return 1.0
  return optimize.brentq(lambda p: np_kl(q, p) - c, q, 1 - 1e-15, xtol=1e-14)


# ---------------------------------------------------------------------------- kl and kl⁻¹
def test_bernoulli_kl_matches_numpy(dtype):
  rng = np.random.default_rng(0)
  q = np.concatenate([rng.uniform(0, 1, 50), [0.0, 1.0, 0.0, 1.0]])
  p = np.concatenate([rng.uniform(0.01, 0.99, 50), [0.3, 0.3, 1e-6, 1 - 1e-6]])
  got = pb.bernoulli_kl(jnp.asarray(q, dtype), jnp.asarray(p, dtype))
  rtol = 1e-5 if dtype == jnp.float32 else 1e-12
  np.testing.assert_allclose(got, np_kl(q, p), rtol=rtol, atol=rtol)
  assert float(pb.bernoulli_kl(0.5, 1.0)) == np.inf


def test_kl_inverse_against_brute_force_grid(dtype):
  rng = np.random.default_rng(1)
  q = np.concatenate([rng.uniform(0, 0.6, 40), [0.0, 0.0, 0.3, 0.95, 1.0]])
  c = np.concatenate([rng.uniform(0.001, 0.5, 40), [0.01, 3.0, 1e-6, 0.2, 0.1]])
  got = np.asarray(jax.jit(jax.vmap(pb.kl_inverse_upper))(jnp.asarray(q, dtype),
                                                          jnp.asarray(c, dtype)))
  grid = np.linspace(0, 1, 200_001)
  for qi, ci, gi in zip(q, c, got):
    feasible = grid[(grid >= qi) & (np_kl(qi, grid) <= ci)]
    brute = feasible.max()
    assert gi >= brute - 1e-6, (qi, ci)  # never below the true inverse: a valid bound
    assert gi <= brute + 5e-6 + (1e-5 if dtype == jnp.float32 else 0), (qi, ci)
    assert abs(gi - np_kl_inverse(qi, ci)) < (2e-5 if dtype == jnp.float32 else 1e-9)


def test_kl_inverse_edge_cases():
  assert float(pb.kl_inverse_upper(0.2, np.inf)) == 1.0
  assert np.isnan(pb.kl_inverse_upper(np.nan, 0.1))
  assert np.isnan(pb.kl_inverse_upper(0.2, np.nan))
  assert abs(float(pb.kl_inverse_upper(0.2, 0.0)) - 0.2) < 1e-6


# ------------------------------------------------------------------------ Gaussian KL closed form
def np_gaussian_kl(m1, s1, m0, s0):
  """KL(N(m1, S1) ‖ N(m0, S0)) for full covariance matrices, by numpy linear algebra."""
  k = m1.size
  inv = np.linalg.inv(s0)
  diff = m0 - m1
  _, logdet0 = np.linalg.slogdet(s0)
  _, logdet1 = np.linalg.slogdet(s1)
  return 0.5 * (np.trace(inv @ s1) + diff @ inv @ diff - k + logdet0 - logdet1)


@pytest.mark.parametrize('dim,beta,t,sigma0', [(3, 0.7, 0.4, 0.3), (5, 4.0, 1.3, 2.0),
                                               (12, 10.0, 0.05, 1.0), (1, 0.0, 1.0, 5.0)])
def test_posterior_kl_closed_form(dtype, dim, beta, t, sigma0):
  rng = np.random.default_rng(dim)
  u = rng.normal(size=dim)
  u /= np.linalg.norm(u)
  exact = np_gaussian_kl(beta * sigma0 * u, (t * sigma0) ** 2 * np.eye(dim),
                         np.zeros(dim), sigma0 ** 2 * np.eye(dim))
  got = float(pb.gaussian_posterior_kl(jnp.asarray(beta, dtype), jnp.asarray(t, dtype), dim))
  np.testing.assert_allclose(got, exact, rtol=1e-5 if dtype == jnp.float32 else 1e-12,
                             atol=1e-6)


def test_posterior_kl_by_monte_carlo():
  dim, beta, t, sigma0 = 4, 2.0, 0.6, 0.8
  rng = np.random.default_rng(3)
  u = rng.normal(size=dim)
  u /= np.linalg.norm(u)
  q = stats.multivariate_normal(beta * sigma0 * u, (t * sigma0) ** 2 * np.eye(dim))
  p = stats.multivariate_normal(np.zeros(dim), sigma0 ** 2 * np.eye(dim))
  w = q.rvs(200_000, random_state=rng)
  log_ratio = q.logpdf(w) - p.logpdf(w)
  se = log_ratio.std() / math.sqrt(len(w))
  assert abs(log_ratio.mean() - float(pb.gaussian_posterior_kl(beta, t, dim))) < 4 * se


def test_grid_t_minimises_the_kl_at_fixed_ratio():
  dim = 26
  beta, t = map(np.asarray, pb.posterior_grid(dim))
  r = beta / t
  for ri, ti in zip(r, t):
    ts = np.linspace(0.01, 1.5, 20_000)
    kl = 0.5 * (ri * ts) ** 2 + 0.5 * dim * (ts ** 2 - 1 - 2 * np.log(ts))
    assert abs(ts[np.argmin(kl)] - ti) < 2e-4
  np.testing.assert_allclose(r, pb.RATIOS, rtol=1e-6)


# ----------------------------------------------------------------------- Gibbs losses vs sampling
def _mc_error(sample_weights, x, y, predict):
  xt = np.concatenate([x, np.ones((len(x), 1))], 1)
  wrong = np.stack([predict(w, xt) != y for w in sample_weights])
  return wrong.mean(0), np.sqrt(wrong.mean(0) * (1 - wrong.mean(0)) / len(sample_weights))


def test_binary_gibbs_loss_against_sampled_weights(dtype):
  rng = np.random.default_rng(4)
  d, n, sigma0, beta, t = 4, 12, 0.37, 3.0, 0.8
  kernel, bias = rng.normal(size=(d, 2)), rng.normal(size=2)
  x, y = rng.normal(size=(n, d)) * 2, rng.integers(0, 2, n)
  diff = np.concatenate([kernel[:, 1] - kernel[:, 0], [bias[1] - bias[0]]])
  u = diff / np.linalg.norm(diff)
  w = beta * sigma0 * u + t * sigma0 * rng.normal(size=(40_000, d + 1))
  mc, se = _mc_error(w, x, y, lambda wi, xt: (xt @ wi > 0).astype(int))
  margins = pb.binary_margins(pb.binary_direction(jnp.asarray(kernel, dtype),
                                                  jnp.asarray(bias, dtype)),
                              jnp.asarray(x, dtype), jnp.asarray(y))
  got = np.asarray(pb.binary_gibbs_loss(margins, beta / t))
  assert np.all(np.abs(got - mc) <= 4.5 * np.maximum(se, 1e-3))


def test_multiclass_gibbs_loss_against_sampled_weights(dtype):
  rng = np.random.default_rng(5)
  d, k, n, sigma0, beta, t = 3, 5, 10, 1.7, 2.5, 0.5
  kernel, bias = rng.normal(size=(d, k)), rng.normal(size=k)
  x, y = rng.normal(size=(n, d)), rng.integers(0, k, n)
  rows = np.concatenate([kernel, bias[None]], 0).T  # [K, D]
  u = rows / np.linalg.norm(rows)
  w = beta * sigma0 * u + t * sigma0 * rng.normal(size=(40_000, k, d + 1))
  mc, se = _mc_error(w, x, y, lambda wi, xt: np.argmax(xt @ wi.T, -1))
  scores = pb.normalised_scores(pb.multiclass_direction(jnp.asarray(kernel, dtype),
                                                        jnp.asarray(bias, dtype)),
                                jnp.asarray(x, dtype))
  got = np.asarray(jax.jit(pb.multiclass_gibbs_loss)(scores, jnp.asarray(y), beta / t))
  assert np.all(np.abs(got - mc) <= 4.5 * np.maximum(se, 1e-3))


def test_multiclass_gibbs_loss_two_classes_closed_form():
  # K = 2 with independent noise on both rows: P[error] = Φ̄(r (a_y − a_k) / √2).
  rng = np.random.default_rng(6)
  scores = rng.normal(size=(30, 2)) * 0.5
  y = rng.integers(0, 2, 30)
  loss = jax.jit(pb.multiclass_gibbs_loss)
  for r in (0.1, 2.0, 40.0):
    gap = scores[np.arange(30), y] - scores[np.arange(30), 1 - y]
    got = np.asarray(loss(jnp.asarray(scores), jnp.asarray(y), r))
    np.testing.assert_allclose(got, special.ndtr(-r * gap / np.sqrt(2)), atol=2e-6)


# ------------------------------------------------------------------------- the minimised bound
def _np_binary_p1(kernel, bias, x, y, xt, yt, delta, ratios=pb.RATIOS):
  diff = np.concatenate([kernel[:, 1] - kernel[:, 0], [bias[1] - bias[0]]])
  u = diff / np.linalg.norm(diff)
  margin = lambda x, y: (2 * y - 1) * (np.c_[x, np.ones(len(x))] @ u) / np.linalg.norm(
      np.c_[x, np.ones(len(x))], axis=1)
  dim, n = len(u), len(y)
  best = (np.inf, None)
  for r in ratios:
    t = math.sqrt(dim / (r * r + dim))
    kl = 0.5 * (r * t) ** 2 + 0.5 * dim * (t * t - 1 - 2 * math.log(t))
    train = special.ndtr(-r * margin(x, y)).mean()
    value = np_kl_inverse(train, (kl + math.log(2 * math.sqrt(n) / delta)) / n)
    if value < best[0]:
      best = (value, special.ndtr(-r * margin(xt, yt)).mean())
  return best


def test_binary_p1_matches_independent_computation():
  rng = np.random.default_rng(7)
  d, n = 6, 150
  a = rng.normal(size=d)
  x, xt = rng.normal(size=(n, d)), rng.normal(size=(500, d))
  y, yt = (x @ a > 0).astype(int), (xt @ a > 0).astype(int)
  kernel = np.stack([-a, a], 1) * 0.5 + rng.normal(size=(d, 2)) * 0.3
  bias = rng.normal(size=2) * 0.1
  with jax.enable_x64(True):
    out = binary_p1(jnp.asarray(kernel), jnp.asarray(bias), jnp.asarray(x), jnp.asarray(y),
                       jnp.asarray(xt), jnp.asarray(yt), 0.05)
    bound = float(pb.seeger_maurer_bound(out['gibbs_train_err'], out['posterior_kl'], n, 0.05))
  value, test_gibbs = _np_binary_p1(kernel, bias, x, y, xt, yt, 0.05)
  np.testing.assert_allclose(bound, value, rtol=1e-9)
  np.testing.assert_allclose(float(out['gibbs_bound']), value, rtol=1e-9)
  np.testing.assert_allclose(float(out['gibbs_err']), test_gibbs, rtol=1e-9)
  assert float(out['gibbs_train_err']) <= bound <= 1.0


def test_weights_select_the_training_rows():
  rng = np.random.default_rng(8)
  x, y = rng.normal(size=(80, 3)), rng.integers(0, 2, 80)
  kernel, bias = rng.normal(size=(3, 2)), rng.normal(size=2)
  weights = (np.arange(80) < 50).astype(np.float32)
  masked = binary_p1(kernel, bias, x, y, x, y, 0.1, weights=jnp.asarray(weights))
  subset = binary_p1(kernel, bias, x[:50], y[:50], x, y, 0.1)
  for name in masked:
    np.testing.assert_allclose(masked[name], subset[name], rtol=1e-5, err_msg=name)


def test_multiclass_p1_is_a_grid_minimum():
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
  kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
  out = multiclass_p1(kernel, bias, x, y, x, y, 0.05, prefix='target_')
  dim = 3 * 5
  u = pb.multiclass_direction(jnp.asarray(kernel), jnp.asarray(bias))
  scores = pb.normalised_scores(u, jnp.asarray(x))
  values = []
  train_errs = jax.jit(jax.vmap(lambda r: jnp.mean(pb.multiclass_gibbs_loss(
      scores, jnp.asarray(y), r))))(jnp.asarray(pb.RATIOS))
  for r, train in zip(pb.RATIOS, np.asarray(train_errs, np.float64)):
    t = math.sqrt(dim / (r * r + dim))
    kl = 0.5 * (r * t) ** 2 + 0.5 * dim * (t * t - 1 - 2 * math.log(t))
    values.append(np_kl_inverse(train, (kl + math.log(2 * math.sqrt(40) / 0.05)) / 40))
  bound = float(pb.seeger_maurer_bound(out['target_gibbs_train_err'],
                                       out['target_posterior_kl'], 40, 0.05))
  np.testing.assert_allclose(bound, min(values), rtol=1e-4)
  np.testing.assert_allclose(out['target_gibbs_bound'], min(values), rtol=1e-4)


def test_coverage_by_monte_carlo():
  """Over many training samples the bound on the true Gibbs error fails at rate ≤ δ."""
  d, n, delta, reps = 3, 40, 0.2, 400
  a = np.array([1.0, -0.5, 0.25])
  rng = np.random.default_rng(10)
  x_big = rng.normal(size=(50_000, d))
  noisy = lambda x, r: ((x @ a + 0.8 * r.normal(size=len(x))) > 0).astype(int)
  y_big = noisy(x_big, rng)
  xs = rng.normal(size=(reps, n, d))
  ys = np.stack([noisy(x, rng) for x in xs])
  kernels = np.stack([np.stack([-w, w], 1) for w in
                      np.einsum('rnd,rn->rd', xs, 2 * ys - 1.0) / n])  # a learned direction
  fn = jax.jit(jax.vmap(lambda k, x, y: pb.binary_p1(k, jnp.zeros(2), x, y, x[:1], y[:1],
                                                     delta)))
  out = fn(jnp.asarray(kernels), jnp.asarray(xs), jnp.asarray(ys))
  bound = np.asarray(out['gibbs_bound'])
  true_gibbs = jax.jit(jax.vmap(lambda k, r: jnp.mean(pb.binary_gibbs_loss(pb.binary_margins(
      pb.binary_direction(k, jnp.zeros(2)), jnp.asarray(x_big), jnp.asarray(y_big)), r))))(
          jnp.asarray(kernels), out['posterior_beta'] / out['posterior_t'])
  assert np.mean(np.asarray(true_gibbs) > bound) <= delta
  assert np.all((bound > 0) & (bound < 1))


# ----------------------------------------------------------------------- robustness and registry
def test_jit_vmap_and_extreme_inputs(dtype):
  rng = np.random.default_rng(11)
  kernel = jnp.asarray(rng.normal(size=(3, 4, 2)) * np.array([1.0, 1e6, 0.0])[:, None, None],
                       dtype)
  bias = jnp.asarray(rng.normal(size=(3, 2)) * np.array([1.0, 1.0, 0.0])[:, None], dtype)
  x = jnp.asarray(rng.normal(size=(3, 30, 4)) * np.array([1.0, 1e4, 1e-6])[:, None, None],
                  dtype)
  y = jnp.asarray(rng.integers(0, 2, (3, 30)))
  fn = jax.jit(jax.vmap(lambda k, b, x, y: pb.binary_p1(k, b, x, y, x, y, 0.05)))
  out = fn(kernel, bias, x, y)
  for name, value in out.items():
    assert np.all(np.isfinite(value)), name
    assert value.dtype == dtype, name
  assert float(out['gibbs_err'][2]) == pytest.approx(0.5, abs=1e-6)  # zero weights: a coin
  k3 = jnp.asarray(rng.normal(size=(2, 4, 3)) * np.array([1e5, 1.0])[:, None, None], dtype)
  out3 = jax.jit(jax.vmap(lambda k, x, y: pb.multiclass_p1(k, jnp.zeros(3, dtype), x, y, x, y,
                                                           0.05)))(
      k3, x[:2], jnp.asarray(rng.integers(0, 3, (2, 30))))
  for name, value in out3.items():
    assert np.all(np.isfinite(value)), name


def test_registry_entries_read_the_in_program_bound():
  table = {'kd_gibbs_bound': np.array([0.3, 0.6, np.nan]),
           'kd_gibbs_err': np.array([0.12, 0.35, 0.2]), 'kd_err': np.array([0.1, 0.3, 0.2]),
           'n_test': np.full(3, 1000.0), 'confidence_delta': np.full(3, 0.05)}
  columns, summary = bound_registry.evaluate(['p1_upper_kd', 'p1_deterministic_upper_kd'],
                                             table)
  np.testing.assert_allclose(columns['p1_upper_kd'][:2], [0.3, 0.6])
  np.testing.assert_allclose(columns['p1_deterministic_upper_kd'][:2], [0.6, 1.0])
  assert np.isnan(columns['p1_upper_kd'][2]) and columns['p1_upper_kd_invalid'][2]
  for name in ('p1_upper_kd', 'p1_deterministic_upper_kd'):
    assert bound_registry.get(name).kind == 'probabilistic'
    assert summary[name]['violations'] == 0
  failing = table | {'kd_gibbs_bound': np.array([0.05, 0.6, 0.3])}  # far below 0.12 ± CP
  _, summary = bound_registry.evaluate(['p1_upper_kd'], failing)
  assert summary['p1_upper_kd']['violations'] == 1
  for model, target in (('baseline', 'baseline_gibbs_err'), ('target', 'target_gibbs_err')):
    assert bound_registry.get(f'p1_upper_{model}').target == target


def test_maurer_constant_holds_for_every_sample_size():
  """ξ(n) = Σ_k C(n,k) (k/n)^k (1 − k/n)^(n−k) ≤ 2√n (Maurer proves it for n ≥ 8)."""
  for n in range(1, 2001):
    k = np.arange(n + 1)
    log_terms = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
                 + special.xlogy(k, k / n) + special.xlogy(n - k, (n - k) / n))
    assert special.logsumexp(log_terms) <= math.log(2 * math.sqrt(n)), n
