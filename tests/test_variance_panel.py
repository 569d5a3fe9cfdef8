r"""Tests for klviz.variance_panel (notebook 07's slider panel): one figure updated in place, the numbers on
its artists, drawing under concurrent callers, the static stand-in.

References are computed differently from the code under test: the probabilities from softmax written out
here, the trace covariances by enumerating the per-sample gradients of every token
(klviz.gradients.per_sample_gradient) weighted by the sampling distribution, and pictures from a fresh
panel drawn from scratch.
"""

import base64

import numpy as np
import pytest

import klviz.gradients as kg
from klviz.variance_panel import GradientVarianceExplorer
from tests.test_interactive import ObservedLock, browser_picture, connect_browser, race

V = 8
_rng = np.random.default_rng(11)
REF = _rng.normal(0.0, 1.0, V)
DIRECTION = _rng.normal(0.0, 1.0, V)
DIRECTION -= DIRECTION.mean()
LOG_P = REF - np.logaddexp.reduce(REF)
COMBOS = [(k, u) for u in ("loss", "reward", "ratio_loss", "stopgrad_ratio_loss", "ratio_reward")
          for k in ("k1", "k2", "k3")]


def policies(s):
    return LOG_P + s * DIRECTION, LOG_P + 0.75 * s * DIRECTION


def moments_at(s, estimator, use):
    policy, old = policies(s)
    kwargs = {"behaviour_logits": old} if kg.USES[use].off_policy else {}
    return kg.gradient_moments(policy, REF, estimator, use, **kwargs)


def softmax(logits):
    weights = np.exp(np.asarray(logits) - np.max(logits))
    return weights / weights.sum()


def trace_by_enumeration(s, estimator, use):
    policy, old = policies(s)
    off = kg.USES[use].off_policy
    kwargs = {"behaviour_logits": old} if off else {}
    sampling = softmax(old if off else policy)
    gradients = kg.per_sample_gradient(np.arange(V), policy, REF, estimator, use, **kwargs)
    mean = sampling @ gradients
    return float(sampling @ np.sum((gradients - mean) ** 2, axis=1))


def make(**kwargs):
    return GradientVarianceExplorer(policies, REF, COMBOS, moments_at, **kwargs)


@pytest.fixture
def panel():
    panel = make(live=False)
    yield panel
    panel.close()


def test_artists_show_the_exact_numbers_and_are_updated_in_place(panel):
    bars, variance_bars = panel.distribution_bars["q"], panel.variance_bars
    for s in (0.0, 0.35, 1.0, 2.5):
        panel.controls["separation"].value = s
        assert panel.distribution_bars["q"] is bars and panel.variance_bars is variance_bars
        policy, old = policies(s)
        for name, logits in (("p", REF), ("μ", old), ("q", policy)):
            heights = [patch.get_height() for patch in panel.distribution_bars[name]]
            np.testing.assert_allclose(heights, softmax(logits), rtol=1e-12)
        for patch, combo in zip(panel.variance_bars, COMBOS):
            assert patch.get_width() == pytest.approx(max(trace_by_enumeration(s, *combo), 1e-6), rel=1e-9)
        assert f"s = {s:.2f}" in panel.title.get_text()
        assert f"KL(q‖p) = {kg.kl_qp(policy, REF):.3f}" in panel.title.get_text()
    assert len(panel.figure.axes) == 2
    assert panel.blitted.full_draws == 1  # every step was a blit


def test_a_swept_panel_has_the_pixels_of_a_fresh_one(panel):
    for s in np.arange(0.0, 3.0001, 0.25):
        panel.update(float(s))
    fresh = make(separation=panel.separation, live=False)
    fresh.blitted.render()
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())


def test_steps_from_two_threads_leave_the_right_picture():
    panel = make(live=True)
    frames = connect_browser(panel.figure.canvas)
    lock = ObservedLock()
    slider = panel.controls["separation"]
    race(panel, lambda: setattr(slider, "value", 2.0), lambda: setattr(slider, "value", 0.4), "blit", lock)
    assert lock.contended.is_set()
    fresh = make(separation=slider.value, live=False)
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())
    np.testing.assert_array_equal(browser_picture(frames), fresh.blitted.pixels())
    panel.close()


def test_display_bundle_carries_the_static_picture(panel):
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == "GradientVarianceExplorer(separation=1, combos=15)"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == panel.to_png()
    live = make(live=True)
    bundle = live._repr_mimebundle_()
    assert live.figure.canvas._data_url == "data:image/png;base64," + bundle["image/png"]
    live.close()


def test_validation():
    with pytest.raises(ValueError, match="separation must be finite and in"):
        make(separation=4.0, live=False)
    with pytest.raises(TypeError, match="separation must be a real number"):
        make(separation="1", live=False)
    with pytest.raises(TypeError, match="policies and moments must be callables"):
        GradientVarianceExplorer(None, REF, COMBOS, moments_at, live=False)
    with pytest.raises(ValueError, match="combos must name at least one"):
        GradientVarianceExplorer(policies, REF, [], moments_at, live=False)
    with pytest.raises(ValueError, match="separation_range must be"):
        make(separation_range=(2.0, 1.0), live=False)
