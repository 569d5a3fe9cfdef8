r"""Tests for klviz.estimators: accuracy in ulps against 50-digit mpmath, edge cases, dtypes, validation.

References are written here from the definitions (x = log r):

    k1 = -x,  k2 = x²/2,  k3 = e^x - 1 - x,  k1_pq = x e^x,  k3_pq = x e^x - (e^x - 1),
    k_lambda = -x + λ (e^x - 1),

evaluated by mpmath at 50 significant digits (``expm1`` keeps the small-x cancellation out of the
reference), never by the code under test.
"""

import math
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from klviz import ESTIMATORS, k1, k1_pq, k2, k3, k3_pq, k_lambda

MP = mpmath.MPContext()
MP.dps = 50



def _cancelling(formula):
    """Evaluate ``formula`` with 50 digits left after cancellation: e^x - 1 - x ~ x²/2 loses |log10 x| digits."""

    def reference(x):
        extra = int(max(0.0, -float(MP.log10(abs(x))))) + 5 if x != 0 else 0
        with MP.workdps(50 + extra):
            return +formula(MP.mpf(x))  # unary + rounds to the working precision

    return reference


REFERENCE = {
    "k1": lambda x: -MP.mpf(x),
    "k2": lambda x: MP.mpf(x) ** 2 / 2,
    "k3": _cancelling(lambda x: MP.expm1(x) - x),
    "k1_pq": lambda x: MP.mpf(x) * MP.exp(x),
    "k3_pq": _cancelling(lambda x: x * MP.exp(x) - MP.expm1(x)),
}
FUNCTIONS = {"k1": k1, "k2": k2, "k3": k3, "k1_pq": k1_pq, "k3_pq": k3_pq}
FLOAT_DTYPES = (np.float32, np.float64)
MAX_ULPS = 8


def ulp_errors(values, logr, name, dtype):
    """|value - exact| in units of the dtype's spacing at the exact value (inf if not representable)."""
    finfo = np.finfo(dtype)
    errors = []
    for value, x in zip(values, logr):
        exact = REFERENCE[name](MP.mpf(float(x)))
        if abs(exact) > finfo.max:
            errors.append(0.0 if value == math.copysign(math.inf, exact) else math.inf)
            continue
        if not math.isfinite(float(value)):
            errors.append(math.inf)
            continue
        spacing = np.spacing(np.abs(dtype(float(exact))))
        errors.append(float(abs(MP.mpf(float(value)) - exact) / MP.mpf(float(spacing))))
    return np.array(errors)


def log_grid(dtype, points=240):
    """Log-spaced |log r| from 1e-12 up to just past exp's overflow for the dtype, both signs."""
    top = math.log(np.finfo(dtype).max)  # ~709.78 (float64), ~88.72 (float32)
    magnitudes = np.logspace(-12, math.log10(top - 0.01), points)
    grid = np.concatenate([-magnitudes[::-1], magnitudes]).astype(dtype)
    # Points where the result overflows on purpose: they must give +inf, not NaN or a warning.
    return np.concatenate([grid, np.array([top + 0.5, -(top + 0.5), 2 * top], dtype=dtype)])


# --------------------------------------------------------------------------------------------------
# Accuracy against mpmath
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", ["k3", "k3_pq", "k2", "k1", "k1_pq"])
def test_every_value_within_8_ulp_of_50_digit_reference(name, dtype):
    logr = log_grid(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = FUNCTIONS[name](logr)
    assert values.dtype == dtype
    errors = ulp_errors(values, logr, name, dtype)
    worst = int(np.argmax(errors))
    assert errors.max() <= MAX_ULPS, (
        f"{name}({logr[worst]!r}) = {values[worst]!r} is {errors[worst]:.3g} ulp from the exact value"
    )


@pytest.mark.parametrize("x", [1e-12, 1e-8, 1e-6, 1e-4, 0.3, 0.5, 0.51, 1.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_k3_small_logr_where_naive_formula_cancels(x, sign):
    # The regime the article cares about: p close to q. exp(x) - 1 - x loses everything here.
    x = sign * x
    exact = REFERENCE["k3"](x)
    assert abs(float(k3(x)) - exact) <= 4 * np.spacing(float(exact))
    assert k3(x) > 0


def test_float32_k3_keeps_precision_where_expm1_in_float32_fails():
    logr = np.float32(1e-4)
    exact = REFERENCE["k3"](float(logr))
    value = k3(logr)
    assert isinstance(value, np.float32)
    assert abs(float(value) - exact) <= 1 * np.spacing(np.float32(float(exact)))
    # the naive float32 formula is off by a lot — the reason the library exists
    naive = np.expm1(logr) - logr
    assert abs(float(naive) - exact) > 1000 * np.spacing(np.float32(float(exact)))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=-709.0, max_value=709.0, allow_nan=False))
def test_k3_and_k3_pq_within_8_ulp_hypothesis(x):
    for name in ("k3", "k3_pq"):
        top = 703.0 if name == "k3_pq" else 709.0
        if x > top:
            continue
        value = FUNCTIONS[name](x)
        assert ulp_errors([value], [x], name, np.float64)[0] <= MAX_ULPS, (name, x, value)


@pytest.mark.parametrize("lam", [-1.5, 0.0, 0.25, 0.5, 1.0, 2.0])
def test_k_lambda_matches_reference(lam):
    logr = np.concatenate([-np.logspace(-10, 2.5, 60), [0.0], np.logspace(-10, 2.5, 60)])
    values = k_lambda(logr, lam)
    for value, x in zip(values, logr):
        xm = MP.mpf(float(x))
        exact = -xm + lam * MP.expm1(xm)
        # error budget: a few ulp of the two terms that are added
        scale = abs(xm) * abs(1 - lam) + abs(lam) * (MP.expm1(xm) - xm)
        assert abs(value - exact) <= 8 * np.finfo(float).eps * (scale + abs(exact)) + 1e-300, (x, lam)


# --------------------------------------------------------------------------------------------------
# Infinities, zeros, signs
# --------------------------------------------------------------------------------------------------

INFINITY_TABLE = {
    #              logr = -inf (r = 0)   logr = +inf (r = inf)
    "k1": (math.inf, -math.inf),
    "k2": (math.inf, math.inf),
    "k3": (math.inf, math.inf),
    "k1_pq": (0.0, math.inf),
    "k3_pq": (1.0, math.inf),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(INFINITY_TABLE))
def test_infinite_logr_gives_the_limit_without_nan_or_warning(name, dtype):
    logr = np.array([-np.inf, np.inf], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = FUNCTIONS[name](logr)
        scalars = [FUNCTIONS[name](dtype(v)) for v in (-np.inf, np.inf)]
    assert values.dtype == dtype
    assert list(values) == list(INFINITY_TABLE[name])
    assert scalars == list(INFINITY_TABLE[name])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_overflow_gives_inf_without_warning(name, dtype):
    # The result exceeds the output dtype: the honest answer is inf, never a warning. For float16/32 the
    # middle value overflows only in the final cast (e^20 > 65504, e^100 > 3.4e38 but finite in float64).
    cast_only = {np.float16: 20.0, np.float32: 100.0, np.float64: 700.0}[dtype]
    huge = 6e4 if dtype == np.float16 else 1e4
    logr = np.array([huge, cast_only, -huge], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = FUNCTIONS[name](logr)
        scalar = FUNCTIONS[name](dtype(cast_only))
    assert values.dtype == dtype and scalar.dtype == dtype
    assert not np.isnan(values).any()
    if name in ("k3", "k3_pq", "k1_pq"):
        assert values[0] == np.inf
        if dtype != np.float64:
            assert values[1] == np.inf and scalar == np.inf
    elif name == "k2":
        with np.errstate(over="ignore"):
            expected = dtype(float(huge) ** 2 / 2)  # inf for float16
        assert values[0] == values[2] == expected
    else:
        np.testing.assert_array_equal(values, -logr)


def test_k3_large_negative_logr_is_minus_logr_minus_one():
    x = np.array([-1e300, -1e10, -800.0])
    np.testing.assert_array_equal(k3(x), -x - 1.0)
    np.testing.assert_array_equal(k3_pq(x), np.ones(3))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_zero_logr_gives_zero(name):
    assert FUNCTIONS[name](0.0) == 0.0


def test_k_lambda_at_infinite_logr():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = k_lambda(np.array([np.inf, np.inf, np.inf, -np.inf, -np.inf]), np.array([0.5, 0.0, -1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(out, [np.inf, -np.inf, -np.inf, np.inf, np.inf])


def test_k_lambda_zero_is_k1_and_one_is_k3():
    logr = np.concatenate([-np.logspace(-12, 2.8, 50), [0.0], np.logspace(-12, 2.8, 50)])
    np.testing.assert_array_equal(k_lambda(logr, 0.0), -logr)
    np.testing.assert_array_equal(k_lambda(logr, 1.0), k3(logr))
    np.testing.assert_array_equal(k_lambda(logr, 0.0), k1(logr))


def test_k_lambda_family_is_unbiased_by_exact_enumeration():
    # For a categorical pair E_q[-log r + λ(r - 1)] = KL[q, p] for every λ: sum it in mpmath.
    q = np.array([0.1, 0.2, 0.3, 0.4])
    p = np.array([0.4, 0.3, 0.2, 0.1])
    logr = np.log(p) - np.log(q)
    kl = MP.fsum(MP.mpf(qi) * (MP.log(MP.mpf(qi)) - MP.log(MP.mpf(pi))) for qi, pi in zip(q, p))
    for lam in (-2.0, 0.0, 0.3, 1.0, 1.7):
        mean = math.fsum(q * k_lambda(logr, lam))
        assert mean == pytest.approx(float(kl), rel=1e-13, abs=0), lam
    # and its variance changes with λ (it is a real family, not one estimator)
    variances = [float(np.sum(q * (k_lambda(logr, lam) - float(kl)) ** 2)) for lam in (0.0, 1.0)]
    assert variances[0] != pytest.approx(variances[1])


def test_k_lambda_broadcasts():
    out = k_lambda(np.array([[0.1], [0.2]]), np.array([0.0, 0.5, 1.0]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[:, 0], [-0.1, -0.2], rtol=1e-15)


# --------------------------------------------------------------------------------------------------
# Shapes and dtypes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_scalar_in_scalar_out(name):
    f = FUNCTIONS[name]
    for value, dtype in ((0.25, np.float64), (np.float32(0.25), np.float32), (np.float64(0.25), np.float64),
                         (np.array(0.25, dtype=np.float32), np.float32), (1, np.float64)):
        out = f(value)
        assert np.ndim(out) == 0
        assert out.dtype == dtype
    assert np.ndim(k_lambda(0.3, 0.5)) == 0


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("shape", [(0,), (1,), (3, 4), (2, 1, 5)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.int8])
def test_shape_and_dtype(name, shape, dtype):
    logr = (np.arange(math.prod(shape)).reshape(shape) % 7 - 3).astype(dtype)
    out = FUNCTIONS[name](logr)
    assert out.shape == shape
    expected = dtype if np.issubdtype(dtype, np.floating) else np.float64
    assert out.dtype == expected


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        elements={"allow_nan": False},
    )
)
def test_dtype_and_shape_kept_hypothesis(logr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, f in FUNCTIONS.items():
            out = f(logr)
            assert np.shape(out) == logr.shape, name
            assert out.dtype == logr.dtype, name
            assert not np.isnan(out).any(), name
        out = k_lambda(logr, 0.5)
        assert out.dtype == logr.dtype and np.shape(out) == logr.shape


# --------------------------------------------------------------------------------------------------
# Properties: non-negativity, zero only at r = 1
# --------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False))
def test_k2_k3_k3_pq_never_negative_float64(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert k2(x) >= 0
        assert k3(x) >= 0
        assert k3_pq(x) >= 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False, width=32))
def test_k2_k3_k3_pq_never_negative_float32(x):
    x = np.float32(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert k2(x) >= 0
        assert k3(x) >= 0
        assert k3_pq(x) >= 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_k3_zero_only_at_logr_zero_float64(x):
    # k3 ≈ x²/2 underflows below |x| ~ 2e-162; above that it must be strictly positive.
    value = k3(x)
    if x == 0:
        assert value == 0
    elif abs(x) > 1e-160:
        assert value > 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_k3_zero_only_at_logr_zero_float32(x):
    value = k3(np.float32(x))
    if x == 0:
        assert value == 0
    elif abs(x) > 1e-22:  # x²/2 is representable in float32 (subnormals reach 1.4e-45)
        assert value > 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=-700, max_value=700), st.floats(min_value=-700, max_value=700))
def test_k3_is_the_bregman_gap_and_monotone_away_from_zero(x, y):
    # e^x - 1 - x is decreasing on x < 0 and increasing on x > 0.
    if 0 <= x <= y or y <= x <= 0:
        assert k3(x) <= k3(y)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad", [math.nan, np.array([0.1, np.nan]), np.float32(np.nan)])
def test_nan_raises_value_error_naming_logr(name, bad):
    with pytest.raises(ValueError, match="logr"):
        FUNCTIONS[name](bad)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad", ["0.5", 1 + 2j, np.array([1j]), True, np.array([True, False]), None, [0.1, "a"]])
def test_non_real_raises_type_error_naming_logr(name, bad):
    with pytest.raises(TypeError, match="logr"):
        FUNCTIONS[name](bad)


def test_k_lambda_validates_lam():
    with pytest.raises(ValueError, match="lam"):
        k_lambda(0.1, math.nan)
    with pytest.raises(ValueError, match="lam"):
        k_lambda(0.1, math.inf)
    with pytest.raises(TypeError, match="lam"):
        k_lambda(0.1, "1")
    with pytest.raises(TypeError, match="lam"):
        k_lambda(0.1, True)
    with pytest.raises(ValueError, match="logr"):
        k_lambda(math.nan, 0.5)


def test_estimator_table():
    assert set(ESTIMATORS) == set(FUNCTIONS)
    for name, spec in ESTIMATORS.items():
        assert spec.name == name
        assert spec.value is FUNCTIONS[name]
    # The term lists (used for Gaussian closed forms) must describe the same functions:
    # sum c e^{tL} L^j, checked at a few points against the 50-digit reference.
    for name, spec in ESTIMATORS.items():
        for x in (-3.0, -0.2, 0.7, 2.5):
            xm = MP.mpf(x)
            from_terms = MP.fsum(MP.mpf(c) * MP.exp(t * xm) * xm**j for t, j, c in spec.expansion.terms)
            assert abs(from_terms - REFERENCE[name](xm)) <= MP.mpf("1e-40") * (1 + abs(from_terms)), name
    assert {spec.target for spec in ESTIMATORS.values()} == {"kl_qp", "kl_pq"}
    assert ESTIMATORS["k1_pq"].target == ESTIMATORS["k3_pq"].target == "kl_pq"


def test_k_lambda_at_zero_is_k1_beyond_exp_overflow():
    # λ = 0 met an overflowed k3 part: 0 · inf = NaN at log r = 710 (review finding)
    np.testing.assert_array_equal(k_lambda(np.array([710.0, 1e300]), 0.0), -np.array([710.0, 1e300]))
