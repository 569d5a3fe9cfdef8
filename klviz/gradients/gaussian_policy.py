r"""A two-parameter policy family that cannot represent a bimodal reference, and training it (notebook 07).

A discretised Gaussian over V tokens, :math:`\theta_x = -\tfrac12((x - m)/\sigma)^2`, trained against a fixed
reference by following one use of one estimator (:mod:`klviz.gradients.uses`) with natural-gradient steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax, weighted_k3
from klviz._results import Result, Shown
from klviz._sampling import sample_categorical
from klviz.gradients.softmax import coefficients, log_probs, mean_gradient, positive_int
from klviz.estimators import get_estimator
from klviz.gradients.uses import get_use

__all__ = ["discretised_gaussian_logits", "gaussian_policy_kls", "PolicyPath", "fit_gaussian_policy"]

# fit_gaussian_policy stops beyond this |log σ|: (V e^30)² still fits in float64.
_MAX_ABS_LOG_SCALE = 30.0
_real = _checks.real

def discretised_gaussian_logits(mean, log_scale, vocab_size: int) -> np.ndarray:
    r"""Logits :math:`\theta_x = -\tfrac12\big((x - m)/\sigma\big)^2`, x = 0..V-1, σ = exp(log_scale).

    softmax of these is a Gaussian bump discretised to the tokens: a two-parameter policy family.
    ``mean`` and ``log_scale`` broadcast; the token axis is last.

    Parameters
    ----------
    mean : float or array_like
        Centre m (in token units).
    log_scale : float or array_like
        log σ.
    vocab_size : int
        V, at least 1.

    Returns
    -------
    ndarray, shape broadcast(mean, log_scale) + (V,)

    Raises
    ------
    TypeError
        If vocab_size is not an integer.
    ValueError
        If vocab_size < 1 or a parameter is not finite.

    Examples
    --------
    >>> discretised_gaussian_logits(1.0, 0.0, 3)
    array([-0.5, -0. , -0.5])
    """
    vocab_size = positive_int(vocab_size, "vocab_size")
    mean = np.asarray(mean, dtype=np.float64)
    log_scale = np.asarray(log_scale, dtype=np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(log_scale).all()):
        raise ValueError("mean and log_scale must be finite")
    tokens = np.arange(vocab_size, dtype=np.float64)
    z = (tokens - mean[..., None]) * np.exp(-log_scale)[..., None]
    return -0.5 * z * z


def gaussian_policy_kls(ref_logits, means, log_scales) -> tuple[np.ndarray, np.ndarray]:
    r"""KL(q‖p) and KL(p‖q) on a grid of discretised-Gaussian policies q, for contour plots and optima.

    Vectorised over the grid, each summed as :math:`\sum_x q\,k_3(\log r)` and :math:`\sum_x p\,k_3(-\log r)`
    (non-negative terms, as in :func:`kl_qp`; log r here is the difference of the two log-softmaxes, so
    the relative error is ~1e-16·|log q|/√KL rather than :func:`kl_qp`'s 1e-16).

    Parameters
    ----------
    ref_logits : array_like, shape (V,)
        The reference p; finite.
    means, log_scales : array_like
        Broadcast together to the grid shape (e.g. from ``np.meshgrid``).

    Returns
    -------
    (kl_qp, kl_pq) : two ndarrays of the grid shape

    Raises
    ------
    TypeError, ValueError
        For bad reference logits or non-finite grid values.

    Examples
    --------
    >>> ref = discretised_gaussian_logits(2.0, 0.0, 5)
    >>> qp, pq = gaussian_policy_kls(ref, [2.0, 1.0], [0.0, 0.0])
    >>> bool(qp[0] < 1e-15 and pq[1] > 0)
    True
    """
    log_p = log_probs(ref_logits, "ref_logits")
    log_q = log_softmax(discretised_gaussian_logits(means, log_scales, log_p.size), axis=-1)
    log_ratio = log_p - log_q
    # Σ q k3(log r) = Σ q (log q - log p) since Σ q (r - 1) = 0: non-negative terms, nothing cancels.
    qp = np.sum(weighted_k3(log_q, log_ratio), axis=-1)
    pq = np.sum(weighted_k3(log_p, -log_ratio), axis=-1)
    return qp, pq


@dataclass(frozen=True, repr=False)
class PolicyPath(Result):
    r"""A training run of the discretised-Gaussian policy: parameters and both KLs at every step.

    ``params[t] = (mean, log_scale)`` after t steps; ``kl_qp`` and ``kl_pq`` are the exact divergences
    there. ``steps_taken`` < the requested steps when the run degenerated and stopped: the next step
    was not finite or had |log σ| ≥ 30 (a policy on one token, or flat).
    """

    estimator: str
    use: str
    params: np.ndarray = field(repr=False)
    kl_qp: np.ndarray = field(repr=False)
    kl_pq: np.ndarray = field(repr=False)
    steps_taken: int

    @property
    def mean(self) -> np.ndarray:
        return self.params[:, 0]

    @property
    def scale(self) -> np.ndarray:
        return np.exp(self.params[:, 1])

    def _display_fields(self):
        m, s = self.params[-1]
        return [("estimator", self.estimator), ("use", self.use), ("steps", self.steps_taken), ("mean", m),
                ("scale", math.exp(s)), ("KL(q||p)", self.kl_qp[-1]), ("KL(p||q)", self.kl_pq[-1])]
def fit_gaussian_policy(ref_logits, estimator: str, use, *, init=(0.0, 0.0), steps: int = 300,
                        step_size: float = 0.1, batch_size: int | None = None, damping: float = 1e-4,
                        rng=None) -> PolicyPath:
    r"""Train a discretised-Gaussian policy against p by following one use of one estimator.

    Each step moves :math:`\phi = (m, \log\sigma)` along the expected gradient of the chosen use
    (exact by summation, or a Monte Carlo average of ``batch_size`` per-sample gradients from
    :math:`q_\phi`), mapped to φ by the chain rule :math:`J^\top \nabla_\theta` with
    :math:`J = \partial\theta/\partial\phi`, and preconditioned by the exact Fisher information of the
    family (natural gradient):

    .. math:: \phi \leftarrow \phi - \eta\,(F + \lambda I)^{-1} J^\top \hat\nabla_\theta,\qquad
              F = \mathrm{Cov}_{x\sim q_\phi}\big[\nabla_\phi \theta_x\big].

    The preconditioner is the same positive-definite matrix for every use, so it sets the speed, not
    the destination: a run stops where the followed gradient vanishes. Off-policy uses sample from
    the current policy (μ = q, ρ = 1 in value but differentiable), like the first step of PPO; there
    ``no_ratio_loss`` is ``loss``.

    Parameters
    ----------
    ref_logits : array_like, shape (V,)
        The reference p; finite.
    estimator : str or Estimator
    use : str or GradientUse
        One of :data:`USES`.
    init : (float, float)
        Starting (mean, log_scale).
    steps : int
        Number of steps.
    step_size : float
        η > 0.
    batch_size : int, optional
        None for exact expected gradients; otherwise samples per step.
    damping : float
        λ ≥ 0, keeps the Fisher invertible when σ is far below one token.
    rng : {None, int, numpy.random.Generator}, optional
        Used when batch_size is given.

    Returns
    -------
    PolicyPath

    Raises
    ------
    TypeError, ValueError
        For bad reference logits, estimator, use, init, steps, step_size, batch_size or damping.

    Examples
    --------
    A Gaussian reference is in the family, so k2 in the loss recovers it:

    >>> ref = discretised_gaussian_logits(6.0, np.log(1.5), 12)
    >>> path = fit_gaussian_policy(ref, "k2", "loss", init=(3.0, 0.0), steps=100, step_size=0.5)
    >>> np.round(path.params[-1], 4).tolist(), bool(path.kl_qp[-1] < 1e-12)
    ([6.0, 0.4055], True)
    """
    estimator = get_estimator(estimator)
    use = get_use(use)
    log_p = log_probs(ref_logits, "ref_logits")
    if not isinstance(init, (tuple, list, np.ndarray)) or len(init) != 2:
        raise ValueError(f"init must be a pair (mean, log_scale), got {init!r}")
    phi = np.array([_real(init[0], "init[0]"), _real(init[1], "init[1]")])
    steps = positive_int(steps, "steps")
    step_size = _real(step_size, "step_size")
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    damping = _real(damping, "damping")
    if damping < 0:
        raise ValueError(f"damping must be non-negative, got {damping}")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    rng = np.random.default_rng(rng)
    tokens = np.arange(log_p.size, dtype=np.float64)

    params = np.full((steps + 1, 2), np.nan)
    params[0] = phi
    taken = 0
    for t in range(steps):
        mean, log_scale = phi
        log_q = log_softmax(discretised_gaussian_logits(mean, log_scale, log_p.size))
        q = np.exp(log_q)
        if batch_size is None:
            weighted = coefficients(estimator, log_q, log_p - log_q, use.score, use.pathwise)
        else:
            # On-policy draws; c_x times the token frequencies is the batch average of c(x)(e_x - q).
            drawn = sample_categorical(q, batch_size, rng)
            freq = np.bincount(drawn, minlength=log_p.size) / batch_size
            c = coefficients(estimator, np.zeros_like(log_q), log_p - log_q, use.score,
                                      use.pathwise)
            weighted = freq * c
        grad_theta = mean_gradient(q, weighted)
        inv_var = math.exp(-2.0 * log_scale)
        jac = np.stack([(tokens - mean) * inv_var, (tokens - mean) ** 2 * inv_var], axis=1)
        centred = jac - q @ jac
        fisher = centred.T @ (q[:, None] * centred) + damping * np.eye(2)
        with np.errstate(all="ignore"):
            new_phi = phi - step_size * np.linalg.solve(fisher, jac.T @ grad_theta)
        # Stop once the policy degenerates: σ below e^-30 (one token, logits overflow) or above e^30.
        if not (np.isfinite(new_phi).all() and abs(new_phi[1]) < _MAX_ABS_LOG_SCALE):
            break
        phi = new_phi
        params[t + 1] = phi
        taken = t + 1
    params = params[: taken + 1]
    qp, pq = gaussian_policy_kls(log_p, params[:, 0], params[:, 1])
    return PolicyPath(estimator.name, use.name, params, qp, pq, taken)
