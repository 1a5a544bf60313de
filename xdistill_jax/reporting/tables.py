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
