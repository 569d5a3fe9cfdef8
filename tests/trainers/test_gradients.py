r"""Tests for klviz.trainers.gradients: each recipe's expected gradient, one token and whole sequences, on-policy
and in a later epoch, against central differences of the expected upstream surrogate.

The surrogates are the frameworks' formulas transcribed in tests/trainers/test_recipes.py (UPSTREAM, in the code's
variables, detached tensors held at their values). For a token drawn from μ the code's surrogate is
``UPSTREAM[name](np, log q_θ, log q_θ0, ref, log μ)``; a reward is computed at the rollout, ``value(log μ, ref)``, and
enters the policy loss times the ratio ``exp(log q_θ - log μ)`` (summed into the return over a sequence). The
expected gradient is the derivative in θ of the μ-weighted sum of surrogates over every token (or every sequence,
enumerated), with μ held fixed. Nothing here calls klviz's gradient code.
"""

import itertools

import numpy as np
import pytest

from klviz import MarkovChainPair, random_markov_chain_pair
from klviz.gradients import sequence_expected_gradient
from klviz.trainers import get_trainer_recipe, recipe_gradient, recipe_sequence_gradient, trainer_recipes
from tests.trainers.test_recipes import UPSTREAM, openrlhf, verl_forward

RECIPES = trainer_recipes()
NAMES = [r.name for r in RECIPES]

# The value each reward recipe's code computes from (logprob, ref_logprob) at the rollout.
REWARD_VALUES = {
    "verl:kl-reward": lambda xp, lp, ref: verl_forward(xp, lp, ref, "kl"),
    "verl:low_var_kl-reward": lambda xp, lp, ref: verl_forward(xp, lp, ref, "low_var_kl"),
    "trl:ppo-k1": lambda xp, lp, ref: -(ref - lp),
    "trl:ppo-k3": lambda xp, lp, ref: (xp.exp(ref - lp) - 1) - (ref - lp),
    "openrlhf:k1-reward": openrlhf("k1"),
}


def log_softmax(v, axis=-1):
    v = np.asarray(v, dtype=np.float64)
    return v - np.logaddexp.reduce(v, axis=axis, keepdims=True)


def test_every_reward_recipe_has_a_value_here():
    assert sorted(REWARD_VALUES) == sorted(r.name for r in RECIPES if r.use == "reward")


def token_surrogate(name, log_q, log_q0, ref, log_mu):
    """The code's per-token surrogate for tokens drawn from μ (vectorised)."""
    if name in REWARD_VALUES:
        return REWARD_VALUES[name](np, log_mu, ref) * np.exp(log_q - log_mu)
    return UPSTREAM[name](np, log_q, log_q0, ref, log_mu)


THETA = np.array([0.3, -0.4, 0.1, 0.6])
REF = np.array([-0.2, 0.5, 1.9, -3.1])            # log r from -3.5 to 1.8: k3 < 10, away from every clamp
MU = THETA + np.array([0.15, -0.1, 0.05, -0.12])   # ratios q/μ within [0.85, 1.2]


def finite_difference_gradient(name, behaviour, h=1e-5):
    log_q0 = log_softmax(THETA)
    log_mu = log_q0 if behaviour is None else log_softmax(behaviour)
    ref = log_softmax(REF)
    mu = np.exp(log_mu)

    def expected(theta):
        return float(np.sum(mu * token_surrogate(name, log_softmax(theta), log_q0, ref, log_mu)))

    return np.array([(expected(THETA + h * e) - expected(THETA - h * e)) / (2 * h) for e in np.eye(THETA.size)])


@pytest.mark.parametrize("behaviour", [None, MU], ids=["on-policy", "epoch"])
@pytest.mark.parametrize("name", NAMES)
def test_single_token_gradient_is_the_derivative_of_the_expected_surrogate(name, behaviour):
    got = recipe_gradient(name, THETA, REF, behaviour_logits=behaviour)
    np.testing.assert_allclose(got, finite_difference_gradient(name, behaviour), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["verl:kl-loss", "open-instruct:kl1-loss"])
def test_a_k1_loss_in_a_later_epoch_pushes_q_away_from_the_rollout_policy(name):
    """Notebook 09, exercise 3: the expected gradient is -∇KL(μ‖q), so descending the loss raises KL(μ‖q)."""
    log_mu = log_softmax(MU)

    def kl_mu_q(theta):
        return float(np.sum(np.exp(log_mu) * (log_mu - log_softmax(theta))))

    h = 1e-6
    minus_grad = -np.array([(kl_mu_q(THETA + h * e) - kl_mu_q(THETA - h * e)) / (2 * h) for e in np.eye(THETA.size)])
    np.testing.assert_allclose(recipe_gradient(name, THETA, REF, behaviour_logits=MU), minus_grad, rtol=1e-7, atol=1e-10)
    theta, kls = THETA.copy(), [kl_mu_q(THETA)]
    for _ in range(20):
        theta = theta - 0.5 * recipe_gradient(name, theta, REF, behaviour_logits=MU)
        kls.append(kl_mu_q(theta))
    assert np.all(np.diff(kls) > 0) and kls[-1] > 3 * kls[0]


def test_a_clamp_after_the_weight_binds_on_rho_times_k():
    """slime's --use-unbiased-kl off-policy: ρ·k3 > 10 cuts the token's gradient although k3 < 10."""
    recipe = get_trainer_recipe("slime:low_var_kl-loss-unbiased")
    L, log_rho = np.array([2.3, 2.3]), np.array([0.0, 1.0])   # k3(2.3) = 5.67; e·5.67 = 15.4
    c = recipe.gradient_coefficient(L, log_weight=log_rho)
    assert c[0] == pytest.approx(-2.3) and c[1] == 0.0        # on-policy k3 - k3' = -L


# --- sequences ---------------------------------------------------------------------------------------------

def enumerate_sequences(V, T, eos):
    out = []
    for seq in itertools.product(range(V), repeat=T):
        if eos is not None and eos in seq:
            seq = seq[: seq.index(eos) + 1]
        if seq not in out:
            out.append(seq)
    return out


def sequence_finite_differences(name, pair, behaviour, h=1e-5):
    """∇_θ Σ_x ν(x) S(x; θ), S the code's surrogate summed over the tokens (a reward: Σ_t ρ_t A_t), ν fixed."""
    V, T, eos = pair.vocab_size, pair.length, pair.eos
    seqs = enumerate_sequences(V, T, eos)
    lp0, lP = log_softmax(pair.p_initial_logits), log_softmax(pair.p_transition_logits)
    q0_logits, Q_logits = pair.q_initial_logits, pair.q_transition_logits
    if behaviour is None:
        ln0, lN = log_softmax(q0_logits), log_softmax(Q_logits)
    else:
        ln0, lN = log_softmax(behaviour[0]), log_softmax(behaviour[1])
    theta0 = np.concatenate([q0_logits, Q_logits.ravel()])

    def token_logs(seq, l0, lT):
        return np.array([l0[seq[0]]] + [lT[a, b] for a, b in zip(seq[:-1], seq[1:])])

    refs = [token_logs(s, lp0, lP) for s in seqs]
    nus = [token_logs(s, ln0, lN) for s in seqs]
    weights = np.array([np.exp(np.sum(n)) for n in nus])
    lq0_fixed = [token_logs(s, log_softmax(q0_logits), log_softmax(Q_logits)) for s in seqs]

    def expected(theta):
        l0, lT = log_softmax(theta[:V]), log_softmax(theta[V:].reshape(V, V))
        total = 0.0
        for seq, ref, nu, fixed, weight in zip(seqs, refs, nus, lq0_fixed, weights):
            lq = token_logs(seq, l0, lT)
            if name in REWARD_VALUES:
                rewards = REWARD_VALUES[name](np, nu, ref)
                returns = np.cumsum(rewards[::-1])[::-1]
                value = np.sum(np.exp(lq - nu) * returns)
            else:
                value = np.sum(UPSTREAM[name](np, lq, fixed, ref, nu))
            total += weight * value
        return total

    grad = np.array([(expected(theta0 + h * e) - expected(theta0 - h * e)) / (2 * h) for e in np.eye(theta0.size)])
    initial, transition = grad[:V], grad[V:].reshape(V, V)
    if eos is not None:
        transition[eos] = 0.0
    return initial, transition


CHAIN = random_markov_chain_pair(3, 3, 0.4, rng=3)
CHAIN_BEHAVIOUR = (CHAIN.q_initial_logits + np.array([0.1, -0.08, 0.05]),
                   CHAIN.q_transition_logits + 0.08 * np.random.default_rng(2).normal(size=(3, 3)))
EOS_CHAIN = MarkovChainPair(CHAIN.p_initial_logits, CHAIN.p_transition_logits, CHAIN.q_initial_logits,
                            CHAIN.q_transition_logits, 4, eos=1)


def test_the_chains_stay_away_from_every_clamp():
    L = np.concatenate([CHAIN.initial_log_ratio, CHAIN.transition_log_ratio.ravel()])
    assert np.max(np.expm1(L) - L) < 1.0 and np.max(np.abs(L)) < 2.0


@pytest.mark.parametrize("case", ["on-policy", "epoch", "eos"])
@pytest.mark.parametrize("name", NAMES)
def test_sequence_gradient_is_the_derivative_of_the_expected_surrogate(name, case):
    pair = EOS_CHAIN if case == "eos" else CHAIN
    behaviour = CHAIN_BEHAVIOUR if case != "on-policy" else None
    got = recipe_sequence_gradient(name, pair, behaviour_logits=behaviour)
    initial, transition = sequence_finite_differences(name, pair, behaviour)
    np.testing.assert_allclose(got.initial, initial, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.transition, transition, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_on_policy_sequence_gradients_agree_with_the_sequence_module(name):
    """Where a recipe is one of klviz.gradients.sequences' uses, the two computations (different code) agree."""
    recipe = get_trainer_recipe(name)
    got = recipe_sequence_gradient(recipe, CHAIN)
    if recipe.use == "reward":
        other = sequence_expected_gradient(CHAIN, recipe.estimator, "reward_to_go")
    elif recipe.weighting == "none":
        other = sequence_expected_gradient(CHAIN, recipe.estimator, "token_loss")
    else:   # a differentiable weight: ratio 1 on q's own chain, ρ(k - k') per token
        own = (CHAIN.q_initial_logits, CHAIN.q_transition_logits)
        other = sequence_expected_gradient(CHAIN, recipe.estimator, "token_loss", behaviour_logits=own, ratio="token")
    assert (got - other).norm <= 1e-12 * max(other.norm, 1.0)


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="pair must be a MarkovChainPair"):
        recipe_sequence_gradient("trl:grpo-k3", None)
    with pytest.raises(TypeError, match="behaviour_logits must be a pair"):
        recipe_sequence_gradient("trl:grpo-k3", CHAIN, behaviour_logits=np.zeros(3))
    with pytest.raises(ValueError, match=r"behaviour_logits\[1\] must have shape"):
        recipe_sequence_gradient("trl:grpo-k3", CHAIN, behaviour_logits=(np.zeros(3), np.zeros((2, 2))))
    with pytest.raises(ValueError, match="behaviour_logits must have one logit per token"):
        recipe_gradient("trl:grpo-k3", THETA, REF, behaviour_logits=[0.0, 1.0])
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipe_gradient("verl:k9", THETA, REF)
    with pytest.raises(ValueError, match="log_weight must have the shape"):
        get_trainer_recipe("trl:grpo-k3-ratio").gradient_coefficient([0.1, 0.2], log_weight=[0.0])
    with pytest.raises(ValueError, match="log_weight must be finite"):
        get_trainer_recipe("trl:grpo-k3-ratio").gradient_coefficient([0.1], log_weight=[np.inf])
