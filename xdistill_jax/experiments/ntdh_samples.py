"""NTDH protocol G against the training-set size n: where the bounds stop being vacuous.

The sample size is a vmapped axis: every setting draws `max(sample_sizes)` training rows and
trains on the first n of them through 0/1 example weights, so all n share one compiled
program (`ntdh_overlap.train_weights`). The key ignores n, so a seed's training sets are
nested and its test set, hyperplane and initialisations are shared across n (a paired
learning curve). Figures plot error and the registered bounds against n
on log-log axes, with the O(n^-1/2) and O(n^-1) reference slopes of theory.md N5.
"""

import numpy as np

from xdistill_jax import config_schema
from xdistill_jax.experiments import base
from xdistill_jax.experiments import ntdh_overlap
from xdistill_jax.reporting import figures

FIELDS = tuple(f for f in ntdh_overlap.FIELDS if f != 'n_train') + ('sample_sizes',)


def _protocol_config(config):
  """The protocol-G config whose `n_train` rows are the largest sample size."""
  protocol = config.copy_and_resolve_references()
  protocol.unlock()
  protocol.n_train = max(config.sample_sizes)
  del protocol['sample_sizes']
  return protocol


def validate(config):
  config_schema.integer_list(config, 'sample_sizes', 2, 1_000_000)
  ntdh_overlap.validate(_protocol_config(config))


def axes(config):
  return {'n': np.asarray(config.sample_sizes, np.int32)} | ntdh_overlap.axes(config)


def make_setting_fn(config, with_params: bool = False):
  return ntdh_overlap.make_setting_fn(_protocol_config(config), with_params)


def derived(table, config):
  return ntdh_overlap.derived(table, config)


def make_figures(table, summary, config, workdir):
  paths = []
  for overlap in np.unique(summary['overlap']):
    rows = summary['overlap'] == overlap
    sub = {k: v[rows] for k, v in summary.items()}
    paths.append(figures.sample_size_figure(
        sub, workdir / f'ntdh_samples_o{overlap}.png', floor='bayes_floor_b',
        title=f'Protocol G, overlap o = {overlap}: KD-student error against n'))
  return paths


EXPERIMENT = base.Experiment(
    name='ntdh_samples', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('n', 'overlap'), figures=make_figures,
    derived=derived, nan_ok=ntdh_overlap.EXPERIMENT.nan_ok,
    key_axes=('overlap', 'seed'),  # every n of a seed sees the same draw: nested samples
    saves_params=True)
