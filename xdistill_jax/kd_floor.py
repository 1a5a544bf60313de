"""(F1) The irreducible KD floor: the part of the modality gap no student on x_b can distil.

For any student q that sees only x_b and the teacher p_t = softmax(z_t(x_a)) (T = 1, the
temperature of the measured `kl_test`), with p̄(x_b) = E[p_t | x_b]:

    E[KL(p_t ‖ q) | x_b] = E[KL(p_t ‖ p̄) | x_b] + KL(p̄ ‖ q)          (per x_b, exactly),

because E[Σ_k p_k log(p_k/q_k) | x_b] − E[Σ_k p_k log(p_k/p̄_k) | x_b] = Σ_k p̄_k log(p̄_k/q_k).
So F = E KL(p_t ‖ p̄) ≤ E KL(p_t ‖ q) for every such student (docs/theory.md, F1), and D1
splits it per node into a target part E[TCKD] and a non-target part E[(1 − p_y) NCKD].

Protocol G (`generators.decisive_features`). Given x_b, the columns of x_a fall in two sets:
the o shared decisive columns (s − o … s − 1) equal x_b's; every other column of x_a is
either a decisive feature x_s[:, j] with j ≥ s (x_s ~ N(0, I) is independent of the
x_s[:, :s] that x_b shows) or teacher noise (independent of everything): given x_b these are
i.i.d. N(0, 1). Only the label depends on all of x_s, and the floor does not condition on
it. So the linear teacher's logit difference d = (w₁ − w₀)·x_a + (b₁ − b₀) is, given x_b,
exactly N(μ(x_b), τ²) with μ = (b₁ − b₀) + Σ_{shared j} (w₁ − w₀)_j x_b[j] and
τ² = Σ_{other j} (w₁ − w₀)_j².

Quadrature. E f(μ + τ g) over g ~ N(0, 1) by the trapezoid rule on [−7, 7] with Gaussian
weights normalised to 1 (`NODES` points). The integrands are logistic in d, so their
analyticity strip in g has half-width π/τ and the trapezoid error decays like
exp(−2π²/(τ h)), h the node spacing: measured against adaptive quadrature, relative error
≤ 2e-7 for τ ≤ 5 and ≤ 4e-4 at τ = 10 with 64 nodes (a Gauss–Hermite rule of the same size
is 1e3 times worse at τ = 5: its nodes are spent in the tails). Whatever the rule, p̄ is the
rule's own mean of p_t, so the decomposition above — and with it E[KL(p_t‖q)|x_b] ≥ F_i —
holds exactly for the computed numbers, up to float rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from xdistill_jax import divergences

NODES = 64
HALF_WIDTH = 7.0  # the N(0, 1) mass beyond ±7 is 2.6e-12


def normal_trapezoid(nodes: int = NODES, half_width: float = HALF_WIDTH):
  """Points g_i on [−L, L] and weights ∝ φ(g_i), summing to 1: E f(g) ≈ Σ_i w_i f(g_i)."""
  g = np.linspace(-half_width, half_width, nodes)
  w = np.exp(-0.5 * g ** 2)
  return g, w / w.sum()


def conditional_logit_difference(kernel, bias, x_b, shared):
  """(μ [n], τ): the teacher's logit difference given x_b is N(μ, τ²) (protocol G).

  Args:
    kernel, bias: the teacher's linear layer, [dim, 2] and [2].
    x_b: [n, dim] student-modality inputs.
    shared: bool [dim], the columns where x_a equals x_b; every other column of x_a is
      i.i.d. N(0, 1) given x_b.
  """
  w = kernel[:, 1] - kernel[:, 0]
  mu = x_b @ jnp.where(shared, w, 0.0) + (bias[1] - bias[0])
  tau = jnp.sqrt(jnp.sum(jnp.where(shared, 0.0, w ** 2)))
  return mu, tau


def binary_node_logits(mu, tau, nodes: int = NODES):
  """[n, G, 2] teacher logits (0, μ + τ g_i) at the quadrature nodes, and the weights [G]."""
  g, w = normal_trapezoid(nodes)
  d = mu[:, None] + tau * jnp.asarray(g, mu.dtype)
  return jnp.stack([jnp.zeros_like(d), d], -1), jnp.asarray(w, mu.dtype)


def mean_teacher_log_probs(node_logits, weights):
  """log p̄ [n, K], p̄ = Σ_i w_i softmax(z_i): the conditional mean of the teacher's softmax."""
  log_p = jax.nn.log_softmax(node_logits, -1)
  return jax.nn.logsumexp(log_p + jnp.log(weights)[None, :, None], axis=1)


def floor_terms(node_logits, weights, labels):
  """Per example: F_i = E KL(p_t‖p̄), its target part E TCKD and non-target part
  E[(1 − p_y) NCKD] (D1: they sum to F_i), and log p̄.

  Args:
    node_logits: [n, G, K] teacher logits at the quadrature nodes of each example.
    weights: [G] quadrature weights (sum 1).
    labels: [n] true classes (the target class of the split).
  """
  log_pbar = mean_teacher_log_probs(node_logits, weights)[:, None, :]
  y = jnp.broadcast_to(labels[:, None], node_logits.shape[:2])
  log_p = jax.nn.log_softmax(node_logits, -1)
  p_y = jnp.exp(jnp.take_along_axis(log_p, y[..., None], -1)[..., 0])
  tckd = divergences.target_kl(node_logits, log_pbar, y)
  nckd = (1.0 - p_y) * divergences.non_target_kl(node_logits, log_pbar, y)
  return {'floor': divergences.kl(node_logits, log_pbar) @ weights,
          'floor_tckd': tckd @ weights, 'floor_nckd': nckd @ weights,
          'log_mean_teacher': log_pbar[:, 0, :]}


def conditional_kl(node_logits, weights, student_logits):
  """E[KL(p_t ‖ q) | x_b] per example, by the same quadrature (q = softmax(student_logits))."""
  return divergences.kl(node_logits, student_logits[:, None, :]) @ weights


def binary_floor_terms(mu, tau, student_logits, nodes: int = NODES):
  """F_i and E[KL(p_t ‖ q) | x_b] for K = 2, p_t = (σ(−d), σ(d)), d ~ N(μ_i, τ²) given x_b.

  The sums of `floor_terms` and `conditional_kl` at the same nodes, with one exp and one
  log1p per node (the K-class form costs ~20x more). With two classes b(p) is p up
  to order, so the target part of the floor is all of it and the non-target part is
  exactly 0 (D4).

  Args:
    mu: [n] means and tau: the scale of the teacher's logit difference given x_b.
    student_logits: [S, n, 2] logits of S students on x_b.

  Returns:
    (F [n], E[KL(p_t ‖ q_s) | x_b] [S, n]).
  """
  g, w = normal_trapezoid(nodes)
  d = mu[:, None] + tau * jnp.asarray(g, mu.dtype)  # [n, G]
  w = jnp.asarray(w, mu.dtype)
  # Stable logistic from one exp and one log1p: e = exp(−|d|), log σ(|d|) = −log1p(e).
  e = jnp.exp(-jnp.abs(d))
  log_near = -jnp.log1p(e)  # log of the larger probability
  near, far = 1.0 / (1.0 + e), e / (1.0 + e)
  up = d >= 0
  log_p1 = jnp.where(up, log_near, log_near - jnp.abs(d))
  log_p0 = jnp.where(up, log_near - jnp.abs(d), log_near)
  p1, p0 = jnp.where(up, near, far), jnp.where(up, far, near)
  pbar1, pbar0 = p1 @ w, p0 @ w
  # Σ_i w_i KL(p(g_i) ‖ p̄) = E[Σ_k p_k log p_k] − Σ_k p̄_k log p̄_k.
  floor = (p1 * log_p1 + p0 * log_p0) @ w - (xlogy(pbar1, pbar1) + xlogy(pbar0, pbar0))
  log_q = jax.nn.log_softmax(student_logits, -1)[:, :, None, :]  # [S, n, 1, 2]
  cond = (p1 * (log_p1 - log_q[..., 1]) + p0 * (log_p0 - log_q[..., 0])) @ w
  return floor, cond


def pointwise_violations(conditional, floor, tol):
  """Number of examples with E[KL(p_t‖q)|x_b] < F_i beyond tol·max(1, F_i) (must be 0)."""
  slack = tol * jnp.maximum(1.0, jnp.abs(floor))
  return jnp.sum((floor - conditional > slack).astype(jnp.float32), -1)


def standard_error(values):
  """sd/√n of the mean of `values` [..., n] (sd with n − 1 degrees of freedom)."""
  n = values.shape[-1]
  centred = values - jnp.mean(values, -1, keepdims=True)
  return jnp.sqrt(jnp.sum(centred ** 2, -1) / max(n - 1, 1) / n)


def protocol_g_floor(kernel, bias, x_b, shared, student_logits, teacher_logits=None,
                     nodes: int = NODES):
  """F1 on protocol G for a linear teacher, with the students' conditional expected KL.

  Args:
    kernel, bias: the teacher's linear layer ([dim, 2], [2]).
    x_b: [n, dim] test inputs of the student modality.
    shared: bool [dim], the columns x_a and x_b share (teacher ∩ student decisive columns).
    student_logits: [n, 2] or [S, n, 2] logits of one or S students on x_b.
    teacher_logits: optional [n, 2] teacher logits on the paired x_a: adds `kl_test_se`, the
      standard error of the measured mean KL(p_t(x_a) ‖ q(x_b)) (`kl_test`), with which
      `f1_lower` is judged (normal interval).

  Returns:
    Columns `f1_floor_tckd`, `f1_floor_nckd` (their sum is the floor F = mean_i F_i, the
    `f1_lower` registry entry; K = 2: all of it is target, NCKD ≡ 0), `f1_teacher_tau` (τ)
    and per student `kd_conditional_kl` (mean_i E[KL(p_t‖q)|x_b,i]) and
    `f1_pointwise_violations` (examples where it falls below F_i beyond float tolerance),
    with a leading [S] axis when given S students.
  """
  mu, tau = conditional_logit_difference(kernel, bias, x_b, shared)
  single = student_logits.ndim == 2
  students = student_logits[None] if single else student_logits
  floor, cond = binary_floor_terms(mu, tau, students, nodes)
  tol = 100 * jnp.finfo(mu.dtype).eps  # 1.2e-5 in float32
  out = {'kd_conditional_kl': jnp.mean(cond, -1),
         'f1_pointwise_violations': pointwise_violations(cond, floor, tol)}
  if teacher_logits is not None:
    out['kl_test_se'] = standard_error(jax.vmap(divergences.kl, (None, 0))(teacher_logits,
                                                                         students))
  if single:
    out = {k: v[0] for k, v in out.items()}
  return out | {'f1_floor_tckd': jnp.mean(floor), 'f1_floor_nckd': jnp.zeros_like(tau),
                'f1_teacher_tau': tau}
