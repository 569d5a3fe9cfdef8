r"""The gradient-variance panel (notebook 07): every use's exact gradient variance at one separation, live.

One figure, built once: left, the three distributions over the vocabulary (reference p, older policy μ,
policy q) as bars; right, for each (estimator, use), the exact trace of the covariance of one per-sample
gradient (a bar, on a log axis) and its squared mean (a tick). A slider moves the separation s; a step
computes the exact moments at s (cached: a reader sweeps back and forth), sets the bars' heights and
widths and the title in place, and blits them over the saved background with
:class:`klviz.interactive.BlittedFigure` (the same lock-held drawing as the bias explorer). The display
bundle carries a PNG of the current state, so the notebook shows the picture without a kernel.

The computation is the notebook's own: the panel is given ``policies(s)`` (policy and behaviour
logits at separation s), the reference logits, the (estimator, use) pairs and ``moments(s, estimator,
use)`` (a :class:`klviz.gradients.GradientMoments`), and calls nothing else but
:func:`klviz.gradients.kl_qp` and :func:`klviz.gradients.kl_pq` for the title.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np

from klviz.interactive import BlittedFigure, LivePanel, grid_slider, is_live, new_figure
from klviz.plots import PALETTE, TRUE_KL_COLOR

__all__ = ["GradientVarianceExplorer"]

FORWARD_COLOR = "#999999"  # notebook 07 draws KL(p||q) and μ in grey, KL(q||p) and p in black
_FLOOR = 1e-6  # the left edge of the log axis: a tick or bar there means zero
_LIMITS = (_FLOOR, 1e4)


def _logits_probabilities(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(logits - np.logaddexp.reduce(logits))


class GradientVarianceExplorer(LivePanel):
    r"""Exact variance of each gradient use at one separation, with a slider; updated in place.

    Parameters
    ----------
    policies : callable
        ``policies(s) -> (policy_logits, behaviour_logits)`` at separation s.
    reference_logits : array_like
        Logits of the reference p.
    combos : sequence of (str, str)
        The (estimator, use) pairs, in display order (top to bottom).
    moments : callable
        ``moments(s, estimator, use)`` returning a :class:`klviz.gradients.GradientMoments`.
    separation : float
        Initial separation, in ``separation_range``.
    separation_range : (float, float)
        The slider's range.
    step : float
        The slider's step.
    live : bool or None
        Live (ipympl) canvas, Agg with PNGs (False), or decide (None: live in a kernel with ipympl).

    Examples
    --------
    >>> import numpy as np, klviz.gradients as kg
    >>> ref = np.array([0.0, 1.0, -1.0])
    >>> panel = GradientVarianceExplorer(lambda s: (ref + s, ref + 0.5 * s), ref, [("k3", "loss")],
    ...     lambda s, k, u: kg.gradient_moments(ref + s * np.array([1.0, 0, -1]), ref, k, u), live=False)
    >>> panel.controls["separation"].value = 0.5
    >>> panel.separation
    0.5
    """

    figsize = (11.0, 4.3)

    def __init__(self, policies: Callable, reference_logits, combos: Sequence, moments: Callable, *,
                 separation: float = 1.0, separation_range: tuple[float, float] = (0.0, 3.0), step: float = 0.05,
                 live: bool | None = None):
        import ipywidgets as widgets

        if not callable(policies) or not callable(moments):
            raise TypeError("policies and moments must be callables")
        self.combos = tuple((str(k), str(u)) for k, u in combos)
        if not self.combos:
            raise ValueError("combos must name at least one (estimator, use) pair")
        low, high = (float(v) for v in separation_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"separation_range must be (low, high) with finite low < high, got {separation_range!r}")
        self.separation_range = (low, high)
        self.policies = policies
        self.moments = moments
        self.reference_logits = np.asarray(reference_logits, dtype=np.float64)
        self._cache: dict[float, tuple] = {}
        self.step_times: deque = deque(maxlen=512)  # seconds per step, kernel side
        self.separation = self._separation(separation)

        self.figure = new_figure(self.figsize, live=live)
        self._build()
        self.blitted = BlittedFigure(self.figure, self._dynamic)
        self.controls = {"separation": grid_slider(
            value=self.separation, min=low, max=high, step=step, description="separation s",
            readout_format=".2f", continuous_update=is_live(self.figure), style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"))}
        self.controls["separation"].add_class("klviz-separation")
        self.controls["separation"].observe(self._on_slider, names="value")
        self.widget = widgets.VBox([self.controls["separation"], self.picture_widget()]).add_class(
            "klviz-variance-panel")
        self.update()

    # ---- building --------------------------------------------------------------------------------
    def _build(self):
        fig = self.figure
        left = fig.add_axes((0.055, 0.13, 0.33, 0.7))
        right = fig.add_axes((0.57, 0.13, 0.415, 0.7))
        self.axes = (left, right)
        tokens = np.arange(self.reference_logits.size)
        # Neutral colours here: blue, orange and green mean k1, k2 and k3 in the bars on the right.
        looks = {"p": {"color": TRUE_KL_COLOR}, "μ": {"color": FORWARD_COLOR},
                 "q": {"facecolor": "white", "edgecolor": TRUE_KL_COLOR, "hatch": "////", "linewidth": 0.8}}
        self.distribution_bars = {}
        for j, name in enumerate(("p", "μ", "q")):
            self.distribution_bars[name] = left.bar(tokens + (j - 1) * 0.27, np.zeros(tokens.size), width=0.27,
                                                    label=name, **looks[name])
        left.set_xticks(tokens)
        left.set_xlabel("token", fontsize=9)
        left.set_ylabel("probability", fontsize=9)
        left.set_ylim(0, 1)
        left.tick_params(labelsize=9)
        left.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize=9, frameon=False,
                    borderaxespad=0.2)
        rows = np.arange(len(self.combos))
        self.variance_bars = right.barh(rows, np.full(rows.size, _FLOOR), left=0.0,
                                        color=[PALETTE.get(k, "0.5") for k, _ in self.combos])
        self.signal_ticks, = right.plot(np.full(rows.size, _FLOOR), rows, "|", color=TRUE_KL_COLOR, markersize=12,
                                        markeredgewidth=1.5, label="|mean|²")
        right.set_yticks(rows, [f"{k} {u}" for k, u in self.combos], fontsize=9)
        right.invert_yaxis()
        right.set_xscale("log")
        right.set_xlim(*_LIMITS)
        right.set_xlabel("trace Cov of one per-sample gradient", fontsize=9)
        right.tick_params(labelsize=9)
        right.grid(axis="x", alpha=0.3)
        right.set_axisbelow(True)
        right.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False, borderaxespad=0.2)
        self.title = fig.text(0.055, 0.94, "", ha="left", va="center", fontsize=10)

    def _dynamic(self) -> list:
        bars = [patch for container in self.distribution_bars.values() for patch in container]
        return bars + list(self.variance_bars) + [self.signal_ticks, self.title]

    # ---- the step ----------------------------------------------------------------------------------
    def _separation(self, value) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"separation must be a real number, got {type(value).__name__} {value!r}")
        low, high = self.separation_range
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"separation must be finite and in [{low:g}, {high:g}], got {value}")
        return value

    def _at(self, separation: float) -> tuple:
        """Everything drawn at one separation (cached: the slider revisits its grid)."""
        key = round(separation, 12)
        found = self._cache.get(key)
        if found is None:
            from klviz import gradients as kg

            policy, behaviour = self.policies(separation)
            probabilities = {"p": _logits_probabilities(self.reference_logits), "μ": _logits_probabilities(behaviour),
                             "q": _logits_probabilities(policy)}
            moments = [self.moments(separation, k, u) for k, u in self.combos]
            traces = np.array([m.trace_covariance for m in moments])
            signals = np.array([m.signal for m in moments])
            kls = (kg.kl_qp(policy, self.reference_logits), kg.kl_pq(policy, self.reference_logits))
            found = self._cache[key] = (probabilities, traces, signals, kls)
        return found

    def _on_slider(self, change):
        with self.lock:  # a browser message and a cell take turns; the step reads the slider's final value
            self.update()

    def update(self, separation: float | None = None):
        """One step: move to ``separation`` (default: the slider's value), update the artists, render.

        Returns
        -------
        float
            The separation shown.
        """
        with self.lock:
            if separation is not None:
                self.controls["separation"].value = self._separation(separation)  # runs the step
                return self.separation
            start = time.perf_counter()
            self.separation = self._separation(self.controls["separation"].value)
            probabilities, traces, signals, (kl_qp, kl_pq) = self._at(self.separation)
            for name, container in self.distribution_bars.items():
                for patch, height in zip(container, probabilities[name]):
                    patch.set_height(height)
            for patch, width in zip(self.variance_bars, traces):
                patch.set_width(max(width, _FLOOR))
            self.signal_ticks.set_xdata(np.maximum(signals, _FLOOR))
            self.title.set_text(f"s = {self.separation:.2f}:  KL(q‖p) = {kl_qp:.3f},  KL(p‖q) = {kl_pq:.3f}")
            self.blitted.render()
            self.after_render()
            self.step_times.append(time.perf_counter() - start)
            return self.separation

    @property
    def traces(self) -> np.ndarray:
        """The exact trace covariances shown, one per combo (the bars' widths before the floor)."""
        return self._at(self.separation)[1]

    def close(self):
        """Close the slider, the layout and the canvas."""
        self.controls["separation"].close()
        self.widget.close()
        if is_live(self.figure):
            self.figure.canvas.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(separation={self.separation:g}, combos={len(self.combos)})"
