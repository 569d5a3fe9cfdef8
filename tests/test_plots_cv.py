"""Tests for the control-variate plotting helpers: control_variate_curve, tangent_gap, k_lambda_family,
optimal_lambda_curve and variance_ratio_curve.

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


# ------------------------------------------------------------------------------------------------
# k_lambda_family, optimal_lambda_curve, variance_ratio_curve
# ------------------------------------------------------------------------------------------------

def test_k_lambda_family_curves_and_shading():
    from klviz.plots import k_lambda_family

    fig, ax = plt.subplots()
    lams = [-0.5, 0.0, 0.5, 1.0, 1.5]
    returned = k_lambda_family(lams, r_range=(0.2, 3.0), ax=ax)
    assert returned is ax
    curves = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    assert list(curves) == ["k_lambda(-0.5)", "k_lambda(0)", "k_lambda(0.5)", "k_lambda(1)", "k_lambda(1.5)"]
    for lam in lams:
        line = curves[f"k_lambda({lam:g})"]
        r = line.get_xdata()
        np.testing.assert_allclose(line.get_ydata(), -np.log(r) + lam * (r - 1), rtol=1e-12, atol=1e-15)
    assert to_hex(curves["k_lambda(0)"].get_color()) == PALETTE["k1"].lower()
    assert to_hex(curves["k_lambda(1)"].get_color()) == PALETTE["k3"].lower()
    assert to_hex(curves["k_lambda(0.5)"].get_color()) == PALETTE["k_lambda"].lower()
    assert curves["k_lambda(0.5)"].get_linestyle() == "--" and curves["k_lambda(1.5)"].get_linestyle() == ":"
    assert curves["k_lambda(0)"].get_label() == "λ = 0 (k1)" and curves["k_lambda(1)"].get_label() == "λ = 1 (k3)"
    # every member but k3 is negative somewhere in (0.2, 3): four shaded regions
    assert len(ax.collections) == 4
    (zero,) = [line for line in ax.lines if not line.get_gid()]
    assert list(zero.get_ydata()) == [0, 0]


def test_k_lambda_family_kwargs_and_errors():
    from klviz.plots import k_lambda_family

    fig, ax = plt.subplots()
    k_lambda_family([1.0], ax=ax, linewidth=4)
    assert ax.lines[0].get_linewidth() == 4 and len(ax.collections) == 0
    with pytest.raises(ValueError, match="r_range must be"):
        k_lambda_family([0.5], r_range=(0.0, 1.0), ax=ax)
    with pytest.raises(ValueError, match="lams must be finite"):
        k_lambda_family([0.5, np.inf], ax=ax)
    assert len(ax.lines) == 2  # the one call that succeeded: its curve and the zero line


def test_optimal_lambda_curve_matches_closed_form():
    from klviz.plots import optimal_lambda_curve

    gaps = np.geomspace(0.01, 3.0, 15)
    fig, ax = plt.subplots()
    returned = optimal_lambda_curve(gaps, ax=ax)
    assert returned is ax
    curve, small_gap, one = ax.lines
    np.testing.assert_allclose(curve.get_xdata(), gaps)
    np.testing.assert_allclose(curve.get_ydata(), gaps**2 / np.expm1(gaps**2), rtol=1e-10)
    np.testing.assert_allclose(small_gap.get_ydata(), 1 - gaps**2 / 2, rtol=1e-15)
    assert list(one.get_ydata()) == [1.0, 1.0] and to_hex(one.get_color()) == PALETTE["k3"].lower()
    assert to_hex(curve.get_color()) == PALETTE["k_lambda"].lower() and ax.get_xscale() == "log"
    fig, ax = plt.subplots()
    optimal_lambda_curve(gaps, ax=ax, small_gap_line=False, color="red")
    assert len(ax.lines) == 2 and ax.lines[0].get_color() == "red"


def test_variance_ratio_curve_matches_closed_form():
    from klviz.plots import variance_ratio_curve

    gaps = np.geomspace(0.05, 3.0, 12)
    t = gaps**2
    fig, ax = plt.subplots()
    returned = variance_ratio_curve(gaps, ax=ax, crossover=1.1209)
    assert returned is ax
    k3_ratio, k1_ratio, crossing = ax.lines
    # Var* = Var(log r)(1 - rho^2) = t - t^2 / (e^t - 1): the ratios simplify to these
    np.testing.assert_allclose(k3_ratio.get_ydata(), np.expm1(t) / t, rtol=1e-9)
    np.testing.assert_allclose(k1_ratio.get_ydata(), np.expm1(t) / (np.expm1(t) - t), rtol=1e-9)
    assert to_hex(k3_ratio.get_color()) == PALETTE["k3"].lower()
    assert to_hex(k1_ratio.get_color()) == PALETTE["k1"].lower()
    assert crossing.get_xdata()[0] == 1.1209 and "1.121" in crossing.get_label()
    assert np.all(k3_ratio.get_ydata() >= 1) and np.all(k1_ratio.get_ydata() >= 1)


@pytest.mark.parametrize("gaps", [[0.5], [0.0, 1.0], [-1.0, 1.0], [0.5, np.inf]])
def test_gap_curves_reject_bad_gaps(gaps):
    from klviz.plots import optimal_lambda_curve, variance_ratio_curve

    fig, ax = plt.subplots()
    for function in (optimal_lambda_curve, variance_ratio_curve):
        with pytest.raises(ValueError, match="gaps must hold at least two positive, finite numbers"):
            function(gaps, ax=ax)
    assert len(ax.lines) == 0
