"""configs/paired.py: the NTDH protocol on users' paired .npz files."""

import concurrent.futures
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from xdistill_jax import config_files
from xdistill_jax import experiments
from xdistill_jax.config_schema import ConfigError
from xdistill_jax.experiments import paired
from xdistill_jax.generators import decisive_features
from xdistill_jax.reporting import tables
from xdistill_jax.sweep import runner


def _protocol_g_file(path, overlap, draw, n_train=200, n_test=1000):
  """Protocol G's generator (D = 20, s = 10, 25 columns): 200 train + 1000 test rows."""
  _, data = decisive_features.sample(jax.random.key(1000 + draw), overlap, n_train + n_test,
                                     20, 25, 10)
  split = (np.arange(n_train + n_test) >= n_train).astype(np.int32)
  np.savez(path, x_a=np.asarray(data.x_a), x_b=np.asarray(data.x_b), y=np.asarray(data.y),
           split=split)
  return data


def _config(path, **overrides):
  config = config_files.load('paired')
  config.data = str(path)
  config.sweep.progress = False
  config.update(overrides)
  return config


def test_delta_falls_with_no_overlap_as_in_protocol_g(tmp_path):
  """Over two draws each, Δ at overlap 0 is below Δ at overlap 10 (protocol G's finding).

  Each file is its own compiled program (the data are constants), so the test keeps to two
  draws and one method; protocol G's gap between the two overlaps is ~5 points.
  """
  delta = {0: [], 10: []}
  for overlap in delta:
    for draw in range(2):
      path = tmp_path / f'g_{overlap}_{draw}.npz'
      _protocol_g_file(path, overlap, draw)
      workdir = tmp_path / f'run_{overlap}_{draw}'
      runner.run(_config(path, runs=1, methods=('kl',)), workdir)
      table = tables.read_csv(workdir / 'results.csv')
      assert not table['diverged'].any()
      # Δ from the raw accuracies, independently of the derived column.
      np.testing.assert_allclose(table['delta'], 100 * (table['kd_acc'] - table['baseline_acc']),
                                 atol=1e-4)
      assert set(table['n_train']) == {200} and set(table['n_test']) == {1000}
      delta[overlap].append(np.mean(table['delta'][table['method'] == 'kl']))
  assert np.mean(delta[0]) < np.mean(delta[10]), delta
  md = (tmp_path / 'run_10_0' / 'table1.md').read_text()
  assert '| KL |' in md and 'ρ(Δ, kl_test)' in md and '200 training and 1000 test rows' in md


def test_metrics_match_an_independent_numpy_computation(tmp_path):
  """Accuracies and the seeded split: teacher/baseline/KD columns are those of their logits."""
  path = tmp_path / 'pairs.npz'
  rng = np.random.default_rng(0)
  n = 90
  y = np.arange(n) % 3
  x_a = rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[y]
  x_b = rng.normal(size=(n, 3)) * 5.0 + 3.0
  np.savez(path, x_a=x_a, x_b=x_b, y=y)
  config = _config(path, runs=2, methods=('kl', 'kl_omega'), steps=50, test_fraction=0.3,
                   rkd_angle_rows=0)
  experiment, grid = runner.prepare(config)
  fn = jax.jit(experiment.make_setting_fn(config, with_params=True))
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  metrics, params = fn(key, {'seed': np.int32(0)})
  assert metrics['n_train'][0] == 63 and metrics['n_test'][0] == 27
  # The split: the key's permutation, as NumPy reproduces it from the same permutation.
  order = np.asarray(jax.random.permutation(jax.random.split(key, 5)[0], n))
  test = order[63:]
  std = lambda x: (x - x.mean(0)) / x.std(0)
  xa, xb = std(x_a)[test], std(x_b)[test]

  def numpy_logits(p, x):
    layer = p['params']['TorchDense_0']
    return x @ np.asarray(layer['kernel'], np.float64) + np.asarray(layer['bias'], np.float64)

  acc = lambda z: np.mean(np.argmax(z, -1) == y[test])
  np.testing.assert_allclose(metrics['teacher_acc'][0], acc(numpy_logits(params['teacher'], xa)),
                             atol=1e-6)
  np.testing.assert_allclose(metrics['baseline_acc'][1],
                             acc(numpy_logits(params['baseline'], xb)), atol=1e-6)
  zs = numpy_logits(params['students']['kl']['model'], xb)
  zt = numpy_logits(params['teacher'], xa)
  np.testing.assert_allclose(metrics['kd_acc'][0], acc(zs), atol=1e-6)
  log_softmax = lambda z: z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1,
                                            keepdims=True)) - z.max(-1, keepdims=True)
  p = np.exp(log_softmax(zt))
  kl = np.mean(np.sum(p * (log_softmax(zt) - log_softmax(zs)), -1))
  np.testing.assert_allclose(metrics['kl_test'][0], kl, rtol=1e-4)
  assert 'vc_dim' not in metrics  # three classes: no binary VC/P1 inputs


def test_data_is_read_once(tmp_path, monkeypatch):
  path = tmp_path / 'pairs.npz'
  _protocol_g_file(path, 4, 0, n_train=30, n_test=20)
  calls = []
  real = paired.datasets.load_paired
  monkeypatch.setattr(paired.datasets, 'load_paired',
                      lambda *a, **k: calls.append(a) or real(*a, **k))
  paired._read.cache_clear()
  config = _config(path, runs=1, methods=('kl',), steps=5)
  experiments.get('paired').check(config)
  experiments.get('paired').make_setting_fn(config)
  experiments.get('paired').check(config)
  assert len(calls) == 1


def test_config_errors(tmp_path):
  path = tmp_path / 'pairs.npz'
  _protocol_g_file(path, 4, 0, n_train=30, n_test=20)
  check = experiments.get('paired').check
  with pytest.raises(ConfigError, match="config.data='' is invalid"):
    check(_config(''))
  with pytest.raises(ConfigError, match='config.rkd_angle_rows=16 is invalid; allowed: at most 10'):
    check(_config(path))
  with pytest.raises(ConfigError, match='config.methods=.* is invalid'):
    check(_config(path, methods=('kl', 'nope')))


def _bad_files(tmp_path):
  rng = np.random.default_rng(0)
  good = dict(x_a=rng.normal(size=(20, 3)), x_b=rng.normal(size=(20, 2)), y=np.arange(20) % 2)
  files = {
      'missing_key.npz': (dict(x_a=good['x_a'], y=good['y']), "key 'x_b' is missing"),
      'lengths.npz': (good | dict(y=np.arange(19) % 2), "key 'y' has 19 rows; x_a has 20"),
      'nan.npz': (good | dict(x_a=np.full((20, 3), np.nan)), "key 'x_a' has 60 NaN"),
      'inf.npz': (good | dict(x_b=np.full((20, 2), -np.inf)), "key 'x_b' has 40 NaN or inf"),
      'labels.npz': (good | dict(y=np.arange(20) * 0.5), "key 'y' must hold integers"),
      'negative.npz': (good | dict(y=-(np.arange(20) % 2)), "key 'y' must hold integers"),
      'split.npz': (good | dict(split=np.zeros(20, int)), "key 'split' leaves the test side"),
  }
  for name, (arrays, _) in files.items():
    np.savez(tmp_path / name, **arrays)
  (tmp_path / 'text.npz').write_text('x_a,x_b,y\n')
  files['text.npz'] = (None, 'not a numeric .npz file')
  np.save(tmp_path / 'single.npy', np.zeros((20, 3)))
  (tmp_path / 'single.npy').rename(tmp_path / 'single.npz')
  files['single.npz'] = (None, 'not a .npz file')
  files['absent.npz'] = (None, 'no such file')
  return {name: message for name, (_, message) in files.items()}


def test_bad_files_through_the_console_command(tmp_path):
  """Each bad file: exit 2, one line `xdistill: error: config.data: FILE: …`, no traceback."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  command = [os.path.join(os.path.dirname(sys.executable), 'xdistill'), 'run',
             '--config=configs/paired.py']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cases = _bad_files(tmp_path)
  run = lambda name: subprocess.run(
      command + [f'--config.data={tmp_path / name}', f'--workdir={tmp_path / "w"}'],
      capture_output=True, text=True, env=env, timeout=300, cwd=root)
  with concurrent.futures.ThreadPoolExecutor(3) as pool:  # each case is a fresh process
    results = dict(zip(cases, pool.map(run, cases)))
  for name, message in cases.items():
    result = results[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (name, result.stderr)
    assert len(lines) == 1 and 'Traceback' not in result.stderr, (name, result.stderr)
    assert lines[0].startswith(f'xdistill: error: config.data: {tmp_path / name}'), lines[0]
    assert message in lines[0], (name, lines[0])
  assert not (tmp_path / 'w').exists()  # nothing written, nothing compiled
