r"""Tests for klviz.trainers.stationary_policy against solutions derived here by hand.

For a softmax policy q over V tokens with reward R, the on-policy expected gradient of E_q[R] - β·E[penalty]
is Σ_x q_x (R_x - β c_x)(e_x - q), c the per-token coefficient of the penalty's gradient; it vanishes at a
full-support q iff R_x - β c(L_x) = λ for every token, L = log p - log q. Two closed forms follow:

* reverse KL (c = -L + const: k1 as a reward, k2 as a loss, k3 or k1 times a differentiable ratio):
  log q_x = log p_x + R_x/β + const, the exponential tilt;
* k3 as a loss (c = -k3'(L) = 1 - e^L): 1 - p_x/q_x = (R_x - λ)/β, so q_x = β p_x/(β - R_x + λ), with λ
  fixed by Σ_x q_x = 1 — a decreasing function of λ on (max R - β, ∞), solved here with scipy's brentq
  (and Σ q_x R_x = λ follows: Σ q_x(β - R_x + λ) = β).

These derivations do not use klviz; the solver under test uses klviz.gradients.
"""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from klviz.gradients import expected_gradient
from klviz.trainers import StationaryPolicy, get_trainer_recipe, stationary_policy, trainer_recipes

REF = np.array([0.0, 0.5, -0.5, 1.0, -2.0])
REWARD = np.array([1.0, 0.0, 0.2, -0.5, 2.0])
BETA = 0.5

REVERSE_KL = ["verl:mse-loss", "verl:k1+-loss", "verl:abs+-loss", "verl:low_var_kl+-loss", "verl:kl-reward",
              "trl:grpo-k3-ratio", "trl:ppo-k1", "openrlhf:k1-reward", "openrlhf:k2-loss", "nemo-rl:k2-loss",
              "slime:k3-loss-unbiased", "slime:low_var_kl-loss-unbiased", "open-instruct:kl2-loss",
              "open-instruct:kl4-loss", "nemo-rl:k3-loss", "nemo-rl:k3-loss-on-policy", "nemo-rl:k1-loss"]
REVERSE_KL.remove("nemo-rl:k2-loss")
K3_LOSS = ["verl:low_var_kl-loss", "trl:grpo-k3", "openrlhf:k3-loss", "slime:low_var_kl-loss", "slime:k3-loss",
           "open-instruct:kl3-loss"]
ZERO_GRADIENT = ["verl:kl-loss", "open-instruct:kl1-loss"]
# Both gradient terms of k2 (NeMo-RL's weight of 1 with the gradient of a ratio): the gradient of E_q[k2].
EXPECTED_K2 = ["nemo-rl:k2-loss"]


def softmax(t):
    e = np.exp(np.asarray(t, dtype=np.float64) - np.max(t))
    return e / e.sum()


def tilt(ref, reward, beta):
    return softmax(np.asarray(ref) + np.asarray(reward) / beta)


def k3_loss_solution(ref, reward, beta):
    p = softmax(ref)
    reward = np.asarray(reward, dtype=np.float64)
    total = lambda lam: float(np.sum(beta * p / (beta - reward + lam))) - 1.0
    low = float(np.max(reward)) - beta
    lam = brentq(total, low + 1e-14 * max(1.0, abs(low)), low + 1e6, xtol=1e-15, rtol=1e-15)
    return beta * p / (beta - reward + lam)


def test_the_recipe_lists_cover_every_recipe():
    listed = set(REVERSE_KL) | set(K3_LOSS) | set(ZERO_GRADIENT) | set(EXPECTED_K2) | {
        "verl:abs-loss", "verl:low_var_kl-reward", "trl:ppo-k3"}
    assert listed == {r.name for r in trainer_recipes()}


@pytest.mark.parametrize("name", REVERSE_KL)
def test_reverse_kl_recipes_converge_to_the_exponential_tilt(name):
    solution = stationary_policy(name, REF, REWARD, BETA)
    np.testing.assert_allclose(solution.probs, tilt(REF, REWARD, BETA), rtol=1e-9)
    assert solution.stable


@pytest.mark.parametrize("name", K3_LOSS)
def test_k3_in_the_loss_converges_to_the_rational_solution(name):
    solution = stationary_policy(name, REF, REWARD, BETA)
    expected = k3_loss_solution(REF, REWARD, BETA)
    np.testing.assert_allclose(solution.probs, expected, rtol=1e-8)
    assert solution.stable
    # No clamp binds at this solution (k3 < 10, |log r| < 20), so clamped and unclamped recipes agree.
    L = np.log(softmax(REF)) - np.log(expected)
    assert np.all(np.expm1(L) - L < 10) and np.all(np.abs(L) < 20)


def test_k3_in_the_loss_has_a_heavier_tail_than_the_tilt():
    """For a token with a low reward, the rational solution keeps more mass than the tilt's e^{R/β}."""
    ref, reward, beta = np.zeros(4), np.array([0.0, -1.0, -2.0, -4.0]), 0.5
    rational = stationary_policy("trl:grpo-k3", ref, reward, beta).probs
    exponential = stationary_policy("trl:grpo-k3-ratio", ref, reward, beta).probs
    assert rational[-1] / rational[0] > 100 * exponential[-1] / exponential[0]
    np.testing.assert_allclose(rational, k3_loss_solution(ref, reward, beta), rtol=1e-8)


@pytest.mark.parametrize("recipe", [r for r in trainer_recipes() if r.name not in ZERO_GRADIENT + EXPECTED_K2 + [
                                    "verl:abs-loss", "verl:low_var_kl-reward", "trl:ppo-k3"]], ids=lambda r: r.name)
def test_the_expected_gradient_vanishes_at_the_solution(recipe):
    solution = stationary_policy(recipe, REF, REWARD, BETA)
    assert isinstance(solution, StationaryPolicy)
    q = solution.probs
    gradient = q * (REWARD - q @ REWARD) - BETA * expected_gradient(solution.log_probs, REF, recipe.estimator,
                                                                    recipe.gradient_use)
    assert np.max(np.abs(gradient)) < 1e-11
    assert solution.residual < 1e-9


def test_a_clamp_that_switches_the_gradient_off_removes_the_solution():
    """A token whose reward is far below the others: k3 in the loss holds it at q = βp/(β - R + λ) > 0; verl's
    clamp cuts the gradient where k3 > 10 (log r > 2.61), so nothing holds it and it runs to probability 0."""
    ref, reward, beta = np.zeros(3), np.array([0.0, 0.0, -20.0]), 1.0
    rational = stationary_policy("trl:grpo-k3", ref, reward, beta)
    expected = k3_loss_solution(ref, reward, beta)
    np.testing.assert_allclose(rational.probs, expected, rtol=1e-8)
    L = math.log(1 / 3) - math.log(expected[2])
    assert math.expm1(L) - L > 10     # where verl's clamp would bind
    with pytest.raises(ArithmeticError, match="no stationary policy with full support"):
        stationary_policy("verl:low_var_kl-loss", ref, reward, beta)
    with pytest.raises(ArithmeticError, match="explain=True says where training goes"):
        stationary_policy("verl:low_var_kl-loss", ref, reward, beta, explain=False)
    with pytest.raises(TypeError, match="explain must be True or False"):
        stationary_policy("verl:low_var_kl-loss", ref, reward, beta, explain="no")


@pytest.mark.parametrize("name", ZERO_GRADIENT)
def test_k1_in_the_loss_has_no_stationary_policy(name):
    with pytest.raises(ValueError, match="no stationary policy for non-constant rewards"):
        stationary_policy(name, REF, REWARD, BETA)
    constant = stationary_policy(name, REF, np.full(5, 0.3), BETA)   # every policy is stationary; q = p is one
    np.testing.assert_allclose(constant.probs, softmax(REF), rtol=1e-12)


def test_k3_as_a_reward_has_only_an_unstable_stationary_policy_here():
    """Score-only k3 follows KL(q‖p) - KL(p‖q): R_x - β k3(L_x) = λ has a solution for this reward (found
    here by choosing for each token the branch of k3(L) = t, L < 0 or L > 0, and solving Σ p e^{-L} = 1 in
    λ); Newton from the tilt and p misses it, training from p runs away from it, and started there klviz
    finds it and reports it unstable."""
    p = softmax(REF)

    def branch_root(t, sign):
        f = lambda L: math.expm1(L) - L - t
        return brentq(f, -t - 2.0, 0.0) if sign < 0 else brentq(f, 0.0, math.log(t + 2.0) + 1.0)

    branches = (1, 1, 1, -1, 1)

    def mass(lam):
        return sum(p[x] * math.exp(-branch_root((REWARD[x] - lam) / BETA, branches[x])) for x in range(5)) - 1.0

    lam = brentq(mass, REWARD.min() - 5.0, REWARD.min() - 1e-9)
    L = np.array([branch_root((REWARD[x] - lam) / BETA, branches[x]) for x in range(5)])
    point = np.log(p) - L
    with pytest.raises(ArithmeticError, match="unstable stationary point"):
        stationary_policy("trl:ppo-k3", REF, REWARD, BETA)
    solution = stationary_policy("trl:ppo-k3", REF, REWARD, BETA, start=point + 0.01 * np.sin(np.arange(5)))
    np.testing.assert_allclose(solution.probs, np.exp(point), rtol=1e-8)
    assert not solution.stable


def test_display():
    solution = stationary_policy("trl:grpo-k3", REF, REWARD, BETA)
    text = repr(solution)
    assert text.startswith("StationaryPolicy(recipe='trl:grpo-k3'") and "stable=True" in text
    assert "<table>" in solution._repr_html_()
    assert solution.kl_qp > 0 and solution.kl_pq > 0


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="beta must be positive"):
        stationary_policy("trl:grpo-k3", REF, REWARD, 0.0)
    with pytest.raises(TypeError, match="beta must be a real number"):
        stationary_policy("trl:grpo-k3", REF, REWARD, "1")
    with pytest.raises(ValueError, match="rewards must be one-dimensional with one reward per token"):
        stationary_policy("trl:grpo-k3", REF, REWARD[:3], BETA)
    with pytest.raises(ValueError, match="rewards must be finite"):
        stationary_policy("trl:grpo-k3", REF, np.r_[REWARD[:4], np.nan], BETA)
    with pytest.raises(TypeError, match="rewards must be an array of real numbers"):
        stationary_policy("trl:grpo-k3", REF, ["a"] * 5, BETA)
    with pytest.raises(ValueError, match="p_logits must be finite"):
        stationary_policy("trl:grpo-k3", np.r_[REF[:4], np.inf], REWARD, BETA)
    with pytest.raises(ValueError, match="p_logits must have at least 2 tokens"):
        stationary_policy("trl:grpo-k3", [0.0], [1.0], BETA)
    with pytest.raises(ValueError, match="recipe must be one of"):
        stationary_policy("trl:grpo-k9", REF, REWARD, BETA)
    with pytest.raises(ValueError, match="start must have one logit per token"):
        stationary_policy("trl:grpo-k3", REF, REWARD, BETA, start=[0.0, 1.0])
    with pytest.raises(ValueError, match="tol must be positive"):
        stationary_policy("trl:grpo-k3", REF, REWARD, BETA, tol=0.0)
    with pytest.raises(ValueError, match="max_iterations must be at least 1"):
        stationary_policy("trl:grpo-k3", REF, REWARD, BETA, max_iterations=0)
    assert get_trainer_recipe("trl:grpo-k3").gradient_use == "loss"


def expected_k2_branch(ref, reward, beta):
    """Both gradient terms of k2 (c = k2 - k2' = L²/2 - L): R_x - β(L_x²/2 - L_x) = λ, so on the branch through
    L = 0, L_x = 1 - sqrt(1 + 2(R_x - λ)/β) and q_x(λ) = p_x e^{-L_x}, real for λ ≤ min R + β/2 and decreasing
    in λ. Returns q(λ) and that largest λ: (the test below says when a root exists)."""
    p = softmax(ref)
    reward = np.asarray(reward, dtype=np.float64)

    def q_of(lam):
        return p * np.exp(-(1.0 - np.sqrt(1.0 + 2.0 * (reward - lam) / beta)))

    return q_of, float(np.min(reward)) + beta / 2.0


@pytest.mark.parametrize("name", EXPECTED_K2)
def test_k2_with_both_gradient_terms_converges_to_its_own_solution_or_to_none(name):
    """Σ q(λ) decreases from ∞ (λ → -∞) to Σ q(λ_max): one root when Σ q(λ_max) ≤ 1, none otherwise. Then the
    lowest-reward token cannot be held (β c ≥ -β/2 bounds the push up) and its probability runs to 0."""
    q_of, high = expected_k2_branch(REF, REWARD, 1.0)
    assert float(np.sum(q_of(high))) < 1.0
    lam = brentq(lambda lam: float(np.sum(q_of(lam))) - 1.0, high - 1e3, high, xtol=1e-15, rtol=1e-15)
    solution = stationary_policy(name, REF, REWARD, 1.0)
    np.testing.assert_allclose(solution.probs, q_of(lam), rtol=1e-8)
    assert solution.stable
    assert np.max(np.abs(q_of(lam) / tilt(REF, REWARD, 1.0) - 1)) > 0.01   # not the tilt
    q_small, high_small = expected_k2_branch(REF, REWARD, BETA)
    assert float(np.sum(q_small(high_small))) > 1.0                        # no root at β = 0.5
    with pytest.raises(ArithmeticError, match="no stationary policy with full support"):
        stationary_policy(name, REF, REWARD, BETA)


def test_a_clamped_k3_loss_finds_the_rational_solution_where_the_tilt_lies_beyond_the_clamp():
    """β = 0.3: the tilt puts k3 = 921 on the lowest-reward token (the clamp's flat region, no gradient), the rational
    solution only 5.4, inside the clamp: Newton must start there to find it."""
    ref, reward, beta = np.array([1.2, 0.6, 0.1, -0.4, -1.0, -1.8]), np.array([0.0, 0.4, 1.0, -0.5, 0.8, -1.5]), 0.3
    expected = k3_loss_solution(ref, reward, beta)
    L = np.log(softmax(ref)) - np.log(expected)
    assert np.max(np.expm1(L) - L) < 10
    L_tilt = np.log(softmax(ref)) - np.log(tilt(ref, reward, beta))
    assert np.max(np.expm1(L_tilt) - L_tilt) > 10
    solution = stationary_policy("verl:low_var_kl-loss", ref, reward, beta, explain=False)
    np.testing.assert_allclose(solution.probs, expected, rtol=1e-8)
