"""The KD methods of NTDH Table 1 as student objectives, and their training.

One place for both synthetic protocols (G: linear 25 → 2; S: MLP 50 → 16 → 16 → 4). Every
objective is ``ce_weight · CE(z_s, y) + term``, with the distillation terms
(docs/protocols.md §T; the authors' `gauss/main.py` and `sklearn/main.py`):

==========  ===========================================================================
method      distillation term (teacher logits z_t frozen; features = logits, see below)
==========  ===========================================================================
kl          kd_weight · KL(softmax(z_t/T) ‖ softmax(z_s/T))           (`losses.kd`)
kl_omega    kd_weight · KL(softmax(ω z_t/T) ‖ softmax(ω z_s/T))       (`losses.masked_kd`)
crd         crd_weight · CRD(e_s(z_s), e_t(z_t)), τ = 0.07, dim 8     (`losses.crd`)
fitnet      fitnet_weight · ‖r(z_s) − z_t‖² / K, r a learned K → K map (`losses.fitnet`)
rkd         kd_weight · (25 · distance + 50 · angle)                  (`losses.rkd`)
pkt         kd_weight · (mean_i PKT_i / n + KL at T)                  (`losses.pkt`)
sp          kd_weight · (SP + KL at T)                                 (`losses.sp`)
dkd         kd_weight · T² (α TCKD + β NCKD), α = β = 1, T = 0.7       (`losses.dkd`)
dkd_omega   the same, both parts weighted per example by ω            (`losses.dkd`)
==========  ===========================================================================

Design choices (each documented where it is implemented):

* Features are the logits, for every feature/relational method, as in the authors' code
  (`criterion_rkd(output, pl)` etc.): a linear student of protocol G has no hidden layer,
  and its "last hidden representation" would be its raw input, which no parameter changes.
* ω is the NTDH sample mask `losses.sample_mask` on the current teacher and student logits
  at T = 1, a constant (stop-gradient) recomputed at every step.
* FitNet's regressor is a learned linear map (PyTorch-initialised), trained with the
  student. The authors' `ConvReg` on vectors is a BatchNorm + ReLU rebuilt at every step,
  i.e. never trained; the spec asks for a learned regressor.
* CRD is the in-batch contrastive form of `losses.crd` (both directions averaged): the
  memory bank of the original is state across steps, which the pure, vmapped design does
  not have. The two linear embeddings (K → 8, L2-normalised) are learned with the student
  (in the authors' code they are not in the optimizer and stay at their initialisation).
* PKT divides the per-anchor KL by n: the authors' PKT averages over the n × n matrix.
* The methods' weights (`Hyper` defaults, protocol G): 1 : 1 (CE : term) except CRD
  (1.0 : 0.02). The authors' protocol-S settings (docs/protocols.md §T) add a KL at T to
  CRD, FitNet and RKD (`crd_kl_weight`, `fitnet_kl_weight`, `rkd_kl_weight`, 0 on G), weigh
  FitNet's hint by `fitnet_weight` = 0.1 and use DKD α = 16; configs/ntdh_table1.py:S sets
  them.
* RKD's angle term is a mean over n³ triplets (8·10⁶ for n = 200, per step and setting):
  far too much for 600 settings × 1000 steps. With `rkd_angle_rows = a > 0` RKD runs on a
  fixed random minibatch of 3a distinct training rows drawn once per setting (stacked as
  sets A, B, C): distances over all its pairs, angles over the a³ triplets A × B × C —
  RKD on a minibatch, as it is used in practice; the angle mean estimates the full-batch
  one (which also counts the ~3/n degenerate triplets with repeated points; the sample has
  none). `rkd_angle_rows = 0` gives the exact full-batch `losses.rkd`.
* Every term is the library function of `losses` (whose forms are the cheap ones inside a
  1000-step loop: SP in O(n d²), PKT without the student's conditional matrix, CRD in one
  exponential pass, per-plane pairwise terms on the CPU), with the teacher side
  (`losses.rkd_target`, `pkt_target`, `sp_target`) computed once per setting.
* With `relational_batch = r > 0` the relational and contrastive terms (CRD, RKD, PKT, SP)
  see a fixed random subset of r training examples drawn once per setting (protocol S has
  n = 6000 examples: an n × n matrix per step and setting is out of reach on a CPU); CE
  and the logit terms always use the whole batch.

* The teacher-side constants of RKD, PKT and SP (`teacher_target`) are computed once per
  setting, outside the training loop.

Each method's student trains in its own loop (`fit_students`).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from xdistill_jax import config_schema
from xdistill_jax import losses
from xdistill_jax import measures
from xdistill_jax import training
from xdistill_jax.models import TorchDense

METHODS = ('kl', 'kl_omega', 'crd', 'fitnet', 'rkd', 'pkt', 'sp', 'dkd', 'dkd_omega')
LABELS = {'kl': 'KL', 'kl_omega': 'KL+ω', 'crd': 'CRD', 'fitnet': 'FitNet', 'rkd': 'RKD',
          'pkt': 'PKT', 'sp': 'SP', 'dkd': 'DKD', 'dkd_omega': 'DKD+ω'}
RELATIONAL = ('crd', 'rkd', 'pkt', 'sp')  # terms that couple examples
PLAIN_KL = ('kl', 'pkt', 'sp')  # terms that include kd_weight · KL(p_t^T ‖ p_s^T)
# Terms with a KL(p_t^T ‖ p_s^T) part of their own weight (0 on protocol G; the authors'
# protocol-S script adds one: docs/protocols.md §T).
EXTRA_KL = {'crd': 'crd_kl_weight', 'fitnet': 'fitnet_kl_weight', 'rkd': 'rkd_kl_weight'}
# Pairs (without mask, with mask) for the effect of ω.
OMEGA_PAIRS = (('kl', 'kl_omega'), ('dkd', 'dkd_omega'))


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Hyperparameters of the Table-1 objectives (defaults: protocol G, docs/protocols.md §T)."""

  temperature: float = 0.7  # T of KL, KL+ω and the KL parts of PKT and SP
  ce_weight: float = 1.0
  kd_weight: float = 1.0
  crd_weight: float = 0.02
  crd_dim: int = 8
  crd_temperature: float = 0.07
  dkd_alpha: float = 1.0
  dkd_beta: float = 1.0
  dkd_temperature: float = 0.7
  fitnet_weight: float = 1.0  # weight of FitNet's hint term
  crd_kl_weight: float = 0.0  # weights of a KL(p_t^T ‖ p_s^T) added to CRD, FitNet, RKD
  fitnet_kl_weight: float = 0.0
  rkd_kl_weight: float = 0.0
  omega_threshold: float = 0.996
  rkd_distance_weight: float = 25.0
  rkd_angle_weight: float = 50.0


class Relation(NamedTuple):
  """Which training rows the relational terms see (fixed per setting, `draw_relation`).

  subset: [r] row indices of the relational terms (None = every row).
  angle_rows: [3a] row indices (into the whole batch) of RKD's sample: anchors A, then
    sides B and C (a rows each); RKD's distances run over all pairs of these rows and its
    angles over A × B × C (None = exact RKD on the relational rows).
  """

  subset: jax.Array | None = None
  angle_rows: jax.Array | None = None


def check_rkd_angle_rows(methods, rkd_angle_rows: int, rows: int, field: str) -> None:
  """Raises `ConfigError` when RKD's angle sample (3 × `rkd_angle_rows` distinct rows, see
  `draw_relation`) does not fit in the `rows` relational rows; `field` names the config field."""
  if 'rkd' in methods and 3 * rkd_angle_rows > rows:
    raise config_schema.ConfigError(
        f'config.{field}={rkd_angle_rows!r} is invalid; allowed: at most {rows // 3} (RKD '
        f'needs 3 × rkd_angle_rows distinct rows of the {rows} relational rows).')


def draw_relation(key, n: int, relational_batch: int = 0, rkd_angle_rows: int = 0) -> Relation:
  """A fixed subset of `relational_batch` rows (0 = all) and RKD's rows (0 = exact RKD).

  RKD's 3a rows are distinct relational rows (a uniformly random ordered sample without
  replacement), split into A, B, C. Distinct rows matter: two copies of one example get
  logits that agree only to rounding when computed at different batch positions, and the
  direction of their (≈ 0) difference — hence an angle — would be noise.
  """
  k_subset, k_angle = jax.random.split(key)
  r = n if not relational_batch or relational_batch >= n else relational_batch
  subset = None if r == n else jax.random.choice(k_subset, n, (r,), replace=False)
  angle_rows = None
  if rkd_angle_rows:
    if 3 * rkd_angle_rows > r:
      raise ValueError(f'rkd_angle_rows={rkd_angle_rows} needs 3 × {rkd_angle_rows} distinct '
                       f'rows; only {r} relational rows.')
    angle_rows = jax.random.permutation(k_angle, r)[:3 * rkd_angle_rows]
    if subset is not None:
      angle_rows = subset[angle_rows]
  return Relation(subset, angle_rows)


# --------------------------------------------------------------------------------------------
# Heads (FitNet's regressor, CRD's embeddings).
# --------------------------------------------------------------------------------------------
def init_heads(method: str, key, num_classes: int, hyper: Hyper) -> dict:
  """The method's own trainable heads: {} for all but FitNet and CRD."""
  x = jnp.zeros((1, num_classes))
  if method == 'fitnet':
    return {'regressor': TorchDense(num_classes).init(key, x)}
  if method == 'crd':
    k_s, k_t = jax.random.split(key)
    return {'embed_s': TorchDense(hyper.crd_dim).init(k_s, x),
            'embed_t': TorchDense(hyper.crd_dim).init(k_t, x)}
  return {}


def _dense(params, x):
  return TorchDense(params['params']['kernel'].shape[-1]).apply(params, x)


# --------------------------------------------------------------------------------------------
# Objectives.
# --------------------------------------------------------------------------------------------
def teacher_target(method: str, teacher_rows, sample: int = 0):
  """The teacher-side constants of RKD (on a row sample), PKT and SP; None for the others.

  Computed once, before the training loop (`method_loss`), so the loop body does not
  recompute them at every step.
  """
  if method == 'rkd':
    return losses.rkd_target(teacher_rows, sample)
  if method == 'pkt':
    return losses.pkt_target(teacher_rows)
  if method == 'sp':
    return losses.sp_target(teacher_rows)
  return None


def _own_term(method: str, hyper: Hyper, zs, zt, labels, heads, relational, angle, target):
  """The distillation term without its plain KL part (see `plain_kl_weight`)."""
  h = hyper
  if method == 'kl':
    return 0.0
  if method == 'kl_omega':
    return h.kd_weight * jnp.mean(losses.masked_kd(zs, zt, labels, h.temperature,
                                                   h.omega_threshold))
  if method in ('dkd', 'dkd_omega'):
    weights = (losses.sample_mask(zt, zs, labels, h.omega_threshold) if method == 'dkd_omega'
               else None)
    return h.kd_weight * jnp.mean(losses.dkd(zs, zt, labels, h.dkd_alpha, h.dkd_beta,
                                             h.dkd_temperature, weights))
  if method == 'fitnet':
    return h.fitnet_weight * jnp.mean(losses.fitnet(_dense(heads['regressor'], zs), zt))
  if method not in RELATIONAL:
    raise ValueError(f'unknown KD method {method!r}; allowed: {", ".join(METHODS)}')
  view = angle if method == 'rkd' and angle is not None else relational
  rs, rt = (zs, zt) if view is None else (view[0], jax.lax.stop_gradient(view[1]))
  if method == 'crd':
    return h.crd_weight * jnp.mean(losses.crd(_dense(heads['embed_s'], rs),
                                              _dense(heads['embed_t'], rt), h.crd_temperature))
  if method == 'rkd':
    return h.kd_weight * losses.rkd(rs, rt, h.rkd_distance_weight, h.rkd_angle_weight,
                                    0 if angle is None else angle[0].shape[0] // 3, target)
  if method == 'pkt':
    return h.kd_weight * jnp.sum(losses.pkt(rs, rt, target=target)) / rs.shape[0] ** 2
  return h.kd_weight * losses.sp(rs, rt, target)  # sp


def plain_kl_weight(method: str, hyper: Hyper) -> float:
  """Weight of the method's KL(p_t^T ‖ p_s^T) part: kd_weight (KL, PKT, SP), the method's
  `EXTRA_KL` weight (CRD, FitNet, RKD) or 0 (KL+ω, DKD, DKD+ω)."""
  if method in PLAIN_KL:
    return hyper.kd_weight
  return getattr(hyper, EXTRA_KL[method]) if method in EXTRA_KL else 0.0


def distillation_term(method: str, hyper: Hyper, student_logits, teacher_logits, labels,
                      heads=None, relational=None, angle=None, target=None):
  """The method's distillation term (scalar, weights included, CE excluded).

  Args:
    method: one of `METHODS`.
    hyper: `Hyper`.
    student_logits: [n, K].
    teacher_logits: [n, K] (stop-gradiented here: the teacher is frozen).
    labels: [n] int.
    heads: the method's heads from `init_heads` (FitNet, CRD).
    relational: optional (student rows, teacher rows) [r, K] that the relational terms (CRD,
      RKD, PKT, SP) see instead of the whole batch.
    angle: optional (student rows, teacher rows) [3a, K]: RKD's row sample A; B; C (see
      `rkd`); None = exact RKD on the relational rows.
    target: optional `teacher_target` of the teacher rows the term sees (saves recomputing
      it at every training step).
  """
  zt = jax.lax.stop_gradient(teacher_logits)
  term = _own_term(method, hyper, student_logits, zt, labels, heads, relational, angle, target)
  kl_weight = plain_kl_weight(method, hyper)
  if kl_weight:  # a Python number: a zero weight adds nothing to the program
    term = term + kl_weight * jnp.mean(losses.kd(student_logits, zt, hyper.temperature))
  return term


def objective(method: str, hyper: Hyper, student_logits, teacher_logits, labels, heads=None,
              relational=None, angle=None, target=None):
  """ce_weight · CE(z_s, y) + the method's distillation term (see `distillation_term`)."""
  return (hyper.ce_weight * training.cross_entropy(student_logits, labels)
          + distillation_term(method, hyper, student_logits, teacher_logits, labels, heads,
                              relational, angle, target))


# --------------------------------------------------------------------------------------------
# Fused training of every method's student.
# --------------------------------------------------------------------------------------------
def stack(params: dict, methods) -> dict:
  """The methods' model parameters stacked on a leading axis (in `methods` order)."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[params[m]['model'] for m in methods])


def student_logits(apply_fn, params: dict, methods, x):
  """[M, n, K] logits of every method's student on the shared input x (one batched pass)."""
  return jax.vmap(apply_fn, (0, None))(stack(params, methods), x)


def init_students(methods, key, student_init, num_classes: int, hyper: Hyper) -> dict:
  """{method: {'model': student_init, 'heads': ...}}: every student starts where the
  baseline starts; head keys depend only on the method (not on the other methods chosen)."""
  return {m: {'model': student_init,
              'heads': init_heads(m, jax.random.fold_in(key, METHODS.index(m)), num_classes,
                                  hyper)}
          for m in methods}


def method_loss(method: str, hyper: Hyper, apply_fn, x, teacher_logits, labels,
                relation: Relation = Relation()):
  """params -> `objective(method)` of one student ({'model', 'heads'}): its training loss.

  The rows the method's relational term sees (`relation`: RKD's sample, else the subset) and
  their `teacher_target` are computed once, here, outside the training loop; inside it the
  student runs one forward pass over [x; x[rows]] (no gathers or scatters per step).
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  n = x.shape[0]
  rkd_sample = method == 'rkd' and relation.angle_rows is not None
  rows = relation.angle_rows if rkd_sample else (
      relation.subset if method in RELATIONAL else None)
  inputs = x if rows is None else jnp.concatenate([x, x[rows]])
  view_teacher = teacher_logits if rows is None else teacher_logits[rows]
  target = teacher_target(method, view_teacher, rows.shape[0] // 3 if rkd_sample else 0)

  def loss(params):
    logits = apply_fn(params['model'], inputs)
    view = None if rows is None else (logits[n:], view_teacher)
    return objective(method, hyper, logits[:n], teacher_logits, labels, params['heads'],
                     None if rkd_sample else view, view if rkd_sample else None, target)

  return loss


def fit_students(methods, hyper: Hyper, apply_fn, params: dict, x, teacher_logits, labels,
                 optimizer, steps: int, relation: Relation = Relation()):
  """Trains every method's student, each in its own `training.fit` loop.

  The loops sit side by side in one compiled program, and a student's result does not depend
  on which other methods train. (A single loop whose forward pass ran every student at once on
  method-stacked parameters was 2× slower on XLA:CPU: stacking turns the narrow layers'
  matrix–vector products into slow few-column products; BENCHMARKS.md.)

  Args:
    methods: method names (static).
    hyper: `Hyper`.
    apply_fn: (model params, x) -> logits.
    params: from `init_students`.
    x: [n, d] student inputs (shared by every method).
    teacher_logits: [n, K] frozen teacher logits on the paired teacher inputs.
    labels: [n].
    optimizer: optax transformation.
    steps: full-batch steps.
    relation: `draw_relation` output.

  Returns:
    The trained params dict.
  """
  return {m: training.fit(method_loss(m, hyper, apply_fn, x, teacher_logits, labels, relation),
                          params[m], optimizer, steps)[0]
          for m in methods}


def omega_statistics(teacher_logits, student_logits, labels, threshold=0.996) -> dict:
  """Mean ω and fraction of examples with ω = 0 between a teacher and a student."""
  omega = losses.sample_mask(teacher_logits, student_logits, labels, threshold)
  return {'omega_mean': jnp.mean(omega), 'omega_zero': jnp.mean((omega == 0).astype(jnp.float32))}


def method_metrics(teacher_train, teacher_test, kd_train, kd_test, y_train, y_test,
                   threshold=0.996) -> dict:
  """Per-method columns of a Table-1 row from [M, n, K] student logits (leading axis M).

  Test accuracy, training cross-entropy, the teacher–student divergences on the test set
  (`measures.teacher_student_divergences`, suffix `_test`) and ω on the training set.
  """
  out = {'kd_acc': jax.vmap(training.accuracy, (0, None))(kd_test, y_test),
         'kd_loss': jax.vmap(training.cross_entropy, (0, None))(kd_train, y_train)}
  out |= jax.vmap(lambda z: measures.teacher_student_divergences(
      teacher_test, z, y_test, suffix='_test'))(kd_test)
  return out | jax.vmap(lambda z: omega_statistics(teacher_train, z, y_train, threshold))(
      kd_train)


def shared_metrics(teacher_train, teacher_test, baseline_train, baseline_test, y_train, y_test,
                   num_classes: int, delta: float) -> dict:
  """The method-independent columns of a Table-1 row: teacher and baseline accuracy and
  training loss, the sample sizes, K and the confidence δ of the probabilistic bounds."""
  return {
      'teacher_acc': training.accuracy(teacher_test, y_test),
      'baseline_acc': training.accuracy(baseline_test, y_test),
      'teacher_loss': training.cross_entropy(teacher_train, y_train),
      'baseline_loss': training.cross_entropy(baseline_train, y_train),
      'n_train': jnp.asarray(y_train.shape[0], jnp.float32),
      'n_test': jnp.asarray(y_test.shape[0], jnp.float32),
      'num_classes': jnp.asarray(num_classes, jnp.float32),
      'confidence_delta': jnp.asarray(delta, jnp.float32),
  }
