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

_METRIC = 'metric:'
BLOCK = 4096  # settings per batch of `ChunkStore.merged`


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
      yield _load(path)

  def done(self) -> np.ndarray:
    """Flat indices of every committed setting (reads only the `index` arrays)."""
    parts = []
    for path in self.paths():
      with np.load(path) as data:
        parts.append(data['index'])
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

  def merged(self, block: int | None = None):
    """Yields (index, metrics) of every committed setting, each once, in ascending index
    order, one batch per block [k·block, (k+1)·block) of the flat index that holds any.

    Batches depend on the committed settings alone, never on how they were chunked, so that
    what is computed batch by batch (summary.csv's statistics) is bit-identical whatever the
    chunk sizes; memory holds about one block and one chunk, whatever the sweep's size.
    A setting committed twice (e.g. by two overlapping runs into one workdir) is kept once;
    its copies must agree bit for bit, else the store is corrupt (a RuntimeError). Chunks are
    read in order of their first index; rows wait until no later chunk can hold their block
    (chunks of a resumed sweep may interleave around settings committed earlier).
    """
    block = block or BLOCK
    paths = self.paths()
    firsts = [int(p.stem) for p in paths[1:]] + [None]
    index, metrics = np.zeros(0, np.int64), None
    for path, limit in zip(paths, firsts):
      chunk_index, chunk = _load(path)
      if metrics is not None:
        chunk_index = np.concatenate([index, chunk_index])
        chunk = {k: np.concatenate([metrics[k], chunk[k]]) for k in chunk}
      index, metrics = self._unique(chunk_index, chunk)
      cut = len(index) if limit is None else np.searchsorted(index, limit // block * block)
      blocks = index[:cut] // block
      for part in np.split(np.arange(cut), np.flatnonzero(np.diff(blocks)) + 1):
        if len(part):
          yield index[part], {k: v[part] for k, v in metrics.items()}
      index, metrics = index[cut:], {k: v[cut:] for k, v in metrics.items()}

  def _unique(self, index, metrics):
    """Sorted by index, a repeated setting kept once (after checking its copies agree)."""
    order = np.argsort(index, kind='stable')
    index = index[order]
    metrics = {k: v[order] for k, v in metrics.items()}
    first = np.concatenate([[True], index[1:] != index[:-1]])
    if first.all():
      return index, metrics
    repeat = np.flatnonzero(~first)
    for name, values in metrics.items():
      a, b = values[repeat], values[repeat - 1]
      same = ((a == b) | ((a != a) & (b != b))).reshape(len(repeat), -1).all(axis=1)
      if not same.all():
        setting = int(index[repeat[np.argmin(same)]])
        raise RuntimeError(f'{self.directory} holds setting {setting} twice with different '
                           f'{name!r}; the store is corrupt.')
    return index[first], {k: v[first] for k, v in metrics.items()}

  def assemble(self) -> tuple[np.ndarray, dict]:
    """(sorted indices, metrics) of all committed settings, in memory (`merged` at once)."""
    parts = list(self.merged())
    if not parts:
      return np.zeros(0, np.int64), {}
    return (np.concatenate([i for i, _ in parts]),
            {k: np.concatenate([m[k] for _, m in parts]) for k in parts[0][1]})

  def close(self):
    """Nothing to release (kept so callers need not know how chunks are stored)."""


def _load(path) -> tuple[np.ndarray, dict]:
  with np.load(path) as data:
    return data['index'], {k[len(_METRIC):]: data[k] for k in data.files
                           if k.startswith(_METRIC)}


def save_params(directory, params_by_index: dict[int, object]) -> None:
  """Saves trained parameters of selected settings, one orbax checkpoint per setting.

  Called by process 0 only: orbax is told that no other process takes part, so it never
  waits at a cross-process barrier for processes that do not call it."""
  import orbax.checkpoint as ocp  # ≈ 0.3 s to import: only sweeps that save parameters
  alone = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
  checkpointer = ocp.StandardCheckpointer(multiprocessing_options=alone)
  for index, params in params_by_index.items():
    path = pathlib.Path(directory).absolute() / f'setting_{index:08d}'
    if not path.exists():
      checkpointer.save(path, params)
  checkpointer.wait_until_finished()

