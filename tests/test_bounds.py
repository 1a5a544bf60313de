"""Tests of xdistill_jax.bounds: deterministic bounds on random inputs, closed forms against
Monte Carlo, generalisation bounds against hand-computed values.

Per-example divergences are computed here in numpy float64, independently of
xdistill_jax.divergences.
"""

import doctest
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from xdistill_jax import bounds as B

SETTINGS = settings(max_examples=50, deadline=None)


# ------------------------------------------------------------------ independent numpy reference


def _log_softmax(z):
  return z - logsumexp(z, axis=-1, keepdims=True)


def per_example_divergences(zt, zs, y):
  """KL(p‖q), TCKD, NCKD and p_y per example, float64, in log space."""
  zt, zs = np.asarray(zt, np.float64), np.asarray(zs, np.float64)
  is_y = np.arange(zt.shape[-1]) == y[:, None]
  lp, lq = _log_softmax(zt), _log_softmax(zs)
  p = np.exp(lp)
  kl = np.sum(p * (lp - lq), axis=-1)
  lp_y, lq_y = lp[is_y], lq[is_y]
  nt_t, nt_s = np.where(is_y, -np.inf, zt), np.where(is_y, -np.inf, zs)
  lp_not = logsumexp(nt_t, axis=-1) - logsumexp(zt, axis=-1)  # log(1 - p_y)
  lq_not = logsumexp(nt_s, axis=-1) - logsumexp(zs, axis=-1)
  p_y, p_not = np.exp(lp_y), np.exp(lp_not)
  tckd = p_y * (lp_y - lq_y) + p_not * (lp_not - lq_not)
  lph = nt_t - logsumexp(nt_t, axis=-1, keepdims=True)
  lqh = nt_s - logsumexp(nt_s, axis=-1, keepdims=True)
  with np.errstate(invalid='ignore'):  # -inf - -inf at the target class, masked out
    nckd = np.sum(np.where(is_y, 0.0, np.exp(lph) * (lph - lqh)), axis=-1)
  return kl, tckd, nckd, p_y


@st.composite
def logits_and_labels(draw, max_k=6, max_n=16):
  k = draw(st.integers(2, max_k))
  n = draw(st.integers(1, max_n))
  elems = st.floats(-12.0, 12.0, allow_nan=False, allow_infinity=False)
  zt = draw(hnp.arrays(np.float64, (n, k), elements=elems))
  zs = draw(hnp.arrays(np.float64, (n, k), elements=elems))
  y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
  return zt, zs, y


def _close_le(a, b, rtol=1e-9):
  return np.all(a <= b + rtol * np.maximum(1.0, np.abs(b)))


# ------------------------------------------------------------------ N1


@SETTINGS
@given(logits_and_labels())
def test_n1_sandwich_holds_on_random_logits(data):
  zt, zs, y = data
  kl, tckd, nckd, p_y = per_example_divergences(zt, zs, y)
  np.testing.assert_allclose(kl, tckd + (1 - p_y) * nckd, rtol=1e-7, atol=1e-9)  # D1 sanity
  lower, upper = B.approximation_error_sandwich_from_examples(tckd, nckd, p_y)
  eps = kl.mean()
  assert _close_le(lower, eps) and _close_le(eps, upper)
  s = B.approximation_error_sandwich_inputs(tckd, nckd, p_y)
  lo2, hi2 = B.approximation_error_sandwich(s['d_nt'], s['d_tc'], s['max_py'], s['min_py'])
  assert lo2 == lower and hi2 == upper


def test_n1_is_tight_for_two_classes():
  rng = np.random.default_rng(0)
  zt, zs = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
  y = rng.integers(0, 2, 50)
  kl, tckd, nckd, p_y = per_example_divergences(zt, zs, y)
  assert np.all(nckd == 0.0)
  lower, upper = B.approximation_error_sandwich_from_examples(tckd, nckd, p_y)
  # K = 2: NCKD = 0, so both sides equal D_TC = ε (the lower side keeps D_TC).
  np.testing.assert_allclose(lower, kl.mean(), rtol=1e-12)
  np.testing.assert_allclose(upper, kl.mean(), rtol=1e-12)


def test_n1_lower_keeps_the_target_part():
  tckd, nckd, p_y = np.array([0.1, 0.3]), np.array([1.0, 2.0]), np.array([0.5, 0.8])
  lower = B.approximation_error_sandwich_from_examples(tckd, nckd, p_y)[0]
  assert lower == pytest.approx(np.mean(tckd) + (1 - 0.8) * np.mean(nckd))  # 0.2 + 0.3


def test_n1_mask_equals_subsample():
  rng = np.random.default_rng(1)
  tckd, nckd, p_y = rng.random(30), rng.random(30), rng.random(30)
  mask = rng.random(30) < 0.5
  a = B.approximation_error_sandwich_from_examples(tckd, nckd, p_y, mask=mask)
  b = B.approximation_error_sandwich_from_examples(tckd[mask], nckd[mask], p_y[mask])
  np.testing.assert_allclose(a, b, rtol=1e-12)


# ------------------------------------------------------------------ N2


@SETTINGS
@given(logits_and_labels())
def test_n2_sandwich_and_pinsker_bound_hold(data):
  zt, zs, y = data
  kl, _, _, _ = per_example_divergences(zt, zs, y)
  p = np.exp(_log_softmax(zt))
  err_t = np.mean(np.argmax(zt, -1) != y)
  err_s = np.mean(np.argmax(zs, -1) != y)
  dis = B.argmax_disagreement(zt, zs)
  assert dis == np.mean(np.argmax(zt, -1) != np.argmax(zs, -1))
  lower, upper = B.teacher_agreement_sandwich(err_t, dis)
  assert lower <= err_s + 1e-12 and err_s <= upper + 1e-12
  margin = B.top2_margin(p)
  dis_bound = B.pinsker_disagreement_bound(kl, margin)
  assert dis <= dis_bound
  assert err_s <= B.teacher_agreement_sandwich(err_t, dis_bound)[1] + 1e-12


def test_top2_margin_and_axis():
  probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(B.top2_margin(probs), [0.3, 0.0])
  np.testing.assert_allclose(B.top2_margin(probs.T, axis=0), [0.3, 0.0])


def test_pinsker_exact_statement_counts_only_possible_flips():
  kl = np.array([0.0, 0.1, 0.2])
  margin = np.array([0.5, 0.5, 0.5])  # m²/2 = 0.125
  assert B.pinsker_disagreement_bound(kl, margin, atol=0.0) == pytest.approx(1 / 3)


# ------------------------------------------------------------------ N3


@pytest.mark.parametrize(
  'seed, mask',
  [
    (0, np.arange(20) < 10),  # protocol G student: first 10 decisive features
    (1, (np.arange(20) >= 6) & (np.arange(20) < 16)),  # a teacher with overlap 4
    (2, np.arange(20) < 3),  # sees little
    (3, np.arange(20) < 18),  # sees almost everything
  ],
)
def test_n3_closed_form_matches_monte_carlo(seed, mask):
  a = np.random.default_rng(seed).normal(size=20)
  exact = B.decisive_feature_bayes_floor(a, mask)
  est, se = B.decisive_feature_bayes_floor_monte_carlo(
    jax.random.key(seed), jnp.asarray(a), jnp.asarray(mask), 200_000
  )
  assert 0 < float(se) < 0.005
  assert abs(float(est) - exact) <= 3 * float(se)


def test_n3_edge_cases_and_broadcasting():
  a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1e200, 1e200, 0.0]])
  mask = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [1, 0, 1]])
  floors = B.decisive_feature_bayes_floor(a, mask)
  np.testing.assert_allclose(floors, [0.5, 0.0, 0.0, 0.25], atol=1e-12)
  # jax path, jit, and a shared mask broadcast against a batch of hyperplanes.
  f = jax.jit(B.decisive_feature_bayes_floor)
  out = f(jnp.asarray(a[:2], jnp.float32), jnp.array([True, False, True]))
  expected = math.atan(2.0 / math.sqrt(10.0)) / math.pi
  np.testing.assert_allclose(np.asarray(out), [expected, expected], rtol=1e-6)
  assert not np.any(np.isnan(np.asarray(f(jnp.zeros((2, 3)), jnp.zeros(3, bool)))))


# ------------------------------------------------------------------ N4 / C4


def test_vc_bound_hand_computed():
  # 0.1 + sqrt((26 (ln(2000/26) + 1) - ln(0.05/4)) / 1000)
  by_hand = 0.1 + math.sqrt((26 * (math.log(2000 / 26) + 1) - math.log(0.0125)) / 1000)
  assert by_hand == pytest.approx(0.478543, abs=1e-6)
  assert B.vc_bound(0.1, 1000, 26, 0.05) == pytest.approx(by_hand, rel=1e-12)
  assert B.linear_vc_dimension(25) == 26
  col = B.vc_bound(np.array([0.1, 0.2]), np.array([1000, 200]), 26, 0.05)
  assert col.shape == (2,) and col[0] == pytest.approx(by_hand)


def _margin_bound_reference(risk, n, k, rho, lam, frob, delta):
  """N4-margin / C4 of theory.md §6 written out in numpy from the formula."""
  j = 1
  while 2.0**j < lam:  # smallest grid point Λ_j = 2^j ≥ Λ, j ≥ 1
    j += 1
  c_k = 2.0 if k == 2 else 4.0 * k
  delta_j = delta / (j * (j + 1))
  return risk + c_k * (2.0**j / rho) * frob / n + 3 * math.sqrt(math.log(2 / delta_j) / (2 * n))


@pytest.mark.parametrize('lam', [0.01, 1.0, 2.0, 2.0001, 3.7, 4.0, 100.0])
@pytest.mark.parametrize('k', [2, 3, 8])
def test_margin_bound_constants_and_weight_grid(lam, k):
  rng = np.random.default_rng(k)
  x = rng.normal(size=(150, 6))
  frob = math.sqrt(np.sum(x**2) + len(x))  # x̃ = [x, 1]
  ref = _margin_bound_reference(0.07, 150, k, 0.5, lam, frob, 0.05)
  assert B.margin_bound(0.07, 150, k, 0.5, lam, frob, 0.05) == pytest.approx(ref, rel=1e-12)
  out = jax.jit(B.margin_bound)(*(jnp.float32(v) for v in (0.07, 150, k, 0.5, lam, frob, 0.05)))
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5)


def test_margin_weight_grid_and_union_bound():
  lam = np.array([0.0, 0.5, 2.0, 2.5, 4.0, 4.0001, 1000.0, np.nan, -1.0])
  grid, j = B.margin_weight_grid(lam)
  np.testing.assert_array_equal(j[:7], [1, 1, 1, 2, 2, 3, 10])
  np.testing.assert_array_equal(grid[:7], 2.0 ** j[:7])
  assert np.all(grid[:7] >= lam[:7]) and np.all(np.isnan(j[7:]))
  # Σ_j δ/(j(j + 1)) = δ: the union over the grid costs exactly δ.
  js = np.arange(1, 200_001, dtype=np.float64)
  assert np.sum(0.05 / (js * (js + 1))) == pytest.approx(0.05, rel=1e-4)
  # jit/vmap over a column of norms.
  out = jax.jit(jax.vmap(lambda v: B.margin_weight_grid(v)[0]))(jnp.asarray(lam[:7], jnp.float32))
  np.testing.assert_array_equal(np.asarray(out), grid[:7])


def test_margin_weight_norm_binary_difference_and_frobenius():
  rng = np.random.default_rng(3)
  w2, w5 = rng.normal(size=(7, 2)), rng.normal(size=(7, 5))
  assert B.margin_weight_norm(w2) == pytest.approx(np.linalg.norm(w2[:, 1] - w2[:, 0]))
  assert B.margin_weight_norm(w5) == pytest.approx(np.sqrt(np.sum(w5**2)))
  # The binary margin of h = s₁ − s₀ equals the two-class multiclass margin, and
  # |h(x)| ≤ ‖w̃₁ − w̃₀‖·‖x̃‖ (Cauchy–Schwarz): the Λ the binary bound needs.
  x = np.concatenate([rng.normal(size=(40, 6)), np.ones((40, 1))], 1)
  h = x @ (w2[:, 1] - w2[:, 0])
  assert np.all(np.abs(h) <= B.margin_weight_norm(w2) * np.linalg.norm(x, axis=1) + 1e-12)


def test_margin_inputs_of_a_linear_head_match_numpy():
  from xdistill_jax import measures
  rng = np.random.default_rng(4)
  x = rng.normal(size=(30, 5)).astype(np.float32)
  y = rng.integers(0, 3, 30)
  params = {'params': {'dense': {'kernel': rng.normal(size=(5, 3)).astype(np.float32),
                                 'bias': rng.normal(size=3).astype(np.float32)}}}
  kernel, bias = params['params']['dense']['kernel'], params['params']['dense']['bias']
  logits = x @ kernel + bias
  mask = (np.arange(30) < 20).astype(np.float32)
  out = measures.margin_bound_inputs(jnp.asarray(logits), jnp.asarray(x), jnp.asarray(y),
                                     params, 1.0, prefix='kd_', weights=jnp.asarray(mask))
  w_aug = np.concatenate([kernel, bias[None]], 0)
  assert float(out['kd_margin_norm']) == pytest.approx(np.sqrt(np.sum(w_aug**2)), rel=1e-5)
  assert float(out['input_frobenius_norm']) == pytest.approx(
    np.sqrt(np.sum(x[:20] ** 2) + 20), rel=1e-5)
  margins = logits[np.arange(30), y] - np.max(np.where(np.eye(3)[y] > 0, -np.inf, logits), 1)
  assert float(out['kd_margin_risk']) == pytest.approx(np.mean(margins[:20] <= 1.0))


def test_empirical_margin_risk_conventions_agree_for_two_classes():
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(200, 2))
  labels = rng.integers(0, 2, 200)
  multi = B.empirical_margin_risk(scores, labels, 0.3)
  binary = B.empirical_margin_risk(scores[:, 1] - scores[:, 0], labels, 0.3)
  pm_one = B.empirical_margin_risk(scores[:, 1] - scores[:, 0], 2 * labels - 1, 0.3)
  assert multi == binary == pm_one
  margins = np.where(labels == 1, 1, -1) * (scores[:, 1] - scores[:, 0])
  assert multi == np.mean(margins <= 0.3)
  # rho = 0 gives an upper bound on the 0-1 error (ties count as errors).
  assert B.empirical_margin_risk(scores, labels, 0.0) >= np.mean(scores.argmax(-1) != labels)
  mask = rng.random(200) < 0.3
  assert B.empirical_margin_risk(scores, labels, 0.3, mask=mask) == pytest.approx(
    B.empirical_margin_risk(scores[mask], labels[mask], 0.3)
  )


def test_empirical_margin_risk_multiclass_value():
  scores = np.array([[3.0, 1.0, 2.5], [0.0, 2.0, -1.0], [1.0, 1.0, 0.0]])
  labels = np.array([0, 1, 0])  # margins 0.5, 2.0, 0.0
  assert B.empirical_margin_risk(scores, labels, 0.5) == pytest.approx(2 / 3)
  assert B.empirical_margin_risk(scores, labels, 0.4) == pytest.approx(1 / 3)


# ------------------------------------------------------------------ Rademacher


def _features(seed, m=40, d=5):
  return np.random.default_rng(seed).normal(size=(m, d))


@pytest.mark.parametrize('seed, d', [(0, 5), (1, 1), (2, 12)])
def test_rademacher_closed_form_dominates_monte_carlo(seed, d):
  z = _features(seed, d=d)
  closed = B.rademacher_linear_closed_form(z, 1.5)
  est, se = B.rademacher_linear_monte_carlo(jax.random.key(seed), jnp.asarray(z), 1.5, 4000)
  assert float(est) <= closed
  assert float(se) > 0
  # The MC estimate is also of the right size (Jensen gap is small).
  assert float(est) > 0.7 * closed


def test_rademacher_monte_carlo_converges_and_se_shrinks():
  z = jnp.asarray(_features(3))
  key = jax.random.key(7)
  small = B.rademacher_linear_monte_carlo(jax.random.fold_in(key, 1), z, 1.0, 200)
  large = B.rademacher_linear_monte_carlo(jax.random.fold_in(key, 2), z, 1.0, 20_000)
  ref = B.rademacher_linear_monte_carlo(jax.random.fold_in(key, 3), z, 1.0, 200_000)
  ratio = float(small[1]) / float(large[1])
  assert 7.0 < ratio < 14.0  # ~ sqrt(20000 / 200) = 10
  for est, se in (small, large):
    assert abs(float(est) - float(ref[0])) <= 3 * math.hypot(float(se), float(ref[1]))


def test_rademacher_mask_equals_subsample():
  rng = np.random.default_rng(4)
  z = rng.normal(size=(60, 4))
  mask = rng.random(60) < 0.4
  np.testing.assert_allclose(
    B.rademacher_linear_closed_form(z, 2.0, mask=mask),
    B.rademacher_linear_closed_form(z[mask], 2.0),
    rtol=1e-12,
  )
  key = jax.random.key(0)
  # A prefix mask reproduces the sub-sample run exactly (signs depend on (key, row)).
  prefix = np.arange(60) < 25
  masked = B.rademacher_linear_monte_carlo(key, z, 2.0, 3000, mask=prefix)
  sub = B.rademacher_linear_monte_carlo(key, z[:25], 2.0, 3000)
  np.testing.assert_allclose(np.asarray(masked), np.asarray(sub), rtol=1e-5)
  # An arbitrary mask agrees with the sub-sample statistically.
  est_m, se_m = B.rademacher_linear_monte_carlo(key, z, 2.0, 3000, mask=mask)
  est_s, se_s = B.rademacher_linear_monte_carlo(jax.random.key(1), z[mask], 2.0, 3000)
  assert abs(float(est_m) - float(est_s)) <= 3 * math.hypot(float(se_m), float(se_s))


def test_rademacher_batched_settings():
  rng = np.random.default_rng(5)
  z = rng.normal(size=(3, 30, 4))
  masks = np.arange(30)[None, :] < np.array([[10], [20], [30]])
  norms = np.array([1.0, 2.0, 0.5])
  closed = B.rademacher_linear_closed_form(z, norms, mask=masks)
  for i in range(3):
    assert closed[i] == pytest.approx(B.rademacher_linear_closed_form(z[i][masks[i]], norms[i]))
  est, se = B.rademacher_linear_monte_carlo(jax.random.key(0), z, norms, 1000, mask=masks)
  assert est.shape == se.shape == (3,)
  for i in range(3):
    one = B.rademacher_linear_monte_carlo(jax.random.key(0), z[i], norms[i], 1000, mask=masks[i])
    np.testing.assert_allclose(np.asarray(est[i]), np.asarray(one[0]), rtol=1e-5)


# ------------------------------------------------------------------ C1 / C3 / C5, N5


@SETTINGS
@given(
  st.integers(2, 6).flatmap(
    lambda k: st.tuples(
      *(hnp.arrays(np.int64, (24,), elements=st.integers(0, k - 1)) for _ in range(3)),
      hnp.arrays(np.bool_, (24,)),
      hnp.arrays(np.bool_, (24,)),
    )
  )
)
def test_c3_holds_on_random_coupled_predictions(data):
  labels, pred_a, pred_b, broken, mask = data
  if not mask.any():
    mask[0] = True
  s = B.coupled_pair_statistics(labels, pred_a, pred_b, broken, mask=mask)
  assert s['target_err'] == pytest.approx(np.mean(pred_b[mask] != labels[mask]))
  middle = B.pair_disagreement_bound(s['source_err'], s['pair_disagreement'])
  split = B.pair_disagreement_split(s['source_err'], s['broken_fraction'], s['clean_disagreement'])
  assert s['target_err'] <= middle + 1e-12
  assert middle <= split + 1e-12  # C3-split is deterministic with the observed ε̂


def test_cmcd_and_rate_values():
  assert B.exact_tv_latent_bayes_floor(0.3, 4) == pytest.approx(0.225)
  np.testing.assert_allclose(
    B.exact_tv_latent_bayes_floor(np.array([0.0, 0.6]), np.array([2, 10])), [0.0, 0.54]
  )
  assert B.pair_disagreement_split(0.1, 0.2, 0.05) == pytest.approx(0.1 + 0.2 + 0.8 * 0.05)
  np.testing.assert_allclose(
    B.rate_reference(np.array([100, 400, 1600]), 100, 0.2, 0.5), [0.2, 0.1, 0.05]
  )
  assert B.rate_reference(1000, 100, 0.3, 1.0) == pytest.approx(0.03)


# ------------------------------------------------------------------ T1 (Clopper–Pearson)


def _cp_reference(k, n, delta):
  from scipy.stats import beta
  lower = np.where(k == 0, 0.0, beta.ppf(delta, np.maximum(k, 1), n - k + 1))
  upper = np.where(k == n, 1.0, beta.ppf(1 - delta, k + 1, np.maximum(n - k, 1)))
  return lower, upper


def _cp_cases():
  rng = np.random.default_rng(0)
  n = np.concatenate([[1, 1, 2, 5, 10, 1000, 1000, 10_000], rng.integers(1, 5000, 200)])
  k = np.concatenate([[0, 1, 1, 0, 10, 0, 300, 2500], rng.integers(0, n[8:] + 1)])
  delta = np.concatenate([[0.05] * 8, rng.choice([0.001, 0.01, 0.05, 0.1, 0.3], 200)])
  return k.astype(np.float64), n.astype(np.float64), delta


def test_clopper_pearson_matches_scipy_float64():
  k, n, delta = _cp_cases()
  lower_ref, upper_ref = _cp_reference(k, n, delta)
  np.testing.assert_allclose(B.clopper_pearson_lower(k, n, delta), lower_ref, rtol=1e-9, atol=1e-14)
  np.testing.assert_allclose(B.clopper_pearson_upper(k, n, delta), upper_ref, rtol=1e-9, atol=1e-14)
  assert np.all(B.clopper_pearson_lower(np.zeros(3), [1, 10, 100], 0.05) == 0.0)
  assert np.all(B.clopper_pearson_upper([1.0, 10, 100], [1, 10, 100], 0.05) == 1.0)
  lo, hi = B.clopper_pearson_interval(k / n, n, delta)
  np.testing.assert_allclose(lo, lower_ref, rtol=1e-9, atol=1e-14)
  np.testing.assert_allclose(hi, upper_ref, rtol=1e-9, atol=1e-14)


def test_clopper_pearson_float32_under_jit_and_vmap():
  k, n, delta = _cp_cases()
  lower_ref, upper_ref = _cp_reference(k, n, delta)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  for fn, ref in ((B.clopper_pearson_lower, lower_ref), (B.clopper_pearson_upper, upper_ref)):
    out = jax.jit(jax.vmap(fn))(f32(k), f32(n), f32(delta))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-4, atol=1e-6)
  with jax.enable_x64(True):
    out = jax.jit(jax.vmap(B.clopper_pearson_upper, (0, 0, None)))(
      jnp.asarray(k), jnp.asarray(n), jnp.float64(0.05))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), _cp_reference(k, n, 0.05)[1], rtol=1e-9)


def test_clopper_pearson_invalid_inputs_are_nan():
  out = B.clopper_pearson_upper(np.array([-1.0, 5.0, 2.5, 1.0, 1.0, np.nan]),
                                np.array([10.0, 4.0, 10.0, 0.0, 10.0, 10.0]),
                                np.array([0.05, 0.05, 0.05, 0.05, 1.5, 0.05]))
  assert np.all(np.isnan(out))
  assert np.isnan(B.beta_quantile(0.5, 0.0, 1.0)) and np.isnan(B.beta_quantile(1.5, 1.0, 1.0))


def test_clopper_pearson_coverage_by_monte_carlo():
  # A fixed classifier with known error R; 4000 independent test sets of n examples each.
  rng = np.random.default_rng(11)
  delta, trials = 0.1, 4000
  for risk, n in ((0.3, 200), (0.02, 150), (0.5, 40)):
    k = rng.binomial(n, risk, size=trials).astype(np.float64)
    upper = B.clopper_pearson_upper(k, n, delta)
    lower = B.clopper_pearson_lower(k, n, delta)
    # Each one-sided limit fails with probability ≤ δ; allow 3 binomial standard errors.
    slack = 3 * math.sqrt(delta * (1 - delta) / trials)
    assert np.mean(upper < risk) <= delta + slack
    assert np.mean(lower > risk) <= delta + slack
    # ... and is not trivially conservative: the upper limit fails at a rate near δ for
    # the larger n (the discrete binomial keeps it below δ).
    if n >= 150 and risk >= 0.3:
      assert np.mean(upper < risk) > 0.4 * delta


# ------------------------------------------------------------------ array namespaces, docs


def test_jax_inputs_jit_parity():
  args = (0.1, 1000.0, 26.0, 0.05)
  ref = B.vc_bound(*args)
  out = jax.jit(B.vc_bound)(*(jnp.float32(a) for a in args))
  assert isinstance(out, jax.Array)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5)
  assert isinstance(B.vc_bound(*args), (np.ndarray, np.floating))
  kl = jnp.array([[0.0, 0.3], [0.2, 0.0]])
  m = jnp.array([[0.5, 0.5], [0.1, 0.9]])
  np.testing.assert_allclose(
    np.asarray(jax.jit(B.pinsker_disagreement_bound)(kl, m)),
    B.pinsker_disagreement_bound(np.asarray(kl), np.asarray(m)),
  )


def test_docstring_examples():
  result = doctest.testmod(B, extraglobs={'jax': jax, 'jnp': jnp}, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 20 and result.failed == 0
