"""Tests for the control-variate plotting helpers: control_variate_curve and tangent_gap.

References are computed here, independently of klviz.exact: for q = N(0, 1), p = N(mu, 1),
log r = mu z - mu^2/2, so Var(log r) = mu^2, Cov(log r, r) = mu^2 and Var(r) = e^{mu^2} - 1.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from klviz import CategoricalPair, GaussianPair
from klviz.plots import PALETTE, control_variate_curve, tangent_gap


def gaussian_variance(mu, lam):
    """Var(-log r + lam (r - 1)) for unit-variance Gaussians a distance mu apart, in closed form."""
    lam = np.asarray(lam, dtype=np.float64)
    return mu**2 - 2 * lam * mu**2 + lam**2 * math.expm1(mu**2)


def categorical_variance(pair, lam):
    """The same variance by brute-force sums over the vocabulary."""
    q = np.exp(pair.log_q)
    log_ratio = pair.log_p - pair.log_q
    values = -log_ratio[None, :] + np.asarray(lam)[:, None] * np.expm1(log_ratio)[None, :]
    means = values @ q
    return ((values - means[:, None]) ** 2) @ q


# ------------------------------------------------------------------------------------------------
# control_variate_curve
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mu", [0.1, 1.0, 2.0])
def test_curve_matches_closed_form(mu):
    lam = np.linspace(-0.5, 2.0, 26)
    fig, ax = plt.subplots()
    returned = control_variate_curve(GaussianPair(mu_p=mu), lam, ax=ax)
    assert returned is ax
    curve = ax.lines[0]
    np.testing.assert_allclose(curve.get_xdata(), lam)
    np.testing.assert_allclose(curve.get_ydata(), gaussian_variance(mu, lam), rtol=1e-10)


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_curve_marks_k1_k3_and_optimum(mu):
    fig, ax = plt.subplots()
    control_variate_curve(GaussianPair(mu_p=mu), ax=ax)
    k1_dot, k3_dot, optimum = ax.lines[1], ax.lines[2], ax.lines[3]
    assert list(k1_dot.get_xdata()) == [0.0] and list(k3_dot.get_xdata()) == [1.0]
    np.testing.assert_allclose(k1_dot.get_ydata(), [mu**2], rtol=1e-12)
    np.testing.assert_allclose(k3_dot.get_ydata(), [math.expm1(mu**2) - mu**2], rtol=1e-10)
    assert to_hex(k1_dot.get_color()) == PALETTE["k1"].lower()
    assert to_hex(k3_dot.get_color()) == PALETTE["k3"].lower()
    # lambda* = (KL + KL) / chi^2 = mu^2 / (e^{mu^2} - 1) for this pair
    assert optimum.get_xdata()[0] == pytest.approx(mu**2 / math.expm1(mu**2), rel=1e-10)
    assert optimum.get_label().startswith("λ* = ")


def test_curve_minimum_is_at_the_marked_optimum():
    lam = np.linspace(0.0, 2.0, 2001)
    fig, ax = plt.subplots()
    control_variate_curve(GaussianPair(mu_p=1.0, sigma_p=0.8), lam, ax=ax)
    curve, optimum = ax.lines[0], ax.lines[-1]
    assert lam[np.argmin(curve.get_ydata())] == pytest.approx(optimum.get_xdata()[0], abs=1e-3)


def test_curve_categorical_matches_brute_force():
    pair = CategoricalPair(p_logits=[0.3, 0.1, -0.5, 0.8], q_logits=[0.0, 0.5, -1.0, 1.0])
    lam = np.array([-1.0, 0.0, 0.5, 1.0, 3.0])
    fig, ax = plt.subplots()
    control_variate_curve(pair, lam, ax=ax, mark_optimal=False)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), categorical_variance(pair, lam), rtol=1e-9)


def test_curve_default_grid_flags_and_kwargs():
    fig, ax = plt.subplots()
    control_variate_curve(GaussianPair(mu_p=1.0), ax=ax, mark_optimal=False, mark_k1=False, mark_k3=False,
                          color="red", label="mine", linestyle="--")
    assert len(ax.lines) == 1
    curve = ax.lines[0]
    assert curve.get_xdata()[0] == -0.5 and curve.get_xdata()[-1] == 2.0 and len(curve.get_xdata()) == 401
    assert curve.get_color() == "red" and curve.get_label() == "mine" and curve.get_linestyle() == "--"


def test_curve_draws_on_current_axes():
    fig, ax = plt.subplots()
    assert control_variate_curve(GaussianPair(mu_p=0.5), [0.0, 1.0]) is ax


@pytest.mark.parametrize("lam", [[1.0], [[0.0, 1.0], [2.0, 3.0]]])
def test_curve_rejects_bad_grid(lam):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="lam must be a one-dimensional grid"):
        control_variate_curve(GaussianPair(mu_p=1.0), lam, ax=ax)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_curve_rejects_non_finite_lambda(bad):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="lam must be finite"):
        control_variate_curve(GaussianPair(mu_p=1.0), [0.0, bad], ax=ax)
    assert len(ax.lines) == 0


def test_curve_computes_exact_moments_once(monkeypatch):
    """One call for the curve, one for λ* and the k1/k3 dots (optimal_lambda returns Var(k1) and Var(k3))."""
    import klviz.exact

    calls = {"control_variate_variance": 0, "optimal_lambda": 0}

    def counted(name):
        original = getattr(klviz.exact, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(klviz.exact, name, counted(name))
    fig, ax = plt.subplots()
    control_variate_curve(GaussianPair(mu_p=0.7), ax=ax)
    assert calls == {"control_variate_variance": 1, "optimal_lambda": 1}
    assert len(ax.lines) == 4
    control_variate_curve(GaussianPair(mu_p=0.7), ax=ax, mark_k1=False, mark_k3=False, mark_optimal=False)
    assert calls == {"control_variate_variance": 2, "optimal_lambda": 1}


def test_curve_infinite_variance_pair():
    # sigma_p^2 >= 2 sigma_q^2: E_q[r^2] = inf, so every lambda != 0 has infinite variance and lambda* = 0.
    fig, ax = plt.subplots()
    control_variate_curve(GaussianPair(mu_p=0.0, sigma_p=1.5), [0.0, 0.5, 1.0], ax=ax)
    values = ax.lines[0].get_ydata()
    assert np.isfinite(values[0]) and np.all(np.isinf(values[1:]))
    assert ax.lines[-1].get_xdata()[0] == 0.0


# ------------------------------------------------------------------------------------------------
# tangent_gap
# ------------------------------------------------------------------------------------------------

def test_tangent_gap_forward_kl_is_k3():
    fig, ax = plt.subplots()
    r_values = [0.35, 2.6]
    returned = tangent_gap(lambda r: -np.log(r), -1.0, r_values, r_range=(0.1, 3.5), ax=ax)
    assert returned is ax
    curve, tangent = ax.lines[0], ax.lines[1]
    r = curve.get_xdata()
    assert r[0] == pytest.approx(0.1) and r[-1] == pytest.approx(3.5)
    np.testing.assert_allclose(curve.get_ydata(), -np.log(r))
    np.testing.assert_allclose(tangent.get_ydata(), 1.0 - r)
    for segment, value in zip(ax.lines[2:4], r_values):
        assert list(segment.get_xdata()) == [value, value]
        bottom, top = segment.get_ydata()
        assert bottom == pytest.approx(1.0 - value) and top == pytest.approx(-math.log(value))
        assert to_hex(segment.get_color()) == PALETTE["k3"].lower()
    gaps = [value - 1.0 - math.log(value) for value in r_values]  # k3 = (r - 1) - log r
    assert [t.get_text() for t in ax.texts] == [f"k3 = {g:.3g}" for g in gaps]
    assert len(ax.collections) == len(r_values)  # one shaded bar per gap


def test_tangent_gap_reverse_kl_label_colour_and_kwargs():
    fig, ax = plt.subplots()
    tangent_gap(lambda r: r * np.log(r), 1.0, 2.0, ax=ax, label="k3_pq", color=PALETTE["k3_pq"],
                linestyle=":")
    assert ax.lines[0].get_linestyle() == ":"
    segment = ax.lines[2]
    assert to_hex(segment.get_color()) == PALETTE["k3_pq"].lower()
    assert ax.texts[0].get_text() == f"k3_pq = {2 * math.log(2) - 1:.3g}"
    assert "slope f'(1) = 1" in ax.lines[1].get_label()


def test_tangent_gaps_are_never_negative_for_convex_f():
    fig, ax = plt.subplots()
    r_values = np.geomspace(0.05, 20, 15)
    tangent_gap(lambda r: (np.sqrt(r) - 1.0) ** 2, 0.0, r_values, r_range=(0.01, 25), ax=ax)
    for segment in ax.lines[2:2 + r_values.size]:
        bottom, top = segment.get_ydata()
        assert top >= bottom


def test_tangent_gap_curve_label():
    fig, ax = plt.subplots()
    tangent_gap(lambda r: -np.log(r), -1.0, [2.0], ax=ax, label="k3", curve_label="f(r) = -log r")
    assert ax.lines[0].get_label() == "f(r) = -log r"
    assert ax.texts[0].get_text().startswith("k3 = ")  # label still names the gaps
    tangent_gap(lambda r: -np.log(r), -1.0, [2.0], ax=ax)
    assert ax.lines[4].get_label() == "f(r)"  # the default


def test_tangent_gap_draws_on_current_axes():
    fig, ax = plt.subplots()
    assert tangent_gap(lambda r: -np.log(r), -1.0, [2.0]) is ax


@pytest.mark.parametrize("r_range", [(0.0, 2.0), (-1.0, 2.0), (2.0, 1.0)])
def test_tangent_gap_rejects_bad_range(r_range):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="r_range must be"):
        tangent_gap(lambda r: -np.log(r), -1.0, [0.5], r_range=r_range, ax=ax)


@pytest.mark.parametrize("r_values", [[0.0], [-1.0, 2.0], [np.nan]])
def test_tangent_gap_rejects_non_positive_r(r_values):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="r_values must be positive"):
        tangent_gap(lambda r: -np.log(r), -1.0, r_values, ax=ax)
