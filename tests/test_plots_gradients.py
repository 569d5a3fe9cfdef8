"""Tests for klviz.plots.gradients (notebook 07's figures): the returned Axes and their artists' data.

The gradients drawn are checked against closed forms written here for a softmax policy q = softmax(θ):
∇KL(p‖q) = q − p, and k2 in the loss follows ∇KL(q‖p) = q ⊙ (log q − log p − KL(q‖p)); final policies
against a softmax computed by hand.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

import klviz.gradients as kg
from klviz.plots import (ESTIMATOR_STYLES, FORWARD_COLOR, PALETTE, TRUE_KL_COLOR, USE_STYLES, gradient_bars,
                         path_traces, policy_fits, policy_paths, variance_sweep)

THETA = np.array([0.3, -0.2, 0.8, 0.0])
REF = np.array([0.0, 0.5, -0.5, 0.2])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_gradient_bars_heights_markers_and_error_bars(rng):
    q, p = _softmax(THETA), _softmax(REF)
    reverse = q * (np.log(q) - np.log(p) - np.sum(q * (np.log(q) - np.log(p))))
    forward = q - p
    mc = kg.monte_carlo_gradient(THETA, REF, "k2", "loss", 1000, rng=rng)
    results = {"k2": (kg.expected_gradient(THETA, REF, "k2", "loss"), mc),
               "k3": (kg.expected_gradient(THETA, REF, "k3", "loss"), None)}
    fig, ax = plt.subplots()
    assert gradient_bars(reverse, forward, results, ax=ax, markersize=7) is ax
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [*reverse, *forward], rtol=1e-12)
    assert to_hex(ax.patches[0].get_edgecolor()) == TRUE_KL_COLOR and to_hex(ax.patches[-1].get_facecolor()) == FORWARD_COLOR
    markers = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    np.testing.assert_allclose(markers["k2"].get_ydata(), reverse, rtol=1e-9)  # k2 in the loss follows KL(q||p)
    np.testing.assert_allclose(markers["k3"].get_ydata(), forward, rtol=1e-9)  # k3 in the loss follows KL(p||q)
    assert to_hex(markers["k3"].get_color()) == PALETTE["k3"].lower() and markers["k2"].get_markersize() == 7
    # markers of different estimators sit side by side around each logit
    assert np.all(markers["k2"].get_xdata() < markers["k3"].get_xdata())
    (errorbars,) = ax.containers[2:]  # two BarContainers, then one ErrorbarContainer (k2 only)
    segments = errorbars.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in segments], 4 * mc.stderr, rtol=1e-12)
    with pytest.raises(ValueError, match="every gradient must have the shape of the first"):
        gradient_bars(reverse, forward[:2], results)


def test_variance_sweep(rng):
    separations = np.array([0.1, 1.0, 2.0])
    traces = {"k1": [0.6, 0.5, 0.4], "k3": [1e-3, 0.3, 5.0]}
    mc = {"k3": {1.0: kg.monte_carlo_gradient(THETA, REF, "k3", "loss", 500, rng=rng)}}
    fig, ax = plt.subplots()
    assert variance_sweep(separations, traces, signal_qp=[1e-3, 0.1, 0.2], signal_pq=[2e-3, 0.2, 0.4],
                          monte_carlo=mc, ax=ax) is ax
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    for name, values in traces.items():
        assert list(lines[name].get_ydata()) == values
        assert lines[name].get_linestyle() == ESTIMATOR_STYLES[name]
        assert to_hex(lines[name].get_color()) == PALETTE[name].lower()
    assert to_hex(lines["signal KL(q||p)"].get_color()) == TRUE_KL_COLOR
    assert to_hex(lines["signal KL(p||q)"].get_color()) == FORWARD_COLOR
    (points,) = ax.containers
    (x,), (y,) = points.lines[0].get_xdata(), points.lines[0].get_ydata()
    assert x == 1.0 and y == mc["k3"][1.0].trace_covariance
    (bar,) = points.lines[2][0].get_segments()
    assert bar[1, 1] - bar[0, 1] == pytest.approx(4 * mc["k3"][1.0].trace_covariance_stderr)
    assert "Monte Carlo ±2 s.e." in ax.get_legend_handles_labels()[1]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="k1 has 2 values for 3 separations"):
        variance_sweep(separations, {"k1": [1.0, 2.0]})
    with pytest.raises(ValueError, match="separations must be a 1-D array of positive numbers"):
        variance_sweep([0.0, 1.0], {"k1": [1.0, 2.0]})


def _runs():
    reference = np.log(np.array([0.1, 0.2, 0.4, 0.2, 0.1]))
    return (np.exp(reference), {"k2 loss": kg.fit_gaussian_policy(reference, "k2", "loss", init=(1.0, 0.0), steps=4),
                                "k3 loss": kg.fit_gaussian_policy(reference, "k3", "loss", init=(3.0, 0.2), steps=4)})


def test_policy_fits_draws_the_final_softmax():
    reference, paths = _runs()
    fig, ax = plt.subplots()
    assert policy_fits(reference, paths, ax=ax) is ax
    np.testing.assert_allclose([bar.get_height() for bar in ax.patches], reference)
    for label, path in paths.items():
        (line,) = [line for line in ax.lines if line.get_gid() == label]
        m, log_s = path.params[-1]
        tokens = np.arange(reference.size)
        want = _softmax(-0.5 * ((tokens - m) / math.exp(log_s)) ** 2)
        np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-12)
        assert to_hex(line.get_color()) == PALETTE[path.estimator].lower()
    with pytest.raises(ValueError, match="reference must be a 1-D vector of probabilities summing to 1"):
        policy_fits([0.5, 0.6], paths)


def test_policy_paths_and_traces():
    reference, paths = _runs()
    m, s = np.meshgrid(np.linspace(0, 4, 9), np.linspace(0.5, 3.0, 7), indexing="ij")
    objective = (m - 2) ** 2 + np.log(s) ** 2
    fig, ax = plt.subplots()
    out = policy_paths(m, s, objective, {"k2 loss": paths["k2 loss"]}, thin={"k3 loss": paths["k3 loss"]},
                       optima={"best": (2.0, 1.0, "*", "black")}, start=(1.0, 1.0), ax=ax)
    assert out is ax
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    np.testing.assert_array_equal(lines["k2 loss"].get_xdata(), paths["k2 loss"].mean)
    np.testing.assert_allclose(lines["k2 loss"].get_ydata(), np.exp(paths["k2 loss"].params[:, 1]))
    assert lines["k2 loss"].get_linestyle() == USE_STYLES["loss"] and lines["k3 loss (thin)"].get_linewidth() == 0.6
    assert [line.get_label() for line in ax.lines if line.get_marker() == "*"] == ["best"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="must be 2-D of one shape"):
        policy_paths(m, s[:, :3], objective, paths)
    for quantity, attribute in (("mean", "mean"), ("scale", "scale"), ("kl_qp", "kl_qp"), ("kl_pq", "kl_pq")):
        fig, ax = plt.subplots()
        path_traces(paths, quantity, ax=ax)
        for label, path in paths.items():
            (line,) = [line for line in ax.lines if line.get_gid() == label]
            np.testing.assert_array_equal(line.get_xdata(), np.arange(path.steps_taken + 1))
            np.testing.assert_array_equal(line.get_ydata(), getattr(path, attribute))
    with pytest.raises(ValueError, match="quantity must be one of"):
        path_traces(paths, "variance")
