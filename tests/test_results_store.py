"""Results at scale: results.parquet / results.csv streamed from the chunks, the streamed
summary and bounds against in-memory computations, resume, the figure subsample."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from xdistill_jax import bound_registry
from xdistill_jax import config_files
from xdistill_jax import experiments
from xdistill_jax.experiments import base
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner
from xdistill_jax.sweep import store as store_lib

# A toy experiment: 3 groups x `runs` seeds, an inner axis of two modes, a vector, a bool and
# an int metric; settings with seed % 5 == 3 diverge; a bound that some rows violate.
FIGURE_CALLS = []


def _setting_fn(config):
  def setting_fn(key, setting):
    x = jax.random.uniform(key, (2,), jnp.float32) * setting['group']
    bad = setting['seed'] % 5 == 3
    return {'value': jnp.where(bad, jnp.nan, x),
            'vec': jnp.stack([x, 2 * x], axis=-1),
            'flag': x > 0.5, 'count': jnp.arange(2) + setting['seed'],
            'cap': jnp.full((2,), 0.6, jnp.float32)}
  return setting_fn


def _figures(table, summary, config, workdir):
  FIGURE_CALLS.append((table, summary))
  return []


EXPERIMENT = base.Experiment(
    name='toy_store', fields=('runs',), validate=lambda c: None,
    axes=lambda c: {'group': np.array([0.5, 1.0, 2.0]), 'seed': np.arange(c.runs)},
    make_setting_fn=_setting_fn, group_by=('group',), figures=_figures,
    inner_axes=lambda c: {'mode': np.array(['a', 'b'])})


@pytest.fixture
def toy(monkeypatch):
  monkeypatch.setitem(experiments._MODULES, 'toy_store', __name__)
  monkeypatch.setattr(store_lib, 'BLOCK', 5)  # finalize streams 5 batches of 5 settings
  bound_registry.register(bound_registry.Bound(
      'toy_cap', lambda m: m['cap'], 'value', 'upper', 'deterministic', ('cap',)))
  FIGURE_CALLS.clear()
  config = base.common_config('toy_store')
  config.runs = 7
  config.bounds = ('toy_cap',)
  config.sweep.progress = False
  config.sweep.vmap_width = 1
  config.sweep.chunk_size = 4
  yield config
  bound_registry.unregister('toy_cap')


def _in_memory(workdir, config):
  """The whole results table at once, as finalize computed it before streaming."""
  experiment, grid = runner.prepare(config)
  index, metrics = store_lib.ChunkStore(workdir / 'chunks').assemble()
  inner = experiment.inner_axes(config) if experiment.inner_axes else {}
  return runner.results_rows(index, metrics, experiment, grid, config, inner)


def _reference_summary(table, group_by, skip):
  """Mean, std (ddof 1) and count per group, diverged rows and NaNs left out: plain loops."""
  keys = list(zip(*(table[g].tolist() for g in group_by)))
  groups = list(dict.fromkeys(keys))
  out = {g: np.array([k[j] for k in groups]) for j, g in enumerate(group_by)}
  for name, column in table.items():
    if name in group_by or name in skip or column.dtype.kind in 'US':
      continue
    values = np.asarray(column, np.float64)
    if column.dtype.kind in 'fb':
      values = np.where(table['diverged'], np.nan, values)
    stats = []
    for key in groups:
      v = values[[k == key for k in keys]]
      v = v[~np.isnan(v)]
      with np.errstate(invalid='ignore'):  # inf values: mean inf, std NaN
        stats.append((v.mean() if len(v) else np.nan,
                      v.std(ddof=1) if len(v) > 1 else np.nan, len(v)))
    for j, suffix in enumerate(('_mean', '_std', '_count')):
      out[name + suffix] = np.array([s[j] for s in stats])
  return out


def _assert_tables_equal(a, b, exact=True):
  assert list(a) == list(b)
  for name in a:
    x, y = np.asarray(a[name]), np.asarray(b[name])
    if x.dtype.kind in 'US' or exact:
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      np.testing.assert_allclose(np.float64(x), np.float64(y), rtol=1e-12, atol=1e-15,
                                 err_msg=name)


def test_parquet_rows_equal_csv_rows_and_the_in_memory_rows(toy, tmp_path):
  runner.run(toy, tmp_path)
  assert len(list((tmp_path / 'chunks').glob('*.npz'))) == 6  # 21 settings in chunks of 4
  table, _ = _in_memory(tmp_path, toy)
  assert len(table['index']) == 42 and table['diverged'].sum() == 6  # seed 3: 3 x 2 rows
  parquet = tables.read_parquet(tmp_path / 'results.parquet')
  _assert_tables_equal(parquet, table)
  for name in table:  # dtypes kept: float32 metrics stay float32, strings are strings
    assert parquet[name].dtype.kind == table[name].dtype.kind, name
  assert parquet['value'].dtype == np.float32
  arrow = pq.read_table(tmp_path / 'results.parquet')
  assert arrow.num_rows == 42 and arrow.column_names == list(table)
  csv = tables.read_csv(tmp_path / 'results.csv')
  assert list(csv) == list(table)
  for name in table:
    np.testing.assert_array_equal(csv[name], np.asarray(table[name]).astype(csv[name].dtype),
                                  err_msg=name)


def test_pandas_reads_results_parquet(toy, tmp_path):
  pandas = pytest.importorskip('pandas')
  runner.run(toy, tmp_path)
  frame = pandas.read_parquet(tmp_path / 'results.parquet')
  table, _ = _in_memory(tmp_path, toy)
  assert list(frame.columns) == list(table) and len(frame) == 42
  np.testing.assert_array_equal(frame['value'].to_numpy(), table['value'])
  assert frame['mode'].tolist() == table['mode'].tolist()


def test_streamed_summary_and_bounds_equal_the_in_memory_ones(toy, tmp_path):
  report = runner.run(toy, tmp_path)
  table, bounds = _in_memory(tmp_path, toy)
  summary = tables.read_csv(tmp_path / 'summary.csv')
  expected = _reference_summary(table, ('group',), {'index', 'diverged', 'seed', 'mode'})
  assert list(summary) == list(expected)
  _assert_tables_equal(summary, expected, exact=False)
  # Diverged settings count in no statistic, bools and bound flags included.
  np.testing.assert_array_equal(summary['value_count'], [12, 12, 12])
  np.testing.assert_array_equal(summary['toy_cap_violated_count'], [12, 12, 12])
  assert report['diverged'] == 6 and report['finished'] == 21
  assert report['bounds'] == json.loads(json.dumps(bounds))
  assert json.loads((tmp_path / 'bounds.json').read_text()) == report
  assert report['bounds']['toy_cap']['violations'] == int(table['toy_cap_violated'].sum()) > 0


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_group_summary_over_batches_equals_summarize_of_the_whole(dtype):
  rng = np.random.default_rng(0)
  n = 500
  table = {'g': rng.integers(0, 4, n), 'h': np.array(['x', 'y'])[rng.integers(0, 2, n)],
           'a': (rng.normal(size=n) * 1e3 + 1e4).astype(dtype),
           'b': rng.random(n) < 0.3, 'c': rng.integers(-5, 5, n),
           'd': np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)).astype(dtype),
           'e': np.full(n, np.nan, dtype),
           'f': np.where(rng.random(n) < 0.01, np.inf, rng.normal(size=n)).astype(dtype)}
  table['diverged'] = np.zeros(n, bool)
  expected = _reference_summary(table, ('g', 'h'), {'diverged'})
  streamed = tables.GroupSummary(('g', 'h'), exclude={'diverged'})
  cuts = np.sort(rng.choice(np.arange(1, n), 9, replace=False))
  for part in np.split(np.arange(n), cuts):
    streamed.add(tables.select(table, part))
  _assert_tables_equal(streamed.result(), expected, exact=False)
  _assert_tables_equal(tables.summarize(table, ('g', 'h'), exclude={'diverged'}), expected,
                       exact=False)


def test_merged_chunks_are_sorted_unique_and_checked(tmp_path):
  store = store_lib.ChunkStore(tmp_path)
  values = lambda i: {'m': np.float32(i) * 0.5, 'v': np.stack([i, -i], 1)}
  # A resumed sweep's chunks interleave around earlier ones; one setting committed twice.
  for index in ([10, 11, 12, 30, 31], [20, 21, 22], [0, 1, 2, 3], [32, 33, 40], [3, 4, 5]):
    index = np.array(index)
    store.commit(index, values(index))
  batches = list(store.merged())
  assert len(batches) <= 5 and all(len(b[0]) for b in batches)
  index = np.concatenate([b[0] for b in batches])
  expected = np.array([0, 1, 2, 3, 4, 5, 10, 11, 12, 20, 21, 22, 30, 31, 32, 33, 40])
  np.testing.assert_array_equal(index, expected)
  np.testing.assert_array_equal(np.concatenate([b[1]['m'] for b in batches]), expected * 0.5)
  np.testing.assert_array_equal(np.concatenate([b[1]['v'] for b in batches]),
                                np.stack([expected, -expected], 1))
  for block in (1, 4, 8):
    batches = list(store.merged(block))
    assert all(len(set(b[0] // block)) == 1 for b in batches)  # one block per batch
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), expected)
  store.commit(np.array([21, 50]), {'m': np.float32([0.0, 1.0]), 'v': np.zeros((2, 2), int)})
  with pytest.raises(RuntimeError, match='setting 21 twice'):
    list(store.merged())


def test_resume_mid_sweep_does_not_duplicate_parquet_rows(toy, tmp_path):
  runner.run(toy, tmp_path / 'whole')
  workdir = tmp_path / 'resumed'
  runner.run(toy, workdir)
  chunks = sorted((workdir / 'chunks').glob('*.npz'))
  for path in chunks[2:]:  # as if killed after two chunks
    path.unlink()
  runner.finalize(workdir)  # a partial sweep's results: what is committed, once
  partial = tables.read_parquet(workdir / 'results.parquet')
  np.testing.assert_array_equal(np.unique(partial['index']), np.arange(8))
  assert len(partial['index']) == 16
  toy.sweep.chunk_size = 3  # resumed with another chunk size: chunks straddle the old ones
  runner.run(toy, workdir)
  store = store_lib.ChunkStore(workdir / 'chunks')
  index, metrics = store.assemble()
  store.commit(index[2:6], {k: v[2:6] for k, v in metrics.items()})  # an overlapping commit
  runner.finalize(workdir)
  _assert_tables_equal(tables.read_parquet(workdir / 'results.parquet'),
                       tables.read_parquet(tmp_path / 'whole' / 'results.parquet'))
  assert (workdir / 'results.csv').read_bytes() == (
      tmp_path / 'whole' / 'results.csv').read_bytes()
  assert (workdir / 'summary.csv').read_bytes() == (
      tmp_path / 'whole' / 'summary.csv').read_bytes()


def test_figures_get_the_summary_and_a_seeded_subsample_of_whole_settings(toy, tmp_path,
                                                                         monkeypatch):
  runner.run(toy, tmp_path / 'all')
  (table, summary), = FIGURE_CALLS
  _assert_tables_equal(table, tables.read_parquet(tmp_path / 'all' / 'results.parquet'))
  monkeypatch.setattr(runner, 'FIGURE_ROWS', 10)
  FIGURE_CALLS.clear()
  runner.finalize(tmp_path / 'all')
  toy.sweep.chunk_size = 2
  runner.run(toy, tmp_path / 'other_chunks')
  (first, first_summary), (second, _) = FIGURE_CALLS
  assert len(first['index']) == 10  # 5 settings x 2 modes
  np.testing.assert_array_equal(first['index'][::2], first['index'][1::2])  # whole settings
  assert np.all(np.diff(first['index'][::2]) > 0)
  _assert_tables_equal(first, second)  # seeded: independent of chunks
  rows = tables.read_parquet(tmp_path / 'all' / 'results.parquet')
  _assert_tables_equal(first, tables.select(rows, np.isin(rows['index'], first['index'])))
  _assert_tables_equal(first_summary, summary)  # the summary of every row
  np.testing.assert_array_equal(
      runner.figure_settings(np.arange(21), 2, 0), first['index'][::2])
  assert not np.array_equal(runner.figure_settings(np.arange(21), 2, 1), first['index'][::2])


def test_results_csv_only_up_to_its_row_limit(toy, tmp_path, monkeypatch):
  runner.run(toy, tmp_path)
  assert (tmp_path / 'results.csv').exists()
  monkeypatch.setattr(runner, 'CSV_MAX_ROWS', 41)
  runner.finalize(tmp_path)
  assert not (tmp_path / 'results.csv').exists()  # the stale smaller one is gone too
  assert pq.read_metadata(tmp_path / 'results.parquet').num_rows == 42
  assert (tmp_path / 'summary.csv').exists()


def test_real_figure_hooks_draw_from_a_subsample(tmp_path, monkeypatch):
  config = config_files.load('ntdh_overlap')
  config.overlaps, config.runs, config.sweep.progress = (0, 4, 10), 3, False
  experiment, grid = runner.prepare(config)
  setting = {k: jnp.asarray(v[0]) for k, v in grid.traced_settings(np.arange(1)).items()}
  shapes = jax.eval_shape(experiment.make_setting_fn(config), jax.random.key(0), setting)
  rng = np.random.default_rng(0)  # stand-in metrics of the right shapes (traced, not run)
  metrics = {k: rng.random((grid.size,) + s.shape).astype(s.dtype) for k, s in shapes.items()}
  store_lib.ChunkStore(tmp_path / 'chunks').commit(np.arange(grid.size), metrics)
  monkeypatch.setattr(runner, 'FIGURE_ROWS', 4)
  runner.finalize(tmp_path, config)
  assert (tmp_path / 'ntdh_overlap_bounds.png').stat().st_size > 10_000
  assert (tmp_path / 'ntdh_overlap.png').stat().st_size > 10_000
  assert len(tables.read_csv(tmp_path / 'results.csv')['index']) == 9
