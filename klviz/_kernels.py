r"""Accurate elementwise kernels shared by the estimators, the pairs and the gradients (float64, trusted input).

* :func:`exp_minus_1_minus_x` — :math:`e^x - 1 - x` (the k3 core) to a few ulp everywhere: a 15-term
  Taylor series in Horner form for :math:`|x| < 1/2` (where ``expm1(x) - x`` cancels), ``expm1(x) - x``
  above; :math:`\pm\infty` give :math:`+\infty`.
* :func:`x_exp_x_minus_expm1` — :math:`x e^x - (e^x - 1)` (the k3 of KL[p, q]) likewise.
* :func:`log_softmax` — a max-shifted log-softmax.
* :func:`weighted_k3` — :math:`w\,k_3(\log r)` without :math:`0\cdot\infty` where w underflows and r overflows.

Truncation of the series at :math:`|x| = 1/2`: :math:`2 (1/2)^{14}/16! = 6\cdot 10^{-18}` relative to
:math:`x^2/2`, well under half an ulp (measurements in ../shared/MEASUREMENTS.md and tests/test_estimators.py).
"""

from __future__ import annotations

import math

import numpy as np

SERIES_CUTOFF = 0.5
_N_TERMS = 15
# 1/n! for n = 2 .. _N_TERMS, highest first for Horner.
_EXP_TAIL = tuple(1.0 / math.factorial(n) for n in range(_N_TERMS, 1, -1))
# (n - 1)/n! for n = 2 .. _N_TERMS: the Taylor coefficients of x e^x - (e^x - 1).
_REV_TAIL = tuple((n - 1) / math.factorial(n) for n in range(_N_TERMS, 1, -1))


def _horner(x: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    acc = x * coeffs[0]
    acc += coeffs[1]
    for c in coeffs[2:]:
        acc *= x
        acc += c
    return acc


def exp_minus_1_minus_x(x: np.ndarray) -> np.ndarray:
    """e^x - 1 - x for a float64 array, accurate to a few ulp everywhere."""
    shape = x.shape
    x = x.reshape(-1)
    small = np.abs(x) < SERIES_CUTOFF
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


def x_exp_x_minus_expm1(x: np.ndarray) -> np.ndarray:
    """x e^x - (e^x - 1) for a float64 array, accurate to a few ulp everywhere; -inf gives 1."""
    shape = x.shape
    x = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        # e^x (x - 1) + 1: for x >= 1/2 the sum cancels at most a factor of ~6 (at x = 1/2), ~1 ulp.
        out = np.exp(x) * (x - 1.0) + 1.0
    # For -40 < x <= -1/2, e^x (x - 1) is close to -1 and the sum above loses up to ~10 ulp; the identity
    # x e^x - (e^x - 1) = e^x k3(-x) has no cancellation (<= 3 ulp). Below -40 the sum is 1 to an ulp.
    middle = np.flatnonzero((x <= -SERIES_CUTOFF) & (x > -40.0))
    if middle.size:
        xm = x[middle]
        out[middle] = np.exp(xm) * exp_minus_1_minus_x(-xm)
    small = np.flatnonzero(np.abs(x) < SERIES_CUTOFF)
    if small.size:
        xs = x[small]
        out[small] = xs * xs * _horner(xs, _REV_TAIL)
    out[x == np.inf] = np.inf
    out[x == -np.inf] = 1.0  # r = 0: r log r -> 0, -(r - 1) = 1
    return out.reshape(shape)


def log_softmax(logits, axis: int = -1) -> np.ndarray:
    r"""Stable :math:`\log\mathrm{softmax}(\ell)_i = \ell_i - \log\sum_j e^{\ell_j}` along ``axis`` (float64).

    Shifts by the largest logit first: ``logits - logsumexp(logits)`` would round at the logits'
    magnitude (1e-13 absolute at 1e3); the shifted logits are exact and their logsumexp is O(log V).
    A logit of -inf gives -inf (probability 0); every slice needs one finite logit. Logits so large that
    their differences overflow (1e308 against -1e308) give the limit: the largest ones share the mass.

    Examples
    --------
    >>> log_softmax(np.array([1000.0, 1000.0])).tolist() == [-np.log(2), -np.log(2)]
    True
    >>> np.exp(log_softmax(np.array([0.0, 1e300, 0.0]))).tolist()
    [0.0, 1.0, 0.0]
    """
    logits = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = logits - np.max(logits, axis=axis, keepdims=True)
    # -inf - (-inf) cannot occur (every slice has a finite logit); -1e308 - 1e308 = -inf is the right limit.
    # The log-sum-exp of the shifted logits (whose maximum is 0) is scipy.special.logsumexp's arithmetic, op for op
    # and so bit for bit (tests/test_kernels.py): the m maxima are taken out of the sum s of the others, and the
    # result is log1p(s/m) + log(m). Written out because scipy's array-API dispatch costs 5x the arithmetic for a
    # short row, and trainers' stationary policies and sliders call this thousands of times.
    top = shifted == 0.0
    count = np.sum(top, axis=axis, keepdims=True, dtype=np.float64)
    with np.errstate(under="ignore"):
        others = np.sum(np.where(top, 0.0, np.exp(shifted)), axis=axis, keepdims=True)
    others = np.where(others == 0, others, others / count)
    return shifted - (np.log1p(others) + np.log(count))


def weighted_k3(log_weight: np.ndarray, log_ratio: np.ndarray, log_weight_ratio=None) -> np.ndarray:
    r""":math:`w\,k_3(\log r)` with :math:`w = e^{\log w}`, also where w underflows and r overflows.

    There :math:`w k_3 = w r - w - w \log r` is taken as :math:`e^{\log(w r)} - e^{\log w}(1 + \log r)`,
    instead of 0 · inf = NaN (a token with q = 1e-350 and p = 1/3 has q r = p). Pass
    ``log_weight_ratio`` = log(w r) when it is known exactly (log p for w = q): log w + log r rounds at
    the magnitude of log r (1e300 logits: ±1e284), which can turn q r = 1/3 into 1."""
    log_weight, log_ratio = np.broadcast_arrays(np.asarray(log_weight, dtype=np.float64),
                                                np.asarray(log_ratio, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        weight = np.exp(log_weight)
        terms = weight * exp_minus_1_minus_x(np.array(log_ratio))
        # Also where w is subnormal or 0 but w r is not small (w = e^-750, r = e^700: w r = e^-50).
        bad = ~np.isfinite(terms) | ((weight < 1e-290) & (log_ratio > 0))
        if np.any(bad):
            lw, lr = log_weight[bad], log_ratio[bad]
            if log_weight_ratio is None:
                lwr = lw + lr
            else:
                lwr = np.broadcast_to(np.asarray(log_weight_ratio, dtype=np.float64), log_weight.shape)[bad]
            terms[bad] = np.exp(lwr) - np.exp(lw) * (1.0 + lr)
    return terms
