"""Tests for klviz.plots (palette, mark_value, histogram_estimators): returned Axes and artist data, no pixels.

The palette is checked against the Okabe–Ito hex codes written out here; histogram heights against
numpy.histogram computed in the test. (control_variate_curve and tangent_gap: tests/test_plots_cv.py.)
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgba

from klviz.plots import PALETTE, TRUE_KL_COLOR, estimator_color, histogram_estimators, mark_value

# Okabe & Ito (2008), "Color Universal Design": the colour-blind-safe set the project uses.
OKABE_ITO = {
    "orange": "#e69f00",
    "sky blue": "#56b4e9",
    "bluish green": "#009e73",
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "reddish purple": "#cc79a7",
    "black": "#000000",
}


def test_palette_is_okabe_ito_and_distinct():
    assert PALETTE["k1"].lower() == OKABE_ITO["blue"]
    assert PALETTE["k2"].lower() == OKABE_ITO["orange"]
    assert PALETTE["k3"].lower() == OKABE_ITO["bluish green"]
    assert {c.lower() for c in PALETTE.values()} <= set(OKABE_ITO.values())
    assert len({c.lower() for c in PALETTE.values()}) == len(PALETTE)
    assert to_hex(TRUE_KL_COLOR) == OKABE_ITO["black"]
    assert TRUE_KL_COLOR.lower() not in {c.lower() for c in PALETTE.values()}


def test_estimator_color():
    assert estimator_color("k3") == PALETTE["k3"]
    assert estimator_color("k_lambda(0.5)") == PALETTE["k_lambda"]
    assert estimator_color("k1_reverse") == PALETTE["k1_reverse"]
    with pytest.raises(ValueError, match=r"name must be one of .*'k4'"):
        estimator_color("k4")


def test_mark_value_on_given_and_current_axes():
    fig, ax = plt.subplots()
    returned = mark_value(0.5, ax=ax, label="true KL")
    assert returned is ax
    (line,) = ax.lines
    assert list(line.get_xdata()) == [0.5, 0.5]
    assert to_hex(line.get_color()) == OKABE_ITO["black"]
    assert line.get_linestyle() == "--" and line.get_label() == "true KL"
    # kwargs reach the artist and override the defaults
    mark_value(0.1, ax=ax, color=PALETTE["k2"], linestyle=":", linewidth=3)
    assert to_hex(ax.lines[1].get_color()) == OKABE_ITO["orange"]
    assert ax.lines[1].get_linestyle() == ":" and ax.lines[1].get_linewidth() == 3
    # ax=None draws on the current Axes
    fig2, ax2 = plt.subplots()
    assert mark_value(2.0) is ax2 and len(ax2.lines) == 1 and len(ax.lines) == 2


def test_histogram_heights_are_numpy_densities(rng):
    values = {"k1": rng.normal(0.5, 1.0, 5_000), "k3": rng.gamma(0.5, 1.0, 7_000)}
    fig, ax = plt.subplots()
    returned = histogram_estimators(values, ax=ax, bins=20, range=(-2.0, 3.0), true_kl=0.5)
    assert returned is ax
    patches = {patch.get_label(): patch for patch in ax.patches}
    assert set(patches) == {"k1", "k3"}
    edges = np.linspace(-2.0, 3.0, 21)
    for name, sample in values.items():
        counts = np.array([np.sum((sample >= lo) & (sample < hi)) for lo, hi in zip(edges[:-1], edges[1:])])
        counts[-1] += np.sum(sample == edges[-1])
        density = counts / (sample.size * np.diff(edges))  # normalised by all samples, in range or not
        heights, stair_edges = patches[name].get_data().values, patches[name].get_data().edges
        np.testing.assert_allclose(stair_edges, edges, rtol=1e-15)
        np.testing.assert_allclose(heights, density, rtol=1e-12)
        assert to_rgba(patches[name].get_edgecolor()) == to_rgba(PALETTE[name])
    # one dotted mean line per estimator in its colour, then the dashed black true-KL line
    means = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [to_hex(line.get_color()) for line in means] == [PALETTE["k1"].lower(), PALETTE["k3"].lower()]
    assert [line.get_xdata()[0] for line in means] == pytest.approx([values["k1"].mean(), values["k3"].mean()])
    (truth,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert truth.get_xdata()[0] == 0.5 and to_hex(truth.get_color()) == OKABE_ITO["black"]
    assert "0.5" in truth.get_label()
    assert ax.get_xlabel() and ax.get_ylabel() == "density"


def test_histogram_counts_default_range_and_kwargs(rng):
    sample = np.concatenate([rng.normal(size=10_000), [np.inf, -np.inf]])
    fig, ax = plt.subplots()
    histogram_estimators({"k2": sample}, ax=ax, bins=10, density=False, show_means=False, linestyle="-.")
    (patch,) = ax.patches
    finite = sample[np.isfinite(sample)]
    low, high = np.percentile(finite, [0.5, 99.5])  # documented default range, infinities ignored
    np.testing.assert_allclose(patch.get_data().edges, np.linspace(low, high, 11), rtol=1e-12)
    counts, _ = np.histogram(finite, bins=10, range=(low, high))
    np.testing.assert_array_equal(patch.get_data().values, counts)
    assert patch.get_linestyle() == "-."
    assert ax.lines == [] or all(line.get_linestyle() != ":" for line in ax.lines)
    assert ax.get_ylabel() == "count"


def test_histogram_on_current_axes_and_errors():
    fig, ax = plt.subplots()
    assert histogram_estimators({"k3": np.array([0.0, 1.0, 2.0])}, bins=3) is ax
    with pytest.raises(ValueError, match="values"):
        histogram_estimators({}, ax=ax)
    with pytest.raises(ValueError, match="name must be one of"):
        histogram_estimators({"k9": np.array([0.0, 1.0])}, ax=ax, bins=2, range=(0, 1))


def test_histogram_validates_every_name_before_drawing(rng):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"name must be one of .*'k9'"):
        histogram_estimators({"k1": rng.normal(size=100), "k9": rng.normal(size=100)}, ax=ax, bins=5)
    assert len(ax.patches) == 0 and len(ax.lines) == 0  # no half-drawn figure


def test_histogram_without_finite_values_explains_itself():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="values must contain some finite numbers"):
        histogram_estimators({"k1": np.array([np.inf, -np.inf, np.nan]), "k3": [np.inf]}, ax=ax, bins=5)
    assert len(ax.patches) == 0
    with pytest.raises(ValueError, match=r"values\['k2'\] must not be empty"):
        histogram_estimators({"k1": np.arange(3.0), "k2": []}, ax=ax, bins=5)
    # with an explicit range there is nothing to choose, and non-finite values fall outside the bins
    histogram_estimators({"k1": np.array([np.inf, 0.5])}, ax=ax, bins=2, range=(0, 1), density=False,
                         show_means=False)
    np.testing.assert_array_equal(ax.patches[0].get_data().values, [0, 1])


def test_plotting_does_not_show_or_create_extra_figures(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() called"))
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    histogram_estimators({"k1": np.arange(10.0)}, ax=ax, bins=5)
    mark_value(1.0, ax=ax)
    assert plt.get_fignums() == before
