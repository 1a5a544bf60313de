"""Sweep time and peak memory from 10 to 100,000 protocol-G settings (the engine end to end).

  python benchmarks/bench_scaling.py [--sizes 10 100 1000 10000 100000] [--steps 100]

Each size runs `xdistill run` in a fresh process (compilation, chunked execution with chunk
commits, results, summary, bounds and figures) with a 0.5 GiB memory budget, so chunking starts
once a sweep no longer fits. Prints wall time, time per setting and the child's peak resident
memory. Steps are reduced from protocol G's 1000 (default 100) to keep the largest size
affordable on a laptop; the point is linearity, not the absolute number.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(size, steps, budget_gb, workdir, extra=()):
  """One `xdistill run` of protocol G with `size` settings in a fresh process.

  Returns:
    (wall seconds, peak resident GiB of the whole process, chunk size, CPU seconds
    (user + sys of the process and its children)).
  """
  args = [sys.executable, '-m', 'xdistill_jax.cli', 'run', '--config=configs/ntdh_overlap.py',
          f'--workdir={workdir}', '--config.overlaps=(0,10)', f'--config.runs={size // 2}',
          f'--config.steps={steps}', f'--config.sweep.memory_budget_gb={budget_gb}',
          '--config.sweep.progress=False', *extra]
  start = time.perf_counter()
  process = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  elapsed = time.perf_counter() - start
  if status:
    raise RuntimeError(stderr)
  chunk = re.search(r'chunks of (\d+)', stderr).group(1)
  return (elapsed, usage.ru_maxrss / 2**20, int(chunk),
          usage.ru_utime + usage.ru_stime)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[10, 100, 1000, 10000, 100000])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--budget-gb', type=float, default=0.5)
  args = parser.parse_args(argv)
  print(f'{os.cpu_count()} cores; protocol G with {args.steps} steps; memory budget '
        f'{args.budget_gb} GiB')
  print(f'{"settings":>9} {"chunk":>7} {"wall s":>8} {"ms/setting":>11} {"peak GiB":>9}')
  with tempfile.TemporaryDirectory() as tmp:
    for size in args.sizes:
      elapsed, peak, chunk, _ = run(size, args.steps, args.budget_gb, pathlib.Path(tmp) / str(size))
      print(f'{size:>9} {chunk:>7} {elapsed:>8.1f} {1e3 * elapsed / size:>11.2f} {peak:>9.2f}',
            flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
