"""F1 (the irreducible KD floor): quadrature, decomposition and protocol G's conditional law.

The conditional distribution of the teacher's logit difference given x_b is checked against
the generator itself (joint Monte Carlo over `decisive_features.sample`, and a conditional
simulation that redraws everything x_b does not show); the quadrature against SciPy's
adaptive integration; the decomposition E KL(p_t‖q) = F + KL(p̄‖q) against a NumPy
computation of KL(p̄‖q).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from xdistill_jax import bound_registry
from xdistill_jax import kd_floor
from xdistill_jax.generators import decisive_features

D, S, DIM = 20, 10, 25


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=['f32', 'f64'])
def dtype(request):
  with jax.enable_x64(request.param == jnp.float64):
    yield request.param


def _teacher(seed):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(DIM, 2)) * 0.6, rng.normal(size=2) * 0.3


def _shared(overlap):
  return (decisive_features.teacher_columns(overlap, DIM, D, S)
          & decisive_features.student_columns(DIM, S))


def np_entropy(p):
  return -special.xlogy(p, p) - special.xlogy(1 - p, 1 - p)


def np_bern_kl(p, q):
  return special.xlogy(p, p / q) + special.xlogy(1 - p, (1 - p) / (1 - q))


# ------------------------------------------------------------------ protocol G's conditional law
@pytest.mark.parametrize('overlap', [0, 4, 10])
def test_floor_and_conditional_kl_match_joint_monte_carlo(overlap):
  """Over the generator's joint draws: mean KL(p_t(x_a)‖p̄(x_b)) = mean F_i and mean
  KL(p_t(x_a)‖q(x_b)) = mean E[KL(p_t‖q)|x_b], within 4 standard errors."""
  kernel, bias = _teacher(overlap)
  student_kernel = np.random.default_rng(99).normal(size=(DIM, 2)) * 0.5
  _, data = decisive_features.sample(jax.random.key(overlap), overlap, 60_000, D, DIM, S)
  x_a, x_b = np.asarray(data.x_a, np.float64), np.asarray(data.x_b, np.float64)
  d = x_a @ (kernel[:, 1] - kernel[:, 0]) + bias[1] - bias[0]
  p_t = special.expit(d)
  z_s = x_b @ student_kernel
  q = special.softmax(z_s, -1)[:, 1]
  with jax.enable_x64(True):
    mu, tau = kd_floor.conditional_logit_difference(jnp.asarray(kernel), jnp.asarray(bias),
                                                    jnp.asarray(x_b), _shared(overlap))
    floor, cond = kd_floor.binary_floor_terms(mu, tau, jnp.asarray(z_s)[None])
    g, w = kd_floor.normal_trapezoid()
    pbar = np.asarray(special.expit(np.asarray(mu)[:, None] + float(tau) * g) @ w)
  for sample, exact in ((np_bern_kl(p_t, pbar), np.asarray(floor)),
                        (np_bern_kl(p_t, q), np.asarray(cond[0]))):
    se = sample.std() / np.sqrt(len(sample))
    assert abs(sample.mean() - exact.mean()) < 4 * se


def test_conditional_law_by_conditional_simulation():
  """Fix x_b; redraw the decisive features x_b does not show and all noise of x_a, exactly
  as the generator builds x_a; the teacher's p_t then averages to p̄ and its KL to p̄ to F_i."""
  overlap, n_rows, reps = 6, 5, 100_000
  kernel, bias = _teacher(3)
  _, data = decisive_features.sample(jax.random.key(5), overlap, n_rows, D, DIM, S)
  x_b = np.asarray(data.x_b, np.float64)
  rng = np.random.default_rng(0)
  cols_a = np.asarray(decisive_features.teacher_columns(overlap, DIM, D, S))
  w_diff = kernel[:, 1] - kernel[:, 0]
  with jax.enable_x64(True):
    mu, tau = kd_floor.conditional_logit_difference(jnp.asarray(kernel), jnp.asarray(bias),
                                                    jnp.asarray(x_b), _shared(overlap))
    floor, _ = kd_floor.binary_floor_terms(mu, tau, jnp.zeros((1, n_rows, 2)))
  for i in range(n_rows):
    x_s = rng.normal(size=(reps, D))
    x_s[:, :S] = x_b[i, :S]  # the decisive features x_b shows
    decisive = np.pad(x_s, ((0, 0), (0, DIM - D)))
    x_a = np.where(cols_a, decisive, rng.normal(size=(reps, DIM)))
    p_t = special.expit(x_a @ w_diff + bias[1] - bias[0])
    pbar = p_t.mean()
    g, w = kd_floor.normal_trapezoid()
    pbar_quadrature = special.expit(float(mu[i]) + float(tau) * g) @ w
    assert abs(pbar - pbar_quadrature) < 4 * p_t.std() / np.sqrt(reps)
    sample = np_bern_kl(p_t, pbar)
    assert abs(sample.mean() - float(floor[i])) < 4 * sample.std() / np.sqrt(reps) + 1e-4


def test_shared_columns_are_exactly_those_x_a_copies_from_x_b():
  _, data = decisive_features.sample(jax.random.key(1), 4, 5_000, D, DIM, S)
  x_a, x_b = np.asarray(data.x_a), np.asarray(data.x_b)
  same = np.all(x_a == x_b, axis=0)
  np.testing.assert_array_equal(same, np.asarray(_shared(4)))
  corr = np.corrcoef(np.c_[x_a[:, ~same], x_b].T)[:(~same).sum(), (~same).sum():]
  assert np.max(np.abs(corr)) < 0.06  # the other x_a columns are uncorrelated with x_b
  np.testing.assert_allclose(x_a[:, ~same].std(0), 1.0, atol=0.05)


# ------------------------------------------------------------------------------- quadrature
@pytest.mark.parametrize('tau', [0.3, 2.0, 5.0])
@pytest.mark.parametrize('mu', [0.0, 1.7, -6.0])
def test_quadrature_against_adaptive_integration(mu, tau):
  phi = lambda g: np.exp(-0.5 * g * g) / np.sqrt(2 * np.pi)
  sig = lambda g: special.expit(mu + tau * g)
  pbar = integrate.quad(lambda g: phi(g) * sig(g), -12, 12, points=[-mu / tau], limit=400,
                        epsabs=1e-14)[0]
  e_h = integrate.quad(lambda g: phi(g) * np_entropy(sig(g)), -12, 12, points=[-mu / tau],
                       limit=400, epsabs=1e-14)[0]
  exact = np_entropy(pbar) - e_h
  with jax.enable_x64(True):
    floor, _ = kd_floor.binary_floor_terms(jnp.asarray([mu]), jnp.asarray(tau),
                                           jnp.zeros((1, 1, 2)))
  assert abs(float(floor[0]) - exact) <= 2e-7 * max(exact, 1e-3)


# ------------------------------------------------------------------------- decomposition
def test_decomposition_identity_per_example(dtype):
  rng = np.random.default_rng(2)
  mu = rng.normal(size=200) * 3
  z_s = rng.normal(size=(3, 200, 2)) * np.array([0.5, 3.0, 10.0])[:, None, None]
  tau = 2.2
  floor, cond = jax.jit(kd_floor.binary_floor_terms)(jnp.asarray(mu, dtype),
                                                     jnp.asarray(tau, dtype),
                                                     jnp.asarray(z_s, dtype))
  g, w = kd_floor.normal_trapezoid()
  pbar = special.expit(mu[:, None] + tau * g) @ w
  log_q = special.log_softmax(z_s, -1)  # KL(p̄‖q) in log space: q may round to 1
  kl_pbar_q = (special.xlogy(pbar, pbar) - pbar * log_q[..., 1]
               + special.xlogy(1 - pbar, 1 - pbar) - (1 - pbar) * log_q[..., 0])
  tol = 1e-5 if dtype == jnp.float32 else 1e-10
  np.testing.assert_allclose(np.asarray(cond) - np.asarray(floor), kl_pbar_q,
                             atol=tol * 10 if dtype == jnp.float32 else tol)
  np.testing.assert_allclose(np.asarray(cond).mean(-1),
                             np.asarray(floor).mean() + kl_pbar_q.mean(-1), atol=tol)


def test_binary_form_equals_the_k_class_form_and_d1_split():
  rng = np.random.default_rng(3)
  mu, tau = jnp.asarray(rng.normal(size=50) * 2), jnp.asarray(1.4)
  y = jnp.asarray(rng.integers(0, 2, 50))
  z_s = jnp.asarray(rng.normal(size=(50, 2)))
  with jax.enable_x64(True):
    mu, tau, z_s = (jnp.asarray(np.asarray(a), jnp.float64) for a in (mu, tau, z_s))
    nodes, w = kd_floor.binary_node_logits(mu, tau)
    terms = jax.jit(kd_floor.floor_terms)(nodes, w, y)
    cond = jax.jit(kd_floor.conditional_kl)(nodes, w, z_s)
    floor, cond2 = jax.jit(kd_floor.binary_floor_terms)(mu, tau, z_s[None])
  np.testing.assert_allclose(terms['floor'], floor, atol=1e-12)
  np.testing.assert_allclose(cond, cond2[0], atol=1e-12)
  np.testing.assert_allclose(terms['floor_tckd'] + terms['floor_nckd'], terms['floor'],
                             atol=1e-12)
  np.testing.assert_array_equal(terms['floor_nckd'], 0.0)  # D4: K = 2
  np.testing.assert_allclose(np.exp(terms['log_mean_teacher']).sum(-1), 1.0, atol=1e-12)


def test_k_class_split_is_nontrivial_for_three_classes():
  rng = np.random.default_rng(4)
  nodes = rng.normal(size=(20, 16, 3)) * 2
  w = rng.uniform(0.5, 1.0, 16)
  w /= w.sum()
  y = rng.integers(0, 3, 20)
  with jax.enable_x64(True):
    terms = jax.jit(kd_floor.floor_terms)(jnp.asarray(nodes), jnp.asarray(w), jnp.asarray(y))
  p = special.softmax(nodes, -1)
  pbar = np.einsum('ngk,g->nk', p, w)
  kl = np.einsum('ngk,g->n', p * (np.log(p) - np.log(pbar)[:, None]), w)
  np.testing.assert_allclose(terms['floor'], kl, rtol=1e-10)
  np.testing.assert_allclose(terms['floor_tckd'] + terms['floor_nckd'], kl, rtol=1e-10)
  assert np.all(np.asarray(terms['floor_nckd']) > 0)


# ------------------------------------------------------------------------- the experiment columns
def test_protocol_g_floor_columns_jit_vmap_extremes(dtype):
  rng = np.random.default_rng(5)
  kernel = rng.normal(size=(4, DIM, 2)) * np.array([0.5, 1e3, 0.0, 30.0])[:, None, None]
  bias = rng.normal(size=(4, 2))
  x_b = rng.normal(size=(4, 64, DIM))
  students = rng.normal(size=(4, 3, 64, 2)) * np.array([1.0, 1e4, 0.0])[None, :, None, None]
  teacher = rng.normal(size=(4, 64, 2))
  fn = jax.jit(jax.vmap(lambda k, b, x, z, t: kd_floor.protocol_g_floor(k, b, x, _shared(2),
                                                                        z, t)))
  out = fn(*(jnp.asarray(a, dtype) for a in (kernel, bias, x_b, students, teacher)))
  for name, value in out.items():
    assert np.all(np.isfinite(value)), name
  assert out['kd_conditional_kl'].shape == (4, 3)
  np.testing.assert_array_equal(out['f1_pointwise_violations'], 0.0)
  assert np.all(np.asarray(out['kd_conditional_kl'])
                >= np.asarray(out['f1_floor_tckd'])[:, None] - 1e-5)
  np.testing.assert_array_equal(out['f1_floor_nckd'], 0.0)
  se = np.asarray(out['kl_test_se'])[0, 0]
  kl = np.sum(special.softmax(teacher[0], -1) * (special.log_softmax(teacher[0], -1)
                                                 - special.log_softmax(students[0, 0], -1)), -1)
  np.testing.assert_allclose(se, kl.std(ddof=1) / np.sqrt(64), rtol=1e-4)


def test_pointwise_violations_count_real_violations():
  floor = jnp.asarray([0.2, 0.5, 0.1, 2.0])
  cond = jnp.asarray([0.2 - 1e-7, 0.4, 0.3, 2.0 - 1e-3])
  assert float(kd_floor.pointwise_violations(cond, floor, 1e-5)) == 2.0


def test_registry_entries():
  table = {'f1_floor_tckd': np.array([0.2, 0.3]), 'f1_floor_nckd': np.array([0.0, 0.0]),
           'kl_test': np.array([0.25, 0.1]), 'kl_test_se': np.array([0.01, 0.01]),
           'kd_conditional_kl': np.array([0.26, 0.29]),
           'f1_pointwise_violations': np.array([0.0, 3.0])}
  columns, summary = bound_registry.evaluate(['f1_lower', 'f1_conditional_lower',
                                              'f1_pointwise'], table)
  np.testing.assert_allclose(columns['f1_lower'], [0.2, 0.3])
  assert summary['f1_lower']['kind'] == 'expected-floor'
  assert summary['f1_lower']['violations'] == 1  # 0.1 + z·0.01 < 0.3: a real failure
  assert summary['f1_conditional_lower']['kind'] == 'deterministic'
  assert summary['f1_conditional_lower']['violations'] == 1
  assert summary['f1_pointwise']['violations'] == 1


def test_protocol_g_experiment_emits_p1_and_f1_columns():
  from xdistill_jax import config_files
  from xdistill_jax.experiments import ntdh_overlap
  config = config_files.load('ntdh_overlap')
  config.steps, config.n_train, config.n_test = 50, 64, 400
  fn = jax.jit(jax.vmap(ntdh_overlap.make_setting_fn(config)))
  keys = jax.random.split(jax.random.key(0), 2)
  out = fn(keys, {'overlap': jnp.asarray([0, 10]), 'seed': jnp.asarray([0, 1])})
  for name in ('kd_gibbs_bound', 'kd_gibbs_err', 'kd_gibbs_train_err', 'kd_posterior_kl',
               'baseline_gibbs_bound', 'baseline_gibbs_err',
               'baseline_posterior_kl', 'f1_floor_tckd', 'f1_floor_nckd', 'kd_conditional_kl',
               'kl_test_se', 'f1_teacher_tau'):
    assert out[name].shape == (2,) and np.all(np.isfinite(out[name])), name
  np.testing.assert_array_equal(out['f1_pointwise_violations'], 0.0)
  # The conditional expected KL and the measured KL estimate the same mean.
  assert np.all(np.abs(out['kd_conditional_kl'] - out['kl_test']) < 4 * out['kl_test_se'])
  assert np.all(out['kd_conditional_kl'] >= out['f1_floor_tckd'])
  # o = 10 shares every decisive column the student sees: a smaller unseen part, a lower floor.
  assert out['f1_floor_tckd'][1] < out['f1_floor_tckd'][0]
