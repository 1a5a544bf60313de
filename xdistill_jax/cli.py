"""The `xdistill` command: `run` a sweep, re-`plot` a work directory.

  xdistill run --config=configs/ntdh_overlap.py --workdir=runs/g --config.runs=10
  xdistill plot --workdir=runs/g

Only flag parsing happens here (the flax-examples shape); the work is in `xdistill_jax.sweep`.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from xdistill_jax.config_schema import ConfigError

COMMANDS = ('run', 'plot', 'analyze')
_USAGE = ('usage: xdistill {run,plot,analyze} [flags]\n'
          '  run      --config=configs/NAME.py --workdir=DIR [--config.FIELD=VALUE ...]\n'
          '  plot     --workdir=DIR   (rewrites results, summary and figures of a sweep)\n'
          '  analyze  --teacher=T.npy --student=S.npy --labels=Y.npy --workdir=DIR  '
          '(theory for your own models; xdistill analyze --help)\n')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results, checkpoints, figures.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-host GPU or TPU).')


def _main(command: str):
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if not _WORKDIR.value:
      raise app.UsageError('--workdir is required.')
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    if _DISTRIBUTED.value:
      import jax
      jax.distributed.initialize()
    from xdistill_jax.sweep import runner  # imported after parsing: keeps --help fast
    try:
      if command == 'run':
        if _CONFIG.value is None:
          raise app.UsageError('--config is required.')
        runner.run(_CONFIG.value, _WORKDIR.value)
      else:
        runner.finalize(_WORKDIR.value)
    except ConfigError as error:
      print(f'xdistill: error: {error}', file=sys.stderr)
      sys.exit(2)
  return main


def configure_jax() -> None:
  """XLA settings for sweeps; must run before JAX starts a backend. Each is skipped when the
  user already set it (XLA_FLAGS, JAX_COMPILATION_CACHE_DIR).

  - One XLA CPU device per core (at least two), so chunk shards run in parallel on a CPU.
    Results never depend on the device count: keys come from setting indices, and every count
    of two or more compiles the same partitioned per-device program (a single device compiles
    an unpartitioned one, whose reductions may round differently in the last bit).
  - No intra-op (Eigen) threads on the CPU: parallelism comes from the devices, and with
    several CPU devices jaxlib's batched LAPACK kernels (Cholesky, triangular solves) can
    deadlock waiting for a shared intra-op pool that the devices' own work occupies.
  - On CPU-only installs, LLVM optimisation level 1: sweeps are dominated by compiling many
    small kernels, and O1 compiles them ~35% faster with no slower steps (BENCHMARKS.md).
  - A persistent compilation cache (~/.cache/xdistill_jax, or $XDISTILL_CACHE_DIR; set it to
    an empty string to disable): re-running a sweep with another seed or overlap reuses the
    compiled program, since those are traced values.
  """
  import importlib.util
  import jax
  flags_set = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags_set:
    jax.config.update('jax_num_cpu_devices', max(2, os.cpu_count() or 1))
  accelerator = any(importlib.util.find_spec(name) for name in (
      'jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'libtpu'))
  extra = []
  if 'xla_cpu_multi_thread_eigen' not in flags_set:
    extra.append('--xla_cpu_multi_thread_eigen=false')
  if not accelerator and 'xla_backend_optimization_level' not in flags_set:
    extra.append('--xla_backend_optimization_level=1')
  os.environ['XLA_FLAGS'] = ' '.join([flags_set] + extra).strip()
  cache = os.environ.get('XDISTILL_CACHE_DIR',
                         os.path.join(os.path.expanduser('~'), '.cache', 'xdistill_jax'))
  if cache and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  configure_jax()
  if len(argv) < 2 or argv[1] not in COMMANDS:
    sys.stderr.write(_USAGE)
    sys.exit(2)
  command = argv.pop(1)
  if command == 'analyze':
    from xdistill_jax import analyze  # its own argparse flags
    sys.exit(analyze.main(argv[1:]))
  app.run(_main(command), argv=argv)


if __name__ == '__main__':
  main()
