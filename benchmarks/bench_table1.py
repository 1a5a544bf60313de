"""NTDH Table 1 on protocol G: the whole table end to end, and where its time goes.

  python benchmarks/bench_table1.py [--runs=100] [--subset-runs=16] [--skip-cli]

1. `xdistill run --config=configs/ntdh_table1.py` (9 methods × 6 overlaps × `runs` seeds) in a
   fresh process with the compilation cache off: the wall time a user waits, with its peak
   resident memory.
2. Side by side on a subset (6 overlaps × `subset-runs` seeds, through the engine): the
   library's training (each method's student in its own loop, `kd_methods.fit_students`)
   against one loop over the summed objectives of all methods; the students must agree.
3. The run time each method adds to the teacher + baseline + KL setting (same subset).
4. Why not one batched forward pass: nine KL students of one setting trained with their
   parameters stacked and one vmapped forward pass, against a loop each (what `fit_students`
   does); 32 settings vmapped, one device.
5. With --protocol-s-steps=N: the three protocol-S experiments (ntdh_kclass, Table 1 on S,
   the feature mask; 4 overlaps × 4 seeds, N steps) at the vmap width 8 and at their
   automatic width on a CPU (1): compile and run, wall and process CPU seconds, and
   CPU seconds per requested setting (width 8 pads 16 settings to 32, the default sweeps of
   50 settings to 64).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('XDISTILL_CACHE_DIR', '')  # cold: no persistent compilation cache
from xdistill_jax import cli  # noqa: E402

cli.configure_jax()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import engine_timing  # noqa: E402  (benchmarks/)
from xdistill_jax import kd_methods  # noqa: E402
from xdistill_jax import training  # noqa: E402
from xdistill_jax import config_files  # noqa: E402
from xdistill_jax.experiments import ntdh_table1  # noqa: E402
from xdistill_jax.generators import decisive_features  # noqa: E402
from xdistill_jax.models import MLP  # noqa: E402
from xdistill_jax.sweep import runner  # noqa: E402
from xdistill_jax.sweep.grid import Grid  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def end_to_end(runs):
  """Wall seconds and peak RSS (GiB) of `xdistill run` for the whole table, cold."""
  with tempfile.TemporaryDirectory() as workdir:
    args = [sys.executable, '-m', 'xdistill_jax.cli', 'run', '--config=configs/ntdh_table1.py',
            f'--workdir={workdir}', f'--config.G.runs={runs}', '--config.sweep.progress=False']
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env=os.environ | {'XDISTILL_CACHE_DIR': ''})
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status:
      raise RuntimeError(stderr)
    table = (pathlib.Path(workdir) / 'table1.md').read_text()
  return elapsed, usage.ru_maxrss / 2**20, table


def fit_in_one_loop(methods, hyper, apply_fn, params, x, teacher_logits, labels, optimizer,
                    steps, relation=kd_methods.Relation()):
  """The alternative to `kd_methods.fit_students`: one loop over Σ_m (method m's loss)."""
  parts = {m: kd_methods.method_loss(m, hyper, apply_fn, x, teacher_logits, labels, relation)
           for m in methods}
  loss = lambda p: sum(parts[m](p[m]) for m in methods)
  return training.fit(loss, params, optimizer, steps)[0]


def timed(config, grid, fit=None):
  """Engine sweep of Table 1 with `fit` as the students' trainer (None: the library's)."""
  library = kd_methods.fit_students
  if fit is not None:
    kd_methods.fit_students = fit
  try:
    return engine_timing.sweep(ntdh_table1.make_setting_fn(config), config.seed, grid)
  finally:
    kd_methods.fit_students = library


def stacked_vs_apart(students=9, settings=32, steps=1000):
  """µs per student and step: stacked students with one vmapped forward pass vs a loop each."""
  net, hyper, sgd = MLP(num_classes=2), kd_methods.Hyper(), optax.sgd(0.1)

  def setup(key):
    k_data, k_init = jax.random.split(key)
    _, data = decisive_features.sample(k_data, 4, 200, 20, 25, 10)
    teacher_logits = 3.0 * data.x_a[:, :2]  # any fixed teacher will do for timing
    inits = jax.vmap(lambda k: net.init(k, data.x_b[:1]))(jax.random.split(k_init, students))
    loss = lambda p: kd_methods.objective('kl', hyper, net.apply(p, data.x_b), teacher_logits,
                                          data.y)
    return inits, loss

  def stacked(key):
    inits, loss = setup(key)
    return training.fit(lambda p: jnp.sum(jax.vmap(loss)(p)), inits, sgd, steps)[0]

  def apart(key):
    inits, loss = setup(key)
    return [training.fit(loss, jax.tree.map(lambda a, i=i: a[i], inits), sgd, steps)[0]
            for i in range(students)]

  keys = jax.random.split(jax.random.key(0), settings).reshape(settings // 8, 8)
  out = {}
  for name, fn in (('stacked', stacked), ('apart', apart)):
    run = jax.jit(lambda k, fn=fn: jax.lax.map(jax.vmap(fn), k))
    jax.block_until_ready(run(keys))  # compile
    start = time.perf_counter()
    jax.block_until_ready(run(keys))
    out[name] = 1e6 * (time.perf_counter() - start) / (settings * students * steps)
  return out


def protocol_s_widths(steps, runs=4):
  """Part 5: {experiment: {width: (compile wall, compile cpu, run wall, run cpu, settings)}}."""
  from xdistill_jax.experiments import ntdh_feature_mask, ntdh_kclass  # noqa: E402
  out = {}
  for name, module, variant in (('ntdh_kclass', ntdh_kclass, None),
                                ('ntdh_table1:S', ntdh_table1, 'S'),
                                ('ntdh_feature_mask', ntdh_feature_mask, None)):
    config = config_files.load(name.split(':')[0], variant)
    pc = config.S if variant else config
    pc.steps, pc.runs, pc.overlaps = steps, runs, (20, 15, 5, 0)
    grid = Grid(module.axes(config))
    out[name] = {}
    for width in (8, runner.vmap_width(config, grid)):
      wall, cpu = time.perf_counter(), time.process_time()
      _, compile_s, run_s = engine_timing.sweep(module.make_setting_fn(config), config.seed,
                                                grid, width=width)
      cpu_total = time.process_time() - cpu
      out[name][width] = (compile_s, run_s, cpu_total, time.perf_counter() - wall, grid.size)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=100)
  parser.add_argument('--subset-runs', type=int, default=16)
  parser.add_argument('--skip-cli', action='store_true', help='skip part 1')
  parser.add_argument('--protocol-s-steps', type=int, default=0,
                      help='run only part 5 with this many training steps')
  args = parser.parse_args(argv)
  if args.protocol_s_steps:
    print(f'load average {os.getloadavg()}')
    for name, widths in protocol_s_widths(args.protocol_s_steps).items():
      for width, (compile_s, run_s, cpu, wall, settings) in widths.items():
        print(f'5. {name}, vmap width {width}, {settings} settings: compile {compile_s:.1f} s, '
              f'run {run_s:.1f} s wall; {cpu:.1f} s process CPU in all '
              f'({cpu / settings:.2f} per setting)')
    return 0
  print(f'machine: {os.cpu_count()} cores, jax {jax.__version__}, backend '
        f'{jax.default_backend()}, {jax.device_count()} device(s)')

  if not args.skip_cli:
    wall, peak, table = end_to_end(args.runs)
    settings = 6 * args.runs
    print(f'1. xdistill run, whole Table 1 ({len(kd_methods.METHODS)} methods × {settings} '
          f'settings, cold): {wall:.1f} s wall, peak resident memory {peak:.2f} GiB')
    print('\n'.join('   ' + line for line in table.splitlines()[4:15]))

  config = config_files.load('ntdh_table1', 'G')
  config.G.runs = args.subset_runs
  grid = Grid(ntdh_table1.axes(config))
  apart, compile_a, run_a = timed(config, grid)
  together, compile_t, run_t = timed(config, grid, fit_in_one_loop)
  print(f'2. {grid.size} settings × {len(config.methods)} methods, through the engine:\n'
        f'   a loop per method (library): compile {compile_a:.2f} s, run {run_a:.2f} s\n'
        f'   one loop over the summed objectives: compile {compile_t:.2f} s, run {run_t:.2f} s\n'
        f'   ratio one loop / a loop per method (run): {run_t / run_a:.2f}x')
  # RKD's training is chaotic (rounding differences grow over 1000 steps): compare the rest.
  steady = np.asarray([m != 'rkd' for m in config.methods])
  worst = np.max(np.abs(apart['kd_acc'][:, steady] - together['kd_acc'][:, steady]))
  print(f'   max |Δ accuracy| between the two, methods other than RKD: {worst:.4f}')

  print(f'3. run time each method adds to teacher + baseline + KL ({grid.size} settings):')
  config.methods = ('kl',)
  _, _, base = timed(config, grid)
  print(f'   teacher + baseline + KL: {base:.2f} s ({1e6 * base / grid.size / 1000:.1f} µs per '
        'setting and step)')
  for m in kd_methods.METHODS[1:]:
    config.methods = ('kl', m)
    _, _, run = timed(config, grid)
    print(f'   + {kd_methods.LABELS[m]:7s} {run - base:+6.2f} s '
          f'({1e6 * (run - base) / grid.size / 1000:+.1f} µs per setting and step)')

  cost = stacked_vs_apart()
  print(f'4. nine KL students, µs per student and step: stacked, one vmapped forward pass '
        f'{cost["stacked"]:.2f}; a loop each {cost["apart"]:.2f} '
        f'(ratio {cost["stacked"] / cost["apart"]:.1f}x)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
