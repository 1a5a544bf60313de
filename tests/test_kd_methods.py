"""Table-1 KD methods (`kd_methods`): terms are the `losses` functions; training, no NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xdistill_jax import kd_methods
from xdistill_jax import losses
from xdistill_jax import training
from xdistill_jax.generators import decisive_features
from xdistill_jax.generators import kclass
from xdistill_jax.models import MLP, TorchDense

H = kd_methods.Hyper()  # protocol G's numbers: T = 0.7, DKD α = β = 1, T = 0.7, CRD 0.02
# A hand-built batch (K = 3): teacher right (0, 1, 4), wrong but aligned with the student
# (2: cos ≥ 0.996, ω = (1 + c)/2), wrong and not aligned (3: ω = 0).
TEACHER = jnp.array([[3.0, 0.5, -1.0], [0.2, 2.0, 0.1], [2.0, 1.0, 0.0], [0.0, 0.0, 2.5],
                     [1.0, -1.0, 0.5]])
STUDENT = jnp.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.3], [2.1, 1.0, 0.05], [1.5, 0.2, -1.0],
                     [0.3, 0.1, 0.2]])
LABELS = jnp.array([0, 1, 1, 0, 0])


def _expected(method, heads):
  """The method's term written directly with the library functions."""
  zs, zt, y, n = STUDENT, TEACHER, LABELS, STUDENT.shape[0]
  dense = lambda p, x: TorchDense(p['params']['kernel'].shape[-1]).apply(p, x)
  kl = jnp.mean(losses.kd(zs, zt, 0.7))
  omega = losses.sample_mask(zt, zs, y)
  return {
      'kl': lambda: kl,
      'kl_omega': lambda: jnp.mean(losses.masked_kd(zs, zt, y, 0.7)),
      'crd': lambda: 0.02 * jnp.mean(losses.crd(dense(heads['embed_s'], zs),
                                                dense(heads['embed_t'], zt), 0.07)),
      'fitnet': lambda: jnp.mean(losses.fitnet(dense(heads['regressor'], zs), zt)),
      'rkd': lambda: losses.rkd(zs, zt, 25.0, 50.0),
      'pkt': lambda: jnp.mean(losses.pkt(zs, zt)) / n + kl,
      'sp': lambda: losses.sp(zs, zt) + kl,
      'dkd': lambda: jnp.mean(losses.dkd(zs, zt, y, 1.0, 1.0, 0.7)),
      'dkd_omega': lambda: jnp.mean(losses.dkd(zs, zt, y, 1.0, 1.0, 0.7, weights=omega)),
  }[method]()


def test_hand_built_batch_has_every_kind_of_omega():
  omega = np.asarray(losses.sample_mask(TEACHER, STUDENT, LABELS))
  assert omega[[0, 1, 4]].tolist() == [1.0, 1.0, 1.0]
  assert 0.99 < omega[2] < 1.0 and omega[3] == 0.0


@pytest.mark.parametrize('method', kd_methods.METHODS)
def test_term_and_objective_match_the_library(method):
  heads = kd_methods.init_heads(method, jax.random.key(1), 3, H)
  term = kd_methods.distillation_term(method, H, STUDENT, TEACHER, LABELS, heads)
  np.testing.assert_allclose(term, _expected(method, heads), rtol=2e-5, atol=1e-6)
  objective = kd_methods.objective(method, H, STUDENT, TEACHER, LABELS, heads)
  np.testing.assert_allclose(
      objective, training.cross_entropy(STUDENT, LABELS) + _expected(method, heads),
      rtol=2e-5, atol=1e-6)


def test_cross_entropy_matches_the_formula():
  """`training.cross_entropy` (the one CE of the package, one-hot form) against NumPy."""
  z, y = np.asarray(STUDENT, np.float64), np.asarray(LABELS)
  log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
  per_example = -log_p[np.arange(len(y)), y]
  np.testing.assert_allclose(training.cross_entropy(STUDENT, LABELS), per_example.mean(),
                             rtol=1e-6)
  w = np.array([1.0, 0.0, 2.0, 0.5, 0.0])
  np.testing.assert_allclose(training.cross_entropy(STUDENT, LABELS, jnp.asarray(w)),
                             (w * per_example).sum() / w.sum(), rtol=1e-6)
  grad = jax.grad(lambda a: training.cross_entropy(a, LABELS))(STUDENT)
  np.testing.assert_allclose(grad, (np.exp(log_p) - np.eye(3)[y]) / len(y), rtol=1e-5,
                             atol=1e-7)


def test_teacher_targets_are_the_library_targets():
  t = TEACHER
  for method, expected in (('rkd', losses.rkd_target(t)), ('pkt', losses.pkt_target(t)),
                           ('sp', losses.sp_target(t)), ('kl', None)):
    got = kd_methods.teacher_target(method, t)
    assert jax.tree.structure(got) == jax.tree.structure(expected), method
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(a, b)


def _protocol_batch(protocol, n=48):
  key = jax.random.key(5)
  if protocol == 'G':
    _, data = decisive_features.sample(key, 4, n, 20, 25, 10)
    return MLP(num_classes=2), 2, data.x_a, data.x_b, data.y
  train, _, _ = kclass.sample(key, 10, 2 * n, 4, 50, 50, 20, 20, train_fraction=0.5)
  return MLP(num_classes=4, hidden=(16, 16)), 4, train.x_a, train.x_b, train.y


@pytest.mark.parametrize('protocol', ['G', 'S'])
def test_every_method_trains_without_nan_and_its_loss_is_the_objective(protocol):
  net, k, x_a, x_b, y = _protocol_batch(protocol)
  init = lambda key: net.init(key, jnp.zeros((1, x_b.shape[-1])))
  teacher_logits = net.apply(init(jax.random.key(0)), x_a) * 3.0
  relation = kd_methods.draw_relation(jax.random.key(3), y.shape[0], relational_batch=32,
                                      rkd_angle_rows=4)
  params = kd_methods.init_students(kd_methods.METHODS, jax.random.key(2),
                                    init(jax.random.key(1)), k, H)
  trained = jax.jit(lambda p: kd_methods.fit_students(
      kd_methods.METHODS, H, net.apply, p, x_b, teacher_logits, y, optax.sgd(0.1), 5,
      relation))(params)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(trained))
  for m in kd_methods.METHODS:  # every student moved away from the shared initialisation
    moved = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), trained[m]['model'],
                         params[m]['model'])
    assert max(map(float, jax.tree.leaves(moved))) > 0, m
  # Each method's training loss is its objective on the views the relation selects, with
  # the teacher side recomputed from the teacher logits (no precomputed target).
  def objective(m, p):
    model = p['model']
    relational = (net.apply(model, x_b[relation.subset]), teacher_logits[relation.subset])
    angle = None
    if m == 'rkd':
      angle = (net.apply(model, x_b[relation.angle_rows]), teacher_logits[relation.angle_rows])
    return kd_methods.objective(m, H, net.apply(model, x_b), teacher_logits, y, p['heads'],
                                relational, angle)

  for m in kd_methods.METHODS:
    loss = kd_methods.method_loss(m, H, net.apply, x_b, teacher_logits, y, relation)
    value, expected = jax.jit(lambda p, m=m, loss=loss: (loss(p), objective(m, p)))(trained[m])
    assert np.isfinite(float(value)), m
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=m)


def test_a_students_training_does_not_depend_on_the_other_methods():
  net, k, x_a, x_b, y = _protocol_batch('G')
  student = net.init(jax.random.key(1), jnp.zeros((1, x_b.shape[-1])))
  teacher_logits = net.apply(net.init(jax.random.key(0), jnp.zeros((1, x_a.shape[-1]))), x_a)
  methods = ('crd', 'dkd_omega')  # heads; a per-step mask
  fit = lambda ms: kd_methods.fit_students(
      ms, H, net.apply, kd_methods.init_students(ms, jax.random.key(2), student, k, H), x_b,
      teacher_logits, y, optax.sgd(0.1), 30)
  fit = jax.jit(fit, static_argnums=0)
  together = fit(methods)
  for m in methods:
    apart = fit((m,))[m]
    for a, b in zip(jax.tree.leaves(together[m]), jax.tree.leaves(apart)):
      np.testing.assert_array_equal(a, b)
