"""Real-image overlap: cross-modal KD between two bands of columns of handwritten digits.

The real-image counterpart of NTDH protocols G and S (docs/protocols.md §R): the 1,797
real 8 × 8 digits of scikit-learn's ``load_digits`` (10 classes, so the non-target
divergence is non-trivial), split into two modalities by pixel columns
(`xdistill_jax.generators.digits_bands`): the student sees columns 0..w-1, the teacher
columns (w-o)..(2w-1-o), so o ∈ [0, w] columns are shared; γ = o / (2w − o).

Per setting (overlap o, seed):

1. a random train/test split of the 1,797 images (``n_train`` / ``n_test``), the fill noise
   (``fill='noise'``) and the initial parameters are drawn from the setting's key. Only the
   seed determines the key (``key_axes=('seed',)``): every overlap of one seed uses the same
   split and the same initial parameters, so the overlap trend is a paired comparison;
2. teacher (modality a) and baseline student (modality b) are trained with cross-entropy in
   one fused `training.fit` (full batch, SGD);
3. every KD method of ``config.methods`` — the inner axis ``method`` — trains its own student
   from the baseline's initial parameters on the frozen, shared teacher, all methods in one
   fused `training.fit`. Losses (docs/protocols.md §T; weights ``ce_weight : kd_weight`` = 1 : 1,
   T = ``temperature`` = 0.7):

   * ``kl``: CE + KL(softmax(z_t/T) ‖ softmax(z_s/T)) (`losses.kd`; no T² factor, as
     protocol G);
   * ``kl_omega``: CE + KL+ω (`losses.masked_kd`, the NTDH sample mask ω with cosine
     threshold ``mask_threshold`` = 0.996);
   * ``dkd``: CE + DKD with α = ``dkd_alpha`` = 1, β = ``dkd_beta`` = 1 (`losses.dkd`, which
     includes DKD's T² factor);
   * ``dkd_omega``: CE + DKD with its TCKD and NCKD weighted per example by ω.

   ω is recomputed from the current student logits at every step and is a constant
   (stop-gradient) inside the loss, as `losses.sample_mask` defines it.

Each (setting, method) is one results row with the standard columns: accuracies
``teacher_acc, baseline_acc, kd_acc`` (kd = that method's student), the divergences of
`measures.teacher_student_divergences` between teacher and that student on the test set
(``kl_test, tckd_test, nckd_test, …``), the same between teacher and baseline student
(``*_baseline_test``: the non-target divergence *before* distillation), ω statistics, and,
after the sweep, errors and Δ = 100·(kd − baseline) (`measures.error_columns`), so the
registered N1/N2 bounds apply. The default linear models (softmax regression,
``hidden=()``) also emit the N4 margin-bound inputs; ``hidden=(32,)`` trains MLPs instead.
The figures plot Δ against the overlap per method and Δ against ``nckd_test`` with Spearman's
rank correlation (per setting, pooled and per method, and over the overlap means; with a
permutation p-value), which is also written to ``correlation.json`` — together with the same
correlations against ``nckd_baseline_test``, the non-target gap measured before distillation.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdistill_jax import config_schema
from xdistill_jax import kd_methods
from xdistill_jax import losses
from xdistill_jax import measures
from xdistill_jax import training
from xdistill_jax.experiments import base
from xdistill_jax.generators import digits_bands
from xdistill_jax.models import MLP
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

METHODS = ('kl', 'kl_omega', 'dkd', 'dkd_omega')

FIELDS = (
    'overlaps', 'runs', 'band_width', 'fill', 'n_train', 'n_test', 'hidden', 'steps',
    'learning_rate', 'momentum', 'temperature', 'ce_weight', 'kd_weight', 'dkd_alpha',
    'dkd_beta', 'mask_threshold', 'methods', 'margin_rho',
)


def validate(config) -> None:
  w = config_schema.integer(config, 'band_width', 1, digits_bands.WIDTH)
  config_schema.integer_list(config, 'overlaps', max(0, 2 * w - digits_bands.WIDTH), w)
  config_schema.integer(config, 'runs', 1)
  config_schema.choice(config, 'fill', digits_bands.FILLS)
  n_train = config_schema.integer(config, 'n_train', 2, digits_bands.NUM_IMAGES - 1)
  config_schema.integer(config, 'n_test', 1, digits_bands.NUM_IMAGES - n_train)
  hidden = config.hidden
  if not (isinstance(hidden, (tuple, list)) and len(hidden) == 0):
    config_schema.integer_list(config, 'hidden', 1, unique=False)
  config_schema.integer(config, 'steps', 1)
  config_schema.number(config, 'learning_rate', 0.0, low_open=True)
  config_schema.number(config, 'momentum', 0.0, 0.999)
  config_schema.number(config, 'temperature', 0.0, low_open=True)
  for field in ('ce_weight', 'kd_weight', 'dkd_alpha', 'dkd_beta'):
    config_schema.number(config, field, 0.0)
  config_schema.number(config, 'mask_threshold', -1.0, 1.0)
  config_schema.choice_list(config, 'methods', METHODS)
  config_schema.number(config, 'margin_rho', 0.0, low_open=True)


def axes(config) -> dict[str, np.ndarray]:
  return {'overlap': np.asarray(config.overlaps, np.int32),
          'seed': np.arange(config.runs, dtype=np.int32)}


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'method': np.asarray(list(config.methods))}


def _model(config) -> MLP:
  return MLP(num_classes=digits_bands.NUM_CLASSES, hidden=tuple(config.hidden))


def _optimizer(config) -> optax.GradientTransformation:
  return optax.sgd(config.learning_rate, momentum=config.momentum or None)


def hyper(config) -> kd_methods.Hyper:
  """The `kd_methods` objective weights of this experiment: one T for KL, KL+ω and DKD."""
  return kd_methods.Hyper(temperature=config.temperature, ce_weight=config.ce_weight,
                          kd_weight=config.kd_weight, dkd_alpha=config.dkd_alpha,
                          dkd_beta=config.dkd_beta, dkd_temperature=config.temperature,
                          omega_threshold=config.mask_threshold)


def _train(config, key, setting):
  """Teacher, baseline and one student per method: (params, (train, test))."""
  model, optimizer = _model(config), _optimizer(config)
  k_data, k_teacher, k_student = jax.random.split(key, 3)
  train, test = digits_bands.sample(k_data, setting['overlap'], config.band_width,
                                    config.n_train, config.n_test, config.fill)
  init = lambda k: model.init(k, jnp.zeros((1, digits_bands.NUM_PIXELS)))
  student_init = init(k_student)

  def supervised_loss(params):  # teacher and baseline student in one loop
    return (training.cross_entropy(model.apply(params['teacher'], train.x_a), train.y)
            + training.cross_entropy(model.apply(params['baseline'], train.x_b), train.y))

  params, _ = training.fit(supervised_loss, {'teacher': init(k_teacher),
                                             'baseline': student_init},
                           optimizer, config.steps)
  teacher_logits = jax.lax.stop_gradient(model.apply(params['teacher'], train.x_a))
  h = hyper(config)

  def distill_loss(students):  # every method's student in one loop, on the shared teacher
    return sum(kd_methods.objective(m, h, model.apply(students[m], train.x_b), teacher_logits,
                                    train.y)
               for m in config.methods)

  params['students'], _ = training.fit(
      distill_loss, {m: student_init for m in config.methods}, optimizer, config.steps)
  return params, (train, test)


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  model = _model(config)
  methods = tuple(config.methods)
  linear = not tuple(config.hidden)

  def setting_fn(key, setting):
    params, (train, test) = _train(config, key, setting)
    apply = lambda p, x: model.apply(p, x)
    t_train, t_test = apply(params['teacher'], train.x_a), apply(params['teacher'], test.x_a)
    b_train, b_test = apply(params['baseline'], train.x_b), apply(params['baseline'], test.x_b)
    err = lambda z, y: 1.0 - training.accuracy(z, y)

    def per_method(method):
      student = params['students'][method]
      s_train, s_test = apply(student, train.x_b), apply(student, test.x_b)
      omega_train = losses.sample_mask(t_train, s_train, train.y, config.mask_threshold)
      omega_test = losses.sample_mask(t_test, s_test, test.y, config.mask_threshold)
      out = {
          'kd_acc': training.accuracy(s_test, test.y),
          'kd_train_err': err(s_train, train.y),
          'omega_dropped_train': jnp.mean((omega_train == 0).astype(jnp.float32)),
          'omega_mean_train': jnp.mean(omega_train),
          'omega_dropped_test': jnp.mean((omega_test == 0).astype(jnp.float32)),
      }
      out |= measures.teacher_student_divergences(t_test, s_test, test.y, suffix='_test')
      if linear:  # N4 multiclass margin bound: linear hypotheses only
        out |= measures.margin_bound_inputs(s_train, train.x_b, train.y, student,
                                            config.margin_rho, prefix='kd_')
      return out

    per = [per_method(m) for m in methods]
    metrics = jax.tree.map(lambda *v: jnp.stack(v), *per)
    shared = {
        'teacher_acc': training.accuracy(t_test, test.y),
        'baseline_acc': training.accuracy(b_test, test.y),
        'teacher_train_err': err(t_train, train.y),
        'baseline_train_err': err(b_train, train.y),
        'n_train': jnp.asarray(config.n_train, jnp.float32),
        'n_test': jnp.asarray(config.n_test, jnp.float32),
        'num_classes': jnp.asarray(digits_bands.NUM_CLASSES, jnp.float32),
        'margin_rho': jnp.asarray(config.margin_rho, jnp.float32),
        'confidence_delta': jnp.asarray(config.delta, jnp.float32),
    }
    # The same divergences between teacher and the *baseline* student: the gap before KD.
    shared |= measures.teacher_student_divergences(t_test, b_test, test.y,
                                                   suffix='_baseline_test')
    shared = {k: jnp.broadcast_to(v, (len(methods),) + jnp.shape(v)) for k, v in shared.items()}
    return (metrics | shared, params) if with_params else metrics | shared

  return setting_fn


def derived(table, config):
  """γ = o / (2w − o); errors and Δ = 100·(kd − baseline) (`measures.error_columns`)."""
  overlap = np.asarray(table['overlap'], np.float64)
  gamma = overlap / (2 * config.band_width - overlap)
  return {'gamma': gamma} | measures.error_columns(table)


# ----------------------------------------------------------------------------------------
# Rank correlation (the NTDH hypothesis: smaller non-target divergence ↔ larger KD gain).
# ----------------------------------------------------------------------------------------
def correlations(table, summary, divergence='nckd_test') -> dict:
  """Spearman ρ(Δ, divergence): per setting (pooled and per method) and over group means."""
  healthy = ~np.asarray(table.get('diverged', np.zeros(len(table['delta']), bool)), bool)
  rows = tables.select(table, healthy)
  methods = list(dict.fromkeys(np.asarray(rows['method']).tolist()))
  out = {'x': divergence, 'y': 'delta',
         'expectation': 'NTDH predicts rho < 0: smaller non-target divergence, larger KD gain',
         'per_setting': {'pooled': tables.spearman(rows[divergence], rows['delta'])},
         'per_overlap_means': {}}
  for m in methods:
    sel = rows['method'] == m
    out['per_setting'][m] = tables.spearman(rows[divergence][sel], rows['delta'][sel])
    sel = summary['method'] == m
    out['per_overlap_means'][m] = tables.spearman(summary[divergence + '_mean'][sel],
                                           summary['delta_mean'][sel])
  return out


# ----------------------------------------------------------------------------------------
# Figures.
# ----------------------------------------------------------------------------------------
_LINES = ('-', '--', '-.', ':')
_MARKERS = ('o', 's', '^', 'v')


def _style(i):
  """Colour and line style of the i-th method (curves may coincide, e.g. when ω is all 1)."""
  return dict(color=f'C{i}', ls=_LINES[i % 4])


def _method_summary(summary, method):
  return tables.select(summary, np.asarray(summary['method']) == method)


def _overlap_figure(summary, methods, path):
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  first = _method_summary(summary, methods[0])
  figures.band(axes[0], first, 'overlap', 'teacher_acc', 'teacher (modality a)', color='k')
  figures.band(axes[0], first, 'overlap', 'baseline_acc', 'baseline student (b)', color='grey')
  for i, m in enumerate(methods):
    s = _method_summary(summary, m)
    figures.band(axes[0], s, 'overlap', 'kd_acc', f'{m} student (b)', **_style(i))
    figures.band(axes[1], s, 'overlap', 'delta', m, **_style(i))
    figures.band(axes[2], s, 'overlap', 'nckd_test', f'teacher vs {m} student', **_style(i))
  figures.band(axes[2], first, 'overlap', 'nckd_baseline_test', 'teacher vs baseline (no KD)',
               color='grey', ls='--')
  axes[0].set(ylabel='test accuracy', title='accuracy (mean ± std over seeds)')
  axes[1].axhline(0, color='k', lw=0.8)
  axes[1].set(ylabel='Δ = KD − baseline (accuracy points)', title='KD gain per method')
  axes[2].set(ylabel='mean NCKD (nats, test set, T = 1)', title='non-target divergence')
  return figures.finish(fig, axes, path,
                        'Digits: teacher sees one band of columns, student another',
                        xlabel='overlap o (shared pixel columns)')


def _delta_vs_divergence_figure(table, summary, methods, corr, path):
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 5))
  healthy = ~np.asarray(table['diverged'], bool)
  for i, m in enumerate(methods):
    sel = healthy & (table['method'] == m)
    c = corr['per_setting'][m]
    style = _style(i)
    ax.scatter(table['nckd_test'][sel], table['delta'][sel], s=9, alpha=0.35,
               color=style['color'], marker=_MARKERS[i % 4],
               label=f'{m}: ρ = {c["rho"]:+.2f} (p = {c["p_value"]:.3g}, n = {c["n"]})')
    s = _method_summary(summary, m)
    order = np.argsort(s['nckd_test_mean'])
    ax.plot(s['nckd_test_mean'][order], s['delta_mean'][order], color=style['color'],
            ls=style['ls'], lw=1.5)
    for x, y, o in zip(s['nckd_test_mean'], s['delta_mean'], s['overlap']):
      ax.annotate(f'o={o}', (x, y), fontsize=6, color=f'C{i}')
  pooled = corr['per_setting']['pooled']
  if np.nanmin(table['nckd_test'][healthy], initial=np.inf) > 0:
    ax.set_xscale('log')
  ax.axhline(0, color='k', lw=0.8)
  ax.set(xlabel='non-target divergence NCKD(teacher ‖ KD student), test set (nats)',
         ylabel='Δ = KD − baseline (accuracy points)',
         title=f'Δ against the non-target divergence; pooled Spearman ρ = {pooled["rho"]:+.2f} '
               f'(p = {pooled["p_value"]:.3g})')
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, title='per setting (lines: overlap means)', title_fontsize=7)
  return figures.save(fig, path)


def make_figures(table, summary, config, workdir):
  workdir = pathlib.Path(workdir)
  methods = list(dict.fromkeys(np.asarray(summary['method']).tolist()))
  corr = correlations(table, summary) | {
      'baseline_divergence': correlations(table, summary, 'nckd_baseline_test')}
  tables.atomic_write_text(workdir / 'correlation.json', json.dumps(corr, indent=2) + '\n')
  first = methods[0]
  rows = tables.select(table, np.asarray(table['method']) == first)
  return [
      _overlap_figure(summary, methods, workdir / 'digits_overlap.png'),
      _delta_vs_divergence_figure(table, summary, methods, corr,
                                  workdir / 'digits_overlap_delta_vs_nckd.png'),
      figures.bounds_figure(rows, _method_summary(summary, first),
                            workdir / f'digits_overlap_bounds_{first}.png', x='overlap',
                            divergence='nckd_test', xlabel='overlap o (shared pixel columns)'),
      str(workdir / 'correlation.json'),
  ]


EXPERIMENT = base.Experiment(
    name='digits_overlap', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('method', 'overlap'), figures=make_figures,
    key_axes=('seed',), derived=derived, saves_params=True, inner_axes=inner_axes,
    program_cache=False)  # the program embeds data read from files
