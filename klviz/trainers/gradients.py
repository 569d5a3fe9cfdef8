r"""The gradient a trainer's KL setting gets in expectation, exactly: one token, or whole sequences, on-policy or
in a later PPO/GRPO epoch (tokens drawn from the rollout policy μ, the recipe's own weighting applied).

Each recipe's per-token gradient is :math:`c\,\nabla_\theta\log q_\theta` with c from
:meth:`TrainerRecipe.gradient_coefficient` (the code's surrogate differentiated at the token). For one softmax
token, :math:`\nabla_\theta\log q_\theta(x) = e_x - q_\theta`, so

.. math:: \mathbb{E}_{x\sim\mu}[c(x)\,(e_x - q)] = m - \Big(\sum_x m_x\Big)\,q,\qquad m_x = \mu_x\,c_x .

Over sequences of a Markov-chain policy (:class:`klviz.MarkovChainPair`, q the policy, p the reference) the
per-token losses are summed over the tokens, and a KL reward enters the return: with the rewards
:math:`r_u = k(\log p - \log\mu)` computed at the rollout, token t's policy-loss term is
:math:`\rho_t A_t`, :math:`A_t = \sum_{u\ge t} r_u` (γ = 1, λ = 1; a baseline or critic changes the variance,
not the expectation; PPO's clip is not modelled: the result is exact where every ratio lies inside the clip
range). So :math:`c_t = c^{\text{local}}_t + \rho_t\,\sum_{u>t} r_u`, and the expectation is a dynamic programme
over μ's state marginals and the rewards still to come (:math:`O(T V^2)`), the sequences ending at ``eos``
if the pair has one. Per-token terms are summed (the aggregation a trainer's token-mean reduces to up to a
constant factor when lengths are fixed; with ``eos``, a per-sequence token-mean would weight them differently).

Compare with :func:`klviz.gradients.kl_qp_gradient` / :func:`~klviz.gradients.kl_pq_gradient` (one token) and
:func:`klviz.gradients.sequence_kl_gradient` (sequences).
"""

from __future__ import annotations

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax
from klviz.gradients.sequences import SequenceGradient
from klviz.pairs import CategoricalPair, MarkovChainPair
from klviz.trainers.recipes import get_trainer_recipe

__all__ = ["recipe_gradient", "recipe_sequence_gradient"]


def _behaviour_log_probs(behaviour_logits, log_q: np.ndarray, name: str) -> np.ndarray:
    if behaviour_logits is None:
        return log_q
    log_mu = log_softmax(_checks.logits(behaviour_logits, name, zero_probability=False))
    if log_mu.shape != log_q.shape:
        raise ValueError(f"{name} must have one logit per token ({log_q.size}), got shape {log_mu.shape}")
    return log_mu


def recipe_gradient(recipe, logits, ref_logits, *, behaviour_logits=None) -> np.ndarray:
    r"""The exact expected gradient, in the policy's logits, of one recipe's KL penalty for one softmax token.

    .. math:: \sum_x \mu_x\, c_x\,(e_x - q),\qquad c = \text{the recipe's gradient coefficient}

    (:meth:`TrainerRecipe.gradient_coefficient`), tokens drawn from μ (default q: on-policy). With μ ≠ q this is
    a later epoch of PPO/GRPO: unweighted losses use μ's tokens as if they were q's, weighted ones apply their
    ratio, a reward is the one computed at the rollout, :math:`k(\log p - \log\mu)`, times the policy loss's
    ratio.

    Parameters
    ----------
    recipe : TrainerRecipe or str
    logits, ref_logits : array_like, shape (V,)
        Logits of the policy q (the parameters θ) and of the reference p; finite.
    behaviour_logits : array_like, shape (V,), optional
        Logits of the rollout policy μ the tokens come from.

    Returns
    -------
    ndarray, shape (V,)
        The gradient of the penalty (what the optimiser descends, times β).

    Raises
    ------
    TypeError, ValueError
        For a bad recipe or arrays that are not finite and one-dimensional of one length.

    Examples
    --------
    On-policy, k3 in the loss follows KL(p‖q) (gradient q − p); with DeepSeek-V3.2's ratio it follows KL(q‖p):

    >>> import numpy as np
    >>> from klviz.gradients import kl_pq_gradient, kl_qp_gradient
    >>> theta, ref = np.array([0.0, 0.4, -0.3]), np.array([0.2, 0.0, 0.5])
    >>> bool(np.allclose(recipe_gradient("trl:grpo-k3", theta, ref), kl_pq_gradient(theta, ref)))
    True
    >>> bool(np.allclose(recipe_gradient("trl:grpo-k3-ratio", theta, ref), kl_qp_gradient(theta, ref)))
    True
    """
    record = get_trainer_recipe(recipe)
    pair = CategoricalPair(p_logits=ref_logits, q_logits=logits)
    log_q = pair.log_q
    log_mu = _behaviour_log_probs(behaviour_logits, log_q, "behaviour_logits")
    c = record.gradient_coefficient(pair.log_ratio_table, log_weight=log_q - log_mu)
    masses = np.exp(log_mu) * c
    q = np.exp(log_q)
    return masses - np.sum(masses) * q


def _chain_behaviour(pair: MarkovChainPair, behaviour_logits):
    if behaviour_logits is None:
        return pair.log_q_initial, pair.log_q_transition
    if not (isinstance(behaviour_logits, (tuple, list)) and len(behaviour_logits) == 2):
        raise TypeError("behaviour_logits must be a pair (initial logits (V,), transition logits (V, V)), got "
                        f"{type(behaviour_logits).__name__}")
    V = pair.vocab_size
    initial = _checks.logits(behaviour_logits[0], "behaviour_logits[0]", zero_probability=False)
    transition = _checks.real_array(np.asarray(behaviour_logits[1]), "behaviour_logits[1]")
    if initial.shape != (V,):
        raise ValueError(f"behaviour_logits[0] must have shape {(V,)}, got {initial.shape}")
    if transition.shape != (V, V):
        raise ValueError(f"behaviour_logits[1] must have shape {(V, V)}, got {transition.shape}")
    if not np.isfinite(transition).all():
        raise ValueError("behaviour_logits[1] must be finite (every transition positive under mu)")
    return log_softmax(initial), log_softmax(transition, axis=-1)


def recipe_sequence_gradient(recipe, pair, *, behaviour_logits=None) -> SequenceGradient:
    r"""The exact expected gradient of one recipe's KL penalty over whole sequences of a Markov-chain policy.

    Per token :math:`c_t = c^{\text{local}}_t + \rho_t\sum_{u>t} r_u` (module docstring): the recipe's own
    per-token coefficient (:meth:`TrainerRecipe.gradient_coefficient`), plus, for a reward, the rewards still to
    come :math:`r_u = k(\log p - \log\mu)` of the same sequence, weighted by the token's ratio. The expectation
    over sequences drawn from μ (default q) is

    .. math:: W(s, s') = \sum_{t\ge1}\mu(x_{t-1} = s)\,\mu(s'\mid s)\,\big(c(s, s') + \rho(s, s')\,V_t(s')\big),
              \qquad V_t(s) = \mathbb{E}_\mu\Big[\sum_{u>t} r_u \,\Big|\, x_t = s\Big],

    row s of the transition gradient :math:`W(s,\cdot) - (\sum_{s'} W(s, s'))\,q(\cdot\mid s)` (and the same
    for the initial logits with t = 0).

    Parameters
    ----------
    recipe : TrainerRecipe or str
    pair : MarkovChainPair
        q is the policy (its logits are θ), p the reference; ``eos`` ends sequences.
    behaviour_logits : (array_like (V,), array_like (V, V)), optional
        μ's initial and transition logits: a later epoch on μ's sequences (default: on-policy).

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For a bad recipe, a pair that is not a MarkovChainPair, or bad behaviour logits.

    Examples
    --------
    k1 in the reward (returns-to-go) follows the sequence KL(q‖p); k3 per token in the loss does not:

    >>> from klviz import random_markov_chain_pair
    >>> from klviz.gradients import sequence_kl_gradient
    >>> chain = random_markov_chain_pair(3, 5, 0.5, rng=0)
    >>> exact = sequence_kl_gradient(chain, "kl_qp")
    >>> (recipe_sequence_gradient("verl:kl-reward", chain) - exact).norm < 1e-13
    True
    >>> (recipe_sequence_gradient("trl:grpo-k3", chain) - exact).norm > 0.01
    True
    """
    record = get_trainer_recipe(recipe)
    if not isinstance(pair, MarkovChainPair):
        raise TypeError(f"pair must be a MarkovChainPair (its q is the policy), got {type(pair).__name__}")
    log_n0, log_N = _chain_behaviour(pair, behaviour_logits)
    V, T = pair.vocab_size, pair.length
    log_rho0, log_rho = pair.log_q_initial - log_n0, pair.log_q_transition - log_N
    ell0, ell = np.asarray(pair.initial_log_ratio), np.asarray(pair.transition_log_ratio)
    c0 = record.gradient_coefficient(ell0, log_weight=log_rho0)
    c = record.gradient_coefficient(ell.ravel(), log_weight=log_rho.ravel()).reshape(V, V)
    n0, N = np.exp(log_n0), np.exp(log_N)
    going = pair.continues

    # μ's marginals of sequences still going before each step
    marginals = np.empty((T, V))
    marginals[0] = n0
    for t in range(1, T):
        marginals[t] = (marginals[t - 1] * going) @ N
    visits = (marginals[:-1] * going).sum(axis=0)  # Σ_t μ(x_{t-1} = s, the sequence goes on)
    W = visits[:, None] * N * c
    w0 = n0 * c0
    if record.use == "reward":
        # the rewards still to come, as computed at the rollout: r = k(log p - log μ)
        reward = np.asarray(record.estimator.value((ell + log_rho).ravel()), dtype=np.float64).reshape(V, V)
        future = np.zeros((T, V))   # V_t(s) = E_μ[Σ_{u>t} r_u | x_t = s]
        for t in range(T - 2, -1, -1):
            future[t] = going * np.sum(N * (reward + future[t + 1][None, :]), axis=1)
        rho0, rho = np.exp(log_rho0), np.exp(log_rho)
        w0 = w0 + n0 * rho0 * future[0]
        for t in range(1, T):
            W = W + (marginals[t - 1] * going)[:, None] * N * rho * future[t][None, :]
    q0, Q = np.exp(pair.log_q_initial), np.exp(pair.log_q_transition)
    initial = w0 - np.sum(w0) * q0
    transition = W - np.sum(W, axis=1, keepdims=True) * Q
    if pair.eos is not None:  # nothing follows eos: its row is no parameter any sequence uses
        transition[pair.eos] = 0.0
    return SequenceGradient(initial, transition)
