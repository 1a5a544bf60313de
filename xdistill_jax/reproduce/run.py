"""`xdistill reproduce`: run the sweeps behind the chosen claims, decide, report.

Every sweep runs through the engine (`sweep.runner`) in its own work directory
DIR/sweeps/NAME (DIR/sweeps/NAME-quick with --quick), so an interrupted reproduction resumes
each sweep where it stopped and a finished one is only re-read. All configs and work
directories are checked before the first sweep compiles.
"""

import json
import pathlib
import platform
import sys
import time

import jax
import ml_collections

import xdistill_jax
from xdistill_jax import config_files
from xdistill_jax.config_schema import ConfigError
from xdistill_jax.reporting import tables
from xdistill_jax.reproduce import claims as claims_lib
from xdistill_jax.reproduce import report
from xdistill_jax.reproduce import stats
from xdistill_jax.sweep import runner

DEFAULT_WORKDIR = 'runs/reproduction'


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def select(ids, registry) -> list:
  """The claims named in `ids` (all of `registry` when empty), or a ConfigError listing the
  valid ids."""
  ids = [i.strip() for i in (ids or ()) if i.strip()]
  unknown = [i for i in ids if i not in registry]
  if unknown:
    raise ConfigError(f'--claims: unknown claim id(s) {", ".join(unknown)}; allowed: a comma-'
                      f'separated list of {", ".join(registry)}')
  return [registry[i] for i in (dict.fromkeys(ids) if ids else registry)]


def _override(config: ml_collections.ConfigDict, field: str, value) -> None:
  *groups, name = field.split('.')
  node = config
  for group in groups:
    node = node[group]
  node[name] = value


def sweep_config(sweep: claims_lib.Sweep, quick: bool) -> ml_collections.ConfigDict:
  """The config file of `sweep` with its full or --quick overrides."""
  stem, _, variant = sweep.config.partition(':')
  config = config_files.load(stem, variant or None)
  for field, value in (sweep.quick if quick else sweep.full).items():
    _override(config, field, value)
  config.sweep.progress = False
  return config


def sweep_dir(workdir, name: str, quick: bool) -> pathlib.Path:
  return pathlib.Path(workdir) / 'sweeps' / (f'{name}-quick' if quick else name)


def plan(chosen, workdir, quick: bool, sweeps) -> dict:
  """{sweep name: (config, work directory)} of the sweeps behind `chosen`, each validated and
  its work directory claimed (or refused) by the engine before anything compiles."""
  planned = {}
  for name in dict.fromkeys(c.sweep for c in chosen if c.sweep is not None):
    config = sweep_config(sweeps[name], quick)
    path = sweep_dir(workdir, name, quick)
    runner.check_workdir(config, path)
    planned[name] = (config, path)
  return planned


def evidence(config, path: pathlib.Path, quick: bool) -> claims_lib.Evidence:
  return claims_lib.Evidence(tables.read_csv(path / 'results.csv'),
                             json.loads((path / 'bounds.json').read_text()), config, quick)


def decide(chosen, measurements: dict) -> list[dict]:
  """Verdicts of the chosen claims from their measurements (`claims` module docstring):
  test claims through Holm over every test claim of the run, checks by their own rule. Each
  result says whether it meets the registered expectation (`passed`)."""
  tests = [c for c in chosen if c.rule == 'test']
  adjusted = dict(zip((c.id for c in tests), stats.holm([measurements[c.id].p for c in tests])))
  opposite = dict(zip((c.id for c in tests),
                      stats.holm([measurements[c.id].p_opposite for c in tests])))
  results = []
  for c in chosen:
    m = measurements[c.id]
    if c.rule == 'test':
      verdict = ('holds' if adjusted[c.id] <= claims_lib.ALPHA else
                 'fails' if opposite[c.id] <= claims_lib.ALPHA else 'inconclusive')
    else:
      verdict = 'holds' if m.passed else 'fails'
    passed = (c.expect == 'open' or (verdict == 'holds') == (c.expect == 'holds'))
    results.append({
        'id': c.id, 'source': c.source, 'statement': c.statement, 'statistic': c.statistic,
        'value': m.value, 'low': m.low, 'high': m.high, 'n': m.n, 'p': m.p,
        'p_holm': adjusted.get(c.id), 'p_opposite_holm': opposite.get(c.id),
        'rule': c.decision, 'expect': c.expect, 'verdict': verdict, 'passed': bool(passed),
        'sweep': c.sweep, 'figure': c.figure})
  return results


def reproduce(workdir=DEFAULT_WORKDIR, ids=None, quick: bool = False, registry=None,
              sweeps=None) -> int:
  """Runs (or resumes) the sweeps of the chosen claims, writes REPRODUCTION.md and
  reproduction.json in `workdir`; returns the exit status: 0 when every claim meets its
  registered expectation, 1 otherwise."""
  registry = claims_lib.CLAIMS if registry is None else registry
  sweeps = claims_lib.SWEEPS if sweeps is None else sweeps
  chosen = select(ids, registry)
  workdir = pathlib.Path(workdir)
  planned = plan(chosen, workdir, quick, sweeps)
  costs = {}
  for name, (config, path) in planned.items():
    _log(f'reproduce: sweep {name} ({sweeps[name].config}) in {path}')
    wall, cpu = time.perf_counter(), time.process_time()
    runner.run(config, path)
    costs[name] = {'wall_s': round(time.perf_counter() - wall, 1),
                   'cpu_s': round(time.process_time() - cpu, 1)}
  found = {name: evidence(config, path, quick) for name, (config, path) in planned.items()}
  measurements = {}
  for c in chosen:
    measurements[c.id] = c.measure(found.get(c.sweep))
  results = decide(chosen, measurements)
  meta = {'mode': 'quick' if quick else 'full', 'alpha': claims_lib.ALPHA,
          'library_version': xdistill_jax.__version__, 'jax_version': jax.__version__,
          'python': platform.python_version(), 'backend': jax.default_backend(),
          'sweeps': {name: {'config': sweeps[name].config,
                            'overrides': sweeps[name].quick if quick else sweeps[name].full,
                            'workdir': str(path.relative_to(workdir))} | costs[name]
                     for name, (_, path) in planned.items()}}
  for path in report.write(workdir, results, meta):
    _log(f'wrote {path}')
  for line in report.summary_lines(results):
    _log(line)
  return 0 if all(r['passed'] for r in results) else 1
