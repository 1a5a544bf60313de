"""CMCD shift family (alignable gap vs broken correspondence) and the class-count axis:
closed forms against Monte Carlo, bad input, tiny end-to-end sweeps (docs/protocols.md §C)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax.experiments import cmcd
from xdistill_jax.experiments import cmcd_pipeline as pipeline
from xdistill_jax.experiments import cmcd_shift
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner

N = 40_000


def _within(estimate, exact, se, k=3.0):
  assert abs(estimate - exact) <= k * max(se, 1e-12), (estimate, exact, se)


def _numpy_tv(norm, sigma):
  return 2 * stats.norm.cdf(norm / (2 * sigma)) - 1


def _numpy_mixture_floor(s, sigma, k):
  """1 − ∫ φ(g) Φ(s/σ + g)^(K−1) dg by adaptive quadrature (independent of Gauss–Hermite)."""
  f = lambda g: stats.norm.pdf(g) * stats.norm.cdf(s / sigma + g) ** (k - 1)
  return 1.0 - integrate.quad(f, -12, 12)[0]


@pytest.fixture(scope='module')
def shift_setup():
  config = config_files.load('cmcd_shift')
  k_config = pipeline.class_configs(config)[0]
  return config, k_config, pipeline.make_maps(k_config)


@pytest.mark.parametrize('family', ['shift', 'broken'])
@pytest.mark.parametrize('norm', [0.5, 1.5])
def test_shift_family_tv_and_floor_against_monte_carlo(shift_setup, family, norm):
  """Both families at ‖δ‖: TV((z_A, y), (z_B, y)) = E_P[(1 − q/p)_+] by Monte Carlo on the
  drawn latents equals the closed form 2Φ(‖δ‖/(2σ)) − 1 (q/p = (1 − ε̂)·N(z + δ̂)/N(z) on the
  unflagged part, Q's flagged part having no P mass); the Bayes rule (nearest mean after
  undoing δ̂, a fixed guess when flagged) errs at the reported floor."""
  config, k_config, maps = shift_setup
  sigma, k = config.latent_sigma, k_config.num_classes
  epsilon, shift, tv = cmcd_shift.gaps(config, config.families.index(family), norm)
  np.testing.assert_allclose(float(tv), _numpy_tv(norm, sigma), rtol=1e-5)
  lat = pipeline.sample_latents(k_config, maps, jax.random.key(3), N, epsilon, shift)
  z_a, z_b, y, broken = (np.asarray(a, np.float64) for a in lat)
  broken = broken.astype(bool)
  assert np.all(z_b[broken, -1] == 1) and np.all(z_b[~broken, -1] == 0)
  delta = (z_b - z_a)[~broken, :-1].mean(0)
  eps_hat = broken.mean()
  if family == 'shift':
    assert eps_hat == 0 and np.linalg.norm(delta) == pytest.approx(norm, rel=1e-5)
  else:
    assert np.linalg.norm(delta) < 1e-6
    _within(eps_hat, float(tv), np.sqrt(float(tv) * (1 - float(tv)) / N))
  centred = z_a[:, :-1] - np.asarray(maps.means, np.float64)[y.astype(int)]
  log_ratio = (2 * centred @ delta - delta @ delta) / (2 * sigma ** 2)
  values = np.maximum(0.0, 1.0 - (1 - eps_hat) * np.exp(log_ratio))
  se = values.std(ddof=1) / np.sqrt(N) + np.sqrt(eps_hat * (1 - eps_hat) / N)  # and ε̂'s
  _within(values.mean(), _numpy_tv(norm, sigma), se)
  # The floor: (1 − ε)·(mixture floor) + ε(1 − 1/K), from scipy quadrature.
  floor = float(pipeline.bayes_floor(k_config, epsilon, gaussian=True))
  want = ((1 - float(epsilon)) * _numpy_mixture_floor(config.class_separation, sigma, k)
          + float(epsilon) * (1 - 1 / k))
  np.testing.assert_allclose(floor, want, atol=1e-5)
  z = z_b[:, :-1] - delta
  nearest = np.argmin(((z[:, None] - np.asarray(maps.means)[None]) ** 2).sum(-1), -1)
  err = np.mean(np.where(broken, 0, nearest) != y)
  _within(err, floor, np.sqrt(floor * (1 - floor) / N))


@pytest.mark.parametrize('name, field, value', [
    ('cmcd_shift', 'families', ('shift', 'rotation')),
    ('cmcd_shift', 'shift_norms', (0.0, -1.0)),
    ('cmcd_shift', 'shift_norms', ()),
    ('cmcd_shift', 'latent_sigma', 0.0),
    ('cmcd_shift', 'num_classes', (8, 16)),  # K > latent_dim = 8
    ('cmcd_shift', 'temperature_grid', ()),
    ('cmcd_kclass', 'num_classes', (2, 8, 33)),  # K > latent_dim = 32
    ('cmcd_kclass', 'num_classes', (2, 2)),
    ('cmcd_kclass', 'n_validation', 65),  # n_labelled − max(m_labelled) = 64
])
def test_bad_shift_or_class_input_fails_before_compiling(name, field, value):
  config = config_files.load(name)
  config[field] = value
  with pytest.raises(config_schema.ConfigError, match=f'config.{field}=') as error:
    runner.prepare(config)
  assert 'allowed' in str(error.value) and '\n' not in str(error.value)
  if field == 'num_classes':
    assert 'latent_dim' in str(error.value)


def test_the_shift_config_has_no_exact_tv_fields():
  config = config_files.load('cmcd_shift')
  for field in ('epsilons', 'latent_radius'):
    config[field] = 0.5  # a field of the other experiment: refused with its name
    with pytest.raises(config_schema.ConfigError, match=f'config.{field}'):
      runner.prepare(config)
    del config[field]


def _tiny(name, **overrides):
  config = config_files.load(name)
  config.runs = 2
  config.methods = ('l2', 'target_only')
  config.n_pretrain = 64
  config.num_pairs = (64,)
  config.m_labelled = (16,)
  config.n_labelled, config.n_validation = 48, 32
  config.n_domain = 64
  config.n_test = 300
  config.width = 16
  config.pretrain_steps = config.distill_steps = config.probe_steps = 60
  config.temperature_grid = (0.5,)
  config.sweep.progress = False
  config.sweep.vmap_width = 0
  for field, value in overrides.items():
    config[field] = value
  return config


@pytest.fixture(scope='module')
def shift_sweep(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cmcd_shift')
  config = _tiny('cmcd_shift', shift_norms=(0.0, 2.0), distill_steps=150)
  report = runner.run(config, workdir)
  return config, workdir, report, tables.read_csv(workdir / 'results.csv')


def test_tiny_shift_sweep_columns_files_and_the_contrast(shift_sweep):
  config, workdir, report, t = shift_sweep
  rows = 2 * 2 * config.runs * 2 * len(config.methods)  # families × ‖δ‖ × seeds × profiles
  assert len(t['index']) == rows and report['diverged'] == 0
  assert 'epsilon' not in t and 'c5_lower' not in t  # C5 is the exact-TV generator's floor
  np.testing.assert_allclose(t['tv'], _numpy_tv(t['shift_norm'], config.latent_sigma),
                             rtol=1e-5, atol=1e-7)
  base = _numpy_mixture_floor(config.class_separation, config.latent_sigma, 8)
  eps = np.where(t['family'] == 'broken', t['tv'], 0.0)
  np.testing.assert_allclose(t['bayes_floor'], (1 - eps) * base + eps * (1 - 1 / 8), atol=1e-5)
  # Observed broken fraction: 0 for the shift; near ε for the broken correspondence.
  assert np.all(t['broken_fraction'][t['family'] == 'shift'] == 0)
  far = (t['family'] == 'broken') & (t['shift_norm'] == 2.0)
  assert np.all(np.abs(t['broken_fraction'][far] - t['tv'][far]) < 0.05)
  assert np.sum(t['temperature_selected']) == rows // 2
  # The contrast: at TV 0.95 the shift leaves the L2 student's error near its zero-gap value,
  # while the broken correspondence drives every method to its floor (≈ 0.83).
  at = lambda family, norm, method: t['target_err'][
      (t['family'] == family) & (t['shift_norm'] == norm) & (t['method'] == method)]
  assert np.mean(at('shift', 2.0, 'l2')) < np.mean(at('shift', 0.0, 'l2')) + 0.15
  for method in config.methods:
    assert np.mean(at('broken', 2.0, method)) > np.mean(at('shift', 2.0, method)) + 0.3
  for name in ('cmcd_table.md', 'cmcd_table.csv', 'cmcd_shift_error_vs_tv.png',
               'cmcd_shift_tv_estimate.png'):
    assert (workdir / name).stat().st_size > 0
  text = (workdir / 'cmcd_table.md').read_text()
  assert 'gap = broken' in text and 'gap = shift' in text and '(TV 0.95)' in text


@pytest.mark.slow  # about 70 CPU-seconds (two copies of the pipeline, then one more)
def test_tiny_class_sweep_rows_table_figure_and_separate_runs(tmp_path):
  """The `num_classes` axis end to end; its K = 4 rows are the numbers of a run at K = 4 alone
  (same setting key: fold_in(key(config.seed), seed))."""
  config = _tiny('cmcd_kclass', epsilons=(0.3,), num_classes=(2, 4), latent_dim=4,
                 obs_dim_a=6, obs_dim_b=5, methods=('cmc',), width=16, feature_dim=8,
                 proj_dim=8, n_test=200, pretrain_steps=30, distill_steps=30, probe_steps=30)
  report = runner.run(config, tmp_path)
  t = tables.read_csv(tmp_path / 'results.csv')
  assert len(t['index']) == config.runs * 2 * 2 and report['diverged'] == 0
  np.testing.assert_array_equal(np.unique(t['num_classes']), [2, 4])
  np.testing.assert_allclose(t['c5_lower'], 0.3 * (1 - 1 / t['num_classes']), rtol=1e-6)
  np.testing.assert_allclose(t['bayes_floor'], 0.3 * (1 - 1 / t['num_classes']), rtol=1e-6)
  # A run at K = 4 alone, seed 0, reproduces the sweep's K = 4 rows (both profiles).
  k4 = pipeline.class_configs(config)[1]
  classes = [(k4, pipeline.make_maps(k4))]
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  alone = jax.tree.map(np.asarray, jax.jit(
      lambda e: pipeline.run_classes(classes, key, e)[0])(jnp.float32(0.3)))
  rows = (t['num_classes'] == 4) & (t['seed'] == 0)
  np.testing.assert_allclose(t['train_loss'][rows], alone['train_loss'].ravel(), rtol=1e-4)
  np.testing.assert_allclose(t['target_err'][rows], alone['target_err'].ravel(),
                             atol=2.5 / config.n_test)  # at most two flipped test predictions
  assert not np.allclose(t['train_loss'][rows], t['train_loss'][(t['num_classes'] == 2)
                                                                & (t['seed'] == 0)])
  # One selected profile per (seed, K, method); the table has a block per K.
  assert np.sum(t['temperature_selected']) == config.runs * 2
  table = tables.read_csv(tmp_path / 'cmcd_table.csv')
  for k in (2, 4):
    row = table['num_classes'] == k
    chosen = (t['num_classes'] == k) & (t['temperature_selected'] == 1)
    np.testing.assert_allclose(table['tuned_mean'][row], np.mean(t['target_err'][chosen]),
                               rtol=1e-6)
  text = (tmp_path / 'cmcd_table.md').read_text()
  assert 'K = 2' in text and 'K = 4' in text
  assert (tmp_path / 'cmcd_error_vs_classes.png').stat().st_size > 0
  assert cmcd.inner_axes(config)['num_classes'].tolist() == [2, 4]


def test_shift_setting_fn_with_params_traces_to_the_same_metrics():
  config = config_files.load('cmcd_shift')
  experiment, grid = runner.prepare(config)
  setting = {k: jnp.asarray(v[-1]) for k, v in grid.traced_settings(np.array([0])).items()}
  key = jax.random.key(0)
  plain = jax.eval_shape(experiment.make_setting_fn(config), key, setting)  # traced only
  metrics, params = jax.eval_shape(experiment.make_setting_fn(config, with_params=True), key,
                                   setting)
  shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)
  assert shapes(metrics) == shapes(plain)
  profiles = 1 + len(config.temperature_grid)
  assert plain['tv'].shape == (1, profiles, 1, 1, len(config.methods))  # [K, P, M, m, methods]
  assert list(params) == ['K8'] and jax.tree.leaves(params)
