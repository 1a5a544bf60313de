"""A sweep is the product of named axes, flattened in C order and indexed 0..size-1."""

import numpy as np


class Grid:
  """The flattened product of `axes` ({name: 1-D values}, ordered).

  Each setting's key is `fold_in(sweep_key, key_index)`, where `key_index` is the setting's
  flat index over `key_axes` only; axes left out of `key_axes` (e.g. the KD method) share
  keys, so their settings see the same data and initialisations.
  """

  def __init__(self, axes: dict[str, np.ndarray], key_axes: tuple[str, ...] | None = None):
    self.axes = {name: np.asarray(values) for name, values in axes.items()}
    self.shape = tuple(len(v) for v in self.axes.values())
    self.size = int(np.prod(self.shape))
    self.key_axes = tuple(self.axes) if key_axes is None else tuple(key_axes)
    unknown = set(self.key_axes) - set(self.axes)
    if unknown:
      raise ValueError(f'key_axes {sorted(unknown)} are not axes of the grid {list(self.axes)}')

  def positions(self, index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-axis positions (integers) of flat indices."""
    if not self.shape:
      return {}
    return dict(zip(self.axes, np.unravel_index(np.asarray(index), self.shape)))

  def settings(self, index: np.ndarray) -> dict[str, np.ndarray]:
    """Axis values of flat indices: {axis: values[index]}."""
    return {name: self.axes[name][pos] for name, pos in self.positions(index).items()}

  def traced_settings(self, index: np.ndarray) -> dict[str, np.ndarray]:
    """What a compiled setting fn receives: numeric axis values; for other axes (e.g. method
    names) the position in the axis, which the experiment maps back statically."""
    positions = self.positions(index)
    return {name: (self.axes[name][pos] if self.axes[name].dtype.kind in 'biuf' else pos)
            for name, pos in positions.items()}

  def key_index(self, index: np.ndarray) -> np.ndarray:
    """Flat index over `key_axes` (the `fold_in` data of each setting's key)."""
    pos = self.positions(index)
    shape = tuple(len(self.axes[a]) for a in self.key_axes)
    if not shape:
      return np.zeros_like(np.asarray(index))
    return np.ravel_multi_index(tuple(pos[a] for a in self.key_axes), shape)
