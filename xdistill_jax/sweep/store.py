"""Finished chunks: the source of truth for resuming a sweep.

Each chunk is one file `chunks/NNNNNNNNNN.npz` named by the first setting index it holds, with
arrays `index` ([c] flat setting indices) and `metric:NAME` ([c, ...]). A chunk is written to
a temporary name, flushed to disk and renamed (`os.replace`), so a chunk killed mid-write never
appears. Plain files need no coordination between processes: one process writes (process 0 of
a multi-process sweep, or each independent shard for its own chunks) and any may read.
Trained parameters of selected settings are orbax checkpoints (`save_params`).
"""

import os
import pathlib

import numpy as np
import orbax.checkpoint as ocp

_METRIC = 'metric:'


def _chunk_name(first: int) -> str:
  return f'{first:010d}.npz'


class ChunkStore:
  """Commits and reads back finished chunks under `directory`."""

  def __init__(self, directory):
    self.directory = pathlib.Path(directory).absolute()

  def commit(self, index: np.ndarray, metrics: dict) -> None:
    """Writes one chunk atomically (temporary file, fsync, rename)."""
    index = np.asarray(index, np.int64)
    self.directory.mkdir(parents=True, exist_ok=True)
    path = self.directory / _chunk_name(int(index[0]))
    tmp = self.directory / f'.{path.name}.tmp{os.getpid()}'
    arrays = {'index': index} | {_METRIC + k: np.asarray(v) for k, v in metrics.items()}
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)

  def paths(self) -> list[pathlib.Path]:
    """Committed chunk files, in order of their first setting index."""
    if not self.directory.is_dir():
      return []
    return sorted(p for p in self.directory.iterdir()
                  if p.suffix == '.npz' and p.stem.isdigit())

  def chunks(self):
    """Yields (index, metrics) of every committed chunk, in order of first setting index."""
    for path in self.paths():
      with np.load(path) as data:
        yield data['index'], {k[len(_METRIC):]: data[k] for k in data.files
                              if k.startswith(_METRIC)}

  def done(self) -> np.ndarray:
    """Flat indices of every committed setting (reads only the `index` arrays)."""
    parts = []
    for path in self.paths():
      with np.load(path) as data:
        parts.append(data['index'])
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

  def assemble(self) -> tuple[np.ndarray, dict]:
    """(sorted indices, metrics) of all committed settings.

    A setting committed twice (e.g. by two overlapping runs into one workdir) is kept once;
    its copies must agree bit for bit, else the store is corrupt (a RuntimeError).
    """
    indices, metrics = [], []
    for index, chunk in self.chunks():
      indices.append(index)
      metrics.append(chunk)
    if not indices:
      return np.zeros(0, np.int64), {}
    index = np.concatenate(indices)
    merged = {k: np.concatenate([m[k] for m in metrics]) for k in metrics[0]}
    order = np.argsort(index, kind='stable')
    index = index[order]
    merged = {k: v[order] for k, v in merged.items()}
    first = np.concatenate([[True], index[1:] != index[:-1]])
    if not first.all():
      repeat = np.flatnonzero(~first)
      for name, values in merged.items():
        a, b = values[repeat], values[repeat - 1]
        same = ((a == b) | ((a != a) & (b != b))).reshape(len(repeat), -1).all(axis=1)
        if not same.all():
          setting = int(index[repeat[np.argmin(same)]])
          raise RuntimeError(f'{self.directory} holds setting {setting} twice with different '
                             f'{name!r}; the store is corrupt.')
    return index[first], {k: v[first] for k, v in merged.items()}

  def close(self):
    """Nothing to release (kept so callers need not know how chunks are stored)."""


def save_params(directory, params_by_index: dict[int, object]) -> None:
  """Saves trained parameters of selected settings, one orbax checkpoint per setting.

  Called by process 0 only: orbax is told that no other process takes part, so it never
  waits at a cross-process barrier for processes that do not call it."""
  alone = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
  checkpointer = ocp.StandardCheckpointer(multiprocessing_options=alone)
  for index, params in params_by_index.items():
    path = pathlib.Path(directory).absolute() / f'setting_{index:08d}'
    if not path.exists():
      checkpointer.save(path, params)
  checkpointer.wait_until_finished()

