r"""Tests for klviz.explorer: the pure update functions against exact values, the figure's in-place
updates and blitting, and the widget glue (without a browser; tests/browser drives a real one).

References are computed differently from the code under test:

* q = N(0, 1), p = N(μ, σ²): KL[q, p] = log σ + (1 + μ²)/(2σ²) - 1/2; for σ = 1, E[k2] = μ²/2 + μ⁴/8, so
  k2's relative bias is μ²/4, and Var(k1) = μ², so k1's stdev/true is 2/μ;
* log r from scipy.stats.norm.logpdf at the draws, per-sample estimators from klviz.k1/k2/k3, histograms
  from numpy.histogram, means from numpy;
* common random numbers: k1 = μ²/2 - μz, so its sample mean is μ²/2 - μ z̄ at every gap, one z̄;
* E[k2] for unequal variances by scipy quadrature.
"""

import math
import re

import matplotlib
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import klviz
from klviz import explorer as ex
from klviz.explorer import (
    ESTIMATOR_NAMES,
    BiasExplorer,
    ExplorerFigure,
    StandardDraws,
    exact_relative_bias,
    explorer_state,
    monte_carlo_bias,
    standard_draws,
)

N = 20_000  # enough for 4-s.e. checks, small enough to keep the file fast


@pytest.fixture(scope="module")
def draws():
    return standard_draws(N, rng=20201107)


@pytest.fixture(scope="module")
def big_draws():
    return standard_draws(200_000, rng=7)


def kl_reference(gap, sigma):
    return math.log(sigma) + (1 + gap**2) / (2 * sigma**2) - 0.5


def per_sample(gap, sigma, z):
    """Per-sample k1, k2, k3 from scipy's log-densities at x = z (not klviz's quadratic)."""
    log_ratio = stats.norm.logpdf(z, gap, sigma) - stats.norm.logpdf(z)
    return {"k1": klviz.k1(log_ratio), "k2": klviz.k2(log_ratio), "k3": klviz.k3(log_ratio)}


# --------------------------------------------------------------------------------------------------
# Common random numbers
# --------------------------------------------------------------------------------------------------

def test_standard_draws_are_sorted_read_only_and_reproducible():
    draws = standard_draws(1000, rng=3)
    assert isinstance(draws, StandardDraws) and draws.n == 1000
    assert np.all(np.diff(draws.z) >= 0)
    assert not draws.z.flags.writeable
    np.testing.assert_array_equal(draws.z, standard_draws(1000, rng=3).z)
    np.testing.assert_array_equal(draws.z, np.sort(np.random.default_rng(3).standard_normal(1000)))
    assert repr(draws) == "StandardDraws(n=1,000)"


def test_standard_draws_validation():
    with pytest.raises(TypeError, match="n must be an integer"):
        standard_draws(10.0)
    with pytest.raises(ValueError, match="n must be at least 2"):
        standard_draws(1)
    with pytest.raises(ValueError, match="sorted ascending"):
        StandardDraws(np.array([1.0, 0.0]))
    with pytest.raises(TypeError, match="1-D float64"):
        StandardDraws(np.array([0, 1]))
    with pytest.raises(TypeError, match="draws must be StandardDraws"):
        explorer_state(1.0, 1.0, np.zeros(10))


def test_common_random_numbers_k1_mean_is_the_same_transform_at_every_gap(draws):
    z_bar = draws.z.mean()
    for gap in (0.1, 0.5, 1.0, 2.0, 3.0):
        state = explorer_state(gap, 1.0, draws)
        assert state.rows["k1"].monte_carlo.mean == pytest.approx(gap**2 / 2 - gap * z_bar, rel=1e-9, abs=1e-13)


def test_monte_carlo_values_are_those_of_the_draws(draws):
    for gap, sigma in ((0.3, 1.0), (1.7, 0.8), (2.5, 1.35)):
        state = explorer_state(gap, sigma, draws)
        for name, values in per_sample(gap, sigma, draws.z).items():
            estimate = state.rows[name].monte_carlo
            assert estimate.n == N
            assert estimate.mean == pytest.approx(values.mean(), rel=1e-9)
            assert estimate.std == pytest.approx(values.std(ddof=1), rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gap", [0.05, 0.1, 0.5, 1.0, 1.05, 2.0, 3.0])
def test_exact_k2_relative_bias_is_gap_squared_over_four(draws, gap):
    state = explorer_state(gap, 1.0, draws)
    assert state.kl == pytest.approx(gap**2 / 2, rel=1e-14)
    assert state.rows["k2"].exact.relative_bias == pytest.approx(gap**2 / 4, rel=1e-12)
    assert state.rows["k2"].exact.mean == pytest.approx(gap**2 / 2 + gap**4 / 8, rel=1e-12)
    assert state.rows["k1"].exact.relative_std == pytest.approx(2 / gap, rel=1e-12)
    for name in ("k1", "k3"):
        assert abs(state.rows[name].exact.relative_bias) < 1e-12


@pytest.mark.parametrize("gap, sigma", [(0.0, 0.6), (0.4, 1.3), (2.0, 0.7), (1.0, 1.9)])
def test_exact_values_for_unequal_variances(draws, gap, sigma):
    state = explorer_state(gap, sigma, draws)
    assert state.kl == pytest.approx(kl_reference(gap, sigma), rel=1e-12)

    def integrand(x):
        return stats.norm.pdf(x) * 0.5 * (stats.norm.logpdf(x, gap, sigma) - stats.norm.logpdf(x)) ** 2

    mean_k2, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-11)
    assert state.rows["k2"].exact.mean == pytest.approx(mean_k2, rel=1e-8)


def test_k3_variance_is_infinite_for_wide_p(draws):
    state = explorer_state(1.0, 1.5, draws)  # sigma_p² >= 2 sigma_q²: E_q[r²] diverges
    assert state.rows["k3"].exact.var == math.inf
    assert "∞" in state.to_text()


@pytest.mark.parametrize("gap, sigma", [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, 0.8), (0.3, 1.2)])
def test_monte_carlo_agrees_with_exact_within_standard_errors(big_draws, gap, sigma):
    state = explorer_state(gap, sigma, big_draws)
    for row in state.rows.values():
        z_score = (row.monte_carlo.mean - row.exact.mean) / row.monte_carlo.stderr
        assert abs(z_score) < 4, (row.estimator, z_score)


def test_exact_relative_bias_curve():
    gaps = np.linspace(0.1, 3.0, 30)
    np.testing.assert_allclose(exact_relative_bias("k2", gaps), gaps**2 / 4, rtol=1e-12)
    for name in ("k1", "k3"):
        assert np.max(np.abs(exact_relative_bias(name, gaps))) < 1e-12
    assert math.isnan(exact_relative_bias("k2", [0.0])[0])  # p = q: KL = 0
    assert exact_relative_bias("k2", [0.0], sigma_ratio=1.3)[0] == pytest.approx(
        explorer_state(0.0, 1.3, standard_draws(10, rng=0)).rows["k2"].exact.relative_bias
    )
    with pytest.raises(ValueError, match="estimators must be names"):
        exact_relative_bias("k9", gaps)
    with pytest.raises(ValueError, match="gaps must be"):
        exact_relative_bias("k2", [-1.0])


def test_monte_carlo_bias_points(big_draws):
    gaps = np.array([0.5, 1.0, 2.0])
    points = monte_carlo_bias(gaps, 1.0, big_draws)
    # Common random numbers: k1's relative bias is (-gap z̄)/(gap²/2) = -2 z̄/gap at every gap.
    np.testing.assert_allclose(points.relative_bias["k1"], -2 * big_draws.z.mean() / gaps, rtol=1e-9, atol=1e-14)
    z_scores = (points.relative_bias["k2"] - gaps**2 / 4) / points.relative_stderr["k2"]
    assert np.all(np.abs(z_scores) < 4)
    assert np.all(np.abs(points.relative_bias["k3"] / points.relative_stderr["k3"]) < 4)
    with pytest.raises(ValueError, match="KL = 0"):
        monte_carlo_bias([0.0], 1.0, big_draws)


# --------------------------------------------------------------------------------------------------
# Histograms by binary search in the sorted draws
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gap, sigma", [(1.0, 1.0), (0.05, 1.0), (3.0, 1.0), (0.7, 0.55), (1.3, 1.8), (0.0, 1.4),
                                        (3.0, 0.5)])
def test_histogram_counts_match_numpy(draws, gap, sigma):
    values = per_sample(gap, sigma, draws.z)
    for name in ESTIMATOR_NAMES:
        low, high = np.quantile(values[name], [0.01, 0.995])  # cut both tails
        state = explorer_state(gap, sigma, draws, estimators=[name], view=(low - 0.1, high), bins=37)
        reference, edges = np.histogram(values[name], bins=37, range=state.view)
        np.testing.assert_array_equal(state.edges, edges)
        np.testing.assert_array_equal(state.counts[name], reference)
        assert state.counts[name].sum() + state.outside(name) == N


@settings(max_examples=60, deadline=None)
@given(gap=st.one_of(st.just(0.0), st.floats(1e-3, 3.0)), sigma=st.floats(0.5, 2.0), low=st.floats(-5, 1),
       width=st.floats(0.01, 30))
def test_histogram_counts_match_numpy_on_any_bins(gap, sigma, low, width):
    draws = standard_draws(2000, rng=1)
    if gap == 0 and sigma == 1:
        sigma = 1.1
    values = per_sample(gap, sigma, draws.z)
    edges = np.linspace(low, low + width, 21)
    quadratic = klviz.GaussianPair(mu_p=gap, sigma_p=sigma).quadratic
    for name in ESTIMATOR_NAMES:
        counts = np.diff(ex._estimator_cdf(name, edges, quadratic, draws.z))
        np.testing.assert_array_equal(counts, np.histogram(values[name], bins=edges)[0])


def test_histogram_when_p_equals_q(draws):
    state = explorer_state(0.0, 1.0, draws)  # every estimate is exactly 0
    for name in ESTIMATOR_NAMES:
        assert state.counts[name].sum() == N
        (nonempty,) = np.nonzero(state.counts[name])
        assert nonempty.size == 1 and state.edges[nonempty[0]] < 0 <= state.edges[nonempty[0] + 1]
    assert math.isnan(state.rows["k2"].exact.relative_bias)
    assert "—" in state.to_text()


# --------------------------------------------------------------------------------------------------
# Stable views
# --------------------------------------------------------------------------------------------------

def test_view_is_kept_for_small_steps_and_rebuilt_when_data_leave_or_shrink(big_draws):
    state = explorer_state(1.0, 1.0, big_draws)
    assert state.rescaled
    low, high = state.view
    assert low < 0 < state.kl < high
    for name in ESTIMATOR_NAMES:  # the central 98% of every estimator fits
        assert state.outside(name) <= 0.02 * big_draws.n
    step = explorer_state(1.05, 1.0, big_draws, view=state.view)
    assert not step.rescaled and step.view == state.view
    far = explorer_state(3.0, 1.0, big_draws, view=state.view)  # k2's tail leaves the view
    assert far.rescaled and far.view[1] > state.view[1]
    near = explorer_state(0.1, 1.0, big_draws, view=state.view)  # the data shrink to a sliver of it
    assert near.rescaled and near.view[1] - near.view[0] < 0.35 * (high - low)


def test_explorer_state_validation(draws):
    with pytest.raises(ValueError, match="gap must be finite and >= 0"):
        explorer_state(-1.0, 1.0, draws)
    with pytest.raises(ValueError, match="sigma_ratio must be finite and > 0"):
        explorer_state(1.0, 0.0, draws)
    with pytest.raises(TypeError, match="gap must be a real number"):
        explorer_state("1", 1.0, draws)
    with pytest.raises(ValueError, match="estimators must be names"):
        explorer_state(1.0, 1.0, draws, estimators=["k4"])
    with pytest.raises(ValueError, match="view must be"):
        explorer_state(1.0, 1.0, draws, view=(2.0, 1.0))
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        explorer_state(1.0, 1.0, draws, bins=0)


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

def test_table_html_carries_full_precision_values(draws):
    state = explorer_state(1.05, 1.0, draws)
    html = state.to_html()
    match = re.search(r'data-estimator="k2" data-quantity="exact-relative-bias" data-value="([^"]+)">([^<]+)<', html)
    assert float(match.group(1)) == pytest.approx(1.05**2 / 4, rel=1e-12)
    assert match.group(2) == "0.275625"
    assert html.count("<tr>") == 1 + 3  # header and one row per estimator
    text = state.to_text()
    assert "true KL[q, p] = 0.55125" in text and "0.275625" in text


# --------------------------------------------------------------------------------------------------
# The figure: artists built once, updated in place, blitted
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def view():
    figure = ExplorerFigure(n=N, rng=1)
    yield figure
    figure.close()


def test_a_step_updates_the_same_artists_in_place(view):
    artists = view.artists
    handles = [artists.histogram["k2"], artists.mean["k2"], artists.true_kl["k1"], artists.live["k3"],
               artists.exact_point, artists.gap_line, artists.title]
    before = artists.histogram["k2"].get_data().values.copy()
    state = view.update(gap=1.1)
    assert view.artists is artists
    assert [artists.histogram["k2"], artists.mean["k2"], artists.true_kl["k1"], artists.live["k3"],
            artists.exact_point, artists.gap_line, artists.title] == handles
    assert not np.array_equal(artists.histogram["k2"].get_data().values, before)
    np.testing.assert_array_equal(artists.histogram["k2"].get_data().edges, state.edges)
    assert artists.mean["k2"].get_xdata()[0] == state.rows["k2"].monte_carlo.mean
    assert artists.true_kl["k1"].get_xdata()[0] == pytest.approx(1.1**2 / 2)
    assert artists.gap_line.get_xdata()[0] == 1.1
    assert artists.exact_point.get_ydata()[0] == pytest.approx(1.1**2 / 4)
    assert "1.10" in artists.title.get_text()
    assert len(view.figure.axes) == 4


def test_small_steps_blit_and_large_jumps_redraw(view):
    full = view.full_draws
    view.update(gap=1.05)
    view.update(gap=1.1)
    assert view.full_draws == full  # restored background + changed artists only
    view.update(gap=3.0)
    assert view.full_draws == full + 1  # the bins were re-chosen: one full draw
    view.update(sigma_ratio=1.2)  # the bias panel's curve and points change
    assert view.full_draws == full + 2


def test_blitted_picture_matches_a_full_draw(view):
    for gap in (1.05, 1.1, 1.15, 1.2):
        view.update(gap=gap)
    assert view.full_draws == 1
    canvas = view.figure.canvas
    blitted = np.asarray(canvas.buffer_rgba()).copy()
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())
    differing = np.any(blitted != drawn, axis=-1).mean()
    # Only drawing order differs (changing artists on top of spines and legend); a stale histogram left in
    # the background would differ in several percent of the pixels.
    assert differing < 0.004


def test_a_foreign_draw_invalidates_the_background(view):
    view.figure.canvas.draw()  # e.g. a resize in the browser
    full = view.full_draws
    view.update(gap=1.05)
    assert view.full_draws == full + 1


def test_toggles_hide_and_show_artists(view):
    artists = view.artists
    state = view.update(estimators=["k1", "k3"])
    assert state.estimators == ("k1", "k3")
    for group in (artists.histogram, artists.mean, artists.true_kl, artists.live, artists.points, artists.errorbars):
        assert not group["k2"].get_visible()
        assert group["k1"].get_visible() and group["k3"].get_visible()
    assert not artists.exact_curve.get_visible() and not artists.exact_point.get_visible()
    view.update(estimators=ESTIMATOR_NAMES)
    assert artists.histogram["k2"].get_visible() and artists.exact_curve.get_visible()


def test_bias_panel_points_come_from_the_same_draws(view):
    x, y = view.artists.points["k1"].get_data()
    z_bar = standard_draws(N, rng=1).z.mean()
    gaps = np.array(ex.MC_GAPS)
    np.testing.assert_allclose(x, gaps + ex._DODGE["k1"])
    np.testing.assert_allclose(y, -2 * z_bar / gaps, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(view.artists.exact_curve.get_ydata()[1:], ex.GAP_GRID[1:] ** 2 / 4, rtol=1e-12)


def test_no_blit_variant_draws_every_step():
    figure = ExplorerFigure(n=1000, rng=0, blit=False)
    full = figure.full_draws
    figure.update(gap=1.05)
    assert figure.full_draws == full + 1
    figure.close()


def test_static_png_and_validation():
    figure = ExplorerFigure(n=1000, rng=0, figure=matplotlib.figure.Figure(figsize=ExplorerFigure.figsize))
    png = figure.to_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == figure.to_png()  # reproducible bytes
    with pytest.raises(ValueError, match="gap must be finite and >= 0 and <= 3"):
        ExplorerFigure(gap=3.5, n=1000)
    with pytest.raises(ValueError, match="sigma_ratio must be finite and >= 0.5 and <= 2"):
        ExplorerFigure(sigma_ratio=0.1, n=1000)
    with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy.random.Generator"):
        ExplorerFigure(rng="seed", n=1000)
    with pytest.raises(ValueError, match="rng must be a non-negative seed"):
        ExplorerFigure(rng=-1, n=1000)


def test_rng_accepts_a_generator():
    figure = ExplorerFigure(n=1000, rng=np.random.default_rng(5))
    assert figure.seed == int(np.random.default_rng(5).integers(2**31))
    figure.close()


# --------------------------------------------------------------------------------------------------
# The widgets
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def explorer():
    widget = BiasExplorer(n=10_000, rng=2)
    yield widget
    widget.close()


def k2_exact_in_table(explorer):
    match = re.search(r'data-estimator="k2" data-quantity="exact-relative-bias" data-value="([^"]+)"',
                      explorer.table.value)
    return float(match.group(1))


def test_moving_the_gap_slider_runs_a_step(explorer):
    patch = explorer.artists.histogram["k2"]
    explorer.controls["gap"].value = 2.0
    assert explorer.state.gap == 2.0
    assert k2_exact_in_table(explorer) == pytest.approx(1.0, rel=1e-12)
    assert explorer.artists.histogram["k2"] is patch


def test_other_controls(explorer):
    mean = explorer.state.rows["k1"].monte_carlo.mean
    explorer.controls["resample"].click()
    assert explorer.seed == 3 and explorer.controls["seed"].value == 3
    assert explorer.state.rows["k1"].monte_carlo.mean != mean  # new draws
    explorer.controls["n"].value = 1000
    assert explorer.state.n == 1000
    explorer.controls["k2"].value = False
    assert explorer.estimators == ("k1", "k3") and "k2" not in explorer.table.value
    explorer.controls["sigma_ratio"].value = 1.5
    assert explorer.state.sigma_ratio == 1.5 and "∞" in explorer.table.value


def test_update_moves_the_controls_in_one_step(explorer):
    full = explorer.full_draws
    state = explorer.update(gap=1.05, estimators=["k1", "k2"])
    assert explorer.controls["gap"].value == 1.05 and not explorer.controls["k3"].value
    assert state.estimators == ("k1", "k2")
    assert explorer.full_draws == full + 1  # one step (the toggle re-chose the bins), not one per control
    with pytest.raises(ValueError, match="n must be one of the sample-size slider's values"):
        explorer.update(n=12_345)


def test_display_bundle_and_inline_fallback(explorer):
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "BiasExplorer(gap=1, sigma_ratio=1, n=10000, rng=2, estimators=['k1', 'k2', 'k3'])"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    # Agg here, not ipympl: the picture is a PNG in an Output widget, re-rendered after each step.
    (output,) = explorer._output.outputs
    explorer.controls["gap"].value = 1.5
    (updated,) = explorer._output.outputs
    assert updated["data"]["image/png"] != output["data"]["image/png"]


# --------------------------------------------------------------------------------------------------
# The browser's slider arithmetic
# --------------------------------------------------------------------------------------------------

def test_browser_slider_values():
    # Values observed from ipywidgets' FloatSlider (noUiSlider) in Chromium on [0, 3] with step 0.05.
    assert ex._browser_slider_value(1.25, 0.0, 3.0, 0.05) == 1.2500000000000002
    assert ex._browser_slider_value(0.05 * 12, 0.0, 3.0, 0.05) == 0.6
    assert ex._browser_slider_value(1.05, 0.0, 3.0, 0.05) == 1.05
    assert ex._browser_slider_value(7.0, 0.0, 3.0, 0.05) == 3.0
    assert ex._browser_slider_value(-1.0, 0.0, 3.0, 0.05) == 0.0
    for low, high in ((0.0, 3.0), (0.5, 2.0)):
        for k in range(int(round((high - low) / 0.05)) + 1):
            value = ex._browser_slider_value(low + 0.05 * k, low, high, 0.05)
            assert value == pytest.approx(low + 0.05 * k, abs=1e-12)
            assert ex._browser_slider_value(value, low, high, 0.05) == value  # no ping-pong with the browser


def test_sliders_store_the_browser_value(explorer):
    explorer.controls["gap"].value = 1.25
    assert explorer.controls["gap"].value == 1.2500000000000002
    assert explorer.state.rows["k2"].exact.relative_bias == pytest.approx(1.25**2 / 4, rel=1e-12)


def test_import_klviz_does_not_import_widgets():
    import subprocess
    import sys

    code = "import sys, klviz, klviz.explorer; print('ipywidgets' in sys.modules, 'ipympl' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_k3_inverse_is_accurate_from_tiny_to_huge_values():
    y = np.concatenate([[0.0], np.logspace(-20, 4, 500)])
    lower, upper = ex._k3_inverse(y)
    assert lower[0] == 0.0 and upper[0] == 0.0
    assert np.all(lower[1:] < 0) and np.all(upper[1:] > 0)
    # Reference: e^l - 1 - l in 50-digit arithmetic at the returned points.
    for value, ell in zip(y[1::25], np.concatenate([lower[1::25], upper[1::25]]).reshape(2, -1).T):
        for root in ell:
            with mpmath.workdps(50):
                exact = mpmath.expm1(mpmath.mpf(float(root))) - mpmath.mpf(float(root))
            assert float(exact) == pytest.approx(value, rel=1e-14)
