"""Tests for klviz.plots.fdiv (notebook 02's figures): returned Axes and artist data, no pixels.

References are written out here: the generators' g(u) = f(u) - f'(1)(u - 1) by hand, derivatives at 1 by hand,
and, for the measured coefficients, Pearson's chi^2 in closed form for q = N(0, 1): e^{mu^2} - 1 for p = N(mu, 1)
and 1 / (s sqrt(2 - s^2)) - 1 for p = N(0, s^2), with KL[q, p] = mu^2 / 2 and log s + 1 / (2 s^2) - 1/2.
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from klviz import Generator
from klviz.plots import PALETTE, generator_color, tangent_parabola, taylor_error_coefficients


def test_generator_color():
    assert generator_color("kl_qp") == PALETTE["k1"]
    assert generator_color("kl_pq") == PALETTE["k1_pq"]
    assert generator_color("half_log_sq") == PALETTE["k2"]
    assert generator_color("hellinger") == "#555555"
    assert generator_color(Generator("mine", "mine", "(u - 1)**2 / (u + 1)")) == "#555555"
    with pytest.raises(ValueError, match="generator must be one of"):
        generator_color("kl")


@pytest.mark.parametrize("name, g, curvature", [
    ("kl_qp", lambda u: -np.log(u) + (u - 1), 1.0),
    ("kl_pq", lambda u: u * np.log(u) - (u - 1), 1.0),
    ("half_log_sq", lambda u: 0.5 * np.log(u) ** 2, 1.0),
    ("pearson", lambda u: (u - 1) ** 2, 2.0),
    ("hellinger", lambda u: (np.sqrt(u) - 1) ** 2, 0.5),
])
def test_tangent_parabola_curves(name, g, curvature):
    fig, ax = plt.subplots()
    returned = tangent_parabola(name, u_range=(0.3, 2.5), ax=ax, linestyle="-.")
    assert returned is ax
    curve, parabola = ax.lines[0], ax.lines[1]
    u = curve.get_xdata()
    assert u[0] == pytest.approx(0.3) and u[-1] == pytest.approx(2.5)
    np.testing.assert_allclose(curve.get_ydata(), g(u), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(parabola.get_ydata(), 0.5 * curvature * (u - 1) ** 2, rtol=1e-14)
    assert to_hex(curve.get_color()) == generator_color(name).lower() and curve.get_linestyle() == "-."
    assert parabola.get_linestyle() == "--"
    assert "f''(1) = " in ax.get_title()


def test_tangent_parabola_total_variation_has_no_parabola():
    fig, ax = plt.subplots()
    tangent_parabola("total_variation", ax=ax)
    (curve,) = [line for line in ax.lines if line.get_linestyle() != "--" and len(line.get_xdata()) > 2]
    u = curve.get_xdata()
    np.testing.assert_allclose(curve.get_ydata(), 0.5 * np.abs(u - 1), atol=1e-15)
    assert "kink at 1" in ax.get_title()
    assert not any(line.get_linestyle() == "--" for line in ax.lines)


def test_tangent_parabola_of_a_users_generator():
    triangular = Generator("triangular", "triangular discrimination", "(u - 1)**2 / (u + 1)")  # f''(1) = 1
    fig, ax = plt.subplots()
    tangent_parabola(triangular, u_range=(0.5, 1.5), ax=ax)
    u = ax.lines[0].get_xdata()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), (u - 1) ** 2 / (u + 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 0.5 * (u - 1) ** 2, rtol=1e-14)
    assert ax.get_title().startswith("triangular discrimination")


@pytest.mark.parametrize("u_range", [(0.0, 2.0), (-1.0, 1.0), (2.0, 1.0)])
def test_tangent_parabola_rejects_bad_range(u_range):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="u_range must be"):
        tangent_parabola("kl_qp", u_range=u_range, ax=ax)
    assert len(ax.lines) == 0


@pytest.mark.parametrize("name, f2, f3, f4", [
    # derivatives at 1 by hand: -log u: 1, -2, 6; (u-1)^2: 2, 0, 0; (1-u)^2/u = u - 2 + 1/u: 2, -6, 24;
    # (sqrt u - 1)^2 = u - 2 sqrt u + 1: 1/2, -3/4, 15/8
    ("kl_qp", 1.0, -2.0, 6.0), ("pearson", 2.0, 0.0, 0.0), ("neyman", 2.0, -6.0, 24.0),
    ("hellinger", 0.5, -0.75, 15 / 8),
])
def test_taylor_error_coefficient_lines(name, f2, f3, f4):
    fig, ax = plt.subplots()
    returned = taylor_error_coefficients(name, [0.01, 0.03], ax=ax)
    assert returned is ax
    lines = {line.get_gid(): line for line in ax.lines}
    assert lines["limit"].get_ydata()[0] == pytest.approx(f2 / 2 + f3 + f4 / 4, abs=1e-15)
    assert lines["first order"].get_ydata()[0] == pytest.approx(f3 + 2 * f2, abs=1e-15)
    assert lines["scale limit"].get_ydata()[0] == pytest.approx(4 * (f3 + 2 * f2) / 3, abs=1e-15)
    low, high = ax.get_ylim()
    assert high - low >= 0.5 - 1e-12  # at least ±0.25
    values = [lines[gid].get_ydata()[0] for gid in ("limit", "first order", "scale limit")]
    assert low <= min(values) and max(values) <= high


def test_taylor_error_coefficients_measured_points_for_pearson():
    gaps = np.array([0.01, 0.03, 0.1])
    fig, ax = plt.subplots()
    taylor_error_coefficients("pearson", gaps, ax=ax)
    lines = {line.get_gid(): line for line in ax.lines}
    mean_shift = (np.expm1(gaps**2) / (gaps**2 / 2) - 2) / gaps**2
    s = 1 + gaps
    chi2 = 1 / (s * np.sqrt(2 - s**2)) - 1
    kl = np.log(s) + 1 / (2 * s**2) - 0.5
    scale_change = (chi2 / kl - 2) / gaps
    np.testing.assert_array_equal(lines["mean shift"].get_xdata(), gaps)
    np.testing.assert_allclose(lines["mean shift"].get_ydata(), mean_shift, rtol=1e-7)
    np.testing.assert_allclose(lines["scale change"].get_ydata(), scale_change, rtol=1e-7)
    # the measured mean-shift coefficient tends to the limit 1, not to the first-order formula's 4
    assert abs(mean_shift[0] - 1) < 1e-3
    assert ax.get_title() == "Pearson χ²(p‖q)" and ax.get_xscale() == "log"


def test_taylor_error_coefficients_default_gaps_and_current_axes():
    fig, ax = plt.subplots()
    assert taylor_error_coefficients("kl_pq") is ax
    gaps = [line for line in ax.lines if line.get_gid() == "mean shift"][0].get_xdata()
    np.testing.assert_allclose(gaps, 10.0 ** np.arange(-3, -0.7, 0.25), rtol=1e-12)
    assert len(gaps) == 10


def test_taylor_error_coefficients_rejects_kinks_and_bad_gaps():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="four times differentiable"):
        taylor_error_coefficients("total_variation", ax=ax)
    for gaps in ([], [0.0, 0.1], [-0.1], [np.nan]):
        with pytest.raises(ValueError, match="gaps must be"):
            taylor_error_coefficients("kl_qp", gaps, ax=ax)
    assert len(ax.lines) == 0
