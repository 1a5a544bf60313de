"""Shared by the benchmarks: a sweep through the engine, timed as compile + run."""

import time

import jax
import numpy as np

from xdistill_jax.sweep import execute


def default_width(grid) -> int:
  """The vmap width `xdistill run` picks for this grid on this backend."""
  return min(execute.default_vmap_width(), max(1, grid.size // 4))


def sweep(setting_fn, seed, grid, width=None):
  """The engine's path (compile for the chunk, run every chunk, fetch the metrics).

  Returns:
    (metrics {name: [settings, ...]}, compile seconds, run seconds).
  """
  start = time.perf_counter()
  runner = execute.make_runner(setting_fn, jax.random.key(seed), grid.traced_settings(
      np.arange(1)), grid.size, vmap_width=width or default_width(grid))
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
