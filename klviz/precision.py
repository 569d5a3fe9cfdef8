r"""Low precision: what float32, bfloat16 and float16 do to per-token KL estimates.

In RLHF the KL penalty is estimated per token from log-probabilities the models return, often in
float32 or bfloat16. Two separate things can go wrong:

* the *formula*: :math:`k_3 = e^x - 1 - x` written naively cancels when :math:`|x| \ll 1`, i.e. for close
  policies (:func:`naive_k3_in_precision` evaluates it that way, with every operation correctly rounded
  to float32, bfloat16 or float16, so the result is the same on every CPU; :func:`naive_k3` uses numpy's
  own low-precision ``exp``, whose last bit depends on the CPU); :func:`klviz.k3` is accurate to a few
  ulp there;
* the *inputs*: once :math:`\log p` and :math:`\log q` are rounded (:func:`round_to_precision`), their
  difference carries a rounding error of the order of the spacing of floats near :math:`|\log p|`,
  which no formula can undo.

Pairs of policies a controlled distance apart are in :mod:`klviz.factories`.
"""

from __future__ import annotations

import math

import numpy as np

from klviz import _checks

__all__ = ["PRECISIONS", "round_to_bfloat16", "round_to_precision", "naive_k3", "naive_k3_in_precision"]

#: Precisions known to :func:`round_to_precision`, with their significand bits (implicit bit included).
PRECISIONS = {"float64": 53, "float32": 24, "bfloat16": 8, "float16": 11}

# IEEE binary formats as (significand bits k, exponent of the smallest normal number, largest finite value).
_FORMATS = {
    "float32": (24, -126, float(np.finfo(np.float32).max)),
    "bfloat16": (8, -126, (2.0 - 2.0**-7) * 2.0**127),
    "float16": (11, -14, 65504.0),
}


def round_to_bfloat16(x) -> np.ndarray:
    r"""Round to the nearest bfloat16 value (ties to even), returned as float32.

    bfloat16 is the top half of a float32: the same sign bit and 8-bit exponent (so the same range)
    but 7 stored significand bits instead of 23, i.e. 8 significant bits and a relative spacing of
    :math:`2^{-7}`. Rounding a float32 to it is a bit operation on its 32-bit pattern u:

    .. math:: u' = \big(u + \mathtt{0x7FFF} + \lfloor u / 2^{16} \rfloor \bmod 2\big)
              \;\&\; \mathtt{0xFFFF0000},

    adding just under half of the dropped range, plus one more when the kept part is odd, so
    exact halves round to an even last kept bit (IEEE round-half-to-even); a carry propagates into the
    exponent as it should, and values beyond bfloat16's largest finite number become ±inf. NaN stays
    NaN. Input is first rounded to float32 (as a model computing in float32 would), so float64
    input is rounded twice; that double rounding can differ from a direct float64 -> bfloat16
    rounding only for values within 2^-24 relative of a halfway point.

    Parameters
    ----------
    x : float or array_like
        Real numbers.

    Returns
    -------
    ndarray of float32
        Same shape as ``x``; every value representable in bfloat16.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued.

    Examples
    --------
    >>> import numpy as np
    >>> round_to_bfloat16(np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -10.3]))
    array([  1.      ,   1.      ,   1.015625, -10.3125  ], dtype=float32)
    """
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"x must be real-valued, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        single = np.array(arr, dtype=np.float32, ndmin=1)
    bits = single.view(np.uint32)
    lowest_kept_bit = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = ((bits + np.uint32(0x7FFF) + lowest_kept_bit) & np.uint32(0xFFFF0000)).view(np.float32)
    # A NaN's payload could carry into the sign or vanish: keep NaN as NaN explicitly.
    rounded = np.where(np.isnan(single), np.float32(np.nan), rounded)
    return rounded.reshape(np.shape(arr))


def round_to_precision(x, precision: str) -> np.ndarray:
    r"""Round real numbers to float64, float32, bfloat16 or float16 and return them as float64.

    The float64 result holds exactly the rounded values, so arithmetic done on it afterwards shows
    the effect of the rounding alone. The spacing of the rounded values near x is about
    :math:`|x|\,2^{1-b}` with b the significand bits in :data:`PRECISIONS`: for a log-probability near
    -10 that is 1e-15 (float64), 1e-6 (float32), 0.008 (float16) and 0.06 (bfloat16).

    Parameters
    ----------
    x : float or array_like
        Real numbers (±inf pass through).
    precision : {"float64", "float32", "bfloat16", "float16"}

    Returns
    -------
    ndarray of float64

    Raises
    ------
    TypeError
        If ``x`` is not real-valued or ``precision`` is not a string.
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.

    Examples
    --------
    >>> round_to_precision([-10.3], "bfloat16")
    array([-10.3125])
    >>> round_to_precision([-10.3], "float16")
    array([-10.296875])
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string, one of {list(PRECISIONS)}, got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"x must be real-valued, got dtype {arr.dtype}")
    if precision == "bfloat16":
        return round_to_bfloat16(arr).astype(np.float64)
    with np.errstate(over="ignore"):
        return arr.astype(precision).astype(np.float64)


def naive_k3(logr) -> np.ndarray:
    r""":math:`k_3 = e^x - 1 - x` written the naive way, evaluated in the precision of its input.

    This is the formula as commonly written (``torch.exp(x) - 1 - x``, in the tensor's dtype), kept
    for comparison with the accurate :func:`klviz.k3`. It uses numpy's own ``exp`` in that dtype, whose
    float32 and float16 results are not correctly rounded and change with the CPU's vector features:
    for a result that is the same everywhere use :func:`naive_k3_in_precision`. For :math:`|x| \ll 1` the true value is about
    :math:`x^2/2`, but :math:`e^x` is rounded to the spacing :math:`\epsilon` of floats near 1
    (:math:`2^{-23}` in float32), so the result is off by up to :math:`\epsilon`: relative error
    :math:`\sim 2\epsilon/x^2`, and it can even be negative. In float32 this ruins k3 for
    :math:`|x| \lesssim 10^{-3}` — log-ratios of close policies.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios, float16, float32 or float64 (other real input is computed in float64).

    Returns
    -------
    ndarray
        Same shape, same floating dtype as ``logr``.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.

    Examples
    --------
    >>> import numpy as np
    >>> from klviz import k3
    >>> x = np.float32(1e-4)
    >>> f"{naive_k3(x):.4e} vs {k3(x):.4e}"   # the true value is 5.0002e-09
    '1.6596e-08 vs 5.0002e-09'
    """
    arr = np.asarray(logr)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"logr must be real-valued, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    one = arr.dtype.type(1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(arr) - one - arr


def _quantum_exponent(values: np.ndarray, precision: str) -> np.ndarray:
    """Exponent of the spacing of ``precision``'s values at each float64 value (subnormals included)."""
    bits, min_normal_exponent, _ = _FORMATS[precision]
    _, exponent = np.frexp(values)          # values = m 2^exponent, 1/2 <= |m| < 1
    return np.maximum(exponent, min_normal_exponent + 1) - bits


def _round_float64(values: np.ndarray, precision: str) -> np.ndarray:
    r"""Round float64 values to the nearest value of ``precision`` (ties to even), as float64.

    Every step is exact — a power-of-two scaling, ``np.rint`` (round half to even) and the scaling back —
    so the result is the correctly rounded one, on every CPU. Magnitudes at or beyond the largest finite
    value plus half a spacing become ±inf (IEEE overflow); NaN stays NaN.
    """
    _, _, largest = _FORMATS[precision]
    with np.errstate(invalid="ignore"):
        exponent = _quantum_exponent(values, precision)
        rounded = np.ldexp(np.rint(np.ldexp(values, -exponent)), exponent)
    return np.where(np.abs(rounded) > largest, np.copysign(np.inf, values), rounded)


# |error of np.exp in float64| < 2^-50 relative is assumed (a libm or SIMD exp is within a few ulp of
# 2^-53); a value whose scaled fractional part is within this many quanta of 1/2 is decided exactly.
_EXP_GUARD_BITS = 50


def _correctly_rounded_exp(x: np.ndarray, precision: str) -> np.ndarray:
    r""":math:`e^x` correctly rounded to ``precision`` (as float64), the same on every CPU.

    ``np.exp`` in float64 is within a few float64 ulp of :math:`e^x`, but its last bits vary between
    CPUs (SIMD or libm); :func:`_round_exp` turns it into the correctly rounded value.
    """
    with np.errstate(over="ignore", under="ignore"):
        return _round_exp(x, np.exp(x), precision)


def _round_exp(x: np.ndarray, approx: np.ndarray, precision: str) -> np.ndarray:
    r"""Round ``approx`` :math:`\approx e^x` (relative error below :math:`2^{-50}`) correctly to ``precision``.

    Rounding the approximation gives the correctly rounded :math:`e^x` unless :math:`e^x` lies within
    that error of a midpoint between two neighbours in ``precision``; those few values (a fraction of
    about :math:`2^{k-49}` for k significand bits) are decided by comparing :math:`e^x` with the
    midpoint in 60-digit arithmetic. (:math:`e^x` is never exactly a midpoint: for rational x != 0 it
    is irrational, and :math:`e^0 = 1` is representable.)
    """
    rounded = _round_float64(approx, precision)
    exponent = _quantum_exponent(approx, precision)
    scaled = np.ldexp(approx, -exponent)                  # in units of the spacing of ``precision``
    guard = np.ldexp(scaled, -_EXP_GUARD_BITS)
    with np.errstate(invalid="ignore"):                   # inf - inf where exp overflowed
        near_midpoint = np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) <= guard)
    if near_midpoint.size:
        import mpmath

        ctx = mpmath.MPContext()
        ctx.dps = 60
        for i in near_midpoint:
            below = float(np.floor(scaled[i]))
            midpoint = math.ldexp(below + 0.5, int(exponent[i]))   # exact: k + 1 bits
            above = ctx.exp(ctx.mpf(float(x[i]))) > ctx.mpf(midpoint)
            rounded[i] = math.ldexp(below + 1.0 if above else below, int(exponent[i]))
        rounded = _round_float64(rounded, precision)      # a carry into the next binade may overflow
    return rounded


def naive_k3_in_precision(logr, precision: str) -> np.ndarray:
    r"""The naive :math:`k_3 = (e^x - 1) - x` as a trainer computes it in float32, bfloat16 or float16,
    with every operation correctly rounded: the same result on every CPU.

    The log-ratio is first rounded to ``precision`` (a model holding it in that dtype), then

    .. math:: e = \mathrm{rd}(e^x),\qquad d = \mathrm{rd}(e - 1),\qquad k_3^{\mathrm{naive}} = \mathrm{rd}(d - x),

    with rd rounding to the nearest value of ``precision``, ties to even. That is ``torch.exp(x) - 1 - x``
    on a tensor of that dtype, up to the last bit of ``exp``: IEEE subtraction is correctly rounded
    everywhere, but ``exp`` implementations (numpy's SIMD float32 exp, torch's, a GPU's) are only
    faithful, and their errors differ between CPUs and libraries; a correctly rounded exp is the
    one reference all of them approximate. The subtractions are done exactly in float64 and rounded
    once (double rounding through a format of 53 >= 2k + 2 bits is innocuous for a subtraction:
    Figueroa 1995, "When is double rounding innocuous?", SIGNUM Newsletter 30(3)).

    For :math:`|x| \ll 1` the result is off by up to half the spacing of floats near 1 (:math:`2^{-24}`
    in float32, :math:`2^{-11}` in float16, :math:`2^{-8}` in bfloat16), which exceeds the true value
    :math:`\approx x^2/2` once :math:`|x| \lesssim 2^{-k/2}`; it can be negative, though
    :math:`k_3 \ge 0` always.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios (any real dtype; rounded to ``precision`` first). ±inf allowed.
    precision : {"float32", "bfloat16", "float16"}

    Returns
    -------
    ndarray of float64
        Same shape as ``logr``; every value representable in ``precision``.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued or ``precision`` is not a string.
    ValueError
        If ``precision`` is not one of the three, or ``logr`` contains NaN.

    Examples
    --------
    >>> naive_k3_in_precision([1e-4], "float32")   # the true value is 5.0002e-09
    array([1.65964593e-08])
    >>> naive_k3_in_precision([2e-4, 0.5], "bfloat16")   # e^x rounds to 1: the result is -x; true 0.1487
    array([-0.00020027,  0.1484375 ])
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string, one of {list(_FORMATS)}, got {type(precision).__name__}")
    if precision not in _FORMATS:
        raise ValueError(f"precision must be one of {list(_FORMATS)}, got {precision!r}")
    arr = np.asarray(logr)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"logr must be real-valued, got dtype {arr.dtype}")
    x = np.array(arr, dtype=np.float64, ndmin=1)
    if np.isnan(x).any():
        raise ValueError("logr contains NaN; a log-ratio is a real number or ±inf")
    x = _round_float64(x, precision)
    e = _correctly_rounded_exp(x, precision)
    with np.errstate(invalid="ignore"):
        d = _round_float64(e - 1.0, precision)
        out = _round_float64(d - x, precision)
    out[np.isinf(x)] = np.inf       # inf - inf (x = +inf) and -1 + inf (x = -inf): k3 -> +inf both ways
    return out.reshape(np.shape(arr))
