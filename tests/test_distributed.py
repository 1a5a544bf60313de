"""Multi-process sweeps on one machine (jax.distributed over localhost, gloo collectives on
CPU): the rows equal those of one process with the same total device count, bit for bit, and a
process killed mid-sweep makes the other stop within a bounded time; rerunning resumes.

Every subprocess runs under a timeout that fails the test, so nothing here can hang."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from xdistill_jax.reporting import tables

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--config=configs/ntdh_overlap.py', '--config.runs=4', '--config.steps=20',
        '--config.n_train=20', '--config.n_test=50', '--config.overlaps=(0,10)',
        '--config.sweep.progress=False']
LIMIT = 240  # seconds any one command may take here (compiling on a busy 2-core machine)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _command(workdir, *flags):
  return [sys.executable, '-m', 'xdistill_jax.cli', 'run', *TINY, f'--workdir={workdir}', *flags]


def _env(devices: int) -> dict:
  return os.environ | {'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}


def _one_process(workdir, devices, *flags):
  result = subprocess.run(_command(workdir, *flags), cwd=ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=LIMIT)
  assert result.returncode == 0, result.stderr
  return result


def _start(workdir, devices_each, *flags, port=None, processes=2):
  port = port or _free_port()
  return [subprocess.Popen(
      _command(workdir, *flags, f'--coordinator_address=127.0.0.1:{port}',
               f'--num_processes={processes}', f'--process_id={i}'),
      cwd=ROOT, env=_env(devices_each), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for i in range(processes)]


def _finish(popens, limit=LIMIT) -> list[tuple[int, str]]:
  """(return code, stderr) of every process; kills them all and fails past `limit` seconds."""
  deadline = time.time() + limit
  out = []
  try:
    for p in popens:
      _, err = p.communicate(timeout=max(1.0, deadline - time.time()))
      out.append((p.returncode, err))
  except subprocess.TimeoutExpired:
    pytest.fail(f'a multi-process sweep did not finish within {limit} s')
  finally:
    for p in popens:
      if p.poll() is None:
        p.kill()
        p.wait()
  return out


def _same_rows(a_dir, b_dir) -> None:
  a, b = (tables.read_csv(pathlib.Path(d) / 'results.csv') for d in (a_dir, b_dir))
  assert a.keys() == b.keys() and len(a['index']) == 8
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # The whole file, byte for byte (floats are written with repr: every bit).
  assert (pathlib.Path(a_dir) / 'results.csv').read_bytes() == (
      pathlib.Path(b_dir) / 'results.csv').read_bytes()


@pytest.mark.parametrize('devices_each', [1, pytest.param(2, marks=pytest.mark.slow)])
def test_two_processes_give_the_rows_of_one_process_with_as_many_devices(tmp_path,
                                                                          devices_each):
  total = 2 * devices_each
  _one_process(tmp_path / 'one', total)
  results = _finish(_start(tmp_path / 'two', devices_each))
  for rc, err in results:
    assert rc == 0, err
    assert f'on {total} cpu device(s)' in err
  assert 'wrote' in results[0][1] and 'wrote' not in results[1][1]  # process 0 writes
  _same_rows(tmp_path / 'one', tmp_path / 'two')


def _chunks(workdir) -> list[str]:
  chunks = pathlib.Path(workdir) / 'chunks'
  return sorted(p.name for p in chunks.glob('*.npz')) if chunks.is_dir() else []


# 16 settings in chunks of 4 (2 devices x 2 groups of width 1): four chunks.
KILL_FLAGS = ['--config.runs=8', '--config.sweep.chunk_size=2', '--config.sweep.vmap_width=1',
              '--heartbeat_timeout=10']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The rows of one process with two devices, for the flags of the kill tests."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  _one_process(workdir, 2, *KILL_FLAGS)
  return tables.read_csv(workdir / 'results.csv')


@pytest.mark.parametrize('victim', [1, pytest.param(0, marks=pytest.mark.slow)])
def test_a_killed_process_stops_the_other_then_rerunning_resumes(tmp_path, uninterrupted,
                                                                 victim):
  flags = KILL_FLAGS
  workdir = tmp_path / 'two'
  popens = _start(workdir, 1, *flags)
  deadline = time.time() + LIMIT
  while time.time() < deadline and not _chunks(workdir) and popens[0].poll() is None:
    time.sleep(0.005)
  popens[victim].send_signal(signal.SIGKILL)
  killed_at = time.time()
  at_kill = _chunks(workdir)
  (rc0, err0), (rc1, err1) = _finish(popens, limit=60)  # the survivor stops: bounded
  survivor_rc, survivor_err = ((rc1, err1) if victim == 0 else (rc0, err0))
  assert time.time() - killed_at < 60
  assert 1 <= len(at_kill) < 4, at_kill  # the kill landed mid-sweep
  assert survivor_rc != 0, survivor_err  # 1 from xdistill; JAX may abort first (SIGABRT)
  # The one-line message is there; when the coordinator (process 0) is the one that died,
  # JAX's own fatal-error log lines may be interleaved with it or follow it.
  assert 'xdistill: error: multi-process sweep stopped' in survivor_err, survivor_err
  assert 'Traceback' not in survivor_err
  assert not (workdir / 'results.csv').exists()
  committed = _chunks(workdir)
  results = _finish(_start(workdir, 1, *flags))  # the same command on every process
  for rc, err in results:
    assert rc == 0, err
  assert f'resuming: {4 * len(committed)} of 16 settings already committed' in results[0][1]
  assert len(_chunks(workdir)) == 4
  a = uninterrupted
  b = tables.read_csv(workdir / 'results.csv')
  assert len(b['index']) == 16 and a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
