"""Figures of a sweep: metrics against the gap parameter, and error against its bounds.

The sweep figures are bare `matplotlib.figure.Figure`s written through the Agg canvas with
fixed margins: no pyplot (≈ 0.4 s to import) and no `tight_layout` pass (a full text layout
of every tick label). Matplotlib (≈ 0.5 s) is imported when the first figure is made, and
`plt` (pyplot on Agg) on first use, for callers that draw their own figures and hand them to
`save`. Inside `drawn_in_children` (what `sweep.finalize` uses) each figure is drawn and
encoded by a forked child process while the caller builds the next one.
"""

import contextlib
import os
import pathlib
import signal
import sys
import time
import warnings

import numpy as np

from xdistill_jax import bound_registry
from xdistill_jax import bounds
from xdistill_jax.reporting import tables

# zlib level 1: PNG encoding ≈ 0.09 s faster per 10 × 7.5 in figure than the default 6, files
# ≈ 17 % larger.
_PNG = {'compress_level': 1}
_STYLE = {'lower': dict(ls='--'), 'upper': dict(ls='-.'), 'reference': dict(ls=':')}


def band(ax, summary, x, metric, label=None, fill=True, **kwargs):
  """Mean ± std of `metric` against `x` from a summary table; skips absent metrics.
  `fill=False` draws the mean only."""
  if metric + '_mean' not in summary:
    return
  xs = summary[x + '_mean'] if x + '_mean' in summary else summary[x]
  order = np.argsort(xs)
  xs, mean = xs[order], summary[metric + '_mean'][order]
  std = np.nan_to_num(summary[metric + '_std'][order])
  (line,) = ax.plot(xs, mean, marker='o', ms=3, label=label or metric, **kwargs)
  if fill:
    ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def _matplotlib():
  """matplotlib on the Agg backend (no display needed), imported on first use."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.figure
  return matplotlib


def __getattr__(name):
  if name == 'plt':  # `figures.plt`: pyplot, imported when first asked for
    _matplotlib()
    import matplotlib.pyplot
    return matplotlib.pyplot
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def save(fig, path) -> str:
  """Writes a pyplot figure with `tight_layout` and closes it."""
  fig.tight_layout()
  _savefig(fig, path)
  __getattr__('plt').close(fig)
  return str(path)


def write(fig, path, **margins) -> str:
  """Writes a bare `Figure` (from `figure`) with fixed `subplots_adjust` margins."""
  fig.subplots_adjust(**margins)
  _savefig(fig, path)
  return str(path)


_pending = None  # the forked children's (pid, figure, path) while `drawn_in_children` runs


def _png(fig, path) -> None:
  """Draws and encodes `fig` into the PNG `path`, here."""
  fig.savefig(path, dpi=130, pil_kwargs=_PNG)


def _savefig(fig, path) -> None:
  """`_png`: here, or in a forked child process inside `drawn_in_children` (which then waits
  for it)."""
  if _pending is None:
    _png(fig, path)
    return
  sys.stdout.flush()  # nothing buffered here is written twice by the child
  sys.stderr.flush()
  with warnings.catch_warnings():
    # JAX (and Python ≥ 3.12) warn that a child of a multithreaded process may deadlock if it
    # uses those threads' locks; this child draws with matplotlib only, then `os._exit`s, and
    # a child that does hang is killed after the block's time limit.
    warnings.filterwarnings('ignore', r'os\.fork\(\) was called', RuntimeWarning)
    warnings.filterwarnings('ignore', r'This process .* is multi-threaded', DeprecationWarning)
    try:
      pid = os.fork()
    except OSError:  # no memory or processes left for a child: write it here
      _png(fig, path)
      return
  if pid == 0:  # the child: draw, encode, write, and end without the parent's exit handlers
    code = 1
    try:
      _png(fig, path)
      code = 0
    finally:
      with contextlib.suppress(Exception):
        sys.stderr.flush()  # matplotlib's own warnings, if any
      os._exit(code)
  _pending.append((pid, fig, path))


def _finished(pid: int, deadline: float) -> bool:
  """Waits for child `pid` until `deadline` (`time.monotonic`); True if it exited with 0. A
  child still running at the deadline is killed."""
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(status) == 0
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return False
    time.sleep(0.005)


@contextlib.contextmanager
def drawn_in_children(timeout_s: float = 120.0):
  """Within the block, `save` and `write` return as soon as a forked child process has taken
  over drawing and encoding the figure (≈ 0.4 s of a sweep figure's ≈ 0.5 s), so the next
  figure is built while the last one is drawn on another core. On leaving, the block waits
  for every child (at most `timeout_s` in all from then on); a figure whose child failed or
  ran out of time is then written here, so an error is raised as it would have been without
  children. Where `os.fork` does not exist (Windows) figures are written in the caller; a
  nested block is part of the outer one."""
  global _pending
  if _pending is not None or not hasattr(os, 'fork'):
    yield
    return
  _pending = []
  try:
    yield
  finally:
    children, _pending = _pending, None
    deadline = time.monotonic() + timeout_s
    failed = [(fig, path) for pid, fig, path in children if not _finished(pid, deadline)]
  for fig, path in failed:
    _png(fig, path)


def figure(figsize):
  """A `matplotlib.figure.Figure` outside pyplot (nothing to close; the Agg canvas is
  attached by `savefig`)."""
  return _matplotlib().figure.Figure(figsize=figsize)


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
  fig = figure((10, 7.5))
  axes = fig.subplots(2, 2)
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
  return write(fig, path, left=0.07, right=0.93, bottom=0.07, top=0.91, wspace=0.3,
               hspace=0.32)


def _bounds_on(table, target):
  return [b for b in map(bound_registry.get, bound_registry.names())
          if b.name in table and b.target == target]


def _gibbs(target):
  """The Gibbs (randomised-classifier) error column beside `target` (`kd_err` → `kd_gibbs_err`)."""
  return target[:-len('_err')] + '_gibbs_err' if target.endswith('_err') else None


def _certified(table, target):
  """Bounds on `target` (and on its Gibbs error) that certify an expected error: test-set,
  probabilistic and expected-floor kinds."""
  targets = (target, _gibbs(target))
  return [b for b in map(bound_registry.get, bound_registry.names())
          if b.name in table and b.target in targets
          and b.kind in ('test-set', 'probabilistic', 'expected-floor')]


def _vacuous(summary, name):
  """A bound of a 0-1 error whose mean over the groups exceeds 1 says nothing."""
  mean = np.asarray(summary.get(name + '_mean', np.full(1, np.nan)), np.float64)
  return bool(np.isfinite(mean).any() and np.nanmean(mean) > 1.0)


def _bound_band(ax, summary, x, b, color, vacuous):
  label = f'{b.name} ({b.kind}{"; vacuous, mean > 1" if vacuous else ""})'
  style = dict(_STYLE.get(b.side, {}), color=color, alpha=0.35 if vacuous else 1.0)
  band(ax, summary, x, b.name, label, fill=False, **style)


def bounds_figure(table, summary, path, x, divergence, target='kd_err',
                  xlabel='γ = o / (D − o)', divergence_label=None, log_x=False):
  """Measured `target` error between its certified bounds, against `x` and `divergence`.

  Left: group means ± std against the gap parameter of the error and of the bounds that
  certify its expectation (test-set T1, probabilistic N4/C4/P1, expected floors N3/C5; P1's
  Gibbs error beside it when present). A bound whose mean exceeds 1 is vacuous: it is drawn
  faded, labelled so, in a strip above on its own scale (never clipped). Middle: per-setting
  error against the measured divergence with the deterministic bounds as binned means.
  Right (when measured): ε(f) = mean KL with the bounds on it (N1 sandwich, F1 floor).
  """
  certified = _certified(table, target)
  vacuous = [b for b in certified if _vacuous(summary, b.name)]
  kl_panel = 'kl_test' in table and _bounds_on(table, 'kl_test')
  columns = 3 if kl_panel else 2
  fig = figure((5.6 * columns, 6.6))
  grid = fig.add_gridspec(2, columns, height_ratios=(1, 3.2) if vacuous else (0.001, 1))
  colors = {b.name: f'C{i % 10}' for i, b in enumerate(certified)}
  healthy = ~np.asarray(table.get('diverged', np.zeros(len(table[target]), bool)), bool)
  sub = {k: np.asarray(v)[healthy] for k, v in table.items()}

  ax = fig.add_subplot(grid[1, 0])
  band(ax, summary, x, target, f'{target} (measured, test set; ± std over seeds)', color='k')
  gibbs = _gibbs(target)
  if gibbs and gibbs + '_mean' in summary:
    band(ax, summary, x, gibbs, f'{gibbs} (measured Gibbs error; P1 bounds it)', fill=False,
         color='0.45', ls=(0, (1, 1)))
  top = 1.0
  for b in certified:
    if b not in vacuous:
      _bound_band(ax, summary, x, b, colors[b.name], False)
      means = np.asarray(summary[b.name + '_mean'], np.float64)
      if np.isfinite(means).any():  # a bound with no finite group mean adds nothing
        top = max(top, float(np.nanmax(means)))
  ax.set(xlabel=xlabel, ylabel='test error', ylim=(0, 1.02 * top),
         title=f'{target} between its certified bounds')
  if vacuous:
    strip = fig.add_subplot(grid[0, 0], sharex=ax)
    for b in vacuous:
      _bound_band(strip, summary, x, b, colors[b.name], True)
    strip.axhline(1.0, color='r', lw=0.8)
    strip.set(ylabel='> 1', title='vacuous bounds (own scale; red: error = 1)')
    strip.tick_params(labelbottom=False)
    strip.grid(alpha=0.3)
    strip.legend(fontsize=6.5, loc='center right')
  if log_x:
    ax.set_xscale('log')

  ax = fig.add_subplot(grid[:, 1])
  ax.scatter(sub[divergence], sub[target], s=4, alpha=0.3, color='k', label=f'{target} per setting')
  low, top = 0.0, 1.0
  for i, b in enumerate(bn for bn in _bounds_on(table, target) if bn.kind == 'deterministic'):
    bx, by = tables.binned_means(sub[divergence], sub[b.name])
    ax.plot(bx, by, label=f'{b.name} (deterministic, binned mean)', color=f'C{(i + 5) % 10}',
            **_STYLE.get(b.side, {}))
    low = min(low, float(np.nanmin(by, initial=0.0)))
    top = max(top, float(np.nanmax(by, initial=0.0)))
  ax.set(xlabel=divergence_label or f'{divergence} (nats)', ylabel='test error',
         ylim=(low - 0.02 * (top - low) if low < 0 else 0, 1.02 * top),
         title='per-setting error against the measured divergence')

  if kl_panel:
    ax = fig.add_subplot(grid[:, 2])
    band(ax, summary, x, 'kl_test', 'ε(f) = mean KL(p_t ‖ p_s), measured (± std)', color='k')
    if 'kd_conditional_kl_mean' in summary:
      band(ax, summary, x, 'kd_conditional_kl', 'conditional expected KL of the KD student',
           fill=False, color='0.45', ls=(0, (1, 1)))
    for i, b in enumerate(_bounds_on(table, 'kl_test')):
      band(ax, summary, x, b.name, f'{b.name} ({b.kind})', fill=False,
           color=f'C{(i + 2) % 10}', **_STYLE.get(b.side, {}))
    ax.set(xlabel=xlabel, ylabel='nats (test set, T = 1)',
           title='KD approximation error: N1 sandwich' + (
               ', F1 floor' if 'f1_lower' in table else ''))
    if log_x:
      ax.set_xscale('log')
  for ax in fig.axes:
    ax.grid(alpha=0.3)
    if ax.get_legend() is None:  # below the panel, so no curve hides behind it
      ax.legend(fontsize=6.5, loc='upper center', bbox_to_anchor=(0.5, -0.13), ncol=2)
  return write(fig, pathlib.Path(path), left=0.05, right=0.985, bottom=0.22, top=0.94,
               wspace=0.2, hspace=0.3)


def sample_size_figure(summary, path, floor, title, target='kd_err', x='n'):
  """Measured error and its certified bounds (T1, P1 when present, VC, margin) against the
  sample size on log-log axes, and the excess error over the Bayes floor with the O(n^-1/2)
  and O(n^-1) reference slopes (theory.md N5). Vacuous bounds (mean > 1) are drawn faded,
  at their values, above the red line at error 1."""
  fig, axes = __getattr__('plt').subplots(1, 2, figsize=(12, 6.2))
  n = np.asarray(summary[x], float)
  ax = axes[0]
  band(ax, summary, x, target, f'{target} (measured)', color='k')
  band(ax, summary, x, 'baseline_err', 'baseline_err (measured)', color='0.5')
  gibbs = _gibbs(target)
  if gibbs and gibbs + '_mean' in summary:
    band(ax, summary, x, gibbs, f'{gibbs} (measured Gibbs error; P1 bounds it)', color='0.3',
         ls=(0, (1, 1)))
  if floor + '_mean' in summary:
    ax.plot(np.sort(n), summary[floor + '_mean'][np.argsort(n)], ':', color='k',
            label='Bayes floor (N3, expected-floor)')
  columns = summary_columns(summary)
  for i, b in enumerate(b for b in _certified(columns, target) if b.kind != 'expected-floor'):
    _bound_band(ax, summary, x, b, f'C{i % 10}', _vacuous(summary, b.name))
  ax.axhline(1.0, color='r', lw=0.8)
  ax.text(n.max(), 1.06, 'vacuous above 1', color='r', fontsize=8, ha='right', va='bottom')
  ax.set(xscale='log', yscale='log', xlabel='training examples n', ylabel='test error',
         title='error and certified bounds')
  ax = axes[1]
  order = np.argsort(n)
  excess = (summary[target + '_mean'] - summary[floor + '_mean'])[order]
  ax.plot(n[order], np.maximum(excess, 1e-4), 'o-', color='k',
          label='excess error over floor (values ≤ 1e-4 drawn at 1e-4)')
  anchor = excess[0] if excess[0] > 0 else np.nanmax(excess)
  for alpha, style in ((0.5, '--'), (1.0, ':')):
    ref = bounds.rate_reference(n[order], n[order][0], anchor, alpha)
    ax.plot(n[order], ref, style, label=f'reference O(n^-{alpha:g}) (N5, not a bound)')
  ax.set(xscale='log', yscale='log', xlabel='training examples n',
         ylabel='kd_err − Bayes floor', title='excess error and N5 rates')
  for ax in axes:  # legends below the panels, so no curve hides behind them
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=2)
  fig.suptitle(title)
  return save(fig, path)


def summary_columns(summary):
  """Metric names present in a summary table (without the _mean/_std/_count suffix)."""
  return {k[:-5] for k in summary if k.endswith('_mean')}
