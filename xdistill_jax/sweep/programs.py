"""A disk cache of traced sweep programs (`jax.export`), so that a re-run skips tracing.

JAX's persistent compilation cache is consulted only after a program is traced and lowered,
which for protocol G's setting function is ≈ 1.3 s of Python on every run. Here the lowered
program is also serialised (`jax.export`, StableHLO) next to that cache, under a key of
everything that decides what tracing produces: the library's source files, the JAX and
jaxlib versions, the JAX options that change traced programs, the resolved config, the
chunk size, vmap width, devices and the settings' dtypes. A re-run deserialises it
(≈ 0.3 s) and compiles it from the compilation cache.

The program a sweep runs is always the exported one (also on the run that writes it), so
results are bit-identical whether or not the program came from disk. Only the package's own
experiments are cached (their code is what the key hashes), only in single-process sweeps,
and only while a compilation cache directory is set (`cli.configure_jax`); any failure to
read or write the cache falls back to tracing.
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import pathlib

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
