"""Loaders behind the real-image and user-data experiments (docs/protocols.md §R).

* The MNIST-M recipe (the domain-adaptation literature's MNIST → MNIST-M) as a pure,
  jit-able function with a continuous gap α (`digits_m`): binarise the grey digit to
  d ∈ {0, 1} per RGB channel, take a random crop c of a colour photograph and output
  |c − d|; α mixes the plain digit (α = 0, in colour: the grey value on all three channels)
  with the full MNIST-M image (α = 1):

      x(α) = (1 − α) · [g, g, g] + α · |c − d|,   d = 1[g > threshold].

  The crops depend on the key alone (`random_crops`), never on α: every α sees the same
  photographs at the same places (common random numbers). It runs on real MNIST arrays
  ([n, 28, 28] in [0, 1]) and any folder of photographs (`load_backgrounds`) as well as on
  the bundled data (`bundled_digits`, `bundled_backgrounds`: scikit-learn's 1,797 8 × 8
  digits and its two sample photographs; nothing is downloaded).
* The paired-data reader (`load_paired`): an `.npz` file with `x_a [n, d_a]`, `x_b [n, d_b]`,
  `y [n]` and optionally `split [n]` (0 train, 1 test), checked before anything compiles;
  every problem is a `ConfigError` naming the file, the key and the problem.
"""

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xdistill_jax.config_schema import ConfigError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
PAIRED_KEYS = ('x_a', 'x_b', 'y')
OPTIONAL_KEYS = ('split',)


# --------------------------------------------------------------------------------------------
# The MNIST-M recipe with a continuous gap.
# --------------------------------------------------------------------------------------------
def random_crops(backgrounds, key, n: int, height: int, width: int):
  """n crops [n, height, width, 3]: per example a photograph and a top-left corner, uniform.

  backgrounds: [m, H, W, 3] photographs (H >= height, W >= width).
  """
  m, rows, cols = backgrounds.shape[:3]
  k_photo, k_row, k_col = jax.random.split(key, 3)
  photo = jax.random.randint(k_photo, (n,), 0, m)
  top = jax.random.randint(k_row, (n,), 0, rows - height + 1)
  left = jax.random.randint(k_col, (n,), 0, cols - width + 1)
  backgrounds = jnp.asarray(backgrounds)
  crop = lambda i, r, c: jax.lax.dynamic_slice(backgrounds, (i, r, c, 0),
                                               (1, height, width, 3))[0]
  return jax.vmap(crop)(photo, top, left)


def blend(digits, crops, alpha, threshold=0.5):
  """x(α) = (1 − α) [g, g, g] + α |c − 1[g > threshold]|: [n, h, w, 3] (module docstring).

  digits: [n, h, w] grey values in [0, 1]; crops: [n, h, w, 3] in [0, 1]; alpha: scalar in
  [0, 1] (may be traced).
  """
  grey = jnp.repeat(digits[..., None], 3, axis=-1)
  binary = (grey > threshold).astype(crops.dtype)
  return (1.0 - alpha) * grey + alpha * jnp.abs(crops - binary)


def digits_m(digits, backgrounds, key, alpha, threshold=0.5):
  """The MNIST-M image of every digit at gap α: `blend(digits, random_crops(...), alpha)`.

  Args:
    digits: [n, h, w] grey digits in [0, 1] (MNIST: divide by 255; `load_digits`: by 16).
    backgrounds: [m, H, W, 3] colour photographs in [0, 1] (`load_backgrounds`).
    key: typed PRNG key; it alone fixes the crops (the same for every α).
    alpha: the gap in [0, 1]: 0 = the digit in colour, 1 = MNIST-M.
    threshold: binarisation level of the digit.

  Returns:
    [n, h, w, 3] images in [0, 1].
  """
  n, height, width = digits.shape
  crops = random_crops(backgrounds, key, n, height, width).astype(digits.dtype)
  return blend(digits, crops, alpha, threshold)


# --------------------------------------------------------------------------------------------
# Image sources.
# --------------------------------------------------------------------------------------------
def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 1,797 grey 8 × 8 digits in [0, 1] (float32 [n, 8, 8]) and labels [n]."""
  from sklearn import datasets as sk_datasets
  data = sk_datasets.load_digits()
  return (np.asarray(data.images, np.float32) / 16.0, np.asarray(data.target, np.int32))


def bundled_backgrounds() -> np.ndarray:
  """scikit-learn's two colour sample photographs (china, flower): [2, 427, 640, 3] in [0, 1]."""
  from sklearn import datasets as sk_datasets
  return _common_shape([np.asarray(i, np.float32) / 255.0
                        for i in sk_datasets.load_sample_images().images])


def _as_rgb(image: np.ndarray, path) -> np.ndarray:
  """float32 [H, W, 3] in [0, 1] from a grey, RGB or RGBA image (integer or float)."""
  image = np.asarray(image)
  scale = 255.0 if image.dtype.kind in 'ui' else 1.0
  image = image.astype(np.float32) / scale
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ConfigError(f'{path}: an image of shape {image.shape} is not grey, RGB or RGBA.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, -1)
  return image[..., :3]


def _common_shape(images: list[np.ndarray]) -> np.ndarray:
  """The images centre-cropped to their smallest common height and width, stacked."""
  rows = min(i.shape[0] for i in images)
  cols = min(i.shape[1] for i in images)
  crop = lambda i: i[(i.shape[0] - rows) // 2:][:rows, (i.shape[1] - cols) // 2:][:, :cols]
  return np.stack([crop(i) for i in images])


def load_backgrounds(folder, min_size: int = 1) -> np.ndarray:
  """Every photograph in `folder` (PNG natively; JPEG etc. through Pillow) as [m, H, W, 3].

  Images are converted to RGB in [0, 1] and centre-cropped to the smallest common H × W.
  A missing or empty folder, an unreadable image or one smaller than `min_size` pixels on a
  side is a `ConfigError` naming the path.
  """
  import matplotlib.image
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise ConfigError(f'{folder}: not a folder of background photographs.')
  paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not paths:
    raise ConfigError(f'{folder}: no images ({", ".join(IMAGE_SUFFIXES)}) in this folder.')
  images = []
  for path in paths:
    try:
      image = matplotlib.image.imread(path)
    except Exception as error:  # any unreadable file is the user's to fix
      raise ConfigError(f'{path}: cannot read the image ({type(error).__name__}: {error}).'
                        ) from None
    image = _as_rgb(image, path)
    if min(image.shape[:2]) < min_size:
      raise ConfigError(f'{path}: {image.shape[0]} × {image.shape[1]} pixels; the crops need '
                        f'at least {min_size} on each side.')
    images.append(image)
  return _common_shape(images)


# --------------------------------------------------------------------------------------------
# Users' paired arrays.
# --------------------------------------------------------------------------------------------
class PairedArrays(NamedTuple):
  """A checked paired-data file: features of both modalities, labels, optional split."""

  x_a: np.ndarray  # [n, d_a] float32, teacher modality
  x_b: np.ndarray  # [n, d_b] float32, student modality
  y: np.ndarray  # [n] int32 in [0, num_classes)
  split: np.ndarray | None  # [n] int32, 0 train / 1 test; None = the experiment splits
  num_classes: int


def _bad(path, key, problem):
  return ConfigError(f'{path}: key {key!r} {problem}.')


def _integral(values: np.ndarray) -> bool:
  if values.dtype.kind in 'iu':
    return True
  return (values.dtype.kind == 'f' and bool(np.all(np.isfinite(values)))
          and bool(np.all(values == np.round(values))))


def load_paired(path, num_classes: int = 0) -> PairedArrays:
  """Reads and checks a paired-data `.npz` (module docstring).

  Args:
    path: the file.
    num_classes: K; 0 = one more than the largest label (at least 2 classes then).

  Raises:
    ConfigError naming the file, the key and the problem: a file that is not a numeric
    `.npz`, a missing or unknown key, features that are not finite numeric [n, d] arrays,
    mismatched lengths, labels that are not integers in [0, K), a split that is not 0/1 or
    leaves one side empty.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f'{path}: no such file (a .npz with keys x_a, x_b, y[, split]).')
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ConfigError(f'{path}: not a .npz file (one array; save with np.savez(path, x_a=..., '
                        'x_b=..., y=...)).')
    with loaded:
      arrays = {k: np.asarray(loaded[k]) for k in loaded.files}
  except ConfigError:
    raise
  except Exception as error:  # a user file: any failure to read it is the user's to fix
    raise ConfigError(f'{path}: not a numeric .npz file ({type(error).__name__}: '
                      f'{error}).') from None
  for key in PAIRED_KEYS:
    if key not in arrays:
      raise _bad(path, key, f'is missing (the file has {sorted(arrays) or "no keys"}; '
                 f'required: {", ".join(PAIRED_KEYS)}; optional: split)')
  unknown = sorted(set(arrays) - set(PAIRED_KEYS + OPTIONAL_KEYS))
  if unknown:
    raise _bad(path, unknown[0], 'is not a paired-data key (allowed: x_a, x_b, y, split)')
  for key, array in arrays.items():
    if array.dtype.kind not in 'biuf':
      raise _bad(path, key, f'has dtype {array.dtype}, not numeric')
  n = None
  for key in ('x_a', 'x_b'):
    x = arrays[key]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
      raise _bad(path, key, f'has shape {x.shape}; allowed: [n, d] with n, d >= 1')
    bad = ~np.isfinite(x.astype(np.float64))
    if bad.any():
      row = int(np.argwhere(bad)[0][0])
      raise _bad(path, key, f'has {int(bad.sum())} NaN or infinite value(s) (first in row '
                 f'{row})')
    n = x.shape[0] if n is None else n
  for key in ('x_b', 'y', 'split'):
    if key in arrays and (arrays[key].ndim < 1 or arrays[key].shape[0] != n):
      raise _bad(path, key, f'has {arrays[key].shape[0] if arrays[key].ndim else 0} rows; '
                 f'x_a has {n} (every key needs the same number of rows)')
  y = arrays['y']
  if y.ndim != 1:
    raise _bad(path, 'y', f'has shape {y.shape}; allowed: [n] integer labels')
  if not _integral(y) or y.min() < 0:
    raise _bad(path, 'y', 'must hold integers in [0, K) (class indices)')
  k = int(y.max()) + 1 if not num_classes else num_classes
  if y.max() >= k:
    raise _bad(path, 'y', f'must hold integers in [0, {k}); it has {int(y.max())}')
  if k < 2:
    raise _bad(path, 'y', 'has a single class; at least 2 are needed')
  split = arrays.get('split')
  if split is not None:
    if split.ndim != 1 or not _integral(split) or not np.isin(split, (0, 1)).all():
      raise _bad(path, 'split', 'must hold 0 (train) or 1 (test) per row')
    for side, name in ((0, 'train'), (1, 'test')):
      if not np.any(split == side):
        raise _bad(path, 'split', f'leaves the {name} side empty (no row is {side})')
    split = split.astype(np.int32)
  return PairedArrays(arrays['x_a'].astype(np.float32), arrays['x_b'].astype(np.float32),
                      y.astype(np.int32), split, k)
