"""Column tables (`dict[str, np.ndarray]`, one 1-D array per column) and their CSV files."""

import csv
import os
import pathlib

import numpy as np

Table = dict[str, np.ndarray]


def flatten(metrics: dict) -> Table:
  """[n, k] vector metrics become columns `name_0 .. name_{k-1}`; scalars stay as they are."""
  out = {}
  for name, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 1:
      out[name] = value
    else:
      for j, column in enumerate(value.reshape(len(value), -1).T):
        out[f'{name}_{j}'] = column
  return out


def atomic_write_text(path: pathlib.Path, text: str) -> None:
  """Writes via a temporary file and `os.replace`, so readers never see a partial file."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  tmp.write_text(text)
  os.replace(tmp, path)


def write_csv(path, table: Table) -> None:
  """Writes `table` as CSV (atomically, row by row: memory stays flat), full float precision."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  names = list(table)
  formats = [_formatter(np.asarray(table[name])) for name in names]
  columns = [np.asarray(table[name]) for name in names]
  with open(tmp, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(names)
    for i in range(len(columns[0]) if columns else 0):
      writer.writerow([fmt(column[i]) for fmt, column in zip(formats, columns)])
  os.replace(tmp, path)


def _formatter(column: np.ndarray):
  if column.dtype == bool:
    return lambda v: str(int(v))
  if column.dtype.kind in 'iuUS':
    return str
  return lambda v: repr(float(v))


def read_csv(path) -> Table:
  """Reads a CSV written by `write_csv`; integer-valued columns come back as int64."""
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  names, body = rows[0], rows[1:]
  table = {}
  for j, name in enumerate(names):
    values = [row[j] for row in body]
    for parse, dtype in ((int, np.int64), (float, np.float64), (str, None)):
      try:
        table[name] = np.array([parse(v) for v in values], dtype)
        break
      except ValueError:
        continue
  return table


def select(table: Table, rows: np.ndarray) -> Table:
  return {name: column[rows] for name, column in table.items()}


def summarize(table: Table, group_by: tuple[str, ...], exclude=()) -> Table:
  """Per group of `group_by` values: mean, std (ddof = 1) and count of every other column.

  NaN entries are left out of each column's statistics (and of its count).
  """
  keys = list(zip(*(np.asarray(table[g]).tolist() for g in group_by)))
  groups = list(dict.fromkeys(keys))  # first-appearance order = the sweep's axis order
  position = {key: i for i, key in enumerate(groups)}
  inverse = np.array([position[key] for key in keys])
  summary = {g: np.array([key[j] for key in groups]) for j, g in enumerate(group_by)}
  for name, column in table.items():
    if name in group_by or name in exclude or np.asarray(column).dtype.kind in 'US':
      continue
    column = np.asarray(column, np.float64)
    stats = [_stats(column[inverse == i]) for i in range(len(groups))]
    summary[name + '_mean'], summary[name + '_std'], summary[name + '_count'] = (
        np.array(s) for s in zip(*stats))
  return summary


def _stats(values):
  values = values[~np.isnan(values)]
  n = len(values)
  if n == 0:
    return np.nan, np.nan, 0
  return values.mean(), (values.std(ddof=1) if n > 1 else np.nan), n


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n of x, ties given their average rank."""
  order = np.argsort(x, kind='mergesort')
  ranks = np.empty(len(x))
  ranks[order] = np.arange(1, len(x) + 1)
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x, y, permutations: int = 2000, seed: int = 0) -> dict:
  """Spearman's ρ of the finite pairs (x_i, y_i), with a two-sided permutation p-value.

  ρ is Pearson's correlation of the ranks (ties averaged). The p-value is
  (1 + #{|ρ_π| >= |ρ|}) / (permutations + 1) over random permutations π of y's ranks;
  ``permutations=0`` skips it (NaN).

  Returns:
    ``{'rho', 'p_value', 'n'}``; ρ (and the p-value) are NaN when fewer than 3 finite pairs
    remain or one side is constant.

  Example:
    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30], permutations=0)['rho']
    0.8
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep], y[keep]
  n = int(len(x))
  if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return {'rho': float('nan'), 'p_value': float('nan'), 'n': n}
  rx, ry = _ranks(x), _ranks(y)
  rx, ry = (rx - rx.mean()) / rx.std(), (ry - ry.mean()) / ry.std()
  rho = float(np.mean(rx * ry))
  if not permutations:
    return {'rho': rho, 'p_value': float('nan'), 'n': n}
  shuffled = np.random.default_rng(seed).permuted(np.tile(ry, (permutations, 1)), axis=1)
  null = shuffled @ rx / n
  p_value = float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (permutations + 1))
  return {'rho': rho, 'p_value': p_value, 'n': n}


def spearman_interval(x, y, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
  """`spearman` ρ of the finite pairs with a percentile-bootstrap interval at `level`.

  Pairs are resampled with replacement `resamples` times; resamples whose ρ is undefined
  (one side constant) are left out of the percentiles.

  Returns:
    ``{'rho', 'low', 'high', 'n'}`` (NaN where ρ is undefined).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep], y[keep]
  rho = spearman(x, y, permutations=0)['rho']
  index = np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))
  boot = np.array([spearman(x[i], y[i], permutations=0)['rho'] for i in index]) if len(x) else []
  boot = np.asarray(boot, np.float64)
  boot = boot[np.isfinite(boot)]
  tail = 50.0 * (1.0 - level)
  low, high = (np.percentile(boot, [tail, 100.0 - tail]) if np.isfinite(rho) and boot.size
               else (np.nan, np.nan))
  return {'rho': rho, 'low': float(low), 'high': float(high), 'n': int(len(x))}


def binned_means(x, y, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
  """Means of x and of y in the quantile bins of x, over the finite pairs.

  Bin edges are the ``bins + 1`` quantiles of x (repeated edges merged, so ties never split);
  bin i holds edges[i] <= x < edges[i + 1], the last bin also its right edge. Empty bins are
  left out.

  Example:
    >>> xs, ys = binned_means([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.0, 1.0], bins=2)
    >>> xs.tolist(), ys.tolist()
    ([1.5, 3.5], [0.5, 1.0])
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep], y[keep]
  if len(x) == 0:
    return np.zeros(0), np.zeros(0)
  edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
  which = np.clip(np.searchsorted(edges, x, side='right') - 1, 0, max(len(edges) - 2, 0))
  groups = [i for i in range(max(len(edges) - 1, 1)) if np.any(which == i)]
  return (np.array([x[which == i].mean() for i in groups]),
          np.array([y[which == i].mean() for i in groups]))
