r"""Tests for klviz.stationary_panel (notebook 09's β slider): the lines carry the stationary policies, derived here
independently, the figure is updated in place, drawing is right under concurrent callers, the static stand-in is the
picture.

References: the exponential tilt p·e^{R/β} written out here, the rational k3-loss solution β p/(β − R + λ) by root
finding in λ (tests/trainers/test_stationary.py), the KLs summed here, pictures from a fresh panel drawn from scratch.
"""

import base64

import numpy as np
import pytest

from klviz.stationary_panel import StationaryPolicyPanel, stationary_solutions
from tests.test_interactive import ObservedLock, browser_picture, connect_browser, race
from tests.trainers.test_stationary import k3_loss_solution, softmax, tilt

REF = np.array([0.0, 0.0, 0.0])
REWARD = np.array([0.0, 0.0, -20.0])       # verl's k3 clamp removes the solution at β = 1 (test_stationary)
RECIPES = ["verl:kl-reward", "trl:grpo-k3", "verl:low_var_kl-loss"]
CURVE_BETAS = [0.8, 1.0, 2.0, 4.0]


def kl_qp(q, ref):
    p = softmax(ref)
    return float(np.sum(q * (np.log(q) - np.log(p))))


def make(**kwargs):
    kwargs.setdefault("beta", 1.0)
    return StationaryPolicyPanel(RECIPES, REF, REWARD, beta_range=(0.5, 4.0), curve_betas=CURVE_BETAS, **kwargs)


@pytest.fixture
def panel():
    panel = make(live=False)
    yield panel
    panel.close()


def test_lines_show_the_stationary_policies_and_are_updated_in_place(panel):
    lines, markers = dict(panel.policy_lines), dict(panel.markers)
    order = np.argsort(REWARD, kind="stable")
    for beta in (1.0, 2.0, 3.5):
        panel.controls["beta"].value = beta
        assert panel.policy_lines == lines and panel.markers == markers
        expected = {"verl:kl-reward": tilt(REF, REWARD, beta), "trl:grpo-k3": k3_loss_solution(REF, REWARD, beta)}
        for name, q in expected.items():
            np.testing.assert_allclose(panel.policy_lines[name].get_ydata(), np.maximum(q[order], 1e-6), rtol=1e-7)
            assert panel.markers[name].get_ydata()[0] == pytest.approx(kl_qp(q, REF), rel=1e-7)
        assert f"β = {beta:.2f}" in panel.title.get_text()
    # at β = 1 the clamp of verl's low_var_kl leaves no stationary policy: hidden and named in the title
    panel.update(1.0)
    assert np.isnan(panel.policy_lines["verl:low_var_kl-loss"].get_ydata()).all()
    assert "no stationary policy for verl:low_var_kl-loss" in panel.title.get_text()
    assert panel.solutions[2] is None and panel.solutions[0] is not None
    assert len(panel.figure.axes) == 2
    assert panel.blitted.full_draws == 1  # every step was a blit


def test_the_curves_are_the_kls_of_the_stationary_policies(panel):
    curve = panel.axes[1].lines[0]   # verl:kl-reward, drawn first
    np.testing.assert_allclose(curve.get_xdata(), CURVE_BETAS)
    np.testing.assert_allclose(curve.get_ydata(), [kl_qp(tilt(REF, REWARD, b), REF) for b in CURVE_BETAS], rtol=1e-7)
    rational = panel.axes[1].lines[2]
    np.testing.assert_allclose(rational.get_ydata(), [kl_qp(k3_loss_solution(REF, REWARD, b), REF)
                                                      for b in CURVE_BETAS], rtol=1e-7)


def test_stationary_solutions_mark_missing_ones_none():
    solutions = stationary_solutions(RECIPES, REF, REWARD, 1.0)
    assert solutions[2] is None
    np.testing.assert_allclose(solutions[0].probs, tilt(REF, REWARD, 1.0), rtol=1e-9)


def test_a_swept_panel_has_the_pixels_of_a_fresh_one(panel):
    for beta in (0.5, 1.5, 2.5, 4.0, 1.25):
        panel.update(beta)
    fresh = make(beta=panel.beta, live=False)
    fresh.blitted.render()
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())
    fresh.close()


def test_steps_from_two_threads_leave_the_right_picture():
    panel = make(live=True)
    frames = connect_browser(panel.figure.canvas)
    lock = ObservedLock()
    slider = panel.controls["beta"]
    race(panel, lambda: setattr(slider, "value", 3.0), lambda: setattr(slider, "value", 0.75), "blit", lock)
    assert lock.contended.is_set()
    fresh = make(beta=slider.value, live=False)
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())
    np.testing.assert_array_equal(browser_picture(frames), fresh.blitted.pixels())
    panel.close()
    fresh.close()


def test_display_bundle_carries_the_static_picture(panel):
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == "StationaryPolicyPanel(beta=1, recipes=3)"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == panel.to_png()


def test_validation():
    with pytest.raises(ValueError, match="beta must be finite and in"):
        make(beta=9.0, live=False)
    with pytest.raises(TypeError, match="beta must be a real number"):
        make(beta="1", live=False)
    with pytest.raises(ValueError, match="recipes must name 1 to 6 recipes"):
        StationaryPolicyPanel([], REF, REWARD, live=False)
    with pytest.raises(ValueError, match="p_logits and rewards must be one-dimensional"):
        StationaryPolicyPanel(RECIPES, REF, REWARD[:2], live=False)
    with pytest.raises(ValueError, match="beta_range must be"):
        StationaryPolicyPanel(RECIPES, REF, REWARD, beta_range=(0.0, 1.0), live=False)
    with pytest.raises(ValueError, match="recipe must be one of"):
        StationaryPolicyPanel(["verl:k9"], REF, REWARD, live=False)
