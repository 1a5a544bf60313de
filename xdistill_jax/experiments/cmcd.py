"""CMCD: cross-modal contrastive distillation against an exactly known gap (docs/protocols.md §C).

One setting = (ε, seed). Inside it the source encoder is pre-trained once (InfoNCE), every
method is trained on it in one fused loop, and every probe in a second one
(`cmcd_pipeline`). The inner axes are the number of classes K (`num_classes`, a Python loop
over K: `cmcd_pipeline.run_classes`), the temperature profile (`temperature`: 'default',
then one per `temperature_grid` value, `cmcd_pipeline.temperature_profiles`), the number of
unlabelled pairs M (`num_pairs`), the number of labelled target examples m (`m_labelled`)
and the `method` (cmd, cmc, cmc_b2a, l2, target_only, target_ssl), so every metric has
leading dimensions [len(K), profiles, len(M), len(m), len(methods)] and each combination is
one results row. `val_err` is the error on the labelled target validation split (disjoint
from the test pairs); `derived` marks per (ε, seed, K, M, m, method) the profile of least
`val_err` (`temperature_selected`), and the figures hook writes `cmcd_table.md` / `.csv`
(test error at the selected and at the default temperatures); the figures show the default
profile (at the largest K), and with several K `cmcd_error_vs_classes.png`.

Certified columns: `domain_acc_heldout` on `n_domain_heldout` = n_test coin-chosen sides of the
test pairs, `tv_estimate_heldout` = 2·acc − 1 on them, and the registry's `tv_domain_lower`
(TV ≥ 2·CP_lower − 1) and `c3_certified_upper` (docs/theory.md C2, C3).

Columns (the contract of `bound_registry`'s C3–C5 bounds): `target_err` (the target test error
of the method's predictor, on the coupled test pairs), `source_err`, `pair_disagreement`,
`clean_disagreement` (C3, distillation methods only), `broken_fraction` (the observed ε̂ of
C3-split), `epsilon` (the axis), `num_classes` (the inner axis), `bayes_floor` = ε(1 − 1/K),
`n_test` (T1), `probe_margin_risk` at ρ = `margin_rho`, `m_labelled` (the inner axis),
`probe_margin_norm` (Λ of C4: ‖w̃₁ − w̃₀‖ for K = 2, the Frobenius norm of [W; b] for K > 2) and
`probe_input_frobenius_norm` = sqrt(Σ‖[φ_B(x_i), 1]‖²) over the m labelled examples (C4),
`rademacher` = (Λ/m)·sqrt(Σ‖[φ_B(x_i), 1]‖²) at the trained Λ (a diagnostic),
`confidence_delta` = `config.delta`, and the domain-classifier estimate `tv_estimate`
= clip(2·acc − 1) beside the exact ε.

Other columns: `source_probe_err` (a probe on φ_A itself: the teacher's quality),
`clean_cosine` (mean cos(φ_A(x_A), φ_B(x_B)) on intact test pairs), `domain_acc`,
`probe_train_err`, `probe_weight_norm` (Λ), `train_loss` (each model's final objective; a
non-finite one marks the setting diverged), and from `derived` the Wilson 95% interval of `target_err` and `below_bayes_floor`.

The setting key depends on the seed only (`key_axes=('seed',)`): every ε of one seed sees the
same draws (the broken set grows with ε) and initialisations. The observation maps and class
means are fixed for the whole sweep, from `config.map_seed`.

Observed behaviour worth knowing (see the configs' defaults): the contrastive objectives do
not align φ_B with φ_A — their optimum only ranks the paired teacher embedding first, so at
τ = 0.1 the CMC student encodes within-class detail (its loss is *below* that of perfect
alignment) and the same probe does not transfer to φ_A. C3 is then loose for CMD/CMC and tight-ish for L2, and a linear
domain classifier separates CMD/CMC features from φ_A almost perfectly whatever ε. At the
validation-selected temperatures (CMC mostly τ = 0.5 or 1) CMC recovers and CMD, CMC and L2
tie within noise (README, `cmcd_table.md`). Same-class in-batch negatives do not explain the
default-τ deficit: in `configs/cmcd_kclass.py` it grows with K (README).
"""

import itertools

import numpy as np

from xdistill_jax import config_schema
from xdistill_jax.experiments import base
from xdistill_jax.experiments import cmcd_pipeline as pipeline
from xdistill_jax.generators import cmcd_latent
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

plt = figures.plt  # pyplot with the Agg backend that `figures` selects

# Fields of every CMCD sweep (this one and `cmcd_shift`): everything but the gap and the
# within-class spread of the latents.
PIPELINE_FIELDS = (
    'runs', 'methods', 'num_pairs', 'm_labelled',
    'latent_dim', 'num_classes', 'class_separation', 'obs_dim_a', 'obs_dim_b',
    'map_seed', 'aug_sigma', 'n_pretrain', 'n_domain', 'n_test',
    'width', 'depth', 'feature_dim', 'proj_dim', 'domain_width',
    'learning_rate', 'probe_learning_rate', 'pretrain_steps', 'distill_steps', 'probe_steps',
    'infonce_temperature', 'cmc_temperature', 'cmd_teacher_temperature',
    'cmd_student_temperature', 'margin_rho', 'temperature_grid', 'n_labelled', 'n_validation',
)
FIELDS = ('epsilons', 'latent_radius') + PIPELINE_FIELDS


def validate(config) -> None:
  config_schema.number_list(config, 'epsilons', 0.0, 1.0)
  validate_pipeline(config)
  r = config_schema.number(config, 'latent_radius', 0.0, low_open=True)
  s = config.class_separation
  if not cmcd_latent.supports_disjoint(s, r):
    raise config_schema.ConfigError(
        f'config.class_separation={s!r} is invalid; allowed: a number > √2·latent_radius = '
        f'{np.sqrt(2) * r:.4g} (class supports must be disjoint for TV = ε exactly).')


def validate_pipeline(config) -> None:
  """Checks `PIPELINE_FIELDS` (ConfigError naming the field, before anything compiles)."""
  config_schema.integer(config, 'runs', 1)
  config_schema.choice_list(config, 'methods', pipeline.METHODS)
  config_schema.integer_list(config, 'num_pairs', 2)
  config_schema.integer_list(config, 'm_labelled', 1)
  d = config_schema.integer(config, 'latent_dim', 1)
  validate_num_classes(config, d)
  config_schema.number(config, 'class_separation', 0.0, low_open=True)
  config_schema.integer(config, 'obs_dim_a', d + 1)
  config_schema.integer(config, 'obs_dim_b', d + 1)
  config_schema.integer(config, 'map_seed', 0, 2**31 - 1)
  config_schema.number(config, 'aug_sigma', 0.0)
  config_schema.integer(config, 'n_pretrain', 2)
  config_schema.integer(config, 'n_domain', 1)
  config_schema.integer(config, 'n_test', 1)
  for field in ('width', 'depth', 'feature_dim', 'proj_dim'):
    config_schema.integer(config, field, 1)
  config_schema.integer(config, 'domain_width', 0)
  for field in ('learning_rate', 'probe_learning_rate', 'infonce_temperature',
                'cmc_temperature', 'cmd_teacher_temperature', 'cmd_student_temperature',
                'margin_rho'):
    config_schema.number(config, field, 0.0, low_open=True)
  for field in ('pretrain_steps', 'distill_steps', 'probe_steps'):
    config_schema.integer(config, field, 1)
  _validate_temperatures_and_validation(config)


def validate_num_classes(config, latent_dim: int) -> None:
  """`num_classes`: distinct integers K with 2 ≤ K ≤ latent_dim (the class means s·e_k are
  K of the d latent axes)."""
  counts = config.num_classes
  if (not isinstance(counts, (tuple, list)) or not counts
      or any(not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= latent_dim
             for k in counts) or len(set(counts)) != len(counts)):
    raise config_schema.ConfigError(
        f'config.num_classes={counts!r} is invalid; allowed: a non-empty list of distinct '
        f'integers in [2, latent_dim = {latent_dim}] (the class means s·e_k use K of the d '
        'latent axes; raise config.latent_dim for more classes).')


def _validate_temperatures_and_validation(config) -> None:
  grid = config.temperature_grid
  if (not isinstance(grid, (tuple, list)) or not grid
      or any(not isinstance(t, (int, float)) or isinstance(t, bool) or not np.isfinite(t)
             or t <= 0 for t in grid) or len(set(grid)) != len(grid)):
    raise config_schema.ConfigError(
        f'config.temperature_grid={grid!r} is invalid; allowed: a non-empty list of distinct '
        'numbers > 0 (the temperatures swept beside the defaults).')
  n = config_schema.integer(config, 'n_labelled', 1)
  train = max(config.m_labelled)
  if train >= n:
    raise config_schema.ConfigError(
        f'config.n_labelled={n!r} is invalid; allowed: an integer > max(m_labelled) = {train} '
        '(the labelled target set holds the training labels and the validation split).')
  config_schema.integer(config, 'n_validation', 1, n - train)


SELECTION_KEYS = ('epsilon', 'seed', 'num_classes', 'num_pairs', 'm_labelled', 'method')


def selected_on_validation(table, keys=SELECTION_KEYS) -> np.ndarray:
  """[rows] bool: the row whose temperature profile has the lowest `val_err` (labelled target
  validation split) among the profiles of its `keys` (every axis but `temperature`); ties go
  to the earlier profile ('default' first). Reads no test column, so test labels cannot
  steer it."""
  val = np.asarray(table['val_err'], np.float64)
  val = np.where(np.isfinite(val), val, np.inf)
  groups = {}
  for row, key in enumerate(zip(*(np.asarray(table[k]).tolist() for k in keys))):
    groups.setdefault(key, []).append(row)
  chosen = np.zeros(len(val), bool)
  for rows in groups.values():
    chosen[rows[int(np.argmin(val[rows]))]] = True  # rows are in profile order
  return chosen


def axes(config) -> dict[str, np.ndarray]:
  return {'epsilon': np.asarray(config.epsilons, np.float64),
          'seed': np.arange(config.runs, dtype=np.int32)}


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'num_classes': np.asarray(config.num_classes, np.int32),
          'temperature': pipeline.temperature_labels(config),
          'num_pairs': np.asarray(config.num_pairs, np.int32),
          'm_labelled': np.asarray(config.m_labelled, np.int32),
          'method': np.asarray(config.methods)}


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  classes = [(c, pipeline.make_maps(c)) for c in pipeline.class_configs(config)]
  run = lambda key, setting: pipeline.run_classes(classes, key, setting['epsilon'])
  return run if with_params else lambda key, setting: run(key, setting)[0]


def derived(table, config, keys=SELECTION_KEYS):
  """Wilson 95% interval of `target_err` on the n_test pairs, and `below_bayes_floor`: true
  where even the interval's upper end lies below ε(1 − 1/K) (a finite test set may dip below
  the floor of an expected error, but not beyond its binomial interval)."""
  n = np.asarray(table['n_test'], np.float64)
  p = np.asarray(table['target_err'], np.float64)
  z = 1.959963984540054
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  out = {'target_err_ci_low': centre - half, 'target_err_ci_high': centre + half}
  out['below_bayes_floor'] = out['target_err_ci_high'] < np.asarray(table['bayes_floor'])
  out['temperature_selected'] = selected_on_validation(table, keys)
  return out


# ------------------------------------------------------------------------------------------
# Figures.
# ------------------------------------------------------------------------------------------
_LABELS = {'cmd': 'CMD', 'cmc': 'CMC (symmetric)', 'cmc_b2a': 'CMC (B→A)', 'l2': 'L2',
           'target_only': 'target-only supervised', 'target_ssl': 'target SSL + probe'}


def _rows(t, **where):
  """Rows of a table (or summary) where every column equals the given value."""
  keep = np.ones(len(next(iter(t.values()))), bool)
  for column, value in where.items():
    keep &= np.asarray(t[column]) == value
  return tables.select(t, keep)


def _floor(ax, xs, floor, label='Bayes floor ε(1 − 1/K)'):
  order = np.argsort(xs)
  ax.plot(np.asarray(xs)[order], np.asarray(floor)[order], 'k--', lw=1.2, label=label)


def _error_vs_epsilon(summary, config, path, M, m):
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
  s = _rows(summary, num_pairs=M, m_labelled=m)
  for i, method in enumerate(config.methods):
    sub = _rows(s, method=method)
    figures.band(axes[0], sub, 'epsilon', 'target_err', _LABELS[method], color=f'C{i}')
    if method in pipeline.DISTILL_METHODS:
      figures.band(axes[1], sub, 'epsilon', 'target_err', _LABELS[method], color=f'C{i}')
      if 'c3_upper_mean' in sub:
        order = np.argsort(sub['epsilon'])
        axes[1].plot(sub['epsilon'][order], sub['c3_upper_mean'][order], '-.', color=f'C{i}',
                     lw=1, label=f'C3 upper, {_LABELS[method]}')
  for ax in axes:
    first = _rows(s, method=config.methods[0])
    _floor(ax, first['epsilon'], first['bayes_floor_mean'])
    ax.set(xlabel='ε = TV((z_A, y), (z_B, y)) (exact)', ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set(ylabel='target test error (mean ± std over seeds)',
              title=f'all methods (M = {M} pairs, m = {m} labels)')
  axes[1].set(title='distillation: error and C3 = err_A + P[g(φ_B) ≠ g(φ_A)] (clipped at 1)')
  return figures.save(fig, path)


def _error_vs_samples(summary, config, path, epsilon, M, m):
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
  s = _rows(summary, epsilon=epsilon)
  for ax, x, fixed in ((axes[0], 'm_labelled', {'num_pairs': M}),
                       (axes[1], 'num_pairs', {'m_labelled': m})):
    sub = _rows(s, **fixed)
    for i, method in enumerate(config.methods):
      rows = _rows(sub, method=method)
      figures.band(ax, rows, x, 'target_err', _LABELS[method], color=f'C{i}')
      if method in pipeline.DISTILL_METHODS and 'c3_upper_mean' in rows:
        order = np.argsort(rows[x])
        ax.plot(rows[x][order], rows['c3_upper_mean'][order], '-.', color=f'C{i}', lw=1,
                label=f'C3 upper, {_LABELS[method]}')
    first = _rows(sub, method=config.methods[0])
    _floor(ax, first[x], first['bayes_floor_mean'])
    ax.set_xscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set(xlabel='m (labelled target examples)', ylim=(0, 1.02),
              ylabel='target test error (mean ± std over seeds)',
              title=f'against m (ε = {epsilon:g}, M = {M})')
  axes[1].set(xlabel='M (unlabelled pairs)', title=f'against M (ε = {epsilon:g}, m = {m})')
  return figures.save(fig, path)


def _tv_scatter(table, config, path, M, m):
  fig, ax = plt.subplots(figsize=(5, 4.6))
  t = _rows(table, num_pairs=M, m_labelled=m)
  t = tables.select(t, ~np.asarray(t['diverged'], bool))
  rng = np.random.default_rng(0)
  for i, method in enumerate(config.methods):
    if method not in pipeline.DISTILL_METHODS:
      continue
    rows = _rows(t, method=method)
    jitter = rng.uniform(-0.01, 0.01, len(rows['epsilon']))
    ax.scatter(rows['epsilon'] + jitter, rows['tv_estimate'], s=8, alpha=0.5, color=f'C{i}',
               label=_LABELS[method])
  lim = [0, max(1e-3, float(np.max(t['epsilon'])) * 1.1)]
  ax.plot(lim, lim, 'k-', lw=1, label='y = x')
  ax.set(xlabel='exact ε (TV of the latents)', ylabel='estimate 2·acc − 1 (domain classifier)',
         title='TV estimated on learned features', ylim=(0, 1))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return figures.save(fig, path)


def _levels(t, column):
  """The sorted distinct values of a column."""
  return np.unique(np.asarray(t[column])).tolist()


def _mean_se(v):
  v = np.asarray(v, np.float64)
  return float(np.mean(v)), (float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1
                             else float('nan'))


def method_table(table, config, columns=('num_classes', 'num_pairs', 'm_labelled', 'epsilon')):
  """Rows (method, *columns): test error mean ± SE over seeds at the validation-selected
  temperatures and at the defaults, n seeds, and the best (lowest mean) method per column
  (a combination of `columns`) marked for each. Diverged rows are left out."""
  del config  # the levels come from the table itself
  t = tables.select(table, ~np.asarray(table['diverged'], bool))
  names = ('method',) + tuple(columns) + ('n_seeds', 'tuned_mean', 'tuned_se', 'default_mean',
                                          'default_se')
  out = {k: [] for k in names}
  methods = list(dict.fromkeys(np.asarray(t['method']).tolist()))
  for cell in itertools.product(*(_levels(t, c) for c in columns)):
    for method in methods:
      rows = _rows(t, method=method, **dict(zip(columns, cell)))
      tuned = rows['target_err'][np.asarray(rows['temperature_selected'], bool)]
      default = rows['target_err'][rows['temperature'] == 'default']
      for k, v in zip(names, (method,) + cell + (len(tuned),) + _mean_se(tuned)
                      + _mean_se(default)):
        out[k].append(v)
  out = {k: np.asarray(v) for k, v in out.items()}
  for which in ('tuned', 'default'):
    best = np.zeros(len(out['method']), bool)
    for cell in itertools.product(*(_levels(out, c) for c in columns)):
      at = np.ones(len(best), bool)
      for c, v in zip(columns, cell):
        at &= out[c] == v
      rows = np.flatnonzero(at)
      best[rows[np.argmin(out[f'{which}_mean'][rows])]] = True
    out[f'{which}_best'] = best
  return out


_SECTION_NAMES = {'num_classes': 'K', 'family': 'gap'}


def write_method_table(table, config, workdir, x='epsilon', sections=('num_classes',),
                       x_label=lambda v: f'ε = {v:g}', note=''):
  """`cmcd_table.csv` (every M, m) and `cmcd_table.md` (method × `x` at the largest M and m,
  one block per value of `sections`; best per column in bold)."""
  t = method_table(table, config, tuple(sections) + ('num_pairs', 'm_labelled', x))
  tables.write_csv(workdir / 'cmcd_table.csv', t)
  M, m = max(config.num_pairs), max(config.m_labelled)
  keep = (t['num_pairs'] == M) & (t['m_labelled'] == m)
  cell = lambda i, w: (('**{:.3f} ± {:.3f}**' if t[f'{w}_best'][i] else '{:.3f} ± {:.3f}')
                       .format(t[f'{w}_mean'][i], t[f'{w}_se'][i]))
  grid = ', '.join(f'{v:g}' for v in config.temperature_grid)
  lines = [f'# CMCD target test error (M = {M} pairs, m = {m} labels; mean ± SE over seeds)', '',
           'Tuned: per seed and method, the temperature profile (the defaults or one of '
           f'{grid}) with the lowest error on {config.n_validation} labelled target validation '
           f'examples (disjoint from the test pairs). Bold: best method per column.{note}', '']
  xs = _levels(t, x)
  for which, title in (('tuned', 'validation-selected temperatures'),
                       ('default', 'fixed default temperatures')):
    for block in itertools.product(*(_levels(t, c) for c in sections)):
      at = keep.copy()
      for c, v in zip(sections, block):
        at &= t[c] == v
      where = ', '.join(f'{_SECTION_NAMES.get(c, c)} = {v}' for c, v in zip(sections, block))
      lines += [f'## {title}' + (f', {where}' if where else ''), '',
                '| method | ' + ' | '.join(x_label(v) for v in xs) + ' |',
                '|---|' + '---|' * len(xs)]
      for method in dict.fromkeys(t['method'].tolist()):
        rows = np.flatnonzero(at & (t['method'] == method))
        rows = rows[np.argsort(t[x][rows])]
        lines.append(f'| {_LABELS[method]} | ' + ' | '.join(cell(i, which) for i in rows)
                     + ' |')
      lines.append('')
  path = workdir / 'cmcd_table.md'
  path.write_text('\n'.join(lines))
  return [workdir / 'cmcd_table.csv', path]


def _error_vs_classes(table, config, path):
  """Target error against K at the largest M and m: one panel per ε, each method at the
  validation-selected (solid) and default (dashed) temperatures, mean ± SE over seeds."""
  t = _rows(table, num_pairs=max(config.num_pairs), m_labelled=max(config.m_labelled))
  t = tables.select(t, ~np.asarray(t['diverged'], bool))
  eps = _levels(t, 'epsilon')
  fig, axes = plt.subplots(1, len(eps), figsize=(5.2 * len(eps), 4.4), sharey=True,
                           squeeze=False)
  ks = np.asarray(_levels(t, 'num_classes'))
  for ax, e in zip(axes[0], eps):
    for i, method in enumerate(config.methods):
      rows = _rows(t, epsilon=e, method=method)
      for which, style in (('tuned', '-'), ('default', '--')):
        keep = (np.asarray(rows['temperature_selected'], bool) if which == 'tuned'
                else rows['temperature'] == 'default')
        stats = np.asarray([_mean_se(rows['target_err'][keep & (rows['num_classes'] == k)])
                            for k in ks])
        ax.errorbar(ks, stats[:, 0], yerr=stats[:, 1], fmt=style, marker='o', ms=3,
                    color=f'C{i}', capsize=2, lw=1.2,
                    label=f'{_LABELS[method]} ({which})')
    ax.set(xscale='log', xticks=ks, xticklabels=[str(k) for k in ks], ylim=(0, 1.02),
           xlabel='K (number of classes)', title=f'ε = {e:g}')
    ax.grid(alpha=0.3)
  axes[0][0].set(ylabel='target test error (mean ± SE over seeds)')
  axes[0][-1].legend(fontsize=6, ncol=2)
  return figures.save(fig, path)


def make_figures(table, summary, config, workdir):
  """`cmcd_table.md/.csv` (`write_method_table`), with several K `cmcd_error_vs_classes.png`,
  then, at the default temperatures and the largest K: error
  against ε and/or (m, M) with the floor and C3, estimated vs exact TV, and
  `figures.bounds_figure` for each distillation method."""
  paths = write_method_table(table, config, workdir)
  if len(config.num_classes) > 1:
    paths.append(_error_vs_classes(table, config, workdir / 'cmcd_error_vs_classes.png'))
  k = max(config.num_classes)
  table = _rows(table, temperature='default', num_classes=k)
  summary = _rows(summary, temperature='default', num_classes=k)
  M, m = max(config.num_pairs), max(config.m_labelled)
  eps = float(np.max(config.epsilons))
  if len(config.epsilons) > 1:
    paths.append(_error_vs_epsilon(summary, config, workdir / 'cmcd_error_vs_epsilon.png', M, m))
  if len(config.num_pairs) > 1 or len(config.m_labelled) > 1:
    paths.append(_error_vs_samples(summary, config, workdir / 'cmcd_error_vs_samples.png',
                                   eps, M, m))
  if any(method in pipeline.DISTILL_METHODS for method in config.methods):
    paths.append(_tv_scatter(table, config, workdir / 'cmcd_tv_estimate.png', M, m))
  varied = ('epsilon' if len(config.epsilons) > 1 else
            'm_labelled' if len(config.m_labelled) > 1 else
            'num_pairs' if len(config.num_pairs) > 1 else 'epsilon')
  fixed = {'epsilon': {'num_pairs': M, 'm_labelled': m},
           'm_labelled': {'epsilon': eps, 'num_pairs': M},
           'num_pairs': {'epsilon': eps, 'm_labelled': m}}[varied]
  xlabel = {'epsilon': 'ε (exact TV)', 'm_labelled': 'm (labelled target examples)',
            'num_pairs': 'M (unlabelled pairs)'}[varied]
  for method in config.methods:
    if method not in pipeline.DISTILL_METHODS:
      continue
    paths.append(figures.bounds_figure(
        _rows(table, method=method, **fixed), _rows(summary, method=method, **fixed),
        workdir / f'cmcd_bounds_{method}.png', x=varied, divergence='pair_disagreement',
        target='target_err', xlabel=xlabel, log_x=varied != 'epsilon',
        divergence_label='pair disagreement P[g(φ_B(x_B)) ≠ g(φ_A(x_A))]'))
  return paths


EXPERIMENT = base.Experiment(
    name='cmcd', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, key_axes=('seed',),
    group_by=('epsilon', 'num_classes', 'temperature', 'num_pairs', 'm_labelled', 'method'),
    figures=make_figures, derived=derived,
    nan_ok=pipeline.DISTILL_ONLY + pipeline.PROBE_ONLY, saves_params=True,
    inner_axes=inner_axes)
