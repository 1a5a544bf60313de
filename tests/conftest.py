"""Shared fixtures: tiny configs that exercise every code path in seconds."""

import os
import tempfile

import pytest

# The CLI's persistent compilation cache, private to this test session (subprocesses inherit).
os.environ.setdefault('XDISTILL_CACHE_DIR', tempfile.mkdtemp(prefix='xdistill_test_cache_'))

from xdistill_jax import cli
from xdistill_jax import config_files  # configs/NAME.py by path: config_files.load(NAME)

# In-process tests compile at the CLI's LLVM level on a CPU: what users run, and the suite's
# many small programs compile faster. Set before JAX starts.
os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', '')]
                                   + cli.cpu_llvm_flags(os.environ.get('XLA_FLAGS', ''))).strip()


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
