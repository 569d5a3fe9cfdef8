"""Tests for klviz.fdiv: generators (symbolic vs numeric, derivatives, curvature) and exact f-divergences.

References are computed differently from the code under test: hand-written formulas, finite
differences, closed forms for Gaussians, mpmath quadrature at 30 digits with hand-written generators,
brute-force sums for categorical pairs.
"""

import functools
import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import erf

from klviz import CategoricalPair, GaussianPair, ScipyPair, exact_moments, expected_r_squared
from klviz.fdiv import GENERATORS, Generator, f_divergence, get_generator, taylor_approximation

NAMES = list(GENERATORS)
SMOOTH = [n for n in NAMES if n != "total_variation"]
# ½(log u)² is not convex: f'' = (1 - log u)/u² < 0 for u > e. It is still >= 0, so E_q[k2] >= 0.
CONVEX = [n for n in NAMES if n != "half_log_sq"]

# Hand-written generators (numpy), an independent check of the sympy expressions.
NUMPY_F = {
    "kl_qp": lambda u: -np.log(u),
    "kl_pq": lambda u: u * np.log(u),
    "half_log_sq": lambda u: 0.5 * np.log(u) ** 2,
    "pearson": lambda u: (u - 1) ** 2,
    "neyman": lambda u: (1 - u) ** 2 / u,
    "hellinger": lambda u: (np.sqrt(u) - 1) ** 2,
    "jensen_shannon": lambda u: 0.5 * (u * np.log(2 * u / (1 + u)) + np.log(2 / (1 + u))),
    "total_variation": lambda u: 0.5 * np.abs(u - 1),
}
# The same in mpmath, for the quadrature references.
MP_F = {
    "kl_qp": lambda u: -mpmath.log(u),
    "kl_pq": lambda u: u * mpmath.log(u),
    "half_log_sq": lambda u: mpmath.log(u) ** 2 / 2,
    "pearson": lambda u: (u - 1) ** 2,
    "neyman": lambda u: (1 - u) ** 2 / u,
    "hellinger": lambda u: (mpmath.sqrt(u) - 1) ** 2,
    "jensen_shannon": lambda u: (u * mpmath.log(2 * u / (1 + u)) + mpmath.log(2 / (1 + u))) / 2,
    "total_variation": lambda u: abs(u - 1) / 2,
}
CURVATURE = {"kl_qp": 1.0, "kl_pq": 1.0, "half_log_sq": 1.0, "pearson": 2.0, "neyman": 2.0,
             "hellinger": 0.5, "jensen_shannon": 0.25}
GRID = np.array([0.05, 0.3, 0.8, 0.999, 1.0, 1.001, 1.7, 4.0, 25.0])


def rel_err(value, reference):
    return abs(value - reference) / abs(reference)


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------

def test_registry_has_the_eight_generators():
    assert NAMES == ["kl_qp", "kl_pq", "half_log_sq", "pearson", "neyman", "hellinger",
                     "jensen_shannon", "total_variation"]
    assert all(GENERATORS[n].name == n and GENERATORS[n].label for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_f_of_one_is_zero(name):
    gen = GENERATORS[name]
    assert gen.f(1.0) == 0.0
    assert gen.expression.subs(sp.Symbol("u", positive=True), 1) == 0


@pytest.mark.parametrize("name", NAMES)
def test_f_matches_hand_written_formula(name):
    np.testing.assert_allclose(GENERATORS[name].f(GRID), NUMPY_F[name](GRID), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_numeric_functions_match_sympy_at_30_digits(name):
    gen = GENERATORS[name]
    u = sp.Symbol("u", positive=True)
    for order, method in enumerate((gen.f, gen.f_prime, gen.f_second)):
        expr = sp.diff(gen.expression, u, order)
        for x in (0.3, 0.8, 1.7, 4.0):  # away from TV's kink
            reference = float(expr.subs(u, sp.Float(x, 30)).evalf(30))
            assert math.isclose(float(method(x)), reference, rel_tol=1e-13, abs_tol=1e-15), (order, x)


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_finite_differences(name):
    gen = GENERATORS[name]
    u = np.array([0.3, 0.8, 1.25, 1.7, 4.0])
    h = 1e-4 * u
    first = (NUMPY_F[name](u + h) - NUMPY_F[name](u - h)) / (2 * h)
    second = (NUMPY_F[name](u + h) - 2 * NUMPY_F[name](u) + NUMPY_F[name](u - h)) / h**2
    np.testing.assert_allclose(gen.f_prime(u), first, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gen.f_second(u), second, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CONVEX)
def test_generators_are_convex(name):
    gen = GENERATORS[name]
    u = np.geomspace(1e-3, 1e3, 301)
    u = u[u != 1.0]
    assert np.all(gen.f_second(u) >= 0)


def test_half_log_squared_is_convex_only_up_to_e_but_never_negative():
    gen = GENERATORS["half_log_sq"]
    u = np.geomspace(1e-3, 1e3, 301)
    assert np.all(gen.f_second(u[u < math.e]) > 0) and np.all(gen.f_second(u[u > math.e]) < 0)
    assert np.all(gen.f(u) >= 0)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(1e-3, 1e3), b=st.floats(1e-3, 1e3), t=st.floats(0.0, 1.0))
def test_convexity_chords_lie_above(a, b, t):
    for name in CONVEX:
        f = GENERATORS[name].f
        mid = t * a + (1 - t) * b
        chord = t * f(a) + (1 - t) * f(b)
        assert f(mid) <= chord + 1e-12 * (1 + abs(chord)), name


@pytest.mark.parametrize("name", SMOOTH)
def test_curvature_at_one(name):
    gen = GENERATORS[name]
    assert gen.curvature_at_1 == CURVATURE[name]
    assert gen.twice_differentiable_at_1
    assert gen.f_second(1.0) == CURVATURE[name]


def test_total_variation_is_not_twice_differentiable_at_one():
    tv = GENERATORS["total_variation"]
    assert math.isnan(tv.curvature_at_1)
    assert not tv.twice_differentiable_at_1
    assert tv.derivative_at_1(1) is sp.nan
    assert math.isnan(tv.f_prime(1.0)) and math.isnan(tv.f_second(1.0))
    np.testing.assert_array_equal(tv.f_prime([0.5, 2.0]), [-0.5, 0.5])
    np.testing.assert_array_equal(tv.f_second([0.5, 2.0]), [0.0, 0.0])


def test_exact_higher_derivatives_at_one():
    # By hand: -log u -> -2/u³, 6/u⁴; ½log²u -> (2 log u - 3)/u³, (11 - 6 log u)/u⁴.
    assert GENERATORS["kl_qp"].derivative_at_1(3) == -2
    assert GENERATORS["kl_qp"].derivative_at_1(4) == 6
    assert GENERATORS["half_log_sq"].derivative_at_1(3) == -3
    assert GENERATORS["half_log_sq"].derivative_at_1(4) == 11
    assert GENERATORS["hellinger"].derivative_at_1(2) == sp.Rational(1, 2)
    assert GENERATORS["jensen_shannon"].derivative_at_1(2) == sp.Rational(1, 4)
    assert GENERATORS["pearson"].derivative_at_1(0) == 0


def test_symmetric_generators():
    assert {n for n in NAMES if GENERATORS[n].symmetric} == {"hellinger", "jensen_shannon", "total_variation"}


def test_limits_at_zero_and_infinity():
    values = {n: GENERATORS[n].f([0.0, np.inf]) for n in NAMES}
    assert values["kl_qp"].tolist() == [np.inf, -np.inf]
    assert values["kl_pq"].tolist() == [0.0, np.inf]
    assert values["pearson"].tolist() == [1.0, np.inf]
    assert values["hellinger"].tolist() == [1.0, np.inf]
    assert values["jensen_shannon"][0] == pytest.approx(math.log(2) / 2, rel=1e-15)
    assert GENERATORS["kl_qp"].f_prime(0.0) == -np.inf


def test_f_keeps_shape_and_scalar():
    gen = GENERATORS["pearson"]
    assert gen.f(np.ones((2, 3))).shape == (2, 3)
    assert np.ndim(gen.f(2.0)) == 0 and gen.f(2) == 1.0


@pytest.mark.parametrize("bad, error, match", [
    (-1.0, ValueError, "non-negative"),
    ([1.0, np.nan], ValueError, "non-negative"),
    (True, TypeError, "real"),
    ("2", TypeError, "real"),
])
def test_f_rejects_bad_u(bad, error, match):
    with pytest.raises(error, match=match):
        GENERATORS["kl_qp"].f(bad)


def test_get_generator():
    assert get_generator("kl_qp") is GENERATORS["kl_qp"]
    assert get_generator(GENERATORS["pearson"]) is GENERATORS["pearson"]
    with pytest.raises(ValueError, match=r"generator must be one of \['half_log_sq', 'hellinger'.*got 'chi2'"):
        get_generator("chi2")
    with pytest.raises(TypeError, match="generator must be a Generator or a name"):
        get_generator(3)


def test_generator_validation():
    with pytest.raises(ValueError, match="name must not be empty"):
        Generator("", "x", "(u-1)**2")
    with pytest.raises(TypeError, match="label must be a string"):
        Generator("a", None, "(u-1)**2")
    with pytest.raises(TypeError, match="expr must be a string or a sympy expression"):
        Generator("a", "a", 3.0)
    with pytest.raises(ValueError, match=r"f\(1\) = 0; 'shifted' has f\(1\) = 1"):
        Generator("shifted", "s", "u**2").f(2.0)
    with pytest.raises(ValueError, match=r"may only use the variable u \(and pi, E\), got 'a'"):
        Generator("param", "p", "a*(u - 1)**2").expression
    with pytest.raises(ValueError, match=r"must depend on u only, got symbols \['a'\]"):
        Generator("param", "p", sp.Symbol("a") * (sp.Symbol("u") - 1) ** 2).expression
    with pytest.raises(ValueError, match="does not parse"):
        Generator("broken", "b", "(u - ").expression


@pytest.mark.parametrize("code", [
    "__import__('os').system('echo pwned')", "(lambda: 1)()", "u.__class__", "[u][0]", "open('x')",
    "exp(u, base=2)", "True + u",
])
def test_generator_strings_are_parsed_never_evaluated(code, capfd):
    # sympify would eval these; the generator parser rejects anything but numbers, u and named functions.
    with pytest.raises(ValueError, match="may only use"):
        Generator("evil", "e", code).expression
    assert "pwned" not in capfd.readouterr().out


def test_custom_generator_from_a_sympy_expression():
    u = sp.Symbol("u")  # no assumptions: the generator substitutes its own positive u
    gen = Generator("pearson_again", "χ²", (u - 1) ** 2)
    assert gen.curvature_at_1 == 2.0
    pair = GaussianPair(mu_p=0.4, sigma_p=1.1)
    assert f_divergence(pair, gen) == pytest.approx(f_divergence(pair, "pearson"), rel=1e-13)


# --------------------------------------------------------------------------------------------------
# f_divergence: closed forms
# --------------------------------------------------------------------------------------------------

GAUSSIANS = [
    GaussianPair(mu_p=1.0),
    GaussianPair(mu_p=0.1),
    GaussianPair(mu_p=1e-3),
    GaussianPair(mu_p=1e-6),
    GaussianPair(mu_p=3.0),
    GaussianPair(mu_p=0.7, sigma_p=1.2, mu_q=-0.3, sigma_q=0.9),
    GaussianPair(mu_p=0.0, sigma_p=1.01),
    GaussianPair(mu_p=0.2, sigma_p=0.8),
]


@pytest.mark.parametrize("pair", GAUSSIANS, ids=repr)
def test_kl_and_reverse_kl_of_gaussians(pair):
    assert rel_err(f_divergence(pair, "kl_qp"), pair.kl_qp()) < 1e-9
    assert rel_err(f_divergence(pair, "kl_pq"), pair.kl_pq()) < 1e-9


@pytest.mark.parametrize("mu", [1e-6, 1e-3, 0.1, 1.0, 2.0])
def test_unit_gaussian_closed_forms(mu):
    pair = GaussianPair(mu_p=mu)
    assert rel_err(f_divergence(pair, "pearson"), math.expm1(mu * mu)) < 1e-9
    assert rel_err(f_divergence(pair, "neyman"), math.expm1(mu * mu)) < 1e-9
    assert rel_err(f_divergence(pair, "hellinger"), -2 * math.expm1(-mu * mu / 8)) < 1e-9
    assert rel_err(f_divergence(pair, "total_variation"), erf(mu / (2 * math.sqrt(2)))) < 1e-9


@pytest.mark.parametrize("pair", GAUSSIANS, ids=repr)
def test_chi_squared_and_hellinger_of_gaussians(pair):
    pearson = expected_r_squared(pair) - 1
    neyman = expected_r_squared(pair.swapped()) - 1
    # E[r²] - 1 keeps only ~1e-16/χ² relative precision: compare where that is below 1e-10.
    if pearson > 1e-5:
        assert rel_err(f_divergence(pair, "pearson"), pearson) < 1e-9
        assert rel_err(f_divergence(pair, "neyman"), neyman) < 1e-9
    # Bhattacharyya coefficient of two normals.
    sp2 = pair.sigma_p**2 + pair.sigma_q**2
    log_bc = 0.5 * math.log(2 * pair.sigma_p * pair.sigma_q / sp2) - (pair.mu_p - pair.mu_q) ** 2 / (4 * sp2)
    assert rel_err(f_divergence(pair, "hellinger"), -2 * math.expm1(log_bc)) < 1e-9


@pytest.mark.parametrize("pair", GAUSSIANS, ids=repr)
def test_half_log_squared_is_the_mean_of_k2(pair):
    assert rel_err(f_divergence(pair, "half_log_sq"), exact_moments(pair, "k2").mean) < 1e-9


@pytest.mark.parametrize("sigma_p, pearson_finite, neyman_finite", [
    (1.41, True, True), (1.414, True, True), (1.5, False, True), (2.0, False, True),
    (0.71, True, True), (0.7072, True, True), (0.7, True, False), (0.5, True, False),
])
def test_chi_squared_divergence_boundaries(sigma_p, pearson_finite, neyman_finite):
    # E_q[r²] < inf iff σ_p² < 2σ_q²; E_p[(q/p)²] < inf iff σ_q² < 2σ_p². Just inside the boundary the
    # values are huge (1e66 at σ_p = 1.414) and still accurate.
    pair = GaussianPair(mu_p=0.3, sigma_p=sigma_p)
    for name, finite, swapped in (("pearson", pearson_finite, pair), ("neyman", neyman_finite, pair.swapped())):
        value = f_divergence(pair, name)
        if finite:
            assert rel_err(value, expected_r_squared(swapped) - 1) < 1e-9
        else:
            assert value == math.inf


# --------------------------------------------------------------------------------------------------
# f_divergence: mpmath quadrature references
# --------------------------------------------------------------------------------------------------

def mp_gaussian_divergence(name, pair, dps=30):
    """E_q[f(r)] over z ~ N(0,1) at x = mu_q + sigma_q z, log r = a + b z + c z², in mpmath."""
    with mpmath.workdps(dps):
        s = mpmath.mpf(pair.sigma_q) / pair.sigma_p
        d = (mpmath.mpf(pair.mu_q) - pair.mu_p) / pair.sigma_p
        a, b, c = mpmath.log(s) - d * d / 2, -d * s, (1 - s * s) / 2
        f = MP_F[name]

        def integrand(z):
            return mpmath.npdf(z) * f(mpmath.exp(a + b * z + c * z * z))

        points = {mpmath.mpf(0)}
        if c == 0:
            points.add(-a / b)
        elif b * b - 4 * a * c >= 0:
            root = mpmath.sqrt(b * b - 4 * a * c)
            points |= {(-b + root) / (2 * c), (-b - root) / (2 * c)}
        return float(mpmath.quad(integrand, [-mpmath.inf, *sorted(points), mpmath.inf]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pair", [GaussianPair(mu_p=0.7, sigma_p=1.2, mu_q=-0.3, sigma_q=0.9),
                                  GaussianPair(mu_p=0.2, sigma_p=0.8)], ids=repr)
def test_gaussian_pairs_against_mpmath(name, pair):
    assert rel_err(f_divergence(pair, name), mp_gaussian_divergence(name, pair)) < 1e-9


def t5_against_normal(name):
    """E_q[f(p/q)] for p = t(5), q = N(0,1), in mpmath, split where p = q (for total variation)."""
    with mpmath.workdps(30):
        c = mpmath.gamma(3) / (mpmath.sqrt(5 * mpmath.pi) * mpmath.gamma(mpmath.mpf(5) / 2))

        def p(x):
            return c * (1 + x * x / 5) ** -3

        f = MP_F[name]
        grid = np.linspace(-12, 12, 2401)
        log_ratio = stats.t(5).logpdf(grid) - stats.norm.logpdf(grid)
        crossings = [mpmath.findroot(lambda x: p(x) - mpmath.npdf(x), (grid[i], grid[i + 1]), solver="anderson")
                     for i in np.flatnonzero(log_ratio[:-1] * log_ratio[1:] < 0)]
        points = sorted({mpmath.mpf(0), *crossings, *map(mpmath.mpf, (-30, -8, 8, 30))})
        return float(mpmath.quad(lambda x: mpmath.npdf(x) * f(p(x) / mpmath.npdf(x)),
                                 [-mpmath.inf, *points, mpmath.inf]))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "pearson"])
def test_heavy_tailed_scipy_pair_against_mpmath(name):
    pair = ScipyPair(p=stats.t(5), q=stats.norm())
    assert rel_err(f_divergence(pair, name), t5_against_normal(name)) < 1e-9


def test_heavy_tailed_pearson_is_infinite():
    # ∫ p²/q with p = t(5), q = N(0, 1) diverges; the reverse direction is finite.
    assert f_divergence(ScipyPair(p=stats.t(5), q=stats.norm()), "pearson") == math.inf
    assert math.isfinite(f_divergence(ScipyPair(p=stats.norm(), q=stats.t(5)), "pearson"))


def t3_against_cauchy(name):
    """E_q[f(p/q)] for p = t(3), q = Cauchy, in mpmath (both even: twice the half line)."""
    with mpmath.workdps(30):
        c = 2 / (mpmath.sqrt(3) * mpmath.pi)  # Γ(2)/(√(3π) Γ(3/2))

        def ratio(x):
            return c * (1 + x * x / 3) ** -2 * mpmath.pi * (1 + x * x)

        return float(2 * mpmath.quad(lambda x: MP_F[name](ratio(x)) / (mpmath.pi * (1 + x * x)),
                                     [0, 1, 10, 100, mpmath.inf]))


@pytest.mark.parametrize("name", ["kl_qp", "half_log_sq"])
def test_power_law_tails_are_decided_on_the_x_scale(name):
    # Regression: against a Cauchy q, log r ~ -2 log|x|, and the old quantile-scale tail test called
    # these (finite) divergences infinite; klviz.exact's test at |x| = 1e50, 1e100 gets them.
    pair = ScipyPair(p=stats.t(3), q=stats.cauchy())
    assert rel_err(f_divergence(pair, name), t3_against_cauchy(name)) < 1e-10


def test_reverse_kl_with_a_density_vanishing_at_the_support_edge():
    # Regression (was inf): KL[p, q] for p = U(0, 1), q = Beta(2, 2) is ∫ -log(6x(1-x)) dx = 2 - log 6.
    pair = ScipyPair(p=stats.uniform(0, 1), q=stats.beta(2, 2))
    assert rel_err(f_divergence(pair, "kl_pq"), 2 - math.log(6)) < 1e-10


def test_laplace_against_normal_closed_forms():
    # KL[q, p] = log 2 + E|x| - ½ log 2π - ½ and χ²(q‖p) = e^{1/4}(1 + erf ½)/√π - 1 for p = Laplace,
    # q = N(0, 1); χ²(p‖q) = ∫ p²/q diverges.
    pair = ScipyPair(p=stats.laplace(), q=stats.norm())
    kl = math.log(2) + math.sqrt(2 / math.pi) - 0.5 * math.log(2 * math.pi) - 0.5
    neyman = math.exp(0.25) * (1 + math.erf(0.5)) / math.sqrt(math.pi) - 1
    assert f_divergence(pair, "pearson") == math.inf
    assert f_divergence(pair.swapped(), "neyman") == math.inf
    assert rel_err(f_divergence(pair, "kl_qp"), kl) < 1e-10
    assert rel_err(f_divergence(pair, "neyman"), neyman) < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_scipy_normals_match_gaussian_pair(name):
    gaussian = GaussianPair(mu_p=0.7, sigma_p=1.2, mu_q=-0.3, sigma_q=0.9)
    scipy_pair = ScipyPair(p=stats.norm(0.7, 1.2), q=stats.norm(-0.3, 0.9))
    assert rel_err(f_divergence(scipy_pair, name), f_divergence(gaussian, name)) < 1e-9


def chi_squared_normals(mu_p, sigma_p):
    """χ²(p‖q) = E_q[r²] - 1 for p = N(μ, σ²), q = N(0, 1), in closed form at 40 digits from the
    floats' exact binary values (the value's condition number near σ² = 2 is ~1e6)."""
    with mpmath.workdps(40):
        mu, s = mpmath.mpf(mu_p), mpmath.mpf(sigma_p)
        return float(mpmath.exp(mu**2 / (2 - s**2)) / (s * mpmath.sqrt(2 - s**2)) - 1)


@pytest.mark.parametrize("mu_p, sigma_p", [(0.0, 1.41), (0.0, 1.413), (0.0, 1.414), (0.3, 1.41), (0.3, 1.4125)])
def test_scipy_chi_squared_near_its_boundary(mu_p, sigma_p):
    # Regression: near σ_p² = 2 the p-part r·p is barely integrable on p's quantile scale. tanh-sinh's
    # status was ignored (5e-5 relative off at σ_p = 1.41, 1% at 1.4125) and the quantile-scale tail
    # test called the rest infinite; klviz.exact's x-scale tail test and checked quadrature get them.
    pair = ScipyPair(p=stats.norm(mu_p, sigma_p), q=stats.norm())
    reference = chi_squared_normals(mu_p, sigma_p)
    assert rel_err(f_divergence(pair, "pearson"), reference) < 1e-11
    assert rel_err(f_divergence(pair.swapped(), "neyman"), reference) < 1e-11


def test_scipy_quadrature_never_returns_an_unconverged_value():
    # χ² = 1.5e66 at σ_p = 1.414, μ_p = 0.3: a bump of width ~60 near x ~ 200 that the quadrature may
    # not resolve to 1e-12; it must then say so rather than return a number.
    pair = ScipyPair(p=stats.norm(0.3, 1.414), q=stats.norm())
    try:
        value = f_divergence(pair, "pearson")
    except ArithmeticError as error:
        assert "did not converge" in str(error)
    else:
        assert rel_err(value, chi_squared_normals(0.3, 1.414)) < 1e-10


@pytest.mark.parametrize("mu_p, sigma_p", [(0.3, 1.41), (0.3, 1.414), (0.3, 1.41415), (1.0, 1.4135), (0.0, 1.41421)])
def test_gaussian_chi_squared_right_up_to_its_boundary(mu_p, sigma_p):
    # The bump e^{-(1 - 2tc)z²/2} of variance up to 1e4 near z ~ 1e3: tanh-sinh must converge (its
    # status is checked) and the value keep ~1e-13, also at χ² = 1e219.
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p)
    reference = chi_squared_normals(mu_p, sigma_p)
    assert rel_err(f_divergence(pair, "pearson"), reference) < 1e-12
    assert rel_err(f_divergence(pair.swapped(), "neyman"), reference) < 1e-12


def test_gaussian_chi_squared_beyond_the_float_range_is_inf():
    # Finite but ~e^{2370} (μ_p = 0.3, σ_p = 1.4142) and ~e^{1656} (μ_p = 1, σ_p = 1.414): inf, no error.
    assert f_divergence(GaussianPair(mu_p=0.3, sigma_p=1.4142), "pearson") == math.inf
    assert f_divergence(GaussianPair(mu_p=1.0, sigma_p=1.414), "pearson") == math.inf
    assert f_divergence(GaussianPair(mu_p=1.0, sigma_p=1.414).swapped(), "neyman") == math.inf


def test_uniforms_with_different_supports():
    # q = U(0, 1), p = U(0, 2): r = ½ on (0, 1) and p has mass ½ where q = 0.
    pair = ScipyPair(p=stats.uniform(0, 2), q=stats.uniform(0, 1))
    expected = {
        "kl_qp": math.log(2), "kl_pq": math.inf, "half_log_sq": math.log(2) ** 2 / 2,
        "pearson": math.inf, "neyman": 1.0, "hellinger": 2 - math.sqrt(2),
        "jensen_shannon": 0.75 * math.log(4 / 3), "total_variation": 0.5,
    }
    swapped = {"kl_qp": math.inf, "kl_pq": math.log(2), "half_log_sq": math.inf, "pearson": 1.0,
               "neyman": math.inf, "hellinger": 2 - math.sqrt(2), "jensen_shannon": 0.75 * math.log(4 / 3),
               "total_variation": 0.5}
    for name in NAMES:
        for value, reference in ((f_divergence(pair, name), expected[name]),
                                 (f_divergence(pair.swapped(), name), swapped[name])):
            if math.isinf(reference):
                assert value == math.inf, name
            else:
                assert rel_err(value, reference) < 1e-9, name


# --------------------------------------------------------------------------------------------------
# Categorical pairs: exact sums against brute force
# --------------------------------------------------------------------------------------------------

def brute_force(name, p_logits, q_logits):
    """Σ q f(p/q) in mpmath, softmax taken from the logits at 40 digits (not from the pair's rounded
    log-probabilities), with Csiszár's conventions: 0·f(p/0) = p lim f(u)/u and f(0) = lim f(u)."""
    limit_f_over_u = {"kl_qp": 0, "kl_pq": mpmath.inf, "half_log_sq": 0, "pearson": mpmath.inf, "neyman": 1,
                      "hellinger": 1, "jensen_shannon": mpmath.log(2) / 2, "total_variation": mpmath.mpf(1) / 2}
    f_at_zero = {"kl_qp": mpmath.inf, "kl_pq": 0, "half_log_sq": mpmath.inf, "pearson": 1, "neyman": mpmath.inf,
                 "hellinger": 1, "jensen_shannon": mpmath.log(2) / 2, "total_variation": mpmath.mpf(1) / 2}
    with mpmath.workdps(40):
        p = [mpmath.exp(mpmath.mpf(x)) for x in p_logits]
        q = [mpmath.exp(mpmath.mpf(x)) for x in q_logits]
        p, q = [x / mpmath.fsum(p) for x in p], [x / mpmath.fsum(q) for x in q]
        total = mpmath.mpf(0)
        for pi, qi in zip(p, q):
            if qi == 0 and pi > 0:
                total += pi * limit_f_over_u[name]
            elif qi > 0 and pi == 0:
                total += qi * f_at_zero[name]
            elif qi > 0:
                total += qi * MP_F[name](pi / qi)
        return float(total)


@pytest.mark.parametrize("name", NAMES)
def test_categorical_against_brute_force(name):
    cases = [
        ([0.1, -0.4, 2.0, 0.3], [0.0, 0.2, 1.5, -0.1]),
        ([0.0, 1e-7, -1e-7], [0.0, 0.0, 0.0]),  # r within 1e-7 of 1
        ([0.0, -np.inf, 1.0], [0.5, 0.0, 1.0]),  # p = 0 where q > 0
        ([0.0, 2.0, 1.0], [0.5, -np.inf, 1.0]),  # q = 0 where p > 0
    ]
    for p_logits, q_logits in cases:
        value = f_divergence(CategoricalPair(p_logits, q_logits), name)
        reference = brute_force(name, p_logits, q_logits)
        if math.isinf(reference):
            assert value == math.inf
        else:
            assert rel_err(value, reference) < 1e-12, (p_logits, q_logits)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("gap", [1e-6, 1e-8, 1e-10])
def test_categorical_keeps_full_precision_as_p_approaches_q(name, gap):
    # Regression: log p - log q of the rounded log-probabilities is off by ~1e-16/gap relative (5e-9
    # for KL at gap 1e-8); the pair's own log r, built from logit differences, is not.
    p_logits, q_logits = [gap, 0.3 - 2 * gap, -1.2 + gap, 0.5], [0.0, 0.3, -1.2, 0.5]
    pair = CategoricalPair(p_logits, q_logits)
    assert rel_err(f_divergence(pair, name), brute_force(name, p_logits, q_logits)) < 1e-12
    if name == "kl_qp":
        assert rel_err(f_divergence(pair, name), pair.kl_qp()) < 1e-13


def test_categorical_half_log_squared_is_the_mean_of_k2():
    pair = CategoricalPair(p_logits=[0.3, -1.0, 2.0, 0.0], q_logits=[0.0, 0.5, 1.0, -0.2])
    assert rel_err(f_divergence(pair, "half_log_sq"), exact_moments(pair, "k2").mean) < 1e-12
    assert rel_err(f_divergence(pair, "kl_qp"), pair.kl_qp()) < 1e-12


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=2, max_size=8))
def test_categorical_divergences_are_non_negative_and_bounded(logits):
    pair = CategoricalPair([a for a, _ in logits], [b for _, b in logits])
    values = {name: f_divergence(pair, name) for name in NAMES}
    assert all(v >= -1e-15 for v in values.values())
    assert values["total_variation"] <= 1 + 1e-12
    assert values["hellinger"] <= 2 + 1e-12
    assert values["jensen_shannon"] <= math.log(2) + 1e-12


# --------------------------------------------------------------------------------------------------
# Structure: zero at p = q, symmetry, conjugates, errors
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", [GaussianPair(mu_p=0.5, sigma_p=2.0, mu_q=0.5, sigma_q=2.0),
                                  ScipyPair(p=stats.norm(1, 2), q=stats.norm(1, 2)),
                                  CategoricalPair([0.0, 1.0], [0.0, 1.0])], ids=repr)
def test_identical_distributions_give_zero(pair):
    assert all(f_divergence(pair, name) == 0.0 for name in NAMES)


@pytest.mark.parametrize("pair", [GaussianPair(mu_p=0.7, sigma_p=1.2, mu_q=-0.3, sigma_q=0.9),
                                  CategoricalPair([0.1, -0.4, 2.0], [0.0, 0.2, 1.5])], ids=repr)
def test_symmetric_generators_do_not_care_about_order(pair):
    for name in ("hellinger", "jensen_shannon", "total_variation"):
        assert rel_err(f_divergence(pair.swapped(), name), f_divergence(pair, name)) < 1e-9
    # KL[q,p] with the roles swapped is KL[p,q]; Pearson and Neyman are each other's conjugates.
    assert rel_err(f_divergence(pair.swapped(), "kl_pq"), f_divergence(pair, "kl_qp")) < 1e-9
    assert rel_err(f_divergence(pair.swapped(), "neyman"), f_divergence(pair, "pearson")) < 1e-9


def test_f_divergence_rejects_bad_arguments():
    with pytest.raises(TypeError, match="pair must be a klviz pair"):
        f_divergence("N(0,1)", "kl_qp")
    with pytest.raises(ValueError, match="generator must be one of"):
        f_divergence(GaussianPair(mu_p=1.0), "KL")


# --------------------------------------------------------------------------------------------------
# Taylor approximation
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMOOTH)
def test_taylor_approximation_formula(name):
    pair = GaussianPair(mu_p=0.3, sigma_p=1.1)
    expected = 0.5 * CURVATURE[name] * chi_squared_normals(0.3, 1.1)
    assert rel_err(taylor_approximation(pair, name), expected) < 1e-12


def test_taylor_approximation_at_tiny_gaps():
    # χ² = e^{μ²} - 1 = 1e-12 at μ = 1e-6, with full relative precision.
    pair = GaussianPair(mu_p=1e-6)
    assert rel_err(taylor_approximation(pair, "kl_qp"), 0.5 * math.expm1(1e-12)) < 1e-10


def test_taylor_approximation_of_a_categorical_pair():
    # Σ_q (r - 1)² by hand, also when p = 0 on a token q can produce (E_q[r] = 1 still holds).
    for p_logits, q_logits in (([0.1, -0.4, 2.0], [0.0, 0.2, 1.5]), ([0.0, -np.inf, 1.0], [0.5, 0.0, 1.0])):
        p, q = np.exp(p_logits) / np.sum(np.exp(p_logits)), np.exp(q_logits) / np.sum(np.exp(q_logits))
        chi_squared = math.fsum(q * (p / q - 1) ** 2)
        pair = CategoricalPair(p_logits, q_logits)
        assert rel_err(taylor_approximation(pair, "hellinger"), 0.25 * chi_squared) < 1e-12


@pytest.mark.parametrize("pair", [CategoricalPair([0.0, 1.0, 0.5], [0.0, 0.3, -np.inf]),
                                  ScipyPair(p=stats.uniform(0, 2), q=stats.uniform(0, 1))], ids=repr)
def test_taylor_approximation_when_p_has_mass_outside_q_support(pair):
    # Regression: E_q[r²] - 1 is not χ² when E_q[r] < 1 (it was negative here, -0.47 for the categorical
    # pair). χ²(p‖q) is infinite in Csiszár's convention, and so is the approximation.
    assert f_divergence(pair, "pearson") == math.inf
    assert taylor_approximation(pair, "kl_qp") == math.inf
    assert taylor_approximation(pair, "pearson") == math.inf


def test_taylor_approximation_of_pearson_is_exact():
    pair = GaussianPair(mu_p=0.5, sigma_p=1.2)
    assert taylor_approximation(pair, "pearson") == pytest.approx(f_divergence(pair, "pearson"), rel=1e-12)


@pytest.mark.parametrize("name", [n for n in SMOOTH if n != "pearson"])
def test_taylor_approximation_becomes_exact_as_the_gap_shrinks(name):
    # Scale change σ_p = 1 + δ: the relative error is first order in δ (coefficient below 10).
    errors = []
    for delta in (1e-2, 1e-3):
        pair = GaussianPair(mu_p=0.0, sigma_p=1 + delta)
        errors.append(abs(f_divergence(pair, name) / taylor_approximation(pair, name) - 1))
        assert errors[-1] < 10 * delta
    assert errors[1] < errors[0] / 5


def test_taylor_approximation_of_total_variation_is_refused():
    with pytest.raises(ValueError, match="'total_variation' is not twice differentiable at u = 1"):
        taylor_approximation(GaussianPair(mu_p=0.1), "total_variation")


def test_taylor_approximation_with_infinite_chi_squared():
    assert taylor_approximation(GaussianPair(mu_p=0.0, sigma_p=2.0), "kl_qp") == math.inf


# --------------------------------------------------------------------------------------------------
# How fast D_f / KL -> f''(1), and the accuracy of the Taylor approximation (module and
# taylor_approximation docstrings; notebook 02)
# --------------------------------------------------------------------------------------------------

# The generators once more, hand-written in sympy (independent of the registry's strings).
SYMPY_F = {
    "kl_qp": lambda u: -sp.log(u),
    "kl_pq": lambda u: u * sp.log(u),
    "half_log_sq": lambda u: sp.log(u) ** 2 / 2,
    "pearson": lambda u: (u - 1) ** 2,
    "neyman": lambda u: (1 - u) ** 2 / u,
    "hellinger": lambda u: (sp.sqrt(u) - 1) ** 2,
    "jensen_shannon": lambda u: (u * sp.log(2 * u / (1 + u)) + sp.log(2 / (1 + u))) / 2,
}
MU = sp.Symbol("mu", positive=True)


@functools.lru_cache(maxsize=None)
def mean_shift_series(name: str):
    r"""E_q[f(r)] for q = N(0, 1), p = N(μ, 1), exact through μ⁶, by a route other than the moments
    m_k = E_q[(r-1)^k] that the docstrings use: f(e^L) expanded in L = log r = μz - μ²/2 to order L⁶,
    then averaged over z with E[z^k] = (k-1)!! (even k). E[L⁷] = O(μ⁸), so the truncation is exact there."""
    L, z = sp.symbols("L z")
    f_of_L = sp.series(SYMPY_F[name](sp.exp(L)), L, 0, 7).removeO()
    poly = sp.Poly(sp.expand(f_of_L.subs(L, MU * z - MU**2 / 2)), z)
    mean = sum(c * (sp.factorial2(k - 1) if k % 2 == 0 else 0) for (k,), c in poly.terms())
    return sp.series(sp.expand(mean), MU, 0, 7).removeO()


def hand_derivative_at_1(name: str, order: int):
    u = sp.Symbol("u", positive=True)
    return sp.simplify(sp.diff(SYMPY_F[name](u), u, order).subs(u, 1))


@pytest.mark.parametrize("name", SMOOTH)
def test_mean_shift_ratio_to_kl_has_the_documented_mu_squared_coefficient(name):
    # D_f / KL = f''(1) + (f''(1)/2 + f'''(1) + f''''(1)/4) μ² + c₂ μ⁴ + O(μ⁶).
    ratio = sp.expand(mean_shift_series(name) / (MU**2 / 2))
    f2, c1, c2 = ratio.coeff(MU, 0), ratio.coeff(MU, 2), ratio.coeff(MU, 4)
    gen = GENERATORS[name]
    documented = gen.derivative_at_1(2) / 2 + gen.derivative_at_1(3) + gen.derivative_at_1(4) / 4
    assert sp.simplify(f2 - gen.derivative_at_1(2)) == 0
    assert sp.simplify(c1 - documented) == 0
    # Against the exact divergence: the measured coefficient approaches c₁ as c₂ μ² predicts.
    for mu in (0.02, 0.05):
        pair = GaussianPair(mu_p=mu)
        measured = (f_divergence(pair, name) / pair.kl_qp() - float(f2)) / mu**2
        assert abs(measured - float(c1) - float(c2) * mu**2) < 20 * mu**4


def test_the_first_order_formula_gets_the_mean_shift_coefficient_wrong():
    # (f''' + 2f'')/3 · m₃/m₂ with m₃/m₂ = 3μ² + O(μ⁴) predicts (f''' + 2f'')μ²: -1 for ½(log u)² and
    # +1/4 for squared Hellinger, where the truth is +1/4 and -1/32.
    for name, truth, first_order_only in (("half_log_sq", sp.Rational(1, 4), -1),
                                           ("hellinger", sp.Rational(-1, 32), sp.Rational(1, 4))):
        ratio = sp.expand(mean_shift_series(name) / (MU**2 / 2))
        assert ratio.coeff(MU, 2) == truth
        gen = GENERATORS[name]
        assert gen.derivative_at_1(3) + 2 * gen.derivative_at_1(2) == first_order_only


@pytest.mark.parametrize("name", SMOOTH)
def test_taylor_approximation_error_for_a_mean_shift(name):
    # Documented: D_f / (½ f''(1) χ²) - 1 = (f'''(1) + f''''(1)/4)/f''(1) · μ² + O(μ⁴),
    # with χ² = e^{μ²} - 1.
    gen = GENERATORS[name]
    f2 = hand_derivative_at_1(name, 2)
    relative_error = sp.series(mean_shift_series(name) / (f2 / 2 * (sp.exp(MU**2) - 1)) - 1, MU, 0, 5).removeO()
    documented = (gen.derivative_at_1(3) + gen.derivative_at_1(4) / 4) / gen.derivative_at_1(2)
    assert sp.simplify(relative_error.coeff(MU, 2) - documented) == 0
    mu = 0.02
    pair = GaussianPair(mu_p=mu)
    measured = f_divergence(pair, name) / taylor_approximation(pair, name) - 1
    assert abs(measured - float(relative_error.subs(MU, mu))) < 20 * mu**6 + 1e-12


@pytest.mark.parametrize("name", SMOOTH)
def test_first_order_coefficients_for_a_scale_change(name):
    # σ_p = 1 + δ: D_f / (½ f''(1) χ²) - 1 ≈ (4/3)(f'''/f'') δ and D_f / KL - f'' ≈ (4/3)(f''' + 2f'') δ.
    # The limits are extrapolated from δ = 1e-3 and 2e-3 (Richardson: the O(δ) term of e/δ cancels).
    f2, f3 = (float(hand_derivative_at_1(name, k)) for k in (2, 3))
    taylor_error, kl_error = {}, {}
    for delta in (1e-3, 2e-3):
        pair = GaussianPair(mu_p=0.0, sigma_p=1.0 + delta)
        value = f_divergence(pair, name)
        taylor_error[delta] = (value / taylor_approximation(pair, name) - 1) / delta
        kl_error[delta] = (value / pair.kl_qp() - f2) / delta
    extrapolated = {key: 2 * d[1e-3] - d[2e-3] for key, d in (("taylor", taylor_error), ("kl", kl_error))}
    assert extrapolated["taylor"] == pytest.approx(4 / 3 * f3 / f2, abs=1e-4)
    assert extrapolated["kl"] == pytest.approx(4 / 3 * (f3 + 2 * f2), abs=1e-4)
