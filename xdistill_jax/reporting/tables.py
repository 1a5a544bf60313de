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
  """Writes UTF-8 text atomically (`atomic_write_bytes`)."""
  atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
  """Writes via a temporary file and `os.replace`, so readers never see a partial file."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  tmp.write_bytes(data)
  os.replace(tmp, path)


def write_csv(path, table: Table) -> None:
  """Writes `table` as CSV (atomically), full float precision."""
  with CsvWriter(path) as writer:
    writer.write(table)


class _AtomicFile:
  """A file written under a temporary name and renamed into place by `close` (so readers
  never see a partial file); leaving its `with` block through an error removes it."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    self.tmp = self.path.with_name(f'.{self.path.name}.tmp{os.getpid()}')

  def __enter__(self):
    return self

  def __exit__(self, kind, *_):
    if kind is None:
      self.close()
    else:
      self._release()
      self.tmp.unlink(missing_ok=True)

  def close(self) -> None:
    self._release()
    os.replace(self.tmp, self.path)


class CsvWriter(_AtomicFile):
  """Writes a CSV table batch by batch (`write(table)` appends rows; the first batch gives
  the header), so memory holds one batch, never the whole table. Floats keep full precision
  (`repr`), booleans are written 0/1."""

  def __init__(self, path):
    super().__init__(path)
    self.file, self.writer, self.names = open(self.tmp, 'w', newline=''), None, None

  def write(self, table: Table) -> None:
    if self.writer is None:
      self.names = list(table)
      self.writer = csv.writer(self.file, lineterminator='\n')
      self.writer.writerow(self.names)
    self.writer.writerows(zip(*(_formatted(np.asarray(table[n])) for n in self.names)))

  def _release(self) -> None:
    if self.writer is None:  # no batch: an empty table still gets its (empty) header line
      self.file.write('\n')
      self.writer = True
    self.file.close()


def _formatted(column: np.ndarray) -> list[str]:
  if column.dtype == bool:
    return ['1' if v else '0' for v in column.tolist()]
  if column.dtype.kind in 'iuUS':
    return [str(v) for v in column.tolist()]
  return [repr(v) for v in column.astype(np.float64).tolist()]


class ParquetWriter(_AtomicFile):
  """Writes an Apache Parquet file batch by batch: each `write(table)` is one row group (the
  first batch fixes the schema; later ones are cast to it). Columns keep their dtypes."""

  def __init__(self, path):
    super().__init__(path)
    self.writer = None

  def write(self, table: Table) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    batch = pa.Table.from_arrays([_arrow(np.asarray(c)) for c in table.values()],
                                 names=list(table))
    if self.writer is None:
      self.writer = pq.ParquetWriter(self.tmp, batch.schema)
    self.writer.write_table(batch.cast(self.writer.schema))

  def close(self) -> None:
    if self.writer is None:
      raise ValueError(f'{self.path}: no batch was written, so there is no schema')
    super().close()

  def _release(self) -> None:
    if self.writer is not None:
      self.writer.close()


def _arrow(column: np.ndarray):
  """A NumPy column as an Arrow array. Numbers and booleans are wrapped from their buffers
  (`pa.array` would import pandas, ≈ 0.5 s, to check for its types); others via `pa.array`."""
  import pyarrow as pa
  if column.ndim == 1 and column.dtype.kind in 'iuf':
    data = np.ascontiguousarray(column)
    return pa.Array.from_buffers(pa.from_numpy_dtype(data.dtype), len(data),
                                 [None, pa.py_buffer(data)])
  if column.ndim == 1 and column.dtype == bool:
    bits = np.packbits(column, bitorder='little')
    return pa.Array.from_buffers(pa.bool_(), len(column), [None, pa.py_buffer(bits)])
  return pa.array(column)


def read_parquet(path) -> Table:
  """Reads a Parquet file (e.g. results.parquet) into a column table of NumPy arrays
  (strings as `str` arrays, like `read_csv`)."""
  import pyarrow.parquet as pq
  arrow = pq.read_table(path)
  out = {}
  for name in arrow.column_names:
    values = arrow.column(name).to_numpy()
    out[name] = np.array(values.tolist(), str) if values.dtype == object else values
  return out


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

  NaN entries are left out of each column's statistics (and of its count). Groups come in
  order of first appearance (the sweep's axis order).
  """
  summary = GroupSummary(group_by, exclude)
  summary.add(table)
  return summary.result()


class GroupSummary:
  """`summarize` over a table given batch by batch (`add`), in memory independent of its
  length: per group and column the count, mean and sum of squared deviations, merged across
  batches exactly (Chan, Golub and LeVeque's pairwise update), so `result()` equals
  `summarize` of the concatenated batches to float rounding."""

  def __init__(self, group_by: tuple[str, ...], exclude=()):
    self.group_by, self.exclude = tuple(group_by), set(exclude)
    self.position: dict[tuple, int] = {}
    self.stats: dict[str, list[np.ndarray]] = {}  # column -> [count, mean, m2] per group

  def add(self, table: Table) -> None:
    if not self.group_by:  # no groups, no statistics (as `summarize`)
      return
    keys = zip(*(np.asarray(table[g]).tolist() for g in self.group_by))
    group = np.fromiter((self.position.setdefault(k, len(self.position)) for k in keys),
                        np.int64, len(np.asarray(table[self.group_by[0]])))
    size = len(self.position)
    for name, column in table.items():
      column = np.asarray(column)
      if name in self.group_by or name in self.exclude or column.dtype.kind in 'US':
        continue
      self.stats[name] = _merge(self.stats.get(name), _batch_stats(group, column, size), size)

  def result(self) -> Table:
    groups = list(self.position)
    summary = {g: np.array([key[j] for key in groups]) for j, g in enumerate(self.group_by)}
    for name, (count, mean, m2) in self.stats.items():
      with np.errstate(invalid='ignore', divide='ignore'):
        summary[name + '_mean'] = np.where(count > 0, mean, np.nan)
        summary[name + '_std'] = np.where(count > 1, np.sqrt(m2 / (count - 1)), np.nan)
      summary[name + '_count'] = count.astype(np.int64)
    return summary


def _batch_stats(group, column, size):
  """[count, mean, m2] per group of one batch, NaN entries left out (two-pass within it)."""
  values = np.asarray(column, np.float64)
  keep = ~np.isnan(values)
  group, values = group[keep], values[keep]
  count = np.bincount(group, minlength=size).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):  # inf values: mean inf, m2 NaN
    mean = np.bincount(group, values, size) / count
    m2 = np.bincount(group, (values - mean[group]) ** 2, size)
  return [count, np.where(count > 0, mean, 0.0), m2]


def _merge(a, b, size):
  """Pooled [count, mean, m2] of two disjoint parts (groups new in `b` are appended)."""
  if a is None:
    return b
  a = [np.concatenate([x, np.zeros(size - len(x))]) for x in a]
  (na, ma, sa), (nb, mb, sb) = a, b
  n = na + nb
  share = np.divide(nb, n, out=np.zeros(size), where=n > 0)
  with np.errstate(invalid='ignore'):  # only where both parts hold values (inf stays inf)
    delta = mb - ma
    both = (na > 0) & (nb > 0)
    pooled = np.where(np.isfinite(ma) & np.isfinite(mb), ma + delta * share,
                      (ma * na + mb * nb) / np.maximum(n, 1))  # inf and NaN propagate
    mean = np.where(both, pooled, np.where(nb > 0, mb, ma))
    m2 = sa + sb + np.where(both, delta * delta * na * share, 0.0)
  return [n, mean, m2]


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
