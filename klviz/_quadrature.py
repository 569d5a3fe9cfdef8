r"""The one quadrature rule of klviz, and the one rule for deciding that an integral diverges.

**Integration.** Adaptive tanh-sinh (``scipy.integrate.tanhsinh``) on pieces between break points
(support edges, kinks of log r, the median...). Its nodes cluster at the ends of each piece, so
integrable endpoint singularities and kinks *at* break points cost nothing. A sum of pieces counts as
converged when every piece reached the relative tolerance by tanh-sinh's own verdict, or has an error
negligible against the whole (a piece that is ~0 cannot reach a relative tolerance of its own), or — where
the integrand is known only to a few digits because its inputs are rounded (two close log-densities) —
when its error is within the integrand's own rounding noise, given as ``noise``. Otherwise
``ArithmeticError``: klviz never returns an unconverged number.

**Divergence.** An integral :math:`\int_0 G(s)\,ds` near an end converges only if |G| falls faster than
1/s, s being the distance to a finite end or 1/|x| at an infinite one. :func:`tail_converges` measures
the log-log slope of |G| between two points far into the tail: exact for power laws, and within
:data:`SLOPE_TOLERANCE` of the truth for :math:`1/(s\sqrt{\log 1/s})`-type boundaries.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

RTOL = 1e-12
SLOPE_TOLERANCE = 0.005
# tanh-sinh estimates its error from the change between levels; from level 2 that estimate can be
# optimistic by orders of magnitude (a smooth piece reported 1e-14 while 2.6e-11 off). From level 4 on
# (259 nodes a piece) it was reliable in every case tested.
MINLEVEL = 4
#: The relative accuracy the exact moments promise; noise-limited integrals must stay below it.
PROMISED_RTOL = 1e-8


def tanhsinh_pieces(func: Callable, edges: Sequence[float], *, rtol: float = RTOL, log: bool = False):
    """tanh-sinh results on [edges[i], edges[i+1]] (empty pieces skipped)."""
    from scipy.integrate import tanhsinh

    results = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            if log:
                results.append(tanhsinh(func, a, b, log=True, rtol=math.log(rtol), atol=-math.inf,
                                        minlevel=MINLEVEL))
            else:
                results.append(tanhsinh(func, a, b, rtol=rtol, atol=0.0, minlevel=MINLEVEL))
    return results


def _piece_ok(result, total: float, noise: float) -> bool:
    integral, error = float(result.integral), float(result.error)
    if np.all(result.status == 0) or (integral == 0.0 and error == 0.0):
        return True
    return error <= RTOL * abs(total) or error <= noise


def combine(results, *, noise: float = 0.0) -> tuple[float, bool]:
    """The sum of piecewise integrals, and whether it is converged (see the module docstring)."""
    total = math.fsum(float(result.integral) for result in results)
    return total, all(_piece_ok(result, total, noise) for result in results)


def combine_log(results) -> tuple[float, bool]:
    """log of the sum of piecewise integrals taken with ``log=True``, and whether it is converged."""
    from scipy.special import logsumexp

    logs = np.array([float(np.real(result.integral)) for result in results])
    if not logs.size:
        return -math.inf, True
    total = float(logsumexp(logs))
    ok = all(np.all(result.status == 0) or float(np.real(result.error)) <= total + math.log(RTOL)
             for result in results)
    return total, ok


def integrate(func: Callable, edges: Sequence[float], what: str, *, noise: float = 0.0) -> float:
    """∫ func over the pieces; ArithmeticError unless converged."""
    total, ok = combine(tanhsinh_pieces(func, edges), noise=noise)
    if not ok:
        raise_unconverged(what)
    return total


def raise_unconverged(what: str):
    raise ArithmeticError(
        f"quadrature did not converge for {what}: the integrand is too close to non-integrable (or too "
        "noisy) for a reliable value"
    )


def tail_converges(log_abs_values: np.ndarray, log_distances: np.ndarray, *,
                   tolerance: float = SLOPE_TOLERANCE) -> bool | None:
    r"""Whether :math:`\int_0 G(s)\,ds` converges, from log|G| at two distances s₁ > s₂ near the end.

    Convergent iff the log-log slope of |G| is above -1 + ``tolerance`` (default :data:`SLOPE_TOLERANCE`,
    for slowly varying factors such as log 1/s; exact power laws need none). None when the
    values cannot tell (NaN); a value of +inf there means divergence, -inf at the far point convergence.
    """
    first, second = (float(v) for v in log_abs_values)
    if math.isnan(first) or math.isnan(second):
        return None
    if second == math.inf or first == math.inf:
        return False
    if second == -math.inf:
        return True
    if first == -math.inf:
        return None
    slope = (second - first) / (float(log_distances[1]) - float(log_distances[0]))
    return bool(slope > -1.0 + tolerance)


def growth_rate(log_abs: Callable, side: int) -> float:
    r"""The exponential rate t of |g(L)| ~ e^{tL} |L|^j as L -> side·∞, rounded to an integer when within
    0.05 of one (rates of exp-polynomials are integers; the log factor moves the measured slope by j/L)."""
    points = side * np.array([300.0, 600.0])
    with np.errstate(all="ignore"):
        values = np.asarray(log_abs(points), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return math.inf if np.any(values == np.inf) else 0.0
    slope = float((values[1] - values[0]) / (points[1] - points[0]))
    nearest = round(slope)
    return float(nearest) if abs(slope - nearest) < 0.05 else slope
