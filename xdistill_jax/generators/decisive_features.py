"""Protocol G of the NTDH paper (docs/protocols.md §G): decisive-feature overlap, binary labels.

A hyperplane a ~ N(0, I_D) labels decisive features x_s ~ N(0, I_D) by y = 1[x_s · a > 0].
The student modality x_b shows decisive features 0..s-1 and noise elsewhere; the teacher
modality x_a shows features (s - o)..(D - 1 - o), so the two share exactly o of them. With
the paper's numbers (D = 20, s = 10, 25 columns) this is the Modality Focusing Hypothesis
set-up behind the NTDH paper's Figures 3 and 4.

The overlap o enters only through `jnp.where` masks, so one compiled program covers every
overlap.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PairedSample(NamedTuple):
  """Paired observations of both modalities and their labels (every generator's sample)."""

  def rows(self, start: int, stop: int) -> 'PairedSample':
    """Examples start..stop-1 (e.g. a train/test split of one draw)."""
    return PairedSample(*(v[start:stop] for v in self))

  x_a: jax.Array  # [n, dim_a] teacher modality
  x_b: jax.Array  # [n, dim_b] student modality
  y: jax.Array  # [n] int32 labels


def student_columns(dim: int, student_decisive: int) -> jax.Array:
  """Boolean [dim] mask of the student's decisive columns: 0..s-1."""
  return jnp.arange(dim) < student_decisive


def teacher_columns(overlap, dim: int, num_decisive: int, student_decisive: int) -> jax.Array:
  """Boolean [dim] mask of the teacher's decisive columns: (s - o)..(D - 1 - o)."""
  cols = jnp.arange(dim)
  return (cols >= student_decisive - overlap) & (cols <= num_decisive - 1 - overlap)


def sample(key, overlap, n: int, num_decisive: int, dim: int,
           student_decisive: int) -> tuple[jax.Array, PairedSample]:
  """Draws the hyperplane a ~ N(0, I_D) and n paired examples of protocol G.

  Args:
    key: a typed PRNG key.
    overlap: number of decisive features both modalities see (may be traced).
    n: number of examples (split them into train and test rows: they are independent).
    num_decisive: D, the number of decisive features.
    dim: columns per modality (>= D).
    student_decisive: s, the number of decisive features the student sees.

  Returns:
    The hyperplane a [D] and a `PairedSample` with x_a, x_b [n, dim] and labels y [n].
  """
  # One flat draw split into a, x_s, noise_a, noise_b: every PRNG call site adds a threefry
  # instance to the compiled program, so fewer sites compile faster.
  z = jax.random.normal(key, (num_decisive + n * (num_decisive + 2 * dim),))
  hyperplane, z = z[:num_decisive], z[num_decisive:].reshape(n, -1)
  x_s, noise_a, noise_b = jnp.split(z, [num_decisive, num_decisive + dim], axis=1)
  y = (x_s @ hyperplane > 0).astype(jnp.int32)
  decisive = jnp.pad(x_s, ((0, 0), (0, dim - num_decisive)))
  x_a = jnp.where(teacher_columns(overlap, dim, num_decisive, student_decisive), decisive, noise_a)
  x_b = jnp.where(student_columns(dim, student_decisive), decisive, noise_b)
  return hyperplane, PairedSample(x_a, x_b, y)
