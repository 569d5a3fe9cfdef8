r"""Tests for klviz.explorer.figure: artists built once and updated in place, layered blitting and region
redraws that give the same pixels as a fresh figure, the layout (hidden estimators, legends off the data,
no clipped markers, no "nan" in the title).

Pixel references are fresh figures drawn from scratch at the same settings (and the same histogram view);
numbers on the artists are checked against closed forms (k2's bias μ²/4, k1's stdev/KL 2/μ) and against
klviz.explorer.exact_curves, which tests/test_explorer_state.py checks against mpmath and quadrature.
"""

import matplotlib
import numpy as np
import pytest

from klviz.explorer import ESTIMATOR_NAMES, ExplorerFigure, exact_curves, standard_draws, std_crossings
from klviz.explorer import figure as fig_module
from klviz.explorer import state as state_module

N = 20_000


@pytest.fixture
def view():
    figure = ExplorerFigure(n=N, rng=1, live=False)
    yield figure
    figure.close()


def fresh_pixels(view):
    """The same settings and histogram view, drawn from scratch in a new figure."""
    fresh = ExplorerFigure(view.gap, view.sigma_ratio, view.n, rng=view.seed, estimators=view.estimators, live=False)
    fresh.set_view(view.state.view)
    state = fresh.update()
    assert state.view == view.state.view and not state.rescaled
    fresh.render(full=True)  # the limits were set from outside: draw everything afresh
    return fresh.blitted.pixels()


def test_a_step_updates_the_same_artists_in_place(view):
    artists = view.artists
    handles = [artists.histogram["k2"], artists.mean["k2"], artists.true_kl["k1"], artists.live["k3"],
               artists.exact_point, artists.gap_line, artists.title["gap"]]
    before = artists.histogram["k2"].get_data().values.copy()
    state = view.update(gap=1.1)
    assert view.artists is artists
    assert [artists.histogram["k2"], artists.mean["k2"], artists.true_kl["k1"], artists.live["k3"],
            artists.exact_point, artists.gap_line, artists.title["gap"]] == handles
    assert not np.array_equal(artists.histogram["k2"].get_data().values, before)
    np.testing.assert_array_equal(artists.histogram["k2"].get_data().edges, state.edges)
    assert artists.mean["k2"].get_xdata()[0] == state.rows["k2"].monte_carlo.mean
    assert artists.true_kl["k1"].get_xdata()[0] == pytest.approx(1.1**2 / 2)
    assert artists.gap_line.get_xdata()[0] == 1.1 and artists.std_gap_line.get_xdata()[0] == 1.1
    assert artists.exact_point.get_ydata()[0] == pytest.approx(1.1**2 / 4)
    assert "μ = 1.10:" in artists.title_text() and "KL[q, p] = 0.605," in artists.title_text()
    assert len(view.figure.axes) == 5


def test_small_steps_blit_and_rescales_redraw_one_region(view):
    full, regions = view.full_draws, view.blitted.region_draws
    view.update(gap=1.05)
    view.update(gap=1.1)
    assert (view.full_draws, view.blitted.region_draws) == (full, regions)  # saved layers + changed artists
    view.update(gap=3.0)  # the bins were re-chosen: the histograms' region is redrawn, not the figure
    assert (view.full_draws, view.blitted.region_draws) == (full, regions + 1)
    view.update(sigma_ratio=1.05)  # new curves and points: the slow layer only (the bias range holds)
    assert (view.full_draws, view.blitted.region_draws) == (full, regions + 1)
    view.update(sigma_ratio=0.5)  # k2's bias reaches 12: the gap panels change range
    assert view.blitted.region_draws == regions + 2 and view.full_draws == full


@pytest.mark.parametrize("moves", [
    [{"gap": g} for g in (1.05, 1.1, 1.15, 1.2)],
    [{"gap": 3.0}, {"gap": 0.3}, {"sigma_ratio": 0.5}, {"gap": 1.7}],
    [{"estimators": ["k1", "k3"]}, {"sigma_ratio": 1.45}, {"gap": 2.5}, {"estimators": ["k2"]}],
    [{"n": 1000}, {"rng": 9}, {"sigma_ratio": 1.3, "gap": 0.0}, {"estimators": ESTIMATOR_NAMES}],
])
def test_every_path_gives_the_pixels_of_a_fresh_figure(view, moves):
    for settings in moves:
        view.update(**settings)
    np.testing.assert_array_equal(view.blitted.pixels(), fresh_pixels(view))


def test_a_foreign_draw_invalidates_the_background(view):
    view.figure.canvas.draw()  # e.g. some code drawing the figure directly
    full = view.full_draws
    view.update(gap=1.05)
    assert view.full_draws == full + 1
    np.testing.assert_array_equal(view.blitted.pixels(), fresh_pixels(view))


def test_unticked_estimators_give_their_room_to_the_others(view):
    artists = view.artists
    full_height = view.histogram_axes["k1"].get_position().height
    state = view.update(estimators=["k1", "k3"])
    assert state.estimators == ("k1", "k3")
    assert not view.histogram_axes["k2"].get_visible()
    for group in (artists.histogram, artists.mean, artists.true_kl, artists.live, artists.points, artists.errorbars,
                  artists.std_curves, artists.std_points):
        assert not group["k2"].get_visible()
        assert group["k1"].get_visible() and group["k3"].get_visible()
    assert not artists.exact_curve.get_visible() and not artists.exact_point.get_visible()
    k1, k3 = (view.histogram_axes[name].get_position() for name in ("k1", "k3"))
    assert k1.height == pytest.approx(k3.height) and k1.height > 1.4 * full_height  # two panels fill the column
    assert k3.y1 < k1.y0  # stacked, k1 on top
    assert view.histogram_axes["k3"].xaxis.get_ticklabels()[0].get_visible()  # the bottom panel has the labels
    view.update(estimators=[])
    assert artists.empty_note.get_visible() and not any(ax.get_visible() for ax in view.histogram_axes.values())
    view.update(estimators=ESTIMATOR_NAMES)
    assert artists.histogram["k2"].get_visible() and artists.exact_curve.get_visible()
    assert not artists.empty_note.get_visible()


def test_title_says_undefined_instead_of_nan_at_p_equals_q(view):
    view.update(gap=0.0)
    title = view.artists.title_text()
    assert "nan" not in title.lower() and "k2 bias/true = undefined (KL = 0)" in title


def test_gap_panels_come_from_the_same_draws_and_the_exact_curves(view):
    x, y = view.artists.points["k1"].get_data()
    z_bar = standard_draws(N, rng=1).z.mean()
    gaps = np.array(state_module.MC_GAPS)
    np.testing.assert_allclose(x, gaps + fig_module._DODGE["k1"])
    np.testing.assert_allclose(y, -2 * z_bar / gaps, rtol=1e-9, atol=1e-14)
    grid = state_module.GAP_GRID
    np.testing.assert_allclose(view.artists.exact_curve.get_ydata()[1:], grid[1:] ** 2 / 4, rtol=1e-12)
    np.testing.assert_allclose(view.artists.std_curves["k1"].get_ydata()[1:], 2 / grid[1:], rtol=1e-12)
    np.testing.assert_allclose(view.artists.std_curves["k3"].get_ydata(), exact_curves(grid).relative_std["k3"])
    (crossing,) = std_crossings(1.0)
    assert view.artists.crossing_line.get_xdata()[0] == crossing
    assert view.artists.std_title.get_text() == "k3 above k1 for μ > 1.12"
    view.update(sigma_ratio=1.5)
    assert not view.artists.crossing_line.get_visible() and view.artists.std_title.get_text() == "Var k3 = ∞ (σp/σq ≥ √2)"
    renderer = view.figure.canvas.get_renderer()
    view.figure.canvas.draw()
    title = view.std_axes._left_title  # set_title(loc="left")
    assert title.get_text() == "stdev / KL vs gap"
    note, title = view.artists.std_title.get_window_extent(renderer), title.get_window_extent(renderer)
    assert title.x1 < note.x0  # the note does not run into the panel's title
    view.update(estimators=["k1", "k2"])  # the note compares k3 with k1: not shown without k3
    assert view.artists.std_title.get_text() == "" and not view.artists.crossing_line.get_visible()
    assert np.all(np.isnan(view.artists.std_curves["k3"].get_ydata()))


def test_markers_at_both_ends_of_the_gap_range_are_not_clipped(view):
    for gap in (0.0, 3.0):
        view.update(gap=gap, sigma_ratio=1.2)
        renderer = view.figure.canvas.get_renderer()
        axes_box = view.bias_axes.get_window_extent(renderer)
        for name in ESTIMATOR_NAMES:
            for line in (view.artists.live[name], view.artists.points[name]):
                box = line.get_window_extent(renderer)
                if box.width > 0:
                    assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1, (name, gap)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5, 2.0])
def test_legends_are_off_the_data(view, sigma):
    view.update(sigma_ratio=sigma, gap=3.0)
    view.figure.canvas.draw()
    renderer = view.figure.canvas.get_renderer()
    legend_box = view.figure.legends[0].get_window_extent(renderer)
    for ax in [view.bias_axes, view.std_axes, *view.histogram_axes.values()]:
        assert not legend_box.overlaps(ax.get_window_extent(renderer))
    for ax in view.histogram_axes.values():
        if ax.get_legend() is not None:
            assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_regions_contain_everything_their_artists_draw(view):
    for estimators in (ESTIMATOR_NAMES, ["k1", "k3"], ["k2"]):
        view.update(estimators=estimators, gap=2.9, sigma_ratio=0.5)
        view.figure.canvas.draw()
        renderer = view.figure.canvas.get_renderer()
        for name, (artists, bbox, _key) in view.blitted.regions.items():
            x0, y0, x1, y1 = bbox()
            for artist in artists():
                if artist.get_visible():
                    box = artist.get_tightbbox(renderer)
                    assert x0 <= box.x0 and box.x1 <= x1 and y0 <= box.y0 and box.y1 <= y1, (name, artist)


def test_title_numbers_never_reach_the_next_label(view):
    renderer = view.figure.canvas.get_renderer()
    for gap, sigma, n, seed in ((0.0, 1.0, 1000, 0), (0.05, 1.0, 1000, 2**31 - 1), (3.0, 0.5, 1000, 7)):
        view.update(gap=gap, sigma_ratio=sigma, n=n, rng=seed)
        labels = view.artists.labels
        for (label, value), (next_label, _next_value) in zip(labels, labels[1:]):
            if next_label.get_position()[1] != label.get_position()[1]:
                continue  # the next line
            assert label.get_window_extent(renderer).x1 < value.get_window_extent(renderer).x0
            assert value.get_window_extent(renderer).x1 < next_label.get_window_extent(renderer).x0, value.get_text()
    legend = view.figure.legends[0].get_window_extent(renderer)
    for label, value in labels:
        for text in (label, value):
            assert not text.get_window_extent(renderer).overlaps(legend), text.get_text()


def test_text_is_at_least_9_points(view):
    view.figure.canvas.draw()
    for text in view.figure.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text():
            assert text.get_fontsize() >= 9, text.get_text()


def test_no_blit_variant_draws_every_step():
    figure = ExplorerFigure(n=1000, rng=0, blit=False, live=False)
    full = figure.full_draws
    figure.update(gap=1.05)
    assert figure.full_draws == full + 1
    figure.close()


def test_static_png_and_validation():
    figure = ExplorerFigure(n=1000, rng=0, figure=matplotlib.figure.Figure(figsize=ExplorerFigure.figsize))
    pixels = figure.blitted.pixels()
    png = figure.to_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == figure.to_png()  # reproducible bytes
    figure.update(gap=1.05)  # savefig drew into the buffer: the next blit must still be right
    figure.update(gap=1.0)
    np.testing.assert_array_equal(figure.blitted.pixels(), pixels)
    with pytest.raises(ValueError, match="gap must be finite and >= 0 and <= 3"):
        ExplorerFigure(gap=3.5, n=1000)
    with pytest.raises(ValueError, match="sigma_ratio must be finite and >= 0.5 and <= 2"):
        ExplorerFigure(sigma_ratio=0.1, n=1000)
    with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy.random.Generator"):
        ExplorerFigure(rng="seed", n=1000)
    with pytest.raises(ValueError, match="rng must be a non-negative seed"):
        ExplorerFigure(rng=-1, n=1000)


def test_rng_accepts_a_generator():
    figure = ExplorerFigure(n=1000, rng=np.random.default_rng(5), live=False)
    assert figure.seed == int(np.random.default_rng(5).integers(2**31))
    figure.close()


def test_the_figure_leaves_pyplot_alone():
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    before = plt.get_fignums()
    figure = ExplorerFigure(n=1000, rng=0)
    assert plt.get_fignums() == before and matplotlib.get_backend() == backend
    figure.close()
