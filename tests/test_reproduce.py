"""`xdistill reproduce`: statistics against scipy, verdicts, report, bad input, resume."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats as sps

from xdistill_jax.config_schema import ConfigError
from xdistill_jax.reporting import tables
from xdistill_jax.reproduce import claims
from xdistill_jax.reproduce import report
from xdistill_jax.reproduce import run
from xdistill_jax.reproduce import stats
from xdistill_jax.sweep import store as store_lib

REPO = pathlib.Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------
# Statistical helpers against scipy and hand computations.
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('alternative', ['greater', 'less'])
@pytest.mark.parametrize('shift', [-0.4, 0.0, 0.3])
def test_t_test_matches_scipy_paired(alternative, shift):
  rng = np.random.default_rng(3)
  a = rng.normal(size=25)
  b = a - shift + rng.normal(scale=0.8, size=25)  # paired with a
  m = stats.t_test(a - b, alternative)
  ref = sps.ttest_rel(a, b, alternative=alternative)
  other = sps.ttest_rel(a, b, alternative='less' if alternative == 'greater' else 'greater')
  assert m.p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
  assert m.p_opposite == pytest.approx(other.pvalue, rel=1e-9, abs=1e-14)
  d = a - b
  low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
  assert (m.value, m.low, m.high, m.n) == pytest.approx((d.mean(), low, high, 25))


def test_t_test_drops_nan_and_handles_degenerate_input():
  m = stats.t_test([1.0, np.nan, 2.0, 3.0], 'greater')
  assert m.n == 3 and m.p == pytest.approx(sps.ttest_1samp([1, 2, 3], 0, alternative='greater').pvalue)
  assert stats.t_test([0.5, 0.5, 0.5], 'greater').p == 0.0  # certain sign
  assert stats.t_test([0.5, 0.5, 0.5], 'less').p == 1.0
  single = stats.t_test([1.0], 'greater')
  assert single.p == 1.0 and math.isnan(single.low)


def test_per_seed_slopes_match_polyfit():
  rng = np.random.default_rng(0)
  seed = np.repeat(np.arange(6), 4)
  x = np.tile([0.0, 0.2, 0.4, 0.6], 6)
  y = -0.15 * x + rng.normal(scale=0.02, size=24)
  slopes = stats.per_seed_slopes(x, y, seed)
  ref = [np.polyfit(x[seed == s], y[seed == s], 1)[0] for s in range(6)]
  np.testing.assert_allclose(slopes, ref, rtol=1e-10)
  m = stats.slope_test(x, y, seed, 'less')
  assert m.p == pytest.approx(sps.ttest_1samp(ref, 0, alternative='less').pvalue, rel=1e-8)


@pytest.mark.parametrize('alternative', ['greater', 'less'])
def test_spearman_test_matches_scipy(alternative):
  rng = np.random.default_rng(1)
  x = rng.normal(size=60)
  y = 0.35 * x + rng.normal(size=60)
  m = stats.spearman_test(x, y, alternative, permutations=5000)
  ref = sps.spearmanr(x, y, alternative=alternative)
  assert m.value == pytest.approx(ref.statistic, abs=1e-12)
  # A permutation p-value against scipy's t approximation: same within Monte Carlo error.
  assert m.p == pytest.approx(ref.pvalue, abs=max(0.01, 0.2 * ref.pvalue))
  assert m.p + m.p_opposite == pytest.approx(1.0)
  if alternative == 'less':
    return
  # The bootstrap interval against a direct scipy resampling of the same indices.
  index = np.random.default_rng(0).integers(0, 60, (2000, 60))
  boot = [sps.spearmanr(x[i], y[i]).statistic for i in index]
  np.testing.assert_allclose((m.low, m.high), np.percentile(boot, [2.5, 97.5]), atol=1e-9)


def test_spearman_test_undefined_is_never_significant():
  m = stats.spearman_test([1, 1, 1, 1], [1, 2, 3, 4], 'greater')
  assert math.isnan(m.value) and m.p == 1.0 and m.p_opposite == 1.0


def test_holm_against_hand_computation():
  p = [0.01, 0.04, 0.03, 0.005]
  # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> running max 0.06
  np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(stats.holm([0.5, np.nan]), [1.0, 1.0])
  np.testing.assert_allclose(stats.holm([0.3, 0.2]), [0.4, 0.4])
  assert stats.holm([]).shape == (0,)


def test_rate_checks_against_scipy_beta():
  m = stats.rate_at_most(3, 600, delta=0.05, alpha=0.01)
  assert m.value == pytest.approx(3 / 600) and m.passed
  assert m.low == pytest.approx(sps.beta.ppf(0.025, 3, 598), rel=1e-5)
  assert m.high == pytest.approx(sps.beta.ppf(0.975, 4, 597), rel=1e-5)
  # 60 of 600 violations: CP lower at 0.01 = Beta⁻¹(0.01; 60, 541) ≈ 0.074 > δ = 0.05.
  assert sps.beta.ppf(0.01, 60, 541) > 0.05
  assert not stats.rate_at_most(60, 600, delta=0.05, alpha=0.01).passed
  assert stats.zero_count(0, 10).passed and not stats.zero_count(1, 10).passed


def test_equivalence_by_hand():
  z = sps.norm.ppf(0.99)
  assert stats.equivalence([0.001, -0.002], [0.001, 0.001], 0.005, 0.01).passed  # 0.002+2.33e-3
  assert not stats.equivalence([0.001, -0.004], [0.001, 0.001], 0.005, 0.01).passed
  m = stats.equivalence([0.001, -0.004], [0.001, 0.002], 0.005, 0.01)
  assert m.value == pytest.approx(0.004) and m.high == pytest.approx(0.004 + 1.959964 * 0.002)
  assert 0.004 + z * 0.001 > 0.005


def test_bayes_floor_differences_are_small_and_independent_of_the_formula():
  d, se = (np.asarray(x) for x in claims.n3_floor_differences(jax.random.key(0), 2, 20_000))
  assert np.all(np.abs(d) < 4 * se) and np.all(se > 0)
  # ε = 0.5, K = 8: floor 0.4375, so the Monte Carlo standard error is sqrt(p(1 − p)/N).
  d, se = claims.c1_floor_differences(jax.random.key(1), epsilons=(0.5,), samples=20_000)
  assert abs(d[0]) < 4 * se[0]
  assert se[0] == pytest.approx(np.sqrt(0.4375 * 0.5625 / 20_000), rel=0.05)


# ------------------------------------------------------------------------------------------
# Verdicts on constructed data.
# ------------------------------------------------------------------------------------------
def _registry():
  reg = {}
  rng = np.random.default_rng(5)
  tables_ = {'hurts': rng.normal(-2.0, 1.0, 40), 'helps': rng.normal(+2.0, 1.0, 40),
             'noise': rng.normal(0.0, 1.0, 40)}
  for name, data in tables_.items():
    for expect in ('holds', 'fails'):
      claims.claim(f'{name}_{expect}', source='test', statement=f'Δ < 0 ({name})',
                   statistic='mean Δ', rule='test', alternative='less', expect=expect,
                   sweep=None, registry=reg)(lambda e, d=data: stats.t_test(d, 'less'))
  claims.claim('zero', source='test', statement='no violation', statistic='violations',
               rule='check', expect='holds', sweep=None, decision=claims.ZERO,
               registry=reg)(lambda e: stats.zero_count(1, 50))
  return reg


def test_constructed_claims_get_the_expected_verdicts():
  reg = _registry()
  chosen = list(reg.values())
  results = {r['id']: r for r in run.decide(chosen, {c.id: c.measure(None) for c in chosen})}
  assert results['hurts_holds']['verdict'] == 'holds' and results['hurts_holds']['passed']
  assert results['helps_holds']['verdict'] == 'fails' and not results['helps_holds']['passed']
  assert results['helps_fails']['passed'] and not results['hurts_fails']['passed']
  assert results['noise_holds']['verdict'] == 'inconclusive'
  assert not results['noise_holds']['passed'] and results['noise_fails']['passed']
  assert results['zero']['verdict'] == 'fails' and results['zero']['p'] is None
  # Holm over the six test claims of this run.
  raw = [results[c.id]['p'] for c in chosen if c.rule == 'test']
  np.testing.assert_allclose([results[c.id]['p_holm'] for c in chosen if c.rule == 'test'],
                             stats.holm(raw))


def test_registry_is_consistent():
  assert set(c.sweep for c in claims.CLAIMS.values()) - {None} <= set(claims.SWEEPS)
  for c in claims.CLAIMS.values():
    assert c.expect in claims.EXPECTATIONS and c.decision
    assert '|' not in c.statement + c.statistic  # a markdown table cell
  for sweep in claims.SWEEPS.values():
    for quick in (False, True):
      config = run.sweep_config(sweep, quick)
      run.runner.prepare(config)  # every pre-registered config validates


def test_report_format(tmp_path):
  reg = _registry()
  chosen = list(reg.values())
  results = run.decide(chosen, {c.id: c.measure(None) for c in chosen})
  results[0] |= {'sweep': 'g', 'figure': 'fig.png'}
  meta = {'mode': 'quick', 'alpha': 0.01, 'jax_version': '0', 'backend': 'cpu',
          'library_version': '0', 'python': '3', 'sweeps': {'g': {
              'config': 'ntdh_overlap', 'overrides': {'runs': 4}, 'workdir': 'sweeps/g-quick',
              'wall_s': 1.0, 'cpu_s': 2.0}}}
  md_path, json_path = report.write(tmp_path, results, meta)
  md = md_path.read_text().splitlines()
  body = [line for line in md if line.startswith('| `')]
  assert len(body) == len(results)  # one line per claim
  first = body[0]
  r = results[0]
  assert f'= {r["value"]:.3g} [{r["low"]:.3g}, {r["high"]:.3g}]' in first
  assert '**holds**' in first and '[fig.png](sweeps/g-quick/fig.png)' in first
  assert all(line.count('|') == 8 for line in body)
  assert any('**FAIL**' in line for line in body)
  data = json.loads(json_path.read_text())
  assert [c['id'] for c in data['claims']] == [c.id for c in chosen]
  assert data['claims'][-1]['p'] is None and data['sweeps']['g']['overrides'] == {'runs': 4}


def test_select_lists_valid_ids():
  with pytest.raises(ConfigError, match='unknown claim id.*nope.*allowed.*g_delta_gap'):
    run.select(['nope'], claims.CLAIMS)
  assert [c.id for c in run.select(['g_cmd_falls', ' g_delta_gap'], claims.CLAIMS)] == [
      'g_cmd_falls', 'g_delta_gap']


# ------------------------------------------------------------------------------------------
# Bad input through the console script: one line, exit 2, before compiling.
# ------------------------------------------------------------------------------------------
def _xdistill(*args, cwd):
  exe = pathlib.Path(sys.executable).with_name('xdistill')
  return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                        timeout=120, env=os.environ | {'JAX_PLATFORMS': 'cpu'})


def test_cli_unknown_claim_id(tmp_path):
  out = _xdistill('reproduce', '--claims=g_delta_gap,typo', f'--workdir={tmp_path}/w',
                  cwd=tmp_path)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('xdistill: error: --claims: unknown claim')
  assert 'typo' in lines[0] and 'dm_omega_large_gap' in lines[0]
  assert not (tmp_path / 'w').exists()


def test_cli_refuses_a_workdir_of_another_config(tmp_path):
  sweep = tmp_path / 'w' / 'sweeps' / 'ntdh_g-quick'
  sweep.mkdir(parents=True)
  (sweep / 'config.json').write_text(json.dumps(
      {'config': {'experiment': 'ntdh_overlap'}, 'results_config': {'runs': 3}}))
  out = _xdistill('reproduce', '--quick', '--claims=g_delta_gap', f'--workdir={tmp_path}/w',
                  cwd=tmp_path)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and 'holds a sweep with a different config' in lines[0]
  assert not (sweep / 'chunks').exists() and not (tmp_path / 'w' / 'REPRODUCTION.md').exists()


# ------------------------------------------------------------------------------------------
# An interrupted reproduction resumes its sweeps (the engine's resume).
# ------------------------------------------------------------------------------------------
TINY = {'tiny_g': claims.Sweep('ntdh_overlap', {}, {
    'runs': 2, 'overlaps': (0, 10), 'steps': 30, 'n_train': 64, 'n_test': 128,
    'sweep.chunk_size': 2, 'sweep.vmap_width': 1})}


def _tiny_registry():
  reg = {}
  claims.claim('tiny_rises', source='test', statement='Δ rises with γ', statistic='ρ',
               rule='test', alternative='greater', expect='open', sweep='tiny_g',
               figure='ntdh_overlap.png', registry=reg)(claims.CLAIMS['g_delta_rises'].measure)
  return reg


def test_interrupted_reproduce_resumes(tmp_path, monkeypatch, capsys):
  commit = store_lib.ChunkStore.commit
  calls = []

  def commit_then_die(self, index, metrics):
    if calls:
      raise KeyboardInterrupt  # killed after the first chunk committed
    calls.append(index)
    commit(self, index, metrics)

  monkeypatch.setattr(store_lib.ChunkStore, 'commit', commit_then_die)
  workdir = tmp_path / 'interrupted'
  with pytest.raises(KeyboardInterrupt):
    run.reproduce(workdir, quick=True, registry=_tiny_registry(), sweeps=TINY)
  chunks = workdir / 'sweeps' / 'tiny_g-quick' / 'chunks'
  first = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
  assert len(first) == 1 and not (workdir / 'REPRODUCTION.md').exists()
  monkeypatch.setattr(store_lib.ChunkStore, 'commit', commit)
  capsys.readouterr()
  assert run.reproduce(workdir, quick=True, registry=_tiny_registry(), sweeps=TINY) == 0
  assert 'resuming: 2 of 4 settings already committed' in capsys.readouterr().err
  after = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
  assert len(after) == 2 and {k: after[k] for k in first} == first  # not redone
  got = tables.read_csv(workdir / 'sweeps' / 'tiny_g-quick' / 'results.csv')
  assert sorted(got['index'].tolist()) == [0, 1, 2, 3]
  result = json.loads((workdir / 'reproduction.json').read_text())['claims'][0]
  rho = sps.spearmanr(got['gamma'], got['delta']).statistic
  assert result['id'] == 'tiny_rises' and result['value'] == pytest.approx(rho)
  assert 'tiny_rises' in (workdir / 'REPRODUCTION.md').read_text()


# ------------------------------------------------------------------------------------------
# End to end (python -m pytest -m reproduction): the whole quick reproduction.
# ------------------------------------------------------------------------------------------
@pytest.mark.reproduction
def test_reproduce_quick_end_to_end(tmp_path):
  exe = pathlib.Path(sys.executable).with_name('xdistill')
  out = subprocess.run([str(exe), 'reproduce', '--quick', f'--workdir={tmp_path}'],
                       capture_output=True, text=True, timeout=3600)
  data = json.loads((tmp_path / 'reproduction.json').read_text())
  failed = [c['id'] for c in data['claims'] if not c['passed']]
  assert out.returncode == (1 if failed else 0), out.stderr[-2000:]
  assert not failed, failed
  assert [c['id'] for c in data['claims']] == list(claims.CLAIMS)
  md = (tmp_path / 'REPRODUCTION.md').read_text()
  assert sum(line.startswith('| `') for line in md.splitlines()) == len(claims.CLAIMS)
  for c in data['claims']:
    if c['figure']:
      assert (tmp_path / data['sweeps'][c['sweep']]['workdir'] / c['figure']).is_file()
