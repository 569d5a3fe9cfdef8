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
    assert estimator_color("k1_pq") == PALETTE["k1_pq"]
    # any other estimator (a user's) gets a stable colour from the extra list
    from klviz.plots import EXTRA_COLORS

    assert estimator_color("k4") in EXTRA_COLORS and estimator_color("k4") == estimator_color("k4")
    with pytest.raises(TypeError, match="estimator must be a name or an Estimator"):
        estimator_color(3)


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
    patches = {patch.get_gid(): patch for patch in ax.patches}
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
        # the label gives the sample mean and the share of samples the bins do not hold
        outside = 100 * np.mean((sample < edges[0]) | (sample > edges[-1]))
        assert patches[name].get_label() == f"{name}, mean {sample.mean():.4g} ({outside:.3g}% outside the bins)"
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
    finite = np.sort(sample[np.isfinite(sample)])
    # documented default range: the 0.05% and 99.95% quantiles (coverage 0.999), infinities ignored;
    # with 10,000 values and linear interpolation they lie 4.9995 order statistics in from either end
    low = finite[4] + 0.9995 * (finite[5] - finite[4])
    high = finite[-5] - 0.9995 * (finite[-5] - finite[-6])
    np.testing.assert_allclose(patch.get_data().edges, np.linspace(low, high, 11), rtol=1e-12)
    counts, _ = np.histogram(finite, bins=10, range=(low, high))
    np.testing.assert_array_equal(patch.get_data().values, counts)
    assert counts.sum() == 10_000 - 10  # five finite values cut from each side
    assert patch.get_label() == f"k2 ({100 * 12 / 10_002:.3g}% outside the bins)"  # ten cut, two infinite
    assert patch.get_linestyle() == "-."
    assert ax.lines == [] or all(line.get_linestyle() != ":" for line in ax.lines)
    assert ax.get_ylabel() == "count"


def test_default_range_holds_each_estimators_own_central_mass(rng):
    # A wide k1 and a narrow, more numerous k3: percentiles of the pooled samples would cut k1's tails
    # (that is what the range used to be). Each estimator's own central 99.9% must be inside the bins.
    wide, narrow = rng.normal(0.0, 1.0, 20_000), rng.gamma(0.5, 0.01, 60_000)
    pooled_low, pooled_high = np.percentile(np.concatenate([wide, narrow]), [0.5, 99.5])
    assert np.mean((wide < pooled_low) | (wide > pooled_high)) > 0.01  # the old default: 1.5% of k1 cut
    fig, ax = plt.subplots()
    histogram_estimators({"k1": wide, "k3": narrow}, ax=ax, bins=50)
    edges = ax.patches[0].get_data().edges
    for name, sample in (("k1", wide), ("k3", narrow)):
        share_outside = np.mean((sample < edges[0]) | (sample > edges[-1]))
        assert share_outside <= 0.001 + 1 / sample.size  # at most 0.05% per side, up to one tie
        inside = np.sort(sample)[sample.size // 2000 + 1: -(sample.size // 2000 + 1)]
        assert edges[0] <= inside[0] and inside[-1] <= edges[-1]
    # the wide estimator sets both ends: its own extreme quantiles, not the narrow one's
    np.testing.assert_allclose([edges[0], edges[-1]], np.quantile(wide, [0.0005, 0.9995]), rtol=1e-12)
    # a tighter coverage gives a narrower range
    fig, ax2 = plt.subplots()
    histogram_estimators({"k1": wide, "k3": narrow}, ax=ax2, bins=50, coverage=0.9)
    narrow_edges = ax2.patches[0].get_data().edges
    assert edges[0] < narrow_edges[0] < narrow_edges[-1] < edges[-1]


def test_sample_means_are_shown_even_outside_the_bins():
    # 99 values at 0.5 and one at 450: the mean, 4.995, is far right of the range (0, 1)
    sample = np.concatenate([np.full(99, 0.5), [450.0]])
    fig, ax = plt.subplots()
    histogram_estimators({"k3": sample, "k1": np.array([0.25, 0.75])}, ax=ax, bins=4, range=(0.0, 1.0),
                         true_kl=0.5)
    means = {to_hex(line.get_color()): line for line in ax.lines if line.get_linestyle() == ":"}
    assert means[PALETTE["k3"].lower()].get_xdata()[0] == pytest.approx(4.995, rel=1e-15)
    assert means[PALETTE["k1"].lower()].get_xdata()[0] == 0.5
    low, high = ax.get_xlim()
    assert low <= 0.0 and high >= 4.995  # the view widened to show the mean outside the bins
    labels = {patch.get_gid(): patch.get_label() for patch in ax.patches}
    assert labels == {"k3": "k3, mean 4.995 (1% outside the bins)", "k1": "k1, mean 0.5"}
    # the k1 mean coincides with the true KL: it is drawn above the dashed line, not hidden under it
    (truth,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert means[PALETTE["k1"].lower()].get_zorder() > truth.get_zorder()


def test_histogram_validates_coverage():
    fig, ax = plt.subplots()
    for bad in (0.0, 1.5, -0.1, "0.9", None):
        with pytest.raises(ValueError, match=r"coverage must be a number in \(0, 1\]"):
            histogram_estimators({"k1": np.arange(5.0)}, ax=ax, bins=2, coverage=bad)
    assert len(ax.patches) == 0
    histogram_estimators({"k1": np.arange(5.0)}, ax=ax, bins=2, coverage=1)  # all of it: min to max
    np.testing.assert_array_equal(ax.patches[0].get_data().edges, [0.0, 2.0, 4.0])


def test_histogram_on_current_axes_and_errors():
    fig, ax = plt.subplots()
    assert histogram_estimators({"k3": np.array([0.0, 1.0, 2.0])}, bins=3) is ax
    with pytest.raises(ValueError, match="values"):
        histogram_estimators({}, ax=ax)
    with pytest.raises(TypeError, match="estimator must be a name"):
        histogram_estimators({9: np.array([0.0, 1.0])}, ax=ax, bins=2, range=(0, 1))


def test_histogram_validates_every_name_before_drawing(rng):
    fig, ax = plt.subplots()
    with pytest.raises(TypeError, match="estimator must be a name"):
        histogram_estimators({"k1": rng.normal(size=100), None: rng.normal(size=100)}, ax=ax, bins=5)
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
    assert ax.patches[0].get_label() == "k1 (50% outside the bins)"
    # an estimator with no finite value takes no part in the default range, and says so in its label
    fig, ax = plt.subplots()
    histogram_estimators({"k1": np.array([0.0, 1.0, 2.0]), "k3": np.array([np.inf, np.inf])}, ax=ax, bins=2,
                         show_means=False)
    np.testing.assert_allclose(ax.patches[0].get_data().edges, [0.001, 1.0, 1.999], rtol=1e-12)  # k1 alone
    assert ax.patches[1].get_label() == "k3 (100% outside the bins)"


def test_plotting_does_not_show_or_create_extra_figures(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() called"))
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    histogram_estimators({"k1": np.arange(10.0)}, ax=ax, bins=5)
    mark_value(1.0, ax=ax)
    assert plt.get_fignums() == before


def test_use_style_sets_readable_text():
    from klviz.plots import STYLE, use_style

    use_style()
    assert plt.rcParams["legend.fontsize"] >= 9 and plt.rcParams["xtick.labelsize"] >= 9
    assert all(plt.rcParams[key] == value for key, value in STYLE.items() if not isinstance(value, tuple))


def test_table_displays_itself():
    from klviz import Table

    table = Table(["estimator", "mean", "s.e."], [("k1", 0.5, 1e-3), ("k3", 0.499999, "< 1e-15")],
                  digits={"mean": ".4f", "s.e.": 2})
    text = str(table)
    assert text.splitlines()[1].split() == ["k1", "0.5000", "0.001"]
    assert "< 1e-15" in text and "<td style='text-align:right'>0.5000</td>" in table._repr_html_()
    with pytest.raises(ValueError, match="every row must have 3 values"):
        Table(["a", "b", "c"], [(1, 2)])
