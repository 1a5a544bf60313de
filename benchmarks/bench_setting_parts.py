"""Where one protocol-G setting's compiled time goes: data, training, each metric family.

  python benchmarks/bench_setting_parts.py [--settings=256] [--steps=100] [--width=8]

Runs on one XLA CPU device with the flags `xdistill` uses (LLVM level 1, single-threaded
Eigen), `settings` settings in vmapped groups of `width` as the sweep does. Each part is its
own jitted program on the same trained models and data, timed as the best of three runs;
prints ms per setting. A metric family's time includes the five logits it reads (the
`logits` line). The parts overlap (`setting` is the whole setting function), so they need not
add up exactly: XLA fuses across parts inside one program.
"""

import argparse
import os
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false'
                           ' --xla_backend_optimization_level=1').strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from xdistill_jax import bounds  # noqa: E402
from xdistill_jax import config_files  # noqa: E402
from xdistill_jax import divergences  # noqa: E402
from xdistill_jax import kd_floor  # noqa: E402
from xdistill_jax import measures  # noqa: E402
from xdistill_jax import pac_bayes  # noqa: E402
from xdistill_jax.experiments import ntdh_overlap  # noqa: E402
from xdistill_jax.generators import decisive_features as gen  # noqa: E402
from xdistill_jax.models import MLP  # noqa: E402

jax.config.update('jax_num_cpu_devices', 1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--settings', type=int, default=256)
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--width', type=int, default=8)
  args = parser.parse_args()
  config = config_files.load('ntdh_overlap')
  config.steps = args.steps
  n = args.settings
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(n))
  settings = {'overlap': jnp.asarray(np.tile([0, 10], n // 2), jnp.int32),
              'seed': jnp.arange(n, dtype=jnp.int32)}
  grouped = lambda f: jax.jit(lambda *a: jax.lax.map(lambda t: f(*t), a,
                                                     batch_size=args.width))
  params, data = jax.block_until_ready(
      grouped(lambda k, s: ntdh_overlap._train(config, k, s))(keys, settings))
  model = MLP(num_classes=2)
  d, s, dim = config.num_decisive, config.student_decisive, config.dim

  def logits(p, data):
    _, train, test = data
    z = lambda name, x: model.apply(p[name], x)
    return {'t_train': z('teacher', train.x_a), 'kd_train': z('kd', train.x_b),
            't_test': z('teacher', test.x_a), 'kd_test': z('kd', test.x_b)}

  def family(p, data, which):
    z, (hyperplane, train, test) = logits(p, data), data
    if which == 'logits':
      return z
    if which == 'divergences (7, test rows)':
      return measures.teacher_student_divergences(z['t_test'], z['kd_test'], test.y)
    if which == 'CMD (inputs, outputs)':
      return (divergences.central_moment_discrepancy(train.x_a, train.x_b, config.moments),
              divergences.central_moment_discrepancy(jax.nn.softmax(z['t_train']),
                                                     jax.nn.softmax(z['kd_train']),
                                                     config.moments))
    if which == 'margin-bound inputs':
      return measures.margin_bound_inputs(z['kd_train'], train.x_b, train.y, p['kd'],
                                          config.margin_rho)
    if which == 'P1 (two students)':
      layers = jax.tree.map(lambda *a: jnp.stack(a),
                            *(pac_bayes.dense_layer(p[m]) for m in ('kd', 'baseline')))
      return jax.vmap(lambda k, b: pac_bayes.binary_p1(
          k, b, train.x_b, train.y, test.x_b, test.y, config.delta))(*layers)
    if which == 'F1 (KD floor)':
      shared = gen.teacher_columns(0, dim, d, s) & gen.student_columns(dim, s)
      return kd_floor.protocol_g_floor(*pac_bayes.dense_layer(p['teacher']), test.x_b, shared,
                                       z['kd_test'], z['t_test'])
    if which == 'Bayes floors':
      return bounds.decisive_feature_bayes_floor(hyperplane, gen.teacher_columns(0, dim, d, s)[:d])
    raise ValueError(which)

  draw = lambda k, st: gen.sample(jax.random.split(k)[0], st['overlap'],
                                  config.n_train + config.n_test, d, dim, s)
  parts = {'data draw': (draw, (keys, settings)),
           f'data + training ({args.steps} steps)':
               (lambda k, st: ntdh_overlap._train(config, k, st)[0], (keys, settings))}
  for which in ('logits', 'divergences (7, test rows)', 'CMD (inputs, outputs)',
                'margin-bound inputs', 'P1 (two students)', 'F1 (KD floor)', 'Bayes floors'):
    parts[which] = (lambda p, dd, w=which: family(p, dd, w), (params, data))
  parts['setting (everything)'] = (ntdh_overlap.make_setting_fn(config), (keys, settings))
  print(f'{n} settings, {args.steps} steps, vmap width {args.width}, one CPU device, '
        f'load average {os.getloadavg()[0]:.2f}')
  for name, (fn, inputs) in parts.items():
    program = grouped(fn)
    jax.block_until_ready(program(*inputs))
    best = float('inf')
    for _ in range(3):
      start = time.perf_counter()
      jax.block_until_ready(program(*inputs))
      best = min(best, time.perf_counter() - start)
    print(f'  {name:32s} {1e3 * best / n:7.3f} ms per setting', flush=True)


if __name__ == '__main__':
  main()
