"""Independent shards (`xdistill run --shard=I/N`) for job arrays: shard I runs the settings
[floor(I S / N), floor((I + 1) S / N)) into the shared workdir, `xdistill plot` writes whatever
is finished and lists what is missing, and all shards merged give the unsharded rows, bit for
bit, even when a shard is killed mid-way and rerun. Plus the chunk store they rely on."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner
from xdistill_jax.sweep import store as store_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# 16 settings in chunks of 4 (2 devices x 2 groups of width 1).
FLAGS = ['--config=configs/ntdh_overlap.py', '--config.runs=8', '--config.steps=20',
         '--config.n_train=20', '--config.n_test=50', '--config.overlaps=(0,10)',
         '--config.sweep.progress=False', '--config.sweep.chunk_size=2',
         '--config.sweep.vmap_width=1']
ENV = os.environ | {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
LIMIT = 240


def _argv(*args):
  return [sys.executable, '-m', 'xdistill_jax.cli', *args]


def _cli(*args):
  return subprocess.run(_argv(*args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=LIMIT)


@pytest.mark.parametrize('size, n', [(16, 3), (10, 10), (3, 5), (1, 1), (1000, 7)])
def test_shard_ranges_are_contiguous_disjoint_and_cover_the_sweep(size, n):
  ranges = [runner.shard_range(size, (i, n)) for i in range(n)]
  covered = np.concatenate([np.arange(b, e) for b, e in ranges])
  np.testing.assert_array_equal(covered, np.arange(size))  # in order, each setting once
  lengths = [e - b for b, e in ranges]
  assert max(lengths) - min(lengths) <= 1
  assert ranges == [(i * size // n, (i + 1) * size // n) for i in range(n)]


def test_check_shard_refuses_out_of_range():
  from xdistill_jax import config_schema
  for shard in ((3, 3), (-1, 2), (0, 0)):
    with pytest.raises(config_schema.ConfigError, match='--shard'):
      runner.check_shard(shard)
  runner.check_shard((2, 3))


def test_an_empty_shard_compiles_nothing_and_writes_no_chunk(tiny_overlap_config, tmp_path,
                                                             monkeypatch, capsys):
  from xdistill_jax.sweep import execute

  def no_compilation(*args, **kwargs):
    raise AssertionError('compiled for an empty shard')
  monkeypatch.setattr(execute, 'make_runner', no_compilation)
  assert runner.run(tiny_overlap_config, tmp_path, shard=(0, 10)) == {}  # 9 settings: [0, 0)
  assert 'shard 0/10 finished (no settings of 9)' in capsys.readouterr().err
  assert (tmp_path / 'config.json').is_file() and not store_lib.ChunkStore(
      tmp_path / 'chunks').paths()


def test_missing_ranges():
  assert runner.missing_ranges(np.array([0, 1, 5, 9]), 12) == '2-4, 6-8, 10-11'
  assert runner.missing_ranges(np.arange(4), 4) == 'none'
  assert runner.missing_ranges(np.array([1]), 3) == '0, 2'
  assert runner.missing_ranges(np.arange(0, 40, 2), 40, limit=2) == '1, 3, and 18 more ranges'


def test_chunks_round_trip_and_a_setting_stored_twice_is_kept_once(tmp_path):
  store = store_lib.ChunkStore(tmp_path / 'chunks')
  assert store.done().size == 0 and store.assemble()[0].size == 0
  rng = np.random.default_rng(0)
  a = {'x': rng.normal(size=(3, 2)).astype(np.float32), 'n': np.array([1, 2, 3], np.int32),
       'nan': np.array([np.nan, 1.0, 2.0])}
  b = {'x': rng.normal(size=(2, 2)).astype(np.float32), 'n': np.array([4, 5], np.int32),
       'nan': np.array([3.0, np.nan])}
  store.commit(np.array([4, 5, 6]), a)
  store.commit(np.array([0, 1]), b)
  # A second run committed settings 5 and 6 again, with the same values (NaN included).
  store.commit(np.array([5, 6]), {k: v[1:] for k, v in a.items()})
  np.testing.assert_array_equal(store.done(), [0, 1, 4, 5, 6])
  index, metrics = store.assemble()
  np.testing.assert_array_equal(index, [0, 1, 4, 5, 6])
  for name in a:
    expected = np.concatenate([b[name], a[name]])
    assert metrics[name].dtype == a[name].dtype
    np.testing.assert_array_equal(metrics[name], expected)
  assert not [p for p in (tmp_path / 'chunks').iterdir() if p.name.startswith('.')]
  store.commit(np.array([6]), {'x': a['x'][2:] + 1, 'n': a['n'][2:], 'nan': a['nan'][2:]})
  with pytest.raises(RuntimeError, match="setting 6 twice with different 'x'"):
    store.assemble()


def _chunks(workdir) -> list[int]:
  return sorted(int(p.stem) for p in (pathlib.Path(workdir) / 'chunks').glob('*.npz'))


def test_shards_merged_give_the_unsharded_rows_with_a_shard_killed_and_rerun(tmp_path):
  reference = _cli('run', *FLAGS, f'--workdir={tmp_path / "whole"}')
  assert reference.returncode == 0, reference.stderr
  workdir = tmp_path / 'shards'
  # Shards 0/3 and 1/3 (settings 0-4 and 5-9) start at the same time into one new workdir.
  both = [subprocess.Popen(_argv('run', *FLAGS, f'--workdir={workdir}', f'--shard={i}/3'),
                           cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True) for i in (0, 1)]
  try:
    errors = [p.communicate(timeout=LIMIT)[1] for p in both]
  finally:
    for p in both:
      if p.poll() is None:
        p.kill()
  for p, err in zip(both, errors):
    assert p.returncode == 0, err
  assert 'shard 1/3 finished (5 settings)' in errors[1]
  assert not (workdir / 'results.csv').exists()  # shards never finalize
  assert _chunks(workdir) == [0, 4, 5, 9]

  partial = _cli('plot', f'--workdir={workdir}')  # any process may finalize, at any time
  assert partial.returncode == 0, partial.stderr
  assert 'partial sweep: 10 of 16 settings finished; missing settings 10-15' in partial.stderr
  whole = tables.read_csv(tmp_path / 'whole' / 'results.csv')
  rows = tables.read_csv(workdir / 'results.csv')
  np.testing.assert_array_equal(rows['index'], np.arange(10))
  np.testing.assert_array_equal(rows['kd_acc'], whole['kd_acc'][:10])

  # A shard of another config is refused before compiling, and writes nothing.
  other = _cli('run', *FLAGS, '--config.steps=21', f'--workdir={workdir}', '--shard=2/3')
  assert other.returncode == 2 and other.stderr.count('\n') == 1, other.stderr
  assert other.stderr.startswith('xdistill: error:') and 'different config' in other.stderr
  assert 'compiled' not in other.stderr and _chunks(workdir) == [0, 4, 5, 9]

  # Shard 2/3 (settings 10-15: chunks at 10 and 14) killed after its first chunk, then rerun.
  process = subprocess.Popen(_argv('run', *FLAGS, f'--workdir={workdir}', '--shard=2/3'),
                             cwd=ROOT, env=ENV, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + LIMIT
    while time.time() < deadline and len(_chunks(workdir)) < 5 and process.poll() is None:
      time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
  finally:
    process.wait(timeout=60)
  assert _chunks(workdir) == [0, 4, 5, 9, 10]  # killed mid-shard
  rerun = _cli('run', *FLAGS, f'--workdir={workdir}', '--shard=2/3')
  assert rerun.returncode == 0, rerun.stderr
  assert 'resuming: 4 of 6 settings 10-15 of shard 2/3 already committed' in rerun.stderr
  final = _cli('plot', f'--workdir={workdir}')
  assert final.returncode == 0 and 'partial sweep' not in final.stderr, final.stderr
  assert (workdir / 'results.csv').read_bytes() == (
      tmp_path / 'whole' / 'results.csv').read_bytes()
  assert (workdir / 'summary.csv').read_bytes() == (
      tmp_path / 'whole' / 'summary.csv').read_bytes()
