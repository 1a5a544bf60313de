"""Protocol G (docs/protocols.md §G) as a PyTorch user writes it: the batched peer of xdistill.

  python benchmarks/peer_torch.py [--runs=100] [--overlaps=0,2,4,6,8,10] [--out=DIR]
                                  [--compare=WORKDIR/summary.csv] [--float64] [--torch-optim]

Every setting (overlap × seed) trains at once: the parameters of all linear models are
[S, 2, 25] and [S, 2] tensors (`nn.Linear`'s layout), logits come from `torch.baddbmm`,
gradients from autograd, updates are plain SGD (`torch.optim.SGD`'s rule), on two threads.
Teacher and baseline student train in one loop (stacked along the batch axis), then the KD
student against the frozen teacher; the baseline and KD students start from the same
parameters, as in `xdistill_jax.experiments.ntdh_overlap`. The data follow the same
generator semantics (its own torch implementation, own seeds).

Prints the per-overlap accuracies and Δ = 100·(kd − baseline) and the time after imports;
with --out writes peer_results.csv and peer_summary.csv; with --compare checks every
overlap's mean Δ against xdistill's `summary.csv` within standard errors (exit 1 if not).
The defaults are protocol G's numbers (`configs/ntdh_overlap.py`; tests/test_peer.py checks
they agree): the script itself imports neither JAX nor xdistill_jax, so its whole-process
time is what a PyTorch user pays.
"""

import argparse
import csv
import math
import pathlib
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

# Protocol G's numbers (configs/ntdh_overlap.py, protocol_g() and the KD weights).
PROTOCOL_G = dict(overlaps=(0, 2, 4, 6, 8, 10), runs=100, num_decisive=20, student_decisive=10,
                  dim=25, n_train=200, n_test=1000, steps=1000, learning_rate=0.1,
                  temperature=0.7, ce_weight=1.0, kd_weight=1.0)
Z_LIMIT = 3.0  # |difference of mean Δ| / its standard error above which the check fails


def teacher_columns(overlap: torch.Tensor, dim: int, num_decisive: int,
                    student_decisive: int) -> torch.Tensor:
  """Boolean [S, dim]: the teacher's decisive columns (s − o)..(D − 1 − o) of each setting."""
  cols = torch.arange(dim)
  o = overlap[:, None]
  return (cols >= student_decisive - o) & (cols <= num_decisive - 1 - o)


def sample(generator: torch.Generator, overlap: torch.Tensor, n: int, num_decisive: int,
           dim: int, student_decisive: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
  """Protocol G's data of S settings at once: a ~ N(0, I_D), x_s ~ N(0, I_D), y = 1[x_s·a > 0].

  x_b shows decisive features 0..s−1, x_a features (s − o)..(D − 1 − o); every other column
  is independent N(0, 1) noise. Returns hyperplane [S, D], x_s [S, n, D], x_a and x_b
  [S, n, dim] and y [S, n] (int64).
  """
  count = overlap.shape[0]
  normal = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype)
  hyperplane, x_s = normal(count, num_decisive), normal(count, n, num_decisive)
  noise_a, noise_b = normal(count, n, dim), normal(count, n, dim)
  y = (torch.einsum('snd,sd->sn', x_s, hyperplane) > 0).long()
  decisive = torch.nn.functional.pad(x_s, (0, dim - num_decisive))
  cols_a = teacher_columns(overlap, dim, num_decisive, student_decisive)[:, None, :]
  cols_b = (torch.arange(dim) < student_decisive)[None, None, :]
  return dict(hyperplane=hyperplane, x_s=x_s, x_a=torch.where(cols_a, decisive, noise_a),
              x_b=torch.where(cols_b, decisive, noise_b), y=y)


def init_linear(generator: torch.Generator, count: int, fan_in: int, classes: int,
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
  """`count` linear layers initialised as `nn.Linear`: weight [count, classes, fan_in] and
  bias [count, classes] ~ U(±1/√fan_in)."""
  bound = fan_in ** -0.5
  uniform = lambda *shape: (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) * bound
  return uniform(count, classes, fan_in), uniform(count, classes)


def logits(x_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
  """[S, K, n] logits W·x + b of S linear models, inputs x_t [S, dim, n] (one batched matmul).

  Classes before examples, PyTorch's (N, C, d) layout of `F.cross_entropy`: the product has
  n output columns, and runs ~3x faster on a CPU than [S, n, dim] @ [S, dim, K].
  """
  return torch.baddbmm(bias[:, :, None], weight, x_t)


def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """[S] mean cross-entropy of each setting; z [S, K, n], y [S, n]."""
  return F.cross_entropy(z, y, reduction='none').mean(-1)


def kd(z_student: torch.Tensor, z_teacher: torch.Tensor, temperature: float) -> torch.Tensor:
  """[S] mean KL(softmax(z_t/T) ‖ softmax(z_s/T)) of each setting, no T² factor."""
  log_p = F.log_softmax(z_teacher / temperature, 1)
  log_q = F.log_softmax(z_student / temperature, 1)
  return F.kl_div(log_q, log_p, reduction='none', log_target=True).sum(1).mean(-1)


def fit(loss_fn, weight: torch.Tensor, bias: torch.Tensor, steps: int, learning_rate: float,
        torch_optim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
  """Full-batch SGD of a batch of models; `loss_fn` returns [S] per-model losses, summed so
  each model's gradient is that of its own mean loss.

  The update p ← p − lr·∇p is `torch.optim.SGD`'s without momentum; written out by default
  because constructing a `torch.optim` optimizer imports `torch._dynamo` (seconds of a
  whole-process run); `torch_optim=True` uses `torch.optim.SGD` itself.
  """
  params = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
  optimizer = torch.optim.SGD(params, lr=learning_rate) if torch_optim else None
  for _ in range(steps):
    for p in params:
      p.grad = None
    loss_fn(*params).sum().backward()
    if optimizer is not None:
      optimizer.step()
      continue
    with torch.no_grad():
      for p in params:
        p.sub_(p.grad, alpha=learning_rate)
  return params[0].detach(), params[1].detach()


def accuracy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """[S] test accuracy of each setting; z [S, K, n]."""
  return (z.argmax(1) == y).to(z.dtype).mean(-1)


def run(p: dict, seed: int = 0, dtype=torch.float32,
        torch_optim: bool = False) -> dict[str, np.ndarray]:
  """All settings of protocol G: per-setting overlap, seed, accuracies and Δ (points)."""
  overlaps = torch.tensor(p['overlaps']).repeat_interleave(p['runs'])
  count, n = overlaps.shape[0], p['n_train'] + p['n_test']
  generator = torch.Generator().manual_seed(seed)
  data = sample(generator, overlaps, n, p['num_decisive'], p['dim'], p['student_decisive'],
                dtype)
  # Inputs as [S, dim, n] (see `logits`); rows 0..n_train-1 train, the rest test.
  split = lambda rows: {'x_a': data['x_a'][:, rows].transpose(1, 2).contiguous(),
                        'x_b': data['x_b'][:, rows].transpose(1, 2).contiguous(),
                        'y': data['y'][:, rows]}
  train, test = split(slice(0, p['n_train'])), split(slice(p['n_train'], n))
  teacher_init = init_linear(generator, count, p['dim'], 2, dtype)
  student_init = init_linear(generator, count, p['dim'], 2, dtype)
  fit_ = lambda loss_fn, init: fit(loss_fn, *init, p['steps'], p['learning_rate'], torch_optim)

  # Teacher (on x_a) and baseline student (on x_b) in one loop: 2S models stacked.
  x_ab, y_ab = torch.cat([train['x_a'], train['x_b']]), torch.cat([train['y'], train['y']])
  w, b = fit_(lambda w, b: cross_entropy(logits(x_ab, w, b), y_ab),
              (torch.cat([teacher_init[0], student_init[0]]),
               torch.cat([teacher_init[1], student_init[1]])))
  teacher, baseline = (w[:count], b[:count]), (w[count:], b[count:])
  z_teacher = logits(train['x_a'], *teacher)

  def kd_loss(w, b):
    z = logits(train['x_b'], w, b)
    return (p['ce_weight'] * cross_entropy(z, train['y'])
            + p['kd_weight'] * kd(z, z_teacher, p['temperature']))

  student = fit_(kd_loss, student_init)
  with torch.no_grad():
    acc = lambda x, model: accuracy(logits(test[x], *model), test['y']).numpy()
    out = dict(overlap=overlaps.numpy(), seed=np.tile(np.arange(p['runs']), len(p['overlaps'])),
               teacher_acc=acc('x_a', teacher), baseline_acc=acc('x_b', baseline),
               kd_acc=acc('x_b', student))
  out['delta'] = 100.0 * (out['kd_acc'] - out['baseline_acc'])
  return out


def summarise(results: dict[str, np.ndarray]) -> list[dict]:
  """Per overlap: mean, std (ddof = 1) and count of every metric, like xdistill's summary.csv."""
  rows = []
  for o in np.unique(results['overlap']):
    pick = results['overlap'] == o
    row = {'overlap': int(o)}
    for name in ('teacher_acc', 'baseline_acc', 'kd_acc', 'delta'):
      v = results[name][pick].astype(np.float64)
      row |= {f'{name}_mean': v.mean(), f'{name}_std': v.std(ddof=1) if v.size > 1 else math.nan,
              f'{name}_count': v.size}
    rows.append(row)
  return rows


def read_summary(path) -> list[dict]:
  with open(path, newline='') as f:
    return [{k: float(v) for k, v in row.items() if v != ''} for row in csv.DictReader(f)]


def compare(peer: list[dict], reference: list[dict], metric: str = 'delta') -> list[dict]:
  """Per overlap in both: the two means, their standard errors and z = difference / SE of it."""
  by_overlap = {int(r['overlap']): r for r in reference}
  se = lambda r: r[f'{metric}_std'] / math.sqrt(r[f'{metric}_count'])
  rows = []
  for r in peer:
    ref = by_overlap.get(int(r['overlap']))
    if ref is None:
      continue
    diff = r[f'{metric}_mean'] - ref[f'{metric}_mean']
    rows.append(dict(overlap=int(r['overlap']), peer=r[f'{metric}_mean'], peer_se=se(r),
                     xdistill=ref[f'{metric}_mean'], xdistill_se=se(ref),
                     z=diff / math.hypot(se(r), se(ref))))
  return rows


def write_csv(path, rows: list[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=PROTOCOL_G['runs'])
  parser.add_argument('--overlaps', default=','.join(map(str, PROTOCOL_G['overlaps'])))
  parser.add_argument('--steps', type=int, default=PROTOCOL_G['steps'])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--float64', action='store_true')
  parser.add_argument('--torch-optim', action='store_true',
                      help='update with torch.optim.SGD (imports torch._dynamo)')
  parser.add_argument('--out', help='directory for peer_results.csv and peer_summary.csv')
  parser.add_argument('--compare', help="xdistill's summary.csv to check mean Δ against")
  return parser


def main(argv=None) -> int:
  start = time.perf_counter()
  args = _parser().parse_args(argv)
  torch.set_num_threads(args.threads)
  p = PROTOCOL_G | dict(runs=args.runs, steps=args.steps,
                        overlaps=tuple(int(o) for o in args.overlaps.split(',')))
  if args.runs < 2 or args.steps < 1 or not all(
      0 <= o <= min(p['student_decisive'], p['num_decisive'] - p['student_decisive'])
      for o in p['overlaps']):
    print('peer_torch: error: need --runs >= 2, --steps >= 1 and overlaps in 0..10',
          file=sys.stderr)
    return 2
  dtype = torch.float64 if args.float64 else torch.float32
  results = run(p, args.seed, dtype, args.torch_optim)
  summary = summarise(results)
  elapsed = time.perf_counter() - start
  print(f'peer (torch {torch.__version__}, {torch.get_num_threads()} threads): '
        f'{results["delta"].size} settings in {elapsed:.2f} s after imports')
  for r in summary:
    print(f"  overlap {r['overlap']:2d}: teacher {r['teacher_acc_mean']:.4f}  baseline "
          f"{r['baseline_acc_mean']:.4f}  kd {r['kd_acc_mean']:.4f}  "
          f"delta {r['delta_mean']:+.2f} ± {r['delta_std']:.2f}")
  if args.out:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / 'peer_results.csv',
              [dict(zip(results, values)) for values in zip(*results.values())])
    write_csv(out / 'peer_summary.csv', summary)
  if args.compare:
    rows = compare(summary, read_summary(args.compare))
    for r in rows:
      print(f"  check overlap {r['overlap']:2d}: peer {r['peer']:+.2f} ± {r['peer_se']:.2f}, "
            f"xdistill {r['xdistill']:+.2f} ± {r['xdistill_se']:.2f} (SE), z = {r['z']:+.2f}")
    if not rows or any(abs(r['z']) > Z_LIMIT for r in rows):
      print(f'peer_torch: mean Δ differs from xdistill by more than {Z_LIMIT} standard errors '
            'or no overlap in common', file=sys.stderr)
      return 1
    print(f'  same Δ pattern: every |z| <= {Z_LIMIT}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
