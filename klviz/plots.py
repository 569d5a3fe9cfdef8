"""Static plotting helpers and the one palette used by every figure.

Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` to the artist and returns
the Axes; nothing here calls ``plt.show()``. matplotlib is imported inside the functions so that
``import klviz`` stays light.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PALETTE", "TRUE_KL_COLOR", "estimator_color", "histogram_estimators", "mark_value"]

#: Okabe–Ito colours (colour-blind safe), one per estimator, the same in every figure.
PALETTE = {
    "k1": "#0072B2",  # blue
    "k2": "#E69F00",  # orange
    "k3": "#009E73",  # bluish green
    "k1_reverse": "#56B4E9",  # sky blue
    "k3_reverse": "#CC79A7",  # reddish purple
    "k_lambda": "#D55E00",  # vermillion
}
#: The colour of the true value (exact KL) wherever it is marked.
TRUE_KL_COLOR = "#000000"


def estimator_color(name: str) -> str:
    """The palette colour for an estimator name (``k_lambda(0.5)`` maps to ``k_lambda``)."""
    base = name.split("(")[0]
    if base not in PALETTE:
        raise ValueError(f"name must be one of {sorted(PALETTE)}, got {name!r}")
    return PALETTE[base]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def mark_value(value: float, *, ax=None, label: str | None = None, color: str = TRUE_KL_COLOR, **kwargs):
    """Draw a vertical line at ``value`` (e.g. the true KL) and return the Axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = mark_value(0.5, label="true KL")
    >>> ax.lines[-1].get_xdata()[0]
    np.float64(0.5)
    """
    ax = _axes(ax)
    kwargs.setdefault("linestyle", "--")
    kwargs.setdefault("linewidth", 1.5)
    ax.axvline(value, color=color, label=label, **kwargs)
    return ax


def histogram_estimators(values: dict, *, ax=None, bins=100, range=None, true_kl: float | None = None,
                         show_means: bool = True, density: bool = True, **kwargs):
    """Overlaid step histograms of per-sample estimates, one per estimator, in the palette colours.

    Parameters
    ----------
    values : dict
        Estimator name -> array of per-sample values.
    ax : matplotlib Axes, optional
    bins : int or array_like
        Passed to ``numpy.histogram``; one shared set of edges is used for all estimators.
    range : (float, float), optional
        The histogram range; default: the 0.5 and 99.5 percentiles of all values.
    true_kl : float, optional
        Marked as a dashed black line.
    show_means : bool
        Mark each estimator's sample mean with a dotted line in its colour.
    density : bool
    **kwargs
        Passed to ``Axes.stairs``.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> ax = histogram_estimators({"k1": np.array([-1.0, 0.0, 1.0])}, bins=2, range=(-1, 1), true_kl=0.0)
    >>> [p.get_label() for p in ax.patches]
    ['k1']
    """
    ax = _axes(ax)
    if not values:
        raise ValueError("values must contain at least one estimator")
    if range is None:
        everything = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values.values()])
        everything = everything[np.isfinite(everything)]
        range = tuple(np.percentile(everything, [0.5, 99.5]))
    edges = np.histogram_bin_edges([], bins=bins, range=range)
    kwargs.setdefault("linewidth", 1.8)
    for name, sample in values.items():
        sample = np.asarray(sample, dtype=np.float64)
        counts, _ = np.histogram(sample, bins=edges)
        if density:
            counts = counts / (sample.size * np.diff(edges))
        ax.stairs(counts, edges, color=estimator_color(name), label=name, **kwargs)
        if show_means:
            ax.axvline(sample.mean(), color=estimator_color(name), linestyle=":", linewidth=1.5)
    if true_kl is not None:
        mark_value(true_kl, ax=ax, label=f"true KL = {true_kl:.4g}")
    ax.set_xlabel("per-sample estimate")
    ax.set_ylabel("density" if density else "count")
    return ax
