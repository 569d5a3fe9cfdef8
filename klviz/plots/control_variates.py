"""Figures of notebook 03: the control-variate parabola in λ, the tangent-gap (Bregman) picture, the per-sample
members of the family and where they are negative, and λ* and the price of a fixed λ against the gap."""

from __future__ import annotations

import math

import numpy as np

from klviz.plots.core import PALETTE, TRUE_KL_COLOR, _axes

__all__ = ["control_variate_curve", "tangent_gap", "k_lambda_family", "optimal_lambda_curve", "variance_ratio_curve"]


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


def _family_style(lam: float):
    """k1 and k3 in their palette colours, solid; other λ in k_lambda's colour, dashed below 1 and dotted above."""
    if lam == 0:
        return PALETTE["k1"], "-", "λ = 0 (k1)"
    if lam == 1:
        return PALETTE["k3"], "-", "λ = 1 (k3)"
    return PALETTE["k_lambda"], "--" if lam < 1 else ":", f"λ = {lam:g}"


def k_lambda_family(lams=(0.0, 0.5, 1.0, 1.5), *, r_range=(0.12, 3.5), ax=None, **kwargs):
    r"""The per-sample members :math:`k_\lambda = -\log r + \lambda (r - 1)` against r, shaded where negative.

    Every member has mean KL[q, p]; λ = 1 (k3) is the only one that is never negative (the tangent of the convex
    :math:`-\log r` at 1 has slope -1). For 0 < λ < 1 the negative samples are those with :math:`1 < r < r_0`, for
    λ > 1 those with :math:`r_0 < r < 1`, and for λ ≤ 0 every sample with r > 1.

    Parameters
    ----------
    lams : sequence of float
        The members drawn (finite).
    r_range : (float, float)
        The plotted range of r; positive.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for every curve.

    Returns
    -------
    matplotlib Axes
        One line per λ (gid ``"k_lambda(λ)"``), then the zero line; one shaded region per λ that has negative
        values in the range.

    Raises
    ------
    ValueError
        If ``r_range`` is not positive and increasing, or a λ is not finite.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = k_lambda_family([0.0, 1.0], r_range=(0.5, 2.0), ax=ax)
    >>> [line.get_label() for line in ax.lines[:2]], len(ax.collections)   # k3 has nothing to shade
    (['λ = 0 (k1)', 'λ = 1 (k3)'], 1)
    """
    from klviz.estimators import k_lambda

    low, high = (float(v) for v in r_range)
    if not 0 < low < high:
        raise ValueError(f"r_range must be (low, high) with 0 < low < high, got {r_range!r}")
    lams = [float(lam) for lam in np.atleast_1d(np.asarray(lams, dtype=np.float64))]
    if not all(math.isfinite(lam) for lam in lams):
        raise ValueError("lams must be finite (no NaN or ±inf)")
    ax = _axes(ax)
    r = np.linspace(low, high, 500)
    for lam in lams:
        color, linestyle, label = _family_style(lam)
        values = k_lambda(np.log(r), lam)
        line_kwargs = {"color": color, "linestyle": linestyle, "linewidth": 2.0, **kwargs}
        ax.plot(r, values, label=label, **line_kwargs)[0].set_gid(f"k_lambda({lam:g})")
        if np.any(values < 0):
            ax.fill_between(r, values, 0, where=values < 0, color=color, alpha=0.15, linewidth=0)
    ax.axhline(0, color=TRUE_KL_COLOR, linewidth=0.8)
    ax.set_xlabel("r = p(x)/q(x)")
    ax.set_ylabel(r"per-sample $k_\lambda = -\log r + \lambda(r-1)$")
    return ax


def _best(gaps):
    from klviz.exact import optimal_lambda
    from klviz.pairs import GaussianPair

    gaps = np.asarray(gaps, dtype=np.float64).ravel()
    if gaps.size < 2 or not np.all(np.isfinite(gaps) & (gaps > 0)):
        raise ValueError("gaps must hold at least two positive, finite numbers")
    return gaps, [optimal_lambda(GaussianPair(mu_p=gap)) for gap in gaps]


def optimal_lambda_curve(gaps, *, ax=None, small_gap_line: bool = True, **kwargs):
    r"""The variance-optimal λ* of :math:`-\log r + \lambda(r - 1)` against the gap, for q = N(0, 1), p = N(μ, 1).

    .. math:: \lambda^* = \frac{\mathrm{KL}[q,p] + \mathrm{KL}[p,q]}{\chi^2(p\|q)} = \frac{\mu^2}{e^{\mu^2} - 1}
              = 1 - \frac{\mu^2}{2} + O(\mu^4),

    from :func:`klviz.optimal_lambda` at each gap; dashed grey: the small-gap line :math:`1 - \mu^2/2`; dotted:
    λ = 1 (k3).

    Parameters
    ----------
    gaps : array_like
        Gaps μ (positive), at least two; drawn on a log axis.
    ax : matplotlib Axes, optional
    small_gap_line : bool
        Whether to draw :math:`1 - \mu^2/2`.
    **kwargs
        Passed to ``Axes.plot`` for the curve of λ*.

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is λ*.

    Raises
    ------
    ValueError
        If fewer than two gaps are given or one is not positive and finite.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = optimal_lambda_curve([0.1, 1.0], ax=ax)
    >>> [round(float(v), 6) for v in ax.lines[0].get_ydata()]   # μ²/(e^μ² - 1)
    [0.995008, 0.581977]
    """
    gaps, best = _best(gaps)
    ax = _axes(ax)
    kwargs.setdefault("color", PALETTE["k_lambda"])
    kwargs.setdefault("linewidth", 2.0)
    kwargs.setdefault("label", "λ* (optimal_lambda)")
    ax.plot(gaps, [b.lam for b in best], **kwargs)
    if small_gap_line:
        ax.plot(gaps, 1 - gaps**2 / 2, color="0.4", linestyle="--", label="1 − μ²/2")
    ax.axhline(1.0, color=PALETTE["k3"], linestyle=":", linewidth=1.5, label="λ = 1 (k3)")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("gap μ")
    ax.set_ylabel("λ*")
    return ax


def variance_ratio_curve(gaps, *, ax=None, crossover: float | None = None, **kwargs):
    r"""The price of a fixed λ: Var(k3)/Var(λ*) and Var(k1)/Var(λ*) against the gap, for q = N(0, 1), p = N(μ, 1).

    Both ratios are ≥ 1 (λ* minimises the variance). With :math:`\mathrm{Var}^* = \mathrm{Var}(\log r)(1 - \rho^2)`
    and the closed forms of the mean shift,

    .. math:: \frac{\mathrm{Var}(k_3)}{\mathrm{Var}^*} = \frac{e^{\mu^2} - 1}{\mu^2}, \qquad
              \frac{\mathrm{Var}(k_1)}{\mathrm{Var}^*} = \frac{e^{\mu^2} - 1}{e^{\mu^2} - 1 - \mu^2}:

    near p = q, k3 is within a hair of the optimum while k1's ratio grows like :math:`2/\mu^2`; far apart the
    roles swap.

    Parameters
    ----------
    gaps : array_like
        Gaps μ (positive), at least two.
    ax : matplotlib Axes, optional
    crossover : float, optional
        A gap to mark with a dotted vertical line (where Var(k1) = Var(k3)).
    **kwargs
        Passed to ``Axes.plot`` for both curves.

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is k3's ratio, ``ax.lines[1]`` k1's.

    Raises
    ------
    ValueError
        If fewer than two gaps are given or one is not positive and finite.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = variance_ratio_curve([0.1, 1.0], ax=ax)
    >>> [round(float(v), 6) for v in ax.lines[0].get_ydata()]   # (e^μ² - 1) / μ²
    [1.005017, 1.718282]
    """
    gaps, best = _best(gaps)
    ax = _axes(ax)
    kwargs.setdefault("linewidth", 2.0)
    ax.plot(gaps, [b.var_k3 / b.var for b in best], color=PALETTE["k3"], label="Var(k3) / Var(λ*)", **kwargs)
    ax.plot(gaps, [b.var_k1 / b.var for b in best], color=PALETTE["k1"], label="Var(k1) / Var(λ*)", **kwargs)
    if crossover is not None:
        ax.axvline(crossover, color="0.4", linestyle=":", linewidth=1.2,
                   label=f"Var(k1) = Var(k3) at {crossover:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gap μ")
    ax.set_ylabel("variance ratio (≥ 1)")
    return ax
