"""Full-batch training loops as `lax.scan`, pure and vmappable (the purejaxrl shape)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def fit(loss_fn: Callable, params, optimizer, steps: int):
  """Minimises `loss_fn(params)` for `steps` full-batch steps of `optimizer` (an
  `optax.GradientTransformation`).

  Several independent models train in one loop when `loss_fn` sums their losses over a
  params pytree: their gradients do not interact, so this equals training them apart.

  Returns:
    (trained params, loss at the final parameters).
  """
  import optax  # ≈ 0.2 s to import: only for the loops that use an optimizer
  grad_fn = jax.value_and_grad(loss_fn)

  def step(carry, _):
    params, opt_state = carry
    _, grads = grad_fn(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
  return params, loss_fn(params)


def fit_linear(problems, learning_rate: float, steps: int):
  """Full-batch SGD of linear softmax models z = x W + b with their closed-form gradients.

  A loss that reads the logits only has ∂L/∂W = xᵀG and ∂L/∂b = Σ_i G_i, G = ∂L/∂z, so no
  autodiff graph enters the loop. Equals `fit(loss, params, optax.sgd(learning_rate), steps)`
  up to float rounding; the models train together and do not interact.

  The loss must depend on z through softmax(z) alone (cross-entropy, KL to a teacher, DKD):
  it is then unchanged by adding a constant to every logit, so Σ_k G_k = 0. For K = 2 that
  gives G = (−g, g) with g = ∂L/∂z₁ evaluated at (0, z₁ − z₀), and each step costs one
  product with x for the margin and one for its gradient instead of two each (1.55× faster on
  XLA:CPU, benchmarks/bench_training.py); the two forms agree to float rounding.

  Args:
    problems: sequence of (logit_grad, x, (kernel, bias)): G = logit_grad(z) [n, K], inputs
      x [n, d], initial kernel [d, K] and bias [K].
    learning_rate: SGD step size.
    steps: full-batch steps.

  Returns:
    The trained (kernel, bias) of every model, in order.
  """
  # K = 2 inputs transposed once, [d, n]: both products then run along the n contiguous
  # examples (1.2-1.5x faster steps on XLA:CPU than [n, d] with d = 25, bench_training.py).
  inputs = [x.T if kernel.shape[-1] == 2 else x for _, x, (kernel, _) in problems]

  def step(layers, _):
    out = []
    for (logit_grad, _, _), x, (kernel, bias) in zip(problems, inputs, layers):
      if kernel.shape[-1] == 2:
        margin = (kernel[:, 1] - kernel[:, 0]) @ x + (bias[1] - bias[0])
        g1 = logit_grad(jnp.stack([jnp.zeros_like(margin), margin], -1))[:, 1]
        grad_k, grad_b = _opposite(x @ g1), _opposite(jnp.sum(g1))
      else:
        g = logit_grad(linear(x, kernel, bias))
        grad_k, grad_b = linear_transpose(x, g), jnp.sum(g, 0)
      step_k = kernel - learning_rate * grad_k
      step_b = bias - learning_rate * grad_b
      out.append((step_k.astype(kernel.dtype), step_b.astype(bias.dtype)))  # as optax does
    return tuple(out), None

  layers, _ = jax.lax.scan(step, tuple(m[2] for m in problems), length=steps)
  return list(layers)


def _opposite(g1):
  """(−g₁, g₁) on a last axis: a binary softmax gradient from its class-1 part (exact: a loss
  of softmax(z) has Σ_k G_k = 0). The K = 2 gradients are built so, as the product g₁ · (−1, 1)
  rather than a stack: `fit_linear`'s binary step reads column 1 only, and XLA then takes that
  slice through sums of such gradients (the KD student's CE + KL) instead of materialising
  both columns, so each step is its two products and a few elementwise kernels (1.4× faster
  training, benchmarks/bench_training.py)."""
  return g1[..., None] * jnp.asarray([-1.0, 1.0], g1.dtype)


def _column_wise(width: int) -> bool:
  """Whether a product with `width` output columns is computed one column at a time, as
  `models.TorchDense` does on the CPU. Read at trace time; `models` imports flax (≈ 0.2 s),
  which a sweep whose program comes from the program cache does not need."""
  from xdistill_jax import models
  return width <= models.NARROW and models.cpu_forms()


def linear(x, kernel, bias):
  """x W + b as `models.TorchDense` computes it (column-wise on the CPU for narrow W)."""
  if _column_wise(kernel.shape[-1]):
    return jnp.stack([x @ kernel[:, k] for k in range(kernel.shape[-1])], -1) + bias
  return x @ kernel + bias


def linear_transpose(x, g):
  """xᵀG [d, K], the kernel gradient of `linear` (column-wise on the CPU for narrow G)."""
  if _column_wise(g.shape[-1]):
    return jnp.stack([g[:, k] @ x for k in range(g.shape[-1])], -1)
  return x.T @ g


def _example_weights(n: int, weights=None):
  """c_i = ∂ weighted_mean(v) / ∂v_i [n]: 1/n, or w_i / max(Σw, 1e-12)."""
  if weights is None:
    return jnp.full((n,), 1.0 / n)
  return weights * (1.0 / jnp.maximum(jnp.sum(weights), 1e-12))


def cross_entropy_grad(logits, labels, weights=None):
  """∂ cross_entropy / ∂z = c_i (softmax(z_i) − onehot(y_i)) [n, K] (c: `_example_weights`);
  for K = 2, (−g, g) from the class-1 column g alone (`_opposite`)."""
  c = _example_weights(logits.shape[0], weights)
  if logits.shape[-1] == 2:
    return _opposite(jnp.where(labels == 1, -c, 0.0) + _class_1(logits) * c)
  onehot = jnp.arange(logits.shape[-1]) == labels[..., None]
  return jnp.where(onehot, -c[:, None], 0.0) + jax.nn.softmax(logits) * c[:, None]


def kd_grad(logits, teacher_probs, temperature, weights=None):
  """∂/∂z_s of weighted_mean(KL(p ‖ softmax(z_s/T))) = c_i (softmax(z_s/T)_i − p_i)/T [n, K],
  p = softmax(z_t/T) the teacher's tempered probabilities (`losses.kd` without T²); for
  K = 2, (−g, g) from the class-1 column g alone (`_opposite`)."""
  c = _example_weights(logits.shape[0], weights) / temperature
  if logits.shape[-1] == 2:
    return _opposite(c * (_class_1(logits, temperature) - teacher_probs[..., 1]))
  return c[:, None] * (jax.nn.softmax(logits / temperature) - teacher_probs)


def _class_1(logits, temperature=1.0):
  """softmax(z/T)₁ = σ((z₁ − z₀)/T) of K = 2 logits [..., 2]: the margin is taken before the
  division, so large near-equal logits keep their difference (z = (1e4, 1e4 − 1) in float32)."""
  return jax.nn.sigmoid((logits[..., 1] - logits[..., 0]) / temperature)


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
