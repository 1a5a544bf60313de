"""Real-image cross-modal pairs: two bands of pixel columns of the same handwritten digit.

Data: scikit-learn's bundled ``load_digits`` (1,797 real 8 × 8 grey-level images of the
digits 0–9, UCI "Optical Recognition of Handwritten Digits"; shipped inside scikit-learn, no
download; a dependency of the package, imported only when the images are loaded). Pixel
values 0..16 are scaled to [0, 1].

Modalities (the real-image analogue of the decisive-feature overlap of docs/protocols.md §G),
with band width w (default 4) and overlap o ∈ {0, …, w}:

* student modality x_b shows pixel columns ``0 .. w-1`` of the image;
* teacher modality x_a shows pixel columns ``(w - o) .. (2w - 1 - o)``;

so the two share exactly the o columns ``w - o .. w - 1`` and together see ``2w − o``
columns; γ = o / (2w − o) is the paper's overlap ratio. With w = 4: o = 0 gives the teacher
the right half (columns 4..7) and the student the left half (no shared pixel); o = 4 gives
both the left half (identical modalities). Shared columns hold identical values in both
modalities.

Every other pixel of a modality is filled according to ``fill``:

* ``'zero'``: set to 0 (the band is all the modality contains);
* ``'noise'``: replaced, pixel by pixel, by the value of the same pixel in an image drawn
  uniformly at random from the whole data set, independently for every pixel, example and
  modality. This noise has each pixel's own marginal distribution but carries no
  information about the example's label.

Each modality is flattened row-major to 64 inputs (pixel (r, c) → input 8r + c). The overlap
enters only through ``jnp.where`` masks, so one compiled program covers every overlap.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from xdistill_jax.generators.decisive_features import PairedSample

HEIGHT = WIDTH = 8
NUM_PIXELS = HEIGHT * WIDTH
NUM_CLASSES = 10
NUM_IMAGES = 1797
FILLS = ('zero', 'noise')


__all__ = ['load', 'student_columns', 'teacher_columns', 'modality_pixels', 'split', 'sample',
           'PairedSample', 'FILLS', 'NUM_IMAGES', 'NUM_CLASSES', 'NUM_PIXELS']


@functools.lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray]:
  """The 1,797 digits: images ``[1797, 8, 8]`` float32 in [0, 1] and labels ``[1797]`` int32.

  Raises:
    ImportError: scikit-learn is missing (it provides the bundled images).
  """
  try:
    from sklearn.datasets import load_digits
  except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError('the digits experiment needs scikit-learn (its bundled load_digits '
                      'images), a dependency of xdistill_jax: pip install scikit-learn') from error
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  images.setflags(write=False)
  labels = digits.target.astype(np.int32)
  labels.setflags(write=False)
  return images, labels


def student_columns(band_width: int) -> jax.Array:
  """Boolean ``[8]`` mask of the pixel columns the student sees: ``0 .. w-1``."""
  return jnp.arange(WIDTH) < band_width


def teacher_columns(overlap, band_width: int) -> jax.Array:
  """Boolean ``[8]`` mask of the pixel columns the teacher sees: ``(w-o) .. (2w-1-o)``.

  ``overlap`` may be traced.
  """
  cols = jnp.arange(WIDTH)
  return (cols >= band_width - overlap) & (cols <= 2 * band_width - 1 - overlap)


def modality_pixels(columns: jax.Array) -> jax.Array:
  """Boolean ``[64]`` mask of the flattened pixels of the visible ``columns`` (``[8]``)."""
  return jnp.broadcast_to(columns, (HEIGHT, WIDTH)).reshape(NUM_PIXELS)


def split(key, n_train: int, n_test: int, n_total: int = NUM_IMAGES):
  """A random train/test split: disjoint index arrays ``[n_train]`` and ``[n_test]``."""
  perm = jax.random.permutation(key, n_total)
  return perm[:n_train], perm[n_train:n_train + n_test]


def _fill(key, visible, x, pool, fill: str):
  """Replaces the pixels of ``x`` ``[n, 64]`` outside ``visible`` ``[64]``."""
  if fill == 'zero':
    return jnp.where(visible, x, 0.0)
  if fill == 'noise':
    donors = jax.random.randint(key, x.shape, 0, pool.shape[0])
    noise = jnp.take_along_axis(pool, donors, axis=0)  # pixel j of a random image, per entry
    return jnp.where(visible, x, noise)
  raise ValueError(f'fill={fill!r} is invalid; allowed: one of {", ".join(map(repr, FILLS))}')


def sample(key, overlap, band_width: int, n_train: int, n_test: int, fill: str = 'zero',
           data: tuple[np.ndarray, np.ndarray] | None = None):
  """A random train/test split of the digits, seen through both modalities.

  Args:
    key: a typed PRNG key (determines the split and the noise).
    overlap: o, number of pixel columns both modalities see (may be traced).
    band_width: w, columns per modality.
    n_train: training examples.
    n_test: test examples (``n_train + n_test <= 1797``).
    fill: ``'zero'`` or ``'noise'`` (see the module docstring).
    data: optional ``(images [N, 8, 8], labels [N])``; default :func:`load`.

  Returns:
    ``(train, test)``, each a ``PairedSample`` with x_a (teacher), x_b (student) of shape
    ``[n, 64]`` and labels y ``[n]`` int32.
  """
  images, labels = load() if data is None else data
  pool = jnp.asarray(images, jnp.float32).reshape(-1, NUM_PIXELS)
  labels = jnp.asarray(labels, jnp.int32)
  k_split, k_train, k_test = jax.random.split(key, 3)
  visible_a = modality_pixels(teacher_columns(overlap, band_width))
  visible_b = modality_pixels(student_columns(band_width))

  def view(index, k):
    x = pool[index]
    ka, kb = jax.random.split(k)
    return PairedSample(_fill(ka, visible_a, x, pool, fill), _fill(kb, visible_b, x, pool, fill),
                        labels[index])

  train_index, test_index = split(k_split, n_train, n_test, pool.shape[0])
  return view(train_index, k_train), view(test_index, k_test)
