"""The main job against its batched-PyTorch peer, whole process, side by side in one run.

  python benchmarks/bench_peer.py [--repeats=3] [--runs=100] [--peer-threads=2]
  python benchmarks/bench_peer.py --profile [--runs=100]

Times three commands, each a fresh process with a fresh workdir:
  xdistill cold  `xdistill run --config=configs/ntdh_overlap.py` with an empty compilation
                 cache directory (a new XDISTILL_CACHE_DIR each time);
  xdistill warm  the same with a cache directory a warm-up run filled;
  peer           `python benchmarks/peer_torch.py` (benchmarks/peer_torch.py; needs the
                 `bench` extra: pip install -e '.[bench]').
The warm-up run (untimed) also gives the reference summary.csv: every peer run checks its
per-overlap mean Δ against it within standard errors and the benchmark fails if one does not
match. The order of the three rotates from repeat to repeat. Prints each run's wall time and
CPU time (user + sys of the process and its children), the medians, the load average before
and after, and the ratios of the medians.

--profile instead runs `xdistill run` under cProfile, once cold and once warm, and prints
where its time goes: start-up imports, then the inclusive time of each phase of the run
(with the imports made inside it) and of the functions under it that take the most.
"""

import argparse
import os
import pstats
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict, log: pathlib.Path) -> tuple[float, float, int]:
  """Runs `command` to completion: (wall s, user + sys CPU s, peak RSS KiB); fails loudly."""
  with open(log, 'w') as out:
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
  process.returncode = os.waitstatus_to_exitcode(status)
  if process.returncode != 0:
    sys.exit(f'bench_peer: {" ".join(command)} exited with {process.returncode}; its output '
             f'(tail):\n{log.read_text()[-2000:]}')
  return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def commands(runs: int, reference: pathlib.Path, peer_threads: int = 2):
  """Builders (tag → command, environment) of the three variants for one repeat."""
  xdistill = pathlib.Path(sys.executable).with_name('xdistill')
  # As on a user's machine: no JAX cache directory of the caller's, and Python writes the
  # package's bytecode (the untimed warm-up writes it; some sandboxes set
  # PYTHONDONTWRITEBYTECODE, which would add ≈ 0.1 s of compiling sources to every run).
  base_env = {k: v for k, v in os.environ.items()
              if k not in ('JAX_COMPILATION_CACHE_DIR', 'PYTHONDONTWRITEBYTECODE')}

  def run_xdistill(cache: pathlib.Path, workdir: pathlib.Path):
    return ([str(xdistill), 'run', '--config=configs/ntdh_overlap.py', f'--workdir={workdir}',
             f'--config.runs={runs}'], base_env | {'XDISTILL_CACHE_DIR': str(cache)})

  def peer(workdir: pathlib.Path):
    return ([sys.executable, 'benchmarks/peer_torch.py', f'--runs={runs}', f'--out={workdir}',
             f'--compare={reference}', f'--threads={peer_threads}'], base_env)

  return run_xdistill, peer


# (file suffix, function) of the phases of `xdistill run`, outermost first.
PHASES = (
    ('xdistill_jax/cli.py', 'main', 'whole command after start-up imports'),
    ('xdistill_jax/cli.py', '_parse_flags', 'flags and config file'),
    ('xdistill_jax/sweep/runner.py', 'prepare', 'config checks and grid (first call)'),
    ('xdistill_jax/sweep/runner.py', '_write_config', 'config.json'),
    ('xdistill_jax/sweep/execute.py', 'make_runner', 'tracing and compilation'),
    ('xdistill_jax/sweep/execute.py', '__call__', 'executing the chunks'),
    ('xdistill_jax/sweep/store.py', 'commit', 'committing chunks'),
    ('xdistill_jax/sweep/runner.py', 'finalize', 'results, summary, bounds, figures'),
    ('xdistill_jax/bound_registry.py', 'evaluate', 'bounds (inside finalize)'),
    ('xdistill_jax/experiments/ntdh_overlap.py', 'make_figures', 'figures (inside finalize)'),
)


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float | None:
  """Inclusive seconds of the function `name` defined in a file ending with `suffix`."""
  times = [v[3] for (file, _, func), v in stats.stats.items()
           if file.endswith(suffix) and func == name]
  return max(times) if times else None


def _imports(stats: pstats.Stats) -> float:
  """Inclusive seconds of outermost imports (importlib's `_find_and_load`)."""
  times = [v[3] for (file, _, func), v in stats.stats.items() if func == '_find_and_load']
  return max(times, default=0.0)


def profile(runs: int, scratch: pathlib.Path, run_xdistill) -> None:
  """cProfile of one cold and one warm `xdistill run` (wall clock), phase by phase."""
  # `cli.main`, not the console script: its `entry` ends with `os._exit`, before cProfile
  # could write the profile.
  script = scratch / 'xdistill_main.py'
  script.write_text('from xdistill_jax import cli\ncli.main()\n')
  for tag, cache in (('cold', scratch / 'profile_cold_cache'),
                     ('warm', scratch / 'warm_cache')):
    command, env = run_xdistill(cache, scratch / f'profile_{tag}')
    out = scratch / f'profile_{tag}.prof'
    wall, cpu, _ = timed([sys.executable, '-m', 'cProfile', '-o', str(out), str(script)]
                         + command[1:], env, scratch / f'profile_{tag}.log')
    stats = pstats.Stats(str(out))
    main_s = _cumulative(stats, 'xdistill_jax/cli.py', 'main') or 0.0
    print(f'{tag}: {wall:.2f} s wall, {cpu:.2f} s cpu under cProfile '
          f'(load {os.getloadavg()[0]:.2f}); profile {out}')
    print(f'  {stats.total_tt:7.2f} s  profiled in all; start-up (imports of the console script)'
          f' {stats.total_tt - main_s:.2f} s; imports in all {_imports(stats):.2f} s')
    for suffix, name, what in PHASES:
      seconds = _cumulative(stats, suffix, name)
      shown = '    n/a' if seconds is None else f'{seconds:7.2f}'
      print(f'  {shown} s  {pathlib.Path(suffix).name}:{name}  ({what})')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--runs', type=int, default=100, help='seeds per overlap (both sides)')
  parser.add_argument('--peer-threads', type=int, default=2,
                      help="the peer's torch.set_num_threads (2: both cores)")
  parser.add_argument('--profile', action='store_true',
                      help='profile xdistill run (cold, warm) instead of timing')
  args = parser.parse_args(argv)
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='bench_peer_'))
  warm_cache = scratch / 'warm_cache'
  reference = scratch / 'reference'
  run_xdistill, peer = commands(args.runs, reference / 'summary.csv', args.peer_threads)
  print(f'machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, '
        f'load average {os.getloadavg()[0]:.2f} (1 min) before; scratch {scratch}', flush=True)

  # Untimed warm-up: fills the warm cache and the OS file cache, writes the reference summary.
  timed(*run_xdistill(warm_cache, reference), scratch / 'warmup_xdistill.log')
  if args.profile:
    return profile(args.runs, scratch, run_xdistill)
  timed(*peer(scratch / 'warmup_peer'), scratch / 'warmup_peer.log')
  print('warm-up done; peer Δ check against xdistill:\n' + ''.join(
      line + '\n' for line in (scratch / 'warmup_peer.log').read_text().splitlines()
      if 'check' in line or 'same' in line), end='', flush=True)

  variants = {
      'xdistill cold': lambda i: run_xdistill(scratch / f'cold_cache_{i}', scratch / f'cold_{i}'),
      'xdistill warm': lambda i: run_xdistill(warm_cache, scratch / f'warm_{i}'),
      'peer (torch)': lambda i: peer(scratch / f'peer_{i}'),
  }
  names = list(variants)
  times = {name: [] for name in names}
  for i in range(args.repeats):
    for name in names[i % 3:] + names[:i % 3]:  # rotate the order
      wall, cpu, rss = timed(*variants[name](i), scratch / f'{name.split()[0]}_{i}.log')
      times[name].append((wall, cpu))
      print(f'  repeat {i}: {name:14s} {wall:6.2f} s wall  {cpu:6.2f} s cpu  '
            f'{rss / 2**20:.2f} GiB peak RSS  (load {os.getloadavg()[0]:.2f})', flush=True)

  median = {name: [statistics.median(t[k] for t in times[name]) for k in (0, 1)]
            for name in names}
  print(f'medians of {args.repeats} (load average {os.getloadavg()[0]:.2f} after):')
  for name in names:
    print(f'  {name:14s} {median[name][0]:6.2f} s wall  {median[name][1]:6.2f} s cpu')
  ratio = lambda a, b, k: median[a][k] / median[b][k]
  for a, b in (('peer (torch)', 'xdistill cold'), ('peer (torch)', 'xdistill warm'),
               ('xdistill cold', 'xdistill warm')):
    print(f'  {a} / {b}: {ratio(a, b, 0):.2f}x wall, {ratio(a, b, 1):.2f}x cpu')


if __name__ == '__main__':
  main()
