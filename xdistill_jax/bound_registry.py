"""Pluggable bounds: a bound is a named function from a setting's metrics to a number.

A sweep produces a results table ``dict[str, np.ndarray]`` (column name → 1-D array, one
entry per setting). A :class:`Bound` reads some columns (``requires``) and returns a new
column (``name``) that bounds another column (``target``) from one ``side``.
:func:`evaluate` computes bound columns and violation flags and summarises them;
:func:`report_lines` turns the summary into text. Users add bounds with the :func:`bound`
decorator in their own module and list it in ``config.bound_modules``; the sweep calls
:func:`load` on each entry so the registrations run. Statements and proofs are in
``docs/theory.md``; the arithmetic is in :mod:`xdistill_jax.bounds`.

Standard bounds (experiments emit these columns; errors are fractions in [0, 1],
divergences in nats, both on the test set at T = 1 unless the name says otherwise):

==================  ======  ======  ==============  ===========================================
name                label   side    kind            requires → target
==================  ======  ======  ==============  ===========================================
n1_lower            N1      lower   deterministic   tckd_test, nckd_test, max_teacher_py_test
                                                    → kl_test
n1_upper            N1      upper   deterministic   tckd_test, nckd_test, min_teacher_py_test
                                                    → kl_test
n2_lower            N2      lower   deterministic   teacher_err, disagreement_test → kd_err
n2_upper            N2      upper   deterministic   teacher_err, disagreement_test → kd_err
n2_pinsker_upper    N2      upper   deterministic   teacher_err, pinsker_disagreement_test
                                                    → kd_err
n3_lower_kd         N3      lower   expected-floor  bayes_floor_b → kd_err
n3_lower_baseline   N3      lower   expected-floor  bayes_floor_b → baseline_err
n4_vc_upper         N4-VC   upper   probabilistic   kd_train_err, n_train, vc_dim,
                                                    confidence_delta → kd_err
n4_margin_upper     N4      upper   probabilistic   kd_margin_risk, n_train, num_classes,
                                                    margin_rho, kd_margin_norm,
                                                    input_frobenius_norm, confidence_delta
                                                    → kd_err
c5_lower            C1/C5   lower   expected-floor  epsilon, num_classes → target_err
c3_upper            C3      upper   deterministic   source_err, pair_disagreement → target_err
c3_split_upper      C3      upper   deterministic   source_err, broken_fraction,
                                                    clean_disagreement → target_err
c4_probe_upper      C4      upper   probabilistic   probe_margin_risk, m_labelled, num_classes,
                                                    margin_rho, probe_margin_norm,
                                                    probe_input_frobenius_norm,
                                                    confidence_delta → target_err
t1_upper_{model}    T1      upper   test-set        {model}_err, n_test, confidence_delta
t1_lower_{model}    T1      lower   test-set          → {model}_err  (model: kd, baseline,
                                                    teacher; and target → target_err)
p1_upper_{m}        P1      upper   probabilistic   {m}_gibbs_bound → {m}_gibbs_err
p1_deterministic_   P1      upper   probabilistic   {m}_gibbs_bound → {m}_err  (min(1, 2·P1);
upper_{m}                                           m: kd, baseline, target)
f1_lower            F1      lower   expected-floor  f1_floor_tckd, f1_floor_nckd → kl_test
f1_conditional_     F1      lower   deterministic   f1_floor_tckd, f1_floor_nckd
lower                                               → kd_conditional_kl
f1_pointwise        F1      upper   deterministic   → f1_pointwise_violations (= 0)
tv_domain_lower     C2      lower   test-set        domain_acc_heldout, n_domain_heldout,
                                                    confidence_delta → tv_estimate_heldout
c3_certified_upper  C3      upper   test-set        source_err, pair_disagreement, n_test,
                                                    confidence_delta → target_err
==================  ======  ======  ==============  ===========================================

Column meanings:

* ``kl_test``, ``tckd_test``, ``nckd_test``: mean KL(p‖q), TCKD, NCKD between teacher and KD
  student; ``max_teacher_py_test`` / ``min_teacher_py_test``: extremes of the teacher's
  true-class probability over the test set.
* ``kd_err``, ``baseline_err``, ``teacher_err``: test 0-1 errors on ``n_test`` examples;
  ``disagreement_test``: fraction of test examples where teacher and KD student argmaxes
  differ; ``pinsker_disagreement_test``: (1/n) Σ 1[KL_i ≥ m_i²/2]
  (``bounds.pinsker_disagreement_bound``).
* ``bayes_floor_b``: the student modality's Bayes error (N3 closed form or Monte Carlo).
* ``kd_train_err``, ``n_train``, ``vc_dim``, ``confidence_delta``: training error, training-set
  size, VC dimension (binary; ``bounds.linear_vc_dimension``), confidence parameter δ.
* ``kd_margin_risk``, ``num_classes``, ``margin_rho``: fraction of training examples with
  margin ≤ ρ, K, ρ; ``kd_margin_norm``: Λ of the linear student (‖w̃₁ − w̃₀‖ for K = 2,
  the Frobenius norm for K > 2, biases included); ``input_frobenius_norm``:
  sqrt(Σ_i ‖x̃_i‖²) over the training inputs, x̃ = [x, 1] (``measures.margin_bound_inputs``).
* ``epsilon``: the generator's broken-correspondence probability (= TV); ``source_err``,
  ``target_err``: errors of the head on the coupled test pairs through φ_A and φ_B;
  ``pair_disagreement``: fraction of pairs where the two predictions differ;
  ``broken_fraction``: observed fraction of broken pairs; ``clean_disagreement``: the
  disagreement rate among intact pairs.
* ``probe_margin_risk``, ``m_labelled``, ``probe_margin_norm``,
  ``probe_input_frobenius_norm``: the probe's ρ-margin risk on its m labelled target
  examples, m, its Λ (as for ``kd_margin_norm``) and sqrt(Σ_i ‖[φ_B(x_i), 1]‖²).
* ``{m}_gibbs_bound``: kl⁻¹(Ĝ_n, [KL(Q‖P) + ln(2√n/δ)]/n) minimised over a fixed posterior
  grid in the compiled program (``pac_bayes.minimise_over_grid``; ``{m}_gibbs_train_err`` and
  ``{m}_posterior_kl`` reproduce it via ``pac_bayes.seeger_maurer_bound``); ``{m}_gibbs_err``:
  the chosen Gaussian posterior's test Gibbs error. m: kd, baseline (protocol G's linear
  students, Table 1 on G), target (the CMCD linear probe).
* ``f1_floor_tckd``, ``f1_floor_nckd``: the target and non-target parts of the distillation
  floor E KL(p_t ‖ p̄) (``kd_floor``); ``kd_conditional_kl``: the KD student's exact
  conditional expected KL; ``f1_pointwise_violations``: examples below their own floor.
* ``domain_acc_heldout``, ``n_domain_heldout``: the domain classifier's balanced accuracy on
  its held-out pairs and their number; ``tv_estimate_heldout``: 2·acc − 1.

Kinds (:data:`KINDS`, judged as :data:`RULES` says). ``n3_*`` and ``c5_lower`` are exact
values of an expected error and the N4/C4 bounds bound the expected error: both count a
violation only where the target's Clopper–Pearson interval at level δ on its ``n_test``
examples lies entirely on the wrong side, so test noise is not reported as failure. T1 is
computed from the same test count it brackets, so it is never judged there (its coverage is
checked by Monte Carlo in the tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Callable, Iterable, Mapping

import numpy as np

from xdistill_jax import bounds as _b

__all__ = [
    'Bound',
    'register',
    'unregister',
    'bound',
    'get',
    'names',
    'applicable',
    'relevant',
    'load',
    'evaluate',
    'report_lines',
]

SIDES = ('lower', 'upper')
KINDS = ('deterministic', 'probabilistic', 'test-set', 'expected-floor', 'reference')
# How each kind is judged against its target column (docs/theory.md, "Kinds").
RULES = {
    'deterministic': 'violated where bound and target disagree beyond float tolerance (a bug)',
    'probabilistic': (
        "violated only where the target's test-set interval at level delta (Clopper-Pearson "
        'for *_err columns, normal for columns with a *_se companion) lies entirely on the '
        'wrong side'
    ),
    'test-set': 'not judged: computed from the same test set as its target',
    'expected-floor': (
        "violated only where the target's test-set interval at level delta (as for "
        'probabilistic) lies entirely on the wrong side of the exact expected value'
    ),
    'reference': 'not judged: a guide curve, not a bound',
}
DEFAULT_DELTA = 0.05  # level of the judging interval when the table has no confidence_delta


@dataclasses.dataclass(frozen=True)
class Bound:
  """A named bound: ``fn`` maps the ``requires`` columns of a results table to one column.

  Attributes:
    name: column the bound produces, e.g. ``'n2_upper'``.
    fn: ``Mapping[str, np.ndarray] -> np.ndarray``, vectorised over settings. It is given
      only the columns in ``requires``.
    target: the metric column it bounds, e.g. ``'kd_err'``.
    side: ``'lower'`` or ``'upper'``.
    kind: one of :data:`KINDS` — ``'deterministic'`` (a violation is a bug),
      ``'probabilistic'`` (holds w.p. ≥ 1 − δ over the training sample, for the expected
      error), ``'test-set'`` (holds w.p. ≥ 1 − δ over the test sample; never judged on
      it), ``'expected-floor'`` (an exact expected value) or ``'reference'`` (a guide
      curve). :data:`RULES` says how :func:`evaluate` judges each.
    requires: columns ``fn`` reads. Only a test-set bound may read its own target (it is
      a function of the target's test count and is never judged against it).
    description: one line for reports and docs.
    sample_size: column holding the number of test examples behind ``target`` (used to
      judge probabilistic and expected-floor bounds on ``*_err`` targets).
  """

  name: str
  fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]
  target: str
  side: str
  kind: str
  requires: tuple[str, ...]
  description: str = ''
  sample_size: str = 'n_test'

  def __post_init__(self):
    if not self.name or not isinstance(self.name, str):
      raise ValueError(f'bound name must be a non-empty string, got {self.name!r}')
    if self.side not in SIDES:
      raise ValueError(f'bound {self.name!r}: side must be one of {SIDES}, got {self.side!r}')
    if self.kind not in KINDS:
      raise ValueError(f'bound {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}')
    if not callable(self.fn):
      raise TypeError(f'bound {self.name!r}: fn must be callable')
    requires = (self.requires,) if isinstance(self.requires, str) else tuple(self.requires)
    object.__setattr__(self, 'requires', requires)
    if self.target in requires and self.kind != 'test-set':
      raise ValueError(f'bound {self.name!r} may not read its own target {self.target!r}')

  def __call__(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate on a table; the function sees only the required columns."""
    missing = [c for c in self.requires if c not in table]
    if missing:
      raise ValueError(f'bound {self.name!r} needs columns {missing} that the table lacks')
    return np.asarray(self.fn(_Columns(self, table)))


class _Columns(dict):
  """The required columns of a table; reading any other column names the culprit."""

  def __init__(self, b: Bound, table: Mapping[str, np.ndarray]):
    super().__init__((c, np.asarray(table[c])) for c in b.requires)
    self._name = b.name

  def __missing__(self, column):
    raise KeyError(
        f'bound {self._name!r} read column {column!r}, which is not in its requires'
    )


_REGISTRY: dict[str, Bound] = {}


def _same_definition(a: Bound, b: Bound) -> bool:
  """True for the same object or the same function re-created (e.g. a module reload)."""
  if a is b:
    return True
  key = lambda x: (getattr(x.fn, '__module__', None), getattr(x.fn, '__qualname__', None))
  return key(a) == key(b) and key(a)[1] is not None and '<lambda>' not in key(a)[1]


def register(bound: Bound, *, overwrite: bool = False) -> Bound:
  """Add ``bound`` to the registry and return it.

  Registering a different bound under a taken name raises ``ValueError`` unless
  ``overwrite=True``; re-registering the same definition (e.g. a re-imported module)
  replaces it silently.
  """
  if not isinstance(bound, Bound):
    raise TypeError(f'register expects a Bound, got {type(bound).__name__}')
  old = _REGISTRY.get(bound.name)
  if old is not None and not overwrite and not _same_definition(old, bound):
    raise ValueError(
        f'a bound named {bound.name!r} is already registered; pass overwrite=True to replace it'
    )
  _REGISTRY[bound.name] = bound
  return bound


def unregister(name: str) -> None:
  """Remove a registered bound (no error if absent)."""
  _REGISTRY.pop(name, None)


def bound(
    name: str,
    *,
    target: str,
    side: str,
    kind: str,
    requires: Iterable[str],
    description: str = '',
    overwrite: bool = False,
):
  """Decorator form of :func:`register`; the decorated name becomes the (callable) Bound.

  Example::

      @bound('my_upper', target='kd_err', side='upper', kind='probabilistic',
             requires=('kd_train_err', 'n_train', 'confidence_delta'))
      def my_upper(m):
          return m['kd_train_err'] + np.sqrt(np.log(1 / m['confidence_delta']) / (2 * m['n_train']))
  """

  def wrap(fn):
    doc = description or (fn.__doc__ or '').strip().split('\n')[0]
    return register(
        Bound(name, fn, target, side, kind, tuple(requires), doc), overwrite=overwrite
    )

  return wrap


def get(name: str) -> Bound:
  """The registered bound called ``name``; ``ValueError`` listing the names if unknown."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(
        f"unknown bound {name!r}; registered bounds: {', '.join(names()) or '(none)'}"
    ) from None


def names() -> tuple[str, ...]:
  """Registered bound names, in registration order."""
  return tuple(_REGISTRY)


def applicable(columns: Iterable[str]) -> tuple[str, ...]:
  """Registered bounds whose required columns and target are all among ``columns``."""
  cols = set(columns)
  return tuple(
      n for n, b in _REGISTRY.items() if b.target in cols and set(b.requires) <= cols
  )


def relevant(columns: Iterable[str]) -> tuple[str, ...]:
  """Registered bounds whose target is among ``columns`` (their inputs may be missing:
  :func:`evaluate` then lists them as skipped, with the reason)."""
  cols = set(columns)
  return tuple(n for n, b in _REGISTRY.items() if b.target in cols)


def load(spec: str | Iterable[str]):
  """Import a user module so that its ``@bound`` registrations run.

  ``spec`` is ``'package.module'`` (returns the module) or ``'package.module:attr'``
  (returns the attribute, dotted paths allowed). If the attribute is a :class:`Bound`, or
  a list/tuple of them, each is registered if it is not already. An iterable of specs
  loads each (``load(config.bound_modules)``) and returns a list.
  """
  if not isinstance(spec, str):
    return [load(s) for s in spec]
  module_name, _, attr = spec.partition(':')
  try:
    obj = importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(f'cannot import bound module {module_name!r} (from {spec!r}): {e}') from e
  if not attr:
    return obj
  for part in attr.split('.'):
    try:
      obj = getattr(obj, part)
    except AttributeError:
      raise AttributeError(f'{spec!r}: {module_name!r} has no attribute {attr!r}') from None
  for b in obj if isinstance(obj, (list, tuple)) else (obj,):
    if isinstance(b, Bound) and _REGISTRY.get(b.name) is not b:
      register(b)
  return obj


def _finite_rows(table: Mapping[str, np.ndarray], columns: Iterable[str], rows: int) -> np.ndarray:
  """True on the rows where every column is a finite number."""
  ok = np.ones(rows, bool)
  for c in columns:
    with np.errstate(invalid='ignore'):
      values = np.asarray(table[c], dtype=np.float64)
    ok &= np.broadcast_to(np.isfinite(values), (rows,))
  return ok


def _interval(b: Bound, table: Mapping[str, np.ndarray], target: np.ndarray, delta: np.ndarray):
  """The target's one-sided test-set limit on the side that can refute ``b``, and the rule.

  An upper bound is refuted when the *lower* limit of the target exceeds it; a lower bound
  when the *upper* limit is below it. ``None`` when the table carries no sample size or
  standard error for the target.
  """
  if b.target + '_se' in table:
    from scipy.special import ndtri  # the normal quantile; scipy.stats costs ~1 s to import

    z = ndtri(1.0 - delta)
    se = np.asarray(table[b.target + '_se'], dtype=np.float64)
    limit = target - z * se if b.side == 'upper' else target + z * se
    return limit, 'normal interval (mean -/+ z_(1-delta) * se)'
  if b.target.endswith('_err') and b.sample_size in table:
    n = np.asarray(table[b.sample_size], dtype=np.float64)
    k = _b.error_count(target, n)
    cp = _b.clopper_pearson_lower if b.side == 'upper' else _b.clopper_pearson_upper
    return cp(k, n, delta), f'Clopper-Pearson on round({b.target}*{b.sample_size})'
  return None, 'no sample size or standard error for the target: raw comparison'


def _skipped(b: Bound, reason: str) -> dict:
  return {'kind': b.kind, 'side': b.side, 'target': b.target, 'rule': RULES[b.kind],
          'skipped': reason, 'violations': 0, 'rate': math.nan, 'n': 0, 'invalid': 0}


def evaluate(
    names: str | Iterable[str],
    table: Mapping[str, np.ndarray],
    tol: float = 1e-6,
    delta: float = DEFAULT_DELTA,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
  """Evaluate bounds on a results table and judge each by its kind (:data:`RULES`).

  Args:
    names: bound name(s); unknown names raise ``ValueError`` listing the registered ones.
    table: column name → 1-D array (one entry per setting).
    tol: float tolerance. A deterministic upper bound is violated where
      ``target − bound > tol·max(1, |bound|)`` (a lower bound symmetrically): absolute
      for values up to 1, relative beyond, so float32-measured columns don't flag
      spurious violations of identities that hold with equality.
    delta: level of the judging interval of probabilistic and expected-floor bounds
      where the table has no ``confidence_delta`` column.

  Judging: deterministic bounds compare bound and target directly. Probabilistic and
  expected-floor bounds count a violation only where the target's one-sided test-set
  limit at level δ (Clopper–Pearson on k = round(err·n) for ``*_err`` targets, with n the
  bound's ``sample_size`` column; mean ∓ z·se where the table has ``target + '_se'``)
  lies beyond the bound. Test-set and reference bounds are not judged.

  Bad input never raises: a bound whose columns are missing is skipped (its summary has
  ``'skipped'``: the reason, and no columns are produced); on rows where an input is
  not finite the bound is NaN and ``name + '_invalid'`` is True.

  Returns:
    ``(columns, summary)``: ``columns`` has, per evaluated bound, ``name`` (float64),
    ``name + '_invalid'`` (bool) and, for judged kinds, ``name + '_violated'`` (bool;
    False where the bound or target is NaN). ``summary`` maps each name to
    ``{'kind', 'side', 'target', 'rule', 'violations', 'rate', 'n', 'invalid'}`` plus
    ``'exceeded'`` (raw count of rows on the wrong side, judged kinds) and
    ``'interval'`` (how the target's limit was formed, probabilistic kinds). ``n`` counts
    rows where neither the bound nor the target is NaN; ``rate`` = violations / n (NaN
    when n = 0); ``violations`` and ``rate`` are None for kinds that are not judged.
  """
  if isinstance(names, str):
    names = (names,)
  chosen = [get(n) for n in names]
  columns: dict[str, np.ndarray] = {}
  summary: dict[str, dict] = {}
  for b in chosen:
    missing = [c for c in (b.target,) + b.requires if c not in table]
    if missing:
      summary[b.name] = _skipped(b, f"missing column(s): {', '.join(dict.fromkeys(missing))}")
      continue
    target = np.asarray(table[b.target], dtype=np.float64)
    rows = target.shape[0] if target.ndim else 1
    ok = _finite_rows(table, b.requires, rows)
    with np.errstate(all='ignore'):
      value = np.asarray(b(table), dtype=np.float64)
    value = np.broadcast_to(value, np.broadcast_shapes(value.shape, target.shape)).copy()
    value[~np.broadcast_to(ok, value.shape)] = np.nan
    valid = ~(np.isnan(value) | np.isnan(target))
    entry = {'kind': b.kind, 'side': b.side, 'target': b.target, 'rule': RULES[b.kind],
             'n': int(valid.sum()), 'invalid': int((~ok).sum())}
    columns[b.name] = value
    columns[b.name + '_invalid'] = ~np.broadcast_to(ok, value.shape).copy()
    if b.kind in ('test-set', 'reference'):
      summary[b.name] = entry | {'violations': None, 'rate': None}
      continue
    slack = tol * np.maximum(1.0, np.abs(np.where(np.isfinite(value), value, 0.0)))
    sign = 1.0 if b.side == 'upper' else -1.0
    with np.errstate(invalid='ignore'):
      exceeded = valid & (sign * (target - value) > slack)
    if b.kind == 'deterministic':
      violated = exceeded
    else:
      level = np.asarray(table.get('confidence_delta', delta), dtype=np.float64)
      limit, how = _interval(b, table, target, np.broadcast_to(level, target.shape))
      entry['interval'] = how
      if limit is None:
        violated = exceeded
      else:
        with np.errstate(invalid='ignore'):
          violated = valid & np.isfinite(limit) & (sign * (limit - value) > slack)
    count = int(violated.sum())
    columns[b.name + '_violated'] = violated
    summary[b.name] = entry | {
        'violations': count,
        'rate': count / entry['n'] if entry['n'] else math.nan,
        'exceeded': int(exceeded.sum()),
    }
  return columns, summary


def report_lines(summary: Mapping[str, Mapping]) -> list[str]:
  """One line per bound, e.g. ``'n1_upper (deterministic, upper on kl_test): 0/600 violated'``.

  Deterministic bounds with violations are marked ``VIOLATED (bug)``; probabilistic and
  expected-floor ones show the rate of real failures (test-set interval on the wrong
  side) and how many rows merely exceed; test-set and reference curves say they are not
  judged; skipped bounds give the reason.
  """
  lines = []
  for name, s in summary.items():
    head = f"{name} ({s['kind']}, {s['side']} on {s['target']})"
    if s.get('skipped'):
      lines.append(f"{head}: skipped ({s['skipped']})")
      continue
    if s['violations'] is None:
      line = f"{head}: not judged ({RULES[s['kind']].split(': ', 1)[-1]})"
    else:
      line = f"{head}: {s['violations']}/{s['n']} violated"
      if s['kind'] == 'deterministic' and s['violations'] > 0:
        line += ' VIOLATED (bug)'
      elif s['kind'] != 'deterministic' and s['n']:
        line += f" (rate {s['rate']:.3f}; the raw test value is beyond it on {s['exceeded']})"
    if s.get('invalid'):
      line += f"; {s['invalid']} row(s) with non-finite inputs (NaN, flagged {name}_invalid)"
    lines.append(line)
  return lines


# --------------------------------------------------------------------------------------
# Standard bounds (see the table in the module docstring and docs/theory.md).
# --------------------------------------------------------------------------------------


@bound(
    'n1_lower',
    target='kl_test',
    side='lower',
    kind='deterministic',
    requires=('tckd_test', 'nckd_test', 'max_teacher_py_test'),
    description='N1: D_TC + (1 - max p_y) * D_NT <= mean KL',
)
def _n1_lower(m):
  return _b.approximation_error_lower(m['nckd_test'], m['tckd_test'], m['max_teacher_py_test'])


@bound(
    'n1_upper',
    target='kl_test',
    side='upper',
    kind='deterministic',
    requires=('tckd_test', 'nckd_test', 'min_teacher_py_test'),
    description='N1: mean KL <= D_TC + (1 - min p_y) * D_NT',
)
def _n1_upper(m):
  return _b.approximation_error_upper(m['nckd_test'], m['tckd_test'], m['min_teacher_py_test'])


@bound(
    'n2_lower',
    target='kd_err',
    side='lower',
    kind='deterministic',
    requires=('teacher_err', 'disagreement_test'),
    description='N2: err_t - dis <= err_s',
)
def _n2_lower(m):
  return _b.teacher_agreement_sandwich(m['teacher_err'], m['disagreement_test'])[0]


@bound(
    'n2_upper',
    target='kd_err',
    side='upper',
    kind='deterministic',
    requires=('teacher_err', 'disagreement_test'),
    description='N2: err_s <= err_t + dis',
)
def _n2_upper(m):
  return _b.teacher_agreement_sandwich(m['teacher_err'], m['disagreement_test'])[1]


@bound(
    'n2_pinsker_upper',
    target='kd_err',
    side='upper',
    kind='deterministic',
    requires=('teacher_err', 'pinsker_disagreement_test'),
    description='N2: err_s <= err_t + mean 1[KL_i >= m_i^2/2]',
)
def _n2_pinsker_upper(m):
  return _b.teacher_agreement_sandwich(m['teacher_err'], m['pinsker_disagreement_test'])[1]


@bound(
    'n3_lower_kd',
    target='kd_err',
    side='lower',
    kind='expected-floor',
    requires=('bayes_floor_b',),
    description='N3: Bayes floor of modality b (exact expected-error floor)',
)
def _n3_lower_kd(m):
  return np.asarray(m['bayes_floor_b'], dtype=np.float64)


@bound(
    'n3_lower_baseline',
    target='baseline_err',
    side='lower',
    kind='expected-floor',
    requires=('bayes_floor_b',),
    description='N3: Bayes floor of modality b (exact expected-error floor)',
)
def _n3_lower_baseline(m):
  return np.asarray(m['bayes_floor_b'], dtype=np.float64)


@bound(
    'n4_vc_upper',
    target='kd_err',
    side='upper',
    kind='probabilistic',
    requires=('kd_train_err', 'n_train', 'vc_dim', 'confidence_delta'),
    description='N4: Vapnik VC bound (binary), prob >= 1 - delta',
)
def _n4_vc_upper(m):
  return _b.vc_bound(m['kd_train_err'], m['n_train'], m['vc_dim'], m['confidence_delta'])


@bound(
    'n4_margin_upper',
    target='kd_err',
    side='upper',
    kind='probabilistic',
    requires=(
        'kd_margin_risk',
        'n_train',
        'num_classes',
        'margin_rho',
        'kd_margin_norm',
        'input_frobenius_norm',
        'confidence_delta',
    ),
    description='N4: empirical-Rademacher margin bound, linear student (c_K = 2 or 4K; Lambda on 2^j)',
)
def _n4_margin_upper(m):
  return _b.margin_bound(
      m['kd_margin_risk'],
      m['n_train'],
      m['num_classes'],
      m['margin_rho'],
      m['kd_margin_norm'],
      m['input_frobenius_norm'],
      m['confidence_delta'],
  )


@bound(
    'c5_lower',
    target='target_err',
    side='lower',
    kind='expected-floor',
    requires=('epsilon', 'num_classes'),
    description='C1/C5: target Bayes error eps*(1 - 1/K) (expected-error floor)',
)
def _c5_lower(m):
  return _b.exact_tv_latent_bayes_floor(m['epsilon'], m['num_classes'])


@bound(
    'c3_upper',
    target='target_err',
    side='upper',
    kind='deterministic',
    requires=('source_err', 'pair_disagreement'),
    description='C3: err_B <= err_A + P[pair predictions differ]',
)
def _c3_upper(m):
  return _b.pair_disagreement_bound(m['source_err'], m['pair_disagreement'])


@bound(
    'c3_split_upper',
    target='target_err',
    side='upper',
    kind='deterministic',
    requires=('source_err', 'broken_fraction', 'clean_disagreement'),
    description='C3-split: err_B <= err_A + eps_hat + (1 - eps_hat) * a_clean (observed eps_hat)',
)
def _c3_split_upper(m):
  return _b.pair_disagreement_split(
      m['source_err'], m['broken_fraction'], m['clean_disagreement']
  )


@bound(
    'c4_probe_upper',
    target='target_err',
    side='upper',
    kind='probabilistic',
    requires=(
        'probe_margin_risk',
        'm_labelled',
        'num_classes',
        'margin_rho',
        'probe_margin_norm',
        'probe_input_frobenius_norm',
        'confidence_delta',
    ),
    description='C4: empirical-Rademacher margin bound of the probe on m labelled target examples',
)
def _c4_probe_upper(m):
  return _b.margin_bound(
      m['probe_margin_risk'],
      m['m_labelled'],
      m['num_classes'],
      m['margin_rho'],
      m['probe_margin_norm'],
      m['probe_input_frobenius_norm'],
      m['confidence_delta'],
  )


def _t1(model: str, err: str):
  """Registers T1 upper and lower on the test error column ``err`` of ``model``."""
  for side, fn in (('upper', _b.clopper_pearson_upper), ('lower', _b.clopper_pearson_lower)):

    def t1(m, fn=fn):
      k = _b.error_count(m[err], m['n_test'])
      return fn(k, m['n_test'], m['confidence_delta'])

    t1.__qualname__ = f'_t1_{side}_{model}'
    register(
        Bound(
            f't1_{side}_{model}',
            t1,
            err,
            side,
            'test-set',
            (err, 'n_test', 'confidence_delta'),
            f'T1: Clopper-Pearson {side} limit on the expected error of {model} '
            '(prob >= 1 - delta over the test sample)',
        )
    )


for _model, _err in (
    ('kd', 'kd_err'),
    ('baseline', 'baseline_err'),
    ('teacher', 'teacher_err'),
    ('target', 'target_err'),
):
  _t1(_model, _err)


def _p1(model: str):
  column = f'{model}_gibbs_bound'

  def upper(m):
    return np.minimum(1.0, np.asarray(m[column], dtype=np.float64))

  def deterministic(m):
    return np.minimum(1.0, 2.0 * np.asarray(m[column], dtype=np.float64))

  register(Bound(
      f'p1_upper_{model}', upper, f'{model}_gibbs_err', 'upper', 'probabilistic', (column,),
      f"P1: PAC-Bayes-kl (Seeger-Maurer) bound on the Gibbs error of {model}'s Gaussian "
      'posterior (prob >= 1 - delta over the training sample)'))
  register(Bound(
      f'p1_deterministic_upper_{model}', deterministic, f'{model}_err', 'upper',
      'probabilistic', (column,),
      f"P1: min(1, 2 G(Q)) on the expected error of {model}'s deterministic classifier "
      "(the posterior's majority vote)"))


for _model in ('kd', 'baseline', 'target'):
  _p1(_model)


@bound(
    'f1_lower',
    target='kl_test',
    side='lower',
    kind='expected-floor',
    requires=('f1_floor_tckd', 'f1_floor_nckd'),
    description='F1: E KL(p_t || p_bar) <= E KL(p_t || q) for every student on x_b',
)
def _f1_lower(m):
  return np.asarray(m['f1_floor_tckd'], np.float64) + np.asarray(m['f1_floor_nckd'], np.float64)


@bound(
    'f1_conditional_lower',
    target='kd_conditional_kl',
    side='lower',
    kind='deterministic',
    requires=('f1_floor_tckd', 'f1_floor_nckd'),
    description='F1: mean_i E[KL(p_t || p_bar) | x_b,i] <= mean_i E[KL(p_t || q) | x_b,i]',
)
def _f1_conditional_lower(m):
  return _f1_lower(m)


@bound(
    'f1_pointwise',
    target='f1_pointwise_violations',
    side='upper',
    kind='deterministic',
    requires=(),
    description='F1 per example: #{i : E[KL(p_t || q) | x_b,i] < F_i} = 0',
)
def _f1_pointwise(m):
  return np.float64(0.0)


@bound(
    'tv_domain_lower',
    target='tv_estimate_heldout',
    side='lower',
    kind='test-set',
    requires=('domain_acc_heldout', 'n_domain_heldout', 'confidence_delta'),
    description='C2: TV(phi_A, phi_B) >= 2 * CP_lower(held-out balanced accuracy) - 1 '
    '(prob >= 1 - delta over the held-out pairs)',
)
def _tv_domain_lower(m):
  n = m['n_domain_heldout']
  k = _b.error_count(m['domain_acc_heldout'], n)  # number of correct calls
  return np.maximum(0.0, 2.0 * _b.clopper_pearson_lower(k, n, m['confidence_delta']) - 1.0)


@bound(
    'c3_certified_upper',
    target='target_err',
    side='upper',
    kind='test-set',
    requires=('source_err', 'pair_disagreement', 'n_test', 'confidence_delta'),
    description='C3: R_B <= CP_upper(err_A, delta/2) + CP_upper(disagreement, delta/2) '
    '(prob >= 1 - delta over the test pairs; no target labels)',
)
def _c3_certified_upper(m):
  n, half = m['n_test'], 0.5 * np.asarray(m['confidence_delta'], np.float64)
  upper = lambda rate: _b.clopper_pearson_upper(_b.error_count(rate, n), n, half)
  return np.minimum(1.0, upper(m['source_err']) + upper(m['pair_disagreement']))
