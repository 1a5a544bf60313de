"""Protocol G generator: shapes, decisive columns, labelling rule (docs/protocols.md §G)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdistill_jax.generators import decisive_features

D, S, DIM = 20, 10, 25


def _draw(overlap, n=500, seed=0):
  a, sample = decisive_features.sample(jax.random.key(seed), jnp.asarray(overlap), n, D, DIM, S)
  return np.asarray(a), sample


@pytest.mark.parametrize('overlap', [0, 2, 4, 6, 8, 10])
def test_decisive_columns_are_where_the_protocol_puts_them(overlap):
  a, sample = _draw(overlap)
  x_a, x_b, y = map(np.asarray, sample)
  assert x_a.shape == x_b.shape == (500, DIM) and y.shape == (500,)
  # Student columns 0..9 are decisive features 0..9 for every overlap.
  teacher_cols = list(range(10 - overlap, 20 - overlap))
  shared = sorted(set(range(10)) & set(teacher_cols))
  assert len(shared) == overlap
  # Columns both modalities show the decisive feature are identical in x_a and x_b.
  for j in range(DIM):
    same = np.array_equal(x_a[:, j], x_b[:, j])
    assert same == (j in shared), (overlap, j)
  # Labels follow y = 1[x_s · a > 0]. The overlap only moves masks, so the same key's draw
  # at overlap 0 (where the two modalities together show all of x_s) gives x_s.
  _, full = _draw(0)
  x_s = np.concatenate([np.asarray(full.x_b)[:, :10], np.asarray(full.x_a)[:, 10:20]], 1)
  np.testing.assert_array_equal(y, (x_s @ a > 0).astype(np.int32))
  np.testing.assert_array_equal(x_b[:, :10], x_s[:, :10])
  np.testing.assert_array_equal(x_a[:, 10 - overlap:20 - overlap], x_s[:, 10 - overlap:20 - overlap])


def test_one_compiled_program_covers_every_overlap():
  calls = []

  @jax.jit
  def masks(overlap):
    calls.append(1)
    return decisive_features.teacher_columns(overlap, DIM, D, S)

  for overlap in range(11):
    cols = np.flatnonzero(np.asarray(masks(jnp.int32(overlap))))
    np.testing.assert_array_equal(cols, np.arange(10 - overlap, 20 - overlap))
  assert len(calls) == 1


def test_noise_columns_are_standard_normal_and_independent():
  _, sample = _draw(0, n=20000)
  x_a, x_b = np.asarray(sample.x_a), np.asarray(sample.x_b)
  for x in (x_a, x_b):
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
  # With no overlap the modalities share no column.
  corr = np.corrcoef(x_a.T, x_b.T)[:DIM, DIM:]
  assert np.abs(corr).max() < 0.05
