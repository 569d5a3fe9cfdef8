"""Tests for klviz.plots.monte_carlo (notebook 01's figures): returned Axes and artist data, no pixels.

References are computed here by counting and by the formula s.e./KL = (std/KL)/sqrt(n), not by the code under test.
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from klviz.plots import PALETTE, error_against_samples, histogram_with_negatives


def test_histogram_with_negatives_counts_and_share(rng):
    values = rng.normal(0.005, 0.1, 20_000)  # k1 at gap 0.1: N(μ²/2, μ²)
    fig, ax = plt.subplots()
    returned = histogram_with_negatives(values, true_kl=0.005, half_width=0.4, bins=40, ax=ax)
    assert returned is ax
    (histogram,) = [patch for patch in ax.patches if patch.get_gid() == "k1"]
    edges = np.linspace(0.005 - 0.4, 0.005 + 0.4, 41)
    counts = np.array([np.sum((values >= lo) & (values < hi)) for lo, hi in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(histogram.get_data().edges, edges, rtol=1e-12)
    np.testing.assert_allclose(histogram.get_data().values, counts / (values.size * np.diff(edges)), rtol=1e-12)
    assert to_hex(histogram.get_edgecolor()) == PALETTE["k1"].lower()
    negative = 100 * np.count_nonzero(values < 0) / values.size
    assert ax.texts[-1].get_text() == f"k1 < 0: {negative:.1f}%"
    # the shaded region runs from the left edge of the window to 0
    (shade,) = [patch for patch in ax.patches if patch.get_gid() == "negative"]
    assert shade.get_x() == pytest.approx(0.005 - 0.4) and shade.get_x() + shade.get_width() == pytest.approx(0.0)
    (truth,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert truth.get_xdata()[0] == 0.005
    assert ax.get_xlim() == pytest.approx((0.005 - 0.4, 0.005 + 0.4))


def test_histogram_with_negatives_share_counts_samples_outside_the_window():
    values = np.array([-100.0, -0.5, 0.5, 1.0])  # -100 is far outside the window but still negative
    fig, ax = plt.subplots()
    histogram_with_negatives(values, estimator="k3", true_kl=0.5, half_width=1.0, bins=4, ax=ax)
    assert ax.texts[-1].get_text() == "k3 < 0: 50.0%"
    assert to_hex(ax.patches[-1].get_edgecolor()) == PALETTE["k3"].lower()


def test_histogram_with_negatives_defaults_and_no_shade_when_window_is_positive():
    values = np.array([10.0, 11.0, 12.0, 13.0])
    fig, ax = plt.subplots()
    histogram_with_negatives(values, bins=4, ax=ax)
    low, high = ax.get_xlim()
    centre, spread = values.mean(), values.std()
    assert (low, high) == pytest.approx((centre - 4 * spread, centre + 4 * spread))
    assert all(patch.get_gid() != "negative" for patch in ax.patches)  # nothing below 0 in view
    assert ax.texts[-1].get_text() == "k1 < 0: 0.0%"


@pytest.mark.parametrize("values, half_width, message", [
    ([], None, "values must not be empty"),
    ([0.0, np.nan], None, "values must be finite"),
    ([0.0, np.inf], None, "values must be finite"),
    ([0.0, 1.0], 0.0, "half_width must be positive"),
    ([0.0, 1.0], -1.0, "half_width must be positive"),
])
def test_histogram_with_negatives_rejects_bad_input(values, half_width, message):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=message):
        histogram_with_negatives(np.array(values), half_width=half_width, ax=ax)
    assert len(ax.patches) == 0 and len(ax.lines) == 0


def test_error_against_samples_lines_and_dots():
    sizes = np.array([100, 1_000, 10_000])
    errors = {"k1": np.array([[0.9, 2.1], [0.5, 0.1], [0.2, 0.05]]),
              "k3": np.array([[0.1, 0.2], [0.03, 0.01], [0.0, 0.004]])}
    relative_std = {"k1": 20.0, "k3": 1.4166}
    fig, ax = plt.subplots()
    returned = error_against_samples(sizes, errors, relative_std, ax=ax, linestyle="-.")
    assert returned is ax
    lines = {line.get_gid(): line for line in ax.lines}
    for name in ("k1", "k3"):
        line, dots = lines[f"{name} line"], lines[f"{name} runs"]
        np.testing.assert_allclose(line.get_ydata(), [relative_std[name] / 10, relative_std[name] / 10**1.5,
                                                      relative_std[name] / 100], rtol=1e-14)
        assert line.get_linestyle() == "-." and to_hex(line.get_color()) == PALETTE[name].lower()
        assert f"{relative_std[name]:.3g}" in line.get_label()
        np.testing.assert_array_equal(dots.get_xdata(), [100, 100, 1_000, 1_000, 10_000, 10_000])
        np.testing.assert_array_equal(dots.get_ydata(), errors[name].ravel())
    (threshold,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert list(threshold.get_ydata()) == [0.01, 0.01] and threshold.get_label() == "1% relative error"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_error_against_samples_one_run_per_size_and_no_threshold():
    fig, ax = plt.subplots()
    error_against_samples([4, 100], {"k2": [0.3, 0.1]}, {"k2": 1.0}, threshold=None, ax=ax)
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 0.1], rtol=1e-15)


@pytest.mark.parametrize("sizes, errors, relative_std, message", [
    ([0, 10], {"k1": [[1.0], [1.0]]}, {"k1": 1.0}, "sizes must be"),
    ([], {"k1": []}, {"k1": 1.0}, "sizes must be"),
    ([10, 100], {"k1": [[1.0], [1.0]]}, {"k3": 1.0}, "must name the same estimators"),
    ([10, 100], {"k1": [[1.0], [1.0], [1.0]]}, {"k1": 1.0}, r"one row per size \(2\)"),
])
def test_error_against_samples_rejects_bad_input(sizes, errors, relative_std, message):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=message):
        error_against_samples(sizes, errors, relative_std, ax=ax)
    assert len(ax.lines) == 0


def test_draws_on_current_axes():
    fig, ax = plt.subplots()
    assert histogram_with_negatives(np.array([-1.0, 1.0])) is ax
    fig, ax = plt.subplots()
    assert error_against_samples([10], {"k1": [0.1]}, {"k1": 1.0}) is ax
