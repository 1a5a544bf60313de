"""Analyse your own models: the project's divergences, identities and bounds on your logits.

  xdistill analyze --teacher=T.npy --student=S.npy --labels=Y.npy --workdir=DIR
      [--baseline=B.npy] [--npz=FILE.npz] [--n-train=N --weight-norm=L --input-radius=R]
      [--delta=0.05] [--threshold=0.996] [--margin-rho=1.0]

Inputs are paired teacher logits ``[n, K]``, student logits ``[n, K]`` and integer labels
``[n]`` of the same n evaluation examples, saved as ``.npy`` (or one ``.npz`` with keys
``teacher``, ``student``, ``labels`` and optionally ``baseline``, ``teacher_features``,
``student_features``) from any framework. ``DIR/report.md`` and ``DIR/report.json`` then hold:

* accuracies of teacher, student (and baseline student, with Δ = student − baseline);
* overall and per-class means of the per-example divergences of theory.md §1 at T = 1:
  KL, TCKD, NCKD, NT-JS, NT-TV, JS, TV and the NTDH authors' reversed NT-JS;
* the identity check D1, max |KL − TCKD − (1 − p_y)·NCKD| (and D2, D3);
* the bounds these inputs determine, evaluated through `bound_registry` (the same functions
  as the sweeps): N1 (approximation-error sandwich), N2 (teacher-agreement sandwich and its
  Pinsker form), T1 (Clopper–Pearson test-set bound on the teacher's, student's and
  baseline's expected error; the examples must be held out from their training); with
  ``--n-train``, ``--weight-norm`` and ``--input-radius`` also N4 (empirical-Rademacher
  margin bound: c_K = 2 with Λ = ‖w̃₁ − w̃₀‖ for K = 2, 4K with the Frobenius norm for
  K > 2, Λ rounded up to 2^j with the union bound); bounds whose inputs are missing are
  listed with the reason;
* statistics of the NTDH sample mask ω (`losses.sample_mask`): how many examples it drops or
  down-weights and how much it lowers the mean non-target divergence;
* calibration (ECE) with a reliability diagram, a histogram of per-example NCKD, and student
  error against the teacher's top-two margin (binned).

Python: ``xdistill_jax.analyze.analyze(teacher_logits, student_logits, labels, workdir)``.
Bad inputs raise `analysis_io.InputError` (the CLI prints it and exits with status 2).
"""

import argparse
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from xdistill_jax import analysis_io
from xdistill_jax import bound_registry
from xdistill_jax import bounds
from xdistill_jax import divergences
from xdistill_jax import losses
from xdistill_jax.analysis_io import InputError
from xdistill_jax.reporting import tables

__all__ = ['analyze', 'main', 'per_example', 'expected_calibration_error', 'InputError']

DIVERGENCES = ('kl', 'tckd', 'nckd', 'nt_js', 'nt_tv', 'js', 'tv', 'nt_js_reversed')
DIVERGENCE_LABELS = {
    'kl': 'KL(p‖q)', 'tckd': 'TCKD = KL(b(p)‖b(q))', 'nckd': 'NCKD = KL(p̂‖q̂)',
    'nt_js': 'NT-JS = JS(p̂, q̂)', 'nt_tv': 'NT-TV = TV(p̂, q̂)', 'js': 'JS(p, q)',
    'tv': 'TV(p, q)', 'nt_js_reversed': '½[KL(m‖p̂) + KL(m‖q̂)] (authors\' reversed NT-JS)',
}
ECE_BINS = 15
MARGIN_BINS = 10
MAX_CLASS_ROWS = 50  # per-class rows shown in report.md (report.json has all)
_CHUNK_ENTRIES = 2**22  # rows × classes per compiled chunk (bounded memory)


# ----------------------------------------------------------------------------------------
# Per-example quantities (float64).
# ----------------------------------------------------------------------------------------
def _per_example_chunk(t, s, y, threshold):
  p = jax.nn.softmax(t)
  out = {
      'kl': divergences.kl(t, s),
      'tckd': divergences.target_kl(t, s, y),
      'nckd': divergences.non_target_kl(t, s, y),
      'nt_js': divergences.non_target_js(t, s, y),
      'nt_tv': divergences.non_target_tv(t, s, y),
      'js': divergences.js(t, s),
      'tv': divergences.tv(t, s),
      'nt_js_reversed': divergences.non_target_js_reversed(t, s, y),
      'teacher_py': jnp.take_along_axis(p, y[:, None], -1)[:, 0],
      'teacher_margin': bounds.top2_margin(p),
      'omega': losses.sample_mask(t, s, y, threshold),
      'teacher_right': (jnp.argmax(t, -1) == y).astype(t.dtype),
  }
  return out


_per_example_jit = jax.jit(_per_example_chunk)


def per_example(teacher_logits, student_logits, labels, threshold=0.996) -> dict:
  """Per-example divergences (T = 1), teacher p_y and top-two margin, and ω, in float64.

  Returns:
    {name: [n] numpy float64} for the names of `DIVERGENCES` plus ``teacher_py``,
    ``teacher_margin``, ``omega`` and ``teacher_right`` (1.0 where argmax z_t = y).
  """
  t = np.asarray(teacher_logits, np.float64)
  s = np.asarray(student_logits, np.float64)
  y = np.asarray(labels, np.int64)
  rows = max(1, _CHUNK_ENTRIES // t.shape[1])
  parts = []
  with jax.enable_x64(True):
    for start in range(0, len(t), rows):
      sl = slice(start, start + rows)
      out = _per_example_jit(jnp.asarray(t[sl]), jnp.asarray(s[sl]), jnp.asarray(y[sl]),
                             jnp.asarray(threshold, jnp.float64))
      parts.append({k: np.asarray(v, np.float64) for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(logits, labels, bins: int = ECE_BINS) -> dict:
  """ECE with equal-width confidence bins (Guo et al., ICML 2017).

  ECE = Σ_b (n_b / n)·|acc_b − conf_b|, confidence = max softmax probability.

  Returns:
    {'ece', 'bin_edges', 'bin_count', 'bin_accuracy', 'bin_confidence'} (lists; NaN in
    empty bins).
  """
  probs = _softmax(np.asarray(logits, np.float64))
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.searchsorted(edges, confidence, side='left') - 1, 0, bins - 1)
  count = np.bincount(which, minlength=bins).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    acc = np.bincount(which, weights=correct, minlength=bins) / count
    conf = np.bincount(which, weights=confidence, minlength=bins) / count
  gaps = np.where(count > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(conf)), 0.0)
  return {'ece': float(np.sum(count / len(confidence) * gaps)), 'bin_edges': edges.tolist(),
          'bin_count': count.astype(int).tolist(), 'bin_accuracy': acc.tolist(),
          'bin_confidence': conf.tolist()}


# ----------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------
def _accuracy(logits, labels):
  return float(np.mean(np.argmax(logits, 1) == labels))


def _stats(values) -> dict:
  v = np.asarray(values, np.float64)
  return {'mean': float(v.mean()), 'median': float(np.median(v)), 'max': float(v.max())}


# The registry's bounds that `analyze` evaluates (`bound_registry`; no second implementation
# here). The analysed student plays the registry's KD student (`kd_*` columns).
ANALYZE_BOUNDS = ('n1_lower', 'n1_upper', 'n2_lower', 'n2_upper', 'n2_pinsker_upper',
                  'n4_margin_upper', 't1_upper_kd', 't1_lower_kd', 't1_upper_teacher',
                  't1_lower_teacher', 't1_upper_baseline', 't1_lower_baseline')
_MODEL_OF = {'kd_err': 'student_err', 'teacher_err': 'teacher_err',
             'baseline_err': 'baseline_err', 'kl_test': 'kl'}
GENERALIZATION_NOTE = (
    'N4 is probabilistic (≥ 1 − δ over the training sample) and holds for linear scores on a '
    'fixed feature map, with Λ = ‖w̃₁ − w̃₀‖ for K = 2 or the Frobenius norm of [W; b] for '
    'K > 2 (give it as --weight-norm) and R̂_ρ the margin risk on the n training examples; '
    'here R̂_ρ (and ‖X̃‖_F, from the student features when given) is measured on the '
    'examples you passed, so the certificate holds when those are the training examples. '
    'T1 (test-set) needs the opposite: examples the models were not trained on')


def _bound_table(ex, t, s, b, y, *, delta, generalization=None) -> dict:
  """One-row results table of the analysed models, in the registry's column names."""
  err = lambda z: float(np.mean(np.argmax(z, 1) != y))
  n1 = bounds.approximation_error_sandwich_inputs(ex['tckd'], ex['nckd'], ex['teacher_py'])
  row = {'kl_test': float(np.mean(ex['kl'])), 'tckd_test': n1['d_tc'],
         'nckd_test': n1['d_nt'], 'max_teacher_py_test': n1['max_py'],
         'min_teacher_py_test': n1['min_py'], 'teacher_err': err(t), 'kd_err': err(s),
         'disagreement_test': float(np.mean(np.argmax(t, 1) != np.argmax(s, 1))),
         'pinsker_disagreement_test': bounds.pinsker_disagreement_bound(
             ex['kl'], ex['teacher_margin']),
         'n_test': len(y), 'confidence_delta': delta}
  if b is not None:
    row['baseline_err'] = err(b)
  row |= generalization or {}
  return {k: np.asarray([v], np.float64) for k, v in row.items()}


def _generalization_inputs(student, labels, *, n_train, weight_norm, input_radius,
                           student_features, rho) -> dict:
  """Columns of the N4 margin bound from the user's sizes and norms (registry names)."""
  if student_features is not None:
    frobenius = float(np.sqrt(np.sum(student_features**2) + len(student_features)))
    how = 'sqrt(Σ_i (‖x_i‖² + 1)) of the student features passed'
  else:
    frobenius = float(input_radius * math.sqrt(n_train))
    how = 'r·sqrt(n) with r ≥ sqrt(‖x‖² + 1) on every training input (--input-radius)'
  return {'kd_margin_risk': float(bounds.empirical_margin_risk(student, labels, rho)),
          'n_train': n_train, 'num_classes': student.shape[1], 'margin_rho': rho,
          'kd_margin_norm': weight_norm, 'input_frobenius_norm': frobenius}, how


def _registry_bounds(table) -> tuple[dict, dict]:
  """The `ANALYZE_BOUNDS` through `bound_registry.evaluate`: (report entries, skipped)."""
  columns, summary = bound_registry.evaluate(ANALYZE_BOUNDS, table)
  out, skipped = {}, {}
  for name, s in summary.items():
    if s.get('skipped'):
      skipped[name] = s['skipped']
      continue
    value, target = float(columns[name][0]), float(table[s['target']][0])
    violated = columns.get(name + '_violated')
    error = s['target'].endswith('_err')
    out[name] = {
        'value': value, 'target': target, 'of': _MODEL_OF.get(s['target'], s['target']),
        'side': s['side'], 'kind': s['kind'], 'rule': s['rule'],
        'holds': None if violated is None else bool(not violated[0]),
        'invalid': bool(columns[name + '_invalid'][0]),
        'vacuous': bool(error and ((s['side'] == 'upper' and value >= 1.0)
                                   or (s['side'] == 'lower' and value <= 0.0))),
        'statement': bound_registry.get(name).description}
  return out, skipped


def _omega_stats(ex) -> dict:
  omega, nckd, kl = ex['omega'], ex['nckd'], ex['kl']
  kept = omega > 0
  n = len(omega)
  mean_all = float(nckd.mean())
  mean_kept = float(nckd[kept].mean()) if kept.any() else float('nan')
  weighted = float(np.sum(omega * nckd) / np.sum(omega)) if kept.any() else float('nan')
  return {
      'n': n,
      'teacher_right': int(np.sum(ex['teacher_right'])),
      'teacher_wrong': int(n - np.sum(ex['teacher_right'])),
      'dropped': int(np.sum(~kept)),
      'down_weighted': int(np.sum(kept & (omega < 1.0))),
      'dropped_fraction': float(np.mean(~kept)),
      'mean_omega': float(omega.mean()),
      'nckd_all': mean_all,
      'nckd_omega_positive': mean_kept,
      'nckd_omega_weighted': weighted,
      'nckd_reduction_omega_positive': mean_all - mean_kept,
      'nckd_reduction_omega_weighted': mean_all - weighted,
      'kl_all': float(kl.mean()),
      'kl_omega_positive': float(kl[kept].mean()) if kept.any() else float('nan'),
  }


def _per_class(ex, teacher, student, labels) -> list[dict]:
  rows = []
  for c in range(teacher.shape[1]):
    sel = labels == c
    count = int(sel.sum())
    row = {'class': c, 'count': count}
    if count:
      row |= {'teacher_acc': _accuracy(teacher[sel], labels[sel]),
              'student_acc': _accuracy(student[sel], labels[sel])}
      row |= {name: float(ex[name][sel].mean()) for name in DIVERGENCES}
    rows.append(row)
  return rows


def _identities(ex) -> dict:
  residual = ex['kl'] - ex['tckd'] - (1.0 - ex['teacher_py']) * ex['nckd']
  pinsker = ex['tv'] - np.sqrt(np.maximum(ex['kl'], 0.0) / 2.0)
  ln2 = math.log(2.0)
  return {
      'd1_max_abs_residual': float(np.max(np.abs(residual))),
      'd1_max_rel_residual': float(np.max(np.abs(residual) / np.maximum(1.0, ex['kl']))),
      'd2_max_tv_minus_sqrt_half_kl': float(np.max(pinsker)),
      'd3_js_range': [float(ex['js'].min()), float(ex['js'].max())],
      'd3_tv_range': [float(ex['tv'].min()), float(ex['tv'].max())],
      'd3_holds': bool(ex['js'].min() >= -1e-12 and ex['js'].max() <= ln2 + 1e-12
                       and ex['tv'].min() >= -1e-12 and ex['tv'].max() <= 1 + 1e-12),
  }


def _feature_stats(teacher_features, student_features) -> dict:
  out = {}
  if student_features is not None:
    out['student_feature_radius'] = float(np.sqrt(np.max(np.sum(student_features**2, 1)) + 1))
    out['student_feature_dim'] = int(student_features.shape[1])
  if teacher_features is not None:
    out['teacher_feature_dim'] = int(teacher_features.shape[1])
  if (teacher_features is not None and student_features is not None
      and teacher_features.shape[1] == student_features.shape[1]):
    with jax.enable_x64(True):
      out['cmd5_features'] = float(divergences.central_moment_discrepancy(
          jnp.asarray(teacher_features), jnp.asarray(student_features), 5))
  return out


def _finite(obj):
  """JSON-safe: NaN/inf become None."""
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def _check_number(name, value, low=None, integer=False, high=None):
  if value is None:
    return None
  ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
  ok = ok and math.isfinite(float(value))
  if ok and integer:
    ok = float(value) == int(value)
  ok = ok and (low is None or value > low) and (high is None or value < high)
  if not ok:
    kind = 'an integer' if integer else 'a number'
    rng = f'in ({low}, {high})' if high is not None else f'> {low}'
    raise InputError(f'{name}={value!r} is invalid; expected {kind} {rng}')
  return int(value) if integer else float(value)


def analyze(teacher_logits, student_logits, labels, workdir, *, baseline_logits=None,
            teacher_features=None, student_features=None, n_train=None, weight_norm=None,
            input_radius=None, delta=0.05, threshold=0.996, margin_rho=1.0, sources=None,
            figures=True) -> dict:
  """Divergences, identities, bounds, ω statistics and calibration of a teacher–student pair.

  Writes ``report.md``, ``report.json`` and figures (``reliability.png``,
  ``nckd_histogram.png``, ``error_vs_margin.png``) in ``workdir``.

  Args:
    teacher_logits: ``[n, K]`` teacher logits z_t (p = softmax(z_t), T = 1).
    student_logits: ``[n, K]`` student logits z_s of the same examples.
    labels: ``[n]`` integer labels in ``[0, K)``.
    workdir: output directory (created).
    baseline_logits: optional ``[n, K]`` logits of a student trained without KD.
    teacher_features, student_features: optional ``[n, d]`` representations; the student's
      give ‖X̃‖_F = sqrt(Σ_i (‖x_i‖² + 1)) of the N4 Rademacher term (bias feature
      included; ``input_radius`` defaults to their max sqrt(‖x‖² + 1)); equal widths also
      give CMD₅ between them.
    n_train, weight_norm, input_radius: training-set size n, Λ (‖w̃₁ − w̃₀‖ for K = 2, the
      Frobenius norm of [W; b] for K > 2) and a radius r ≥ sqrt(‖x‖² + 1) of the training
      inputs of a linear student, for N4 (‖X̃‖_F ≤ r·sqrt(n) without features).
    delta: confidence parameter δ of N4 and T1.
    threshold: cosine threshold τ of the sample mask ω.
    margin_rho: margin ρ of N4.
    sources: optional {role: name} used in error messages (the CLI passes file names).
    figures: write the figures (default True).

  Returns:
    The report (the content of ``report.json``).

  Raises:
    InputError: an input is malformed; the message names it.
  """
  data = analysis_io.check_inputs(teacher_logits, student_logits, labels, baseline_logits,
                                  teacher_features, student_features, sources)
  delta = _check_number('delta', delta, 0.0, high=1.0)
  threshold = _check_number('threshold', threshold, -1.0 - 1e-12, high=1.0 + 1e-12)
  margin_rho = _check_number('margin_rho', margin_rho, 0.0)
  n_train = _check_number('n_train', n_train, 0, integer=True)
  weight_norm = _check_number('weight_norm', weight_norm, 0.0)
  input_radius = _check_number('input_radius', input_radius, 0.0)
  t, s, y, b = data['teacher'], data['student'], data['labels'], data['baseline']
  n, k = t.shape
  if input_radius is None and data['student_features'] is not None:
    input_radius = float(np.sqrt(np.max(np.sum(data['student_features']**2, 1)) + 1.0))
  given = {'n_train': n_train, 'weight_norm': weight_norm, 'input_radius': input_radius}
  if any(v is not None for v in (n_train, weight_norm)) and any(
      v is None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    raise InputError(f'the N4/C4 bounds need n_train, weight_norm and input_radius (or '
                     f'student features for the radius); missing: {", ".join(missing)}')

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ex = per_example(t, s, y, threshold)
  acc_t, acc_s = _accuracy(t, y), _accuracy(s, y)
  dis = float(np.mean(np.argmax(t, 1) != np.argmax(s, 1)))
  report = {
      'inputs': {'n': n, 'num_classes': k, 'sources': dict(sources or {}),
                 'classes_present': int(len(np.unique(y))), 'temperature': 1.0,
                 'delta': delta, 'threshold': threshold, 'margin_rho': margin_rho},
      'accuracy': {'teacher': acc_t, 'student': acc_s, 'disagreement': dis},
      'divergences': {name: _stats(ex[name]) for name in DIVERGENCES},
      'teacher_py': {'max': float(ex['teacher_py'].max()), 'min': float(ex['teacher_py'].min())},
      'identities': _identities(ex),
      'omega_mask': _omega_stats(ex),
      'calibration': {'teacher': expected_calibration_error(t, y),
                      'student': expected_calibration_error(s, y)},
      'per_class': _per_class(ex, t, s, y),
  }
  if b is not None:
    acc_b = _accuracy(b, y)
    report['accuracy'] |= {'baseline': acc_b, 'delta_points': 100.0 * (acc_s - acc_b)}
    ex_b = per_example(t, b, y, threshold)
    report['baseline_divergences'] = {name: _stats(ex_b[name]) for name in DIVERGENCES}
    report['calibration']['baseline'] = expected_calibration_error(b, y)
  generalization = None
  if input_radius is not None and n_train is not None and weight_norm is not None:
    generalization, how = _generalization_inputs(
        s, y, n_train=n_train, weight_norm=weight_norm, input_radius=input_radius,
        student_features=data['student_features'], rho=margin_rho)
    report['inputs'] |= given | {'input_frobenius_norm_from': how}
  table = _bound_table(ex, t, s, b, y, delta=delta, generalization=generalization)
  report['bounds'], report['bounds_skipped'] = _registry_bounds(table)
  features = _feature_stats(data['teacher_features'], data['student_features'])
  if features:
    report['features'] = features
  report['deterministic_violations'] = sum(
      not v['holds'] for v in report['bounds'].values() if v['kind'] == 'deterministic')
  report['figures'] = (_write_figures(workdir, ex, t, s, b, y, report) if figures else [])
  report = _finite(report)
  (workdir / 'report.json').write_text(json.dumps(report, indent=2) + '\n')
  (workdir / 'report.md').write_text(_markdown(report))
  return report


# ----------------------------------------------------------------------------------------
# Figures.
# ----------------------------------------------------------------------------------------
def _write_figures(workdir, ex, t, s, b, y, report) -> list[str]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  from xdistill_jax.reporting import figures

  paths = []
  models = [('teacher', t), ('student', s)] + ([('baseline', b)] if b is not None else [])
  fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
  for ax, (name, _) in zip(axes[0], models):
    cal = report['calibration'][name]
    edges = np.asarray(cal['bin_edges'])
    acc = np.nan_to_num(np.asarray(cal['bin_accuracy'], np.float64))
    ax.bar(edges[:-1], acc, width=np.diff(edges), align='edge', edgecolor='k', alpha=0.7,
           label='accuracy')
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='perfect calibration')
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='confidence (max softmax)', ylabel='accuracy',
           title=f'{name}: ECE = {cal["ece"]:.3f}')
    ax.legend(fontsize=7, loc='upper left')
  fig.suptitle('reliability diagrams (15 equal-width bins)')
  paths.append(figures.save(fig, workdir / 'reliability.png'))

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  kept = ex['omega'] > 0
  top = max(float(np.max(ex['nckd'])), 1e-12)
  bins = np.linspace(0.0, top, 41)
  ax.hist([ex['nckd'][kept], ex['nckd'][~kept]], bins=bins, stacked=True,
          label=[f'ω > 0 ({int(kept.sum())})', f'ω = 0, dropped by the mask ({int((~kept).sum())})'],
          color=['C0', 'C3'])
  ax.axvline(float(ex['nckd'].mean()), color='k', ls='--', lw=1,
             label=f'mean {float(ex["nckd"].mean()):.3g} nats')
  ax.set(xlabel='per-example NCKD = KL(p̂_teacher ‖ q̂_student) (nats)', ylabel='examples',
         title='non-target divergence per example (T = 1)')
  ax.legend(fontsize=7)
  paths.append(figures.save(fig, workdir / 'nckd_histogram.png'))

  margin = ex['teacher_margin']
  mean_in = lambda v: tables.binned_means(margin, v, MARGIN_BINS)[1]
  xs = mean_in(margin)
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  ax.plot(xs, mean_in((np.argmax(s, 1) != y).astype(float)), 'o-', label='student error')
  ax.plot(xs, mean_in((np.argmax(t, 1) != y).astype(float)), 's--', label='teacher error')
  ax.plot(xs, mean_in((np.argmax(s, 1) != np.argmax(t, 1)).astype(float)), '^:',
          label='teacher–student disagreement')
  could_flip = (ex['kl'] >= 0.5 * margin**2 - 1e-6).astype(float)
  ax.plot(xs, mean_in(could_flip), 'v-.', label='Pinsker: KL_i ≥ m_i²/2 (N2)')
  ax.set(xlabel="teacher's top-two probability margin m (quantile-bin mean)",
         ylabel='fraction of examples', ylim=(-0.02, 1.02),
         title='student error against the teacher margin (binned)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  paths.append(figures.save(fig, workdir / 'error_vs_margin.png'))
  return [pathlib.Path(p).name for p in paths]


# ----------------------------------------------------------------------------------------
# Markdown.
# ----------------------------------------------------------------------------------------
def _fmt(v, digits=4):
  if v is None:
    return 'n/a'
  if isinstance(v, bool):
    return 'yes' if v else '**NO**'
  if isinstance(v, int):
    return str(v)
  if isinstance(v, float):
    return f'{v:.{digits}g}' if abs(v) < 1e-3 and v != 0 else f'{v:.{digits}f}'
  return str(v)


def _cell(value) -> str:
  return (value if isinstance(value, str) else _fmt(value)).replace('|', '\\|')


def _table(header, rows) -> list[str]:
  lines = ['| ' + ' | '.join(map(_cell, header)) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(map(_cell, row)) + ' |' for row in rows]
  return lines + ['']


def _markdown(r) -> str:
  inp, acc = r['inputs'], r['accuracy']
  out = ['# xdistill analyze report', '']
  src = ', '.join(f'{k}: `{v}`' for k, v in inp['sources'].items())
  out += [f'{inp["n"]} examples, {inp["num_classes"]} classes ({inp["classes_present"]} present '
          f'in the labels). Divergences at T = 1 in nats; p = teacher softmax, q = student '
          f'softmax (theory.md §1).' + (f' Inputs: {src}.' if src else ''), '']
  out += ['## Accuracy', '']
  rows = [('teacher', acc['teacher']), ('student', acc['student'])]
  if 'baseline' in acc:
    rows += [('baseline student', acc['baseline']),
             ('Δ = student − baseline (points)', acc['delta_points'])]
  rows += [('teacher–student argmax disagreement', acc['disagreement'])]
  out += _table(['model', 'value'], rows)

  out += ['## Teacher–student divergences', '']
  rows = [(DIVERGENCE_LABELS[name], *(r['divergences'][name][s] for s in ('mean', 'median', 'max')))
          + ((r['baseline_divergences'][name]['mean'],) if 'baseline_divergences' in r else ())
          for name in DIVERGENCES]
  header = ['divergence', 'mean', 'median', 'max']
  if 'baseline_divergences' in r:
    header.append('mean, teacher vs baseline')
  out += _table(header, rows)
  out += ['The non-target divergence D_NT of the student is the mean NCKD; NT-JS and NT-TV are '
          'its bounded companions. The reversed NT-JS is reported for parity with the NTDH '
          "authors' code only (not bounded by ln 2).", '']

  idn = r['identities']
  out += ['## Identities', '']
  out += _table(['check', 'value'], [
      ('D1: max |KL − TCKD − (1 − p_y)·NCKD|', idn['d1_max_abs_residual']),
      ('D1: max relative residual', idn['d1_max_rel_residual']),
      ('D2: max (TV − sqrt(KL/2)) (≤ 0 by Pinsker)', idn['d2_max_tv_minus_sqrt_half_kl']),
      ('D3: 0 ≤ JS ≤ ln 2 and 0 ≤ TV ≤ 1', idn['d3_holds'])])

  out += ['## Bounds', '']
  rows = [(name, b['statement'], b['kind'],
           _fmt(b['value']) + (' (vacuous)' if b['vacuous'] else '')
           + (' (non-finite input)' if b['invalid'] else ''), f'{b["of"]} = {_fmt(b["target"])}',
           'not judged' if b['holds'] is None else b['holds'])
          for name, b in r['bounds'].items()]
  out += _table(['bound', 'statement', 'kind', 'bound value', 'measured', 'holds'], rows)
  out += [f'Deterministic bounds violated: {r["deterministic_violations"]} (a violation means '
          'the inputs are inconsistent or a bug). N1 bounds ε = mean KL(p‖q) with '
          f'max p_y = {_fmt(r["teacher_py"]["max"])}, min p_y = {_fmt(r["teacher_py"]["min"])}.'
          ' N2 bounds the student error from the teacher error and the disagreement. T1 '
          '(test-set, Clopper–Pearson at level δ) bounds each model\'s expected error when the '
          'examples passed were not used to train it; it is not judged on those examples. '
          'A probabilistic bound counts as failing only when the Clopper–Pearson interval of '
          'the measured error lies entirely on the wrong side.']
  if 'n4_margin_upper' in r['bounds']:
    out += [f'N4: {GENERALIZATION_NOTE}.']
  skipped = r.get('bounds_skipped', {})
  if skipped:
    out += ['', 'Not evaluated: ' + '; '.join(f'{k} ({v})' for k, v in skipped.items())
            + ('. N4 needs `--n-train`, `--weight-norm` and `--input-radius` (linear students).'
               if 'n4_margin_upper' in skipped else '.')]
  out += ['']

  om = r['omega_mask']
  out += ['## Sample mask ω (NTDH)', '']
  out += [f'ω = 1 where the teacher is right, else ((1 + c)/2)·1[c ≥ {_fmt(inp["threshold"])}] '
          'with c the cosine between teacher and student logits (`losses.sample_mask`).', '']
  out += _table(['quantity', 'value'], [
      ('teacher right (ω = 1)', om['teacher_right']),
      ('teacher wrong', om['teacher_wrong']),
      ('dropped (ω = 0)', f'{om["dropped"]} ({100 * om["dropped_fraction"]:.1f}%)'),
      ('down-weighted (0 < ω < 1)', om['down_weighted']),
      ('mean ω', om['mean_omega']),
      ('mean NCKD, all examples', om['nckd_all']),
      ('mean NCKD, examples with ω > 0', om['nckd_omega_positive']),
      ('ω-weighted mean NCKD', om['nckd_omega_weighted']),
      ('reduction by masking (all − ω > 0)', om['nckd_reduction_omega_positive'])])

  out += ['## Calibration', '']
  out += _table(['model', 'ECE (15 bins)'],
                [(name, c['ece']) for name, c in r['calibration'].items()])

  if 'features' in r:
    out += ['## Features', '']
    out += _table(['quantity', 'value'], list(r['features'].items()))

  out += ['## Per class', '']
  per_class = [c for c in r['per_class'] if c['count']]
  shown = per_class
  if len(per_class) > MAX_CLASS_ROWS:
    shown = sorted(per_class, key=lambda c: -c['nckd'])[:MAX_CLASS_ROWS // 2]
    out += [f'{len(per_class)} classes; the {len(shown)} with the largest mean NCKD are shown '
            '(report.json has all).', '']
  names = ('kl', 'tckd', 'nckd', 'nt_js', 'nt_tv', 'js', 'tv')
  out += _table(['class', 'n', 'teacher acc', 'student acc', *names],
                [(str(c['class']), c['count'], c['teacher_acc'], c['student_acc'],
                  *(c[m] for m in names)) for c in shown])
  if r['figures']:
    out += ['## Figures', '']
    out += [f'![{p}]({p})' for p in r['figures']] + ['']
  return '\n'.join(out)


# ----------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------
def _error_line(message: str) -> None:
  """A user error as the one line every `xdistill` command prints (exit status 2)."""
  print(f'xdistill: error: {" ".join(str(message).split())}', file=sys.stderr)


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one line (`xdistill analyze --help` shows the usage)."""

  def error(self, message):
    _error_line(f'analyze: {message} (xdistill analyze --help)')
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(
      prog='xdistill analyze',
      description='Divergences, identities and bounds of theory.md on your own teacher and '
                  'student logits (paired rows, any framework). Writes DIR/report.md, '
                  'DIR/report.json and figures.')
  p.add_argument('--teacher', help='teacher logits [n, K] (.npy, or .npz with one array)')
  p.add_argument('--student', help='student logits [n, K]')
  p.add_argument('--labels', help='integer labels [n]')
  p.add_argument('--baseline', help='optional logits [n, K] of a student trained without KD')
  p.add_argument('--npz', help='one .npz with keys teacher, student, labels (and optionally '
                               'baseline, teacher_features, student_features); the flags above '
                               'override its entries')
  p.add_argument('--teacher-features', help='optional teacher features [n, d]')
  p.add_argument('--student-features', help='optional student features [n, d] (give r for N4)')
  p.add_argument('--workdir', required=True, help='output directory')
  p.add_argument('--n-train', type=int, help='training-set size n (N4/C4)')
  p.add_argument('--weight-norm', type=float, help='student weight norm Λ (N4/C4)')
  p.add_argument('--input-radius', type=float, help='input radius r (N4/C4)')
  p.add_argument('--delta', type=float, default=0.05, help='confidence δ of N4/C4 (0.05)')
  p.add_argument('--threshold', type=float, default=0.996, help='cosine threshold of ω (0.996)')
  p.add_argument('--margin-rho', type=float, default=1.0, help='margin ρ of N4/C4 (1.0)')
  p.add_argument('--no-figures', action='store_true', help='skip the figures')
  return p


def _load(args) -> tuple[dict, dict]:
  arrays, sources = {}, {}
  if args.npz:
    arrays, sources = analysis_io.load_npz(args.npz)
  for role, path in (('teacher', args.teacher), ('student', args.student),
                     ('labels', args.labels), ('baseline', args.baseline),
                     ('teacher_features', args.teacher_features),
                     ('student_features', args.student_features)):
    if path:
      arrays[role] = analysis_io.load_array(path, key=role)
      sources[role] = path
  missing = [r for r in ('teacher', 'student', 'labels') if r not in arrays]
  if missing:
    where = f' (not in {args.npz})' if args.npz else ''
    raise InputError(f'missing input(s): {", ".join(missing)}{where}; pass --teacher, --student '
                     'and --labels, or --npz with those keys')
  return arrays, sources


def main(argv=None) -> int:
  """`xdistill analyze ARGS...`; returns the exit status (0 ok, 2 bad input)."""
  parser = _parser()
  try:
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
  except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
    return int(exit_.code or 0)
  try:
    arrays, sources = _load(args)
    report = analyze(
        arrays['teacher'], arrays['student'], arrays['labels'], args.workdir,
        baseline_logits=arrays.get('baseline'),
        teacher_features=arrays.get('teacher_features'),
        student_features=arrays.get('student_features'), n_train=args.n_train,
        weight_norm=args.weight_norm, input_radius=args.input_radius, delta=args.delta,
        threshold=args.threshold, margin_rho=args.margin_rho, sources=sources,
        figures=not args.no_figures)
  except (InputError, OSError) as error:  # OSError: e.g. an unwritable --workdir
    _error_line(error)
    return 2
  acc = report['accuracy']
  print(f'teacher acc {acc["teacher"]:.4f}, student acc {acc["student"]:.4f}, mean NCKD '
        f'{report["divergences"]["nckd"]["mean"]:.4g} nats, D1 residual '
        f'{report["identities"]["d1_max_abs_residual"]:.2g}; wrote '
        f'{pathlib.Path(args.workdir) / "report.md"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
