"""Figures of a sweep: metrics against the gap parameter, and error against its bounds."""

import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xdistill_jax import bound_registry  # noqa: E402
from xdistill_jax import bounds  # noqa: E402

_STYLE = {'lower': dict(ls='--'), 'upper': dict(ls='-.'), 'reference': dict(ls=':')}


def band(ax, summary, x, metric, label=None, **kwargs):
  """Mean ± std of `metric` against `x` from a summary table; skips absent metrics."""
  if metric + '_mean' not in summary:
    return
  xs = summary[x + '_mean'] if x + '_mean' in summary else summary[x]
  order = np.argsort(xs)
  xs, mean = xs[order], summary[metric + '_mean'][order]
  std = np.nan_to_num(summary[metric + '_std'][order])
  (line,) = ax.plot(xs, mean, marker='o', ms=3, label=label or metric, **kwargs)
  ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def save(fig, path) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
  return str(path)


def finish(fig, axes, path, title, xlabel=None) -> str:
  """Shared x label, grid and legend on every panel, a title, then `save`."""
  for ax in np.ravel(axes):
    if xlabel:
      ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title)
  return save(fig, path)


def overlap_figure(summary, path, title, x='gamma', xlabel='γ = o / (D − o)'):
  """Accuracies with Bayes ceilings, Δ, divergences and CMD_5 against the overlap ratio."""
  fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
  ax = axes[0, 0]
  for metric, label in (('teacher_acc', 'teacher (modality a)'),
                        ('baseline_acc', 'baseline student (b)'), ('kd_acc', 'KD student (b)')):
    band(ax, summary, x, metric, label)
  for floor, label in (('bayes_floor_a', 'Bayes ceiling, modality a'),
                       ('bayes_floor_b', 'Bayes ceiling, modality b')):
    if floor + '_mean' in summary:
      order = np.argsort(summary[x + '_mean'])
      ax.plot(summary[x + '_mean'][order], 1 - summary[floor + '_mean'][order], ':', label=label)
  ax.set(ylabel='test accuracy', title='accuracy (mean ± std over seeds)')
  ax.legend(fontsize=8)
  ax = axes[0, 1]
  band(ax, summary, x, 'delta', 'Δ = KD − baseline', color='C3')
  ax.axhline(0, color='k', lw=0.8)
  ax.set(ylabel='Δ (accuracy points)', title='KD gain')
  ax = axes[1, 0]
  for metric, label in (('kl_test', 'KL(p_t ‖ p_s)'), ('tckd_test', 'target part (TCKD)'),
                        ('nckd_test', 'non-target part (NCKD)')):
    band(ax, summary, x, metric, label)
  ax.set(ylabel='nats (test set, T = 1)', title='teacher–KD-student divergence')
  ax.legend(fontsize=8)
  ax = axes[1, 1]
  band(ax, summary, x, 'cmd_inputs', 'CMD₅ raw inputs x_a vs x_b (left axis)', color='C0')
  ax.set(ylabel='CMD₅ of the raw inputs', title='domain gap (training set)')
  outputs = ax.twinx()  # the outputs' CMD is two orders of magnitude smaller
  band(outputs, summary, x, 'cmd_outputs', 'CMD₅ softmax outputs (right axis)', color='C1')
  outputs.set_ylabel('CMD₅ of the softmax outputs')
  lines = ax.get_legend_handles_labels(), outputs.get_legend_handles_labels()
  ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8)
  for ax in axes.flat:
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  return save(fig, path)


def _bounds_on(table, target):
  return [b for b in map(bound_registry.get, bound_registry.names())
          if b.name in table and b.target == target]


def _binned(x, y, bins=12):
  """Means of y in quantile bins of x (NaNs dropped)."""
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep], y[keep]
  if len(x) == 0:
    return np.zeros(0), np.zeros(0)
  edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
  which = np.clip(np.searchsorted(edges, x, side='right') - 1, 0, max(len(edges) - 2, 0))
  groups = [i for i in range(max(len(edges) - 1, 1)) if np.any(which == i)]
  return (np.array([x[which == i].mean() for i in groups]),
          np.array([y[which == i].mean() for i in groups]))


def bounds_figure(table, summary, path, x, divergence, target='kd_err',
                  xlabel='γ = o / (D − o)', divergence_label=None, log_x=False):
  """Empirical `target` error with its registered bounds, against `x` and `divergence`.

  Left: group means ± std against the gap parameter. Middle: per-setting error against the
  measured teacher–student divergence, bounds as binned means. Right (when measured): the
  KD approximation error ε(f) = mean KL with the N1 sandwich. Bounds above 1 are vacuous for
  a 0-1 error and are drawn clipped, with their names marked '(vacuous)'.
  """
  panels = 3 if 'kl_test' in table and _bounds_on(table, 'kl_test') else 2
  fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4))
  healthy = ~np.asarray(table.get('diverged', np.zeros(len(table[target]), bool)), bool)
  sub = {k: np.asarray(v)[healthy] for k, v in table.items()}

  ax = axes[0]
  band(ax, summary, x, target, f'{target} (empirical)', color='k')
  for b in _bounds_on(table, target):
    vacuous = np.nanmin(summary[b.name + '_mean']) > 1
    band(ax, summary, x, b.name, f'{b.name} ({b.kind}{", vacuous" if vacuous else ""})',
         **_STYLE.get(b.side, {}))
  ax.set(xlabel=xlabel, ylabel='test error', ylim=(0, 1.02),
         title=f'{target} and its bounds')
  if log_x:
    ax.set_xscale('log')

  ax = axes[1]
  ax.scatter(sub[divergence], sub[target], s=4, alpha=0.3, color='k', label=f'{target} per setting')
  for b in _bounds_on(table, target):
    bx, by = _binned(sub[divergence], sub[b.name])
    ax.plot(bx, np.minimum(by, 1.0), label=b.name, **_STYLE.get(b.side, {}))
  ax.set(xlabel=divergence_label or f'{divergence} (nats)', ylabel='test error', ylim=(0, 1.02),
         title='error against the teacher–student divergence')

  if panels == 3:
    ax = axes[2]
    band(ax, summary, x, 'kl_test', 'ε(f) = mean KL(p_t ‖ p_s)', color='k')
    for b in _bounds_on(table, 'kl_test'):
      band(ax, summary, x, b.name, f'{b.name} ({b.kind})', **_STYLE.get(b.side, {}))
    ax.set(xlabel=xlabel, ylabel='nats', title='KD approximation error (N1 sandwich)')
    if log_x:
      ax.set_xscale('log')
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return save(fig, pathlib.Path(path))


def sample_size_figure(summary, path, floor, title, target='kd_err', x='n'):
  """Error and its registered bounds against the sample size (log-log), and the excess error
  over the Bayes floor with the O(n^-1/2) and O(n^-1) reference slopes (theory.md N5)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
  n = np.asarray(summary[x], float)
  ax = axes[0]
  band(ax, summary, x, target, f'{target} (empirical)', color='k')
  band(ax, summary, x, 'baseline_err', 'baseline_err (empirical)', color='0.5')
  if floor + '_mean' in summary:
    ax.plot(np.sort(n), summary[floor + '_mean'][np.argsort(n)], ':', color='k',
            label='Bayes floor')
  for b in _bounds_on(summary_columns(summary), target):
    band(ax, summary, x, b.name, f'{b.name} ({b.kind})', **_STYLE.get(b.side, {}))
  ax.axhline(1.0, color='r', lw=0.8)
  ax.text(n.min(), 1.05, 'vacuous above 1', color='r', fontsize=8)
  ax.set(xscale='log', yscale='log', xlabel='training examples n', ylabel='test error',
         title='error and bounds')
  ax = axes[1]
  order = np.argsort(n)
  excess = (summary[target + '_mean'] - summary[floor + '_mean'])[order]
  ax.plot(n[order], np.maximum(excess, 1e-4), 'o-', color='k', label='excess error over floor')
  anchor = excess[0] if excess[0] > 0 else np.nanmax(excess)
  for alpha, style in ((0.5, '--'), (1.0, ':')):
    ref = bounds.rate_reference(n[order], n[order][0], anchor, alpha)
    ax.plot(n[order], ref, style, label=f'reference O(n^-{alpha:g}) (N5, not a bound)')
  ax.set(xscale='log', yscale='log', xlabel='training examples n',
         ylabel='kd_err − Bayes floor', title='excess error and N5 rates')
  for ax in axes:
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
  fig.suptitle(title)
  return save(fig, path)


def summary_columns(summary):
  """Metric names present in a summary table (without the _mean/_std/_count suffix)."""
  return {k[:-5] for k in summary if k.endswith('_mean')}
