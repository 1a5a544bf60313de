"""datasets: the MNIST-M rule with a gap α, image loaders, and the paired-data reader."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax import datasets
from xdistill_jax.config_schema import ConfigError


def _hand_built(dtype=np.float32):
  """Two 2 × 3 digits and two 4 × 5 photographs with distinct pixel values."""
  digits = np.array([[[0.0, 0.2, 0.9], [0.6, 1.0, 0.4]],
                     [[1.0, 0.0, 0.51], [0.49, 0.7, 0.1]]], dtype)
  backgrounds = (np.arange(2 * 4 * 5 * 3, dtype=np.float64).reshape(2, 4, 5, 3) / 119.0
                 ).astype(dtype)
  return digits, backgrounds


def _locate(crop, backgrounds):
  """(photo, top, left) of the unique window of `backgrounds` equal to `crop` (NumPy)."""
  h, w = crop.shape[:2]
  hits = [(m, r, c) for m in range(backgrounds.shape[0])
          for r in range(backgrounds.shape[1] - h + 1)
          for c in range(backgrounds.shape[2] - w + 1)
          if np.array_equal(backgrounds[m, r:r + h, c:c + w], crop)]
  assert len(hits) == 1
  return hits[0]


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_rule_on_hand_built_images(dtype):
  digits, backgrounds = _hand_built(dtype)
  key = jax.random.key(3)
  with jax.enable_x64(dtype == np.float64):
    full = np.asarray(datasets.digits_m(jnp.asarray(digits), jnp.asarray(backgrounds), key, 1.0))
    none = np.asarray(datasets.digits_m(jnp.asarray(digits), jnp.asarray(backgrounds), key, 0.0))
    crops = np.asarray(datasets.random_crops(jnp.asarray(backgrounds), key, 2, 2, 3))
  assert full.dtype == dtype and full.shape == (2, 2, 3, 3)
  for i in range(2):
    m, r, c = _locate(crops[i], backgrounds)
    binary = (digits[i] > 0.5).astype(np.float64)[..., None]  # d ∈ {0, 1} on every channel
    expected = np.abs(backgrounds[m, r:r + 2, c:c + 3].astype(np.float64) - binary)
    np.testing.assert_allclose(full[i], expected, rtol=0, atol=1e-6)
  # α = 0: the digit itself on all three channels, exactly.
  np.testing.assert_array_equal(none, np.repeat(digits[..., None], 3, -1))


def test_alpha_mixes_linearly_and_crops_do_not_depend_on_alpha():
  digits, backgrounds = _hand_built()
  key = jax.random.key(0)
  make = jax.jit(datasets.digits_m)
  zero, one = make(digits, backgrounds, key, 0.0), make(digits, backgrounds, key, 1.0)
  for alpha in (0.25, 0.7):
    np.testing.assert_allclose(make(digits, backgrounds, key, alpha),
                               (1 - alpha) * np.asarray(zero) + alpha * np.asarray(one),
                               atol=1e-6)


def test_common_random_numbers_under_vmap_and_jit():
  """One key: the same crops at every α (x(α) − (1 − α) x(0) is α · one image)."""
  digits, _ = datasets.bundled_digits()
  backgrounds = datasets.bundled_backgrounds()
  digits = jnp.asarray(digits[:50])
  key = jax.random.key(7)
  alphas = jnp.asarray([0.0, 0.3, 0.6, 1.0])
  batch = jax.jit(jax.vmap(datasets.digits_m, (None, None, None, 0)))(digits, backgrounds, key,
                                                                       alphas)
  assert batch.shape == (4, 50, 8, 8, 3)
  grey = np.repeat(np.asarray(digits)[..., None], 3, -1)
  recovered = [(np.asarray(batch[i]) - (1 - a) * grey) / a for i, a in enumerate(alphas) if a]
  for image in recovered[1:]:
    np.testing.assert_allclose(image, recovered[0], atol=2e-5)
  # Unbatched calls agree with the vmapped one, and another key moves the crops.
  np.testing.assert_allclose(datasets.digits_m(digits, backgrounds, key, 0.6), batch[2],
                             atol=1e-6)
  other = datasets.digits_m(digits, backgrounds, jax.random.key(8), 1.0)
  assert not np.allclose(other, batch[3])
  assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0


def test_bundled_data():
  digits, labels = datasets.bundled_digits()
  assert digits.shape == (1797, 8, 8) and labels.shape == (1797,)
  assert digits.min() == 0.0 and digits.max() == 1.0 and set(labels) == set(range(10))
  backgrounds = datasets.bundled_backgrounds()
  assert backgrounds.shape == (2, 427, 640, 3) and backgrounds.dtype == np.float32
  assert 0.0 <= backgrounds.min() and backgrounds.max() <= 1.0


def test_load_backgrounds_from_generated_pngs(tmp_path):
  import matplotlib.image
  rng = np.random.default_rng(0)
  rgb = rng.uniform(size=(12, 10, 3))
  grey = rng.uniform(size=(9, 14))
  matplotlib.image.imsave(tmp_path / 'a.png', rgb)
  matplotlib.image.imsave(tmp_path / 'b.png', grey, cmap='gray')
  (tmp_path / 'notes.txt').write_text('not an image')
  stacked = datasets.load_backgrounds(tmp_path)
  assert stacked.shape == (2, 9, 10, 3)  # centre crops to the common 9 × 10
  # PNG stores 8 bits: the first photograph comes back to within one level, centre-cropped.
  np.testing.assert_allclose(stacked[0], rgb[1:10], atol=1 / 255 + 1e-6)
  # A grey image is repeated on the three channels.
  np.testing.assert_array_equal(stacked[1][..., 0], stacked[1][..., 2])
  images = datasets.digits_m(jnp.zeros((3, 4, 4)), stacked, jax.random.key(1), 1.0)
  assert images.shape == (3, 4, 4, 3)


def test_load_backgrounds_errors(tmp_path):
  with pytest.raises(ConfigError, match='not a folder'):
    datasets.load_backgrounds(tmp_path / 'missing')
  with pytest.raises(ConfigError, match='no images'):
    datasets.load_backgrounds(tmp_path)
  (tmp_path / 'broken.png').write_bytes(b'not a png')
  with pytest.raises(ConfigError, match='broken.png: cannot read'):
    datasets.load_backgrounds(tmp_path)


# --------------------------------------------------------------------------------------------
# The paired-data reader.
# --------------------------------------------------------------------------------------------
def _good(n=12, **overrides):
  rng = np.random.default_rng(0)
  arrays = {'x_a': rng.normal(size=(n, 3)), 'x_b': rng.normal(size=(n, 2)),
            'y': np.arange(n) % 3}
  arrays.update(overrides)
  return {k: v for k, v in arrays.items() if v is not None}


def test_load_paired_reads_a_good_file(tmp_path):
  path = tmp_path / 'pairs.npz'
  arrays = _good(split=np.arange(12) % 2, y=(np.arange(12) % 3).astype(np.float64))
  np.savez(path, **arrays)
  data = datasets.load_paired(path)
  np.testing.assert_allclose(data.x_a, arrays['x_a'].astype(np.float32))
  np.testing.assert_array_equal(data.y, np.arange(12) % 3)
  assert data.y.dtype == np.int32 and data.num_classes == 3
  np.testing.assert_array_equal(data.split, np.arange(12) % 2)
  assert datasets.load_paired(path, num_classes=5).num_classes == 5
  np.savez(path, **_good())
  assert datasets.load_paired(path).split is None


BAD_FILES = {
    'missing key': (dict(x_b=None), "'x_b' is missing"),
    'unknown key': (dict(labels=np.zeros(12)), "'labels' is not a paired-data key"),
    'rows': (dict(x_b=np.zeros((11, 2))), "'x_b' has 11 rows; x_a has 12"),
    'label rows': (dict(y=np.zeros(5, int)), "'y' has 5 rows"),
    'nan': (dict(x_a=np.where(np.eye(12, 3) > 0, np.nan, 1.0)), "'x_a' has 3 NaN or inf"),
    'inf': (dict(x_b=np.full((12, 2), np.inf)), "'x_b' has 24 NaN or infinite"),
    'fractional labels': (dict(y=np.linspace(0, 2, 12)), "'y' must hold integers"),
    'negative labels': (dict(y=np.arange(12) - 1), "'y' must hold integers"),
    'one class': (dict(y=np.zeros(12, int)), 'single class'),
    'split values': (dict(split=np.arange(12) % 3), "'split' must hold 0"),
    'empty test': (dict(split=np.zeros(12, int)), 'test side empty'),
    'empty train': (dict(split=np.ones(12, int)), 'train side empty'),
    'features 1-d': (dict(x_a=np.zeros(12)), "'x_a' has shape"),
    'strings': (dict(x_b=np.array(['a'] * 12)), "'x_b' has dtype"),
}


@pytest.mark.parametrize('case', sorted(BAD_FILES))
def test_load_paired_rejects_bad_files(tmp_path, case):
  overrides, message = BAD_FILES[case]
  path = tmp_path / 'bad.npz'
  np.savez(path, **_good(**overrides))
  with pytest.raises(ConfigError) as error:
    datasets.load_paired(path)
  assert str(error.value).startswith(f'{path}: key ') and message in str(error.value)


def test_load_paired_labels_beyond_num_classes(tmp_path):
  path = tmp_path / 'pairs.npz'
  np.savez(path, **_good())
  with pytest.raises(ConfigError, match=r"'y' must hold integers in \[0, 2\); it has 2"):
    datasets.load_paired(path, num_classes=2)


def test_load_paired_rejects_files_that_are_not_numeric_npz(tmp_path):
  text, npy, objects = tmp_path / 'a.npz', tmp_path / 'b.npz', tmp_path / 'c.npz'
  text.write_text('x_a,x_b,y\n1,2,0\n')
  np.save(tmp_path / 'b.npy', np.zeros(3))
  (tmp_path / 'b.npy').rename(npy)
  np.savez(objects, x_a=np.array([{}] * 3, dtype=object), x_b=np.zeros((3, 1)), y=np.zeros(3))
  for path, message in ((text, 'not a numeric .npz'), (npy, 'not a .npz'),
                        (objects, 'not a numeric .npz'), (tmp_path / 'none.npz', 'no such')):
    with pytest.raises(ConfigError, match=message) as error:
      datasets.load_paired(path)
    assert str(error.value).startswith(str(path))


def test_mnist_sized_digits_on_a_folder_of_photos(tmp_path):
  """The recipe at MNIST's 28 × 28 on user photographs: the MNIST-M rule pixel by pixel."""
  import matplotlib.image
  rng = np.random.default_rng(2)
  for i in range(3):
    matplotlib.image.imsave(tmp_path / f'photo{i}.png', rng.uniform(size=(40 + i, 50, 3)))
  photos = datasets.load_backgrounds(tmp_path, min_size=28)
  digits = rng.uniform(size=(4, 28, 28)).astype(np.float32)
  key = jax.random.key(9)
  images = np.asarray(datasets.digits_m(digits, photos, key, 1.0))
  crops = np.asarray(datasets.random_crops(photos, key, 4, 28, 28))
  for i in range(4):
    _locate(crops[i], photos)  # a window of one photograph
  np.testing.assert_allclose(images, np.abs(crops - (digits > 0.5)[..., None]), atol=1e-6)
  with pytest.raises(ConfigError, match='at least 64 on each side'):
    datasets.load_backgrounds(tmp_path, min_size=64)
