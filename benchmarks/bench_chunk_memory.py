"""Peak resident memory of protocol-S settings run in one long chunk against short chunks.

  python benchmarks/bench_chunk_memory.py [--settings=20] [--steps=1000] [--chunk=4] [--devices=2]

On two or more XLA:CPU devices the process's resident memory grows with the training steps
one execution runs (not on one device), which is why the protocol-S experiments cap their
automatic chunks (`ntdh_kclass.max_auto_chunk`). This runs ntdh_kclass's setting program
(Bayes floors off) over `settings` settings, first as one chunk, then in chunks of `chunk`
in a fresh process each, and prints each one's peak RSS and run time.
"""

import argparse
import os
import resource
import subprocess
import sys
import time


def child(settings: int, steps: int, chunk: int, devices: int) -> None:
  os.environ['XDISTILL_CACHE_DIR'] = ''
  from xdistill_jax import cli
  cli.configure_jax()
  import jax
  jax.config.update('jax_num_cpu_devices', devices)
  import numpy as np
  from xdistill_jax import config_files
  from xdistill_jax.experiments import ntdh_kclass
  from xdistill_jax.sweep import execute
  from xdistill_jax.sweep.grid import Grid
  config = config_files.load('ntdh_kclass')
  config.steps, config.bayes_samples = steps, 0
  grid = Grid(ntdh_kclass.axes(config))
  peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
  run = execute.make_runner(ntdh_kclass.make_setting_fn(config), 0,
                            grid.traced_settings(np.arange(1)), settings, chunk_size=chunk,
                            vmap_width=1)
  compiled = peak()
  start = time.perf_counter()
  for begin in range(0, settings, chunk):
    index = np.arange(begin, min(begin + chunk, settings))
    jax.block_until_ready(run(grid.key_index(index), grid.traced_settings(index)))
  print(f'{settings} settings × {steps} steps in chunks of {chunk} on {devices} device(s): '
        f'run {time.perf_counter() - start:.1f} s, peak RSS {peak():.2f} GiB '
        f'(after compiling {compiled:.2f} GiB)', flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--settings', type=int, default=20)
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--chunk', type=int, default=4)
  parser.add_argument('--devices', type=int, default=2)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args.settings, args.steps, args.chunk, args.devices)
    return 0
  print(f'load average {os.getloadavg()}')
  for chunk in (args.settings, args.chunk):
    subprocess.run([sys.executable, __file__, '--child', f'--settings={args.settings}',
                    f'--steps={args.steps}', f'--chunk={chunk}', f'--devices={args.devices}'],
                   check=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
