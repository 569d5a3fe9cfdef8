r"""Tests for klviz.explorer.widgets: the controls run steps, update() moves them in one step, the display
bundle carries a static PNG, and the PNG fallback re-renders (no browser; tests/browser drives a real one,
tests/test_interactive.py drives two threads at once)."""

import re

import pytest

from klviz.explorer import ESTIMATOR_NAMES, BiasExplorer


@pytest.fixture
def explorer():
    widget = BiasExplorer(n=10_000, rng=2, live=False)
    yield widget
    widget.close()


def k2_exact_in_table(explorer):
    match = re.search(r'data-estimator="k2" data-quantity="exact-relative-bias" data-value="([^"]+)"',
                      explorer.table.value)
    return float(match.group(1))


def test_the_widget_has_a_figure(explorer):
    assert explorer.panel.figure is explorer.figure and explorer.panel.state is explorer.state
    assert not hasattr(explorer, "_build")  # composition, not inheritance


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
    steps = len(explorer.blitted.render_times)
    state = explorer.update(gap=1.05, estimators=["k1", "k2"])
    assert explorer.controls["gap"].value == 1.05 and not explorer.controls["k3"].value
    assert state.estimators == ("k1", "k2")
    assert len(explorer.blitted.render_times) == steps + 1  # one step, not one per control
    with pytest.raises(ValueError, match="n must be one of the sample-size slider's values"):
        explorer.update(n=12_345)


def test_display_bundle_has_a_static_picture_and_the_fallback_rerenders(explorer):
    import base64

    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "BiasExplorer(gap=1, sigma_ratio=1, n=10000, rng=2, estimators=['k1', 'k2', 'k3'])"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == explorer.to_png()  # the state at display time
    # Agg here, not ipympl: the picture is a PNG in an Output widget, re-rendered after each step.
    (output,) = explorer._output.outputs
    explorer.controls["gap"].value = 1.5
    (updated,) = explorer._output.outputs
    assert updated["data"]["image/png"] != output["data"]["image/png"]


def test_sliders_store_the_browser_value(explorer):
    explorer.controls["gap"].value = 1.25
    assert explorer.controls["gap"].value == 1.2500000000000002
    assert explorer.state.rows["k2"].exact.relative_bias == pytest.approx(1.25**2 / 4, rel=1e-12)


def test_live_canvas_sliders_update_continuously():
    explorer = BiasExplorer(n=1000, rng=0, live=True)
    try:
        assert type(explorer.figure.canvas).__name__ == "LiveCanvas"
        assert all(explorer.controls[key].continuous_update for key in ("gap", "sigma_ratio", "n"))
        assert explorer.widget.children[2] is explorer.figure.canvas
        explorer.controls["k1"].value = False
        assert explorer.estimators == ("k2", "k3")
    finally:
        explorer.close()
    fallback = BiasExplorer(n=1000, rng=0, live=False)
    assert not any(fallback.controls[key].continuous_update for key in ("gap", "sigma_ratio", "n"))
    fallback.close()


def test_toggles_are_checkboxes_for_every_estimator(explorer):
    assert [explorer.controls[name].description for name in ESTIMATOR_NAMES] == list(ESTIMATOR_NAMES)


def test_import_klviz_does_not_import_widgets():
    import subprocess
    import sys

    code = ("import sys, klviz, klviz.explorer, klviz.variance_panel; "
            "print('ipywidgets' in sys.modules, 'ipympl' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]
