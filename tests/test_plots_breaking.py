"""Tests for klviz.plots.breaking (notebook 05's figures): the returned Axes and their artists' data.

References are closed forms derived here for q = N(0, 1): with equal means and p = N(0, σ²), log r = a + c z²
(a = -log σ, c = (1 - 1/σ²)/2); with p = N(μ, 1), log r = μz - μ²/2. Running statistics are compared with
numpy on every prefix.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from klviz.plots import PALETTE, batch_rmse, plain_log_ticks, running_estimate, width_sweep


def _width_closed_forms(sigma):
    a, c = -math.log(sigma), 0.5 * (1 - 1 / sigma**2)
    kl_qp = -(a + c)
    kl_pq = math.log(1 / sigma) + sigma**2 / 2 - 0.5
    var_log_ratio = 2 * c**2
    mean_k2 = 0.5 * (a**2 + 2 * a * c + 3 * c**2)
    room = 2 - sigma**2
    var_r = 1 / (sigma * math.sqrt(room)) - 1 if room > 0 else math.inf
    # Var(k3) = Var(r) - 2 Cov(r, log r) + Var(log r), Cov(r, log r) = KL(p||q) + KL(q||p)
    var_k3 = var_r - 2 * (kl_pq + kl_qp) + var_log_ratio
    return {"kl": kl_qp, "std": {"k1": math.sqrt(var_log_ratio), "k3": math.sqrt(var_k3)},
            "bias_k2": (mean_k2 - kl_qp) / kl_qp}


def test_width_sweep_std_against_closed_forms():
    ratios = np.array([0.5, 0.8, np.nan, 1.2, 1.4, 1.5, 2.0])
    fig, ax = plt.subplots()
    assert width_sweep("std", estimators=("k1", "k3"), ratios=ratios, ax=ax, linewidth=3) is ax
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    assert set(lines) == {"k1", "k3"}
    for name, line in lines.items():
        np.testing.assert_array_equal(line.get_xdata(), ratios)
        assert to_hex(line.get_color()) == PALETTE[name].lower() and line.get_linewidth() == 3
        got = np.asarray(line.get_ydata(), dtype=float)
        assert math.isnan(got[2])  # the break at p = q
        for ratio, value in zip(ratios, got):
            if np.isnan(ratio):
                continue
            forms = _width_closed_forms(ratio)
            want = forms["std"][name] / forms["kl"]
            if math.isinf(want):
                assert math.isinf(value)
            else:
                assert value == pytest.approx(want, rel=1e-9)
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "exact std / KL"
    # the infinite-variance region is shaded from √2 and its edge marked
    (edge,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert edge.get_xdata()[0] == pytest.approx(math.sqrt(2))
    (shade,) = ax.patches
    assert shade.get_x() == pytest.approx(math.sqrt(2)) and shade.get_x() + shade.get_width() == pytest.approx(2.0)


def test_width_sweep_bias_draws_unbiased_estimators_once_at_zero():
    ratios = np.array([0.5, 0.9, 1.1, 1.3])
    fig, ax = plt.subplots()
    width_sweep("bias", ratios=ratios, ax=ax)
    (k2,) = [line for line in ax.lines if line.get_gid() == "k2"]
    want = [_width_closed_forms(r)["bias_k2"] for r in ratios]
    np.testing.assert_allclose(np.asarray(k2.get_ydata(), dtype=float), want, rtol=1e-9)
    assert [line.get_gid() for line in ax.lines if line.get_gid()] == ["k2"]  # k1 and k3 are not drawn as curves
    (zero,) = [line for line in ax.lines if line.get_label() == "k1, k3 (unbiased)"]
    assert list(zero.get_ydata()) == [0.0, 0.0]
    assert ax.get_yscale() == "linear"


def test_width_sweep_default_grid_and_errors():
    fig, ax = plt.subplots()
    width_sweep("std", estimators=["k1"], ax=ax)
    x = np.asarray(ax.lines[0].get_xdata(), dtype=float)
    assert np.isnan(x).sum() == 1 and np.nanmin(x) == pytest.approx(0.3) and np.nanmax(x) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="quantity must be one of"):
        width_sweep("variance")
    with pytest.raises(ValueError, match="ratios must be a 1-D array of positive numbers"):
        width_sweep(ratios=[0.5, -1.0])


def test_running_estimate_matches_prefix_statistics(rng):
    values = {"k1": rng.normal(0.3, 1.0, 500), "k3": rng.gamma(0.5, 2.0, 500)}
    fig, ax = plt.subplots()
    assert running_estimate(values, "std", exact={"k1": 1.0, "k3": math.inf}, start=2, points=50, ax=ax) is ax
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    for name, sample in values.items():
        m = np.asarray(lines[name].get_xdata())
        assert m[0] == 2 and m[-1] == 500 and np.all(np.diff(m) > 0)
        want = [np.std(sample[:k], ddof=1) for k in m]
        np.testing.assert_allclose(lines[name].get_ydata(), want, rtol=1e-10)
        assert to_hex(lines[name].get_color()) == PALETTE[name].lower()
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 1.0  # only the finite exact value is drawn
    assert to_hex(dashed[0].get_color()) == PALETTE["k1"].lower()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_running_estimate_mean_scale_truth_and_labels(rng):
    sample = rng.exponential(2.0, 1000)
    fig, ax = plt.subplots()
    running_estimate({"k3": sample}, "mean", scale=2.0, truth=1.0, labels={"k3": "k3 here"}, points=30, ax=ax)
    (line,) = [line for line in ax.lines if line.get_gid() == "k3"]
    m = np.asarray(line.get_xdata())
    np.testing.assert_allclose(line.get_ydata(), [sample[:k].mean() / 2.0 for k in m], rtol=1e-12)
    assert line.get_label() == "k3 here"
    (truth,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert truth.get_ydata()[0] == 1.0 and to_hex(truth.get_color()) == "#000000"
    assert ax.get_yscale() == "linear"


def test_running_estimate_errors():
    with pytest.raises(ValueError, match="statistic must be one of"):
        running_estimate({"k1": [1.0, 2.0]}, "median")
    with pytest.raises(ValueError, match="values must contain at least one estimator"):
        running_estimate({}, "mean")
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        running_estimate({"k1": np.ones(20)}, "mean", scale=0.0)
    with pytest.raises(ValueError, match="at least start = 10 values"):
        running_estimate({"k1": np.ones(5)}, "mean")
    fig, ax = plt.subplots()
    with pytest.raises(ValueError):
        running_estimate({"k1": np.ones(20)}, "std", scale=-1.0, ax=ax)
    assert len(ax.lines) == 0  # nothing drawn before the check


def test_batch_rmse_against_closed_forms():
    gaps = np.array([0.1, 0.5, 1.0, 2.0])
    kl = gaps**2 / 2
    for n in (1, 100):
        fig, ax = plt.subplots()
        assert batch_rmse(gaps, batch_size=n, ax=ax) is ax
        lines = {line.get_gid(): np.asarray(line.get_ydata()) for line in ax.lines}
        var = {"k1": gaps**2, "k2": (2 * gaps**4 + gaps**6) / 4, "k3": np.expm1(gaps**2) - gaps**2,
               # the best control variate: Var(log r) - Cov(log r, r)^2 / Var(r), Cov = μ², Var(r) = e^{μ²} - 1
               "k_lambda": gaps**2 - gaps**4 / np.expm1(gaps**2)}
        bias = {"k2": gaps**4 / 8}
        for name in var:
            want = np.sqrt(var[name] / n + bias.get(name, 0.0) ** 2) / kl
            np.testing.assert_allclose(lines[name], want, rtol=1e-9, err_msg=name)
        (optimal,) = [line for line in ax.lines if line.get_gid() == "k_lambda"]
        assert optimal.get_linestyle() == ":" and optimal.get_label() == "optimal λ"
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_batch_rmse_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batch_rmse([1.0], batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batch_rmse([1.0], batch_size=2.5)
    with pytest.raises(ValueError, match="gaps must be a 1-D array of positive finite gaps"):
        batch_rmse([0.0, 1.0])


def test_plain_log_ticks():
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(0.3, 3.0)
    assert plain_log_ticks(ax) is ax
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if 0.3 <= t.get_position()[1] <= 3.0]
    assert labels == ["0.5", "1", "2"]
    assert all(t.get_text() == "" for t in ax.yaxis.get_minorticklabels())
    # a linear axis is left alone
    assert plain_log_ticks(ax, axis="x").xaxis.get_scale() == "linear"
    with pytest.raises(ValueError, match="axis must be 'x' or 'y'"):
        plain_log_ticks(ax, axis="z")
