"""Compiled, vmapped, sharded execution of settings in fixed-size chunks.

One chunk is one call of a jitted program whose leading (settings) axis is sharded over every
device (`NamedSharding`, `shard_map`). On each device the local settings run `vmap`ped, in
groups of `vmap_width` one after another (`lax.map`): on a CPU, narrow groups keep each
group's data in cache, on an accelerator one wide group fills the device. The chunk size is a
multiple of the device count, chosen from a memory budget unless given, and the last chunk is
padded so that a sweep compiles once.
"""

import dataclasses
import math
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from xdistill_jax.sweep import programs

AXIS = 'settings'
# Largest automatic chunk: bounds the work lost to an interruption and keeps progress moving.
MAX_AUTO_CHUNK = 4096
CPU_VMAP_WIDTH = 8  # settings per group on a CPU: a group's data stays in cache
# Widths timed on an accelerator when a sweep starts (`fastest_width`, `runner.vmap_width`).
WIDTH_CANDIDATES = (128, 512, 2048)


@dataclasses.dataclass
class ChunkRunner:
  """Runs a compiled setting fn on chunks of settings: `runner(key_index, settings)` returns
  the setting fn's outputs (a pytree with a leading settings axis)."""

  seed: jax.Array  # the sweep's seed, replicated on every device
  chunk_size: int
  compiled: object
  sharding: NamedSharding

  def __call__(self, key_index: np.ndarray, settings: dict[str, np.ndarray]) -> dict:
    n = len(key_index)
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], self.chunk_size - n, 0)])
    args = (_global(pad(key_index), self.sharding),
            {k: _global(pad(v), self.sharding) for k, v in settings.items()})
    out = self.compiled(self.seed, *args)
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree.map(lambda a: np.asarray(a)[:n], out)


def _global(array: np.ndarray, sharding):
  """A global array built from host data (works on one host and on many)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def _program(setting_fn, mesh, vmap_width: int):
  """The chunk program: setting keys `fold_in(key(seed), key_index)`, then `setting_fn`.

  The sweep key is made inside the program: made eagerly, `jax.random.key` would compile
  two small programs on every run (≈ 0.07 s), cached executables or not."""
  def local(seed, key_index, settings):
    sweep_key = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(sweep_key, i))(key_index)
    if vmap_width:
      return jax.lax.map(lambda a: setting_fn(*a), (keys, settings), batch_size=vmap_width)
    return jax.vmap(setting_fn)(keys, settings)
  return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS),
                                                   PartitionSpec(AXIS)),
                       out_specs=PartitionSpec(AXIS))


def _compile(setting_fn, example_settings, chunk_size, sharding, vmap_width, cache_key=None):
  """The compiled chunk program. With `cache_key` (`programs.program_key` without the chunk
  size) it is the `jax.export`ed program, loaded compiled from the program cache, or read
  from it traced, or traced; what was not in the cache is stored there."""
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  spec = lambda a: jax.ShapeDtypeStruct((chunk_size,) + a.shape[1:], a.dtype, sharding=sharding)
  args = (jax.ShapeDtypeStruct((), np.int32, sharding=replicated), spec(np.zeros(1, np.int32)),
          {k: spec(v) for k, v in example_settings.items()})
  shardings = dict(in_shardings=(replicated, sharding, sharding), out_shardings=sharding)
  fn = jax.jit(_program(setting_fn, sharding.mesh, vmap_width), **shardings)
  if cache_key is None:
    return fn.lower(*args).compile()
  key = f'{cache_key}-{chunk_size}'
  compiled = programs.load_executable(key)
  if compiled is not None:
    return compiled
  exported = programs.load(key)
  if exported is None:
    exported = jax.export.export(fn)(*args)
    programs.save(key, exported)
  lowered = jax.jit(programs.named_call(exported, key), **shardings).lower(*args)
  with programs.fresh_compile() as fresh:
    compiled = lowered.compile()
  if fresh():
    programs.save_executable(key, compiled)
  return compiled


def default_vmap_width() -> int:
  """Settings vmapped together per device when none is given: `CPU_VMAP_WIDTH` on a CPU, 512
  on accelerators (a sweep measures its width instead: `runner.vmap_width`).

  A fixed width makes results bit-identical whatever the chunk size and device count: every
  group of settings runs through the same batched program. Other widths change results at
  float-rounding level only (batched reductions may sum in another order).
  """
  return CPU_VMAP_WIDTH if jax.default_backend() == 'cpu' else 512


def width_timer(setting_fn, sweep_key, group, timer=time.perf_counter, repeats: int = 2):
  """`width -> seconds per setting` of one group of `width` settings vmapped on one local
  device: the group's program is compiled and run once, then the best of `repeats` runs is
  timed with `timer`. `group(width)` gives the group's (key_index, traced settings)."""
  device = jax.local_devices()[0]

  def seconds(width: int) -> float:
    key_index, settings = group(width)
    fn = jax.jit(jax.vmap(lambda i, s: setting_fn(jax.random.fold_in(sweep_key, i), s)))
    args = jax.device_put((np.asarray(key_index), settings), device)
    jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(repeats):
      start = timer()
      jax.block_until_ready(fn(*args))
      best = min(best, timer() - start)
    return best / width
  return seconds


def fastest_width(candidates, seconds_per_setting, budget_s: float = 10.0,
                  clock=time.perf_counter) -> tuple[int, dict[int, float]]:
  """The candidate width with the least `seconds_per_setting(width)` (the smaller on ties),
  and the timings. Candidates are tried in increasing order and trying stops once `budget_s`
  (by `clock`, compilation included) is spent, so start-up stays within seconds."""
  start, timings = clock(), {}
  for width in sorted(set(candidates)):
    timings[width] = float(seconds_per_setting(width))
    if clock() - start > budget_s:
      break
  return min(timings, key=lambda w: (timings[w], w)), timings


def _bytes(compiled) -> float:
  stats = compiled.memory_analysis()
  if stats is None:
    return 0.0
  return float(stats.temp_size_in_bytes + stats.argument_size_in_bytes
               + stats.output_size_in_bytes)


def make_runner(setting_fn, seed: int, example_settings: dict[str, np.ndarray],
                num_settings: int, chunk_size: int = 0,
                memory_budget_bytes: float = 2 * 2**30, vmap_width: int = -1,
                cache_key: str | None = None, max_chunk: int = MAX_AUTO_CHUNK) -> ChunkRunner:
  """Compiles `setting_fn` for a chunk size that fits the memory budget; setting keys are
  `fold_in(jax.random.key(seed), key_index)`.

  With `chunk_size = 0` the whole sweep (at most `max_chunk` settings) is tried first;
  if the compiled program's memory
  (arguments + outputs + temporaries, from XLA's memory analysis) exceeds the budget, the size
  is scaled down linearly from that measurement and compiled once more. Chunk sizes are
  rounded up to a multiple of (device count × vmap width). `vmap_width` < 0 means
  `default_vmap_width()`, 0 means the whole local shard at once. `cache_key`: see `_compile`.
  """
  vmap_width = default_vmap_width() if vmap_width < 0 else vmap_width
  devices = np.array(jax.devices())
  mesh = jax.sharding.Mesh(devices, (AXIS,))
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  # Whole groups on every device (a partial group would compile the body a second time), and
  # at least two, so that XLA never simplifies the loop over groups away: the same compiled
  # group body then serves every chunk size and device count, bit for bit.
  unit = len(devices) * max(vmap_width, 1)
  round_up = lambda c: max(-(-max(c, 1) // unit), 2 if vmap_width else 1) * unit
  size = round_up(chunk_size or min(num_settings, max_chunk))
  compiled = _compile(setting_fn, example_settings, size, sharding, vmap_width, cache_key)
  if not chunk_size:
    used = _bytes(compiled)
    if used > memory_budget_bytes and size > unit:
      size = round_up(int(size * memory_budget_bytes / used))
      compiled = _compile(setting_fn, example_settings, size, sharding, vmap_width, cache_key)
  replicated = NamedSharding(mesh, PartitionSpec())
  return ChunkRunner(_global(np.asarray(seed, np.int32), replicated), size, compiled, sharding)
