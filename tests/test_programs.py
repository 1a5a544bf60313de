"""The program cache (`sweep.programs`): keys, round trips, bit-identical results."""

import contextlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax.sweep import execute
from xdistill_jax.sweep import programs


def _setting_fn(key, setting):
  x = jax.random.normal(key, (64, 3)) * setting['scale']
  return {'mean': jnp.mean(x), 'log_sum_exp': jax.nn.logsumexp(x, axis=0)}


def _run(cache_key):
  settings = {'scale': np.linspace(0.5, 2.0, 12).astype(np.float32)}
  runner = execute.make_runner(_setting_fn, 3, settings, num_settings=12,
                               vmap_width=2, cache_key=cache_key)
  return runner(np.arange(12, dtype=np.int32), settings)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(programs, 'directory', lambda: tmp_path / 'programs')
  return tmp_path / 'programs'


def _forbid(monkeypatch, module, name, why):
  def forbidden(*args, **kwargs):
    raise AssertionError(why)
  monkeypatch.setattr(module, name, forbidden)


def _assert_bit_identical(reference, *runs):
  for out in runs:
    for name in reference:
      np.testing.assert_array_equal(out[name], reference[name])


def test_a_cached_program_gives_bit_identical_results_without_tracing(cache_dir, monkeypatch):
  direct = _run(None)
  first = _run('k')  # traces, exports and stores the program
  assert f'k-{12}.bin' in [p.name for p in cache_dir.iterdir()]
  for exe in cache_dir.glob('*.exe'):  # this test is about the traced layer alone
    exe.unlink()
  _forbid(monkeypatch, jax.export, 'export', 'the program should come from the cache')
  _assert_bit_identical(direct, first, _run('k'))


def test_a_damaged_cache_file_is_traced_again(cache_dir):
  cache_dir.mkdir()
  (cache_dir / 'k-12.bin').write_bytes(b'not a program')
  assert programs.load('k-12') is None
  out = _run('k')
  assert programs.load('k-12') is not None
  np.testing.assert_array_equal(out['mean'], _run(None)['mean'])


def test_keys_follow_what_tracing_depends_on(cache_dir):
  module = 'xdistill_jax.experiments.ntdh_overlap'
  key = programs.program_key(module, {'steps': 10}, vmap_width=8)
  assert key == programs.program_key(module, {'steps': 10}, vmap_width=8)
  assert key != programs.program_key(module, {'steps': 11}, vmap_width=8)
  assert key != programs.program_key(module, {'steps': 10}, vmap_width=4)
  # Experiments outside the package are never cached: the key cannot see their code.
  assert programs.program_key('my_lab.experiment', {'steps': 10}) is None


def test_no_cache_directory_means_no_key(monkeypatch):
  monkeypatch.setattr(programs, 'directory', lambda: None)
  assert programs.program_key('xdistill_jax.experiments.ntdh_overlap', {}) is None


def test_a_compiled_program_is_stored_and_loaded_without_lowering(cache_dir, monkeypatch):
  direct = _run(None)
  first = _run('k')
  assert sorted(p.suffix for p in cache_dir.iterdir()) == ['.bin', '.exe']
  why = 'the executable should come from the cache'
  _forbid(monkeypatch, programs, 'load', why)
  _forbid(monkeypatch, jax.export, 'export', why)
  _assert_bit_identical(direct, first, _run('k'))


def test_a_damaged_executable_is_compiled_again(cache_dir):
  _run('k')
  (exe,) = cache_dir.glob('*.exe')
  exe.write_bytes(b'not an executable')
  assert programs.load_executable('k-12') is None
  np.testing.assert_array_equal(_run('k')['mean'], _run(None)['mean'])
  assert programs.load_executable('k-12') is not None


def test_an_executable_from_the_compilation_cache_is_not_stored(cache_dir, monkeypatch):
  # XLA:CPU executables the compilation cache returned fail when serialised once more; a
  # JAX cache hit during the compile must therefore leave no .exe behind.
  real = programs.fresh_compile

  @contextlib.contextmanager
  def with_a_hit():
    with real() as fresh:
      jax.monitoring.record_event('/jax/compilation_cache/cache_hits')
      yield fresh
  monkeypatch.setattr(programs, 'fresh_compile', with_a_hit)
  _run('k')
  assert [p.suffix for p in cache_dir.iterdir()] == ['.bin']


_HIT_SCRIPT = '''
import sys
import jax, jax.numpy as jnp
from xdistill_jax.sweep import programs
jax.config.update('jax_compilation_cache_dir', sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
exported = jax.export.export(jax.jit(lambda x: jnp.sin(x) * 3))(jnp.ones(7))
lowered = jax.jit(programs.named_call(exported, sys.argv[2])).lower(jnp.ones(7))
with programs.fresh_compile() as fresh:
  lowered.compile()
print(fresh())
'''


def test_jax_cache_hits_are_seen_and_a_new_key_always_compiles_afresh(tmp_path):
  # The event name is JAX's: the first compile in a new cache is fresh, the same key again a
  # hit; the same program under a new key (an edited package) is compiled afresh, so its
  # executable can be stored.
  run = lambda key: subprocess.run([sys.executable, '-c', _HIT_SCRIPT, str(tmp_path), key],
                                   capture_output=True, text=True, check=True,
                                   timeout=120).stdout.split()
  assert run('k1') == ['True']
  assert run('k1') == ['False']
  assert run('k2') == ['True']
