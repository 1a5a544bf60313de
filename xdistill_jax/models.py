"""Flax models of the NTDH protocols, initialised as PyTorch's `nn.Linear` (the papers' code).

PyTorch draws both weight and bias of a linear layer from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_linear_init(key, shape, dtype=jax.numpy.float32, fan_in: int | None = None):
  """U(±1/sqrt(fan_in)) with fan_in = shape[0] for kernels, or given explicitly for biases."""
  fan_in = shape[0] if fan_in is None else fan_in
  bound = fan_in ** -0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


# XLA:CPU emits far faster code for matrix-vector products than for products with a few
# output columns (2.1x on a 2-class linear model trained for 1000 steps; see BENCHMARKS.md),
# so on the CPU backend narrow layers are computed one output column at a time (the same
# product). Accelerators get the plain matrix product.
NARROW = 4


def cpu_forms() -> bool:
  """Whether the CPU-only forms of the package apply: JAX's default backend is the CPU.

  Read at trace time. The forms it selects (column-wise narrow products here, per-plane
  pairwise terms in `losses`, the loop Cholesky in `generators.kclass`) compute the same
  values as the plain forms that accelerators get.
  """
  return jax.default_backend() == 'cpu'


class TorchDense(nn.Module):
  """`nn.Dense` with PyTorch's default initialisation of kernel and bias."""

  features: int

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param('kernel', torch_linear_init, (fan_in, self.features))
    bias = self.param(
        'bias', lambda k, s: torch_linear_init(k, s, fan_in=fan_in), (self.features,))
    if self.features <= NARROW and cpu_forms():
      return jnp.stack([x @ kernel[:, k] for k in range(self.features)], -1) + bias
    return x @ kernel + bias


class MLP(nn.Module):
  """ReLU MLP; `hidden=()` is the linear classifier of protocol G.

  Returns logits, and with `features=True` also the last hidden representation
  (the input itself for a linear model), which feature-based KD methods distil.
  """

  num_classes: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x, features: bool = False):
    h = x
    for width in self.hidden:
      h = nn.relu(TorchDense(width)(h))
    logits = TorchDense(self.num_classes)(h)
    return (logits, h) if features else logits


def init_models(model: nn.Module, key, count: int, input_dim: int) -> list:
  """`count` independent initialisations of `model` from one vmapped init (one PRNG site)."""
  stacked = jax.vmap(lambda k: model.init(k, jnp.zeros((1, input_dim))))(
      jax.random.split(key, count))
  return [jax.tree.map(lambda p, i=i: p[i], stacked) for i in range(count)]
