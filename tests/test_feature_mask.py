"""NTDH feature mask: the non-target-divergence tags find the shared decisive columns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import config_files
from xdistill_jax import config_schema
from xdistill_jax.experiments import ntdh_feature_mask as fm


def _tiny():
  config = config_files.load('ntdh_feature_mask')
  config.num_examples = 1500
  config.steps = 150
  config.tag_repeats = 2
  config.bayes_samples = 0
  config.overlaps = (10,)
  return config


def test_keep_highest_selects_the_shared_columns_far_more_often_than_random():
  config = _tiny()
  setting_fn = fm.make_setting_fn(config)
  keys = jax.random.split(jax.random.key(0), 3)
  out = jax.jit(jax.vmap(lambda k: setting_fn(k, {'overlap': jnp.int32(10)})))(keys)
  precision = np.asarray(out['precision']).mean(0)  # [mode]: highest, lowest, random
  highest, lowest, random = (precision[list(config.modes).index(m)] for m in fm.MODES)
  # 10 of the 50 teacher columns are shared: random keeps ~20% of them.
  assert highest >= 0.6 and highest > random + 0.3 and lowest <= random
  # Shared columns carry the highest tags on average.
  tags = {g: float(np.mean(out[f'tag_{g}'])) for g in ('shared', 'teacher_only', 'noise')}
  assert tags['shared'] > max(tags['teacher_only'], tags['noise'])
  kept = np.asarray(out['kept'])
  assert kept.shape == (3, 3, config.keep)
  for row in kept.reshape(-1, config.keep):  # k distinct columns in every mode
    assert len(set(row.astype(int))) == config.keep
  assert np.isfinite(np.asarray(out['kd_acc'])).all()


def test_tags_are_min_max_normalised_and_select_is_exact():
  tags = jnp.array([0.2, 0.9, 0.1, 0.5])
  np.testing.assert_array_equal(fm.select('highest', tags, 2, jax.random.key(0)), [1, 3])
  np.testing.assert_array_equal(fm.select('lowest', tags, 2, jax.random.key(0)), [2, 0])
  x = jax.random.normal(jax.random.key(1), (64, 4))
  y = jnp.arange(64) % 3
  teacher = {'w': jnp.array([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5], [0, 0, 0]])}
  apply_fn = lambda p, x: x @ p['w']
  normalised, raw = fm.feature_tags(apply_fn, teacher, x @ teacher['w'], x, y,
                                    jax.random.key(2), 4, fm.DIVERGENCES['nckd'])
  assert float(jnp.min(normalised)) == 0.0 and float(jnp.max(normalised)) == 1.0
  assert float(raw[3]) == 0.0  # the teacher ignores column 3: permuting it changes nothing


def test_protocol_g_sized_two_class_config_is_rejected():
  config = _tiny()
  config.num_classes = 2
  with pytest.raises(config_schema.ConfigError, match='non-target divergence'):
    fm.EXPERIMENT.check(config)
