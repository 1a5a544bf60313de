"""Loading and checking the arrays of `xdistill analyze` (logits and labels of your own models).

Inputs are paired: row i of the teacher logits, the student logits, the labels (and the
optional baseline logits and features) belong to the same example. Every problem raises
:class:`InputError` with a message that names the file (or the argument) and says what is
wrong and how to fix it; `xdistill analyze` prints it and exits with status 2.
"""

import os
import zipfile

import numpy as np

__all__ = ['InputError', 'NPZ_KEYS', 'load_array', 'load_npz', 'check_logits', 'check_labels',
           'check_features', 'check_inputs']

# Roles an --npz bundle may hold, each with the keys accepted for it.
NPZ_KEYS = {
    'teacher': ('teacher', 'teacher_logits'),
    'student': ('student', 'student_logits'),
    'labels': ('labels', 'label', 'y'),
    'baseline': ('baseline', 'baseline_logits'),
    'teacher_features': ('teacher_features',),
    'student_features': ('student_features',),
}
_PROBABILITY_ATOL = 1e-4


class InputError(ValueError):
  """An input file or array that `analyze` cannot use; the message names it."""


def load_array(path: str, key: str | None = None) -> np.ndarray:
  """Reads one array from a ``.npy`` or ``.npz`` file.

  For an ``.npz`` file the array is ``key`` if given and present, else its only array.

  Raises:
    InputError: missing or unreadable file, pickled objects, or an ambiguous ``.npz``.
  """
  if not os.path.exists(path):
    raise InputError(f'{path}: file not found')
  if os.path.isdir(path):
    raise InputError(f'{path}: is a directory, expected a .npy or .npz file')
  try:
    loaded = np.load(path, allow_pickle=False)
  except ValueError as error:
    if 'pickle' in str(error).lower():
      raise InputError(f'{path}: holds pickled Python objects; save a numeric array with '
                       'np.save(path, np.asarray(x, dtype=np.float32))') from None
    raise InputError(f'{path}: cannot be read as a .npy/.npz file ({error})') from None
  except (OSError, EOFError, zipfile.BadZipFile) as error:
    raise InputError(f'{path}: cannot be read as a .npy/.npz file ({error})') from None
  if isinstance(loaded, np.ndarray):
    return loaded
  with loaded:
    names = list(loaded.files)
    if key is not None and key in names:
      return loaded[key]
    if len(names) == 1:
      return loaded[names[0]]
    raise InputError(f'{path}: an .npz file with arrays {names}; save a single array or use '
                     f'--npz with keys {", ".join(k[0] for k in NPZ_KEYS.values())}')


def load_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads a bundle: ``({role: array}, {role: 'path[key]'})`` for the roles of `NPZ_KEYS`.

  Raises:
    InputError: unreadable file, not an .npz archive, or no recognised key.
  """
  if not os.path.exists(path):
    raise InputError(f'{path}: file not found')
  try:
    archive = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
    raise InputError(f'{path}: cannot be read as an .npz file ({error})') from None
  if isinstance(archive, np.ndarray):
    raise InputError(f'{path}: is a single .npy array; --npz expects an .npz archive with keys '
                     f'{", ".join(k[0] for k in NPZ_KEYS.values())} (np.savez)')
  arrays, sources = {}, {}
  with archive:
    for role, keys in NPZ_KEYS.items():
      for key in keys:
        if key in archive.files:
          try:
            arrays[role] = archive[key]
          except ValueError:
            raise InputError(f'{path}[{key!r}]: holds pickled Python objects; save numeric '
                             'arrays') from None
          sources[role] = f'{path}[{key!r}]'
          break
    if not arrays:
      raise InputError(f'{path}: no recognised key among {list(archive.files)}; expected '
                       f'{", ".join(k[0] for k in NPZ_KEYS.values())}')
  return arrays, sources


def _numeric(array, name):
  array = np.asarray(array)
  if array.dtype == object or array.dtype.kind not in 'biuf':
    raise InputError(f'{name}: has dtype {array.dtype}; expected a numeric array')
  return array


def _first_bad_row(bad_rows):
  return int(np.flatnonzero(bad_rows)[0])


def check_logits(array, name: str) -> np.ndarray:
  """A ``[n, K]`` float64 array of finite logits (n ≥ 1, K ≥ 2).

  Raises:
    InputError: wrong rank, non-numeric, too few classes, NaN/inf, or probabilities (every
      row in [0, 1] and summing to 1) instead of logits.
  """
  array = _numeric(array, name)
  if array.dtype.kind == 'b':
    raise InputError(f'{name}: has dtype bool; expected real-valued logits')
  if array.ndim == 1:
    raise InputError(f'{name}: is 1-D with shape {array.shape}; logits must be 2-D '
                     '[n_examples, n_classes] (one row of class scores per example)')
  if array.ndim != 2:
    raise InputError(f'{name}: has shape {array.shape}; logits must be 2-D '
                     '[n_examples, n_classes] (flatten other axes first)')
  n, k = array.shape
  if n == 0:
    raise InputError(f'{name}: has no examples (shape {array.shape})')
  if k < 2:
    raise InputError(f'{name}: has {k} class column(s) (shape {array.shape}); need at least 2')
  array = array.astype(np.float64)
  finite = np.isfinite(array)
  if not finite.all():
    bad = ~finite.all(axis=1)
    kinds = ' and '.join(w for w, m in (('NaN', np.isnan(array)), ('inf', np.isinf(array)))
                         if m.any())
    raise InputError(f'{name}: contains {kinds} in {int(bad.sum())} of {n} rows (first at row '
                     f'{_first_bad_row(bad)}); logits must be finite')
  in_unit = (array >= 0).all() and (array <= 1).all()
  if in_unit and np.allclose(array.sum(axis=1), 1.0, rtol=0, atol=_PROBABILITY_ATOL):
    raise InputError(f'{name}: these look like probabilities (every row is in [0, 1] and sums '
                     'to 1); pass logits (e.g. np.log(p))')
  return array


def check_labels(array, name: str, num_classes: int) -> np.ndarray:
  """A ``[n]`` int64 array of class indices in ``[0, num_classes)``.

  Integer-valued floats are accepted; a ``[n, 1]`` column is flattened.

  Raises:
    InputError: wrong rank (one-hot labels get a hint), non-integer values, out of range.
  """
  array = _numeric(array, name)
  if array.ndim == 2 and array.shape[1] == 1:
    array = array[:, 0]
  if array.ndim == 2:
    raise InputError(f'{name}: has shape {array.shape}; labels must be 1-D integer class '
                     'indices [n_examples] (for one-hot labels pass labels.argmax(1))')
  if array.ndim != 1:
    raise InputError(f'{name}: has shape {array.shape}; labels must be 1-D integer class '
                     'indices [n_examples]')
  if array.dtype.kind == 'f':
    finite = np.isfinite(array)
    if not finite.all():
      raise InputError(f'{name}: contains NaN or inf (first at row '
                       f'{_first_bad_row(~finite)}); labels must be integer class indices')
    fractional = array != np.round(array)
    if fractional.any():
      i = _first_bad_row(fractional)
      raise InputError(f'{name}: labels must be integer class indices; found non-integer value '
                       f'{float(array[i]):g} at row {i}')
  array = array.astype(np.int64)
  out = (array < 0) | (array >= num_classes)
  if out.any():
    i = _first_bad_row(out)
    raise InputError(f'{name}: labels out of range: found {int(array[i])} at row {i} '
                     f'({int(out.sum())} such rows), but the logits have {num_classes} classes '
                     f'(valid labels 0..{num_classes - 1})')
  return array


def check_features(array, name: str) -> np.ndarray:
  """A ``[n, d]`` float64 array of finite features (``[n, ...]`` is flattened)."""
  array = _numeric(array, name)
  if array.ndim < 2:
    raise InputError(f'{name}: has shape {array.shape}; features must be [n_examples, dim]')
  array = array.reshape(len(array), -1).astype(np.float64)
  if not np.isfinite(array).all():
    raise InputError(f'{name}: contains NaN or inf; features must be finite')
  return array


def check_inputs(teacher, student, labels, baseline=None, teacher_features=None,
                 student_features=None, sources=None) -> dict:
  """Checks every array and that they pair up row by row; returns them cleaned.

  Args:
    teacher, student, labels, baseline, teacher_features, student_features: the arrays
      (the last three optional).
    sources: optional {role: name used in messages}, e.g. file names.

  Returns:
    dict with the same roles (absent optional ones are None).
  """
  names = {'teacher': 'teacher_logits', 'student': 'student_logits', 'labels': 'labels',
           'baseline': 'baseline_logits', 'teacher_features': 'teacher_features',
           'student_features': 'student_features'} | dict(sources or {})
  out = {'teacher': check_logits(teacher, names['teacher']),
         'student': check_logits(student, names['student'])}
  n, k = out['teacher'].shape
  if baseline is not None:
    out['baseline'] = check_logits(baseline, names['baseline'])
  for role in ('student', 'baseline'):
    if role in out and out[role].shape != (n, k):
      raise InputError(f'{names[role]}: shape mismatch: has shape {out[role].shape} but '
                       f'{names["teacher"]} has shape {(n, k)}; the rows must be the same '
                       'examples and the columns the same classes')
  out['labels'] = check_labels(labels, names['labels'], k)
  if len(out['labels']) != n:
    raise InputError(f'{names["labels"]}: shape mismatch: has {len(out["labels"])} labels but '
                     f'{names["teacher"]} has {n} rows')
  for role, value in (('teacher_features', teacher_features),
                      ('student_features', student_features)):
    if value is not None:
      out[role] = check_features(value, names[role])
      if len(out[role]) != n:
        raise InputError(f'{names[role]}: shape mismatch: has {len(out[role])} rows but '
                         f'{names["teacher"]} has {n}')
  for role in ('baseline', 'teacher_features', 'student_features'):
    out.setdefault(role, None)
  return out
