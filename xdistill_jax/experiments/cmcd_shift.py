"""CMCD on two kinds of gap at equal TV: an alignable shift and a broken correspondence
(docs/protocols.md §C).

Gaussian latents z = μ_y + σ·g (`cmcd_latent.sample_gaussian_pairs`, σ = `latent_sigma`). One
setting = (family, ‖δ‖, seed), ‖δ‖ the traced gap:

* `shift`: every target latent is shifted, z_B = z_A + δ (‖δ‖ along the last latent axis). The
  pairs stay in correspondence, so an encoder can undo the shift; TV = 2Φ(‖δ‖/(2σ)) − 1 and
  the target Bayes error is that of the unshifted mixture.
* `broken`: no shift; with probability ε = 2Φ(‖δ‖/(2σ)) − 1 the pair's target latent is an
  independent draw (flagged), so TV = ε, the same TV as the shift at that ‖δ‖, and the target
  Bayes error is (1 − ε)·floor + ε(1 − 1/K): nothing can undo it.

Both families are one traced switch of the same program, and share keys (`key_axes=('seed',)`):
every family and gap of one seed sees the same draws and initialisations. Inside a setting,
the pipeline and inner axes are those of `cmcd` (K, temperature profile, M, m, method).
Columns: those of `cmcd` (without `epsilon`), plus `tv` (the closed-form TV of the setting's
family at its ‖δ‖, the x-axis) and `bayes_floor` (of the target; `below_bayes_floor` in
`derived`). Figures: `cmcd_shift_error_vs_tv.png` (error against TV per family, at the
validation-selected temperatures, with the floor), `cmcd_shift_tv_estimate.png` (domain
classifier TV on the learned features against the exact TV) and `cmcd_table.md` / `.csv`
(method × ‖δ‖ per family, at the selected and default temperatures).
"""

import jax.numpy as jnp
import numpy as np

from xdistill_jax import config_schema
from xdistill_jax import divergences
from xdistill_jax.experiments import base
from xdistill_jax.experiments import cmcd
from xdistill_jax.experiments import cmcd_pipeline as pipeline
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

plt = figures.plt

FAMILIES = ('shift', 'broken')
FIELDS = ('families', 'shift_norms', 'latent_sigma') + cmcd.PIPELINE_FIELDS
SELECTION_KEYS = ('family', 'shift_norm', 'seed', 'num_classes', 'num_pairs', 'm_labelled',
                  'method')


def validate(config) -> None:
  config_schema.choice_list(config, 'families', FAMILIES)
  config_schema.number_list(config, 'shift_norms', 0.0)
  config_schema.number(config, 'latent_sigma', 0.0, low_open=True)
  cmcd.validate_pipeline(config)


def axes(config) -> dict[str, np.ndarray]:
  return {'family': np.asarray(config.families),
          'shift_norm': np.asarray(config.shift_norms, np.float64),
          'seed': np.arange(config.runs, dtype=np.int32)}


def gaps(config, family, shift_norm):
  """(ε, ‖δ‖, TV) of a setting: `family` is its position in `config.families` (traced)."""
  tv = divergences.gaussian_tv(shift_norm, config.latent_sigma)
  broken = jnp.asarray([f == 'broken' for f in config.families])[family]
  return jnp.where(broken, tv, 0.0), jnp.where(broken, 0.0, shift_norm), tv


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  classes = [(c, pipeline.make_maps(c)) for c in pipeline.class_configs(config)]

  def run(key, setting):
    epsilon, shift, tv = gaps(config, setting['family'], setting['shift_norm'])
    metrics, params = pipeline.run_classes(classes, key, epsilon, shift)
    return metrics | {'tv': jnp.broadcast_to(tv, metrics['target_err'].shape)}, params

  return run if with_params else lambda key, setting: run(key, setting)[0]


def derived(table, config):
  return cmcd.derived(table, config, SELECTION_KEYS)


def _selected(t, which):
  return (np.asarray(t['temperature_selected'], bool) if which == 'tuned'
          else np.asarray(t['temperature']) == 'default')


def _error_vs_tv(table, config, path):
  """Target error against the exact TV, one panel per family, each method at the
  validation-selected temperatures (mean ± SE over seeds), with the target Bayes floor and,
  dotted, the source probe's error (what a perfectly closed gap would give)."""
  t = cmcd._rows(table, num_pairs=max(config.num_pairs), m_labelled=max(config.m_labelled),
                 num_classes=max(config.num_classes))
  t = tables.select(t, ~np.asarray(t['diverged'], bool) & _selected(t, 'tuned'))
  fig, axes = plt.subplots(1, len(config.families), figsize=(5.4 * len(config.families), 4.4),
                           sharey=True, squeeze=False)
  for ax, family in zip(axes[0], config.families):
    f = cmcd._rows(t, family=family)
    norms = np.asarray(cmcd._levels(f, 'shift_norm'))
    tv = np.asarray([f['tv'][f['shift_norm'] == n][0] for n in norms])
    for i, method in enumerate(config.methods):
      rows = cmcd._rows(f, method=method)
      stats = np.asarray([cmcd._mean_se(rows['target_err'][rows['shift_norm'] == n])
                          for n in norms])
      ax.errorbar(tv, stats[:, 0], yerr=stats[:, 1], marker='o', ms=3, capsize=2,
                  color=f'C{i}', label=cmcd._LABELS[method])
    floor = [np.mean(f['bayes_floor'][f['shift_norm'] == n]) for n in norms]
    source = [np.nanmean(f['source_probe_err'][f['shift_norm'] == n]) for n in norms]
    ax.plot(tv, floor, 'k--', lw=1.2, label='target Bayes floor')
    ax.plot(tv, source, 'k:', lw=1.2, label='source probe on φ_A')
    name = ('alignable shift z_B = z_A + δ' if family == 'shift'
            else 'broken correspondence (prob. ε = TV)')
    ax.set(xlabel='TV((z_A, y), (z_B, y)) (closed form)', title=name, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
  axes[0][0].set(ylabel='target test error (tuned τ; mean ± SE over seeds)')
  axes[0][0].legend(fontsize=7)
  return figures.save(fig, path)


def _tv_estimate(table, config, path):
  """The domain classifier's TV estimate on the learned features (default temperatures)
  against the exact TV of the latents, per family and distillation method."""
  t = cmcd._rows(table, num_pairs=max(config.num_pairs), m_labelled=max(config.m_labelled),
                 num_classes=max(config.num_classes), temperature='default')
  t = tables.select(t, ~np.asarray(t['diverged'], bool))
  fig, ax = plt.subplots(figsize=(5.4, 4.6))
  for i, method in enumerate(config.methods):
    if method not in pipeline.DISTILL_METHODS:
      continue
    for family, style in zip(FAMILIES, ('-', '--')):
      rows = cmcd._rows(t, method=method, family=family)
      if not len(rows['tv']):
        continue
      norms = cmcd._levels(rows, 'shift_norm')
      at = [rows['shift_norm'] == n for n in norms]
      ax.plot([rows['tv'][a][0] for a in at], [np.mean(rows['tv_estimate'][a]) for a in at],
              style, marker='o', ms=3, color=f'C{i}', label=f'{cmcd._LABELS[method]}, {family}')
  ax.plot([0, 1], [0, 1], 'k-', lw=1, label='y = x')
  ax.set(xlabel='exact TV of the latents', ylabel='estimate 2·acc − 1 on φ_A vs φ_B features',
         title='TV seen by a domain classifier', xlim=(0, 1.02), ylim=(0, 1.02))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return figures.save(fig, path)


def make_figures(table, summary, config, workdir):
  del summary
  sigma = config.latent_sigma
  label = lambda n: f'‖δ‖ = {n:g} (TV {float(divergences.gaussian_tv(n, sigma)):.2f})'
  paths = cmcd.write_method_table(
      table, config, workdir, x='shift_norm', sections=('family', 'num_classes'),
      x_label=label, note=' Gap `broken`: correspondence broken with probability ε = the TV of '
      'the shift at that ‖δ‖ (no shift).')
  paths.append(_error_vs_tv(table, config, workdir / 'cmcd_shift_error_vs_tv.png'))
  if any(method in pipeline.DISTILL_METHODS for method in config.methods):
    paths.append(_tv_estimate(table, config, workdir / 'cmcd_shift_tv_estimate.png'))
  return paths


EXPERIMENT = base.Experiment(
    name='cmcd_shift', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, key_axes=('seed',),
    group_by=('family', 'shift_norm', 'num_classes', 'temperature', 'num_pairs', 'm_labelled',
              'method'),
    figures=make_figures, derived=derived,
    nan_ok=pipeline.DISTILL_ONLY + pipeline.PROBE_ONLY, saves_params=True,
    inner_axes=cmcd.inner_axes)
