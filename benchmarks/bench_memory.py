"""Peak memory and marginal time per setting of protocol-G sweeps at 10^5 and 10^6 settings.

  python benchmarks/bench_memory.py [--sizes 100000 1000000] [--steps 100] [--json out.json]
  python benchmarks/bench_memory.py --results-only [--sizes 100000 1000000]

Each size is one `xdistill run` of configs/ntdh_overlap.py (overlaps 0 and 10, `runs` = size/2,
100 steps) in a fresh process, end to end: compilation, chunks, results.parquet, summary.csv,
bounds.json and figures. Reports the whole process's peak resident memory (target: at most
1.5 GiB at every size) and the marginal time per setting, the slope of wall and CPU time
between consecutive sizes (target: at most 1.3 ms), which leaves start-up and compilation out.

`--results-only` measures the results stage alone (`xdistill plot`: results.parquet,
summary.csv, bounds.json, figures) on a workdir of committed chunks made up from a real
256-setting sweep's metrics (setting i gets those of setting i mod 256), which reaches 10^6
and more settings in minutes where training them would take hours on a laptop.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import bench_scaling  # benchmarks/

ROOT = pathlib.Path(__file__).resolve().parents[1]

TARGET_GIB, TARGET_MS = 1.5, 1.3


def measure(sizes, steps, budget_gb=0.5):
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in sizes:
      wall, peak, chunk, cpu = bench_scaling.run(size, steps, budget_gb,
                                                 pathlib.Path(tmp) / str(size))
      rows.append({'settings': size, 'chunk': chunk, 'wall_s': wall, 'cpu_s': cpu,
                   'peak_gib': peak, 'load_average': os.getloadavg()})
      print(f'{size:>9} settings: {wall:8.1f} s wall, {cpu:8.1f} s cpu, peak {peak:.2f} GiB '
            f'(chunks of {chunk}; load {os.getloadavg()[0]:.1f})', flush=True)
  slope = lambda a, b, key: 1e3 * (b[key] - a[key]) / (b['settings'] - a['settings'])
  slopes = [{'between': [a['settings'], b['settings']],
             'wall_ms_per_setting': slope(a, b, 'wall_s'),
             'cpu_ms_per_setting': slope(a, b, 'cpu_s')} for a, b in zip(rows, rows[1:])]
  return {'benchmark': 'memory', 'steps': steps, 'cores': os.cpu_count(), 'runs': rows,
          'marginal': slopes, 'target_peak_gib': TARGET_GIB, 'target_ms_per_setting': TARGET_MS,
          'peak_within_target': all(r['peak_gib'] <= TARGET_GIB for r in rows)}


def make_up_chunks(workdir: pathlib.Path, size: int, steps: int, real: int = 256) -> None:
  """A protocol-G workdir of `size` committed settings (config.json and chunks of 4096),
  with the metrics of a real sweep of `real` settings repeated."""
  from xdistill_jax import cli
  cli.configure_jax()
  from xdistill_jax import config_files
  from xdistill_jax.sweep import runner
  from xdistill_jax.sweep import store as store_lib
  config = config_files.load('ntdh_overlap')
  config.overlaps, config.steps, config.sweep.progress = (0, 10), steps, False
  config.runs = real // 2
  runner.run(config, workdir / 'real')
  _, metrics = store_lib.ChunkStore(workdir / 'real' / 'chunks').assemble()
  config.runs = size // 2
  _, grid = runner.prepare(config)
  runner._write_config(workdir, config, grid)
  store = store_lib.ChunkStore(workdir / 'chunks')
  for begin in range(0, grid.size, 4096):
    index = np.arange(begin, min(begin + 4096, grid.size))
    store.commit(index, {k: v[index % real] for k, v in metrics.items()})


def measure_results(sizes, steps):
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in sizes:
      workdir = pathlib.Path(tmp) / str(size)
      subprocess.run([sys.executable, __file__, '--make-up', str(workdir), str(size),
                      str(steps)], check=True, cwd=ROOT, capture_output=True)
      start = time.perf_counter()
      process = subprocess.Popen([sys.executable, '-m', 'xdistill_jax.cli', 'plot',
                                  f'--workdir={workdir}'], cwd=ROOT, stderr=subprocess.PIPE,
                                 text=True)
      stderr = process.stderr.read()
      _, status, usage = os.wait4(process.pid, 0)
      if status:
        raise RuntimeError(stderr)
      wall = time.perf_counter() - start
      rows.append({'settings': size, 'wall_s': wall, 'cpu_s': usage.ru_utime + usage.ru_stime,
                   'peak_gib': usage.ru_maxrss / 2**20, 'load_average': os.getloadavg(),
                   'parquet_mib': (workdir / 'results.parquet').stat().st_size / 2**20})
      print(f'{size:>9} settings, results stage only: {wall:7.1f} s wall, '
            f'{rows[-1]["cpu_s"]:7.1f} s cpu, peak {rows[-1]["peak_gib"]:.2f} GiB '
            f'(load {os.getloadavg()[0]:.1f})', flush=True)
      shutil.rmtree(workdir)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--json', type=pathlib.Path, help='also write the numbers here')
  parser.add_argument('--results-only', action='store_true',
                      help='time `xdistill plot` on made-up chunks (see above)')
  parser.add_argument('--make-up', nargs=3, metavar=('WORKDIR', 'SIZE', 'STEPS'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.make_up:
    make_up_chunks(pathlib.Path(args.make_up[0]), int(args.make_up[1]), int(args.make_up[2]))
    return 0
  if args.results_only:
    report = {'benchmark': 'memory, results stage', 'steps': args.steps,
              'runs': measure_results(sorted(args.sizes), args.steps)}
    if args.json:
      args.json.write_text(json.dumps(report, indent=2) + '\n')
    return 0
  report = measure(sorted(args.sizes), args.steps)
  for s in report['marginal']:
    print(f'marginal {s["between"][0]} -> {s["between"][1]}: {s["wall_ms_per_setting"]:.3f} ms '
          f'wall, {s["cpu_ms_per_setting"]:.3f} ms cpu per setting (target {TARGET_MS})')
  if args.json:
    args.json.write_text(json.dumps(report, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
