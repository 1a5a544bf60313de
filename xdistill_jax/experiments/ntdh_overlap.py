"""NTDH protocol G: decisive-feature overlap sweep (the NTDH paper's Figures 3 and 4).

Per setting (overlap o, seed): a linear teacher on modality a, a baseline student and a KD
student on modality b, full-batch SGD, KD loss `ce_weight`·CE + `kd_weight`·KL(p_t^T ‖ p_s^T)
at T = 0.7 without the T² factor (docs/protocols.md §G). The baseline and KD students start
from the same initial parameters, so Δ measures the KD term alone (the expectation of Δ is
the same as with independent initialisations; its variance is lower).

`models` (flax, ≈ 0.2 s to import) is imported where a program is traced: a re-run whose
compiled program comes from the program cache (`sweep.programs`) never loads it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from xdistill_jax import bounds
from xdistill_jax import config_schema
from xdistill_jax import divergences
from xdistill_jax import kd_floor
from xdistill_jax import pac_bayes
from xdistill_jax import training
from xdistill_jax.experiments import base
from xdistill_jax import measures
from xdistill_jax.generators import decisive_features
from xdistill_jax.reporting import figures

FIELDS = (
    'overlaps', 'runs', 'num_decisive', 'student_decisive', 'dim', 'n_train', 'n_test',
    'steps', 'learning_rate', 'temperature', 'ce_weight', 'kd_weight', 'moments',
    'margin_rho',
)


def validate(config) -> None:
  d = config_schema.integer(config, 'num_decisive', 2)
  s = config_schema.integer(config, 'student_decisive', 1, d - 1)
  config_schema.integer(config, 'dim', d)
  config_schema.integer_list(config, 'overlaps', 0, min(s, d - s))
  config_schema.integer(config, 'runs', 1)
  config_schema.integer(config, 'n_train', 2)
  config_schema.integer(config, 'n_test', 1)
  config_schema.integer(config, 'steps', 1)
  config_schema.number(config, 'learning_rate', 0.0, low_open=True)
  config_schema.number(config, 'temperature', 0.0, low_open=True)
  config_schema.number(config, 'ce_weight', 0.0)
  config_schema.number(config, 'kd_weight', 0.0)
  config_schema.integer(config, 'moments', 1)
  config_schema.number(config, 'margin_rho', 0.0, low_open=True)


def axes(config) -> dict[str, np.ndarray]:
  return {'overlap': np.asarray(config.overlaps, np.int32),
          'seed': np.arange(config.runs, dtype=np.int32)}


def train_weights(config, setting):
  """0/1 weights of the `n_train` training rows: all ones, or the first `setting['n']`
  when the sample size is a sweep axis (`ntdh_samples`), so every n shares one program."""
  if 'n' not in setting:
    return None
  return (jnp.arange(config.n_train) < setting['n']).astype(jnp.float32)


def _with_layer(params, kernel, bias):
  """`params` of a linear `MLP` with its one layer replaced by (kernel, bias)."""
  (name,) = params['params']
  return {'params': {name: {'kernel': kernel, 'bias': bias}}}


def _train(config, key, setting):
  """Trains teacher, baseline and KD student of one setting: (params, data).

  Closed-form gradients of the linear softmax models (`training.fit_linear`): the same SGD
  as autodiff through `losses.kd` and `training.cross_entropy`, up to float rounding, with
  none of their backward graphs in the loop.
  """
  from xdistill_jax import models
  model = models.MLP(num_classes=2)
  k_data, k_init = jax.random.split(key)
  n = config.n_train + config.n_test  # train and test are independent rows of one draw
  hyperplane, data = decisive_features.sample(k_data, setting['overlap'], n,
                                              config.num_decisive, config.dim,
                                              config.student_decisive)
  train, test = data.rows(0, config.n_train), data.rows(config.n_train, n)
  teacher_init, student_init = models.init_models(model, k_init, 2, config.dim)
  w = train_weights(config, setting)
  ce = lambda z: training.cross_entropy_grad(z, train.y, w)
  student_layer = pac_bayes.dense_layer(student_init)
  # Teacher and baseline student in one loop, then the KD student on the trained teacher.
  teacher, baseline = training.fit_linear(
      [(ce, train.x_a, pac_bayes.dense_layer(teacher_init)), (ce, train.x_b, student_layer)],
      config.learning_rate, config.steps)
  teacher_probs = jax.nn.softmax(model.apply(_with_layer(teacher_init, *teacher), train.x_a)
                                 / config.temperature, axis=-1)
  kd = lambda z: (config.ce_weight * ce(z) + config.kd_weight
                  * training.kd_grad(z, teacher_probs, config.temperature, w))
  (student,) = training.fit_linear([(kd, train.x_b, student_layer)], config.learning_rate,
                                   config.steps)
  params = {'teacher': _with_layer(teacher_init, *teacher),
            'baseline': _with_layer(student_init, *baseline),
            'kd': _with_layer(student_init, *student)}
  return params, (hyperplane, train, test)


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:

  def setting_fn(key, setting):
    from xdistill_jax import models
    model = models.MLP(num_classes=2)
    params, (hyperplane, train, test) = _train(config, key, setting)
    logits = lambda name, x: model.apply(params[name], x)
    t_train, kd_train = logits('teacher', train.x_a), logits('kd', train.x_b)
    t_test, b_test, kd_test = (logits('teacher', test.x_a), logits('baseline', test.x_b),
                               logits('kd', test.x_b))
    acc = lambda z: training.accuracy(z, test.y)
    w = train_weights(config, setting)
    metrics = {
        'teacher_acc': acc(t_test), 'baseline_acc': acc(b_test), 'kd_acc': acc(kd_test),
        'teacher_loss': training.cross_entropy(t_train, train.y, w),
        'baseline_loss': training.cross_entropy(logits('baseline', train.x_b), train.y, w),
        'kd_loss': training.cross_entropy(kd_train, train.y, w),
        'cmd_inputs': divergences.central_moment_discrepancy(
            train.x_a, train.x_b, config.moments, w, w),
        'cmd_outputs': divergences.central_moment_discrepancy(
            jax.nn.softmax(t_train), jax.nn.softmax(kd_train), config.moments, w, w),
    }
    metrics |= measures.teacher_wrong_softmax(t_train, kd_train, train.y, cls=0, weights=w)
    metrics |= measures.teacher_student_divergences(t_test, kd_test, test.y, suffix='_test')
    metrics |= measures.margin_bound_inputs(kd_train, train.x_b, train.y, params['kd'],
                                            config.margin_rho, prefix='kd_', weights=w)
    overlap = setting['overlap']
    cols_a = decisive_features.teacher_columns(overlap, config.dim, config.num_decisive,
                                               config.student_decisive)
    cols_b = decisive_features.student_columns(config.dim, config.student_decisive)
    # P1 (PAC-Bayes-kl) inputs of both linear students; F1, the KD floor of this teacher.
    # Both students' P1 in one vmapped program: one bisection loop, half the compiled ops.
    students = ('kd', 'baseline')
    layers = jax.tree.map(lambda *a: jnp.stack(a),
                          *(pac_bayes.dense_layer(params[name]) for name in students))
    p1 = jax.vmap(lambda kernel, bias: pac_bayes.binary_p1(
        kernel, bias, train.x_b, train.y, test.x_b, test.y, config.delta, weights=w))(*layers)
    metrics |= {f'{name}_{k}': v[i] for i, name in enumerate(students) for k, v in p1.items()}
    metrics |= kd_floor.protocol_g_floor(*pac_bayes.dense_layer(params['teacher']), test.x_b,
                                         cols_a & cols_b, kd_test, t_test)
    d = config.num_decisive
    metrics |= {
        'bayes_floor_a': bounds.decisive_feature_bayes_floor(hyperplane, cols_a[:d]),
        'bayes_floor_b': bounds.decisive_feature_bayes_floor(hyperplane, cols_b[:d]),
        'n_train': jnp.asarray(setting.get('n', config.n_train), jnp.float32),
        'n_test': jnp.asarray(test.y.shape[0], jnp.float32),
        'vc_dim': jnp.asarray(bounds.linear_vc_dimension(config.dim), jnp.float32),
        'num_classes': jnp.asarray(2.0),
        'margin_rho': jnp.asarray(config.margin_rho, jnp.float32),
        'confidence_delta': jnp.asarray(config.delta, jnp.float32),
    }
    return (metrics, params) if with_params else metrics

  return setting_fn


def derived(table, config):
  """γ = o / (D − o), the paper's overlap ratio; errors and Δ = 100·(kd − baseline)."""
  gamma = table['overlap'] / (config.num_decisive - table['overlap'])
  return {'gamma': gamma} | measures.error_columns(table)


def make_figures(table, summary, config, workdir):
  return [figures.overlap_figure(summary, workdir / 'ntdh_overlap.png',
                                 title='NTDH protocol G: decisive-feature overlap'),
          figures.bounds_figure(table, summary, workdir / 'ntdh_overlap_bounds.png',
                                x='gamma', divergence='tckd_test')]


EXPERIMENT = base.Experiment(
    name='ntdh_overlap', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('overlap',), figures=make_figures,
    derived=derived, nan_ok=measures.TEACHER_WRONG_COLUMNS, saves_params=True)
