"""configs/digits_m.py: Digits → Digits-M with a traced gap α."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from xdistill_jax import config_files
from xdistill_jax import datasets
from xdistill_jax import experiments
from xdistill_jax.config_schema import ConfigError
from xdistill_jax.experiments import digits_m
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner


def _tiny(**overrides):
  config = config_files.load('digits_m')
  config.update(dict(alphas=(0.0, 1.0), runs=2, epochs=3, n_train=256, hidden=(8,),
                     methods=('kl', 'dkd_omega')))
  config.sweep.progress = False
  config.update(overrides)
  return config


def test_student_images_follow_the_rule():
  config = _tiny()
  digits, labels, crops = digits_m.sweep_images(config)
  assert digits.shape == (1797, 8, 8) and crops.shape == (1797, 8, 8, 3)
  grey = np.repeat(digits[..., None], 3, -1).reshape(1797, -1)
  draw = np.random.default_rng(0).normal(size=grey.shape).astype(np.float32)
  at = lambda a, s: np.asarray(digits_m.student_images(digits, crops, a, s, draw, 0.5))
  np.testing.assert_array_equal(at(0.0, 0.0), grey)
  mnist_m = np.abs(crops.astype(np.float64) - (digits > 0.5)[..., None]).reshape(1797, -1)
  np.testing.assert_allclose(at(1.0, 0.0), mnist_m, atol=1e-6)
  np.testing.assert_allclose(at(0.4, 0.3), 0.6 * grey + 0.4 * mnist_m + 0.3 * draw, atol=1e-5)
  # Every crop is a window of one of the two photographs (checked on a few, in NumPy).
  photos = datasets.bundled_backgrounds()
  for i in (0, 17, 1796):
    windows = np.lib.stride_tricks.sliding_window_view(photos, (8, 8), axis=(1, 2))
    match = np.all(windows == crops[i].transpose(2, 0, 1)[None, None, None], axis=(3, 4, 5))
    assert match.any()
  # The crops are the sweep's: another seed draws others.
  other = digits_m.sweep_images(_tiny(seed=1))[2]
  assert not np.array_equal(other, crops)


def test_minibatch_fit_matches_numpy_sgd_with_momentum():
  rng = np.random.default_rng(0)
  n, d, batch, epochs, lr, mu = 10, 3, 4, 3, 0.05, 0.9
  x, target = rng.normal(size=(n, d)), rng.normal(size=n)
  loss = lambda w, rows: jnp.mean((jnp.asarray(x)[rows] @ w - jnp.asarray(target)[rows]) ** 2)
  key = jax.random.key(4)
  got = digits_m.minibatch_fit(loss, jnp.zeros(d), optax.sgd(lr, momentum=mu), key, n, batch,
                               epochs)
  w, trace = np.zeros(d), np.zeros(d)
  for k in jax.random.split(key, epochs):
    order = np.asarray(jax.random.permutation(k, n))
    for b in range(n // batch):  # the last partial batch (2 rows) is dropped
      rows = order[b * batch:(b + 1) * batch]
      grad = 2 * x[rows].T @ (x[rows] @ w - target[rows]) / batch
      trace = grad + mu * trace
      w = w - lr * trace
  np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_spearman_interval_against_scipy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=30)
  y = -x + rng.normal(size=30)
  y[3] = np.nan
  out = tables.spearman_interval(x, y, resamples=300, seed=5)
  keep = np.isfinite(y)
  xs, ys = x[keep], y[keep]
  assert out['n'] == 29
  np.testing.assert_allclose(out['rho'], scipy.stats.spearmanr(xs, ys).statistic, rtol=1e-12)
  index = np.random.default_rng(5).integers(0, 29, (300, 29))
  boot = [scipy.stats.spearmanr(xs[i], ys[i]).statistic for i in index]
  np.testing.assert_allclose([out['low'], out['high']], np.percentile(boot, [2.5, 97.5]),
                             rtol=1e-10)
  assert out['low'] < out['rho'] < out['high'] < 0
  assert np.isnan(tables.spearman_interval([1, 2], [3, 4])['low'])


def test_sweep_end_to_end(tmp_path):
  config = _tiny()
  runner.run(config, tmp_path)
  table = tables.read_csv(tmp_path / 'results.csv')
  assert len(table['delta']) == 2 * 2 * 2 and not table['diverged'].any()
  np.testing.assert_allclose(table['delta'], 100 * (table['kd_acc'] - table['baseline_acc']),
                             atol=1e-4)
  # Only the seed fixes the key: the teacher (grey digits) is the same at every α.
  for seed in (0, 1):
    rows = table['seed'] == seed
    assert len(set(np.round(table['teacher_acc'][rows], 6))) == 1
  # At α = 0 the student sees the digit itself: the student modality differs across α.
  kl = table['method'] == 'kl'
  assert not np.allclose(table['baseline_acc'][kl & (table['alpha'] == 0)],
                         table['baseline_acc'][kl & (table['alpha'] == 1)])
  assert set(table['n_test']) == {1797 - 256}
  corr = json.loads((tmp_path / 'correlation.json').read_text())
  assert set(corr) >= {'kl', 'dkd_omega', 'pooled'} and corr['pooled']['n'] == 8
  md = (tmp_path / 'digits_m.md').read_text()
  assert '| 0.00 | 0.00 |' in md and '| 1.00 | 0.00 |' in md and 'bootstrap 95 %' in md
  for name in ('digits_m.png', 'digits_m_examples.png', 'digits_m_bounds_kl.png'):
    assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize('field, value, message', [
    ('alphas', (0.0, 1.5), r'config.alphas=\[0.0, 1.5\] is invalid'),
    ('batch_size', 300, 'config.batch_size=300 is invalid'),
    ('methods', ('kl', 'crd'), 'config.methods'),
    ('noises', (-1.0,), 'config.noises'),
])
def test_config_errors(field, value, message):
  with pytest.raises(ConfigError, match=message):
    experiments.get('digits_m').check(_tiny(**{field: value}))
