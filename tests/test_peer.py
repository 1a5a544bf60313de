"""The batched-PyTorch peer of protocol G (benchmarks/peer_torch.py), checked against NumPy.

Skipped without torch (the `bench` extra: pip install -e '.[bench]').
"""

import csv
import importlib.util
import math
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from xdistill_jax import config_files  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('peer_torch', ROOT / 'benchmarks' / 'peer_torch.py')
peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer)

DTYPES = (torch.float32, torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
  """One intra-op thread: the tensors here are tiny, and on a loaded machine idle OpenMP
  threads spin (the peer's own default, two threads, is for the benchmark)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def test_defaults_are_protocol_g():
  config = config_files.load('ntdh_overlap')
  assert peer.PROTOCOL_G == {k: config[k] for k in peer.PROTOCOL_G}


@pytest.mark.parametrize('dtype', DTYPES)
def test_sample_is_protocol_g(dtype):
  d, s, dim, n = 20, 10, 25, 7
  overlaps = np.array([0, 3, 10])
  data = peer.sample(torch.Generator().manual_seed(1), torch.tensor(overlaps), n, d, dim, s,
                     dtype)
  a, x_s, x_a, x_b, y = (data[k].numpy() for k in ('hyperplane', 'x_s', 'x_a', 'x_b', 'y'))
  assert x_a.dtype == x_b.dtype == np.dtype(str(dtype).split('.')[1])
  np.testing.assert_array_equal(y, (np.einsum('snd,sd->sn', x_s, a) > 0).astype(int))
  for i, o in enumerate(overlaps):
    teacher = [j for j in range(dim) if s - o <= j <= d - 1 - o]
    student = list(range(s))
    for x, cols in ((x_a[i], teacher), (x_b[i], student)):
      np.testing.assert_array_equal(x[:, cols], x_s[i][:, cols])
      noise = [j for j in range(dim) if j not in cols]
      # noise columns are none of the decisive features
      assert not np.isin(x[:, noise], x_s[i]).any()
    shared = sorted(set(teacher) & set(student))
    assert len(shared) == o
    # outside the shared decisive columns the two modalities' values are independent draws
    other = [j for j in range(dim) if j not in shared]
    assert not np.isclose(x_a[i][:, other], x_b[i][:, other]).any()


def _numpy_fit(w, b, x, y, z_teacher, steps, lr, temperature, kd_weight):
  """Full-batch gradient descent of CE + kd_weight·KL(p_t^T ‖ p_s^T) by the closed-form
  gradient of a linear softmax model: ∂/∂z = (softmax(z) − onehot)/n
  + kd_weight·(softmax(z/T) − softmax(z_t/T))/(T·n)."""
  softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(
      z - z.max(1, keepdims=True)).sum(1, keepdims=True)
  n = x.shape[-1]
  onehot = np.stack([y == k for k in range(w.shape[1])], 1).astype(x.dtype)
  for _ in range(steps):
    z = np.einsum('skd,sdn->skn', w, x) + b[:, :, None]
    g = (softmax(z) - onehot) / n
    if kd_weight:
      g = g + kd_weight * (softmax(z / temperature) - softmax(z_teacher / temperature)) / (
          temperature * n)
    w, b = w - lr * np.einsum('skn,sdn->skd', g, x), b - lr * g.sum(-1)
  return w, b


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kd_weight', (0.0, 1.0))
@pytest.mark.parametrize('torch_optim', (False, True))
def test_fit_is_gradient_descent(dtype, kd_weight, torch_optim):
  rng = np.random.default_rng(0)
  count, dim, n, k, steps, lr, temperature = 3, 4, 9, 2, 6, 0.3, 0.7
  x = rng.normal(size=(count, dim, n))
  y = rng.integers(0, k, size=(count, n))
  z_teacher = rng.normal(size=(count, k, n)) * 2
  w0, b0 = rng.uniform(-0.5, 0.5, (count, k, dim)), rng.uniform(-0.5, 0.5, (count, k))
  t = lambda v: torch.tensor(v, dtype=dtype)
  xt, yt, zt = t(x), torch.tensor(y), t(z_teacher)

  def loss_fn(w, b):
    z = peer.logits(xt, w, b)
    return peer.cross_entropy(z, yt) + kd_weight * peer.kd(z, zt, temperature)

  w, b = peer.fit(loss_fn, t(w0), t(b0), steps, lr, torch_optim)
  w_np, b_np = _numpy_fit(w0, b0, x, y, z_teacher, steps, lr, temperature, kd_weight)
  tol = 1e-12 if dtype == torch.float64 else 2e-6
  np.testing.assert_allclose(w.numpy(), w_np, rtol=0, atol=tol)
  np.testing.assert_allclose(b.numpy(), b_np, rtol=0, atol=tol)
  # the losses themselves, against NumPy
  z = np.einsum('skd,sdn->skn', w0, x) + b0[:, :, None]
  log_softmax = lambda v: v - np.log(np.exp(v - v.max(1, keepdims=True)).sum(
      1, keepdims=True)) - v.max(1, keepdims=True)
  ce = -np.take_along_axis(log_softmax(z), y[:, None], 1)[:, 0].mean(-1)
  lp, lq = log_softmax(z_teacher / temperature), log_softmax(z / temperature)
  kl = (np.exp(lp) * (lp - lq)).sum(1).mean(-1)
  zt0 = peer.logits(xt, t(w0), t(b0))
  np.testing.assert_allclose(peer.cross_entropy(zt0, yt).numpy(), ce, rtol=10 * tol)
  np.testing.assert_allclose(peer.kd(zt0, zt, temperature).numpy(), kl, rtol=100 * tol,
                             atol=tol)


def test_summarise_and_compare_against_numpy():
  rng = np.random.default_rng(3)
  results = {'overlap': np.repeat([0, 10], 5), 'teacher_acc': rng.uniform(size=10),
             'baseline_acc': rng.uniform(size=10), 'kd_acc': rng.uniform(size=10)}
  results['delta'] = 100 * (results['kd_acc'] - results['baseline_acc'])
  summary = peer.summarise(results)
  for row, o in zip(summary, (0, 10)):
    v = results['delta'][results['overlap'] == o]
    assert row['overlap'] == o and row['delta_count'] == 5
    np.testing.assert_allclose([row['delta_mean'], row['delta_std']],
                               [v.mean(), v.std(ddof=1)], rtol=1e-12)
  reference = [{'overlap': 10.0, 'delta_mean': 2.0, 'delta_std': 3.0, 'delta_count': 100.0}]
  (check,) = peer.compare(summary, reference)
  v = results['delta'][results['overlap'] == 10]
  se = math.sqrt(v.var(ddof=1) / 5 + 9.0 / 100)
  assert check['overlap'] == 10
  np.testing.assert_allclose(check['z'], (v.mean() - 2.0) / se, rtol=1e-12)


def test_main_writes_summary_and_checks_against_a_reference(tmp_path, capsys):
  argv = ['--runs=3', '--steps=5', '--overlaps=0,10', '--threads=1', f'--out={tmp_path}']
  assert peer.main(argv) == 0
  with open(tmp_path / 'peer_summary.csv') as f:
    own = list(csv.DictReader(f))
  assert [int(r['overlap']) for r in own] == [0, 10]
  # against its own summary: z = 0 → passes; against a far-off Δ → exit status 1
  assert peer.main(argv + [f'--compare={tmp_path / "peer_summary.csv"}']) == 0
  far = tmp_path / 'far.csv'
  peer.write_csv(far, [dict(r, delta_mean=float(r['delta_mean']) + 50) for r in own])
  assert peer.main(argv + [f'--compare={far}']) == 1
  assert 'differs from xdistill' in capsys.readouterr().err
  assert peer.main(['--runs=1', '--threads=1']) == 2


def test_delta_pattern_of_protocol_g():
  """Protocol G's published pattern on 2 × 20 settings: KD hurts at overlap 0 and helps at
  full overlap, each mean beyond three standard errors of zero (here z ≈ −10.6 and +5.1)."""
  p = peer.PROTOCOL_G | dict(runs=20, overlaps=(0, 10), n_test=500)
  for row in peer.summarise(peer.run(p, seed=0)):
    z = row['delta_mean'] / (row['delta_std'] / math.sqrt(row['delta_count']))
    assert (z < -3) if row['overlap'] == 0 else (z > 3), row
