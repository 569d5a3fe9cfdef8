"""Token-level helpers: bfloat16 rounding, rounding to a precision, the naive k3, random policy pairs."""

import math
import struct
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klviz import k3
from klviz.factories import perturbed_policy_pair
from klviz.precision import (PRECISIONS, _correctly_rounded_exp, _round_exp, _round_float64, naive_k3,
                             naive_k3_in_precision, round_to_bfloat16, round_to_precision)


def _bfloat16_reference(value: np.float32) -> float:
    """Nearest bfloat16 by comparing the two neighbours exactly (float64 holds float32 differences
    exactly), ties to the neighbour with an even last kept bit. Independent of the bit trick."""
    value = np.float32(value)
    if np.isnan(value):
        return math.nan
    bits = int(np.array(value).view(np.uint32))
    down = bits & 0xFFFF0000
    up = down + 0x10000  # next bfloat16 away from zero (may be the infinity pattern)
    below = float(np.array(down, dtype=np.uint32).view(np.float32))
    if up > 0xFFFFFFFF or (up & 0x7FFFFFFF) > 0x7F800000:
        return below
    above = float(np.array(up, dtype=np.uint32).view(np.float32))
    if math.isinf(above):
        # Round to inf when x is at or beyond the midpoint between max bfloat16 and 2^128.
        midpoint = math.copysign(abs(below) + 2.0 ** (127 - 8), below)
        return above if abs(float(value)) >= abs(midpoint) else below
    x = float(value)
    d_below, d_above = abs(x - below), abs(above - x)
    if d_below < d_above:
        return below
    if d_above < d_below:
        return above
    return below if (down >> 16) % 2 == 0 else above


def test_bfloat16_matches_reference_on_random_bit_patterns(rng):
    bits = rng.integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    rounded = round_to_bfloat16(values)
    expected = np.array([_bfloat16_reference(v) for v in values], dtype=np.float32)
    np.testing.assert_array_equal(rounded, expected)


def test_bfloat16_ties_go_to_even():
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (kept bit even: down); 1 + 3·2^-8 is halfway between
    # 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
    values = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), -(1 + 3 * 2**-8)], dtype=np.float32)
    np.testing.assert_array_equal(round_to_bfloat16(values), [1.0, 1 + 2**-6, -1.0, -(1 + 2**-6)])


def test_bfloat16_special_values():
    max_bf16 = float(np.array(0x7F7F0000, dtype=np.uint32).view(np.float32))
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).max, max_bf16, 2.0**-127, 1e-45],
                      dtype=np.float32)
    out = round_to_bfloat16(values)
    assert out.dtype == np.float32
    assert out[0] == 0 and not np.signbit(out[0]) and np.signbit(out[1])
    assert out[2] == np.inf and out[3] == -np.inf and np.isnan(out[4])
    assert out[5] == np.inf  # beyond bfloat16's largest finite value: overflow, as in hardware
    assert out[6] == max_bf16
    assert out[7] == np.float32(2.0**-127)  # a subnormal with only a high bit set is kept
    assert out[8] == 0.0  # the smallest subnormal is below half a bfloat16 spacing


def test_bfloat16_shape_and_scalar():
    assert round_to_bfloat16(3.14159).shape == ()
    assert float(round_to_bfloat16(3.14159)) == 3.140625
    assert round_to_bfloat16(np.ones((2, 3))).shape == (2, 3)
    assert round_to_bfloat16(np.array([7], dtype=np.int64))[0] == 7


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-float(np.float32(3e38)), max_value=float(np.float32(3e38))))
def test_bfloat16_is_representable_and_within_half_spacing(x):
    out = round_to_bfloat16(np.float32(x))
    assert int(np.array(out).view(np.uint32)) & 0xFFFF == 0
    if np.isfinite(out) and x != 0:
        spacing = 2.0 ** (math.floor(math.log2(abs(x))) - 7)
        assert abs(float(out) - float(np.float32(x))) <= spacing / 2 * (1 + 1e-12) or abs(x) < 1.2e-38


@pytest.mark.parametrize("precision", ["float64", "float32", "float16"])
def test_round_to_precision_is_a_cast(precision, rng):
    x = -rng.exponential(5.0, size=1000)
    out = round_to_precision(x, precision)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x.astype(precision).astype(np.float64))


def test_round_to_precision_bfloat16_and_spacing(rng):
    x = -rng.uniform(8.0, 16.0, size=10_000)
    out = round_to_precision(x, "bfloat16")
    np.testing.assert_array_equal(out, round_to_bfloat16(x).astype(np.float64))
    # in [8, 16) the bfloat16 spacing is 2^3 · 2^-7 = 1/16: errors at most half of it
    assert np.max(np.abs(out - x)) <= 1 / 32
    assert len(np.unique(out)) == 8 * 16 + 1
    assert set(PRECISIONS) == {"float64", "float32", "bfloat16", "float16"}


def test_round_to_precision_validation():
    with pytest.raises(ValueError, match="precision must be one of"):
        round_to_precision([1.0], "float8")
    with pytest.raises(TypeError, match="precision must be a string"):
        round_to_precision([1.0], np.float32)
    with pytest.raises(TypeError, match="x must be real-valued"):
        round_to_precision(["a"], "float32")
    with pytest.raises(TypeError, match="x must be real-valued"):
        round_to_bfloat16(np.array([True]))


def _k3_reference(x: float) -> float:
    ctx = mpmath.MPContext()
    ctx.dps = 50
    v = ctx.mpf(float(x))
    return float(ctx.exp(v) - 1 - v)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_naive_k3_keeps_dtype_and_is_the_naive_formula(dtype):
    x = np.array([-0.5, 1e-3, 0.25, 2.0], dtype=dtype)
    out = naive_k3(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.exp(x) - dtype(1) - x)
    assert naive_k3(np.array([3])).dtype == np.float64


def test_naive_k3_fails_for_close_policies_where_k3_does_not(rng):
    x = rng.uniform(-1e-4, 1e-4, size=2000).astype(np.float32)
    reference = np.array([_k3_reference(v) for v in x])
    naive = naive_k3(x).astype(np.float64)
    accurate = k3(x).astype(np.float64)
    assert np.mean(naive < 0) > 0.1  # k3 >= 0 mathematically
    assert np.median(np.abs(naive / reference - 1)) > 1.0
    np.testing.assert_allclose(accurate, reference, rtol=2**-22)


def test_naive_k3_is_fine_for_large_log_ratios():
    x = np.array([1.0, 3.0, -2.0], dtype=np.float32)
    reference = np.array([_k3_reference(v) for v in x])
    np.testing.assert_allclose(naive_k3(x), reference, rtol=1e-6)


def test_naive_k3_validation():
    with pytest.raises(TypeError, match="logr must be real-valued"):
        naive_k3(np.array(["x"]))


def test_perturbed_policy_pair():
    pair = perturbed_policy_pair(1000, 0.05, rng=4)
    assert pair.vocab_size == 1000
    q, p = np.exp(pair.log_q), np.exp(pair.log_p)
    assert q.sum() == pytest.approx(1.0) and p.sum() == pytest.approx(1.0)
    exact = math.fsum(q * (np.log(q) - np.log(p)))
    assert pair.kl_qp() == pytest.approx(exact, rel=1e-9)
    # second order: KL ≈ Var_q(log p - log q) / 2
    logr = pair.log_p - pair.log_q
    var_q = math.fsum(q * (logr - math.fsum(q * logr)) ** 2)
    assert pair.kl_qp() == pytest.approx(var_q / 2, rel=0.05)
    same = perturbed_policy_pair(10, 0.0, rng=1)
    assert same.kl_qp() == 0.0
    np.testing.assert_array_equal(perturbed_policy_pair(20, 0.1, rng=3).q_logits,
                                  perturbed_policy_pair(20, 0.1, rng=3).q_logits)
    # a numpy integer is an integer (validation returns a Python int)
    np.testing.assert_array_equal(perturbed_policy_pair(np.int64(20), 0.1, rng=3).p_logits,
                                  perturbed_policy_pair(20, 0.1, rng=3).p_logits)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0, 0.1), {}, ValueError, "vocab_size must be at least 1"),
        ((5.0, 0.1), {}, TypeError, "vocab_size must be an integer"),
        ((5, -1.0), {}, ValueError, "perturbation must be finite and non-negative"),
        ((5, 0.1), {"logit_scale": math.nan}, ValueError, "logit_scale must be finite and non-negative"),
        ((5, None), {}, TypeError, "perturbation must be a real number"),
    ],
)
def test_perturbed_policy_pair_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        perturbed_policy_pair(*args, **kwargs)


# --- naive_k3_in_precision: every operation correctly rounded ------------------------------------------

# (significand bits, exponent of the smallest normal, exponent of the largest binade + 1), from IEEE 754
# (float32, float16) and bfloat16's definition (float32's exponent, 8 significant bits).
_FORMAT_REFERENCE = {"float32": (24, -126, 128), "bfloat16": (8, -126, 128), "float16": (11, -14, 16)}


def _round_exact(value: Fraction, precision: str) -> float:
    """Nearest value of ``precision`` to an exact rational, ties to even, in integer arithmetic."""
    bits, min_exponent, top = _FORMAT_REFERENCE[precision]
    if value == 0:
        return 0.0
    sign, magnitude = (-1 if value < 0 else 1), abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    while Fraction(2) ** (exponent - 1) > magnitude:      # 2^(exponent - 1) <= magnitude < 2^exponent
        exponent -= 1
    while Fraction(2) ** exponent <= magnitude:
        exponent += 1
    quantum = Fraction(2) ** (max(exponent, min_exponent + 1) - bits)
    units = magnitude / quantum
    whole = units.numerator // units.denominator
    rest = units - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    result = whole * quantum
    largest = (2 - Fraction(2) ** (1 - bits)) * Fraction(2) ** (top - 1)
    return sign * (math.inf if result > largest else float(result))


def _exp_exact(x: float) -> Fraction:
    """e^x to 60 digits as an exact rational (closer to e^x than any float is to a rounding midpoint)."""
    ctx = mpmath.MPContext()
    ctx.dps = 60
    value = ctx.exp(ctx.mpf(x))
    return Fraction(int(value.man)) * Fraction(2) ** int(value.exp)


def _values_and_midpoints(rng, precision: str) -> np.ndarray:
    """Random magnitudes over the format's range, its subnormals, and exact midpoints and their
    float64 neighbours (ties and near-ties), both signs."""
    bits, min_exponent, top = _FORMAT_REFERENCE[precision]
    random = rng.standard_normal(3000) * np.exp2(rng.uniform(min_exponent - bits, top, 3000))
    grid = np.ldexp(rng.integers(2 ** (bits - 1), 2**bits, 1000).astype(float) + 0.5,
                    rng.integers(min_exponent - bits + 1, top - bits, 1000))
    near = np.concatenate([grid, np.nextafter(grid, 0), np.nextafter(grid, np.inf)])
    smallest = 2.0 ** (min_exponent - bits + 1)          # the smallest subnormal
    edges = np.array([0.0, -0.0, smallest, smallest / 2, smallest * 0.75, smallest / 4])
    largest = float((2 - Fraction(2) ** (1 - bits)) * Fraction(2) ** (top - 1))
    overflow = np.array([largest, largest + 2.0 ** (top - bits - 1), np.nextafter(largest + 2.0 ** (top - bits - 1), 0)])
    values = np.concatenate([random, near, edges, overflow])
    return np.concatenate([values, -values])


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_round_float64_is_correct_rounding(precision, rng):
    values = _values_and_midpoints(rng, precision)
    expected = np.array([_round_exact(Fraction(float(v)), precision) for v in values])
    with np.errstate(over="ignore"):
        out = _round_float64(values, precision)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(values))      # -0.0 and negative underflow keep the sign
    if precision == "float32":      # independent: the hardware conversion
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(out, values.astype(np.float32).astype(np.float64))
    if precision == "float16":      # independent: CPython's float -> binary16 packing
        finite = np.abs(values) < 65520
        packed = [struct.unpack("<e", struct.pack("<e", v))[0] for v in values[finite]]
        np.testing.assert_array_equal(out[finite], packed)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_round_exp_does_not_depend_on_the_last_bits_of_exp(precision, rng):
    bits, _, _ = _FORMAT_REFERENCE[precision]
    # log-ratios of every size, and x = log(midpoint), whose e^x lies within a float64 ulp of a midpoint
    x = np.concatenate([rng.uniform(-20.0, 11.0, 600), rng.standard_normal(600) * 1e-4])
    midpoints = np.ldexp(rng.integers(2 ** (bits - 1), 2**bits, 300) + 0.5, rng.integers(-12, 8, 300) - bits)
    x = np.concatenate([x, np.log(midpoints)])
    expected = np.array([_round_exact(_exp_exact(float(v)), precision) for v in x])
    crossed = False
    for relative_error in (-(2.0**-51), 0.0, 2.0**-51):      # any exp within 2^-50 of e^x
        with np.errstate(over="ignore"):
            approx = np.exp(x) * (1.0 + relative_error)
            np.testing.assert_array_equal(_round_exp(x, approx, precision), expected)
            crossed |= bool(np.any(_round_float64(approx, precision) != expected))
    # plain rounding of such an exp is wrong for some near-midpoint x: the exact decision was needed
    assert crossed
    np.testing.assert_array_equal(_correctly_rounded_exp(x, precision), expected)


def _naive_k3_reference(x: float, precision: str) -> float:
    x_rounded = _round_exact(Fraction(x), precision)
    e = _round_exact(_exp_exact(x_rounded), precision)
    if math.isinf(e):
        return math.inf
    d = _round_exact(Fraction(e) - 1, precision)
    return _round_exact(Fraction(d) - Fraction(x_rounded), precision)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_naive_k3_in_precision_matches_exact_arithmetic(precision, rng):
    x = np.concatenate([rng.choice([-1, 1], 800) * np.exp(rng.uniform(np.log(1e-9), np.log(1e-2), 800)),
                        rng.uniform(-30.0, 12.0, 400), [0.0, -0.0, 1e-30, -1e-30, 88.0, 90.0, -200.0]])
    expected = np.array([_naive_k3_reference(float(v), precision) for v in x])
    out = naive_k3_in_precision(x, precision)
    assert out.dtype == np.float64 and out.shape == x.shape
    np.testing.assert_array_equal(out, expected)


def test_naive_k3_in_precision_close_policies_and_special_values():
    # float32, x = 1e-4: e^x rounds to 1 + 839·2^-23, the subtraction is exact, then one rounding
    x = np.float32(1e-4)
    assert naive_k3_in_precision(x, "float32") == float(np.float32(839 * 2.0**-23 - float(x)))
    assert naive_k3_in_precision(x, "float32").shape == ()
    # float16 and bfloat16, |x| below half the spacing near 1: e^x rounds to 1 and the result is -x < 0
    for precision, tiny in (("float16", 1e-4), ("bfloat16", 1e-3)):
        assert naive_k3_in_precision([tiny], precision)[0] == -round_to_precision([tiny], precision)[0]
    out = naive_k3_in_precision([np.inf, -np.inf, 0.0, 100.0, -200.0], "float16")
    np.testing.assert_array_equal(out, [np.inf, np.inf, 0.0, np.inf, 199.0])  # e^100 overflows float16
    np.testing.assert_array_equal(naive_k3_in_precision(np.ones((2, 3), dtype=np.int64), "bfloat16").shape, (2, 3))


def test_naive_k3_in_precision_validation():
    with pytest.raises(ValueError, match="precision must be one of"):
        naive_k3_in_precision([1.0], "float64")
    with pytest.raises(TypeError, match="precision must be a string"):
        naive_k3_in_precision([1.0], np.float32)
    with pytest.raises(TypeError, match="logr must be real-valued"):
        naive_k3_in_precision(["a"], "float32")
    with pytest.raises(ValueError, match="logr contains NaN"):
        naive_k3_in_precision([0.1, np.nan], "float16")
