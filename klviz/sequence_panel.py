r"""The sequence-gradient panel (notebook 08): how far each use's expected gradient is from the sequence KLs'.

One figure, built once: for each (estimator, use) over whole sequences, the exact relative error of its
expected gradient against :math:`\nabla\mathrm{KL}(q\|p)` (left) and :math:`\nabla\mathrm{KL}(p\|q)` (right),
as curves over the sequence length T. A slider moves the gap δ between the policy and the reference; a step
computes every curve exactly at that gap (:func:`gradient_errors`, dynamic programmes of
:mod:`klviz.gradients.sequences`, cached: a reader sweeps back and forth), sets the lines' data and the title
in place, and blits them over the saved background with :class:`klviz.interactive.BlittedFigure` (the same
lock-held drawing as the other panels). The display bundle carries a PNG of the current state, so the
notebook shows the picture without a kernel.

A curve at 0 on the left follows the sequence's reverse KL, at 0 on the right its forward KL; a curve off 0 on
both follows neither.
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

__all__ = ["STEP_KL_COLOR", "USE_LINESTYLES", "gradient_errors", "SequenceGradientPanel"]

#: The full-vocabulary step KL is not a sampled estimator: a neutral colour (notebook 06 draws it in grey too).
STEP_KL_COLOR = "#555555"
#: Line style by use: the estimator is the colour.
USE_LINESTYLES = {"token_loss": "-", "token_reward": (0, (1, 1)), "reward_to_go": ":", "sequence_loss": "--",
                  "sequence_reward": "-.", "step_kl_loss": "-", "step_kl_reward_to_go": ":",
                  "step_kl_sequence_reward": "-."}
_Y_LIMITS = (0.0, 1.25)


def _expected_gradient(pair, estimator: str, use: str):
    from klviz.gradients import sequences as ks

    if use in ks.STEP_KL_USES:
        return ks.sequence_step_kl_gradient(pair, use)
    return ks.sequence_expected_gradient(pair, estimator, use)


def gradient_errors(pair, combos: Sequence) -> np.ndarray:
    r"""Relative errors of the expected gradients of ``combos`` against both sequence KLs' gradients, exactly.

    .. math:: e_{qp} = \frac{\|\mathbb{E}G - \nabla\mathrm{KL}(q\|p)\|}{\|\nabla\mathrm{KL}(q\|p)\|},\qquad
              e_{pq} = \frac{\|\mathbb{E}G - \nabla\mathrm{KL}(p\|q)\|}{\|\nabla\mathrm{KL}(p\|q)\|}

    Parameters
    ----------
    pair : MarkovChainPair
        q is the policy, p the reference.
    combos : sequence of (str, str)
        (estimator, use) with a use of :data:`klviz.gradients.SEQUENCE_USES` (any estimator) or of
        :data:`klviz.gradients.STEP_KL_USES` (estimator ``"step_kl"``).

    Returns
    -------
    ndarray, shape (len(combos), 2)
        Columns :math:`e_{qp}`, :math:`e_{pq}` (NaN where a KL gradient is 0, at p = q).

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    >>> errors = gradient_errors(pair, [("k1", "reward_to_go"), ("k3", "sequence_loss")])
    >>> bool(errors[0, 0] < 1e-14 and errors[1, 1] < 1e-14)
    True
    """
    from klviz.gradients import sequences as ks

    targets = [ks.sequence_kl_gradient(pair, target) for target in ("kl_qp", "kl_pq")]
    out = np.empty((len(combos), 2))
    for i, (estimator, use) in enumerate(combos):
        gradient = _expected_gradient(pair, estimator, use)
        for j, target in enumerate(targets):
            out[i, j] = (gradient - target).norm / target.norm if target.norm > 0 else math.nan
    return out


class SequenceGradientPanel(LivePanel):
    r"""Exact relative errors of sequence-KL gradient uses against both sequence KLs, over T, with a gap slider.

    Parameters
    ----------
    pair_at : callable
        ``pair_at(gap) -> MarkovChainPair`` at the longest length; shorter lengths are ``pair.with_length(T)``.
    combos : sequence of (str, str)
        (estimator, use) pairs, as in :func:`gradient_errors`.
    lengths : sequence of int
        The sequence lengths T on the horizontal axis (a log scale).
    gap : float
        Initial gap, in ``gap_range``.
    gap_range : (float, float)
        The slider's range (the gap must stay positive: at 0 both KL gradients vanish).
    step : float
        The slider's step.
    live : bool or None
        Live (ipympl) canvas, Agg with PNGs (False), or decide (None: live in a kernel with ipympl).

    Examples
    --------
    >>> import numpy as np
    >>> from klviz import MarkovChainPair
    >>> base = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> at = lambda gap: MarkovChainPair(np.zeros(2), base + gap * np.eye(2), np.zeros(2), base, 4)
    >>> panel = SequenceGradientPanel(at, [("k2", "token_loss")], [1, 2, 4], gap=0.5, live=False)
    >>> panel.controls["gap"].value = 1.0
    >>> panel.gap
    1.0
    """

    figsize = (11.0, 4.4)

    def __init__(self, pair_at: Callable, combos: Sequence, lengths: Sequence[int], *, gap: float = 0.5,
                 gap_range: tuple[float, float] = (0.05, 2.0), step: float = 0.05, live: bool | None = None):
        import ipywidgets as widgets

        if not callable(pair_at):
            raise TypeError("pair_at must be a callable gap -> MarkovChainPair")
        self.combos = tuple((str(k), str(u)) for k, u in combos)
        if not self.combos:
            raise ValueError("combos must name at least one (estimator, use) pair")
        lengths = [int(t) for t in lengths]
        if not lengths or min(lengths) < 1 or sorted(set(lengths)) != lengths:
            raise ValueError(f"lengths must be increasing positive integers, got {lengths!r}")
        self.lengths = np.array(lengths)
        low, high = (float(v) for v in gap_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ValueError(f"gap_range must be (low, high) with 0 < low < high, got {gap_range!r}")
        self.gap_range = (low, high)
        self.pair_at = pair_at
        self._cache: dict[float, tuple] = {}
        self.step_times: deque = deque(maxlen=512)  # seconds per step, kernel side
        self.gap = self._gap(gap)

        self.figure = new_figure(self.figsize, live=live)
        self._build()
        self.blitted = BlittedFigure(self.figure, self._dynamic)
        self.controls = {"gap": grid_slider(
            value=self.gap, min=low, max=high, step=step, description="gap δ", readout_format=".2f",
            continuous_update=is_live(self.figure), style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"))}
        self.controls["gap"].add_class("klviz-gap")
        self.controls["gap"].observe(self._on_slider, names="value")
        self.widget = widgets.VBox([self.controls["gap"], self.picture_widget()]).add_class("klviz-sequence-panel")
        self.update()

    # ---- building --------------------------------------------------------------------------------
    def _build(self):
        fig = self.figure
        left = fig.add_axes((0.06, 0.14, 0.33, 0.68))
        right = fig.add_axes((0.45, 0.14, 0.33, 0.68))
        self.axes = (left, right)
        self.lines = {}
        for ax, name, title in ((left, "kl_qp", "against ∇KL(q‖p) of the sequence"),
                                (right, "kl_pq", "against ∇KL(p‖q) of the sequence")):
            for estimator, use in self.combos:
                color = PALETTE.get(estimator, STEP_KL_COLOR)
                (line,) = ax.plot(self.lengths, np.zeros(self.lengths.size), color=color,
                                  linestyle=USE_LINESTYLES.get(use, "-"), linewidth=2, marker="o", markersize=3,
                                  label=f"{estimator} {use}" if estimator != "step_kl" else use)
                self.lines[name, estimator, use] = line
            ax.axhline(0.0, color=TRUE_KL_COLOR, linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(self.lengths, [str(t) for t in self.lengths])
            ax.minorticks_off()
            ax.set_ylim(*_Y_LIMITS)
            ax.set_xlim(self.lengths[0] / 1.2, self.lengths[-1] * 1.2)
            ax.set_xlabel("sequence length T", fontsize=9)
            ax.set_title(title, fontsize=10)
            ax.tick_params(labelsize=9)
            ax.grid(alpha=0.3)
        left.set_ylabel("relative error ‖E G − ∇KL‖ / ‖∇KL‖", fontsize=9)
        fig.legend(handles=[self.lines["kl_qp", k, u] for k, u in self.combos], loc="center left",
                   bbox_to_anchor=(0.79, 0.5), fontsize=9, frameon=False)
        self.title = fig.text(0.06, 0.93, "", ha="left", va="center", fontsize=10)

    def _dynamic(self) -> list:
        return list(self.lines.values()) + [self.title]

    # ---- the step ----------------------------------------------------------------------------------
    def _gap(self, value) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"gap must be a real number, got {type(value).__name__} {value!r}")
        low, high = self.gap_range
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"gap must be finite and in [{low:g}, {high:g}], got {value}")
        return value

    def _at(self, gap: float) -> tuple:
        """Every curve at one gap, and the longest sequences' KLs (cached: the slider revisits its grid)."""
        key = round(gap, 12)
        found = self._cache.get(key)
        if found is None:
            longest = self.pair_at(gap)
            errors = np.stack([gradient_errors(longest.with_length(int(t)), self.combos) for t in self.lengths])
            found = self._cache[key] = (errors, (longest.with_length(int(self.lengths[-1])).kl_qp(),
                                                 longest.with_length(int(self.lengths[-1])).kl_pq()))
        return found

    def _on_slider(self, change):
        with self.lock:  # a browser message and a cell take turns; the step reads the slider's final value
            self.update()

    def update(self, gap: float | None = None) -> float:
        """One step: move to ``gap`` (default: the slider's value), update the artists, render.

        Returns
        -------
        float
            The gap shown.
        """
        with self.lock:
            if gap is not None:
                self.controls["gap"].value = self._gap(gap)  # runs the step
                return self.gap
            start = time.perf_counter()
            self.gap = self._gap(self.controls["gap"].value)
            errors, (kl_qp, kl_pq) = self._at(self.gap)
            for i, (estimator, use) in enumerate(self.combos):
                for j, name in enumerate(("kl_qp", "kl_pq")):
                    self.lines[name, estimator, use].set_ydata(errors[:, i, j])
            self.title.set_text(f"gap δ = {self.gap:.2f}:  at T = {self.lengths[-1]}, KL(q‖p) = {kl_qp:.3f}, "
                                f"KL(p‖q) = {kl_pq:.3f}")
            self.blitted.render()
            self.after_render()
            self.step_times.append(time.perf_counter() - start)
            return self.gap

    @property
    def errors(self) -> np.ndarray:
        """The relative errors shown: shape (len(lengths), len(combos), 2), columns against KL(q‖p), KL(p‖q)."""
        return self._at(self.gap)[0]

    def close(self):
        """Close the slider, the layout and the canvas."""
        self.controls["gap"].close()
        self.widget.close()
        if is_live(self.figure):
            self.figure.canvas.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gap={self.gap:g}, combos={len(self.combos)}, lengths={self.lengths.size})"
