"""Protocol G's closed-form training (`training.fit_linear`) against autodiff and NumPy.

Tolerances. The closed form computes the same SGD as autodiff through `losses.kd` and
`training.cross_entropy`; only the rounding of each gradient differs (the KL's gradient
c (q − p)/T in one step instead of through its cancellation-free form). Gradient descent on
these convex losses does not amplify those ulps: on the 600-setting main job the trained
weights and every metric agree to ≤ 2e-6 relative in float32 (the 5th-moment CMD of the
softmax outputs, a difference of near-equal moments, to 1.3e-5). The K = 2 gradient forms
(class-1 column, `training._opposite`) moved the main job's metrics by ≤ 1.0e-6 relative
more (that CMD by 3.8e-5) and no count-based error, accuracy or Δ. 1e-5 (float32; the
models' parameters are float32 even with float64 data) and 1e-9 (float64 formulas) leave a
margin on these small problems.
Accuracies count test examples, so they must be identical (no example lies within rounding
of the boundary in these draws).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xdistill_jax import losses
from xdistill_jax import training
from xdistill_jax.experiments import ntdh_overlap
from xdistill_jax.generators import decisive_features
from xdistill_jax.models import MLP, init_models

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-9}


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _draw(dtype, n=40, k=3, seed=0):
  rng = np.random.default_rng(seed)
  z, zt = (rng.normal(size=(n, k)) * 3).astype(dtype), (rng.normal(size=(n, k)) * 3).astype(dtype)
  y = rng.integers(0, k, n).astype(np.int32)
  w = (rng.random(n) < 0.6).astype(dtype)
  return z, zt, y, w


@pytest.mark.parametrize('k', [2, 3])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
@pytest.mark.parametrize('weighted', [False, True])
def test_closed_form_gradients_match_autodiff_and_numpy(dtype, weighted, k):
  """K = 2 builds (−g, g) from the class-1 column, K = 3 every column."""
  with jax.enable_x64(dtype == jnp.float64):
    z, zt, y, w = _draw(dtype, k=k)
    w = w if weighted else None
    temperature = 0.7
    c = (np.ones(len(y)) / len(y) if w is None else w / w.sum())[:, None]
    onehot = np.eye(z.shape[1])[y]
    ce_np = c * (_np_softmax(np.float64(z)) - onehot)
    kd_np = c * (_np_softmax(np.float64(z) / temperature)
                 - _np_softmax(np.float64(zt) / temperature)) / temperature
    ce = training.cross_entropy_grad(jnp.asarray(z), jnp.asarray(y), w)
    kd = training.kd_grad(jnp.asarray(z), jax.nn.softmax(jnp.asarray(zt) / temperature),
                          temperature, w)
    ce_ad = jax.grad(lambda v: training.cross_entropy(v, jnp.asarray(y), w))(jnp.asarray(z))
    kd_ad = jax.grad(lambda v: training.weighted_mean(
        losses.kd(v, jnp.asarray(zt), temperature), w))(jnp.asarray(z))
    assert ce.dtype == kd.dtype == dtype
    scale = np.abs(kd_np).max()
    for got, ad, ref in ((ce, ce_ad, ce_np), (kd, kd_ad, kd_np)):
      np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * scale)
      np.testing.assert_allclose(got, ad, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize('k', [2, 3])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_fit_linear_equals_optax_sgd_and_numpy(dtype, k):
  """K = 2 takes the one-margin path (G = (−g, g)), K = 3 the column-wise one."""
  with jax.enable_x64(dtype == jnp.float64):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)).astype(dtype), rng.integers(0, k, 30).astype(np.int32)
    kernel = (rng.normal(size=(5, k)) * 0.3).astype(dtype)
    bias = (rng.normal(size=k) * 0.1).astype(dtype)
    lr, steps = 0.3, 25
    ce = lambda z: training.cross_entropy_grad(z, jnp.asarray(y))
    ((k1, b1),) = jax.jit(lambda l: training.fit_linear([(ce, jnp.asarray(x), l)], lr, steps))(
        (jnp.asarray(kernel), jnp.asarray(bias)))
    loss = lambda p: training.cross_entropy(jnp.asarray(x) @ p[0] + p[1], jnp.asarray(y))
    (k2, b2), _ = jax.jit(lambda p: training.fit(loss, p, optax.sgd(lr), steps))(
        (jnp.asarray(kernel), jnp.asarray(bias)))
    kn, bn = np.float64(kernel), np.float64(bias)  # NumPy float64 gradient descent
    for _ in range(steps):
      g = (_np_softmax(x @ kn + bn) - np.eye(k)[y]) / len(y)
      kn, bn = kn - lr * x.T @ g, bn - lr * g.sum(0)
    assert k1.dtype == dtype
    for got, ref in ((k1, kn), (b1, bn), (k2, kn), (b2, bn)):
      np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_binary_softmax_equals_softmax_on_extreme_logits(dtype):
  """`training._class_1` (σ of the logit difference, the K = 2 gradients' softmax) against
  `jax.nn.softmax`'s class-1 column, with logits ±1e4 and a zero probability: same values to
  float rounding, no NaN."""
  with jax.enable_x64(dtype == jnp.float64):
    z = jnp.asarray([[0.0, 0.0], [1e4, -1e4], [-1e4, 1e4], [3.0, -2.5], [1e4, 1e4 - 1]], dtype)
    got, ref = training._class_1(z), jax.nn.softmax(z, axis=-1)[:, 1]
    assert got.dtype == dtype and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * 1e-3)
    np.testing.assert_array_equal(got[1:3], [0.0, 1.0])


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_binary_gradients_on_extreme_logits(dtype):
  """K = 2 CE and KD gradients at logits ±1e4 and zero teacher probabilities: finite, rows
  summing to 0, equal to c (softmax − target) in NumPy float64."""
  with jax.enable_x64(dtype == jnp.float64):
    z = np.asarray([[1e4, -1e4], [-1e4, 1e4], [0.0, 0.0], [1e4, 1e4 - 1], [-3.0, 2.5]], dtype)
    y = np.asarray([1, 1, 0, 0, 1], np.int32)
    p = np.asarray([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [1.0, 0.0]], dtype)
    c, t = 1 / len(y), 0.7
    ce_np = c * (_np_softmax(np.float64(z)) - np.eye(2)[y])
    kd_np = c * (_np_softmax(np.float64(z) / t) - p) / t
    for got, ref in ((training.cross_entropy_grad(jnp.asarray(z), jnp.asarray(y)), ce_np),
                     (training.kd_grad(jnp.asarray(z), jnp.asarray(p), t), kd_np)):
      assert got.dtype == dtype and np.isfinite(got).all()
      np.testing.assert_array_equal(got[:, 0], -got[:, 1])
      np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * 0.1)


def _autodiff_train(config, key, setting):
  """The autodiff training that protocol G used before `fit_linear` (optax SGD, `losses.kd`)."""
  model = MLP(num_classes=2)
  optimizer = optax.sgd(config.learning_rate)
  k_data, k_init = jax.random.split(key)
  n = config.n_train + config.n_test
  hyperplane, data = decisive_features.sample(k_data, setting['overlap'], n,
                                              config.num_decisive, config.dim,
                                              config.student_decisive)
  train, test = data.rows(0, config.n_train), data.rows(config.n_train, n)
  teacher_init, student_init = init_models(model, k_init, 2, config.dim)
  w = ntdh_overlap.train_weights(config, setting)
  params, _ = training.fit(
      lambda p: (training.cross_entropy(model.apply(p['teacher'], train.x_a), train.y, w)
                 + training.cross_entropy(model.apply(p['baseline'], train.x_b), train.y, w)),
      {'teacher': teacher_init, 'baseline': student_init}, optimizer, config.steps)
  teacher_logits = model.apply(params['teacher'], train.x_a)

  def kd_loss(student):
    logits = model.apply(student, train.x_b)
    return (config.ce_weight * training.cross_entropy(logits, train.y, w)
            + config.kd_weight * training.weighted_mean(
                losses.kd(logits, teacher_logits, config.temperature), w))

  params['kd'], _ = training.fit(kd_loss, student_init, optimizer, config.steps)
  return params, (hyperplane, train, test)


def _metrics(config, settings, train_fn, monkeypatch):
  monkeypatch.setattr(ntdh_overlap, '_train', train_fn)
  fn = jax.jit(jax.vmap(ntdh_overlap.make_setting_fn(config, with_params=True)))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(
      jnp.arange(len(settings['overlap'])))
  return jax.tree.map(np.asarray, fn(keys, settings))


def test_protocol_g_metrics_equal_autodiff_training(tiny_overlap_config, monkeypatch):
  """Every metric of the closed-form setting fn against today's autodiff training."""
  config = tiny_overlap_config
  config.steps = 200
  settings = {'overlap': jnp.asarray([0, 4, 10, 6], jnp.int32)}
  closed_m, closed_p = _metrics(config, settings, ntdh_overlap._train, monkeypatch)
  auto_m, auto_p = _metrics(config, settings, _autodiff_train, monkeypatch)
  tol = TOL[jnp.float32]
  for a, b in zip(jax.tree.leaves(closed_p), jax.tree.leaves(auto_p)):
    np.testing.assert_allclose(a, b, rtol=tol * 10, atol=tol)
  assert closed_m.keys() == auto_m.keys()
  for name in closed_m:
    if name.endswith('_acc') or name.endswith('_count') or name.endswith('violations'):
      np.testing.assert_array_equal(closed_m[name], auto_m[name], err_msg=name)
    else:
      np.testing.assert_allclose(closed_m[name], auto_m[name], rtol=tol, atol=tol * 1e-2,
                                 err_msg=name)
  assert np.isfinite(closed_m['kd_loss']).all()


def test_protocol_g_training_equal_autodiff_with_sample_axis(tiny_overlap_config):
  """`ntdh_samples`' 0/1 row weights, float64 data: the trained weights of all three models
  (float32 parameters, as `models.MLP` initialises them) agree with autodiff training."""
  config = tiny_overlap_config
  settings = {'overlap': jnp.asarray([0, 10, 6], jnp.int32),
              'n': jnp.asarray([64, 20, 50], jnp.int32)}
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(3))
  with jax.enable_x64(True):
    closed, auto = (jax.jit(jax.vmap(lambda k, s, f=f: f(config, k, s)[0]))(keys, settings)
                    for f in (ntdh_overlap._train, _autodiff_train))
    closed, auto = jax.tree.map(np.asarray, (closed, auto))
  for a, b in zip(jax.tree.leaves(closed), jax.tree.leaves(auto)):
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=TOL[jnp.float32] * 10, atol=TOL[jnp.float32])
