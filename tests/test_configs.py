"""configs/*.py: every file and variant validates; overrides work; Table 1's protocol-S weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax import experiments
from xdistill_jax import kd_methods
from xdistill_jax import losses
from xdistill_jax.experiments import ntdh_table1

# Every file with the variants its docstring documents (None = plain --config=configs/NAME.py).
VARIANTS = {'ntdh_table1': (None, 'G', 'S', 'S_g_weights')}
FILES = sorted(p.stem for p in config_files.CONFIG_DIR.glob('*.py'))
CASES = [(name, v) for name in FILES for v in VARIANTS.get(name, (None,))]


def test_the_configs_folder_is_found():
  assert {'ntdh_overlap', 'ntdh_table1', 'cmcd_tv', 'digits_overlap'} <= set(FILES)


@pytest.mark.parametrize('name,variant', CASES)
def test_every_config_file_passes_its_experiments_check(name, variant, tmp_path):
  config = config_files.load(name, variant)
  if name == 'paired':  # the user's data file is required: a small valid one
    y = np.arange(120) % 2
    np.savez(tmp_path / 'pairs.npz', x_a=np.eye(120, 3) + y[:, None], x_b=np.ones((120, 2)), y=y)
    config.data = str(tmp_path / 'pairs.npz')
  experiment = experiments.get(config.experiment)
  experiment.check(config)  # names and values of every field, nothing compiled
  assert experiment.axes(config)  # a non-empty sweep


def test_an_unknown_variant_is_a_config_error():
  with pytest.raises(config_schema.ConfigError, match='ntdh_table1.py:T.*allowed: G, S'):
    config_files.load('ntdh_table1', 'T')


def test_command_line_overrides_reach_the_config_file():
  path = config_files.CONFIG_DIR / 'ntdh_table1.py'
  argv = ['xdistill', f'--config={path}:S', '--config.S.runs=3', '--config.S.dkd_alpha=1',
          "--config.methods=('kl','dkd')"]
  values = flags.FlagValues()  # as the CLI defines its flag, on a private FlagValues
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values, sys_argv=argv)
  values(argv)
  config = values.config
  assert config.protocol == 'S' and config.S.runs == 3 and config.S.dkd_alpha == 1.0
  assert tuple(config.methods) == ('kl', 'dkd')
  assert config.G.dkd_alpha == 1.0 and config.S.crd_weight == 1.0  # the rest untouched


def test_a_missing_config_file_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='nosuch.py'):
    config_files.load('nosuch', directory=tmp_path)


# ----------------------------------------------------------------------------------------------
# Table 1 on protocol S: the authors' weights reach the objectives.
# ----------------------------------------------------------------------------------------------
def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl(t, s, temperature):
  """mean_i KL(softmax(t_i/T) ‖ softmax(s_i/T)), no T²."""
  lp, lq = _log_softmax(t / temperature), _log_softmax(s / temperature)
  return np.mean(np.sum(np.exp(lp) * (lp - lq), -1))


def _ce(s, y):
  return -np.mean(_log_softmax(s)[np.arange(len(y)), y])


def _tckd_nckd(t, s, y, temperature):
  """Per-example KL of the binary (target, rest) split and of the renormalised non-targets."""
  p, q = np.exp(_log_softmax(t / temperature)), np.exp(_log_softmax(s / temperature))
  rows = np.arange(len(y))
  py, qy = p[rows, y], q[rows, y]
  tckd = py * np.log(py / qy) + (1 - py) * np.log((1 - py) / (1 - qy))
  keep = np.ones_like(p, bool)
  keep[rows, y] = False
  ph = np.where(keep, p, 0) / (1 - py)[:, None]
  qh = np.where(keep, q, 0) / (1 - qy)[:, None]
  ratio = np.divide(ph, qh, out=np.ones_like(ph), where=keep)
  nckd = np.sum(ph * np.log(ratio), -1)  # ph = 0 at the target
  return tckd, nckd


def _omega(t, s, y, threshold=0.996):
  cos = np.sum(t * s, -1) / (np.linalg.norm(t, axis=-1) * np.linalg.norm(s, axis=-1))
  wrong = t.argmax(-1) != y
  return np.where(wrong, (1 + cos) / 2 * (cos >= threshold), 1.0)


def _batch(dtype):
  rng = np.random.default_rng(3)
  t = rng.normal(size=(12, 4)) * 2.0
  s = t * 0.9 + rng.normal(size=(12, 4))
  s[:3] = t[:3] * 1.01 + 0.01  # aligned with the teacher: ω > 0 where it errs
  y = rng.integers(0, 4, 12)
  y[:3] = (t[:3].argmax(-1) + 1) % 4  # the teacher errs on these
  return t.astype(dtype), s.astype(dtype), y


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_protocol_s_weights_reach_every_objective(dtype):
  h = ntdh_table1.hyper(config_files.load('ntdh_table1', 'S'))
  # The authors' protocol-S settings (docs/protocols.md §T).
  assert (h.temperature, h.dkd_alpha, h.dkd_beta, h.dkd_temperature) == (1.0, 16.0, 1.0, 0.7)
  t, s, y = _batch(dtype)
  with jax.enable_x64(dtype == np.float64):
    zt, zs, labels = jnp.asarray(t), jnp.asarray(s), jnp.asarray(y)
    heads = {m: kd_methods.init_heads(m, jax.random.key(i), 4, h)
             for i, m in enumerate(('crd', 'fitnet'))}
    got = {m: float(kd_methods.objective(m, h, zs, zt, labels, heads.get(m, {})))
           for m in ('kl', 'kl_omega', 'dkd', 'dkd_omega', 'fitnet', 'crd', 'rkd')}
    dense = lambda p, x: np.asarray(x) @ np.asarray(p['params']['kernel']) + np.asarray(
        p['params']['bias'])
    crd = float(jnp.mean(losses.crd(jnp.asarray(dense(heads['crd']['embed_s'], s)),
                                    jnp.asarray(dense(heads['crd']['embed_t'], t)), 0.07)))
    rkd = float(losses.rkd(zs, zt, 25.0, 50.0))
  ce, kl1 = _ce(s, y), _kl(t, s, 1.0)
  omega = _omega(t, s, y)
  assert 0 < omega[:3].min() and omega[:3].max() < 1  # the mask acts on this batch
  tckd, nckd = _tckd_nckd(t, s, y, 0.7)
  hint = np.mean(np.mean((dense(heads['fitnet']['regressor'], s) - t) ** 2, -1))
  want = {
      'kl': ce + kl1,  # KD at T = 1
      'kl_omega': ce + _kl(omega[:, None] * t, omega[:, None] * s, 1.0),
      'dkd': ce + 0.49 * np.mean(16 * tckd + nckd),  # T² (α TCKD + β NCKD), T = 0.7
      'dkd_omega': ce + 0.49 * np.mean(omega * (16 * tckd + nckd)),
      'fitnet': ce + 0.1 * hint + kl1,  # 0.1 · hint + KL
      'crd': ce + crd + kl1,  # CRD + KL, 1 : 1
      'rkd': ce + rkd + 0.1 * kl1,  # RKD + 0.1 · KL
  }
  rtol = 1e-5 if dtype == np.float32 else 1e-10
  for m in want:
    np.testing.assert_allclose(got[m], want[m], rtol=rtol, err_msg=m)


def _tiny_s(variant):
  config = config_files.load('ntdh_table1', variant)
  config.methods = ('kl', 'fitnet', 'dkd')  # CRD's and RKD's weights: the test above
  config.S.update({'num_examples': 240, 'steps': 25, 'runs': 1, 'overlaps': (10,),
                   'bayes_samples': 0})
  return config


def test_tiny_protocol_s_table1_trains_with_the_authors_weights():
  setting = {'overlap': np.int32(10), 'seed': np.int32(0)}
  key = jax.random.key(5)
  run = lambda variant: jax.jit(ntdh_table1.make_setting_fn(_tiny_s(variant)))(key, setting)
  authors, g_weights = run('S'), run('S_g_weights')
  for name in ('kd_acc', 'kd_loss', 'kl_test'):
    assert np.all(np.isfinite(authors[name])), name
  loss_a, loss_g = np.asarray(authors['kd_loss']), np.asarray(g_weights['kd_loss'])
  # KL weighs the same on both: the same student, to rounding.
  np.testing.assert_allclose(loss_a[0], loss_g[0], rtol=1e-5)
  # FitNet (0.1 · hint + KL) and DKD (α = 16) train under other weights: other students.
  assert np.all(np.abs(loss_a[1:] - loss_g[1:]) > 1e-6), (loss_a, loss_g)
