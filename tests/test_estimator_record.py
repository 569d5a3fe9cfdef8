"""One Estimator record, used everywhere with no edit to klviz (issue 10): a user's clamped k3, an estimator
whose name lies about what it computes, and the record's own checks.

References: mpmath quadrature over the pair's densities, exact enumeration over a vocabulary, Monte Carlo
within standard errors, and finite differences of an objective written out here.
"""

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

import klviz
from klviz import CategoricalPair, Estimator, ExpPolynomial, GaussianPair, ScipyPair, exact_moments, k2, k3, simulate
from klviz.gradients import expected_gradient

mp.mp.dps = 30
CAP = 10.0


def clip_value(logr):
    return np.minimum(k3(np.asarray(logr, dtype=np.float64)), CAP)


def clip_derivative(logr):
    logr = np.asarray(logr, dtype=np.float64)
    return np.where(k3(logr) < CAP, np.expm1(logr), 0.0)


def _kinks():
    # the two log-ratios where e^L - 1 - L = 10
    from scipy.optimize import brentq

    f = lambda x: math.expm1(x) - x - CAP  # noqa: E731
    return (brentq(f, -20, -1), brentq(f, 0.5, 5))


CLIPPED = Estimator("k3_clip10", value=clip_value, derivative=clip_derivative, kinks=_kinks())


def mp_clip(L):
    return min(mp.expm1(L) - L, CAP)


def test_clipped_k3_exact_moments_on_a_gaussian_pair():
    pair = GaussianPair(mu_p=2.0, sigma_p=1.3)  # p wide enough that the cap binds in both tails
    a, b, c = (mp.mpf(v) for v in pair.quadratic)
    phi = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
    L = lambda z: a + b * z + c * z * z  # noqa: E731
    zs = sorted(float(z) for kink in CLIPPED.kinks for z in np.roots([float(c), float(b), float(a) - kink]).real)
    points = [-mp.inf, *zs, mp.inf]
    mean = mp.quad(lambda z: phi(z) * mp_clip(L(z)), points)
    var = mp.quad(lambda z: phi(z) * (mp_clip(L(z)) - mean) ** 2, points)
    moments = exact_moments(pair, CLIPPED)
    assert moments.estimator == "k3_clip10"
    assert abs(moments.mean - float(mean)) <= 1e-9 * float(mean)
    assert abs(moments.var - float(var)) <= 1e-9 * float(var)
    # clamping biases it low against KL[q, p], which it targets by default
    assert moments.target == pair.kl_qp() and moments.bias < 0


def test_clipped_k3_exact_moments_on_a_scipy_pair():
    pair = ScipyPair(p=stats.t(3, loc=1.0), q=stats.norm())
    log_p = lambda x: (mp.loggamma(2) - mp.loggamma(1.5) - mp.log(mp.sqrt(3 * mp.pi))  # noqa: E731
                       - 2 * mp.log(1 + (x - 1) ** 2 / 3))
    log_q = lambda x: -x * x / 2 - mp.log(mp.sqrt(2 * mp.pi))  # noqa: E731
    f = lambda x: mp.exp(log_q(x)) * mp_clip(log_p(x) - log_q(x))  # noqa: E731
    # the reference splits where the clamp binds: k3(L(x)) = 10, bracketed on a grid and refined by mpmath
    grid = np.linspace(-12, 12, 2401)
    g = [float(mp.expm1(log_p(x) - log_q(x)) - (log_p(x) - log_q(x)) - CAP) for x in grid]
    corners = [mp.findroot(lambda x: mp.expm1(log_p(x) - log_q(x)) - (log_p(x) - log_q(x)) - CAP, (grid[i], grid[i + 1]),
                           solver="bisect") for i in range(len(grid) - 1) if g[i] * g[i + 1] < 0]
    assert len(corners) == 2
    mean = mp.quad(f, sorted([-mp.inf, 0, 1, *corners, mp.inf]))
    assert abs(exact_moments(pair, CLIPPED).mean - float(mean)) <= 1e-9 * float(mean)


def test_clipped_k3_exact_moments_on_a_categorical_pair():
    pair = CategoricalPair(p_logits=[0.0, 4.0, -3.0, 1.0], q_logits=[2.0, -2.0, 0.0, 0.5])
    q = [mp.exp(v) for v in pair.log_q]
    L = [mp.mpf(v) for v in pair.log_ratio_table]
    mean = mp.fsum(qi * mp_clip(li) for qi, li in zip(q, L))
    var = mp.fsum(qi * (mp_clip(li) - mean) ** 2 for qi, li in zip(q, L))
    moments = exact_moments(pair, CLIPPED)
    assert abs(moments.mean - float(mean)) <= 1e-14 * float(mean)
    assert abs(moments.var - float(var)) <= 1e-13 * float(var)


def test_clipped_k3_in_simulate_within_standard_errors():
    pair = GaussianPair(mu_p=2.0, sigma_p=1.3)
    result = simulate(pair, 200_000, rng=3, estimators=("k3", CLIPPED))
    exact = exact_moments(pair, CLIPPED)
    estimate = result["k3_clip10"]
    assert abs(estimate.mean - exact.mean) < 4 * estimate.stderr
    assert abs(estimate.std / exact.std - 1) < 0.02


def test_clipped_k3_expected_gradient_as_a_loss_matches_finite_differences():
    # As a loss, autodiff differentiates k(L_θ(x)) at fixed samples x ~ q_θ0: the objective is
    # F(θ) = Σ_x q_θ0(x) k(log p(x) - log q_θ(x)), whose gradient at θ0 is the expected pathwise gradient.
    theta0 = np.array([-3.0, -1.0, 2.5, 0.0])
    ref = np.array([7.0, 0.5, -4.0, 0.2])  # far enough apart that the cap binds on some tokens

    def log_softmax(v):
        return v - np.logaddexp.reduce(v)

    q0 = np.exp(log_softmax(theta0))

    def objective(theta):
        return float(np.sum(q0 * clip_value(log_softmax(ref) - log_softmax(theta))))

    step = 1e-6
    numeric = np.array([(objective(theta0 + step * e) - objective(theta0 - step * e)) / (2 * step)
                        for e in np.eye(4)])
    assert np.any(k3(log_softmax(ref) - log_softmax(theta0)) > CAP)
    np.testing.assert_allclose(expected_gradient(theta0, ref, CLIPPED, "loss"), numeric, atol=1e-8)


def test_an_estimator_is_what_it_computes_not_what_it_is_called():
    # Before the redesign a record named "k1" that computes k2 got KL back from a categorical pair.
    liar = Estimator("k1", value=k2, derivative=lambda L: np.asarray(L, dtype=np.float64))
    pair = CategoricalPair(p_logits=[0.0, 1.0, -1.0], q_logits=[0.5, 0.0, 0.0])
    expected = float(np.sum(np.exp(pair.log_q) * 0.5 * pair.log_ratio_table**2))
    assert exact_moments(pair, liar).mean == pytest.approx(expected, rel=1e-14)
    assert exact_moments(pair, "k1").mean == pytest.approx(pair.kl_qp(), rel=1e-14)
    assert exact_moments(pair, liar).mean != pytest.approx(pair.kl_qp(), rel=1e-3)


def test_record_validation_names_the_argument():
    with pytest.raises(TypeError, match="name must be a string"):
        Estimator(3, k3, k3)
    with pytest.raises(ValueError, match="name must not be empty"):
        Estimator("", k3, k3)
    with pytest.raises(TypeError, match="value must be callable"):
        Estimator("x", 1.0, k3)
    with pytest.raises(TypeError, match="derivative must be callable"):
        Estimator("x", k3, None)
    with pytest.raises(ValueError, match="target must be one of"):
        Estimator("x", k3, k3, target="forward")
    with pytest.raises(ValueError, match="kinks must be finite"):
        Estimator("x", k3, k3, kinks=(np.inf,))
    with pytest.raises(ValueError, match="expansion of estimator 'x' does not match"):
        Estimator("x", k3, k3, expansion=ExpPolynomial({(0, 2): 0.5}))
    with pytest.raises(TypeError, match="expansion must be an ExpPolynomial"):
        Estimator("x", k3, k3, expansion={(0, 2): 0.5})


def test_straight_through_estimator_keeps_its_own_derivative():
    # value k3, gradient of k2: the expansion's derivative is not taken as the derivative
    st = Estimator("k3+", value=k3, derivative=lambda L: np.asarray(L, dtype=np.float64),
                   expansion=klviz.ESTIMATORS["k3"].expansion)
    assert st.derivative_expansion is None
    theta, ref = [0.2, -0.4, 0.9], [0.0, 0.5, -0.5]
    # its loss gradient is k2's, its value's mean is k3's
    np.testing.assert_allclose(expected_gradient(theta, ref, st, "loss"), expected_gradient(theta, ref, "k2", "loss"),
                               atol=1e-15)
