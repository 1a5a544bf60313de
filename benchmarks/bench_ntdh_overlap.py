"""Protocol G, 600 settings: one vmapped sweep against one setting at a time, side by side.

  python benchmarks/bench_ntdh_overlap.py [--runs=100] [--loop-settings=600]

Prints the full sweep's wall time including compilation (through the sweep engine, as
`xdistill run` does it, minus file output), the same settings run one at a time by a single
jitted setting function in a Python loop, their ratio, where the sweep's time goes, and the
peak resident memory. Results are checked to agree between the two ways.
"""

import argparse
import os
import resource
import sys
import time

os.environ.setdefault('XDISTILL_CACHE_DIR', '')  # cold: no persistent compilation cache
from xdistill_jax import cli  # noqa: E402

cli.configure_jax()  # the CLI's XLA settings: a device per core, O1 on CPU-only installs

import jax  # noqa: E402
import numpy as np  # noqa: E402

import engine_timing  # noqa: E402  (benchmarks/)

from xdistill_jax import config_files  # noqa: E402
from xdistill_jax.experiments import ntdh_overlap  # noqa: E402
from xdistill_jax.sweep.grid import Grid  # noqa: E402


def _now():
  return time.perf_counter()


def one_at_a_time(config, grid, count):
  """One jit of the single-setting function, then a Python loop over settings."""
  fn = jax.jit(ntdh_overlap.make_setting_fn(config))
  key = jax.random.key(config.seed)
  start = _now()
  results = []
  for i in range(count):
    setting = {k: v[0] for k, v in grid.traced_settings(np.array([i])).items()}
    out = fn(jax.random.fold_in(key, int(grid.key_index(np.array([i]))[0])), setting)
    results.append(jax.tree.map(np.asarray, out))
    if i == 0:
      first = _now() - start
  total = _now() - start
  return results, first, total


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=100)
  parser.add_argument('--loop-settings', type=int, default=0,
                      help='settings for the one-at-a-time loop (default: all)')
  args = parser.parse_args(argv)
  config = config_files.load('ntdh_overlap')
  config.runs = args.runs
  grid = Grid(ntdh_overlap.axes(config))
  width = engine_timing.default_width(grid, ntdh_overlap.make_setting_fn(config), config.seed)
  print(f'machine: {os.cpu_count()} cores, jax {jax.__version__}, backend '
        f'{jax.default_backend()}, {jax.device_count()} device(s), vmap width {width}, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')

  out, compile_s, run_s = engine_timing.sweep(ntdh_overlap.make_setting_fn(config), config.seed,
                                              grid, width)
  sweep_s = compile_s + run_s
  print(f'vmapped sweep: {grid.size} settings in {sweep_s:.2f} s '
        f'(compile {compile_s:.2f} s, run {run_s:.2f} s, {grid.size / run_s:.0f} settings/s)')

  count = args.loop_settings or grid.size
  results, first, total = one_at_a_time(config, grid, count)
  per = (total - first) / max(count - 1, 1)
  loop_s = first + per * (grid.size - 1)
  note = '' if count == grid.size else f' (measured {count}, extrapolated)'
  print(f'one at a time: {grid.size} settings in {loop_s:.2f} s{note} '
        f'(first call incl. compile {first:.2f} s, then {per * 1e3:.1f} ms/setting)')
  print(f'ratio loop / sweep: {loop_s / sweep_s:.1f}x (compilation included in both)')

  worst = max(float(np.nanmax(np.abs(results[i][k] - out[k][i]))) for i in range(count)
              for k in ('kd_acc', 'baseline_acc', 'teacher_acc', 'kl_test'))
  print(f'max |sweep − loop| over accuracies and kl_test: {worst:.2e}')
  for o in config.overlaps:
    rows = grid.settings(np.arange(grid.size))['overlap'] == o
    delta = 100 * (out['kd_acc'][rows] - out['baseline_acc'][rows])
    print(f'  overlap {o:2d}: delta {delta.mean():+.2f} ± {delta.std(ddof=1):.2f}')
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'peak resident memory: {peak:.2f} GiB')
  return 0


if __name__ == '__main__':
  sys.exit(main())
