"""REPRODUCTION.md and reproduction.json: one line per claim, readable without the papers."""

import json
import math
import pathlib

from xdistill_jax.reporting import tables

VERDICT_NOTE = {'holds': 'asserted: must hold', 'fails': 'measured to fail: must not hold',
                'open': 'open: reported only'}


def _number(x) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '–'
  if float(x) == int(x) and abs(x) >= 1:
    return f'{int(x)}'
  return f'{x:.3g}' if abs(x) >= 1e-3 or x == 0 else f'{x:.1e}'


def _p(result) -> str:
  if result['p'] is None:
    return 'exact rule'
  return f'p = {_number(result["p"])}, Holm {_number(result["p_holm"])}'


def figure_link(result, meta) -> str:
  """Relative link (from the report's directory) to the figure that shows the claim."""
  if not result['figure'] or result['sweep'] not in meta['sweeps']:
    return '–'
  path = f'{meta["sweeps"][result["sweep"]]["workdir"]}/{result["figure"]}'
  return f'[{result["figure"]}]({path})'


def line(result, meta) -> str:
  """The claim's table row: id, claim, statistic = value [95 % interval], test, verdict."""
  mark = 'pass' if result['passed'] else '**FAIL**'
  return (f'| `{result["id"]}` | {result["statement"]} ({result["source"]}) | '
          f'{result["statistic"]} = {_number(result["value"])} '
          f'[{_number(result["low"])}, {_number(result["high"])}], n = {result["n"]} | '
          f'{_p(result)}; {result["rule"]} | **{result["verdict"]}** | '
          f'{VERDICT_NOTE[result["expect"]]}: {mark} | {figure_link(result, meta)} |')


def markdown(results, meta) -> str:
  passed = sum(r['passed'] for r in results)
  lines = [
      '# Reproduction of the papers’ claims', '',
      f'{meta["mode"]} run; {passed} of {len(results)} claims meet the project’s registered '
      f'expectation. jax {meta["jax_version"]} on {meta["backend"]}, xdistill_jax '
      f'{meta["library_version"]}, Python {meta["python"]}.', '',
      'Each line is one claim: what it says, the number that decides it with its 95 % '
      'interval, the pre-registered rule (one-sided tests at level '
      f'{meta["alpha"]}, Holm-corrected over the tests of this run; seeds are the units), the '
      'verdict (holds / fails / inconclusive) and whether it is what the project registered: '
      'asserted claims must hold, claims measured to fail must not hold. Δ is the KD student’s '
      'test accuracy minus that of the same student trained without the teacher, in points; '
      'NCKD and TCKD are the teacher–student divergences over the non-target classes and '
      'over target-vs-rest (nats); γ and α measure how much the two modalities share.', '',
      '| claim | what is claimed | statistic [95 % interval] | test | verdict | expectation '
      '| figure |', '|---|---|---|---|---|---|---|']
  lines += [line(r, meta) for r in results]
  lines += ['', '## Sweeps', '', '| sweep | config | overrides | directory | wall s | CPU s |',
            '|---|---|---|---|---|---|']
  for name, s in meta['sweeps'].items():
    overrides = ', '.join(f'{k}={v}' for k, v in s['overrides'].items()) or 'none (defaults)'
    lines.append(f'| {name} | configs/{s["config"]}.py | {overrides} | {s["workdir"]} | '
                 f'{s["wall_s"]} | {s["cpu_s"]} |')
  return '\n'.join(lines) + '\n'


def write(workdir, results, meta) -> list[pathlib.Path]:
  """Writes REPRODUCTION.md and reproduction.json into `workdir` (atomically)."""
  workdir = pathlib.Path(workdir)
  md, js = workdir / 'REPRODUCTION.md', workdir / 'reproduction.json'
  tables.atomic_write_text(md, markdown(results, meta))
  clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
           for r in results]
  tables.atomic_write_text(js, json.dumps(meta | {'claims': clean}, indent=2) + '\n')
  return [md, js]


def summary_lines(results) -> list[str]:
  return [f'{r["id"]}: {r["verdict"]} ({r["expect"]} registered) -> '
          f'{"pass" if r["passed"] else "FAIL"}' for r in results]
