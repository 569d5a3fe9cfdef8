r"""The explorer's pure layer: common random numbers, the state at one setting, exact curves. No plotting.

q = N(0, 1) is what we sample from and p = N(μ, σ²) the target, with a mean gap μ and a standard
deviation ratio σ = σ_p/σ_q.

* :func:`standard_draws` draws the common random numbers once per (seed, n), sorted, with their sample
  moments; :func:`explorer_state` turns them into everything a picture needs at one (μ, σ): the exact
  and Monte Carlo moments of each estimator (the live table), histogram counts on stable bins, and the
  view those bins span.
* :func:`exact_curves` gives the exact relative bias and relative standard deviation of each estimator
  along a grid of gaps (vectorised closed forms, for the figure's curves), :func:`std_crossings` where
  k3's standard deviation crosses k1's, :func:`exact_relative_bias` the same bias in high precision
  (:func:`klviz.exact_moments`), and :func:`monte_carlo_bias` the Monte Carlo points at a few gaps.

Why common random numbers: with :math:`x = \mu_q + \sigma_q z` the log-ratio is the quadratic
:math:`\log r = a + bz + cz^2` (:attr:`klviz.GaussianPair.quadratic`), so a single array of standard
normals z gives the samples for *every* (μ, σ). Moving a slider transforms the same draws instead of
drawing new ones: the histograms slide smoothly rather than jitter, and a step is cheap: k1 and k2 are
polynomials in log r, so their sample mean and variance are polynomials in the sample moments of z
(no pass over the draws), and the histograms are binary searches in the sorted draws. Only k3 needs a
pass (one ``expm1`` per draw).

Why stable views: a full redraw is dominated by tick and text layout; blitting the
changed artists costs a few ms. So the histogram bins span a view that changes only when the data
leave it or shrink to a small part of it (:func:`explorer_state` decides, from the counts it already
has).
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np

from klviz import _checks
from klviz._results import Result, Shown
from klviz.estimators import ESTIMATORS
from klviz.exact import ExactMoments, exact_moments
from klviz.experiment import TableRow
from klviz.montecarlo import MonteCarloEstimate
from klviz.pairs import GaussianPair
from klviz.plots import PALETTE

__all__ = [
    "ESTIMATOR_NAMES",
    "StandardDraws",
    "ExplorerState",
    "BiasPoints",
    "ExactCurves",
    "standard_draws",
    "explorer_state",
    "exact_curves",
    "std_crossings",
    "exact_relative_bias",
    "monte_carlo_bias",
]

#: The estimators the explorer shows, in display order.
ESTIMATOR_NAMES = ("k1", "k2", "k3")
#: Gaps of the exact relative-bias curve and of the Monte Carlo points on the bias panel.
GAP_GRID = np.linspace(0.0, 3.0, 61)
MC_GAPS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: Slider ranges.
GAP_RANGE = (0.0, 3.0)
SIGMA_RATIO_RANGE = (0.5, 2.0)
SAMPLE_SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 200_000, 500_000, 1_000_000)

DEFAULT_BINS = 100
# The view keeps the central COVERAGE of every shown estimator's samples; it is rebuilt when more than
# 1 - COVERAGE of some estimator's samples fall outside it, or when the data shrink below MIN_FILL of
# its width. New views leave a MARGIN (fraction of the data's span) each side: the hysteresis that
# lets a slider move many steps before the next rescale.
COVERAGE = 0.98
MIN_FILL = 0.35
MARGIN = 0.25

# Estimators that are polynomials in log r (coefficients of 1, L, L², ...): their sample mean and variance
# are polynomials in the sample moments of z, so a slider step needs no pass over the draws for them.
_POLYNOMIAL_IN_LOG_RATIO = {"k1": (0.0, -1.0), "k2": (0.0, 0.0, 0.5)}
# The others, evaluated per draw for a sample mean: expm1(L) - L is within ~1e-12 relative of klviz's
# accurate k3 (MEASUREMENTS.md) and 8x faster; a sample mean's own error is ~1e-3.
def _k3_plain(log_ratio: np.ndarray) -> np.ndarray:
    values = np.expm1(log_ratio)
    values -= log_ratio
    return values


_PER_DRAW = {"k3": _k3_plain}
_MOMENT_ORDER = 8  # E[k2²] needs E[z^8]
_VIEW_SAMPLE = 16_384  # draws used to choose a histogram view


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

def _real_in(value, name: str, low: float, high: float | None = None, *, low_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= low if low_open else value < low) or (
        high is not None and value > high
    ):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if high is not None:
            bound += f" and <= {high:g}"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def _sample_size(n) -> int:
    return _checks.integer(n, "n", 2)


def _estimator_names(estimators) -> tuple[str, ...]:
    if isinstance(estimators, str):
        estimators = (estimators,)
    names = tuple(estimators)
    for name in names:
        if name not in ESTIMATOR_NAMES:
            raise ValueError(f"estimators must be names from {list(ESTIMATOR_NAMES)}, got {name!r}")
    # Display order, no duplicates.
    return tuple(name for name in ESTIMATOR_NAMES if name in names)


def _seed(rng) -> int:
    """An int seed: kept if given, else drawn from ``rng`` (SPEC 7: None, int or Generator)."""
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative seed, a Generator or None, got {rng}")
        return int(rng)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")
    return int(np.random.default_rng(rng).integers(2**31))


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class StandardDraws(Result):
    r"""The explorer's common random numbers: n standard normals, drawn once, sorted, read-only.

    Every picture is a deterministic transform of these draws, :math:`\log r = a + b z + c z^2` for the
    current pair, so moving a slider moves the samples instead of replacing them. They are kept sorted
    (the order of independent draws carries no information): then the number of samples with
    :math:`\log r \le \ell` is a binary search, and histograms need no pass over the samples.

    Attributes
    ----------
    z : numpy.ndarray
        Shape (n,), float64, sorted ascending, read-only.
    moments : numpy.ndarray
        The sample moments :math:`\frac1n\sum_i z_i^j`, j = 0..8 (computed once): the sample mean and
        variance of k1 and k2 at any (μ, σ) are polynomials in them.
    """

    z: np.ndarray
    moments: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        z = self.z
        if not isinstance(z, np.ndarray) or z.ndim != 1 or z.dtype != np.float64:
            raise TypeError("z must be a 1-D float64 array of standard normals")
        if z.size < 2:
            raise ValueError(f"z must hold at least 2 values, got {z.size}")
        if not (np.all(np.isfinite(z)) and np.all(z[1:] >= z[:-1])):
            raise ValueError("z must be finite and sorted ascending (use standard_draws)")
        if z.flags.writeable:  # a private, read-only copy: nobody can change the draws under the explorer
            z = z.copy()
            z.flags.writeable = False
            object.__setattr__(self, "z", z)
        power, moments = np.ones_like(z), [1.0]
        for _ in range(_MOMENT_ORDER):
            power *= z
            moments.append(float(np.mean(power)))
        moments = np.array(moments)
        moments.flags.writeable = False
        object.__setattr__(self, "moments", moments)

    @property
    def n(self) -> int:
        return self.z.size

    def _display_fields(self):
        return [("n", self.n)]
def standard_draws(n: int, *, rng=None) -> StandardDraws:
    r"""Draw the explorer's common random numbers: n sorted standard normals.

    Parameters
    ----------
    n : int
        Number of draws; at least 2.
    rng : None, int or numpy.random.Generator
        Source of randomness (SPEC 7).

    Returns
    -------
    StandardDraws

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n < 2``.

    Examples
    --------
    >>> draws = standard_draws(1000, rng=0)
    >>> draws.n, bool(draws.z[0] < draws.z[-1]), draws.z.flags.writeable
    (1000, True, False)
    """
    n = _sample_size(n)
    z = np.random.default_rng(rng).standard_normal(n)
    z.sort()
    z.flags.writeable = False
    return StandardDraws(z)


def _draws(draws) -> StandardDraws:
    if not isinstance(draws, StandardDraws):
        raise TypeError(f"draws must be StandardDraws (from standard_draws(n)), got {type(draws).__name__}")
    return draws


def _log_ratio_count(levels: np.ndarray, quadratic, z: np.ndarray, *, strict: bool = False) -> np.ndarray:
    r"""How many of the sorted draws z have :math:`\log r = a + bz + cz^2 \le` each level (``<`` if strict).

    The set of z where a quadratic is below a level is an interval (c > 0), the outside of one (c < 0) or
    a half-line (c = 0); its ends are the roots, found in the cancellation-free form
    :math:`q = -(b + \mathrm{sign}(b)\sqrt{D})/2`, roots :math:`q/c` and :math:`(a - \ell)/q`. Strictness
    only matters when log r is constant (p = q): otherwise ties have probability zero.
    """
    a, b, c = quadratic
    n = z.size
    if c == 0.0 and b == 0.0:
        return np.where(a < levels if strict else a <= levels, n, 0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # roots at ±inf are fine here
        if c == 0.0:
            threshold = (levels - a) / b
            if b > 0:
                return np.searchsorted(z, threshold, side="left" if strict else "right")
            return n - np.searchsorted(z, threshold, side="right" if strict else "left")
        discriminant = b * b - 4.0 * c * (a - levels)
        real = discriminant >= 0
        q = -0.5 * (b + math.copysign(1.0, b) * np.sqrt(np.where(real, discriminant, 0.0)))
        first = q / c
        second = np.where(q != 0.0, (a - levels) / np.where(q != 0.0, q, 1.0), first)
    low, high = np.minimum(first, second), np.maximum(first, second)
    if c > 0:  # a valley: below the level between the roots
        inside = np.searchsorted(z, high, side="right") - np.searchsorted(z, low, side="left")
        return np.where(real, inside, 0)
    outside = np.searchsorted(z, low, side="right") + n - np.searchsorted(z, high, side="left")
    return np.where(real, outside, n)  # a ridge: below the level outside the roots


def _k3_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The two log-ratios :math:`\ell_- \le 0 \le \ell_+` with :math:`e^\ell - 1 - \ell = y`, for y >= 0.

    Newton's method on klviz's accurate k3 (the function is convex, so it converges from either side),
    started from the asymptotes: :math:`\pm\sqrt{2y}\,(1 \mp \sqrt{2y}/6)` for small y, and
    :math:`-(1 + y) + e^{-(1+y)}`, :math:`\log(1 + y + \log(1 + y))` for large y. Six steps reach a
    relative error below 1e-15 in y for all y from 1e-20 to 1e4 (checked in the tests).
    """
    from klviz.estimators import k3

    y = np.asarray(values, dtype=np.float64)
    root = np.sqrt(2.0 * y)
    small = y < 1.0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        lower = np.where(small, -root * (1.0 + root / 6.0), np.exp(-(1.0 + y)) - (1.0 + y))
        upper = np.where(small, root * (1.0 - root / 6.0), np.log(1.0 + y + np.log1p(y)))
        for _ in range(6):
            # y = 0 gives 0 at once; the guards keep it there instead of dividing by expm1(0) = 0.
            lower = np.where(lower < 0, lower - (k3(lower) - y) / np.expm1(lower), 0.0)
            upper = np.where(upper > 0, upper - (k3(upper) - y) / np.expm1(upper), 0.0)
    return lower, upper


def _estimator_cdf(name: str, levels: np.ndarray, quadratic, z: np.ndarray) -> np.ndarray:
    """How many samples of estimator ``name`` are <= each level, from the sorted draws (no pass over them)."""
    def count(levels, strict=False):
        return _log_ratio_count(levels, quadratic, z, strict=strict)

    if name == "k1":  # -L <= e  <=>  L >= -e
        return z.size - count(-levels, strict=True)
    nonnegative = np.maximum(levels, 0.0)
    if name == "k2":  # L²/2 <= e  <=>  -√(2e) <= L <= √(2e)
        low, high = -np.sqrt(2.0 * nonnegative), np.sqrt(2.0 * nonnegative)
    else:  # k3: e^L - 1 - L <= e  <=>  l-(e) <= L <= l+(e)
        low, high = _k3_inverse(nonnegative)
    return np.where(levels >= 0, count(high) - count(low, strict=True), 0)


def _exact(gap: float, sigma_ratio: float, name: str) -> ExactMoments:
    # Rounded keys: a slider's 1.05 and the grid's 1.05 may differ in the last bit; both hit the cache.
    return _exact_cached(round(gap, 12), round(sigma_ratio, 12), name)


@lru_cache(maxsize=4096)
def _exact_cached(gap: float, sigma_ratio: float, name: str) -> ExactMoments:
    # Slider values repeat as the reader sweeps back and forth: each (gap, ratio) is computed once.
    return exact_moments(GaussianPair(mu_p=gap, sigma_p=sigma_ratio), name)


def _polynomial_product(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Coefficients (lowest degree first, along the last axis) of the product of two polynomials."""
    out = np.zeros(p.shape[:-1] + (p.shape[-1] + q.shape[-1] - 1,))
    for i in range(p.shape[-1]):
        out[..., i:i + q.shape[-1]] += p[..., i:i + 1] * q
    return out


def _in_z(coefficients, quadratic) -> np.ndarray:
    """The polynomial sum_i coefficients[i] L^i, with L = a + b z + c z², as coefficients in z."""
    log_ratio = np.array(quadratic, dtype=np.float64)
    result, power = np.array([coefficients[0]], dtype=np.float64), np.array([1.0])
    for coefficient in coefficients[1:]:
        power = _polynomial_product(power, log_ratio)
        result = np.pad(result, (0, power.size - result.size)) + coefficient * power
    return result


def _monte_carlo(name: str, quadratic, draws: StandardDraws) -> MonteCarloEstimate:
    """Sample mean and standard deviation (ddof 1) of estimator ``name`` over the draws at log r = a + bz + cz²."""
    n = draws.n
    polynomial = _POLYNOMIAL_IN_LOG_RATIO.get(name)
    if polynomial is not None:
        in_z = _in_z(polynomial, quadratic)
        square = _polynomial_product(in_z, in_z)
        mean = float(in_z @ draws.moments[:in_z.size])
        second = float(square @ draws.moments[:square.size])
        variance = max(second - mean * mean, 0.0)
    else:
        # In place, one temporary at a time: at n = 10^5..10^6 the passes over memory are the cost.
        a, b, c = quadratic
        z = draws.z
        log_ratio = np.multiply(z, c if c != 0.0 else b)
        if c != 0.0:
            log_ratio += b
            log_ratio *= z
        log_ratio += a
        values = np.asarray(_PER_DRAW.get(name, ESTIMATORS[name].value)(log_ratio), dtype=np.float64)
        mean = float(np.sum(values)) / n
        values = values - mean if values is log_ratio else np.subtract(values, mean, out=values)
        variance = float(np.einsum("i,i", values, values)) / n  # einsum: no BLAS threads (MEASUREMENTS.md)
    return MonteCarloEstimate(name, n, mean, math.sqrt(variance * n / (n - 1)))


@dataclass(frozen=True, eq=False, repr=False)
class ExplorerState(Result):
    r"""Everything the explorer shows at one setting: the live table and the histograms.

    Attributes
    ----------
    pair : GaussianPair
        q = N(0, 1), p = N(gap, sigma_ratio²).
    kl : float
        The exact :math:`\mathrm{KL}[q, p]`, the quantity all three estimators target.
    n : int
        The number of samples (common draws).
    rows : Mapping[str, TableRow]
        Per estimator: exact moments and the Monte Carlo estimate from the common draws
        (``.mc_relative_bias`` etc. are defined when ``kl > 0``).
    view : (float, float)
        The histogram range.
    edges : numpy.ndarray
        Histogram bin edges spanning ``view``.
    counts : Mapping[str, numpy.ndarray]
        Samples per bin, per estimator; samples outside ``view`` are not counted.
    rescaled : bool
        True when ``view`` was chosen afresh (the data left the previous one, or none was given).
    """

    pair: GaussianPair
    kl: float
    n: int
    rows: Mapping[str, TableRow]
    view: tuple[float, float]
    edges: np.ndarray
    counts: Mapping[str, np.ndarray]
    rescaled: bool

    @property
    def gap(self) -> float:
        return self.pair.mu_p

    @property
    def sigma_ratio(self) -> float:
        return self.pair.sigma_p

    @property
    def estimators(self) -> tuple[str, ...]:
        return tuple(self.rows)

    def outside(self, name: str) -> int:
        """How many of the n samples of ``name`` fall outside the view."""
        return self.n - int(self.counts[name].sum())

    def _display_fields(self):
        return [("gap", self.gap), ("sigma_ratio", self.sigma_ratio), ("KL", self.kl), ("n", self.n),
                ("estimators", Shown(str(list(self.rows)))),
                ("view", Shown(f"({self.view[0]:.4g}, {self.view[1]:.4g})"))]
    def to_text(self) -> str:
        """The live table as plain text (what the notebook prints)."""
        lines = [
            f"q = N(0, 1), p = N({self.gap:g}, {self.sigma_ratio:g}²): true KL[q, p] = {self.kl:.6g}, "
            f"n = {self.n:,}",
            f"{'':4}{'exact mean':>12}{'MC mean ± s.e.':>24}{'bias/true exact':>17}"
            f"{'MC ± s.e.':>20}{'stdev/true exact':>18}{'MC':>9}",
        ]
        for name, row in self.rows.items():
            cells = _row_cells(row)
            lines.append(
                f"{name:4}{cells['exact-mean']:>12}{cells['mc-mean']:>24}{cells['exact-relative-bias']:>17}"
                f"{cells['mc-relative-bias']:>20}{cells['exact-relative-std']:>18}{cells['mc-relative-std']:>9}"
            )
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """The live table as HTML; every value cell carries ``data-estimator``, ``data-quantity`` and
        ``data-value`` (the full-precision number) so that tests and scripts can read it."""
        cell = 'style="text-align: right; padding: 1px 12px"'
        head = "".join(f"<th {cell}>{title}</th>" for title in (
            "exact mean", "MC mean ± s.e.", "bias/true exact", "bias/true MC ± s.e.", "stdev/true exact",
            "stdev/true MC"))
        body = []
        for name, row in self.rows.items():
            values = _row_values(row)
            tds = "".join(
                f'<td {cell} data-estimator="{name}" data-quantity="{key}" data-value="{values[key]!r}">'
                f"{html.escape(text)}</td>"
                for key, text in _row_cells(row).items()
            )
            body.append(f'<tr><th style="color: {PALETTE[name]}; text-align: left">{name}</th>{tds}</tr>')
        caption = (f'true KL[q, p] = <span data-quantity="true-kl" data-value="{self.kl!r}">{self.kl:.6g}</span>'
                   f" · q = N(0, 1), p = N({self.gap:.2f}, {self.sigma_ratio:.2f}²) · n = {self.n:,}")
        return (f'<table class="klviz-live-table" style="font-variant-numeric: tabular-nums">'
                f'<caption style="caption-side: top; text-align: left">{caption}</caption>'
                f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _row_values(row: TableRow) -> dict[str, float]:
    defined = row.kl > 0
    return {
        "exact-mean": row.exact.mean,
        "mc-mean": row.monte_carlo.mean,
        "exact-relative-bias": row.exact.relative_bias,
        "mc-relative-bias": row.mc_relative_bias if defined else math.nan,
        "exact-relative-std": row.exact.relative_std,
        "mc-relative-std": row.mc_relative_std if defined else math.nan,
    }


def _fixed(value: float, digits: int) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000000"


def _general(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return _fixed(value, 0)
    return f"{value:.{digits}g}"


def _row_cells(row: TableRow) -> dict[str, str]:
    values = _row_values(row)
    stderr = row.monte_carlo.stderr
    rel_stderr = stderr / row.kl if row.kl > 0 else math.nan
    return {
        "exact-mean": _general(values["exact-mean"], 6),
        "mc-mean": f"{_general(values['mc-mean'], 6)} ± {_general(stderr, 2)}",
        "exact-relative-bias": _fixed(values["exact-relative-bias"], 6),
        "mc-relative-bias": f"{_fixed(values['mc-relative-bias'], 4)} ± {_general(rel_stderr, 2)}",
        "exact-relative-std": _general(values["exact-relative-std"], 5),
        "mc-relative-std": _general(values["mc-relative-std"], 5),
    }


def _choose_view(values: Mapping[str, np.ndarray], marks) -> tuple[float, float]:
    """The central COVERAGE of every estimator's values, the marks (0, the true KL, the means), plus MARGIN."""
    tail = (1.0 - COVERAGE) / 2
    lows, highs = list(marks), list(marks)
    for sample in values.values():
        low, high = np.quantile(sample, [tail, 1.0 - tail])
        lows.append(low)
        highs.append(high)
    low, high = min(lows), max(highs)
    span = high - low
    if not span > 0:  # p = q: every estimate is 0
        span = max(abs(low), 1.0) * 0.1
    return (float(low - MARGIN * span), float(high + MARGIN * span))


def _view_fits(cdfs: Mapping[str, np.ndarray], edges: np.ndarray, n: int, marks) -> bool:
    """Whether the view still shows the data well, judged from the counts at its edges (no sorting).

    ``cdfs[name][i]`` is how many samples of ``name`` are <= ``edges[i]``.
    """
    low_edge, high_edge = edges[0], edges[-1]
    if any(not low_edge <= mark <= high_edge for mark in marks):
        return False
    tail = (1.0 - COVERAGE) / 2 * n
    lows, highs = list(marks), list(marks)
    for cdf in cdfs.values():
        if cdf[0] + (n - cdf[-1]) > 2 * tail:
            return False  # the data have left the view
        # The central COVERAGE of the samples, at bin resolution.
        lows.append(edges[np.searchsorted(cdf, tail)])
        highs.append(edges[min(np.searchsorted(cdf, n - tail), edges.size - 1)])
    return max(highs) - min(lows) >= MIN_FILL * (high_edge - low_edge)


def explorer_state(gap: float, sigma_ratio: float, draws: StandardDraws, *, estimators=ESTIMATOR_NAMES,
                   view: tuple[float, float] | None = None, bins: int = DEFAULT_BINS) -> ExplorerState:
    r"""The explorer at one setting, computed from the common draws: the update behind every slider step.

    With q = N(0, 1) and p = N(gap, sigma_ratio²), the samples are :math:`x_i = z_i` and
    :math:`\log r_i = a + b z_i + c z_i^2`; each estimator is evaluated on them (klviz's accurate
    forms), giving the Monte Carlo mean and standard deviation. Exact moments come from
    :func:`klviz.exact_moments` (for unit variances, k2's relative bias is :math:`\mu^2/4`).

    Histogram counts on ``bins`` equal bins over ``view`` need no pass over the samples: an estimator
    is at most e exactly where log r lies in an interval (:math:`k_1`: :math:`[-e, \infty)`; :math:`k_2`:
    :math:`[-\sqrt{2e}, \sqrt{2e}]`; :math:`k_3`: between the two roots of :math:`e^\ell - 1 - \ell = e`),
    and log r, a quadratic in z, lies below a level on an interval of z, found by binary search in the
    sorted draws. Bins are (left, right]. The view is kept while it fits the data (at most 2% of any
    estimator's samples outside it, the central 98% filling at least 35% of it, 0, the true KL and the
    means inside); otherwise a new one is chosen and ``rescaled`` is set. Cost: binary searches in the
    sorted draws (k1 and k2 from the sample moments of z, one pass for k3), more when the view is re-chosen.

    Parameters
    ----------
    gap : float
        The mean gap μ = mu_p - mu_q; >= 0.
    sigma_ratio : float
        σ_p/σ_q; positive.
    draws : StandardDraws
        The common random numbers, from :func:`standard_draws`.
    estimators : sequence of str
        Which of ``"k1"``, ``"k2"``, ``"k3"`` to compute.
    view : (float, float), optional
        The current histogram range; ``None`` chooses one.
    bins : int
        Number of histogram bins.

    Returns
    -------
    ExplorerState

    Raises
    ------
    TypeError, ValueError
        For a bad ``gap``, ``sigma_ratio``, ``draws``, ``estimators``, ``view`` or ``bins``.

    Examples
    --------
    >>> state = explorer_state(1.0, 1.0, standard_draws(10_000, rng=0))
    >>> state.kl, round(state.rows["k2"].exact.relative_bias, 12)
    (0.5, 0.25)
    >>> int(state.counts["k3"].sum() + state.outside("k3"))
    10000
    """
    gap = _real_in(gap, "gap", 0.0)
    sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", 0.0, low_open=True)
    draws = _draws(draws)
    names = _estimator_names(estimators)
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if view is not None:
        if len(view) != 2 or not all(math.isfinite(v) for v in view) or not view[0] < view[1]:
            raise ValueError(f"view must be (low, high) with finite low < high, got {view!r}")
        view = (float(view[0]), float(view[1]))

    pair = GaussianPair(mu_p=gap, sigma_p=sigma_ratio)
    kl = pair.kl_qp()
    quadratic = pair.quadratic
    rows = {
        name: TableRow(gap, kl, _exact(gap, sigma_ratio, name), _monte_carlo(name, quadratic, draws), None)
        for name in names
    }
    marks = [0.0, kl] + [row.monte_carlo.mean for row in rows.values()]

    def cumulative_counts(view):
        edges = np.linspace(view[0], view[1], bins + 1)
        return edges, {name: _estimator_cdf(name, edges, quadratic, draws.z) for name in names}

    rescaled = view is None
    if view is not None:
        edges, cdfs = cumulative_counts(view)
        rescaled = bool(names) and not _view_fits(cdfs, edges, draws.n, marks)
    if rescaled:
        # Only here are per-draw values needed, for the quantiles that place the view. Every k-th of the
        # sorted draws is a sample stratified in z: its quantiles are within a fraction of a percent of the
        # full sample's, and the view leaves a 25% margin anyway.
        stride = max(1, draws.n // _VIEW_SAMPLE)
        log_ratio = pair.log_ratio_from_standard(draws.z[stride // 2::stride])
        values = {name: np.asarray(ESTIMATORS[name].value(log_ratio), dtype=np.float64) for name in names}
        view = _choose_view(values, marks)
        edges, cdfs = cumulative_counts(view)
    counts = {name: np.diff(cdf) for name, cdf in cdfs.items()}
    return ExplorerState(pair, kl, draws.n, rows, view, edges, counts, rescaled)


def exact_relative_bias(estimator: str, gaps, sigma_ratio: float = 1.0) -> np.ndarray:
    r"""Exact relative bias (E[k] - KL)/KL of an estimator along a grid of mean gaps.

    For k2 and unit variances this is :math:`\mu^2/4`; k1 and k3 are unbiased (0). ``nan`` where
    p = q (KL = 0). Each point is a closed form in high precision (cached).

    Parameters
    ----------
    estimator : str
        ``"k1"``, ``"k2"`` or ``"k3"``.
    gaps : array_like
        Mean gaps μ >= 0.
    sigma_ratio : float
        σ_p/σ_q; positive.

    Returns
    -------
    numpy.ndarray
        One relative bias per gap.

    Raises
    ------
    ValueError
        For an unknown estimator, a negative gap or a non-positive ``sigma_ratio``.

    Examples
    --------
    >>> exact_relative_bias("k2", [0.5, 2.0]).round(12)
    array([0.0625, 1.    ])
    """
    name = _estimator_names((estimator,))[0]
    sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", 0.0, low_open=True)
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.ndim != 1 or not (np.all(np.isfinite(gaps)) and np.all(gaps >= 0)):
        raise ValueError("gaps must be a 1-D array of finite gaps >= 0")
    return np.array([_exact(float(gap), sigma_ratio, name).relative_bias for gap in gaps])


@dataclass(frozen=True, repr=False)
class BiasPoints(Result):
    """Monte Carlo relative bias (± its standard error) and relative standard deviation, per estimator,
    at a few gaps."""

    gaps: np.ndarray
    relative_bias: Mapping[str, np.ndarray]
    relative_stderr: Mapping[str, np.ndarray]
    relative_std: Mapping[str, np.ndarray]

    def _display_fields(self):
        return [("gaps", Shown(str([float(g) for g in np.round(self.gaps, 6)]))),
                ("estimators", Shown(str(list(self.relative_bias))))]
def monte_carlo_bias(gaps, sigma_ratio: float, draws: StandardDraws, *, estimators=ESTIMATOR_NAMES) -> BiasPoints:
    r"""Monte Carlo relative bias :math:`(\bar k - \mathrm{KL})/\mathrm{KL}` at several gaps, from the same draws.

    The points of the bias-vs-gap and stdev-vs-gap panels: computed once per (draws, σ), not on every
    slider step. The standard error of each bias point is :math:`s/(\sqrt n\,\mathrm{KL})`; the relative
    standard deviation is :math:`s/\mathrm{KL}`.

    Parameters
    ----------
    gaps : array_like
        Mean gaps > 0 (or >= 0 when ``sigma_ratio`` != 1, so that KL > 0).
    sigma_ratio : float
        σ_p/σ_q; positive.
    draws : StandardDraws
        The common random numbers, from :func:`standard_draws`.
    estimators : sequence of str

    Returns
    -------
    BiasPoints

    Raises
    ------
    TypeError, ValueError
        For bad arguments, or a gap where p = q (KL = 0, no relative bias).

    Examples
    --------
    >>> points = monte_carlo_bias([1.0], 1.0, standard_draws(100_000, rng=0))
    >>> bool(abs(points.relative_bias["k2"][0] - 0.25) < 4 * points.relative_stderr["k2"][0])
    True
    """
    sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", 0.0, low_open=True)
    draws = _draws(draws)
    names = _estimator_names(estimators)
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.ndim != 1 or not (np.all(np.isfinite(gaps)) and np.all(gaps >= 0)):
        raise ValueError("gaps must be a 1-D array of finite gaps >= 0")
    bias = {name: np.empty(gaps.size) for name in names}
    stderr = {name: np.empty(gaps.size) for name in names}
    spread = {name: np.empty(gaps.size) for name in names}
    for i, gap in enumerate(gaps):
        pair = GaussianPair(mu_p=float(gap), sigma_p=sigma_ratio)
        kl = pair.kl_qp()
        if not kl > 0:
            raise ValueError(f"gaps must give p != q: at gap {gap:g} with sigma_ratio 1, KL = 0")
        for name in names:
            estimate = _monte_carlo(name, pair.quadratic, draws)
            bias[name][i] = (estimate.mean - kl) / kl
            stderr[name][i] = estimate.stderr / kl
            spread[name][i] = estimate.std / kl
    return BiasPoints(gaps, bias, stderr, spread)


# --------------------------------------------------------------------------------------------------
# Exact curves along the gap (vectorised closed forms, for the figure)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class ExactCurves(Result):
    r"""Exact relative bias and relative standard deviation of k1, k2, k3 along a grid of gaps, at one σ.

    Attributes
    ----------
    gaps : numpy.ndarray
    sigma_ratio : float
    kl : numpy.ndarray
        :math:`\mathrm{KL}[q, p]` at each gap.
    relative_bias, relative_std : Mapping[str, numpy.ndarray]
        :math:`(\mathbb{E}[k] - \mathrm{KL})/\mathrm{KL}` and :math:`\mathrm{sd}(k)/\mathrm{KL}`; ``nan``
        where KL = 0, ``inf`` where the variance diverges (k3 for σ ≥ √2).
    """

    gaps: np.ndarray
    sigma_ratio: float
    kl: np.ndarray
    relative_bias: Mapping[str, np.ndarray]
    relative_std: Mapping[str, np.ndarray]

    def _display_fields(self):
        return [("gaps", Shown(f"{self.gaps.size} from {self.gaps[0]:g} to {self.gaps[-1]:g}")),
                ("sigma_ratio", self.sigma_ratio)]
_NORMAL_MOMENTS = np.array([1.0, 0.0, 1.0, 0.0, 3.0, 0.0, 15.0, 0.0, 105.0])  # E[z^j], z ~ N(0, 1)


def _gaussian_variances(gaps: np.ndarray, sigma_ratio: float):
    r"""KL[q,p], E[k2], and Var of k1, k2, k3 for q = N(0,1), p = N(μ, σ²), vectorised over μ.

    With :math:`L = a + bz + cz^2` (a = -log σ - μ²/(2σ²), b = μ/σ², c = (1 - 1/σ²)/2):
    :math:`\mathrm{Var}\,k_1 = b^2 + 2c^2`; :math:`\mathbb{E}[k_2] = \tfrac12\mathbb{E}[L^2]` and
    :math:`\mathrm{Var}\,k_2 = \tfrac14(\mathbb{E}[L^4] - \mathbb{E}[L^2]^2)` from the normal moments;
    :math:`\mathrm{Var}\,k_3 = (\mathbb{E}[r^2] - 1) + \mathrm{Var}\,L - 2\,\mathrm{Cov}(r, L)` with
    :math:`\mathrm{Cov}(r, L) = \mathbb{E}_p[L] - \mathbb{E}_q[L] = \mathrm{KL}[p,q] + \mathrm{KL}[q,p]` and
    :math:`\mathbb{E}[r^2] = e^{2a + 2b^2/(1-4c)}/\sqrt{1 - 4c}`, infinite unless σ² < 2. For σ = 1 this is
    :math:`e^{\mu^2} - 1 - \mu^2`.
    """
    from klviz.estimators import k3 as k3_value

    sigma2 = sigma_ratio * sigma_ratio
    log_s2 = -2.0 * math.log(sigma_ratio)  # log (σ_q/σ_p)²
    a = -0.5 * gaps**2 / sigma2 + 0.5 * log_s2
    b = gaps / sigma2
    c = -0.5 * math.expm1(log_s2)
    kl_qp = 0.5 * (gaps**2 / sigma2 + float(k3_value(log_s2)))
    kl_pq = 0.5 * (gaps**2 + float(k3_value(-log_s2)))
    zeros = np.zeros_like(gaps)
    log_ratio = np.stack([a, b, zeros + c], axis=-1)
    square = _polynomial_product(log_ratio, log_ratio)
    fourth = _polynomial_product(square, square)
    second_moment = square @ _NORMAL_MOMENTS[:5]
    fourth_moment = fourth @ _NORMAL_MOMENTS
    var_log_ratio = b**2 + 2.0 * c * c
    var_k2 = 0.25 * (fourth_moment - second_moment**2)
    one_minus_4c = 1.0 - 4.0 * c
    if one_minus_4c > 0:
        # E[r²] - 1 as an expm1: its terms then cancel only against the small ones that follow.
        with np.errstate(over="ignore"):  # a divergent-looking E[r²] beyond float range is inf, as it should be
            chi2 = np.expm1(2.0 * a + 2.0 * b**2 / one_minus_4c - 0.5 * math.log(one_minus_4c))
        var_k3 = chi2 + var_log_ratio - 2.0 * (kl_pq + kl_qp)
    else:
        var_k3 = np.full_like(gaps, np.inf)
    variances = {"k1": zeros + var_log_ratio, "k2": var_k2, "k3": var_k3}
    return kl_qp, 0.5 * second_moment, {name: np.maximum(v, 0.0) for name, v in variances.items()}


def exact_curves(gaps, sigma_ratio: float = 1.0) -> ExactCurves:
    r"""Exact relative bias and relative standard deviation of k1, k2, k3 along a grid of gaps.

    Closed forms for q = N(0, 1), p = N(μ, σ²), vectorised over μ (double precision, for a
    grid: the figure's curves); :func:`klviz.exact_moments` gives the same values in high precision (the
    table). k1 and k3 are unbiased; for σ = 1, :math:`\mathrm{Var}\,k_1 = \mu^2`,
    :math:`\mathrm{Var}\,k_3 = e^{\mu^2} - 1 - \mu^2` and k2's relative bias is μ²/4.

    Parameters
    ----------
    gaps : array_like
        Mean gaps μ >= 0.
    sigma_ratio : float
        σ_p/σ_q; positive.

    Returns
    -------
    ExactCurves

    Raises
    ------
    TypeError, ValueError
        For a non-real or non-positive ``sigma_ratio``, or gaps that are not finite and >= 0.

    Examples
    --------
    >>> curves = exact_curves([1.0, 2.0])
    >>> curves.relative_std["k1"].round(12), curves.relative_bias["k2"].round(12)
    (array([2., 1.]), array([0.25, 1.  ]))
    """
    sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", 0.0, low_open=True)
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.ndim != 1 or not (np.all(np.isfinite(gaps)) and np.all(gaps >= 0)):
        raise ValueError("gaps must be a 1-D array of finite gaps >= 0")
    kl, mean_k2, variances = _gaussian_variances(gaps, sigma_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):  # KL = 0 at p = q: nan, as the docstring says
        positive = kl > 0
        relative = {name: np.where(positive, np.sqrt(v) / np.where(positive, kl, 1.0), np.nan)
                    for name, v in variances.items()}
        k2_bias = np.where(positive, (mean_k2 - kl) / np.where(positive, kl, 1.0), np.nan)
    unbiased = np.where(positive, 0.0, np.nan)
    bias = {"k1": unbiased, "k2": k2_bias, "k3": unbiased}
    return ExactCurves(gaps, sigma_ratio, kl, bias, relative)


def std_crossings(sigma_ratio: float = 1.0, gap_range: tuple[float, float] = (0.0, 3.0)) -> tuple[float, ...]:
    r"""The gaps in ``gap_range`` where k3's exact standard deviation crosses k1's.

    For σ = 1 the single crossing solves :math:`e^{x} - 1 - x = x` with :math:`x = \mu^2`, i.e.
    :math:`e^x = 1 + 2x`: μ ≈ 1.1209; beyond it k1 has the smaller variance. Found from the closed forms
    of :func:`exact_curves` on a grid of 601 gaps, each sign change refined by Brent's method. Empty when
    the two never cross (including σ ≥ √2, where k3's variance is infinite at every gap).

    Parameters
    ----------
    sigma_ratio : float
        σ_p/σ_q; positive.
    gap_range : (float, float)
        The gaps searched.

    Returns
    -------
    tuple of float

    Examples
    --------
    >>> [round(gap, 6) for gap in std_crossings(1.0)]
    [1.120906]
    """
    from scipy.optimize import brentq

    sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", 0.0, low_open=True)
    low, high = (_real_in(gap_range[0], "gap_range[0]", 0.0), _real_in(gap_range[1], "gap_range[1]", 0.0))
    if not low < high:
        raise ValueError(f"gap_range must be (low, high) with low < high, got {gap_range!r}")

    def difference(gaps):
        _kl, _mean, variances = _gaussian_variances(np.atleast_1d(np.asarray(gaps, dtype=np.float64)), sigma_ratio)
        return variances["k3"] - variances["k1"]

    grid = np.linspace(low, high, 601)
    with np.errstate(invalid="ignore"):
        values = difference(grid)
    if not np.all(np.isfinite(values)):
        return ()
    crossings = []
    # Near p = q both variances vanish and their difference is rounding: only sign changes where k1's
    # variance is clearly resolved count.
    scale = _gaussian_variances(grid, sigma_ratio)[2]["k1"]
    signs = np.sign(np.where(np.abs(values) > 1e-9 * np.maximum(scale, 1e-300), values, 0.0))
    for i in np.nonzero(signs[:-1] * signs[1:] < 0)[0]:
        crossings.append(float(brentq(lambda g: float(difference(g)[0]), grid[i], grid[i + 1], xtol=1e-13)))
    return tuple(crossings)
