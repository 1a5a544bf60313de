"""Protocol S generator (`generators.kclass`): balance, shapes, standardisation, columns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import models
from xdistill_jax.generators import kclass

N, K, D, DIM, S, T = 4000, 4, 50, 50, 20, 20


def _data(flip_y=0.0, seed=0, n=N):
  return kclass.make_classification(jax.random.key(seed), n, K, D, flip_y=flip_y)


def test_shapes_balance_and_standardisation():
  x, y, clusters = _data()
  x, y = np.asarray(x), np.asarray(y)
  assert x.shape == (N, D) and y.shape == (N,) and y.dtype == np.int32
  assert clusters.centroids.shape == (K, D) and clusters.mixing.shape == (K, D, D)
  np.testing.assert_array_equal(np.bincount(y, minlength=K), [N // K] * K)  # no flips: exact
  np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)
  # Centroids are hypercube vertices ±class_sep; every class is its own cluster.
  np.testing.assert_array_equal(np.abs(np.asarray(clusters.centroids)), 1.0)
  means = np.stack([x[y == k].mean(0) for k in range(K)])
  assert np.min(np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(K, dtype=bool)]) > 1


def test_label_flips_keep_classes_nearly_balanced():
  _, y, _ = _data(flip_y=0.2, n=20000)
  counts = np.bincount(np.asarray(y), minlength=K)
  np.testing.assert_allclose(counts / 20000, 1 / K, atol=0.015)


@pytest.mark.parametrize('overlap', [20, 15, 10, 5, 0])
def test_decisive_columns_are_where_protocol_s_puts_them(overlap):
  key = jax.random.key(3)
  train, test, _ = kclass.sample(key, jnp.int32(overlap), 1000, K, D, DIM, S, T)
  assert train.x_a.shape == (600, DIM) and test.x_a.shape == (400, DIM)
  k_data, _ = jax.random.split(key)
  features = np.asarray(kclass.make_classification(k_data, 1000, K, D).x)
  x_a = np.concatenate([train.x_a, test.x_a])
  x_b = np.concatenate([train.x_b, test.x_b])
  teacher = set(range(S - overlap, S + T - overlap))
  for j in range(DIM):
    assert np.array_equal(x_b[:, j], features[:, j]) == (j < S), (overlap, j)
    assert np.array_equal(x_a[:, j], features[:, j]) == (j in teacher), (overlap, j)
  shared = np.flatnonzero(np.asarray(kclass.shared_columns(overlap, DIM, S, T)))
  np.testing.assert_array_equal(shared, np.arange(S - overlap, S))
  # The noise columns are independent N(0, 1).
  noise = x_a[:, [j for j in range(DIM) if j not in teacher]]
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05


def test_one_compiled_program_covers_every_overlap():
  traces = []

  @jax.jit
  def columns(overlap):
    traces.append(1)
    return kclass.teacher_columns(overlap, DIM, S, T)

  for overlap in (20, 15, 10, 5, 0):
    cols = np.flatnonzero(np.asarray(columns(jnp.int32(overlap))))
    np.testing.assert_array_equal(cols, np.arange(S - overlap, S + T - overlap))
  assert len(traces) == 1


def test_bayes_floor_monte_carlo():
  clusters = _data().clusters
  floor = jax.jit(kclass.bayes_floor, static_argnums=3)
  nothing, se0 = floor(jax.random.key(1), clusters, jnp.zeros(D, bool), 4000, 0.0)
  assert abs(float(nothing) - (1 - 1 / K)) < 3 * float(se0) + 1e-3  # always guesses class 0
  half, _ = floor(jax.random.key(1), clusters, jnp.arange(D) < S, 4000, 0.0)
  full, _ = floor(jax.random.key(1), clusters, jnp.ones(D, bool), 4000, 0.0)
  assert float(full) <= float(half) < float(nothing)


@pytest.mark.parametrize('cpu_forms', [True, False])
def test_cholesky_and_inverse_match_numpy_on_both_paths(monkeypatch, cpu_forms):
  """The CPU loop forms and the plain forms accelerators get (LAPACK-backed here)."""
  monkeypatch.setattr(models, 'cpu_forms', lambda: cpu_forms)
  a = jax.random.normal(jax.random.key(4), (3, 12, 12))
  spd = jnp.einsum('kij,kil->kjl', a, a) + 0.1 * jnp.eye(12)
  factor = jax.jit(lambda m: kclass.cholesky(m))(spd)
  np.testing.assert_allclose(factor, np.linalg.cholesky(np.asarray(spd)), rtol=1e-4, atol=1e-4)
  inverse = jax.jit(lambda f: kclass.lower_inverse(f))(factor)
  np.testing.assert_allclose(inverse, np.linalg.inv(np.asarray(factor, np.float64)),
                             rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(inverse @ factor, np.broadcast_to(np.eye(12), (3, 12, 12)),
                             atol=1e-4)


def test_bayes_floors_of_both_modalities_equal_one_floor_per_modality():
  """`ntdh_kclass.bayes_floors` (both modalities in one vmapped program) returns exactly
  what `kclass.bayes_floor` gives for each modality alone, with the keys split(key)."""
  from xdistill_jax import config_files
  from xdistill_jax.experiments import ntdh_kclass
  config = config_files.load('ntdh_kclass')
  config.bayes_samples = 2000
  clusters = _data(n=400).clusters
  key, overlap = jax.random.key(11), jnp.int32(5)
  both = jax.jit(lambda k, c, o: ntdh_kclass.bayes_floors(config, k, c, o))(key, clusters,
                                                                           overlap)
  for name, observed, k in zip('ab', ntdh_kclass.observed_features(config, overlap),
                               jax.random.split(key)):
    est, se = jax.jit(kclass.bayes_floor, static_argnums=3)(k, clusters, observed, 2000, 0.01)
    assert float(both[f'bayes_floor_{name}']) == float(est)
    assert float(both[f'bayes_floor_{name}_se']) == float(se)
  # Modality a sees (s - o)..(s + t - 1 - o), b sees 0..s-1: the estimates are those rules'.
  assert set(both) == {'bayes_floor_a', 'bayes_floor_a_se', 'bayes_floor_b', 'bayes_floor_b_se'}


def test_protocol_s_sweeps_run_one_setting_per_group_on_a_cpu():
  """The automatic width (-1) resolves to 1 for every protocol-S sweep on a CPU, the
  `--config.protocol=S` override of Table 1 included, and to the engine's 8 for protocol G;
  on an accelerator (a `measure`) the timed candidates decide for protocol S too."""
  from xdistill_jax import config_files
  from xdistill_jax import experiments
  from xdistill_jax.sweep import runner
  from xdistill_jax.sweep.grid import Grid

  def resolved(name, arg=None, measure=None, **fields):
    config = config_files.load(name, arg)
    for field, value in fields.items():
      config[field] = value
    assert config.sweep.vmap_width == -1, name
    grid = Grid(experiments.get(config.experiment).axes(config))
    return runner.vmap_width(config, grid, measure)

  for name, arg in (('ntdh_kclass', None), ('ntdh_feature_mask', None), ('ntdh_table1', 'S'),
                    ('ntdh_table1', 'S_g_weights')):
    assert resolved(name, arg) == 1, (name, arg)
  assert resolved('ntdh_table1', 'G', protocol='S') == 1
  assert resolved('ntdh_table1', 'G') == 8
  assert resolved('ntdh_overlap') == 8
  assert resolved('ntdh_kclass', measure=lambda width: 1.0 / width) > 1


def test_protocol_s_sweeps_commit_short_automatic_chunks():
  """Protocol-S experiments cap automatic chunks (a few seconds of work each); protocol G
  keeps the engine's cap, and `make_runner` honours the cap (rounded to whole groups)."""
  from xdistill_jax import config_files
  from xdistill_jax import experiments
  from xdistill_jax.sweep import execute
  cap = lambda name, arg=None: experiments.get(name).max_auto_chunk(config_files.load(name, arg))
  assert cap('ntdh_kclass') == 10
  assert cap('ntdh_feature_mask') == cap('ntdh_table1', 'S') == 4
  assert cap('ntdh_table1', 'G') is None and experiments.get('ntdh_overlap').max_auto_chunk is None
  settings = {'a': np.zeros(1, np.float32)}
  n = jax.device_count()  # width 1: chunks are whole multiples of the device count
  for max_chunk in (4, 5, execute.MAX_AUTO_CHUNK):
    run = execute.make_runner(lambda key, s: {'b': 2 * s['a']}, 0, settings,
                              num_settings=40, vmap_width=1, max_chunk=max_chunk)
    assert run.chunk_size == -(-min(max_chunk, 40) // n) * n, (max_chunk, run.chunk_size)


@pytest.mark.slow  # two compilations of the protocol-S program (~100 s CPU at load 28)
def test_protocol_s_width_one_reproduces_width_eight():
  """A width-1 sweep reproduces the width-8 sweep of the same settings to float rounding
  (batched and unbatched products may round differently in the last bit; over 30 steps at
  lr 0.01 that stays below 1e-5 in every loss, and no prediction flips)."""
  from xdistill_jax import config_files
  from xdistill_jax.experiments import ntdh_kclass
  from xdistill_jax.sweep import execute
  from xdistill_jax.sweep.grid import Grid
  config = config_files.load('ntdh_kclass')
  config.overlaps, config.runs, config.num_examples, config.steps = (15, 0), 4, 300, 30
  config.bayes_samples = 500
  grid = Grid(ntdh_kclass.axes(config))
  out = {}
  for width in (1, 8):
    runner = execute.make_runner(ntdh_kclass.make_setting_fn(config), 0,
                                 grid.traced_settings(np.arange(1)), grid.size,
                                 vmap_width=width)
    index = np.arange(grid.size)
    out[width] = runner(grid.key_index(index), grid.traced_settings(index))
  for name, value in out[8].items():
    np.testing.assert_allclose(out[1][name], value, rtol=1e-5, atol=1e-5, err_msg=name)
  for name in ('teacher_acc', 'baseline_acc', 'kd_acc', 'bayes_floor_a', 'bayes_floor_b'):
    np.testing.assert_array_equal(out[1][name], out[8][name], err_msg=name)
