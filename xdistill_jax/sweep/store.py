"""Finished chunks, committed with orbax: the source of truth for resuming a sweep.

Each chunk is one orbax checkpoint whose step is the first setting index it holds and whose
tree is {'index': [c] flat setting indices, 'metrics': {name: [c, ...]}}. Orbax writes into a
temporary directory and renames it on commit, so a chunk killed mid-write never appears.
"""

import pathlib

import numpy as np
import orbax.checkpoint as ocp


class ChunkStore:
  """Commits and reads back finished chunks under `directory`."""

  def __init__(self, directory):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=False, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def commit(self, index: np.ndarray, metrics: dict) -> None:
    tree = {'index': np.asarray(index, np.int64),
            'metrics': {k: np.asarray(v) for k, v in metrics.items()}}
    self._manager.save(int(index[0]), args=ocp.args.StandardSave(tree))
    self._manager.wait_until_finished()

  def chunks(self):
    """Yields (index, metrics) of every committed chunk, in step order."""
    self._manager.reload()
    for step in self._manager.all_steps():
      tree = self._manager.restore(step, args=ocp.args.StandardRestore())
      yield np.asarray(tree['index']), {k: np.asarray(v) for k, v in tree['metrics'].items()}

  def done(self) -> np.ndarray:
    """Flat indices of every committed setting."""
    parts = [index for index, _ in self.chunks()]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)

  def assemble(self) -> tuple[np.ndarray, dict]:
    """(sorted indices, metrics) of all committed settings; raises on a duplicated index."""
    indices, metrics = [], []
    for index, chunk in self.chunks():
      indices.append(index)
      metrics.append(chunk)
    if not indices:
      return np.zeros(0, np.int64), {}
    index = np.concatenate(indices)
    if len(np.unique(index)) != len(index):
      raise RuntimeError(f'{self.directory} holds a setting twice; the store is corrupt.')
    order = np.argsort(index)
    merged = {k: np.concatenate([m[k] for m in metrics])[order] for k in metrics[0]}
    return index[order], merged

  def close(self):
    self._manager.close()


def save_params(directory, params_by_index: dict[int, object]) -> None:
  """Saves trained parameters of selected settings, one orbax checkpoint per setting."""
  checkpointer = ocp.StandardCheckpointer()
  for index, params in params_by_index.items():
    path = pathlib.Path(directory).absolute() / f'setting_{index:08d}'
    if not path.exists():
      checkpointer.save(path, params)
  checkpointer.wait_until_finished()
