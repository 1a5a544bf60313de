"""Tests of xdistill_jax.divergences against NumPy/SciPy and the identities of theory.md §2."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads
from scipy import integrate, special, stats

from xdistill_jax import divergences as dv

FULL = {'kl': dv.kl, 'js': dv.js, 'tv': dv.tv}
SPLIT = {
    'target_kl': dv.target_kl,
    'non_target_kl': dv.non_target_kl,
    'non_target_js': dv.non_target_js,
    'non_target_tv': dv.non_target_tv,
    'non_target_js_reversed': dv.non_target_js_reversed,
}
SYMMETRIC = ['js', 'tv', 'non_target_js', 'non_target_tv']
ALL = {**FULL, **SPLIT}


def eager_call(name, t, s, y, temperature=1.0):
  """Uniform call: every divergence as f(teacher, student, labels, T)."""
  if name in FULL:
    return FULL[name](t, s, temperature)
  return SPLIT[name](t, s, y, temperature)


# Tests run jitted, all divergences in one function (one compile per shape is much cheaper
# than op-by-op dispatch); test_jit_and_vmap checks eager/jit parity.
def eager_values(t, s, y, temperature):
  """{name: per-example values} of every divergence (and p_y)."""
  values = {name: eager_call(name, t, s, y, temperature) for name in ALL}
  values['p_y'] = jnp.exp(dv.target_split(t, y, temperature)[0][..., 0])
  return values


all_values = jax.jit(eager_values)


@jax.jit
def all_values_and_grads(t, s, y, temperature):
  """{name: (value, (d/dt, d/ds))} of every batch-summed divergence, in one compile."""
  def value_and_grads(name):
    f = lambda a, b: jnp.sum(eager_call(name, a, b, y, temperature))  # noqa: E731
    return jax.value_and_grad(f, argnums=(0, 1))(t, s)

  return {name: value_and_grads(name) for name in ALL}


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def random_case(seed, shape=(6,), k=5, scale=3.0):
  rng = np.random.default_rng(seed)
  t = scale * rng.normal(size=shape + (k,))
  s = scale * rng.normal(size=shape + (k,))
  y = rng.integers(0, k, size=shape)
  return t, s, y


def extreme_cases(k=5):
  """(teacher, student, labels): huge, one-hot-like and equal logits in one batch of 24."""
  big = np.full((4, k), -1e4)
  big[:, 0] = 1e4
  onehot = np.where(np.eye(k)[np.arange(4) % k] > 0, 1e4, -1e4)
  equal = np.zeros((4, k))
  y = np.arange(4) % k
  cases = [(big, -big, y), (onehot, big, y), (onehot, onehot, y), (equal, equal, y),
           (equal, big, y), (big, equal + 1.0, (y + 1) % k)]
  return tuple(np.concatenate(parts) for parts in zip(*cases))


# --------------------------------------------------------------------------------------------
# NumPy / SciPy references, written from the formulas.
# --------------------------------------------------------------------------------------------
def ref_kl(p, q):
  return special.rel_entr(p, q).sum(-1)


def ref_js(p, q):
  m = (p + q) / 2
  return 0.5 * ref_kl(p, m) + 0.5 * ref_kl(q, m)


def ref_tv(p, q):
  return 0.5 * np.abs(p - q).sum(-1)


def ref_js_reversed(p, q):
  m = (p + q) / 2
  return 0.5 * ref_kl(m, p) + 0.5 * ref_kl(m, q)


REF = {'kl': ref_kl, 'js': ref_js, 'tv': ref_tv}
REF_SPLIT = {
    'non_target_kl': ref_kl,
    'non_target_js': ref_js,
    'non_target_tv': ref_tv,
    'non_target_js_reversed': ref_js_reversed,
}


def ref_split(logits, y, temperature):
  """Explicit per-example loop: (p_y, 1 - p_y) and p̂ (non-target entries only)."""
  p = special.softmax(logits / temperature, axis=-1)
  binary, hat = [], []
  for row, label in zip(p, y):
    binary.append([row[label], 1.0 - row[label]])
    rest = np.delete(row, label)
    hat.append(rest / rest.sum())
  return np.array(binary), np.array(hat)


def ref_split_divergence(name, t, s, y, temperature):
  (bp, p_hat), (bq, q_hat) = ref_split(t, y, temperature), ref_split(s, y, temperature)
  if name == 'target_kl':
    return ref_kl(bp, bq)
  return REF_SPLIT[name](p_hat, q_hat)


# --------------------------------------------------------------------------------------------
# Values.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('temperature', [1.0, 2.5])
@pytest.mark.parametrize('name', sorted(ALL))
def test_values_match_numpy(x64, name, temperature):
  t, s, y = random_case(3, shape=(9,), k=10)  # shapes shared with D1/D2 (one compile)
  temperature = np.full((9, 1), temperature)
  got = all_values(*map(jnp.asarray, (t, s, y, temperature)))[name]
  if name in FULL:
    p, q = (special.softmax(z / temperature, axis=-1) for z in (t, s))
    want = REF[name](p, q)
  else:
    want = ref_split_divergence(name, t, s, y, temperature)
  assert got.shape == (9,)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_target_split_values(x64):
  t, _, y = random_case(1, k=6)
  log_binary, log_nt = dv.target_split(jnp.asarray(t), jnp.asarray(y), 1.7)
  binary, hat = ref_split(t, y, 1.7)
  np.testing.assert_allclose(np.exp(log_binary), binary, rtol=1e-12)
  assert np.all(np.asarray(log_nt)[np.arange(6), y] == -np.inf)
  for i, label in enumerate(y):
    np.testing.assert_allclose(np.exp(np.delete(np.asarray(log_nt[i]), label)), hat[i],
                               rtol=1e-12)


def test_target_split_is_stable_for_confident_logits():
  """log(1 − p_y) stays accurate where 1 − p_y underflows a subtraction."""
  logits = jnp.array([60.0, 0.0, 0.0])
  log_binary, log_nt = dv.target_split(logits, jnp.array(0))
  np.testing.assert_allclose(log_binary[1], math.log(2.0) - 60.0, rtol=1e-6)
  np.testing.assert_allclose(jnp.exp(log_nt), [0.0, 0.5, 0.5], rtol=1e-6)


def float32_cases(k, n=48, seed=0):
  """Logits in [−30, 30] with students at distances 1e-3 .. 1 from the teacher."""
  rng = np.random.default_rng(seed + k)
  scale = rng.choice([1.0, 10.0, 30.0], size=(n, 1))
  t = np.clip(scale * rng.normal(size=(n, k)), -30, 30).astype(np.float32)
  gap = rng.choice([1e-3, 1e-2, 1e-1, 1.0], size=(n, 1))
  s = np.clip(t + gap * rng.normal(size=(n, k)), -30, 30).astype(np.float32)
  return t, s, rng.integers(0, k, n)


@pytest.mark.parametrize('k', [3, 10, 100])
def test_split_divergences_float32_match_float64(k):
  """TCKD, NCKD (and KL) in float32 within 1e-5·|ref| + 1e-7 of the float64 formulas, for
  logits up to ±30 and T ∈ {0.7, 1, 4}; never negative. Shifting by max z keeps log p_y
  exact, and the KL is summed as non-negative O(δ²) terms (`_kl_log`)."""
  t, s, y = float32_cases(k)
  f = jax.jit(lambda t, s, y, T: {name: eager_call(name, t, s, y, T)
                                  for name in ('target_kl', 'non_target_kl', 'kl')})
  for temperature in (0.7, 1.0, 4.0):
    got = f(t, s, y, temperature)
    p, q = (special.softmax(z.astype(np.float64) / temperature, -1) for z in (t, s))
    want = {'kl': ref_kl(p, q)}
    for name in ('target_kl', 'non_target_kl'):
      want[name] = ref_split_divergence(name, t.astype(np.float64), s.astype(np.float64), y,
                                        temperature)
    for name, value in got.items():
      value = np.asarray(value, np.float64)
      assert np.all(value >= 0), name
      np.testing.assert_array_less(np.abs(value - want[name]),
                                   1e-5 * np.abs(want[name]) + 1e-7, err_msg=name)


def test_tckd_repro_of_the_float32_issue():
  """t = [31, 29, 28], s = [31.05, 29, 28], y = 0, T = 1: exact TCKD 1.6287e-4 (the
  unshifted log-sum-exps gave 1.6358e-4)."""
  t, s = np.array([31.0, 29.0, 28.0], np.float32), np.array([31.05, 29.0, 28.0], np.float32)
  # The reference takes the float32 inputs (31.05 is 31.04999924 in float32) to float64.
  want = ref_split_divergence('target_kl', t[None].astype(np.float64),
                              s[None].astype(np.float64), np.array([0]), 1.0)[0]
  np.testing.assert_allclose(want, 1.6287e-4, rtol=1e-4)
  got = dv.target_kl(jnp.asarray(t), jnp.asarray(s), jnp.array(0))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Identities D1–D4 of theory.md §2.
# --------------------------------------------------------------------------------------------
def identity_inputs():
  """Random and extreme batches; the temperature varies per row (shape [n, 1])."""
  cases = [random_case(seed, shape=(9,), k=k) for seed, k in [(3, 10), (4, 2)]]
  for t, s, y in cases + [extreme_cases()]:
    temperature = np.resize([0.7, 1.0, 4.0], (len(t), 1))
    yield jnp.asarray(t), jnp.asarray(s), jnp.asarray(y), jnp.asarray(temperature)


def test_d1_kl_decomposes(x64):
  for t, s, y, temperature in identity_inputs():
    v = all_values(t, s, y, temperature)
    lhs, rhs = v['kl'], v['target_kl'] + (1 - v['p_y']) * v['non_target_kl']
    assert np.all(np.isfinite(lhs)) and np.all(np.isfinite(rhs))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9)


def test_d2_d3_bounds(x64):
  for t, s, y, temperature in identity_inputs():
    v = all_values(t, s, y, temperature)
    assert np.all(v['tv'] <= np.sqrt(v['kl'] / 2) + 1e-12)  # D2
    for name in ['js', 'non_target_js']:
      assert np.all((v[name] >= -1e-12) & (v[name] <= math.log(2) + 1e-12))  # D3
    for name in ['tv', 'non_target_tv']:
      assert np.all((v[name] >= 0) & (v[name] <= 1 + 1e-12))  # D3


def test_js_reversed_is_not_bounded_by_ln2():
  t = jnp.array([0.0, 30.0, 0.0])
  s = jnp.array([0.0, 0.0, 30.0])
  assert dv.non_target_js_reversed(t, s, 0) > 5.0
  assert dv.non_target_js(t, s, 0) <= math.log(2) + 1e-6


@pytest.mark.parametrize('name', ['non_target_kl', 'non_target_js', 'non_target_tv',
                                  'non_target_js_reversed'])
def test_d4_two_classes_exactly_zero_with_zero_gradient(name):
  t = jnp.array([[3.0, -1.0], [1e4, -1e4], [0.0, 0.0], [-5.0, 7.0]])
  s = jnp.array([[-2.0, 4.0], [-1e4, 1e4], [1.0, 0.0], [8.0, 7.0]])
  y = jnp.array([0, 1, 0, 1])
  assert np.all(np.asarray(all_values(t, s, y, 1.0)[name]) == 0.0)
  for g in all_values_and_grads(t, s, y, 1.0)[name][1]:
    assert np.all(np.asarray(g) == 0.0)


# --------------------------------------------------------------------------------------------
# Gradients, jit, vmap, extremes.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('order', [1, 2])
def test_check_grads(x64, order):
  """All divergences at order 1 (outputs concatenated: one compile), KL and NCKD at order 2."""
  t, s, y = (jnp.asarray(a) for a in random_case(6, shape=(3,), k=4, scale=1.0))
  names = sorted(ALL) if order == 1 else ['kl', 'non_target_kl']
  f = jax.jit(lambda a, b: jnp.concatenate([eager_call(n, a, b, y, 1.3) for n in names]))
  check_grads(f, (t, s), order=order, modes=['rev'])


def test_jit_and_vmap():
  t, s, y = (jnp.asarray(a, jnp.float32) if a.dtype.kind == 'f' else jnp.asarray(a)
             for a in random_case(7, shape=(3, 4), k=5))
  eager = eager_values(t, s, y, 2.0)
  jitted = all_values(t, s, y, 2.0)
  mapped = jax.jit(jax.vmap(eager_values, in_axes=(0, 0, 0, None)))(t, s, y, 2.0)
  looped = [all_values(t[i], s[i], y[i], 2.0) for i in range(t.shape[0])]
  for name in ALL:
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert mapped[name].shape == (3, 4)
    np.testing.assert_allclose(mapped[name], jnp.stack([v[name] for v in looped]),
                               rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize('case', ['K=2', 'K=5', 'K=1000'])
def test_extreme_inputs_finite_values_and_gradients(case):
  """Logits ±1e4, one-hot-like and equal logits, K = 2, 5 and 1000, T = 0.5 and 1."""
  cases = {'K=2': extreme_cases(k=2), 'K=5': extreme_cases(k=5),
           'K=1000': random_case(8, shape=(2,), k=1000, scale=1e4)}
  t, s, y = cases[case]
  t, s = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  temperature = jnp.asarray(np.resize([0.5, 1.0], (len(t), 1)), jnp.float32)
  for name, (value, grads) in all_values_and_grads(t, s, jnp.asarray(y), temperature).items():
    assert np.isfinite(value), name
    for g in grads:
      assert np.all(np.isfinite(g)), name


def test_zero_probability_classes_contribute_zero():
  """-inf logits (p_k = 0) give finite values and gradients (p log p -> 0), except for the
  reversed NTDH form, where KL(m‖p̂) is legitimately +inf."""
  t, s, y = random_case(14, shape=(24,), k=5)
  t[:, 1] = -np.inf
  t, s = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  temperature = jnp.asarray(np.resize([0.5, 1.0], (24, 1)), jnp.float32)
  results = all_values_and_grads(t, s, jnp.asarray(y), temperature)
  for name in ALL.keys() - {'non_target_js_reversed'}:
    value, grads = results[name]
    assert np.isfinite(value), name
    for g in grads:
      assert np.all(np.isfinite(g)), name
  want = ref_kl(*(special.softmax(np.asarray(z, np.float64) / np.asarray(temperature), -1)
                  for z in (t, s)))
  np.testing.assert_allclose(results['kl'][0], want.sum(), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Hypothesis properties.
# --------------------------------------------------------------------------------------------
@st.composite
def batches(draw):
  """(teacher, student, labels, per-row shifts, per-row temperatures), 9 rows."""
  k = draw(st.sampled_from([2, 10]))  # shapes shared with D1/D2: no new compile
  t, s = (draw(hnp.arrays(np.float64, (9, k), elements=st.floats(-50, 50))) for _ in 'ts')
  y = draw(hnp.arrays(np.int64, (9,), elements=st.integers(0, k - 1)))
  shifts = draw(hnp.arrays(np.float64, (2, 9, 1), elements=st.floats(-100, 100)))
  temperature = draw(hnp.arrays(np.float64, (9, 1), elements=st.sampled_from([0.5, 1.0, 3.0])))
  return t, s, y, shifts, temperature


@settings(max_examples=30, deadline=None)
@given(batches())
def test_properties(case):
  with jax.enable_x64(True):
    t, s, y, (ct, cs), temperature = map(jnp.asarray, case)
    values = all_values(t, s, y, temperature)
    shifted = all_values(t + ct, s + cs, y, temperature)
    swapped = all_values(s, t, y, temperature)
    for name in ALL:
      assert np.all(values[name] >= -1e-10), name  # non-negativity
      np.testing.assert_allclose(shifted[name], values[name], rtol=1e-6, atol=1e-8,
                                 err_msg=name)
    for name in SYMMETRIC:
      np.testing.assert_allclose(swapped[name], values[name], rtol=1e-9, atol=1e-12,
                                 err_msg=name)


# --------------------------------------------------------------------------------------------
# Domain-gap measures.
# --------------------------------------------------------------------------------------------
def ref_central_moment_discrepancy(x, y, moments):
  mx, my = x.mean(0), y.mean(0)
  total = np.linalg.norm(mx - my)
  for k in range(2, moments + 1):
    total += np.linalg.norm(((x - mx) ** k).mean(0) - ((y - my) ** k).mean(0))
  return total


moment_discrepancy = jax.jit(dv.central_moment_discrepancy, static_argnames='moments')


def test_central_moment_discrepancy_values(x64):
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(20, 4)), 1.5 * rng.normal(size=(13, 4)) + 0.3
  for moments in [1, 2, 5]:
    got = moment_discrepancy(jnp.asarray(x), jnp.asarray(y), moments=moments)
    np.testing.assert_allclose(got, ref_central_moment_discrepancy(x, y, moments),
                               rtol=1e-12)
  # 0/1 weights select a subset.
  w = (np.arange(20) % 3 == 0).astype(float)
  got = moment_discrepancy(jnp.asarray(x), jnp.asarray(y), x_weights=jnp.asarray(w))
  np.testing.assert_allclose(got, ref_central_moment_discrepancy(x[w > 0], y, 5), rtol=1e-12)


def test_central_moment_discrepancy_gradients_jit_vmap(x64):
  rng = np.random.default_rng(10)
  x, y = jnp.asarray(rng.normal(size=(3, 5, 2))), jnp.asarray(rng.normal(size=(3, 4, 2)))
  moment_discrepancy_3 = functools.partial(moment_discrepancy, moments=3)
  check_grads(moment_discrepancy_3, (x[0], y[0]), order=1, modes=['rev'])
  same = jnp.ones((4, 2))  # identical samples: every norm is exactly at 0
  value, grad = jax.jit(jax.value_and_grad(dv.central_moment_discrepancy))(same, same)
  assert value == 0.0 and np.all(np.isfinite(grad))
  np.testing.assert_allclose(moment_discrepancy_3(x[0], y[0]),
                             dv.central_moment_discrepancy(x[0], y[0], 3), rtol=1e-12)
  looped = jnp.stack([moment_discrepancy_3(a, b) for a, b in zip(x, y)])
  np.testing.assert_allclose(jax.vmap(moment_discrepancy_3)(x, y), looped, rtol=1e-12)


def test_gaussian_tv(x64):
  shift = np.array([0.0, 0.1, 1.0, 2.0, 7.0])
  for sigma in [0.5, 1.0, 3.0]:
    want = 2 * stats.norm.cdf(shift / (2 * sigma)) - 1
    np.testing.assert_allclose(dv.gaussian_tv(jnp.asarray(shift), sigma), want, rtol=1e-12,
                               atol=1e-15)
  # Independent check: ½∫|φ(u) − φ(u − δ)| du on a grid.
  u = np.linspace(-20, 20, 400001)
  numeric = 0.5 * integrate.trapezoid(np.abs(stats.norm.pdf(u) - stats.norm.pdf(u - 1.3)), u)
  np.testing.assert_allclose(dv.gaussian_tv(1.3, 1.0), numeric, rtol=1e-8)


def test_classifier_tv_estimate():
  acc = jnp.array([0.0, 0.4, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(dv.classifier_tv_estimate(acc), [0.0, 0.0, 0.0, 0.5, 1.0])



@pytest.mark.parametrize('k', [2, 3])
def test_a_nan_logit_gives_nan_never_a_number(k):
  # A diverged model's NaN must reach the results (where it is flagged), not turn into a value.
  good, bad = jnp.zeros(k), jnp.zeros(k).at[1].set(jnp.nan)
  label = jnp.array(0)
  for fn in (dv.kl, dv.js, dv.tv):
    assert np.isnan(fn(bad, good)) and np.isnan(fn(good, bad)), fn.__name__
  for fn in (dv.target_kl, dv.non_target_kl, dv.non_target_js, dv.non_target_tv,
             dv.non_target_js_reversed):
    assert np.isnan(fn(bad, good, label)) and np.isnan(fn(good, bad, label)), fn.__name__
