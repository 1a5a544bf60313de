"""`xdistill analyze`: divergences, identities, bounds and ω statistics where the truth is known,
and a clear error (naming the file, exit status 2, no traceback) for every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from xdistill_jax import analyze

N, K = 300, 6


def _logits(seed=0, n=N, k=K, scale=2.0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  teacher = scale * rng.normal(size=(n, k))
  teacher[np.arange(n), labels] += 2.0
  return teacher, labels


def _permute_non_target(logits, labels):
  """Cyclically shifts the non-target logits of every row; the target logit stays put."""
  out = logits.copy()
  for i, y in enumerate(labels):
    rest = [j for j in range(logits.shape[1]) if j != y]
    out[i, rest] = logits[i, np.roll(rest, 1)]
  return out


def test_identical_models_have_zero_divergence(tmp_path):
  teacher, labels = _logits()
  report = analyze.analyze(teacher, teacher.copy(), labels, tmp_path, figures=False)
  for name in analyze.DIVERGENCES:
    assert abs(report['divergences'][name]['max']) < 1e-12, name
  assert report['accuracy']['disagreement'] == 0.0
  assert report['accuracy']['teacher'] == report['accuracy']['student']
  assert report['identities']['d1_max_abs_residual'] < 1e-12
  assert report['deterministic_violations'] == 0
  assert (tmp_path / 'report.md').exists() and (tmp_path / 'report.json').exists()
  assert json.loads((tmp_path / 'report.json').read_text())['inputs']['n'] == N


def test_permuted_non_target_classes_move_only_nckd(tmp_path):
  teacher, labels = _logits(1)
  student = _permute_non_target(teacher, labels)
  report = analyze.analyze(teacher, student, labels, tmp_path, figures=False)
  div = report['divergences']
  assert div['tckd']['max'] < 1e-12  # p_y is unchanged by the permutation
  assert div['nckd']['mean'] > 0.1 and div['nt_js']['mean'] > 0 and div['nt_tv']['mean'] > 0
  # D1 with TCKD = 0: KL = (1 - p_y) NCKD, so KL > 0 too.
  assert div['kl']['mean'] > 0
  assert report['identities']['d1_max_abs_residual'] < 1e-12


def test_identity_d1_and_bounds_on_random_and_extreme_logits(tmp_path):
  teacher, labels = _logits(2, scale=40.0)  # near one-hot, extreme logits
  student = teacher + 30.0 * np.random.default_rng(3).normal(size=teacher.shape)
  baseline = np.random.default_rng(4).normal(size=teacher.shape)
  report = analyze.analyze(teacher, student, labels, tmp_path, baseline_logits=baseline,
                           figures=False)
  assert report['identities']['d1_max_rel_residual'] < 1e-9
  assert report['identities']['d2_max_tv_minus_sqrt_half_kl'] <= 1e-12
  assert report['identities']['d3_holds']
  assert report['deterministic_violations'] == 0
  for name in ('n1_lower', 'n1_upper', 'n2_lower', 'n2_upper', 'n2_pinsker_upper'):
    assert report['bounds'][name]['holds'], name
  acc = report['accuracy']
  assert acc['delta_points'] == pytest.approx(100 * (acc['student'] - acc['baseline']))
  assert set(report['baseline_divergences']) == set(analyze.DIVERGENCES)


def test_omega_counts_and_masked_non_target_divergence(tmp_path):
  right = np.array([[3.0, 0.0, 1.0, -1.0]] * 4)  # teacher right (label 0)
  wrong = np.array([[0.0, 3.0, 1.0, -1.0]] * 4)  # teacher wrong (label 0)
  teacher = np.concatenate([right, wrong, wrong])
  labels = np.zeros(12, int)
  student = np.concatenate([
      _permute_non_target(right, labels[:4]),  # ω = 1 (teacher right)
      wrong + [0.0, 0.0, 0.1, 0.0],  # cosine 0.9996 ≥ 0.996: down-weighted, ω = (1 + c)/2
      -wrong,  # cosine −1: dropped, ω = 0
  ])
  # The dropped examples have the largest NCKD, so masking lowers the mean.
  report = analyze.analyze(teacher, student, labels, tmp_path, figures=False)
  om = report['omega_mask']
  assert (om['teacher_right'], om['teacher_wrong'], om['dropped']) == (4, 8, 4)
  assert om['down_weighted'] == 4
  t, s = wrong[0], student[4]
  omega = (1 + t @ s / np.linalg.norm(t) / np.linalg.norm(s)) / 2
  assert om['mean_omega'] == pytest.approx((4 + 4 * omega) / 12)
  assert om['nckd_omega_positive'] < om['nckd_all']
  assert om['nckd_reduction_omega_positive'] == pytest.approx(
      om['nckd_all'] - om['nckd_omega_positive'])


def _margin_bound_by_hand(risk, n, k, rho, lam, frob, delta):
  j = 1
  while 2.0**j < lam:
    j += 1
  c_k = 2.0 if k == 2 else 4.0 * k
  delta_j = delta / (j * (j + 1))
  return risk + c_k * 2.0**j / rho * frob / n + 3 * np.sqrt(np.log(2 / delta_j) / (2 * n))


@pytest.mark.parametrize('k', [2, 5])
def test_generalization_bounds_with_sizes_and_norms(tmp_path, k):
  teacher, labels = _logits(5, k=k)
  student = teacher + np.random.default_rng(6).normal(size=teacher.shape)
  features = np.random.default_rng(7).normal(size=(N, 3))
  report = analyze.analyze(teacher, student, labels, tmp_path, n_train=N, weight_norm=2.5,
                           student_features=features, figures=False)
  b = report['bounds']['n4_margin_upper']
  assert b['kind'] == 'probabilistic' and b['of'] == 'student_err'
  correct = student[np.arange(N), labels]
  runner_up = np.max(np.where(np.eye(k)[labels] > 0, -np.inf, student), 1)
  risk = np.mean(correct - runner_up <= 1.0)
  frob = np.sqrt(np.sum(features**2) + N)  # bias feature included
  assert b['value'] == pytest.approx(_margin_bound_by_hand(risk, N, k, 1.0, 2.5, frob, 0.05))
  assert 'c4_binary_margin_upper' not in report['bounds']  # N4 at K = 2 is that bound
  assert report['inputs']['input_radius'] == pytest.approx(
      np.sqrt(np.max(np.sum(features**2, 1)) + 1))
  # Without features the radius bounds ‖X̃‖_F by r·sqrt(n).
  report = analyze.analyze(teacher, student, labels, tmp_path, n_train=N, weight_norm=2.5,
                           input_radius=4.0, figures=False)
  assert report['bounds']['n4_margin_upper']['value'] == pytest.approx(
      _margin_bound_by_hand(risk, N, k, 1.0, 2.5, 4.0 * np.sqrt(N), 0.05))
  with pytest.raises(analyze.InputError, match='input_radius'):
    analyze.analyze(teacher, student, labels, tmp_path, n_train=N, weight_norm=2.0)


def test_t1_on_teacher_student_and_baseline_through_the_registry(tmp_path):
  from scipy.stats import beta
  from xdistill_jax import bound_registry
  teacher, labels = _logits(8)
  rng = np.random.default_rng(9)
  student, baseline = teacher + 2 * rng.normal(size=teacher.shape), rng.normal(size=teacher.shape)
  report = analyze.analyze(teacher, student, labels, tmp_path, baseline_logits=baseline,
                           delta=0.1, figures=False)
  for model, logits in (('kd', student), ('teacher', teacher), ('baseline', baseline)):
    k = np.sum(np.argmax(logits, 1) != labels)
    up, lo = report['bounds'][f't1_upper_{model}'], report['bounds'][f't1_lower_{model}']
    assert up['value'] == pytest.approx(beta.ppf(0.9, k + 1, N - k), rel=1e-9)
    assert lo['value'] == pytest.approx(beta.ppf(0.1, k, N - k + 1), rel=1e-9)
    assert up['kind'] == 'test-set' and up['holds'] is None  # never judged on its own set
  # Every entry is the registry's value on the analysed columns (no second implementation).
  names = [n for n in report['bounds']]
  assert set(names) <= set(bound_registry.names())
  assert report['bounds']['n2_upper']['value'] == pytest.approx(
      (1 - report['accuracy']['teacher']) + report['accuracy']['disagreement'])
  # Without a baseline or N4 inputs those bounds are listed as skipped, with the reason.
  report = analyze.analyze(teacher, student, labels, tmp_path, figures=False)
  assert report['bounds_skipped']['t1_upper_baseline'] == 'missing column(s): baseline_err'
  assert 'n4_margin_upper' in report['bounds_skipped']
  assert 'Not evaluated' in (tmp_path / 'report.md').read_text()


def test_cli_writes_report_and_figures(tmp_path):
  teacher, labels = _logits(8)
  student = teacher + np.random.default_rng(9).normal(size=teacher.shape)
  np.savez(tmp_path / 'pair.npz', teacher=teacher, student=student, labels=labels)
  np.save(tmp_path / 'b.npy', np.zeros_like(teacher) + np.arange(K))
  out = tmp_path / 'out'
  code = analyze.main([f'--npz={tmp_path / "pair.npz"}', f'--baseline={tmp_path / "b.npy"}',
                       f'--workdir={out}'])
  assert code == 0
  for name in ('report.md', 'report.json', 'reliability.png', 'nckd_histogram.png',
               'error_vs_margin.png'):
    assert (out / name).stat().st_size > 0, name
  text = (out / 'report.md').read_text()
  assert 'D1' in text and 'NCKD' in text and 'ECE' in text and 'ω' in text
  report = json.loads((out / 'report.json').read_text())
  assert 0 <= report['calibration']['student']['ece'] <= 1
  assert report['inputs']['sources']['teacher'].endswith("pair.npz['teacher']")


def _bad_inputs(tmp_path):
  teacher, labels = _logits(10)
  student = teacher + 1.0
  def save(name, array):
    np.save(tmp_path / name, array)
    return str(tmp_path / name)
  good = {'teacher': save('t.npy', teacher), 'student': save('s.npy', student),
          'labels': save('y.npy', labels)}
  nan = teacher.copy()
  nan[7, 2] = np.nan
  probs = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
  return good, {
      'shape mismatch': ('student', save('short.npy', student[:-5]), 'shape mismatch'),
      'labels out of range': ('labels', save('big.npy', labels + K), 'out of range'),
      'non-integer labels': ('labels', save('frac.npy', labels + 0.5), 'non-integer'),
      'NaN': ('teacher', save('nan.npy', nan), 'NaN'),
      'probabilities': ('teacher', save('p.npy', probs), 'look like probabilities'),
      '1-D logits': ('student', save('flat.npy', student[:, 0]), '1-D'),
      'missing file': ('teacher', str(tmp_path / 'nope.npy'), 'file not found'),
  }


@pytest.mark.parametrize('case', ['shape mismatch', 'labels out of range', 'non-integer labels',
                                  'NaN', 'probabilities', '1-D logits', 'missing file'])
def test_bad_input_names_the_file_and_exits_2(tmp_path, capsys, case):
  good, bad = _bad_inputs(tmp_path)
  role, path, problem = bad[case]
  files = good | {role: path}
  code = analyze.main([f'--{r}={p}' for r, p in files.items()]
                      + [f'--workdir={tmp_path / "out"}'])
  err = capsys.readouterr().err
  assert code == 2
  assert path in err and problem in err, err
  assert 'Traceback' not in err
  assert not (tmp_path / 'out' / 'report.json').exists()


def test_probabilities_error_says_how_to_fix(tmp_path, capsys):
  good, bad = _bad_inputs(tmp_path)
  analyze.main([f'--teacher={bad["probabilities"][1]}', f'--student={good["student"]}',
                f'--labels={good["labels"]}', f'--workdir={tmp_path}'])
  assert 'pass logits (e.g. np.log(p))' in capsys.readouterr().err


def test_xdistill_analyze_command_exits_2_without_traceback(tmp_path):
  good, bad = _bad_inputs(tmp_path)
  result = subprocess.run(
      [sys.executable, '-m', 'xdistill_jax.cli', 'analyze', f'--teacher={good["teacher"]}',
       f'--student={good["student"]}', f'--labels={bad["labels out of range"][1]}',
       f'--workdir={tmp_path / "out"}'], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert 'big.npy' in result.stderr and 'out of range' in result.stderr
  assert 'Traceback' not in result.stderr
