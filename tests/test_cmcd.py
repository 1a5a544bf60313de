"""CMCD experiment: config validation, pipeline stages and a tiny end-to-end sweep."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax import training
from xdistill_jax.experiments import cmcd_pipeline as pipeline
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner

BOUND_COLUMNS = ('epsilon', 'num_classes', 'source_err', 'target_err', 'pair_disagreement',
                 'clean_disagreement', 'probe_margin_risk', 'm_labelled', 'margin_rho',
                 'rademacher', 'confidence_delta', 'tv_estimate', 'bayes_floor',
                 'broken_fraction', 'n_test', 'probe_margin_norm', 'probe_input_frobenius_norm')


def _tiny(**overrides):
  config = config_files.load('cmcd_tv')
  config.epsilons = (0.0, 0.5)
  config.runs = 2
  config.methods = ('cmd', 'l2', 'target_only')
  config.n_pretrain = 128
  config.num_pairs = (128,)
  config.m_labelled = (32,)
  config.n_domain = 128
  config.n_test = 500
  config.pretrain_steps = config.distill_steps = config.probe_steps = 200
  config.temperature_grid = (0.5,)
  config.n_labelled, config.n_validation = 96, 64
  config.sweep.progress = False
  config.sweep.vmap_width = 0
  for name, value in overrides.items():
    config[name] = value
  return config


@pytest.mark.parametrize('field, value', [
    ('epsilons', (0.1, 1.5)),
    ('methods', ('cmd', 'kd')),
    ('num_pairs', (1,)),
    ('num_classes', (2, 9)),  # K > latent_dim
    ('num_classes', ()),
    ('class_separation', 1.2),  # supports would overlap (needs > √2·r)
    ('obs_dim_b', 8),  # not injective on the 9-dimensional latent
    ('cmc_temperature', 0.0),
    ('pretrain_steps', 0),
    ('domain_width', -1),
])
def test_invalid_field_fails_before_compiling_and_names_it(field, value):
  config = config_files.load('cmcd_tv')
  config[field] = value
  with pytest.raises(config_schema.ConfigError, match=f'config.{field}=') as error:
    runner.prepare(config)
  assert 'allowed' in str(error.value)
  if field == 'methods':
    assert "'cmc_b2a'" in str(error.value)  # the allowed values are listed


def test_misspelt_field_fails_with_a_suggestion():
  config = config_files.load('cmcd_tv')
  config.num_pair = (64,)
  with pytest.raises(config_schema.ConfigError, match='config.num_pairs'):
    runner.prepare(config)


def _probe_error(config, tower, data, m=16, steps=200):
  """Test error of a linear probe on φ(x_A) of the first m labelled source examples."""
  probe = pipeline.linear(config.num_classes)
  x = pipeline.features(config, tower, data.labelled.x_a[:m])
  y = data.labelled.y[:m]
  params = pipeline.init_params(probe, jax.random.key(3), x[:1])
  params, _ = training.fit(lambda p: training.cross_entropy(probe.apply(p, x), y), params,
                           pipeline.optimizer(config.probe_learning_rate), steps)
  test = pipeline.features(config, tower, data.test.x_a)
  return training.weighted_mean(
      (jnp.argmax(probe.apply(params, test), -1) != data.test.y).astype(jnp.float32))


def test_infonce_pretraining_beats_a_random_encoder_on_the_source_probe():
  config = pipeline.class_configs(_tiny(m_labelled=(16,), n_pretrain=256,
                                        pretrain_steps=300))[0]
  maps = pipeline.make_maps(config)

  @jax.jit
  def errors(key):
    k_data, k_init = jax.random.split(key)
    data = pipeline.draw(config, maps, k_data, 0.0)
    random_tower = pipeline.tower_init(config, k_init, data.source_views[0])
    trained = pipeline.pretrain_source(config, k_init, data.source_views)  # same init
    return _probe_error(config, random_tower, data), _probe_error(config, trained, data)

  random_err, trained_err = np.asarray(jax.vmap(errors)(jax.random.split(jax.random.key(0), 4)))
  assert np.all(trained_err < random_err), (random_err, trained_err)
  assert np.mean(trained_err) < np.mean(random_err) - 0.05, (random_err, trained_err)


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cmcd')
  config = _tiny()
  report = runner.run(config, workdir)
  return config, workdir, report, tables.read_csv(workdir / 'results.csv')


def test_tiny_sweep_writes_method_rows_bound_columns_and_figures(tiny_sweep):
  config, workdir, report, table = tiny_sweep
  profiles = 1 + len(config.temperature_grid)
  rows = len(config.epsilons) * config.runs * len(config.methods) * profiles
  assert len(table['index']) == rows and report['diverged'] == 0
  assert sorted(set(table['method'])) == sorted(config.methods)
  for column in BOUND_COLUMNS + ('c3_upper', 'c3_split_upper', 'c5_lower', 'c4_probe_upper',
                                 't1_upper_target', 't1_lower_target'):
    assert column in table, column
  assert 'c4_upper' not in table  # C3 + C4 mixed a test-set and a training-sample bound
  np.testing.assert_allclose(table['confidence_delta'], config.delta, rtol=1e-6)
  np.testing.assert_allclose(table['bayes_floor'], table['epsilon'] * (1 - 1 / 8), atol=1e-6)
  # C3 quantities only where g∘φ_A means something (distillation); C4 not for target-only.
  baseline = table['method'] == 'target_only'
  assert np.all(np.isnan(table['source_err'][baseline]))
  assert np.all(np.isfinite(table['source_err'][~baseline]))
  assert np.all(np.isnan(table['rademacher'][baseline]))
  summary = json.loads((workdir / 'bounds.json').read_text())['bounds']
  assert summary['c3_upper']['violations'] == 0 and summary['c3_upper']['n'] == 8 * profiles
  # C3-split with the observed broken fraction is deterministic: 0 violations.
  assert summary['c3_split_upper']['kind'] == 'deterministic'
  assert (summary['c3_split_upper']['violations'] == 0
          and summary['c3_split_upper']['n'] == 8 * profiles)
  # C4 at K = 8: c_K = 4K, Λ rounded up to 2^j with δ/(j(j + 1)) (numpy, from the formula).
  probed = ~baseline
  lam = table['probe_margin_norm'][probed]
  j = np.maximum(np.ceil(np.log2(lam)), 1)
  j += 2.0**j < lam
  m = table['m_labelled'][probed]
  c4 = (table['probe_margin_risk'][probed] + 32 * 2.0**j / config.margin_rho
        * table['probe_input_frobenius_norm'][probed] / m
        + 3 * np.sqrt(np.log(2 / (config.delta / (j * (j + 1)))) / (2 * m)))
  np.testing.assert_allclose(table['c4_probe_upper'][probed], c4, rtol=1e-5)
  assert summary['c4_probe_upper']['kind'] == 'probabilistic'
  assert summary['t1_upper_target']['violations'] is None  # test-set: not judged
  assert np.all(table['t1_lower_target'] <= table['target_err'])
  assert np.all(table['target_err'] <= table['t1_upper_target'])
  assert np.all(table['target_err'] <= table['source_err'] + table['pair_disagreement'] + 1e-6,
                where=~baseline)
  # Certified measurements (test-set kind): below / above their point estimates.
  assert summary['tv_domain_lower']['kind'] == 'test-set'
  distilled = ~baseline
  assert np.all(np.isnan(table['tv_domain_lower'][baseline]))
  np.testing.assert_allclose(table['n_domain_heldout'][distilled], config.n_test)
  assert np.all(table['tv_domain_lower'][distilled]
                <= np.maximum(0.0, table['tv_estimate_heldout'][distilled]) + 1e-6)
  assert np.all(table['c3_certified_upper'][distilled]
                >= np.minimum(1.0, table['c3_upper'][distilled]) - 1e-6)
  for name in ('cmcd_error_vs_epsilon.png', 'cmcd_tv_estimate.png', 'cmcd_bounds_l2.png'):
    assert (workdir / name).stat().st_size > 0
  summary_csv = tables.read_csv(workdir / 'summary.csv')
  assert len(summary_csv['method']) == len(config.epsilons) * len(config.methods) * profiles
  # cmcd_table: one row per (method, ε); one selected profile per seed and method.
  method_table = tables.read_csv(workdir / 'cmcd_table.csv')
  assert len(method_table['method']) == len(config.epsilons) * len(config.methods)
  np.testing.assert_array_equal(method_table['n_seeds'], config.runs)
  assert np.sum(table['temperature_selected']) == rows // profiles
  for eps in config.epsilons:  # at the defaults: the mean of the seeds' default rows
    for method in config.methods:
      at = ((table['epsilon'] == eps) & (table['method'] == method)
            & (table['temperature'] == 'default'))
      row = (method_table['epsilon'] == eps) & (method_table['method'] == method)
      np.testing.assert_allclose(method_table['default_mean'][row],
                                 np.mean(table['target_err'][at]), rtol=1e-6)
      chosen = (table['epsilon'] == eps) & (table['method'] == method) & (
          table['temperature_selected'] == 1)
      np.testing.assert_allclose(method_table['tuned_mean'][row],
                                 np.mean(table['target_err'][chosen]), rtol=1e-6)
  assert (workdir / 'cmcd_table.md').read_text().count('**') >= 2 * 2 * len(config.epsilons)


def test_zero_gap_distillation_brings_target_error_to_the_source_error(tiny_sweep):
  _, _, _, table = tiny_sweep
  at = lambda method: (table['epsilon'] == 0) & (table['method'] == method)
  l2 = at('l2')
  # The L2 student aligns φ_B with φ_A, so the same head errs alike on both modalities.
  assert np.all(np.abs(table['target_err'][l2] - table['source_err'][l2]) < 0.06)
  assert np.all(table['clean_disagreement'][l2] < 0.08)
  # Every distilled probe is about as good as a probe on the source encoder itself.
  for method in ('l2', 'cmd'):
    rows = at(method)
    assert np.mean(table['target_err'][rows] - table['source_probe_err'][rows]) < 0.06, method


def test_errors_respect_the_bayes_floor_within_their_binomial_interval(tiny_sweep):
  _, _, _, table = tiny_sweep
  assert not np.any(table['below_bayes_floor'])
  assert np.all(table['target_err_ci_low'] <= table['target_err'])
  assert np.all(table['target_err'] <= table['target_err_ci_high'])
