"""Experiments, one module per protocol, looked up by `config.experiment`."""

import importlib

from xdistill_jax.config_schema import ConfigError
from xdistill_jax.experiments.base import Experiment

_MODULES = {
    'ntdh_overlap': 'xdistill_jax.experiments.ntdh_overlap',
    'ntdh_samples': 'xdistill_jax.experiments.ntdh_samples',
    'ntdh_kclass': 'xdistill_jax.experiments.ntdh_kclass',
    'ntdh_table1': 'xdistill_jax.experiments.ntdh_table1',
    'ntdh_feature_mask': 'xdistill_jax.experiments.ntdh_feature_mask',
    'cmcd': 'xdistill_jax.experiments.cmcd',
    'cmcd_shift': 'xdistill_jax.experiments.cmcd_shift',
    'digits_overlap': 'xdistill_jax.experiments.digits_overlap',
    'paired': 'xdistill_jax.experiments.paired', 'digits_m': 'xdistill_jax.experiments.digits_m',
}


def get(name: str) -> Experiment:
  if name not in _MODULES:
    raise ConfigError(
        f'config.experiment={name!r} is invalid; allowed: one of {", ".join(sorted(_MODULES))}.')
  return importlib.import_module(_MODULES[name]).EXPERIMENT
