"""Shared fixtures: tiny configs that exercise every code path in seconds."""

import os
import tempfile

import pytest

# The CLI's persistent compilation cache, private to this test session (subprocesses inherit).
os.environ.setdefault('XDISTILL_CACHE_DIR', tempfile.mkdtemp(prefix='xdistill_test_cache_'))

from xdistill_jax import config_files  # configs/NAME.py by path: config_files.load(NAME)
from xdistill_jax import plugins

# In-process tests compile with the CLI's LLVM level on a CPU (`cli.configure_jax`): what
# users run, and the suite's many small programs compile faster. Set before JAX starts.
if not plugins.accelerator_installed() and 'optimization_level' not in os.environ.get(
    'XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_backend_optimization_level=1').strip()


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
