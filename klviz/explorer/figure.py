r"""The explorer's figure: artists built once, updated in place, blitted (no widgets here).

Left, the per-sample estimates of each shown estimator on shared bins, each scaled to its tallest bin,
with the sample mean (solid) and the true KL (dashed); an unticked estimator's panel is removed and the
others take its room. Right, two panels against the mean gap: the relative bias
:math:`(\mathbb{E}[k] - \mathrm{KL})/\mathrm{KL}` (k2's exact curve, k1 and k3 at 0, Monte Carlo points
± 1 standard error at a few gaps, the current gap with the live Monte Carlo values), and the relative
standard deviation :math:`\mathrm{sd}(k)/\mathrm{KL}` (exact curves of all three, Monte Carlo points, and
where k3's curve crosses k1's: for σ = 1 at μ ≈ 1.12, beyond which k1 has the smaller variance).

Everything that changes from step to step is a *dynamic* artist, drawn over a saved background by
:class:`klviz.interactive.BlittedFigure`; the background (axes, ticks, labels, legends) changes only when
the histogram view is re-chosen, an estimator is shown or hidden, or σ moves the bias panel to another
of its few fixed ranges.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from klviz.explorer.state import (
    DEFAULT_BINS,
    ESTIMATOR_NAMES,
    GAP_GRID,
    GAP_RANGE,
    MC_GAPS,
    SIGMA_RATIO_RANGE,
    ExplorerState,
    _estimator_names,
    _exact,
    _real_in,
    _sample_size,
    _seed,
    exact_curves,
    explorer_state,
    monte_carlo_bias,
    standard_draws,
    std_crossings,
)
from klviz.interactive import BlittedFigure, new_figure
from klviz.plots import PALETTE, TRUE_KL_COLOR

__all__ = ["ExplorerArtists", "ExplorerFigure"]

# Horizontal dodge of each estimator's points on the gap panels, so that their error bars don't overlap.
_DODGE = {"k1": -0.04, "k2": 0.0, "k3": 0.04}
_LABELS = {"k1": "k1 = −log r", "k2": "k2 = ½ (log r)²", "k3": "k3 = (r − 1) − log r"}
# The bias panel's y-range is one of a few fixed ones (a change of range is a full redraw): the smallest
# that holds k2's exact curve.
_BIAS_TOPS = (0.6, 1.25, 2.5, 6.0, 13.0, 30.0)
_BIAS_BOTTOMS = (-0.15, -0.5, -1.0)
_STD_LIMITS = (0.5, 200.0)
_STD_TICKS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200)
_GAP_LIMITS = (GAP_RANGE[0] - 0.15, GAP_RANGE[1] + 0.15)  # room for the dodged markers at both ends
# Figure layout (fractions of the figure).
_LEFT_COLUMN = (0.05, 0.535)
_RIGHT_COLUMN = (0.64, 0.985)
_BOTTOM, _TOP = 0.085, 0.855
_HISTOGRAM_GAP = 0.055
_COLUMN_SPLIT = 0.565  # between the histograms' tick labels and the gap panels' y labels
# The title lines: (key, static label, the widest number it will show). Labels and numbers are placed
# one after the other when the figure is built, each number with room for its widest value.
_TITLE_SLOTS = (("gap", "q = N(0, 1),  p = N(μ, σ²):   μ =", "3.00:"), ("kl", "KL[q, p] =", "0.001234,"),
                ("bias", "k2 bias/true =", "undefined (KL = 0)"))
_SUBTITLE_SLOTS = (("sigma", "σ = σp/σq =", "2.00,"), ("n", "n =", "1,000,000,"), ("seed", "seed", "2147483647"))
# The regions of the background that are redrawn alone stop below the title lines (drawn in full draws only).
_HISTOGRAMS_TOP, _GAP_PANELS_TOP = 0.905, 0.961


@dataclass(frozen=True, eq=False)
class ExplorerArtists:
    """Handles on the figure's artists: built once, then only their data change."""

    histogram: Mapping[str, object]  # StepPatch per estimator
    mean: Mapping[str, object]  # Line2D: the estimator's sample mean
    true_kl: Mapping[str, object]  # Line2D: the true KL, in each histogram panel
    live: Mapping[str, object]  # Line2D: Monte Carlo relative bias at the current gap
    points: Mapping[str, object]  # Line2D: Monte Carlo relative bias at MC_GAPS
    errorbars: Mapping[str, object]  # LineCollection: their ± 1 s.e. bars
    std_curves: Mapping[str, object]  # Line2D: exact stdev/KL vs gap
    std_points: Mapping[str, object]  # Line2D: Monte Carlo stdev/KL at MC_GAPS
    exact_curve: object  # Line2D: k2's exact relative bias vs gap
    exact_point: object  # Line2D: k2's exact relative bias at the current gap
    gap_line: object  # Line2D: the current gap (bias panel)
    std_gap_line: object  # Line2D: the current gap (stdev panel)
    crossing_line: object  # Line2D: where k3's stdev crosses k1's
    title: Mapping[str, object]  # Text per number in the title line ("gap", "kl", "bias"): changes with the gap
    subtitle: Mapping[str, object]  # Text per number in the second line ("sigma", "n", "seed")
    std_title: object  # Text: what the stdev panel shows at this σ (right of its static title)
    empty_note: object  # Text: shown when no estimator is ticked
    labels: tuple = ()  # the static Texts of the two title lines, (label, the value it names) in order

    def dynamic(self) -> list:
        """The artists a gap step changes, in drawing order: drawn over the saved layers at every step.
        Only the numbers of the title are dynamic text (text is the costliest thing a blit draws);
        their labels are in the static background."""
        groups = (self.histogram, self.mean, self.true_kl)
        per_estimator = [group[name] for group in groups for name in ESTIMATOR_NAMES]
        return [self.gap_line, self.std_gap_line] + per_estimator + [self.live[name] for name in ESTIMATOR_NAMES] + [
            self.exact_point] + list(self.title.values())

    def slow(self) -> list:
        """The artists that change with σ, n, the seed or the toggles (not the gap): a saved layer."""
        groups = (self.errorbars, self.points, self.std_curves, self.std_points)
        per_estimator = [group[name] for group in groups for name in ESTIMATOR_NAMES]
        return [self.exact_curve, self.crossing_line] + per_estimator + list(self.subtitle.values()) + [
            self.std_title, self.empty_note]

    def title_text(self) -> str:
        """The two title lines as one string (static labels and current numbers, in reading order)."""
        return "  ".join(f"{label.get_text()} {value.get_text()}" for label, value in self.labels)


def _bias_limits(curve: np.ndarray) -> tuple[float, float]:
    finite = curve[np.isfinite(curve)]
    high = max(float(finite.max()) if finite.size else 0.0, 0.1) * 1.05
    low = min(float(finite.min()) if finite.size else 0.0, 0.0) * 1.15
    top = next((t for t in _BIAS_TOPS if t >= high), high)
    bottom = next((b for b in _BIAS_BOTTOMS if b <= low), low)
    return bottom, top


def _title_number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "undefined (KL = 0)"


class ExplorerFigure:
    r"""The explorer's figure: histogram panels (k1, k2, k3), the bias-vs-gap and the stdev-vs-gap panels.

    :meth:`update` is one step: recompute with :func:`explorer_state` on the common draws, set the new
    data on the existing artists, and render (blit) under the figure's lock, so that steps from two
    threads (a cell and the browser) never interleave. A full draw happens only when the static
    background changes (the histogram view is re-chosen, an estimator is shown or hidden, the bias panel
    changes range).

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
        Draw into this figure (it is cleared; an Agg-based canvas blits). Default: a new figure with its
        own canvas (:func:`klviz.interactive.new_figure`): live (ipympl) in a kernel, else Agg.
    live : bool or None
        For the default figure: force a live canvas (True) or an Agg one (False); None decides.
    bins : int
        Histogram bins.
    blit : bool
        Redraw only the changing artists over a saved background (default); False draws the whole
        figure at every step (slower; for comparison).

    Examples
    --------
    >>> view = ExplorerFigure(n=10_000, rng=0, live=False)
    >>> patch = view.artists.histogram["k2"]
    >>> state = view.update(gap=2.0)
    >>> view.artists.histogram["k2"] is patch, round(state.rows["k2"].exact.relative_bias, 12)
    (True, 1.0)
    """

    figsize = (10.0, 6.6)

    def __init__(self, gap: float = 1.0, sigma_ratio: float = 1.0, n: int = 200_000, *, rng=None,
                 estimators=ESTIMATOR_NAMES, figure=None, live: bool | None = None, bins: int = DEFAULT_BINS,
                 blit: bool = True):
        self.gap = _real_in(gap, "gap", *GAP_RANGE)
        self.sigma_ratio = _real_in(sigma_ratio, "sigma_ratio", *SIGMA_RATIO_RANGE)
        self.n = _sample_size(n)
        self.seed = _seed(rng)
        self.estimators = _estimator_names(estimators)
        if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = int(bins)
        if figure is None:
            figure = new_figure(self.figsize, live=live)
        elif figure.canvas is None or type(figure.canvas).__name__ == "FigureCanvasBase":
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(figure)
        self.figure = figure
        self.figure.clear()
        self._draws_key = None
        self._draws = None
        self._curves: dict[float, object] = {}
        self._crossings: dict[float, tuple] = {}
        self._points: dict[tuple, object] = {}
        self._points_key = None
        self._layout_key = None
        self._bias_limits = None
        self._build()
        width = lambda: self.figure.bbox.width  # noqa: E731  (display pixels: they follow the dpi)
        def limits(axes):
            return tuple((ax.get_visible(), tuple(ax.get_position().bounds), ax.get_xlim(), ax.get_ylim())
                         for ax in axes)

        regions = {
            "histograms": (lambda: list(self.histogram_axes.values()),
                           lambda: (0.0, 0.0, _COLUMN_SPLIT * width(), _HISTOGRAMS_TOP * self.figure.bbox.height),
                           lambda: (self.estimators, limits(self.histogram_axes.values()))),
            "gap panels": (lambda: [self.bias_axes, self.std_axes] + list(self.figure.legends),
                           lambda: (_COLUMN_SPLIT * width(), 0.0, width(), _GAP_PANELS_TOP * self.figure.bbox.height),
                           lambda: limits((self.bias_axes, self.std_axes))),
        }
        self.blitted = BlittedFigure(self.figure, self.artists.dynamic, slow=self.artists.slow, regions=regions,
                                     blit=blit)
        self.state = self.update()

    # ---- delegated to the renderer -----------------------------------------------------------------
    @property
    def lock(self):
        """The figure's re-entrant lock: held by every step and every draw."""
        return self.blitted.lock

    @property
    def blit(self) -> bool:
        return self.blitted.blit

    @property
    def full_draws(self) -> int:
        """How many steps drew the whole figure."""
        return self.blitted.full_draws

    @property
    def redraws(self) -> int:
        """How many steps redrew some of the static background (the whole, or a region); the rest blitted."""
        return self.blitted.full_draws + self.blitted.region_draws

    # ---- building --------------------------------------------------------------------------------
    def _build(self):
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D

        fig = self.figure
        # Not shared axes: the three get the same limits from set_view. (Shared x axes make each one lay out
        # its siblings' tick labels too, which doubles the cost of redrawing the column.)
        self.histogram_axes = {name: fig.add_axes((0.0, 0.0, 1.0, 1.0)) for name in ESTIMATOR_NAMES}
        right_width = _RIGHT_COLUMN[1] - _RIGHT_COLUMN[0]
        middle = 0.5 * (_BOTTOM + _TOP)
        self.bias_axes = bias_ax = fig.add_axes((_RIGHT_COLUMN[0], middle + 0.035, right_width, _TOP - middle - 0.035))
        self.std_axes = std_ax = fig.add_axes((_RIGHT_COLUMN[0], _BOTTOM, right_width, middle - _BOTTOM - 0.035),
                                              sharex=bias_ax)

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
            ax.tick_params(labelsize=9)
        self._histogram_legend = Line2D([], [], color="0.3", linewidth=2.2, label="sample mean"), Line2D(
            [], [], color=TRUE_KL_COLOR, linestyle="--", linewidth=1.4, label="true KL")

        bias_ax.axhline(0.0, color="0.35", linewidth=1.0)
        exact_curve, = bias_ax.plot([], [], color=PALETTE["k2"], linewidth=2.0)
        gap_line = bias_ax.axvline(0.0, color="0.4", linestyle=":", linewidth=1.3)
        std_gap_line = std_ax.axvline(0.0, color="0.4", linestyle=":", linewidth=1.3)
        crossing_line = std_ax.axvline(0.0, color="0.25", linestyle="--", linewidth=1.0)
        points, errorbars, live, std_curves, std_points = {}, {}, {}, {}, {}
        for name in ESTIMATOR_NAMES:
            color = PALETTE[name]
            errorbars[name] = bias_ax.add_collection(LineCollection([], colors=color, linewidths=1.5))
            points[name], = bias_ax.plot([], [], "o", color=color, markersize=4.5)
            live[name], = bias_ax.plot([], [], "o", markerfacecolor="white", markeredgecolor=color,
                                       markeredgewidth=2.0, markersize=9)
            std_curves[name], = std_ax.plot([], [], color=color, linewidth=1.8)
            std_points[name], = std_ax.plot([], [], "o", color=color, markersize=4.5)
        # A black-edged diamond, so that it reads as "exact" inside the hollow Monte Carlo ring around it.
        exact_point, = bias_ax.plot([], [], "D", color=PALETTE["k2"], markeredgecolor="black", markersize=5.5,
                                    zorder=4)
        bias_ax.set_xlim(*_GAP_LIMITS)
        bias_ax.set_ylabel("relative bias (E[k] − KL)/KL", fontsize=9)
        bias_ax.set_title("relative bias vs gap  (k1, k3: exactly 0)", loc="left", fontsize=10, pad=3)
        bias_ax.tick_params(labelsize=9, labelbottom=False)
        std_ax.set_yscale("log")
        std_ax.set_ylim(*_STD_LIMITS)
        std_ax.set_yticks(_STD_TICKS, [f"{tick:g}" for tick in _STD_TICKS])
        std_ax.minorticks_off()
        std_ax.set_xlabel("mean gap μ between p and q", fontsize=9)
        std_ax.set_ylabel("stdev / KL", fontsize=9)
        std_ax.tick_params(labelsize=9)
        for ax in (bias_ax, std_ax):
            ax.grid(alpha=0.3)
            ax.set_axisbelow(True)
        # One legend for both gap panels, above them (off the data); colour is the estimator.
        grey = "0.3"
        handles = [
            Line2D([], [], color=grey, linewidth=2.0, label="exact"),
            Line2D([], [], color=grey, marker="o", markersize=4.5, linestyle="none", label="Monte Carlo ± 1 s.e."),
            Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor=grey,
                   markeredgewidth=2.0, markersize=8, label="MC at the current gap"),
            Line2D([], [], color="0.4", linestyle=":", linewidth=1.3, label="current gap"),
        ]
        fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(_RIGHT_COLUMN[1], _TOP + 0.035),
                   ncol=2, fontsize=9, frameon=False, borderaxespad=0.0, handlelength=1.8, columnspacing=1.2)
        # Title lines: static labels (background) at fixed places, each followed by its number (dynamic).
        labels, title, subtitle = [], {}, {}
        renderer = fig.canvas.get_renderer()
        width = fig.bbox.width

        def text_width(text):
            return text.get_window_extent(renderer).width / width

        for y, size, color, target, slots in ((0.974, 11, "black", title, _TITLE_SLOTS),
                                               (0.928, 10, "0.25", subtitle, _SUBTITLE_SLOTS)):
            x = _LEFT_COLUMN[0]
            for key, text, widest in slots:
                label = fig.text(x, y, text, ha="left", va="baseline", fontsize=size, color=color)
                x += text_width(label) + 0.006
                target[key] = fig.text(x, y, widest, ha="left", va="baseline", fontsize=size, color=color)
                x += text_width(target[key]) + 0.018
                target[key].set_text("")
                labels.append((label, target[key]))
        self._static_texts = [label for label, _value in labels]
        std_ax.set_title("stdev / KL vs gap", loc="left", fontsize=10, pad=3)
        # On the static title's baseline (3 points above the axes), right-aligned.
        std_title = std_ax.annotate("", xy=(1.0, 1.0), xycoords="axes fraction", xytext=(0.0, 3.0),
                                    textcoords="offset points", ha="right", va="baseline", fontsize=9)
        empty_note = fig.text(0.5 * sum(_LEFT_COLUMN), middle, "no estimator ticked: tick k1, k2 or k3",
                              ha="center", va="center", fontsize=10, color="0.3", visible=False)
        self.artists = ExplorerArtists(histogram, mean, true_kl, live, points, errorbars, std_curves, std_points,
                                       exact_curve, exact_point, gap_line, std_gap_line, crossing_line, title,
                                       subtitle, std_title, empty_note, tuple(labels))
        self._histogram_legend_artist = None

    def _layout(self):
        """Stack the shown estimators' panels in the left column (an unticked one is removed)."""
        shown = self.estimators
        left, right = _LEFT_COLUMN
        rows = max(len(shown), 1)
        height = (_TOP - _BOTTOM - (rows - 1) * _HISTOGRAM_GAP) / rows
        for name, ax in self.histogram_axes.items():
            ax.set_visible(name in shown)
        for row, name in enumerate(shown):
            ax = self.histogram_axes[name]
            bottom = _TOP - (row + 1) * height - row * _HISTOGRAM_GAP
            ax.set_position((left, bottom, right - left, height))
            last = row == len(shown) - 1
            ax.tick_params(labelbottom=last)
            ax.set_xlabel("per-sample estimate (each histogram scaled to its tallest bin)" if last else "",
                          fontsize=9)
        if self._histogram_legend_artist is not None:
            self._histogram_legend_artist.remove()
            self._histogram_legend_artist = None
        if shown:
            self._histogram_legend_artist = self.histogram_axes[shown[0]].legend(
                handles=list(self._histogram_legend), loc="lower right", ncol=2, fontsize=9, frameon=False,
                bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1)
        self.artists.empty_note.set_visible(not shown)

    # ---- the step ----------------------------------------------------------------------------------
    def update(self, *, gap=None, sigma_ratio=None, n=None, rng=None, estimators=None) -> ExplorerState:
        """One step: apply the given settings, recompute, update the artists in place and render.

        Runs under :attr:`lock`: a step from another thread waits for this one to finish.

        Parameters
        ----------
        gap, sigma_ratio, n, rng, estimators
            New values for the settings given; the others stay. ``rng`` here is the new seed.

        Returns
        -------
        ExplorerState
            Also kept as ``self.state``.
        """
        with self.lock:
            return self._update(gap=gap, sigma_ratio=sigma_ratio, n=n, rng=rng, estimators=estimators)

    def _update(self, *, gap, sigma_ratio, n, rng, estimators) -> ExplorerState:
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
                choose_view = True
            self.estimators = names
        stale = set()  # regions of the static background to redraw
        if self._layout_key != self.estimators:
            self._layout()
            self._layout_key = self.estimators
            stale.add("histograms")

        if self._draws_key != (self.seed, self.n):
            self._draws = standard_draws(self.n, rng=self.seed)
            self._draws_key = (self.seed, self.n)
            self._points.clear()
        slow_key = (self._draws_key, self.sigma_ratio, self.estimators)
        if self._points_key != slow_key:
            if self._update_gap_panels():
                stale.add("gap panels")
            self._points_key = slow_key
            self.artists.subtitle["sigma"].set_text(f"{self.sigma_ratio:.2f},")
            self.artists.subtitle["n"].set_text(f"{self.n:,},")
            self.artists.subtitle["seed"].set_text(f"{self.seed}")
            self.blitted.invalidate_slow()
        for name in ESTIMATOR_NAMES:
            shown = name in self.estimators
            for group in (self.artists.points, self.artists.errorbars, self.artists.std_curves,
                          self.artists.std_points):
                group[name].set_visible(shown)
        self.artists.exact_curve.set_visible("k2" in self.estimators)

        # The axes' limits are the current view (a reader may also have zoomed with the toolbar).
        shown = self.histogram_axes[self.estimators[0] if self.estimators else "k1"]
        view = None if choose_view else shown.get_xlim()
        state = explorer_state(self.gap, self.sigma_ratio, self._draws, estimators=self.estimators,
                               view=view, bins=self.bins)
        if state.rescaled or any(ax.get_xlim() != shown.get_xlim() for ax in self.histogram_axes.values()):
            self.set_view(state.view)
            stale.add("histograms")
        self._set_dynamic(state)
        self.state = state
        if full:
            self.blitted.invalidate()
        for region in stale:
            self.blitted.invalidate(region)
        self.blitted.render()
        return state

    def set_view(self, view: tuple[float, float]):
        """Give the histogram panels the x range ``view`` (the next step keeps it while the data fit it)."""
        with self.lock:
            for ax in self.histogram_axes.values():
                ax.set_xlim(view)
            self.blitted.invalidate("histograms")

    def _update_gap_panels(self) -> bool:
        """The parts of the gap panels that depend on σ and the draws, not on the gap. True when the
        bias panel changed range (a full redraw)."""
        sigma = self.sigma_ratio
        curves = self._curves.get(sigma)
        if curves is None:
            curves = self._curves[sigma] = exact_curves(GAP_GRID, sigma)
            self._crossings[sigma] = std_crossings(sigma, GAP_RANGE)
        art = self.artists
        art.exact_curve.set_data(GAP_GRID, curves.relative_bias["k2"])
        points = self._points.get(sigma)
        if points is None:
            points = self._points[sigma] = monte_carlo_bias(MC_GAPS, sigma, self._draws)
        for name in ESTIMATOR_NAMES:
            x = points.gaps + _DODGE[name]
            y, err = points.relative_bias[name], points.relative_stderr[name]
            art.points[name].set_data(x, y)
            bars = np.stack([np.stack([x, y - err], axis=1), np.stack([x, y + err], axis=1)], axis=1)
            art.errorbars[name].set_segments(bars)
            relative_std = curves.relative_std[name]
            art.std_curves[name].set_data(GAP_GRID, np.where(np.isfinite(relative_std), relative_std, np.nan))
            art.std_points[name].set_data(x, points.relative_std[name])
        crossings = self._crossings[sigma]
        if crossings:
            after = curves.relative_std["k3"][-1] > curves.relative_std["k1"][-1]
            text = f"k3 {'above' if after else 'below'} k1 for μ > {crossings[-1]:.2f}"
            art.crossing_line.set_xdata([crossings[-1]] * 2)
        elif not np.all(np.isfinite(curves.relative_std["k3"])):
            text = "Var k3 = ∞ (σp/σq ≥ √2)"
        else:
            finite = np.isfinite(curves.relative_std["k1"])
            above = np.all(curves.relative_std["k3"][finite] >= curves.relative_std["k1"][finite])
            text = f"k3 {'above' if above else 'below'} k1 at every gap"
        both = "k1" in self.estimators and "k3" in self.estimators  # the note compares the two
        art.crossing_line.set_visible(bool(crossings) and both)
        art.std_title.set_text(text if both else "")
        # The range holds k2's curve, shown or not: ticking an estimator then never redraws this panel's axes,
        # and k1's and k3's points (exact bias 0) sit on the zero line either way.
        limits = _bias_limits(curves.relative_bias["k2"])
        if limits != self._bias_limits:
            self.bias_axes.set_ylim(*limits)
            self._bias_limits = limits
            return True
        return False

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
        art.std_gap_line.set_xdata([state.gap] * 2)
        # Short: text is the costliest thing a blit draws; the table has the details.
        art.title["gap"].set_text(f"{state.gap:.2f}:")
        art.title["kl"].set_text(f"{state.kl:.4g},")
        art.title["bias"].set_text(_title_number(k2_bias))

    # ---- rendering ---------------------------------------------------------------------------------
    def render(self, full: bool = False):
        """Show the current artists (see :meth:`klviz.interactive.BlittedFigure.render`)."""
        if full:
            self.blitted.invalidate()
        self.blitted.render()

    def to_png(self, dpi: float = 100) -> bytes:
        """The figure as PNG bytes (a full draw), without a timestamp or version, so it is reproducible."""
        return self.blitted.to_png(dpi)

    def close(self):
        """Close the canvas (a live canvas's widget is closed)."""
        canvas = self.figure.canvas
        if getattr(canvas, "_klviz_live", False):
            canvas.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(gap={self.gap:g}, sigma_ratio={self.sigma_ratio:g}, n={self.n}, "
                f"rng={self.seed}, estimators={list(self.estimators)})")
