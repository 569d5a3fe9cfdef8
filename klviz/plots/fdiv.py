r"""Figures of notebook 02: a generator next to its second-order Taylor parabola, and the measured error
coefficients of :math:`D_f/\mathrm{KL}` against the ones the Taylor series predicts."""

from __future__ import annotations

import math

import numpy as np

from klviz.plots.core import TRUE_KL_COLOR, _axes, estimator_color

__all__ = ["generator_color", "tangent_parabola", "taylor_error_coefficients"]

#: Generators that are the mean of an estimator, and that estimator (their figures take its palette colour).
_ESTIMATOR_OF = {"kl_qp": "k1", "kl_pq": "k1_pq", "half_log_sq": "k2"}
_OTHER = "#555555"


def generator_color(generator) -> str:
    """The colour of a generator in figures: its estimator's palette colour where it is the mean of one
    (``kl_qp``: k1, ``kl_pq``: k1_pq, ``half_log_sq``: k2), dark grey otherwise.

    Examples
    --------
    >>> generator_color("half_log_sq") == estimator_color("k2"), generator_color("pearson")
    (True, '#555555')
    """
    from klviz.fdiv import get_generator

    name = get_generator(generator).name
    return estimator_color(_ESTIMATOR_OF[name]) if name in _ESTIMATOR_OF else _OTHER


def tangent_parabola(generator, *, u_range=(0.2, 2.6), ax=None, **kwargs):
    r"""What of a generator survives the expectation, :math:`g(u) = f(u) - f'(1)(u - 1)`, next to its parabola.

    Since :math:`\mathbb{E}_q[r - 1] = 0`, :math:`D_f = \mathbb{E}_q[f(r)] = \mathbb{E}_q[g(r)]`, and near u = 1

    .. math:: g(u) = \tfrac12 f''(1)\,(u - 1)^2 + \tfrac16 f'''(1)\,(u - 1)^3 + \dots

    The curve of g is solid (in :func:`generator_color`), the parabola dashed black. A generator with a kink at 1
    (total variation) has no f'(1) and no parabola: f itself is drawn, and the title says so.

    Parameters
    ----------
    generator : str or Generator
        A name from :data:`klviz.GENERATORS` or a :class:`klviz.Generator`.
    u_range : (float, float)
        The plotted range of u = p/q; positive.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the curve of g.

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is g (or f), ``ax.lines[1]`` the parabola (absent for a kink).

    Raises
    ------
    ValueError
        If ``u_range`` is not (low, high) with 0 < low < high; if the generator is unknown.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = tangent_parabola("kl_qp", u_range=(0.5, 2.0), ax=ax)
    >>> ax.get_title()
    "KL[q,p]\nf''(1) = 1"
    """
    from klviz.fdiv import get_generator

    gen = get_generator(generator)
    low, high = (float(v) for v in u_range)
    if not 0 < low < high:
        raise ValueError(f"u_range must be (low, high) with 0 < low < high, got {u_range!r}")
    u = np.linspace(low, high, 400)
    ax = _axes(ax)
    kwargs.setdefault("color", generator_color(gen))
    kwargs.setdefault("linewidth", 2.5)
    if gen.twice_differentiable_at_1:
        slope = float(gen.derivative_at_1(1))
        ax.plot(u, gen.f(u) - slope * (u - 1.0), label="$f(u) - f'(1)(u-1)$", **kwargs)
        ax.plot(u, 0.5 * gen.curvature_at_1 * (u - 1.0) ** 2, color=TRUE_KL_COLOR, linestyle="--", linewidth=1.2,
                label=r"$\frac{1}{2} f''(1)(u-1)^2$")
        ax.set_title(f"{gen.label}\nf''(1) = {gen.derivative_at_1(2)}")
    else:
        ax.plot(u, gen.f(u), label="$f(u)$", **kwargs)
        ax.set_title(f"{gen.label}\nkink at 1: no parabola")
    ax.axvline(1.0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("u = p/q")
    return ax


def taylor_error_coefficients(generator, gaps=None, *, ax=None):
    r"""The error of :math:`D_f/\mathrm{KL}[q,p]` divided by its order, measured (markers) against its limit (lines).

    For q = N(0, 1) and two families of p, with exact :math:`D_f` (:func:`klviz.f_divergence`):

    * the mean shift p = N(μ, 1), where :math:`(D_f/\mathrm{KL} - f''(1))/\mu^2 \to \tfrac12 f''(1) + f'''(1)
      + \tfrac14 f''''(1)` (black circles, dashed line), and not to the value :math:`f'''(1) + 2f''(1)` that the
      first-order formula :math:`\frac{f'''(1) + 2f''(1)}{3}\frac{m_3}{m_2}` with :math:`m_3/m_2 = 3\mu^2` gives
      (dotted line);
    * the scale change p = N(0, (1 + δ)²), where :math:`(D_f/\mathrm{KL} - f''(1))/\delta \to
      \tfrac43\big(f'''(1) + 2f''(1)\big)` (grey squares, grey dashed line).

    (Derived in notebook 02 and :mod:`klviz.fdiv.generators`.) The y-range spans at least ±0.25, so that
    rounding noise in :math:`D_f = \mathrm{KL}` (KL itself) stays invisible.

    Parameters
    ----------
    generator : str or Generator
        Four times differentiable at 1.
    gaps : array_like, optional
        The gaps μ and δ (positive); default ten log-spaced from 0.001 to 0.178.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        Lines by gid: ``"limit"``, ``"first order"``, ``"scale limit"``, ``"mean shift"``, ``"scale change"``.

    Raises
    ------
    ValueError
        If the generator is not four times differentiable at u = 1, or a gap is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = taylor_error_coefficients("hellinger", [0.01, 0.02], ax=ax)
    >>> [round(float(line.get_ydata()[0]), 6) for line in ax.lines[:3]]   # -1/32, 1/4 and 1/3
    [-0.03125, 0.25, 0.333333]
    """
    from klviz.fdiv import f_divergence, get_generator
    from klviz.pairs import GaussianPair

    gen = get_generator(generator)
    derivatives = [float(gen.derivative_at_1(k)) for k in (2, 3, 4)]
    if not all(math.isfinite(d) for d in derivatives):
        raise ValueError(f"generator {gen.name!r} must be four times differentiable at u = 1")
    gaps = np.logspace(-3, -0.75, 10) if gaps is None else np.asarray(gaps, dtype=np.float64).ravel()
    if gaps.size == 0 or not np.all(gaps > 0):
        raise ValueError("gaps must be a non-empty sequence of positive numbers")
    f2, f3, f4 = derivatives
    limit, first_order = f2 / 2 + f3 + f4 / 4, f3 + 2 * f2
    mean_shift = np.array([f_divergence(pair, gen) / pair.kl_qp() - f2
                           for pair in (GaussianPair(mu_p=g) for g in gaps)]) / gaps**2
    scale_change = np.array([f_divergence(pair, gen) / pair.kl_qp() - f2
                             for pair in (GaussianPair(mu_p=0.0, sigma_p=1.0 + g) for g in gaps)]) / gaps
    ax = _axes(ax)
    for value, color, style, width, label, gid in (
            (limit, TRUE_KL_COLOR, "--", 1.2, "its limit f''/2 + f''' + f''''/4", "limit"),
            (first_order, TRUE_KL_COLOR, ":", 1.6, "first-order formula f''' + 2f'' (wrong)", "first order"),
            (4 * first_order / 3, "0.6", "--", 1.2, "its limit 4(f''' + 2f'')/3", "scale limit")):
        ax.axhline(value, color=color, linestyle=style, linewidth=width, label=label).set_gid(gid)
    ax.semilogx(gaps, mean_shift, "o", color=TRUE_KL_COLOR, markersize=5,
                label="mean shift: (D_f/KL − f''(1)) / μ²")[0].set_gid("mean shift")
    ax.semilogx(gaps, scale_change, "s", color="0.6", markersize=5,
                label="scale change: (D_f/KL − f''(1)) / δ")[0].set_gid("scale change")
    values = np.concatenate([mean_shift, scale_change, [limit, first_order, 4 * first_order / 3]])
    middle = (values.max() + values.min()) / 2
    half_span = max((values.max() - values.min()) / 2 * 1.15, 0.25)
    ax.set_ylim(middle - half_span, middle + half_span)
    ax.set_title(gen.label)
    ax.set_xlabel("gap μ or δ")
    return ax
