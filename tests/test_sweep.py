"""The sweep engine end to end: CLI, validation, determinism, chunking, devices, resume."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import config_schema
from xdistill_jax import experiments
from xdistill_jax.experiments import base
from xdistill_jax.experiments import ntdh_overlap
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import execute
from xdistill_jax.sweep import runner
from xdistill_jax.sweep.grid import Grid

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--config.runs=2', '--config.overlaps=(0,10)', '--config.steps=40',
        '--config.n_train=48', '--config.n_test=64', '--config.sweep.progress=False']


def _cli(*args, env=None, **kwargs):
  return subprocess.run([sys.executable, '-m', 'xdistill_jax.cli', *args], cwd=ROOT,
                        capture_output=True, text=True, env=env, **kwargs)


def _same_rows(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_cli_run_writes_every_output(tmp_path):
  result = _cli('run', '--config=configs/ntdh_overlap.py', f'--workdir={tmp_path}', *TINY)
  assert result.returncode == 0, result.stderr
  rows = tables.read_csv(tmp_path / 'results.csv')
  assert len(rows['index']) == 4
  for column in ('overlap', 'gamma', 'seed', 'teacher_acc', 'baseline_acc', 'kd_acc', 'delta',
                 'cmd_inputs', 'cmd_outputs', 'tckd_test', 'nckd_test', 'bayes_floor_a',
                 'bayes_floor_b', 'teacher_wrong_teacher_p_0', 'n2_upper', 'diverged'):
    assert column in rows, column
  for column in ('teacher_acc', 'baseline_acc', 'kd_acc'):
    assert np.all((rows[column] >= 0) & (rows[column] <= 1))
  np.testing.assert_allclose(rows['delta'], 100 * (rows['kd_acc'] - rows['baseline_acc']))
  np.testing.assert_allclose(sorted(set(rows['gamma'])), [0.0, 1.0])
  assert np.all(rows['nckd_test'] == 0)  # K = 2: the non-target distribution is a point mass
  summary = tables.read_csv(tmp_path / 'summary.csv')
  assert list(summary['overlap']) == [0, 10]
  assert list(summary['kd_acc_count']) == [2, 2]
  record = json.loads((tmp_path / 'config.json').read_text())
  assert record['library_version'] and record['config']['runs'] == 2
  report = json.loads((tmp_path / 'bounds.json').read_text())
  assert all(b['violations'] == 0 for b in report['bounds'].values()
             if b['kind'] == 'deterministic')
  for figure in ('ntdh_overlap.png', 'ntdh_overlap_bounds.png'):
    assert (tmp_path / figure).stat().st_size > 10_000
  replot = _cli('plot', f'--workdir={tmp_path}')
  assert replot.returncode == 0, replot.stderr


def test_cli_rejects_a_misspelt_field(tmp_path):
  result = _cli('run', '--config=configs/ntdh_overlap.py', f'--workdir={tmp_path}',
                '--config.runz=3')
  assert result.returncode == 2 and 'Did you mean config.runs' in result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'chunks').exists()


def test_cli_rejects_an_invalid_value_naming_the_field(tmp_path):
  result = _cli('run', '--config=configs/ntdh_overlap.py', f'--workdir={tmp_path}',
                '--config.overlaps=(0,11)')
  assert result.returncode == 2
  assert 'config.overlaps' in result.stderr and 'integers in [0, 10]' in result.stderr
  assert not (tmp_path / 'chunks').exists()


def _forbid_compilation(monkeypatch):
  def no_compilation(*args, **kwargs):
    raise AssertionError('compiled before validating')
  monkeypatch.setattr(execute, 'make_runner', no_compilation)


@pytest.mark.parametrize('field, value, message', [
    ('overlaps', (0, 11), 'config.overlaps'),
    ('runs', 0, 'config.runs'),
    ('temperature', -1.0, 'config.temperature'),
    ('experiment', 'ntdh_overlop', 'config.experiment'),
])
def test_invalid_config_fails_before_compilation(tiny_overlap_config, tmp_path, monkeypatch,
                                                 field, value, message):
  _forbid_compilation(monkeypatch)
  setattr(tiny_overlap_config, field, value)
  with pytest.raises(config_schema.ConfigError, match=message.replace('.', r'\.')):
    runner.run(tiny_overlap_config, tmp_path)


def test_unknown_field_suggests_the_closest(tiny_overlap_config):
  tiny_overlap_config.unlock()
  tiny_overlap_config.temprature = 1.0
  with pytest.raises(config_schema.ConfigError, match='Did you mean config.temperature'):
    runner.prepare(tiny_overlap_config)


def _run_all(config, chunk_size=0, vmap_width=-1):
  grid = Grid(ntdh_overlap.axes(config))
  index = np.arange(grid.size)
  run = execute.make_runner(ntdh_overlap.make_setting_fn(config), config.seed,
                            grid.traced_settings(index[:1]), grid.size, chunk_size=chunk_size,
                            vmap_width=vmap_width)
  parts = [run(grid.key_index(index[i:i + run.chunk_size]),
               grid.traced_settings(index[i:i + run.chunk_size]))
           for i in range(0, grid.size, run.chunk_size)]
  return grid, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_same_seed_same_numbers_and_vmapped_equals_one_at_a_time(tiny_overlap_config):
  grid, first = _run_all(tiny_overlap_config)
  _, second = _run_all(tiny_overlap_config)  # compiled anew: same numbers
  _same_rows(first, second)
  fn = jax.jit(ntdh_overlap.make_setting_fn(tiny_overlap_config))
  key = jax.random.key(tiny_overlap_config.seed)
  for i in (0, 4, grid.size - 1):
    setting = {k: jnp.asarray(v[0]) for k, v in grid.traced_settings(np.array([i])).items()}
    key_index = int(grid.key_index(np.array([i]))[0])
    alone = fn(jax.random.fold_in(key, key_index), setting)  # one setting, unbatched
    for name, value in alone.items():
      np.testing.assert_allclose(value, first[name][i], rtol=1e-5, atol=1e-6, err_msg=name)
    other_seed = fn(jax.random.fold_in(jax.random.key(1), key_index), setting)
    assert other_seed['kd_loss'] != alone['kd_loss']


def test_chunk_size_does_not_change_a_bit(tiny_overlap_config):
  _, whole = _run_all(tiny_overlap_config, vmap_width=2)
  _, chunked = _run_all(tiny_overlap_config, chunk_size=2, vmap_width=2)
  _same_rows(whole, chunked)


def test_device_count_does_not_change_a_bit(tmp_path):
  # Two or more devices compile the same partitioned per-device program (the CLI never uses
  # fewer than two CPU devices); one device would compile an unpartitioned one.
  outputs = []
  for devices in (2, 8):
    env = os.environ | {'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
    workdir = tmp_path / str(devices)
    result = _cli('run', '--config=configs/ntdh_overlap.py', f'--workdir={workdir}', *TINY,
                  '--config.runs=4', env=env)
    assert result.returncode == 0, result.stderr
    assert f'on {devices} cpu device(s)' in result.stderr
    outputs.append(tables.read_csv(workdir / 'results.csv'))
  _same_rows(*outputs)


def _committed(chunks: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Committed chunk files (`NNNNNNNNNN.npz`, renamed into place once complete) with their
  (size, mtime)."""
  if not chunks.is_dir():
    return {}
  return {f.name: (f.stat().st_size, f.stat().st_mtime_ns)
          for f in chunks.iterdir() if f.suffix == '.npz' and f.stem.isdigit()}


def test_sigkill_mid_sweep_then_same_command_skips_committed_chunks(tmp_path):
  args = ['run', '--config=configs/ntdh_overlap.py', *TINY, '--config.runs=8',
          '--config.sweep.chunk_size=2', '--config.sweep.vmap_width=1']
  env = os.environ | {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  reference = _cli(*args, f'--workdir={tmp_path / "reference"}', env=env)
  assert reference.returncode == 0, reference.stderr
  num_chunks = len(_committed(tmp_path / 'reference' / 'chunks'))
  assert num_chunks >= 3  # 16 settings in chunks of (devices x 2 groups of width 1)
  workdir = tmp_path / 'killed'
  process = subprocess.Popen([sys.executable, '-m', 'xdistill_jax.cli', *args,
                              f'--workdir={workdir}'], cwd=ROOT, stderr=subprocess.DEVNULL,
                             env=env)
  deadline = time.time() + 300
  while time.time() < deadline and not _committed(workdir / 'chunks'):
    time.sleep(0.002)
  process.send_signal(signal.SIGSTOP)  # freeze it, then look at what it has committed
  at_kill = _committed(workdir / 'chunks')
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 1 <= len(at_kill) < num_chunks, sorted(at_kill)  # the kill landed mid-sweep
  assert _committed(workdir / 'chunks') == at_kill
  time.sleep(0.01)  # a rewritten file would get a later mtime
  resumed = _cli(*args, f'--workdir={workdir}', env=env)
  assert resumed.returncode == 0, resumed.stderr
  chunk = int(re.search(r'chunks of (\d+)', reference.stderr).group(1))
  assert f'resuming: {chunk * len(at_kill)} of 16 settings already committed' in resumed.stderr
  after = _committed(workdir / 'chunks')
  assert len(after) == num_chunks
  assert {name: after[name] for name in at_kill} == at_kill  # committed chunks untouched
  expected = tables.read_csv(tmp_path / 'reference' / 'results.csv')
  got = tables.read_csv(workdir / 'results.csv')
  assert len(got['index']) == 16 and len(set(got['index'])) == 16
  _same_rows(expected, got)


def test_resume_refuses_another_resolved_vmap_width(tiny_overlap_config, tmp_path,
                                                     monkeypatch):
  runner.run(tiny_overlap_config, tmp_path)  # width -1 resolves to min(8, 9 // 4) = 2
  record = json.loads((tmp_path / 'config.json').read_text())
  assert record['resolved_vmap_width'] == runner.vmap_width(
      tiny_overlap_config, runner.prepare(tiny_overlap_config)[1]) == 2

  _forbid_compilation(monkeypatch)
  tiny_overlap_config.sweep.vmap_width = 3
  with pytest.raises(config_schema.ConfigError, match='vmap_width resolved to 2'):
    runner.run(tiny_overlap_config, tmp_path)
  tiny_overlap_config.sweep.vmap_width = 2  # the same resolved width: resumes (nothing left)
  assert runner.run(tiny_overlap_config, tmp_path)['finished'] == 9


def test_resume_refuses_a_different_config(tiny_overlap_config, tmp_path):
  runner.run(tiny_overlap_config, tmp_path)
  tiny_overlap_config.steps = 41
  with pytest.raises(config_schema.ConfigError, match='different config'):
    runner.run(tiny_overlap_config, tmp_path)


# A toy experiment whose settings with seed 1 diverge, to test the `diverged` flag.
def _toy_setting_fn(config):
  def setting_fn(key, setting):
    x = jax.random.uniform(key)
    bad = setting['seed'] == 1
    return {'value': jnp.where(bad, jnp.nan, x), 'other': jnp.where(bad, jnp.inf, 1.0 + x)}
  return setting_fn


EXPERIMENT = TOY = base.Experiment(
    name='toy_divergence', fields=('runs',), validate=lambda c: None,
    axes=lambda c: {'seed': np.arange(c.runs)}, make_setting_fn=_toy_setting_fn,
    group_by=('seed',), figures=lambda *a: [])


def _toy_config(runs=3):
  config = base.common_config('toy_divergence')
  config.runs = runs
  config.sweep.progress = False
  return config


def test_diverged_settings_are_flagged_and_left_out_of_the_summary(tmp_path, monkeypatch):
  from xdistill_jax import bound_registry
  monkeypatch.setitem(experiments._MODULES, 'toy_divergence', __name__)
  # A bound that every setting violates (1 + x > x), diverged ones included in results.csv.
  bound_registry.register(bound_registry.Bound(
      'toy_below_other', lambda m: m['other'], 'value', 'lower', 'deterministic', ('other',)))
  try:
    config = _toy_config()
    config.bounds = ('toy_below_other',)
    report = runner.run(config, tmp_path)
  finally:
    bound_registry.unregister('toy_below_other')
  assert report['diverged'] == 1
  rows = tables.read_csv(tmp_path / 'results.csv')
  np.testing.assert_array_equal(rows['diverged'], [0, 1, 0])
  assert np.isnan(rows['value'][1])
  np.testing.assert_array_equal(rows['toy_below_other_violated'], [1, 0, 1])
  summary = tables.read_csv(tmp_path / 'summary.csv')
  np.testing.assert_array_equal(summary['value_count'], [1, 0, 1])
  assert np.all(np.isfinite(summary['value_mean'][[0, 2]])) and np.isnan(summary['value_mean'][1])
  # Booleans are masked like floats: the diverged setting counts in no statistic.
  np.testing.assert_array_equal(summary['toy_below_other_violated_count'], [1, 0, 1])
  np.testing.assert_array_equal(summary['toy_below_other_violated_mean'][[0, 2]], [1.0, 1.0])
  assert np.isnan(summary['toy_below_other_violated_mean'][1])
  assert report['bounds']['toy_below_other']['violations'] == 2


def test_saved_parameters_are_those_the_sweep_computed(tiny_overlap_config, tmp_path):
  import orbax.checkpoint as ocp
  from xdistill_jax import training
  from xdistill_jax.models import MLP
  runner.run(tiny_overlap_config, tmp_path / 'plain')
  tiny_overlap_config.sweep.save_params = (1, 7)
  runner.run(tiny_overlap_config, tmp_path / 'saving')
  # Returning the parameters from the compiled program changes no result, not even a bit.
  _same_rows(tables.read_csv(tmp_path / 'plain' / 'results.csv'),
             tables.read_csv(tmp_path / 'saving' / 'results.csv'))
  rows = tables.read_csv(tmp_path / 'saving' / 'results.csv')
  assert sorted(p.name for p in (tmp_path / 'saving' / 'params').iterdir()) == [
      'setting_00000001', 'setting_00000007']
  grid = runner.prepare(tiny_overlap_config)[1]
  model = MLP(num_classes=2)
  for i in (1, 7):
    saved = ocp.StandardCheckpointer().restore(
        (tmp_path / 'saving' / 'params' / f'setting_{i:08d}').absolute())
    setting = {k: jnp.asarray(v[0]) for k, v in grid.traced_settings(np.array([i])).items()}
    key = jax.random.fold_in(jax.random.key(tiny_overlap_config.seed),
                             int(grid.key_index(np.array([i]))[0]))
    _, (_, _, test) = ntdh_overlap._train(tiny_overlap_config, key, setting)  # the test set
    for name in ('teacher', 'baseline', 'kd'):
      x = test.x_a if name == 'teacher' else test.x_b
      accuracy = float(training.accuracy(model.apply(saved[name], x), test.y))
      assert accuracy == rows[f'{name}_acc'][i], name
    kernel = saved['kd']['params']['TorchDense_0']['kernel']
    bias = saved['kd']['params']['TorchDense_0']['bias']
    norm = np.sqrt(np.sum(np.float64(kernel) ** 2) + np.sum(np.float64(bias) ** 2))
    np.testing.assert_allclose(norm, rows['kd_weight_norm'][i], rtol=1e-6)


def test_save_params_is_checked_before_compiling(tiny_overlap_config, tmp_path, monkeypatch):
  _forbid_compilation(monkeypatch)
  tiny_overlap_config.sweep.save_params = (9,)
  with pytest.raises(config_schema.ConfigError, match=r'setting indices in \[0, 8\]'):
    runner.run(tiny_overlap_config, tmp_path / 'range')
  monkeypatch.setitem(experiments._MODULES, 'toy_divergence', __name__)
  config = _toy_config()
  config.sweep.save_params = (0,)
  with pytest.raises(config_schema.ConfigError, match="'toy_divergence' does not return"):
    runner.run(config, tmp_path / 'toy')
  assert not (tmp_path / 'range').exists() and not (tmp_path / 'toy').exists()


def test_a_bound_added_from_the_config_reaches_results_summary_and_figures(
    tiny_overlap_config, tmp_path, monkeypatch):
  from xdistill_jax import bound_registry
  from xdistill_jax.reporting import figures
  module = tmp_path / 'my_test_bounds.py'
  module.write_text(
      'from xdistill_jax.bound_registry import bound\n'
      "@bound('twice_teacher_err', target='kd_err', side='upper', kind='probabilistic',\n"
      "       requires=('teacher_err',))\n"
      'def twice_teacher_err(m):\n'
      "  return 2 * m['teacher_err']\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  tiny_overlap_config.bound_modules = ('my_test_bounds',)
  try:
    report = runner.run(tiny_overlap_config, tmp_path / 'run')
    rows = tables.read_csv(tmp_path / 'run' / 'results.csv')
    np.testing.assert_allclose(rows['twice_teacher_err'], 2 * rows['teacher_err'])
    assert 'twice_teacher_err_violated' in rows
    assert 'twice_teacher_err_mean' in tables.read_csv(tmp_path / 'run' / 'summary.csv')
    assert report['bounds']['twice_teacher_err']['kind'] == 'probabilistic'
    assert 'twice_teacher_err' in [b.name for b in figures._bounds_on(rows, 'kd_err')]
  finally:
    bound_registry.unregister('twice_teacher_err')



@pytest.mark.parametrize('config_name', ['ntdh_overlap', 'ntdh_samples', 'ntdh_kclass',
                                         'ntdh_table1', 'digits_overlap', 'cmcd_tv'])
def test_with_params_returns_the_same_metrics_and_the_trained_parameters(config_name):
  from xdistill_jax import config_files
  config = config_files.load(config_name)
  experiment, grid = runner.prepare(config)
  assert experiment.saves_params
  setting = {k: jnp.asarray(v[0]) for k, v in grid.traced_settings(np.array([0])).items()}
  key = jax.random.key(0)
  plain = jax.eval_shape(experiment.make_setting_fn(config), key, setting)  # traced only
  metrics, params = jax.eval_shape(experiment.make_setting_fn(config, with_params=True), key,
                                   setting)
  assert jax.tree.structure(metrics) == jax.tree.structure(plain)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), metrics) == jax.tree.map(
      lambda a: (a.shape, a.dtype), plain)
  leaves = jax.tree.leaves(params)
  assert leaves and all(jnp.issubdtype(a.dtype, jnp.floating) for a in leaves)


def test_experiments_without_parameters_say_so():
  from xdistill_jax.experiments import ntdh_feature_mask
  assert not ntdh_feature_mask.EXPERIMENT.saves_params


def _toy_width_config(runs):
  config = _toy_config(runs)
  config.sweep.chunk_size = 8
  return config


def test_fastest_width_is_chosen_by_the_injected_timer():
  setting_fn = lambda key, s: {'x': jax.random.uniform(key) * s['a']}
  group = lambda width: (np.arange(width), {'a': np.ones(width, np.float32)})
  durations = {2: 2.0, 4: 2.0, 8: 8.0}  # seconds per group: per setting 1, 0.5, 1
  calls = []

  def timer():  # each timed run of width w takes durations[w] (start, then end)
    calls.append(len(calls))
    return 0.0 if len(calls) % 2 else durations[sorted(durations)[(len(calls) - 1) // 2]]

  seconds = execute.width_timer(setting_fn, jax.random.key(0), group, timer=timer, repeats=1)
  width, timings = execute.fastest_width((8, 2, 4), seconds, clock=lambda: 0.0)
  assert width == 4 and timings == {2: 1.0, 4: 0.5, 8: 1.0} and len(calls) == 6
  # Ties go to the smaller width; the budget stops trying wider ones once spent.
  assert execute.fastest_width((2, 4), lambda w: 1.0, clock=lambda: 0.0)[0] == 2
  ticks = iter(range(100))
  width, timings = execute.fastest_width((2, 4, 8), lambda w: 1.0 / w, budget_s=1.5,
                                         clock=lambda: float(next(ticks)))
  assert list(timings) == [2, 4] and width == 4


def test_accelerator_width_is_measured_once_recorded_and_reused_on_resume(tmp_path, monkeypatch):
  monkeypatch.setitem(experiments._MODULES, 'toy_divergence', __name__)
  monkeypatch.setattr(runner, '_on_accelerator', lambda: True)  # the accelerator path, on CPU
  monkeypatch.setattr(execute, 'WIDTH_CANDIDATES', (2, 4, 64))  # 64 capped at 32 // 4 = 8
  measured = []
  real_timer = execute.width_timer

  def scripted(setting_fn, sweep_key, group, **kwargs):
    seconds = real_timer(setting_fn, sweep_key, group, **kwargs)

    def per_setting(width):
      seconds(width)  # compiles and times one group of this width, for real
      measured.append(width)
      return {2: 3.0, 4: 1.0, 8: 2.0}[width]  # then the scripted timing decides
    return per_setting
  monkeypatch.setattr(execute, 'width_timer', scripted)
  config = _toy_width_config(runs=32)
  runner.run(config, tmp_path)
  record = json.loads((tmp_path / 'config.json').read_text())
  assert measured == [2, 4, 8] and record['resolved_vmap_width'] == 4
  assert record['vmap_width_timings'] == {'2': 3.0, '4': 1.0, '8': 2.0}
  rows = tables.read_csv(tmp_path / 'results.csv')
  # A resume reuses the recorded width: it never measures again (and is never refused).
  (tmp_path / 'results.csv').unlink()
  for chunk in sorted((tmp_path / 'chunks').iterdir())[2:]:
    chunk.unlink()
  monkeypatch.setattr(execute, 'width_timer', lambda *a, **k: pytest.fail('measured again'))
  runner.run(config, tmp_path)
  _same_rows(rows, tables.read_csv(tmp_path / 'results.csv'))
  config.sweep.vmap_width = 8
  with pytest.raises(config_schema.ConfigError, match='resolved to 4, this run asks for 8'):
    runner.run(config, tmp_path)


def test_a_512_wide_group_runs_on_cpu_and_agrees_with_narrow_groups(tmp_path, monkeypatch):
  monkeypatch.setitem(experiments._MODULES, 'toy_divergence', __name__)
  config = _toy_config(runs=9)
  config.sweep.vmap_width = 512  # an accelerator's width: 2 groups of 512, 9 settings real
  runner.run(config, tmp_path / 'wide')
  assert json.loads((tmp_path / 'wide' / 'config.json').read_text())[
      'resolved_vmap_width'] == 512
  config.sweep.vmap_width = 1
  runner.run(config, tmp_path / 'narrow')
  wide, narrow = (tables.read_parquet(tmp_path / d / 'results.parquet') for d in ('wide', 'narrow'))
  assert len(wide['index']) == 9 and wide['diverged'].sum() == 1
  _same_rows(wide, narrow)
