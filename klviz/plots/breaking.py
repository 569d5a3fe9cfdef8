r"""Figures of notebook 05 (where the estimators break): exact spreads and biases against the width ratio,
running Monte Carlo statistics of one stream of draws, and the exact error of a batch mean against the gap.

Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` on to its lines and returns the
Axes. Exact values come from :func:`klviz.exact_moments` (cached closed forms for Gaussian pairs).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from klviz.plots.core import PALETTE, TRUE_KL_COLOR, _axes, estimator_color

__all__ = ["plain_log_ticks", "width_sweep", "running_estimate", "batch_rmse"]

_QUANTITIES = ("std", "bias")
_STATISTICS = ("mean", "std")


def plain_log_ticks(ax=None, axis: str = "y", subs=(1.0, 2.0, 5.0)):
    r"""Label a log axis with plain numbers (0.2, 0.5, 1, 2, ...) at ``subs`` × 10^k, without minor labels.

    For panels that span about a decade or less, where matplotlib's default would show one labelled
    tick, or none, in powers-of-ten notation.

    Parameters
    ----------
    ax : matplotlib Axes, optional
    axis : {"x", "y"}
    subs : sequence of float
        The mantissas of the labelled ticks.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    ValueError
        If ``axis`` is not "x" or "y".

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax.set_yscale("log")
    >>> ax = plain_log_ticks(ax)
    >>> formatter = ax.yaxis.get_major_formatter()
    >>> [formatter(value) for value in (0.2, 1.0, 5.0)]
    ['0.2', '1', '5']
    """
    import matplotlib.ticker as ticker

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    ax = _axes(ax)
    target = ax.yaxis if axis == "y" else ax.xaxis
    if target.get_scale() != "log":
        return ax
    target.set_major_locator(ticker.LogLocator(subs=tuple(subs)))
    target.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(ticker.NullFormatter())
    return ax


def _width_grid() -> np.ndarray:
    # Log-spaced on both sides of p = q (where KL = 0 and relative errors are undefined: a NaN breaks the
    # lines there), and dense just below sqrt(2), where Var(k3) runs off to infinity.
    below = math.sqrt(2) * (1 - np.geomspace(0.05, 1e-9, 30))
    return np.concatenate([np.geomspace(0.3, 0.98, 40), [np.nan], np.geomspace(1.02, below[0], 40), below[1:],
                           np.geomspace(math.sqrt(2) * 1.001, 2.5, 25)])


def width_sweep(quantity: str = "std", *, estimators=("k1", "k2", "k3"), ratios=None, ax=None, **kwargs):
    r"""The exact spread or bias of each estimator, relative to the KL, against :math:`\sigma_p/\sigma_q`.

    The pair is :math:`q = N(0, 1)`, :math:`p = N(0, \sigma_p^2)` (equal means). ``quantity="std"`` draws
    :math:`\mathrm{sd}(k)/\mathrm{KL}` on a log axis, ``"bias"`` draws :math:`(\mathbb{E}[k] - \mathrm{KL})/\mathrm{KL}`
    and a grey line at 0 labelled with the estimators that are unbiased (k1 and k3 when they are drawn).
    The region :math:`\sigma_p^2 \ge 2\sigma_q^2`, where :math:`\mathbb{E}_q[r^2] = \infty` and
    :math:`\mathrm{Var}(k_3) = \infty`, is shaded, its edge :math:`\sqrt2` dotted. Lines break at
    :math:`\sigma_p = \sigma_q` (KL = 0).

    Parameters
    ----------
    quantity : {"std", "bias"}
    estimators : sequence of str or Estimator
        Drawn in the palette colours; with ``"bias"``, estimators whose exact bias is 0 everywhere are
        drawn once, as the line at 0.
    ratios : array_like, optional
        The grid of :math:`\sigma_p/\sigma_q`; default 135 points on [0.3, 2.5], dense below √2.
        NaN entries break the lines.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for each estimator's line.

    Returns
    -------
    matplotlib Axes
        Each estimator's line has ``get_gid()`` equal to its name.

    Raises
    ------
    ValueError
        For an unknown ``quantity``, or ratios that are not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = width_sweep(ratios=[0.5, 1.2], estimators=["k1"], ax=ax)
    >>> [round(float(v), 4) for v in ax.lines[0].get_ydata()]   # sd(k1)/KL at σ_p = 0.5 and 1.2
    [2.6291, 7.3132]
    """
    from klviz import GaussianPair, exact_moments
    from klviz.estimators import get_estimator

    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}")
    ratios = _width_grid() if ratios is None else np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or np.any(ratios[~np.isnan(ratios)] <= 0):
        raise ValueError("ratios must be a 1-D array of positive numbers (NaN breaks the line)")
    records = [get_estimator(name, "estimators") for name in estimators]
    ax = _axes(ax)
    unbiased = []
    for record in records:
        values = []
        for ratio in ratios:
            if np.isnan(ratio) or ratio == 1.0:
                values.append(math.nan)
                continue
            moments = exact_moments(GaussianPair(mu_p=0.0, sigma_p=float(ratio)), record)
            values.append(moments.relative_std if quantity == "std" else moments.relative_bias)
        values = np.array(values)
        if quantity == "bias" and np.all(np.abs(values[np.isfinite(values)]) < 1e-12):
            unbiased.append(record.name)
            continue
        line_kwargs = {"color": estimator_color(record), "label": record.name, **kwargs}
        (line,) = ax.plot(ratios, values, **line_kwargs)
        line.set_gid(record.name)
    if unbiased:
        ax.axhline(0.0, color="0.45", linewidth=1, label=", ".join(unbiased) + " (unbiased)")
    high = float(np.nanmax(ratios))
    if high > math.sqrt(2):
        ax.axvspan(math.sqrt(2), high, color="0.92", zorder=0)
    ax.axvline(math.sqrt(2), color=TRUE_KL_COLOR, linestyle=":", linewidth=1)
    ax.set_xlabel(r"$\sigma_p / \sigma_q$")
    if quantity == "std":
        ax.set_yscale("log")
        ax.set_ylabel("exact std / KL")
    else:
        ax.set_ylabel("exact bias / KL")
    return ax


def _running(values: np.ndarray, statistic: str) -> np.ndarray:
    count = np.arange(1, values.size + 1)
    if statistic == "mean":
        return np.cumsum(values) / count
    # Cumulative sums of (x - c) and (x - c)^2 with c the median, close to the bulk of the values, so that
    # the two sums do not cancel; the sample variance does not depend on c.
    deviation = values - np.median(values)
    first, second = np.cumsum(deviation), np.cumsum(deviation * deviation)
    return np.sqrt(np.maximum(second - first * first / count, 0.0) / np.maximum(count - 1, 1))


def running_estimate(values: Mapping, statistic: str = "mean", *, exact: Mapping | None = None,
                     truth: float | None = None, scale: float = 1.0, labels: Mapping | None = None,
                     points: int = 1500, start: int = 10, ax=None, **kwargs):
    r"""The running sample mean or standard deviation of one stream of per-sample values, per estimator.

    After each of the first m draws (m from ``start`` to n, at ``points`` log-spaced m), the statistic of
    ``values[name][:m]``, divided by ``scale``: what a training log that accumulates the estimates would
    show. A finite variance makes both settle at the usual :math:`1/\sqrt m` rate; an infinite one makes the
    standard deviation climb in steps, one per rare draw, and never settle.

    Parameters
    ----------
    values : mapping of estimator name to array_like
        The per-sample values, in the order drawn (one stream).
    statistic : {"mean", "std"}
        The running mean, or the running sample standard deviation (ddof 1; log y-axis).
    exact : mapping of name to float, optional
        Exact values of the statistic (before scaling), drawn dashed in each estimator's colour where finite.
    truth : float, optional
        A value (after scaling) drawn as a dashed black line, e.g. 1 for a mean divided by the true KL.
    scale : float
        Every drawn value is divided by it (e.g. the true KL).
    labels : mapping of name to str, optional
        Legend labels (default: the names).
    points : int
        How many values of m are drawn.
    start : int
        The first m drawn.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for each running statistic.

    Returns
    -------
    matplotlib Axes
        Each running statistic is a line whose ``get_gid()`` is the estimator's name.

    Raises
    ------
    ValueError
        For an unknown ``statistic``, an empty ``values``, arrays shorter than ``start``, or a non-positive
        ``scale``; checked before anything is drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = running_estimate({"k1": [1.0, 3.0, 2.0, 6.0]}, "mean", start=1, points=4, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_xdata()], [float(v) for v in ax.lines[0].get_ydata()]
    ([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"statistic must be one of {_STATISTICS}, got {statistic!r}")
    if not values:
        raise ValueError("values must contain at least one estimator")
    if not (isinstance(scale, (int, float, np.integer, np.floating)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    arrays = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in values.items()}
    shortest = min(a.size for a in arrays.values())
    if shortest < max(start, 2 if statistic == "std" else 1):
        raise ValueError(f"every array in values must hold at least start = {start} values, the shortest has {shortest}")
    ax = _axes(ax)
    for name, array in arrays.items():
        shown = np.unique(np.geomspace(start, array.size, points).astype(int)) - 1  # indices of the drawn m
        running = _running(array, statistic)[shown] / scale
        line_kwargs = {"color": estimator_color(name), "label": (labels or {}).get(name, name), **kwargs}
        (line,) = ax.plot(shown + 1, running, **line_kwargs)
        line.set_gid(name)
        if exact is not None and name in exact and math.isfinite(exact[name]):
            ax.axhline(exact[name] / scale, color=estimator_color(name), linestyle="--", linewidth=1)
    if truth is not None:
        ax.axhline(truth, color=TRUE_KL_COLOR, linestyle="--", linewidth=1)
    ax.set_xscale("log")
    if statistic == "std":
        ax.set_yscale("log")
    ax.set_xlabel("samples drawn")
    return ax


def batch_rmse(gaps=None, *, batch_size: int = 1, estimators=("k1", "k2", "k3"), optimal: bool = True, ax=None,
               **kwargs):
    r"""The exact root mean squared error of the mean of a batch, relative to the KL, against the gap μ.

    The pair is :math:`q = N(0, 1)`, :math:`p = N(\mu, 1)`; for a batch of n samples

    .. math:: \frac{\sqrt{\mathrm{MSE}_n}}{\mathrm{KL}} = \frac{\sqrt{\mathrm{Var}(k)/n + \mathrm{bias}^2}}{\mu^2/2},

    so a biased estimator (k2) has a floor that no batch size removes. With ``optimal`` the best control
    variate :math:`-\log r + \lambda^*(r - 1)` (:func:`klviz.optimal_lambda`, unbiased) is drawn dotted.

    Parameters
    ----------
    gaps : array_like, optional
        Positive gaps; default 160 log-spaced on [0.05, 4].
    batch_size : int
        The batch size n, at least 1.
    estimators : sequence of str or Estimator
    optimal : bool
        Draw the optimal control variate.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for every line.

    Returns
    -------
    matplotlib Axes
        Lines with ``get_gid()`` the estimator's name (``"k_lambda"`` for the optimal control variate).

    Raises
    ------
    ValueError
        If ``batch_size`` is not a positive integer or a gap is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = batch_rmse([1.0, 2.0], estimators=["k1"], optimal=False, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()]   # sd(k1)/KL = μ / (μ²/2) = 2/μ
    [2.0, 1.0]
    """
    from klviz import GaussianPair, exact_moments, optimal_lambda
    from klviz.estimators import get_estimator

    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    gaps = np.geomspace(0.05, 4.0, 160) if gaps is None else np.asarray(gaps, dtype=np.float64)
    if gaps.ndim != 1 or not np.all(gaps > 0) or not np.all(np.isfinite(gaps)):
        raise ValueError("gaps must be a 1-D array of positive finite gaps")
    records = [get_estimator(name, "estimators") for name in estimators]
    pairs = [GaussianPair(mu_p=float(gap)) for gap in gaps]
    kl = gaps**2 / 2
    ax = _axes(ax)
    curves = []
    for record in records:
        moments = [exact_moments(pair, record) for pair in pairs]
        var, bias = np.array([m.var for m in moments]), np.array([m.bias for m in moments])
        curves.append((record.name, var, bias, estimator_color(record), "-", record.name))
    if optimal:
        var = np.array([optimal_lambda(pair).var for pair in pairs])
        curves.append(("k_lambda", var, np.zeros_like(var), PALETTE["k_lambda"], ":", "optimal λ"))
    for name, var, bias, color, style, label in curves:
        line_kwargs = {"color": color, "linestyle": style, "label": label, **kwargs}
        (line,) = ax.plot(gaps, np.sqrt(var / batch_size + bias**2) / kl, **line_kwargs)
        line.set_gid(name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gap μ")
    ax.set_ylabel("RMSE / KL")
    return ax
