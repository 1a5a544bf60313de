"""What an experiment is: one pure function of (key, setting) -> metrics, plus its grid.

Everything else — grids, chunking, devices, files, bounds and plots — is the sweep engine's.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np

from xdistill_jax import config_schema

Table = dict[str, np.ndarray]
SettingFn = Callable[[jax.Array, Mapping[str, jax.Array]], Mapping[str, jax.Array]]

# Fields every sweep config has. Execution-only fields (under `sweep.`) may differ on resume;
# they never change results, except `sweep.vmap_width`, which may change rounding: its resolved
# value is recorded in config.json and must match on resume (`runner._write_config`).
COMMON_FIELDS = (
    'experiment', 'seed', 'bounds', 'bound_modules', 'delta',
    'sweep.chunk_size', 'sweep.memory_budget_gb', 'sweep.progress', 'sweep.save_params',
    'sweep.vmap_width',
)
EXECUTION_FIELDS = ('sweep.chunk_size', 'sweep.memory_budget_gb', 'sweep.progress',
                    'sweep.vmap_width')


def common_config(experiment: str) -> ml_collections.ConfigDict:
  """The fields shared by every sweep config (see `COMMON_FIELDS`)."""
  config = ml_collections.ConfigDict()
  config.experiment = experiment
  config.seed = 0  # the sweep's base seed: setting keys are fold_in(key(seed), index)
  config.bounds = ()  # bound names to evaluate; empty = every applicable registered bound
  config.bound_modules = ()  # modules imported so that their @bound registrations run
  config.delta = 0.05  # confidence parameter of the probabilistic bounds
  config.sweep = ml_collections.ConfigDict()
  config.sweep.chunk_size = 0  # settings per compiled chunk; 0 = from the memory budget
  config.sweep.memory_budget_gb = 2.0
  config.sweep.vmap_width = -1  # settings vmapped per device group; -1 = 8 (CPU) / 512
  config.sweep.progress = True
  config.sweep.save_params = ()  # setting indices whose trained parameters are saved
  return config


def validate_common(config) -> None:
  config_schema.integer(config, 'seed', 0, 2**31 - 1)
  config_schema.number(config, 'delta', 0.0, 1.0, low_open=True)
  config_schema.integer(config, 'sweep.chunk_size', 0)
  config_schema.number(config, 'sweep.memory_budget_gb', 0.0, low_open=True)
  config_schema.boolean(config, 'sweep.progress')
  config_schema.integer(config, 'sweep.vmap_width', -1)
  if list(config.sweep.save_params):
    config_schema.integer_list(config, 'sweep.save_params', 0)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A sweepable experiment.

  Attributes:
    name: registry name, the value of `config.experiment`.
    fields: the dotted config fields it accepts besides `COMMON_FIELDS`.
    validate: raises `ConfigError` on an invalid field, before anything compiles.
    axes: config -> ordered {axis name: values}; the sweep is their product.
    make_setting_fn: config -> pure fn(key, setting) -> {metric: scalar or small vector}.
      With `saves_params`, `make_setting_fn(config, with_params=True)` returns a fn giving
      (metrics, trained params) instead: what `sweep.save_params` saves, from the sweep's own
      compiled program.
    key_axes: axes whose index determines a setting's key (others share keys, e.g. the KD
      method axis, so that methods are compared on the same data); None = all axes.
    group_by: axes that `summary.csv` groups by.
    derived: (table, config) -> extra columns computed after the sweep (e.g. gamma).
    nan_ok: metrics that may be NaN legitimately (an empty subset's mean); others being
      non-finite marks the setting `diverged`.
    figures: (table, summary, config, workdir) -> list of written figure paths.
    saves_params: whether `make_setting_fn` takes `with_params` (see above); experiments
      without it refuse a non-empty `sweep.save_params`.
    inner_axes: optional config -> {axis: values} computed together inside one setting (e.g.
      every KD method trained on a shared teacher); the setting fn then
      returns every metric with leading dimensions of these axes' lengths, and each
      combination becomes its own results row.
    program_cache: whether a re-run may reuse the traced program (`sweep.programs`). False
      where the program embeds data read from files, whose content the cache key cannot see.
    cpu_vmap_width: optional config -> the automatic `sweep.vmap_width` on a CPU, or None for
      the engine's `execute.CPU_VMAP_WIDTH` (protocol S: 1, one setting's data fill the cache).
    max_auto_chunk: optional config -> the most settings of an automatic chunk
      (`sweep.chunk_size` = 0), or None for `execute.MAX_AUTO_CHUNK`: for settings that take
      seconds each, so that chunks commit (and the progress bar moves) every few seconds and
      memory stays bounded (`ntdh_kclass.MAX_AUTO_CHUNK`).
  """

  name: str
  fields: tuple[str, ...]
  validate: Callable[[ml_collections.ConfigDict], None]
  axes: Callable[[ml_collections.ConfigDict], dict[str, np.ndarray]]
  make_setting_fn: Callable[..., SettingFn]
  group_by: tuple[str, ...]
  figures: Callable[..., list[str]]
  key_axes: tuple[str, ...] | None = None
  derived: Callable[[Table, ml_collections.ConfigDict], Table] | None = None
  nan_ok: tuple[str, ...] = ()
  saves_params: bool = False
  inner_axes: Callable[[ml_collections.ConfigDict], dict[str, np.ndarray]] | None = None
  program_cache: bool = True
  cpu_vmap_width: Callable[[ml_collections.ConfigDict], int | None] | None = None
  max_auto_chunk: Callable[[ml_collections.ConfigDict], int | None] | None = None

  def check(self, config) -> None:
    """Validates every field of `config` (names and values) without compiling anything."""
    config_schema.known_fields(config, COMMON_FIELDS + self.fields)
    validate_common(config)
    self.validate(config)
