r"""Checks for the exercises: call one on your own function and it says what, if anything, is wrong.

* :func:`check_estimator` — a per-sample estimator written by the reader (``my_k3(logr)``) against klviz's
  accurate one, over log-ratios from 1e-12 to near overflow, both signs, in the dtype you choose: the worst
  relative error and where it occurs, and whether NaN, ±inf or the dtype come out right.
* :func:`check_function` — any function of one argument against reference values (an exact formula the
  notebook derives, a quantity klviz computes): the worst relative error and its argument.

Both return a :class:`CheckResult` that prints as one sentence ("off by 240% at log r = 1e-4 (float32)") and is
truthy when the check passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from klviz._results import Result
from klviz.estimators import get_estimator

__all__ = ["CheckResult", "check_estimator", "check_function"]


@dataclass(frozen=True, repr=False)
class CheckResult(Result):
    """The verdict of a check: ``passed``, a one-sentence ``message``, and the worst relative error and where."""

    passed: bool
    message: str
    worst_error: float
    worst_at: float

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return ("PASS: " if self.passed else "FAIL: ") + self.message

    def _display_fields(self):
        return [("passed", self.passed), ("message", self.message)]

    def _repr_html_(self) -> str:
        import html

        colour = "#009E73" if self.passed else "#D55E00"
        return f"<p style='color:{colour}'><b>{'PASS' if self.passed else 'FAIL'}</b>: {html.escape(self.message)}</p>"


def _grid(dtype) -> np.ndarray:
    top = math.log(float(np.finfo(dtype).max)) * 0.98
    magnitudes = np.logspace(-12 if dtype == np.float64 else -6, math.log10(top), 200)
    return np.concatenate([-magnitudes[::-1], [0.0], magnitudes]).astype(dtype)


def _relative_errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    with np.errstate(all="ignore"):
        error = np.abs(got - want) / np.where(want != 0, np.abs(want), 1.0)
    error = np.where((got == want), 0.0, error)  # equal infinities, equal zeros
    return np.where(np.isnan(error), np.inf, error)


def _noise(noise) -> float | None:
    if noise is None:
        return None
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive finite number or None, got {noise!r}")
    return float(noise)


def _shown(error: float, noise: float | None, rtol: float) -> str:
    """What a passing check says it agrees to: the noise bound when given and the error is below it, else the
    tolerance — never the rounding-level error itself, which differs from one CPU to another."""
    return f"{noise:g}" if noise is not None and error < noise else f"{rtol:.2g}"


def check_estimator(candidate: Callable, reference="k3", *, dtype=np.float64, rtol: float | None = None,
                    noise: float | None = None) -> CheckResult:
    r"""Check a per-sample estimator of log r against klviz's accurate one, as a trainer would use it.

    The candidate is called on an array of log-ratios of the given dtype (from :math:`\pm 10^{-12}` — or
    :math:`\pm 10^{-6}` below float64 — up to near exp's overflow, and 0). It passes when it returns an array of
    that dtype and shape, with no NaN, and every value within ``rtol`` of the reference (default: 8 ulp of the
    dtype, the accuracy klviz's own estimators reach).

    Parameters
    ----------
    candidate : callable
        ``candidate(logr) -> values``, vectorised.
    reference : str or Estimator, default "k3"
        The estimator it should compute.
    dtype : numpy floating dtype, default float64
    rtol : float, optional
    noise : float, optional
        A passing check whose worst relative error is below ``noise`` says "within {noise}" instead of the
        error itself: errors at the level of rounding depend on the last bits of the platform's arithmetic
        (numpy's kernels vary with the CPU), and a saved message should not.

    Returns
    -------
    CheckResult

    Raises
    ------
    TypeError
        If ``dtype`` is not a floating dtype.
    ValueError
        If ``noise`` is not a positive finite number.

    Examples
    --------
    >>> import numpy as np
    >>> check_estimator(lambda x: np.exp(x) - 1 - x, dtype=np.float32).passed
    False
    >>> from klviz import k3
    >>> check_estimator(k3, dtype=np.float32).passed
    True
    """
    record = get_estimator(reference, "reference")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    rtol = 8 * float(np.finfo(dtype).eps) if rtol is None else float(rtol)
    noise = _noise(noise)
    logr = _grid(dtype.type)
    try:
        with np.errstate(all="ignore"):
            got = np.asarray(candidate(logr.copy()))
    except Exception as error:  # the reader's function raised: say so instead of a traceback
        return CheckResult(False, f"calling it on a {dtype} array raised {type(error).__name__}: {error}", math.inf,
                           math.nan)
    if got.shape != logr.shape:
        return CheckResult(False, f"it returned shape {got.shape} for an input of shape {logr.shape}", math.inf, math.nan)
    want = np.asarray(record.value(logr.astype(np.float64)), dtype=np.float64)
    if got.dtype != dtype:
        note = f" (and it returned {got.dtype}, not {dtype})"
    else:
        note = ""
    with np.errstate(over="ignore"):  # the reference beyond the dtype's range is inf there, as it should be
        want_in_dtype = want.astype(dtype).astype(np.float64)
    errors = _relative_errors(got, want_in_dtype)
    worst = int(np.argmax(errors))
    if np.isnan(got.astype(np.float64)).any():
        bad = float(logr[np.isnan(got.astype(np.float64))][0])
        return CheckResult(False, f"it returned NaN at log r = {bad:.3g} ({dtype}){note}", math.inf, bad)
    if errors[worst] <= rtol and not note:
        return CheckResult(True, f"within {_shown(errors[worst], noise, rtol)} relative of {record.name} everywhere ({dtype}, "
                           f"|log r| from {abs(logr[logr != 0]).min():.0e} to {abs(logr).max():.0f})",
                           float(errors[worst]), float(logr[worst]))
    message = (f"off by {100 * errors[worst]:.3g}% at log r = {float(logr[worst]):.3g} ({dtype}): it gives "
               f"{float(got[worst]):.6g}, {record.name} is {float(want[worst]):.6g}{note}")
    return CheckResult(False, message, float(errors[worst]), float(logr[worst]))


def check_function(candidate: Callable, expected, points, *, rtol: float = 1e-9, name: str = "x",
                   noise: float | None = None) -> CheckResult:
    r"""Check a function of one argument against reference values at given points.

    Parameters
    ----------
    candidate : callable
        Called on each point separately (a float).
    expected : callable or array_like
        The reference: a function of the point (e.g. a klviz exact computation) or the values themselves.
    points : array_like
        Where to compare.
    rtol : float, default 1e-9
        The largest relative error that passes.
    name : str, default "x"
        The argument's name in the message (e.g. "μ").
    noise : float, optional
        A passing check whose worst relative error is below ``noise`` says "within {noise}" instead of the
        error itself (see :func:`check_estimator`).

    Returns
    -------
    CheckResult

    Raises
    ------
    ValueError
        If ``expected`` does not give one value per point, or ``noise`` is not a positive finite number.

    Examples
    --------
    >>> import math
    >>> check_function(lambda mu: math.exp(mu**2) - 1, lambda mu: math.exp(mu**2) - 1 - mu**2, [0.1, 1.0], name="μ")
    FAIL: off by 1.99e+04% at μ = 0.1: it gives 0.0100502, the reference is 5.01671e-05
    """
    points = np.atleast_1d(np.asarray(points, dtype=np.float64))
    noise = _noise(noise)
    got, want = [], []
    for point in points:
        try:
            got.append(float(candidate(float(point))))
        except Exception as error:
            return CheckResult(False, f"calling it at {name} = {point:g} raised {type(error).__name__}: {error}",
                               math.inf, float(point))
        want.append(float(expected(float(point))) if callable(expected) else math.nan)
    if not callable(expected):
        want = [float(v) for v in np.atleast_1d(np.asarray(expected, dtype=np.float64))]
        if len(want) != len(got):
            raise ValueError(f"expected must give one value per point: {len(want)} values for {len(got)} points")
    errors = _relative_errors(np.array(got), np.array(want))
    worst = int(np.argmax(errors))
    if errors[worst] <= rtol:
        return CheckResult(True, f"within {_shown(errors[worst], noise, rtol)} relative at all {points.size} points",
                           float(errors[worst]),
                           float(points[worst]))
    return CheckResult(False, f"off by {100 * errors[worst]:.3g}% at {name} = {points[worst]:g}: it gives "
                       f"{got[worst]:.6g}, the reference is {want[worst]:.6g}", float(errors[worst]), float(points[worst]))
