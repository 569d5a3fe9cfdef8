r"""Figures of notebook 06 (tokens and sequences): exact per-token spreads against a parameter, the exact
distribution of log r under a softmax policy, error curves against the exact KL, and the sequence estimators'
exact variances and biases against the sequence length.

Each function draws onto ``ax`` (or the current Axes), passes ``**kwargs`` on to its lines and returns the
Axes; sequence estimators are drawn in the colour of the token estimator they are built from (solid: a sum
of per-token terms, dashed: the estimator applied to the product of ratios; grey: the per-step exact KL).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from klviz.plots.core import PALETTE, TRUE_KL_COLOR, _axes, estimator_color

__all__ = ["SEQUENCE_STYLES", "relative_spread", "log_ratio_histogram", "curves_against_kl", "sequence_variances",
           "sequence_biases"]

#: (colour, line style) of each sequence estimator of :data:`klviz.SEQUENCE_ESTIMATORS`.
SEQUENCE_STYLES = {
    "token_k1": (PALETTE["k1"], "-"),
    "token_k2": (PALETTE["k2"], "-"),
    "token_k3": (PALETTE["k3"], "-"),
    "sequence_k2": (PALETTE["k2"], "--"),
    "sequence_k3": (PALETTE["k3"], "--"),
    "step_kl": ("0.3", "-"),  # neutral: it uses the full vocabulary, it is not a sampled estimator
}
_UNBIASED = 1e-12  # a relative bias below this everywhere is drawn as the shared line at 0


def relative_spread(x, pairs: Sequence, *, estimators=("k1", "k2", "k3"), labels: Mapping | None = None, ax=None,
                    **kwargs):
    r"""The exact standard deviation of each estimator relative to the KL, :math:`\mathrm{sd}(k)/\mathrm{KL}`,
    for a family of pairs against a parameter ``x`` (log-log axes).

    Parameters
    ----------
    x : array_like
        One positive parameter value per pair (e.g. the perturbation δ of the logits).
    pairs : sequence of Pair
        Their exact moments come from :func:`klviz.exact_moments` (sums for categorical pairs).
    estimators : sequence of str or Estimator
    labels : mapping of name to str, optional
        Legend labels (default: the names).
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot``.

    Returns
    -------
    matplotlib Axes
        One line per estimator, ``get_gid()`` its name.

    Raises
    ------
    ValueError
        If ``x`` and ``pairs`` differ in length or ``x`` is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from klviz import GaussianPair
    >>> fig, ax = plt.subplots()
    >>> ax = relative_spread([1.0, 2.0], [GaussianPair(mu_p=1.0), GaussianPair(mu_p=2.0)], estimators=["k1"], ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()]   # sd(k1)/KL = μ/(μ²/2)
    [2.0, 1.0]
    """
    from klviz import exact_moments
    from klviz.estimators import get_estimator

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size != len(pairs):
        raise ValueError(f"x must give one value per pair: {x.size} values for {len(pairs)} pairs")
    if not np.all(x > 0):
        raise ValueError("x must be positive (it is drawn on a log axis)")
    records = [get_estimator(name, "estimators") for name in estimators]
    ax = _axes(ax)
    for record in records:
        spread = [exact_moments(pair, record).relative_std for pair in pairs]
        line_kwargs = {"color": estimator_color(record), "label": (labels or {}).get(record.name, record.name),
                       **kwargs}
        (line,) = ax.plot(x, spread, **line_kwargs)
        line.set_gid(record.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("exact std / KL")
    return ax


def log_ratio_histogram(pair, *, bins=120, ax=None, **kwargs):
    r"""The exact distribution of :math:`\log r` under q for a categorical pair: a q-weighted histogram of the
    vocabulary's log-ratios, with its mean :math:`\mathbb{E}_q[\log r] = -\mathrm{KL}[q, p]` marked.

    Parameters
    ----------
    pair : CategoricalPair
    bins : int or array_like
        Passed to ``numpy.histogram``.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.stairs``.

    Returns
    -------
    matplotlib Axes
        The histogram is ``ax.patches[-1]`` (probabilities per bin, summing to q's mass on the support).

    Raises
    ------
    TypeError
        If ``pair`` has no vocabulary (``log_p`` and ``log_q``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from klviz import CategoricalPair
    >>> fig, ax = plt.subplots()
    >>> ax = log_ratio_histogram(CategoricalPair(p_logits=[0.0, 0.0], q_logits=[0.0, 1.0]), bins=2, ax=ax)
    >>> [round(float(v), 4) for v in ax.patches[-1].get_data().values]   # q = (0.2689, 0.7311)
    [0.7311, 0.2689]
    """
    if not (hasattr(pair, "log_p") and hasattr(pair, "log_q")):
        raise TypeError(f"pair must be a categorical pair (with log_p and log_q), got {type(pair).__name__}")
    support = np.isfinite(pair.log_q)
    log_ratio = (pair.log_p - pair.log_q)[support]
    weights = np.exp(pair.log_q[support])
    counts, edges = np.histogram(log_ratio, bins=bins, weights=weights)
    ax = _axes(ax)
    kwargs.setdefault("color", TRUE_KL_COLOR)
    kwargs.setdefault("linewidth", 1.5)
    ax.stairs(counts, edges, **kwargs)
    ax.axvline(-pair.kl_qp(), color=estimator_color("k1"), linestyle="--", label="mean of log r = −KL")
    ax.set_xlabel("log r = log p − log q")
    ax.set_ylabel("probability under q")
    return ax


def curves_against_kl(kl, curves: Mapping, *, styles: Mapping | None = None, yscale: str = "log",
                      floor: float = 1e-12, reference: float | None = 1.0, ax=None, **kwargs):
    r"""Curves against the exact KL on a log x-axis: by default the absolute values of relative errors on a
    log y-axis, with a dotted line at ``reference`` (1: an error of 100%).

    Parameters
    ----------
    kl : array_like
        The exact KLs (positive), one per point of every curve.
    curves : mapping of label to array_like
        One curve per label, drawn in order.
    styles : mapping of label to mapping, optional
        ``Axes.plot`` keywords per curve (colour, line style, ...).
    yscale : {"log", "linear"}
        With "log", the absolute values are drawn, raised to ``floor`` (an exact 0 stays visible on the
        bottom edge); with "linear", the values as they are.
    floor : float
        The smallest value drawn on a log axis.
    reference : float or None
        A dotted black line at this height (None: none).
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for every curve (after the per-curve styles).

    Returns
    -------
    matplotlib Axes
        One line per curve, ``get_gid()`` its label.

    Raises
    ------
    ValueError
        For an unknown ``yscale``, a curve whose length differs from ``kl``, or a KL that is not positive.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = curves_against_kl([1e-4, 1e-2], {"naive": [-3.0, 0.0]}, ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()]
    [3.0, 1e-12]
    """
    if yscale not in ("log", "linear"):
        raise ValueError(f"yscale must be 'log' or 'linear', got {yscale!r}")
    kl = np.asarray(kl, dtype=np.float64)
    if kl.ndim != 1 or not np.all(kl > 0):
        raise ValueError("kl must be a 1-D array of positive exact KLs")
    arrays = {label: np.asarray(values, dtype=np.float64) for label, values in curves.items()}
    for label, values in arrays.items():
        if values.shape != kl.shape:
            raise ValueError(f"curves[{label!r}] has {values.size} values for {kl.size} KLs")
    ax = _axes(ax)
    for label, values in arrays.items():
        shown = np.maximum(np.abs(values), floor) if yscale == "log" else values
        line_kwargs = {"label": label, **(styles or {}).get(label, {}), **kwargs}
        (line,) = ax.plot(kl, shown, **line_kwargs)
        line.set_gid(label)
    if reference is not None:
        ax.axhline(reference, color=TRUE_KL_COLOR, linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale(yscale)
    ax.set_xlabel("exact KL")
    return ax


def _moment_rows(lengths, moments: Mapping):
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.all(lengths >= 1):
        raise ValueError("lengths must be a 1-D array of sequence lengths >= 1")
    for name, rows in moments.items():
        if name not in SEQUENCE_STYLES:
            raise ValueError(f"unknown sequence estimator {name!r}; expected one of {list(SEQUENCE_STYLES)}")
        if len(rows) != lengths.size:
            raise ValueError(f"moments[{name!r}] has {len(rows)} entries for {lengths.size} lengths")
    return lengths


def sequence_variances(lengths, moments: Mapping, *, samples: Mapping | None = None, ax=None, **kwargs):
    r"""The exact variance of each sequence estimator against the sequence length T (log-log), with the sample
    variances of Monte Carlo sequences as dots.

    Parameters
    ----------
    lengths : array_like of int
        The lengths T.
    moments : mapping of estimator name to sequence of ExactMoments
        One :func:`klviz.sequence_moments` result per length, per estimator (a name of
        :data:`SEQUENCE_STYLES`). A variance of 0 (the per-step KL at T = 1) is off the log scale and left out.
    samples : mapping of length to mapping of name to array_like, optional
        Per-sequence values of the estimators at some lengths; their sample variances (ddof 1) are drawn.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the exact curves.

    Returns
    -------
    matplotlib Axes
        Exact curves have ``get_gid()`` the estimator's name, Monte Carlo dots ``name + " (MC)"``.

    Raises
    ------
    ValueError
        For an unknown estimator or mismatched lengths.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from klviz import random_markov_chain_pair, sequence_moments
    >>> chain = random_markov_chain_pair(3, 2, 0.3, rng=0)
    >>> moments = {"token_k1": [sequence_moments(chain.with_length(t), "token_k1") for t in (1, 2)]}
    >>> fig, ax = plt.subplots()
    >>> ax = sequence_variances([1, 2], moments, ax=ax)
    >>> bool(ax.lines[0].get_ydata()[1] == moments["token_k1"][1].var)
    True
    """
    lengths = _moment_rows(lengths, moments)
    ax = _axes(ax)
    for name, rows in moments.items():
        color, style = SEQUENCE_STYLES[name]
        variances = np.array([m.var for m in rows])
        line_kwargs = {"color": color, "linestyle": style, "label": name, **kwargs}
        (line,) = ax.plot(lengths, np.where(variances > 0, variances, np.nan), **line_kwargs)
        line.set_gid(name)
        if samples:
            at = sorted(samples)
            (dots,) = ax.plot(at, [np.var(np.asarray(samples[t][name], dtype=np.float64), ddof=1) for t in at], "o",
                              color=color, markersize=4)
            dots.set_gid(f"{name} (MC)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("variance")
    return ax


def sequence_biases(lengths, moments: Mapping, *, linthresh: float = 0.01, ax=None, **kwargs):
    r"""The exact relative bias of each sequence estimator against the length T, on a symmetric log axis
    (linear within ±``linthresh``, so that the sign of a small bias shows).

    The estimators that are unbiased at every length share one grey line at 0, labelled with their names.

    Parameters
    ----------
    lengths : array_like of int
    moments : mapping of estimator name to sequence of ExactMoments
        As for :func:`sequence_variances`.
    linthresh : float
        The half-width of the linear region of the symlog axis; positive.
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot`` for the biased estimators.

    Returns
    -------
    matplotlib Axes
        Biased estimators' lines have ``get_gid()`` their names; the shared line at 0 has gid ``"unbiased"``.

    Raises
    ------
    ValueError
        For an unknown estimator, mismatched lengths or a non-positive ``linthresh``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from klviz import random_markov_chain_pair, sequence_moments
    >>> chain = random_markov_chain_pair(3, 2, 0.3, rng=0)
    >>> moments = {name: [sequence_moments(chain.with_length(t), name) for t in (1, 2)]
    ...            for name in ("token_k1", "sequence_k2")}
    >>> fig, ax = plt.subplots()
    >>> ax = sequence_biases([1, 2], moments, ax=ax)
    >>> [line.get_gid() for line in ax.lines]
    ['sequence_k2', 'unbiased']
    """
    if not (isinstance(linthresh, (int, float)) and linthresh > 0):
        raise ValueError(f"linthresh must be a positive number, got {linthresh!r}")
    lengths = _moment_rows(lengths, moments)
    ax = _axes(ax)
    unbiased = []
    for name, rows in moments.items():
        biases = np.array([m.relative_bias for m in rows])
        if np.all(np.abs(biases) < _UNBIASED):
            unbiased.append(name)
            continue
        color, style = SEQUENCE_STYLES[name]
        line_kwargs = {"color": color, "linestyle": style, "label": name, **kwargs}
        (line,) = ax.plot(lengths, biases, **line_kwargs)
        line.set_gid(name)
    if unbiased:
        pairs = [", ".join(unbiased[i:i + 2]) for i in range(0, len(unbiased), 2)]
        (zero,) = ax.plot([lengths.min(), lengths.max()], [0.0, 0.0], color="0.6", linewidth=1.5,
                          label="unbiased, all on 0:\n" + ",\n".join(pairs))
        zero.set_gid("unbiased")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("bias / KL")
    return ax
