"""NTDH protocol S: K-class decisive-feature overlap (non-target divergence non-trivial).

Per setting (overlap o, seed): the `make_classification`-style data set of
`generators.kclass` (10,000 examples, 4 classes, 50 informative features, 60/40 split), an
MLP teacher (50 → 16 → 16 → 4, ReLU) on modality a, a baseline student and a KD student on
modality b, full-batch SGD lr 0.01 for 1000 steps, KD loss 1·CE + 1·KL(p_t^T ‖ p_s^T) at
T = 1 (docs/protocols.md §S). Teacher and baseline train in one loop; the KD student starts
from the baseline's initial parameters (so Δ measures the KD term alone) and is trained by
`kd_methods.fit_students` with the 'kl' method, the same code as Table 1.

Differences from the authors' script (`sklearn/main.py`), on purpose: every seed draws its
own data set, noise columns and initialisations (they fix the data with random_state=42 and
vary only the initialisation), so the spread over seeds includes the data.

Reported per setting: teacher / baseline / KD test accuracy, Δ, the teacher–KD-student
divergences on the test set (KL, TCKD, NCKD = the non-target divergence, NT-JS, NT-TV, JS,
TV; `measures.teacher_student_divergences`), CMD_5 of the inputs and of the softmax outputs,
Monte Carlo Bayes floors of both modalities (N3), and the columns of the registered bounds
N1, N2, N3. γ = o / t (t = 20 teacher features).
"""

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from xdistill_jax import config_schema  # noqa: E402
from xdistill_jax import divergences  # noqa: E402
from xdistill_jax import kd_methods  # noqa: E402
from xdistill_jax import measures  # noqa: E402
from xdistill_jax import training  # noqa: E402
from xdistill_jax.experiments import base  # noqa: E402
from xdistill_jax.generators import kclass  # noqa: E402
from xdistill_jax.models import MLP, init_models  # noqa: E402
from xdistill_jax.reporting import figures  # noqa: E402
from xdistill_jax.reporting import tables  # noqa: E402

# The data, model and training fields of protocol S (shared with ntdh_table1's `S.` group).
PROTOCOL_FIELDS = (
    'overlaps', 'runs', 'num_examples', 'num_classes', 'num_informative', 'dim',
    'student_decisive', 'teacher_decisive', 'train_fraction', 'class_sep', 'flip_y', 'hidden',
    'steps', 'learning_rate', 'temperature', 'bayes_samples',
)
FIELDS = PROTOCOL_FIELDS + ('ce_weight', 'kd_weight', 'moments')


def validate_protocol(config, prefix: str = '') -> None:
  """Validates the protocol-S fields found at `prefix` (e.g. 'S.') of `config`."""
  f = lambda name: prefix + name
  node = config
  for part in prefix.split('.')[:-1]:
    node = node[part]
  k = config_schema.integer(config, f('num_classes'), 2)
  d = config_schema.integer(config, f('num_informative'), 2)
  s = config_schema.integer(config, f('student_decisive'), 1)
  t = config_schema.integer(config, f('teacher_decisive'), 1)
  if s + t > d:
    raise config_schema.ConfigError(
        f'config.{f("student_decisive")} + config.{f("teacher_decisive")} = {s + t} is '
        f'invalid; allowed: at most config.{f("num_informative")} = {d}.')
  config_schema.integer(config, f('dim'), s + t)
  config_schema.integer_list(config, f('overlaps'), 0, min(s, t))
  config_schema.integer(config, f('runs'), 1)
  n = config_schema.integer(config, f('num_examples'), 2 * k)
  frac = config_schema.number(config, f('train_fraction'), 0.0, 1.0, low_open=True)
  if not 1 <= kclass.num_train(n, frac) < n:
    raise config_schema.ConfigError(
        f'config.{f("train_fraction")}={frac!r} is invalid; allowed: a fraction leaving at '
        f'least one training and one test example of the {n}.')
  config_schema.number(config, f('class_sep'), 0.0, low_open=True)
  config_schema.number(config, f('flip_y'), 0.0, 1.0)
  hidden = node['hidden']
  if isinstance(hidden, (str, bytes)) or not all(
      isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
    raise config_schema.ConfigError(
        f'config.{f("hidden")}={hidden!r} is invalid; allowed: a tuple of positive integers '
        '(layer widths; () = linear).')
  config_schema.integer(config, f('steps'), 1)
  config_schema.number(config, f('learning_rate'), 0.0, low_open=True)
  config_schema.number(config, f('temperature'), 0.0, low_open=True)
  config_schema.integer(config, f('bayes_samples'), 0)


def validate(config) -> None:
  validate_protocol(config)
  config_schema.number(config, 'ce_weight', 0.0)
  config_schema.number(config, 'kd_weight', 0.0)
  config_schema.integer(config, 'moments', 1)


def axes(config) -> dict[str, np.ndarray]:
  return {'overlap': np.asarray(config.overlaps, np.int32),
          'seed': np.arange(config.runs, dtype=np.int32)}


# Protocol S on a CPU (BENCHMARKS.md, protocol S). One setting per vmap group: a setting's
# 6000-row inputs fill the cache alone, and width 1 pads sweeps to multiples of 2, not 16.
# Short automatic chunks: on two or more CPU devices XLA's resident memory grew with the
# training steps of one execution (100 ntdh_kclass settings in one chunk: 4.70 GiB; in chunks
# of 10: 1.34 GiB, ≈ 1 % slower; one device: flat), and chunks commit every 15–40 s.
CPU_VMAP_WIDTH = 1
MAX_AUTO_CHUNK = 10  # ntdh_kclass: 3 trainings per setting
MAX_AUTO_CHUNK_HEAVY = 4  # Table 1 on S, the feature mask: ≈ 3–4× the steps per setting


def model(pc) -> MLP:
  """The protocol's MLP (`pc` = the protocol-S config node)."""
  return MLP(num_classes=pc.num_classes, hidden=tuple(pc.hidden))


def draw(pc, key, overlap):
  """(train, test, clusters) of one setting."""
  return kclass.sample(key, overlap, pc.num_examples, pc.num_classes, pc.num_informative,
                       pc.dim, pc.student_decisive, pc.teacher_decisive, pc.train_fraction,
                       pc.class_sep, pc.flip_y)


def observed_features(pc, overlap):
  """[d] masks of the informative features modality a and modality b observe."""
  d = pc.num_informative
  cols_a = kclass.teacher_columns(overlap, max(pc.dim, d), pc.student_decisive,
                                  pc.teacher_decisive)[:d]
  cols_b = kclass.student_columns(max(pc.dim, d), pc.student_decisive)[:d]
  return cols_a, cols_b


def bayes_floors(pc, key, clusters, overlap) -> dict:
  """Monte Carlo N3 floors (and standard errors) of modalities a and b; {} if disabled."""
  if not pc.bayes_samples:
    return {}
  # Both modalities in one vmapped program (one copy to compile); modality m draws from
  # split(key)[m] as before, so the estimates do not change.
  floor = lambda k, observed: kclass.bayes_floor(k, clusters, observed, pc.bayes_samples,
                                                 pc.flip_y)
  est, se = jax.vmap(floor)(jax.random.split(key), jnp.stack(observed_features(pc, overlap)))
  return {f'bayes_floor_{name}{suffix}': v[i] for i, name in enumerate('ab')
          for suffix, v in (('', est), ('_se', se))}


def train_teacher_and_baseline(net, pc, train, teacher_init, student_init):
  """Teacher (on x_a) and baseline student (on x_b) in one `training.fit` loop."""

  def loss(params):
    ce = training.cross_entropy  # one-hot form: no scatter-add in the gradient
    return (ce(net.apply(params['teacher'], train.x_a), train.y)
            + ce(net.apply(params['baseline'], train.x_b), train.y))

  params, _ = training.fit(loss, {'teacher': teacher_init, 'baseline': student_init},
                           optax.sgd(pc.learning_rate), pc.steps)
  return params


def _train(config, key, setting):
  net = model(config)
  k_data, k_init, k_bayes = jax.random.split(key, 3)
  train, test, clusters = draw(config, k_data, setting['overlap'])
  teacher_init, student_init = init_models(net, k_init, 2, config.dim)
  params = train_teacher_and_baseline(net, config, train, teacher_init, student_init)
  hyper = kd_methods.Hyper(temperature=config.temperature, ce_weight=config.ce_weight,
                           kd_weight=config.kd_weight)
  students = kd_methods.init_students(('kl',), k_init, student_init, config.num_classes,
                                      hyper)
  teacher_logits = net.apply(params['teacher'], train.x_a)
  students = kd_methods.fit_students(('kl',), hyper, net.apply, students, train.x_b,
                                     teacher_logits, train.y, optax.sgd(config.learning_rate),
                                     config.steps)
  params['kd'] = students['kl']['model']
  return params, (train, test, clusters, k_bayes)


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  net = model(config)

  def setting_fn(key, setting):
    params, (train, test, clusters, k_bayes) = _train(config, key, setting)
    logits = lambda name, x: net.apply(params[name], x)
    t_train, kd_train = logits('teacher', train.x_a), logits('kd', train.x_b)
    t_test, b_test, kd_test = (logits('teacher', test.x_a), logits('baseline', test.x_b),
                               logits('kd', test.x_b))
    acc = lambda z: training.accuracy(z, test.y)
    metrics = {
        'teacher_acc': acc(t_test), 'baseline_acc': acc(b_test), 'kd_acc': acc(kd_test),
        'teacher_loss': training.cross_entropy(t_train, train.y),
        'baseline_loss': training.cross_entropy(logits('baseline', train.x_b), train.y),
        'kd_loss': training.cross_entropy(kd_train, train.y),
        'cmd_inputs': divergences.central_moment_discrepancy(train.x_a, train.x_b,
                                                             config.moments),
        'cmd_outputs': divergences.central_moment_discrepancy(
            jax.nn.softmax(t_train), jax.nn.softmax(kd_train), config.moments),
        'nckd_train': jnp.mean(divergences.non_target_kl(t_train, kd_train, train.y)),
        'n_train': jnp.asarray(train.y.shape[0], jnp.float32),
        'n_test': jnp.asarray(test.y.shape[0], jnp.float32),
        'num_classes': jnp.asarray(config.num_classes, jnp.float32),
        'confidence_delta': jnp.asarray(config.delta, jnp.float32),
    }
    metrics |= measures.teacher_wrong_softmax(t_train, kd_train, train.y, cls=0)
    metrics |= measures.teacher_student_divergences(t_test, kd_test, test.y, suffix='_test')
    metrics |= kd_methods.omega_statistics(t_train, kd_train, train.y)
    metrics |= bayes_floors(config, k_bayes, clusters, setting['overlap'])
    return (metrics, params) if with_params else metrics

  return setting_fn


def gamma(overlap, teacher_decisive):
  """γ = o / t of protocol S (o / 20 with the paper's numbers)."""
  return np.asarray(overlap, np.float64) / teacher_decisive


def derived(table, config):
  return {'gamma': gamma(table['overlap'], config.teacher_decisive)} | measures.error_columns(table)


# --------------------------------------------------------------------------------------------
# The central NTDH figure (shared with ntdh_table1).
# --------------------------------------------------------------------------------------------
def divergence_figure(table, summary, path, divergence='nckd_test', title='',
                      divergence_label='non-target divergence D_NT (NCKD, test, nats)',
                      x='gamma', xlabel='γ'):
  """KD gain Δ against the measured divergence, one point per setting, by method, with
  the Spearman rank correlation; and the effect of ω on that divergence (with vs without).
  """
  healthy = ~np.asarray(table.get('diverged', np.zeros(len(table['delta']), bool)), bool)
  sub = {k: np.asarray(v)[healthy] for k, v in table.items()}
  methods = (list(dict.fromkeys(sub['method'].tolist())) if 'method' in sub
             else ['kl'])
  method_of = sub['method'] if 'method' in sub else np.full(len(sub['delta']), 'kl')
  pairs = [p for p in kd_methods.OMEGA_PAIRS if set(p) <= set(methods)]
  fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(11 if pairs else 6, 4.6),
                           squeeze=False)
  ax = axes[0, 0]
  rho = tables.spearman(sub[divergence], sub['delta'], permutations=0)['rho']
  for i, m in enumerate(methods):
    rows = method_of == m
    r = tables.spearman(sub[divergence][rows], sub['delta'][rows], permutations=0)['rho']
    ax.scatter(sub[divergence][rows], sub['delta'][rows], s=6, alpha=0.45, color=f'C{i % 10}',
               label=f'{kd_methods.LABELS.get(m, m)} (ρ = {r:+.2f})')
  ax.axhline(0, color='k', lw=0.8)
  if np.nanmin(sub[divergence]) > 0 and np.nanmax(sub[divergence]) > 30 * np.nanmin(sub[divergence]):
    ax.set_xscale('log')
  ax.set(xlabel=divergence_label, ylabel='Δ = KD − baseline (accuracy points)',
         title=f'KD gain vs divergence: Spearman ρ = {rho:+.3f} (n = {len(sub["delta"])})')
  ax.legend(fontsize=7, markerscale=2)
  if pairs:
    ax = axes[0, 1]
    for i, (plain, masked) in enumerate(pairs):
      for method, style in ((plain, '-'), (masked, '--')):
        rows = {k: v[summary['method'] == method] for k, v in summary.items()}
        figures.band(ax, rows, x, divergence, kd_methods.LABELS[method], color=f'C{i}', ls=style)
    ax.set(xlabel=xlabel, ylabel=divergence_label,
           title='effect of the sample mask ω (dashed: with ω)')
    ax.legend(fontsize=8)
  for ax in axes.flat:
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return figures.save(fig, path)


def make_figures(table, summary, config, workdir):
  return [
      figures.overlap_figure(summary, workdir / 'ntdh_kclass.png',
                             title='NTDH protocol S: K-class decisive-feature overlap',
                             xlabel='γ = o / t'),
      figures.bounds_figure(table, summary, workdir / 'ntdh_kclass_bounds.png', x='gamma',
                            divergence='nckd_test', xlabel='γ = o / t',
                            divergence_label='non-target divergence NCKD (nats)'),
      divergence_figure(table, summary, workdir / 'ntdh_kclass_divergence.png',
                        title='NTDH protocol S: KD gain vs non-target divergence'),
  ]


EXPERIMENT = base.Experiment(
    name='ntdh_kclass', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('overlap',), figures=make_figures,
    derived=derived, nan_ok=measures.TEACHER_WRONG_COLUMNS, saves_params=True,
    cpu_vmap_width=lambda config: CPU_VMAP_WIDTH,
    max_auto_chunk=lambda config: MAX_AUTO_CHUNK)
