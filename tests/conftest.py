"""Shared fixtures: tiny configs that exercise every code path in seconds."""

import pytest

from xdistill_jax.experiments import ntdh_overlap


@pytest.fixture
def tiny_overlap_config():
  config = ntdh_overlap.default_config()
  config.overlaps = (0, 4, 10)
  config.runs = 3
  config.steps = 60
  config.n_train = 64
  config.n_test = 128
  config.sweep.progress = False
  return config
