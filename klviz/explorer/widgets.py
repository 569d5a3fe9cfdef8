r"""The explorer's widgets: sliders, toggles and a live table around an :class:`ExplorerFigure`.

ipywidgets (and, for the live canvas, ipympl) are imported only when a :class:`BiasExplorer` is made.
"""

from __future__ import annotations

import time
from collections import deque

from klviz.explorer.figure import ExplorerFigure
from klviz.explorer.state import (
    DEFAULT_BINS,
    ESTIMATOR_NAMES,
    GAP_RANGE,
    SAMPLE_SIZES,
    SIGMA_RATIO_RANGE,
    ExplorerState,
    _estimator_names,
    _real_in,
    _sample_size,
    _seed,
)
from klviz.interactive import LivePanel, grid_slider, is_live

__all__ = ["BiasExplorer"]


class BiasExplorer(LivePanel):
    r"""The interactive explorer: sliders, estimator toggles and a live table around an :class:`ExplorerFigure`.

    Controls (``self.controls``): ``"gap"`` (μ from 0 to 3), ``"sigma_ratio"`` (σ_p/σ_q), ``"n"``
    (sample size), ``"seed"`` and ``"resample"`` (new common draws), and one checkbox per estimator.
    ``self.table`` is an HTML widget with the live table (:meth:`ExplorerState.to_html`);
    ``self.panel`` is the :class:`ExplorerFigure`. Display the explorer (last line of a cell, or
    ``display(explorer)``) to get the whole layout; its display bundle also carries a PNG of the
    picture at display time, for viewers without a kernel.

    In a kernel with ipympl the figure is a live canvas made directly (the notebook's backend is left
    alone), updated by blitting; otherwise it is shown as a PNG re-rendered after each change. Every
    step holds the figure's lock, so a cell and the browser moving controls at the same time take turns.

    Parameters
    ----------
    gap, sigma_ratio, n, rng, estimators, live, bins, blit
        As for :class:`ExplorerFigure`.

    Examples
    --------
    >>> explorer = BiasExplorer(n=10_000, rng=0, live=False)
    >>> explorer.controls["gap"].value = 2.0  # what moving the slider does
    >>> round(explorer.state.rows["k2"].exact.relative_bias, 12)
    1.0
    """

    def __init__(self, gap: float = 1.0, sigma_ratio: float = 1.0, n: int = 200_000, *, rng=None,
                 estimators=ESTIMATOR_NAMES, live: bool | None = None, bins: int = DEFAULT_BINS,
                 blit: bool = True):
        import ipywidgets as widgets

        self._syncing = False  # True while update() moves several controls (under the lock): one step
        self.step_times: deque = deque(maxlen=512)  # seconds per step, kernel side (benchmarks, browser test)
        self.panel = ExplorerFigure(gap, sigma_ratio, n, rng=rng, estimators=estimators, live=live, bins=bins,
                                    blit=blit)
        self.blitted = self.panel.blitted
        style = {"description_width": "initial"}
        wide = widgets.Layout(width="420px")
        sizes = sorted(set(SAMPLE_SIZES) | {self.panel.n})
        self.controls = {
            "gap": grid_slider(value=self.panel.gap, min=GAP_RANGE[0], max=GAP_RANGE[1], step=0.05,
                               description="mean gap μ", readout_format=".2f", style=style, layout=wide),
            "sigma_ratio": grid_slider(value=self.panel.sigma_ratio, min=SIGMA_RATIO_RANGE[0],
                                       max=SIGMA_RATIO_RANGE[1], step=0.05, description="σp / σq",
                                       readout_format=".2f", style=style, layout=wide),
            "n": widgets.SelectionSlider(options=[(f"{size:,}", size) for size in sizes], value=self.panel.n,
                                         description="samples n", style=style, layout=wide),
            "seed": widgets.BoundedIntText(value=self.panel.seed, min=0, max=2**31 - 1, description="seed",
                                           style=style, layout=widgets.Layout(width="150px")),
            "resample": widgets.Button(description="resample", tooltip="new common random numbers (seed + 1)",
                                       icon="refresh", layout=widgets.Layout(width="110px")),
        }
        live_canvas = is_live(self.panel.figure)
        for key in ("gap", "sigma_ratio", "n"):
            # Live: every notch is a frame (a step is a blit). PNG fallback: update on release.
            self.controls[key].continuous_update = live_canvas
        for name in ESTIMATOR_NAMES:
            self.controls[name] = widgets.Checkbox(value=name in self.panel.estimators, description=name,
                                                   indent=False, layout=widgets.Layout(width="60px"))
        for key, control in self.controls.items():
            control.add_class(f"klviz-{key.replace('_', '-')}")
            if key != "resample":
                control.observe(self._on_control, names="value")
        self.controls["resample"].on_click(self._on_resample)
        self.table = widgets.HTML(self.state.to_html()).add_class("klviz-table")

        toggles = widgets.HBox([widgets.Label("show:")] + [self.controls[name] for name in ESTIMATOR_NAMES])
        self.widget = widgets.VBox([
            widgets.HBox([self.controls["gap"], self.controls["sigma_ratio"]]),
            widgets.HBox([self.controls["n"], self.controls["seed"], self.controls["resample"], toggles]),
            self.picture_widget(),
            self.table,
        ]).add_class("klviz-explorer")

    # ---- what the figure knows ---------------------------------------------------------------------
    @property
    def state(self) -> ExplorerState:
        """The state shown (the last step's)."""
        return self.panel.state

    @property
    def figure(self):
        return self.panel.figure

    @property
    def artists(self):
        return self.panel.artists

    @property
    def full_draws(self) -> int:
        return self.panel.full_draws

    @property
    def seed(self) -> int:
        return self.panel.seed

    @property
    def estimators(self) -> tuple[str, ...]:
        return self.panel.estimators

    # ---- the step ----------------------------------------------------------------------------------
    def _on_control(self, change):
        # A browser message (subshell thread) or a cell (main thread): one at a time. The step reads every
        # control, so the last step to run shows the controls' final values.
        with self.lock:
            if not self._syncing:
                self._apply_controls()

    def _on_resample(self, _button):
        with self.lock:
            self.controls["seed"].value = (self.controls["seed"].value + 1) % 2**31

    def _apply_controls(self) -> ExplorerState:
        with self.lock:
            start = time.perf_counter()
            state = self.panel.update(
                gap=self.controls["gap"].value,
                sigma_ratio=self.controls["sigma_ratio"].value,
                n=self.controls["n"].value,
                rng=self.controls["seed"].value,
                estimators=[name for name in ESTIMATOR_NAMES if self.controls[name].value],
            )
            self.table.value = state.to_html()
            self.after_render()
            self.step_times.append(time.perf_counter() - start)
            return state

    def update(self, *, gap=None, sigma_ratio=None, n=None, rng=None, estimators=None) -> ExplorerState:
        """Move the controls to the given settings, then take one step (as if the reader had moved them).

        Parameters and return value as for :meth:`ExplorerFigure.update`; ``n`` must be one of the
        sample-size slider's values.
        """
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
        with self.lock:
            self._syncing = True
            try:
                for key, value in values.items():
                    self.controls[key].value = value
            finally:
                self._syncing = False
            return self._apply_controls()

    def close(self):
        """Close the widgets and the canvas."""
        for control in self.controls.values():
            control.close()
        self.table.close()
        self.widget.close()
        self.panel.close()

    def __repr__(self) -> str:
        panel = self.panel
        return (f"{type(self).__name__}(gap={panel.gap:g}, sigma_ratio={panel.sigma_ratio:g}, n={panel.n}, "
                f"rng={panel.seed}, estimators={list(panel.estimators)})")
