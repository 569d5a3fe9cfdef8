"""Figures of notebook 03: the control-variate parabola in λ and the tangent-gap (Bregman) picture."""

from __future__ import annotations

import numpy as np

from klviz.plots.core import PALETTE, TRUE_KL_COLOR, _axes

__all__ = ["control_variate_curve", "tangent_gap"]

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
