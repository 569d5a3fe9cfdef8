r"""Tests for klviz.exact: exact moments against formulas derived here, mpmath quadrature and enumeration.

Derivations used below (x ~ q = N(μq, σq²), z ~ N(0, 1), x = μq + σq z):

    L = log r = a + b z + c z²,   s = σq/σp, d = (μq - μp)/σp,
    a = log s - d²/2,   b = -d s,   c = (1 - s²)/2.

Unit variances, gap μ (μq = 0, μp = μ): L ~ N(m, v) with m = -μ²/2, v = μ². Then, with E e^{tL} =
e^{tm + t²v/2} and Stein's lemma E[e^{tL} h(L)] = E e^{tL} · E_{N(m + tv, v)}[h]:

    k1 = -L:                    E = μ²/2,            Var = μ²
    k2 = L²/2:                  E = (v + m²)/2 = μ²/2 + μ⁴/8,
                                Var = (2v² + 4m²v)/4 = μ⁴/2 + μ⁶/4
    k3 = e^L - 1 - L:           E = μ²/2,            Var = Var e^L + Var L - 2 Cov(e^L, L)
                                                         = (e^{μ²} - 1) + μ² - 2μ² = e^{μ²} - 1 - μ²
    k1_pq = e^L L:         E = m + v = μ²/2,    Var = e^{μ²}(μ² + (3μ²/2)²) - μ⁴/4
    k3_pq = e^L (L - 1) + 1:
                                E = μ²/2,            Var = e^{μ²}((3μ²/2 - 1)² + μ²) - (μ²/2 - 1)²

General Gaussians: E_q[r²] = ∫ p²/q = σq² / (σp √(2σq² - σp²)) · exp((μp - μq)²/(2σq² - σp²)), infinite
when σp² ≥ 2σq²; Var(L) = b² + 2c²; Cov(r, L) = E_p[L] - E_q[r] E_q[L] = KL[p,q] + KL[q,p], so

    Var(k3) = (E r² - 1) + Var(L) - 2 (KL[q,p] + KL[p,q]),
    λ* = (KL[q,p] + KL[p,q]) / (E r² - 1),   Var(k_λ*) = Var(L) - (KL[q,p] + KL[p,q])² / (E r² - 1).

Everything else is checked against mpmath quadrature (30 digits) or brute-force sums (50 digits).
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from klviz import (
    CategoricalPair,
    ExactMoments,
    GaussianPair,
    ScipyPair,
    control_variate_moments,
    control_variate_variance,
    exact_moments,
    expected_r_squared,
    optimal_lambda,
)

MP = mpmath.MPContext()
MP.dps = 80  # the unit-variance formulas cancel ~24 digits at gap 1e-6
NAMES = ("k1", "k2", "k3", "k1_pq", "k3_pq")

ESTIMATOR_FORMULAS = {
    "k1": lambda L: -L,
    "k2": lambda L: L * L / 2,
    "k3": lambda L: MP.expm1(L) - L,
    "k1_pq": lambda L: MP.exp(L) * L,
    "k3_pq": lambda L: MP.exp(L) * L - MP.expm1(L),
}


def close(value, reference, rel):
    """|value - reference| <= rel |reference| (no absolute slack: tiny values must be right too)."""
    reference = MP.mpf(reference)
    return abs(MP.mpf(value) - reference) <= rel * abs(reference)


def unit_variance_moments(gap):
    """(mean, var) of every estimator for q = N(0, 1), p = N(gap, 1), from the formulas in the docstring."""
    mu = MP.mpf(gap)
    mu2 = mu * mu
    e = MP.exp(mu2)
    return {
        "k1": (mu2 / 2, mu2),
        "k2": (mu2 / 2 + mu2**2 / 8, mu2**2 / 2 + mu2**3 / 4),
        "k3": (mu2 / 2, MP.expm1(mu2) - mu2),
        "k1_pq": (mu2 / 2, e * (mu2 + (3 * mu2 / 2) ** 2) - mu2**2 / 4),
        "k3_pq": (mu2 / 2, e * ((3 * mu2 / 2 - 1) ** 2 + mu2) - (mu2 / 2 - 1) ** 2),
    }


def gaussian_parts(mu_p, sigma_p, mu_q, sigma_q):
    """KL[q,p], KL[p,q], E_q[r²], Var_q(L) in 80 digits, from the formulas in the docstring."""
    mu_p, sigma_p, mu_q, sigma_q = (MP.mpf(v) for v in (mu_p, sigma_p, mu_q, sigma_q))
    s = sigma_q / sigma_p
    d = (mu_q - mu_p) / sigma_p
    b, c = -d * s, (1 - s * s) / 2

    def kl(mu_1, sigma_1, mu_2, sigma_2):  # KL[N1 || N2]
        ratio2 = (sigma_1 / sigma_2) ** 2
        return ((mu_1 - mu_2) / sigma_2) ** 2 / 2 + (MP.expm1(MP.log(ratio2)) - MP.log(ratio2)) / 2

    denominator = 2 * sigma_q**2 - sigma_p**2
    if denominator <= 0:
        r2 = MP.inf
    else:
        r2 = sigma_q**2 / (sigma_p * MP.sqrt(denominator)) * MP.exp((mu_p - mu_q) ** 2 / denominator)
    return kl(mu_q, sigma_q, mu_p, sigma_p), kl(mu_p, sigma_p, mu_q, sigma_q), r2, b * b + 2 * c * c


def quadrature_moments(pair, name, dps=30):
    """(mean, var) of an estimator for a GaussianPair by mpmath quadrature of the densities over the real line."""
    with MP.workdps(dps):
        mu_p, sigma_p, mu_q, sigma_q = (MP.mpf(v) for v in (pair.mu_p, pair.sigma_p, pair.mu_q, pair.sigma_q))
        log_norm = MP.log(2 * MP.pi) / 2

        def log_density(x, mu, sigma):
            return -((x - mu) / sigma) ** 2 / 2 - MP.log(sigma) - log_norm

        g = ESTIMATOR_FORMULAS[name]
        points = [-MP.inf] + [mu_q + k * sigma_q for k in (-4, -1, 0, 1, 4)] + [MP.inf]

        def weighted(h):
            def integrand(x):
                log_q = log_density(x, mu_q, sigma_q)
                return MP.exp(log_q) * h(g(log_density(x, mu_p, sigma_p) - log_q))

            return MP.quad(integrand, points)

        mean = weighted(lambda v: v)
        var = weighted(lambda v: (v - mean) ** 2)
        return mean, var


# --------------------------------------------------------------------------------------------------
# Gaussian pairs: closed forms
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [1e-6, 1e-4, 0.01, 0.1, 0.5, 1.0, 2.0, 3.0, -0.7])
@pytest.mark.parametrize("name", NAMES)
def test_unit_variance_moments_match_derived_formulas(name, gap):
    moments = exact_moments(GaussianPair(mu_p=gap), name)
    mean, var = unit_variance_moments(gap)[name]
    assert moments.estimator == name
    assert close(moments.mean, mean, 1e-8), (moments.mean, mean)
    assert close(moments.var, var, 1e-8), (moments.var, var)
    assert close(moments.target, MP.mpf(gap) ** 2 / 2, 1e-12)  # KL[q,p] = KL[p,q] = μ²/2
    assert close(moments.std, MP.sqrt(var), 1e-8)


@pytest.mark.parametrize("gap", [1e-6, 0.1, 1.0, 2.5])
def test_relative_bias_and_std_closed_forms(gap):
    pair = GaussianPair(mu_p=gap, mu_q=0.0)
    # bias = mean - target is a difference of two doubles: relative bias is exact to ~1e-16 absolute
    expected = MP.mpf(gap) ** 2 / 4
    assert abs(exact_moments(pair, "k2").relative_bias - expected) <= 1e-8 * expected + 4e-16
    assert abs(exact_moments(pair, "k1").relative_bias) < 1e-12
    assert abs(exact_moments(pair, "k3").relative_bias) < 1e-8
    assert close(exact_moments(pair, "k1").relative_std, 2 / MP.mpf(gap), 1e-8)
    # shifting both means changes nothing
    shifted = exact_moments(GaussianPair(mu_p=gap + 3.0, mu_q=3.0), "k3")
    assert close(shifted.var, unit_variance_moments((gap + 3.0) - 3.0)["k3"][1], 1e-8)


GENERAL_PAIRS = [
    GaussianPair(mu_p=0.3, sigma_p=1.2, mu_q=-0.1, sigma_q=0.9),
    GaussianPair(mu_p=-0.5, sigma_p=0.7, mu_q=0.2, sigma_q=1.1),
]


@pytest.mark.parametrize("pair", GENERAL_PAIRS, ids=["wider_p", "narrower_p"])
@pytest.mark.parametrize("name", NAMES)
def test_general_gaussian_moments_match_quadrature(pair, name):
    mean, var = quadrature_moments(pair, name)
    moments = exact_moments(pair, name)
    assert close(moments.mean, mean, 1e-8)
    assert close(moments.var, var, 1e-8)


@pytest.mark.parametrize("name", ["k1", "k3", "k3_pq"])
def test_tiny_gap_with_unequal_variances_matches_quadrature(name):
    pair = GaussianPair(mu_p=1e-6, sigma_p=1.0 + 1e-6, mu_q=0.0, sigma_q=1.0)
    mean, var = quadrature_moments(pair, name, dps=40)
    moments = exact_moments(pair, name)
    assert moments.mean < 1e-11 and moments.var < 1e-10
    assert close(moments.mean, mean, 1e-8)
    assert close(moments.var, var, 1e-8)


@pytest.mark.parametrize(
    "params",
    [(0.3, 1.2, -0.1, 0.9), (-0.5, 0.7, 0.2, 1.1), (2.0, 1.3, 0.0, 1.0), (0.0, 0.2, 0.0, 1.0), (1e-5, 1.0, 0.0, 1.0)],
)
def test_general_gaussian_k1_k3_closed_forms(params):
    mu_p, sigma_p, mu_q, sigma_q = params
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    kl_qp, kl_pq, r2, var_l = gaussian_parts(*params)
    assert close(exact_moments(pair, "k1").mean, kl_qp, 1e-10)
    assert close(exact_moments(pair, "k1").var, var_l, 1e-8)
    assert close(exact_moments(pair, "k3").mean, kl_qp, 1e-10)
    assert close(exact_moments(pair, "k3").var, (r2 - 1) + var_l - 2 * (kl_qp + kl_pq), 1e-8)
    assert close(exact_moments(pair, "k1_pq").mean, kl_pq, 1e-10)
    assert close(exact_moments(pair, "k3_pq").target, kl_pq, 1e-10)
    assert close(expected_r_squared(pair), r2, 1e-10)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.floats(-3, 3), st.floats(0.2, 5), st.floats(-3, 3), st.floats(0.2, 5))
def test_k1_k3_unbiased_for_random_gaussian_pairs(mu_p, sigma_p, mu_q, sigma_q):
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    kl_qp, kl_pq, _, _ = gaussian_parts(mu_p, sigma_p, mu_q, sigma_q)
    if float(kl_qp) == 0:  # p = q, or a KL below the smallest double (mu_p = 1e-289 gives 1e-578)
        assert pair.kl_qp() == 0 and exact_moments(pair, "k3").mean == 0
        return
    for name in ("k1", "k3"):
        moments = exact_moments(pair, name)
        assert close(moments.mean, kl_qp, 1e-10), name
        assert close(moments.mean, pair.kl_qp(), 1e-10), name
        assert close(moments.target, kl_qp, 1e-10), name
    for name in ("k1_pq", "k3_pq"):
        assert close(exact_moments(pair, name).mean, kl_pq, 1e-10), name
    assert exact_moments(pair, "k2").var >= 0 and exact_moments(pair, "k3").var >= 0


# --------------------------------------------------------------------------------------------------
# Divergent moments are math.inf
# --------------------------------------------------------------------------------------------------


def test_var_k3_boundary_sigma_p_squared_twice_sigma_q_squared():
    sqrt2 = math.sqrt(2.0)
    below_sqrt2 = float(np.nextafter(sqrt2, 0.0))
    # √2 is not a float: the nearest float (1.4142135623730951) is just above it and the next one down
    # just below, so "exactly 2" is met from either side: σp² = 2.0000000000000004 σq² is divergent.
    assert MP.mpf(sqrt2) ** 2 > 2 and MP.mpf(below_sqrt2) ** 2 < 2
    for sigma_p, sigma_q in ((sqrt2, 1.0), (2.0, below_sqrt2), (1.5, 1.0), (3.0, 1.0), (2.0, 1.0)):
        pair = GaussianPair(mu_p=0.0, sigma_p=sigma_p, sigma_q=sigma_q)
        for name in ("k3", "k1_pq", "k3_pq"):
            var = exact_moments(pair, name).var
            assert var == math.inf and type(var) is float, (sigma_p, sigma_q, name)
        assert expected_r_squared(pair) == math.inf
        # the means, and k1/k2's variances (polynomials in z), stay finite
        assert math.isfinite(exact_moments(pair, "k3").mean)
        assert math.isfinite(exact_moments(pair, "k1_pq").mean)
        assert math.isfinite(exact_moments(pair, "k1").var) and math.isfinite(exact_moments(pair, "k2").var)
    # just below the boundary: finite, large, and equal to the closed form
    for sigma_p, sigma_q in ((below_sqrt2, 1.0), (2.0, sqrt2), (1.41, 1.0), (1.4, 1.0), (1.3, 1.0)):
        pair = GaussianPair(mu_p=0.0, sigma_p=sigma_p, sigma_q=sigma_q)
        kl_qp, kl_pq, r2, var_l = gaussian_parts(0.0, sigma_p, 0.0, sigma_q)
        var = exact_moments(pair, "k3").var
        assert math.isfinite(var)
        assert close(var, (r2 - 1) + var_l - 2 * (kl_qp + kl_pq), 1e-8), (sigma_p, sigma_q)
        assert close(expected_r_squared(pair), r2, 1e-8)
    assert exact_moments(GaussianPair(mu_p=0.0, sigma_p=below_sqrt2), "k3").var > 1e7


def test_t5_vs_normal_infinite_variances():
    # q = t(5), p = N(0, 1): k2 = (log r)²/2 ~ x⁴/8 needs E x⁸, which t(5) does not have
    heavy_q = ScipyPair(p=stats.norm(), q=stats.t(5))
    k2 = exact_moments(heavy_q, "k2")
    assert math.isfinite(k2.mean) and k2.var == math.inf
    assert math.isfinite(exact_moments(heavy_q, "k1").var)  # needs only E x⁴
    # p = t(5), q = N(0, 1): E_q[r²] = ∫ t5²/φ diverges, so Var(k3) = inf while its mean is KL
    heavy_p = ScipyPair(p=stats.t(5), q=stats.norm())
    k3 = exact_moments(heavy_p, "k3")
    assert k3.var == math.inf and type(k3.var) is float
    assert math.isfinite(k3.mean) and k3.mean == pytest.approx(k3.target, rel=1e-10, abs=0)
    assert expected_r_squared(heavy_p) == math.inf


def student_t_moments(df, name):
    """(mean, var) under q = t(df) of an estimator with p = N(0, 1), by 30-digit quadrature (symmetric)."""
    with MP.workdps(30):
        nu = MP.mpf(df)
        log_c_t = MP.loggamma((nu + 1) / 2) - MP.loggamma(nu / 2) - MP.log(nu * MP.pi) / 2
        log_c_n = -MP.log(2 * MP.pi) / 2
        g = ESTIMATOR_FORMULAS[name]

        def parts(x):
            log_q = log_c_t - (nu + 1) / 2 * MP.log1p(x * x / nu)
            return MP.exp(log_q), g(log_c_n - x * x / 2 - log_q)

        def integral(h):
            return 2 * MP.quad(lambda x: (lambda w, v: w * h(v))(*parts(x)), [0, 2, 8, 30, MP.inf])

        mean = integral(lambda v: v)
        return mean, integral(lambda v: (v - mean) ** 2)


@pytest.mark.parametrize("name", ["k1", "k2"])
def test_t10_vs_normal_finite_and_accurate(name):
    mean, var = student_t_moments(10, name)
    moments = exact_moments(ScipyPair(p=stats.norm(), q=stats.t(10)), name)
    assert close(moments.mean, mean, 1e-8)
    assert close(moments.var, var, 1e-8)


# --------------------------------------------------------------------------------------------------
# ScipyPair against GaussianPair
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [(1.0, 1.0, 0.0, 1.0), (0.1, 1.0, 0.0, 1.0), (0.3, 1.2, -0.1, 0.9), (-0.5, 0.7, 0.2, 1.1)]
)
def test_scipy_normal_pair_agrees_with_gaussian_pair(params):
    mu_p, sigma_p, mu_q, sigma_q = params
    gaussian = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    scipy_pair = ScipyPair(p=stats.norm(mu_p, sigma_p), q=stats.norm(mu_q, sigma_q))
    for name in NAMES:
        a, b = exact_moments(scipy_pair, name), exact_moments(gaussian, name)
        assert a.mean == pytest.approx(b.mean, rel=1e-9, abs=0), name
        assert a.var == pytest.approx(b.var, rel=1e-9, abs=0), name
        assert a.target == pytest.approx(b.target, rel=1e-9, abs=0), name
    assert expected_r_squared(scipy_pair) == pytest.approx(expected_r_squared(gaussian), rel=1e-9, abs=0)


def test_scipy_exponential_moments_closed_form():
    # q = Exp(λq), p = Exp(λp): L = log(λp/λq) - (λp - λq) x, so Var(k1) = (λp - λq)²/λq²,
    # E_q r² = (λp/λq)² λq/(2λp - λq), and Var(k3) from the docstring identity.
    lp, lq = MP.mpf(2), MP.mpf("0.5")
    pair = ScipyPair(p=stats.expon(scale=0.5), q=stats.expon(scale=2.0))
    kl_qp = MP.log(lq / lp) + lp / lq - 1
    kl_pq = MP.log(lp / lq) + lq / lp - 1
    var_l = (lp - lq) ** 2 / lq**2
    r2 = (lp / lq) ** 2 * lq / (2 * lp - lq)
    assert close(exact_moments(pair, "k1").var, var_l, 1e-9)
    assert close(exact_moments(pair, "k3").var, (r2 - 1) + var_l - 2 * (kl_qp + kl_pq), 1e-9)
    assert close(expected_r_squared(pair), r2, 1e-9)
    # 2λp ≤ λq: E_q r² diverges
    assert exact_moments(ScipyPair(p=stats.expon(scale=2.0), q=stats.expon(scale=0.5)), "k3").var == math.inf


def test_scipy_near_variance_boundary_is_accurate_or_flags_it():
    pair = ScipyPair(p=stats.norm(0.3, 1.4), q=stats.norm())
    _, _, r2, _ = gaussian_parts(0.3, 1.4, 0.0, 1.0)
    assert close(expected_r_squared(pair), r2, 1e-8)


# --------------------------------------------------------------------------------------------------
# Categorical pairs: brute-force enumeration in mpmath
# --------------------------------------------------------------------------------------------------


def enumerate_moments(p_logits, q_logits, name):
    """(mean, var) of an estimator by summing over the vocabulary in 50 digits; inf where divergent."""
    with MP.workdps(50):

        def log_softmax(logits):
            finite = [MP.mpf(v) for v in logits if v != -np.inf]
            log_z = MP.log(MP.fsum(MP.exp(v) for v in finite))
            return [None if v == -np.inf else MP.mpf(v) - log_z for v in logits]

        log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
        weights, values = [], []
        for lp, lq in zip(log_p, log_q):
            if lq is None:
                continue  # q never produces this token
            weights.append(MP.exp(lq))
            if lp is None:  # r = 0, log r = -inf
                limit = {"k1": MP.inf, "k2": MP.inf, "k3": MP.inf, "k1_pq": 0, "k3_pq": 1}[name]
                values.append(MP.mpf(limit))
            else:
                values.append(ESTIMATOR_FORMULAS[name](lp - lq))
        if any(MP.isinf(v) for v in values):
            return MP.inf, MP.inf
        mean = MP.fsum(w * v for w, v in zip(weights, values))
        return mean, MP.fsum(w * (v - mean) ** 2 for w, v in zip(weights, values))


CATEGORICAL_CASES = {
    "small": ([0.0, 1.0, 2.0, -1.0], [1.0, 0.0, 0.5, 0.2]),
    "q_zero_token": ([0.0, 1.0, 0.5], [0.0, 0.3, -np.inf]),  # p has mass q never samples: k3 biased
    "p_zero_token": ([0.0, -np.inf, 0.5], [0.0, 0.3, 0.1]),  # KL[q,p] = inf; reverse finite
    "large_logits": ([1000.0, 1002.0, 999.0, 1001.0], [1001.0, 1000.0, 1000.0, 1003.0]),
    "close": ([0.0, 1e-4, -2e-4, 3e-4], [0.0, 0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("case", sorted(CATEGORICAL_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_categorical_moments_match_enumeration(case, name):
    p_logits, q_logits = CATEGORICAL_CASES[case]
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    mean, var = enumerate_moments(p_logits, q_logits, name)
    moments = exact_moments(pair, name)
    if MP.isinf(mean):
        assert moments.mean == math.inf and moments.var == math.inf
    else:
        assert close(moments.mean, mean, 1e-10), (moments.mean, mean)
        assert close(moments.var, var, 1e-9), (moments.var, var)


def test_categorical_targets():
    p_logits, q_logits = CATEGORICAL_CASES["q_zero_token"]
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    k3 = exact_moments(pair, "k3")
    # E_q[r - 1] = -(p's mass where q = 0), so k3 is biased by exactly that mass here
    p_mass_outside = math.exp(0.5) / (1 + math.e + math.exp(0.5))
    assert k3.bias == pytest.approx(-p_mass_outside, rel=1e-12, abs=0)
    assert exact_moments(pair, "k1").bias == pytest.approx(0.0, abs=1e-15)
    assert exact_moments(pair, "k3_pq").target == math.inf


# --------------------------------------------------------------------------------------------------
# The control-variate family and the optimal λ
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [(1.0, 1.0, 0.0, 1.0), (0.1, 1.0, 0.0, 1.0), (0.3, 1.2, -0.1, 0.9), (-0.5, 0.7, 0.2, 1.1), (1e-3, 1.0, 0.0, 1.0)]
)
def test_optimal_lambda_closed_form_and_grid(params):
    pair = GaussianPair(*params)
    kl_qp, kl_pq, r2, var_l = gaussian_parts(*params)
    best = optimal_lambda(pair)
    assert close(best.lam, (kl_qp + kl_pq) / (r2 - 1), 1e-8)
    assert close(best.var, var_l - (kl_qp + kl_pq) ** 2 / (r2 - 1), 1e-6)
    assert close(best.var_k1, var_l, 1e-8)
    assert close(best.var_k3, exact_moments(pair, "k3").var, 1e-8)
    assert best.var <= best.var_k3 and best.var <= best.var_k1
    # brute force: minimise the exact variance over a fine grid around λ*
    grid = np.linspace(best.lam - 0.5, best.lam + 0.5, 100_001)
    variances = control_variate_variance(pair, grid)
    assert variances.shape == grid.shape
    assert abs(grid[np.argmin(variances)] - best.lam) <= 1e-5 + 1e-12
    assert best.var <= variances.min() * (1 + 1e-12)
    # λ = 0 is k1 and λ = 1 is k3
    assert close(control_variate_variance(pair, 1.0), exact_moments(pair, "k3").var, 1e-8)
    assert close(control_variate_variance(pair, 0.0), exact_moments(pair, "k1").var, 1e-10)
    assert isinstance(control_variate_variance(pair, 0.5), float)


@pytest.mark.parametrize("gap", [1e-5, 1e-6])
def test_control_variate_variance_tiny_gap(gap):
    pair = GaussianPair(mu_p=gap)
    var_k3 = unit_variance_moments(gap)["k3"][1]
    assert close(control_variate_variance(pair, 1.0), var_k3, 1e-8)
    assert close(optimal_lambda(pair).var_k3, var_k3, 1e-8)


def test_unit_variance_optimal_lambda():
    # (μ²/2 + μ²/2) / (e^{μ²} - 1) — the docstring's example value at μ = 1
    assert optimal_lambda(GaussianPair(mu_p=1.0)).lam == pytest.approx(1 / (math.e - 1), rel=1e-14, abs=0)


def test_control_variate_variance_against_enumeration():
    p_logits, q_logits = CATEGORICAL_CASES["small"]
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    log_p = np.array(p_logits) - math.log(sum(math.exp(v) for v in p_logits))
    log_q = np.array(q_logits) - math.log(sum(math.exp(v) for v in q_logits))
    q, log_r = np.exp(log_q), log_p - log_q
    for lam in (-1.0, 0.0, 0.4, 1.0, 2.0):
        values = [MP.mpf(float(-x)) + lam * MP.expm1(MP.mpf(float(x))) for x in log_r]
        mean = MP.fsum(MP.mpf(float(w)) * v for w, v in zip(q, values))
        var = MP.fsum(MP.mpf(float(w)) * (v - mean) ** 2 for w, v in zip(q, values))
        assert close(control_variate_variance(pair, lam), var, 1e-9)
        moments = control_variate_moments(pair, lam)
        assert close(moments.mean, mean, 1e-10) and close(moments.mean, pair.kl_qp(), 1e-10)
        assert close(moments.var, var, 1e-9)
    best = optimal_lambda(pair)
    grid = np.linspace(-1, 3, 40_001)
    assert abs(grid[np.argmin(control_variate_variance(pair, grid))] - best.lam) <= 1e-4


def test_optimal_lambda_when_var_r_is_infinite_or_zero():
    heavy = GaussianPair(mu_p=0.0, sigma_p=2.0)  # σp² = 4 ≥ 2: E r² = inf
    best = optimal_lambda(heavy)
    assert best.lam == 0.0 and best.var_k3 == math.inf and best.var == best.var_k1 < math.inf
    np.testing.assert_array_equal(control_variate_variance(heavy, [0.0, 0.5, 1.0])[1:], [math.inf, math.inf])
    same = optimal_lambda(GaussianPair(mu_p=0.0))
    assert same.var == 0.0 and same.var_k1 == 0.0


def test_control_variate_variance_validation():
    pair = GaussianPair(mu_p=1.0)
    with pytest.raises(ValueError, match="lam"):
        control_variate_variance(pair, math.nan)
    with pytest.raises(TypeError, match="lam"):
        control_variate_variance(pair, "1")
    with pytest.raises(TypeError, match="lam"):
        control_variate_variance(pair, True)


# --------------------------------------------------------------------------------------------------
# API: validation, result type
# --------------------------------------------------------------------------------------------------


def test_exact_moments_validation():
    pair = GaussianPair(mu_p=1.0)
    with pytest.raises(ValueError, match=r"estimator must be one of \['k1', 'k1_pq', 'k2', 'k3', 'k3_pq'\]"):
        exact_moments(pair, "k4")
    with pytest.raises(TypeError, match="estimator"):
        exact_moments(pair, 3)
    with pytest.raises(TypeError, match="pair must be"):
        exact_moments("pair", "k1")
    with pytest.raises(TypeError, match="pair must be"):
        optimal_lambda(None)


def test_exact_moments_result():
    m = exact_moments(GaussianPair(mu_p=1.0), "k2")
    assert isinstance(m, ExactMoments)
    assert m.mean == pytest.approx(0.625, rel=1e-15, abs=0) and m.var == pytest.approx(0.75, rel=1e-15, abs=0)
    assert m.bias == pytest.approx(0.125, rel=1e-14, abs=0)
    assert m.relative_std == pytest.approx(math.sqrt(0.75) / 0.5, rel=1e-14, abs=0)
    assert "k2" in repr(m) and "bias/true=0.25" in repr(m)
    with pytest.raises(AttributeError):
        m.mean = 1.0
    zero = exact_moments(GaussianPair(mu_p=0.0), "k1")
    assert zero.mean == 0.0 and zero.var == 0.0 and math.isnan(zero.relative_bias)


# --------------------------------------------------------------------------------------------------
# Regressions from the code review
# --------------------------------------------------------------------------------------------------


def test_expected_r_squared_when_p_has_mass_outside_q():
    # E_q[r²] = Σ_q p²/q, not 1 + Var(r), when E_q[r] < 1: p uniform on 3 tokens, q uniform on 2
    pair = CategoricalPair(p_logits=[0.0, 0.0, 0.0], q_logits=[0.0, 0.0, -np.inf])
    assert expected_r_squared(pair) == pytest.approx(2 * (1 / 3) ** 2 / (1 / 2), rel=1e-14)
    scipy_pair = ScipyPair(p=stats.norm(), q=stats.uniform(-1, 2))
    reference = mpmath.quad(lambda x: mpmath.npdf(x) ** 2 / 0.5, [-1, 1])
    assert close(expected_r_squared(scipy_pair), reference, 1e-9)


def test_reverse_estimators_across_a_support_edge():
    # log r jumps to -inf at x = ±1 inside p's support; quadrature used to fail to converge there
    pair = ScipyPair(p=stats.norm(), q=stats.uniform(-1, 2))
    reference = mpmath.quad(lambda x: mpmath.npdf(x) * (mpmath.log(mpmath.npdf(x)) - mpmath.log(0.5)), [-1, 1])
    assert close(exact_moments(pair, "k1_pq").mean, reference, 1e-9)


def test_scipy_kl_needs_only_the_mean():
    # Var(k1) is barely integrable for q = t(4.05) against a normal; the KL itself is fine
    pair = ScipyPair(p=stats.norm(), q=stats.t(4.05))
    nu = mpmath.mpf("4.05")
    log_c = mpmath.loggamma((nu + 1) / 2) - mpmath.loggamma(nu / 2) - mpmath.log(nu * mpmath.pi) / 2

    def log_q(x):  # Student t density, written out
        return log_c - (nu + 1) / 2 * mpmath.log1p(x * x / nu)

    reference = mpmath.quad(lambda x: mpmath.exp(log_q(x)) * (log_q(x) + x * x / 2 + mpmath.log(2 * mpmath.pi) / 2),
                            [-mpmath.inf, -20, 0, 20, mpmath.inf])
    assert close(pair.kl_qp(), reference, 1e-7)


def test_k3_pq_variance_diverges_for_a_heavier_p():
    # the tail test's magnitude cancelled to NaN for r log r - r at huge log r
    assert exact_moments(ScipyPair(p=stats.t(5, loc=0.5), q=stats.norm()), "k3_pq").var == math.inf


def test_control_variate_moments_validates_and_keeps_the_bias():
    pair = CategoricalPair(p_logits=[0.0, 0.0, 0.0], q_logits=[0.0, 0.0, -np.inf])
    moments = control_variate_moments(pair, 1.0)
    assert moments.mean == pytest.approx(pair.kl_qp() - 1 / 3, rel=1e-14)  # k3 is biased by E[r - 1] = -1/3
    with pytest.raises(ValueError, match="lam must be finite"):
        control_variate_variance(GaussianPair(mu_p=1.0), math.inf)
    with pytest.raises(ValueError, match="lam must be a single number"):
        control_variate_moments(GaussianPair(mu_p=1.0), [0.5, 1.0])


def test_a_logpdf_that_underflows_in_the_far_tail_is_not_a_divergence():
    # laplace.logpdf(1e50) is -inf (underflow) although 1e50 is inside its support; the x-scale tail test
    # read that as log r = -inf and called KL[q,p] infinite. KL = log 2 + E|x| - ½ log 2π - ½.
    pair = ScipyPair(p=stats.laplace(), q=stats.norm())
    kl = math.log(2) + math.sqrt(2 / math.pi) - 0.5 * math.log(2 * math.pi) - 0.5
    assert close(pair.kl_qp(), kl, 1e-10)
    assert close(exact_moments(pair, "k3").mean, kl, 1e-10)


def test_categorical_moments_where_q_underflows_and_r_overflows():
    # q(token 0) = e^-800 / Z underflows to 0 and r = p/q to inf there; q·r = p is what counts.
    pair = CategoricalPair(p_logits=[5.0, 0.0, 0.0], q_logits=[-800.0, 0.0, 0.0])
    with MP.workdps(50):
        lq = [MP.mpf(-800), MP.mpf(0), MP.mpf(0)]
        lp = [MP.mpf(5), MP.mpf(0), MP.mpf(0)]
        zq, zp = MP.fsum(MP.exp(v) for v in lq), MP.fsum(MP.exp(v) for v in lp)
        kl = MP.fsum(MP.exp(a) / zq * ((a - MP.log(zq)) - (b - MP.log(zp))) for a, b in zip(lq, lp))
    assert close(pair.kl_qp(), kl, 1e-12)
    assert close(exact_moments(pair, "k3").mean, kl, 1e-12)
    assert close(exact_moments(pair, "k1").mean, kl, 1e-12)


# --------------------------------------------------------------------------------------------------
# Issue 10: finite values beyond float64, biases without cancellation, clear errors
# --------------------------------------------------------------------------------------------------


def test_a_finite_variance_beyond_float64_keeps_its_magnitude():
    # Var k3 at gap μ = 30 is e^{900} - 1 - 900 ≈ 10^390.865: finite, but beyond float64
    moments = exact_moments(GaussianPair(mu_p=30.0), "k3")
    assert moments.var == math.inf and moments.var_overflows and not moments.var_diverges
    assert moments.log10_var == pytest.approx(900 / math.log(10), rel=1e-12)
    assert "beyond float64" in repr(moments)
    divergent = exact_moments(GaussianPair(mu_p=0.0, sigma_p=2.0), "k3")  # σ_p² ≥ 2σ_q²
    assert divergent.var == math.inf and divergent.var_diverges and not divergent.var_overflows


@pytest.mark.parametrize("gap", [1e-7, 1e-4, 0.1])
def test_k2_bias_at_small_gaps_is_exact(gap):
    # bias = μ⁴/8 exactly, relative bias μ²/4: was 2.524e-15 instead of 2.5e-15 at gap 1e-7
    moments = exact_moments(GaussianPair(mu_p=gap), "k2")
    assert moments.bias == pytest.approx(gap**4 / 8, rel=1e-12)
    assert moments.relative_bias == pytest.approx(gap**2 / 4, rel=1e-12)
    assert exact_moments(GaussianPair(mu_p=gap), "k3").bias == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(mu_p=0.0, sigma_p=1e-300), "sigma_q / sigma_p must lie in"),
    (dict(mu_p=0.0, sigma_q=1e-200), "sigma_q / sigma_p must lie in"),
    (dict(mu_p=1e160), r"\|mu_q - mu_p\| / sigma_p must be at most"),
])
def test_gaussian_pairs_beyond_float64_are_refused_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianPair(**kwargs)


@pytest.mark.parametrize("bad", [None, "N(0,1)", 3.0])
def test_exact_functions_name_the_pair(bad):
    for function in (exact_moments, optimal_lambda, expected_r_squared):
        args = (bad, "k1") if function is exact_moments else (bad,)
        with pytest.raises(TypeError, match="pair must be a klviz pair"):
            function(*args)
