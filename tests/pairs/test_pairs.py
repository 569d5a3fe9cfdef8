r"""Tests for klviz.pairs: log-ratios, exact KL, sampling and validation of the three pair types.

References: scipy.stats log-densities, KL closed forms written out here, mpmath quadrature and
mpmath sums over the vocabulary.
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from klviz import CategoricalPair, GaussianPair, ScipyPair

MP = mpmath.MPContext()
MP.dps = 50


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p):
    r"""KL[N(mu_q, sigma_q²) || N(mu_p, sigma_p²)] in 50-digit arithmetic:
    log(σp/σq) + (σq² + (μq - μp)²)/(2σp²) - 1/2, with the cancelling part written as (s² - 1 - log s²)/2."""
    mu_q, sigma_q, mu_p, sigma_p = (MP.mpf(v) for v in (mu_q, sigma_q, mu_p, sigma_p))
    s2 = (sigma_q / sigma_p) ** 2
    return ((mu_q - mu_p) / sigma_p) ** 2 / 2 + (MP.expm1(MP.log(s2)) - MP.log(s2)) / 2


def mp_normal_logpdf(x, mu, sigma):
    return -((x - mu) / sigma) ** 2 / 2 - MP.log(sigma) - MP.log(2 * MP.pi) / 2


def quadrature_kl(mu_q, sigma_q, mu_p, sigma_p):
    """∫ q log(q/p) dx by mpmath quadrature (30 digits)."""
    with MP.workdps(30):
        mq, sq, mp_, sp = (MP.mpf(v) for v in (mu_q, sigma_q, mu_p, sigma_p))

        def integrand(x):
            log_q = mp_normal_logpdf(x, mq, sq)
            return MP.exp(log_q) * (log_q - mp_normal_logpdf(x, mp_, sp))

        return MP.quad(integrand, [-MP.inf, mq - 3 * sq, mq, mq + 3 * sq, MP.inf])


GAUSSIAN_CASES = [
    # (mu_p, sigma_p, mu_q, sigma_q)
    (0.1, 1.0, 0.0, 1.0),
    (1.0, 1.0, 0.0, 1.0),
    (0.3, 1.2, -0.1, 0.9),
    (-2.0, 0.5, 1.0, 3.0),
    (5.0, 10.0, 5.0, 0.1),
    (1e-6, 1.0, 0.0, 1.0),
]


# --------------------------------------------------------------------------------------------------
# GaussianPair
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu_p, sigma_p, mu_q, sigma_q", GAUSSIAN_CASES)
def test_gaussian_log_ratio_is_difference_of_scipy_logpdfs(mu_p, sigma_p, mu_q, sigma_q):
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    x = mu_q + sigma_q * np.linspace(-8, 8, 101)
    expected = stats.norm(mu_p, sigma_p).logpdf(x) - stats.norm(mu_q, sigma_q).logpdf(x)
    scale = np.abs(stats.norm(mu_p, sigma_p).logpdf(x)) + np.abs(stats.norm(mu_q, sigma_q).logpdf(x))
    assert np.all(np.abs(pair.log_ratio(x) - expected) <= 1e-14 * scale)
    # the quadratic form in z describes the same function
    a, b, c = pair.quadratic
    z = (x - mu_q) / sigma_q
    assert np.all(np.abs(a + b * z + c * z * z - expected) <= 1e-14 * scale)
    assert np.all(np.abs(pair.log_ratio_from_standard(z) - expected) <= 1e-14 * scale)


def test_gaussian_log_ratio_keeps_shape():
    pair = GaussianPair(mu_p=1.0)
    assert pair.log_ratio(np.zeros((2, 3))).shape == (2, 3)
    assert np.ndim(pair.log_ratio(0.5)) == 0
    assert pair.log_ratio(0.5) == pytest.approx(0.5 - 0.5, abs=1e-15)  # log r = μx - μ²/2 at μ = 1


@pytest.mark.parametrize("mu_p, sigma_p, mu_q, sigma_q", GAUSSIAN_CASES)
def test_gaussian_kl_matches_closed_form_and_quadrature(mu_p, sigma_p, mu_q, sigma_q):
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    forward = gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)
    reverse = gaussian_kl(mu_p, sigma_p, mu_q, sigma_q)
    assert pair.kl_qp() == pytest.approx(float(forward), rel=1e-14, abs=0)
    assert pair.kl_pq() == pytest.approx(float(reverse), rel=1e-14, abs=0)
    if mu_p != 1e-6:  # quadrature of a 5e-13 integrand of O(1) terms would need more digits than it is worth
        # the closed form written above, checked against 30-digit quadrature of q log(q/p)
        assert abs(forward - quadrature_kl(mu_q, sigma_q, mu_p, sigma_p)) <= 1e-25 * forward


def test_gaussian_article_values():
    assert GaussianPair(mu_p=0.1).kl_qp() == pytest.approx(0.005, rel=1e-15, abs=0)
    assert GaussianPair(mu_p=1.0).kl_qp() == 0.5
    assert GaussianPair(mu_p=0.0).kl_qp() == 0.0


@pytest.mark.parametrize(
    "sigma_p, sigma_q",
    [(3.0, 3.0 * (1 + 1e-8)), (3.0, np.nextafter(3.0, 4.0)), (0.7, 0.7 * (1 + 1e-6)), (1.0, 1 + 1e-8),
     (2.0, 1.0), (1.0, 0.5000001), (1e-3, 1e3)],
)
def test_gaussian_kl_relative_precision_when_variances_are_close(sigma_p, sigma_q):
    # Equal means, nearly equal variances: KL ~ (σq/σp - 1)², a regime where log σq - log σp cancels.
    pair = GaussianPair(mu_p=0.0, sigma_p=sigma_p, sigma_q=sigma_q)
    expected = float(gaussian_kl(0.0, sigma_q, 0.0, sigma_p))
    assert expected > 0
    assert pair.kl_qp() == pytest.approx(expected, rel=1e-13, abs=0)
    assert pair.kl_pq() == pytest.approx(float(gaussian_kl(0.0, sigma_p, 0.0, sigma_q)), rel=1e-13, abs=0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.floats(-5, 5), st.floats(0.05, 20), st.floats(-5, 5), st.floats(0.05, 20),
)
def test_gaussian_kl_hypothesis(mu_p, sigma_p, mu_q, sigma_q):
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    expected = float(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p))
    assert pair.kl_qp() >= 0
    assert pair.kl_qp() == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert pair.swapped().kl_qp() == pytest.approx(pair.kl_pq(), rel=0, abs=0)


def test_gaussian_swapped():
    pair = GaussianPair(mu_p=1.0, sigma_p=2.0, mu_q=-1.0, sigma_q=0.5)
    assert pair.swapped() == GaussianPair(mu_p=-1.0, sigma_p=0.5, mu_q=1.0, sigma_q=2.0)
    assert pair.swapped().swapped() == pair


def test_gaussian_sample_is_q(rng):
    pair = GaussianPair(mu_p=5.0, sigma_p=1.0, mu_q=-2.0, sigma_q=3.0)
    n = 200_000
    x = pair.sample(n, rng=rng)
    assert x.shape == (n,) and x.dtype == np.float64
    assert abs(x.mean() - (-2.0)) < 5 * 3.0 / math.sqrt(n)
    # the sample variance of n normals has standard error σ² √(2/(n-1))
    assert abs(x.var(ddof=1) - 9.0) < 5 * 9.0 * math.sqrt(2 / (n - 1))
    assert stats.kstest(x, stats.norm(-2.0, 3.0).cdf).pvalue > 1e-4


def test_gaussian_sample_log_ratio_is_log_ratio_of_sample():
    # two code paths (one normal per sample vs sample then densities) from one seed
    pair = GaussianPair(mu_p=0.3, sigma_p=1.2, mu_q=-0.1, sigma_q=0.9)
    direct = pair.sample_log_ratio(1000, rng=7)
    via_x = pair.log_ratio(pair.sample(1000, rng=7))
    np.testing.assert_allclose(direct, via_x, rtol=1e-12, atol=1e-12)
    assert pair.sample(5, rng=3).tolist() == pair.sample(5, rng=np.random.default_rng(3)).tolist()
    assert pair.sample(0, rng=0).shape == (0,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(mu_p=1.0, sigma_p=0.0), ValueError, "sigma_p"),
        (dict(mu_p=1.0, sigma_p=-1.0), ValueError, "sigma_p"),
        (dict(mu_p=1.0, sigma_q=0.0), ValueError, "sigma_q"),
        (dict(mu_p=1.0, sigma_q=-2), ValueError, "sigma_q"),
        (dict(mu_p=math.nan), ValueError, "mu_p"),
        (dict(mu_p=0.0, mu_q=math.nan), ValueError, "mu_q"),
        (dict(mu_p=0.0, sigma_p=math.nan), ValueError, "sigma_p"),
        (dict(mu_p=math.inf), ValueError, "mu_p"),
        (dict(mu_p=0.0, sigma_q=math.inf), ValueError, "sigma_q"),
        (dict(mu_p="1.0"), TypeError, "mu_p"),
        (dict(mu_p=True), TypeError, "mu_p"),
        (dict(mu_p=0.0, sigma_p=np.bool_(True)), TypeError, "sigma_p"),
        (dict(mu_p=1j), TypeError, "mu_p"),
        (dict(mu_p=None), TypeError, "mu_p"),
        (dict(mu_p=[1.0]), TypeError, "mu_p"),
    ],
)
def test_gaussian_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianPair(**kwargs)


def test_gaussian_accepts_numpy_scalars_and_ints():
    pair = GaussianPair(mu_p=np.float32(1.0), sigma_p=2, mu_q=np.int64(0))
    assert pair.kl_qp() == pytest.approx(float(gaussian_kl(0, 1, 1, 2)), rel=1e-15, abs=0)
    assert all(type(v) is float for v in (pair.mu_p, pair.sigma_p, pair.mu_q, pair.sigma_q))


@pytest.mark.parametrize("n, error", [(-1, ValueError), (2.5, TypeError), ("3", TypeError), (True, TypeError)])
def test_sample_size_validated(n, error):
    for pair in (GaussianPair(mu_p=1.0), ScipyPair(p=stats.norm(1), q=stats.norm()), CategoricalPair([0, 1], [1, 0])):
        with pytest.raises(error, match="n must"):
            pair.sample(n, rng=0)


# --------------------------------------------------------------------------------------------------
# ScipyPair
# --------------------------------------------------------------------------------------------------


def test_scipy_normal_kl_matches_closed_form():
    pair = ScipyPair(p=stats.norm(0.3, 1.2), q=stats.norm(-0.1, 0.9))
    assert pair.kl_qp() == pytest.approx(float(gaussian_kl(-0.1, 0.9, 0.3, 1.2)), rel=1e-10, abs=0)
    assert pair.kl_pq() == pytest.approx(float(gaussian_kl(0.3, 1.2, -0.1, 0.9)), rel=1e-10, abs=0)


@pytest.mark.parametrize("rate_p, rate_q", [(2.0, 0.5), (0.5, 2.0), (1.0, 1.1), (3.0, 3.0)])
def test_scipy_exponential_kl_matches_closed_form(rate_p, rate_q):
    # KL[Exp(λq) || Exp(λp)] = E_q[log λq - λq x - log λp + λp x] = log(λq/λp) + λp/λq - 1
    pair = ScipyPair(p=stats.expon(scale=1 / rate_p), q=stats.expon(scale=1 / rate_q))
    lq, lp = MP.mpf(rate_q), MP.mpf(rate_p)
    expected = float(MP.log(lq / lp) + lp / lq - 1)
    reverse = float(MP.log(lp / lq) + lq / lp - 1)
    assert pair.kl_qp() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert pair.kl_pq() == pytest.approx(reverse, rel=1e-10, abs=1e-14)


def test_scipy_log_ratio_and_support():
    pair = ScipyPair(p=stats.t(5), q=stats.norm(0, 2))
    x = np.linspace(-10, 10, 41)
    expected = stats.t(5).logpdf(x) - stats.norm(0, 2).logpdf(x)
    np.testing.assert_allclose(pair.log_ratio(x), expected, rtol=1e-14)
    half = ScipyPair(p=stats.norm(), q=stats.expon())
    with pytest.raises(ValueError, match="support of q"):
        half.log_ratio([-1.0, 1.0])
    # p = 0 where q > 0: KL[q, p] is infinite, and it is reported as such
    assert ScipyPair(p=stats.expon(), q=stats.norm()).kl_qp() == math.inf
    # p > 0 where q = 0: KL[q, p] = E_q[log q - log p] finite (half-normal-free check: E[-x + x²/2] + log √(2π))
    assert half.kl_qp() == pytest.approx(-1 + 1 + 0.5 * math.log(2 * math.pi), rel=1e-10, abs=0)
    assert half.kl_pq() == math.inf


def test_scipy_sample_is_q():
    pair = ScipyPair(p=stats.norm(), q=stats.gamma(3.0))
    x = pair.sample(50_000, rng=1)
    assert x.dtype == np.float64 and x.shape == (50_000,)
    assert stats.kstest(x, stats.gamma(3.0).cdf).pvalue > 1e-4
    np.testing.assert_array_equal(x, pair.sample(50_000, rng=1))
    np.testing.assert_allclose(pair.sample_log_ratio(10, rng=2), pair.log_ratio(pair.sample(10, rng=2)))


def test_scipy_swapped_and_repr():
    pair = ScipyPair(p=stats.t(df=5), q=stats.norm(0, 1))
    assert pair.swapped().p is pair.q and pair.swapped().q is pair.p
    assert repr(pair) == "ScipyPair(p=t(df=5), q=norm(0, 1))"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p=stats.norm, q=stats.norm()), "^p must be a frozen"),  # not frozen
        (dict(p=stats.norm(), q=stats.norm), "^q must be a frozen"),
        (dict(p=stats.norm(), q=stats.poisson(3.0)), "^q must be a frozen continuous"),  # discrete
        (dict(p=1.0, q=stats.norm()), "^p must"),
        (dict(p=stats.norm(), q="norm"), "^q must"),
    ],
)
def test_scipy_bad_distributions(kwargs, match):
    with pytest.raises(TypeError, match=match):
        ScipyPair(**kwargs)


# --------------------------------------------------------------------------------------------------
# CategoricalPair
# --------------------------------------------------------------------------------------------------


def mp_log_softmax(logits):
    logits = [MP.mpf(float(v)) if v != -np.inf else None for v in logits]
    top = max(v for v in logits if v is not None)
    log_z = top + MP.log(MP.fsum(MP.exp(v - top) for v in logits if v is not None))
    return [None if v is None else v - log_z for v in logits]


def mp_categorical_kl(q_logits, p_logits):
    """Σ_x q(x) (log q(x) - log p(x)) in 50 digits; inf if p = 0 where q > 0."""
    log_q, log_p = mp_log_softmax(q_logits), mp_log_softmax(p_logits)
    terms = []
    for lq, lp in zip(log_q, log_p):
        if lq is None:
            continue
        if lp is None:
            return MP.inf
        terms.append(MP.exp(lq) * (lq - lp))
    return MP.fsum(terms)


@pytest.mark.parametrize(
    "p_logits, q_logits, rel",
    [
        ([0.0, 0.0], [0.0, 1.0], 1e-13),
        ([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], 1e-13),
        ([0.1, -0.3, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5], 1e-13),
        ([1000.0, 1001.0, 999.0], [1000.5, 1000.0, 1001.0], 1e-13),  # exp(1000) overflows: needs log-softmax
        ([-1000.0, -1003.0, -999.0], [700.0, 701.0, 702.0], 1e-13),
        ([1e5, 1e5 + 1e-3, 1e5], [1e5, 1e5, 1e5 + 2e-3], 1e-11),  # KL ~ 8e-7 from logits ~ 1e5
        # nearly equal, KL ~ 1e-15: log p - log q is a difference of O(1) numbers, so ~1e-16/1e-7 relative
        ([0.0, 1e-7, 0.0], [0.0, 0.0, 0.0], 1e-8),
    ],
)
def test_categorical_kl_matches_mpmath_sum(p_logits, q_logits, rel):
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    assert pair.kl_qp() == pytest.approx(float(mp_categorical_kl(q_logits, p_logits)), rel=rel, abs=0)
    assert pair.kl_pq() == pytest.approx(float(mp_categorical_kl(p_logits, q_logits)), rel=rel, abs=0)
    np.testing.assert_allclose(np.exp(pair.log_q), [float(MP.exp(v)) for v in mp_log_softmax(q_logits)], rtol=1e-15)
    np.testing.assert_allclose(np.exp(pair.log_p), [float(MP.exp(v)) for v in mp_log_softmax(p_logits)], rtol=1e-15)
    assert pair.vocab_size == len(p_logits)


def test_categorical_large_vocabulary_with_large_logits():
    # 50,000 tokens, logits near 1000. The logits take 40 distinct values (shuffled, repeated), so the
    # 50-digit reference only needs one term per distinct value, weighted by its multiplicity.
    rng = np.random.default_rng(5)
    distinct_q = 1000.0 + 4.0 * rng.standard_normal(40)
    distinct_p = distinct_q + rng.standard_normal(40)
    counts = rng.multinomial(50_000 - 40, np.full(40, 1 / 40)) + 1
    labels = rng.permutation(np.repeat(np.arange(40), counts))
    pair = CategoricalPair(p_logits=distinct_p[labels], q_logits=distinct_q[labels])
    assert pair.vocab_size == 50_000

    def grouped_log_softmax(logits):
        values = [MP.mpf(float(v)) for v in logits]
        log_z = MP.log(MP.fsum(int(c) * MP.exp(v - 1000) for c, v in zip(counts, values))) + 1000
        return [v - log_z for v in values]

    log_q, log_p = grouped_log_softmax(distinct_q), grouped_log_softmax(distinct_p)
    expected = MP.fsum(int(c) * MP.exp(lq) * (lq - lp) for c, lq, lp in zip(counts, log_q, log_p))
    assert 0.01 < expected < 10
    assert pair.kl_qp() == pytest.approx(float(expected), rel=1e-11, abs=0)
    assert np.isfinite(pair.log_p).all() and abs(math.fsum(np.exp(pair.log_p)) - 1) < 1e-12


def test_categorical_shifted_logits_have_zero_kl():
    rng = np.random.default_rng(11)
    q_logits = 1e3 * rng.standard_normal(50_000)
    pair = CategoricalPair(p_logits=q_logits + 1e3, q_logits=q_logits)
    assert abs(pair.kl_qp()) < 1e-12
    assert abs(pair.kl_pq()) < 1e-12


def test_categorical_zero_probability_tokens():
    # token 1 has q = 0 (never sampled); token 2 has p = 0 where q > 0: KL[q, p] = inf
    pair = CategoricalPair(p_logits=[0.0, 1.0, -np.inf], q_logits=[0.0, -np.inf, 0.0])
    assert pair.kl_qp() == math.inf
    assert pair.kl_pq() == math.inf  # p puts mass on token 1 where q = 0
    # p > 0 only where q > 0 and vice versa on the shared tokens: finite, summed over q's support
    pair = CategoricalPair(p_logits=[0.0, 1.0, 0.5], q_logits=[0.0, 0.3, -np.inf])
    expected = mp_categorical_kl([0.0, 0.3, -np.inf], [0.0, 1.0, 0.5])
    assert pair.kl_qp() == pytest.approx(float(expected), rel=1e-13, abs=0)
    assert pair.kl_pq() == math.inf
    np.testing.assert_array_equal(pair.support_q.size, 2)


def test_categorical_log_ratio():
    pair = CategoricalPair(p_logits=[0.0, 1.0, 2.0], q_logits=[2.0, -np.inf, 0.0])
    log_p = np.array([0.0, 1.0, 2.0]) - math.log(1 + math.e + math.e**2)
    log_q = np.array([2.0, -np.inf, 0.0]) - math.log(1 + math.e**2)
    np.testing.assert_allclose(pair.log_ratio([0, 2, 2]), (log_p - log_q)[[0, 2, 2]], rtol=1e-14)
    with pytest.raises(ValueError, match="probability 0"):
        pair.log_ratio([1])
    with pytest.raises(ValueError, match="token indices in"):
        pair.log_ratio([3])
    with pytest.raises(ValueError, match="token indices in"):
        pair.log_ratio([-1])
    with pytest.raises(TypeError, match="integer"):
        pair.log_ratio([0.0])


def test_categorical_sample_frequencies_match_q():
    q_logits = np.array([0.0, 1.0, -np.inf, 2.0, -1.0, 0.5])
    pair = CategoricalPair(p_logits=np.zeros(6), q_logits=q_logits)
    n = 200_000
    tokens = pair.sample(n, rng=2024)
    counts = np.bincount(tokens, minlength=6)
    q = np.exp(q_logits - np.log(np.sum(np.exp(q_logits))))
    assert counts[2] == 0  # zero-probability token never drawn
    # each count within 5 standard errors of n q, and a chi-square test over the support
    se = np.sqrt(n * q * (1 - q))
    assert np.all(np.abs(counts - n * q) <= 5 * se + 1e-12)
    support = q > 0
    assert stats.chisquare(counts[support], n * q[support]).pvalue > 1e-4
    assert tokens.dtype.kind == "i" and tokens.min() >= 0 and tokens.max() < 6


def test_categorical_sample_with_large_logits_and_last_token_zero():
    pair = CategoricalPair(p_logits=[0.0, 0.0, 0.0], q_logits=[1000.0, 1000.0 + math.log(3), -np.inf])
    tokens = pair.sample(100_000, rng=3)
    counts = np.bincount(tokens, minlength=3)
    assert counts[2] == 0
    assert abs(counts[1] / 100_000 - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 100_000)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(p_logits=[[0.0, 1.0]], q_logits=[[0.0, 1.0]]), ValueError, "p_logits must be one-dimensional"),
        (dict(p_logits=[0.0, 1.0], q_logits=[[0.0, 1.0]]), ValueError, "q_logits must be one-dimensional"),
        (dict(p_logits=[0.0, 1.0], q_logits=[0.0, 1.0, 2.0]), ValueError, "same length"),
        (dict(p_logits=[0.0, np.nan], q_logits=[0.0, 1.0]), ValueError, "p_logits"),
        (dict(p_logits=[0.0, 1.0], q_logits=[np.inf, 1.0]), ValueError, "q_logits"),
        (dict(p_logits=[-np.inf, -np.inf], q_logits=[0.0, 1.0]), ValueError, "p_logits"),
        (dict(p_logits=[], q_logits=[]), ValueError, "p_logits"),
        (dict(p_logits=["a", "b"], q_logits=[0.0, 1.0]), TypeError, "p_logits"),
        (dict(p_logits=[0.0, 1.0], q_logits=[True, False]), TypeError, "q_logits"),
        (dict(p_logits=[0.0, 1j], q_logits=[0.0, 1.0]), TypeError, "p_logits"),
    ],
)
def test_categorical_bad_logits(kwargs, error, match):
    with pytest.raises(error, match=match):
        CategoricalPair(**kwargs)


def test_categorical_accepts_integer_logits_and_is_immutable():
    pair = CategoricalPair(p_logits=[0, 1], q_logits=np.array([1, 0], dtype=np.int8))
    assert pair.kl_qp() == pytest.approx(float(mp_categorical_kl([1, 0], [0, 1])), rel=1e-14, abs=0)
    with pytest.raises(ValueError):
        pair.log_q[0] = 0.0
    assert "vocabulary=2" in repr(pair)
