"""Runs a sweep end to end: validate, plan, execute chunks with resume, write results.

`run(config, workdir)` is what `xdistill run` calls; `finalize(workdir)` (also behind
`xdistill plot`) turns whatever chunks are committed into results.csv, summary.csv,
bounds.json and the figures, so it works on a finished or a partial sweep alike.
"""

import json
import os
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
  """Creates config.json, or checks that a resumed sweep has the same results config and the
  same resolved `sweep.vmap_width` (the width changes rounding, `execute.default_vmap_width`).

  The file is created atomically and only if absent (a hard link of a complete temporary
  file), so that of several shards starting at once into one workdir exactly one writes it and
  every other checks against it: shards of different configs are refused."""
  path = workdir / 'config.json'
  width = vmap_width(config, grid)
  record = {'config': json.loads(config.to_json_best_effort()),
            'results_config': json.loads(json.dumps(_results_config(config), default=str)),
            'resolved_vmap_width': width,
            'library_version': xdistill_jax.__version__, 'jax_version': jax.__version__,
            'python': platform.python_version(), 'backend': jax.default_backend(),
            'devices': [str(d) for d in jax.devices()], 'num_settings': grid.size}
  if not path.exists():
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(json.dumps(record, indent=2, default=str) + '\n')
    try:
      os.link(tmp, path)
    except FileExistsError:  # another shard created it first: check against it below
      pass
    finally:
      tmp.unlink()
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


def shard_range(num_settings: int, shard: tuple[int, int]) -> tuple[int, int]:
  """Settings [begin, end) of shard I of N (`--shard=I/N`): N near-equal contiguous blocks of
  the flat setting index. It depends on the grid size and N alone, never on devices, chunk
  sizes or what is already done, so every job of an array agrees on it."""
  i, n = shard
  return i * num_settings // n, (i + 1) * num_settings // n


def check_shard(shard: tuple[int, int]) -> None:
  i, n = shard
  if n < 1 or not 0 <= i < n:
    raise config_schema.ConfigError(
        f'--shard={i}/{n} is invalid; allowed: I/N with N >= 1 and 0 <= I < N (shard I of N).')


def run(config: ml_collections.ConfigDict, workdir, shard: tuple[int, int] = (0, 1)) -> dict:
  """Runs (or resumes) the sweep of `config` in `workdir`; returns the bounds summary.

  With `shard=(I, N)` only the settings of `shard_range(grid.size, shard)` run, and nothing is
  finalized (any process may do that later: `finalize`, `xdistill plot`). With several JAX
  processes, process 0 checks the workdir, decides what is left and writes every file; the
  others compute their part of each chunk and return {} once the last chunk is committed."""
  check_shard(shard)
  experiment, grid = prepare(config)
  workdir = pathlib.Path(workdir)
  lead = jax.process_index() == 0
  refusal = None
  store = store_lib.ChunkStore(workdir / 'chunks')
  done = np.zeros(grid.size, bool)
  if lead:
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      _write_config(workdir, config, grid)
      done[store.done()] = True
    except config_schema.ConfigError as error:
      refusal = error
  many = jax.process_count() > 1
  try:
    if many:  # every process learns process 0's verdict and plan
      refused, done = _from_process_0((np.array(refusal is not None), done))
      if refused and refusal is None:
        raise config_schema.ConfigError(
            f'process 0 refused --workdir={workdir} (its message says why).')
    if refusal is not None:
      raise refusal
    begin, end = shard_range(grid.size, shard)
    todo = np.arange(begin, end)[~done[begin:end]]
    scope = (f'settings {begin}-{end - 1} of shard {shard[0]}/{shard[1]}' if shard[1] > 1
             else 'settings')
    if len(todo) < end - begin:
      _log(f'resuming: {end - begin - len(todo)} of {end - begin} {scope} already committed')
    if len(todo):
      _execute(experiment, config, grid, store, todo, workdir / 'params', write=lead)
    if many:
      # Every chunk is committed: leave the cluster together now, so that no process waits at
      # jax's exit-time shutdown barrier while process 0 writes the results (which may take
      # minutes and needs no other process).
      jax.distributed.shutdown()
  except config_schema.ConfigError:
    raise
  except Exception as error:
    if not many:
      raise
    raise ProcessLost(error) from error
  if not lead:
    return {}
  if shard[1] > 1:
    held = f'{end - begin} settings' if end > begin else f'no settings of {grid.size}'
    _log(f'shard {shard[0]}/{shard[1]} finished ({held}); write the results of every '
         f'finished shard with xdistill plot --workdir={workdir}')
    return {}
  return finalize(workdir, config)


class ProcessLost(RuntimeError):
  """A collective of a multi-process sweep failed: another process died or is unreachable."""


def _from_process_0(tree):
  """`tree` (host arrays) as process 0 has it, on every process."""
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def vmap_width(config, grid) -> int:
  """`sweep.vmap_width`, or by default the backend's width capped at a quarter of the sweep
  (so small sweeps are not padded to many idle settings). It depends on the sweep alone, never
  on the device count or on what a resumed run has left, so results stay bit-identical."""
  if config.sweep.vmap_width >= 0:
    return config.sweep.vmap_width
  return min(execute.default_vmap_width(), max(1, grid.size // 4))


def _execute(experiment, config, grid, store, todo, params_dir, write=True):
  """Runs the settings `todo` chunk by chunk, committing each (when `write`: process 0). With
  `sweep.save_params` the compiled program also returns every setting's trained parameters,
  and those of the selected settings are saved (before their chunk commits, so a resume never
  skips them)."""
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
  with tqdm.tqdm(total=len(todo), unit='setting', disable=not (config.sweep.progress and write),
                 file=sys.stderr) as bar:
    for begin in range(0, len(todo), runner.chunk_size):
      index = todo[begin:begin + runner.chunk_size]
      metrics = runner(grid.key_index(index), grid.traced_settings(index))
      if save:
        metrics, params = metrics
        chosen = {int(i): jax.tree.map(lambda a, j=j: a[j], params)
                  for j, i in enumerate(index) if int(i) in save}
        if chosen and write:
          store_lib.save_params(params_dir, chosen)
      if write:
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
        f'{workdir / "chunks"}); run or resume the sweep (or its shards) with xdistill run.')
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
    _log(f'partial sweep: {len(index)} of {grid.size} settings finished; missing settings '
         f'{missing_ranges(index, grid.size)} (rerun the same xdistill run command, or the '
         'shards that hold them, to finish them)')
  if diverged.any():
    _log(f'{int(diverged.sum())} diverged setting(s) flagged in results.csv and left out of '
         'the summary')
  for line in bound_registry.report_lines(bound_summary):
    _log(line)
  for path in experiment.figures(table, summary, config, workdir):
    _log(f'wrote {path}')
  return report


def missing_ranges(done: np.ndarray, num_settings: int, limit: int = 8) -> str:
  """The settings of 0..num_settings-1 not in `done`, as ranges: '4-7, 12, 20-31'."""
  missing = np.setdiff1d(np.arange(num_settings), done)
  if not len(missing):
    return 'none'
  breaks = np.flatnonzero(np.diff(missing) != 1)
  starts = np.concatenate([[missing[0]], missing[breaks + 1]])
  ends = np.concatenate([missing[breaks], [missing[-1]]])
  text = [f'{a}' if a == b else f'{a}-{b}' for a, b in zip(starts[:limit], ends[:limit])]
  if len(starts) > limit:
    text.append(f'and {len(starts) - limit} more ranges')
  return ', '.join(text)


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
