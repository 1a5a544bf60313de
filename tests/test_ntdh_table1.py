"""NTDH Table 1 experiment: end to end on protocol G, and parity with `ntdh_overlap`."""

import csv

import jax
import numpy as np

from xdistill_jax import config_files
from xdistill_jax import kd_methods
from xdistill_jax.experiments import ntdh_overlap
from xdistill_jax.experiments import ntdh_table1
from xdistill_jax.sweep import runner


def _tiny(protocol='G'):
  config = config_files.load('ntdh_table1', protocol)
  config.G.overlaps = (0, 10)
  config.G.runs = 2
  config.G.steps = 40
  config.G.n_train = 60
  config.G.n_test = 100
  config.G.rkd_angle_rows = 5
  config.sweep.progress = False
  return config


def test_tiny_table1_run_writes_one_row_per_method(tmp_path):
  config = _tiny()
  report = runner.run(config, tmp_path)
  with open(tmp_path / 'table1.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['method'] for r in rows] == list(kd_methods.METHODS)
  assert {'o0_mean', 'o0_std', 'o10_mean', 'o10_std'} <= set(rows[0])
  assert all(np.isfinite(float(r['o10_mean'])) for r in rows)
  markdown = (tmp_path / 'table1.md').read_text()
  for label in kd_methods.LABELS.values():
    assert f'| {label} |' in markdown
  assert markdown.count('**') >= 2 * len(config.G.overlaps)  # a bold best per column
  assert 'Spearman' in markdown
  with open(tmp_path / 'results.csv', newline='') as f:
    results = list(csv.DictReader(f))
  assert len(results) == 4 * len(kd_methods.METHODS)  # settings × methods
  assert report['diverged'] == 0
  for name, summary in report['bounds'].items():
    if summary.get('kind') == 'deterministic':
      assert summary['violations'] == 0, name
  assert (tmp_path / 'ntdh_table1_divergence.png').exists()


def test_kl_rows_reproduce_the_protocol_g_experiment():
  config = _tiny()
  config.methods = ('kl', 'dkd_omega')
  g = config_files.load('ntdh_overlap')
  for name in ('n_train', 'n_test', 'steps'):
    g[name] = config.G[name]
  setting = {'overlap': np.int32(4), 'seed': np.int32(0)}
  key = jax.random.fold_in(jax.random.key(7), 3)  # one setting, unbatched
  table = jax.jit(ntdh_table1.make_setting_fn(config))(key, setting)
  overlap = jax.jit(ntdh_overlap.make_setting_fn(g))(key, setting)
  for name in ('teacher_acc', 'baseline_acc', 'kd_acc', 'kl_test', 'bayes_floor_b'):
    np.testing.assert_allclose(table[name][0], overlap[name], rtol=1e-4, atol=1e-5, err_msg=name)
  assert table['kd_acc'].shape == (2,)
