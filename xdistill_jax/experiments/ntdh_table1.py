"""NTDH Table 1 (synthetic): every KD method, with and without the sample mask ω.

One setting = (overlap o, seed) of protocol G (`config.protocol = 'G'`, linear 25 → 2) or S
('S', MLP 50 → 16 → 16 → 4). The teacher and the baseline student train once (one loop);
then the students of ALL selected methods (`config.methods`, see `kd_methods.METHODS`) train
in the same compiled program, each in its own loop (`kd_methods.fit_students`) and each
starting from the baseline's initial parameters (so Δ = KD − baseline measures each method's
term alone, and methods are compared on the same data, teacher and initialisation). The method is an inner axis: every
metric comes out with a leading method dimension and each method becomes its own row.

Protocol G reuses the key layout of `ntdh_overlap`, so the 'kl' rows reproduce that
experiment's KD student. Method weights are per protocol (docs/protocols.md §T; the `G.` /
`S.` fields of `PROTOCOL_WEIGHTS`): on G 1 : 1 except CRD (1.0 : 0.02, dim 8, τ = 0.07), DKD
α = β = 1, T = 0.7; on S the authors' protocol-S settings (DKD α = 16, CRD + KL, 0.1 · FitNet
hint + KL, RKD + 0.1 · KL); the KL family at the protocol's T (0.7 on G, 1 on S). Design choices
(features = logits, learned FitNet/CRD heads, in-batch CRD, RKD triplet sample, relational
subset on S) are documented in `kd_methods`.

Outputs (from the figures fn, in the work directory): table1.csv (one row per method: Δ
mean and std per overlap), table1.md (Δ mean ± std, best per column in bold; the measured
non-target divergence; Spearman correlations), ntdh_table1_divergence.png (Δ against the
measured divergence, coloured by method, Spearman ρ; effect of ω), plus the bounds figure of
the KL rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdistill_jax import bounds
from xdistill_jax import config_schema
from xdistill_jax import kd_floor
from xdistill_jax import kd_methods
from xdistill_jax import measures
from xdistill_jax import pac_bayes
from xdistill_jax.experiments import base
from xdistill_jax.experiments import ntdh_kclass
from xdistill_jax.generators import decisive_features
from xdistill_jax.generators import kclass
from xdistill_jax.models import MLP, init_models
from xdistill_jax.reporting import figures
from xdistill_jax.reporting import tables

PROTOCOLS = ('G', 'S')
# Per-protocol method fields besides the protocol's own data/model/training fields (the
# authors' protocol-S script weighs DKD, CRD, FitNet and RKD otherwise than on G).
METHOD_PROTOCOL_FIELDS = ('dkd_alpha', 'dkd_beta', 'dkd_temperature', 'crd_weight',
                          'crd_kl_weight', 'fitnet_weight', 'fitnet_kl_weight', 'rkd_kl_weight',
                          'relational_batch', 'rkd_angle_rows')
PROTOCOL_WEIGHTS = METHOD_PROTOCOL_FIELDS[:-2]
G_FIELDS = ('overlaps', 'runs', 'num_decisive', 'student_decisive', 'dim', 'n_train', 'n_test',
            'steps', 'learning_rate', 'temperature', 'margin_rho') + METHOD_PROTOCOL_FIELDS
S_FIELDS = ntdh_kclass.PROTOCOL_FIELDS + METHOD_PROTOCOL_FIELDS
METHOD_FIELDS = ('methods', 'ce_weight', 'kd_weight', 'crd_dim', 'crd_temperature',
                 'omega_threshold', 'rkd_distance_weight', 'rkd_angle_weight')
FIELDS = (('protocol',) + METHOD_FIELDS + tuple('G.' + f for f in G_FIELDS)
          + tuple('S.' + f for f in S_FIELDS))


def validate(config) -> None:
  protocol = config_schema.choice(config, 'protocol', PROTOCOLS)
  config_schema.choice_list(config, 'methods', kd_methods.METHODS)
  for name in ('ce_weight', 'kd_weight', 'rkd_distance_weight', 'rkd_angle_weight'):
    config_schema.number(config, name, 0.0)
  config_schema.integer(config, 'crd_dim', 1)
  config_schema.number(config, 'crd_temperature', 0.0, low_open=True)
  config_schema.number(config, 'omega_threshold', -1.0, 1.0)
  p = protocol + '.'
  if protocol == 'G':
    d = config_schema.integer(config, p + 'num_decisive', 2)
    s = config_schema.integer(config, p + 'student_decisive', 1, d - 1)
    config_schema.integer(config, p + 'dim', d)
    config_schema.integer_list(config, p + 'overlaps', 0, min(s, d - s))
    config_schema.integer(config, p + 'runs', 1)
    config_schema.integer(config, p + 'n_train', 3)
    config_schema.integer(config, p + 'n_test', 1)
    config_schema.integer(config, p + 'steps', 1)
    config_schema.number(config, p + 'learning_rate', 0.0, low_open=True)
    config_schema.number(config, p + 'temperature', 0.0, low_open=True)
    config_schema.number(config, p + 'margin_rho', 0.0, low_open=True)
  else:
    ntdh_kclass.validate_protocol(config, p)
  for name in PROTOCOL_WEIGHTS:
    if name != 'dkd_temperature':
      config_schema.number(config, p + name, 0.0)
  config_schema.number(config, p + 'dkd_temperature', 0.0, low_open=True)
  config_schema.integer(config, p + 'relational_batch', 0)
  config_schema.integer(config, p + 'rkd_angle_rows', 0)
  pc = config[protocol]
  rows = pc.n_train if protocol == 'G' else kclass.num_train(pc.num_examples, pc.train_fraction)
  rows = min(rows, pc.relational_batch or rows)
  kd_methods.check_rkd_angle_rows(config.methods, pc.rkd_angle_rows, rows, p + 'rkd_angle_rows')


def _pc(config):
  """The selected protocol's config node."""
  return config[config.protocol]


def axes(config) -> dict[str, np.ndarray]:
  pc = _pc(config)
  return {'overlap': np.asarray(pc.overlaps, np.int32),
          'seed': np.arange(pc.runs, dtype=np.int32)}


def inner_axes(config) -> dict[str, np.ndarray]:
  return {'method': np.asarray(list(config.methods))}


def hyper(config) -> kd_methods.Hyper:
  """The objectives' hyperparameters: shared fields, then the protocol's own weights."""
  pc = _pc(config)
  return kd_methods.Hyper(
      temperature=pc.temperature, ce_weight=config.ce_weight, kd_weight=config.kd_weight,
      crd_dim=config.crd_dim, crd_temperature=config.crd_temperature,
      omega_threshold=config.omega_threshold, rkd_distance_weight=config.rkd_distance_weight,
      rkd_angle_weight=config.rkd_angle_weight, **{f: pc[f] for f in PROTOCOL_WEIGHTS})


# --------------------------------------------------------------------------------------------
# The two protocols' data and models.
# --------------------------------------------------------------------------------------------
def _setup_g(pc, key, overlap):
  """Protocol G with `ntdh_overlap`'s key layout: (net, K, train, test, inits, extras)."""
  net = MLP(num_classes=2)
  k_data, k_init = jax.random.split(key)
  n = pc.n_train + pc.n_test  # train and test are independent rows of one draw
  hyperplane, data = decisive_features.sample(k_data, overlap, n, pc.num_decisive, pc.dim,
                                              pc.student_decisive)
  train, test = data.rows(0, pc.n_train), data.rows(pc.n_train, n)
  teacher_init, student_init = init_models(net, k_init, 2, pc.dim)
  d = pc.num_decisive
  cols_a = decisive_features.teacher_columns(overlap, pc.dim, d, pc.student_decisive)
  cols_b = decisive_features.student_columns(pc.dim, pc.student_decisive)
  extra = {'bayes_floor_a': bounds.decisive_feature_bayes_floor(hyperplane, cols_a[:d]),
           'bayes_floor_b': bounds.decisive_feature_bayes_floor(hyperplane, cols_b[:d]),
           'vc_dim': jnp.asarray(bounds.linear_vc_dimension(pc.dim), jnp.float32),
           'margin_rho': jnp.asarray(pc.margin_rho, jnp.float32)}
  return net, 2, train, test, teacher_init, student_init, extra


def _setup_s(pc, key, overlap):
  """Protocol S with `ntdh_kclass`'s key layout."""
  net = ntdh_kclass.model(pc)
  k_data, k_init, k_bayes = jax.random.split(key, 3)
  train, test, clusters = ntdh_kclass.draw(pc, k_data, overlap)
  teacher_init, student_init = init_models(net, k_init, 2, pc.dim)
  extra = ntdh_kclass.bayes_floors(pc, k_bayes, clusters, overlap)
  return net, pc.num_classes, train, test, teacher_init, student_init, extra


def _train(config, key, setting):
  """(params, data): teacher and baseline, then every method's student."""
  pc, methods = _pc(config), tuple(config.methods)
  setup = _setup_g if config.protocol == 'G' else _setup_s
  net, num_classes, train, test, teacher_init, student_init, extra = setup(
      pc, key, setting['overlap'])
  params = ntdh_kclass.train_teacher_and_baseline(net, pc, train, teacher_init, student_init)
  teacher_logits = net.apply(params['teacher'], train.x_a)
  k_heads, k_relation = jax.random.split(jax.random.fold_in(key, 1))
  h = hyper(config)
  relation = kd_methods.draw_relation(k_relation, train.y.shape[0], pc.relational_batch,
                                      pc.rkd_angle_rows if 'rkd' in methods else 0)
  students = kd_methods.init_students(methods, k_heads, student_init, num_classes, h)
  students = kd_methods.fit_students(methods, h, net.apply, students, train.x_b,
                                     teacher_logits, train.y, optax.sgd(pc.learning_rate),
                                     pc.steps, relation)
  params['students'] = students
  return params, (net, num_classes, train, test, extra)


def make_setting_fn(config, with_params: bool = False) -> base.SettingFn:
  pc, methods = _pc(config), tuple(config.methods)
  num_methods = len(methods)

  def setting_fn(key, setting):
    params, (net, num_classes, train, test, extra) = _train(config, key, setting)
    apply = net.apply
    t_train, t_test = apply(params['teacher'], train.x_a), apply(params['teacher'], test.x_a)
    b_train, b_test = apply(params['baseline'], train.x_b), apply(params['baseline'], test.x_b)
    students = params['students']
    kd_train = kd_methods.student_logits(apply, students, methods, train.x_b)  # [M, n, K]
    kd_test = kd_methods.student_logits(apply, students, methods, test.x_b)
    per_method = kd_methods.method_metrics(t_train, t_test, kd_train, kd_test, train.y, test.y,
                                           config.omega_threshold)
    if config.protocol == 'G':  # linear students: the N4 margin-bound inputs
      stacked = kd_methods.stack(students, methods)
      margin = jax.vmap(lambda z, p: measures.margin_bound_inputs(
          z, train.x_b, train.y, p, pc.margin_rho, prefix='kd_'))(kd_train, stacked)
      per_method |= margin
      # P1 of every linear student (kd_* per method, baseline_*) and F1 of the linear teacher.
      p1 = lambda p, prefix: pac_bayes.binary_p1(*pac_bayes.dense_layer(p), train.x_b,
                                                 train.y, test.x_b, test.y, config.delta,
                                                 prefix=prefix)
      per_method |= jax.vmap(lambda p: p1(p, 'kd_'))(stacked)
      shared_columns = (decisive_features.teacher_columns(setting['overlap'], pc.dim,
                                                          pc.num_decisive, pc.student_decisive)
                        & decisive_features.student_columns(pc.dim, pc.student_decisive))
      linear = p1(params['baseline'], 'baseline_') | kd_floor.protocol_g_floor(
          *pac_bayes.dense_layer(params['teacher']), test.x_b, shared_columns, kd_test, t_test)
      per_method |= jax.tree.map(lambda v: jnp.broadcast_to(v, (num_methods,)), linear)
    shared = kd_methods.shared_metrics(t_train, t_test, b_train, b_test, train.y, test.y,
                                       num_classes, config.delta) | extra
    shared = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_methods,) + jnp.shape(v)), shared)
    return (per_method | shared, params) if with_params else per_method | shared

  return setting_fn


def gamma(config, overlap):
  """γ of the protocol: o / (D − o) on G, o / t on S."""
  pc = _pc(config)
  overlap = np.asarray(overlap, np.float64)
  if config.protocol == 'G':
    return overlap / (pc.num_decisive - overlap)
  return ntdh_kclass.gamma(overlap, pc.teacher_decisive)


def derived(table, config):
  return {'gamma': gamma(config, table['overlap'])} | measures.error_columns(table)


# --------------------------------------------------------------------------------------------
# Table 1 and the figures.
# --------------------------------------------------------------------------------------------
def table1(summary, config) -> tables.Table:
  """One row per method: Δ mean / std / count per overlap (columns o{o}_mean, ...)."""
  pc = _pc(config)
  methods = list(config.methods)
  out = {'method': np.asarray(methods),
         'label': np.asarray([kd_methods.LABELS[m] for m in methods])}
  for o in pc.overlaps:
    for stat in ('mean', 'std', 'count'):
      column = []
      for m in methods:
        rows = (summary['method'] == m) & (summary['overlap'] == o)
        column.append(summary[f'delta_{stat}'][rows][0] if rows.any() else np.nan)
      out[f'o{o}_{stat}'] = np.asarray(column, np.float64)
  means = np.stack([out[f'o{o}_mean'] for o in pc.overlaps], 1)
  out['average_mean'] = np.nanmean(means, 1) if means.size else np.full(len(methods), np.nan)
  return out


def _cell(mean, std, bold):
  text = f'{mean:+.2f} ± {std:.2f}' if np.isfinite(mean) else 'n/a'
  return f'**{text}**' if bold else text


def table1_markdown(table, summary, rows, config) -> str:
  """Markdown: Δ mean ± std per method × overlap (best per column bold), D_NT, Spearman."""
  pc = _pc(config)
  methods = list(rows['method'])
  gammas = gamma(config, pc.overlaps)
  header = ['Method'] + [f'o = {o} (γ = {g:.2f})' for o, g in zip(pc.overlaps, gammas)]
  lines = [f'# NTDH Table 1, protocol {config.protocol}: Δ = KD − baseline (accuracy points)',
           '', f'Mean ± std over {pc.runs} seeds; best method per column in bold.', '',
           '| ' + ' | '.join(header + ['average']) + ' |',
           '|' + '---|' * (len(header) + 1)]
  best = {o: np.nanmax(rows[f'o{o}_mean']) if np.isfinite(rows[f'o{o}_mean']).any() else np.nan
          for o in pc.overlaps}
  for i, m in enumerate(methods):
    cells = [_cell(rows[f'o{o}_mean'][i], rows[f'o{o}_std'][i],
                   rows[f'o{o}_mean'][i] == best[o]) for o in pc.overlaps]
    lines.append(f'| {kd_methods.LABELS[m]} | ' + ' | '.join(cells)
                 + f' | {rows["average_mean"][i]:+.2f} |')

  def overlap_row(name, metric, scale=100.0):
    cells = []
    for o in pc.overlaps:
      sel = summary['overlap'] == o
      cells.append(f'{scale * np.mean(summary[metric + "_mean"][sel]):.2f}' if sel.any()
                   else 'n/a')
    return f'| {name} | ' + ' | '.join(cells) + ' | |'

  lines += [overlap_row('teacher acc. (%)', 'teacher_acc'),
            overlap_row('baseline acc. (%)', 'baseline_acc')]
  divergence, label = _divergence_column(table)
  if divergence == 'kl_test':
    label = 'KL(p_t ‖ p_s) (with K = 2 the non-target divergence is 0 by construction)'
  lines += ['', f'## Measured {label} between teacher and KD student (test set, mean)', '',
            '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for m in methods:
    cells = []
    for o in pc.overlaps:
      sel = (summary['method'] == m) & (summary['overlap'] == o)
      cells.append(f'{summary[divergence + "_mean"][sel][0]:.4f}' if sel.any() else 'n/a')
    lines.append(f'| {kd_methods.LABELS[m]} | ' + ' | '.join(cells) + ' |')
  healthy = ~np.asarray(table['diverged'], bool)
  lines += ['', f'## Spearman rank correlation of Δ with {divergence} (per setting)', '']
  rho = lambda sel: tables.spearman(table[divergence][sel], table['delta'][sel],
                                    permutations=0)['rho']
  lines.append(f'- all methods: ρ = {rho(healthy):+.3f}')
  for m in methods:
    sel = healthy & (table['method'] == m)
    lines.append(f'- {kd_methods.LABELS[m]}: ρ = '
                 f'{rho(sel):+.3f}')
  if int(np.sum(~healthy)):
    lines += ['', f'{int(np.sum(~healthy))} diverged row(s) left out.']
  return '\n'.join(lines) + '\n'


def _divergence_column(table):
  """The non-target divergence, or the whole KL where K = 2 makes it zero by construction."""
  if np.nanmax(np.abs(np.asarray(table['nckd_test'], np.float64))) > 0:
    return 'nckd_test', 'non-target divergence D_NT (NCKD)'
  return 'kl_test', 'KL(p_t ‖ p_s) (K = 2: D_NT ≡ 0)'


def make_figures(table, summary, config, workdir):
  rows = table1(summary, config)
  csv_path, md_path = workdir / 'table1.csv', workdir / 'table1.md'
  tables.write_csv(csv_path, rows)
  tables.atomic_write_text(md_path, table1_markdown(table, summary, rows, config))
  divergence, label = _divergence_column(table)
  xlabel = 'γ = o / (D − o)' if config.protocol == 'G' else 'γ = o / t'
  paths = [str(csv_path), str(md_path), ntdh_kclass.divergence_figure(
      table, summary, workdir / 'ntdh_table1_divergence.png', divergence=divergence,
      divergence_label=f'{label} (nats)', xlabel=xlabel,
      title=f'NTDH Table 1, protocol {config.protocol}: KD gain vs divergence')]
  kl = np.asarray(table['method']) == (config.methods[0] if 'kl' not in config.methods else 'kl')
  kl_table = tables.select(table, kl)
  kl_summary = tables.select(summary, summary['method'] == kl_table['method'][0])
  paths.append(figures.bounds_figure(kl_table, kl_summary, workdir / 'ntdh_table1_bounds.png',
                                     x='gamma', divergence=divergence, xlabel=xlabel))
  return paths


EXPERIMENT = base.Experiment(
    name='ntdh_table1', fields=FIELDS, validate=validate, axes=axes,
    make_setting_fn=make_setting_fn, group_by=('method', 'overlap'), figures=make_figures,
    derived=derived, saves_params=True, inner_axes=inner_axes,
    # Protocol S's CPU width and chunks (ntdh_kclass); protocol G: the engine's (None).
    cpu_vmap_width=lambda config: (ntdh_kclass.CPU_VMAP_WIDTH if config.protocol == 'S'
                                   else None),
    max_auto_chunk=lambda config: (ntdh_kclass.MAX_AUTO_CHUNK_HEAVY if config.protocol == 'S'
                                   else None))
