r"""Tests for klviz.trainers.floating: the recipes' code in low precision, forward and backward.

* float64: the transcriptions give the frameworks' formulas (tests/trainers/test_recipes.py's UPSTREAM, written
  independently) and their autodiff gradients (the exact coefficients, themselves tested against 60-digit
  differences of UPSTREAM);
* rounding and exp: against references built here — the two neighbouring floats found with numpy's nextafter (or
  bfloat16's bit pattern) and the nearer chosen in 50-digit mpmath arithmetic;
* float32 arithmetic: against numpy's float32 operations (IEEE, correctly rounded) fed with that reference exp;
* the overflow and NaN cases the notebook reports, one by one.
"""

import math

import mpmath
import numpy as np
import pytest

from klviz import round_to_bfloat16
from klviz.trainers import get_trainer_recipe, trainer_recipes
from klviz.trainers.floating import FLOAT_FORMATS, _exp, _expm1, _round, recipe_in_precision
from tests.trainers.test_recipes import GRID, LOGQ0, UPSTREAM, away_from_kinks
from tests.trainers.test_gradients import REWARD_VALUES

RECIPES = trainer_recipes()
NAMES = [r.name for r in RECIPES]


# --- float64: the transcriptions are the frameworks' formulas -------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_float64_values_are_the_upstream_formula(name):
    logprob = np.full_like(GRID, LOGQ0)
    result = recipe_in_precision(name, logprob, logprob + GRID, "float64")
    with np.errstate(over="ignore", invalid="ignore"):
        if name in REWARD_VALUES:
            expected = REWARD_VALUES[name](np, logprob, logprob + GRID)
        else:
            expected = UPSTREAM[name](np, logprob, logprob, logprob + GRID, logprob)
    np.testing.assert_allclose(result.value, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_float64_gradients_are_the_autodiff_gradients(name):
    recipe = get_trainer_recipe(name)
    L = GRID[away_from_kinks(recipe, GRID)]
    L = L[np.abs(L) < 40]               # float64 exp(±40) keeps k3 - k3' to ~1e-16 relative
    logprob = np.full_like(L, LOGQ0)
    result = recipe_in_precision(name, logprob, logprob + L, "float64")
    np.testing.assert_allclose(result.gradient, recipe.gradient_coefficient(result.log_ratio), rtol=1e-9, atol=1e-9)


# --- correct rounding --------------------------------------------------------------------------------------------

def neighbours(x: float, precision: str) -> tuple[float, float]:
    """The two floats of ``precision`` around x (normal range): multiples of the spacing 2^(e - bits) below and
    above, by floor (exact in float64); for float32 also cross-checked with numpy's nextafter."""
    bits = FLOAT_FORMATS[precision][0]
    _, exponent = math.frexp(x)
    spacing = 2.0 ** (exponent - bits)
    lower = math.floor(x / spacing) * spacing
    upper = lower if lower == x else lower + spacing
    if precision == "float32" and lower != upper:
        assert float(np.nextafter(np.float32(lower), np.float32(np.inf))) == upper
    return lower, upper


def nearest(exact: mpmath.mpf, lower: float, upper: float, precision: str) -> float:
    if lower == upper:
        return lower
    d_lower, d_upper = abs(exact - mpmath.mpf(lower)), abs(mpmath.mpf(upper) - exact)
    if d_lower != d_upper:
        return lower if d_lower < d_upper else upper
    bits = FLOAT_FORMATS[precision][0]
    mantissa, _ = math.frexp(lower)
    return lower if int(abs(mantissa) * 2**bits) % 2 == 0 else upper   # ties to the even last bit


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_rounding_is_to_nearest_even(precision, rng):
    values = np.concatenate([rng.normal(size=400) * 10.0 ** rng.integers(-30, 30, size=400), [1 + 2**-8, 1 + 3 * 2**-8]])
    got = _round(values, precision)
    if precision == "float32":
        np.testing.assert_array_equal(got, values.astype(np.float32).astype(np.float64))
    else:
        exact32 = values.astype(np.float32)    # bfloat16 of a float32-exact value: one rounding
        np.testing.assert_array_equal(_round(exact32.astype(np.float64), precision), round_to_bfloat16(exact32))
    assert _round(np.array([3.5e38, -1e39]), "float32").tolist() == [np.inf, -np.inf]
    assert np.isnan(_round(np.array([np.nan]), precision)[0])


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_exp_and_expm1_are_correctly_rounded(precision, rng):
    x = np.concatenate([rng.uniform(-80, 80, 300), rng.uniform(-1e-3, 1e-3, 100), rng.uniform(-1, 1, 100)])
    x = _round(x, precision)
    with mpmath.workdps(50):
        for function, reference in ((_exp, mpmath.exp), (_expm1, mpmath.expm1)):
            got = function(x, precision)
            want = [nearest(reference(mpmath.mpf(v)), *neighbours(float(reference(mpmath.mpf(v))), precision), precision)
                    for v in x]
            np.testing.assert_array_equal(got, want)


def test_exp_near_a_midpoint_is_decided_exactly():
    """x = log(1 + 2^-8 + 2^-40) in bfloat16 terms: e^x is just above the midpoint between 1 and 1 + 2^-7."""
    with mpmath.workdps(50):
        x = float(mpmath.log(1 + mpmath.mpf(2) ** -8 + mpmath.mpf(2) ** -40))
        above = mpmath.exp(mpmath.mpf(x)) > 1 + mpmath.mpf(2) ** -8
    assert _exp(np.array([x]), "bfloat16")[0] == (1 + 2**-7 if above else 1.0)


# --- float32 arithmetic against numpy's own float32 operations --------------------------------------------------

def reference_exp32(x32):
    with mpmath.workdps(50):
        out = []
        for v in x32:
            if math.isinf(float(v)):
                out.append(np.inf if v > 0 else 0.0)
                continue
            e = mpmath.exp(mpmath.mpf(float(v)))
            if e > mpmath.mpf(float(np.finfo(np.float32).max)) * (1 + mpmath.mpf(2) ** -25):
                out.append(np.inf)
                continue
            out.append(nearest(e, *neighbours(float(e), "float32"), "float32"))
    return np.array(out, dtype=np.float32)


LOW = np.array([-12.0, -3.0, -0.4, -1e-3, -3e-6, 2e-7, 5e-5, 0.03, 0.9, 2.5, 9.0, 30.0])


def test_trl_k3_in_float32_is_numpy_float32_arithmetic():
    logprob = np.full(LOW.size, -2.0, dtype=np.float32)
    ref = (logprob + LOW.astype(np.float32)).astype(np.float32)
    result = recipe_in_precision("trl:grpo-k3", logprob, ref, "float32")
    d = ref - logprob                                   # float32 subtraction
    e = reference_exp32(d)
    with np.errstate(over="ignore"):
        value = (e - d) - np.float32(1)
        gradient = np.float32(1) - e                   # backward: -e from exp(ref - logp), +1 from -(ref - logp)
    np.testing.assert_array_equal(result.value, value.astype(np.float64))
    np.testing.assert_array_equal(result.gradient, gradient.astype(np.float64))


def test_openrlhf_k3_in_float32_is_numpy_float32_arithmetic():
    logprob = np.full(LOW.size, -2.0, dtype=np.float32)
    ref = (logprob + LOW.astype(np.float32)).astype(np.float32)
    result = recipe_in_precision("openrlhf:k3-loss", logprob, ref, "float32")
    log_ratio = -(logprob - ref)
    e = reference_exp32(log_ratio)
    value = np.clip((e - np.float32(1)) - log_ratio, -10, 10)
    np.testing.assert_array_equal(result.value, value.astype(np.float64))


def test_bfloat16_inputs_are_rounded_and_cast_recipes_compute_in_float32():
    result = recipe_in_precision("openrlhf:k3-loss", [-2.3], [-2.31], "bfloat16")
    assert result.compute == "float32" and result.precision == "bfloat16"
    assert result.log_ratio[0] == float(round_to_bfloat16(np.float32(-2.31))) - float(round_to_bfloat16(np.float32(-2.3)))
    assert recipe_in_precision("verl:low_var_kl-loss", [-2.3], [-2.31], "bfloat16").compute == "bfloat16"


# --- overflow and NaN -------------------------------------------------------------------------------------------

def at(name, log_ratio, precision="float32"):
    logprob = np.array([-np.inf if log_ratio == np.inf else -abs(log_ratio) if log_ratio > 0 else -1.0])
    ref = np.array([-np.inf if log_ratio == -np.inf else 0.0 if log_ratio > 0 else -1.0 + log_ratio])
    result = recipe_in_precision(name, logprob, ref, precision)
    return float(result.value[0]), float(result.gradient[0])


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("name, log_ratio, value, gradient", [
    ("openrlhf:k3-loss", 100.0, 10.0, math.nan),          # the clamp cuts exp's inf, backward 0·inf
    ("slime:low_var_kl-loss", 100.0, 10.0, math.nan),
    ("verl:low_var_kl-loss", 100.0, 10.0, 0.0),           # log r clamped to 20 before exp: e^20 is finite
    ("nemo-rl:k3-loss", 100.0, 10.0, 0.0),
    ("trl:grpo-k3", 100.0, math.inf, -math.inf),          # no clamp: an infinite loss
    ("trl:grpo-k3-ratio", 100.0, math.inf, math.nan),     # inf from the score term, -inf from the pathwise one
    ("open-instruct:kl3-loss", 100.0, float(np.float32(math.expm1(40.0)) - 40), 0.0),
    ("verl:low_var_kl-loss", math.inf, 10.0, 0.0),
    ("openrlhf:k3-loss", math.inf, math.nan, math.nan),   # inf - inf in the value
    ("trl:grpo-k3", -math.inf, math.inf, 1.0),
])
def test_overflow_and_nan_cases(name, log_ratio, value, gradient):
    got_value, got_gradient = at(name, log_ratio)
    assert same(got_value, value) and same(got_gradient, gradient), (got_value, got_gradient)


def test_overflow_starts_where_exp_does():
    """float32's largest finite exp is at log r = log(3.4e38) = 88.72: TRL's k3 is finite just below, inf above."""
    threshold = math.log(float(np.finfo(np.float32).max))
    below, above = at("trl:grpo-k3", 88.5)[0], at("trl:grpo-k3", 89.0)[0]
    assert math.isfinite(below) and below > 1e38 and above == math.inf
    assert 88.5 < threshold < 89.0


def test_validation():
    with pytest.raises(ValueError, match="precision must be one of"):
        recipe_in_precision("trl:grpo-k3", [-1.0], [-1.0], "int8")
    with pytest.raises(ValueError, match="must be log-probabilities"):
        recipe_in_precision("trl:grpo-k3", [np.nan], [-1.0])
    with pytest.raises(ValueError, match="same shape"):
        recipe_in_precision("trl:grpo-k3", [-1.0, -2.0], [-1.0])
    with pytest.raises(ValueError, match="both -inf"):
        recipe_in_precision("trl:grpo-k3", [-np.inf], [-np.inf])
    with pytest.raises(TypeError, match="logp must be an array of real numbers"):
        recipe_in_precision("trl:grpo-k3", ["a"], [-1.0])


def test_mean_error_is_the_error_of_the_weighted_sum():
    result = recipe_in_precision("openrlhf:k3-loss", [-1e-3, -0.5, -2.0], [0.0, 0.0, 0.0], "float32")
    assert result.mean_error([1.0, 0.0, 0.0]) == pytest.approx(float(result.value_error[0]), rel=1e-12)
    w = np.array([0.2, 0.3, 0.5])
    exact = float(np.sum(w * result.exact_value))
    assert result.mean_error(w) == pytest.approx(abs(float(np.sum(w * result.value)) - exact) / exact, rel=1e-9)
    with pytest.raises(ValueError, match="weights must be finite, one per token"):
        result.mean_error([1.0])
