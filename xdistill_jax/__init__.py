"""xdistill_jax: theory-versus-practice sweeps for cross-modal knowledge distillation.

Import the function library directly (`xdistill_jax.divergences`, `xdistill_jax.losses`,
`xdistill_jax.bounds`); experiments and the sweep engine live in their own subpackages.
"""

__version__ = '0.1.0'
