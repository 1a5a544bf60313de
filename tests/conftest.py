"""Shared fixtures: tiny configs that exercise every code path in seconds."""

import os
import tempfile

import pytest

# The CLI's persistent compilation cache, private to this test session (subprocesses inherit).
os.environ.setdefault('XDISTILL_CACHE_DIR', tempfile.mkdtemp(prefix='xdistill_test_cache_'))

from xdistill_jax import config_files  # configs/NAME.py by path: config_files.load(NAME)


@pytest.fixture
def tiny_overlap_config():
  config = config_files.load('ntdh_overlap')
  config.overlaps = (0, 4, 10)
  config.runs = 3
  config.steps = 60
  config.n_train = 64
  config.n_test = 128
  config.sweep.progress = False
  return config
