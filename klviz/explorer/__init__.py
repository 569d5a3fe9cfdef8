r"""The bias explorer: how k1, k2 and k3 behave as p moves away from q, live.

q = N(0, 1) is what we sample from and p = N(μ, σ²) the target, with a mean gap μ and a standard
deviation ratio σ = σ_p/σ_q. Three layers, each usable on its own:

* :mod:`klviz.explorer.state` — pure functions, no matplotlib: the common random numbers
  (:func:`standard_draws`), the state at one setting (:func:`explorer_state`: exact and Monte Carlo
  moments, histogram counts on stable bins), the exact curves along the gap (:func:`exact_curves`,
  :func:`std_crossings`, :func:`exact_relative_bias`) and the Monte Carlo points (:func:`monte_carlo_bias`).
* :mod:`klviz.explorer.figure` — :class:`ExplorerFigure`, the matplotlib figure: artists built once and
  updated in place, blitted over a saved background under one lock (:mod:`klviz.interactive`).
* :mod:`klviz.explorer.widgets` — :class:`BiasExplorer`, the ipywidgets glue: sliders, toggles and a
  live table around an :class:`ExplorerFigure` (the widget *has* a figure).
"""

from klviz.explorer.figure import ExplorerArtists, ExplorerFigure
from klviz.explorer.state import (
    ESTIMATOR_NAMES,
    GAP_GRID,
    GAP_RANGE,
    MC_GAPS,
    SAMPLE_SIZES,
    SIGMA_RATIO_RANGE,
    BiasPoints,
    ExactCurves,
    ExplorerState,
    StandardDraws,
    exact_curves,
    exact_relative_bias,
    explorer_state,
    monte_carlo_bias,
    standard_draws,
    std_crossings,
)
from klviz.explorer.widgets import BiasExplorer

__all__ = [
    "ESTIMATOR_NAMES",
    "GAP_GRID",
    "GAP_RANGE",
    "MC_GAPS",
    "SAMPLE_SIZES",
    "SIGMA_RATIO_RANGE",
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
    "ExplorerArtists",
    "ExplorerFigure",
    "BiasExplorer",
]
