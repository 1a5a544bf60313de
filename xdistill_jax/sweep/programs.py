"""A disk cache of sweep programs, traced (`jax.export`) and compiled, so a re-run skips both.

JAX's persistent compilation cache is consulted only after a program is traced and lowered,
which for protocol G's setting function is ≈ 1.3 s of Python on every run. Here two layers
sit in front of it, in `programs/` next to that cache, under a key of everything that decides
what tracing produces: the library's source files, the JAX and jaxlib versions, the JAX
options that change traced programs, the resolved config, the chunk size, vmap width,
devices and the settings' dtypes.

- `{key}.bin`: the lowered program (`jax.export`, StableHLO). A re-run deserialises and
  lowers it (≈ 0.3–0.5 s) and compiles it from the compilation cache (≈ 0.45 s).
- `{key}-{host}.exe`: the compiled executable (`jax.experimental.serialize_executable`),
  keyed also by the host's CPU and the XLA flags, since it is native code. A re-run loads it
  in ≈ 0.2–0.35 s and neither lowers nor consults the compilation cache. Only executables
  XLA has just compiled are stored: one the compilation cache returned does not survive a
  second serialisation on XLA:CPU (its kernels are missing when it runs), so `fresh_compile`
  watches JAX's cache events, and the program is named after its key (`named_call`) so that
  JAX's cache cannot hold it under a key this cache has not seen.

The program a sweep runs is always the exported one (also on the run that writes it), so
results are bit-identical whether or not the program came from disk. Only the package's own
experiments are cached (their code is what the key hashes), only in single-process sweeps,
and only while a compilation cache directory is set (`cli.configure_jax`); any failure to
read or write the cache falls back to tracing. Like JAX's own cache, the directory must be
trusted: loading an executable runs its code.
"""

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import pickle
import platform

import jax

import xdistill_jax
from xdistill_jax.reporting import tables

# JAX options that change what tracing produces (dtypes, random bits, precision).
_TRACE_OPTIONS = ('jax_enable_x64', 'jax_default_prng_impl', 'jax_threefry_partitionable',
                  'jax_default_matmul_precision', 'jax_numpy_dtype_promotion',
                  'jax_numpy_rank_promotion')


@functools.cache
def _package_digest() -> str:
  """sha256 of every Python source file of the package (an edited checkout gets a new key)."""
  root = pathlib.Path(xdistill_jax.__file__).parent
  digest = hashlib.sha256()
  for path in sorted(root.rglob('*.py')):
    digest.update(str(path.relative_to(root)).encode() + b'\0' + path.read_bytes() + b'\0')
  return digest.hexdigest()


def _version(distribution: str) -> str:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return 'absent'


def directory() -> pathlib.Path | None:
  """Where programs are cached: `programs/` in the compilation cache directory, or None."""
  cache = jax.config.jax_compilation_cache_dir
  return pathlib.Path(cache) / 'programs' if cache else None


def program_key(setting_fn_module: str, results_config: dict, **shape) -> str | None:
  """The cache key of a sweep program, or None where programs are not cached (another
  package's experiment, several processes, no cache directory, no `flatbuffers`).
  `results_config`: the config without its execution-only fields; `shape`: the rest of
  what the program depends on (chunk size, vmap width, settings' dtypes)."""
  if (not setting_fn_module.startswith('xdistill_jax.') or jax.process_count() > 1
      or directory() is None):
    return None
  if importlib.util.find_spec('flatbuffers') is None:  # jax.export's serialisation needs it
    return None
  record = {'package': _package_digest(), 'version': xdistill_jax.__version__,
            'jax': jax.__version__, 'jaxlib': _version('jaxlib'),
            'options': {name: str(getattr(jax.config, name, None)) for name in _TRACE_OPTIONS},
            'devices': [f'{d.platform}:{d.device_kind}' for d in jax.devices()],
            'module': setting_fn_module, 'config': results_config,
            'shape': shape}
  return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def load(key: str):
  """The `jax.export.Exported` program stored under `key`, or None."""
  path = directory() / f'{key}.bin'
  try:
    blob = path.read_bytes()
  except OSError:
    return None
  try:
    return jax.export.deserialize(bytearray(blob))
  except Exception:  # a truncated or foreign file: trace again (and overwrite it)
    return None


def save(key: str, exported) -> None:
  """Stores `exported` under `key` (atomically: a temporary file renamed into place)."""
  path = directory() / f'{key}.bin'
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tables.atomic_write_bytes(path, exported.serialize())
  except OSError:
    pass  # a read-only or full cache directory only costs the next run its tracing


@functools.cache
def _host() -> str:
  """A digest of what native code depends on: machine, CPU model and features, XLA flags."""
  cpu = ''
  try:
    with open('/proc/cpuinfo') as info:
      cpu = ''.join(sorted({line for line in info
                            if line.startswith(('model name', 'flags', 'Features'))}))
  except OSError:
    cpu = platform.processor()
  record = [platform.machine(), cpu, os.environ.get('XLA_FLAGS', '')]
  return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]


def _executable_path(key: str) -> pathlib.Path:
  return directory() / f'{key}-{_host()}.exe'


def load_executable(key: str):
  """The compiled program stored under `key` for this host (a `jax.stages.Compiled`), or
  None."""
  try:
    blob = _executable_path(key).read_bytes()
  except OSError:
    return None
  from jax.experimental import serialize_executable
  try:
    return serialize_executable.deserialize_and_load(*pickle.loads(blob))
  except Exception:  # truncated, foreign or from another jaxlib: compile again
    return None


def save_executable(key: str, compiled) -> None:
  """Stores a freshly compiled `compiled` under `key` for this host (atomically)."""
  from jax.experimental import serialize_executable
  try:
    blob = pickle.dumps(serialize_executable.serialize(compiled))
    directory().mkdir(parents=True, exist_ok=True)
    tables.atomic_write_bytes(_executable_path(key), blob)
  except (OSError, ValueError, NotImplementedError, pickle.PicklingError):
    pass  # not serialisable, or an unwritable cache: the next run compiles again


_CACHE_HITS = [0]  # JAX's persistent-cache hits in this process, counted by `_count`


def _count(event: str, **_) -> None:
  if event == '/jax/compilation_cache/cache_hits':
    _CACHE_HITS[0] += 1


@functools.cache
def _listen() -> None:
  jax.monitoring.register_event_listener(_count)


def named_call(exported, key: str):
  """`exported.call` under a name derived from `key`. The name is part of the lowered module
  and so of JAX's compilation-cache key: when this cache misses (a new key: an edited
  package, a new version), JAX's misses too, and XLA compiles an executable that can be
  stored, even where the same program is already in JAX's cache under another name."""
  def call(*args):
    return exported.call(*args)
  call.__name__ = call.__qualname__ = 'xdistill_' + hashlib.sha256(key.encode()).hexdigest()[:16]
  return call


@contextlib.contextmanager
def fresh_compile():
  """Yields a callable that, after the block, is True when nothing compiled inside the block
  came from JAX's compilation cache (so the executables are XLA's own and can be stored)."""
  _listen()
  before, outcome = _CACHE_HITS[0], {}
  yield lambda: outcome['fresh']
  outcome['fresh'] = _CACHE_HITS[0] == before
