r"""The uses of a KL estimator in training — loss, reward, importance ratios — and their exact expected gradients.

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

KL(q‖p) = KL[q, p] is the "reverse", mode-seeking KL of the RL literature and KL(p‖q) = KL[p, q] the
"forward", mass-covering one; klviz names them by their arguments, :func:`kl_qp` and :func:`kl_pq`.

Any :class:`~klviz.Estimator` can be used: the per-token factor is its value and derivative
(:func:`klviz.gradients.softmax.coefficients`). The table above, and :func:`followed_objective`, are known
for estimators with the exact forms of k1, k2 and k3 (recognised by form, not by name); for any other
estimator the expected gradient with both terms follows :math:`\mathbb{E}_q[k]`, and without a ratio
:math:`\mathbb{E}_\mu[k]`, provided its derivative is its value's (not straight-through).

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
from klviz._results import Result, Shown
from klviz._sampling import sample_categorical
from klviz.estimators import ESTIMATORS, Estimator, get_estimator
from klviz.gradients.softmax import (
    coefficients,
    expected_k2_gradient,
    kl_pq,
    kl_pq_gradient,
    kl_qp,
    kl_qp_gradient,
    log_probs,
    mean_gradient,
    policy_pair,
    positive_int,
)

__all__ = [
    "GradientUse",
    "USES",
    "get_use",
    "FOLLOWED",
    "GradientMoments",
    "MonteCarloGradient",
    "followed_objective",
    "followed_gradient",
    "followed_label",
    "expected_gradient",
    "per_sample_gradient",
    "gradient_moments",
    "monte_carlo_gradient",
]

@dataclass(frozen=True, repr=False)
class GradientUse(Result):
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

    def _display_fields(self):
        if not self.off_policy:
            where = "x ~ q"
        else:
            where = "x ~ mu, rho = q/mu" if self.reweighted else "x ~ mu, no ratio"
        terms = " + ".join(t for t, on in (("score", self.score), ("pathwise", self.pathwise)) if on)
        return [("name", self.name), ("differentiates", Shown(self.surrogate)), ("samples", Shown(where)),
                ("terms", Shown(terms))]
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
#: keyed by (exact form, (score, pathwise)), for the uses that are on-policy or reweighted by ρ; the form
#: is that of k1, k2 or k3 (any estimator with that value and derivative, whatever its name).
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


def _estimator(estimator) -> Estimator:
    return get_estimator(estimator)


def _known_form(record: Estimator) -> str | None:
    """'k1', 'k2' or 'k3' when the estimator has that built-in's exact value and derivative, else None."""
    if record.expansion is None or record.derivative_expansion is None:
        return None
    for name in ("k1", "k2", "k3"):
        builtin = ESTIMATORS[name]
        if record.expansion == builtin.expansion and record.derivative_expansion == builtin.derivative_expansion:
            return name
    return None


def _straight_through(record: Estimator) -> bool:
    """Whether the derivative differs from the value's derivative (central differences at a few points)."""
    points = np.array([-2.3, -0.6, 0.4, 1.7])
    step = 1e-6
    with np.errstate(all="ignore"):
        numeric = (np.asarray(record.value(points + step), dtype=np.float64)
                   - np.asarray(record.value(points - step), dtype=np.float64)) / (2 * step)
        given = np.asarray(record.derivative(points), dtype=np.float64)
    return not np.allclose(numeric, given, rtol=1e-5, atol=1e-7)


def _coefficients(log_weight, log_ratio, record: Estimator, score: bool, pathwise: bool):
    return coefficients(record, log_weight, log_ratio, score, pathwise)


def get_use(use) -> GradientUse:
    """A :class:`GradientUse` from a name in :data:`USES` (a GradientUse passes through)."""
    return _use(use)


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
    log_mu = log_probs(behaviour_logits, "behaviour_logits")
    if log_mu.shape != log_q.shape:
        raise ValueError(
            f"behaviour_logits must have the same length as logits, got {log_mu.size} and {log_q.size}"
        )
    return log_mu


def _zero_objective(logits, ref_logits) -> float:
    """The pathwise part of k1 (k1' is constant, E_q[g] = 0): 0 for any valid pair."""
    policy_pair(logits, ref_logits)
    return 0.0


def _expected_k2(logits, ref_logits) -> float:
    r""":math:`\mathbb{E}_q[k_2] = \sum_x q\,\tfrac12 (\log r)^2`: non-negative terms, log r from the pair."""
    pair = policy_pair(logits, ref_logits)
    return float(np.sum(np.exp(pair.log_q) * ESTIMATORS['k2'].value(pair.log_ratio_table)))


def _no_ratio_objective(log_mu: np.ndarray, log_ratio: np.ndarray, record: Estimator) -> float:
    r""":math:`\mathbb{E}_\mu[k(L_\theta)] = \sum_x \mu\,k(L)` for a fixed μ (terms formed in log space)."""
    return float(np.sum(coefficients(record, log_mu, log_ratio, True, False)))


def _fixed_behaviour(use: GradientUse, log_q: np.ndarray, behaviour_logits, caller: str) -> np.ndarray:
    """log μ for the objective functions: validated as for the gradients; required without a ratio."""
    if not use.reweighted and behaviour_logits is None:
        raise ValueError(
            f"behaviour_logits is required by {caller} for use {use.name!r}: the objective E_mu[k] "
            "depends on the sampling policy mu, which is held fixed while θ varies"
        )
    return _behaviour(use, log_q, behaviour_logits)


def _general_objective_only(record: Estimator, use: "GradientUse", caller: str) -> None:
    """The objective of an estimator without k1/k2/k3's form is known only with both terms (E_q[k]) or
    without a ratio (E_μ[k]), and only if its derivative is its value's."""
    if not ((use.score and use.pathwise) or not use.reweighted) or _straight_through(record):
        raise ValueError(
            f"{caller}: no closed-form objective is known for estimator {record.name!r} with use {use.name!r} "
            "(known: k1, k2, k3 by exact form for every use; any other estimator with both gradient terms or "
            "without a ratio, unless straight-through); compare expected_gradient with finite differences"
        )


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
    estimator : str or Estimator
        k1, k2 or k3 (by exact form) for every use; any other estimator for the uses with both terms
        (E_q[k]) or without a ratio (E_μ[k]), unless it is straight-through.
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
    record = _estimator(estimator)
    use = _use(use)
    pair = policy_pair(logits, ref_logits)
    log_mu = _fixed_behaviour(use, pair.log_q, behaviour_logits, "followed_objective")
    form = _known_form(record)
    if form is None:
        _general_objective_only(record, use, "followed_objective")
    if not use.reweighted:
        return _no_ratio_objective(log_mu, pair.log_ratio_table, record)
    if form is None:
        return _no_ratio_objective(pair.log_q, pair.log_ratio_table, record)  # E_q[k], both terms
    mean = {"k1": kl_qp, "k2": _expected_k2, "k3": kl_qp}[form]  # E_q[k]: ∇ = score + pathwise
    pathwise = {"k1": _zero_objective, "k2": kl_qp, "k3": kl_pq}[form]  # ∇ = E_q[∇_θ k]
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
    record = _estimator(estimator)
    use = _use(use)
    pair = policy_pair(logits, ref_logits)
    log_mu = _fixed_behaviour(use, pair.log_q, behaviour_logits, "followed_gradient")
    q = np.exp(pair.log_q)
    estimator = _known_form(record)
    if estimator is None:
        raise ValueError(f"followed_gradient is the closed form for the k1, k2 and k3 forms; {record.name!r} has "
                         "none of them (expected_gradient is exact for any estimator)")
    if not use.reweighted:
        mu, log_ratio = np.exp(log_mu), pair.log_ratio_table
        if estimator == "k1":
            return mu - q
        if estimator == "k2":
            return -mu * log_ratio + float(np.dot(mu, log_ratio)) * q
        # a = μ - μ r with μ r = μ p / q, scaled by e^-shift when μ r overflows (q ≪ μ p).
        shift = max(0.0, float(np.max(log_mu + log_ratio)) - 700.0)
        a = np.exp(log_mu - shift) - np.exp(log_mu + log_ratio - shift)
        return mean_gradient(q, a, shift)
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
    record = _estimator(estimator)
    use = _use(use)
    form = _known_form(record)
    if form is None:
        _general_objective_only(record, use, "followed_label")
        return f"E_mu[{record.name}]" if not use.reweighted else f"E_q[{record.name}]"
    if not use.reweighted:
        return _FOLLOWED_NO_RATIO[form]
    return FOLLOWED[form, (use.score, use.pathwise)]


# --------------------------------------------------------------------------------------------------
# per-token coefficients


def _prepare(logits, ref_logits, estimator, use, behaviour_logits):
    """Validated (estimator, use, log q, log r, log μ, log m-weight, log sample weight).

    log r = log p - log q to full precision. The token's contribution to the mean is
    m_x = μ_x c_x = exp(log m-weight)·(s k - d k'), and a sample's coefficient c_x carries
    exp(log sample weight): ρ = q/μ for reweighted uses, 1 otherwise (so m_x has weight q or μ).
    """
    estimator = _estimator(estimator)
    use = _use(use)
    pair = policy_pair(logits, ref_logits)
    log_mu = _behaviour(use, pair.log_q, behaviour_logits)
    if use.reweighted:
        log_mass, log_sample = pair.log_q, pair.log_q - log_mu
    else:
        log_mass, log_sample = log_mu, np.zeros_like(log_mu)
    return estimator, use, pair.log_q, pair.log_ratio_table, log_mu, log_mass, log_sample


def _masses(log_weight: np.ndarray, log_ratio: np.ndarray, estimator: Estimator, score: bool,
            pathwise: bool) -> tuple[np.ndarray, float]:
    """Per-token masses m = w·(s k - d k') as (m·e^-shift, shift), shift = 0 unless some m overflows.

    Only a weight that is not q can overflow: without a ratio, μ·(1 - r) for k3 where q ≪ μ·p·e^-709.
    The coefficient is linear in w, so scaling the weights by e^-shift, with shift ≥ max log|m|
    up to a factor 2 (|m| ≤ 2 w e^|L|), keeps every mass finite.
    """
    masses = _coefficients(log_weight, log_ratio, estimator, score, pathwise)
    if np.isfinite(masses).all():
        return masses, 0.0
    shift = float(np.max(log_weight + np.abs(log_ratio)))
    return _coefficients(log_weight - shift, log_ratio, estimator, score, pathwise), shift


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
    estimator : str or Estimator
        A name in :data:`klviz.ESTIMATORS` or any :class:`~klviz.Estimator`.
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
    return mean_gradient(np.exp(log_q), masses, shift)


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
    coefficient = _coefficients(log_sample, log_ratio, estimator, use.score, use.pathwise)
    c = coefficient[tokens]
    gradients = -np.outer(c, np.exp(log_q))
    gradients[np.arange(tokens.size), tokens] += c
    return gradients


@dataclass(frozen=True, repr=False)
class GradientMoments(Result):
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

    def _display_fields(self):
        return [("estimator", self.estimator), ("use", self.use), ("signal", self.signal),
                ("trace_covariance", self.trace_covariance), ("V", self.mean.size)]
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
    mean = mean_gradient(q, weighted, shift)
    with np.errstate(over="ignore"):
        # m²/μ = exp(2 log|m| - log μ): finite unless the variance itself overflows.
        with np.errstate(divide="ignore"):
            log_abs = np.log(np.abs(weighted)) + shift
        second = np.exp(2.0 * log_abs - log_mu)
        total = float(np.sum(second))
    if not math.isfinite(total):
        inf = np.full_like(q, np.inf)
        return GradientMoments(estimator.name, use.name, mean, inf, math.inf, math.inf)
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
    return GradientMoments(estimator.name, use.name, mean, variance, max(trace, 0.0), spread_std)


@dataclass(frozen=True, repr=False)
class MonteCarloGradient(Result):
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

    def _display_fields(self):
        return [("estimator", self.estimator), ("use", self.use), ("n", self.n),
                ("trace_covariance", Shown(f"{self.trace_covariance:.6g} ± {self.trace_covariance_stderr:.2g}"))]
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
    n = positive_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be at least 2 for a standard error, got {n}")
    estimator, use, log_q, log_ratio, log_mu, _, log_sample = _prepare(logits, ref_logits, estimator, use,
                                                                       behaviour_logits)
    rng = np.random.default_rng(rng)
    tokens = sample_categorical(np.exp(log_mu), n, rng)
    counts = np.bincount(tokens, minlength=log_q.size).astype(np.float64)
    freq = counts / n
    q = np.exp(log_q)
    c = _coefficients(log_sample, log_ratio, estimator, use.score, use.pathwise)
    mean = mean_gradient(q, freq * c)
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
    return MonteCarloGradient(estimator.name, use.name, n, mean, stderr, trace, math.sqrt(y_var / n))


# --------------------------------------------------------------------------------------------------
# a two-parameter policy family that cannot represent a bimodal reference
