"""CMCD temperature inner axis: validation, selection on the labelled validation split (never
the test pairs) and agreement of the axis with separate runs (docs/protocols.md §C)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax.experiments import cmcd
from xdistill_jax.experiments import cmcd_pipeline as pipeline
from xdistill_jax.sweep import runner


def _small(**overrides):
  config = config_files.load('cmcd_tv')
  config.methods = ('cmd', 'cmc', 'target_only')
  config.n_pretrain = 64
  config.num_pairs = (64,)
  config.m_labelled = (16,)
  config.n_labelled, config.n_validation = 80, 64
  config.n_domain = 64
  config.n_test = 200
  config.width = 16
  config.pretrain_steps = config.distill_steps = config.probe_steps = 40
  config.temperature_grid = (0.5,)
  for name, value in overrides.items():
    config[name] = value
  return config


@pytest.mark.parametrize('field, value', [
    ('temperature_grid', ()),
    ('temperature_grid', (0.1, 0.0)),
    ('temperature_grid', (-0.5,)),
    ('n_validation', 65),  # n_labelled − max(m_labelled) = 64
    ('n_labelled', 16),  # no room for a validation split
])
def test_bad_temperature_or_validation_input_fails_before_compiling(field, value):
  config = config_files.load('cmcd_tv')
  config[field] = value
  with pytest.raises(config_schema.ConfigError, match=f'config.{field}=') as error:
    runner.prepare(config)
  assert 'allowed' in str(error.value) and '\n' not in str(error.value)


def test_profiles_are_the_defaults_then_the_grid():
  config = _small(temperature_grid=(0.05, 1.0))
  t = pipeline.temperature_profiles(config)
  ratio = config.cmd_teacher_temperature / config.cmd_student_temperature
  np.testing.assert_allclose(t.infonce, [config.infonce_temperature, 0.05, 1.0], rtol=1e-6)
  np.testing.assert_allclose(t.cmc, [config.cmc_temperature, 0.05, 1.0], rtol=1e-6)
  np.testing.assert_allclose(t.cmd_student, [config.cmd_student_temperature, 0.05, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(t.cmd_teacher, [config.cmd_teacher_temperature, 0.05 * ratio,
                                             ratio], rtol=1e-6)
  assert list(cmcd.inner_axes(config)['temperature']) == ['default', '0.05', '1']


def _synthetic_table(rng, profiles=3, seeds=4, methods=('cmd', 'l2')):
  rows = [(e, s, p, m) for e in (0.0, 0.3) for s in range(seeds) for p in range(profiles)
          for m in methods]
  e, s, p, m = (np.asarray(c) for c in zip(*rows))
  return {'epsilon': e, 'seed': s, 'profile': p, 'method': m,
          'num_pairs': np.full(len(e), 64), 'm_labelled': np.full(len(e), 16),
          'val_err': rng.integers(0, 5, len(e)) / 64.0, 'target_err': rng.uniform(0, 1, len(e))}


def test_selection_is_the_validation_argmin_and_ignores_test_columns():
  rng = np.random.default_rng(0)
  table = _synthetic_table(rng)
  keys = ('epsilon', 'seed', 'num_pairs', 'm_labelled', 'method')
  chosen = cmcd.selected_on_validation(table, keys)
  # From the definition: per (ε, seed, method) the first profile with the least val_err.
  for e in (0.0, 0.3):
    for s in range(4):
      for m in ('cmd', 'l2'):
        rows = np.flatnonzero((table['epsilon'] == e) & (table['seed'] == s)
                              & (table['method'] == m))
        want = rows[np.argmin(table['val_err'][rows])]
        assert chosen[rows].sum() == 1 and chosen[want], (e, s, m)
  # Corrupting every test column leaves the selection unchanged; the validation one does not.
  corrupted = dict(table, target_err=rng.uniform(0, 1, len(chosen)))
  np.testing.assert_array_equal(cmcd.selected_on_validation(corrupted, keys), chosen)
  shuffled = dict(table, val_err=rng.permutation(table['val_err']))
  assert np.any(cmcd.selected_on_validation(shuffled, keys) != chosen)


@pytest.fixture(scope='module')
def axis_runs():
  """Profile runs of one setting: the small config on its data and on the same data with
  every test label corrupted (one vmapped program), and a separate run whose defaults are
  the small config's grid profile."""
  config = pipeline.class_configs(_small())[0]
  maps = pipeline.make_maps(config)
  key, eps = jax.random.key(7), 0.2
  data = pipeline.draw(config, maps, jax.random.split(key, 4)[0], eps)
  floor = pipeline.bayes_floor(config, eps)
  k = config.num_classes
  bad = data._replace(test=data.test._replace(y=(data.test.y + 1) % k))
  both = jax.tree.map(lambda a, b: jnp.stack([a, b]), data, bad)
  run = jax.jit(jax.vmap(lambda d: pipeline.run_profiles(config, key, d, floor)[0]))
  clean_and_bad = jax.tree.map(np.asarray, run(both))
  grid_tau = config.temperature_grid[0]
  ratio = config.cmd_teacher_temperature / config.cmd_student_temperature
  separate = pipeline.class_configs(_small(
      infonce_temperature=grid_tau, cmc_temperature=grid_tau, cmd_student_temperature=grid_tau,
      cmd_teacher_temperature=grid_tau * ratio, temperature_grid=(0.3,)))[0]
  alone = jax.jit(lambda d: pipeline.run_profiles(separate, key, d, floor)[0])(data)
  return config, clean_and_bad, jax.tree.map(np.asarray, alone)


def test_temperature_selection_never_sees_the_test_pairs(axis_runs):
  config, runs, _ = axis_runs
  clean = jax.tree.map(lambda a: a[0], runs)
  bad = jax.tree.map(lambda a: a[1], runs)
  assert clean['target_err'].shape == (2, 1, 1, len(config.methods))  # [P, M, m, methods]
  # The corruption reached the test errors …
  assert np.all(np.abs(clean['target_err'] - bad['target_err']) > 0.15)
  # … but neither the validation errors nor the selection among profiles moved.
  np.testing.assert_array_equal(clean['val_err'], bad['val_err'])
  np.testing.assert_array_equal(np.argmin(clean['val_err'], 0), np.argmin(bad['val_err'], 0))


def test_temperature_axis_equals_a_separate_run_at_that_temperature(axis_runs):
  config, runs, alone = axis_runs
  in_axis = jax.tree.map(lambda a: a[0, 1], runs)  # clean data, the grid profile
  on_its_own = jax.tree.map(lambda a: a[0], alone)  # its defaults = that profile
  for name in ('infonce_tau', 'cmc_tau', 'cmd_teacher_tau', 'cmd_student_tau'):
    np.testing.assert_allclose(in_axis[name], on_its_own[name], rtol=1e-6)
  for name in ('train_loss', 'source_probe_err', 'val_err', 'target_err', 'domain_acc'):
    np.testing.assert_allclose(in_axis[name], on_its_own[name], rtol=1e-4, atol=1e-5,
                               err_msg=name)
  # and the default profile of the first run differs from it (the axis is not a no-op).
  assert not np.allclose(runs['train_loss'][0, 0], in_axis['train_loss'])
