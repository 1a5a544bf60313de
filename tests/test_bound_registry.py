"""Tests of xdistill_jax.bound_registry: the registry API, the standard bounds' column
contract, and the deterministic standard bounds on simulated results tables (0 violations)."""

import textwrap

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from xdistill_jax import bound_registry as R
from xdistill_jax import bounds as B

_T1 = lambda err: (err, {err, 'n_test', 'confidence_delta'})
STANDARD = {
  'n1_lower': ('kl_test', 'lower', 'deterministic',
               {'tckd_test', 'nckd_test', 'max_teacher_py_test'}),
  'n1_upper': ('kl_test', 'upper', 'deterministic',
               {'tckd_test', 'nckd_test', 'min_teacher_py_test'}),
  'n2_lower': ('kd_err', 'lower', 'deterministic', {'teacher_err', 'disagreement_test'}),
  'n2_upper': ('kd_err', 'upper', 'deterministic', {'teacher_err', 'disagreement_test'}),
  'n2_pinsker_upper': ('kd_err', 'upper', 'deterministic',
                       {'teacher_err', 'pinsker_disagreement_test'}),
  'n3_lower_kd': ('kd_err', 'lower', 'expected-floor', {'bayes_floor_b'}),
  'n3_lower_baseline': ('baseline_err', 'lower', 'expected-floor', {'bayes_floor_b'}),
  'n4_vc_upper': ('kd_err', 'upper', 'probabilistic',
                  {'kd_train_err', 'n_train', 'vc_dim', 'confidence_delta'}),
  'n4_margin_upper': ('kd_err', 'upper', 'probabilistic',
                      {'kd_margin_risk', 'n_train', 'num_classes', 'margin_rho',
                       'kd_margin_norm', 'input_frobenius_norm', 'confidence_delta'}),
  'c5_lower': ('target_err', 'lower', 'expected-floor', {'epsilon', 'num_classes'}),
  'c3_upper': ('target_err', 'upper', 'deterministic', {'source_err', 'pair_disagreement'}),
  'c3_split_upper': ('target_err', 'upper', 'deterministic',
                     {'source_err', 'broken_fraction', 'clean_disagreement'}),
  'c4_probe_upper': ('target_err', 'upper', 'probabilistic',
                     {'probe_margin_risk', 'm_labelled', 'num_classes', 'margin_rho',
                      'probe_margin_norm', 'probe_input_frobenius_norm', 'confidence_delta'}),
}
for _model in ('kd', 'baseline', 'teacher', 'target'):
  for _side in ('upper', 'lower'):
    _err, _req = _T1(f'{_model}_err')
    STANDARD[f't1_{_side}_{_model}'] = (_err, _side, 'test-set', _req)


@pytest.fixture
def scratch():
  """Names registered during a test are removed afterwards."""
  before = set(R.names())
  yield
  for name in set(R.names()) - before:
    R.unregister(name)


def test_standard_bounds_contract():
  for name, (target, side, kind, requires) in STANDARD.items():
    b = R.get(name)
    assert (b.target, b.side, b.kind, set(b.requires)) == (target, side, kind, requires), name
    assert name in R.__doc__ or name.startswith('t1_'), name  # the docstring's table
  assert set(STANDARD) <= set(R.names())
  assert 'c4_upper' not in R.names()  # "C3 + C4" mixed a test-set and a training bound
  assert all(R.get(n).kind in R.KINDS for n in R.names())


def test_custom_bound_via_decorator(scratch):
  @R.bound(
    'my_upper',
    target='kd_err',
    side='upper',
    kind='probabilistic',
    requires=('kd_train_err', 'n_train', 'confidence_delta'),
    description='Hoeffding-style toy bound',
  )
  def my_upper(m):
    return m['kd_train_err'] + np.sqrt(np.log(1 / m['confidence_delta']) / (2 * m['n_train']))

  assert isinstance(my_upper, R.Bound) and R.get('my_upper') is my_upper
  table = {
    'kd_err': np.array([0.10, 0.50, np.nan, 0.2]),
    'kd_train_err': np.array([0.05, 0.05, 0.05, np.nan]),
    'n_train': np.array([100, 100, 100, 100]),
    'confidence_delta': np.full(4, 0.05),
  }
  assert 'my_upper' in R.applicable(table)
  assert 'my_upper' not in R.applicable(['kd_err', 'kd_train_err', 'n_train'])
  cols, summary = R.evaluate(['my_upper'], table)
  expected = 0.05 + np.sqrt(np.log(20) / 200)
  np.testing.assert_allclose(cols['my_upper'][:3], expected)
  # No n_test column: judged on the raw value, and the summary says so.
  np.testing.assert_array_equal(cols['my_upper_violated'], [False, True, False, False])
  assert cols['my_upper_violated'].dtype == bool
  np.testing.assert_array_equal(cols['my_upper_invalid'], [False, False, False, True])
  assert summary['my_upper'] == {
    'kind': 'probabilistic',
    'side': 'upper',
    'target': 'kd_err',
    'rule': R.RULES['probabilistic'],
    'interval': 'no sample size or standard error for the target: raw comparison',
    'violations': 1,
    'rate': 0.5,
    'n': 2,
    'invalid': 1,
    'exceeded': 1,
  }
  (line,) = R.report_lines(summary)
  assert line.startswith('my_upper (probabilistic, upper on kd_err): 1/2 violated')
  assert 'bug' not in line and '1 row(s) with non-finite inputs' in line


def test_deterministic_violation_is_counted_and_flagged(scratch):
  R.register(
    R.Bound(
      'too_tight',
      lambda m: m['teacher_err'],  # claims kd_err <= teacher_err, which is false
      target='kd_err',
      side='upper',
      kind='deterministic',
      requires=('teacher_err',),
    )
  )
  table = {'kd_err': np.array([0.1, 0.3, 0.2]), 'teacher_err': np.array([0.2, 0.2, 0.2])}
  cols, summary = R.evaluate('too_tight', table)
  assert summary['too_tight']['violations'] == 1 and summary['too_tight']['n'] == 3
  np.testing.assert_array_equal(cols['too_tight_violated'], [False, True, False])
  (line,) = R.report_lines(summary)
  assert line == 'too_tight (deterministic, upper on kd_err): 1/3 violated VIOLATED (bug)'
  # Equality within tolerance is not a violation.
  _, ok = R.evaluate('too_tight', {'kd_err': np.array([0.2 + 1e-9]), 'teacher_err': [0.2]})
  assert ok['too_tight']['violations'] == 0


def test_errors_are_clear(scratch):
  with pytest.raises(ValueError, match="unknown bound 'nope'.*n1_upper"):
    R.evaluate(['nope'], {'kd_err': np.zeros(2)})
  with pytest.raises(ValueError, match='lacks'):
    R.get('n2_upper')({'kd_err': np.zeros(2), 'teacher_err': np.zeros(2)})
  with pytest.raises(ValueError, match='own target'):
    R.Bound('b', lambda m: m['kd_err'], 'kd_err', 'upper', 'probabilistic', ('kd_err',))
  with pytest.raises(ValueError, match='already registered'):
    R.register(R.Bound('n2_upper', lambda m: m['x'], 'kd_err', 'upper', 'deterministic', ('x',)))
  with pytest.raises(ValueError, match='side'):
    R.Bound('b', lambda m: m['x'], 'kd_err', 'above', 'deterministic', ('x',))
  with pytest.raises(ValueError, match='kind'):
    R.Bound('b', lambda m: m['x'], 'kd_err', 'upper', 'certain', ('x',))
  sneaky = R.register(
    R.Bound('sneaky', lambda m: m['kd_err'], 'kd_err', 'upper', 'deterministic', ('x',))
  )
  with pytest.raises(KeyError, match='not in its requires'):
    sneaky({'kd_err': np.zeros(1), 'x': np.zeros(1)})
  replaced = R.register(
    R.Bound('sneaky', lambda m: m['x'], 'kd_err', 'upper', 'deterministic', ('x',)),
    overwrite=True,
  )
  assert R.get('sneaky') is replaced


def test_load_user_module(tmp_path, monkeypatch, scratch):
  (tmp_path / 'my_bounds_mod.py').write_text(
    textwrap.dedent(
      """
      from xdistill_jax import bound_registry as R

      @R.bound('half_err', target='kd_err', side='lower', kind='reference',
           requires=('teacher_err',))
      def half_err(m):
        return 0.5 * m['teacher_err']

      extra = R.Bound('extra_upper', lambda m: m['teacher_err'] + 1.0, 'kd_err',
              'upper', 'deterministic', ('teacher_err',))
      """
    )
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  obj = R.load('my_bounds_mod:half_err')
  assert obj is R.get('half_err')
  assert 'extra_upper' not in R.names()
  assert R.load('my_bounds_mod:extra') is R.get('extra_upper')  # attr Bound gets registered
  R.load(['my_bounds_mod'])  # iterable form, as for config.bound_modules; idempotent
  assert {'half_err', 'extra_upper'} <= set(R.applicable(['kd_err', 'teacher_err']))
  _, summary = R.evaluate(
    ['half_err'], {'kd_err': np.array([0.4, 0.1]), 'teacher_err': np.array([0.4, 0.4])}
  )
  assert summary['half_err']['violations'] is None  # a reference curve is not judged
  assert 'not judged (a guide curve, not a bound)' in R.report_lines(summary)[0]
  with pytest.raises(ImportError, match='no_such_module'):
    R.load('no_such_module_xyz:thing')
  with pytest.raises(AttributeError, match='missing'):
    R.load('my_bounds_mod:missing')


# ------------------------------------------------------------------ standard bounds on tables


def _simulated_ntdh_table(settings=60, n=50, k=4, seed=0):
  """Per setting: random teacher/student logits and labels -> the N1/N2 metric columns."""
  rng = np.random.default_rng(seed)
  cols = {c: [] for c in (
    'kl_test', 'tckd_test', 'nckd_test', 'max_teacher_py_test', 'min_teacher_py_test',
    'kd_err', 'teacher_err', 'disagreement_test', 'pinsker_disagreement_test')}
  for s in range(settings):
    scale = rng.uniform(0.1, 6.0)
    zt = scale * rng.normal(size=(n, k))
    zs = zt + rng.uniform(0, 3) * rng.normal(size=(n, k))  # related, as after KD
    y = np.where(rng.random(n) < 0.8, zt.argmax(-1), rng.integers(0, k, n))
    is_y = np.arange(k) == y[:, None]
    lp, lq = log_softmax(zt, -1), log_softmax(zs, -1)
    p = np.exp(lp)
    kl = np.sum(p * (lp - lq), -1)
    nt_t, nt_s = np.where(is_y, -np.inf, zt), np.where(is_y, -np.inf, zs)
    lp_not = logsumexp(nt_t, -1) - logsumexp(zt, -1)
    lq_not = logsumexp(nt_s, -1) - logsumexp(zs, -1)
    p_y = np.exp(lp[is_y])
    tckd = p_y * (lp[is_y] - lq[is_y]) + np.exp(lp_not) * (lp_not - lq_not)
    lph = nt_t - logsumexp(nt_t, -1, keepdims=True)
    lqh = nt_s - logsumexp(nt_s, -1, keepdims=True)
    with np.errstate(invalid='ignore'):
      nckd = np.sum(np.where(is_y, 0.0, np.exp(lph) * (lph - lqh)), -1)
    s_in = B.approximation_error_sandwich_inputs(tckd, nckd, p_y)
    cols['kl_test'].append(kl.mean())
    cols['tckd_test'].append(s_in['d_tc'])
    cols['nckd_test'].append(s_in['d_nt'])
    cols['max_teacher_py_test'].append(s_in['max_py'])
    cols['min_teacher_py_test'].append(s_in['min_py'])
    cols['kd_err'].append(np.mean(zs.argmax(-1) != y))
    cols['teacher_err'].append(np.mean(zt.argmax(-1) != y))
    cols['disagreement_test'].append(B.argmax_disagreement(zt, zs))
    cols['pinsker_disagreement_test'].append(B.pinsker_disagreement_bound(kl, B.top2_margin(p)))
  return {c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}


def test_standard_deterministic_ntdh_bounds_never_violated():
  table = _simulated_ntdh_table()
  found = R.applicable(table)
  expected = {'n1_lower', 'n1_upper', 'n2_lower', 'n2_upper', 'n2_pinsker_upper'}
  assert set(found) == expected
  cols, summary = R.evaluate(found, table)
  for name in expected:
    assert summary[name]['n'] == 60 and summary[name]['violations'] == 0, name
  lines = R.report_lines(summary)
  assert 'n1_upper (deterministic, upper on kl_test): 0/60 violated' in lines
  # The values are the formulas, and N1's lower side is not trivially zero.
  np.testing.assert_allclose(cols['n2_upper'], table['teacher_err'] + table['disagreement_test'])
  assert np.all(cols['n1_lower'] > 0)


def test_standard_cmcd_and_generalisation_bounds():
  rng = np.random.default_rng(1)
  rows, n = 40, 64
  cols = {c: [] for c in ('source_err', 'target_err', 'pair_disagreement', 'clean_disagreement',
                          'broken_fraction')}
  eps = rng.uniform(0, 0.6, rows)
  for e in eps:
    labels = rng.integers(0, 4, n)
    pred_a = np.where(rng.random(n) < 0.1, rng.integers(0, 4, n), labels)
    broken = rng.random(n) < e
    pred_b = np.where(broken | (rng.random(n) < 0.05), rng.integers(0, 4, n), pred_a)
    s = B.coupled_pair_statistics(labels, pred_a, pred_b, broken)
    for c in cols:
      cols[c].append(s[c])
  table = {c: np.asarray(v) for c, v in cols.items()}
  table.update(
    epsilon=eps,
    num_classes=np.full(rows, 8),
    probe_margin_risk=np.full(rows, 0.2),
    m_labelled=np.full(rows, 100),
    margin_rho=np.full(rows, 0.5),
    probe_margin_norm=np.full(rows, 3.0),
    probe_input_frobenius_norm=np.full(rows, 12.0),
    confidence_delta=np.full(rows, 0.05),
    n_test=np.full(rows, n),
  )
  found = set(R.applicable(table))
  assert found == {'c5_lower', 'c3_upper', 'c3_split_upper', 'c4_probe_upper',
                   't1_upper_target', 't1_lower_target', 'c3_certified_upper'}
  out, summary = R.evaluate(sorted(found), table)
  assert summary['c3_upper']['violations'] == 0
  assert summary['c3_split_upper']['violations'] == 0 and summary['c3_split_upper']['kind'] == (
    'deterministic')
  # C4 at K = 8: c_K = 4K = 32, Λ = 3 rounds up to 4 (j = 2, δ' = δ/6).
  c4 = 0.2 + 32 * (4 / 0.5) * 12 / 100 + 3 * np.sqrt(np.log(2 / (0.05 / 6)) / 200)
  np.testing.assert_allclose(out['c4_probe_upper'], c4)
  np.testing.assert_allclose(out['c5_lower'], eps * (1 - 1 / 8))
  eps_hat = table['broken_fraction']
  np.testing.assert_allclose(
    out['c3_split_upper'],
    table['source_err'] + eps_hat + (1 - eps_hat) * table['clean_disagreement'],
  )


def test_standard_n4_values_match_hand_computation():
  table = {
    'kd_err': np.array([0.2, 0.2]),
    'kd_train_err': np.array([0.1, 0.1]),
    'n_train': np.array([1000, 200]),
    'vc_dim': np.array([26, 26]),
    'confidence_delta': np.array([0.05, 0.05]),
    'kd_margin_risk': np.array([0.05, 0.05]),
    'num_classes': np.array([2, 2]),
    'margin_rho': np.array([1.0, 1.0]),
    'kd_margin_norm': np.array([3.0, 3.0]),
    'input_frobenius_norm': np.array([160.0, 72.0]),
  }
  out, summary = R.evaluate(['n4_vc_upper', 'n4_margin_upper'], table)
  assert out['n4_vc_upper'][0] == pytest.approx(0.478543, abs=1e-6)
  # K = 2: c_K = 2, Λ = 3 → Λ_2 = 4, δ' = 0.05/6.
  assert out['n4_margin_upper'][1] == pytest.approx(
    0.05 + 2 * 4 * 72 / 200 + 3 * np.sqrt(np.log(240) / 400), rel=1e-12)


def test_floors_and_probabilistic_bounds_are_judged_through_clopper_pearson():
  from scipy.stats import beta
  n, delta = 1000, 0.05
  # An exact floor equal to the expected error; the test errors dip below it by noise.
  rng = np.random.default_rng(0)
  k = rng.binomial(n, 0.25, size=400)
  table = {'kd_err': k / n, 'bayes_floor_b': np.full(400, 0.25), 'n_test': np.full(400, n),
           'confidence_delta': np.full(400, delta)}
  cols, summary = R.evaluate('n3_lower_kd', table)
  s = summary['n3_lower_kd']
  upper_cp = beta.ppf(1 - delta, k + 1, n - k)
  assert s['exceeded'] == np.sum(k / n < 0.25) > 100  # the raw error dips about half the time
  assert s['violations'] == np.sum(upper_cp < 0.25) <= 0.1 * 400  # real failures only, ≲ δ
  np.testing.assert_array_equal(cols['n3_lower_kd_violated'], upper_cp < 0.25)
  assert 'Clopper-Pearson' in s['interval']
  # A dip inside the interval is not counted; a real violation (floor far above) is.
  dip = {'kd_err': np.array([0.24, 0.15]), 'bayes_floor_b': np.array([0.25, 0.25]),
         'n_test': np.array([1000, 1000]), 'confidence_delta': np.array([delta, delta])}
  cols, summary = R.evaluate('n3_lower_kd', dip)
  np.testing.assert_array_equal(cols['n3_lower_kd_violated'], [False, True])
  # Upper side: a probabilistic bound below the CP lower limit of the error is violated.
  table = {'kd_err': np.array([0.30, 0.30]), 'kd_train_err': np.array([0.0, 0.0]),
           'n_train': np.array([1e9, 200.0]), 'vc_dim': np.array([1.0, 26.0]),
           'n_test': np.array([1000, 1000]), 'confidence_delta': np.array([delta, delta])}
  cols, summary = R.evaluate('n4_vc_upper', table)
  np.testing.assert_array_equal(cols['n4_vc_upper_violated'], [True, False])
  assert summary['n4_vc_upper']['violations'] == 1


def test_test_set_bounds_are_not_judged_and_match_scipy():
  from scipy.stats import beta
  err = np.array([0.0, 0.3, 1.0, 0.123])
  table = {'kd_err': err, 'n_test': np.array([100, 1000, 50, 1000]),
           'confidence_delta': np.full(4, 0.05)}
  cols, summary = R.evaluate(['t1_upper_kd', 't1_lower_kd'], table)
  k, n = np.round(err * table['n_test']), table['n_test']
  np.testing.assert_allclose(
    cols['t1_upper_kd'], np.where(k == n, 1.0, beta.ppf(0.95, k + 1, np.maximum(n - k, 1))),
    rtol=1e-9)
  np.testing.assert_allclose(
    cols['t1_lower_kd'], np.where(k == 0, 0.0, beta.ppf(0.05, np.maximum(k, 1), n - k + 1)),
    rtol=1e-9, atol=1e-15)
  assert summary['t1_upper_kd']['violations'] is None and 't1_upper_kd_violated' not in cols
  assert 'not judged' in R.report_lines(summary)[0]


def test_missing_inputs_are_skipped_with_the_reason_and_nan_inputs_flagged():
  table = {'kd_err': np.array([0.3, 0.2, 0.1]), 'teacher_err': np.array([0.2, np.nan, 0.1]),
           'disagreement_test': np.array([0.2, 0.1, np.inf]), 'n_test': np.full(3, 100),
           'confidence_delta': np.full(3, 0.05)}
  names = R.relevant(table)
  assert 'n4_margin_upper' in names and 'n4_margin_upper' not in R.applicable(table)
  cols, summary = R.evaluate(names, table)  # never raises
  skipped = summary['n4_margin_upper']
  assert skipped['skipped'].startswith('missing column(s): kd_margin_risk')
  assert skipped['violations'] == 0 and skipped['n'] == 0 and 'n4_margin_upper' not in cols
  assert any(line.startswith('n4_margin_upper') and 'skipped (missing' in line
             for line in R.report_lines(summary))
  np.testing.assert_array_equal(np.isnan(cols['n2_upper']), [False, True, True])
  np.testing.assert_array_equal(cols['n2_upper_invalid'], [False, True, True])
  assert summary['n2_upper']['invalid'] == 2 and summary['n2_upper']['violations'] == 0
  assert cols['n2_upper'][0] == pytest.approx(0.4)
