"""Shared by the benchmarks: a sweep through the engine, timed as compile + run."""

import time

import jax
import numpy as np

from xdistill_jax.sweep import execute
from xdistill_jax.sweep import runner


def default_width(grid, setting_fn=None, seed=0) -> int:
  """The vmap width `xdistill run` picks for a new sweep of this grid on this backend (on an
  accelerator, timed on `setting_fn`)."""
  measure = runner.width_measure(lambda: setting_fn, seed, grid) if setting_fn else None
  return runner.automatic_width(grid, measure)[0]


def sweep(setting_fn, seed, grid, width=None):
  """The engine's path (compile for the chunk, run every chunk, fetch the metrics).

  Returns:
    (metrics {name: [settings, ...]}, compile seconds, run seconds).
  """
  start = time.perf_counter()
  runner = execute.make_runner(setting_fn, seed, grid.traced_settings(
      np.arange(1)), grid.size, vmap_width=width or default_width(grid, setting_fn, seed))
  compiled = time.perf_counter()
  index = np.arange(grid.size)
  out = {}
  for b in range(0, grid.size, runner.chunk_size):
    part = runner(grid.key_index(index[b:b + runner.chunk_size]),
                  grid.traced_settings(index[b:b + runner.chunk_size]))
    for k, v in jax.tree.map(np.asarray, part).items():
      out.setdefault(k, []).append(v)
  done = time.perf_counter()
  return {k: np.concatenate(v) for k, v in out.items()}, compiled - start, done - compiled
