"""Config files: `configs/NAME.py`, each defining `get_config()` (the flax-examples shape).

The numbers of every sweep live in its config file; the experiment modules hold structure,
axes and validation only. The CLI loads a file through `ml_collections.config_flags`
(`--config=configs/ntdh_table1.py:S`); tests, benchmarks and config files that build on a
sibling (`configs/ntdh_samples.py` on `configs/ntdh_overlap.py`) load one with `load`.
"""

import importlib.util
import pathlib
import types

import ml_collections

# The repository's configs/ folder (an editable install or a source checkout).
CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'


def _path(name_or_path, directory=None) -> pathlib.Path:
  path = pathlib.Path(name_or_path)
  if path.suffix != '.py':
    path = pathlib.Path(directory or CONFIG_DIR) / f'{name_or_path}.py'
  return path


def module(name_or_path, directory=None) -> types.ModuleType:
  """The config file `name_or_path` ('ntdh_overlap' = CONFIG_DIR/ntdh_overlap.py) as a module.

  Each call executes the file afresh (nothing is cached in `sys.modules`), so a caller never
  sees another's edits to module state.
  """
  path = _path(name_or_path, directory)
  if not path.is_file():
    raise FileNotFoundError(f'config file {path} does not exist.')
  spec = importlib.util.spec_from_file_location(f'xdistill_config_{path.stem}', path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def load(name_or_path, variant: str | None = None,
         directory=None) -> ml_collections.ConfigDict:
  """`get_config(variant)` of a config file, as `--config=PATH:VARIANT` would build it."""
  get_config = module(name_or_path, directory).get_config
  return get_config() if variant is None else get_config(variant)


def sibling(config_file: str, name: str) -> types.ModuleType:
  """The config file `name`.py beside `config_file` (pass `__file__`), as a module."""
  return module(name, pathlib.Path(config_file).resolve().parent)
