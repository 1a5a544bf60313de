"""Analyse models trained outside JAX: NumPy softmax regressions on two views of the digits.

  python examples/analyze_numpy_models.py [--workdir runs/analyze_numpy]

The teacher sees the right half of each 8 × 8 digit (pixel columns 4..7), the students see the
left half (columns 0..3), the cross-modal set-up of `configs/digits_overlap.py` at overlap 0.
Three linear models are trained by full-batch gradient descent in plain NumPy on the same 300
training images: the teacher, a baseline student (cross-entropy) and a KD student
(cross-entropy + KL(teacher ‖ student) at T = 1). Their test-set logits are saved as .npy
files, exactly as you would export them from PyTorch or any other framework, and handed to

  xdistill analyze --teacher=teacher.npy --student=student.npy --labels=labels.npy
      --baseline=baseline.npy --n-train=300 --weight-norm=Λ --input-radius=r --workdir=...

which writes report.md, report.json and figures in the work directory. Needs scikit-learn for
the bundled digits (no download); without it a synthetic 10-class Gaussian set stands in.
Runs in a few seconds.
"""

import argparse
import pathlib
import subprocess
import sys

import numpy as np


def load_views(seed=0):
  """(x_teacher, x_student, labels): right and left halves of the digits, or a synthetic set."""
  try:
    from sklearn.datasets import load_digits
    images = load_digits().images / 16.0
    labels = load_digits().target
  except ImportError:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, 1797)
    images = rng.normal(size=(10, 8, 8))[labels] + rng.normal(size=(1797, 8, 8))
  teacher = images[:, :, 4:].reshape(len(images), -1)
  student = images[:, :, :4].reshape(len(images), -1)
  return teacher, student, labels


def softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def train(x, y, soft_targets=None, steps=500, lr=0.5, seed=0, k=10):
  """Softmax regression by full-batch gradient descent: CE (+ KL to soft targets)."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(-1, 1, (x.shape[1], k)) / np.sqrt(x.shape[1])
  b = np.zeros(k)
  onehot = np.eye(k)[y]
  for _ in range(steps):
    q = softmax(x @ w + b)
    grad = q - onehot  # d CE / d logits
    if soft_targets is not None:
      grad = grad + (q - soft_targets)  # d KL(p ‖ q) / d logits at T = 1
    grad /= len(x)
    w -= lr * x.T @ grad
    b -= lr * grad.sum(axis=0)
  return w, b


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='runs/analyze_numpy')
  parser.add_argument('--n-train', type=int, default=300)
  parser.add_argument('--subprocess', action='store_true',
                      help='run the `xdistill analyze` command instead of calling it in-process')
  args = parser.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  x_t, x_s, y = load_views()
  order = np.random.default_rng(0).permutation(len(y))
  train_idx, test_idx = order[:args.n_train], order[args.n_train:]

  teacher = train(x_t[train_idx], y[train_idx], seed=1)
  teacher_train_p = softmax(x_t[train_idx] @ teacher[0] + teacher[1])
  baseline = train(x_s[train_idx], y[train_idx], seed=2)
  student = train(x_s[train_idx], y[train_idx], soft_targets=teacher_train_p, seed=2)

  logits = lambda params, x: x @ params[0] + params[1]
  files = {
      'teacher': logits(teacher, x_t[test_idx]),
      'student': logits(student, x_s[test_idx]),
      'baseline': logits(baseline, x_s[test_idx]),
      'labels': y[test_idx].astype(np.int64),
  }
  for name, array in files.items():
    np.save(workdir / f'{name}.npy', array)

  # N4 inputs of the linear student: Λ = ‖[W; b]‖_F, r = max sqrt(‖x‖² + 1) (bias folded in).
  weight_norm = float(np.sqrt(np.sum(student[0] ** 2) + np.sum(student[1] ** 2)))
  input_radius = float(np.sqrt(np.max(np.sum(x_s[train_idx] ** 2, axis=1)) + 1.0))
  flags = [f'--{name}={workdir / (name + ".npy")}' for name in files] + [
      f'--workdir={workdir}', f'--n-train={args.n_train}', f'--weight-norm={weight_norm:.6g}',
      f'--input-radius={input_radius:.6g}']
  if args.subprocess:
    code = subprocess.call([sys.executable, '-m', 'xdistill_jax.cli', 'analyze', *flags])
  else:
    from xdistill_jax import analyze
    code = analyze.main(flags)
  if code == 0:
    print(f'open {workdir / "report.md"}')
  return code


if __name__ == '__main__':
  sys.exit(main())
