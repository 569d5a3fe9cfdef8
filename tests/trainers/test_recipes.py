r"""Tests for klviz.trainers.recipes: every recipe against its framework's formula, written out here in numpy.

Each upstream formula below is transcribed from the file the recipe cites, in the code's own variables
and operation order (``logprob``, ``ref_logprob``, ``old_logprob``; torch.clamp = np.clip), as the
*surrogate* the code hands to autodiff: a detached tensor is the value at the point of evaluation
(``logprob0``), so the gradient the code gets is the derivative of the surrogate in ``logprob`` at
``logprob = logprob0``, taken here by central differences. A reward is a detached per-token value
entering the policy-gradient surrogate ``sg[k]·exp(logprob - logprob0)``. None of this calls klviz.

Derivatives: the per-token gradient can be a small difference of huge terms (ρ·k3 at log r = 39: e^39 -
e^39 + 39), so the surrogate is differentiated in 60-digit mpmath arithmetic (step 1e-25), at points
at least 1e-3 from the clamps' corners; the comparison is to 1e-9 relative.
"""

import math

import mpmath
import numpy as np
import pytest

import klviz
from klviz.gradients import expected_gradient, get_use
from klviz.gradients.softmax import coefficients
from klviz.trainers import FRAMEWORKS, get_trainer_recipe, trainer_recipes

RECIPES = trainer_recipes()
NAMES = [r.name for r in RECIPES]


# --- the frameworks' formulas, transcribed ----------------------------------------------------------


def verl_forward(xp, logprob, ref_logprob, kl_penalty):
    """verl core_algos.kl_penalty_forward."""
    if kl_penalty in ("kl", "k1"):
        return logprob - ref_logprob
    if kl_penalty == "abs":
        return xp.abs(logprob - ref_logprob)
    if kl_penalty in ("mse", "k2"):
        return 0.5 * xp.square(logprob - ref_logprob)
    if kl_penalty in ("low_var_kl", "k3"):
        kl = ref_logprob - logprob
        kl = xp.clip(kl, -20, 20)
        ratio = xp.exp(kl)
        kld = ratio - kl - 1
        return xp.clip(kld, -10, 10)
    raise NotImplementedError(kl_penalty)


def verl_kl_penalty(kl_penalty):
    """verl core_algos.kl_penalty: the '+' straight-through (backward - backward.detach() + forward.detach())."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        base = kl_penalty[:-1] if kl_penalty.endswith("+") else kl_penalty
        if not kl_penalty.endswith("+") or kl_penalty in ("mse", "k2"):
            return verl_forward(xp, logprob, ref_logprob, base)
        backward = 0.5 * xp.square(logprob - ref_logprob)
        backward_detached = 0.5 * xp.square(logprob0 - ref_logprob)
        return backward - backward_detached + verl_forward(xp, logprob0, ref_logprob, base)

    return surrogate


def as_reward(value):
    """A detached per-token reward in the policy-gradient surrogate sg[k]·exp(log q - sg[log q])."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        return value(xp, logprob0, ref_logprob) * xp.exp(logprob - logprob0)

    return surrogate


def trl_grpo(bias_correction):
    """trl GRPOTrainer._compute_loss: per_token_kl, optionally times coef_1 = exp(logp - old_logp)."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        per_token_kl = xp.exp(ref_logprob - logprob) - (ref_logprob - logprob) - 1
        if bias_correction:
            coef_1 = xp.exp(logprob - old_logprob)
            per_token_kl = per_token_kl * coef_1
        return per_token_kl

    return surrogate


def trl_ppo(kl_estimator):
    """trl experimental PPOTrainer.train, step 4: logr = ref - logprob; kl = -logr or (e^logr - 1) - logr."""

    def value(xp, logprob, ref_logprob):
        logr = ref_logprob - logprob
        return -logr if kl_estimator == "k1" else (xp.exp(logr) - 1) - logr

    return as_reward(value)


def openrlhf(kl_estimator):
    """OpenRLHF models/utils.compute_approx_kl (float cast, then the ±10 clamp on every estimator)."""

    def value(xp, logprob, ref_logprob):
        log_ratio = logprob - ref_logprob   # log_probs.float() - log_probs_base.float(): exact in float64
        if kl_estimator == "k2":
            log_ratio = log_ratio**2 / 2.0
        if kl_estimator == "k3":
            log_ratio = -log_ratio
            log_ratio = xp.exp(log_ratio) - 1 - log_ratio
        return xp.clip(log_ratio, -10, 10)

    return value


def nemo_loss(kl_type, on_policy_weight, input_clamp_value=20.0, output_clamp_value=10.0):
    """NeMo-RL ClippedPGLossFn (after NVIDIA-NeMo/RL#2506 and #2958): kl_importance_weights =
    exp(curr - generation) (use_on_policy_kl_approximation) or exp(curr - curr.detach()), then calculate_kl with
    importance_sampling_weights: log r clamped (the weight detached where it binds), k times the weight, clamped."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        if on_policy_weight:
            weight, detached = xp.exp(logprob - old_logprob), xp.exp(logprob0 - old_logprob)
        else:
            weight, detached = xp.exp(logprob - logprob0), xp.exp(logprob0 - logprob0)
        logr = ref_logprob - logprob
        clamped = xp.clip(logr, -input_clamp_value, input_clamp_value)
        weight = xp.where(logr == clamped, weight, detached)
        if kl_type == "k1":
            kl = -clamped
        elif kl_type == "k2":
            kl = xp.square(clamped) / 2
        else:
            kl = xp.exp(clamped) - 1 - clamped
        return xp.clip(weight * kl, -output_clamp_value, output_clamp_value)

    return surrogate


def slime(kl_loss_type, unbiased):
    """slime utils/ppo_utils.compute_approx_kl, importance_ratio = exp(log_probs - old_log_probs) if unbiased."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        log_ratio = logprob - ref_logprob
        log_ratio = -log_ratio
        kl = xp.exp(log_ratio) - 1 - log_ratio
        if unbiased:
            kl = xp.exp(logprob - old_logprob) * kl
        if kl_loss_type == "low_var_kl":
            kl = xp.clip(kl, -10, 10)
        return kl

    return surrogate


def open_instruct(index):
    """open-instruct: ref_logprobs_diff = (new - ref).clamp(-40, 40); model_utils.estimate_kl()[index]."""

    def surrogate(xp, logprob, logprob0, ref_logprob, old_logprob):
        ref_logprobs_diff = xp.clip(logprob - ref_logprob, -40.0, 40.0)
        ratio = xp.exp(logprob - old_logprob)
        return [ref_logprobs_diff, ref_logprobs_diff**2 / 2, xp.expm1(-ref_logprobs_diff) + ref_logprobs_diff,
                ratio * ref_logprobs_diff][index]

    return surrogate


def _unweighted(value):
    return lambda xp, logprob, logprob0, ref_logprob, old_logprob: value(xp, logprob, ref_logprob)


class MP:
    """The array functions the formulas use, on mpmath numbers (50-digit arithmetic for derivatives)."""

    exp = staticmethod(mpmath.exp)
    expm1 = staticmethod(mpmath.expm1)
    abs = staticmethod(abs)

    @staticmethod
    def where(condition, a, b):
        return a if condition else b

    @staticmethod
    def clip(x, lo, hi):
        return min(max(x, lo), hi)

    @staticmethod
    def square(x):
        return x * x


UPSTREAM = {
    "verl:kl-loss": verl_kl_penalty("kl"),
    "verl:abs-loss": verl_kl_penalty("abs"),
    "verl:mse-loss": verl_kl_penalty("mse"),
    "verl:low_var_kl-loss": verl_kl_penalty("low_var_kl"),
    "verl:k1+-loss": verl_kl_penalty("k1+"),
    "verl:abs+-loss": verl_kl_penalty("abs+"),
    "verl:low_var_kl+-loss": verl_kl_penalty("low_var_kl+"),
    "verl:kl-reward": as_reward(lambda xp, lp, ref: verl_forward(xp, lp, ref, "kl")),
    "verl:low_var_kl-reward": as_reward(lambda xp, lp, ref: verl_forward(xp, lp, ref, "low_var_kl")),
    "trl:grpo-k3": trl_grpo(False),
    "trl:grpo-k3-ratio": trl_grpo(True),
    "trl:ppo-k1": trl_ppo("k1"),
    "trl:ppo-k3": trl_ppo("k3"),
    "openrlhf:k1-reward": as_reward(openrlhf("k1")),
    "openrlhf:k2-loss": _unweighted(openrlhf("k2")),
    "openrlhf:k3-loss": _unweighted(openrlhf("k3")),
    "nemo-rl:k3-loss": nemo_loss("k3", False),
    "nemo-rl:k3-loss-on-policy": nemo_loss("k3", True),
    "nemo-rl:k1-loss": nemo_loss("k1", False),
    "nemo-rl:k2-loss": nemo_loss("k2", False),
    "slime:low_var_kl-loss": slime("low_var_kl", False),
    "slime:k3-loss": slime("k3", False),
    "slime:low_var_kl-loss-unbiased": slime("low_var_kl", True),
    "slime:k3-loss-unbiased": slime("k3", True),
    "open-instruct:kl1-loss": open_instruct(0),
    "open-instruct:kl2-loss": open_instruct(1),
    "open-instruct:kl3-loss": open_instruct(2),
    "open-instruct:kl4-loss": open_instruct(3),
}

# What each recipe's formula is before any clamp (to tell where a clamp binds).
UNCLAMPED_BASE = {"verl:low_var_kl-loss": "k3", "verl:low_var_kl+-loss": "k3", "verl:low_var_kl-reward": "k3",
                  "openrlhf:k1-reward": "k1", "openrlhf:k2-loss": "k2", "openrlhf:k3-loss": "k3",
                  "nemo-rl:k3-loss": "k3", "nemo-rl:k3-loss-on-policy": "k3", "nemo-rl:k1-loss": "k1",
                  "nemo-rl:k2-loss": "k2", "slime:low_var_kl-loss": "k3", "slime:low_var_kl-loss-unbiased": "k3",
                  "open-instruct:kl1-loss": "k1", "open-instruct:kl2-loss": "k2", "open-instruct:kl3-loss": "k3",
                  "open-instruct:kl4-loss": "k1"}


def plain(base, L):
    return {"k1": -L, "k2": 0.5 * L * L, "k3": np.exp(L) - 1 - L}[base]


LOGQ0 = -1.3
GRID = np.array([-60.0, -45.0, -39.9, -25.0, -19.5, -14.0, -11.5, -10.5, -6.0, -3.0, -0.7, -0.05, -1e-3,
                 2e-3, 0.04, 0.4, 1.1, 2.0, 2.5, 2.7, 3.5, 4.0, 4.6, 5.0, 9.5, 10.5, 15.0, 19.8, 21.0, 39.0,
                 41.0, 45.0, 60.0])


def upstream_value(name, L, old_offset=0.0):
    logprob = np.full_like(L, LOGQ0)
    return UPSTREAM[name](np, logprob, logprob, logprob + L, logprob - old_offset)


def upstream_coefficient(name, L):
    """d surrogate / d logprob at logprob = logprob0 (the per-sample gradient is this times ∇ log q), by a
    central difference in 60-digit arithmetic with step 1e-25 (truncation and rounding both < 1e-20 relative)."""
    f = UPSTREAM[name]
    out = []
    with mpmath.workdps(60):
        h = mpmath.mpf("1e-25")
        for x in L:
            logprob0 = mpmath.mpf(LOGQ0)
            ref = logprob0 + mpmath.mpf(float(x))
            diff = (f(MP, logprob0 + h, logprob0, ref, logprob0) - f(MP, logprob0 - h, logprob0, ref, logprob0)) / (2 * h)
            out.append(float(diff))
    return np.array(out)


def away_from_kinks(recipe, L, margin=1e-3):
    kinks = np.array(recipe.estimator.kinks)
    if kinks.size == 0:
        return np.ones(L.shape, dtype=bool)
    return np.min(np.abs(L[:, None] - kinks[None, :]), axis=1) > margin


def klviz_coefficient(recipe, L):
    """The per-sample coefficient klviz's gradients use: s·k - d·k' (formed from the exact form where there is one)."""
    use = get_use(recipe.gradient_use)
    return coefficients(recipe.estimator, np.zeros_like(L), L, use.score, use.pathwise)


# --- the catalogue -------------------------------------------------------------------------------------


def test_every_recipe_has_an_upstream_formula_here_and_every_framework_is_covered():
    assert sorted(UPSTREAM) == sorted(NAMES)
    assert len(set(NAMES)) == len(NAMES)
    assert {r.framework for r in RECIPES} == set(FRAMEWORKS)


def test_the_settings_the_issue_names_are_covered():
    by_name = {r.name: r for r in RECIPES}
    for name in ("verl:kl-loss", "verl:abs-loss", "verl:mse-loss", "verl:low_var_kl-loss", "verl:k1+-loss",
                 "verl:abs+-loss", "verl:low_var_kl+-loss", "verl:kl-reward", "trl:grpo-k3", "trl:grpo-k3-ratio",
                 "trl:ppo-k1", "trl:ppo-k3", "openrlhf:k1-reward", "openrlhf:k2-loss", "openrlhf:k3-loss",
                 "nemo-rl:k3-loss", "nemo-rl:k3-loss-on-policy", "slime:low_var_kl-loss",
                 "slime:low_var_kl-loss-unbiased", "open-instruct:kl3-loss"):
        assert name in by_name
    assert by_name["verl:low_var_kl-loss"].log_ratio_clamp == 20.0
    assert by_name["verl:low_var_kl-loss"].value_clamp == 10.0
    assert by_name["verl:kl-reward"].use == "reward" and by_name["verl:kl-loss"].use == "loss"
    assert by_name["trl:grpo-k3-ratio"].weighting == "ratio"
    assert by_name["nemo-rl:k3-loss-on-policy"].weighting == "ratio"
    assert by_name["nemo-rl:k3-loss"].weighting == "unit_ratio"
    assert "--use-unbiased-kl" in by_name["slime:low_var_kl-loss-unbiased"].option


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_each_record_says_where_it_was_read(recipe):
    source = recipe.source
    assert "/" in source.repository and source.path.endswith(".py") and source.function
    assert source.read == "2026-12-02"
    assert source.url.startswith(f"https://github.com/{source.repository}/blob/")
    assert recipe.option and recipe.aggregation and recipe.precision
    assert recipe.estimator.name == recipe.name and recipe.estimator.target == "kl_qp"
    text = repr(recipe)
    assert recipe.name in text and recipe.gradient_use in text
    assert "<table>" in recipe._repr_html_()


# --- value and derivative against the upstream formulas --------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_value_is_the_upstream_formula(recipe):
    with np.errstate(over="ignore", invalid="ignore"):
        expected = upstream_value(recipe.name, GRID)
    got = np.asarray(recipe.estimator.value(GRID), dtype=np.float64)
    # The naive upstream arithmetic rounds at ~1e-16 absolute near L = 0 (klviz's k3 does not).
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_gradient_is_the_upstream_autodiff_gradient(recipe):
    L = GRID[away_from_kinks(recipe, GRID)]
    expected = upstream_coefficient(recipe.name, L)
    got = klviz_coefficient(recipe, L)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.use == "loss" and r.weighting == "none"],
                         ids=lambda r: r.name)
def test_derivative_is_minus_the_upstream_derivative_in_logprob(recipe):
    """For an unweighted loss the pathwise derivative in log r is -d(loss)/d logprob (log r = ref - logprob)."""
    L = GRID[away_from_kinks(recipe, GRID)]
    expected = -upstream_coefficient(recipe.name, L)
    np.testing.assert_allclose(np.asarray(recipe.estimator.derivative(L)), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_float32_input_keeps_its_dtype_and_scalars_stay_scalars(recipe):
    out = recipe.estimator.value(np.array([0.5, -2.0], dtype=np.float32))
    assert out.dtype == np.float32
    scalar = recipe.estimator.derivative(0.25)
    assert np.ndim(scalar) == 0


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.weighting in ("ratio", "stopped_ratio")],
                         ids=lambda r: r.name)
def test_penalty_with_an_older_policy_is_the_upstream_weighted_value(recipe):
    L = np.array([-12.0, -3.0, -0.4, 0.3, 1.5, 2.5, 4.0])
    logprob = np.full_like(L, LOGQ0)
    for offset in (-0.7, 0.0, 0.9):  # log q - log mu
        expected = UPSTREAM[recipe.name](np, logprob, logprob, logprob + L, logprob - offset)
        got = recipe.penalty(logprob, logprob + L, old_logp=logprob - offset)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.weighting in ("none", "unit_ratio")], ids=lambda r: r.name)
def test_penalty_on_policy_is_the_upstream_value(recipe):
    logprob = np.full_like(GRID, LOGQ0)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = upstream_value(recipe.name, GRID)
    np.testing.assert_allclose(recipe.penalty(logprob, logprob + GRID), expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", sorted(UNCLAMPED_BASE))
def test_clamp_hits_are_where_the_upstream_value_differs_from_the_unclamped_formula(name):
    recipe = get_trainer_recipe(name)
    L = GRID
    logprob = np.full_like(L, LOGQ0)
    with np.errstate(over="ignore", invalid="ignore"):
        clamped = upstream_value(name, L)
        weight = np.exp(logprob - logprob)  # on-policy
        if name.startswith("verl:low_var_kl+"):
            clamped = verl_forward(np, logprob, logprob + L, "low_var_kl")
        unclamped = weight * plain(UNCLAMPED_BASE[name], L)
        if name == "open-instruct:kl4-loss":
            unclamped = -L
    expected = ~np.isclose(clamped, unclamped, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(recipe.clamp_hits(logprob, logprob + L), expected)


def test_slime_unbiased_clamp_acts_on_the_weighted_value():
    recipe = get_trainer_recipe("slime:low_var_kl-loss-unbiased")
    logprob, ref = np.array([-1.0]), np.array([-1.0 + 2.3])   # k3(2.3) = 5.67
    assert not recipe.clamp_hits(logprob, ref, old_logp=logprob)[0]
    assert recipe.clamp_hits(logprob, ref, old_logp=logprob - 1.0)[0]     # ρ = e: ρ·k3 = 15.4 > 10
    assert recipe.penalty(logprob, ref, old_logp=logprob - 1.0)[0] == 10.0


def test_verl_log_ratio_clamp_never_binds_before_the_value_clamp():
    """The note's claim: clip(k3(clip(L, ±20)), ±10) = min(k3(L), 10), value and gradient, for every L."""
    L = np.linspace(-80, 80, 40001)
    recipe = get_trainer_recipe("verl:low_var_kl-loss")
    with np.errstate(over="ignore"):
        direct = np.minimum(np.exp(L) - 1 - L, 10.0)
        direct_derivative = np.where(np.exp(L) - 1 - L <= 10.0, np.expm1(L), 0.0)
    np.testing.assert_allclose(recipe.estimator.value(L), direct, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(recipe.estimator.derivative(L), direct_derivative, rtol=1e-12, atol=1e-14)
    assert recipe.estimator.value(np.array([-np.inf, np.inf])).tolist() == [10.0, 10.0]
    assert recipe.estimator.derivative(np.array([-np.inf, np.inf])).tolist() == [0.0, 0.0]


def test_k3_clamp_corners_are_the_roots_of_k3_equals_10():
    import mpmath

    corners = get_trainer_recipe("openrlhf:k3-loss").estimator.kinks
    for corner, guess in zip(corners, (-11.0, 2.6)):
        root = mpmath.findroot(lambda x: mpmath.e**x - 1 - x - 10, guess)
        assert abs(corner - float(root)) < 1e-12


# --- the rest of klviz works on every recipe's Estimator ----------------------------------------------

# Log-ratios from -13.6 to 3.9: the k3 clamp (k3 = 10 at -11.0 and 2.61) binds on two tokens.
CATEGORICAL = klviz.CategoricalPair(p_logits=[0.0, 1.0, -12.0, 3.0, -2.0, 0.5],
                                    q_logits=[0.0, 0.0, 0.0, -2.5, 0.0, 0.0])


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_exact_moments_on_a_categorical_pair_are_the_direct_sums(recipe):
    L = CATEGORICAL.log_p - CATEGORICAL.log_q
    q = np.exp(CATEGORICAL.log_q)
    with np.errstate(over="ignore", invalid="ignore"):
        values = upstream_value(recipe.name, L)
    mean = float(np.sum(q * values))
    var = float(np.sum(q * (values - mean) ** 2))
    moments = klviz.exact_moments(CATEGORICAL, recipe.estimator)
    assert moments.mean == pytest.approx(mean, rel=1e-12)
    assert moments.var == pytest.approx(var, rel=1e-10)


GAUSSIAN = klviz.GaussianPair(mu_p=1.0, sigma_p=1.2)   # σ_p² < 2σ_q²: every variance finite


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_exact_moments_on_a_gaussian_pair_match_monte_carlo(recipe):
    moments = klviz.exact_moments(GAUSSIAN, recipe.estimator)
    assert math.isfinite(moments.mean) and math.isfinite(moments.var) and moments.var > 0
    estimate = klviz.simulate(GAUSSIAN, 200_000, rng=7, estimators=(recipe.estimator,))[recipe.name]
    assert abs(estimate.mean - moments.mean) < 5 * estimate.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_expected_gradient_is_the_derivative_of_the_expected_upstream_surrogate(recipe):
    """∑_x q0_x · surrogate_x(log q_θ(x)) with q0 = q_θ0 fixed (the tokens do not move), differentiated in θ."""
    theta0 = np.array([0.3, -0.4, 0.1, 0.6])
    ref_logits = np.array([-0.2, 0.5, 1.9, -3.1])   # log r from -3.5 to 1.8 (k3 below 10: no clamp corner)

    def log_softmax(t):
        return t - t.max() - math.log(np.sum(np.exp(t - t.max())))

    logq0 = log_softmax(theta0)
    ref = log_softmax(ref_logits)
    q0 = np.exp(logq0)

    def expected_surrogate(theta):
        return float(np.sum(q0 * UPSTREAM[recipe.name](np, log_softmax(theta), logq0, ref, logq0)))

    h = 1e-5
    finite_difference = np.array([(expected_surrogate(theta0 + h * e) - expected_surrogate(theta0 - h * e)) / (2 * h)
                                  for e in np.eye(4)])
    got = expected_gradient(theta0, ref_logits, recipe.estimator, recipe.gradient_use)
    np.testing.assert_allclose(got, finite_difference, rtol=1e-7, atol=1e-9)


def test_epoch_use_of_an_unweighted_loss_is_no_ratio_and_rewards_have_none():
    assert get_trainer_recipe("verl:low_var_kl-loss").epoch_use == "no_ratio_loss"
    assert get_trainer_recipe("trl:grpo-k3-ratio").epoch_use == "ratio_loss"
    assert get_trainer_recipe("nemo-rl:k3-loss-on-policy").epoch_use == "ratio_loss"
    unit = get_trainer_recipe("nemo-rl:k3-loss").epoch_use
    assert (unit.score, unit.pathwise, unit.off_policy, unit.reweighted) == (True, True, True, False)
    assert get_trainer_recipe("trl:ppo-k1").epoch_use is None


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="framework must be one of"):
        trainer_recipes("deepspeed-chat")
    with pytest.raises(TypeError, match="framework must be a string"):
        trainer_recipes(3)
    with pytest.raises(ValueError, match="recipe must be one of"):
        get_trainer_recipe("verl:k9")
    with pytest.raises(TypeError, match="recipe must be a TrainerRecipe or a name"):
        get_trainer_recipe(None)
    recipe = get_trainer_recipe("verl:low_var_kl-loss")
    with pytest.raises(ValueError, match="logr contains NaN"):
        recipe.estimator.value(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="logr must be a real number"):
        recipe.estimator.derivative(np.array(["a"]))
    with pytest.raises(ValueError, match="same shape"):
        recipe.penalty([-1.0, -2.0], [-1.0])
    with pytest.raises(ValueError, match="old_logp is only used by recipes weighted by q/mu"):
        recipe.penalty([-1.0], [-1.0], old_logp=[-1.0])
    with pytest.raises(ValueError, match="weighting 'unit_ratio'"):
        get_trainer_recipe("nemo-rl:k3-loss").penalty([-1.0], [-1.0], old_logp=[-1.0])
    with pytest.raises(ValueError, match="logp must be finite"):
        recipe.penalty([-np.inf], [-1.0])
    with pytest.raises(TypeError, match="ref_logp must be an array of real numbers"):
        recipe.clamp_hits([-1.0], [True])
    with pytest.raises(ValueError, match="old_logp must have the shape"):
        get_trainer_recipe("trl:grpo-k3-ratio").penalty([-1.0], [-1.0], old_logp=[-1.0, -2.0])
