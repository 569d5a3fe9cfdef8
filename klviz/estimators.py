r"""Per-sample estimators of KL divergence, written as functions of the log-ratio, and the one record of each.

Every estimator takes ``logr = log p(x) - log q(x)`` at samples ``x ~ q`` and returns one estimate per
sample; averaging over samples estimates a divergence.

================  ==========================================  ==================  ===========
name              formula (r = p/q)                           expectation         bias
================  ==========================================  ==================  ===========
``k1``            :math:`-\log r`                              KL[q, p]            none
``k2``            :math:`\tfrac12 (\log r)^2`                  :math:`D_f`, f=½log²  O(gap³)*
``k3``            :math:`(r - 1) - \log r`                     KL[q, p]            none
``k1_pq``         :math:`r \log r`                             KL[p, q]            none
``k3_pq``         :math:`r \log r - (r - 1)`                   KL[p, q]            none
``k_lambda``      :math:`-\log r + \lambda (r - 1)`            KL[q, p]            none
================  ==========================================  ==================  ===========

\* k2's bias is third order in the gap for a skewed change (e.g. of scale) and fourth order for the
article's mean shift (relative bias μ²/4 for unit Gaussians); it can have either sign.

**One record per estimator.** :class:`Estimator` holds everything klviz needs to know about an
estimator: its value and its derivative in log r (they differ for a straight-through estimator), the
divergence it targets (``"kl_qp"`` = KL[q, p] or ``"kl_pq"`` = KL[p, q]), a label for plots, and
optionally an exact form as a sum :math:`\sum c\,r^t (\log r)^j` (:class:`ExpPolynomial`) from which
pairs take closed forms and overflow-safe products. Exact moments, simulation, gradients, sequences,
plots and the explorer read the record; none of them branches on an estimator's name, so a user's
``Estimator("k3_clip10", value=..., derivative=...)`` works everywhere the built-ins do.
:data:`ESTIMATORS` holds the built-ins; :func:`control_variate` makes members of the k_λ family.

Numerics: see :mod:`klviz._kernels` (k3 to a few ulp from |log r| = 1e-300 to overflow); float16/float32
input is computed in float64 and rounded once; infinite log-ratios give the mathematical limits.

Source: J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from klviz._kernels import exp_minus_1_minus_x as _k3_core
from klviz._kernels import x_exp_x_minus_expm1 as _k3_pq_core

__all__ = [
    "k1",
    "k2",
    "k3",
    "k1_pq",
    "k3_pq",
    "k_lambda",
    "ExpPolynomial",
    "Estimator",
    "ESTIMATORS",
    "TARGETS",
    "control_variate",
    "get_estimator",
]

#: The divergences an estimator can target: KL[q, p] (what k1, k2, k3 estimate) and KL[p, q].
TARGETS = ("kl_qp", "kl_pq")


# --------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------

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


def _float64(arr: np.ndarray) -> np.ndarray:
    return np.atleast_1d(np.asarray(arr, dtype=np.float64))


# --------------------------------------------------------------------------------------------------
# The per-sample functions
# --------------------------------------------------------------------------------------------------

def k1(logr):
    r"""The plain Monte Carlo estimator :math:`k_1 = -\log r` of KL[q, p].

    .. math:: k_1(x) = \log\frac{q(x)}{p(x)} = -\log r, \qquad \mathbb{E}_{x\sim q}[k_1] = \mathrm{KL}[q, p].

    Unbiased, but negative whenever p(x) > q(x), so its variance is large compared with the
    divergence when p ≈ q (standard deviation/KL = 2/gap for unit Gaussians).

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

    .. math:: \mathbb{E}_{x\sim q}[k_2] = D_f(p, q), \quad f(u) = \tfrac12 (\log u)^2
              = \tfrac12\big(\mathrm{Var}_q(\log r) + \mathrm{KL}[q, p]^2\big),

    an f-divergence with :math:`f''(1) = 1`, the same curvature as KL's generator :math:`-\log u`, so it
    agrees with KL[q, p] to second order in the gap between p and q. Biased (relative bias μ²/4 for
    unit-variance Gaussians a distance μ apart) but never negative.

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

    Notes
    -----
    Computed as :math:`e^x - 1 - x` by a Taylor series for :math:`|x| < 1/2` and ``expm1(x) - x`` above:
    within a few ulp of the true value for all |log r| from 1e-300 to overflow, in float32 and float64.

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
    return _finish(_k3_core(_float64(arr)).reshape(np.shape(arr)), dtype, logr)


def k1_pq(logr):
    r"""The plain estimator :math:`r \log r` of KL[p, q], from samples of q.

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
    >>> float(k1_pq(0.0))
    0.0
    """
    arr, dtype = _as_float_array(logr)
    x = _float64(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(x) * x
    out[x == -np.inf] = 0.0
    return _finish(out.reshape(np.shape(arr)), dtype, logr)


def k3_pq(logr):
    r"""The control-variate estimator :math:`r \log r - (r - 1)` of KL[p, q], from samples of q.

    The same recipe as ``k3`` applied to the generator :math:`f(u) = u \log u` of KL[p, q]:
    :math:`f(r) - f'(1)(r - 1)`, unbiased because :math:`\mathbb{E}_q[r - 1] = 0`, and non-negative because
    f is convex (the gap between f and its tangent at 1).

    Notes
    -----
    Accurate to a few ulp near r = 1 (Taylor series :math:`\sum_{n\ge2} (n-1) x^n / n!` for |log r| < 1/2).

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
    >>> print(f"{k3_pq(1e-4):.12e}")
    5.000333345834e-09
    """
    arr, dtype = _as_float_array(logr)
    return _finish(_k3_pq_core(_float64(arr)).reshape(np.shape(arr)), dtype, logr)


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
        out = np.where(lam64 == 0, 0.0, lam64 * _k3_core(x)) - (1.0 - lam64) * x
    # Limits at log r = ±inf, where the sum above can be inf - inf.
    pos_inf = x == np.inf
    out[pos_inf] = np.where(lam64[pos_inf] > 0, np.inf, -np.inf)
    out[x == -np.inf] = np.inf
    shape = np.broadcast_shapes(np.shape(arr), np.shape(lam_arr))
    with np.errstate(over="ignore"):  # float64 -> float32/16 beyond its range is inf, as intended
        result = np.asarray(out.reshape(shape), dtype=dtype)
    return result[()] if np.ndim(logr) == 0 and np.ndim(lam) == 0 else result


# --- derivatives in log r (what a pathwise gradient multiplies) ---------------------------------------

def _k1_derivative(logr):
    arr, dtype = _as_float_array(logr)
    return _finish(np.full(np.shape(arr), -1.0), dtype, logr)


def _k2_derivative(logr):
    arr, dtype = _as_float_array(logr)
    return _finish(np.asarray(arr, dtype=np.float64), dtype, logr)


def _k3_derivative(logr):
    """d/dL (e^L - 1 - L) = expm1(L): -1 at L = -inf."""
    arr, dtype = _as_float_array(logr)
    with np.errstate(over="ignore"):
        return _finish(np.expm1(np.asarray(arr, dtype=np.float64)), dtype, logr)


def _k1_pq_derivative(logr):
    """d/dL (L e^L) = e^L (1 + L): 0 at L = -inf."""
    arr, dtype = _as_float_array(logr)
    x = _float64(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(x) * (1.0 + x)
    out[x == -np.inf] = 0.0
    return _finish(out.reshape(np.shape(arr)), dtype, logr)


def _k3_pq_derivative(logr):
    """d/dL (L e^L - e^L + 1) = L e^L: 0 at L = -inf."""
    arr, dtype = _as_float_array(logr)
    x = _float64(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(x) * x
    out[x == -np.inf] = 0.0
    return _finish(out.reshape(np.shape(arr)), dtype, logr)


# --------------------------------------------------------------------------------------------------
# Exact forms: sums of c r^t (log r)^j
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpPolynomial:
    r"""An exact form :math:`g(L) = \sum_{(t, j)} c_{t,j}\, e^{tL} L^j` of a function of the log-ratio L.

    Built-in estimators have one (k3 = e^L - 1 - L is ``{(1, 0): 1, (0, 0): -1, (0, 1): -1}``). Pairs use it
    for closed forms (Gaussian: :math:`\mathbb{E}[e^{tL}L^j]` completes a square), for changes of measure
    (:math:`\mathbb{E}_q[e^{L} h(L)] = \mathbb{E}_p[h(L)]`) and for products formed in log space where a
    float product would give 0 · inf. It is never used to evaluate g near L = 0, where its terms cancel
    (the estimator's ``value`` does that accurately).

    Parameters
    ----------
    coefficients : mapping of (int, int) to float
        :math:`(t, j) \mapsto c_{t,j}`, with t and j non-negative integers.

    Examples
    --------
    >>> k3_form = ExpPolynomial({(1, 0): 1.0, (0, 0): -1.0, (0, 1): -1.0})
    >>> float(k3_form.evaluate(np.array([1.0]))[0]) == np.e - 2
    True
    >>> k3_form.derivative()
    ExpPolynomial(e^L - 1)
    """

    coefficients: Mapping[tuple[int, int], float]

    def __post_init__(self):
        clean = {}
        for key, value in dict(self.coefficients).items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(
                    isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 0 for k in key)):
                raise ValueError(f"coefficients keys must be pairs (t, j) of non-negative integers, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"coefficients must be finite real numbers, got {value!r} for {key}")
            if value != 0:
                clean[(int(key[0]), int(key[1]))] = clean.get((int(key[0]), int(key[1])), 0.0) + float(value)
        object.__setattr__(self, "coefficients", {k: v for k, v in sorted(clean.items()) if v != 0})

    @property
    def terms(self) -> tuple[tuple[int, int, float], ...]:
        """(t, j, c) triples, sorted."""
        return tuple((t, j, c) for (t, j), c in self.coefficients.items())

    def __add__(self, other: "ExpPolynomial") -> "ExpPolynomial":
        total = dict(self.coefficients)
        for key, value in other.coefficients.items():
            total[key] = total.get(key, 0.0) + value
        return ExpPolynomial(total)

    def __neg__(self) -> "ExpPolynomial":
        return self.scaled(-1.0)

    def __sub__(self, other: "ExpPolynomial") -> "ExpPolynomial":
        return self + (-other)

    def scaled(self, factor: float) -> "ExpPolynomial":
        return ExpPolynomial({k: factor * v for k, v in self.coefficients.items()})

    def __mul__(self, other: "ExpPolynomial") -> "ExpPolynomial":
        product: dict[tuple[int, int], float] = {}
        for (t1, j1), c1 in self.coefficients.items():
            for (t2, j2), c2 in other.coefficients.items():
                key = (t1 + t2, j1 + j2)
                product[key] = product.get(key, 0.0) + c1 * c2
        return ExpPolynomial(product)

    def derivative(self) -> "ExpPolynomial":
        r""":math:`d/dL`: :math:`c e^{tL} L^j \mapsto c\,(t e^{tL} L^j + j e^{tL} L^{j-1})`."""
        out: dict[tuple[int, int], float] = {}
        for (t, j), c in self.coefficients.items():
            if t:
                out[(t, j)] = out.get((t, j), 0.0) + c * t
            if j:
                out[(t, j - 1)] = out.get((t, j - 1), 0.0) + c * j
        return ExpPolynomial(out)

    def shifted(self, power: int) -> "ExpPolynomial":
        r"""Multiplied by :math:`e^{\text{power}\cdot L}` (a change of measure when power = -1)."""
        out = {}
        for (t, j), c in self.coefficients.items():
            if t + power < 0:
                raise ValueError(f"shifted({power}) leaves a negative power of e^L")
            out[(t + power, j)] = c
        return ExpPolynomial(out)

    def evaluate(self, log_ratio) -> np.ndarray:
        """The plain sum of the terms (float64; cancels near L = 0 — for checks and large |L| only)."""
        L = np.asarray(log_ratio, dtype=np.float64)
        total = np.zeros(L.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            for (t, j), c in self.coefficients.items():
                total = total + c * np.exp(t * L) * L**j
        return total

    def log_abs(self, log_ratio) -> np.ndarray:
        """log|g(L)| without overflow, for the extreme L of tail tests and log-space products.

        Terms with the same t are summed as a polynomial in L first (factoring out the top power for
        |L| > 1), so that e.g. r log r - r keeps its log L at L = 1e99 instead of cancelling to NaN."""
        from scipy.special import logsumexp

        L = np.asarray(log_ratio, dtype=np.float64)
        groups: dict[int, dict[int, float]] = {}
        for (t, j), c in self.coefficients.items():
            groups.setdefault(t, {})[j] = c
        if not groups:
            return np.full(L.shape, -np.inf)
        logs, signs = [], []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for t, coeffs in groups.items():
                top = max(coeffs)
                big = np.abs(L) > 1
                inverse = np.where(big, 1.0 / np.where(big, L, 1.0), 0.0)
                scaled = sum(c * inverse ** (top - j) for j, c in coeffs.items())  # P(L) / L^top
                direct = sum(c * np.where(big, 0.0, L) ** j for j, c in coeffs.items())
                log_poly = np.where(big, top * np.log(np.abs(L)) + np.log(np.abs(scaled)), np.log(np.abs(direct)))
                sign = np.where(big, np.sign(scaled) * np.sign(L) ** top, np.sign(direct))
                log_term = (0.0 if t == 0 else t * L) + log_poly
                if t > 0:  # e^{tL} -> 0 at L = -inf, whatever the polynomial does
                    log_term = np.where(L == -np.inf, -np.inf, log_term)
                logs.append(log_term)
                signs.append(sign)
        value, _ = logsumexp(np.stack(logs, axis=-1), b=np.stack(signs, axis=-1), axis=-1, return_sign=True)
        return value

    def __repr__(self) -> str:
        parts = []
        for (t, j), c in sorted(self.coefficients.items(), key=lambda kv: (-kv[0][0], -kv[0][1])):
            factor = "".join(
                piece for piece in ("" if t == 0 else ("e^L" if t == 1 else f"e^{t}L"),
                                    "" if j == 0 else ("L" if j == 1 else f"L^{j}")) if piece)
            magnitude = abs(c)
            body = factor if factor and magnitude == 1 else (f"{magnitude:g}" + (f" {factor}" if factor else ""))
            parts.append(("- " if c < 0 else "+ ") + body)
        text = " ".join(parts) if parts else "0"
        return f"ExpPolynomial({text[2:] if text.startswith('+ ') else '-' + text[2:] if text.startswith('- ') else text})"


# --------------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------------

_CHECK_POINTS = np.array([-3.0, -0.7, 0.3, 1.9])


@dataclass(frozen=True, eq=False)
class Estimator:
    r"""One estimator of a KL divergence from log-ratios: everything klviz needs to know about it.

    Parameters
    ----------
    name : str
        Short name, e.g. ``"k3"``; a key in tables and Monte Carlo results.
    value : callable
        ``value(logr)``: the per-sample estimate, vectorised over an array of log-ratios
        :math:`\log r = \log p(x) - \log q(x)` at samples x ~ q (float64 in, float64 out at least).
    derivative : callable
        ``derivative(logr)``: the derivative of the estimate in log r that a pathwise gradient (autodiff
        through :math:`\log q_\theta(x)`) uses. For a straight-through estimator it is *not* the
        derivative of ``value``: that is the point of such estimators.
    target : {"kl_qp", "kl_pq"}, default "kl_qp"
        The divergence the estimator is meant to estimate (its bias is measured against it):
        KL[q, p] (k1, k2, k3) or KL[p, q] (k1_pq, k3_pq).
    label : str, optional
        A math label for plots (default: the name).
    expansion : ExpPolynomial, optional
        An exact form :math:`\sum c\, r^t (\log r)^j` of ``value``, if it has one: pairs then use closed
        forms (Gaussians), changes of measure and log-space products. Checked against ``value`` at a few
        points when the record is made.
    derivative_expansion : ExpPolynomial, optional
        The same for ``derivative`` (default: the derivative of ``expansion``, if given).
    kinks : sequence of float, optional
        Log-ratios where ``value`` or ``derivative`` is not smooth (a clamp's corners): quadrature splits
        there.

    Raises
    ------
    TypeError
        If ``name`` or ``label`` is not a string, ``value`` or ``derivative`` is not callable, or an
        expansion is not an :class:`ExpPolynomial`.
    ValueError
        If ``name`` is empty, ``target`` is not one of :data:`TARGETS`, a kink is not finite, or an
        expansion disagrees with the function it describes.

    Examples
    --------
    A clamped k3, as some trainers use it (value capped at 10; gradient zero where capped):

    >>> import numpy as np
    >>> clipped = Estimator("k3_clip10", value=lambda L: np.minimum(k3(L), 10.0),
    ...                     derivative=lambda L: np.where(k3(L) < 10.0, np.expm1(L), 0.0))
    >>> clipped
    Estimator('k3_clip10', target='kl_qp')
    >>> float(clipped.value(np.array([20.0]))[0])
    10.0
    """

    name: str
    value: Callable
    derivative: Callable
    target: str = "kl_qp"
    label: str | None = None
    expansion: ExpPolynomial | None = field(default=None, kw_only=True)
    derivative_expansion: ExpPolynomial | None = field(default=None, kw_only=True)
    kinks: tuple[float, ...] = field(default=(), kw_only=True)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        if not self.name:
            raise ValueError("name must not be empty")
        for attribute in ("value", "derivative"):
            if not callable(getattr(self, attribute)):
                raise TypeError(f"{attribute} must be callable (a function of log r), got "
                                f"{type(getattr(self, attribute)).__name__}")
        if not isinstance(self.target, str):
            raise TypeError(f"target must be a string, one of {list(TARGETS)}, got {type(self.target).__name__}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        if self.label is not None and not isinstance(self.label, str):
            raise TypeError(f"label must be a string or None, got {type(self.label).__name__}")
        kinks = tuple(float(k) for k in np.atleast_1d(np.asarray(self.kinks, dtype=np.float64)))
        if not all(math.isfinite(k) for k in kinks):
            raise ValueError(f"kinks must be finite log-ratios, got {self.kinks!r}")
        object.__setattr__(self, "kinks", tuple(sorted(set(kinks))))
        for attribute, function in (("expansion", self.value), ("derivative_expansion", self.derivative)):
            form = getattr(self, attribute)
            if form is None:
                continue
            if not isinstance(form, ExpPolynomial):
                raise TypeError(f"{attribute} must be an ExpPolynomial or None, got {type(form).__name__}")
            _check_expansion(form, function, f"{attribute} of estimator {self.name!r}")
        if self.derivative_expansion is None and self.expansion is not None:
            # Only where the derivative really is d value/d log r (not a straight-through estimator).
            candidate = self.expansion.derivative()
            try:
                _check_expansion(candidate, self.derivative, "")
            except ValueError:
                pass
            else:
                object.__setattr__(self, "derivative_expansion", candidate)

    def __call__(self, logr):
        """``value(logr)``."""
        return self.value(logr)

    @property
    def display_label(self) -> str:
        """``label`` if given, else the name."""
        return self.label if self.label is not None else self.name

    def __repr__(self) -> str:
        return f"Estimator({self.name!r}, target={self.target!r})"


def _check_expansion(form: ExpPolynomial, function: Callable, what: str) -> None:
    with np.errstate(all="ignore"):
        expected = np.asarray(function(_CHECK_POINTS.copy()), dtype=np.float64)
    got = form.evaluate(_CHECK_POINTS)
    if expected.shape != got.shape or not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
        raise ValueError(f"{what} does not match the function it describes "
                         f"(at log r = {_CHECK_POINTS.tolist()}: {got.tolist()} vs {expected.tolist()})")


_K1 = ExpPolynomial({(0, 1): -1.0})
_K2 = ExpPolynomial({(0, 2): 0.5})
_K3 = ExpPolynomial({(1, 0): 1.0, (0, 0): -1.0, (0, 1): -1.0})
_K1_PQ = ExpPolynomial({(1, 1): 1.0})
_K3_PQ = ExpPolynomial({(1, 1): 1.0, (1, 0): -1.0, (0, 0): 1.0})

#: The built-in estimators, by name.
ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("k1", k1, _k1_derivative, "kl_qp", r"$k_1 = -\log r$", expansion=_K1),
        Estimator("k2", k2, _k2_derivative, "kl_qp", r"$k_2 = \frac{1}{2}(\log r)^2$", expansion=_K2),
        Estimator("k3", k3, _k3_derivative, "kl_qp", r"$k_3 = (r - 1) - \log r$", expansion=_K3),
        Estimator("k1_pq", k1_pq, _k1_pq_derivative, "kl_pq", r"$r \log r$", expansion=_K1_PQ),
        Estimator("k3_pq", k3_pq, _k3_pq_derivative, "kl_pq", r"$r\log r - (r - 1)$", expansion=_K3_PQ),
    )
}


def control_variate(lam) -> Estimator:
    r"""The member :math:`-\log r + \lambda (r - 1)` of the control-variate family, as an :class:`Estimator`.

    Parameters
    ----------
    lam : float
        λ; 0 is k1, 1 is k3.

    Returns
    -------
    Estimator
        Named ``"k_lambda(λ)"``, targeting KL[q, p].

    Raises
    ------
    TypeError, ValueError
        If ``lam`` is not a finite real number.

    Examples
    --------
    >>> control_variate(0.5).name
    'k_lambda(0.5)'
    """
    if isinstance(lam, (bool, np.bool_)) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__} {lam!r}")
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")

    def derivative(logr):
        arr, dtype = _as_float_array(logr)
        with np.errstate(over="ignore"):
            return _finish(lam * np.exp(np.asarray(arr, dtype=np.float64)) - 1.0, dtype, logr)

    return Estimator(f"k_lambda({lam:g})", lambda logr: k_lambda(logr, lam), derivative, "kl_qp",
                     rf"$-\log r + {lam:g}\,(r - 1)$",
                     expansion=ExpPolynomial({(0, 1): -1.0, (1, 0): lam, (0, 0): -lam}))


def get_estimator(estimator, name: str = "estimator") -> Estimator:
    """An :class:`Estimator` from a name in :data:`ESTIMATORS` (an :class:`Estimator` passes through).

    Raises
    ------
    TypeError
        If ``estimator`` is neither a string nor an :class:`Estimator`.
    ValueError
        If it is an unknown name.

    Examples
    --------
    >>> get_estimator("k3").target
    'kl_qp'
    """
    if isinstance(estimator, Estimator):
        return estimator
    if not isinstance(estimator, str):
        raise TypeError(f"{name} must be an Estimator or a name, one of {sorted(ESTIMATORS)}, "
                        f"got {type(estimator).__name__}")
    try:
        return ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"{name} must be one of {sorted(ESTIMATORS)} or an Estimator, got {estimator!r}") from None


def get_estimators(estimators, name: str = "estimators") -> tuple[Estimator, ...]:
    """A non-empty tuple of :class:`Estimator` from one estimator, one name, or a sequence of either."""
    if isinstance(estimators, (str, Estimator)):
        estimators = (estimators,)
    if estimators is None or not hasattr(estimators, "__iter__"):
        raise TypeError(f"{name} must be an Estimator, a name or a sequence of them, got {type(estimators).__name__}")
    records = tuple(get_estimator(e, name) for e in estimators)
    if not records:
        raise ValueError(f"{name} must name at least one estimator")
    names = [e.name for e in records]
    if len(set(names)) != len(names):
        raise ValueError(f"{name} must not repeat a name, got {names}")
    return records


#: The control variate r - 1 = e^{log r} - 1 as a function of log r: mean zero under q when p has no mass
#: outside q's support. Not an estimator of a divergence; exact computations use it (λ*, E_q[r²]).
CONTROL_VARIATE = Estimator("r - 1", lambda logr: _k3_derivative(logr), lambda logr: np.exp(_float64(
    _as_float_array(logr)[0])).reshape(np.shape(logr)), "kl_qp", r"$r - 1$",
    expansion=ExpPolynomial({(1, 0): 1.0, (0, 0): -1.0}))


def accurate_decomposition(estimator: Estimator) -> tuple[Estimator, float] | None:
    r"""(base, λ) with ``estimator`` = base + λ (r - 1) exactly, base being k3 or k3_pq; None if there is none.

    k3 and k3_pq are never negative, so sums and integrals of them do not cancel when p ≈ q, while
    k1 = k3 - (r - 1) and r log r = k3_pq + (r - 1) do: their means are taken through the base,
    :math:`\mathbb{E}_q[k] = \mathbb{E}_q[\text{base}] + \lambda\,\mathbb{E}_q[r - 1]`, with
    :math:`\mathbb{E}_q[r - 1] = -P_p(q = 0)` exact. Decided from the estimators' exact forms.
    """
    if estimator.expansion is None:
        return None
    control = CONTROL_VARIATE.expansion
    for base in (ESTIMATORS["k3"], ESTIMATORS["k3_pq"]):
        difference = estimator.expansion - base.expansion
        if not difference.coefficients:
            return base, 0.0
        lam = difference.coefficients.get((1, 0), 0.0)
        if lam != 0.0 and not (difference - control.scaled(lam)).coefficients:
            return base, lam
    return None
