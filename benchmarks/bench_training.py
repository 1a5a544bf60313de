"""Protocol G's binary training step: one margin product against two column products.

  python benchmarks/bench_training.py [--settings=300] [--steps=1000] [--width=8] [--repeats=3]

`training.fit_linear` trains a K = 2 softmax model from its margin z₁ − z₀ (one product with
x forward, one backward, G = (−g, g)); before, it computed both logit columns and both
kernel-gradient columns (two products each way). Both forms run here on one XLA CPU device,
`settings` models of protocol G's shape (200 × 25 inputs) vmapped in groups of `width` as the
sweep does, interleaved `repeats` times; prints the best time of each, µs per setting-step,
their ratio, and the largest difference of the trained weights (float rounding).
"""

import argparse
import os
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false'
                           ' --xla_backend_optimization_level=1').strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from xdistill_jax import training  # noqa: E402

jax.config.update('jax_num_cpu_devices', 1)


def _columns(problems, learning_rate, steps):
  """The previous form: both logit columns and both kernel-gradient columns per step."""
  def step(layers, _):
    out = []
    for (logit_grad, x, _), (kernel, bias) in zip(problems, layers):
      g = logit_grad(jnp.stack([x @ kernel[:, k] for k in range(2)], -1) + bias)
      grad_k = jnp.stack([g[:, k] @ x for k in range(2)], -1)
      out.append((kernel - learning_rate * grad_k, bias - learning_rate * jnp.sum(g, 0)))
    return tuple(out), None
  layers, _ = jax.lax.scan(step, tuple(m[2] for m in problems), length=steps)
  return list(layers)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--settings', type=int, default=300)
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--width', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  n, d = 200, 25
  key_x, key_w = jax.random.split(jax.random.key(0))
  x = jax.random.normal(key_x, (args.settings, n, d))
  y = (x[..., 0] + 0.5 * x[..., 1] > 0).astype(jnp.int32)
  init = 0.1 * jax.random.normal(key_w, (args.settings, d, 2))

  def program(fit):
    def one(x, y, kernel):
      ce = lambda z: training.cross_entropy_grad(z, y)
      ((k, b),) = fit([(ce, x, (kernel, jnp.zeros(2)))], 0.1, args.steps)
      return k, b
    return jax.jit(lambda *a: jax.lax.map(lambda t: one(*t), a, batch_size=args.width))

  forms = {'margin (fit_linear)': program(training.fit_linear), 'two columns': program(_columns)}
  outputs, best = {}, {name: float('inf') for name in forms}
  for name, fn in forms.items():
    outputs[name] = jax.block_until_ready(fn(x, y, init))  # compile
  for _ in range(args.repeats):
    for name, fn in forms.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(x, y, init))
      best[name] = min(best[name], time.perf_counter() - start)
  per_step = lambda s: s / (args.settings * args.steps) * 1e6
  print(f'{args.settings} settings x {args.steps} steps, vmap width {args.width}, one CPU '
        f'device, load average {os.getloadavg()[0]:.2f}')
  for name, seconds in best.items():
    print(f'  {name:20s} {seconds:6.3f} s  {per_step(seconds):5.2f} us per setting-step')
  print(f'  ratio two columns / margin: {best["two columns"] / best["margin (fit_linear)"]:.2f}x')
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(outputs['margin (fit_linear)'], outputs['two columns']))
  print(f'  largest |difference| of the trained weights: {diff:.1e}')


if __name__ == '__main__':
  main()
