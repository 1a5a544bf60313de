"""Digits → Digits-M: a real modality gap on the bundled data, dialled continuously by α.

The small analogue of the NTDH paper's MNIST → MNIST-M (docs/protocols.md §R). The teacher
sees the grey 8 × 8 digit of scikit-learn's `load_digits` (64 features); the student sees the
same digit as an RGB Digits-M image (192 features), `datasets.blend` of the digit with a random
8 × 8 crop of one of scikit-learn's two sample photographs at gap α (0: the digit in colour,
no gap; 1: the full MNIST-M rule |crop − 1[g > ½]|), plus optionally Gaussian pixel noise of
standard deviation σ (the authors' noise dial; axis `noise`).

* The crops are drawn once per sweep from key(`seed`) (`datasets.random_crops`), so every α,
  σ and seed sees the same photographs at the same places (common random numbers); α and σ
  are traced, one compiled program covers all of them.
* One setting = (α, σ, seed); only the seed fixes its key (`key_axes=('seed',)`): the
  train/test split, the pixel noise, the initial parameters and the minibatch order are the
  same for every α and σ of one seed, so the α trend is a paired comparison.
* Training as the authors train MNIST: MLPs (`hidden`), minibatch SGD (batch 128, learning
  rate 1e-3, momentum 0.9) for `epochs` epochs over a fresh permutation each epoch (the last
  partial batch dropped), CE : KD = 0.5 : 0.5. Teacher and baseline train in one loop; then
  the students of `methods` (KL, KL+ω, DKD, DKD+ω; `kd_methods.objective`, the inner axis
  `method`) in one loop on the frozen teacher, each from the baseline's initialisation.

Per (setting, method) row: teacher, baseline and KD accuracy, Δ, the divergences of
`measures.teacher_student_divergences` between teacher and KD student (`*_test`, incl.
TCKD / NCKD) and between teacher and baseline (`*_baseline_test`), ω statistics; the registry's
N1/N2 bounds apply. Outputs: digits_m.md (per α: accuracies, Δ, TCKD, NCKD per method;
Spearman ρ(Δ, NCKD) per method with a bootstrap 95 % interval), correlation.json,
digits_m.png (against α), digits_m_examples.png (student images at five α) and the bounds
figure of the first method.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdistill_jax import config_schema
from xdistill_jax import datasets
from xdistill_jax import kd_methods
from xdistill_jax import measures
from xdistill_jax import training
from xdistill_jax.experiments import base
from xdistill_jax.generators.decisive_features import PairedSample
from xdistill_jax.models import MLP
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

METHODS = ('kl', 'kl_omega', 'dkd', 'dkd_omega')
NUM_IMAGES, NUM_CLASSES, SIDE = 1797, 10, 8
FIELDS = ('alphas', 'noises', 'runs', 'n_train', 'hidden', 'epochs', 'batch_size',
          'learning_rate', 'momentum', 'temperature', 'ce_weight', 'kd_weight', 'dkd_alpha',
          'dkd_beta', 'omega_threshold', 'threshold', 'methods')


def validate(config) -> None:
  config_schema.number_list(config, 'alphas', 0.0, 1.0)
  config_schema.number_list(config, 'noises', 0.0)
  config_schema.integer(config, 'runs', 1)
  n_train = config_schema.integer(config, 'n_train', 2, NUM_IMAGES - 1)
  config_schema.integer_list(config, 'hidden', 1, unique=False)
  config_schema.integer(config, 'epochs', 1)
  config_schema.integer(config, 'batch_size', 1, n_train)
  config_schema.number(config, 'learning_rate', 0.0, low_open=True)
  config_schema.number(config, 'momentum', 0.0, 0.999)
  config_schema.number(config, 'temperature', 0.0, low_open=True)
  for field in ('ce_weight', 'kd_weight', 'dkd_alpha', 'dkd_beta'):
    config_schema.number(config, field, 0.0)
  config_schema.number(config, 'omega_threshold', -1.0, 1.0)
  config_schema.number(config, 'threshold', 0.0, 1.0)
  config_schema.choice_list(config, 'methods', METHODS)


def axes(config) -> dict[str, np.ndarray]:
  return {'alpha': np.asarray(config.alphas, np.float32),
          'noise': np.asarray(config.noises, np.float32),
          'seed': np.arange(config.runs, dtype=np.int32)}


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'method': np.asarray(list(config.methods))}


def hyper(config) -> kd_methods.Hyper:
  """The objectives of KL, KL+ω, DKD, DKD+ω: one T, CE : KD = ce_weight : kd_weight."""
  return kd_methods.Hyper(temperature=config.temperature, ce_weight=config.ce_weight,
                          kd_weight=config.kd_weight, dkd_alpha=config.dkd_alpha,
                          dkd_beta=config.dkd_beta, dkd_temperature=config.temperature,
                          omega_threshold=config.omega_threshold)


def sweep_images(config):
  """(grey digits [N, 8, 8], labels [N], crops [N, 8, 8, 3]): crops from key(seed), once."""
  digits, labels = datasets.bundled_digits()
  crops = datasets.random_crops(datasets.bundled_backgrounds(),
                                jax.random.fold_in(jax.random.key(config.seed), 1),
                                NUM_IMAGES, SIDE, SIDE)
  return digits, labels, np.asarray(crops)


def student_images(digits, crops, alpha, noise, noise_draw, threshold):
  """Flattened [N, 192] Digits-M images at gap α plus σ · (a fixed N(0, 1) draw)."""
  images = datasets.blend(digits, crops, alpha, threshold).reshape(digits.shape[0], -1)
  return images + noise * noise_draw


def minibatch_fit(loss_fn, params, optimizer, key, n: int, batch: int, epochs: int):
  """SGD on `loss_fn(params, rows)` over minibatches of `batch` row indices.

  Each epoch is a fresh permutation of the n rows cut into n // batch batches (the last
  partial batch dropped, so every step has the same shape); a `lax.scan` over epochs of a
  `lax.scan` over batches, pure and vmappable.
  """
  steps = n // batch
  grad_fn = jax.grad(loss_fn)

  def step(carry, rows):
    params, state = carry
    updates, state = optimizer.update(grad_fn(params, rows), state, params)
    return (optax.apply_updates(params, updates), state), None

  def epoch(carry, k):
    order = jax.random.permutation(k, n)[:steps * batch].reshape(steps, batch)
    return jax.lax.scan(step, carry, order)[0], None

  carry = (params, optimizer.init(params))
  return jax.lax.scan(epoch, carry, jax.random.split(key, epochs))[0][0]


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  digits, labels, crops = sweep_images(config)
  methods = tuple(config.methods)
  net = MLP(num_classes=NUM_CLASSES, hidden=tuple(config.hidden))
  optimizer = optax.sgd(config.learning_rate, momentum=config.momentum or None)
  h = hyper(config)
  n_train, batch = config.n_train, config.batch_size

  def setting_fn(key, setting):
    k_split, k_noise, k_teacher, k_student, k_order, k_kd = jax.random.split(key, 6)
    x_b = student_images(digits, crops, setting['alpha'], setting['noise'],
                         jax.random.normal(k_noise, (NUM_IMAGES, 3 * SIDE * SIDE)),
                         config.threshold)
    order = jax.random.permutation(k_split, NUM_IMAGES)
    rows = PairedSample(jnp.asarray(digits.reshape(NUM_IMAGES, -1))[order], x_b[order],
                        jnp.asarray(labels)[order])
    train, test = rows.rows(0, n_train), rows.rows(n_train, NUM_IMAGES)
    student_init = net.init(k_student, train.x_b[:1])
    ce = lambda p, x, y: training.cross_entropy(net.apply(p, x), y)

    def supervised(params, r):  # teacher (grey) and baseline (Digits-M) in one loop
      return (ce(params['teacher'], train.x_a[r], train.y[r])
              + ce(params['baseline'], train.x_b[r], train.y[r]))

    params = minibatch_fit(supervised, {'teacher': net.init(k_teacher, train.x_a[:1]),
                                        'baseline': student_init},
                           optimizer, k_order, n_train, batch, config.epochs)
    t_train = jax.lax.stop_gradient(net.apply(params['teacher'], train.x_a))

    def distill(students, r):  # every method's student in one loop, on the frozen teacher
      return sum(kd_methods.objective(m, h, net.apply(students[m], train.x_b[r]),
                                      t_train[r], train.y[r]) for m in methods)

    params['students'] = minibatch_fit(distill, {m: student_init for m in methods}, optimizer,
                                       k_kd, n_train, batch, config.epochs)
    t_test = net.apply(params['teacher'], test.x_a)
    b_test = net.apply(params['baseline'], test.x_b)
    kd_test = jnp.stack([net.apply(params['students'][m], test.x_b) for m in methods])
    kd_train = jnp.stack([net.apply(params['students'][m], train.x_b) for m in methods])
    per_method = kd_methods.method_metrics(t_train, t_test, kd_train, kd_test, train.y, test.y,
                                           config.omega_threshold)
    b_train = net.apply(params['baseline'], train.x_b)
    shared = kd_methods.shared_metrics(t_train, t_test, b_train, b_test, train.y, test.y,
                                       NUM_CLASSES, config.delta)
    shared |= measures.teacher_student_divergences(t_test, b_test, test.y,
                                                   suffix='_baseline_test')
    shared = jax.tree.map(lambda v: jnp.broadcast_to(v, (len(methods),) + jnp.shape(v)), shared)
    return (per_method | shared, params) if with_params else per_method | shared

  return setting_fn


def derived(table, config):
  return measures.error_columns(table)


# --------------------------------------------------------------------------------------------
# The NTDH question, the table and the figures.
# --------------------------------------------------------------------------------------------
def correlations(table, config, divergence='nckd_test') -> dict:
  """Spearman ρ(Δ, divergence) per method over its settings, with a bootstrap 95 % interval."""
  healthy = ~np.asarray(table['diverged'], bool)
  out = {'x': divergence, 'y': 'delta',
         'expectation': 'NTDH predicts rho < 0: smaller non-target divergence, larger KD gain'}
  for m in list(config.methods) + ['pooled']:
    sel = healthy & ((table['method'] == m) if m != 'pooled' else True)
    out[m] = tables.spearman_interval(table[divergence][sel], table['delta'][sel],
                                      seed=config.seed)
  return out


def _per_alpha(summary, method, metric):
  rows = summary['method'] == method
  return summary[metric + '_mean'][rows], summary[metric + '_std'][rows]


def markdown(summary, config, corr) -> str:
  """Per α (and σ): teacher, baseline, then KD accuracy, Δ, TCKD, NCKD of every method."""
  first = summary['method'] == config.methods[0]
  lines = ['# Digits → Digits-M: KD gain against the gap α', '',
           f'Mean over {config.runs} seeds (± std for Δ); accuracies in %, divergences in '
           'nats (test set, T = 1).', '',
           '| α | σ | teacher | baseline | ' + ' | '.join(
               f'{kd_methods.LABELS[m]}: KD acc. / Δ / TCKD / NCKD' for m in config.methods)
           + ' |', '|' + '---|' * (4 + len(config.methods))]
  for i in np.flatnonzero(first):
    alpha, noise = summary['alpha'][i], summary['noise'][i]
    cells = []
    for m in config.methods:
      j = np.flatnonzero((summary['method'] == m) & (summary['alpha'] == alpha)
                         & (summary['noise'] == noise))[0]
      cells.append(f'{100 * summary["kd_acc_mean"][j]:.1f} / {summary["delta_mean"][j]:+.2f} ± '
                   f'{summary["delta_std"][j]:.2f} / {summary["tckd_test_mean"][j]:.3f} / '
                   f'{summary["nckd_test_mean"][j]:.3f}')
    lines.append(f'| {alpha:.2f} | {noise:.2f} | {100 * summary["teacher_acc_mean"][i]:.1f} | '
                 f'{100 * summary["baseline_acc_mean"][i]:.1f} | ' + ' | '.join(cells) + ' |')
  lines += ['', '## Spearman ρ(Δ, NCKD) per method, over settings (bootstrap 95 % interval)',
            '', 'NTDH predicts ρ < 0.', '']
  for m in list(config.methods) + ['pooled']:
    c = corr[m]
    lines.append(f'- {kd_methods.LABELS.get(m, m)}: ρ = {c["rho"]:+.3f} '
                 f'[{c["low"]:+.3f}, {c["high"]:+.3f}] (n = {c["n"]})')
  return '\n'.join(lines) + '\n'


def examples_figure(config, path, count: int = 6) -> str:
  """The teacher's grey digits (top row) and the student's images at five values of α."""
  import matplotlib.pyplot as plt
  digits, _, crops = sweep_images(config)
  alphas = np.linspace(0.0, 1.0, 5)
  fig, axes = plt.subplots(len(alphas) + 1, count, figsize=(1.2 * count, 1.25 * (len(alphas) + 1)))
  for j in range(count):
    axes[0, j].imshow(digits[j], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  axes[0, 0].set_ylabel('teacher', fontsize=8)
  for i, alpha in enumerate(alphas, 1):
    images = np.asarray(datasets.blend(digits[:count], crops[:count], alpha, config.threshold))
    axes[i, 0].set_ylabel(f'α = {alpha:.2f}', fontsize=8)
    for j in range(count):
      axes[i, j].imshow(np.clip(images[j], 0, 1), interpolation='nearest')
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle('Student modality: digits blended into photo crops (Digits-M rule)', fontsize=9)
  return figures.save(fig, path)


def alpha_figure(summary, config, path) -> str:
  """Accuracy, Δ, TCKD and NCKD against α (σ = the first noise level), per method."""
  import matplotlib.pyplot as plt
  noise = summary['noise'] == config.noises[0]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
  one = tables.select(summary, noise & (summary['method'] == config.methods[0]))
  figures.band(axes[0], one, 'alpha', 'teacher_acc', 'teacher (grey digit)', color='k')
  figures.band(axes[0], one, 'alpha', 'baseline_acc', 'baseline (Digits-M)', color='grey')
  figures.band(axes[3], one, 'alpha', 'nckd_baseline_test', 'baseline (no KD)', color='grey',
               ls='--')
  for i, m in enumerate(config.methods):
    rows = tables.select(summary, noise & (summary['method'] == m))
    label = kd_methods.LABELS[m]
    for ax, metric in zip(axes, ('kd_acc', 'delta', 'tckd_test', 'nckd_test')):
      figures.band(ax, rows, 'alpha', metric, label, color=f'C{i}')
  axes[1].axhline(0, color='k', lw=0.8)
  titles = ('test accuracy', 'Δ = KD − baseline (points)', 'TCKD (teacher ‖ student), nats',
            'NCKD (teacher ‖ student), nats')
  for ax, title in zip(axes, titles):
    ax.set_title(title)
  return figures.finish(fig, axes, path, 'Digits → Digits-M (mean ± std over seeds)',
                        xlabel='gap α (0: digit in colour; 1: full Digits-M)')


def make_figures(table, summary, config, workdir):
  workdir = pathlib.Path(workdir)
  corr = correlations(table, config)
  tables.atomic_write_text(workdir / 'correlation.json', json.dumps(corr, indent=2) + '\n')
  tables.atomic_write_text(workdir / 'digits_m.md', markdown(summary, config, corr))
  first = config.methods[0]
  noise = lambda t: t['noise'] == config.noises[0]
  return [str(workdir / 'digits_m.md'), str(workdir / 'correlation.json'),
          alpha_figure(summary, config, workdir / 'digits_m.png'),
          examples_figure(config, workdir / 'digits_m_examples.png'),
          figures.bounds_figure(tables.select(table, noise(table) & (table['method'] == first)),
                                tables.select(summary, noise(summary)
                                              & (summary['method'] == first)),
                                workdir / f'digits_m_bounds_{first}.png', x='alpha',
                                divergence='nckd_test', xlabel='gap α')]


EXPERIMENT = base.Experiment(
    name='digits_m', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('method', 'alpha', 'noise'),
    figures=make_figures, key_axes=('seed',), derived=derived, saves_params=True,
    inner_axes=inner_axes,
    program_cache=False)  # the program embeds data read from files
