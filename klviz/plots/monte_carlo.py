r"""Figures of notebook 01: one estimator's per-sample values with the negative ones shaded, and the error of
Monte Carlo means against the number of samples (which falls like :math:`1/\sqrt n`)."""

from __future__ import annotations

import numpy as np

from klviz.plots.core import _axes, estimator_color, histogram_estimators

__all__ = ["histogram_with_negatives", "error_against_samples"]


def histogram_with_negatives(values, *, estimator: str = "k1", true_kl: float | None = None,
                             half_width: float | None = None, bins: int = 80, ax=None, **kwargs):
    r"""A histogram of per-sample estimates of a divergence, the negative side shaded, with the share below 0.

    KL is never negative, but a single sample of :math:`k_1 = -\log r` is negative wherever :math:`r > 1`; for
    q = N(0, 1), p = N(μ, 1), :math:`k_1 \sim N(\mu^2/2, \mu^2)` and :math:`P(k_1 < 0) = \Phi(-\mu/2)`. The
    window is centred on ``true_kl`` (or the sample mean), the region left of 0 is shaded grey, and the share of
    negative samples — of *all* samples, also those outside the window — is written in the top left corner.

    Parameters
    ----------
    values : array_like
        Per-sample estimates (finite).
    estimator : str
        The estimator's name: its palette colour and the histogram's label.
    true_kl : float, optional
        Marked as a dashed black line (and the window's centre).
    half_width : float, optional
        The window is centre ± half_width; default four standard deviations of ``values``.
    bins : int
        Number of bins in the window.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.stairs`` (through :func:`~klviz.plots.histogram_estimators`).

    Returns
    -------
    matplotlib Axes
        The histogram is ``ax.patches`` entry with gid ``estimator``; the shaded region an ``axvspan`` patch with
        gid ``"negative"``; the share ``ax.texts[-1]``.

    Raises
    ------
    ValueError
        If ``values`` is empty or not finite, or ``half_width`` is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> values = np.array([-1.0, 0.5, 1.0, 2.0])
    >>> ax = histogram_with_negatives(values, true_kl=0.5, half_width=2.0, bins=4, ax=ax)
    >>> ax.texts[-1].get_text()
    'k1 < 0: 25.0%'
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("values must not be empty")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (no NaN or ±inf)")
    centre = float(values.mean()) if true_kl is None else float(true_kl)
    half_width = 4.0 * float(values.std()) if half_width is None else float(half_width)
    if not half_width > 0:
        raise ValueError(f"half_width must be positive, got {half_width!r}")
    low, high = centre - half_width, centre + half_width
    ax = _axes(ax)
    if low < 0:
        ax.axvspan(low, min(0.0, high), color="0.9", zorder=0, linewidth=0).set_gid("negative")
    histogram_estimators({estimator: values}, ax=ax, bins=bins, range=(low, high), true_kl=true_kl,
                         show_means=False, **kwargs)
    ax.text(0.03, 0.93, f"{estimator} < 0: {np.mean(values < 0):.1%}", transform=ax.transAxes, va="top")
    ax.set_xlim(low, high)
    return ax


def error_against_samples(sizes, errors: dict, relative_std: dict, *, ax=None, threshold: float | None = 0.01,
                          **kwargs):
    r"""The relative error of single Monte Carlo runs against n, next to :math:`\mathrm{std}/(\mathrm{KL}\sqrt n)`.

    The standard error of an n-sample mean, relative to the divergence it estimates, is

    .. math:: \frac{\mathrm{s.e.}}{\mathrm{KL}} = \frac{\mathrm{std}/\mathrm{KL}}{\sqrt n},

    a line of slope -1/2 on log-log axes, one per estimator, whose height is the estimator's exact
    ``relative_std``; each run's :math:`|\text{mean} - \mathrm{KL}|/\mathrm{KL}` scatters around it.

    Parameters
    ----------
    sizes : array_like of int
        The sample sizes n (positive).
    errors : dict
        Estimator name -> array of shape ``(len(sizes), runs)``: the relative errors of independent runs.
    relative_std : dict
        Estimator name -> its exact std/KL (e.g. :attr:`klviz.ExactMoments.relative_std`); the same names as
        ``errors``.
    ax : matplotlib Axes, optional
    threshold : float or None
        A dotted horizontal reference line at this relative error (default 1%); None for none.
    **kwargs
        Passed to ``Axes.plot`` for the lines.

    Returns
    -------
    matplotlib Axes
        Per estimator, a line with gid ``"<name> line"`` and the dots with gid ``"<name> runs"``.

    Raises
    ------
    ValueError
        If a size is not positive, ``errors`` and ``relative_std`` name different estimators, or an error array
        does not have one row per size.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = error_against_samples([100, 10_000], {"k1": np.array([[0.5], [0.02]])}, {"k1": 2.0}, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()]
    [0.2, 0.02]
    """
    sizes = np.asarray(sizes, dtype=np.float64).ravel()
    if sizes.size == 0 or not np.all(sizes > 0):
        raise ValueError("sizes must be a non-empty sequence of positive numbers")
    if set(errors) != set(relative_std):
        raise ValueError(f"errors and relative_std must name the same estimators, got {sorted(errors)} and "
                         f"{sorted(relative_std)}")
    arrays = {}
    for name, array in errors.items():
        array = np.asarray(array, dtype=np.float64)
        array = array.reshape(-1, 1) if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[0] != sizes.size:
            raise ValueError(f"errors[{name!r}] must have one row per size ({sizes.size}), got shape {array.shape}")
        arrays[name] = array
    ax = _axes(ax)
    for name, array in arrays.items():
        color = estimator_color(name)
        ratio = float(relative_std[name])
        line_kwargs = {"color": color, "linewidth": 2.0, **kwargs}
        label = f"{name}: std/(KL√n), exact std/KL = {ratio:.3g}"
        line, = ax.plot(sizes, ratio / np.sqrt(sizes), label=label, **line_kwargs)
        line.set_gid(f"{name} line")
        dots, = ax.plot(np.repeat(sizes, array.shape[1]), array.ravel(), "o", color=color, markersize=3.5,
                        alpha=0.6, label=f"{name}: single runs")
        dots.set_gid(f"{name} runs")
    if threshold is not None:
        ax.axhline(threshold, color="0.4", linestyle=":", linewidth=1.2, label=f"{threshold:.0%} relative error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples n")
    ax.set_ylabel("|mean − KL| / KL")
    return ax
