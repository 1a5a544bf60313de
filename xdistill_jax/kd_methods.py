"""The KD methods of NTDH Table 1 as student objectives, and their training.

One place for both synthetic protocols (G: linear 25 → 2; S: MLP 50 → 16 → 16 → 4). Every
objective is ``ce_weight · CE(z_s, y) + term``, with the distillation terms (ntdh.md,
"Table 1"; the authors' `gauss/main.py` and `sklearn/main.py`):

==========  ===========================================================================
method      distillation term (teacher logits z_t frozen; features = logits, see below)
==========  ===========================================================================
kl          kd_weight · KL(softmax(z_t/T) ‖ softmax(z_s/T))           (`losses.kd`)
kl_omega    kd_weight · KL(softmax(ω z_t/T) ‖ softmax(ω z_s/T))       (`losses.masked_kd`)
crd         crd_weight · CRD(e_s(z_s), e_t(z_t)), τ = 0.07, dim 8     (`losses.crd`)
fitnet      kd_weight · ‖r(z_s) − z_t‖² / K, r a learned K → K map   (`losses.fitnet`)
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
* The methods' weights: 1 : 1 (CE : term) except CRD (1.0 : 0.02), as ntdh.md states; the
  authors' protocol-S script adds extra KL terms to CRD/FitNet/RKD and uses α = 16 for DKD,
  which ntdh.md does not, and this module does not either.
* RKD's angle term is a mean over n³ triplets (8·10⁶ for n = 200, per step and setting):
  far too much for 600 settings × 1000 steps. With `rkd_angle_rows = a > 0` RKD runs on a
  fixed random minibatch of 3a distinct training rows drawn once per setting (stacked as
  sets A, B, C): distances over all its pairs, angles over the a³ triplets A × B × C —
  RKD on a minibatch, as it is used in practice; the angle mean estimates the full-batch
  one (which also counts the ~3/n degenerate triplets with repeated points; the sample has
  none). `rkd_angle_rows = 0` gives the exact full-batch `losses.rkd`.
* SP, PKT and CRD use algebraically identical forms of `losses.sp` / `losses.pkt` /
  `losses.crd` that are cheaper inside a 1000-step loop (SP in O(n d²) without the n × n
  Gram matrix; PKT without the normalised conditional matrix; CRD with one exponential pass
  for both directions); tests check values and gradients against the library functions.
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
import optax

from xdistill_jax import losses
from xdistill_jax import training
from xdistill_jax.models import TorchDense

METHODS = ('kl', 'kl_omega', 'crd', 'fitnet', 'rkd', 'pkt', 'sp', 'dkd', 'dkd_omega')
LABELS = {'kl': 'KL', 'kl_omega': 'KL+ω', 'crd': 'CRD', 'fitnet': 'FitNet', 'rkd': 'RKD',
          'pkt': 'PKT', 'sp': 'SP', 'dkd': 'DKD', 'dkd_omega': 'DKD+ω'}
RELATIONAL = ('crd', 'rkd', 'pkt', 'sp')  # terms that couple examples
PLAIN_KL = ('kl', 'pkt', 'sp')  # terms that include kd_weight · KL(p_t^T ‖ p_s^T)
# Pairs (without mask, with mask) for the effect of ω.
OMEGA_PAIRS = (('kl', 'kl_omega'), ('dkd', 'dkd_omega'))


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Hyperparameters of the Table-1 objectives (defaults: ntdh.md, protocol G)."""

  temperature: float = 0.7  # T of KL, KL+ω and the KL parts of PKT and SP
  ce_weight: float = 1.0
  kd_weight: float = 1.0
  crd_weight: float = 0.02
  crd_dim: int = 8
  crd_temperature: float = 0.07
  dkd_alpha: float = 1.0
  dkd_beta: float = 1.0
  dkd_temperature: float = 0.7
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
# Relational terms in forms that are cheap inside a 1000-step loop (same values as `losses`).
# --------------------------------------------------------------------------------------------
# XLA:CPU vectorises [n, n, d] arrays with a tiny minor dimension d (the logits: d = K = 2 on
# protocol G) very poorly; these helpers work on d separate [n, n] planes instead (10x faster
# for the pairwise distances of RKD), which is the same arithmetic.
def _planes(x):
  """The d columns of x [..., d] as a list of [...] arrays."""
  return [x[..., k] for k in range(x.shape[-1])]


def _unit(v, eps=1e-8):
  """v / max(‖v‖, eps) along the last axis (as `losses`' normalisation)."""
  return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, -1, keepdims=True), eps * eps))


def _outer_dot(u, v):
  """[n, m] u_i · v_j, as d outer products for small d."""
  if u.shape[-1] > 4:
    return u @ v.T
  return sum(a[:, None] * b[None, :] for a, b in zip(_planes(u), _planes(v)))


def _safe_distances(x):
  """[n, n] Euclidean distances; 0 with zero gradient on identical rows."""
  sq = sum(jnp.square(c[:, None] - c[None, :]) for c in _planes(x))
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _normalized_distances(x):
  d = _safe_distances(x)
  count = jnp.sum((d > 0).astype(d.dtype))  # a float count: an int reduction is slow on CPU
  return d / jnp.maximum(jnp.sum(d) / jnp.maximum(count, 1.0), 1e-12)


def _unit_edges(anchors, sides, eps=1e-8):
  """Planes of the unit edge vectors (x_j − x_i)/‖x_j − x_i‖, each [a, b] (0 if zero)."""
  diffs = [s[None, :] - a[:, None] for a, s in zip(_planes(anchors), _planes(sides))]
  scale = jax.lax.rsqrt(jnp.maximum(sum(jnp.square(d) for d in diffs), eps * eps))
  return [d * scale for d in diffs]


def _angle_cosines(rows, a: int):
  """[a, a, a] cos∠(x_j − x_i, x_k − x_i) for i ∈ A, j ∈ B, k ∈ C (rows = [A; B; C])."""
  anchors, sides_b, sides_c = rows[:a], rows[a:2 * a], rows[2 * a:]
  e_b, e_c = _unit_edges(anchors, sides_b), _unit_edges(anchors, sides_c)
  return sum(b[:, :, None] * c[:, None, :] for b, c in zip(e_b, e_c))


def rkd_target(teacher, sample: int):
  """The teacher side of `rkd` on a row sample: its normalised distances and angle cosines."""
  return _normalized_distances(teacher), _angle_cosines(teacher, sample)


def rkd(student, teacher, distance_weight=25.0, angle_weight=50.0, sample: int = 0,
        target=None):
  """`losses.rkd`, or RKD on a structured sample of rows.

  With `sample = 0` this is `losses.rkd` (all n² pairs, all n³ triplets). With `sample = a`,
  `student`/`teacher` are [3a, d] rows stacked as A, B, C (see `draw_relation`): the distance
  term runs over all (3a)² pairs of these rows — RKD on a minibatch of 3a examples, as RKD is
  used in practice — and the angle term over the a³ triplets A × B × C (anchors in A). Same Huber
  (δ = 1), normalisations and eps guards as `losses.rkd`. `target` = `rkd_target(teacher,
  sample)` computed beforehand (teacher unused then).
  """
  if not sample:
    return losses.rkd(student, teacher, distance_weight, angle_weight)
  t_distances, t_angles = rkd_target(teacher, sample) if target is None else target
  distance = optax.losses.huber_loss(_normalized_distances(student), t_distances)
  angle = optax.losses.huber_loss(_angle_cosines(student, sample), t_angles)
  return distance_weight * jnp.mean(distance) + angle_weight * jnp.mean(angle)


def _gram_row_sq(x):
  """‖G_i‖² of the Gram matrix G = X Xᵀ, as x_iᵀ (XᵀX) x_i (O(n d²))."""
  return jnp.sum((x @ (x.T @ x)) * x, -1)


def _inv_norm(sq):
  return jax.lax.rsqrt(jnp.maximum(sq, 1e-16))  # 1 / max(‖·‖, 1e-8), as `losses`


def sp_target(teacher):
  """The teacher side of `sp`: (T, the rows t_i/max(‖G^t_i‖, ε), Σ_i ‖G̃^t_i‖²)."""
  b2 = _gram_row_sq(teacher)
  ib = _inv_norm(b2)
  return teacher, teacher * ib[:, None], jnp.sum(b2 * ib ** 2)


def sp(student, teacher, target=None):
  """`losses.sp` in O(n d²) instead of O(n² d): the same value, exactly.

  With G = X Xᵀ, ‖G_i‖² = x_iᵀ (XᵀX) x_i and Σ_j G^s_ij G^t_ij = s_iᵀ (SᵀT) t_i, so
  ‖G̃_s − G̃_t‖²_F = Σ_i [‖G^s_i‖²/max(‖G^s_i‖, ε)² + ‖G^t_i‖²/max(‖G^t_i‖, ε)²
  − 2 s_iᵀ(SᵀT)t_i / (max(‖G^s_i‖, ε) max(‖G^t_i‖, ε))] (ε = 1e-8 as in `losses`).
  `target` = `sp_target(teacher)` computed beforehand (teacher unused then).
  """
  t, t_scaled, t_part = sp_target(teacher) if target is None else target
  n = student.shape[0]
  a2 = _gram_row_sq(student)
  ia = _inv_norm(a2)
  cross = jnp.sum((student @ (student.T @ t)) * t_scaled, -1)
  return (jnp.sum(a2 * ia ** 2 - 2.0 * cross * ia) + t_part) / n ** 2


def crd(student_embeddings, teacher_embeddings, temperature=0.07):
  """`losses.crd` per anchor with one exponential pass over the n × n similarities.

  Both InfoNCE directions share C = cos(e_s,i, e_t,j)/τ; since C ≤ 1/τ, exp(C − 1/τ) never
  overflows, and its row and column sums give both log-partition functions:
  ℓ_i = ½[(log Σ_j e^{C_ij − 1/τ} + 1/τ − C_ii) + (log Σ_j e^{C_ji − 1/τ} + 1/τ − C_ii)].
  (Underflow needs C_ij − 1/τ < −87, impossible for τ > 1/43.)
  """
  inv_t = 1.0 / temperature
  c = _outer_dot(_unit(student_embeddings), _unit(teacher_embeddings)) * inv_t
  e = jnp.exp(c - inv_t)
  diagonal = jnp.diagonal(c)
  return 0.5 * (jnp.log(jnp.sum(e, 1)) + jnp.log(jnp.sum(e, 0))) + inv_t - diagonal


def _pkt_kernel(x):
  """K_ij = (1 + x̂_i·x̂_j)/2 and its row sums r_i = (n + x̂_i·Σ_j x̂_j)/2 (O(n d))."""
  u = _unit(x)
  return (1.0 + _outer_dot(u, u)) / 2.0, (x.shape[0] + u @ jnp.sum(u, 0)) / 2.0


def pkt_target(teacher, eps=1e-7):
  """The teacher side of `pkt`: p [n, n], Σ_j p_ij log(p_ij + ε) and Σ_j p_ij per row."""
  k_t, r_t = _pkt_kernel(teacher)
  p = k_t / r_t[:, None]
  return p, jnp.sum(p * jnp.log(p + eps), -1), jnp.sum(p, -1)


def pkt(student, teacher, eps=1e-7, target=None):
  """`losses.pkt` per anchor, with the kernel's row sums in O(n d).

  log(q_ij + ε) = log(K_ij + ε r_i) − log r_i, so q is never materialised. `target` =
  `pkt_target(teacher, eps)` computed beforehand (teacher unused then).
  """
  p, p_log_p, p_sum = pkt_target(teacher, eps) if target is None else target
  k_s, r_s = _pkt_kernel(student)
  return p_log_p - jnp.sum(p * jnp.log(k_s + eps * r_s[:, None]), -1) + p_sum * jnp.log(r_s)


# --------------------------------------------------------------------------------------------
# Objectives.
# --------------------------------------------------------------------------------------------
def teacher_target(method: str, teacher_rows, sample: int = 0):
  """The teacher-side constants of RKD (on a row sample), PKT and SP; None for the others.

  Computed once, before the training loop (`method_loss`), so the loop body does not
  recompute them at every step.
  """
  if method == 'rkd' and sample:
    return rkd_target(teacher_rows, sample)
  if method == 'pkt':
    return pkt_target(teacher_rows)
  if method == 'sp':
    return sp_target(teacher_rows)
  return None


def _own_term(method: str, hyper: Hyper, zs, zt, labels, heads, relational, angle, target):
  """The distillation term without its plain KL part (see `PLAIN_KL`)."""
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
    return h.kd_weight * jnp.mean(losses.fitnet(_dense(heads['regressor'], zs), zt))
  if method not in RELATIONAL:
    raise ValueError(f'unknown KD method {method!r}; allowed: {", ".join(METHODS)}')
  view = angle if method == 'rkd' and angle is not None else relational
  rs, rt = (zs, zt) if view is None else (view[0], jax.lax.stop_gradient(view[1]))
  if method == 'crd':
    return h.crd_weight * jnp.mean(crd(_dense(heads['embed_s'], rs),
                                       _dense(heads['embed_t'], rt), h.crd_temperature))
  if method == 'rkd':
    return h.kd_weight * rkd(rs, rt, h.rkd_distance_weight, h.rkd_angle_weight,
                             0 if angle is None else angle[0].shape[0] // 3, target)
  if method == 'pkt':
    return h.kd_weight * jnp.sum(pkt(rs, rt, target=target)) / rs.shape[0] ** 2
  return h.kd_weight * sp(rs, rt, target)  # sp


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
  if method in PLAIN_KL:
    term = term + hyper.kd_weight * jnp.mean(losses.kd(student_logits, zt, hyper.temperature))
  return term


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy, = `training.cross_entropy`, written with a one-hot mask.

  `optax`'s integer-label form gathers the target logit (`take_along_axis`), whose gradient
  is a scatter-add — slow on XLA:CPU inside a 1000-step loop; a one-hot mask is not.
  """
  onehot = jnp.arange(logits.shape[-1]) == labels[..., None]
  log_p = jax.nn.log_softmax(logits, -1)
  return -jnp.mean(jnp.sum(jnp.where(onehot, log_p, 0.0), -1))


def objective(method: str, hyper: Hyper, student_logits, teacher_logits, labels, heads=None,
              relational=None, angle=None, target=None):
  """ce_weight · CE(z_s, y) + the method's distillation term (see `distillation_term`)."""
  return (hyper.ce_weight * cross_entropy(student_logits, labels)
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
