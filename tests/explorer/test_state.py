r"""Tests for klviz.explorer.state: the pure update functions against exact values (no plotting).

References are computed differently from the code under test:

* q = N(0, 1), p = N(μ, σ²): KL[q, p] = log σ + (1 + μ²)/(2σ²) - 1/2; for σ = 1, E[k2] = μ²/2 + μ⁴/8, so
  k2's relative bias is μ²/4, Var(k1) = μ² (k1's stdev/true is 2/μ) and Var(k3) = e^{μ²} - 1 - μ²;
* log r from scipy.stats.norm.logpdf at the draws, per-sample estimators from klviz.k1/k2/k3, histograms
  from numpy.histogram, means and standard deviations from numpy over the per-sample values;
* common random numbers: k1 = μ²/2 - μz, so its sample mean is μ²/2 - μ z̄ at every gap, one z̄;
* E[k2] for unequal variances by scipy quadrature; the exact curves against klviz.exact_moments (mpmath
  closed forms) and scipy quadrature; the k3/k1 crossing for σ = 1 from Lambert's W (mpmath).
"""

import math
import re

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import klviz
from klviz.explorer import state as ex
from klviz.explorer import (
    ESTIMATOR_NAMES,
    StandardDraws,
    exact_curves,
    exact_relative_bias,
    explorer_state,
    monte_carlo_bias,
    standard_draws,
    std_crossings,
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


# --------------------------------------------------------------------------------------------------
# Exact curves along the gap, and where k3's spread crosses k1's
# --------------------------------------------------------------------------------------------------

def test_exact_curves_for_unit_variances_are_the_closed_forms():
    gaps = np.linspace(0.05, 3.0, 60)
    curves = exact_curves(gaps, 1.0)
    kl = gaps**2 / 2
    np.testing.assert_allclose(curves.kl, kl, rtol=1e-14)
    np.testing.assert_allclose(curves.relative_bias["k2"], gaps**2 / 4, rtol=1e-12)
    np.testing.assert_allclose(curves.relative_std["k1"], 2 / gaps, rtol=1e-12)
    var_k3 = np.array([float(mpmath.expm1(mpmath.mpf(g) ** 2) - mpmath.mpf(g) ** 2) for g in gaps])
    np.testing.assert_allclose(curves.relative_std["k3"], np.sqrt(var_k3) / kl, rtol=1e-10)
    var_k2 = gaps**4 / 2 + gaps**6 / 4  # Var(½ L²), L = μz - μ²/2
    np.testing.assert_allclose(curves.relative_std["k2"], np.sqrt(var_k2) / kl, rtol=1e-10)
    for name in ("k1", "k3"):
        assert np.all(curves.relative_bias[name] == 0)
    at_zero = exact_curves([0.0], 1.0)  # p = q: nothing relative is defined
    assert all(math.isnan(at_zero.relative_std[name][0]) for name in ESTIMATOR_NAMES)


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.1, 1.3, 1.41, 1.9])
def test_exact_curves_match_klviz_exact_moments(sigma):
    gaps = np.array([0.0, 0.3, 1.0, 2.2, 3.0])
    curves = exact_curves(gaps, sigma)
    for i, gap in enumerate(gaps):
        for name in ESTIMATOR_NAMES:
            exact = klviz.exact_moments(klviz.GaussianPair(mu_p=float(gap), sigma_p=sigma), name)
            if math.isinf(exact.var):
                assert curves.relative_std[name][i] == math.inf
            else:
                assert curves.relative_std[name][i] == pytest.approx(exact.relative_std, rel=1e-9)
            assert curves.relative_bias[name][i] == pytest.approx(exact.relative_bias, rel=1e-9, abs=1e-12)


def test_exact_k3_variance_by_quadrature_for_unequal_widths():
    gap, sigma = 0.7, 1.2

    def k3(x):
        log_r = stats.norm.logpdf(x, gap, sigma) - stats.norm.logpdf(x)
        return np.expm1(log_r) - log_r

    mean, _ = integrate.quad(lambda x: stats.norm.pdf(x) * k3(x), -30, 30, epsabs=0, epsrel=1e-12, limit=200)
    second, _ = integrate.quad(lambda x: stats.norm.pdf(x) * k3(x) ** 2, -30, 30, epsabs=0, epsrel=1e-12, limit=200)
    curves = exact_curves([gap], sigma)
    assert curves.relative_std["k3"][0] * curves.kl[0] == pytest.approx(math.sqrt(second - mean**2), rel=1e-8)


def test_std_crossing_for_unit_variances_solves_exp_x_equals_1_plus_2x():
    # e^x = 1 + 2x with x = μ²: x = -1/2 - W_{-1}(-e^{-1/2}/2)
    x = -0.5 - mpmath.lambertw(-mpmath.exp(-0.5) / 2, -1).real
    (crossing,) = std_crossings(1.0)
    assert crossing == pytest.approx(float(mpmath.sqrt(x)), rel=1e-11)
    assert round(crossing, 2) == 1.12
    curves = exact_curves([crossing - 0.01, crossing + 0.01], 1.0)
    assert curves.relative_std["k3"][0] < curves.relative_std["k1"][0]  # k3 better just below the crossing
    assert curves.relative_std["k3"][1] > curves.relative_std["k1"][1]  # k1 better beyond it


def test_std_crossings_elsewhere():
    assert std_crossings(1.5) == ()  # k3's variance is infinite at every gap
    assert std_crossings(1.3) == ()  # finite, but above k1's at every gap in [0, 3]
    curves = exact_curves(np.linspace(0.0, 3.0, 31), 1.3)
    assert np.all(curves.relative_std["k3"] > curves.relative_std["k1"])
    (crossing,) = std_crossings(0.7)
    curves = exact_curves([crossing], 0.7)
    assert curves.relative_std["k3"][0] == pytest.approx(curves.relative_std["k1"][0], rel=1e-9)
    with pytest.raises(ValueError, match="gap_range must be"):
        std_crossings(1.0, (2.0, 1.0))
    with pytest.raises(ValueError, match="sigma_ratio must be finite and > 0"):
        exact_curves([1.0], 0.0)
    with pytest.raises(ValueError, match="gaps must be"):
        exact_curves([-1.0], 1.0)


def test_monte_carlo_points_carry_the_sample_spread(big_draws):
    points = monte_carlo_bias([0.5, 2.0], 1.0, big_draws)
    for i, gap in enumerate((0.5, 2.0)):
        values = per_sample(gap, 1.0, big_draws.z)
        for name in ESTIMATOR_NAMES:
            assert points.relative_std[name][i] == pytest.approx(values[name].std(ddof=1) / (gap**2 / 2), rel=1e-9)


def test_sample_moments_of_the_draws(draws):
    z = draws.z
    expected = [float(np.mean(z.astype(np.longdouble) ** j)) for j in range(9)]
    np.testing.assert_allclose(draws.moments, expected, rtol=1e-12, atol=1e-15)
    assert not draws.moments.flags.writeable
