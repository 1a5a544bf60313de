"""Full-batch training loops as `lax.scan`, pure and vmappable (the purejaxrl shape)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def fit(loss_fn: Callable, params, optimizer: optax.GradientTransformation, steps: int):
  """Minimises `loss_fn(params)` for `steps` full-batch optimizer steps.

  Several independent models train in one loop when `loss_fn` sums their losses over a
  params pytree: their gradients do not interact, so this equals training them apart.

  Returns:
    (trained params, loss at the final parameters).
  """
  grad_fn = jax.value_and_grad(loss_fn)

  def step(carry, _):
    params, opt_state = carry
    _, grads = grad_fn(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
  return params, loss_fn(params)


def cross_entropy(logits, labels, weights=None):
  """Mean softmax cross-entropy −log softmax(z)_y, optionally with per-example weights.

  The target log-probability is picked with a one-hot mask, not gathered: a gather's
  gradient is a scatter-add, slow on XLA:CPU inside a training loop; the mask is not, and
  it computes the same value.
  """
  onehot = jnp.arange(logits.shape[-1]) == labels[..., None]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return weighted_mean(-jnp.sum(jnp.where(onehot, log_p, 0.0), axis=-1), weights)


def weighted_mean(values, weights=None):
  """Mean over the leading axis; with weights, Σ w v / Σ w (masks select a subsample)."""
  if weights is None:
    return jnp.mean(values)
  return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1e-12)


def accuracy(logits, labels, weights=None):
  """Fraction of examples whose argmax logit is the label."""
  return weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)
