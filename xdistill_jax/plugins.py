"""Which JAX accelerator plugins are installed, answered without starting a backend.

Read by `cli.configure_jax` (XLA flags for CPU-only installs) before JAX picks its platform.
"""

import importlib.util

ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'libtpu')


def accelerator_installed() -> bool:
  """Whether any of `ACCELERATOR_PLUGINS` can be imported."""
  return any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)
