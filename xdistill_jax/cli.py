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


def use_all_cpu_cores() -> None:
  """One XLA CPU device per core (at least two), so chunk shards run in parallel on a CPU.

  Results never depend on the device count: keys come from setting indices, and every count
  of two or more compiles the same partitioned per-device program (a single device compiles
  an unpartitioned one, whose reductions may round differently in the last bit). Skipped
  when XLA_FLAGS already sets a host device count. Must run before JAX starts a backend.
  """
  if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
    import jax
    jax.config.update('jax_num_cpu_devices', max(2, os.cpu_count() or 1))


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  use_all_cpu_cores()
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
