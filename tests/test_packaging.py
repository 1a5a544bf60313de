"""pyproject.toml against the code and the README: declared imports, Python version, CI."""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
README = (ROOT / 'README.md').read_text()


def _normalise(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _requirement_name(requirement: str) -> str:
  return _normalise(re.match(r'[A-Za-z0-9_.\-]+', requirement).group(0))


def _top_level_imports(paths) -> set[str]:
  names = set()
  for path in paths:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names |= {alias.name.split('.')[0] for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names.add(node.module.split('.')[0])
  return names


def test_every_third_party_import_of_the_package_and_configs_is_declared():
  paths = list((ROOT / 'xdistill_jax').rglob('*.py')) + list((ROOT / 'configs').glob('*.py'))
  imports = _top_level_imports(paths) - set(sys.stdlib_module_names) - {'xdistill_jax'}
  assert {'jax', 'absl', 'scipy', 'sklearn'} <= imports  # the scan sees them
  distributions = importlib.metadata.packages_distributions()
  declared = {_requirement_name(r) for r in PROJECT['dependencies']}
  missing = {m: distributions.get(m) for m in imports
             if not {_normalise(d) for d in distributions.get(m, [m])} & declared}
  assert not missing, f'imported but not in [project] dependencies: {missing}'


def test_the_readme_states_the_required_python():
  floor = re.fullmatch(r'>=(\d+\.\d+)', PROJECT['requires-python']).group(1)
  assert floor == '3.11'  # JAX >= 0.7 needs Python 3.11
  assert f'Python ≥ {floor})' in README
  assert not re.search(r'Python ≥ 3\.(?!11)\d+', README)


def test_ci_runs_the_readme_install_and_test_commands():
  commands = re.findall(r'```bash\n(python3 -m venv .venv && [^\n]+)\n```', README)
  assert len(commands) == 2, commands
  install, test = (c.split(' && ', 2)[2] for c in commands)  # after venv + activate
  ci = (ROOT / '.ci' / 'run').read_text()
  assert test in ci and install.split(' && ')[0] in ci
