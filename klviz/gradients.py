r"""Exact expected gradients of KL estimators used in a loss, in a reward, or with importance ratios.

A softmax policy :math:`q_\theta = \mathrm{softmax}(\theta)` over a vocabulary of V tokens is trained
against a fixed reference p. With :math:`L(x) = \log r(x) = \log p(x) - \log q_\theta(x)` and the score
:math:`g(x) = \nabla_\theta \log q_\theta(x) = e_x - q_\theta` (one-hot minus the probabilities), an
estimator :math:`k(L)` (``k1`` = -L, ``k2`` = L²/2, ``k3`` = e^L - 1 - L) can enter training in two ways:

* **pathwise** ("in the loss"): the sample x is fixed and autodiff differentiates k through
  :math:`\log q_\theta(x)`: :math:`\nabla_\theta k(L(x)) = -k'(L)\, g(x)`;
* **score** ("in the reward", REINFORCE): k is a detached reward and the gradient is :math:`k\, g(x)`.

Off-policy, x is drawn from an older policy μ and (usually) weighted by :math:`\rho = q_\theta/\mu`; a
differentiable ρ contributes the score term (:math:`\nabla\rho = \rho\, g`), a detached one does not.
Every use below is therefore a per-sample gradient :math:`c(x)\, g(x)` with one scalar coefficient

.. math:: c(x) = w(x)\,\big(s\, k(L) - d\, k'(L)\big),\qquad w = 1 \text{ (on-policy, or no ratio) or } \rho,

where s = 1 when the score term is present and d = 1 when the pathwise term is. For the reweighted
uses :math:`\mathbb{E}_\mu[\rho\, f] = \mathbb{E}_q[f]`, so the expected gradient depends only on (s, d),
not on where the samples came from; the variance does depend on it. Without the ratio
(``no_ratio_loss``: a KL loss on the samples of an older policy, as in the later epochs of PPO/GRPO
with a KL loss) the expected gradient is :math:`\mathbb{E}_\mu[-k'(L)\,g] = \nabla_\theta\,\mathbb{E}_\mu[k(L_\theta)]`
with μ held fixed: it depends on μ.

(sg = stop-gradient)::

    use                    what the code differentiates    samples from   score   pathwise   weight
    loss                   k(x)                            q              no      yes        1
    reward                 sg[k(x)] * log q(x)             q              yes     no         1
    ratio_loss             rho(x) * k(x)                   mu             yes     yes        rho
    stopgrad_ratio_loss    sg[rho(x)] * k(x)               mu             no      yes        rho
    ratio_reward           rho(x) * sg[k(x)]               mu             yes     no         rho
    no_ratio_loss          k(x)                            mu             no      yes        1

The expected gradients, all checked by exact summation and finite differences in the tests::

    estimator   pathwise only   score only                  both                no ratio, x ~ mu
    k1          0               ∇KL(q‖p)                    ∇KL(q‖p)            -∇KL(mu‖q) = mu - q
    k2          ∇KL(q‖p)        ∇(E_q[k2] − KL(q‖p))        ∇E_q[k2]            ∇E_mu[k2]
    k3          ∇KL(p‖q)        ∇(KL(q‖p) − KL(p‖q))        ∇KL(q‖p)            ∇E_mu[k3]

Every one has a closed form (:func:`followed_gradient`); in particular
:math:`\nabla_\theta \mathbb{E}_q[k_2] = q \odot \big(f(L) - \mathbb{E}_q[f(L)]\big)` with
:math:`f = k_2 + k_1 = \tfrac12 L^2 - L` (:func:`expected_k2_gradient`).

These are statements about one token (one categorical draw). A per-token penalty summed over a
sequence follows other objectives (the later tokens' distribution depends on the earlier ones).

KL(q‖p) is the "reverse", mode-seeking KL of the RL literature and KL(p‖q) the "forward",
mass-covering one. (Careful: :mod:`klviz.estimators` labels KL[q, p] as its ``"forward"`` target; the
functions here avoid the words and name the order: :func:`kl_qp`, :func:`kl_pq`.)

References: J. Schulman, "Approximating KL Divergence" (2020); Y. Tang and R. Munos, "On a few
pitfalls in KL divergence gradient estimation for RL", arXiv:2506.09477 (2025); K. Liu et al.,
"Rethinking KL Regularization in RLHF", arXiv:2510.01555 (2025); DeepSeek-AI, "DeepSeek-V3.2",
arXiv:2512.02556 (2025), §3.1 (its "unbiased KL estimate" is ``ratio_loss`` with k3).

Everything is numpy, in log space: where a direct product such as :math:`q\cdot r` or :math:`\rho\cdot r`
would overflow, it is formed as the exponential of a sum of logs (:math:`q\,r = p`), so tokens with tiny q
never produce inf·0. The policy and the reference are held as a :class:`klviz.CategoricalPair`, whose
per-token log-ratios come from the logit differences (full precision also when q ≈ p) and whose KLs are
sums of non-negative terms :math:`q\,k_3(\log r)`, so nothing cancels when the policies are close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klviz import _checks
from klviz._sampling import sample_categorical
from klviz.estimators import k2 as _k2
from klviz._kernels import log_softmax, weighted_k3
from klviz.pairs import CategoricalPair

__all__ = [
    "GradientUse",
    "USES",
    "FOLLOWED",
    "GradientMoments",
    "MonteCarloGradient",
    "PolicyPath",
    "kl_qp",
    "kl_pq",
    "kl_qp_gradient",
    "kl_pq_gradient",
    "followed_objective",
    "followed_gradient",
    "followed_label",
    "expected_k2_gradient",
    "expected_gradient",
    "per_sample_gradient",
    "gradient_moments",
    "monte_carlo_gradient",
    "discretised_gaussian_logits",
    "gaussian_policy_kls",
    "fit_gaussian_policy",
]

_ESTIMATORS = ("k1", "k2", "k3")
# fit_gaussian_policy stops beyond this |log σ|: (V e^30)² still fits in float64.
_MAX_ABS_LOG_SCALE = 30.0


@dataclass(frozen=True)
class GradientUse:
    r"""How an estimator enters the objective that autodiff differentiates.

    ``score`` says whether the gradient contains :math:`k\,\nabla\log q_\theta` (reward use, or a
    differentiable ratio), ``pathwise`` whether it contains :math:`\nabla_\theta k` (loss use).
    ``off_policy`` uses sample from a behaviour policy μ; ``reweighted`` ones weight each sample by
    :math:`\rho = q_\theta/\mu` (the others use it as if it came from q, weight 1).
    """

    name: str
    surrogate: str
    off_policy: bool
    score: bool
    pathwise: bool
    reweighted: bool = True

    def __repr__(self) -> str:
        if not self.off_policy:
            where = "x ~ q"
        else:
            where = "x ~ mu, rho = q/mu" if self.reweighted else "x ~ mu, no ratio"
        terms = " + ".join(t for t, on in (("score", self.score), ("pathwise", self.pathwise)) if on)
        return f"GradientUse({self.name}: d/dθ of {self.surrogate}; {where}; terms: {terms})"


#: The six uses, by name (see the module docstring for the table).
USES: dict[str, GradientUse] = {
    "loss": GradientUse("loss", "k(x)", False, False, True),
    "reward": GradientUse("reward", "sg[k(x)] * log q(x)", False, True, False),
    "ratio_loss": GradientUse("ratio_loss", "rho(x) * k(x)", True, True, True),
    "stopgrad_ratio_loss": GradientUse("stopgrad_ratio_loss", "sg[rho(x)] * k(x)", True, False, True),
    "ratio_reward": GradientUse("ratio_reward", "rho(x) * sg[k(x)]", True, True, False),
    "no_ratio_loss": GradientUse("no_ratio_loss", "k(x)", True, False, True, reweighted=False),
}

#: The function whose exact gradient each (estimator, terms) combination follows in expectation,
#: keyed by (estimator, (score, pathwise)), for the uses that are on-policy or reweighted by ρ.
#: ``E_q[k2]`` is the f-divergence with f = ½ log². For ``no_ratio_loss`` see :func:`followed_label`.
FOLLOWED: dict[tuple[str, tuple[bool, bool]], str] = {
    ("k1", (False, True)): "0 (no gradient in expectation)",
    ("k2", (False, True)): "KL(q||p)",
    ("k3", (False, True)): "KL(p||q)",
    ("k1", (True, False)): "KL(q||p)",
    ("k2", (True, False)): "E_q[k2] - KL(q||p)",
    ("k3", (True, False)): "KL(q||p) - KL(p||q)",
    ("k1", (True, True)): "KL(q||p)",
    ("k2", (True, True)): "E_q[k2]",
    ("k3", (True, True)): "KL(q||p)",
}

# What a loss on samples from a fixed μ, without a ratio, follows: E_μ[k(L_θ)] (μ fixed).
_FOLLOWED_NO_RATIO: dict[str, str] = {
    "k1": "E_mu[k1] = -KL(mu||q)+c",
    "k2": "E_mu[k2]",
    "k3": "E_mu[k3]",
}


# --------------------------------------------------------------------------------------------------
# validation


def _finite_logits(logits, name: str) -> np.ndarray:
    """A finite 1-D float64 array of logits, or a TypeError/ValueError naming ``name``."""
    # A differentiable policy needs every token in its support, and the reference must cover the
    # policy's support for KL(q||p) to be finite: no -inf logits here.
    return _checks.logits(logits, name, zero_probability=False)


def _log_probs(logits, name: str) -> np.ndarray:
    """Stable log-softmax of finite 1-D logits (validated as in :func:`_finite_logits`)."""
    return log_softmax(_finite_logits(logits, name))


def _pair(logits, ref_logits) -> CategoricalPair:
    """q = softmax(logits) and p = softmax(ref_logits) as a CategoricalPair, after this module's checks.

    Its ``log_ratio_table`` is log r = log p - log q to full precision also when q ≈ p.
    """
    q_logits = _finite_logits(logits, "logits")
    p_logits = _finite_logits(ref_logits, "ref_logits")
    if p_logits.shape != q_logits.shape:
        raise ValueError(
            f"logits and ref_logits must have the same length, got {q_logits.size} and {p_logits.size}"
        )
    return CategoricalPair(p_logits=p_logits, q_logits=q_logits)


def _estimator(estimator) -> str:
    if not isinstance(estimator, str):
        raise TypeError(f"estimator must be a name, one of {list(_ESTIMATORS)}, got {type(estimator).__name__}")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(_ESTIMATORS)}, got {estimator!r}")
    return estimator


def _use(use) -> GradientUse:
    if isinstance(use, GradientUse):
        return use
    if not isinstance(use, str):
        raise TypeError(f"use must be a name, one of {list(USES)}, got {type(use).__name__}")
    if use not in USES:
        raise ValueError(f"use must be one of {list(USES)}, got {use!r}")
    return USES[use]


def _behaviour(use: GradientUse, log_q: np.ndarray, behaviour_logits) -> np.ndarray:
    """log μ, the distribution samples come from: q itself on-policy (and by default off-policy)."""
    if behaviour_logits is None:
        return log_q
    if not use.off_policy:
        raise ValueError(
            f"behaviour_logits is only meaningful for the off-policy uses "
            f"{[name for name, u in USES.items() if u.off_policy]}; use {use.name!r} samples from q"
        )
    log_mu = _log_probs(behaviour_logits, "behaviour_logits")
    if log_mu.shape != log_q.shape:
        raise ValueError(
            f"behaviour_logits must have the same length as logits, got {log_mu.size} and {log_q.size}"
        )
    return log_mu


def _positive_int(value, name: str) -> int:
    return _checks.integer(value, name, 1)


# --------------------------------------------------------------------------------------------------
# exact divergences and their gradients


def kl_qp(logits, ref_logits) -> float:
    r"""The exact reverse (mode-seeking) divergence :math:`\mathrm{KL}(q_\theta\|p) = \sum_x q(\log q - \log p)`.

    Summed as :math:`\sum_x q\,k_3(\log r)` (:meth:`klviz.CategoricalPair.kl`): non-negative terms, with
    log r from the logit differences, so the relative precision is ~1e-16 also when q ≈ p (the plain
    sum of :math:`q(\log q - \log p)` cancels: its error is ~1e-16·|log q| on a KL of order δ²).

    Parameters
    ----------
    logits : array_like, shape (V,)
        Logits θ of the policy :math:`q_\theta = \mathrm{softmax}(\theta)`; finite.
    ref_logits : array_like, shape (V,)
        Logits (or log-probabilities) of the reference p; finite.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If an argument is not real-valued.
    ValueError
        If an argument is not a finite 1-D array, or the lengths differ.

    Examples
    --------
    >>> round(kl_qp([0.0, 0.0], [0.0, 1.0]), 6)
    0.120115
    """
    return _pair(logits, ref_logits).kl_qp()


def kl_pq(logits, ref_logits) -> float:
    r"""The exact forward (mass-covering) divergence :math:`\mathrm{KL}(p\|q_\theta) = \sum_x p(\log p - \log q)`.

    Summed as :math:`\sum_x p\,k_3(\log q - \log p)` (:meth:`klviz.CategoricalPair.kl_pq`), to full
    relative precision. Parameters and errors as in :func:`kl_qp`.

    Examples
    --------
    >>> round(kl_pq([0.0, 0.0], [0.0, 1.0]), 6)
    0.110944
    """
    return _pair(logits, ref_logits).kl_pq()


def kl_qp_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathrm{KL}(q_\theta\|p)`.

    .. math:: \nabla_\theta \mathrm{KL}(q_\theta\|p) = \mathbb{E}_q[-\log r\; g]
              = q \odot \big(\log q - \log p - \mathrm{KL}(q_\theta\|p)\big).

    Parameters and errors as in :func:`kl_qp`.

    Returns
    -------
    ndarray, shape (V,)
        Sums to zero (a softmax gradient is orthogonal to shifting all logits).

    Examples
    --------
    >>> kl_qp_gradient([0.0, 0.0], [0.0, 0.0])
    array([0., 0.])
    """
    pair = _pair(logits, ref_logits)
    q = np.exp(pair.log_q)
    log_ratio = pair.log_ratio_table
    # Centring by the plain mean (not by kl()) cancels any constant offset in the log-ratios exactly.
    return q * (np.sum(q * log_ratio) - log_ratio)


def kl_pq_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathrm{KL}(p\|q_\theta)`: :math:`-\mathbb{E}_p[g] = q - p`.

    Parameters and errors as in :func:`kl_qp`.

    Examples
    --------
    >>> kl_pq_gradient([0.0, 0.0], [0.0, 0.0])
    array([0., 0.])
    """
    pair = _pair(logits, ref_logits)
    return np.exp(pair.log_q) - np.exp(pair.log_p)


def _zero_objective(logits, ref_logits) -> float:
    """The pathwise part of k1 (k1' is constant, E_q[g] = 0): 0 for any valid pair."""
    _pair(logits, ref_logits)
    return 0.0


def _expected_k2(logits, ref_logits) -> float:
    r""":math:`\mathbb{E}_q[k_2] = \sum_x q\,\tfrac12 (\log r)^2`: non-negative terms, log r from the pair."""
    pair = _pair(logits, ref_logits)
    return float(np.sum(np.exp(pair.log_q) * _k2(pair.log_ratio_table)))


def expected_k2_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathbb{E}_q[k_2] = \sum_x q_\theta(x)\,\tfrac12 L(x)^2`.

    With :math:`\nabla q = q\,g` and :math:`\nabla L = -g`,
    :math:`\nabla \sum_x q\,\tfrac12 L^2 = \mathbb{E}_q[(\tfrac12 L^2 - L)\,g]`, and for any f,
    :math:`\mathbb{E}_q[f\,g] = q \odot (f - \mathbb{E}_q[f])`:

    .. math:: \nabla_\theta \mathbb{E}_q[k_2] = q \odot \big(f(L) - \mathbb{E}_q[f(L)]\big),
              \qquad f = k_2 + k_1 = \tfrac12 L^2 - L .

    (The same form with f = -L is :func:`kl_qp_gradient`.) It is the expected gradient of ``ρ·k2``
    with a differentiable ratio. Parameters and errors as in :func:`kl_qp`.

    Returns
    -------
    ndarray, shape (V,)
        Sums to zero.

    Examples
    --------
    q uniform on two tokens, p = softmax(0, 1): f = (0.8124, -0.3077), so the gradient is ±0.28.

    >>> np.round(expected_k2_gradient([0.0, 0.0], [0.0, 1.0]), 6)
    array([ 0.280029, -0.280029])
    """
    pair = _pair(logits, ref_logits)
    q = np.exp(pair.log_q)
    log_ratio = pair.log_ratio_table
    f = log_ratio * (0.5 * log_ratio - 1.0)
    # Centring by the plain mean (not by E_q[k2] + KL) keeps Σ = 0 to rounding.
    return q * (f - np.sum(q * f))


def _no_ratio_objective(log_mu: np.ndarray, log_ratio: np.ndarray, estimator: str) -> float:
    r""":math:`\mathbb{E}_\mu[k(L_\theta)] = \sum_x \mu\,k(L)` for a fixed μ (non-negative terms for k2, k3)."""
    if estimator == "k1":
        return float(-np.sum(np.exp(log_mu) * log_ratio))
    if estimator == "k2":
        return float(np.sum(np.exp(log_mu) * _k2(log_ratio)))
    return float(np.sum(_weighted_k3(log_mu, log_ratio)))


def _fixed_behaviour(use: GradientUse, log_q: np.ndarray, behaviour_logits, caller: str) -> np.ndarray:
    """log μ for the objective functions: validated as for the gradients; required without a ratio."""
    if not use.reweighted and behaviour_logits is None:
        raise ValueError(
            f"behaviour_logits is required by {caller} for use {use.name!r}: the objective E_mu[k] "
            "depends on the sampling policy mu, which is held fixed while θ varies"
        )
    return _behaviour(use, log_q, behaviour_logits)


def followed_objective(logits, ref_logits, estimator: str, use, *, behaviour_logits=None) -> float:
    r"""The function F(θ) whose exact gradient the given use of the estimator follows in expectation.

    From :math:`\nabla_\theta \mathbb{E}_q[k] = \underbrace{\mathbb{E}_q[k\,g]}_{\text{score}} +
    \underbrace{\mathbb{E}_q[\nabla_\theta k]}_{\text{pathwise}}`, with :math:`\mathbb{E}_q[k_1] =
    \mathbb{E}_q[k_3] = \mathrm{KL}(q\|p)`, the pathwise terms are :math:`0,\ \nabla\mathrm{KL}(q\|p),\
    \nabla\mathrm{KL}(p\|q)` for k1, k2, k3, and the score terms are the rest (see :data:`FOLLOWED`).
    Without a ratio (``no_ratio_loss``, x ~ μ) the use follows
    :math:`F(\theta) = \mathbb{E}_\mu[k(L_\theta)] = \sum_x \mu(x)\,k(L_\theta(x))` with μ fixed; for k1
    that is :math:`\mathrm{KL}(\mu\|p) - \mathrm{KL}(\mu\|q_\theta)`.
    ``expected_gradient(...)`` equals ``∇ followed_objective(...)``; F is defined up to a constant.

    Parameters
    ----------
    logits, ref_logits : array_like, shape (V,)
        As in :func:`kl_qp`.
    estimator : {"k1", "k2", "k3"}
    use : str or GradientUse
        One of :data:`USES`.
    behaviour_logits : array_like, shape (V,), optional
        Logits of μ: required for ``no_ratio_loss``, accepted (and validated, not used) for the
        reweighted off-policy uses, whose objective does not depend on μ.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        For bad arrays (as in :func:`kl_qp`), an unknown estimator or use, ``behaviour_logits`` given
        for an on-policy use, or missing for ``no_ratio_loss``.

    Examples
    --------
    >>> followed_objective([0.0, 0.0], [0.0, 1.0], "k3", "loss") == kl_pq([0.0, 0.0], [0.0, 1.0])
    True
    """
    estimator = _estimator(estimator)
    use = _use(use)
    pair = _pair(logits, ref_logits)
    log_mu = _fixed_behaviour(use, pair.log_q, behaviour_logits, "followed_objective")
    if not use.reweighted:
        return _no_ratio_objective(log_mu, pair.log_ratio_table, estimator)
    mean = {"k1": kl_qp, "k2": _expected_k2, "k3": kl_qp}[estimator]  # E_q[k]: ∇ = score + pathwise
    pathwise = {"k1": _zero_objective, "k2": kl_qp, "k3": kl_pq}[estimator]  # ∇ = E_q[∇_θ k]
    if use.score and use.pathwise:
        return mean(logits, ref_logits)
    if use.pathwise:
        return pathwise(logits, ref_logits)
    return mean(logits, ref_logits) - pathwise(logits, ref_logits)


def followed_gradient(logits, ref_logits, estimator: str, use, *, behaviour_logits=None) -> np.ndarray:
    r"""The gradient of :func:`followed_objective` in closed form, assembled from the divergences' gradients.

    For the on-policy and reweighted uses it combines :func:`kl_qp_gradient`, :func:`kl_pq_gradient`
    and :func:`expected_k2_gradient` as :data:`FOLLOWED` says. Without a ratio, with
    :math:`a = \mu \odot (-k'(L))` the gradient of :math:`\mathbb{E}_\mu[k(L_\theta)]` is
    :math:`a - (\textstyle\sum_x a_x)\, q`:

    .. math:: k_1:\ \mu - q = -\nabla\mathrm{KL}(\mu\|q),\qquad
              k_2:\ -\mu\odot L + (\mu\cdot L)\,q,\qquad
              k_3:\ \mu - \mu\odot r - \big(1 - \textstyle\sum_x \mu r\big)\,q ,

    with :math:`\mu r = e^{\log\mu + L}` (no overflow where q underflows).
    Computed without :func:`expected_gradient`'s per-token coefficients, so the two check each other.

    Parameters, errors
        As in :func:`followed_objective`.

    Returns
    -------
    ndarray, shape (V,)

    Examples
    --------
    >>> theta, ref = [0.0, 0.5, -0.5], [0.3, 0.0, 0.0]
    >>> bool(np.allclose(followed_gradient(theta, ref, "k3", "loss"), kl_pq_gradient(theta, ref)))
    True
    """
    estimator = _estimator(estimator)
    use = _use(use)
    pair = _pair(logits, ref_logits)
    log_mu = _fixed_behaviour(use, pair.log_q, behaviour_logits, "followed_gradient")
    q = np.exp(pair.log_q)
    if not use.reweighted:
        mu, log_ratio = np.exp(log_mu), pair.log_ratio_table
        if estimator == "k1":
            return mu - q
        if estimator == "k2":
            return -mu * log_ratio + float(np.dot(mu, log_ratio)) * q
        # a = μ - μ r with μ r = μ p / q, scaled by e^-shift when μ r overflows (q ≪ μ p).
        shift = max(0.0, float(np.max(log_mu + log_ratio)) - 700.0)
        a = np.exp(log_mu - shift) - np.exp(log_mu + log_ratio - shift)
        return _mean_gradient(q, a, shift)
    zero = np.zeros_like(q)
    mean = {"k1": kl_qp_gradient, "k2": expected_k2_gradient, "k3": kl_qp_gradient}[estimator]
    pathwise = {"k1": None, "k2": kl_qp_gradient, "k3": kl_pq_gradient}[estimator]
    pathwise_gradient = zero if pathwise is None else pathwise(logits, ref_logits)
    if use.score and use.pathwise:
        return mean(logits, ref_logits)
    if use.pathwise:
        return pathwise_gradient
    return mean(logits, ref_logits) - pathwise_gradient


def followed_label(estimator: str, use) -> str:
    """A short name of the function each use of an estimator follows (see :func:`followed_objective`).

    Examples
    --------
    >>> followed_label("k3", "loss"), followed_label("k1", "no_ratio_loss")
    ('KL(p||q)', 'E_mu[k1] = -KL(mu||q)+c')
    """
    estimator = _estimator(estimator)
    use = _use(use)
    if not use.reweighted:
        return _FOLLOWED_NO_RATIO[estimator]
    return FOLLOWED[estimator, (use.score, use.pathwise)]


# --------------------------------------------------------------------------------------------------
# per-token coefficients


_weighted_k3 = weighted_k3  # w·k3(L) without 0·inf where w underflows and e^L overflows


def _weighted_coefficient(log_weight: np.ndarray, log_ratio: np.ndarray, estimator: str,
                          score: bool, pathwise: bool) -> np.ndarray:
    r"""w·(s k(L) - d k'(L)) per token, with w = exp(log_weight), computed without inf·0.

    Terms carrying r = e^L are formed as exp(log w + L) when w·(e^L - 1) overflows (w tiny, L huge).
    """
    weight = np.exp(log_weight)
    s, d = float(score), float(pathwise)
    if estimator == "k1":  # k = -L, k' = -1
        return weight * (d - s * log_ratio)
    if estimator == "k2":  # k = L²/2, k' = L
        return weight * log_ratio * (0.5 * s * log_ratio - d)
    # k3 = e^L - 1 - L, k3' = e^L - 1; with both terms the e^L parts cancel exactly: k3 - k3' = -L.
    if score and pathwise:
        return -weight * log_ratio
    if score:
        return _weighted_k3(log_weight, log_ratio)
    with np.errstate(over="ignore", invalid="ignore"):  # 0·inf where w underflows: replaced below
        value = -weight * np.expm1(log_ratio)
    bad = ~np.isfinite(value)
    if bad.any():
        # w - w·r without forming r; -inf only if w·r itself overflows (no ratio, μ ≫ q: see _masses)
        with np.errstate(over="ignore"):
            value[bad] = weight[bad] - np.exp(log_weight[bad] + log_ratio[bad])
    return value


def _prepare(logits, ref_logits, estimator, use, behaviour_logits):
    """Validated (estimator, use, log q, log r, log μ, log m-weight, log sample weight).

    log r = log p - log q to full precision. The token's contribution to the mean is
    m_x = μ_x c_x = exp(log m-weight)·(s k - d k'), and a sample's coefficient c_x carries
    exp(log sample weight): ρ = q/μ for reweighted uses, 1 otherwise (so m_x has weight q or μ).
    """
    estimator = _estimator(estimator)
    use = _use(use)
    pair = _pair(logits, ref_logits)
    log_mu = _behaviour(use, pair.log_q, behaviour_logits)
    if use.reweighted:
        log_mass, log_sample = pair.log_q, pair.log_q - log_mu
    else:
        log_mass, log_sample = log_mu, np.zeros_like(log_mu)
    return estimator, use, pair.log_q, pair.log_ratio_table, log_mu, log_mass, log_sample


def _masses(log_weight: np.ndarray, log_ratio: np.ndarray, estimator: str, score: bool,
            pathwise: bool) -> tuple[np.ndarray, float]:
    """Per-token masses m = w·(s k - d k') as (m·e^-shift, shift), shift = 0 unless some m overflows.

    Only a weight that is not q can overflow: without a ratio, μ·(1 - r) for k3 where q ≪ μ·p·e^-709.
    The coefficient is linear in w, so scaling the weights by e^-shift, with shift ≥ max log|m|
    up to a factor 2 (|m| ≤ 2 w e^|L|), keeps every mass finite.
    """
    masses = _weighted_coefficient(log_weight, log_ratio, estimator, score, pathwise)
    if np.isfinite(masses).all():
        return masses, 0.0
    shift = float(np.max(log_weight + np.abs(log_ratio)))
    return _weighted_coefficient(log_weight - shift, log_ratio, estimator, score, pathwise), shift


def _mean_gradient(q: np.ndarray, weighted: np.ndarray, log_scale: float = 0.0) -> np.ndarray:
    """Σ_x m_x (e_x - q) = m - (Σ m) q, for per-token masses m = e^log_scale · weighted.

    A scale beyond float64 gives ±inf where the exact result is non-zero (never 0·inf = NaN).
    """
    bracket = weighted - np.sum(weighted) * q
    if log_scale == 0.0:
        return bracket
    with np.errstate(over="ignore"):
        return np.where(bracket == 0.0, 0.0, bracket * np.exp(log_scale))


# --------------------------------------------------------------------------------------------------
# exact expected gradients, per-sample gradients, exact and Monte Carlo moments


def expected_gradient(logits, ref_logits, estimator: str, use, *, behaviour_logits=None) -> np.ndarray:
    r"""The exact expected gradient in θ of one use of a KL estimator, by summation over the vocabulary.

    .. math:: \mathbb{E}_{x\sim\mu}\big[c(x)\, (e_x - q)\big]
              = \sum_x q(x)\,\big(s\,k(L_x) - d\,k'(L_x)\big)\,(e_x - q),

    with s, d the score and pathwise switches of ``use`` (module docstring); for the reweighted uses
    importance weighting makes the result independent of μ, which is accepted (and validated) only
    for symmetry with :func:`gradient_moments`. Without a ratio (``no_ratio_loss``) the weight is
    μ instead of q: :math:`\sum_x \mu(x)\,(-k'(L_x))\,(e_x - q)`, which depends on μ.

    Parameters
    ----------
    logits : array_like, shape (V,)
        Logits θ of the policy :math:`q_\theta`; finite.
    ref_logits : array_like, shape (V,)
        Logits (or log-probabilities) of the reference p; finite.
    estimator : {"k1", "k2", "k3"}
    use : str or GradientUse
        One of ``"loss"``, ``"reward"``, ``"ratio_loss"``, ``"stopgrad_ratio_loss"``, ``"ratio_reward"``,
        ``"no_ratio_loss"``.
    behaviour_logits : array_like, shape (V,), optional
        Logits of the behaviour policy μ for the off-policy uses; default μ = q (the first step of an
        epoch, where ``no_ratio_loss`` is ``loss``).

    Returns
    -------
    ndarray, shape (V,)

    Raises
    ------
    TypeError
        If an array is not real-valued, or estimator/use is not a name.
    ValueError
        If an array is not finite and 1-D, lengths differ, the estimator or use is unknown, or
        ``behaviour_logits`` is given for an on-policy use.

    Examples
    --------
    The gradient of k3 used as a loss is the gradient of the forward KL(p‖q) = q - p:

    >>> expected_gradient([0.0, 0.0], [0.0, np.log(3.0)], "k3", "loss")
    array([ 0.25, -0.25])
    """
    estimator, use, log_q, log_ratio, _, log_mass, _ = _prepare(logits, ref_logits, estimator, use,
                                                                behaviour_logits)
    masses, shift = _masses(log_mass, log_ratio, estimator, use.score, use.pathwise)
    return _mean_gradient(np.exp(log_q), masses, shift)


def per_sample_gradient(tokens, logits, ref_logits, estimator: str, use, *,
                        behaviour_logits=None) -> np.ndarray:
    r"""The gradient in θ that autodiff returns for each sampled token: :math:`c(x)\,(e_x - q_\theta)`.

    With :math:`w = \rho = q_\theta/\mu` for the reweighted off-policy uses and 1 otherwise,
    :math:`c(x) = w(x)\,(s\,k(L_x) - d\,k'(L_x))`. Averaging rows over tokens drawn from μ (q on-policy)
    estimates :func:`expected_gradient`.

    Parameters
    ----------
    tokens : array_like of int, shape (n,)
        Token indices in [0, V), drawn from μ (or q for on-policy uses).
    logits, ref_logits, estimator, use, behaviour_logits
        As in :func:`expected_gradient`.

    Returns
    -------
    ndarray, shape (n, V)

    Raises
    ------
    TypeError
        If ``tokens`` are not integers (and as in :func:`expected_gradient`).
    ValueError
        If a token is outside [0, V) (and as in :func:`expected_gradient`).

    Examples
    --------
    k2 in the loss and k1 in the reward give the same gradient for every sample, not only on average:

    >>> theta, ref = [0.0, 1.0, 2.0], [1.0, 0.0, 0.0]
    >>> a = per_sample_gradient([0, 2], theta, ref, "k2", "loss")
    >>> b = per_sample_gradient([0, 2], theta, ref, "k1", "reward")
    >>> bool(np.allclose(a, b))
    True
    """
    estimator, use, log_q, log_ratio, _, _, log_sample = _prepare(logits, ref_logits, estimator, use,
                                                                  behaviour_logits)
    tokens = np.asarray(tokens)
    if tokens.dtype == np.bool_ or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be integer token indices, got dtype {tokens.dtype}")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= log_q.size):
        raise ValueError(f"tokens must be indices in [0, {log_q.size}), got values outside")
    coefficient = _weighted_coefficient(log_sample, log_ratio, estimator, use.score, use.pathwise)
    c = coefficient[tokens]
    gradients = -np.outer(c, np.exp(log_q))
    gradients[np.arange(tokens.size), tokens] += c
    return gradients


@dataclass(frozen=True)
class GradientMoments:
    r"""Exact mean and spread of one per-sample gradient estimator :math:`G = c(x)(e_x - q)`, x ~ μ.

    ``variance`` is per logit, :math:`\mathrm{Var}[G_j]`; ``trace_covariance`` is their sum,
    :math:`\mathbb{E}\|G - \mathbb{E}G\|^2`, the mean squared error of a one-sample estimate;
    divide by n for a batch of n. ``signal`` is :math:`\|\mathbb{E}G\|^2`. ``squared_error_std`` is the
    standard deviation of :math:`\|G - \mathbb{E}G\|^2`: a trace covariance estimated from n samples has
    standard error ≈ ``squared_error_std``/√n (use it for z-scores when tails are heavy and the
    sample version is unreliable).
    """

    estimator: str
    use: str
    mean: np.ndarray = field(repr=False)
    variance: np.ndarray = field(repr=False)
    trace_covariance: float
    squared_error_std: float

    @property
    def signal(self) -> float:
        return float(np.sum(self.mean**2))

    def __repr__(self) -> str:
        return (f"GradientMoments({self.estimator} as {self.use}: |mean|^2={self.signal:.6g}, "
                f"trace cov={self.trace_covariance:.6g}, V={self.mean.size})")


def gradient_moments(logits, ref_logits, estimator: str, use, *, behaviour_logits=None) -> GradientMoments:
    r"""Exact mean, per-logit variance and trace of the covariance of a per-sample gradient, by summation.

    With :math:`m_x = q_x (s\,k - d\,k')(L_x)` (:math:`\mu_x` instead of :math:`q_x` without a ratio;
    :math:`c_x = m_x/\mu_x`) and samples x ~ μ,

    .. math:: \mathbb{E}[G] = m - (\textstyle\sum_x m_x)\, q,\qquad
              \mathbb{E}[G_j^2] = \frac{m_j^2}{\mu_j}(1 - 2q_j) + q_j^2 \sum_x \frac{m_x^2}{\mu_x},\qquad
              \mathbb{E}\|G\|^2 = \sum_x \frac{m_x^2}{\mu_x}\big(1 - 2q_x + \|q\|^2\big).

    O(V) work; an infinite value means the variance overflows float64 (a huge ρ² or r²).

    Parameters
    ----------
    logits, ref_logits, estimator, use, behaviour_logits
        As in :func:`expected_gradient`.

    Returns
    -------
    GradientMoments

    Raises
    ------
    TypeError, ValueError
        As in :func:`expected_gradient`.

    Examples
    --------
    k1 in the loss has mean zero: its gradient is pure noise.

    >>> m = gradient_moments([0.0, 0.0], [0.0, 1.0], "k1", "loss")
    >>> m.signal, m.trace_covariance
    (0.0, 0.5)
    """
    estimator, use, log_q, log_ratio, log_mu, log_mass, _ = _prepare(logits, ref_logits, estimator, use,
                                                                     behaviour_logits)
    q = np.exp(log_q)
    weighted, shift = _masses(log_mass, log_ratio, estimator, use.score, use.pathwise)
    mean = _mean_gradient(q, weighted, shift)
    with np.errstate(over="ignore"):
        # m²/μ = exp(2 log|m| - log μ): finite unless the variance itself overflows.
        with np.errstate(divide="ignore"):
            log_abs = np.log(np.abs(weighted)) + shift
        second = np.exp(2.0 * log_abs - log_mu)
        total = float(np.sum(second))
    if not math.isfinite(total):
        inf = np.full_like(q, np.inf)
        return GradientMoments(estimator, use.name, mean, inf, math.inf, math.inf)
    norm2 = 1.0 - 2.0 * q + np.sum(q * q)  # ||e_x - q||²
    with np.errstate(over="ignore", invalid="ignore"):
        variance = second * (1.0 - 2.0 * q) + q * q * total - mean * mean
        trace = float(np.sum(second * norm2)) - float(np.sum(mean * mean))
        # y_x = ||c_x (e_x - q) - E G||², c_x = m_x/μ_x; its spread under μ, summed in log-safe pieces.
        c = np.sign(weighted) * np.exp(log_abs - log_mu)
        y = c * c * norm2 - 2.0 * c * (mean - np.dot(q, mean)) + np.sum(mean * mean)
        spread = float(np.sum(np.exp(log_mu) * (y - trace) ** 2))
    # Rounding can leave -1e-18 where the exact variance is 0.
    variance = np.maximum(variance, 0.0)
    spread_std = math.sqrt(spread) if math.isfinite(spread) else math.inf
    return GradientMoments(estimator, use.name, mean, variance, max(trace, 0.0), spread_std)


@dataclass(frozen=True)
class MonteCarloGradient:
    r"""A Monte Carlo average of n per-sample gradients, with standard errors.

    ``stderr`` is per logit (sample std/√n); ``trace_covariance`` is the unbiased sample estimate of
    :math:`\mathbb{E}\|G - \mathbb{E}G\|^2` and ``trace_covariance_stderr`` its standard error.
    """

    estimator: str
    use: str
    n: int
    mean: np.ndarray = field(repr=False)
    stderr: np.ndarray = field(repr=False)
    trace_covariance: float
    trace_covariance_stderr: float

    def z_scores(self, exact_mean) -> np.ndarray:
        """(Monte Carlo mean - exact mean)/stderr per logit (0 where both agree and stderr is 0)."""
        diff = self.mean - np.asarray(exact_mean, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = diff / self.stderr
        return np.where(self.stderr > 0, z, np.where(diff == 0, 0.0, np.inf))

    def __repr__(self) -> str:
        return (f"MonteCarloGradient({self.estimator} as {self.use}: n={self.n}, "
                f"trace cov={self.trace_covariance:.6g} ± {self.trace_covariance_stderr:.2g})")


def monte_carlo_gradient(logits, ref_logits, estimator: str, use, n: int, *, behaviour_logits=None,
                         rng=None) -> MonteCarloGradient:
    r"""Average :func:`per_sample_gradient` over n tokens drawn from μ (q on-policy), with error bars.

    The per-sample gradient depends on the token only, so the averages are computed from token
    counts (O(n + V) memory, no n×V matrix); the numbers are those of averaging the rows.

    Parameters
    ----------
    logits, ref_logits, estimator, use, behaviour_logits
        As in :func:`expected_gradient`.
    n : int
        Number of samples; at least 2.
    rng : {None, int, numpy.random.Generator}, optional
        Seed or generator for the draws.

    Returns
    -------
    MonteCarloGradient

    Raises
    ------
    TypeError, ValueError
        As in :func:`expected_gradient`, and for n not an integer >= 2.

    Examples
    --------
    >>> theta, ref = [0.0, 0.5, -0.5], [0.3, 0.0, 0.0]
    >>> mc = monte_carlo_gradient(theta, ref, "k3", "loss", 10**5, rng=0)
    >>> bool(np.all(np.abs(mc.z_scores(kl_pq_gradient(theta, ref))) < 5))
    True
    """
    n = _positive_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be at least 2 for a standard error, got {n}")
    estimator, use, log_q, log_ratio, log_mu, _, log_sample = _prepare(logits, ref_logits, estimator, use,
                                                                       behaviour_logits)
    rng = np.random.default_rng(rng)
    tokens = sample_categorical(np.exp(log_mu), n, rng)
    counts = np.bincount(tokens, minlength=log_q.size).astype(np.float64)
    freq = counts / n
    q = np.exp(log_q)
    c = _weighted_coefficient(log_sample, log_ratio, estimator, use.score, use.pathwise)
    mean = _mean_gradient(q, freq * c)
    # Per logit j: G_j(x) = c_x (δ_xj - q_j); its sample second moment from the counts.
    c2 = freq * c * c
    second = c2 * (1.0 - 2.0 * q) + q * q * np.sum(c2)
    correction = n / (n - 1)
    variance = np.maximum(second - mean * mean, 0.0) * correction
    stderr = np.sqrt(variance / n)
    # y_x = ||G(x) - mean||² = c_x²(1 - 2q_x + |q|²) - 2 c_x (mean_x - q·mean) + |mean|².
    y = (c * c * (1.0 - 2.0 * q + np.sum(q * q)) - 2.0 * c * (mean - np.dot(q, mean))
         + np.sum(mean * mean))
    trace = float(np.sum(freq * y)) * correction
    y_var = float(np.sum(freq * (y - np.sum(freq * y)) ** 2)) * correction
    return MonteCarloGradient(estimator, use.name, n, mean, stderr, trace, math.sqrt(y_var / n))


# --------------------------------------------------------------------------------------------------
# a two-parameter policy family that cannot represent a bimodal reference


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
    vocab_size = _positive_int(vocab_size, "vocab_size")
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
    log_p = _log_probs(ref_logits, "ref_logits")
    log_q = log_softmax(discretised_gaussian_logits(means, log_scales, log_p.size), axis=-1)
    log_ratio = log_p - log_q
    # Σ q k3(log r) = Σ q (log q - log p) since Σ q (r - 1) = 0: non-negative terms, nothing cancels.
    qp = np.sum(_weighted_k3(log_q, log_ratio), axis=-1)
    pq = np.sum(_weighted_k3(log_p, -log_ratio), axis=-1)
    return qp, pq


@dataclass(frozen=True)
class PolicyPath:
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

    def __repr__(self) -> str:
        m, s = self.params[-1]
        return (f"PolicyPath({self.estimator} as {self.use}: {self.steps_taken} steps, final mean={m:.4g}, "
                f"scale={math.exp(s):.4g}, KL(q||p)={self.kl_qp[-1]:.6g}, KL(p||q)={self.kl_pq[-1]:.6g})")


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
    estimator : {"k1", "k2", "k3"}
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
    estimator = _estimator(estimator)
    use = _use(use)
    log_p = _log_probs(ref_logits, "ref_logits")
    if not isinstance(init, (tuple, list, np.ndarray)) or len(init) != 2:
        raise ValueError(f"init must be a pair (mean, log_scale), got {init!r}")
    phi = np.array([_real(init[0], "init[0]"), _real(init[1], "init[1]")])
    steps = _positive_int(steps, "steps")
    step_size = _real(step_size, "step_size")
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    damping = _real(damping, "damping")
    if damping < 0:
        raise ValueError(f"damping must be non-negative, got {damping}")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
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
            weighted = _weighted_coefficient(log_q, log_p - log_q, estimator, use.score, use.pathwise)
        else:
            # On-policy draws; c_x times the token frequencies is the batch average of c(x)(e_x - q).
            drawn = sample_categorical(q, batch_size, rng)
            freq = np.bincount(drawn, minlength=log_p.size) / batch_size
            c = _weighted_coefficient(np.zeros_like(log_q), log_p - log_q, estimator, use.score,
                                      use.pathwise)
            weighted = freq * c
        grad_theta = _mean_gradient(q, weighted)
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
    return PolicyPath(estimator, use.name, params, qp, pq, taken)
