"""Runs a sweep end to end: validate, plan, execute chunks with resume, write results.

`run(config, workdir)` is what `xdistill run` calls; `finalize(workdir)` (also behind
`xdistill plot`) turns whatever chunks are committed into results.csv, summary.csv,
bounds.json and the figures, so it works on a finished or a partial sweep alike.
"""

import json
import pathlib
import platform
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm

import xdistill_jax
from xdistill_jax import bound_registry
from xdistill_jax import config_schema
from xdistill_jax import experiments
from xdistill_jax.experiments import base
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import execute
from xdistill_jax.sweep import store as store_lib
from xdistill_jax.sweep.grid import Grid


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def prepare(config: ml_collections.ConfigDict):
  """Validates `config` (before any compilation) and returns (experiment, grid)."""
  experiment = experiments.get(config.experiment)
  experiment.check(config)
  for module in config.bound_modules:
    try:
      bound_registry.load(module)
    except (ImportError, AttributeError, SyntaxError) as error:
      raise config_schema.ConfigError(
          f'config.bound_modules={tuple(config.bound_modules)!r} is invalid: {error}; allowed: '
          'importable modules (on PYTHONPATH) that register bounds.') from None
  names = list(config.bounds)
  unknown = [n for n in names if n not in bound_registry.names()]
  if unknown:
    raise config_schema.ConfigError(
        f'config.bounds={names!r} is invalid: {unknown} not registered; allowed: a list of '
        f'{", ".join(bound_registry.names())} (add more with config.bound_modules).')
  grid = Grid(experiment.axes(config), experiment.key_axes)
  _check_save_params(experiment, config, grid)
  return experiment, grid


def _check_save_params(experiment, config, grid) -> None:
  index = list(config.sweep.save_params)
  if index and not experiment.saves_params:
    raise config_schema.ConfigError(
        f'config.sweep.save_params={index} is invalid: experiment {experiment.name!r} does not '
        'return trained parameters; allowed: () for this experiment.')
  if index and max(index) >= grid.size:
    raise config_schema.ConfigError(
        f'config.sweep.save_params={index} is invalid; allowed: setting indices in '
        f'[0, {grid.size - 1}] (this sweep has {grid.size} settings).')


def _results_config(config) -> dict:
  """The config without execution-only fields: what the results depend on."""
  resolved = config.to_dict()
  for field in base.EXECUTION_FIELDS:
    group, name = field.split('.')
    resolved[group].pop(name, None)
  return resolved


def _write_config(workdir: pathlib.Path, config, grid: Grid) -> None:
  """Writes config.json, or checks that a resumed sweep has the same results config and the
  same resolved `sweep.vmap_width` (the width changes rounding, `execute.default_vmap_width`).

  On several hosts every process checks, and process 0 writes."""
  path = workdir / 'config.json'
  width = vmap_width(config, grid)
  record = {'config': json.loads(config.to_json_best_effort()),
            'results_config': json.loads(json.dumps(_results_config(config), default=str)),
            'resolved_vmap_width': width,
            'library_version': xdistill_jax.__version__, 'jax_version': jax.__version__,
            'python': platform.python_version(), 'backend': jax.default_backend(),
            'devices': [str(d) for d in jax.devices()], 'num_settings': grid.size}
  if path.exists():
    previous = _read_record(workdir)
    if previous.get('results_config') != record['results_config']:
      raise config_schema.ConfigError(
          f'{workdir} holds a sweep with a different config; resume it with the same config '
          f'(execution fields {", ".join(base.EXECUTION_FIELDS)} may differ) or use a new '
          f'--workdir.')
    before = previous.get('resolved_vmap_width', width)
    if before != width:
      raise config_schema.ConfigError(
          f'{workdir} was run with sweep.vmap_width resolved to {before}, this run resolves it '
          f'to {width} ({jax.default_backend()}), and the width changes rounding; resume with '
          f'--config.sweep.vmap_width={before} or use a new --workdir.')
  if jax.process_index() == 0:
    tables.atomic_write_text(path, json.dumps(record, indent=2, default=str) + '\n')


def _read_record(workdir) -> dict:
  """config.json of `workdir`; a `ConfigError` naming the file if it is missing or corrupt."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    raise config_schema.ConfigError(
        f'--workdir={workdir} holds no sweep ({path} not found); start one with xdistill run.')
  try:
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get('config'), dict):
      raise ValueError('no "config" object')
  except (OSError, UnicodeDecodeError, ValueError) as error:
    raise config_schema.ConfigError(f'{path} is not a sweep record: {error}.') from None
  return record


def load_config(workdir) -> ml_collections.ConfigDict:
  """The resolved config a sweep in `workdir` ran with."""
  return ml_collections.ConfigDict(_read_record(workdir)['config'])


def run(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs (or resumes) the sweep of `config` in `workdir`; returns the bounds summary."""
  experiment, grid = prepare(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_config(workdir, config, grid)
  store = store_lib.ChunkStore(workdir / 'chunks')
  todo = np.setdiff1d(np.arange(grid.size), store.done())
  if len(todo) < grid.size:
    _log(f'resuming: {grid.size - len(todo)} of {grid.size} settings already committed')
  if len(todo):
    _execute(experiment, config, grid, store, todo, workdir / 'params')
  store.close()
  if jax.process_index() != 0:
    return {}
  return finalize(workdir, config)


def vmap_width(config, grid) -> int:
  """`sweep.vmap_width`, or by default the backend's width capped at a quarter of the sweep
  (so small sweeps are not padded to many idle settings). It depends on the sweep alone, never
  on the device count or on what a resumed run has left, so results stay bit-identical."""
  if config.sweep.vmap_width >= 0:
    return config.sweep.vmap_width
  return min(execute.default_vmap_width(), max(1, grid.size // 4))


def _execute(experiment, config, grid, store, todo, params_dir):
  """Runs the settings `todo` chunk by chunk, committing each. With `sweep.save_params` the
  compiled program also returns every setting's trained parameters, and those of the selected
  settings are saved (before their chunk commits, so a resume never skips them)."""
  start = time.perf_counter()
  sweep_key = jax.random.key(config.seed)
  save = set(int(i) for i in config.sweep.save_params)
  setting_fn = (experiment.make_setting_fn(config, with_params=True) if save
                else experiment.make_setting_fn(config))
  runner = execute.make_runner(
      setting_fn, sweep_key, grid.traced_settings(todo[:1]),
      num_settings=len(todo), chunk_size=config.sweep.chunk_size,
      memory_budget_bytes=config.sweep.memory_budget_gb * 2**30,
      vmap_width=vmap_width(config, grid))
  _log(f'{experiment.name}: {grid.size} settings, chunks of {runner.chunk_size} on '
       f'{jax.device_count()} {jax.default_backend()} device(s); '
       f'compiled in {time.perf_counter() - start:.1f} s')
  with tqdm.tqdm(total=len(todo), unit='setting', disable=not config.sweep.progress,
                 file=sys.stderr) as bar:
    for begin in range(0, len(todo), runner.chunk_size):
      index = todo[begin:begin + runner.chunk_size]
      metrics = runner(grid.key_index(index), grid.traced_settings(index))
      if save:
        metrics, params = metrics
        chosen = {int(i): jax.tree.map(lambda a, j=j: a[j], params)
                  for j, i in enumerate(index) if int(i) in save}
        if chosen:
          store_lib.save_params(params_dir, chosen)
      store.commit(index, metrics)
      bar.update(len(index))


def finalize(workdir, config=None) -> dict:
  """Writes results.csv, summary.csv, bounds.json and figures from the committed chunks."""
  workdir = pathlib.Path(workdir)
  config = load_config(workdir) if config is None else config
  experiment, grid = prepare(config)
  store = store_lib.ChunkStore(workdir / 'chunks')
  index, metrics = store.assemble()
  store.close()
  if len(index) == 0:
    raise config_schema.ConfigError(
        f'--workdir={workdir} has no finished settings yet (no committed chunk under '
        f'{workdir / "chunks"}); run or resume the sweep with xdistill run.')
  table = _rows(index, grid, metrics, experiment.inner_axes(config) if experiment.inner_axes
                else {})
  if experiment.derived is not None:
    table |= experiment.derived(table, config)
  diverged = _diverged(table, experiment, grid)
  table['diverged'] = diverged
  healthy = tables.select(table, ~diverged)
  names = list(config.bounds) or list(bound_registry.relevant(table))
  bound_columns, bound_summary = bound_registry.evaluate(names, healthy)
  for name, column in bound_columns.items():
    table[name] = np.full(len(diverged), np.nan if column.dtype != bool else False, column.dtype)
    table[name][~diverged] = column
  tables.write_csv(workdir / 'results.csv', table)
  # Diverged rows count in no statistic (floats and bools such as `*_violated` alike), but
  # their groups stay (with count 0).
  masked = {k: np.where(diverged, np.nan, v) if k not in experiment.group_by
            and v.dtype.kind in 'fb' else v for k, v in table.items()}
  axes = set(grid.axes) | set(experiment.inner_axes(config) if experiment.inner_axes else ())
  summary = tables.summarize(masked, experiment.group_by,
                             exclude={'index', 'diverged'} | axes)
  tables.write_csv(workdir / 'summary.csv', summary)
  report = {'settings': int(grid.size), 'finished': int(len(index)),
            'diverged': int(diverged.sum()), 'bounds': bound_summary}
  tables.atomic_write_text(workdir / 'bounds.json', json.dumps(report, indent=2) + '\n')
  if len(index) < grid.size:
    _log(f'partial sweep: {len(index)} of {grid.size} settings finished')
  if diverged.any():
    _log(f'{int(diverged.sum())} diverged setting(s) flagged in results.csv and left out of '
         'the summary')
  for line in bound_registry.report_lines(bound_summary):
    _log(line)
  for path in experiment.figures(table, summary, config, workdir):
    _log(f'wrote {path}')
  return report


def _rows(index, grid, metrics, inner_axes) -> dict:
  """One row per setting × combination of the inner axes (C order), metrics flattened."""
  inner = Grid(inner_axes)
  columns = {'index': index} | grid.settings(index)
  columns = {k: np.repeat(v, inner.size) for k, v in columns.items()}
  columns |= {k: np.tile(v, len(index)) for k, v in inner.settings(np.arange(inner.size)).items()}
  lead = len(inner.shape)
  rows = {k: v.reshape((-1,) + v.shape[1 + lead:]) for k, v in metrics.items()}
  return columns | tables.flatten(rows)


def _diverged(table, experiment, grid) -> np.ndarray:
  """True where any metric that may not be NaN is non-finite."""
  skip = set(grid.axes) | {'index'} | {k for k, v in table.items() if v.dtype.kind in 'US'}
  ok = np.ones(len(table['index']), bool)
  for name, column in table.items():
    if name in skip or any(name.startswith(n) for n in experiment.nan_ok):
      continue
    ok &= np.isfinite(np.asarray(column, np.float64))
  return ~ok
