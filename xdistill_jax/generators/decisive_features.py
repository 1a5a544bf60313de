"""Protocol G of the NTDH paper (`ntdh.md`): decisive-feature overlap, binary labels.

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
  """Paired observations of both modalities and their labels."""

  x_a: jax.Array  # [n, dim] teacher modality
  x_b: jax.Array  # [n, dim] student modality
  y: jax.Array  # [n] int32 labels


def student_columns(dim: int, student_decisive: int) -> jax.Array:
  """Boolean [dim] mask of the student's decisive columns: 0..s-1."""
  return jnp.arange(dim) < student_decisive


def teacher_columns(overlap, dim: int, num_decisive: int, student_decisive: int) -> jax.Array:
  """Boolean [dim] mask of the teacher's decisive columns: (s - o)..(D - 1 - o)."""
  cols = jnp.arange(dim)
  return (cols >= student_decisive - overlap) & (cols <= num_decisive - 1 - overlap)


def sample(key, hyperplane, overlap, n: int, dim: int, student_decisive: int) -> PairedSample:
  """Draws n paired examples of protocol G.

  Args:
    key: a typed PRNG key.
    hyperplane: [D] labelling vector a.
    overlap: number of decisive features both modalities see (may be traced).
    n: number of examples.
    dim: columns per modality (>= D).
    student_decisive: s, the number of decisive features the student sees.

  Returns:
    A `PairedSample` with x_a, x_b of shape [n, dim] and labels y of shape [n].
  """
  num_decisive = hyperplane.shape[-1]
  k_s, k_a, k_b = jax.random.split(key, 3)
  x_s = jax.random.normal(k_s, (n, num_decisive))
  y = (x_s @ hyperplane > 0).astype(jnp.int32)
  decisive = jnp.pad(x_s, ((0, 0), (0, dim - num_decisive)))
  noise_a = jax.random.normal(k_a, (n, dim))
  noise_b = jax.random.normal(k_b, (n, dim))
  x_a = jnp.where(teacher_columns(overlap, dim, num_decisive, student_decisive), decisive, noise_a)
  x_b = jnp.where(student_columns(dim, student_decisive), decisive, noise_b)
  return PairedSample(x_a, x_b, y)


def observed_decisive(columns: jax.Array, num_decisive: int) -> jax.Array:
  """The decisive coordinates a modality observes, as a [D] mask (for the Bayes floor)."""
  return columns[:num_decisive]
