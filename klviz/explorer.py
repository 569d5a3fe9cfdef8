r"""The bias explorer: how k1, k2 and k3 behave as p moves away from q, live.

q = N(0, 1) is what we sample from and p = N(μ, σ²) the target, with a mean gap μ and a standard
deviation ratio σ = σ_p/σ_q. Three layers, each usable on its own:

* **Pure functions** — :func:`standard_draws` draws the common random numbers once per (seed, n);
  :func:`explorer_state` turns them into everything a picture needs at one (μ, σ): the exact and
  Monte Carlo moments of each estimator (the live table), histogram counts on stable bins, and the
  view those bins span; :func:`exact_relative_bias` and :func:`monte_carlo_bias` give the bias-vs-gap
  panel. No plotting, no widgets: they are tested directly.
* :class:`ExplorerFigure` — the matplotlib figure. Artists are built once and updated in place
  (``StepPatch.set_data``, ``Line2D.set_xdata``, ``Text.set_text``); when only the data changed, the
  static background (axes, ticks, labels) is restored from a saved copy and only the changed artists
  are drawn and blitted.
* :class:`BiasExplorer` — the ipywidgets glue: sliders, toggles and a live HTML table around an
  :class:`ExplorerFigure`. ipywidgets (and, for the live canvas, ipympl) are imported only here.

Why common random numbers: with :math:`x = \mu_q + \sigma_q z` the log-ratio is the quadratic
:math:`\log r = a + bz + cz^2` (:attr:`klviz.GaussianPair.quadratic`), so a single array of standard
normals z gives the samples for *every* (μ, σ). Moving a slider transforms the same draws instead of
drawing new ones: the histograms slide smoothly rather than jitter, and the slider step costs a few
vector operations instead of n new normals.

Why stable views: a full redraw costs ~100 ms, almost all of it tick and text layout; blitting the
changed artists costs a few ms. So the histogram bins span a view that changes only when the data
leave it or shrink to a small part of it (:func:`explorer_state` decides, from the counts it already
has), and the bias panel's axes depend only on σ.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np

from klviz import _checks
from klviz.estimators import ESTIMATORS
from klviz.exact import ExactMoments, exact_moments
from klviz.experiment import TableRow
from klviz.montecarlo import MonteCarloEstimate
from klviz.pairs import GaussianPair
from klviz.plots import PALETTE, TRUE_KL_COLOR

__all__ = [
    "ESTIMATOR_NAMES",
    "StandardDraws",
    "ExplorerState",
    "BiasPoints",
    "standard_draws",
    "explorer_state",
    "exact_relative_bias",
    "monte_carlo_bias",
    "ExplorerArtists",
    "ExplorerFigure",
    "BiasExplorer",
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

# Horizontal dodge of each estimator's points on the bias panel, so that their error bars don't overlap.
_DODGE = {"k1": -0.04, "k2": 0.0, "k3": 0.04}
_LABELS = {"k1": "k1 = −log r", "k2": "k2 = ½ (log r)²", "k3": "k3 = (r − 1) − log r"}


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

@dataclass(frozen=True, eq=False)
class StandardDraws:
    r"""The explorer's common random numbers: n standard normals, drawn once, sorted, read-only.

    Every picture is a deterministic transform of these draws, :math:`\log r = a + b z + c z^2` for the
    current pair, so moving a slider moves the samples instead of replacing them. They are kept sorted
    (the order of independent draws carries no information): then the number of samples with
    :math:`\log r \le \ell` is a binary search, and histograms need no pass over the samples.

    Attributes
    ----------
    z : numpy.ndarray
        Shape (n,), float64, sorted ascending, read-only.
    """

    z: np.ndarray

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

    @property
    def n(self) -> int:
        return self.z.size

    def __repr__(self) -> str:
        return f"StandardDraws(n={self.n:,})"


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


def _monte_carlo(name: str, values: np.ndarray) -> MonteCarloEstimate:
    return MonteCarloEstimate(name, values.size, float(np.mean(values)), float(np.std(values, ddof=1)))


@dataclass(frozen=True, eq=False)
class ExplorerState:
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

    def __repr__(self) -> str:
        return (f"ExplorerState(gap={self.gap:g}, sigma_ratio={self.sigma_ratio:g}, KL={self.kl:.6g}, "
                f"n={self.n}, estimators={list(self.rows)}, view=({self.view[0]:.4g}, {self.view[1]:.4g}))")

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
    means inside); otherwise a new one is chosen and ``rescaled`` is set. Cost at n = 200,000: ~7 ms,
    half of it evaluating k3.

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
    kl = pair.kl()
    quadratic = pair.quadratic
    log_ratio = pair.log_ratio_from_standard(draws.z)
    values = {name: np.asarray(ESTIMATORS[name].function(log_ratio), dtype=np.float64) for name in names}
    rows = {
        name: TableRow(gap, kl, _exact(gap, sigma_ratio, name), _monte_carlo(name, values[name]), None)
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
        view = _choose_view(values, marks)
        edges, cdfs = cumulative_counts(view)
    counts = {name: np.diff(cdf) for name, cdf in cdfs.items()}
    return ExplorerState(pair, kl, draws.n, rows, view, edges, counts, rescaled)


def exact_relative_bias(estimator: str, gaps, sigma_ratio: float = 1.0) -> np.ndarray:
    r"""Exact relative bias (E[k] - KL)/KL of an estimator along a grid of mean gaps.

    For k2 and unit variances this is :math:`\mu^2/4`; k1 and k3 are unbiased (0). ``nan`` where
    p = q (KL = 0). Each point is a closed form in high precision (~1 ms, cached).

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


@dataclass(frozen=True)
class BiasPoints:
    """Monte Carlo relative bias and its standard error, per estimator, at a few gaps."""

    gaps: np.ndarray
    relative_bias: Mapping[str, np.ndarray]
    relative_stderr: Mapping[str, np.ndarray]

    def __repr__(self) -> str:
        return f"BiasPoints(gaps={list(np.round(self.gaps, 6))}, estimators={list(self.relative_bias)})"


def monte_carlo_bias(gaps, sigma_ratio: float, draws: np.ndarray, *, estimators=ESTIMATOR_NAMES) -> BiasPoints:
    r"""Monte Carlo relative bias :math:`(\bar k - \mathrm{KL})/\mathrm{KL}` at several gaps, from the same draws.

    The points of the bias-vs-gap panel: computed once per (draws, σ), not on every slider step.
    The standard error of each point is :math:`s/(\sqrt n\,\mathrm{KL})`.

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
    for i, gap in enumerate(gaps):
        pair = GaussianPair(mu_p=float(gap), sigma_p=sigma_ratio)
        kl = pair.kl()
        if not kl > 0:
            raise ValueError(f"gaps must give p != q: at gap {gap:g} with sigma_ratio 1, KL = 0")
        log_ratio = pair.log_ratio_from_standard(draws.z)
        for name in names:
            estimate = _monte_carlo(name, np.asarray(ESTIMATORS[name].function(log_ratio), dtype=np.float64))
            bias[name][i] = (estimate.mean - kl) / kl
            stderr[name][i] = estimate.stderr / kl
    return BiasPoints(gaps, bias, stderr)


# --------------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ExplorerArtists:
    """Handles on the figure's artists: built once, then only their data change."""

    histogram: Mapping[str, object]  # StepPatch per estimator
    mean: Mapping[str, object]  # Line2D: the estimator's sample mean
    true_kl: Mapping[str, object]  # Line2D: the true KL, in each histogram panel
    live: Mapping[str, object]  # Line2D: Monte Carlo relative bias at the current gap
    points: Mapping[str, object]  # Line2D: Monte Carlo relative bias at MC_GAPS
    errorbars: Mapping[str, object]  # LineCollection: their ± 1 s.e. bars
    exact_curve: object  # Line2D: k2's exact relative bias vs gap
    exact_point: object  # Line2D: k2's exact relative bias at the current gap
    gap_line: object  # Line2D: the current gap
    title: object  # Text

    def dynamic(self) -> list:
        """The artists a slider step changes: redrawn and blitted over the saved background."""
        per_estimator = [group[name] for group in (self.histogram, self.mean, self.true_kl, self.live)
                         for name in ESTIMATOR_NAMES]
        return per_estimator + [self.exact_point, self.gap_line, self.title]


def _new_figure(figsize):
    import matplotlib.pyplot as plt

    # ioff: the explorer places the canvas itself; pyplot must not also show it at the end of the cell.
    with plt.ioff():
        return plt.figure(figsize=figsize)


class ExplorerFigure:
    r"""The explorer's figure: three histogram panels (k1, k2, k3) and the bias-vs-gap panel.

    Left, the per-sample estimates of each estimator on shared bins, each scaled to its tallest bin,
    with the sample mean (solid) and the true KL (dashed). Right, the relative bias
    :math:`(\mathbb{E}[k] - \mathrm{KL})/\mathrm{KL}` against the mean gap: k2's exact curve
    (:math:`\mu^2/4` for unit variances), k1 and k3 at 0, Monte Carlo points ± 1 standard error at a few
    gaps, and the current gap with the live Monte Carlo values.

    :meth:`update` is one slider step: recompute with :func:`explorer_state` on the common draws,
    set the new data on the existing artists, and blit them over the saved background; a full draw
    happens only when a view changes (rescale, σ, n, seed, toggles).

    Parameters
    ----------
    gap, sigma_ratio : float
        Initial mean gap (in [0, 3]) and σ_p/σ_q (in [0.5, 2]).
    n : int
        Sample size.
    rng : None, int or numpy.random.Generator
        Seed of the common draws (SPEC 7); a Generator or None is turned into an int seed once.
    estimators : sequence of str
        The estimators shown.
    figure : matplotlib Figure, optional
        Draw into this figure (it is cleared); default: a new pyplot figure, so the active backend
        (ipympl, inline, Agg) decides where it appears.
    bins : int
        Histogram bins.
    blit : bool
        Redraw only the changing artists over a saved background (default); False draws the whole
        figure at every step (slower; for comparison, or a backend where blitting misbehaves).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> view = ExplorerFigure(n=10_000, rng=0)
    >>> patch = view.artists.histogram["k2"]
    >>> state = view.update(gap=2.0)
    >>> view.artists.histogram["k2"] is patch, round(state.rows["k2"].exact.relative_bias, 12)
    (True, 1.0)
    """

    figsize = (10.0, 6.2)

    def __init__(self, gap: float = 1.0, sigma_ratio: float = 1.0, n: int = 200_000, *, rng=0,
                 estimators=ESTIMATOR_NAMES, figure=None, bins: int = DEFAULT_BINS, blit: bool = True):
        self.blit = bool(blit)
        self.gap = _real_in(gap, "gap", *GAP_RANGE)
        self.sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", *SIGMA_RATIO_RANGE)
        self.n = _sample_size(n)
        self.seed = _seed(rng)
        self.estimators = _estimator_names(estimators)
        if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = int(bins)
        self.figure = _new_figure(self.figsize) if figure is None else figure
        self.figure.clear()
        # The explorer renders itself (render()). Without this, pyplot in interactive mode (ipympl) asks the
        # browser for a full redraw whenever an artist changes, i.e. at every step: ~100 ms each, and the
        # saved background thrown away every time. (render() also leaves the figure not stale.)
        self.figure.stale_callback = None
        self._draws_key = None
        self._draws = None
        self._curves: dict[float, np.ndarray] = {}
        self._points_key = None
        self._background = None
        self._own_draw = False
        self.full_draws = 0  # how many steps needed a full draw (the rest were blits)
        self._build()
        self.figure.canvas.mpl_connect("draw_event", self._on_draw)
        self.state = self.update()

    # ---- building --------------------------------------------------------------------------------
    def _build(self):
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D

        fig = self.figure
        grid = fig.add_gridspec(3, 2, width_ratios=(1.25, 1.0), left=0.045, right=0.985, bottom=0.09,
                                top=0.89, wspace=0.17, hspace=0.3)
        first = fig.add_subplot(grid[0, 0])
        self.histogram_axes = {"k1": first, "k2": fig.add_subplot(grid[1, 0], sharex=first),
                               "k3": fig.add_subplot(grid[2, 0], sharex=first)}
        self.bias_axes = bias_ax = fig.add_subplot(grid[:, 1])

        histogram, mean, true_kl = {}, {}, {}
        for name, ax in self.histogram_axes.items():
            color = PALETTE[name]
            histogram[name] = ax.stairs(np.zeros(self.bins), np.linspace(0.0, 1.0, self.bins + 1), fill=True,
                                        facecolor=color, edgecolor=color, alpha=0.45, linewidth=1.2)
            mean[name] = ax.axvline(0.0, color=color, linewidth=2.2)
            true_kl[name] = ax.axvline(0.0, color=TRUE_KL_COLOR, linestyle="--", linewidth=1.4)
            ax.set_title(_LABELS[name], loc="left", fontsize=10, color=color, fontweight="bold", pad=3)
            ax.set_ylim(0.0, 1.08)
            ax.set_yticks([])
            ax.grid(axis="x", alpha=0.3)
            ax.set_axisbelow(True)  # the grid under the histograms, as a blit draws them
            if name != "k3":
                ax.tick_params(labelbottom=False)
        self.histogram_axes["k3"].set_xlabel("per-sample estimate (each histogram scaled to its tallest bin)")
        first.legend(handles=[Line2D([], [], color="0.3", linewidth=2.2, label="sample mean"),
                              Line2D([], [], color=TRUE_KL_COLOR, linestyle="--", linewidth=1.4, label="true KL")],
                     loc="lower right", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(1.0, 0.98),
                     borderaxespad=0.0)

        bias_ax.axhline(0.0, color="0.35", linewidth=1.0, label="k1, k3 exact (unbiased)")
        exact_curve, = bias_ax.plot([], [], color=PALETTE["k2"], linewidth=2.0, label="k2 exact")
        gap_line = bias_ax.axvline(0.0, color="0.4", linestyle=":", linewidth=1.3, label="current gap")
        points, errorbars, live = {}, {}, {}
        for name in ESTIMATOR_NAMES:
            color = PALETTE[name]
            errorbars[name] = bias_ax.add_collection(LineCollection([], colors=color, linewidths=1.5))
            points[name], = bias_ax.plot([], [], "o", color=color, markersize=4.5,
                                         label=f"{name} Monte Carlo ± 1 s.e.")
            live[name], = bias_ax.plot([], [], "o", markerfacecolor="white", markeredgecolor=color,
                                       markeredgewidth=2.0, markersize=9)
        # A black-edged diamond, so that it reads as "exact" inside the hollow Monte Carlo ring around it.
        exact_point, = bias_ax.plot([], [], "D", color=PALETTE["k2"], markeredgecolor="black", markersize=5.5,
                                    zorder=4, label="k2 exact at the current gap")
        bias_ax.set_xlim(GAP_RANGE[0] - 0.08, GAP_RANGE[1] + 0.08)
        bias_ax.set_xlabel("mean gap μ between p and q")
        bias_ax.set_ylabel("relative bias  (E[k] − KL) / KL")
        bias_ax.grid(alpha=0.3)
        bias_ax.set_axisbelow(True)
        current = Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="0.3",
                         markeredgewidth=2.0, markersize=8, label="Monte Carlo at the current gap")
        handles, _labels = bias_ax.get_legend_handles_labels()
        bias_ax.legend(handles=handles + [current], loc="upper left", fontsize=8, frameon=False)
        title = fig.text(0.045, 0.955, "", ha="left", va="center", fontsize=11)
        self.artists = ExplorerArtists(histogram, mean, true_kl, live, points, errorbars,
                                       exact_curve, exact_point, gap_line, title)

    # ---- the step ----------------------------------------------------------------------------------
    def update(self, *, gap=None, sigma_ratio=None, n=None, rng=None, estimators=None) -> ExplorerState:
        """One step: apply the given settings, recompute, update the artists in place and render.

        Parameters
        ----------
        gap, sigma_ratio, n, rng, estimators
            New values for the settings given; the others stay. ``rng`` here is the new seed.

        Returns
        -------
        ExplorerState
            Also kept as ``self.state``.
        """
        full = choose_view = self._draws is None
        if gap is not None:
            self.gap = _real_in(gap, "gap", *GAP_RANGE)
        if sigma_ratio is not None:
            self.sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", *SIGMA_RATIO_RANGE)
        if n is not None:
            self.n = _sample_size(n)
        if rng is not None:
            self.seed = _seed(rng)
        if estimators is not None:
            names = _estimator_names(estimators)
            if names != self.estimators:
                full = choose_view = True
            self.estimators = names

        if self._draws_key != (self.seed, self.n):
            self._draws = standard_draws(self.n, rng=self.seed)
            self._draws_key = (self.seed, self.n)
            full = True
        if self._points_key != (self._draws_key, self.sigma_ratio):
            self._update_bias_panel()
            self._points_key = (self._draws_key, self.sigma_ratio)
            full = True
        for name in ESTIMATOR_NAMES:
            self.artists.points[name].set_visible(name in self.estimators)
            self.artists.errorbars[name].set_visible(name in self.estimators)
        self.artists.exact_curve.set_visible("k2" in self.estimators)

        # The axes' limits are the current view (a reader may also have zoomed with the toolbar).
        view = None if choose_view else self.histogram_axes["k1"].get_xlim()
        state = explorer_state(self.gap, self.sigma_ratio, self._draws, estimators=self.estimators,
                               view=view, bins=self.bins)
        if state.rescaled:
            self.histogram_axes["k1"].set_xlim(state.view)  # shared by the three panels
            full = True
        self._set_dynamic(state)
        self.state = state
        self.render(full=full)
        return state

    def _update_bias_panel(self):
        """The parts of the bias panel that depend on σ and the draws, not on the gap."""
        curve = self._curves.get(self.sigma_ratio)
        if curve is None:
            curve = self._curves[self.sigma_ratio] = exact_relative_bias("k2", GAP_GRID, self.sigma_ratio)
        self.artists.exact_curve.set_data(GAP_GRID, curve)
        points = monte_carlo_bias(MC_GAPS, self.sigma_ratio, self._draws)
        for name in ESTIMATOR_NAMES:
            x = points.gaps + _DODGE[name]
            y, err = points.relative_bias[name], points.relative_stderr[name]
            self.artists.points[name].set_data(x, y)
            bars = np.stack([np.stack([x, y - err], axis=1), np.stack([x, y + err], axis=1)], axis=1)
            self.artists.errorbars[name].set_segments(bars)
        finite = curve[np.isfinite(curve)]
        low, high = min(0.0, finite.min()), max(finite.max(), 0.1)
        pad = 0.1 * (high - low)
        self.bias_axes.set_ylim(low - pad, high + 1.6 * pad)
        self.bias_axes.set_title(f"relative bias vs gap  (Monte Carlo: n = {self.n:,})", fontsize=10)

    def _set_dynamic(self, state: ExplorerState):
        art = self.artists
        for name in ESTIMATOR_NAMES:
            shown = name in state.rows
            for group in (art.histogram, art.mean, art.true_kl, art.live):
                group[name].set_visible(shown)
            if not shown:
                continue
            counts = state.counts[name]
            peak = counts.max()
            art.histogram[name].set_data(counts / peak if peak else counts.astype(float), state.edges)
            row = state.rows[name]
            art.mean[name].set_xdata([row.monte_carlo.mean] * 2)
            art.true_kl[name].set_xdata([state.kl] * 2)
            live = row.mc_relative_bias if state.kl > 0 else math.nan
            art.live[name].set_data([state.gap + _DODGE[name]], [live])
        k2_bias = _exact(state.gap, state.sigma_ratio, "k2").relative_bias
        art.exact_point.set_data([state.gap], [k2_bias])
        art.exact_point.set_visible("k2" in state.rows)
        art.gap_line.set_xdata([state.gap] * 2)
        # Short: text is the costliest thing a blit draws (~0.1 ms a glyph); the table has the details.
        art.title.set_text(f"q = N(0, 1),  p = N({state.gap:.2f}, {state.sigma_ratio:.2f}²):  "
                           f"KL = {state.kl:.4g},  k2 bias/true = {k2_bias:.4g}")

    # ---- rendering ---------------------------------------------------------------------------------
    def _on_draw(self, event):
        # Someone else drew the figure (a resize, the toolbar, savefig): the saved background may be
        # stale, so the next step makes a fresh one.
        if not self._own_draw:
            self._background = None

    def render(self, full: bool = False):
        """Show the current artists: blit them over the saved background, or draw everything.

        A full draw renders the figure without the changing artists, saves that background, then
        draws the changing artists on top; later steps restore the background and redraw only them.
        Canvases that cannot blit are drawn in full every time.
        """
        canvas = self.figure.canvas
        if not (self.blit and _can_blit(canvas)):
            self.full_draws += 1
            canvas.draw()
            self.figure.stale = False
            return
        dynamic = [artist for artist in self.artists.dynamic() if artist.get_visible()]
        if full or self._background is None:
            self.full_draws += 1
            for artist in dynamic:
                artist.set_visible(False)
            self._own_draw = True
            try:
                _draw_without_refresh(canvas)
            finally:
                self._own_draw = False
                for artist in dynamic:
                    artist.set_visible(True)
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        else:
            canvas.restore_region(self._background)
        for artist in dynamic:
            self.figure.draw_artist(artist)
        # An ipympl canvas that no browser has connected to yet (or ever will: nbconvert, nbval) is not
        # sent frames: it would only store them as its data URL, in a form (bare base64) that a browser
        # cannot load later. A browser that connects asks for a full draw, which shows the figure as it
        # is, since the changing artists are ordinary (not "animated") ones.
        if not getattr(canvas, "syncing_data_url", False):
            canvas.blit(self.figure.bbox)
        # Everything is on screen. A stale figure would make pyplot's post-execute hook (run after every
        # widget message, too) ask the browser for a full redraw.
        self.figure.stale = False

    def to_png(self, dpi: float = 100) -> bytes:
        """The figure as PNG bytes (a full draw), without a timestamp or version, so it is reproducible."""
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
        return buffer.getvalue()

    def close(self):
        """Close the figure (pyplot forgets it)."""
        import matplotlib.pyplot as plt

        plt.close(self.figure)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(gap={self.gap:g}, sigma_ratio={self.sigma_ratio:g}, n={self.n}, "
                f"rng={self.seed}, estimators={list(self.estimators)})")


def _can_blit(canvas) -> bool:
    """Agg canvases can, whatever ``supports_blit`` says: the web canvases (ipympl) report False so that
    matplotlib's own widgets don't blit, yet restoring a region and blitting works there (the browser
    receives only the pixels that changed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return isinstance(canvas, FigureCanvasAgg) or bool(getattr(canvas, "supports_blit", False))


def _browser_slider_value(value: float, low: float, high: float, step: float) -> float:
    """The float the browser's slider snaps ``value`` to, bit for bit (ipywidgets 8 FloatSlider, noUiSlider 15).

    The browser snaps in percent of the range: ``p = 100 (v - low)/(high - low)``, rounded to a multiple of
    ``100 step/(high - low)``, then mapped back; e.g. 1.25 becomes 1.2500000000000002 on [0, 3]. When the
    kernel sets a value that differs from this in the last bit, a slider with continuous updates sends its
    own version back, and after a loop of settings (or a notebook's "run all") those late echoes overwrite
    the value set last. Setting the browser's own float avoids the echo. The same arithmetic in IEEE
    doubles, in the same order, gives the same bits.
    """
    value, low, high, step = float(value), float(low), float(high), float(step)
    if value >= high:
        return high
    if value <= low:
        return low
    percent = 100 * (value - low) / (high - low)
    step_percent = 100 * step / (high - low)
    percent = min(max(math.floor(percent / step_percent + 0.5) * step_percent, 0.0), 100.0)  # JS Math.round
    if percent >= 100:
        return high
    return percent * (high - low) / 100 + low


@lru_cache(maxsize=1)
def _slider_class():
    """ipywidgets' FloatSlider, whose values set from Python land exactly where the browser would put them."""
    import ipywidgets as widgets
    import traitlets

    class GridFloatSlider(widgets.FloatSlider):
        @traitlets.validate("value")
        def _validate_value(self, proposal):
            value = min(max(proposal["value"], self.min), self.max)
            return _browser_slider_value(value, self.min, self.max, self.step)

    return GridFloatSlider


def _draw_without_refresh(canvas):
    """Render into the Agg buffer only. Web canvases (ipympl) would otherwise send this intermediate
    frame, without the changing artists, to the browser; the blit that follows sends the finished one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if isinstance(canvas, FigureCanvasAgg):
        FigureCanvasAgg.draw(canvas)
    else:
        canvas.draw()


# --------------------------------------------------------------------------------------------------
# The widgets
# --------------------------------------------------------------------------------------------------

class BiasExplorer(ExplorerFigure):
    r"""The interactive explorer: sliders, estimator toggles and a live table around :class:`ExplorerFigure`.

    Controls (``self.controls``): ``"gap"`` (μ from 0 to 3), ``"sigma_ratio"`` (σ_p/σ_q), ``"n"``
    (sample size), ``"seed"`` and ``"resample"`` (new common draws), and one checkbox per estimator.
    ``self.table`` is an HTML widget with the live table (:meth:`ExplorerState.to_html`). Display the
    explorer (last line of a cell, or ``display(explorer)``) to get the whole layout.

    With ``%matplotlib widget`` (ipympl) the figure is a live canvas updated by blitting; with any other
    backend (e.g. inline) it is shown as a PNG that is re-rendered after each change (slower), and
    the sliders then update when released.

    Parameters
    ----------
    gap, sigma_ratio, n, rng, estimators, figure, bins, blit
        As for :class:`ExplorerFigure`.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> explorer = BiasExplorer(n=10_000, rng=0)
    >>> explorer.controls["gap"].value = 2.0  # what moving the slider does
    >>> round(explorer.state.rows["k2"].exact.relative_bias, 12)
    1.0
    """

    def __init__(self, gap: float = 1.0, sigma_ratio: float = 1.0, n: int = 200_000, *, rng=0,
                 estimators=ESTIMATOR_NAMES, figure=None, bins: int = DEFAULT_BINS, blit: bool = True):
        import ipywidgets as widgets

        self._shown = False  # whether a frontend has been given the layout (the inline fallback then renders)
        self._syncing = False  # True while update() moves several controls: one step, not one per control
        self._output = None
        super().__init__(gap, sigma_ratio, n, rng=rng, estimators=estimators, figure=figure, bins=bins,
                         blit=blit)
        canvas = self.figure.canvas
        live = isinstance(canvas, widgets.DOMWidget)  # ipympl: the canvas is itself a widget
        style = {"description_width": "initial"}
        wide = widgets.Layout(width="420px")
        sizes = sorted(set(SAMPLE_SIZES) | {self.n})
        self.controls = {
            "gap": _slider_class()(value=self.gap, min=GAP_RANGE[0], max=GAP_RANGE[1], step=0.05,
                                       description="mean gap μ", readout_format=".2f", continuous_update=live,
                                       style=style, layout=wide),
            "sigma_ratio": _slider_class()(value=self.sigma_ratio, min=SIGMA_RATIO_RANGE[0],
                                               max=SIGMA_RATIO_RANGE[1], step=0.05, description="σp / σq",
                                               readout_format=".2f", continuous_update=False, style=style,
                                               layout=wide),
            "n": widgets.SelectionSlider(options=[(f"{size:,}", size) for size in sizes], value=self.n,
                                         description="samples n", continuous_update=False, style=style,
                                         layout=wide),
            "seed": widgets.BoundedIntText(value=self.seed, min=0, max=2**31 - 1, description="seed",
                                           style=style, layout=widgets.Layout(width="150px")),
            "resample": widgets.Button(description="resample", tooltip="new common random numbers (seed + 1)",
                                       icon="refresh", layout=widgets.Layout(width="110px")),
        }
        for name in ESTIMATOR_NAMES:
            self.controls[name] = widgets.Checkbox(value=name in self.estimators, description=name, indent=False,
                                                   layout=widgets.Layout(width="60px"))
        for key, control in self.controls.items():
            control.add_class(f"klviz-{key.replace('_', '-')}")
            if key != "resample":
                control.observe(self._on_control, names="value")
        self.controls["resample"].on_click(self._on_resample)
        self.table = widgets.HTML(self.state.to_html()).add_class("klviz-table")

        if live:
            canvas.header_visible = False
            picture = canvas
        else:
            self._output = picture = widgets.Output()
        toggles = widgets.HBox([widgets.Label("show:")] + [self.controls[name] for name in ESTIMATOR_NAMES])
        self.widget = widgets.VBox([
            widgets.HBox([self.controls["gap"], self.controls["sigma_ratio"]]),
            widgets.HBox([self.controls["n"], self.controls["seed"], self.controls["resample"], toggles]),
            picture,
            self.table,
        ]).add_class("klviz-explorer")

    def _on_control(self, change):
        if not self._syncing:
            self._apply_controls()

    def _on_resample(self, _button):
        self.controls["seed"].value = (self.controls["seed"].value + 1) % 2**31

    def _apply_controls(self) -> ExplorerState:
        state = super().update(
            gap=self.controls["gap"].value,
            sigma_ratio=self.controls["sigma_ratio"].value,
            n=self.controls["n"].value,
            rng=self.controls["seed"].value,
            estimators=[name for name in ESTIMATOR_NAMES if self.controls[name].value],
        )
        self.table.value = state.to_html()
        return state

    def update(self, *, gap=None, sigma_ratio=None, n=None, rng=None, estimators=None) -> ExplorerState:
        """Move the controls to the given settings, then take one step (as if the reader had moved them).

        Parameters and return value as for :meth:`ExplorerFigure.update`; ``n`` must be one of the
        sample-size slider's values.
        """
        if not hasattr(self, "controls"):  # the first step, from ExplorerFigure.__init__
            return super().update(gap=gap, sigma_ratio=sigma_ratio, n=n, rng=rng, estimators=estimators)
        values = {}
        if gap is not None:
            values["gap"] = _real_in(gap, "gap", *GAP_RANGE)
        if sigma_ratio is not None:
            values["sigma_ratio"] = _real_in(sigma_ratio, "sigma_ratio", *SIGMA_RATIO_RANGE)
        if n is not None:
            sizes = [value for _label, value in self.controls["n"].options]
            if _sample_size(n) not in sizes:
                raise ValueError(f"n must be one of the sample-size slider's values {sizes}, got {n}")
            values["n"] = int(n)
        if rng is not None:
            values["seed"] = _seed(rng)
        if estimators is not None:
            shown = _estimator_names(estimators)
            values.update({name: name in shown for name in ESTIMATOR_NAMES})
        self._syncing = True
        try:
            for key, value in values.items():
                self.controls[key].value = value
        finally:
            self._syncing = False
        return self._apply_controls()

    def render(self, full: bool = False):
        super().render(full)
        if self._output is not None and self._shown:
            self._show_png()

    def _show_png(self):
        # One atomic change of the Output widget's outputs: no IPython display machinery, no flicker.
        png = base64.b64encode(self.to_png()).decode("ascii")
        self._output.outputs = ({"output_type": "display_data", "metadata": {},
                                 "data": {"image/png": png, "text/plain": repr(self)}},)

    def _repr_mimebundle_(self, **kwargs):
        if self._output is not None and not self._shown:
            self._shown = True
            self._show_png()
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle
