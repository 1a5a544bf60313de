"""Distillation losses: logit, feature/relational and contrastive families.

* Logit losses (Hinton KD, Decoupled KD, the NTDH sample mask ω and KL+ω; ntdh.md "Masking",
  theory.md §1) are built on :mod:`xdistill_jax.divergences`.
* Feature and relational losses of NTDH Table 1 (FitNet, RKD, PKT, SP, CRD; ntdh.md).
* Contrastive cross-modal losses of CMCD (InfoNCE, CMD, CMC, L2; cmcd.md).

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

__all__ = [
    "kd",
    "dkd",
    "sample_mask",
    "masked_kd",
    "fitnet",
    "rkd",
    "pkt",
    "sp",
    "crd",
    "infonce",
    "cmd_loss",
    "cmc_loss",
    "l2_align",
]


def _l2_normalize(x, eps=1e-8):
    """x / max(‖x‖, eps) along the last axis; finite values and gradients at x = 0."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def _cosine_matrix(a, b):
    """[n, m] cosine similarities between the rows of a [n, d] and b [m, d]."""
    return _l2_normalize(a) @ _l2_normalize(b).T


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
    example; with ``weights = sample_mask(...)`` this is DKD+ω of NTDH (ntdh.md). Reference:
    Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022. The teacher is not
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

    Reference: Chen et al., "Non-target Divergence Hypothesis", arXiv 2409.02438 (ntdh.md,
    "Masking that reduces the non-target divergence").

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
    c = jnp.sum(_l2_normalize(teacher_logits) * _l2_normalize(student_logits), axis=-1)
    right = jnp.argmax(teacher_logits, axis=-1) == labels
    omega = jnp.where(right, 1.0, jnp.where(c >= threshold, (1.0 + c) / 2.0, 0.0))
    return jax.lax.stop_gradient(omega.astype(c.dtype))


def masked_kd(student_logits, teacher_logits, labels, temperature=1.0, threshold=0.996):
    r"""KL+ω of NTDH: KD on logits scaled by the sample mask ω of :func:`sample_mask`.

    .. math:: \ell = \mathrm{KL}(\mathrm{softmax}(\omega z_t/T) \,\|\,
              \mathrm{softmax}(\omega z_s/T)).

    ω = 0 turns both distributions uniform, so masked examples contribute 0. ω is a
    constant; the teacher logits are not stop-gradiented. Reference: Chen et al.,
    arXiv 2409.02438 (ntdh.md).

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


def _pairwise_distances(x):
    """[n, n] Euclidean distances, exactly 0 (with zero gradient) for identical rows."""
    return divergences._safe_norm(x[:, None, :] - x[None, :, :])


def _normalized_distances(x):
    """Pairwise distances divided by the mean of the positive ones (Park et al.)."""
    d = _pairwise_distances(x)
    positive = d > 0
    mean = jnp.sum(d) / jnp.maximum(jnp.sum(positive), 1)
    return d / jnp.maximum(mean, 1e-12)


def _triplet_cosines(x):
    """[n, n, n] cos∠(x_j − x_i, x_k − x_i), 0 when an edge has zero length."""
    edges = _l2_normalize(x[None, :, :] - x[:, None, :])
    return jnp.einsum("ijd,ikd->ijk", edges, edges)


def rkd(student_features, teacher_features, distance_weight=1.0, angle_weight=2.0):
    r"""Relational KD: distance and angle terms (one scalar per batch).

    .. math:: \ell = w_d \,\mathrm{mean}_{ij}\, h(\psi_D(s_i, s_j) - \psi_D(t_i, t_j))
              + w_a \,\mathrm{mean}_{ijk}\, h(\psi_A(s_i, s_j, s_k) - \psi_A(t_i, t_j, t_k)),

    ψ_D = ‖x_i − x_j‖ / μ (μ the mean positive pairwise distance), ψ_A the cosine of the angle
    at x_i between x_j − x_i and x_k − x_i, h the smooth-L1 (Huber, δ = 1) loss. Means run
    over all n² pairs / n³ triplets as in the authors' code. The default weights keep their
    25 : 50 ratio. Square roots and normalisations are guarded at 0 (identical points), so
    gradients stay finite. The teacher is not stop-gradiented here. Reference: Park et al.,
    "Relational Knowledge Distillation", CVPR 2019.

    Args:
      student_features: ``[n, d_s]``.
      teacher_features: ``[n, d_t]``.
      distance_weight: w_d.
      angle_weight: w_a.

    Returns:
      scalar loss (the relations couple the whole batch).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
      >>> round(float(rkd(3.0 * x, x)), 6)  # invariant to scale
      0.0
    """
    distance = optax.losses.huber_loss(_normalized_distances(student_features),
                                       _normalized_distances(teacher_features))
    angle = optax.losses.huber_loss(_triplet_cosines(student_features),
                                    _triplet_cosines(teacher_features))
    return distance_weight * jnp.mean(distance) + angle_weight * jnp.mean(angle)


def pkt(student_features, teacher_features, eps=1e-7):
    r"""Probabilistic Knowledge Transfer (per anchor).

    Cosine kernels shifted to [0, 1], K_ij = (1 + cos(x_i, x_j))/2, row-normalised into
    conditional distributions P_{j|i} (teacher) and Q_{j|i} (student), then

    .. math:: \ell_i = \sum_j P_{j|i} \log \frac{P_{j|i} + \epsilon}{Q_{j|i} + \epsilon}.

    The diagonal (j = i) is included, as in the authors' code. Their code averages over the
    n × n matrix, i.e. ``mean(pkt(...)) / n``. The teacher is not stop-gradiented here.
    Reference: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge
    Transfer", ECCV 2018.

    Args:
      student_features: ``[n, d_s]``.
      teacher_features: ``[n, d_t]``.
      eps: smoothing inside the logarithm.

    Returns:
      ``[n]`` per-anchor KL(P_{·|i} ‖ Q_{·|i}).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> pkt(2.0 * x, x).round(6).tolist()
      [0.0, 0.0, 0.0]
    """
    def conditional(x):
        kernel = (_cosine_matrix(x, x) + 1.0) / 2.0
        return kernel / jnp.sum(kernel, axis=-1, keepdims=True)

    p, q = conditional(teacher_features), conditional(student_features)
    return jnp.sum(p * jnp.log((p + eps) / (q + eps)), axis=-1)


def sp(student_features, teacher_features):
    r"""Similarity-Preserving KD (one scalar per batch).

    .. math:: \ell = \frac{1}{n^2} \| \tilde G_s - \tilde G_t \|_F^2, \quad
              \tilde G = \mathrm{rownormalize}_{L2}(X X^\top).

    Reference: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019. The
    teacher is not stop-gradiented here.

    Args:
      student_features: ``[n, d_s]`` (flatten spatial features first).
      teacher_features: ``[n, d_t]``.

    Returns:
      scalar loss.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [1.0, 1.0]])
      >>> float(sp(5.0 * x, x))
      0.0
    """
    def gram(x):
        return _l2_normalize(x @ x.T)

    n = student_features.shape[0]
    return jnp.sum(jnp.square(gram(student_features) - gram(teacher_features))) / n**2


# --------------------------------------------------------------------------------------------
# Contrastive losses (CRD, CMCD).
# --------------------------------------------------------------------------------------------
def infonce(anchors, positives, temperature=0.1):
    r"""InfoNCE with in-batch negatives (per anchor).

    .. math:: \ell_i = -\log \frac{\exp(\cos(a_i, b_i)/\tau)}
              {\sum_j \exp(\cos(a_i, b_j)/\tau)} .

    Row j ≠ i of ``positives`` is a negative for anchor i. Reference: van den Oord et al.,
    "Representation Learning with Contrastive Predictive Coding", 2018; Chen et al., SimCLR,
    ICML 2020 (cmcd.md step 1).

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
    Reference: Radford et al., CLIP, ICML 2021; Lin et al., arXiv 2405.03355 (cmcd.md).

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
    forward = infonce(student_embeddings, teacher_embeddings, temperature)
    if not symmetric:
        return forward
    return 0.5 * (forward + infonce(teacher_embeddings, student_embeddings, temperature))


def crd(student_embeddings, teacher_embeddings, temperature=0.07):
    r"""Contrastive Representation Distillation, in-batch form (per anchor).

    Normalised embeddings; for each example the paired teacher embedding is the positive and
    the other in-batch teacher embeddings are the negatives (InfoNCE), averaged with the
    teacher → student direction — i.e. :func:`cmc_loss` with ``symmetric=True``.

    Design choice: no memory bank. The original keeps a bank of 16384 negatives updated across
    steps, which is state and breaks the pure, vmapped design of this library; in-batch
    negatives replace the bank samples (as ntdh.md allows). The projection heads (to a common
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
    for Visual Representation", ICLR 2021; Lin et al., arXiv 2405.03355 (cmcd.md).

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
    (cmcd.md).

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
    diff = _l2_normalize(student_embeddings) - _l2_normalize(teacher_embeddings)
    return jnp.sum(jnp.square(diff), axis=-1)
