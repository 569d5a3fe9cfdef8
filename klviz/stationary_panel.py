r"""The stationary-policy panel (notebook 09): where each trainer's KL setting converges, as β moves.

One figure, built once. Left: for a softmax policy over a few tokens with rewards R, the reference p and, for each
recipe, the policy :math:`q^*_\beta` at which its expected on-policy gradient of :math:`\mathbb{E}_q[R] - \beta\cdot`
penalty vanishes (:func:`klviz.stationary_policy`), on a log axis, tokens in order of reward. Right: the
:math:`\mathrm{KL}(q^*_\beta\|p)` of each recipe against β (curves computed once over a grid, drawn as the static
background), with a marker and a vertical line at the current β. A slider moves β; a step solves for every recipe
at that β (cached: a reader sweeps back and forth), sets the lines' data, the markers and the title in place, and
blits them over the saved background with :class:`klviz.interactive.BlittedFigure` under its lock. A recipe with no
stationary policy at that β (a clamp that switches the penalty's gradient off, an objective unbounded below) has
its line hidden and is named in the title. The display bundle carries a PNG of the current state, so the notebook
shows a picture without a kernel.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import deque
from typing import Sequence

import numpy as np

from klviz.interactive import BlittedFigure, LivePanel, grid_slider, is_live, new_figure
from klviz.plots import PALETTE, TRUE_KL_COLOR

__all__ = ["RECIPE_COLORS", "stationary_solutions", "StationaryPolicyPanel"]

#: Colours for the recipes of a panel, in order (the palette's, then greys).
RECIPE_COLORS = (PALETTE["k1"], PALETTE["k3"], PALETTE["k2"], PALETTE["k3_pq"], PALETTE["k_lambda"], "#555555")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_FLOOR = 1e-6


def stationary_solutions(recipes: Sequence, p_logits, rewards, beta: float) -> list:
    """Each recipe's stationary policy at β (:class:`klviz.StationaryPolicy`), or None where it has none.

    Examples
    --------
    >>> import numpy as np
    >>> solutions = stationary_solutions(["verl:kl-reward"], [0.0, 0.5], [1.0, 0.0], 0.5)
    >>> tilt = np.exp(np.array([0.0, 0.5]) + np.array([1.0, 0.0]) / 0.5); tilt /= tilt.sum()
    >>> bool(np.allclose(solutions[0].probs, tilt))
    True
    """
    from klviz.trainers import stationary_policy

    out = []
    for recipe in recipes:
        try:
            out.append(stationary_policy(recipe, p_logits, rewards, beta, explain=False))
        except ArithmeticError:
            out.append(None)
    return out


class StationaryPolicyPanel(LivePanel):
    r"""Stationary policies of several recipes and their KL(q*‖p) against β, with a β slider; updated in place.

    Parameters
    ----------
    recipes : sequence of str or TrainerRecipe
        The recipes shown (at most 6).
    p_logits, rewards : array_like, shape (V,)
        The reference's logits and each token's reward.
    beta : float
        Initial β, in ``beta_range``.
    beta_range : (float, float)
        The slider's range, 0 < low < high.
    step : float
        The slider's step.
    curve_betas : array_like, optional
        The β grid of the right panel's curves (default: 12 points spanning ``beta_range``).
    live : bool or None
        Live (ipympl) canvas, Agg with PNGs (False), or decide (None: live in a kernel with ipympl).

    Examples
    --------
    >>> panel = StationaryPolicyPanel(["verl:kl-reward"], [0.0, 0.5, -0.5], [1.0, 0.0, 0.2], beta=0.5,
    ...                               curve_betas=[0.3, 1.0], live=False)
    >>> panel.controls["beta"].value = 1.0
    >>> panel.beta
    1.0
    """

    figsize = (11.0, 4.4)

    def __init__(self, recipes: Sequence, p_logits, rewards, *, beta: float = 0.5,
                 beta_range: tuple[float, float] = (0.1, 2.0), step: float = 0.05, curve_betas=None,
                 live: bool | None = None):
        import ipywidgets as widgets

        from klviz.trainers import get_trainer_recipe

        self.recipes = tuple(get_trainer_recipe(r).name for r in recipes)
        if not 1 <= len(self.recipes) <= len(RECIPE_COLORS):
            raise ValueError(f"recipes must name 1 to {len(RECIPE_COLORS)} recipes, got {len(self.recipes)}")
        self.p_logits = np.asarray(p_logits, dtype=np.float64)
        self.rewards = np.asarray(rewards, dtype=np.float64)
        if self.p_logits.ndim != 1 or self.rewards.shape != self.p_logits.shape or self.p_logits.size < 2:
            raise ValueError("p_logits and rewards must be one-dimensional, of one length >= 2, got shapes "
                             f"{self.p_logits.shape} and {self.rewards.shape}")
        low, high = (float(v) for v in beta_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ValueError(f"beta_range must be (low, high) with 0 < low < high, got {beta_range!r}")
        self.beta_range = (low, high)
        self.curve_betas = (np.linspace(low, high, 12) if curve_betas is None
                            else np.asarray(curve_betas, dtype=np.float64))
        if self.curve_betas.ndim != 1 or self.curve_betas.size < 2 or np.any(self.curve_betas <= 0):
            raise ValueError("curve_betas must be at least two positive values")
        self._cache: dict[float, list] = {}
        self.step_times: deque = deque(maxlen=512)  # seconds per step, kernel side
        self.beta = self._beta(beta)
        self.order = np.argsort(self.rewards, kind="stable")   # tokens left to right by reward

        self.figure = new_figure(self.figsize, live=live)
        self._build()
        self.blitted = BlittedFigure(self.figure, self._dynamic)
        self.controls = {"beta": grid_slider(
            value=self.beta, min=low, max=high, step=step, description="β", readout_format=".2f",
            continuous_update=is_live(self.figure), style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"))}
        self.controls["beta"].add_class("klviz-beta")
        self.controls["beta"].observe(self._on_slider, names="value")
        self.widget = widgets.VBox([self.controls["beta"], self.picture_widget()]).add_class("klviz-stationary-panel")
        self.update()

    # ---- building --------------------------------------------------------------------------------
    def _build(self):
        fig = self.figure
        left = fig.add_axes((0.065, 0.15, 0.38, 0.66))
        right = fig.add_axes((0.54, 0.15, 0.25, 0.66))
        self.axes = (left, right)
        tokens = np.arange(self.rewards.size)
        p = np.exp(self.p_logits - np.logaddexp.reduce(self.p_logits))
        left.plot(tokens, p[self.order], color=TRUE_KL_COLOR, marker="_", markersize=22, markeredgewidth=2.5,
                  linestyle="none", label="reference p")
        self.policy_lines = {}
        for i, name in enumerate(self.recipes):
            (line,) = left.plot(tokens, np.full(tokens.size, np.nan), color=RECIPE_COLORS[i], marker=_MARKERS[i],
                                markersize=5, linewidth=1.5, label=name)
            self.policy_lines[name] = line
        left.set_yscale("log")
        left.set_ylim(_FLOOR, 1.0)
        left.set_xlim(-0.5, tokens.size - 0.5)
        left.set_xticks(tokens, [f"{self.rewards[j]:+.2g}" for j in self.order])
        left.set_xlabel("token, by its reward R")
        left.set_ylabel("probability")
        left.set_title("stationary policies q*", fontsize=10)

        curves = [stationary_solutions(self.recipes, self.p_logits, self.rewards, float(b)) for b in self.curve_betas]
        kl_max = 0.0
        self.markers = {}
        for i, name in enumerate(self.recipes):
            values = np.array([np.nan if s[i] is None else s[i].kl_qp for s in curves])
            right.plot(self.curve_betas, values, color=RECIPE_COLORS[i], linewidth=1.5)
            (marker,) = right.plot([np.nan], [np.nan], color=RECIPE_COLORS[i], marker=_MARKERS[i], markersize=6,
                                   linestyle="none")
            self.markers[name] = marker
            if np.isfinite(values).any():
                kl_max = max(kl_max, float(np.nanmax(values)))
        self.curves = curves
        self.beta_line = right.axvline(self.beta, color="#999999", linewidth=1.0)
        right.set_xlim(*self.beta_range)
        right.set_ylim(0.0, 1.1 * kl_max if kl_max > 0 else 1.0)
        right.set_xlabel("β")
        right.set_ylabel("KL(q*‖p)")
        right.set_title("how far q* is from p", fontsize=10)
        fig.legend(handles=[left.lines[0]] + list(self.policy_lines.values()), loc="center left",
                   bbox_to_anchor=(0.8, 0.5), fontsize=9, frameon=False)
        self.title = fig.text(0.065, 0.93, "", ha="left", va="center", fontsize=10)

    def _dynamic(self) -> list:
        return list(self.policy_lines.values()) + list(self.markers.values()) + [self.beta_line, self.title]

    # ---- the step ----------------------------------------------------------------------------------
    def _beta(self, value) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"beta must be a real number, got {type(value).__name__} {value!r}")
        low, high = self.beta_range
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"beta must be finite and in [{low:g}, {high:g}], got {value}")
        return value

    def _at(self, beta: float) -> list:
        key = round(beta, 12)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = stationary_solutions(self.recipes, self.p_logits, self.rewards, beta)
        return found

    def _on_slider(self, change):
        with self.lock:  # a browser message and a cell take turns; the step reads the slider's final value
            self.update()

    def update(self, beta: float | None = None) -> float:
        """One step: move to ``beta`` (default: the slider's value), update the artists, render.

        Returns
        -------
        float
            The β shown.
        """
        with self.lock:
            if beta is not None:
                self.controls["beta"].value = self._beta(beta)  # runs the step
                return self.beta
            start = time.perf_counter()
            self.beta = self._beta(self.controls["beta"].value)
            solutions = self._at(self.beta)
            missing = []
            for name, solution in zip(self.recipes, solutions):
                line, marker = self.policy_lines[name], self.markers[name]
                if solution is None:
                    line.set_ydata(np.full(self.rewards.size, np.nan))
                    marker.set_data([np.nan], [np.nan])
                    missing.append(name)
                else:
                    line.set_ydata(np.maximum(solution.probs[self.order], _FLOOR))
                    marker.set_data([self.beta], [solution.kl_qp])
            self.beta_line.set_xdata([self.beta, self.beta])
            text = f"β = {self.beta:.2f}"
            if missing:
                text += ":  no stationary policy for " + ", ".join(missing)
            self.title.set_text(text)
            self.blitted.render()
            self.after_render()
            self.step_times.append(time.perf_counter() - start)
            return self.beta

    @property
    def solutions(self) -> list:
        """The stationary policies shown (None where a recipe has none), in the order of ``recipes``."""
        return self._at(self.beta)

    def close(self):
        """Close the slider, the layout and the canvas."""
        self.controls["beta"].close()
        self.widget.close()
        if is_live(self.figure):
            self.figure.canvas.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta:g}, recipes={len(self.recipes)})"
