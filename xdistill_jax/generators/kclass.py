"""Protocol S of the NTDH paper (docs/protocols.md §S): K-class decisive-feature overlap.

A `make_classification`-style generator written in JAX (scikit-learn's
`make_classification(n_informative=d, n_redundant=0, n_clusters_per_class=1)`, which the
authors' code calls): one Gaussian cluster per class, centred on a vertex of the hypercube
[-class_sep, class_sep]^d, with the cluster's own random linear mixing A_k (entries
U(-1, 1)), so x = z A_k + c_k with z ~ N(0, I_d); a fraction `flip_y` of the labels is
redrawn uniformly at random; the rows are shuffled and every feature standardised (zero
mean, unit variance over all examples, as `StandardScaler` before the 60/40 split).

Two modalities then observe disjoint or overlapping blocks of these features (every other
column is independent N(0, 1) noise): the student modality x_b shows features 0..s-1, the
teacher modality x_a features (s - o)..(s + t - 1 - o), so exactly o of them are shared.
With the paper's numbers (d = 50, s = t = 20, o in {20, 15, 10, 5, 0}) this is protocol S.
The column layout is that of protocol G (`decisive_features`) with D = s + t decisive
features, so the same mask functions serve both; the overlap enters only through
`jnp.where` masks and one compiled program covers every overlap.

Differences from scikit-learn (distributional equivalence, not bit equality): hypercube
vertices are drawn as independent random signs (distinct with probability
1 - K²·2^-d, i.e. 1 - 1e-14 for the defaults) instead of without replacement, class blocks
are sized by `(i·K) // n` (balanced to ±1 before label flips), and the feature columns are
not permuted (all d columns are informative, and A_k is exchangeable in its columns).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from xdistill_jax import bounds
from xdistill_jax import models
from xdistill_jax.generators import decisive_features
from xdistill_jax.generators.decisive_features import PairedSample


class Clusters(NamedTuple):
  """The mixture's parameters: class k is N(centroids[k], mixing[k]ᵀ mixing[k])."""

  centroids: jax.Array  # [K, d]
  mixing: jax.Array  # [K, d, d] A_k; a cluster's examples are z A_k + c_k


class Classification(NamedTuple):
  """A drawn K-class data set and the mixture it came from."""

  x: jax.Array  # [n, d] standardised features
  y: jax.Array  # [n] int32 labels (after flips)
  clusters: Clusters


def draw_clusters(key, num_classes: int, num_informative: int, class_sep=1.0) -> Clusters:
  """Centroids on random hypercube vertices (±class_sep) and per-class mixings U(-1, 1)."""
  k_vertex, k_mixing = jax.random.split(key)
  signs = jax.random.bernoulli(k_vertex, 0.5, (num_classes, num_informative))
  centroids = class_sep * (2.0 * signs - 1.0)
  mixing = jax.random.uniform(k_mixing, (num_classes, num_informative, num_informative),
                              minval=-1.0, maxval=1.0)
  return Clusters(centroids, mixing)


def _cluster_draw(key, clusters: Clusters, labels):
  """x = z A_y + c_y for each label, z ~ N(0, I_d); computed for all K and selected."""
  num_informative = clusters.centroids.shape[-1]
  z = jax.random.normal(key, (labels.shape[0], num_informative))
  per_class = jnp.einsum('nd,kde->kne', z, clusters.mixing) + clusters.centroids[:, None]
  return jnp.take_along_axis(per_class, labels[None, :, None], 0)[0]


def _flip(key, labels, num_classes: int, flip_y):
  k_flip, k_new = jax.random.split(key)
  flipped = jax.random.uniform(k_flip, labels.shape) < flip_y
  return jnp.where(flipped, jax.random.randint(k_new, labels.shape, 0, num_classes), labels)


def make_classification(key, num_examples: int, num_classes: int, num_informative: int,
                        class_sep=1.0, flip_y=0.01) -> Classification:
  """Draws the standardised K-class data set of protocol S (see the module docstring).

  Args:
    key: a typed PRNG key.
    num_examples: n (static).
    num_classes: K (static).
    num_informative: d, the number of (all informative) features (static).
    class_sep: half the hypercube's side (scikit-learn's `class_sep`).
    flip_y: fraction of labels redrawn uniformly from the K classes.

  Returns:
    `Classification` with x [n, d] (every column mean 0, variance 1), y [n] and the mixture.
  """
  k_clusters, k_z, k_flip, k_perm = jax.random.split(key, 4)
  clusters = draw_clusters(k_clusters, num_classes, num_informative, class_sep)
  blocks = (jnp.arange(num_examples) * num_classes // num_examples).astype(jnp.int32)
  x = _cluster_draw(k_z, clusters, blocks)
  y = _flip(k_flip, blocks, num_classes, flip_y)
  perm = jax.random.permutation(k_perm, num_examples)
  x, y = x[perm], y[perm]
  x = (x - jnp.mean(x, 0)) / jnp.std(x, 0)
  return Classification(x, y, clusters)


def student_columns(dim: int, student_decisive: int) -> jax.Array:
  """Boolean [dim] mask of the student's feature columns: 0..s-1."""
  return decisive_features.student_columns(dim, student_decisive)


def teacher_columns(overlap, dim: int, student_decisive: int, teacher_decisive: int):
  """Boolean [dim] mask of the teacher's feature columns: (s - o)..(s + t - 1 - o)."""
  return decisive_features.teacher_columns(overlap, dim, student_decisive + teacher_decisive,
                                           student_decisive)


def shared_columns(overlap, dim: int, student_decisive: int, teacher_decisive: int):
  """Boolean [dim] mask of the o columns both modalities observe: (s - o)..(s - 1)."""
  return (student_columns(dim, student_decisive)
          & teacher_columns(overlap, dim, student_decisive, teacher_decisive))


def paired(key, features, overlap, dim: int, student_decisive: int,
           teacher_decisive: int) -> tuple[jax.Array, jax.Array]:
  """Modalities (x_a, x_b) [n, dim] of `features` [n, d]: feature blocks plus N(0, 1) noise."""
  n, d = features.shape
  features = jnp.pad(features, ((0, 0), (0, max(dim - d, 0))))[:, :dim]
  k_a, k_b = jax.random.split(key)
  x_a = jnp.where(teacher_columns(overlap, dim, student_decisive, teacher_decisive), features,
                  jax.random.normal(k_a, (n, dim)))
  x_b = jnp.where(student_columns(dim, student_decisive), features,
                  jax.random.normal(k_b, (n, dim)))
  return x_a, x_b


def sample(key, overlap, num_examples: int, num_classes: int, num_informative: int, dim: int,
           student_decisive: int, teacher_decisive: int, train_fraction=0.6, class_sep=1.0,
           flip_y=0.01) -> tuple[PairedSample, PairedSample, Clusters]:
  """Draws protocol S: (train, test, clusters), split `train_fraction` / rest.

  The split is of the shuffled rows (the first round(train_fraction·n) rows train); the
  noise columns are drawn independently for every example of both modalities.
  """
  k_data, k_noise = jax.random.split(key)
  data = make_classification(k_data, num_examples, num_classes, num_informative, class_sep,
                             flip_y)
  x_a, x_b = paired(k_noise, data.x, overlap, dim, student_decisive, teacher_decisive)
  n_train = num_train(num_examples, train_fraction)
  train = PairedSample(x_a[:n_train], x_b[:n_train], data.y[:n_train])
  test = PairedSample(x_a[n_train:], x_b[n_train:], data.y[n_train:])
  return train, test, data.clusters


def num_train(num_examples: int, train_fraction: float) -> int:
  return int(round(num_examples * train_fraction))


def cholesky(a):
  """Lower Cholesky factor of symmetric positive definite [..., d, d].

  On the CPU backend a column loop in plain XLA ops (`lax.fori_loop`) replaces
  `jnp.linalg.cholesky`: on a 2-core CPU the LAPACK custom call's batch parallelism
  (`ParallelBatchMap` on XLA's intra-op pool) deadlocks when two such calls run concurrently
  inside one program (observed with jaxlib 0.10 on this project's 2-core machines: every
  pool thread waits in `BlockingCounter`). Accelerators get `jnp.linalg.cholesky`.
  """
  if not models.cpu_forms():
    return jnp.linalg.cholesky(a)
  d = a.shape[-1]
  cols = jnp.arange(d)

  def column(j, factor):
    v = a[..., :, j] - jnp.einsum('...ik,...k->...i', factor, factor[..., j, :])
    pivot = jnp.sqrt(jnp.maximum(jnp.take(v, j, axis=-1), 1e-30))
    col = jnp.where(cols >= j, v / pivot[..., None], 0.0)
    return jnp.where(cols == j, col[..., :, None], factor)

  return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


def lower_inverse(factor):
  """Inverse of a lower-triangular [..., d, d] matrix.

  Forward substitution in plain XLA ops on the CPU backend (see `cholesky`); accelerators
  get `jax.scipy.linalg.solve_triangular`.
  """
  d = factor.shape[-1]
  eye = jnp.broadcast_to(jnp.eye(d, dtype=factor.dtype), factor.shape)
  if not models.cpu_forms():
    return jax.scipy.linalg.solve_triangular(factor, eye, lower=True)
  rows = jnp.arange(d)

  def row(i, inv):
    r = (eye[..., i, :] - jnp.einsum('...k,...kn->...n', factor[..., i, :], inv))
    r = r / jnp.take(jnp.diagonal(factor, axis1=-2, axis2=-1), i, axis=-1)[..., None]
    return jnp.where(rows[:, None] == i, r[..., None, :], inv)

  return jax.lax.fori_loop(0, d, row, jnp.zeros_like(factor))


def bayes_floor(key, clusters: Clusters, observed, num_samples: int, flip_y=0.01):
  """(N3, Monte Carlo) Bayes error of a modality observing the features in `observed`.

  Draws fresh examples from the mixture (uniform class prior, labels flipped as the
  generator does) and scores the Bayes rule of the modality: argmax_k of the class-k
  Gaussian density of the observed coordinates, N(c_k[S], (A_kᵀA_k)[S, S]) (label flips are
  uniform, so they do not move the argmax). Standardisation is an invertible per-column
  affine map and leaves the Bayes error unchanged, so the rule runs on raw features.
  Unobserved coordinates are zeroed and given an identity covariance block, which adds the
  same constant to every class's log-density: one static shape serves every `observed`.

  Args:
    key: typed key.
    clusters: the mixture of `make_classification`.
    observed: [d] boolean mask of the features the modality observes (may be traced).
    num_samples: Monte Carlo sample size N.
    flip_y: the generator's label-flip fraction.

  Returns:
    (estimate, standard_error), via `bounds.monte_carlo_bayes_floor`.
  """
  num_classes, d = clusters.centroids.shape
  seen = observed.astype(jnp.float32)
  cov = jnp.einsum('kdi,kdj->kij', clusters.mixing, clusters.mixing)
  cov = cov * seen[:, None] * seen[None, :] + jnp.diag(1.0 - seen)
  chol = cholesky(cov)  # [K, d, d]; plain XLA ops on the CPU, see `cholesky`
  whiten = lower_inverse(chol)
  log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
  means = clusters.centroids * seen

  def sample_fn(k, n):
    k_y, k_x, k_flip = jax.random.split(k, 3)
    y = jax.random.randint(k_y, (n,), 0, num_classes)
    x = _cluster_draw(k_x, clusters, y)
    return x * seen, _flip(k_flip, y, num_classes, flip_y)

  def bayes_rule(x):
    diff = x[None] - means[:, None]  # [K, n, d]
    white = jnp.einsum('kij,knj->kni', whiten, diff)
    log_density = -0.5 * jnp.sum(white ** 2, -1) - 0.5 * log_det[:, None]  # [K, n]
    return jnp.argmax(log_density, 0)

  return bounds.monte_carlo_bayes_floor(key, sample_fn, bayes_rule, num_samples)
