"""Digits overlap: the bands each modality sees, the fill, config validation, a tiny sweep."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xdistill_jax import config_files
from xdistill_jax.config_schema import ConfigError
from xdistill_jax.experiments import digits_overlap
from xdistill_jax.generators import digits_bands
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner

W = 4


def _coded_images(n=60):
  """Images whose pixel (r, c) of image i holds 1 + 100·i + 8r + c: every value says its source."""
  values = 1.0 + 100.0 * np.arange(n)[:, None] + np.arange(64)[None, :]
  return values.reshape(n, 8, 8).astype(np.float32), (np.arange(n) % 10).astype(np.int32)


def _columns(x):
  """[n, 64] → [n, 8 rows, 8 columns]."""
  return np.asarray(x).reshape(len(x), 8, 8)


@pytest.mark.parametrize('overlap', [0, 1, 2, 3, 4])
def test_bands_are_exactly_the_configured_columns(overlap):
  images, labels = _coded_images()
  train, test = digits_bands.sample(jax.random.key(overlap), jnp.int32(overlap), W, 40, 20,
                                    fill='zero', data=(images, labels))
  teacher_cols = set(range(W - overlap, 2 * W - overlap))
  student_cols = set(range(W))
  assert len(teacher_cols & student_cols) == overlap
  for part, n in ((train, 40), (test, 20)):
    x_a, x_b = _columns(part.x_a), _columns(part.x_b)
    assert x_a.shape == x_b.shape == (n, 8, 8)
    visible_a = {c for c in range(8) if np.all(x_a[:, :, c] != 0)}
    visible_b = {c for c in range(8) if np.all(x_b[:, :, c] != 0)}
    assert visible_a == teacher_cols and visible_b == student_cols
    assert np.all(x_a[:, :, sorted(set(range(8)) - teacher_cols)] == 0)
    assert np.all(x_b[:, :, sorted(set(range(8)) - student_cols)] == 0)
    for c in teacher_cols & student_cols:  # shared columns are identical in both modalities
      np.testing.assert_array_equal(x_a[:, :, c], x_b[:, :, c])
    # Visible pixels are the image's own pixels, and the label is the image's label.
    index = (x_b[:, 0, 0].astype(np.int64) - 1) // 100
    np.testing.assert_array_equal(x_a[:, :, sorted(teacher_cols)],
                                  images[index][:, :, sorted(teacher_cols)])
    np.testing.assert_array_equal(np.asarray(part.y), labels[index])


def test_teacher_columns_formula_and_one_program_for_every_overlap():
  traces = []

  @jax.jit
  def masks(o):
    traces.append(1)
    return digits_bands.teacher_columns(o, W)

  for o in range(W + 1):
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(masks(jnp.int32(o)))),
                                  np.arange(W - o, 2 * W - o))
  assert len(traces) == 1
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(digits_bands.student_columns(W))),
                                np.arange(W))


def test_noise_fill_uses_the_same_pixel_of_other_images():
  images, labels = _coded_images()
  train, _ = digits_bands.sample(jax.random.key(0), jnp.int32(1), W, 50, 10, fill='noise',
                                 data=(images, labels))
  x_a, x_b = np.asarray(train.x_a), np.asarray(train.x_b)
  own = (x_b[:, 0].astype(np.int64) - 1) // 100  # pixel (0, 0) is visible to the student
  code = x_a.astype(np.int64) - 1
  pixel = np.broadcast_to(np.arange(64), code.shape)
  np.testing.assert_array_equal(code % 100, pixel)  # every entry is pixel j of some image
  hidden_a = ~np.asarray(digits_bands.modality_pixels(digits_bands.teacher_columns(1, W)))
  donors = code // 100
  assert np.mean(donors[:, hidden_a] != own[:, None]) > 0.9  # noise comes from other images
  np.testing.assert_array_equal(donors[:, ~hidden_a], np.broadcast_to(own[:, None],
                                                                      donors[:, ~hidden_a].shape))
  # The two modalities draw their noise independently.
  hidden_b = ~np.asarray(digits_bands.modality_pixels(digits_bands.student_columns(W)))
  both = hidden_a & hidden_b
  assert np.mean(x_a[:, both] != x_b[:, both]) > 0.9


def test_real_digits_and_split():
  images, labels = digits_bands.load()
  assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
  assert images.min() == 0.0 and images.max() == 1.0
  assert set(labels.tolist()) == set(range(10))
  train, test = digits_bands.split(jax.random.key(0), 200, 1597)
  assert not set(np.asarray(train).tolist()) & set(np.asarray(test).tolist())
  assert len(set(np.asarray(train).tolist()) | set(np.asarray(test).tolist())) == 1797


@pytest.mark.parametrize('field, value, message', [
    ('fill', 'blur', 'config.fill'),
    ('overlaps', (0, 5), 'config.overlaps'),
    ('band_width', 9, 'config.band_width'),
    ('methods', ('kl', 'crd'), 'config.methods'),
    ('n_test', 1700, 'config.n_test'),
    ('hidden', (0,), 'config.hidden'),
    ('mask_threshold', 2.0, 'config.mask_threshold'),
])
def test_invalid_config_field_is_named(field, value, message):
  config = config_files.load('digits_overlap')
  config[field] = value
  with pytest.raises(ConfigError, match=message.replace('.', r'\.')):
    runner.prepare(config)


def test_misspelt_field_is_named():
  config = config_files.load('digits_overlap')
  config.unlock()
  config.bandwidth = 3
  with pytest.raises(ConfigError, match=r'config\.bandwidth.*config\.band_width'):
    runner.prepare(config)


def test_spearman_against_scipy():
  """`tables.spearman` (the one Spearman of the package) against `scipy.stats.spearmanr`,
  with ties and non-finite pairs dropped; its permutation p-value against SciPy's."""
  rng = np.random.default_rng(0)
  x = np.round(rng.normal(size=60), 1)  # ties
  y = x + rng.normal(size=60)
  x[3], y[7] = np.nan, np.inf
  keep = np.isfinite(x) & np.isfinite(y)
  reference = stats.spearmanr(x[keep], y[keep])
  got = tables.spearman(x, y, permutations=4000)
  assert got['n'] == keep.sum()
  assert got['rho'] == pytest.approx(reference.statistic, rel=1e-12)
  assert got['p_value'] == pytest.approx(max(reference.pvalue, 1 / 4001), abs=2e-3)
  noise = rng.normal(size=60)
  weak = tables.spearman(x, noise, permutations=4000)
  assert weak['p_value'] == pytest.approx(stats.spearmanr(x[keep], noise[keep]).pvalue,
                                          abs=0.03)
  assert np.isnan(tables.spearman(x, y, permutations=0)['p_value'])
  assert tables.spearman(np.arange(10.0), -np.arange(10.0) ** 3)['rho'] == pytest.approx(-1.0)
  assert np.isnan(tables.spearman(np.arange(10.0), np.ones(10))['rho'])
  assert np.isnan(tables.spearman([1.0, 2.0], [3.0, 4.0])['rho'])
  assert tables._ranks(np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [1.0, 2.5, 2.5, 4.0]


def test_binned_means():
  """Quantile bins of x (ties kept together, non-finite pairs dropped), against a loop."""
  rng = np.random.default_rng(1)
  x = np.concatenate([np.round(rng.uniform(size=50), 1), [np.nan]])
  y = np.concatenate([rng.normal(size=50), [1.0]])
  xs, ys = tables.binned_means(x, y, bins=4)
  edges = np.unique(np.quantile(x[:50], [0, 0.25, 0.5, 0.75, 1.0]))
  want_x, want_y = [], []
  for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
    last = i == len(edges) - 2
    sel = (x[:50] >= lo) & ((x[:50] <= hi) if last else (x[:50] < hi))
    if sel.any():
      want_x.append(x[:50][sel].mean())
      want_y.append(y[:50][sel].mean())
  np.testing.assert_allclose(xs, want_x, rtol=1e-12)
  np.testing.assert_allclose(ys, want_y, rtol=1e-12)
  assert [a.size for a in tables.binned_means([np.nan], [1.0])] == [0, 0]


def test_tiny_sweep_writes_a_row_per_method(tmp_path):
  config = config_files.load('digits_overlap')
  config.overlaps = (0, 4)
  config.runs = 2
  config.steps = 15
  config.n_train = 60
  config.n_test = 100
  config.sweep.progress = False
  report = runner.run(config, tmp_path)
  results = tables.read_csv(tmp_path / 'results.csv')
  methods = list(digits_overlap.METHODS)
  assert len(results['method']) == 2 * 2 * len(methods)
  for m in methods:
    assert np.sum(results['method'] == m) == 4
  for column in ('teacher_acc', 'baseline_acc', 'kd_acc', 'delta', 'kd_err', 'nckd_test',
                 'tckd_test', 'kl_test', 'nckd_baseline_test', 'confidence_delta',
                 'omega_dropped_train', 'kd_margin_risk'):
    assert np.all(np.isfinite(results[column])), column
  np.testing.assert_allclose(results['delta'],
                             100 * (results['kd_acc'] - results['baseline_acc']))
  # Methods share the teacher and the baseline of their setting.
  for i in np.unique(results['index']):
    rows = results['index'] == i
    assert len(np.unique(results['teacher_acc'][rows])) == 1
  assert not np.any(results['diverged'])
  for name in ('n1_lower', 'n1_upper', 'n2_upper', 'n2_pinsker_upper'):
    assert report['bounds'][name]['violations'] == 0, name
  corr = json.loads((tmp_path / 'correlation.json').read_text())
  assert set(corr['per_setting']) == {'pooled', *methods}
  for name in ('digits_overlap.png', 'digits_overlap_delta_vs_nckd.png', 'summary.csv'):
    assert (tmp_path / name).stat().st_size > 0
