"""The CMCD pipeline (docs/protocols.md §C) as pure, vmappable stages of one setting.

1. `draw`: every sample of a setting, from the exact-TV generator or, given a shift ‖δ‖,
   from the Gaussian-latent generator (`cmcd_latent.sample_gaussian_pairs`).
2. `pretrain_source`: InfoNCE on two views of the source examples → encoder φ_A (then frozen).
3. `train_targets`: one fused `training.fit` loop over a params dict holding, for every number of
   pairs M, a student encoder φ_B per distillation method (CMD, CMC, one-directional CMC, L2;
   φ_A frozen) and a target-SSL encoder (InfoNCE on target views of the same M examples), and,
   for every number of labels m, a target-only supervised encoder + head (stacked over m).
4. `train_heads`: one fused loop over every linear probe g (on φ_B features of the first m
   labelled target examples), every source probe (on φ_A features) and every domain classifier
   (φ_A(x_A) against φ_B(x_B) features).
5. `measure`: test errors, the C3 pair statistics, the C4 inputs and the TV estimate.

Design choices (documented in the config and the report):

* Encoders are small ReLU MLPs; their *representation* is the L2-normalised encoder output
  φ(x) ∈ S^(feature_dim − 1). Projection heads exist only for the self-supervised InfoNCE stages
  (SimCLR convention). Distillation aligns φ_B with φ_A directly — all four losses are
  invariant to the norm of the student output — so that the **same** probe g can be applied to
  φ_B(x_B) (target error) and φ_A(x_A) (source error), as C3 requires.
* Full-batch optimisation with Adam; the two views of each example are drawn once.
* Models trained on labels are stacked over the m axis and trained on masked losses
  (`label_masks`), so one fixed-shape program serves every m; the M axis is a Python loop
  (in-batch negatives need exactly M rows).
* The probe has no regularisation and is trained for `probe_steps` steps: its weight norm Λ
  (and with it the C4 Rademacher term) is whatever that training produces.
* Every student, the target-SSL and target-only encoders start from the same initial encoder
  parameters (the methods differ only in their objective: common random numbers).
* The number of classes K changes shapes (class means, probe outputs), so the `num_classes`
  axis is a Python loop (`class_configs`, `run_classes`): one copy of the pipeline per K in
  the same compiled program, every K on the same key.
"""

import functools
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xdistill_jax import bounds
from xdistill_jax import divergences
from xdistill_jax import losses
from xdistill_jax import measures
from xdistill_jax import pac_bayes
from xdistill_jax import training
from xdistill_jax.generators import cmcd_latent
from xdistill_jax.models import MLP

DISTILL_METHODS = ('cmd', 'cmc', 'cmc_b2a', 'l2')
BASELINES = ('target_only', 'target_ssl')
METHODS = DISTILL_METHODS + BASELINES
# Methods whose target predictor is a linear probe on a frozen encoder's features.
PROBED = DISTILL_METHODS + ('target_ssl',)
# Metrics that are NaN by definition for some methods (see `measure`).
DISTILL_ONLY = ('source_err', 'pair_disagreement', 'clean_disagreement', 'clean_cosine',
                'domain_acc', 'tv_estimate', 'domain_acc_heldout', 'n_domain_heldout',
                'tv_estimate_heldout')
PROBE_ONLY = ('probe_margin_risk', 'rademacher', 'probe_weight_norm', 'probe_margin_norm',
              'probe_input_frobenius_norm')
# P1 inputs of the linear probe (`pac_bayes.multiclass_p1`), NaN for target-only.
PROBE_ONLY += ('target_gibbs_bound', 'target_gibbs_err', 'target_gibbs_train_err',
               'target_posterior_kl', 'target_posterior_beta', 'target_posterior_t')


class Coupled(NamedTuple):
  """Observed coupled pairs."""

  x_a: jax.Array
  x_b: jax.Array
  y: jax.Array
  broken: jax.Array


class SettingData(NamedTuple):
  source_views: tuple  # two [n_pretrain, D_A] views of unlabelled source examples
  pairs: Coupled  # [max M] unlabelled pairs for distillation (labels unused)
  target_views: tuple  # two [max M, D_B] views of the pairs' target latents (target SSL)
  labelled: Coupled  # [max m] labelled examples (the probes see x_b, y; source probe x_a, y)
  validation: Coupled  # [n_validation] labelled target examples for temperature selection
  domain: Coupled  # [n_domain] held-out pairs to train the domain classifiers
  test: Coupled  # [n_test] coupled test pairs
  test_side: jax.Array  # [n_test] bool fair coins: pair i shows the classifier x_B if True


class Temperatures(NamedTuple):
  """One temperature profile (scalars, or [P] arrays for P profiles; may be traced)."""

  infonce: jax.Array  # source pre-training and target SSL
  cmc: jax.Array
  cmd_teacher: jax.Array  # τ_A
  cmd_student: jax.Array  # τ_B


def default_temperatures(config) -> Temperatures:
  return Temperatures(config.infonce_temperature, config.cmc_temperature,
                      config.cmd_teacher_temperature, config.cmd_student_temperature)


def temperature_labels(config) -> np.ndarray:
  """Labels of the `temperature` inner axis: 'default', then one per grid value."""
  return np.asarray(['default'] + [f'{t:g}' for t in config.temperature_grid])


def temperature_profiles(config) -> Temperatures:
  """[P] profiles, P = 1 + len(temperature_grid): index 0 the config's own temperatures,
  index g the grid value τ for InfoNCE, CMC and the CMD student, and the CMD teacher at
  τ·(τ_A/τ_B) of the defaults (the SEED-style ratio τ_A < τ_B kept)."""
  grid = np.asarray(config.temperature_grid, np.float64)
  ratio = config.cmd_teacher_temperature / config.cmd_student_temperature
  column = lambda default, values: jnp.asarray(np.concatenate([[default], values]), jnp.float32)
  d = default_temperatures(config)
  return Temperatures(column(d.infonce, grid), column(d.cmc, grid),
                      column(d.cmd_teacher, ratio * grid), column(d.cmd_student, grid))


class Maps(NamedTuple):
  """Fixed per sweep: class means and the two observation maps."""

  means: jax.Array
  map_a: cmcd_latent.ObservationMap
  map_b: cmcd_latent.ObservationMap


def class_configs(config) -> list[ml_collections.ConfigDict]:
  """One config per K of the `num_classes` axis, each with the scalar `num_classes` = K that
  the stages below read."""
  out = []
  for k in config.num_classes:
    fields = config.to_dict()
    fields['num_classes'] = int(k)
    out.append(ml_collections.ConfigDict(fields))
  return out


def make_maps(config) -> Maps:
  """The sweep's fixed means and observation maps, from `config.map_seed` (not per setting)."""
  k_a, k_b = jax.random.split(jax.random.key(config.map_seed))
  latent = config.latent_dim + 1  # [z, flag]
  return Maps(cmcd_latent.class_means(config.num_classes, config.latent_dim,
                                      config.class_separation),
              cmcd_latent.make_observation_map(k_a, latent, config.obs_dim_a),
              cmcd_latent.make_observation_map(k_b, latent, config.obs_dim_b))


def sample_latents(config, maps: Maps, key, n: int, epsilon, shift_norm=None):
  """n latent pairs: the exact-TV generator (uniform balls of radius `latent_radius`) when
  `shift_norm` is None, else `sample_gaussian_pairs` (σ = `latent_sigma`) at ‖δ‖ and ε."""
  if shift_norm is None:
    return cmcd_latent.sample_exact_tv(key, n, epsilon, maps.means, config.latent_radius)
  return cmcd_latent.sample_gaussian_pairs(key, n, shift_norm, epsilon, maps.means,
                                           config.latent_sigma)


def bayes_floor(config, epsilon, gaussian: bool = False):
  """Target Bayes error of the setting's generator (`sample_latents`): ε(1 − 1/K) for the
  exact-TV balls, `cmcd_latent.gaussian_target_bayes_floor` for Gaussian latents."""
  if not gaussian:
    return bounds.exact_tv_latent_bayes_floor(epsilon, float(config.num_classes))
  return cmcd_latent.gaussian_target_bayes_floor(epsilon, config.class_separation,
                                                 config.latent_sigma, config.num_classes)


def draw(config, maps: Maps, key, epsilon, shift_norm=None) -> SettingData:
  """Every sample one setting uses, at gap ε (and shift ‖δ‖, if given; both may be traced).

  One draw of n_pretrain + max M + n_labelled + n_domain + n_test latent pairs, split in that
  order (the labelled block: the first max m train, the last n_validation validate), and one Gaussian block for the views' augmentation noise (few PRNG sites keep the
  compilation fast). The source pre-training set uses the source latents only.
  """
  k_latent, k_aug = jax.random.split(key)
  gap = config.n_labelled - max(config.m_labelled) - config.n_validation  # unused labels
  sizes = (config.n_pretrain, max(config.num_pairs), max(config.m_labelled), gap,
           config.n_validation, config.n_domain, config.n_test)
  lat = sample_latents(config, maps, k_latent, sum(sizes), epsilon, shift_norm)
  cuts = np.cumsum(sizes)[:-1]
  source, pairs, labelled, _, validation, domain, test = (
      cmcd_latent.LatentPairs(*parts) for parts in zip(*(jnp.split(a, cuts) for a in lat)))
  noise = jax.random.normal(k_aug, (2, sizes[0] + sizes[1], lat.z_a.shape[1]))
  view = lambda obs_map, z, eta: cmcd_latent.observe(obs_map, z + config.aug_sigma * eta)
  coupled = lambda l: Coupled(cmcd_latent.observe(maps.map_a, l.z_a),
                              cmcd_latent.observe(maps.map_b, l.z_b), l.y, l.broken)
  return SettingData(
      source_views=tuple(view(maps.map_a, source.z_a, eta[:sizes[0]]) for eta in noise),
      pairs=coupled(pairs),
      target_views=tuple(view(maps.map_b, pairs.z_b, eta[sizes[0]:]) for eta in noise),
      labelled=coupled(labelled), validation=coupled(validation), domain=coupled(domain),
      test=coupled(test),
      test_side=jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (config.n_test,)))


def heldout_domain_correct(side, a_called_b, b_called_b):
  """Correct calls of a domain classifier on one side per pair, chosen by a fair coin.

  Pair i contributes φ_B(x_B,i) if `side[i]` else φ_A(x_A,i). The pairs are i.i.d. and the
  coins independent of them, so the n indicators are i.i.d. Bernoulli with mean the balanced
  accuracy ½(P_A[h = A] + P_B[h = B]) — the binomial model Clopper–Pearson needs (using both
  sides of a coupled pair would make two dependent trials). Returns the [n] 0/1 indicators.
  """
  return jnp.where(side, b_called_b, ~a_called_b).astype(jnp.float32)


# ------------------------------------------------------------------------------------------
# Models.
# ------------------------------------------------------------------------------------------
def encoder(config):
  return MLP(num_classes=config.feature_dim, hidden=(config.width,) * config.depth)


def head(config):
  return MLP(num_classes=config.proj_dim, hidden=(config.width,))


def linear(outputs):
  return MLP(num_classes=outputs)


def domain_classifier(config):
  """Logistic classifier of φ_A(x_A) against φ_B(x_B): linear (`domain_width` 0) or with one
  ReLU hidden layer; two logits, softmax cross-entropy."""
  return MLP(num_classes=2, hidden=(config.domain_width,) if config.domain_width else ())


def init_params(model, key, x):
  """`model.init(key, x)` in one PRNG draw: every `TorchDense` kernel and bias is
  U(±1/sqrt(fan_in)), the distribution of `models.torch_linear_init`, taken from one uniform
  block (one PRNG site per model instead of one per parameter: much faster to compile)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
  flat, unravel = jax.flatten_util.ravel_pytree(zeros)
  unit = unravel(jax.random.uniform(key, flat.shape, flat.dtype, -1.0, 1.0))

  def bound(tree):
    if 'kernel' in tree:
      return {name: tree['kernel'].shape[0] ** -0.5 for name in tree}
    return {name: bound(sub) for name, sub in tree.items()}

  return jax.tree.map(lambda u, b: u * b, unit, bound(zeros))


def embed(config, tower, x):
  """The tower's output: projection head ∘ encoder (not normalised)."""
  return head(config).apply(tower['head'], encoder(config).apply(tower['encoder'], x))


def features(config, tower, x):
  """The representation φ(x): the L2-normalised encoder output (before the head)."""
  return losses.l2_normalize(encoder(config).apply(tower['encoder'], x))


def ssl_loss(config, params, views, temperature=None):
  """Symmetric InfoNCE (SimCLR-style, in-batch negatives) on the towers' outputs."""
  z1, z2 = (embed(config, params, v) for v in views)
  tau = config.infonce_temperature if temperature is None else temperature
  return 0.5 * jnp.mean(losses.infonce(z1, z2, tau) + losses.infonce(z2, z1, tau))


def tower_init(config, key, x):
  k_enc, k_head = jax.random.split(key)
  x = x[:1]
  return {'encoder': init_params(encoder(config), k_enc, x),
          'head': init_params(head(config), k_head, jnp.zeros((1, config.feature_dim)))}


def optimizer(learning_rate):
  return optax.adam(learning_rate)


# ------------------------------------------------------------------------------------------
# Stages.
# ------------------------------------------------------------------------------------------
def pretrain_source(config, key, views, steps=None, temps: Temperatures | None = None):
  """φ_A (+ projection head) by InfoNCE on two views of each source example."""
  params = tower_init(config, key, views[0])
  steps = config.pretrain_steps if steps is None else steps
  temps = default_temperatures(config) if temps is None else temps
  params, _ = training.fit(functools.partial(ssl_loss, config, views=views,
                                             temperature=temps.infonce), params,
                           optimizer(config.learning_rate), steps)
  return params


def distillation_loss(config, method, student_output, teacher_features,
                      temps: Temperatures | None = None):
  """Mean CMD / CMC / one-directional CMC / L2 loss over the paired batch (docs/protocols.md
  §C, step 2), at the profile `temps` (default: the config's temperatures)."""
  temps = default_temperatures(config) if temps is None else temps
  if method == 'cmd':
    per_pair = losses.cmd_loss(student_output, teacher_features, temps.cmd_student,
                               temps.cmd_teacher)
  elif method in ('cmc', 'cmc_b2a'):
    per_pair = losses.cmc_loss(student_output, teacher_features, temps.cmc,
                               symmetric=method == 'cmc')
  elif method == 'l2':
    per_pair = losses.l2_align(student_output, teacher_features)
  else:
    raise ValueError(f'unknown distillation method {method!r}')
  return jnp.mean(per_pair)


def _name(*parts):
  """Model names such as 'cmd_M256', 'probe_l2_M64', 'domain_cmc_M256' (checkpoint-safe)."""
  return '_'.join(map(str, parts[:-1])) + f'_M{parts[-1]}'


def _method(name):
  return name.rsplit('_M', 1)[0]


def label_masks(config) -> jax.Array:
  """[len(m), max m] 0/1 weights: row i keeps the first m_i labelled examples.

  Every model trained on labels (target-only, probes) is stacked over the m axis and trained
  with these weights in a vmapped loss: the weighted mean over the first m examples is exactly
  the loss on those m examples, so one fixed-shape program serves every m.
  """
  m = np.asarray(config.m_labelled)
  return jnp.asarray(np.arange(m.max())[None, :] < m[:, None], jnp.float32)


def _replicate(params, n):
  return jax.tree.map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), params)


def _per_m(loss_fn, stacked_params, masks):
  """[len(m)] losses of the stacked models, each on its own first m examples."""
  return jax.vmap(loss_fn)(stacked_params, masks)


def target_objectives(config, data: SettingData, teacher_features,
                      temps: Temperatures | None = None):
  """{model name: loss fn of its params} for every target model of stage 3.

  'cmd_M<M>' … 'l2_M<M>': students (encoder only) on the first M pairs; 'target_ssl_M<M>':
  InfoNCE on target views of the same M examples; 'target_only': encoder + linear head,
  stacked over m (its loss is a [len(m)] vector).
  """
  objectives = {}
  for M in config.num_pairs:
    x_b, teacher = data.pairs.x_b[:M], teacher_features[:M]
    for method in config.methods:
      if method in DISTILL_METHODS:
        objectives[_name(method, M)] = functools.partial(
            lambda method, x_b, teacher, p: distillation_loss(
                config, method, encoder(config).apply(p['encoder'], x_b), teacher, temps),
            method, x_b, teacher)
      elif method == 'target_ssl':
        views = tuple(v[:M] for v in data.target_views)
        objectives[_name(method, M)] = functools.partial(
            ssl_loss, config, views=views,
            temperature=None if temps is None else temps.infonce)
  if 'target_only' in config.methods:
    x, y, masks = data.labelled.x_b, data.labelled.y, label_masks(config)
    objectives['target_only'] = lambda p: _per_m(
        lambda q, w: training.cross_entropy(_target_only_logits(config, q, x), y, w), p, masks)
  return objectives


def _target_only_logits(config, params, x):
  return linear(config.num_classes).apply(params['classifier'],
                                          features(config, params['tower'], x))


def train_targets(config, key, data: SettingData, teacher_features,
                  temps: Temperatures | None = None):
  """Stage 3 in one fused loop: (params by model name, final loss by model name)."""
  objectives = target_objectives(config, data, teacher_features, temps)
  k_tower, k_classifier = jax.random.split(key)
  tower = tower_init(config, k_tower, data.pairs.x_b)  # shared by every target model
  student = {'encoder': tower['encoder']}  # students have no projection head
  classifier = init_params(linear(config.num_classes), k_classifier,
                    jnp.zeros((1, config.feature_dim)))
  init = {}
  for name in objectives:
    method = _method(name)
    init[name] = (_replicate({'tower': student, 'classifier': classifier},
                             len(config.m_labelled)) if method == 'target_only' else
                  tower if method == 'target_ssl' else student)
  total = lambda params: sum(jnp.sum(objectives[n](params[n])) for n in objectives)
  params, _ = training.fit(total, init, optimizer(config.learning_rate), config.distill_steps)
  return params, {n: objectives[n](params[n]) for n in objectives}


def train_heads(config, key, data: SettingData, source_params, target_params):
  """Stage 4 in one fused loop: linear probes stacked over m ('probe_<method>_M<M>' on φ_B of
  the labelled x_B; 'source_probe' on φ_A of the labelled x_A) and domain classifiers
  ('domain_<method>_M<M>': φ_A(x_A) against φ_B(x_B) on the held-out domain pairs)."""
  k_probe, k_domain = jax.random.split(key)
  probe, domain = linear(config.num_classes), domain_classifier(config)
  zeros = jnp.zeros((1, config.feature_dim))
  probes_init = _replicate(init_params(probe, k_probe, zeros), len(config.m_labelled))
  domain_init = init_params(domain, k_domain, zeros)
  lab, dom, masks = data.labelled, data.domain, label_masks(config)
  phi_a = functools.partial(features, config, source_params)

  def probe_loss(x):
    return lambda p: _per_m(
        lambda q, w: training.cross_entropy(probe.apply(q, x), lab.y, w), p, masks)

  objectives = {'source_probe': probe_loss(phi_a(lab.x_a))}
  for M in config.num_pairs:
    for method in config.methods:
      if method not in PROBED:
        continue
      phi_b = functools.partial(features, config, target_params[_name(method, M)])
      objectives[_name('probe', method, M)] = probe_loss(phi_b(lab.x_b))
      if method in DISTILL_METHODS:
        x = jnp.concatenate([phi_a(dom.x_a), phi_b(dom.x_b)])
        is_b = jnp.repeat(jnp.arange(2), dom.x_a.shape[0])
        objectives[_name('domain', method, M)] = functools.partial(
            lambda x, is_b, p: training.cross_entropy(domain.apply(p, x), is_b), x, is_b)
  init = {n: domain_init if n.startswith('domain') else probes_init for n in objectives}
  total = lambda params: sum(jnp.sum(objectives[n](params[n])) for n in objectives)
  params, _ = training.fit(total, init, optimizer(config.probe_learning_rate),
                           config.probe_steps)
  return params


def _weight_norm(params):
  return jnp.sqrt(sum(jnp.sum(w ** 2) for w in jax.tree.leaves(params)))


def _error(logits, y, weights=None):
  return training.weighted_mean((jnp.argmax(logits, -1) != y).astype(jnp.float32), weights)


def measure(config, data: SettingData, target_params, target_losses, head_params, phi_a_test,
            floor, temps: Temperatures | None = None):
  """Per (M, m, method) metrics; every leaf has leading dims [len(M), len(m), len(methods)].

  Errors are on the coupled test pairs; `floor` is the target Bayes error (`bayes_floor`).
  NaN by definition: the C3 quantities and the TV estimate (`DISTILL_ONLY`) for the baselines,
  whose predictor has no meaning on φ_A; the C4 inputs (`PROBE_ONLY`) for target-only, whose
  features were trained on the same m labels (the Rademacher bound of a fixed feature map does
  not apply).
  """
  test, lab, masks = data.test, data.labelled, label_masks(config)
  n_m = len(config.m_labelled)
  probe, domain = linear(config.num_classes), domain_classifier(config)
  nan = jnp.full((n_m,), jnp.nan, jnp.float32)
  per_m = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n_m,))
  source_probe_err = jax.vmap(lambda g: _error(probe.apply(g, phi_a_test), test.y))(
      head_params['source_probe'])
  shared = {
      'bayes_floor': floor,
      'broken_fraction': jnp.mean(test.broken.astype(jnp.float32)),
      'margin_rho': config.margin_rho,
      'confidence_delta': config.delta, 'n_test': config.n_test,
  }
  temps = default_temperatures(config) if temps is None else temps
  shared |= {f'{name}_tau': value for name, value in temps._asdict().items()}
  shared = {k: per_m(v) for k, v in shared.items()} | {'source_probe_err': source_probe_err}
  val = data.validation

  def probed(method, M):
    phi_b = functools.partial(features, config, target_params[_name(method, M)])
    test_b, lab_b, val_b = phi_b(test.x_b), phi_b(lab.x_b), phi_b(val.x_b)
    augmented = jnp.concatenate([lab_b, jnp.ones((lab_b.shape[0], 1))], -1)

    def one(g, w):
      lab_logits = probe.apply(g, lab_b)
      pred_b = jnp.argmax(probe.apply(g, test_b), -1)
      norm = _weight_norm(g)  # Λ of [W; b]: the bias is folded in by the constant-1 feature
      out = {'target_err': jnp.mean((pred_b != test.y).astype(jnp.float32)),
             'val_err': _error(probe.apply(g, val_b), val.y),
             'probe_train_err': _error(lab_logits, lab.y, w),
             'probe_margin_risk': bounds.empirical_margin_risk(lab_logits, lab.y,
                                                               config.margin_rho, mask=w),
             'probe_weight_norm': norm,
             # C4 inputs: Λ of the margin bound and ‖X̃‖_F of the m labelled features.
             'probe_margin_norm': bounds.margin_weight_norm(measures.augmented_weights(g)),
             'probe_input_frobenius_norm': jnp.sqrt(jnp.sum(
                 jnp.where(w > 0, jnp.sum(augmented ** 2, -1), 0.0))),
             'rademacher': bounds.rademacher_linear_closed_form(augmented, norm, mask=w)}
      # P1: PAC-Bayes-kl of the probe on its m labelled examples (multiclass form).
      out |= pac_bayes.multiclass_p1(*pac_bayes.dense_layer(g), lab_b, lab.y, test_b, test.y,
                                     config.delta, weights=w, prefix='target_')
      if method in DISTILL_METHODS:
        pred_a = jnp.argmax(probe.apply(g, phi_a_test), -1)
        stats = bounds.coupled_pair_statistics(test.y, pred_a, pred_b, test.broken)
        out |= {k: stats[k] for k in ('source_err', 'pair_disagreement', 'clean_disagreement')}
      return out

    out = jax.vmap(one)(head_params[_name('probe', method, M)], masks)
    if method in DISTILL_METHODS:
      clean = ~test.broken
      cosine = jnp.sum(phi_a_test * test_b, -1)
      x = jnp.concatenate([phi_a_test, test_b])
      is_b = jnp.repeat(jnp.arange(2), test_b.shape[0])
      classifier = head_params[_name('domain', method, M)]
      acc = 1.0 - _error(domain.apply(classifier, x), is_b)
      called_b = lambda f: jnp.argmax(domain.apply(classifier, f), -1) == 1
      acc_heldout = jnp.mean(heldout_domain_correct(data.test_side, called_b(phi_a_test),
                                                    called_b(test_b)))
      out |= {'domain_acc_heldout': per_m(acc_heldout),
              'n_domain_heldout': per_m(config.n_test),
              'tv_estimate_heldout': per_m(2.0 * acc_heldout - 1.0),
              'clean_cosine': per_m(jnp.sum(jnp.where(clean, cosine, 0.0))
                                    / jnp.maximum(jnp.sum(clean), 1)),
              'domain_acc': per_m(acc),
              'tv_estimate': per_m(divergences.classifier_tv_estimate(acc))}
    return out | {'train_loss': per_m(target_losses[_name(method, M)])}

  def target_only():
    params = target_params['target_only']
    return {'target_err': jax.vmap(
                lambda q: _error(_target_only_logits(config, q, test.x_b), test.y))(params),
            'val_err': jax.vmap(
                lambda q: _error(_target_only_logits(config, q, val.x_b), val.y))(params),
            'probe_train_err': jax.vmap(
                lambda q, w: _error(_target_only_logits(config, q, lab.x_b), lab.y, w))(
                    params, masks),
            'train_loss': target_losses['target_only']}

  grid = []
  for M in config.num_pairs:
    cells = []
    for method in config.methods:
      cell = {k: nan for k in DISTILL_ONLY + PROBE_ONLY} | shared
      cells.append(cell | (target_only() if method == 'target_only' else probed(method, M)))
    grid.append(jax.tree.map(lambda *leaves: jnp.stack(leaves, -1), *cells))  # [n_m, methods]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *grid)  # [n_M, n_m, methods]


def run_profile(config, key, data: SettingData, floor, temps: Temperatures):
  """Stages 2–5 of one setting at one temperature profile: (metrics, trained params);
  `floor` is the target Bayes error reported beside them."""
  _, k_source, k_target, k_heads = jax.random.split(key, 4)
  source_params = pretrain_source(config, k_source, data.source_views, temps=temps)
  teacher_features = jax.lax.stop_gradient(features(config, source_params, data.pairs.x_a))
  target_params, target_losses = train_targets(config, k_target, data, teacher_features, temps)
  head_params = train_heads(config, k_heads, data, source_params, target_params)
  metrics = measure(config, data, target_params, target_losses, head_params,
                    features(config, source_params, data.test.x_a), floor, temps)
  return metrics, {'source': source_params, 'target': target_params, 'heads': head_params}


def run_profiles(config, key, data: SettingData, floor):
  """`run_profile` vmapped over `temperature_profiles` (the `temperature` inner axis, leading
  dimension of every output). Every profile sees the same data and initialisations."""
  return jax.vmap(lambda t: run_profile(config, key, data, floor, t))(
      temperature_profiles(config))


def run_setting(config, maps: Maps, key, epsilon, shift_norm=None):
  """One setting at one K end to end: (metrics, trained params), both stacked over the
  profiles. `shift_norm` None: the exact-TV generator; else Gaussian latents (`draw`)."""
  data = draw(config, maps, jax.random.split(key, 4)[0], epsilon, shift_norm)
  return run_profiles(config, key, data, bayes_floor(config, epsilon, shift_norm is not None))


def run_classes(classes, key, epsilon, shift_norm=None):
  """`run_setting` for every (config, maps) of `classes` (one per K, `class_configs`), on the
  same key: metrics stacked over K (the leading `num_classes` axis), params by 'K<k>'."""
  runs = [run_setting(c, maps, key, epsilon, shift_norm) for c, maps in classes]
  metrics = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(m for m, _ in runs))
  return metrics, {f'K{c.num_classes}': p for (c, _), (_, p) in zip(classes, runs)}
