"""Static plotting helpers and the one palette used by every figure.

Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` to the artist and returns
the Axes; nothing here calls ``plt.show()``. matplotlib is imported inside the functions so that
``import klviz`` stays light.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PALETTE", "EXTRA_COLORS", "TRUE_KL_COLOR", "estimator_color", "estimator_label", "histogram_estimators",
           "mark_value"]

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


# --------------------------------------------------------------------------------------------------
# Control variates (notebook 03): the variance parabola in λ and the tangent-gap (Bregman) picture
# --------------------------------------------------------------------------------------------------

__all__ += ["control_variate_curve", "tangent_gap"]


def control_variate_curve(pair, lam=None, *, ax=None, mark_optimal: bool = True, mark_k1: bool = True,
                          mark_k3: bool = True, **kwargs):
    r"""The exact variance of :math:`-\log r + \lambda (r - 1)` against λ, with λ*, k1 and k3 marked.

    .. math:: \mathrm{Var}(k_\lambda) = \mathrm{Var}(\log r) - 2\lambda\,\mathrm{Cov}(\log r, r)
              + \lambda^2\,\mathrm{Var}(r),

    a parabola with its minimum at :math:`\lambda^* = \mathrm{Cov}(\log r, r)/\mathrm{Var}(r)`
    (:func:`klviz.optimal_lambda`). λ = 0 is k1 and λ = 1 is k3; each is marked with a dot in its
    palette colour, λ* with a dotted vertical line. The curve comes from one call of
    :func:`klviz.control_variate_variance`; the marks from one call of :func:`klviz.optimal_lambda`, which
    also returns Var(k1) and Var(k3).

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
    lam : array_like, optional
        The λ grid; default 401 points on [-0.5, 2].
    ax : matplotlib Axes, optional
    mark_optimal, mark_k1, mark_k3 : bool
        Whether to mark λ*, λ = 0 (k1) and λ = 1 (k3).
    **kwargs
        Passed to ``Axes.plot`` for the curve.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    ValueError
        If ``lam`` is not one-dimensional with at least two points, or not finite.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from klviz import GaussianPair
    >>> fig, ax = plt.subplots()
    >>> ax = control_variate_curve(GaussianPair(mu_p=1.0), lam=[0.0, 0.5, 1.0], ax=ax)
    >>> [round(float(v), 6) for v in ax.lines[0].get_ydata()]   # Var(k1) = 1, Var(k3) = e - 2
    [1.0, 0.42957, 0.718282]
    """
    from klviz.exact import control_variate_variance, optimal_lambda

    lam = np.linspace(-0.5, 2.0, 401) if lam is None else np.asarray(lam, dtype=np.float64)
    if lam.ndim != 1 or lam.size < 2:
        raise ValueError(f"lam must be a one-dimensional grid of at least two values, got shape {lam.shape}")
    if not np.isfinite(lam).all():
        raise ValueError("lam must be finite (no NaN or ±inf)")
    ax = _axes(ax)
    kwargs.setdefault("color", PALETTE["k_lambda"])
    kwargs.setdefault("linewidth", 2.0)
    kwargs.setdefault("label", r"exact Var$(k_\lambda)$")
    ax.plot(lam, control_variate_variance(pair, lam), **kwargs)
    if mark_k1 or mark_k3 or mark_optimal:
        best = optimal_lambda(pair)  # λ*, and the variances at λ = 0 (k1) and λ = 1 (k3)
        for show, value, variance, name in ((mark_k1, 0.0, best.var_k1, "k1"), (mark_k3, 1.0, best.var_k3, "k3")):
            if show:
                ax.plot([value], [variance], "o", color=PALETTE[name], markersize=8, zorder=3,
                        label=f"{name} (λ = {value:g})")
        if mark_optimal:
            ax.axvline(best.lam, color=TRUE_KL_COLOR, linestyle=":", linewidth=1.5,
                       label=f"λ* = {best.lam:.3f}")
    ax.set_xlabel("λ")
    ax.set_ylabel(r"Var$(k_\lambda)$")
    return ax


def tangent_gap(f, slope_at_1: float, r_values, *, r_range=(0.05, 4.0), ax=None, color: str = PALETTE["k3"],
                label: str = "k3", curve_label: str = "f(r)", **kwargs):
    r"""A convex generator f, its tangent at r = 1, and the gap between them at chosen r (the Bregman picture).

    .. math:: f(r) - \big[f(1) + f'(1)(r - 1)\big] \;\ge\; 0,

    which, with f(1) = 0, is the per-sample control-variate estimator :math:`f(r) - f'(1)(r - 1)` of the
    f-divergence :math:`\mathbb{E}_q[f(r)]` (for f = -log it is k3). Each gap is drawn as a shaded
    vertical bar, labelled with its value.

    Parameters
    ----------
    f : callable
        The generator, vectorised over positive r, with f(1) = 0.
    slope_at_1 : float
        f'(1).
    r_values : array_like
        Where to draw the gap (positive, inside ``r_range``).
    r_range : (float, float)
        The plotted range of r; positive.
    ax : matplotlib Axes, optional
    color : str
        The colour of the gaps (the estimator's palette colour).
    label : str
        The estimator's name, used in the gap labels.
    curve_label : str
        The legend label of the curve of f (``label`` names the gaps, so it cannot be passed in kwargs).
    **kwargs
        Passed to ``Axes.plot`` for the curve of f.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    ValueError
        If ``r_range`` or ``r_values`` is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = tangent_gap(lambda r: -np.log(r), -1.0, [2.0], ax=ax)
    >>> [round(float(y), 6) for y in ax.lines[2].get_ydata()]   # from the tangent 1 - 2 up to -log 2
    [-1.0, -0.693147]
    """
    low, high = (float(v) for v in r_range)
    if not 0 < low < high:
        raise ValueError(f"r_range must be (low, high) with 0 < low < high, got {r_range!r}")
    r_values = np.atleast_1d(np.asarray(r_values, dtype=np.float64))
    if np.any(~(r_values > 0)):
        raise ValueError("r_values must be positive")
    ax = _axes(ax)
    r = np.linspace(low, high, 400)
    kwargs.setdefault("color", TRUE_KL_COLOR)
    kwargs.setdefault("linewidth", 2.0)
    ax.plot(r, f(r), label=curve_label, **kwargs)
    ax.plot(r, slope_at_1 * (r - 1.0), color="0.45", linestyle="--", linewidth=1.5,
            label=f"tangent at r = 1 (slope f'(1) = {slope_at_1:g})")
    for value in r_values:
        top, bottom = float(f(np.array([value]))[0]), slope_at_1 * (value - 1.0)
        width = 0.012 * (high - low)
        ax.fill_between([value - width, value + width], bottom, top, color=color, alpha=0.3, linewidth=0)
        ax.plot([value, value], [bottom, top], color=color, linewidth=2.0)
        ax.annotate(f"{label} = {top - bottom:.3g}", (value + width, 0.5 * (top + bottom)), xytext=(6, 0),
                    textcoords="offset points", va="center", color=color, fontsize=9,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    ax.plot([1.0], [0.0], "o", color=TRUE_KL_COLOR, markersize=4)
    ax.set_xlabel("r = p(x)/q(x)")
    return ax
