r"""Figures of notebook 07 (gradients of KL penalties): expected gradients against the two KL gradients, the
variance of each gradient use along a sweep, and training runs of the discretised-Gaussian policy.

Colour is the estimator (:data:`klviz.plots.PALETTE`); KL(q‖p) is drawn in black and KL(p‖q) in grey
(:data:`FORWARD_COLOR`). Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` on to its
main artists and returns the Axes.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from klviz.plots.core import TRUE_KL_COLOR, _axes, estimator_color

__all__ = ["FORWARD_COLOR", "USE_STYLES", "ESTIMATOR_STYLES", "gradient_bars", "variance_sweep", "policy_fits",
           "policy_paths", "path_traces"]

#: The colour of KL(p‖q) (and of the older policy μ); KL(q‖p) is :data:`klviz.plots.TRUE_KL_COLOR`.
FORWARD_COLOR = "#999999"
#: Line style per use where colour is the estimator: solid keeps the pathwise term only (loss-like),
#: dashed the score term only (reward-like), dotted both (a differentiable ratio).
USE_STYLES = {"loss": "-", "reward": "--", "ratio_loss": ":", "stopgrad_ratio_loss": "-", "ratio_reward": "--",
              "no_ratio_loss": "-."}
#: Line style per estimator where all three share a panel (and colour).
ESTIMATOR_STYLES = {"k1": "-", "k2": "--", "k3": ":"}
_PATH_QUANTITIES = {"mean": "mean m", "scale": "scale σ", "kl_qp": "KL(q‖p)", "kl_pq": "KL(p‖q)"}


def gradient_bars(reverse, forward, results: Mapping, *, ax=None, **kwargs):
    r"""Expected gradients per logit, one marker per estimator, over the bars of :math:`\nabla\mathrm{KL}(q\|p)`
    (outlined) and :math:`\nabla\mathrm{KL}(p\|q)` (grey).

    Parameters
    ----------
    reverse, forward : array_like, shape (V,)
        The exact gradients of KL(q‖p) and KL(p‖q).
    results : mapping of estimator name to (exact, Monte Carlo)
        ``exact`` the expected gradient (shape (V,)); Monte Carlo a :class:`klviz.gradients.MonteCarloGradient`
        (drawn as its mean ±2 standard errors) or None.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the exact markers.

    Returns
    -------
    matplotlib Axes
        ``ax.patches`` are the bars (reverse first, then forward); each exact marker line has ``get_gid()``
        the estimator's name.

    Raises
    ------
    ValueError
        If the gradients do not all have the same length.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = gradient_bars([0.1, -0.1], [0.3, -0.3], {"k2": ([0.1, -0.1], None)}, ax=ax)
    >>> [round(float(bar.get_height()), 2) for bar in ax.patches]
    [0.1, -0.1, 0.3, -0.3]
    """
    reverse, forward = np.asarray(reverse, dtype=np.float64), np.asarray(forward, dtype=np.float64)
    exacts = {name: np.asarray(exact, dtype=np.float64) for name, (exact, _) in results.items()}
    if reverse.ndim != 1 or forward.shape != reverse.shape or any(e.shape != reverse.shape for e in exacts.values()):
        raise ValueError(f"every gradient must have the shape of the first, {reverse.shape}")
    ax = _axes(ax)
    x = np.arange(reverse.size)
    ax.bar(x - 0.2, reverse, width=0.36, facecolor="white", edgecolor=TRUE_KL_COLOR, linewidth=1.2,
           label="∇KL(q‖p) (reverse)")
    ax.bar(x + 0.2, forward, width=0.36, color=FORWARD_COLOR, label="∇KL(p‖q) (forward)")
    for j, (name, (_, mc)) in enumerate(results.items()):
        offset = (j - (len(results) - 1) / 2) * 0.22
        line_kwargs = {"color": estimator_color(name), "markersize": 5, "label": f"{name}: exact", **kwargs}
        (line,) = ax.plot(x + offset, exacts[name], "o", **line_kwargs)
        line.set_gid(name)
        if mc is not None:
            ax.errorbar(x + offset, mc.mean, yerr=2 * mc.stderr, fmt="none", ecolor=estimator_color(name), capsize=2)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xlabel("logit index")
    return ax


def variance_sweep(separations, traces: Mapping, *, signal_qp=None, signal_pq=None, monte_carlo: Mapping | None = None,
                   ax=None, **kwargs):
    r"""The exact trace of the covariance of one per-sample gradient against the separation s (log-log), one line
    per estimator, with the signals :math:`\|\nabla\mathrm{KL}\|^2` and Monte Carlo checks.

    Parameters
    ----------
    separations : array_like
        Positive separations s.
    traces : mapping of estimator name to array_like
        :math:`\operatorname{tr}\operatorname{Cov}[G]` at each s (e.g. ``GradientMoments.trace_covariance``).
    signal_qp, signal_pq : array_like, optional
        :math:`\|\nabla\mathrm{KL}(q\|p)\|^2` and :math:`\|\nabla\mathrm{KL}(p\|q)\|^2` at each s (thin black and grey).
    monte_carlo : mapping of estimator name to mapping of s to MonteCarloGradient, optional
        Drawn as points with ±2 standard errors of the sample trace covariance.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the estimators' lines.

    Returns
    -------
    matplotlib Axes
        The estimators' lines have ``get_gid()`` their names; the signals ``"signal KL(q||p)"`` and
        ``"signal KL(p||q)"``.

    Raises
    ------
    ValueError
        If a curve's length differs from ``separations`` or a separation is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = variance_sweep([0.1, 1.0], {"k1": [0.5, 0.4]}, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()], ax.lines[0].get_linestyle()
    ([0.5, 0.4], '-')
    """
    separations = np.asarray(separations, dtype=np.float64)
    if separations.ndim != 1 or not np.all(separations > 0):
        raise ValueError("separations must be a 1-D array of positive numbers")
    curves = {name: np.asarray(v, dtype=np.float64) for name, v in traces.items()}
    for label, values in [*curves.items(), ("signal_qp", signal_qp), ("signal_pq", signal_pq)]:
        if values is not None and np.shape(values) != separations.shape:
            raise ValueError(f"{label} has {np.size(values)} values for {separations.size} separations")
    ax = _axes(ax)
    for values, color, gid, label in ((signal_qp, TRUE_KL_COLOR, "signal KL(q||p)", "signal |∇KL(q‖p)|²"),
                                      (signal_pq, FORWARD_COLOR, "signal KL(p||q)", "signal |∇KL(p‖q)|²")):
        if values is not None:
            (line,) = ax.plot(separations, values, color=color, linewidth=1, label=label)
            line.set_gid(gid)
    for name, values in curves.items():
        line_kwargs = {"color": estimator_color(name), "linestyle": ESTIMATOR_STYLES.get(name.split("(")[0], "-"),
                       "linewidth": 2.2, "label": name, **kwargs}
        (line,) = ax.plot(separations, values, **line_kwargs)
        line.set_gid(name)
    if monte_carlo:
        for name, points in monte_carlo.items():
            at = sorted(points)
            ax.errorbar(at, [points[s].trace_covariance for s in at],
                        yerr=[2 * points[s].trace_covariance_stderr for s in at], fmt="o", markersize=4,
                        color=estimator_color(name), capsize=3)
        ax.plot([], [], "o", color="#555555", label="Monte Carlo ±2 s.e.")  # one legend entry for all points
    ax.set_xscale("log")
    ax.set_yscale("log")
    return ax


def _path_label(path) -> str:
    return f"{path.estimator} {path.use}"


def policy_fits(reference, paths: Mapping, *, ax=None, **kwargs):
    r"""The reference p as bars and the final policy of each training run as a line, over the tokens.

    Parameters
    ----------
    reference : array_like, shape (V,)
        The reference probabilities p.
    paths : mapping of label to PolicyPath
        Each run's last parameters give its final policy, softmax of
        :func:`klviz.gradients.discretised_gaussian_logits`, drawn in its estimator's colour.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the policies.

    Returns
    -------
    matplotlib Axes
        ``ax.patches`` are the reference's bars; each policy line has ``get_gid()`` its label.

    Raises
    ------
    ValueError
        If ``reference`` is not a 1-D probability vector.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from klviz.gradients import fit_gaussian_policy
    >>> p = np.full(5, 0.2)
    >>> path = fit_gaussian_policy(np.log(p), "k2", "loss", init=(2.0, 0.0), steps=2)
    >>> fig, ax = plt.subplots()
    >>> ax = policy_fits(p, {"k2 loss": path}, ax=ax)
    >>> round(float(ax.lines[0].get_ydata().sum()), 12)
    1.0
    """
    from klviz.gradients import discretised_gaussian_logits

    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 1 or np.any(reference < 0) or not math.isclose(reference.sum(), 1.0, rel_tol=1e-9):
        raise ValueError("reference must be a 1-D vector of probabilities summing to 1")
    ax = _axes(ax)
    tokens = np.arange(reference.size)
    ax.bar(tokens, reference, color=TRUE_KL_COLOR, alpha=0.25, label="reference p")
    for label, path in paths.items():
        mean, log_scale = path.params[-1]
        logits = discretised_gaussian_logits(mean, log_scale, reference.size)
        line_kwargs = {"color": estimator_color(path.estimator), "linewidth": 2, "label": label, **kwargs}
        (line,) = ax.plot(tokens, np.exp(logits - np.logaddexp.reduce(logits)), **line_kwargs)
        line.set_gid(label)
    ax.set_xlabel("token")
    ax.set_ylabel("probability")
    return ax


def policy_paths(grid_mean, grid_scale, objective, paths: Mapping, *, thin: Mapping | None = None,
                 optima: Mapping | None = None, start=None, ax=None, **kwargs):
    r"""Training runs in the (mean m, scale σ) plane over the contours of an objective on a grid.

    Parameters
    ----------
    grid_mean, grid_scale, objective : array_like, 2-D of one shape
        The grid (σ, not log σ) and the objective there (e.g. KL(q‖p) from
        :func:`klviz.gradients.gaussian_policy_kls`); contours at 9 of its quantiles from 2% to 60%.
    paths : mapping of label to PolicyPath
        Drawn in the estimator's colour, line style by use (:data:`USE_STYLES`).
    thin : mapping of label to PolicyPath, optional
        Further runs drawn thin (e.g. stochastic ones).
    optima : mapping of label to (m, σ, marker, colour), optional
        Points to mark (e.g. the grid minima).
    start : (m, σ), optional
        The common starting point (a black dot).
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the (thick) paths.

    Returns
    -------
    matplotlib Axes
        Path lines have ``get_gid()`` their labels (thin ones ``label + " (thin)"``); log σ axis.

    Raises
    ------
    ValueError
        If the grid arrays differ in shape.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from klviz.gradients import fit_gaussian_policy
    >>> m, s = np.meshgrid(np.linspace(0, 4, 5), np.linspace(0.5, 2, 4), indexing="ij")
    >>> path = fit_gaussian_policy(np.zeros(5), "k2", "loss", init=(1.0, 0.0), steps=3)
    >>> fig, ax = plt.subplots()
    >>> ax = policy_paths(m, s, (m - 2) ** 2 + s, {"k2 loss": path}, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_xdata()] == list(path.mean)
    True
    """
    grid_mean, grid_scale, objective = (np.asarray(a, dtype=np.float64) for a in (grid_mean, grid_scale, objective))
    if not (grid_mean.shape == grid_scale.shape == objective.shape and grid_mean.ndim == 2):
        raise ValueError(f"grid_mean, grid_scale and objective must be 2-D of one shape, got {grid_mean.shape}, "
                         f"{grid_scale.shape} and {objective.shape}")
    ax = _axes(ax)
    levels = np.unique(np.quantile(objective, np.linspace(0.02, 0.6, 9)))
    ax.contour(grid_mean, grid_scale, objective, levels=levels, colors="#bbbbbb", linewidths=0.7)
    for label, path in paths.items():
        line_kwargs = {"color": estimator_color(path.estimator), "linestyle": USE_STYLES.get(path.use, "-"),
                       "linewidth": 1.8, "label": label, **kwargs}
        (line,) = ax.plot(path.mean, path.scale, **line_kwargs)
        line.set_gid(label)
    for label, path in (thin or {}).items():
        (line,) = ax.plot(path.mean, path.scale, color=estimator_color(path.estimator), linewidth=0.6, alpha=0.7)
        line.set_gid(f"{label} (thin)")
    for label, (m, s, marker, color) in (optima or {}).items():
        ax.plot([m], [s], marker, color=color, markersize=12, markeredgecolor="black", label=label)
    if start is not None:
        ax.plot([start[0]], [start[1]], "o", color="black", markersize=5)
    ax.set_yscale("log")
    ax.set_xlabel("mean m")
    ax.set_ylabel("scale σ")
    return ax


def path_traces(paths: Mapping, quantity: str, *, thin: Mapping | None = None, ax=None, **kwargs):
    r"""One quantity of each training run against the step: the mean m, the scale σ, KL(q‖p) or KL(p‖q).

    Parameters
    ----------
    paths : mapping of label to PolicyPath
        Drawn in the estimator's colour, line style by use (:data:`USE_STYLES`).
    quantity : {"mean", "scale", "kl_qp", "kl_pq"}
    thin : mapping of label to PolicyPath, optional
        Further runs drawn thin.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the (thick) paths.

    Returns
    -------
    matplotlib Axes
        Lines have ``get_gid()`` their labels; the y label names the quantity.

    Raises
    ------
    ValueError
        For an unknown quantity.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from klviz.gradients import fit_gaussian_policy
    >>> path = fit_gaussian_policy(np.zeros(5), "k2", "loss", init=(1.0, 0.0), steps=3)
    >>> fig, ax = plt.subplots()
    >>> ax = path_traces({"k2 loss": path}, "kl_qp", ax=ax)
    >>> ax.lines[0].get_xdata().tolist(), ax.get_ylabel()
    ([0, 1, 2, 3], 'KL(q‖p)')
    """
    if quantity not in _PATH_QUANTITIES:
        raise ValueError(f"quantity must be one of {list(_PATH_QUANTITIES)}, got {quantity!r}")
    ax = _axes(ax)
    for label, path in paths.items():
        line_kwargs = {"color": estimator_color(path.estimator), "linestyle": USE_STYLES.get(path.use, "-"),
                       "linewidth": 1.8, "label": label, **kwargs}
        values = np.asarray(getattr(path, quantity))
        (line,) = ax.plot(np.arange(values.size), values, **line_kwargs)
        line.set_gid(label)
    for label, path in (thin or {}).items():
        values = np.asarray(getattr(path, quantity))
        (line,) = ax.plot(np.arange(values.size), values, color=estimator_color(path.estimator), linewidth=0.6,
                          alpha=0.7, label=label)
        line.set_gid(f"{label} (thin)")
    ax.set_ylabel(_PATH_QUANTITIES[quantity])
    return ax
