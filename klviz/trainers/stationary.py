r"""Where a trainer's KL setting converges: the stationary policy of reward − β·penalty for one softmax token.

A policy :math:`q_\theta = \mathrm{softmax}(\theta)` over a vocabulary, a fixed reference p and a reward
:math:`R_x` per token are trained on-policy by a recipe (:mod:`klviz.trainers.recipes`): the expected
gradient is that of :math:`\mathbb{E}_q[R]` (the policy gradient, :math:`q\odot(R - \bar R)`) minus β times
the recipe's expected penalty gradient (:func:`klviz.gradients.expected_gradient` with the recipe's
Estimator and use). Every such gradient has the form :math:`\sum_x q_x a_x (e_x - q)`,

.. math:: a_x = R_x - \beta\,c(L_x),\qquad c = s\,k(L) - d\,k'(L),\quad L_x = \log p_x - \log q_x,

so it vanishes at a policy with full support exactly when :math:`a_x` is the same for every token:

.. math:: R_x - \beta\,c\big(\log p_x - \log q_x\big) = \lambda \quad\text{for all } x .

For a penalty that follows KL(q‖p) (c = -L + const: k1 in the reward, k2 in the loss, k3 with a
differentiable ratio) this is the exponential tilt :math:`q \propto p\,e^{R/\beta}`; for k3 in the loss
(c = 1 - r, the gradient of KL(p‖q)) it is :math:`q_x = \beta p_x/(\beta - R_x + \lambda)`, a rational,
heavier-tailed solution; clamps change it where they bind, and can remove it (a token whose penalty
gradient the clamp switches off is held by nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax
from klviz._results import Result
from klviz.gradients.softmax import kl_pq, kl_qp
from klviz.gradients.uses import expected_gradient
from klviz.trainers.recipes import get_trainer_recipe

__all__ = ["StationaryPolicy", "stationary_policy"]

# Central-difference step for the Jacobian in the logits: truncation h²|s'''|/6 ~ 1e-13 against rounding
# ε|s|/h ~ 1e-10 relative; Newton's quadratic convergence does not need a better Jacobian.
_STEP = 1e-6
# Logits beyond this spread mean some token's probability is running to 0 (e^-700 underflows float64).
_MAX_LOGIT_SPREAD = 650.0


@dataclass(frozen=True, repr=False)
class StationaryPolicy(Result):
    r"""The policy at which a recipe's expected on-policy gradient of reward − β·penalty vanishes.

    Attributes
    ----------
    recipe : str
    beta : float
    log_probs : ndarray
        :math:`\log q` at the stationary point (normalised logits).
    residual : float
        :math:`\max_x |a_x - \bar a|` at the solution, in reward units (0 at an exact stationary point).
    iterations : int
        Newton steps taken.
    stable : bool
        Whether on-policy training is attracted to it (the Jacobian of the expected gradient in the logits,
        one logit pinned, has eigenvalues with negative real parts only).
    kl_qp, kl_pq : float
        KL(q‖p) and KL(p‖q) of the solution against the reference.
    """

    recipe: str
    beta: float
    log_probs: np.ndarray = field(repr=False)
    residual: float
    iterations: int
    stable: bool
    kl_qp: float
    kl_pq: float

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)

    def _display_fields(self):
        return [("recipe", self.recipe), ("beta", self.beta), ("V", self.log_probs.size), ("kl_qp", self.kl_qp),
                ("kl_pq", self.kl_pq), ("residual", self.residual), ("stable", self.stable),
                ("iterations", self.iterations)]


def _gradient(theta, ref_logits, rewards, beta, estimator, use):
    """The expected on-policy gradient of E_q[R] - β·penalty in the logits: q ⊙ (R - R̄) - β·G(θ)."""
    q = np.exp(log_softmax(theta))
    penalty = expected_gradient(theta, ref_logits, estimator, use)
    return q * (rewards - float(np.dot(q, rewards))) - beta * penalty


def _balance(theta, ref_logits, rewards, beta, estimator, use):
    """a_x - ā with a = R - β c: the gradient over q (None if some q_x underflows or a term overflows)."""
    q = np.exp(log_softmax(theta))
    if np.any(q == 0.0):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        balance = _gradient(theta, ref_logits, rewards, beta, estimator, use) / q
    return balance if np.isfinite(balance).all() else None


def _jacobian(function, theta, free):
    """Central differences of function(θ)[free] in θ[free] (None where an evaluation fails)."""
    jacobian = np.empty((free.size, free.size))
    for column, index in enumerate(free):
        up, down = theta.copy(), theta.copy()
        up[index] += _STEP
        down[index] -= _STEP
        plus, minus = function(up), function(down)
        if plus is None or minus is None:
            return None
        jacobian[:, column] = (plus[free] - minus[free]) / (2.0 * _STEP)
    return jacobian


def _newton(start, balance, tol, max_iterations):
    """Damped Newton on the V-1 balance equations in the logits (the largest logit pinned at 0).

    Returns (theta, residual, iterations, converged)."""
    pin = int(np.argmax(start))
    free = np.flatnonzero(np.arange(start.size) != pin)
    theta = start - start[pin]
    current = balance(theta)
    if current is None:
        return theta, math.inf, 0, False
    norm = float(np.max(np.abs(current)))
    for iteration in range(1, max_iterations + 1):
        if norm <= tol:
            return theta, norm, iteration - 1, True
        jacobian = _jacobian(balance, theta, free)
        if jacobian is None:
            return theta, norm, iteration, False
        step = np.linalg.lstsq(jacobian, -current[free], rcond=None)[0]
        # Backtracking on the largest balance error: Newton steps near a clamp's corner can overshoot.
        for _ in range(40):
            trial = theta.copy()
            trial[free] += step
            candidate = balance(trial)
            if candidate is not None:
                candidate_norm = float(np.max(np.abs(candidate)))
                if candidate_norm < norm:
                    break
            step = step / 2.0
        else:
            return theta, norm, iteration, False
        theta, current, norm = trial, candidate, candidate_norm
        if np.ptp(theta) > _MAX_LOGIT_SPREAD:
            return theta, norm, iteration, False
    return theta, norm, max_iterations, norm <= tol


def _flow_outcome(balance, log_p, steps: int = 2000, max_move: float = 0.1):
    """Where natural-gradient training started at the reference goes: θ ← θ + η (a - ā), the tabular
    softmax natural policy gradient (Kakade 2001), η chosen so no logit moves more than ``max_move`` a step.

    Returns the probabilities reached and whether a token's probability underflowed on the way."""
    theta = log_p.copy()
    for _ in range(steps):
        step = balance(theta)
        if step is None:
            return np.exp(log_softmax(theta)), True
        largest = float(np.max(np.abs(step)))
        if largest == 0.0:
            break
        theta = theta + min(1.0, max_move / largest) * step
    return np.exp(log_softmax(theta)), False


def stationary_policy(recipe, p_logits, rewards, beta, *, start=None, tol: float = 1e-10,
                      max_iterations: int = 100, explain: bool = True) -> StationaryPolicy:
    r"""The softmax policy at which a recipe's expected on-policy gradient of reward − β·penalty vanishes.

    Solves :math:`R_x - \beta\,c(\log p_x - \log q_x) = \lambda` for all tokens x (module docstring) by
    damped Newton in the logits, the balance :math:`a_x - \bar a` computed from
    :func:`klviz.gradients.expected_gradient` with the recipe's Estimator and :attr:`~TrainerRecipe.gradient_use`,
    started from the exponential tilt :math:`\log p + R/\beta` (the answer for reverse-KL recipes), then from
    k3-in-the-loss's :math:`\beta p/(\beta - R + \lambda)` (inside the region where k3's clamps do not bind, when
    the tilt lies beyond them), then from p. :attr:`StationaryPolicy.stable` says whether on-policy training (the flow
    :math:`\dot\theta = \nabla`) is attracted to it: every eigenvalue of the gradient's Jacobian in the
    logits (one pinned) has a negative real part.

    Parameters
    ----------
    recipe : TrainerRecipe or str
        A record of :func:`klviz.trainer_recipes` or its name.
    p_logits : array_like, shape (V,)
        Logits (or log-probabilities) of the reference p; finite, V ≥ 2.
    rewards : array_like, shape (V,)
        The reward of each token; finite.
    beta : float
        The penalty's coefficient; positive.
    start : array_like, shape (V,), optional
        Logits to start Newton from, tried before the tilt and p (to reach another, e.g. unstable,
        stationary point).
    tol : float, default 1e-10
        Convergence: :math:`\max_x|a_x - \bar a| \le` tol · max(β, spread of R).
    max_iterations : int, default 100
        Newton steps per start.
    explain : bool, default True
        When no stationary policy is found, run natural-gradient training from p to say in the error where it
        goes instead (2000 steps); False raises at once (for sweeps over β).

    Returns
    -------
    StationaryPolicy

    Raises
    ------
    TypeError, ValueError
        For a bad recipe, arrays that are not finite and 1-D of the same length ≥ 2, a non-positive β,
        a non-positive ``tol`` or ``max_iterations``; also when the recipe's expected penalty gradient is
        zero for every policy (k1 in the loss) and the rewards are not constant, so no policy is stationary.
    ArithmeticError
        If no stationary policy with full support was found. The message gives the best residual and where
        natural-gradient training started at p goes instead (e.g. a clamp that switches the penalty's
        gradient off lets a token's probability run to 0; k3 in the reward, which follows
        KL(q‖p) − KL(p‖q), runs away from p).

    Examples
    --------
    k1 in the reward follows KL(q‖p): the stationary policy is the exponential tilt p·e^{R/β}.

    >>> import numpy as np
    >>> ref, reward = np.array([0.0, 0.5, -0.5]), np.array([1.0, 0.0, 0.2])
    >>> solution = stationary_policy("verl:kl-reward", ref, reward, beta=0.5)
    >>> tilt = np.exp(ref + reward / 0.5); tilt /= tilt.sum()
    >>> bool(np.allclose(solution.probs, tilt, rtol=1e-9)), solution.stable
    (True, True)
    """
    record = get_trainer_recipe(recipe)
    ref_logits = _checks.logits(p_logits, "p_logits", zero_probability=False)
    reward = np.asarray(rewards)
    if reward.dtype == np.bool_ or not (np.issubdtype(reward.dtype, np.floating)
                                        or np.issubdtype(reward.dtype, np.integer)):
        raise TypeError(f"rewards must be an array of real numbers, got dtype {reward.dtype}")
    reward = reward.astype(np.float64)
    if reward.ndim != 1 or reward.shape != ref_logits.shape:
        raise ValueError(f"rewards must be one-dimensional with one reward per token ({ref_logits.size}), "
                         f"got shape {reward.shape}")
    if not np.isfinite(reward).all():
        raise ValueError("rewards must be finite")
    if ref_logits.size < 2:
        raise ValueError(f"p_logits must have at least 2 tokens, got {ref_logits.size}")
    beta = _checks.positive(beta, "beta")
    tol = _checks.positive(tol, "tol")
    max_iterations = _checks.integer(max_iterations, "max_iterations", 1)
    if not isinstance(explain, (bool, np.bool_)):
        raise TypeError(f"explain must be True or False, got {type(explain).__name__}")

    estimator, use = record.estimator, record.gradient_use
    log_p = log_softmax(ref_logits)
    scale = max(beta, float(np.ptp(reward)))
    threshold = tol * scale
    _reject_zero_gradient(record, ref_logits, log_p, reward, beta, estimator, use)

    def balance(theta):
        return _balance(theta, ref_logits, reward, beta, estimator, use)

    def gradient(theta):
        return _gradient(theta, ref_logits, reward, beta, estimator, use)

    starts = [log_p + reward / beta, _rational_start(log_p, reward, beta), log_p]
    if start is not None:
        first = _checks.logits(start, "start", zero_probability=False)
        if first.shape != ref_logits.shape:
            raise ValueError(f"start must have one logit per token ({ref_logits.size}), got shape {first.shape}")
        starts.insert(0, first)
    best = None
    for initial in starts:
        theta, residual, iterations, converged = _newton(initial - np.max(initial), balance, threshold,
                                                         max_iterations)
        if converged:
            log_q = log_softmax(theta)
            residual = float(np.max(np.abs(balance(theta))))
            free = np.flatnonzero(np.arange(theta.size) != int(np.argmax(theta)))
            jacobian = _jacobian(gradient, theta, free)
            stable = jacobian is not None and bool(np.max(np.linalg.eigvals(jacobian).real) < 0.0)
            return StationaryPolicy(record.name, beta, log_q, residual, iterations, stable,
                                    kl_qp(log_q, ref_logits), kl_pq(log_q, ref_logits))
        if best is None or residual < best[0]:
            best = (residual, theta)
    residual = best[0]
    if not explain:
        raise ArithmeticError(
            f"no stationary policy with full support found for recipe {record.name!r} at beta={beta:g}: Newton's best "
            f"balance error max|a - mean a| was {residual:.3g} (tolerance {threshold:.3g}); explain=True says where "
            "training goes instead")
    probs, underflow = _flow_outcome(balance, log_p)
    reached = ("a token's probability underflows on the way" if underflow else
               f"probabilities from {probs.min():.3g} to {probs.max():.3g} (largest on token {int(np.argmax(probs))})")
    raise ArithmeticError(
        f"no stationary policy with full support found for recipe {record.name!r} at beta={beta:g}: Newton's best "
        f"balance error max|a - mean a| was {residual:.3g} (tolerance {threshold:.3g}). Natural-gradient training "
        f"started at p reaches {reached}: a token whose reward advantage the penalty cannot balance runs to "
        f"probability 0 or 1 (value clamp {record.value_clamp}, log-ratio clamp {record.log_ratio_clamp}), "
        "or the balance holds only at a kink. (An unstable stationary point, which training leaves, can exist "
        "where Newton did not look: pass start= to search from elsewhere.)")


def _rational_start(log_p: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    r"""log of k3-in-the-loss's solution :math:`q = \beta p/(\beta - R + \lambda)`, Σ q = 1 solved for λ by
    bisection: a start inside the region where k3's clamps do not bind when the tilt lies beyond them."""
    p = np.exp(log_p)
    low = float(np.max(reward)) - beta          # Σ q decreases from +inf (λ -> low) to 0 (λ -> inf)
    width = 1.0
    while float(np.sum(beta * p / (beta - reward + low + width))) > 1.0:
        width *= 2.0
    a, b = 0.0, width
    for _ in range(200):
        middle = 0.5 * (a + b)
        if float(np.sum(beta * p / (beta - reward + low + middle))) > 1.0:
            a = middle
        else:
            b = middle
    return np.log(beta * p / (beta - reward + low + b))


def _reject_zero_gradient(record, ref_logits, log_p, reward, beta, estimator, use):
    """k1 in the loss: the expected penalty gradient is zero for every policy; only constant rewards balance."""
    # At q = p every log r is 0 and every recipe's gradient vanishes: probe two other policies.
    wobble = 0.5 * np.sin(1.0 + np.arange(log_p.size))
    for point in (log_p + wobble, log_p - wobble + reward / beta):
        balance = _balance(point, ref_logits, np.zeros_like(reward), 1.0, estimator, use)
        if balance is None or float(np.max(np.abs(balance))) > 1e-12:
            return
    if float(np.ptp(reward)) > 0.0:
        raise ValueError(
            f"recipe {record.name!r} has no stationary policy for non-constant rewards: its expected penalty "
            "gradient is zero for every policy (the pathwise gradient of k1 = log q - log p has mean "
            "E_q[∇ log q] = 0), so nothing balances the reward")
