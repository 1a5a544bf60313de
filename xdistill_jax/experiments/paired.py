"""The whole NTDH Table-1 protocol on a user's paired arrays (docs/protocols.md §R).

  xdistill run --config=configs/paired.py --config.data=PAIRS.npz --workdir=W

The file (`datasets.load_paired`) holds x_a [n, d_a] (teacher modality), x_b [n, d_b]
(student modality), y [n] and optionally split [n] (0 train, 1 test). It is read and checked
once, when the config is checked, and its arrays enter the compiled program as constants.
One setting = one seed: without a `split` the seed's key draws a random split of
`test_fraction`; the key also draws the initial parameters. The teacher and the baseline
student train in one loop, then every method of `config.methods` trains its own student
from the baseline's initialisation (`kd_methods.fit_students`, the objectives and weights of
`ntdh_table1` protocol G) — the method is an inner axis, one results row per seed × method.

Features are standardised with the whole file's mean and standard deviation (label-free;
`standardize`). Metrics carry `ntdh_table1`'s names (accuracies, losses, the divergences
of `measures.teacher_student_divergences` on the test rows, ω statistics; with linear
models the margin-bound inputs, and for two classes P1 and the VC dimension), so the
registered bounds apply. Outputs: table1.csv / table1.md (per method: Δ mean ± std, KD
accuracy, the non-target divergence or KL, ω; Spearman ρ(Δ, divergence) over the seeds
with a bootstrap 95 % interval), the divergence figure and the bounds figure of the first method.
"""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdistill_jax import bounds
from xdistill_jax import config_schema
from xdistill_jax import datasets
from xdistill_jax import kd_methods
from xdistill_jax import measures
from xdistill_jax import pac_bayes
from xdistill_jax.experiments import base
from xdistill_jax.experiments import ntdh_kclass
from xdistill_jax.experiments import ntdh_table1
from xdistill_jax.generators.decisive_features import PairedSample
from xdistill_jax.models import MLP
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

HYPER_FIELDS = tuple(f.name for f in dataclasses.fields(kd_methods.Hyper))
FIELDS = ('data', 'num_classes', 'standardize', 'runs', 'test_fraction', 'hidden', 'steps',
          'learning_rate', 'margin_rho', 'methods', 'relational_batch',
          'rkd_angle_rows') + HYPER_FIELDS


@functools.lru_cache(maxsize=4)
def _read(path: str, stamp, num_classes: int) -> datasets.PairedArrays:
  del stamp  # part of the cache key only: a rewritten file is read again
  return datasets.load_paired(path, num_classes)


def load(config) -> datasets.PairedArrays:
  """The checked arrays of `config.data` (read once per process and file version)."""
  path = config.data
  if not isinstance(path, str) or not path:
    raise config_schema.ConfigError(
        f'config.data={path!r} is invalid; allowed: the path of a .npz file with keys x_a, '
        'x_b, y[, split] (--config.data=PAIRS.npz).')
  stat = pathlib.Path(path).stat() if pathlib.Path(path).is_file() else None
  stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
  try:
    return _read(str(pathlib.Path(path).resolve()), stamp, config.num_classes)
  except config_schema.ConfigError as error:
    raise config_schema.ConfigError(f'config.data: {error}') from None


def sizes(config, data) -> tuple[int, int]:
  """(n_train, n_test): the file's split, else round(n · test_fraction) test rows (>= 1)."""
  n = data.y.shape[0]
  if data.split is not None:
    return int(np.sum(data.split == 0)), int(np.sum(data.split == 1))
  n_test = min(n - 1, max(1, round(n * config.test_fraction)))
  return n - n_test, n_test


def validate(config) -> None:
  config_schema.integer(config, 'num_classes', 0)
  config_schema.boolean(config, 'standardize')
  config_schema.integer(config, 'runs', 1)
  config_schema.number(config, 'test_fraction', 0.0, 1.0, low_open=True)
  hidden = config.hidden
  if not (isinstance(hidden, (tuple, list)) and len(hidden) == 0):
    config_schema.integer_list(config, 'hidden', 1, unique=False)
  config_schema.integer(config, 'steps', 1)
  config_schema.number(config, 'learning_rate', 0.0, low_open=True)
  config_schema.number(config, 'margin_rho', 0.0, low_open=True)
  config_schema.choice_list(config, 'methods', kd_methods.METHODS)
  config_schema.integer(config, 'relational_batch', 0)
  config_schema.integer(config, 'rkd_angle_rows', 0)
  config_schema.integer(config, 'crd_dim', 1)
  config_schema.number(config, 'omega_threshold', -1.0, 1.0)
  for name in ('temperature', 'crd_temperature', 'dkd_temperature'):
    config_schema.number(config, name, 0.0, low_open=True)
  for name in set(HYPER_FIELDS) - {'crd_dim', 'omega_threshold', 'temperature',
                                   'crd_temperature', 'dkd_temperature'}:
    config_schema.number(config, name, 0.0)
  data = load(config)
  n_train, _ = sizes(config, data)
  if n_train < 2:
    raise config_schema.ConfigError(
        f'config.test_fraction={config.test_fraction!r} is invalid; allowed: a fraction that '
        f'leaves at least 2 of the {data.y.shape[0]} rows of {config.data} for training.')
  rows = min(n_train, config.relational_batch or n_train)
  kd_methods.check_rkd_angle_rows(config.methods, config.rkd_angle_rows, rows, 'rkd_angle_rows')


def axes(config) -> dict[str, np.ndarray]:
  return {'seed': np.arange(config.runs, dtype=np.int32)}


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'method': np.asarray(list(config.methods))}


def hyper(config) -> kd_methods.Hyper:
  return kd_methods.Hyper(**{f: config[f] for f in HYPER_FIELDS})


def _standardized(x: np.ndarray) -> np.ndarray:
  """Columns at zero mean and unit standard deviation (constant columns only centred)."""
  std = x.std(0)
  return ((x - x.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def constants(config) -> tuple[PairedSample, np.ndarray | None, int]:
  """(all rows as float32 constants, the file's split or None, number of classes)."""
  data = load(config)
  prep = _standardized if config.standardize else (lambda x: x)
  return PairedSample(prep(data.x_a), prep(data.x_b), data.y), data.split, data.num_classes


def split_rows(key, rows: PairedSample, split, n_train: int):
  """(train, test): the file's split, else a random one of `n_train` rows drawn from `key`."""
  if split is not None:
    return (PairedSample(*(jnp.asarray(v[split == 0]) for v in rows)),
            PairedSample(*(jnp.asarray(v[split == 1]) for v in rows)))
  order = jax.random.permutation(key, rows.y.shape[0])
  take = lambda index: PairedSample(*(jnp.asarray(v)[index] for v in rows))
  return take(order[:n_train]), take(order[n_train:])


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  rows, split, num_classes = constants(config)
  n_train, _ = sizes(config, load(config))
  methods = tuple(config.methods)
  net = MLP(num_classes=num_classes, hidden=tuple(config.hidden))
  linear = not tuple(config.hidden)
  h = hyper(config)

  def setting_fn(key, setting):
    k_split, k_teacher, k_student, k_heads, k_relation = jax.random.split(key, 5)
    train, test = split_rows(k_split, rows, split, n_train)
    teacher_init = net.init(k_teacher, jnp.zeros((1, rows.x_a.shape[1])))
    student_init = net.init(k_student, jnp.zeros((1, rows.x_b.shape[1])))
    params = ntdh_kclass.train_teacher_and_baseline(net, config, train, teacher_init,
                                                    student_init)
    apply = net.apply
    t_train, t_test = apply(params['teacher'], train.x_a), apply(params['teacher'], test.x_a)
    b_train, b_test = apply(params['baseline'], train.x_b), apply(params['baseline'], test.x_b)
    relation = kd_methods.draw_relation(k_relation, train.y.shape[0], config.relational_batch,
                                        config.rkd_angle_rows if 'rkd' in methods else 0)
    students = kd_methods.init_students(methods, k_heads, student_init, num_classes, h)
    students = kd_methods.fit_students(methods, h, apply, students, train.x_b, t_train,
                                       train.y, optax.sgd(config.learning_rate), config.steps,
                                       relation)
    params['students'] = students
    kd_train = kd_methods.student_logits(apply, students, methods, train.x_b)  # [M, n, K]
    kd_test = kd_methods.student_logits(apply, students, methods, test.x_b)
    per_method = kd_methods.method_metrics(t_train, t_test, kd_train, kd_test, train.y, test.y,
                                           config.omega_threshold)
    shared = {}
    if linear:  # the margin-bound inputs (N4) of every linear student
      stacked = kd_methods.stack(students, methods)
      per_method |= jax.vmap(lambda z, p: measures.margin_bound_inputs(
          z, train.x_b, train.y, p, config.margin_rho, prefix='kd_'))(kd_train, stacked)
      shared['margin_rho'] = jnp.asarray(config.margin_rho, jnp.float32)
      if num_classes == 2:  # P1 of the students and the baseline; the VC bound
        p1 = lambda p, prefix: pac_bayes.binary_p1(*pac_bayes.dense_layer(p), train.x_b,
                                                   train.y, test.x_b, test.y, config.delta,
                                                   prefix=prefix)
        per_method |= jax.vmap(lambda p: p1(p, 'kd_'))(stacked)
        shared |= p1(params['baseline'], 'baseline_')
        shared['vc_dim'] = jnp.asarray(bounds.linear_vc_dimension(rows.x_b.shape[1]),
                                       jnp.float32)
    shared |= kd_methods.shared_metrics(t_train, t_test, b_train, b_test, train.y, test.y,
                                        num_classes, config.delta)
    shared = jax.tree.map(lambda v: jnp.broadcast_to(v, (len(methods),) + jnp.shape(v)), shared)
    return (per_method | shared, params) if with_params else per_method | shared

  return setting_fn


def derived(table, config):
  return measures.error_columns(table)


# --------------------------------------------------------------------------------------------
# table1 and the figures.
# --------------------------------------------------------------------------------------------
def table1(summary, config, divergence: str) -> tables.Table:
  """One row per method: Δ, KD accuracy, the divergence and ω (mean, std over seeds)."""
  out = {'method': np.asarray(list(config.methods)),
         'label': np.asarray([kd_methods.LABELS[m] for m in config.methods])}
  for metric in ('delta', 'kd_acc', divergence, 'omega_mean'):
    for stat in ('mean', 'std'):
      out[f'{metric}_{stat}'] = np.asarray(
          [summary[f'{metric}_{stat}'][summary['method'] == m][0] for m in config.methods])
  return out


def table1_markdown(table, summary, rows, config, divergence, label) -> str:
  healthy = ~np.asarray(table['diverged'], bool)
  best = np.nanmax(rows['delta_mean'])
  first = summary['method'] == config.methods[0]
  n_train, n_test = summary['n_train_mean'][first][0], summary['n_test_mean'][first][0]
  lines = [f'# NTDH Table 1 on {pathlib.Path(config.data).name}: Δ = KD − baseline '
           '(accuracy points)', '',
           f'{int(n_train)} training and {int(n_test)} test rows; mean ± std over '
           f'{config.runs} seeds; best Δ in bold. Teacher accuracy '
           f'{100 * summary["teacher_acc_mean"][first][0]:.2f} %, baseline '
           f'{100 * summary["baseline_acc_mean"][first][0]:.2f} %.', '',
           f'| Method | Δ | KD acc. (%) | {label} | mean ω | ρ(Δ, {divergence}) '
           '[bootstrap 95 %] |',
           '|---|---|---|---|---|---|']
  for i, m in enumerate(rows['method']):
    sel = healthy & (table['method'] == m)
    c = tables.spearman_interval(table[divergence][sel], table['delta'][sel], seed=config.seed)
    delta = f'{rows["delta_mean"][i]:+.2f} ± {rows["delta_std"][i]:.2f}'
    delta = f'**{delta}**' if rows['delta_mean'][i] == best else delta
    lines.append(f'| {rows["label"][i]} | {delta}'
                 f' | {100 * rows["kd_acc_mean"][i]:.2f} | {rows[divergence + "_mean"][i]:.4f} '
                 f'| {rows["omega_mean_mean"][i]:.3f} | {c["rho"]:+.3f} '
                 f'[{c["low"]:+.3f}, {c["high"]:+.3f}] |')
  pooled = tables.spearman(table[divergence][healthy], table['delta'][healthy], permutations=0)
  lines += ['', f'Spearman ρ(Δ, {divergence}) over all healthy rows: {pooled["rho"]:+.3f} '
            f'(n = {pooled["n"]}).']
  if int(np.sum(~healthy)):
    lines.append(f'{int(np.sum(~healthy))} diverged row(s) left out.')
  return '\n'.join(lines) + '\n'


def make_figures(table, summary, config, workdir):
  workdir = pathlib.Path(workdir)
  divergence, label = ntdh_table1._divergence_column(table)
  rows = table1(summary, config, divergence)
  csv_path, md_path = workdir / 'table1.csv', workdir / 'table1.md'
  tables.write_csv(csv_path, rows)
  tables.atomic_write_text(md_path, table1_markdown(table, summary, rows, config, divergence,
                                                    label.split(' (')[0]))
  first = config.methods[0]
  paths = [str(csv_path), str(md_path), ntdh_kclass.divergence_figure(
      table, summary, workdir / 'paired_divergence.png', divergence=divergence,
      divergence_label=f'{label} (nats)', x='n_train', xlabel='training rows',
      title=f'{pathlib.Path(config.data).name}: KD gain vs divergence')]
  paths.append(figures.bounds_figure(
      tables.select(table, table['method'] == first),
      tables.select(summary, summary['method'] == first), workdir / 'paired_bounds.png',
      x='n_train', divergence=divergence, xlabel='training rows'))
  return paths


EXPERIMENT = base.Experiment(
    name='paired', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('method',), figures=make_figures,
    derived=derived, saves_params=True, inner_axes=inner_axes,
    program_cache=False)  # the program embeds data read from files
