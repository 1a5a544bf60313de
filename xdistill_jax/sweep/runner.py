"""Runs a sweep end to end: validate, plan, execute chunks with resume, write results.

`run(config, workdir)` is what `xdistill run` calls; `finalize(workdir)` (also behind
`xdistill plot`) turns whatever chunks are committed into results.parquet (and results.csv),
summary.csv, bounds.json and the figures, streaming over the chunks, so it works on a
finished or a partial sweep alike and in memory that does not grow with the sweep.
"""

import contextlib
import functools
import importlib
import json
import math
import os
import pathlib
import platform
import sys
import threading
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
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import execute
from xdistill_jax.sweep import programs
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


def _write_config(workdir: pathlib.Path, config, grid: Grid, measure=None) -> int:
  """Creates config.json, or checks that a resumed sweep has the same results config; returns
  the resolved `sweep.vmap_width` (the width changes rounding, `execute.default_vmap_width`).

  A new sweep resolves the width (`vmap_width`, which times candidates with `measure` on an
  accelerator) and records it; a resumed sweep with the automatic width (-1) reuses the
  recorded one, never measuring again, and an explicit width must equal it.

  The file is created atomically and only if absent (a hard link of a complete temporary
  file), so that of several shards starting at once into one workdir exactly one writes it and
  every other checks against it (and adopts its width): shards of different configs are
  refused."""
  path = workdir / 'config.json'
  automatic = config.sweep.vmap_width < 0
  if not path.exists():
    width, timings = _resolve_width(config, grid, measure)
    record = {'config': json.loads(config.to_json_best_effort()),
              'results_config': json.loads(json.dumps(_results_config(config), default=str)),
              'resolved_vmap_width': width,
              'vmap_width_timings': {str(w): t for w, t in timings.items()},
              'library_version': xdistill_jax.__version__, 'jax_version': jax.__version__,
              'python': platform.python_version(), 'backend': jax.default_backend(),
              'devices': [str(d) for d in jax.devices()], 'num_settings': grid.size}
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(json.dumps(record, indent=2, default=str) + '\n')
    try:
      os.link(tmp, path)
    except FileExistsError:  # another shard created it first: check against it below
      pass
    finally:
      tmp.unlink()
  previous = _read_record(workdir)
  results_config = json.loads(json.dumps(_results_config(config), default=str))
  if previous.get('results_config') != results_config:
    raise config_schema.ConfigError(
        f'{workdir} holds a sweep with a different config; resume it with the same config '
        f'(execution fields {", ".join(base.EXECUTION_FIELDS)} may differ) or use a new '
        f'--workdir.')
  before = previous.get('resolved_vmap_width')
  if before is None:  # a record without it: the rule of the CPU
    before = vmap_width(config, grid)
  if not automatic and config.sweep.vmap_width != before:
    raise config_schema.ConfigError(
        f'{workdir} was run with sweep.vmap_width resolved to {before}, this run asks for '
        f'{config.sweep.vmap_width}, and the width changes rounding; resume with '
        f'--config.sweep.vmap_width={before} (or -1, which reuses it) or use a new --workdir.')
  return int(before)


def check_workdir(config: ml_collections.ConfigDict, workdir) -> None:
  """What `run` checks first, without compiling or writing: validates `config` and refuses a
  `workdir` that holds another config's sweep (`ConfigError`, as `run` would)."""
  _, grid = prepare(config)
  if (pathlib.Path(workdir) / 'config.json').exists():
    _write_config(pathlib.Path(workdir), config, grid)  # exists: checks, never writes


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
  width = -1
  if lead:
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      width = _write_config(workdir, config, grid, width_measure(
          lambda: experiment.make_setting_fn(config), config.seed, grid))
      done[store.done()] = True
    except config_schema.ConfigError as error:
      refusal = error
  many = jax.process_count() > 1
  try:
    if many:  # every process learns process 0's verdict and plan
      refused, done, width = _from_process_0((np.array(refusal is not None), done,
                                              np.array(width)))
      width = int(width)
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
    # Finalize's own imports load in the background while XLA compiles and runs.
    imports = _prefetch(FINALIZE_MODULES) if lead and shard[1] == 1 else None
    if len(todo):
      _execute(experiment, config, grid, store, todo, workdir / 'params', width, write=lead)
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
  if imports is not None:
    imports.join(timeout=60.0)  # bounded; finalize imports whatever is still missing itself
  return finalize(workdir, config)


# What finalize imports beyond the sweep's own modules (figures, Parquet, Clopper–Pearson).
FINALIZE_MODULES = ('matplotlib.figure', 'matplotlib.backends.backend_agg', 'pyarrow.parquet',
                    'scipy.special')


def _prefetch(modules) -> threading.Thread:
  """Imports `modules` in a daemon thread (≈ 1 s of Python on a 2-core CPU). Compiling and
  running the sweep release the GIL, so the imports cost no wall time there; finalize then
  finds them loaded. Modules that are not installed are skipped (finalize reports them)."""
  def load():
    for name in modules:
      with contextlib.suppress(ImportError):
        importlib.import_module(name)
  thread = threading.Thread(target=load, name='xdistill-prefetch', daemon=True)
  thread.start()
  return thread


class ProcessLost(RuntimeError):
  """A collective of a multi-process sweep failed: another process died or is unreachable."""


def _from_process_0(tree):
  """`tree` (host arrays) as process 0 has it, on every process."""
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def vmap_width(config, grid, measure=None) -> int:
  """`sweep.vmap_width` as a new sweep resolves it (`_resolve_width`)."""
  return _resolve_width(config, grid, measure)[0]


def _resolve_width(config, grid, measure=None) -> tuple[int, dict]:
  """(`sweep.vmap_width`, timings): the given width; by default on a CPU (`measure` None)
  the experiment's `cpu_vmap_width` or `execute.CPU_VMAP_WIDTH`, on an accelerator the
  fastest of `execute.WIDTH_CANDIDATES` timed by `measure` (width -> seconds per setting,
  `execute.width_timer`), every candidate capped at a quarter of the sweep (so small sweeps
  are not padded to many idle settings). It never
  depends on the device count or on what a resumed run has left (a resume reuses the recorded
  width), so results stay bit-identical."""
  if config.sweep.vmap_width >= 0:
    return config.sweep.vmap_width, {}
  cpu_width = experiments.get(config.experiment).cpu_vmap_width
  return automatic_width(grid, measure, cpu_width and cpu_width(config))


def automatic_width(grid, measure=None, cpu_width=None) -> tuple[int, dict]:
  """The automatic vmap width of `grid` and the timings it was chosen by (see
  `_resolve_width`); `cpu_width`: the CPU's width where not `execute.CPU_VMAP_WIDTH`."""
  cap = max(1, grid.size // 4)
  if measure is None:
    return min(execute.CPU_VMAP_WIDTH if cpu_width is None else cpu_width, cap), {}
  candidates = {min(width, cap) for width in execute.WIDTH_CANDIDATES}
  if len(candidates) == 1:
    return candidates.pop(), {}
  return execute.fastest_width(candidates, measure)


def _on_accelerator() -> bool:
  return jax.default_backend() != 'cpu'


def width_measure(make_setting_fn, seed: int, grid):
  """On an accelerator, `execute.width_timer` of `make_setting_fn()` on groups of the sweep's
  first settings; None (the CPU rule) on a CPU."""
  if not _on_accelerator():
    return None
  group = lambda width: (grid.key_index(np.arange(width) % grid.size),
                         grid.traced_settings(np.arange(width) % grid.size))
  timer = functools.cache(  # built on first use: a resumed sweep never builds it
      lambda: execute.width_timer(make_setting_fn(), jax.random.key(seed), group))
  return lambda width: timer()(width)


def _execute(experiment, config, grid, store, todo, params_dir, width, write=True):
  """Runs the settings `todo` chunk by chunk in groups of `width` settings, committing each
  chunk (when `write`: process 0). With
  `sweep.save_params` the compiled program also returns every setting's trained parameters,
  and those of the selected settings are saved (before their chunk commits, so a resume never
  skips them)."""
  start = time.perf_counter()
  save = set(int(i) for i in config.sweep.save_params)
  setting_fn = (experiment.make_setting_fn(config, with_params=True) if save
                else experiment.make_setting_fn(config))
  example = grid.traced_settings(todo[:1])
  cache_key = None
  if experiment.program_cache:
    cache_key = programs.program_key(
        experiment.make_setting_fn.__module__, _results_config(config), with_params=bool(save),
        vmap_width=width, devices=jax.device_count(),
        settings={k: str(v.dtype) for k, v in example.items()})
  runner = execute.make_runner(
      setting_fn, config.seed, example, num_settings=len(todo),
      chunk_size=config.sweep.chunk_size,
      memory_budget_bytes=config.sweep.memory_budget_gb * 2**30,
      vmap_width=width, cache_key=cache_key,
      max_chunk=(experiment.max_auto_chunk and experiment.max_auto_chunk(config))
      or execute.MAX_AUTO_CHUNK)
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


# results.csv is written for sweeps of at most this many rows (results.parquet always).
CSV_MAX_ROWS = 100_000
# The figure hooks see every row up to this many, else a seeded subsample of whole settings.
FIGURE_ROWS = 20_000


def finalize(workdir, config=None) -> dict:
  """Writes results.parquet (and results.csv up to `CSV_MAX_ROWS` rows), summary.csv,
  bounds.json and figures from the committed chunks.

  One pass over the chunks in setting order (`ChunkStore.merged`: a block of settings in
  memory at a time): rows are streamed to the files, summary.csv is merged group by group
  (`tables.GroupSummary`, batches that do not depend on the chunking, so it is bit-identical
  whatever the chunk sizes) and bounds.json's counts are summed, so memory does not grow
  with the number of settings. The figure hooks get the summary and at most `FIGURE_ROWS` rows
  (`figure_settings`)."""
  workdir = pathlib.Path(workdir)
  config = load_config(workdir) if config is None else config
  experiment, grid = prepare(config)
  store = store_lib.ChunkStore(workdir / 'chunks')
  done = store.done()
  if len(done) == 0:
    raise config_schema.ConfigError(
        f'--workdir={workdir} has no finished settings yet (no committed chunk under '
        f'{workdir / "chunks"}); run or resume the sweep (or its shards) with xdistill run.')
  inner = experiment.inner_axes(config) if experiment.inner_axes else {}
  num_rows = len(done) * Grid(inner).size
  chosen = figure_settings(done, Grid(inner).size, config.seed)
  axes = set(grid.axes) | set(inner)
  summary = tables.GroupSummary(experiment.group_by, exclude={'index', 'diverged'} | axes)
  bound_summary, diverged, sample = {}, 0, []
  with contextlib.ExitStack() as files:  # each file renamed into place only if all went well
    writers = [files.enter_context(tables.ParquetWriter(workdir / 'results.parquet'))]
    if num_rows <= CSV_MAX_ROWS:
      writers.append(files.enter_context(tables.CsvWriter(workdir / 'results.csv')))
    elif (workdir / 'results.csv').exists():  # from an earlier, smaller finalize: now stale
      (workdir / 'results.csv').unlink()
    for index, metrics in store.merged():
      table, part = results_rows(index, metrics, experiment, grid, config, inner)
      for writer in writers:
        writer.write(table)
      flagged = table['diverged']
      diverged += int(flagged.sum())
      bound_summary = merge_bound_summaries(bound_summary, part)
      # Diverged rows count in no statistic (floats and bools such as `*_violated` alike), but
      # their groups stay (with count 0).
      summary.add({k: np.where(flagged, np.nan, v) if k not in experiment.group_by
                   and v.dtype.kind in 'fb' else v for k, v in table.items()})
      sample.append(table if chosen is None else
                    tables.select(table, np.isin(table['index'], chosen)))
  summary = summary.result()
  tables.write_csv(workdir / 'summary.csv', summary)
  report = {'settings': int(grid.size), 'finished': int(len(done)),
            'diverged': diverged, 'bounds': bound_summary}
  tables.atomic_write_text(workdir / 'bounds.json', json.dumps(report, indent=2) + '\n')
  if len(done) < grid.size:
    _log(f'partial sweep: {len(done)} of {grid.size} settings finished; missing settings '
         f'{missing_ranges(done, grid.size)} (rerun the same xdistill run command, or the '
         'shards that hold them, to finish them)')
  if diverged:
    _log(f'{diverged} diverged setting(s) flagged in results.parquet and left out of the '
         'summary')
  if num_rows > CSV_MAX_ROWS:
    _log(f'{num_rows} rows: results.parquet only (results.csv is written up to '
         f'{CSV_MAX_ROWS} rows)')
  for line in bound_registry.report_lines(bound_summary):
    _log(line)
  sample = {k: np.concatenate([t[k] for t in sample]) for k in sample[0]}
  if chosen is not None:
    _log(f'figures drawn from a seeded subsample of {len(sample["index"])} of {num_rows} rows '
         '(summary.csv and bounds.json use every row)')
  with figures.drawn_in_children():  # each figure drawn on another core while the next is built
    paths = experiment.figures(sample, summary, config, workdir)
  for path in paths:
    _log(f'wrote {path}')
  return report


def figure_settings(done: np.ndarray, rows_per_setting: int, seed: int):
  """The settings whose rows the figure hooks get: None (all) for up to `FIGURE_ROWS` rows,
  else a sorted uniform sample without replacement of `done`, seeded by the sweep's seed. It
  depends on the finished settings alone, never on chunks or devices."""
  if len(done) * rows_per_setting <= FIGURE_ROWS:
    return None
  size = max(1, FIGURE_ROWS // rows_per_setting)
  return np.sort(np.random.default_rng(seed).choice(done, size, replace=False))


def results_rows(index, metrics, experiment, grid, config, inner_axes) -> tuple[dict, dict]:
  """The results rows of some settings (axis values, metrics, derived columns, `diverged`
  and the bound columns) and their bounds summary (`bound_registry.evaluate` on the healthy
  rows). Row-local: the rows of a batch are those of the whole table (each setting's rows
  stay together, which `derived` may rely on)."""
  table = _rows(index, grid, metrics, inner_axes)
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
  return table, bound_summary


_COUNTS = ('n', 'invalid', 'violations', 'exceeded')


def merge_bound_summaries(total: dict, part: dict) -> dict:
  """`bound_registry.evaluate` summaries of disjoint rows pooled: counts added, rates
  recomputed (violations / n, NaN when n = 0; None stays None for kinds not judged)."""
  merged = {}
  for name, entry in part.items():
    entry = dict(entry)
    if name in total:
      for key in _COUNTS:
        if entry.get(key) is not None:
          entry[key] += total[name][key]
    if entry.get('violations') is not None:
      entry['rate'] = entry['violations'] / entry['n'] if entry['n'] else math.nan
    merged[name] = entry
  return {**total, **merged}


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
