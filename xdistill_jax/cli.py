"""The `xdistill` command: `run` a sweep, re-`plot` a work directory.

  xdistill run --config=configs/ntdh_overlap.py --workdir=runs/g --config.runs=10
  xdistill plot --workdir=runs/g

Only flag parsing happens here (the flax-examples shape); the work is in `xdistill_jax.sweep`.
Every user error (a bad flag, config file, config field or value, work directory) is reported
before anything compiles as one line `xdistill: error: ...` on stderr, with exit status 2.
"""

import importlib.util
import os
import re
import sys

import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from xdistill_jax import config_schema
from xdistill_jax.config_schema import ConfigError

COMMANDS = ('run', 'plot', 'analyze', 'reproduce')
_USAGE = ('usage: xdistill {run,plot,analyze,reproduce} [flags]\n'
          '  run      --config=configs/NAME.py --workdir=DIR [--config.FIELD=VALUE ...]\n'
          '  plot     --workdir=DIR   (rewrites results, summary and figures of a sweep)\n'
          '  analyze  --teacher=T.npy --student=S.npy --labels=Y.npy --workdir=DIR  '
          '(theory for your own models; xdistill analyze --help)\n'
          '  reproduce [--claims=ID,...] [--workdir=DIR] [--quick]  (the papers\' claims as '
          'tests; REPRODUCTION.md)\n')

_HELP_FLAGS = {'-h', '--help', '-?', '--helpshort', '--helpfull', '--helpxml'}

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results, checkpoints, figures.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first, which finds the other '
    'processes itself (SLURM, TPU VMs, Kubernetes, ...).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0 for a multi-process sweep (with '
    '--num_processes and --process_id; passed to jax.distributed.initialize).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes of the sweep.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes-1.')
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout', 30, 'Seconds after which a silent process counts as dead and every '
    'other process of a multi-process sweep stops with an error.')
_CLAIMS = flags.DEFINE_string(
    'claims', None, 'xdistill reproduce: comma-separated claim ids (default: every claim).')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'xdistill reproduce: the reduced sweeps (docs/reproduction.md).')
_SHARD = flags.DEFINE_string(
    'shard', None, 'I/N: run only shard I of N (contiguous blocks of settings) into --workdir, '
    'for job arrays; finalize later with xdistill plot.')


def fail(message: str):
  """A user error: one line `xdistill: error: ...` on stderr, exit status 2."""
  print(f'xdistill: error: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  sys.exit(2)


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config in `argv` (`--config=X` or `--config X`), else None."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(spec: str):
  """`get_config(*args)` of the file in `spec` ('path.py' or 'path.py:arg'), or a user error."""
  path, *args = spec.split(':', 1)
  if not os.path.isfile(path):
    fail(f'--config={spec}: {path} is not a file')
  try:
    module_spec = importlib.util.spec_from_file_location('_xdistill_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except Exception as error:  # a user file: any failure is the user's to fix
    fail(f'--config={spec}: cannot load {path}: {type(error).__name__}: {error}')
  if not callable(getattr(module, 'get_config', None)):
    fail(f'--config={spec}: {path} has no get_config() function')
  try:
    config = module.get_config(*args)
  except Exception as error:
    fail(f'--config={spec}: get_config({", ".join(map(repr, args))}) raised '
         f'{type(error).__name__}: {error}')
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f'--config={spec}: get_config() returned {type(config).__name__}, not a ConfigDict')
  return config


def _check_overrides(argv: list[str]) -> None:
  """The config file loads, and every --config.FIELD names one of its fields (else: the
  closest one), so that ml_collections never raises on a misspelt override."""
  spec = _config_spec(argv)
  overrides = [a.split('.', 1)[1].split('=', 1)[0] for a in argv
               if a.startswith(('--config.', '--noconfig.'))]  # --noconfig.X: a False bool
  if spec is None:
    if overrides:
      fail(f'--config.{overrides[0]} given without --config=FILE')
    return
  config = _load_config_file(spec)
  for field in overrides:
    message = config_schema.unknown_override(config, field)
    if message:
      fail(f'{message} (in {spec})')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing in which every problem is a one-line user error."""
  if _HELP_FLAGS & set(argv[1:]):
    try:
      flags.FLAGS(argv)
    except SystemExit:  # absl prints the help and exits with status 1
      sys.exit(0)
    except Exception:  # a bad flag before the help flag: reported as a user error below
      pass
  _check_overrides(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(error)
  except Exception as error:  # e.g. a value ml_collections cannot convert
    fail(f'{type(error).__name__}: {error}')


def _main(command: str):
  def main(argv):
    if len(argv) > 1:
      fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are written --name=value)')
    if command == 'reproduce':
      _reproduce()
    if _CLAIMS.value is not None or _QUICK.value:
      fail(f'--claims and --quick apply to xdistill reproduce only (not xdistill {command})')
    if not _WORKDIR.value:
      fail(f'--workdir is required (xdistill {command} --workdir=DIR)')
    if command == 'run' and _CONFIG.value is None:
      fail('--config is required (xdistill run --config=configs/NAME.py --workdir=DIR)')
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
      fail(f'--workdir={_WORKDIR.value} is a file, not a directory')
    shard = _shard(command)
    processes = _processes(command)
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    from xdistill_jax.sweep import runner  # imported after parsing: keeps --help fast
    try:
      if command == 'run':
        runner.check_shard(shard)
        runner.prepare(_CONFIG.value)  # every config error before any process connects
        if processes is not None:
          _initialize(processes)
        try:
          runner.run(_CONFIG.value, _WORKDIR.value, shard=shard)
        except runner.ProcessLost as error:  # another process died or cannot be reached
          _lost(error.__cause__)
      else:
        runner.finalize(_WORKDIR.value)
    except ConfigError as error:
      fail(error)
  return main


def _reproduce():
  """`xdistill reproduce`: exit status 0 when every claim meets its registered expectation,
  1 otherwise, 2 on a user error (before anything compiles)."""
  if _SHARD.value is not None or _DISTRIBUTED.value or _COORDINATOR.value is not None:
    fail('xdistill reproduce runs in one process (no --shard or multi-process flags)')
  logging.set_verbosity(logging.WARNING)
  from xdistill_jax.reproduce import run as reproduce  # imported after parsing
  workdir = _WORKDIR.value or reproduce.DEFAULT_WORKDIR
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    fail(f'--workdir={workdir} is a file, not a directory')
  ids = _CLAIMS.value.split(',') if _CLAIMS.value is not None else None
  try:
    sys.exit(reproduce.reproduce(workdir, ids, quick=_QUICK.value))
  except ConfigError as error:
    fail(error)


def _shard(command: str) -> tuple[int, int]:
  """(I, N) of --shard=I/N (default (0, 1), the whole sweep), or a user error."""
  if _SHARD.value is None:
    return 0, 1
  if command != 'run':
    fail(f'--shard applies to xdistill run only (xdistill {command} reads every shard)')
  match = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', _SHARD.value)
  if not match:
    fail(f'--shard={_SHARD.value} is malformed; allowed: I/N with integers 0 <= I < N, '
         'e.g. --shard=0/4')
  i, n = int(match.group(1)), int(match.group(2))
  if n < 1 or i >= n:
    fail(f'--shard={_SHARD.value} is out of range; allowed: I/N with N >= 1 and 0 <= I < N')
  return i, n


def _processes(command: str) -> dict | None:
  """Keyword arguments of jax.distributed.initialize from the process flags (None: one
  process), or a user error for an inconsistent combination."""
  explicit = {'--coordinator_address': _COORDINATOR.value, '--num_processes': _NUM_PROCESSES.value,
              '--process_id': _PROCESS_ID.value}
  given = [name for name, value in explicit.items() if value is not None]
  if _HEARTBEAT.value < 1:
    fail(f'--heartbeat_timeout={_HEARTBEAT.value} is invalid; allowed: seconds >= 1')
  if command != 'run' and (given or _DISTRIBUTED.value):
    fail(f'{(given or ["--distributed"])[0]} applies to xdistill run only (xdistill {command} '
         'runs in one process)')
  timeouts = {'heartbeat_timeout_seconds': _HEARTBEAT.value}
  if not given:
    return timeouts if _DISTRIBUTED.value else None
  if len(given) < 3:
    missing = [name for name in explicit if name not in given]
    fail(f'{" and ".join(given)} given without {" and ".join(missing)}; a multi-process sweep '
         'needs all three (or --distributed alone, to detect them)')
  address, count, index = explicit.values()
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    fail(f'--coordinator_address={address} is invalid; allowed: HOST:PORT with a port in '
         '[1, 65535], e.g. 10.0.0.1:1234')
  if count < 1:
    fail(f'--num_processes={count} is invalid; allowed: an integer >= 1')
  if not 0 <= index < count:
    fail(f'--process_id={index} is invalid; allowed: an integer in [0, {count - 1}] '
         f'(--num_processes={count})')
  return timeouts | {'coordinator_address': address, 'num_processes': count,
                     'process_id': index}


def _initialize(processes: dict) -> None:
  """jax.distributed.initialize with bounded waits; on CPU, cross-process collectives by gloo.

  Connecting waits at most 300 s for every process to start. A process that dies breaks its
  peers' collectives (gloo's connections close): they stop at once with one line (`_lost`).
  One that hangs, or a host that vanishes without closing its connections, stops sending
  heartbeats: after --heartbeat_timeout seconds jax's coordination service aborts every other
  process (its own multi-line message, exit status 134)."""
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(initialization_timeout=300, shutdown_timeout_seconds=60,
                               **processes)
  except Exception as error:  # unreachable coordinator, a process never started, ...
    _lost(error)


def _lost(error: Exception):
  """A failure of the multi-process machinery: one line on stderr, exit status 1."""
  first = next((line for line in str(error).splitlines() if line.strip()), '')
  print(f'xdistill: error: multi-process sweep stopped: {type(error).__name__}: '
        f'{" ".join(first.split())[:300]} (another process died or cannot be reached; rerun '
        'the same command on every process to resume)', file=sys.stderr, flush=True)
  os._exit(1)  # skip jax's exit-time shutdown barrier, which would wait for the dead process


def cpu_llvm_flags(flags_set: str) -> list[str]:
  """`--xla_backend_optimization_level=1` on CPU-only installs unless `flags_set` (the user's
  XLA_FLAGS) already sets a level; read before JAX starts (see `configure_jax`)."""
  from xdistill_jax import plugins
  if plugins.accelerator_installed() or 'xla_backend_optimization_level' in flags_set:
    return []
  return ['--xla_backend_optimization_level=1']


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
  import jax
  flags_set = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags_set:
    jax.config.update('jax_num_cpu_devices', max(2, os.cpu_count() or 1))
  extra = [] if 'xla_cpu_multi_thread_eigen' in flags_set else [
      '--xla_cpu_multi_thread_eigen=false']
  os.environ['XLA_FLAGS'] = ' '.join([flags_set] + extra + cpu_llvm_flags(flags_set)).strip()
  cache = os.environ.get('XDISTILL_CACHE_DIR',
                         os.path.join(os.path.expanduser('~'), '.cache', 'xdistill_jax'))
  if cache and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) >= 2 and argv[1] in ('-h', '--help', 'help'):
    sys.stdout.write(_USAGE)
    sys.exit(0)
  if len(argv) < 2:
    fail(f'no command given; expected one of {", ".join(COMMANDS)} (xdistill --help)')
  if argv[1] not in COMMANDS:
    fail(f'unknown command {argv[1]!r}; expected one of {", ".join(COMMANDS)} (xdistill --help)')
  configure_jax()
  command = argv.pop(1)
  if command == 'analyze':
    from xdistill_jax import analyze  # its own argparse flags
    sys.exit(analyze.main(argv[1:]))
  app.run(_main(command), argv=argv, flags_parser=_parse_flags)


def entry() -> None:
  """The `xdistill` console script: `main`, then an immediate exit with its status.

  Every file is written and closed when `main` returns, so the interpreter's own teardown
  (≈ 0.5 s here, most of it destroying XLA's client and compiled programs) does no useful
  work; stdio and logging are flushed and the process ends with `os._exit`. An uncaught
  exception still ends the normal way, with its traceback. In-process callers use `main`.
  """
  try:
    main()
    code = 0
  except SystemExit as stop:
    code = stop.code
  if code is None:
    code = 0
  elif not isinstance(code, int):  # sys.exit('message'): printed, status 1
    print(code, file=sys.stderr)
    code = 1
  logging.flush()  # absl's handler; the streams next
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  os._exit(code)


if __name__ == '__main__':
  entry()
