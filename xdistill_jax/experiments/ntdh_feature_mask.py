"""NTDH feature masking guided by the non-target divergence (docs/protocols.md §M).

Run on protocol S (`generators.kclass`, four classes): with two classes (protocol G) the
non-target distribution is a point mass, the non-target divergence is identically zero and
every feature's tag would be 0 — protocol S is where the tags carry information.

Per setting (overlap o, seed):

1. One fused loop trains the full teacher (x_a) and the baseline student (x_b) with CE, and
   a joint teacher–student pair with CE_t + CE_s + D_NT(teacher, student), where D_NT is
   `divergence` ('nckd': NCKD, the primary non-target divergence; 'nt_js'; or
   'nt_js_reversed', the authors' ½[KL(m‖p̂) + KL(m‖q̂)] for parity). The joint pair uses SGD
   with momentum `joint_momentum` (0.9 in the authors' `train_for_overlap_tag`); everything
   else plain SGD (protocol S).
2. Tags: for each teacher input column j and each of `tag_repeats` row permutations, the
   joint teacher sees x_a with column j permuted, the joint student its unpermuted x_b, and
   the tag is the mean D_NT over the repeats (training set); tags are min–max normalised.
3. Three modes (an inner axis) keep k = `keep` teacher columns: the highest tags, the lowest
   tags, or k random columns (without replacement; the authors' `np.random.randint` may
   repeat a column).
4. One loop retrains a teacher on each mode's kept columns (input dimension k, the same
   initialisation for every mode) and, beside them, the KD student of the full teacher; a
   last loop distils each masked teacher into a student (KL at T, weights 1 : 1, starting
   from the baseline's initialisation).

Reported per mode: the masked teacher's and its KD student's test accuracy (`teacher_acc`,
`kd_acc`, so Δ and the bounds refer to that pair), Δ = KD − baseline, Δ_mask = KD − unmasked
KD, the precision of the kept set against the truly shared decisive columns (s − o)..(s − 1)
(0 by construction at o = 0) and against the teacher's decisive columns, and the mean
normalised tag of shared, teacher-only and noise columns (NaN where a group is empty).
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
from xdistill_jax.experiments import ntdh_kclass  # noqa: E402
from xdistill_jax.generators import kclass  # noqa: E402
from xdistill_jax.models import init_models  # noqa: E402
from xdistill_jax.reporting import figures  # noqa: E402

MODES = ('highest', 'lowest', 'random')
DIVERGENCES = {
    'nckd': divergences.non_target_kl,
    'nt_js': divergences.non_target_js,
    'nt_js_reversed': divergences.non_target_js_reversed,
}
FIELDS = ntdh_kclass.PROTOCOL_FIELDS + (
    'keep', 'tag_repeats', 'divergence', 'joint_momentum', 'modes', 'ce_weight', 'kd_weight')
NAN_OK = ('tag_shared', 'tag_teacher_only', 'tag_noise')


def validate(config) -> None:
  ntdh_kclass.validate_protocol(config)
  config_schema.integer(config, 'keep', 1, config.dim)
  config_schema.integer(config, 'tag_repeats', 1)
  config_schema.choice(config, 'divergence', tuple(DIVERGENCES))
  config_schema.number(config, 'joint_momentum', 0.0, 1.0)
  config_schema.choice_list(config, 'modes', MODES)
  config_schema.number(config, 'ce_weight', 0.0)
  config_schema.number(config, 'kd_weight', 0.0)
  if config.num_classes < 3:
    raise config_schema.ConfigError(
        f'config.num_classes={config.num_classes!r} is invalid; allowed: an integer >= 3 '
        '(with two classes the non-target divergence, hence every tag, is 0).')


axes = ntdh_kclass.axes


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'mode': np.asarray(list(config.modes))}


def feature_tags(apply_fn, teacher, student_logits, x_a, labels, key, repeats: int,
                 divergence):
  """Per-column non-target-divergence tags of a teacher, min–max normalised to [0, 1].

  tag_j = mean over `repeats` row permutations π of mean_i D(f_t(x_a with column j
  permuted by π)_i, z_s,i, y_i); then (tag − min) / (max − min) (all 0 if constant).

  Args:
    apply_fn: (params, x) -> logits.
    teacher: teacher params.
    student_logits: [n, K] the (fixed) student's logits on its own modality.
    x_a: [n, d] teacher inputs.
    labels: [n].
    key: typed key for the permutations.
    repeats: number of permutations.
    divergence: per-example (teacher_logits, student_logits, labels) -> [n].

  Returns:
    (normalised tags [d], raw tags [d]).
  """
  n, d = x_a.shape
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, repeats))

  def column_tag(j):
    onehot = jnp.arange(d) == j

    def one(perm):
      x = jnp.where(onehot, x_a[perm], x_a)
      return jnp.mean(divergence(apply_fn(teacher, x), student_logits, labels))

    return jnp.mean(jax.vmap(one)(perms))

  raw = jax.lax.map(column_tag, jnp.arange(d))
  span = jnp.max(raw) - jnp.min(raw)
  return jnp.where(span > 0, (raw - jnp.min(raw)) / jnp.where(span > 0, span, 1.0), 0.0), raw


def select(mode: str, tags, keep: int, key):
  """Indices [keep] of the kept columns: highest tags, lowest tags, or random."""
  if mode == 'highest':
    return jnp.argsort(-tags)[:keep]
  if mode == 'lowest':
    return jnp.argsort(tags)[:keep]
  return jax.random.permutation(key, tags.shape[0])[:keep]


def _group_mean(values, mask):
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.sum(mask)  # NaN when empty


def make_setting_fn(config) -> base.SettingFn:
  net = ntdh_kclass.model(config)
  modes = tuple(config.modes)
  divergence = DIVERGENCES[config.divergence]
  sgd = optax.sgd(config.learning_rate)
  hyper = kd_methods.Hyper(temperature=config.temperature, ce_weight=config.ce_weight,
                           kd_weight=config.kd_weight)

  def setting_fn(key, setting):
    overlap = setting['overlap']
    k_data, k_init, k_bayes, k_tags, k_random, k_mask_init = jax.random.split(key, 6)
    train, test, clusters = ntdh_kclass.draw(config, k_data, overlap)
    teacher_init, student_init = init_models(net, k_init, 2, config.dim)
    ce = training.cross_entropy  # one-hot form: no scatter-add in the gradient

    # 1. Full teacher + baseline (SGD) and the joint pair (SGD + momentum), one loop.
    def stage1(p):
      zt, zs = net.apply(p['joint']['teacher'], train.x_a), net.apply(p['joint']['student'],
                                                                       train.x_b)
      return (ce(net.apply(p['teacher'], train.x_a), train.y)
              + ce(net.apply(p['baseline'], train.x_b), train.y)
              + ce(zt, train.y) + ce(zs, train.y) + jnp.mean(divergence(zt, zs, train.y)))

    params = {'teacher': teacher_init, 'baseline': student_init,
              'joint': {'teacher': teacher_init, 'student': student_init}}
    optimizer = optax.multi_transform(
        {'plain': sgd, 'joint': optax.sgd(config.learning_rate, config.joint_momentum)},
        {'teacher': 'plain', 'baseline': 'plain', 'joint': 'joint'})
    params, _ = training.fit(stage1, params, optimizer, config.steps)

    # 2. Tags and the kept columns of every mode.
    joint_student_logits = net.apply(params['joint']['student'], train.x_b)
    tags, raw_tags = feature_tags(net.apply, params['joint']['teacher'], joint_student_logits,
                                  train.x_a, train.y, k_tags, config.tag_repeats, divergence)
    kept = jnp.stack([select(m, tags, config.keep, k_random) for m in modes])  # [M, k]

    # 3. Masked teachers (same init for every mode) and the full teacher's KD student.
    masked_init = init_models(net, k_mask_init, 1, config.keep)[0]
    xa_train = jnp.take(train.x_a, kept, axis=1).transpose(1, 0, 2)  # [M, n, k]
    xa_test = jnp.take(test.x_a, kept, axis=1).transpose(1, 0, 2)
    full_teacher_logits = net.apply(params['teacher'], train.x_a)

    def stage3(p):
      zt = jax.vmap(net.apply)(p['masked'], xa_train)
      return (sum(ce(zt[i], train.y) for i in range(len(modes)))
              + kd_methods.objective('kl', hyper, net.apply(p['kd'], train.x_b),
                                     full_teacher_logits, train.y))

    stacked_init = jax.tree.map(lambda a: jnp.stack([a] * len(modes)), masked_init)
    p3, _ = training.fit(stage3, {'masked': stacked_init, 'kd': student_init}, sgd, config.steps)

    # 4. A KD student per masked teacher.
    masked_logits = jax.vmap(net.apply)(p3['masked'], xa_train)

    def stage4(p):
      zs = jax.vmap(net.apply, (0, None))(p, train.x_b)
      return sum(kd_methods.objective('kl', hyper, zs[i], masked_logits[i], train.y)
                 for i in range(len(modes)))

    stacked_students = jax.tree.map(lambda a: jnp.stack([a] * len(modes)), student_init)
    students, _ = training.fit(stage4, stacked_students, sgd, config.steps)

    # Metrics: per mode, then shared (broadcast over modes).
    acc = lambda z: training.accuracy(z, test.y)
    t_test = jax.vmap(net.apply)(p3['masked'], xa_test)  # [M, n_test, K]
    kd_test = jax.vmap(net.apply, (0, None))(students, test.x_b)
    kd_train = jax.vmap(net.apply, (0, None))(students, train.x_b)
    shared_cols = kclass.shared_columns(overlap, config.dim, config.student_decisive,
                                        config.teacher_decisive)
    teacher_cols = kclass.teacher_columns(overlap, config.dim, config.student_decisive,
                                          config.teacher_decisive)
    per_mode = {
        'teacher_acc': jax.vmap(acc)(t_test),
        'kd_acc': jax.vmap(acc)(kd_test),
        'kd_loss': jax.vmap(training.cross_entropy, (0, None))(kd_train, train.y),
        'precision': jnp.mean(shared_cols[kept].astype(jnp.float32), -1),
        'decisive_precision': jnp.mean(teacher_cols[kept].astype(jnp.float32), -1),
        'kept': kept.astype(jnp.float32),
    }
    per_mode |= jax.vmap(lambda t, s: measures.teacher_student_divergences(
        t, s, test.y, suffix='_test'))(t_test, kd_test)
    full_t_test = net.apply(params['teacher'], test.x_a)
    full_kd_test = net.apply(p3['kd'], test.x_b)
    joint_t_test = net.apply(params['joint']['teacher'], test.x_a)
    joint_s_test = net.apply(params['joint']['student'], test.x_b)
    shared = {
        'full_teacher_acc': acc(full_t_test),
        'baseline_acc': acc(net.apply(params['baseline'], test.x_b)),
        'unmasked_kd_acc': acc(full_kd_test),
        'unmasked_nckd_test': jnp.mean(divergences.non_target_kl(full_t_test, full_kd_test,
                                                                 test.y)),
        'joint_teacher_acc': acc(joint_t_test),
        'joint_student_acc': acc(joint_s_test),
        'joint_nckd_test': jnp.mean(divergences.non_target_kl(joint_t_test, joint_s_test,
                                                              test.y)),
        'tag_shared': _group_mean(tags, shared_cols),
        'tag_teacher_only': _group_mean(tags, teacher_cols & ~shared_cols),
        'tag_noise': _group_mean(tags, ~teacher_cols),
        'raw_tag_max': jnp.max(raw_tags),
        'n_train': jnp.asarray(train.y.shape[0], jnp.float32),
        'num_classes': jnp.asarray(config.num_classes, jnp.float32),
        'confidence_delta': jnp.asarray(config.delta, jnp.float32),
    } | ntdh_kclass.bayes_floors(config, k_bayes, clusters, overlap)
    # The masked teacher sees only kept columns: its floor is not modality a's; drop it.
    shared.pop('bayes_floor_a', None)
    shared.pop('bayes_floor_a_se', None)
    shared = jax.tree.map(lambda v: jnp.broadcast_to(v, (len(modes),) + jnp.shape(v)), shared)
    return per_mode | shared

  return setting_fn


def derived(table, config):
  out = {'gamma': ntdh_kclass.gamma(table['overlap'], config.teacher_decisive)}
  out |= measures.error_columns(table)
  out['delta_mask'] = 100.0 * (table['kd_acc'] - table['unmasked_kd_acc'])
  return out


def make_figures(table, summary, config, workdir):
  """Accuracy of the masked teacher and its KD student per mode, and the precision."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  for i, mode in enumerate(config.modes):
    rows = {k: v[summary['mode'] == mode] for k, v in summary.items()}
    figures.band(axes[0], rows, 'gamma', 'teacher_acc', f'teacher ({mode})', color=f'C{i}')
    figures.band(axes[1], rows, 'gamma', 'kd_acc', f'KD student ({mode})', color=f'C{i}')
    figures.band(axes[2], rows, 'gamma', 'precision', mode, color=f'C{i}')
  first = {k: v[summary['mode'] == config.modes[0]] for k, v in summary.items()}
  figures.band(axes[1], first, 'gamma', 'baseline_acc', 'baseline (no KD)', color='k', ls=':')
  figures.band(axes[1], first, 'gamma', 'unmasked_kd_acc', 'KD, unmasked teacher', color='k',
               ls='--')
  axes[0].set(ylabel='test accuracy', title=f'teacher retrained on k = {config.keep} columns')
  axes[1].set(ylabel='test accuracy', title='KD student of the masked teacher')
  axes[2].set(ylabel='fraction of kept columns truly shared', title='precision of the kept set')
  path = figures.finish(
      fig, axes, workdir / 'ntdh_feature_mask.png',
      'NTDH feature mask guided by the non-target divergence (protocol S)', xlabel='γ = o / t')
  lines = ['# NTDH feature mask (protocol S): mean ± std over seeds', '',
           '| mode | o | teacher acc. | KD acc. | Δ (KD − baseline) | Δ_mask (KD − unmasked KD) '
           '| precision (shared) |', '|---|---|---|---|---|---|---|']
  for i in range(len(summary['mode'])):
    f = lambda name, s=100.0: (f'{s * summary[name + "_mean"][i]:.2f} ± '
                               f'{s * np.nan_to_num(summary[name + "_std"][i]):.2f}')
    lines.append(f'| {summary["mode"][i]} | {summary["overlap"][i]} | {f("teacher_acc")} | '
                 f'{f("kd_acc")} | {f("delta", 1.0)} | {f("delta_mask", 1.0)} | '
                 f'{f("precision", 1.0)} |')
  md = workdir / 'feature_mask.md'
  md.write_text('\n'.join(lines) + '\n')
  return [path, str(md)]


EXPERIMENT = base.Experiment(
    name='ntdh_feature_mask', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('mode', 'overlap'), figures=make_figures,
    derived=derived, nan_ok=NAN_OK, inner_axes=inner_axes,
    cpu_vmap_width=lambda config: ntdh_kclass.CPU_VMAP_WIDTH,
    max_auto_chunk=lambda config: ntdh_kclass.MAX_AUTO_CHUNK_HEAVY)
