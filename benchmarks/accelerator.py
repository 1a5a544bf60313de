"""Runs every benchmark in benchmarks/ at one of two sizes and writes one JSON report.

  python benchmarks/accelerator.py [--sizes accelerator|cpu] [--out accelerator.json]

`accelerator` sizes fit an accelerator in about 5 minutes in all (each benchmark has its own
time limit, `LIMIT_S`); `cpu` sizes only prove on a CPU that every benchmark runs end to end.
Each benchmark runs in a fresh process (this one never touches the accelerator, so every
child gets all of its memory); the report holds the machine, each command, its exit status,
wall and CPU time (user + sys of the process and what it waited for), its output lines (the
numbers each benchmark prints) and the JSON of those that write one.
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent

# name -> (script, arguments, time limit in s) at each size. Accelerator targets: protocol G's
# 600 settings in < 1 s of run time (bench_ntdh_overlap), >= 10^5 protocol-G settings per
# minute (bench_scaling at 1000 steps).
SIZES = {
    'accelerator': {
        'ntdh_overlap': ('bench_ntdh_overlap.py', ['--runs=100', '--loop-settings=20'], 45),
        'scaling': ('bench_scaling.py', ['--sizes', '600', '10000', '100000', '--steps', '1000'],
                    90),
        'memory': ('bench_memory.py', ['--sizes', '100000', '300000', '--steps', '100'], 75),
        'table1': ('bench_table1.py', ['--runs=100', '--subset-runs=16', '--skip-cli'], 90),
    },
    'cpu': {
        'ntdh_overlap': ('bench_ntdh_overlap.py', ['--runs=4', '--loop-settings=4'], 600),
        'scaling': ('bench_scaling.py', ['--sizes', '10', '100', '--steps', '10'], 600),
        'memory': ('bench_memory.py', ['--sizes', '200', '400', '--steps', '10'], 600),
        'table1': ('bench_table1.py', ['--runs=1', '--subset-runs=1', '--skip-cli'], 900),
    },
}
# The machine as JAX sees it, asked in a child process (see the module docstring).
_DEVICE_QUERY = ('import json, jax; print(json.dumps({"jax": jax.__version__, "backend": '
                 'jax.default_backend(), "devices": [str(d) for d in jax.devices()]}))')


def machine() -> dict:
  out = subprocess.run([sys.executable, '-c', _DEVICE_QUERY], capture_output=True, text=True,
                       timeout=300)
  info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {
      'error': out.stderr.strip().splitlines()[-1:]}
  return info | {'host': platform.node(), 'cores': os.cpu_count(),
                 'python': platform.python_version(), 'load_average': os.getloadavg()}


def run_one(script: str, args: list[str], limit_s: float) -> dict:
  """One benchmark in a fresh process; a `--json` file is passed to those that write one."""
  with tempfile.TemporaryDirectory() as tmp:
    extra = ['--json', f'{tmp}/out.json'] if script == 'bench_memory.py' else []
    command = [sys.executable, script, *args, *extra]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
      output, _ = process.communicate(timeout=limit_s)
      timed_out = False
    except subprocess.TimeoutExpired:
      process.kill()
      output, _ = process.communicate()
      timed_out = True
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {'command': ' '.join(command[1:len(command) - len(extra)]), 'limit_s': limit_s,
              'returncode': process.returncode, 'timed_out': timed_out, 'wall_s': wall,
              'cpu_s': after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
              'output': output.splitlines()[-60:]}
    if extra and pathlib.Path(extra[1]).exists():
      result['json'] = json.loads(pathlib.Path(extra[1]).read_text())
    return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', choices=sorted(SIZES), default='accelerator')
  parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path('accelerator.json'))
  parser.add_argument('--only', nargs='+', choices=sorted(SIZES['cpu']),
                      help='run these benchmarks only')
  args = parser.parse_args(argv)
  report = {'sizes': args.sizes, 'machine': machine(), 'benchmarks': {}}
  start = time.perf_counter()
  for name, (script, bench_args, limit_s) in SIZES[args.sizes].items():
    if args.only and name not in args.only:
      continue
    print(f'{name}: {script} {" ".join(bench_args)} (limit {limit_s} s)', flush=True)
    result = report['benchmarks'][name] = run_one(script, bench_args, limit_s)
    print('\n'.join('  ' + line for line in result['output'][-12:]), flush=True)
    print(f'  -> exit {result["returncode"]}{" (timed out)" if result["timed_out"] else ""}, '
          f'{result["wall_s"]:.1f} s', flush=True)
  report['total_wall_s'] = time.perf_counter() - start
  report['load_average_after'] = os.getloadavg()
  args.out.write_text(json.dumps(report, indent=2) + '\n')
  print(f'wrote {args.out} ({report["total_wall_s"]:.0f} s in all)')
  failed = [n for n, r in report['benchmarks'].items() if r['returncode'] != 0]
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
