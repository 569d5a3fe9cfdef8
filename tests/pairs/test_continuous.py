"""ScipyPair on the inputs an adversarial run found wrong (issue 10), each against an independent reference.

References are mpmath quadratures of densities written out here (50 digits, split at kinks and edges),
or closed forms; the code under test only ever sees scipy's frozen distributions.
"""

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from klviz import ESTIMATORS, ScipyPair, exact_moments, optimal_lambda

mp.mp.dps = 40
K1, K3 = ESTIMATORS["k1"], ESTIMATORS["k3"]


def rel_err(value, reference):
    reference = float(reference)
    return abs(value - reference) / abs(reference)


# log-densities in mpmath, and where they have kinks or edges
def mp_norm(loc=0, scale=1):
    return lambda x: -((x - loc) / scale) ** 2 / 2 - mp.log(scale * mp.sqrt(2 * mp.pi))


def mp_laplace(loc=0, scale=1):
    return lambda x: -abs(x - loc) / scale - mp.log(2 * scale)


def mp_t(nu, loc=0):
    nu = mp.mpf(nu)
    c = mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2) - mp.log(mp.sqrt(nu * mp.pi))
    return lambda x: c - (nu + 1) / 2 * mp.log(1 + (x - loc) ** 2 / nu)


def mp_beta(a, b):
    a, b = mp.mpf(a), mp.mpf(b)
    c = -mp.log(mp.beta(a, b))
    return lambda x: c + (a - 1) * mp.log(x) + (b - 1) * mp.log(1 - x)


def mp_gamma(a, scale=1):
    a, scale = mp.mpf(a), mp.mpf(scale)
    return lambda x: (a - 1) * mp.log(x / scale) - x / scale - mp.loggamma(a) - mp.log(scale)


def mp_vonmises(kappa):
    log_normaliser = mp.log(2 * mp.pi * mp.besseli(0, kappa))
    return lambda x: kappa * mp.cos(x) - log_normaliser


def reference_kl(log_q, log_p, points):
    """KL[q, p] = ∫ q log(q/p) over the points (the q support's ends first and last)."""
    return mp.quad(lambda x: mp.exp(log_q(x)) * (log_q(x) - log_p(x)), points)


CASES = {
    # name: (p, q, mpmath log p, mpmath log q, integration points over q's support)
    "beta(2,2)‖uniform": (stats.beta(2, 2), stats.uniform(), mp_beta(2, 2), lambda x: 0, [0, 0.5, 1]),
    "beta(.5,.5)‖uniform": (stats.beta(0.5, 0.5), stats.uniform(), mp_beta(0.5, 0.5), lambda x: 0, [0, 0.5, 1]),
    "uniform‖beta(.5,.5)": (stats.uniform(), stats.beta(0.5, 0.5), lambda x: 0, mp_beta(0.5, 0.5), [0, 0.5, 1]),
    "triang(.5)‖uniform": (stats.triang(0.5), stats.uniform(),
                           lambda x: mp.log(4 * x) if x < 0.5 else mp.log(4 * (1 - x)), lambda x: 0, [0, 0.5, 1]),
    "expon‖gamma(.5)": (stats.expon(), stats.gamma(0.5), lambda x: -x, mp_gamma(0.5), [0, 1, mp.inf]),
    "vonmises(2)‖vonmises(1)": (stats.vonmises(2), stats.vonmises(1), mp_vonmises(2), mp_vonmises(1),
                                [-mp.pi, 0, mp.pi]),
    "laplace(1)‖laplace": (stats.laplace(1), stats.laplace(), mp_laplace(1), mp_laplace(), [-mp.inf, 0, 1, mp.inf]),
    "laplace(1,2)‖laplace": (stats.laplace(1, 2), stats.laplace(), mp_laplace(1, 2), mp_laplace(),
                             [-mp.inf, 0, 1, mp.inf]),
    "laplace(.5)‖norm": (stats.laplace(0.5), stats.norm(), mp_laplace(0.5), mp_norm(), [-mp.inf, 0, 0.5, mp.inf]),
    "norm‖laplace(.5)": (stats.norm(), stats.laplace(0.5), mp_norm(), mp_laplace(0.5), [-mp.inf, 0, 0.5, mp.inf]),
    "t(1.0001)‖cauchy": (stats.t(1.0001), stats.cauchy(), mp_t(1.0001), mp_t(1), [-mp.inf, -1, 0, 1, mp.inf]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kl_at_finite_edges_and_kinks_matches_mpmath(name):
    p, q, log_p, log_q, points = CASES[name]
    pair = ScipyPair(p=p, q=q)
    reference = reference_kl(log_q, log_p, points)
    assert rel_err(pair.kl_qp(), reference) < 1e-8, (pair.kl_qp(), reference)
    # the other direction, with the roles swapped in the reference too
    support = [pt for pt in points]
    assert rel_err(pair.kl_pq(), reference_kl(log_p, log_q, support)) < 1e-8


def test_closed_forms_of_two_cases():
    # KL[uniform ‖ beta(2,2)] = 2 - log 6 (the statement) and KL between Laplaces a unit apart = e^-1
    assert rel_err(ScipyPair(p=stats.beta(2, 2), q=stats.uniform()).kl_qp(), 2 - math.log(6)) < 1e-12
    assert rel_err(ScipyPair(p=stats.laplace(1), q=stats.laplace()).kl_qp(), math.exp(-1)) < 1e-12


@pytest.mark.parametrize("name", ["laplace(1)‖laplace", "laplace(.5)‖norm", "norm‖laplace(.5)", "t(1.0001)‖cauchy"])
def test_variances_and_optimal_lambda_at_kinks(name):
    p, q, log_p, log_q, points = CASES[name]
    pair = ScipyPair(p=p, q=q)
    kl = reference_kl(log_q, log_p, points)
    var_k1 = mp.quad(lambda x: mp.exp(log_q(x)) * (log_q(x) - log_p(x) - kl) ** 2, points)
    assert rel_err(exact_moments(pair, "k1").var, var_k1) < 1e-8
    best = optimal_lambda(pair)  # raised ArithmeticError at the kinks before
    assert math.isfinite(best.lam) and best.var <= best.var_k1 * (1 + 1e-12)


def test_var_k3_diverges_where_p_has_the_heavier_exponential_tail():
    # E_q[r²] = ∫ p²/q: laplace(1, 2)² / laplace ~ e^{-|x|} / e^{-|x|} does not decay; normal q, laplace p: e^{x²/2}
    assert exact_moments(ScipyPair(p=stats.laplace(1, 2), q=stats.laplace()), "k3").var_diverges
    assert exact_moments(ScipyPair(p=stats.laplace(0.5), q=stats.norm()), "k3").var_diverges


@pytest.mark.parametrize("dist", [stats.norm(0, -1), stats.norm(np.nan), stats.gamma(-1.0), stats.beta(0, 1)])
def test_invalid_frozen_distributions_are_rejected(dist):
    with pytest.raises(ValueError, match="invalid parameters"):
        ScipyPair(p=dist, q=stats.norm())
    with pytest.raises(ValueError, match="q has invalid parameters"):
        ScipyPair(p=stats.norm(), q=dist)


@pytest.mark.parametrize("p, q, kl", [
    (stats.norm(1e-6), stats.norm(), 1e-12 / 2),
    (stats.norm(1e-8), stats.norm(), 1e-16 / 2),
    (stats.t(5, loc=1e-6), stats.t(5), None),
    (stats.gamma(2), stats.gamma(2, scale=1 + 1e-6), None),
])
def test_close_pairs_keep_eight_digits(p, q, kl):
    pair = ScipyPair(p=p, q=q)
    if kl is None:
        if p.dist.name == "t":
            log_p, log_q, points = mp_t(5, loc=mp.mpf("1e-6")), mp_t(5), [-mp.inf, 0, mp.inf]
        else:
            log_p, log_q, points = mp_gamma(2), mp_gamma(2, scale=1 + mp.mpf("1e-6")), [0, 2, mp.inf]
        with mp.workdps(60):
            kl = reference_kl(log_q, log_p, points)
    assert rel_err(exact_moments(pair, "k1").mean, kl) < 1e-8
    assert rel_err(exact_moments(pair, "k3").mean, kl) < 1e-8


def test_divergence_next_to_an_interior_support_edge_is_inf():
    # KL[p, q] for p = N(0, 1), q = Lévy on (0, ∞): p has mass where q = 0.
    pair = ScipyPair(p=stats.norm(), q=stats.levy())
    assert pair.kl_pq() == math.inf
    assert pair.kl_qp() == math.inf  # and E_q[log q/p] diverges at the Lévy density's own tail


def test_a_barely_finite_variance_under_a_power_law_tail():
    # q = t(4.01), p = N(0, 1): E_q[k1] is finite and easy, Var k1 needs E[x⁴] = 3ν²/((ν-2)(ν-4)) = 2400.6.
    pair = ScipyPair(p=stats.norm(), q=stats.t(4.01))
    log_p, log_q = mp_norm(), mp_t(4.01)
    kl = reference_kl(log_q, log_p, [-mp.inf, 0, mp.inf])
    moments = exact_moments(pair, "k1")
    assert rel_err(moments.mean, kl) < 1e-10
    # the variance is dominated by x⁴/4 far out: compare with the t moments in closed form
    nu = mp.mpf("4.01")
    c = mp.log(mp.sqrt(2 * mp.pi))
    # k1 = log q - log p = x²/2 + c' - (ν+1)/2 log(1 + x²/ν): Var is finite; its leading part is E[x⁴]/4 - (E x²)²/4
    lead = (3 * nu**2 / ((nu - 2) * (nu - 4))) / 4 - (nu / (nu - 2)) ** 2 / 4
    assert 0.9 * float(lead) < moments.var < float(lead), (moments.var, lead)  # the log terms only lower it
    assert math.isfinite(moments.var) and c > 0
