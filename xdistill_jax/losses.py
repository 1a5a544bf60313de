"""Distillation losses: logit, feature/relational and contrastive families.

* Logit losses (Hinton KD, Decoupled KD, the NTDH sample mask ω and KL+ω; docs/protocols.md §M;
  theory.md §1) are built on :mod:`xdistill_jax.divergences`.
* Feature and relational losses of NTDH Table 1 (FitNet, RKD, PKT, SP, CRD; docs/protocols.md §T).
* Contrastive cross-modal losses of CMCD (InfoNCE, CMD, CMC, L2; docs/protocols.md §C).

Conventions (optax-like): pure functions of arrays; the caller reduces. Losses that are
defined per example return ``[n]`` (or ``[...]``); losses that couple examples return
per-anchor values ``[n]`` where meaningful (:func:`pkt`, :func:`crd`, :func:`infonce`,
:func:`cmd_loss`, :func:`cmc_loss`) and a scalar otherwise (:func:`rkd`, :func:`sp`).
Teacher inputs are **not** stop-gradiented (wrap them in ``jax.lax.stop_gradient`` for a
frozen teacher) except where a method defines the teacher side as a constant
(:func:`sample_mask`, :func:`cmd_loss`). Vector normalisations are eps-safe: zero vectors give
finite values and finite gradients.
"""

import jax
import jax.numpy as jnp
import optax

from xdistill_jax import divergences
from xdistill_jax import models

__all__ = [
    'kd',
    'dkd',
    'sample_mask',
    'masked_kd',
    'fitnet',
    'rkd',
    'rkd_target',
    'pkt',
    'pkt_target',
    'sp',
    'sp_target',
    'crd',
    'infonce',
    'cmd_loss',
    'cmc_loss',
    'l2_align',
    'l2_normalize',
    'NORM_EPS',
]

# ε of every L2 normalisation of the package, x / max(‖x‖, ε): PyTorch's `F.normalize`
# default, which the reference codes of SP, RKD and CRD use, so vectors of norm >= 1e-12 are
# scaled exactly as there. A zero vector maps to 0 with the finite gradient 1/ε; ε² = 1e-24
# is a normal float32 number, so the guard acts in float32 as in float64.
NORM_EPS = 1e-12


def _inverse_norm(squared_norm):
  """1 / max(‖x‖, ε) from ‖x‖² (ε = `NORM_EPS`): the one normaliser of the package."""
  return jax.lax.rsqrt(jnp.maximum(squared_norm, NORM_EPS * NORM_EPS))


def l2_normalize(x):
  """x / max(‖x‖, ε) along the last axis (ε = `NORM_EPS`); 0 with finite gradient at x = 0.

  Example:
    >>> import jax.numpy as jnp
    >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
  """
  return x * _inverse_norm(jnp.sum(x * x, axis=-1, keepdims=True))


# XLA:CPU vectorises [n, m, d] arrays whose minor dimension d is tiny (d = K = 2 logits on
# protocol G) very poorly: on the CPU backend, and for d <= `models.NARROW`, pairwise
# quantities are computed on the d separate [n, m] planes instead (the same arithmetic, 10x
# faster for RKD's distances). Accelerators get the plain broadcast form.
def _planes(x):
  """The columns of x [..., d] as d arrays [...], where the CPU form applies; else None."""
  if models.cpu_forms() and x.shape[-1] <= models.NARROW:
    return [x[..., k] for k in range(x.shape[-1])]
  return None


def _inner(a, b):
  """[n, m] inner products a_i · b_j of the rows of a [n, d] and b [m, d]."""
  planes_a, planes_b = _planes(a), _planes(b)
  if planes_a is None or planes_b is None:
    return a @ b.T
  return sum(u[:, None] * v[None, :] for u, v in zip(planes_a, planes_b))


def _cosine_matrix(a, b):
  """[n, m] cosine similarities between the rows of a [n, d] and b [m, d]."""
  return _inner(l2_normalize(a), l2_normalize(b))


# --------------------------------------------------------------------------------------------
# Logit losses.
# --------------------------------------------------------------------------------------------
def kd(student_logits, teacher_logits, temperature=1.0):
  r"""Knowledge-distillation loss of Hinton et al.: KL(teacher ‖ student) at temperature T.

  .. math:: \ell = \mathrm{KL}(\mathrm{softmax}(z_t/T) \,\|\, \mathrm{softmax}(z_s/T)).

  No T² factor: multiply by ``temperature**2`` for Hinton's gradient scaling. The teacher is
  not stop-gradiented here (the caller decides; pass ``jax.lax.stop_gradient(teacher)`` for a
  frozen teacher). Reference: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
  Network", 2015.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``.
    temperature: softmax temperature T.

  Returns:
    ``[...]`` per-example loss in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.log(jnp.array([[0.9, 0.1]])); t = jnp.log(jnp.array([[0.5, 0.5]]))
    >>> print(kd(s, t).round(4))
    [0.5108]
  """
  return divergences.kl(teacher_logits, student_logits, temperature)


def dkd(student_logits, teacher_logits, labels, alpha=1.0, beta=8.0, temperature=4.0,
        weights=None):
  r"""Decoupled Knowledge Distillation loss.

  .. math:: \ell = w \, T^2 \, (\alpha\, \mathrm{TCKD} + \beta\, \mathrm{NCKD}),

  TCKD = KL(b(p)‖b(q)), NCKD = KL(p̂‖q̂) (see :mod:`xdistill_jax.divergences`), p the
  teacher and q the student at temperature T. With ``alpha=1`` and ``beta = 1 - p_y`` (per
  example) it equals ``T**2 * kd`` (theory.md D1). ``weights`` multiplies both terms per
  example; with ``weights = sample_mask(...)`` this is DKD+ω of NTDH (docs/protocols.md §M).
  Reference: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022. The teacher is not
  stop-gradiented here.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``.
    labels: ``[...]`` integer target classes.
    alpha: TCKD weight (scalar or ``[...]``).
    beta: NCKD weight (scalar or ``[...]``).
    temperature: softmax temperature T (scalar).
    weights: optional ``[...]`` per-example multiplier.

  Returns:
    ``[...]`` per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.array([[2.0, 0.0, -1.0]]); t = jnp.array([[3.0, 0.0, 1.0]])
    >>> print(dkd(s, t, jnp.array([0]), temperature=1.0).round(4))
    [3.6969]
  """
  tckd = divergences.target_kl(teacher_logits, student_logits, labels, temperature)
  nckd = divergences.non_target_kl(teacher_logits, student_logits, labels, temperature)
  loss = temperature**2 * (alpha * tckd + beta * nckd)
  return loss if weights is None else weights * loss


def sample_mask(teacher_logits, student_logits, labels, threshold=0.996):
  r"""NTDH sample mask ω (a constant: wrapped in ``stop_gradient``).

  .. math:: \omega = \begin{cases} 1 & \arg\max z_t = y \\
            \tfrac{1 + c}{2}\, \mathbb 1[c \ge \tau] & \text{otherwise,} \end{cases}
            \qquad c = \cos(z_t, z_s).

  Reference: Chen et al., "Non-target Divergence Hypothesis", arXiv 2409.02438
  (docs/protocols.md §M).

  Args:
    teacher_logits: ``[..., K]``.
    student_logits: ``[..., K]``.
    labels: ``[...]`` integer target classes.
    threshold: cosine threshold τ for keeping a wrong teacher's example.

  Returns:
    ``[...]`` per-example weights in ``[0, 1]``, with zero gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> t = jnp.array([[2.0, 0.0], [2.0, 0.0]]); s = jnp.array([[0.0, 1.0], [0.0, 1.0]])
    >>> sample_mask(t, s, jnp.array([0, 1])).tolist()  # right teacher, wrong + c = 0
    [1.0, 0.0]
  """
  c = jnp.sum(l2_normalize(teacher_logits) * l2_normalize(student_logits), axis=-1)
  right = jnp.argmax(teacher_logits, axis=-1) == labels
  omega = jnp.where(right, 1.0, jnp.where(c >= threshold, (1.0 + c) / 2.0, 0.0))
  return jax.lax.stop_gradient(omega.astype(c.dtype))


def masked_kd(student_logits, teacher_logits, labels, temperature=1.0, threshold=0.996):
  r"""KL+ω of NTDH: KD on logits scaled by the sample mask ω of :func:`sample_mask`.

  .. math:: \ell = \mathrm{KL}(\mathrm{softmax}(\omega z_t/T) \,\|\,
            \mathrm{softmax}(\omega z_s/T)).

  ω = 0 turns both distributions uniform, so masked examples contribute 0. ω is a
  constant; the teacher logits are not stop-gradiented. Reference: Chen et al.,
  arXiv 2409.02438 (docs/protocols.md §M).

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``.
    labels: ``[...]`` integer target classes.
    temperature: softmax temperature T.
    threshold: cosine threshold of ω.

  Returns:
    ``[...]`` per-example loss in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> t = jnp.array([[2.0, 0.0]]); s = jnp.array([[0.0, 1.0]])
    >>> masked_kd(s, t, jnp.array([1])).tolist()  # wrong teacher, c = 0: masked out
    [0.0]
  """
  omega = sample_mask(teacher_logits, student_logits, labels, threshold)[..., None]
  return divergences.kl(omega * teacher_logits, omega * student_logits, temperature)


# --------------------------------------------------------------------------------------------
# Feature and relational losses (NTDH Table 1).
# --------------------------------------------------------------------------------------------
def fitnet(student_features, teacher_features):
  r"""FitNet hint loss: per-example mean squared error ‖s − t‖² / d.

  The caller supplies the regressor's output (the student's hint mapped to the teacher's
  width) as ``student_features``. Reference: Romero et al., "FitNets: Hints for Thin Deep
  Nets", ICLR 2015.

  Args:
    student_features: ``[..., d]`` regressed student features.
    teacher_features: ``[..., d]`` teacher hint.

  Returns:
    ``[...]`` per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> fitnet(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])).tolist()
    [2.5]
  """
  return jnp.mean(jnp.square(student_features - teacher_features), axis=-1)


def _distances(x):
  """[n, n] Euclidean distances ‖x_i − x_j‖, exactly 0 (with zero gradient) on equal rows."""
  planes = _planes(x)
  if planes is None:
    return divergences._safe_norm(x[:, None, :] - x[None, :, :])
  return divergences._safe_sqrt(sum(jnp.square(c[:, None] - c[None, :]) for c in planes))


def _normalized_distances(x):
  """ψ_D = ‖x_i − x_j‖ / μ, μ the mean distance over all n(n − 1) pairs i ≠ j.

  Coincident pairs count in μ (with distance 0), as in RepDistiller's `RKDLoss`, whose
  `pdist` clamps squared distances at 1e-12 before the root so that they pass its `> 0`
  filter. μ = 0 (all rows equal) gives ψ_D = 0.
  """
  n = x.shape[0]
  d = _distances(x)
  mean = jnp.sum(d) / max(n * (n - 1), 1)
  return d / jnp.maximum(mean, 1e-12)


def _unit_edges(anchors, sides):
  """(x_j − x_i) / max(‖x_j − x_i‖, ε) for anchors i and sides j: [a, b, d], or its d planes."""
  planes_a, planes_s = _planes(anchors), _planes(sides)
  if planes_a is None:
    return l2_normalize(sides[None, :, :] - anchors[:, None, :])
  diffs = [s[None, :] - a[:, None] for a, s in zip(planes_a, planes_s)]
  scale = _inverse_norm(sum(jnp.square(v) for v in diffs))
  return [v * scale for v in diffs]


def _angle_cosines(anchors, sides_b, sides_c):
  """[a, b, c] ψ_A = cos∠(x_j − x_i, x_k − x_i), i anchors, j ∈ B, k ∈ C; 0 on a zero edge."""
  e_b, e_c = _unit_edges(anchors, sides_b), _unit_edges(anchors, sides_c)
  if isinstance(e_b, list):
    return sum(b[:, :, None] * c[:, None, :] for b, c in zip(e_b, e_c))
  return jnp.einsum('ijd,ikd->ijk', e_b, e_c)


def rkd_target(teacher_features, angle_rows=0):
  """The teacher side of :func:`rkd`: (ψ_D [n, n], ψ_A) of ``teacher_features``.

  Pass it as ``rkd(..., target=rkd_target(teacher))`` to compute a frozen teacher's
  relations once, outside a training loop. ``angle_rows`` as in :func:`rkd`.
  """
  x = teacher_features
  if angle_rows:
    if x.shape[0] != 3 * angle_rows:
      raise ValueError(f'rkd: angle_rows={angle_rows} needs 3 × {angle_rows} rows stacked as '
                       f'A; B; C, got {x.shape[0]}')
    a = angle_rows
    return _normalized_distances(x), _angle_cosines(x[:a], x[a:2 * a], x[2 * a:])
  return _normalized_distances(x), _angle_cosines(x, x, x)


def rkd(student_features, teacher_features, distance_weight=1.0, angle_weight=2.0,
        angle_rows=0, target=None):
  r"""Relational KD: distance and angle terms (one scalar per batch).

  .. math:: \ell = w_d \,\mathrm{mean}_{ij}\, h(\psi_D(s_i, s_j) - \psi_D(t_i, t_j))
            + w_a \,\mathrm{mean}_{ijk}\, h(\psi_A(s_i, s_j, s_k) - \psi_A(t_i, t_j, t_k)),

  ψ_D = ‖x_i − x_j‖ / μ with μ the mean distance over all pairs i ≠ j (coincident pairs
  included, as in RepDistiller's ``RKDLoss``), ψ_A the cosine of the angle at x_i between
  x_j − x_i and x_k − x_i (0 when an edge has zero length), h the smooth-L1 (Huber, δ = 1)
  loss. Means run over all n² pairs / n³ triplets as in the authors' code. The default
  weights keep their 25 : 50 ratio. Square roots and normalisations are guarded at 0
  (identical points), so gradients stay finite. The teacher is not stop-gradiented here.
  Reference: Park et al., "Relational Knowledge Distillation", CVPR 2019.

  With ``angle_rows = a > 0`` the rows are a minibatch stacked as three sets A; B; C of a
  rows each: ψ_D runs over all (3a)² pairs and ψ_A over the a³ triplets A × B × C (anchors
  in A), which estimates the full angle mean at a fraction of its n³ cost.

  Args:
    student_features: ``[n, d_s]``.
    teacher_features: ``[n, d_t]`` (unused when ``target`` is given).
    distance_weight: w_d.
    angle_weight: w_a.
    angle_rows: a (static): 0 for all n³ triplets, else n = 3a rows A; B; C.
    target: optional :func:`rkd_target` of the teacher features (same ``angle_rows``).

  Returns:
    scalar loss (the relations couple the whole batch).

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> round(float(rkd(3.0 * x, x)), 6)  # invariant to scale
    0.0
    >>> s, t = jnp.array([[0.0], [1.0], [2.0]]), jnp.array([[0.0], [0.0], [1.0]])
    >>> round(float(rkd(s, t, 1.0, 0.0)), 6)  # μ_t = 2/3 counts the coincident pair
    0.125
  """
  t_distances, t_angles = (rkd_target(teacher_features, angle_rows) if target is None
                           else target)
  s_distances, s_angles = rkd_target(student_features, angle_rows)
  distance = optax.losses.huber_loss(s_distances, t_distances)
  angle = optax.losses.huber_loss(s_angles, t_angles)
  return distance_weight * jnp.mean(distance) + angle_weight * jnp.mean(angle)


def _pkt_kernel(x):
  """K_ij = (1 + cos(x_i, x_j))/2 [n, n] and its row sums r_i = (n + x̂_i · Σ_j x̂_j)/2."""
  u = l2_normalize(x)
  return (1.0 + _inner(u, u)) / 2.0, (x.shape[0] + u @ jnp.sum(u, axis=0)) / 2.0


def pkt_target(teacher_features, eps=1e-7):
  """The teacher side of :func:`pkt`: (P [n, n], Σ_j P_ij log(P_ij + ε), Σ_j P_ij)."""
  kernel, rows = _pkt_kernel(teacher_features)
  p = kernel / rows[:, None]
  return p, jnp.sum(p * jnp.log(p + eps), axis=-1), jnp.sum(p, axis=-1)


def pkt(student_features, teacher_features, eps=1e-7, target=None):
  r"""Probabilistic Knowledge Transfer (per anchor).

  Cosine kernels shifted to [0, 1], K_ij = (1 + cos(x_i, x_j))/2, row-normalised into
  conditional distributions P_{j|i} (teacher) and Q_{j|i} (student), then

  .. math:: \ell_i = \sum_j P_{j|i} \log \frac{P_{j|i} + \epsilon}{Q_{j|i} + \epsilon}.

  The diagonal (j = i) is included, as in the authors' code. Their code averages over the
  n × n matrix, i.e. ``mean(pkt(...)) / n``. Computed without forming Q: with r_i = Σ_j K_ij
  (an O(n d) sum), log(Q_ij + ε) = log(K_ij + ε r_i) − log r_i. The teacher is not
  stop-gradiented here. Reference: Passalis & Tefas, "Learning Deep Representations with
  Probabilistic Knowledge Transfer", ECCV 2018.

  Args:
    student_features: ``[n, d_s]``.
    teacher_features: ``[n, d_t]`` (unused when ``target`` is given).
    eps: smoothing inside the logarithm.
    target: optional :func:`pkt_target` of the teacher features (same ``eps``).

  Returns:
    ``[n]`` per-anchor KL(P_{·|i} ‖ Q_{·|i}).

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> pkt(2.0 * x, x).round(6).tolist()
    [0.0, 0.0, 0.0]
  """
  p, p_log_p, p_sum = pkt_target(teacher_features, eps) if target is None else target
  kernel, rows = _pkt_kernel(student_features)
  return (p_log_p - jnp.sum(p * jnp.log(kernel + eps * rows[:, None]), axis=-1)
          + p_sum * jnp.log(rows))


def _gram_row_sq(x):
  """‖G_i‖² of the rows of the Gram matrix G = X Xᵀ, as x_iᵀ (XᵀX) x_i (O(n d²))."""
  return jnp.sum((x @ (x.T @ x)) * x, axis=-1)


def sp_target(teacher_features):
  """The teacher side of :func:`sp`: (T, the rows t_i / max(‖G^t_i‖, ε), Σ_i ‖G̃^t_i‖²)."""
  t = teacher_features
  sq = _gram_row_sq(t)
  inverse = _inverse_norm(sq)
  return t, t * inverse[:, None], jnp.sum(sq * inverse**2)


def sp(student_features, teacher_features, target=None):
  r"""Similarity-Preserving KD (one scalar per batch).

  .. math:: \ell = \frac{1}{n^2} \| \tilde G_s - \tilde G_t \|_F^2, \quad
            \tilde G = \mathrm{rownormalize}_{L2}(X X^\top).

  Computed in O(n d²) without the n × n Gram matrices: ‖G_i‖² = x_iᵀ (XᵀX) x_i and
  Σ_j G^s_ij G^t_ij = s_iᵀ (SᵀT) t_i, so with a_i = max(‖G^s_i‖, ε), b_i = max(‖G^t_i‖, ε),
  ‖G̃_s − G̃_t‖²_F = Σ_i [‖G^s_i‖²/a_i² + ‖G^t_i‖²/b_i² − 2 s_iᵀ(SᵀT)t_i/(a_i b_i)]
  (ε = `NORM_EPS`). Reference: Tung & Mori, "Similarity-Preserving Knowledge Distillation",
  ICCV 2019. The teacher is not stop-gradiented here.

  Args:
    student_features: ``[n, d_s]`` (flatten spatial features first).
    teacher_features: ``[n, d_t]`` (unused when ``target`` is given).
    target: optional :func:`sp_target` of the teacher features.

  Returns:
    scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> round(float(sp(5.0 * x, x)), 6)
    0.0
  """
  t, t_scaled, t_part = sp_target(teacher_features) if target is None else target
  s = student_features
  sq = _gram_row_sq(s)
  inverse = _inverse_norm(sq)
  cross = jnp.sum((s @ (s.T @ t)) * t_scaled, axis=-1)
  return (jnp.sum(sq * inverse**2 - 2.0 * cross * inverse) + t_part) / s.shape[0] ** 2


# --------------------------------------------------------------------------------------------
# Contrastive losses (CRD, CMCD).
# --------------------------------------------------------------------------------------------
def infonce(anchors, positives, temperature=0.1):
  r"""InfoNCE with in-batch negatives (per anchor).

  .. math:: \ell_i = -\log \frac{\exp(\cos(a_i, b_i)/\tau)}
            {\sum_j \exp(\cos(a_i, b_j)/\tau)} .

  Row j ≠ i of ``positives`` is a negative for anchor i. Reference: van den Oord et al.,
  "Representation Learning with Contrastive Predictive Coding", 2018; Chen et al., SimCLR,
  ICML 2020 (docs/protocols.md §C, step 1).

  Args:
    anchors: ``[n, d]``.
    positives: ``[n, d]`` paired with the anchors row by row.
    temperature: τ.

  Returns:
    ``[n]`` per-anchor loss.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.eye(2)
    >>> [round(float(v), 4) for v in infonce(x, x, temperature=1.0)]  # log(1 + e^-1)
    [0.3133, 0.3133]
  """
  logits = _cosine_matrix(anchors, positives) / temperature
  return -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))


def cmc_loss(student_embeddings, teacher_embeddings, temperature=0.07, symmetric=True):
  r"""CMC loss of CMCD: CLIP-style InfoNCE over the paired batch (per example).

  .. math:: \ell_i = \tfrac12 [\mathrm{InfoNCE}_i(z_B \to z_A) + \mathrm{InfoNCE}_i(z_A \to z_B)]

  (``symmetric=True``), or only the B → A term (student anchors, teacher candidates) with
  ``symmetric=False``. See :func:`infonce`. The teacher is not stop-gradiented here.
  Reference: Radford et al., CLIP, ICML 2021; Lin et al., arXiv 2405.03355
  (docs/protocols.md §C).

  Both directions share C_ij = cos(s_i, t_j)/τ <= 1/τ, so one exponential pass
  E = exp(C − 1/τ) (no overflow) gives both log-partition functions from its row and column
  sums: ℓ_i = ½[log Σ_j E_ij + log Σ_j E_ji] + 1/τ − C_ii. Every sum holds a term
  >= exp(−2/τ), which cannot underflow in float32 for τ >= 0.025; a smaller (or traced) τ
  takes the two log-softmax passes of :func:`infonce` instead.

  Args:
    student_embeddings: ``[n, d]`` target-modality (B) embeddings.
    teacher_embeddings: ``[n, d]`` source-modality (A) embeddings, paired row by row.
    temperature: τ.
    symmetric: average both directions (default) or use B → A only.

  Returns:
    ``[n]`` per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.eye(2)
    >>> [round(float(v), 4) for v in cmc_loss(x, x, temperature=1.0)]
    [0.3133, 0.3133]
  """
  if not symmetric:
    return infonce(student_embeddings, teacher_embeddings, temperature)
  if not (isinstance(temperature, (int, float)) and temperature >= _ONE_PASS_MIN_TEMPERATURE):
    return 0.5 * (infonce(student_embeddings, teacher_embeddings, temperature)
                  + infonce(teacher_embeddings, student_embeddings, temperature))
  inverse = 1.0 / temperature
  c = _cosine_matrix(student_embeddings, teacher_embeddings) * inverse
  e = jnp.exp(c - inverse)
  return (0.5 * (jnp.log(jnp.sum(e, axis=1)) + jnp.log(jnp.sum(e, axis=0))) + inverse
          - jnp.diagonal(c))


_ONE_PASS_MIN_TEMPERATURE = 0.025  # exp(−2/τ) stays a normal float32 number


def crd(student_embeddings, teacher_embeddings, temperature=0.07):
  r"""Contrastive Representation Distillation, in-batch form (per anchor).

  Normalised embeddings; for each example the paired teacher embedding is the positive and
  the other in-batch teacher embeddings are the negatives (InfoNCE), averaged with the
  teacher → student direction — i.e. :func:`cmc_loss` with ``symmetric=True``.

  Design choice: no memory bank. The original keeps a bank of 16384 negatives updated across
  steps, which is state and breaks the pure, vmapped design of this library; in-batch
  negatives replace the bank samples (docs/protocols.md §T). The projection heads (to a common
  dimension, e.g. 8 in NTDH Table 1) are the caller's. The teacher is not stop-gradiented
  here. Reference: Tian, Krishnan & Isola, "Contrastive Representation Distillation",
  ICLR 2020.

  Args:
    student_embeddings: ``[n, d]`` projected student features.
    teacher_embeddings: ``[n, d]`` projected teacher features.
    temperature: τ.

  Returns:
    ``[n]`` per-anchor loss.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.eye(2)
    >>> [round(float(v), 4) for v in crd(x, x, temperature=1.0)]
    [0.3133, 0.3133]
  """
  return cmc_loss(student_embeddings, teacher_embeddings, temperature, symmetric=True)


def cmd_loss(student_embeddings, teacher_embeddings, student_temperature=0.2,
             teacher_temperature=0.05, anchors=None):
  r"""CMD loss of CMCD (SEED-style similarity-distribution distillation, per example).

  .. math:: p_i = \mathrm{softmax}_j(\cos(t_i, a_j)/\tau_A), \quad
            q_i = \mathrm{softmax}_j(\cos(s_i, a_j)/\tau_B), \quad
            \ell_i = -\sum_j p_{ij} \log q_{ij} .

  Anchors default to the batch's teacher embeddings. The teacher side (the teacher
  embeddings and the anchors) is a constant: it is stop-gradiented inside, so only the
  student receives gradients. Reference: Fang et al., "SEED: Self-supervised Distillation
  for Visual Representation", ICLR 2021; Lin et al., arXiv 2405.03355
  (docs/protocols.md §C).

  Args:
    student_embeddings: ``[n, d]``.
    teacher_embeddings: ``[n, d]``.
    student_temperature: τ_B.
    teacher_temperature: τ_A (< τ_B: a sharper teacher).
    anchors: optional ``[m, d]`` anchor embeddings (e.g. a queue); default the teacher batch.

  Returns:
    ``[n]`` per-example cross-entropy in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.eye(2)
    >>> print(cmd_loss(x, x, 1.0, 1.0).round(4))  # entropy of softmax([1, 0])
    [0.5822 0.5822]
  """
  teacher = jax.lax.stop_gradient(teacher_embeddings)
  anchors = teacher if anchors is None else jax.lax.stop_gradient(anchors)
  p = jax.nn.softmax(_cosine_matrix(teacher, anchors) / teacher_temperature, axis=-1)
  log_q = jax.nn.log_softmax(_cosine_matrix(student_embeddings, anchors)
                             / student_temperature, axis=-1)
  return -jnp.sum(p * log_q, axis=-1)


def l2_align(student_embeddings, teacher_embeddings):
  r"""L2 baseline of CMCD: squared distance between L2-normalised embeddings (per example).

  .. math:: \ell_i = \| s_i/\|s_i\| - t_i/\|t_i\| \|_2^2 = 2 - 2\cos(s_i, t_i).

  The teacher is not stop-gradiented here. Reference: Lin et al., arXiv 2405.03355
  (docs/protocols.md §C).

  Args:
    student_embeddings: ``[..., d]``.
    teacher_embeddings: ``[..., d]``.

  Returns:
    ``[...]`` per-example loss in ``[0, 4]``.

  Example:
    >>> import jax.numpy as jnp
    >>> l2_align(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 3.0]])).tolist()
    [2.0]
  """
  diff = l2_normalize(student_embeddings) - l2_normalize(teacher_embeddings)
  return jnp.sum(jnp.square(diff), axis=-1)
