r"""Per-sample estimators of KL divergence, written as functions of the log-ratio.

Every function here takes ``logr = log p(x) - log q(x)`` for samples ``x ~ q`` and returns one
estimate per sample. Averaging the estimates over samples estimates a divergence:

================  ==========================================  ==================  ===========
name              formula (r = p/q)                           expectation         bias
================  ==========================================  ==================  ===========
``k1``            :math:`-\log r`                              KL[q, p]            none
``k2``            :math:`\tfrac12 (\log r)^2`                  :math:`D_f`, f=½log²  O(gap³)*
``k3``            :math:`(r - 1) - \log r`                     KL[q, p]            none
``k1_reverse``    :math:`r \log r`                             KL[p, q]            none
``k3_reverse``    :math:`r \log r - (r - 1)`                   KL[p, q]            none
``k_lambda``      :math:`-\log r + \lambda (r - 1)`            KL[q, p]            none
================  ==========================================  ==================  ===========

\* k2's bias is third order in the gap for a skewed change (e.g. of scale) and fourth order for the
article's mean shift (relative bias μ²/4 for unit Gaussians); it can have either sign. Its generator
½(log u)² is convex only for u ≤ e, so E[k2] is an "f-divergence" in the loose sense: never negative,
zero only at p = q, with f''(1) = 1.

Source: J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html.

Numerics. ``k3`` is :math:`e^x - 1 - x` at :math:`x = \log r`; written naively it cancels
catastrophically when policies are close (|x| << 1), exactly the RLHF regime. Here it is computed
as ``expm1(x) - x`` for |x| >= 1/2 (at most a few ulp) and by its Taylor series
:math:`\sum_{n\ge2} x^n/n!` in Horner form below that, so every value is within a few ulp of the true
one from |x| = 1e-300 up to overflow. float16/float32 input is computed in float64 and rounded once.
Infinite log-ratios give the mathematically right value: ``k3(±inf) = inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "k1",
    "k2",
    "k3",
    "k1_reverse",
    "k3_reverse",
    "k_lambda",
    "control_variate_spec",
    "ESTIMATORS",
    "FORWARD",
    "REVERSE",
]

# Below this |x| the Taylor series is used for e^x - 1 - x and friends. At |x| = 1/2 the cancellation
# in expm1(x) - x costs a factor of 4 at most; the series to x^15/15! leaves a truncation error of
# 2 (1/2)^14 / 16! = 6e-18 relative to x²/2, well under half an ulp.
_SERIES_CUTOFF = 0.5
_N_TERMS = 15
# 1/n! for n = 2 .. _N_TERMS, highest first for Horner.
_EXP_TAIL = tuple(1.0 / math.factorial(n) for n in range(_N_TERMS, 1, -1))
# (n - 1)/n! for n = 2 .. _N_TERMS: the Taylor coefficients of x e^x - (e^x - 1).
_REV_TAIL = tuple((n - 1) / math.factorial(n) for n in range(_N_TERMS, 1, -1))


def _as_float_array(logr, name: str = "logr") -> tuple[np.ndarray, np.dtype]:
    """Return ``logr`` as an array and the dtype the result must have (floats keep theirs)."""
    arr = np.asarray(logr)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real number or an array of real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN; a log-ratio is a real number or ±inf")
        return arr, arr.dtype
    return arr, np.dtype(np.float64)


def _finish(value: np.ndarray, dtype: np.dtype, like) -> np.ndarray | np.floating:
    """Cast to the output dtype; a scalar input gives a numpy scalar back."""
    with np.errstate(over="ignore"):  # float64 -> float32/16 beyond its range is inf, as intended
        value = np.asarray(value, dtype=dtype)
    return value[()] if np.ndim(like) == 0 else value


def _horner(x: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    acc = x * coeffs[0]
    acc += coeffs[1]
    for c in coeffs[2:]:
        acc *= x
        acc += c
    return acc


def _exp_minus_1_minus_x(x: np.ndarray) -> np.ndarray:
    """e^x - 1 - x in float64, accurate to a few ulp everywhere (see module docstring)."""
    shape = x.shape
    x = x.reshape(-1)
    small = np.abs(x) < _SERIES_CUTOFF
    if small.all():  # close policies: skip the expm1 pass that the series would overwrite
        out = x * x
        out *= _horner(x, _EXP_TAIL)
        return out.reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.expm1(x) - x
    # Integer indices: gathering/scattering through a mixed boolean mask is ~10x slower.
    index = np.flatnonzero(small)
    if index.size:
        xs = x[index]
        series = xs * xs
        series *= _horner(xs, _EXP_TAIL)
        out[index] = series
    # x = +inf: expm1 - x is inf - inf; x = -inf: -1 + inf. Both limits are +inf.
    out[np.isinf(x)] = np.inf
    return out.reshape(shape)


def _x_exp_x_minus_expm1(x: np.ndarray) -> np.ndarray:
    """x e^x - (e^x - 1) in float64, accurate to a few ulp everywhere."""
    shape = x.shape
    x = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        # e^x (x - 1) + 1: for x >= 1/2 the sum cancels at most a factor of ~6 (at x = 1/2), ~1 ulp.
        out = np.exp(x) * (x - 1.0) + 1.0
    # For -40 < x <= -1/2, e^x (x - 1) is close to -1 and the sum above loses up to ~10 ulp; the identity
    # x e^x - (e^x - 1) = e^x k3(-x) has no cancellation (<= 3 ulp). Below -40 the sum is 1 to an ulp.
    middle = np.flatnonzero((x <= -_SERIES_CUTOFF) & (x > -40.0))
    if middle.size:
        xm = x[middle]
        out[middle] = np.exp(xm) * _exp_minus_1_minus_x(-xm)
    small = np.flatnonzero(np.abs(x) < _SERIES_CUTOFF)
    if small.size:
        xs = x[small]
        out[small] = xs * xs * _horner(xs, _REV_TAIL)
    out[x == np.inf] = np.inf
    out[x == -np.inf] = 1.0  # r = 0: r log r -> 0, -(r - 1) = 1
    return out.reshape(shape)


def k1(logr):
    r"""The plain Monte Carlo estimator :math:`k_1 = -\log r` of KL[q, p].

    .. math:: k_1(x) = \log\frac{q(x)}{p(x)} = -\log r, \qquad \mathbb{E}_{x\sim q}[k_1] = \mathrm{KL}[q, p].

    Unbiased, but negative whenever p(x) > q(x), so its variance is large compared with the
    divergence when p ≈ q (standard deviation/KL ~ 2/gap for unit Gaussians). Cost: one negation.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``; ±inf allowed.

    Returns
    -------
    numpy scalar or ndarray
        Same shape as ``logr``; same dtype for floating input, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.
    ValueError
        If ``logr`` contains NaN.

    Examples
    --------
    >>> import numpy as np
    >>> k1(np.array([-0.5, 0.0, 0.25]))
    array([ 0.5 , -0.  , -0.25])
    """
    arr, dtype = _as_float_array(logr)
    return _finish(-arr.astype(dtype, copy=False), dtype, logr)


def k2(logr):
    r"""The squared-log estimator :math:`k_2 = \tfrac12 (\log r)^2`.

    .. math:: \mathbb{E}_{x\sim q}[k_2] = D_f(p, q), \quad f(u) = \tfrac12 (\log u)^2,

    an f-divergence with :math:`f''(1) = 1`, the same curvature as KL's generator :math:`-\log u`, so it
    agrees with KL[q, p] to second order in the gap between p and q. It is biased (relative bias μ²/4 for
    unit-variance Gaussians a distance μ apart) but never negative, and for close distributions with far
    lower variance than ``k1`` (not for distant ones: at a gap of 2, Var k2 = 24 against Var k1 = 4).

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``; ±inf allowed (gives inf).

    Returns
    -------
    numpy scalar or ndarray
        Same shape as ``logr``; same dtype for floating input, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.
    ValueError
        If ``logr`` contains NaN.

    Examples
    --------
    >>> k2(-0.5)
    np.float64(0.125)
    """
    arr, dtype = _as_float_array(logr)
    if dtype.itemsize < 8:
        arr = arr.astype(np.float64)  # the square of a float16 overflows early; round once at the end
    else:
        arr = arr.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        return _finish(0.5 * (arr * arr), dtype, logr)


def k3(logr):
    r"""The control-variate (Bregman) estimator :math:`k_3 = (r - 1) - \log r` of KL[q, p].

    .. math:: k_3 = k_1 + (r - 1), \qquad \mathbb{E}_{x\sim q}[r - 1] = \int p - \int q = 0,

    so it is unbiased; and since :math:`\log r \le r - 1` it is never negative: it is the gap between
    the convex function :math:`-\log r` and its tangent at r = 1. Its variance is finite only when
    :math:`\mathbb{E}_q[r^2] < \infty` (Gaussians: :math:`\sigma_p^2 < 2\sigma_q^2`).

    Computed accurately as :math:`e^x - 1 - x` (see the module docstring): within a few ulp of the
    true value for all |log r| from 1e-300 to overflow, in float32 and float64.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``; ±inf allowed (gives inf).

    Returns
    -------
    numpy scalar or ndarray
        Same shape as ``logr``; same dtype for floating input, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.
    ValueError
        If ``logr`` contains NaN.

    Examples
    --------
    >>> import numpy as np
    >>> print(f"{k3(1e-6):.12e}")  # the naive exp(x) - 1 - x is already wrong in the 4th digit
    5.000001666667e-13
    >>> k3(np.array([-np.inf, 0.0, np.inf]))
    array([inf,  0., inf])
    """
    arr, dtype = _as_float_array(logr)
    x = np.atleast_1d(np.asarray(arr, dtype=np.float64))
    return _finish(_exp_minus_1_minus_x(x).reshape(np.shape(arr)), dtype, logr)


def k1_reverse(logr):
    r"""The plain estimator :math:`r \log r` of the reverse divergence KL[p, q], from samples of q.

    .. math:: \mathbb{E}_{x\sim q}[r \log r] = \mathbb{E}_{x\sim p}[\log r] = \mathrm{KL}[p, q].

    Unbiased, can be negative (when r < 1). ``logr = -inf`` (r = 0) gives 0; ``+inf`` gives inf.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``.

    Returns
    -------
    numpy scalar or ndarray
        Same shape as ``logr``; same dtype for floating input, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.
    ValueError
        If ``logr`` contains NaN.

    Examples
    --------
    >>> float(k1_reverse(0.0))
    0.0
    """
    arr, dtype = _as_float_array(logr)
    x = np.atleast_1d(np.asarray(arr, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(x) * x
    out[x == -np.inf] = 0.0
    return _finish(out.reshape(np.shape(arr)), dtype, logr)


def k3_reverse(logr):
    r"""The control-variate estimator :math:`r \log r - (r - 1)` of KL[p, q], from samples of q.

    The same recipe as ``k3`` applied to the generator :math:`f(u) = u \log u` of KL[p, q]:
    :math:`f(r) - f'(1)(r - 1)`, unbiased because :math:`\mathbb{E}_q[r - 1] = 0`, and non-negative because
    f is convex (the gap between f and its tangent at 1). Accurate to a few ulp near r = 1
    (Taylor series :math:`\sum_{n\ge2} (n-1) x^n / n!` for |log r| < 1/2).

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``; ``-inf`` gives 1, ``+inf`` gives inf.

    Returns
    -------
    numpy scalar or ndarray
        Same shape as ``logr``; same dtype for floating input, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.
    ValueError
        If ``logr`` contains NaN.

    Examples
    --------
    >>> print(f"{k3_reverse(1e-4):.12e}")
    5.000333345834e-09
    """
    arr, dtype = _as_float_array(logr)
    x = np.atleast_1d(np.asarray(arr, dtype=np.float64))
    return _finish(_x_exp_x_minus_expm1(x).reshape(np.shape(arr)), dtype, logr)


def k_lambda(logr, lam):
    r"""The control-variate family :math:`-\log r + \lambda (r - 1)`, unbiased for KL[q, p] for every λ.

    Because :math:`\mathbb{E}_q[r - 1] = 0`, adding any multiple of r - 1 keeps the mean. λ = 0 is
    ``k1``, λ = 1 is ``k3`` (the only λ for which every sample is non-negative for all r); the
    variance-minimising λ depends on p and q (:func:`klviz.optimal_lambda`). Computed as
    :math:`\lambda\,k_3 - (1 - \lambda)\log r`, accurate near r = 1.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios ``log p(x) - log q(x)`` at samples ``x ~ q``; ±inf allowed.
    lam : float or array_like
        The control-variate coefficient λ; broadcasts against ``logr``.

    Returns
    -------
    numpy scalar or ndarray
        The broadcast shape; same dtype as a floating ``logr``, float64 otherwise.

    Raises
    ------
    TypeError
        If ``logr`` or ``lam`` is not real-valued.
    ValueError
        If ``logr`` or ``lam`` contains NaN, or ``lam`` is infinite.

    Examples
    --------
    >>> float(k_lambda(0.5, 1.0)) == float(k3(0.5))
    True
    """
    arr, dtype = _as_float_array(logr)
    lam_arr, _ = _as_float_array(lam, "lam")
    if not np.isfinite(lam_arr).all():
        raise ValueError("lam must be finite")
    x, lam64 = np.broadcast_arrays(np.asarray(arr, dtype=np.float64), np.asarray(lam_arr, dtype=np.float64))
    x = np.array(x, ndmin=1)
    lam64 = np.array(lam64, ndmin=1)
    with np.errstate(invalid="ignore", over="ignore"):
        # λ = 0 must not meet an overflowed k3 (0 · inf = NaN at log r > 709): it is k1 exactly.
        out = np.where(lam64 == 0, 0.0, lam64 * _exp_minus_1_minus_x(x)) - (1.0 - lam64) * x
    # Limits at log r = ±inf, where the sum above can be inf - inf.
    pos_inf = x == np.inf
    out[pos_inf] = np.where(lam64[pos_inf] > 0, np.inf, -np.inf)
    out[x == -np.inf] = np.inf
    shape = np.broadcast_shapes(np.shape(arr), np.shape(lam_arr))
    with np.errstate(over="ignore"):  # float64 -> float32/16 beyond its range is inf, as intended
        result = np.asarray(out.reshape(shape), dtype=dtype)
    return result[()] if np.ndim(logr) == 0 and np.ndim(lam) == 0 else result


@dataclass(frozen=True)
class EstimatorSpec:
    r"""An estimator as a function of L = log r, and as a sum of terms :math:`c\,e^{tL} L^j`.

    The term list lets :mod:`klviz.exact` take exact expectations for Gaussian pairs, where
    :math:`\mathbb{E}[e^{tL} L^j]` has a closed form. ``target`` names the divergence it estimates.
    """

    name: str
    function: Callable
    terms: tuple[tuple[float, int, float], ...]  # (t, j, coefficient)
    # The divergence the estimator is used for, and its bias measured against: "forward" = KL[q, p] (k1,
    # k2, k3 — k2's own expectation is the f-divergence with f = ½ log², hence its bias), "reverse" =
    # KL[p, q]. (The article's naming: q samples, p the target. In RLHF, where q is the policy, KL[q, p]
    # is usually called the *reverse* KL; the notebooks say so where it matters.)
    target: str


FORWARD = "forward"
REVERSE = "reverse"

ESTIMATORS: dict[str, EstimatorSpec] = {
    "k1": EstimatorSpec("k1", k1, ((0, 1, -1.0),), FORWARD),
    "k2": EstimatorSpec("k2", k2, ((0, 2, 0.5),), FORWARD),
    "k3": EstimatorSpec("k3", k3, ((1, 0, 1.0), (0, 0, -1.0), (0, 1, -1.0)), FORWARD),
    "k1_reverse": EstimatorSpec("k1_reverse", k1_reverse, ((1, 1, 1.0),), REVERSE),
    "k3_reverse": EstimatorSpec(
        "k3_reverse", k3_reverse, ((1, 1, 1.0), (1, 0, -1.0), (0, 0, 1.0)), REVERSE
    ),
}


def control_variate_spec(lam: float) -> EstimatorSpec:
    """The :func:`k_lambda` estimator at a fixed λ, as an :class:`EstimatorSpec`."""
    lam = float(lam)
    return EstimatorSpec(
        f"k_lambda({lam:g})",
        lambda logr: k_lambda(logr, lam),
        ((0, 1, -1.0), (1, 0, lam), (0, 0, -lam)),
        FORWARD,
    )


def get_estimator(estimator) -> EstimatorSpec:
    """Look an estimator up by name (or pass an :class:`EstimatorSpec` through)."""
    if isinstance(estimator, EstimatorSpec):
        return estimator
    if not isinstance(estimator, str):
        raise TypeError(
            f"estimator must be a name, one of {sorted(ESTIMATORS)}, got {type(estimator).__name__}"
        )
    try:
        return ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}"
        ) from None
