"""The statistics of the reproduction suite: one-sided tests with seeds as units, Holm.

Every test returns a `Measurement`: the statistic, its two-sided 95 % interval and the
one-sided p-values of the predicted direction and of the opposite one. Spearman's ρ and its
bootstrap interval come from `reporting.tables`; Clopper–Pearson limits from `bounds`.
"""

import dataclasses

import numpy as np
from scipy import special

from xdistill_jax import bounds
from xdistill_jax.reporting import tables

LEVEL = 0.95  # of every reported interval


@dataclasses.dataclass(frozen=True)
class Measurement:
  """A claim's statistic `value` with its interval [low, high] over `n` units.

  `p` is the one-sided p-value for the claimed direction, `p_opposite` for the other one
  (both None for exact checks, which carry `passed` instead).
  """

  value: float
  low: float
  high: float
  n: int
  p: float | None = None
  p_opposite: float | None = None
  passed: bool | None = None


def _finite(x) -> np.ndarray:
  x = np.asarray(x, np.float64).ravel()
  return x[np.isfinite(x)]


def t_test(differences, alternative: str) -> Measurement:
  """One-sample t-test of the mean of `differences` (one per seed: the unit) against 0.

  `alternative`: 'greater' (claim: mean > 0) or 'less'. t = mean / (sd/√n), ν = n − 1;
  interval mean ± t_{ν, 0.975}·sd/√n. A paired test is this test on the per-seed
  differences. NaN entries are dropped; fewer than 2 units give NaN with p = 1.
  """
  d = _finite(differences)
  n = len(d)
  mean = float(d.mean()) if n else float('nan')
  if n < 2:
    return Measurement(mean, float('nan'), float('nan'), n, 1.0, 1.0)
  se = d.std(ddof=1) / np.sqrt(n)
  if se == 0:  # constant differences: the sign is certain
    up = 0.0 if mean > 0 else 1.0
    down = 0.0 if mean < 0 else 1.0
    return Measurement(mean, mean, mean, n, *(up, down) if alternative == 'greater'
                       else (down, up))
  t = mean / se
  half = special.stdtrit(n - 1, 0.5 + LEVEL / 2) * se
  greater, less = float(special.stdtr(n - 1, -t)), float(special.stdtr(n - 1, t))
  p, other = (greater, less) if alternative == 'greater' else (less, greater)
  return Measurement(mean, mean - half, mean + half, n, p, other)


def per_seed_slopes(x, y, seed) -> np.ndarray:
  """Least-squares slope of y on x within each seed (seeds with < 2 distinct x are dropped)."""
  x, y, seed = (np.asarray(a, np.float64) for a in (x, y, seed))
  keep = np.isfinite(x) & np.isfinite(y)
  out = []
  for s in np.unique(seed[keep]):
    xs, ys = x[keep & (seed == s)], y[keep & (seed == s)]
    if np.ptp(xs) > 0:
      xc = xs - xs.mean()
      out.append(float(xc @ (ys - ys.mean()) / (xc @ xc)))
  return np.array(out)


def slope_test(x, y, seed, alternative: str) -> Measurement:
  """Trend of y in x with seeds as units: `t_test` of the per-seed least-squares slopes."""
  return t_test(per_seed_slopes(x, y, seed), alternative)


def spearman_test(x, y, alternative: str, permutations: int = 20_000,
                  seed: int = 0) -> Measurement:
  """Spearman ρ(x, y) over independent rows, bootstrap 95 % interval, one-sided p-values.

  ρ and its two-sided permutation p-value come from `tables.spearman`, the interval from
  `tables.spearman_interval`. The permutation null of ρ is symmetric (reversing y's ranks
  maps ρ to −ρ), so the one-sided p of the observed direction is half the two-sided one
  and that of the other direction one minus it. Undefined ρ (a constant side): p = 1.
  """
  test = tables.spearman(x, y, permutations=permutations, seed=seed)
  box = tables.spearman_interval(x, y, level=LEVEL, seed=seed)
  rho = test['rho']
  if not np.isfinite(rho):
    return Measurement(rho, box['low'], box['high'], test['n'], 1.0, 1.0)
  half = test['p_value'] / 2
  up, down = (half, 1 - half) if rho > 0 else ((1 - half, half) if rho < 0 else (0.5, 0.5))
  p, other = (up, down) if alternative == 'greater' else (down, up)
  return Measurement(rho, box['low'], box['high'], test['n'], float(p), float(other))


def holm(p_values) -> np.ndarray:
  """Holm's step-down adjusted p-values: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).

  Rejecting every hypothesis with p̃ ≤ α controls the family-wise error rate at α
  (Holm 1979). NaN p-values are treated as 1.
  """
  p = np.nan_to_num(np.asarray(p_values, np.float64), nan=1.0)
  m = len(p)
  order = np.argsort(p, kind='stable')
  scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
  adjusted = np.empty(m)
  adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
  return adjusted


def zero_count(count: int, n: int) -> Measurement:
  """An exact check that `count` of `n` rows are violations: passes iff count = 0.

  The interval is the two-sided 95 % Clopper–Pearson interval of the violation rate.
  """
  low, high = bounds.clopper_pearson_interval(count / max(n, 1), max(n, 1), (1 - LEVEL) / 2)
  return Measurement(float(count), float(low) * n, float(high) * n, int(n),
                     passed=bool(count == 0))


def rate_at_most(count: int, n: int, delta: float, alpha: float) -> Measurement:
  """The violation rate count/n of a bound that holds with probability ≥ 1 − δ.

  Fails iff the one-sided Clopper–Pearson lower limit at level `alpha` exceeds δ (the rate is
  significantly above δ); the reported interval is the two-sided 95 % one.
  """
  rate = count / n if n else float('nan')
  low, high = bounds.clopper_pearson_interval(rate, n, (1 - LEVEL) / 2)
  lower = float(bounds.clopper_pearson_lower(count, n, alpha))
  return Measurement(rate, float(low), float(high), int(n), passed=bool(lower <= delta))


def equivalence(estimates, standard_errors, margin: float, alpha: float) -> Measurement:
  """Two one-sided tests (TOST) that every estimate lies within ±`margin` of its target.

  `estimates` are differences (estimate − exact value) with their standard errors; passes iff
  for each |d| + z_{1−α}·se < margin, i.e. each (1 − 2α) interval lies inside the margin. The
  statistic is the largest |d|; the interval that of the largest |d| ± z_{0.975}·se.
  """
  d, se = np.asarray(estimates, np.float64), np.asarray(standard_errors, np.float64)
  z = special.ndtri(1 - alpha)
  worst = int(np.argmax(np.abs(d)))
  half = special.ndtri(0.5 + LEVEL / 2) * se[worst]
  ok = bool(np.all(np.abs(d) + z * se < margin))
  return Measurement(float(abs(d[worst])), float(abs(d[worst]) - half),
                     float(abs(d[worst]) + half), len(d), passed=ok)
