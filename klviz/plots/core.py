"""The palette, the one figure style, and the helpers every notebook's figures share.

Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` to the artist and returns
the Axes; nothing here calls ``plt.show()``. matplotlib is imported inside the functions so that
``import klviz`` stays light.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PALETTE", "EXTRA_COLORS", "TRUE_KL_COLOR", "STYLE", "use_style", "estimator_color", "estimator_label",
           "histogram_estimators", "mark_value", "axes"]

#: Okabe–Ito colours (colour-blind safe), one per estimator, the same in every figure.
PALETTE = {
    "k1": "#0072B2",  # blue
    "k2": "#E69F00",  # orange
    "k3": "#009E73",  # bluish green
    "k1_pq": "#56B4E9",  # sky blue
    "k3_pq": "#CC79A7",  # reddish purple
    "k_lambda": "#D55E00",  # vermillion
}
#: The colour of the true value (exact KL) wherever it is marked.
TRUE_KL_COLOR = "#000000"

#: The collection's figure style: text readable at 100% zoom (≥ 9 pt), no frames on legends, light grids.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.formatter.limits": (-4, 5),
}


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib (the one styling call at the top of a notebook).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> use_style()
    >>> import matplotlib.pyplot as plt
    >>> plt.rcParams["legend.fontsize"]
    9.0
    """
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)


def axes(ax=None):
    """``ax``, or the current Axes when None (the convention of every plotting function here)."""
    return _axes(ax)



#: Colours for estimators outside :data:`PALETTE` (user-defined ones), picked by a stable hash of the name:
#: the rest of Okabe–Ito plus two greys, so an estimator keeps its colour from one figure to the next.
EXTRA_COLORS = ("#F0E442", "#999999", "#882255", "#44AA99", "#555555")


def estimator_color(estimator) -> str:
    """The palette colour of an estimator (a name or an :class:`~klviz.Estimator`).

    Built-ins have fixed colours (``k_lambda(0.5)`` takes ``k_lambda``'s); any other estimator gets one of
    :data:`EXTRA_COLORS`, the same every time for the same name.

    Raises
    ------
    TypeError
        If ``estimator`` is neither a string nor an Estimator.

    Examples
    --------
    >>> estimator_color("k3")
    '#009E73'
    >>> estimator_color("my_k3") == estimator_color("my_k3")
    True
    """
    import zlib

    from klviz.estimators import Estimator

    name = estimator.name if isinstance(estimator, Estimator) else estimator
    if not isinstance(name, str):
        raise TypeError(f"estimator must be a name or an Estimator, got {type(estimator).__name__}")
    base = name.split("(")[0]
    if base in PALETTE:
        return PALETTE[base]
    return EXTRA_COLORS[zlib.crc32(name.encode()) % len(EXTRA_COLORS)]


def estimator_label(estimator) -> str:
    r"""The plot label of an estimator: its record's ``label`` (math) for a name in :data:`klviz.ESTIMATORS` or an
    :class:`~klviz.Estimator`, else the string itself.

    Examples
    --------
    >>> print(estimator_label("k3"))
    $k_3 = (r - 1) - \log r$
    """
    from klviz.estimators import ESTIMATORS, Estimator

    if isinstance(estimator, Estimator):
        return estimator.display_label
    if isinstance(estimator, str) and estimator in ESTIMATORS:
        return ESTIMATORS[estimator].display_label
    if isinstance(estimator, str):
        return estimator
    raise TypeError(f"estimator must be a name or an Estimator, got {type(estimator).__name__}")


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
    >>> float(ax.lines[-1].get_xdata()[0])
    0.5
    """
    ax = _axes(ax)
    kwargs.setdefault("linestyle", "--")
    kwargs.setdefault("linewidth", 1.5)
    ax.axvline(value, color=color, label=label, **kwargs)
    return ax


def histogram_estimators(values: dict, *, ax=None, bins=100, range=None, coverage: float = 0.999,
                         true_kl: float | None = None, show_means: bool = True, density: bool = True, **kwargs):
    r"""Overlaid step histograms of per-sample estimates, one per estimator, in the palette colours.

    Estimators of one divergence can differ in spread by orders of magnitude (k1 against k3 at a small
    gap), so the default range is chosen per estimator: it is the smallest interval that holds the
    central ``coverage`` share of *each* estimator's own finite values (its
    :math:`\tfrac{1-c}{2}` and :math:`\tfrac{1+c}{2}` quantiles), not a percentile of all samples pooled,
    which would cut the widest estimator's tails. Nothing is cut silently: an estimator with samples
    outside the bins (or NaN/±inf) says which share in its legend label, e.g. ``k1, mean 0.005 (0.1%
    outside the bins)``. Sample means are drawn (dotted, in the estimator's colour, above the true-KL
    line) wherever they fall — the x-limits widen to show a mean outside the bins — and written in the
    label, since they often coincide with the true KL and with each other.

    Parameters
    ----------
    values : dict
        Estimator name -> array of per-sample values.
    ax : matplotlib Axes, optional
    bins : int or array_like
        Passed to ``numpy.histogram``; one shared set of edges is used for all estimators.
    range : (float, float), optional
        The histogram range; default: chosen per estimator from ``coverage`` (above).
    coverage : float
        With the default range, the central share of each estimator's finite values that the range
        must hold; in (0, 1]. (An estimator with no finite value does not take part.)
    true_kl : float, optional
        Marked as a dashed black line.
    show_means : bool
        Mark each estimator's sample mean with a dotted line in its colour and give it in the label.
    density : bool
        Heights are counts / (number of samples × bin width): a bin's height is the same whatever
        share of the samples the range holds.
    **kwargs
        Passed to ``Axes.stairs``.

    Returns
    -------
    matplotlib Axes
        Each step histogram is an ``Axes.patches`` entry whose ``get_gid()`` is the estimator's name.

    Raises
    ------
    ValueError
        If ``values`` is empty, names an estimator outside the palette, holds an empty array, if
        ``coverage`` is not in (0, 1], or (with the default range) no estimator has a finite value;
        checked before anything is drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> ax = histogram_estimators({"k1": np.array([-1.0, 0.0, 1.0, 5.0])}, bins=2, range=(-1, 1), true_kl=0.0)
    >>> [(p.get_gid(), p.get_label()) for p in ax.patches]
    [('k1', 'k1, mean 1.25 (25% outside the bins)')]
    """
    if not values:
        raise ValueError("values must contain at least one estimator")
    # Everything is checked before the first artist is drawn: a bad name must not leave half a figure.
    colors = {name: estimator_color(name) for name in values}
    samples = {name: np.asarray(sample, dtype=np.float64).ravel() for name, sample in values.items()}
    for name, sample in samples.items():
        if sample.size == 0:
            raise ValueError(f"values[{name!r}] must not be empty")
    if not (isinstance(coverage, (int, float, np.integer, np.floating)) and 0 < coverage <= 1):
        raise ValueError(f"coverage must be a number in (0, 1], got {coverage!r}")
    if range is None:
        tail = 50.0 * (1.0 - float(coverage))  # percent cut from each side of each estimator
        intervals = [np.percentile(finite, [tail, 100.0 - tail])
                     for finite in (sample[np.isfinite(sample)] for sample in samples.values()) if finite.size]
        if not intervals:
            raise ValueError("values must contain some finite numbers to choose a default range; "
                             "all are NaN or ±inf (pass range=(low, high) to draw them anyway)")
        range = (min(low for low, _ in intervals), max(high for _, high in intervals))
    edges = np.histogram_bin_edges([], bins=bins, range=range)
    ax = _axes(ax)
    kwargs.setdefault("linewidth", 1.8)
    for name, sample in samples.items():
        counts, _ = np.histogram(sample, bins=edges)
        outside = (sample.size - counts.sum()) / sample.size  # beyond the edges, or NaN/±inf
        label = name
        if show_means:
            mean = sample.mean()
            label += f", mean {mean:.4g}"
        if outside > 0:
            label += f" ({100 * outside:.3g}% outside the bins)"
        if density:
            counts = counts / (sample.size * np.diff(edges))
        patch = ax.stairs(counts, edges, color=colors[name], label=label, **kwargs)
        patch.set_gid(name)
        if show_means and np.isfinite(mean):
            # Above the true-KL line (zorder 2): a mean that coincides with it stays visible.
            ax.axvline(mean, color=colors[name], linestyle=":", linewidth=1.8, zorder=3)
    if true_kl is not None:
        mark_value(true_kl, ax=ax, label=f"true KL = {true_kl:.4g}")
    ax.set_xlabel("per-sample estimate")
    ax.set_ylabel("density" if density else "count")
    return ax
