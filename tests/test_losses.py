"""Tests of xdistill_jax.losses against NumPy/SciPy computations written from the formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads
from scipy import special

from xdistill_jax import losses
from xdistill_jax import models

N, K, DS, DT = 5, 4, 3, 6  # batch, classes, student and teacher feature widths


def jit(f, **kwargs):
  """Jitted f with keyword arguments baked in (one compile beats op-by-op dispatch)."""
  return jax.jit(functools.partial(f, **kwargs))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def logit_case(seed, n=N, k=K, scale=2.0):
  rng = np.random.default_rng(seed)
  return scale * rng.normal(size=(n, k)), scale * rng.normal(size=(n, k)), rng.integers(0, k, n)


def feature_case(seed, n=N, ds=DS, dt=DT):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, ds)), rng.normal(size=(n, dt))


# --------------------------------------------------------------------------------------------
# NumPy references.
# --------------------------------------------------------------------------------------------
def ref_kl_rows(p, q):
  return special.rel_entr(p, q).sum(-1)


def ref_kd(s, t, temperature):
  return ref_kl_rows(special.softmax(t / temperature, -1), special.softmax(s / temperature, -1))


def ref_dkd(s, t, y, alpha, beta, temperature, weights):
  p, q = special.softmax(t / temperature, -1), special.softmax(s / temperature, -1)
  out = []
  for i, label in enumerate(y):
    rest_p, rest_q = np.delete(p[i], label), np.delete(q[i], label)  # 1 − p_y as a sum
    tckd = ref_kl_rows(np.array([p[i, label], rest_p.sum()]),
                       np.array([q[i, label], rest_q.sum()]))
    nckd = ref_kl_rows(rest_p / rest_p.sum(), rest_q / rest_q.sum())
    out.append(temperature**2 * (alpha * tckd + np.broadcast_to(beta, y.shape)[i] * nckd))
  return np.asarray(out) * weights


def ref_cos(a, b):
  return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def ref_omega(t, s, y, threshold):
  out = []
  for zt, zs, label in zip(t, s, y):
    c = ref_cos(zt, zs)
    out.append(1.0 if zt.argmax() == label else ((1 + c) / 2 if c >= threshold else 0.0))
  return np.array(out)


def ref_huber(x):
  return np.where(np.abs(x) <= 1, 0.5 * x * x, np.abs(x) - 0.5)


def ref_rkd(s, t, wd, wa, angle_rows=0):
  """RepDistiller's RKDLoss: μ = mean distance over all pairs i ≠ j (coincident ones too);
  with angle_rows = a, angles over the triplets A × B × C of rows stacked A; B; C."""
  def distances(x):
    n = len(x)
    d = np.array([[np.linalg.norm(a - b) for b in x] for a in x])
    mu = sum(d[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return d / mu if mu > 0 else np.zeros_like(d)

  def angles(x):
    a = angle_rows or len(x)
    sets = (x[:a], x[a:2 * a], x[2 * a:]) if angle_rows else (x, x, x)
    out = np.zeros((a, a, a))
    for i, xi in enumerate(sets[0]):
      for j, xj in enumerate(sets[1]):
        for k, xk in enumerate(sets[2]):
          e1, e2 = xj - xi, xk - xi
          if np.linalg.norm(e1) > 0 and np.linalg.norm(e2) > 0:
            out[i, j, k] = ref_cos(e1, e2)
    return out

  return (wd * ref_huber(distances(s) - distances(t)).mean()
          + wa * ref_huber(angles(s) - angles(t)).mean())


def ref_pkt(s, t, eps):
  def conditional(x):
    kernel = np.array([[(1 + ref_cos(a, b)) / 2 for b in x] for a in x])
    return kernel / kernel.sum(1, keepdims=True)

  p, q = conditional(t), conditional(s)
  return (p * np.log((p + eps) / (q + eps))).sum(1)


def ref_sp(s, t):
  def gram(x):
    g = x @ x.T
    return g / np.linalg.norm(g, axis=1, keepdims=True)

  return ((gram(s) - gram(t)) ** 2).sum() / len(s) ** 2


def ref_infonce(a, b, temperature):
  out = []
  for i in range(len(a)):
    logits = np.array([ref_cos(a[i], bj) for bj in b]) / temperature
    out.append(special.logsumexp(logits) - logits[i])
  return np.array(out)


def ref_cmd_loss(s, t, ts, tt, anchors):
  sim = lambda x: np.array([[ref_cos(a, b) for b in anchors] for a in x])  # noqa: E731
  p = special.softmax(sim(t) / tt, axis=1)
  return -(p * special.log_softmax(sim(s) / ts, axis=1)).sum(1)


def ref_l2_align(s, t):
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  return ((unit(s) - unit(t)) ** 2).sum(1)


# --------------------------------------------------------------------------------------------
# Logit losses.
# --------------------------------------------------------------------------------------------
def test_kd_values(x64):
  s, t, _ = logit_case(0)
  for temperature in [1.0, 3.0]:
    np.testing.assert_allclose(jit(losses.kd)(jnp.asarray(s), jnp.asarray(t), temperature),
                               ref_kd(s, t, temperature), rtol=1e-10)


def test_dkd_values(x64):
  s, t, y = logit_case(1)
  beta = np.linspace(0.5, 8.0, N)
  weights = np.linspace(0.0, 1.0, N)
  got = jit(losses.dkd)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), alpha=0.7,
                        beta=jnp.asarray(beta), temperature=2.0, weights=jnp.asarray(weights))
  np.testing.assert_allclose(got, ref_dkd(s, t, y, 0.7, beta, 2.0, weights), rtol=1e-10)
  default = jit(losses.dkd)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y))
  np.testing.assert_allclose(default, ref_dkd(s, t, y, 1.0, 8.0, 4.0, 1.0), rtol=1e-10)


@pytest.mark.parametrize('scale', [2.0, 1e4])
def test_dkd_with_beta_one_minus_p_y_equals_scaled_kd(x64, scale):
  """α = 1, β = 1 − p_y per example: DKD = T² KD (theory.md D1)."""
  s, t, y = logit_case(2, n=8, k=6, scale=scale)
  dkd, kd = jax.jit(losses.dkd), jax.jit(losses.kd)
  for temperature in [0.7, 4.0]:
    p_y = special.softmax(t / temperature, -1)[np.arange(8), y]
    got = dkd(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), alpha=1.0,
              beta=jnp.asarray(1 - p_y), temperature=temperature)
    want = temperature**2 * kd(jnp.asarray(s), jnp.asarray(t), temperature)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('k', [3, 100])
def test_dkd_in_float32_matches_the_float64_formula(k):
  """DKD shares `target_split`: float32 within 1e-5·|ref| + 1e-7 (per unit of T²(α + β)) of
  the float64 formula for logits up to ±30, with finite gradients."""
  rng = np.random.default_rng(k)
  t = np.clip(30 * rng.normal(size=(32, k)), -30, 30).astype(np.float32)
  s = (t + rng.choice([1e-3, 1e-1, 1.0], size=(32, 1)) * rng.normal(size=(32, k)))
  s = np.clip(s, -30, 30).astype(np.float32)
  y = rng.integers(0, k, 32)
  for temperature in (0.7, 1.0, 4.0):
    f = jax.jit(jax.value_and_grad(
        lambda a: jnp.sum(losses.dkd(a, jnp.asarray(t), jnp.asarray(y), 1.0, 2.0, temperature))))
    got = np.asarray(jit(losses.dkd, alpha=1.0, beta=2.0, temperature=temperature)(
        jnp.asarray(s), jnp.asarray(t), jnp.asarray(y)), np.float64)
    want = ref_dkd(s.astype(np.float64), t.astype(np.float64), y, 1.0, 2.0, temperature, 1.0)
    scale = temperature**2 * 3.0
    assert np.all(got >= 0)
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * np.abs(want) + 1e-7 * scale)
    assert np.all(np.isfinite(np.asarray(f(jnp.asarray(s))[1])))


def test_sample_mask_cases():
  t = jnp.array([[3.0, 1.0, 0.0],    # teacher right (label 0)
                 [3.0, 1.0, 0.0],    # teacher wrong, student orthogonal-ish: c < threshold
                 [3.0, 1.0, 0.0]])   # teacher wrong, student parallel: c >= threshold
  s = jnp.array([[-1.0, 2.0, 5.0],
                 [0.0, 0.0, 1.0],
                 [3.03, 1.0, 0.0]])
  y = jnp.array([0, 1, 2])
  omega = jit(losses.sample_mask)(t, s, y)
  c = ref_cos(np.array([3.0, 1.0, 0.0]), np.array([3.03, 1.0, 0.0]))
  assert c >= 0.996
  np.testing.assert_allclose(omega, [1.0, 0.0, (1 + c) / 2], rtol=1e-6)
  grads = jax.jit(jax.grad(lambda a, b: jnp.sum(losses.sample_mask(a, b, y)), (0, 1)))(t, s)
  for g in grads:
    assert np.all(np.asarray(g) == 0.0)


def test_sample_mask_and_masked_kd_values(x64):
  s, t, y = logit_case(3, n=12)
  t[:3] = s[:3] + 0.01  # near-parallel teacher and student: some wrong teachers kept
  omega = ref_omega(t, s, y, 0.9)
  assert 0 < omega.sum() < 12
  got_omega = jit(losses.sample_mask)(jnp.asarray(t), jnp.asarray(s), jnp.asarray(y), 0.9)
  np.testing.assert_allclose(got_omega, omega, rtol=1e-12)
  got = jit(losses.masked_kd)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), 2.0, 0.9)
  want = ref_kd(omega[:, None] * s, omega[:, None] * t, 2.0)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
  right = t.argmax(1) == y
  np.testing.assert_allclose(got[right], ref_kd(s, t, 2.0)[right], rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Feature, relational and contrastive losses.
# --------------------------------------------------------------------------------------------
def test_feature_losses_values(x64):
  s, t = feature_case(4)
  js, jt = jnp.asarray(s), jnp.asarray(t)
  np.testing.assert_allclose(jit(losses.fitnet)(js, jt[:, :DS]),
                             ((s - t[:, :DS]) ** 2).mean(1), rtol=1e-12)
  np.testing.assert_allclose(jit(losses.rkd)(js, jt, 1.5, 0.5), ref_rkd(s, t, 1.5, 0.5),
                             rtol=1e-10)
  np.testing.assert_allclose(jit(losses.pkt)(js, jt), ref_pkt(s, t, 1e-7), rtol=1e-10)
  np.testing.assert_allclose(jit(losses.sp)(js, jt), ref_sp(s, t), rtol=1e-10)


def test_contrastive_losses_values(x64):
  s, t = feature_case(5, dt=DS)
  js, jt = jnp.asarray(s), jnp.asarray(t)
  np.testing.assert_allclose(jit(losses.infonce)(js, jt, 0.3), ref_infonce(s, t, 0.3),
                             rtol=1e-10)
  both = 0.5 * (ref_infonce(s, t, 0.07) + ref_infonce(t, s, 0.07))
  np.testing.assert_allclose(jit(losses.cmc_loss)(js, jt), both, rtol=1e-10)
  np.testing.assert_allclose(jit(losses.cmc_loss, symmetric=False)(js, jt, 0.07),
                             ref_infonce(s, t, 0.07), rtol=1e-10)
  np.testing.assert_allclose(jit(losses.crd)(js, jt), both, rtol=1e-10)
  np.testing.assert_allclose(jit(losses.cmd_loss)(js, jt), ref_cmd_loss(s, t, 0.2, 0.05, t),
                             rtol=1e-10)
  anchors = np.random.default_rng(6).normal(size=(7, DS))
  np.testing.assert_allclose(jit(losses.cmd_loss)(js, jt, 0.3, 0.1, jnp.asarray(anchors)),
                             ref_cmd_loss(s, t, 0.3, 0.1, anchors), rtol=1e-10)
  np.testing.assert_allclose(jit(losses.l2_align)(js, jt), ref_l2_align(s, t), rtol=1e-10)


def test_cmd_loss_teacher_side_is_constant():
  s, t = (jnp.asarray(a, jnp.float32) for a in feature_case(7, dt=DS))
  f = lambda a, b, c: jnp.sum(losses.cmd_loss(a, b, anchors=c))  # noqa: E731
  g_s, g_t, g_a = jax.jit(jax.grad(f, (0, 1, 2)))(s, t, t)
  assert np.all(np.asarray(g_t) == 0) and np.all(np.asarray(g_a) == 0)
  assert np.any(np.asarray(g_s) != 0)


def test_scale_invariances():
  """RKD, PKT, SP and the cosine losses only see directions / relative geometry."""
  s, t = (jnp.asarray(a, jnp.float32) for a in feature_case(8, dt=DS))
  y = jnp.zeros(N, int)
  base, scaled, moved = (JIT_VALUES['features'](x, t, y) for x in (s, 3.0 * s, s + 5.0))
  for name in ['rkd', 'pkt', 'sp', 'crd', 'infonce', 'cmc_loss', 'cmd_loss', 'l2_align']:
    np.testing.assert_allclose(scaled[name], base[name], rtol=1e-4, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(moved['rkd'], base['rkd'], rtol=1e-4)  # and to translation


# --------------------------------------------------------------------------------------------
# Uniform checks: gradients, jit/vmap parity, degenerate inputs.
# --------------------------------------------------------------------------------------------
def _logit(f, **kw):
  return lambda s, t, y: f(s, t, y, **kw)


ALL = {  # name -> (f(student, teacher, labels), kind of inputs)
    'kd': (lambda s, t, y: losses.kd(s, t, 2.0), 'logits'),
    'dkd': (_logit(losses.dkd, beta=2.0, temperature=2.0), 'logits'),
    'masked_kd': (_logit(losses.masked_kd, threshold=0.9), 'logits'),
    'fitnet': (lambda s, t, y: losses.fitnet(s, t), 'features'),
    'rkd': (lambda s, t, y: losses.rkd(s, t), 'features'),
    'pkt': (lambda s, t, y: losses.pkt(s, t), 'features'),
    'sp': (lambda s, t, y: losses.sp(s, t), 'features'),
    'crd': (lambda s, t, y: losses.crd(s, t, 0.5), 'features'),
    'infonce': (lambda s, t, y: losses.infonce(s, t, 0.5), 'features'),
    'cmd_loss': (lambda s, t, y: losses.cmd_loss(s, t, 0.5, 0.2), 'features'),
    'cmc_loss': (lambda s, t, y: losses.cmc_loss(s, t, 0.5), 'features'),
    'l2_align': (lambda s, t, y: losses.l2_align(s, t), 'features'),
}


KINDS = ['logits', 'features']


def values_of(kind):
  """f(s, t, y) -> {name: loss} for every loss of one input kind (one compile for all)."""
  names = [name for name, (_, k) in ALL.items() if k == kind]
  return lambda s, t, y: {name: ALL[name][0](s, t, y) for name in names}


JIT_VALUES = {kind: jax.jit(values_of(kind)) for kind in KINDS}


def values_and_grads_of(kind):
  """Jitted f(s, t, y) -> {name: (summed loss, (d/ds, d/dt))} for one input kind."""
  def per_loss(name, s, t, y):
    return jax.value_and_grad(lambda a, b: jnp.sum(ALL[name][0](a, b, y)), (0, 1))(s, t)

  names = [name for name, (_, k) in ALL.items() if k == kind]
  return jax.jit(lambda s, t, y: {name: per_loss(name, s, t, y) for name in names})


def inputs(name, seed, n=N, dtype=np.float64):
  if ALL[name][1] == 'logits':
    s, t, y = logit_case(seed, n=n)
  else:
    s, t = feature_case(seed, n=n, dt=DS)
    y = np.zeros(n, int)
  return jnp.asarray(s, dtype), jnp.asarray(t, dtype), jnp.asarray(y)


@pytest.mark.parametrize('kind, order', [('logits', 1), ('logits', 2), ('features', 1)])
def test_check_grads(x64, kind, order):
  """Every loss of a kind at once (outputs concatenated: one compile); KD/DKD at order 2."""
  name = next(name for name, (_, k) in ALL.items() if k == kind)
  s, t, y = inputs(name, 9, n=4)
  names = ['kd', 'dkd'] if order == 2 else [n for n, (_, k) in ALL.items() if k == kind]

  def f(a, b):
    # cmd_loss stop-gradients its teacher side by design: differentiate its student only.
    outputs = [ALL[n][0](a, t if n == 'cmd_loss' else b, y) for n in names]
    return jnp.concatenate([jnp.atleast_1d(o) for o in outputs])

  check_grads(jax.jit(f), (s, t), order=order, modes=['rev'])


@pytest.mark.parametrize('kind', KINDS)
def test_jit_and_vmap(kind):
  f = values_of(kind)
  name = next(name for name, (_, k) in ALL.items() if k == kind)
  batches = [inputs(name, seed, dtype=np.float32) for seed in (10, 11, 12)]
  s, t, y = (jnp.stack(parts) for parts in zip(*batches))
  jitted = jax.jit(f)
  eager, compiled = f(s[0], t[0], y[0]), jitted(s[0], t[0], y[0])
  mapped = jax.jit(jax.vmap(f))(s, t, y)
  looped = [compiled] + [jitted(s[i], t[i], y[i]) for i in (1, 2)]
  for name in eager:
    np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(mapped[name], jnp.stack([v[name] for v in looped]),
                               rtol=1e-5, atol=1e-6, err_msg=name)


def degenerate_inputs(kind):
  """Features: zero vectors, identical points, huge values. Logits: ±1e4, K = 2 and 1000."""
  if kind == 'features':
    zero, same = np.zeros((4, DS)), np.ones((4, DS))
    mixed = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1e4, -1e4, 0.0]])
    return [(zero, mixed), (same, zero), (mixed, mixed), (mixed, same)]
  big = np.where(np.eye(2)[[0, 1, 0, 1]] > 0, 1e4, -1e4)
  two_classes = (np.concatenate([big, big, np.zeros((4, 2))]),  # student
                 np.concatenate([-big, big, big]),  # teacher
                 np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1]))
  huge = 1e4 * np.random.default_rng(13).normal(size=(2, 1000))
  return [two_classes, (huge, huge[::-1], np.array([3, 999]))]


@pytest.mark.parametrize('kind', KINDS)
def test_degenerate_inputs_finite_values_and_gradients(kind):
  values_and_grads = values_and_grads_of(kind)
  for case in degenerate_inputs(kind):
    s, t = jnp.asarray(case[0], jnp.float32), jnp.asarray(case[1], jnp.float32)
    y = jnp.asarray(case[2]) if len(case) == 3 else jnp.zeros(len(s), int)
    for name, (value, grads) in values_and_grads(s, t, y).items():
      assert np.isfinite(value), name
      for g in grads:
        assert np.all(np.isfinite(g)), name


# --------------------------------------------------------------------------------------------
# Hypothesis properties.
# --------------------------------------------------------------------------------------------
@st.composite
def logit_batches(draw):
  s, t = (draw(hnp.arrays(np.float64, (3, K), elements=st.floats(-30, 30))) for _ in 'st')
  y = draw(hnp.arrays(np.int64, (3,), elements=st.integers(0, K - 1)))
  shifts = draw(hnp.arrays(np.float64, (2, 3, 1), elements=st.floats(-100, 100)))
  return s, t, y, shifts


@settings(max_examples=30, deadline=None)
@given(logit_batches())
def test_logit_loss_properties(case):
  s, t, y, (cs, ct) = case
  with jax.enable_x64(True):
    s, t, y = jnp.asarray(s), jnp.asarray(t), jnp.asarray(y)
    values = JIT_VALUES['logits'](s, t, y)
    shifted = JIT_VALUES['logits'](s + cs, t + ct, y)
    for name in ['kd', 'dkd']:  # masked_kd's ω uses cosines of raw logits: not invariant
      assert np.all(values[name] >= -1e-10)
      np.testing.assert_allclose(shifted[name], values[name], rtol=1e-6, atol=1e-8)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, (2, 4, DS), elements=st.floats(-10, 10)))
def test_embedding_loss_properties(pair):
  s, t = jnp.asarray(pair[0], jnp.float32), jnp.asarray(pair[1], jnp.float32)
  v = JIT_VALUES['features'](s, t, jnp.zeros(4, int))
  for name, x in v.items():
    assert np.all(np.isfinite(x)) and np.all(x >= -1e-5), name
  assert np.all(v['l2_align'] <= 4 + 1e-5)



# --------------------------------------------------------------------------------------------
# RKD's normaliser, teacher targets, float32 and the CPU-only forms.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_rkd_distance_normaliser_counts_coincident_pairs(dtype):
  """The issue's repro: t has a coincident pair, μ_t = 2/3 (RepDistiller), loss 0.125."""
  with jax.enable_x64(dtype == np.float64):
    s = jnp.asarray([[0.0], [1.0], [2.0]], dtype)
    t = jnp.asarray([[0.0], [0.0], [1.0]], dtype)
    value, grads = jax.jit(jax.value_and_grad(lambda a, b: losses.rkd(a, b, 1.0, 2.0),
                                              (0, 1)))(s, t)
    distance_only = jax.jit(lambda a, b: losses.rkd(a, b, 1.0, 0.0))(s, t)
    assert value.dtype == dtype
    np.testing.assert_allclose(distance_only, 0.125, rtol=1e-6)
    np.testing.assert_allclose(value, ref_rkd(np.asarray(s, np.float64),
                                              np.asarray(t, np.float64), 1.0, 2.0), rtol=1e-5)
    for g in grads:
      assert np.all(np.isfinite(np.asarray(g)))


def test_rkd_of_coincident_points_has_finite_gradients():
  s = jnp.asarray([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], jnp.float32)
  t = jnp.asarray([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], jnp.float32)
  for a, b in [(s, t), (t, s), (t, t)]:
    value, grads = jax.jit(jax.value_and_grad(lambda x, y: losses.rkd(x, y), (0, 1)))(a, b)
    assert np.isfinite(value) and all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  np.testing.assert_allclose(jax.jit(losses.rkd)(s, t),
                             ref_rkd(np.asarray(s, np.float64), np.asarray(t, np.float64),
                                     1.0, 2.0), rtol=1e-5)


def test_rkd_on_a_row_sample_and_with_a_teacher_target(x64):
  rng = np.random.default_rng(20)
  s, t = rng.normal(size=(12, 2)), rng.normal(size=(12, 3))
  js, jt = jnp.asarray(s), jnp.asarray(t)
  got = jax.jit(lambda a, b: losses.rkd(a, b, 25.0, 50.0, angle_rows=4))(js, jt)
  np.testing.assert_allclose(got, ref_rkd(s, t, 25.0, 50.0, angle_rows=4), rtol=1e-10)
  target = losses.rkd_target(jt, 4)
  np.testing.assert_allclose(losses.rkd(js, None, 25.0, 50.0, 4, target), got, rtol=1e-12)
  # A; B; C all equal to the whole batch is the full n³ angle mean.
  rows = lambda x: jnp.concatenate([x, x, x])  # noqa: E731
  full = losses.rkd(js[:5], jt[:5], 25.0, 50.0)
  sampled = losses.rkd(rows(js[:5]), rows(jt[:5]), 0.0, 50.0, angle_rows=5)
  np.testing.assert_allclose(sampled, ref_rkd(s[:5], t[:5], 0.0, 50.0), rtol=1e-10)
  np.testing.assert_allclose(full, ref_rkd(s[:5], t[:5], 25.0, 50.0), rtol=1e-10)
  with pytest.raises(ValueError, match='angle_rows'):
    losses.rkd_target(jt, 5)


def test_pkt_and_sp_with_teacher_targets(x64):
  s, t = feature_case(21, n=9)
  js, jt = jnp.asarray(s), jnp.asarray(t)
  np.testing.assert_allclose(losses.pkt(js, None, target=losses.pkt_target(jt)),
                             ref_pkt(s, t, 1e-7), rtol=1e-10)
  np.testing.assert_allclose(losses.pkt(js, None, 1e-3, losses.pkt_target(jt, 1e-3)),
                             ref_pkt(s, t, 1e-3), rtol=1e-10)
  np.testing.assert_allclose(losses.sp(js, None, losses.sp_target(jt)), ref_sp(s, t),
                             rtol=1e-10)


@pytest.mark.parametrize('d', [2, 8])
def test_relational_losses_in_float32_match_the_float64_formulas(d):
  """Values and gradients in float32 against the NumPy formulas / float64 library."""
  rng = np.random.default_rng(22)
  s, t = rng.normal(size=(24, d)), rng.normal(size=(24, d))
  fns = {'rkd': lambda a, b: losses.rkd(a, b, 25.0, 50.0),
         'pkt': lambda a, b: jnp.sum(losses.pkt(a, b)),
         'sp': lambda a, b: losses.sp(a, b),
         'crd': lambda a, b: jnp.sum(losses.crd(a, b))}
  crd = 0.5 * (ref_infonce(s, t, 0.07) + ref_infonce(t, s, 0.07)).sum()
  refs = {'rkd': ref_rkd(s, t, 25.0, 50.0), 'pkt': ref_pkt(s, t, 1e-7).sum(),
          'sp': ref_sp(s, t), 'crd': crd}

  def values_and_grads(a, b):
    return jax.jit(lambda a, b: {k: jax.value_and_grad(f)(a, b) for k, f in fns.items()})(a, b)

  got = values_and_grads(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
  with jax.enable_x64(True):
    want = values_and_grads(jnp.asarray(s), jnp.asarray(t))
  for name in fns:
    np.testing.assert_allclose(want[name][0], refs[name], rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(got[name][0], refs[name], rtol=2e-5, err_msg=name)
    # PKT's kernel (1 + cos)/2 nearly vanishes for antipodal rows (common for d = 2), where
    # 1 + cos cancels in float32 and its log's derivative 1/(K + ε r) is large.
    g32, g64 = np.asarray(got[name][1], np.float64), np.asarray(want[name][1])
    tolerance = 1e-2 if name == 'pkt' else 1e-4
    assert np.linalg.norm(g32 - g64) <= tolerance * np.linalg.norm(g64), name


def test_cmc_loss_small_or_traced_temperature_takes_the_two_pass_form(x64):
  s, t = feature_case(23, dt=DS)
  js, jt = jnp.asarray(s), jnp.asarray(t)
  both = lambda tau: 0.5 * (ref_infonce(s, t, tau) + ref_infonce(t, s, tau))  # noqa: E731
  np.testing.assert_allclose(losses.cmc_loss(js, jt, 0.01), both(0.01), rtol=1e-10,
                             atol=1e-14)
  traced = jax.jit(lambda tau: losses.crd(js, jt, tau))(0.07)
  np.testing.assert_allclose(traced, both(0.07), rtol=1e-10)


def test_l2_normalize_epsilon_and_zero_vector():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]], jnp.float32)
  np.testing.assert_allclose(losses.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]],
                             rtol=1e-6)
  jac = jax.jacobian(lambda v: losses.l2_normalize(v))(jnp.zeros(2, jnp.float32))
  np.testing.assert_allclose(jac, np.eye(2) / losses.NORM_EPS, rtol=1e-6)


def test_cpu_forms_and_plain_forms_agree(monkeypatch):
  """The per-plane pairwise terms and column-wise narrow products (CPU backend) against the
  plain forms accelerators get, both run here on the CPU."""
  rng = np.random.default_rng(24)
  s, t = (jnp.asarray(rng.normal(size=(16, 2)), jnp.float32) for _ in 'st')
  x = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
  dense = models.TorchDense(3)
  params = dense.init(jax.random.key(0), x)

  def everything(s, t, x):
    out = {name: jax.value_and_grad(f)(s, t) for name, f in {
        'rkd': lambda a, b: losses.rkd(a, b, 25.0, 50.0),
        'rkd_sample': lambda a, b: losses.rkd(a[:15], b[:15], 25.0, 50.0, angle_rows=5),
        'pkt': lambda a, b: jnp.sum(losses.pkt(a, b)),
        'infonce': lambda a, b: jnp.sum(losses.infonce(a, b)),
        'crd': lambda a, b: jnp.sum(losses.crd(a, b))}.items()}
    out['dense'] = jax.value_and_grad(lambda p: jnp.sum(jnp.sin(dense.apply(p, x))))(params)
    return out

  assert models.cpu_forms()  # the test machine's backend
  cpu = jax.jit(lambda *a: everything(*a))(s, t, x)
  monkeypatch.setattr(models, 'cpu_forms', lambda: False)
  plain = jax.jit(lambda *a: everything(*a))(s, t, x)
  for name in cpu:
    for a, b in zip(jax.tree.leaves(cpu[name]), jax.tree.leaves(plain[name])):
      # float32 roundings of the two arithmetic orders (PKT's antipodal kernels: 2e-5)
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
