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

==================  ======  ========  =============  ===============================================
name                label   side      kind           requires → target
==================  ======  ========  =============  ===============================================
n1_lower            N1      lower     deterministic  nckd_test, max_teacher_py_test → kl_test
n1_upper            N1      upper     deterministic  tckd_test, nckd_test, min_teacher_py_test
                                                     → kl_test
n2_lower            N2      lower     deterministic  teacher_err, disagreement_test → kd_err
n2_upper            N2      upper     deterministic  teacher_err, disagreement_test → kd_err
n2_pinsker_upper    N2      upper     deterministic  teacher_err, pinsker_disagreement_test → kd_err
n3_lower_kd         N3      lower     probabilistic  bayes_floor_b → kd_err
n3_lower_baseline   N3      lower     probabilistic  bayes_floor_b → baseline_err
n4_vc_upper         N4      upper     probabilistic  kd_train_err, n_train, vc_dim, confidence_delta → kd_err
n4_margin_upper     N4      upper     probabilistic  kd_margin_risk, n_train, num_classes,
                                                     margin_rho, input_radius, kd_weight_norm,
                                                     confidence_delta → kd_err
c5_lower            C1/C5   lower     probabilistic  epsilon, num_classes → target_err
c3_upper            C3      upper     deterministic  source_err, pair_disagreement → target_err
c3_split_upper      C3      upper     probabilistic  source_err, epsilon, clean_disagreement
                                                     → target_err
c4_upper            C3+C4   upper     probabilistic  source_err, pair_disagreement,
                                                     probe_margin_risk, m_labelled, margin_rho,
                                                     rademacher, confidence_delta → target_err
c4_probe_upper      C4      upper     probabilistic  probe_margin_risk, m_labelled, margin_rho,
                                                     rademacher, confidence_delta → target_err
==================  ======  ========  =============  ===============================================

Column meanings:

* ``kl_test``, ``tckd_test``, ``nckd_test``: mean KL(p‖q), TCKD, NCKD between teacher and KD
  student; ``max_teacher_py_test`` / ``min_teacher_py_test``: extremes of the teacher's
  true-class probability over the test set.
* ``kd_err``, ``baseline_err``, ``teacher_err``: test 0-1 errors; ``disagreement_test``:
  fraction of test examples where teacher and KD student argmaxes differ;
  ``pinsker_disagreement_test``: (1/n) Σ 1[KL_i ≥ m_i²/2] (``bounds.pinsker_disagreement_bound``).
* ``bayes_floor_b``: the student modality's Bayes error (N3 closed form or Monte Carlo).
* ``kd_train_err``, ``n_train``, ``vc_dim``, ``confidence_delta``: training error, training-set size,
  VC dimension (binary; ``bounds.linear_vc_dimension``), confidence parameter δ.
* ``kd_margin_risk``, ``num_classes``, ``margin_rho``, ``input_radius``, ``kd_weight_norm``:
  fraction of training examples with margin ≤ ρ, K, ρ, r = max ‖x‖ (bias folded in), the
  student's Frobenius weight norm Λ (linear students only).
* ``epsilon``: the generator's broken-correspondence probability (= TV); ``source_err``,
  ``target_err``: errors of the head on the coupled test pairs through φ_A and φ_B;
  ``pair_disagreement``: fraction of pairs where the two predictions differ;
  ``clean_disagreement``: that fraction among intact pairs.
* ``probe_margin_risk``, ``m_labelled``, ``rademacher``: the probe's empirical ρ-margin risk
  on its m labelled training examples, m, and the empirical Rademacher complexity of its
  class on those examples.

Notes on kinds. ``n3_*`` and ``c5_lower`` are exact values of an *expected* error; a finite
test set can fall below them, so they are 'probabilistic' and their violation rate is
reported, not asserted. ``c3_split_upper`` is deterministic on the evaluation set when its ε
is the observed broken fraction there; with ``epsilon`` the expected fraction it is not.
``c4_probe_upper`` and the C4 binary constant are the theorem for K = 2 only. ``c4_upper``
adds the whole C4 bound of the probe to C3, so it dominates both C3 (never below the measured
target error) and C4 (a 1 − δ bound on the expected target error of a probe trained on the m
labelled target examples); it is conservative by construction.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Callable, Iterable, Mapping

import numpy as np

from xdistill_jax import bounds as _b

__all__ = [
    "Bound",
    "register",
    "unregister",
    "bound",
    "get",
    "names",
    "applicable",
    "load",
    "evaluate",
    "report_lines",
]

SIDES = ("lower", "upper")
KINDS = ("deterministic", "probabilistic", "reference")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A named bound: ``fn`` maps the ``requires`` columns of a results table to one column.

    Attributes:
      name: column the bound produces, e.g. ``'n2_upper'``.
      fn: ``Mapping[str, np.ndarray] -> np.ndarray``, vectorised over settings. It is given
        only the columns in ``requires``.
      target: the metric column it bounds, e.g. ``'kd_err'``.
      side: ``'lower'`` or ``'upper'``.
      kind: ``'deterministic'`` (a violation is a bug), ``'probabilistic'`` (may fail on a
        fraction of settings, e.g. ≤ δ) or ``'reference'`` (a guide curve, not a bound).
      requires: columns ``fn`` reads.
      description: one line for reports and docs.
    """

    name: str
    fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    target: str
    side: str
    kind: str
    requires: tuple[str, ...]
    description: str = ""

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"bound name must be a non-empty string, got {self.name!r}")
        if self.side not in SIDES:
            raise ValueError(f"bound {self.name!r}: side must be one of {SIDES}, got {self.side!r}")
        if self.kind not in KINDS:
            raise ValueError(f"bound {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not callable(self.fn):
            raise TypeError(f"bound {self.name!r}: fn must be callable")
        requires = (self.requires,) if isinstance(self.requires, str) else tuple(self.requires)
        object.__setattr__(self, "requires", requires)
        if self.target in requires:
            raise ValueError(f"bound {self.name!r} may not read its own target {self.target!r}")

    def __call__(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate on a table; the function sees only the required columns."""
        missing = [c for c in self.requires if c not in table]
        if missing:
            raise ValueError(f"bound {self.name!r} needs columns {missing} that the table lacks")
        return np.asarray(self.fn(_Columns(self, table)))


class _Columns(dict):
    """The required columns of a table; reading any other column names the culprit."""

    def __init__(self, b: Bound, table: Mapping[str, np.ndarray]):
        super().__init__((c, np.asarray(table[c])) for c in b.requires)
        self._name = b.name

    def __missing__(self, column):
        raise KeyError(
            f"bound {self._name!r} read column {column!r}, which is not in its requires"
        )


_REGISTRY: dict[str, Bound] = {}


def _same_definition(a: Bound, b: Bound) -> bool:
    """True for the same object or the same function re-created (e.g. a module reload)."""
    if a is b:
        return True
    key = lambda x: (getattr(x.fn, "__module__", None), getattr(x.fn, "__qualname__", None))
    return key(a) == key(b) and key(a)[1] is not None and "<lambda>" not in key(a)[1]


def register(bound: Bound, *, overwrite: bool = False) -> Bound:
    """Add ``bound`` to the registry and return it.

    Registering a different bound under a taken name raises ``ValueError`` unless
    ``overwrite=True``; re-registering the same definition (e.g. a re-imported module)
    replaces it silently.
    """
    if not isinstance(bound, Bound):
        raise TypeError(f"register expects a Bound, got {type(bound).__name__}")
    old = _REGISTRY.get(bound.name)
    if old is not None and not overwrite and not _same_definition(old, bound):
        raise ValueError(
            f"a bound named {bound.name!r} is already registered; pass overwrite=True to replace it"
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
    description: str = "",
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
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
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


def load(spec: str | Iterable[str]):
    """Import a user module so that its ``@bound`` registrations run.

    ``spec`` is ``'package.module'`` (returns the module) or ``'package.module:attr'``
    (returns the attribute, dotted paths allowed). If the attribute is a :class:`Bound`, or
    a list/tuple of them, each is registered if it is not already. An iterable of specs
    loads each (``load(config.bound_modules)``) and returns a list.
    """
    if not isinstance(spec, str):
        return [load(s) for s in spec]
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"cannot import bound module {module_name!r} (from {spec!r}): {e}") from e
    if not attr:
        return obj
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"{spec!r}: {module_name!r} has no attribute {attr!r}") from None
    for b in obj if isinstance(obj, (list, tuple)) else (obj,):
        if isinstance(b, Bound) and _REGISTRY.get(b.name) is not b:
            register(b)
    return obj


def evaluate(
    names: str | Iterable[str], table: Mapping[str, np.ndarray], tol: float = 1e-6
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Evaluate bounds on a results table.

    Args:
      names: bound name(s); unknown names raise ``ValueError`` listing the registered ones.
      table: column name → 1-D array (one entry per setting).
      tol: float tolerance. An upper bound is violated where
        ``target − bound > tol·max(1, |bound|)`` (a lower bound symmetrically): absolute
        for values up to 1, relative beyond, so float32-measured columns don't flag
        spurious violations of identities that hold with equality.

    Returns:
      ``(columns, summary)``: ``columns`` has, per bound, ``name`` (float64 values) and
      ``name + '_violated'`` (bool; False where the bound or target is NaN). ``summary`` maps
      each name to ``{'kind', 'side', 'target', 'violations', 'rate', 'n'}``, where ``n``
      counts the rows where neither the bound nor the target is NaN and ``rate`` is
      violations / n (NaN when n = 0).
    """
    if isinstance(names, str):
        names = (names,)
    chosen = [get(n) for n in names]
    columns: dict[str, np.ndarray] = {}
    summary: dict[str, dict] = {}
    for b in chosen:
        if b.target not in table:
            raise ValueError(f"bound {b.name!r} targets column {b.target!r}, which the table lacks")
        target = np.asarray(table[b.target], dtype=np.float64)
        value = b(table).astype(np.float64)
        value = np.broadcast_to(value, np.broadcast_shapes(value.shape, target.shape)).copy()
        valid = ~(np.isnan(value) | np.isnan(target))
        slack = tol * np.maximum(1.0, np.abs(np.where(np.isfinite(value), value, 0.0)))
        with np.errstate(invalid="ignore"):
            gap = target - value if b.side == "upper" else value - target
            violated = valid & (gap > slack)
        n = int(valid.sum())
        count = int(violated.sum())
        columns[b.name] = value
        columns[b.name + "_violated"] = violated
        summary[b.name] = {
            "kind": b.kind,
            "side": b.side,
            "target": b.target,
            "violations": count,
            "rate": count / n if n else math.nan,
            "n": n,
        }
    return columns, summary


def report_lines(summary: Mapping[str, Mapping]) -> list[str]:
    """One line per bound, e.g. ``'n1_upper (deterministic, upper on kl_test): 0/600 violated'``.

    Deterministic bounds with violations are marked ``VIOLATED (bug)``; probabilistic ones
    show the observed rate; reference curves say they are not bounds.
    """
    lines = []
    for name, s in summary.items():
        line = (
            f"{name} ({s['kind']}, {s['side']} on {s['target']}): "
            f"{s['violations']}/{s['n']} violated"
        )
        if s["kind"] == "deterministic" and s["violations"] > 0:
            line += " VIOLATED (bug)"
        elif s["kind"] == "probabilistic" and s["n"]:
            line += f" (rate {s['rate']:.3f})"
        elif s["kind"] == "reference":
            line += " (reference slope, not a bound)"
        lines.append(line)
    return lines


# --------------------------------------------------------------------------------------
# Standard bounds (see the table in the module docstring and docs/theory.md).
# --------------------------------------------------------------------------------------


@bound(
    "n1_lower",
    target="kl_test",
    side="lower",
    kind="deterministic",
    requires=("nckd_test", "max_teacher_py_test"),
    description="N1: (1 - max p_y) * D_NT <= mean KL",
)
def _n1_lower(m):
    return _b.approximation_error_lower(m["nckd_test"], m["max_teacher_py_test"])


@bound(
    "n1_upper",
    target="kl_test",
    side="upper",
    kind="deterministic",
    requires=("tckd_test", "nckd_test", "min_teacher_py_test"),
    description="N1: mean KL <= D_TC + (1 - min p_y) * D_NT",
)
def _n1_upper(m):
    return _b.approximation_error_upper(m["nckd_test"], m["tckd_test"], m["min_teacher_py_test"])


@bound(
    "n2_lower",
    target="kd_err",
    side="lower",
    kind="deterministic",
    requires=("teacher_err", "disagreement_test"),
    description="N2: err_t - dis <= err_s",
)
def _n2_lower(m):
    return _b.teacher_agreement_sandwich(m["teacher_err"], m["disagreement_test"])[0]


@bound(
    "n2_upper",
    target="kd_err",
    side="upper",
    kind="deterministic",
    requires=("teacher_err", "disagreement_test"),
    description="N2: err_s <= err_t + dis",
)
def _n2_upper(m):
    return _b.teacher_agreement_sandwich(m["teacher_err"], m["disagreement_test"])[1]


@bound(
    "n2_pinsker_upper",
    target="kd_err",
    side="upper",
    kind="deterministic",
    requires=("teacher_err", "pinsker_disagreement_test"),
    description="N2: err_s <= err_t + mean 1[KL_i >= m_i^2/2]",
)
def _n2_pinsker_upper(m):
    return _b.teacher_agreement_sandwich(m["teacher_err"], m["pinsker_disagreement_test"])[1]


@bound(
    "n3_lower_kd",
    target="kd_err",
    side="lower",
    kind="probabilistic",
    requires=("bayes_floor_b",),
    description="N3: Bayes floor of modality b (bounds the expected error; a test set can dip below)",
)
def _n3_lower_kd(m):
    return np.asarray(m["bayes_floor_b"], dtype=np.float64)


@bound(
    "n3_lower_baseline",
    target="baseline_err",
    side="lower",
    kind="probabilistic",
    requires=("bayes_floor_b",),
    description="N3: Bayes floor of modality b (bounds the expected error; a test set can dip below)",
)
def _n3_lower_baseline(m):
    return np.asarray(m["bayes_floor_b"], dtype=np.float64)


@bound(
    "n4_vc_upper",
    target="kd_err",
    side="upper",
    kind="probabilistic",
    requires=("kd_train_err", "n_train", "vc_dim", "confidence_delta"),
    description="N4: Vapnik VC bound (binary), prob >= 1 - delta",
)
def _n4_vc_upper(m):
    return _b.vc_bound(m["kd_train_err"], m["n_train"], m["vc_dim"], m["confidence_delta"])


@bound(
    "n4_margin_upper",
    target="kd_err",
    side="upper",
    kind="probabilistic",
    requires=(
        "kd_margin_risk",
        "n_train",
        "num_classes",
        "margin_rho",
        "input_radius",
        "kd_weight_norm",
        "confidence_delta",
    ),
    description="N4: multiclass margin bound, linear hypotheses (Mohri et al. ch. 9)",
)
def _n4_margin_upper(m):
    return _b.multiclass_margin_bound(
        m["kd_margin_risk"],
        m["n_train"],
        m["num_classes"],
        m["margin_rho"],
        m["input_radius"],
        m["kd_weight_norm"],
        m["confidence_delta"],
    )


@bound(
    "c5_lower",
    target="target_err",
    side="lower",
    kind="probabilistic",
    requires=("epsilon", "num_classes"),
    description="C1/C5: target Bayes error eps*(1 - 1/K) (expected-error floor)",
)
def _c5_lower(m):
    return _b.exact_tv_latent_bayes_floor(m["epsilon"], m["num_classes"])


@bound(
    "c3_upper",
    target="target_err",
    side="upper",
    kind="deterministic",
    requires=("source_err", "pair_disagreement"),
    description="C3: err_B <= err_A + P[pair predictions differ]",
)
def _c3_upper(m):
    return _b.pair_disagreement_bound(m["source_err"], m["pair_disagreement"])


@bound(
    "c3_split_upper",
    target="target_err",
    side="upper",
    kind="probabilistic",
    requires=("source_err", "epsilon", "clean_disagreement"),
    description="C3: err_B <= err_A + eps + a_clean (eps = expected broken fraction)",
)
def _c3_split_upper(m):
    return _b.pair_disagreement_split(m["source_err"], m["epsilon"], m["clean_disagreement"])


def _c4_terms(m):
    return _b.binary_margin_bound(
        m["probe_margin_risk"], m["m_labelled"], m["margin_rho"], m["rademacher"], m["confidence_delta"]
    )


_C4_COLUMNS = ("probe_margin_risk", "m_labelled", "margin_rho", "rademacher", "confidence_delta")


@bound(
    "c4_upper",
    target="target_err",
    side="upper",
    kind="probabilistic",
    requires=("source_err", "pair_disagreement") + _C4_COLUMNS,
    description="C3 + C4: err_A + P[differ] + probe margin bound (K = 2 constant)",
)
def _c4_upper(m):
    return _b.pair_disagreement_bound(m["source_err"], m["pair_disagreement"]) + _c4_terms(m)


@bound(
    "c4_probe_upper",
    target="target_err",
    side="upper",
    kind="probabilistic",
    requires=_C4_COLUMNS,
    description="C4: binary margin bound of the probe (Mohri et al. ch. 5), prob >= 1 - delta",
)
def _c4_probe_upper(m):
    return _c4_terms(m)
