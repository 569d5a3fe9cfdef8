r"""Tests for klviz.sequence_panel (notebook 08's gap slider): the lines carry exact relative errors, the figure is
updated in place, drawing is right under concurrent callers, the static stand-in is the picture.

References are computed differently from the code under test: expected gradients by enumerating every sequence
(tests.gradients.test_sequences.brute_force and step_kl_brute_force), the KL gradients by central differences
of the exact sequence KLs, and pictures from a fresh panel drawn from scratch.
"""

import base64

import numpy as np
import pytest

from klviz import MarkovChainPair
from klviz.sequence_panel import SequenceGradientPanel, gradient_errors
from tests.gradients.test_sequences import brute_force, finite_differences, step_kl_brute_force
from tests.test_interactive import ObservedLock, browser_picture, connect_browser, race

V = 3
_rng = np.random.default_rng(21)
Q0, QT = _rng.normal(size=V), _rng.normal(size=(V, V))
E0, ET = _rng.normal(size=V), _rng.normal(size=(V, V))
LENGTHS = (1, 2, 3)
COMBOS = [("k1", "reward_to_go"), ("k2", "token_loss"), ("k3", "token_loss"), ("k3", "sequence_loss"),
          ("step_kl", "step_kl_loss")]


def pair_at(gap):
    return MarkovChainPair(Q0 + gap * E0, QT + gap * ET, Q0, QT, LENGTHS[-1])


def errors_by_enumeration(pair):
    targets = []
    for kl in (lambda pr: pr.kl_qp(), lambda pr: pr.kl_pq()):
        initial, transition = finite_differences(pair, kl)
        targets.append(np.concatenate([initial, transition.ravel()]))
    out = []
    for estimator, use in COMBOS:
        if estimator == "step_kl":
            cases = step_kl_brute_force(pair, use)
            gradient = np.concatenate([sum(w * g0 for _, w, g0, _ in cases), sum(w * gT for _, w, _, gT in cases).ravel()])
        else:
            initial, transition = brute_force(pair, estimator, use)
            gradient = np.concatenate([initial, transition.ravel()])
        out.append([np.linalg.norm(gradient - t) / np.linalg.norm(t) for t in targets])
    return np.array(out)


def make(**kwargs):
    return SequenceGradientPanel(pair_at, COMBOS, LENGTHS, **kwargs)


@pytest.fixture
def panel():
    panel = make(gap=0.5, live=False)
    yield panel
    panel.close()


def test_gradient_errors_match_enumeration():
    pair = pair_at(0.8)
    np.testing.assert_allclose(gradient_errors(pair, COMBOS), errors_by_enumeration(pair), rtol=0, atol=1e-7)


def test_lines_show_the_exact_errors_and_are_updated_in_place(panel):
    lines = dict(panel.lines)
    for gap in (0.3, 1.0, 1.5):
        panel.controls["gap"].value = gap
        assert panel.lines == lines  # the same artists, new data
        for k, T in enumerate(LENGTHS):
            reference = errors_by_enumeration(pair_at(gap).with_length(T))
            for i, (estimator, use) in enumerate(COMBOS):
                for j, name in enumerate(("kl_qp", "kl_pq")):
                    assert panel.lines[name, estimator, use].get_ydata()[k] == pytest.approx(reference[i, j],
                                                                                        abs=1e-7)
        longest = pair_at(gap)
        assert f"gap δ = {gap:.2f}" in panel.title.get_text()
        assert f"KL(q‖p) = {longest.kl_qp():.3f}" in panel.title.get_text()
    # what the lines say: k1 with returns-to-go follows the reverse KL, k3 on the sequence the forward one,
    # k2 per token neither once T > 1
    errors = panel.errors
    assert np.all(errors[:, 0, 0] < 1e-12) and np.all(errors[:, 3, 1] < 1e-12)
    assert np.all(errors[1:, 1, :] > 1e-3)
    assert len(panel.figure.axes) == 2
    assert panel.blitted.full_draws == 1  # every step was a blit


def test_a_swept_panel_has_the_pixels_of_a_fresh_one(panel):
    for gap in np.arange(0.1, 2.0001, 0.3):
        panel.update(float(gap))
    fresh = make(gap=panel.gap, live=False)
    fresh.blitted.render()
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())


def test_steps_from_two_threads_leave_the_right_picture():
    panel = make(gap=0.5, live=True)
    frames = connect_browser(panel.figure.canvas)
    lock = ObservedLock()
    slider = panel.controls["gap"]
    race(panel, lambda: setattr(slider, "value", 1.5), lambda: setattr(slider, "value", 0.2), "blit", lock)
    assert lock.contended.is_set()
    fresh = make(gap=slider.value, live=False)
    np.testing.assert_array_equal(panel.blitted.pixels(), fresh.blitted.pixels())
    np.testing.assert_array_equal(browser_picture(frames), fresh.blitted.pixels())
    panel.close()


def test_display_bundle_carries_the_static_picture(panel):
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == "SequenceGradientPanel(gap=0.5, combos=5, lengths=3)"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == panel.to_png()


def test_validation():
    with pytest.raises(ValueError, match="gap must be finite and in"):
        make(gap=3.0, live=False)
    with pytest.raises(TypeError, match="gap must be a real number"):
        make(gap="1", live=False)
    with pytest.raises(TypeError, match="pair_at must be a callable"):
        SequenceGradientPanel(None, COMBOS, LENGTHS, live=False)
    with pytest.raises(ValueError, match="combos must name at least one"):
        SequenceGradientPanel(pair_at, [], LENGTHS, live=False)
    with pytest.raises(ValueError, match="lengths must be increasing positive integers"):
        SequenceGradientPanel(pair_at, COMBOS, [2, 1], live=False)
    with pytest.raises(ValueError, match="gap_range must be"):
        make(gap_range=(0.0, 1.0), live=False)
