"""Compiled, vmapped, sharded execution of settings in fixed-size chunks.

One chunk is one call of `jit(vmap(setting_fn))` whose leading (settings) axis is sharded over
every device with `NamedSharding`; the chunk size is a multiple of the device count, chosen
from a memory budget unless given, and the last chunk is padded so that a sweep compiles once.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

AXIS = 'settings'


@dataclasses.dataclass
class ChunkRunner:
  """Runs `setting_fn` on chunks of settings: `runner(key_index, settings) -> metrics`."""

  setting_fn: object
  sweep_key: jax.Array
  chunk_size: int
  compiled: object
  sharding: NamedSharding

  def __call__(self, key_index: np.ndarray, settings: dict[str, np.ndarray]) -> dict:
    n = len(key_index)
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], self.chunk_size - n, 0)])
    args = (_global(pad(key_index), self.sharding),
            {k: _global(pad(v), self.sharding) for k, v in settings.items()})
    out = self.compiled(self.sweep_key, *args)
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree.map(lambda a: np.asarray(a)[:n], out)


def _global(array: np.ndarray, sharding):
  """A global array built from host data (works on one host and on many)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def _vmapped(setting_fn):
  def run(sweep_key, key_index, settings):
    keys = jax.vmap(lambda i: jax.random.fold_in(sweep_key, i))(key_index)
    return jax.vmap(setting_fn)(keys, settings)
  return run


def _compile(setting_fn, sweep_key, example_settings, chunk_size, sharding):
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  spec = lambda a: jax.ShapeDtypeStruct((chunk_size,) + a.shape[1:], a.dtype, sharding=sharding)
  fn = jax.jit(_vmapped(setting_fn), in_shardings=(replicated, sharding, sharding),
               out_shardings=sharding)
  return fn.lower(sweep_key, spec(np.zeros(1, np.int32)),
                  {k: spec(v) for k, v in example_settings.items()}).compile()


def _bytes(compiled) -> float:
  stats = compiled.memory_analysis()
  if stats is None:
    return 0.0
  return float(stats.temp_size_in_bytes + stats.argument_size_in_bytes
               + stats.output_size_in_bytes)


def make_runner(setting_fn, sweep_key, example_settings: dict[str, np.ndarray],
                num_settings: int, chunk_size: int = 0,
                memory_budget_bytes: float = 2 * 2**30) -> ChunkRunner:
  """Compiles `setting_fn` for a chunk size that fits the memory budget.

  With `chunk_size = 0` the whole sweep is tried first; if the compiled program's memory
  (arguments + outputs + temporaries, from XLA's memory analysis) exceeds the budget, the size
  is scaled down linearly from that measurement and compiled once more. Chunk sizes are
  rounded up to a multiple of the global device count.
  """
  devices = np.array(jax.devices())
  mesh = jax.sharding.Mesh(devices, (AXIS,))
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  round_up = lambda c: -(-max(c, 1) // len(devices)) * len(devices)
  size = round_up(chunk_size or num_settings)
  compiled = _compile(setting_fn, sweep_key, example_settings, size, sharding)
  if not chunk_size:
    used = _bytes(compiled)
    if used > memory_budget_bytes and size > len(devices):
      size = round_up(int(size * memory_budget_bytes / used))
      compiled = _compile(setting_fn, sweep_key, example_settings, size, sharding)
  return ChunkRunner(setting_fn, sweep_key, size, compiled, sharding)


def run_one(setting_fn, sweep_key, key_index: int, setting: dict) -> dict:
  """One setting, unbatched (for checks against the vmapped program)."""
  key = jax.random.fold_in(sweep_key, key_index)
  out = jax.jit(setting_fn)(key, {k: jnp.asarray(v) for k, v in setting.items()})
  return jax.tree.map(np.asarray, out)
