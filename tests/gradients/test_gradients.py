r"""Tests for klviz.gradients: exact expected gradients of k1/k2/k3 used as loss, reward, or with ratios.

References are computed differently from the code under test:

* the KL divergences and E_q[k2] are re-implemented here from their definitions, and differentiated
  by central differences;
* each use is written as the scalar *surrogate* a training script hands to autodiff (e.g. ρ_θ(x)·k_θ(x)
  with x fixed) and differentiated by central differences token by token;
* moments are brute-forced from the dense matrix of per-sample gradients, and checked by Monte Carlo.

Finite-difference tolerance. Central differences with step h have truncation error h²/6·|f'''| and
rounding error ~ ε·|f|/h. With h = 1e-4, logits of order 1 and KLs of order 10, the two are ~1e-9 and
~2e-11; the largest error over 200 random vocabularies (V = 2..8, logits ~ N(0, 2²)) was 9e-10. We
assert 1e-7 (relative to max(1, |gradient|)), a hundred times the observed worst case.
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klviz.gradients import (
    FOLLOWED,
    USES,
    discretised_gaussian_logits,
    expected_gradient,
    expected_k2_gradient,
    fit_gaussian_policy,
    followed_gradient,
    followed_label,
    followed_objective,
    gaussian_policy_kls,
    gradient_moments,
    kl_pq,
    kl_pq_gradient,
    kl_qp,
    kl_qp_gradient,
    monte_carlo_gradient,
    per_sample_gradient,
)

H = 1e-4
FD_TOL = 1e-7
ESTIMATORS = ("k1", "k2", "k3")
OFF_POLICY = [name for name, use in USES.items() if use.off_policy]


# --- independent references -------------------------------------------------------------------------


def log_softmax(t):
    t = np.asarray(t, dtype=np.float64)
    top = t.max()
    return t - top - math.log(np.sum(np.exp(t - top)))


def ref_kl_qp(theta, ref):
    log_q, log_p = log_softmax(theta), log_softmax(ref)
    return float(np.sum(np.exp(log_q) * (log_q - log_p)))


def ref_kl_pq(theta, ref):
    log_q, log_p = log_softmax(theta), log_softmax(ref)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def ref_expected_k2(theta, ref):
    log_q, log_p = log_softmax(theta), log_softmax(ref)
    return float(np.sum(np.exp(log_q) * 0.5 * (log_p - log_q) ** 2))


# 40-digit references for close policies, where float64 sums of q (log q - log p) cancel.
MP = mpmath.MPContext()
MP.dps = 40


def mp_log_softmax(logits):
    logits = [MP.mpf(float(v)) for v in logits]
    log_total = MP.log(MP.fsum(MP.exp(v) for v in logits))
    return [v - log_total for v in logits]


def mp_kl(a_logits, b_logits):
    """KL(softmax(a) || softmax(b)) in 40 digits."""
    log_a, log_b = mp_log_softmax(a_logits), mp_log_softmax(b_logits)
    return MP.fsum(MP.exp(x) * (x - y) for x, y in zip(log_a, log_b))


def mp_kl_qp_gradient(theta, ref):
    """q ⊙ (log q - log p - KL(q||p)) in 40 digits, rounded to float64."""
    log_q, log_p = mp_log_softmax(theta), mp_log_softmax(ref)
    kl = mp_kl(theta, ref)
    return np.array([float(MP.exp(x) * (x - y - kl)) for x, y in zip(log_q, log_p)])


def central_difference(f, theta):
    theta = np.asarray(theta, dtype=np.float64)
    return np.array([(f(theta + H * e) - f(theta - H * e)) / (2 * H) for e in np.eye(theta.size)])


def assert_fd_close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=FD_TOL * scale)


# The claims of issue 6, written as the function each use follows (in the RL naming: KL(q||p) is the
# reverse KL, KL(p||q) the forward one). Every claim is a function of (theta, ref, behaviour); only the
# loss on samples from mu without a ratio depends on mu.
def zero(theta, ref, behaviour):
    return 0.0


def on(f):
    """A claim that does not depend on the behaviour policy."""
    return lambda theta, ref, behaviour: f(theta, ref)


def ref_no_ratio(estimator):
    """E_mu[k(L_theta)] = sum_x mu(x) k(log p(x) - log q(x)), mu = softmax(behaviour) held fixed."""

    def objective(theta, ref, behaviour):
        log_q, log_p, log_mu = log_softmax(theta), log_softmax(ref), log_softmax(behaviour)
        log_ratio = log_p - log_q
        k = {"k1": -log_ratio, "k2": 0.5 * log_ratio**2, "k3": np.exp(log_ratio) - 1.0 - log_ratio}[estimator]
        return float(np.sum(np.exp(log_mu) * k))

    return objective


CLAIMS = {
    ("k1", "loss"): zero,
    ("k2", "loss"): on(ref_kl_qp),
    ("k3", "loss"): on(ref_kl_pq),
    ("k1", "reward"): on(ref_kl_qp),
    ("k2", "reward"): on(lambda t, r: ref_expected_k2(t, r) - ref_kl_qp(t, r)),  # bias: ∇E_q[k2] - 2∇KL(q||p)
    ("k3", "reward"): on(lambda t, r: ref_kl_qp(t, r) - ref_kl_pq(t, r)),  # bias: -∇KL(p||q)
    ("k1", "ratio_loss"): on(ref_kl_qp),
    ("k2", "ratio_loss"): on(ref_expected_k2),  # a surrogate: the f-divergence with f = ½ log², not KL
    ("k3", "ratio_loss"): on(ref_kl_qp),
    ("k1", "stopgrad_ratio_loss"): zero,
    ("k2", "stopgrad_ratio_loss"): on(ref_kl_qp),
    ("k3", "stopgrad_ratio_loss"): on(ref_kl_pq),
    ("k1", "ratio_reward"): on(ref_kl_qp),
    ("k2", "ratio_reward"): on(lambda t, r: ref_expected_k2(t, r) - ref_kl_qp(t, r)),
    ("k3", "ratio_reward"): on(lambda t, r: ref_kl_qp(t, r) - ref_kl_pq(t, r)),
    # no ratio, x ~ mu: the loss follows E_mu[k], which depends on mu; for k1 that is -KL(mu||q) + const
    ("k1", "no_ratio_loss"): lambda t, r, b: -ref_kl_pq(t, b),
    ("k2", "no_ratio_loss"): ref_no_ratio("k2"),
    ("k3", "no_ratio_loss"): ref_no_ratio("k3"),
}


def surrogate(estimator, use, token, theta, theta_old, ref, behaviour):
    """The scalar an RL script backpropagates for one sampled token; theta_old is the detached copy."""

    def k(log_ratio):
        return {"k1": -log_ratio, "k2": 0.5 * log_ratio**2, "k3": math.expm1(log_ratio) - log_ratio}[estimator]

    log_p = log_softmax(ref)[token]
    log_q = log_softmax(theta)[token]
    log_q_old = log_softmax(theta_old)[token]  # sg[q]: same value, no gradient
    log_mu = log_softmax(behaviour)[token]
    if use == "loss":
        return k(log_p - log_q)
    if use == "reward":
        return k(log_p - log_q_old) * log_q
    if use == "ratio_loss":
        return math.exp(log_q - log_mu) * k(log_p - log_q)
    if use == "stopgrad_ratio_loss":
        return math.exp(log_q_old - log_mu) * k(log_p - log_q)
    if use == "ratio_reward":
        return math.exp(log_q - log_mu) * k(log_p - log_q_old)
    if use == "no_ratio_loss":  # the same scalar as "loss"; only the sampling distribution differs
        return k(log_p - log_q)
    raise AssertionError(use)


def random_problem(rng, vocab=None, scale=1.5):
    vocab = int(rng.integers(2, 9)) if vocab is None else vocab
    return (rng.normal(0, scale, vocab), rng.normal(0, scale, vocab), rng.normal(0, scale, vocab))


# --- exact divergences and their gradients -----------------------------------------------------------


def test_kl_values_match_definitions(rng):
    for _ in range(20):
        theta, ref, _ = random_problem(rng)
        assert kl_qp(theta, ref) == pytest.approx(ref_kl_qp(theta, ref), rel=1e-12, abs=1e-15)
        assert kl_pq(theta, ref) == pytest.approx(ref_kl_pq(theta, ref), rel=1e-12, abs=1e-15)


def test_kl_values_known_case():
    # q uniform on 2 tokens, p = (1/(1+e), e/(1+e)): KL(q||p) = log(1+e) - 1/2 - log 2
    assert kl_qp([0.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log1p(math.e) - 0.5 - math.log(2), rel=1e-14)
    p1 = math.e / (1 + math.e)
    expected = (1 - p1) * math.log(2 * (1 - p1)) + p1 * math.log(2 * p1)
    assert kl_pq([0.0, 0.0], [0.0, 1.0]) == pytest.approx(expected, rel=1e-14)


def test_kl_gradients_match_finite_differences(rng):
    for _ in range(50):
        theta, ref, _ = random_problem(rng, scale=2.0)
        assert_fd_close(kl_qp_gradient(theta, ref), central_difference(lambda t: ref_kl_qp(t, ref), theta))
        assert_fd_close(kl_pq_gradient(theta, ref), central_difference(lambda t: ref_kl_pq(t, ref), theta))


def close_policies(vocab=1000, noise=1e-8, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=vocab)
    return ref + noise * rng.normal(size=vocab), ref


def test_kl_values_keep_relative_precision_for_close_policies():
    """V = 1000, logits 1e-8 apart: KL ~ 5e-17. The plain sum of q (log q - log p) rounds at ~1e-16·|log q|
    per term and was off by 1350% (and -2000% here); Σ q k3 from logit differences keeps ~1e-16."""
    theta, ref = close_policies()
    qp, pq = float(mp_kl(theta, ref)), float(mp_kl(ref, theta))
    assert kl_qp(theta, ref) == pytest.approx(qp, rel=1e-13, abs=0)
    assert kl_pq(theta, ref) == pytest.approx(pq, rel=1e-13, abs=0)
    # followed_objective is built from the same functions, so it is as precise
    assert followed_objective(theta, ref, "k3", "loss") == pytest.approx(pq, rel=1e-13, abs=0)
    assert followed_objective(theta, ref, "k2", "stopgrad_ratio_loss") == pytest.approx(qp, rel=1e-13, abs=0)
    assert followed_objective(theta, ref, "k3", "reward") == pytest.approx(qp - pq, rel=0, abs=1e-13 * qp)


def test_shifted_logits_are_the_same_policy():
    """q = softmax(ref + 1000.3) is p: every divergence is 0 to the last bit, never negative (the plain
    sum gave -3e-14, from log-probabilities rounded at 1000's magnitude)."""
    ref = np.random.default_rng(1).normal(size=50)
    theta = ref + 1000.3
    for value in (kl_qp(theta, ref), kl_pq(theta, ref), followed_objective(theta, ref, "k2", "ratio_loss")):
        assert 0.0 <= value < 1e-40
    assert np.max(np.abs(kl_qp_gradient(theta, ref))) < 1e-28


def test_kl_gradient_keeps_relative_precision_for_close_policies():
    """The gradient q ⊙ (−log r − KL) is of order δ: log r from the logit differences keeps 1e-15 relative
    (separate log-softmaxes lose 1e-16·|log q|/δ ≈ 1.5e-8)."""
    theta, ref = close_policies(vocab=200)
    expected = mp_kl_qp_gradient(theta, ref)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(kl_qp_gradient(theta, ref), expected, rtol=0, atol=1e-14 * scale)
    # every use that follows ∇KL(q||p) in expectation gets the same precision
    for estimator, use in (("k1", "reward"), ("k2", "loss"), ("k3", "ratio_loss")):
        np.testing.assert_allclose(expected_gradient(theta, ref, estimator, use), expected, rtol=0,
                                   atol=1e-14 * scale)


# --- the claims: expected gradients of every use against finite differences of exact objectives --------


@pytest.mark.parametrize(("estimator", "use"), sorted(CLAIMS))
def test_expected_gradient_follows_claimed_objective(estimator, use, rng):
    for _ in range(15):
        theta, ref, behaviour = random_problem(rng)
        kwargs = {"behaviour_logits": behaviour} if USES[use].off_policy else {}
        got = expected_gradient(theta, ref, estimator, use, **kwargs)
        assert_fd_close(got, central_difference(lambda t: CLAIMS[estimator, use](t, ref, behaviour), theta))
        # followed_objective (the library's statement of the claim) agrees too
        assert_fd_close(got, central_difference(lambda t: followed_objective(t, ref, estimator, use, **kwargs),
                                                theta))


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(2, 7),
    seed=st.integers(0, 2**32 - 1),
    estimator=st.sampled_from(ESTIMATORS),
    use=st.sampled_from(sorted(USES)),
)
def test_claims_hold_on_random_vocabularies(vocab, seed, estimator, use):
    theta, ref, behaviour = random_problem(np.random.default_rng(seed), vocab=vocab, scale=2.0)
    kwargs = {"behaviour_logits": behaviour} if USES[use].off_policy else {}
    got = expected_gradient(theta, ref, estimator, use, **kwargs)
    assert abs(float(np.sum(got))) < 1e-12  # softmax gradients are blind to a common shift
    assert_fd_close(got, central_difference(lambda t: CLAIMS[estimator, use](t, ref, behaviour), theta))


def test_named_cases_in_words(rng):
    """The statements of the issue, one by one, against the closed-form KL gradients."""
    theta, ref, behaviour = random_problem(rng, vocab=6)
    reverse, forward = kl_qp_gradient(theta, ref), kl_pq_gradient(theta, ref)
    q, p = np.exp(log_softmax(theta)), np.exp(log_softmax(ref))
    close = dict(rtol=0, atol=1e-14)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k1", "loss"), 0.0, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k2", "loss"), reverse, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "loss"), forward, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k1", "reward"), reverse, **close)
    # k3 in the reward: bias exactly E_q[(r - 1) g] = p - q = -∇KL(p||q)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "reward") - reverse, p - q, **close)
    # k2 in the reward: bias E_q[(k2 - k1) g], computed here by direct summation
    log_ratio = log_softmax(ref) - log_softmax(theta)
    scores = np.eye(6) - q
    bias = (q * (0.5 * log_ratio**2 + log_ratio)) @ scores
    np.testing.assert_allclose(expected_gradient(theta, ref, "k2", "reward") - reverse, bias, **close)
    assert np.max(np.abs(bias)) > 1e-3  # genuinely biased here
    off = {"behaviour_logits": behaviour}
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "ratio_loss", **off), reverse, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k2", "stopgrad_ratio_loss", **off), reverse, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "stopgrad_ratio_loss", **off), forward, **close)
    surrogate_k2 = expected_gradient(theta, ref, "k2", "ratio_loss", **off)
    assert np.max(np.abs(surrogate_k2 - reverse)) > 1e-3  # ρ·k2 is not a KL gradient


def test_followed_labels_cover_every_use():
    for estimator in ESTIMATORS:
        for use in USES.values():
            label = followed_label(estimator, use)
            if use.reweighted:
                assert label == FOLLOWED[estimator, (use.score, use.pathwise)]
            else:
                assert label.startswith(f"E_mu[{estimator}]")


# --- the loss on samples from an older policy mu, without a ratio (PPO epochs with a KL loss) -----------


def test_no_ratio_loss_in_words(rng):
    """Written out from the derivation: sum_x mu(x) (-k'(L)) (e_x - q), by direct summation."""
    theta, ref, behaviour = random_problem(rng, vocab=6)
    q, p, mu = (np.exp(log_softmax(v)) for v in (theta, ref, behaviour))
    scores = np.eye(6) - q
    log_ratio = log_softmax(ref) - log_softmax(theta)
    off = {"behaviour_logits": behaviour}
    close = dict(rtol=0, atol=1e-14)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k1", "no_ratio_loss", **off), mu - q, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k2", "no_ratio_loss", **off),
                               (mu * -log_ratio) @ scores, **close)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "no_ratio_loss", **off),
                               (mu * (1.0 - p / q)) @ scores, **close)
    # it is the on-policy loss gradient reweighted by mu/q = 1/rho, not by rho: biased unless mu = q
    for estimator in ESTIMATORS:
        on_policy = expected_gradient(theta, ref, estimator, "loss")
        stale = expected_gradient(theta, ref, estimator, "no_ratio_loss", **off)
        assert np.max(np.abs(stale - on_policy)) > 1e-3
        at_q = expected_gradient(theta, ref, estimator, "no_ratio_loss", behaviour_logits=theta + 0.7)
        np.testing.assert_allclose(at_q, on_policy, rtol=1e-12, atol=1e-14)
        # ... and sg(rho) restores the on-policy target
        np.testing.assert_allclose(expected_gradient(theta, ref, estimator, "stopgrad_ratio_loss", **off),
                                   on_policy, rtol=1e-12, atol=1e-14)


def test_no_ratio_k2_k3_vanish_at_the_reference_whatever_mu(rng):
    """E_mu[k2] and E_mu[k3] are >= 0 and 0 at q = p for any full-support mu: the fixed point does not
    move, the path does. E_mu[k1] = KL(mu||p) - KL(mu||q) has no minimum: its gradient mu - q is 0 only at q = mu."""
    _, ref, behaviour = random_problem(rng, vocab=5)
    off = {"behaviour_logits": behaviour}
    for estimator in ("k2", "k3"):
        assert np.max(np.abs(expected_gradient(ref + 0.3, ref, estimator, "no_ratio_loss", **off))) < 1e-15
        assert followed_objective(ref, ref, estimator, "no_ratio_loss", **off) == 0.0
    mu, p = np.exp(log_softmax(behaviour)), np.exp(log_softmax(ref))
    np.testing.assert_allclose(expected_gradient(ref, ref, "k1", "no_ratio_loss", **off), mu - p, rtol=0, atol=1e-15)
    assert np.max(np.abs(mu - p)) > 1e-2  # k1 still pulls at q = p: towards nothing but away from mu


def test_no_ratio_k3_gradient_overflows_to_inf_not_nan():
    """q puts e^-800 on the token where mu and p put most of their mass: mu·r = mu p / q is beyond float64,
    so the exact gradient (about -1e347 on that logit, +1e347·q_j on the others) overflows to ±inf."""
    theta, ref, behaviour = np.array([-800.0, 0.0, 0.0]), np.array([5.0, 0.0, 0.0]), np.array([5.0, 0.0, 0.0])
    off = {"behaviour_logits": behaviour}
    for grad in (expected_gradient(theta, ref, "k3", "no_ratio_loss", **off),
                 followed_gradient(theta, ref, "k3", "no_ratio_loss", **off),
                 gradient_moments(theta, ref, "k3", "no_ratio_loss", **off).mean):
        np.testing.assert_array_equal(grad, [-np.inf, np.inf, np.inf])
    moments = gradient_moments(theta, ref, "k3", "no_ratio_loss", **off)
    assert moments.trace_covariance == math.inf
    # a milder case stays finite and matches the written-out sum
    theta = np.array([-30.0, 0.0, 0.0])
    q, p, mu = (np.exp(log_softmax(v)) for v in (theta, ref, behaviour))
    expected = (mu * (1.0 - p / q)) @ (np.eye(3) - q)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "no_ratio_loss", **off), expected, rtol=1e-12)
    np.testing.assert_allclose(followed_gradient(theta, ref, "k3", "no_ratio_loss", **off), expected, rtol=1e-12)


# --- closed forms: ∇E_q[k2] and the gradient of every followed objective --------------------------------


def mp_expected_k2_gradient(theta, ref):
    """q ⊙ (f - E_q f), f = L²/2 - L, in 40 digits, rounded to float64."""
    log_q, log_p = mp_log_softmax(theta), mp_log_softmax(ref)
    f = [(y - x) ** 2 / 2 - (y - x) for x, y in zip(log_q, log_p)]
    mean = MP.fsum(MP.exp(x) * fx for x, fx in zip(log_q, f))
    return np.array([float(MP.exp(x) * (fx - mean)) for x, fx in zip(log_q, f)])


def test_expected_k2_gradient_matches_finite_differences_and_mpmath(rng):
    for _ in range(50):
        theta, ref, _ = random_problem(rng, scale=2.0)
        got = expected_k2_gradient(theta, ref)
        assert_fd_close(got, central_difference(lambda t: ref_expected_k2(t, ref), theta))
        np.testing.assert_allclose(got, mp_expected_k2_gradient(theta, ref), rtol=0,
                                   atol=1e-14 * max(1.0, float(np.max(np.abs(got)))))
    # close policies: the gradient is of order δ = 1e-8 and keeps ~1e-15 relative precision
    theta, ref = close_policies(vocab=200)
    expected = mp_expected_k2_gradient(theta, ref)
    np.testing.assert_allclose(expected_k2_gradient(theta, ref), expected, rtol=0,
                               atol=1e-14 * np.max(np.abs(expected)))


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_followed_gradient_is_the_gradient_of_followed_objective(estimator, use, rng):
    for _ in range(10):
        theta, ref, behaviour = random_problem(rng)
        kwargs = {"behaviour_logits": behaviour} if USES[use].off_policy else {}
        closed = followed_gradient(theta, ref, estimator, use, **kwargs)
        assert_fd_close(closed, central_difference(lambda t: followed_objective(t, ref, estimator, use, **kwargs),
                                                   theta))
        assert_fd_close(closed, central_difference(lambda t: CLAIMS[estimator, use](t, ref, behaviour), theta))
        # two computations of one number: per-token coefficients summed, and divergence gradients combined
        np.testing.assert_allclose(closed, expected_gradient(theta, ref, estimator, use, **kwargs),
                                   rtol=1e-11, atol=1e-14)


# --- per-sample gradients: what autodiff returns for each token ---------------------------------------


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_per_sample_gradient_is_derivative_of_surrogate(estimator, use, rng):
    theta, ref, behaviour = random_problem(rng, vocab=5)
    if not USES[use].off_policy:
        behaviour = theta  # unused; keeps the surrogate signature uniform
    kwargs = {"behaviour_logits": behaviour} if USES[use].off_policy else {}
    tokens = np.arange(5)
    rows = per_sample_gradient(tokens, theta, ref, estimator, use, **kwargs)
    for x in tokens:
        fd = central_difference(lambda t: surrogate(estimator, use, x, t, theta, ref, behaviour), theta)
        assert_fd_close(rows[x], fd)


def test_per_sample_identities(rng):
    """k2-loss ≡ k1-reward and ρ·k3 ≡ sg(ρ)·k2 hold sample by sample, not only on average."""
    theta, ref, behaviour = random_problem(rng, vocab=6)
    tokens = np.array([0, 3, 5, 5, 1])
    np.testing.assert_allclose(
        per_sample_gradient(tokens, theta, ref, "k2", "loss"),
        per_sample_gradient(tokens, theta, ref, "k1", "reward"), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        per_sample_gradient(tokens, theta, ref, "k3", "ratio_loss", behaviour_logits=behaviour),
        per_sample_gradient(tokens, theta, ref, "k2", "stopgrad_ratio_loss", behaviour_logits=behaviour),
        rtol=1e-13, atol=1e-15)


def test_expected_gradient_is_weighted_sum_of_per_sample_rows(rng):
    for use in USES:
        theta, ref, behaviour = random_problem(rng, vocab=7)
        off = USES[use].off_policy
        kwargs = {"behaviour_logits": behaviour} if off else {}
        sampling = np.exp(log_softmax(behaviour if off else theta))
        for estimator in ESTIMATORS:
            rows = per_sample_gradient(np.arange(7), theta, ref, estimator, use, **kwargs)
            np.testing.assert_allclose(sampling @ rows, expected_gradient(theta, ref, estimator, use, **kwargs),
                                       rtol=1e-12, atol=1e-14)


# --- exact moments: brute force and Monte Carlo ----------------------------------------------------------


@pytest.mark.parametrize("use", sorted(USES))
def test_moments_match_brute_force(use, rng):
    theta, ref, behaviour = random_problem(rng, vocab=6)
    off = USES[use].off_policy
    kwargs = {"behaviour_logits": behaviour} if off else {}
    sampling = np.exp(log_softmax(behaviour if off else theta))
    for estimator in ESTIMATORS:
        rows = per_sample_gradient(np.arange(6), theta, ref, estimator, use, **kwargs)
        mean = sampling @ rows
        centred = rows - mean
        variance = sampling @ centred**2
        moments = gradient_moments(theta, ref, estimator, use, **kwargs)
        np.testing.assert_allclose(moments.mean, mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(moments.variance, variance, rtol=1e-10, atol=1e-14)
        assert moments.trace_covariance == pytest.approx(float(np.sum(variance)), rel=1e-10, abs=1e-14)
        squared_errors = np.sum(centred**2, axis=1)
        spread = math.sqrt(sampling @ (squared_errors - sampling @ squared_errors) ** 2)
        assert moments.squared_error_std == pytest.approx(spread, rel=1e-8, abs=1e-14)
        assert moments.signal == pytest.approx(float(mean @ mean), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_monte_carlo_within_five_standard_errors(estimator, use, rng):
    theta, ref, behaviour = random_problem(rng, vocab=5, scale=1.0)
    kwargs = {"behaviour_logits": behaviour} if USES[use].off_policy else {}
    exact = gradient_moments(theta, ref, estimator, use, **kwargs)
    mc = monte_carlo_gradient(theta, ref, estimator, use, 200_000, rng=rng, **kwargs)
    assert np.all(np.abs(mc.z_scores(exact.mean)) < 5)
    np.testing.assert_allclose(mc.stderr, np.sqrt(exact.variance / mc.n), rtol=0.05, atol=1e-12)
    assert abs(mc.trace_covariance - exact.trace_covariance) < 5 * exact.squared_error_std / math.sqrt(mc.n)
    assert mc.trace_covariance_stderr == pytest.approx(exact.squared_error_std / math.sqrt(mc.n), rel=0.2)


def test_monte_carlo_matches_averaging_rows():
    theta, ref = np.array([0.2, -0.4, 1.0, 0.0]), np.array([0.0, 0.5, -0.5, 0.3])
    from klviz.pairs import CategoricalPair

    mc = monte_carlo_gradient(theta, ref, "k3", "reward", 5000, rng=7)
    tokens = CategoricalPair(p_logits=ref, q_logits=theta).sample(5000, rng=np.random.default_rng(7))
    rows = per_sample_gradient(tokens, theta, ref, "k3", "reward")
    np.testing.assert_allclose(mc.mean, rows.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mc.stderr, rows.std(axis=0, ddof=1) / math.sqrt(5000), rtol=1e-8)
    norms = np.sum((rows - rows.mean(axis=0)) ** 2, axis=1)
    assert mc.trace_covariance == pytest.approx(norms.sum() / 4999, rel=1e-10)
    assert mc.trace_covariance_stderr == pytest.approx(norms.std(ddof=1) / math.sqrt(5000), rel=1e-8)


def test_monte_carlo_is_deterministic_per_seed():
    a = monte_carlo_gradient([0.0, 1.0, 2.0], [1.0, 0.0, 0.0], "k2", "loss", 1000, rng=3)
    b = monte_carlo_gradient([0.0, 1.0, 2.0], [1.0, 0.0, 0.0], "k2", "loss", 1000, rng=3)
    np.testing.assert_array_equal(a.mean, b.mean)


def test_k1_loss_is_pure_noise():
    moments = gradient_moments([0.3, -1.0, 2.0], [0.0, 0.0, 0.0], "k1", "loss")
    assert moments.signal < 1e-30  # rounding only: Σq = 1 - O(ε)
    q = np.exp(log_softmax([0.3, -1.0, 2.0]))
    assert moments.trace_covariance == pytest.approx(1.0 - float(q @ q), rel=1e-13)  # E||e_x - q||²


# --- numerics at the edges -------------------------------------------------------------------------------


def test_extreme_logits_stay_finite():
    # q puts ~e^-800 on token 0 where p has most of its mass: r = p/q overflows float64
    theta = np.array([-800.0, 0.0, 0.0])
    ref = np.array([5.0, 0.0, 0.0])
    for estimator in ESTIMATORS:
        for use in USES:
            grad = expected_gradient(theta, ref, estimator, use)
            assert np.isfinite(grad).all(), (estimator, use)
    # k3 in the loss: the gradient of KL(p||q) is q - p, whatever the size of r
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "loss"), kl_pq_gradient(theta, ref),
                               rtol=1e-14, atol=1e-300)
    # the variance of k3 in the loss contains E_q[r²] = Σ p²/q, which overflows: inf, not NaN
    moments = gradient_moments(theta, ref, "k3", "loss")
    assert moments.trace_covariance == math.inf
    assert moments.squared_error_std == math.inf


def test_kl_of_extreme_logits_is_finite():
    # the plain sum of q (log q - log p) is fine here: 0·(-800) = 0, no cancellation at this distance
    for theta in ([-800.0, 0.0, 0.0], [-720.0, 0.0, 0.0]):
        ref = [5.0, 0.0, 0.0]
        assert kl_qp(theta, ref) == pytest.approx(ref_kl_qp(theta, ref), rel=1e-14)
        assert followed_objective(theta, ref, "k1", "reward") == pytest.approx(ref_kl_qp(theta, ref), rel=1e-14)


def test_near_equal_policies_keep_relative_accuracy():
    ref = np.array([0.1, -0.2, 0.3, 0.0])
    theta = ref + 1e-6 * np.array([1.0, -1.0, 0.5, 0.0])
    forward = kl_pq_gradient(theta, ref)
    reverse = kl_qp_gradient(theta, ref)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k3", "loss"), forward, rtol=1e-6)
    np.testing.assert_allclose(expected_gradient(theta, ref, "k2", "loss"), reverse, rtol=1e-6)


# --- training the discretised Gaussian ---------------------------------------------------------------------


def bimodal_reference(vocab=40):
    tokens = np.arange(vocab)
    left = math.log(0.6) - 0.5 * ((tokens - 12) / 2.0) ** 2
    right = math.log(0.4) - 0.5 * ((tokens - 28) / 2.0) ** 2
    return np.logaddexp(left, right)


def test_discretised_gaussian_logits():
    logits = discretised_gaussian_logits(2.0, math.log(2.0), 5)
    np.testing.assert_allclose(logits, -0.5 * ((np.arange(5) - 2.0) / 2.0) ** 2)
    assert discretised_gaussian_logits([1.0, 2.0], [0.0, 0.0], 4).shape == (2, 4)


def test_gaussian_policy_kls_match_definitions():
    ref = bimodal_reference()
    qp, pq = gaussian_policy_kls(ref, [17.0, 12.0], [1.0, 0.7])
    for i, (m, s) in enumerate([(17.0, 1.0), (12.0, 0.7)]):
        theta = discretised_gaussian_logits(m, s, 40)
        assert qp[i] == pytest.approx(ref_kl_qp(theta, ref), rel=1e-12)
        assert pq[i] == pytest.approx(ref_kl_pq(theta, ref), rel=1e-12)


def test_gaussian_policy_kls_close_to_the_reference_and_in_far_tails():
    """A grid point a hair away from a Gaussian reference (KL ~ 6e-16; the plain sum of q (log q - log p) was
    off by 90%), and a narrow policy whose far tails have q = 0 against r = p/q beyond float64 (the k3
    form needs its overflow-safe terms there): both stay finite and accurate."""
    ref = discretised_gaussian_logits(20.0, math.log(3.0), 40) + 7.3  # logits, not log-probabilities
    qp, pq = gaussian_policy_kls(ref, [20.0 + 1e-7, 5.0], [math.log(3.0), math.log(0.3)])
    near = discretised_gaussian_logits(20.0 + 1e-7, math.log(3.0), 40)
    assert qp[0] == pytest.approx(float(mp_kl(near, ref)), rel=1e-7, abs=0)
    assert pq[0] == pytest.approx(float(mp_kl(ref, near)), rel=1e-7, abs=0)
    far = discretised_gaussian_logits(5.0, math.log(0.3), 40)
    assert np.isfinite(qp[1]) and np.isfinite(pq[1])
    assert qp[1] == pytest.approx(float(mp_kl(far, ref)), rel=1e-12, abs=0)
    assert pq[1] == pytest.approx(float(mp_kl(ref, far)), rel=1e-12, abs=0)


def phi_gradient(f, phi):
    return central_difference(lambda v: f(discretised_gaussian_logits(v[0], v[1], 40)), np.asarray(phi))


def test_k3_loss_finds_forward_kl_optimum_and_k2_loss_the_reverse_one():
    ref = bimodal_reference()
    init = (17.0, math.log(3.0))
    forward = fit_gaussian_policy(ref, "k3", "loss", init=init, steps=300)
    reverse = fit_gaussian_policy(ref, "k2", "loss", init=init, steps=300)
    reward = fit_gaussian_policy(ref, "k1", "reward", init=init, steps=300)
    # stationary points of the claimed divergences (finite differences in (mean, log σ))
    assert np.max(np.abs(phi_gradient(lambda t: ref_kl_pq(t, ref), forward.params[-1]))) < 1e-6
    assert np.max(np.abs(phi_gradient(lambda t: ref_kl_qp(t, ref), reverse.params[-1]))) < 1e-6
    # ... and the global minima on a fine grid
    means, log_scales = np.meshgrid(np.linspace(5, 35, 301), np.linspace(0.0, 3.0, 301), indexing="ij")
    qp, pq = gaussian_policy_kls(ref, means, log_scales)
    assert forward.kl_pq[-1] <= pq.min() + 1e-12
    assert reverse.kl_qp[-1] <= qp.min() + 1e-12
    # mass-covering vs mode-seeking: wide and between the modes vs narrow on the heavier mode
    assert forward.scale[-1] > 6 and 15 < forward.mean[-1] < 21
    assert reverse.scale[-1] < 2.5 and abs(reverse.mean[-1] - 12) < 0.5
    # the same expected gradient, so the same path
    np.testing.assert_allclose(reward.params, reverse.params, rtol=1e-12, atol=1e-12)


def test_k3_in_the_reward_ascends_forward_kl_until_collapse():
    """Its expected gradient is ∇(KL(q||p) - KL(p||q)), unbounded below: the run degenerates and stops."""
    path = fit_gaussian_policy(bimodal_reference(), "k3", "reward", init=(17.0, math.log(3.0)), steps=300)
    assert path.steps_taken < 300
    assert np.all(np.diff(path.kl_pq) > 0)
    assert path.scale[-1] < path.scale[0]


def test_stochastic_fit_is_reproducible_and_lands_near_exact_one():
    ref = bimodal_reference()
    init = (17.0, math.log(3.0))
    exact = fit_gaussian_policy(ref, "k3", "loss", init=init, steps=300)
    a = fit_gaussian_policy(ref, "k3", "loss", init=init, steps=300, batch_size=256, rng=1)
    b = fit_gaussian_policy(ref, "k3", "loss", init=init, steps=300, batch_size=256, rng=1)
    np.testing.assert_array_equal(a.params, b.params)
    assert abs(a.mean[-1] - exact.mean[-1]) < 2.0
    assert abs(math.log(a.scale[-1] / exact.scale[-1])) < 0.3


# --- validation ------------------------------------------------------------------------------------------


def test_validation_messages():
    good = [0.0, 1.0]
    with pytest.raises(ValueError, match="estimator must be one of"):
        expected_gradient(good, good, "k4", "loss")
    with pytest.raises(TypeError, match="estimator must be an Estimator or a name"):
        expected_gradient(good, good, 3, "loss")
    with pytest.raises(ValueError, match="use must be one of"):
        expected_gradient(good, good, "k1", "penalty")
    with pytest.raises(TypeError, match="use must be a name"):
        expected_gradient(good, good, "k1", None)
    with pytest.raises(ValueError, match="logits must be finite"):
        expected_gradient([0.0, -np.inf], good, "k1", "loss")
    with pytest.raises(ValueError, match="ref_logits must be finite"):
        kl_qp(good, [np.nan, 0.0])
    with pytest.raises(ValueError, match="logits must be one-dimensional"):
        kl_qp([[0.0, 1.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="logits must not be empty"):
        kl_qp([], [])
    with pytest.raises(TypeError, match="logits must be an array of real numbers"):
        kl_qp(["a", "b"], good)
    with pytest.raises(ValueError, match="same length"):
        kl_pq([0.0, 1.0, 2.0], good)
    with pytest.raises(ValueError, match="behaviour_logits is only meaningful"):
        expected_gradient(good, good, "k1", "loss", behaviour_logits=good)
    with pytest.raises(ValueError, match="behaviour_logits must have the same length"):
        gradient_moments(good, good, "k1", "ratio_loss", behaviour_logits=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="behaviour_logits is required by followed_objective"):
        followed_objective(good, good, "k2", "no_ratio_loss")
    with pytest.raises(ValueError, match="behaviour_logits is required by followed_gradient"):
        followed_gradient(good, good, "k3", "no_ratio_loss")
    with pytest.raises(ValueError, match="behaviour_logits is only meaningful"):
        followed_objective(good, good, "k2", "loss", behaviour_logits=good)
    with pytest.raises(ValueError, match="behaviour_logits must be finite"):
        followed_gradient(good, good, "k2", "no_ratio_loss", behaviour_logits=[np.nan, 0.0])
    with pytest.raises(ValueError, match="estimator must be one of"):
        followed_label("k5", "loss")
    with pytest.raises(ValueError, match="use must be one of"):
        followed_gradient(good, good, "k1", "penalty")
    with pytest.raises(TypeError, match="tokens must be integer"):
        per_sample_gradient([0.5], good, good, "k1", "loss")
    with pytest.raises(ValueError, match=r"tokens must be indices in \[0, 2\)"):
        per_sample_gradient([2], good, good, "k1", "loss")
    with pytest.raises(ValueError, match="n must be at least 2"):
        monte_carlo_gradient(good, good, "k1", "loss", 1)
    with pytest.raises(TypeError, match="n must be an integer"):
        monte_carlo_gradient(good, good, "k1", "loss", 10.0)
    with pytest.raises(ValueError, match="vocab_size must be at least 1"):
        discretised_gaussian_logits(0.0, 0.0, 0)
    with pytest.raises(ValueError, match="step_size must be positive"):
        fit_gaussian_policy(good, "k1", "reward", step_size=0.0)
    with pytest.raises(ValueError, match="init must be a pair"):
        fit_gaussian_policy(good, "k1", "reward", init=(1.0,))
    with pytest.raises(ValueError, match="init\\[1\\] must be finite"):
        fit_gaussian_policy(good, "k1", "reward", init=(1.0, np.inf))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        fit_gaussian_policy(good, "k1", "reward", batch_size=0)


def test_reprs_are_readable():
    moments = gradient_moments([0.0, 1.0], [1.0, 0.0], "k3", "loss")
    assert repr(moments).startswith("GradientMoments(estimator='k3', use='loss', signal=")
    assert "x ~ mu, rho = q/mu" in repr(USES["ratio_loss"])
    assert "x ~ mu, no ratio" in repr(USES["no_ratio_loss"])
    path = fit_gaussian_policy(bimodal_reference(), "k2", "loss", init=(17.0, 1.0), steps=3)
    assert "steps=3," in repr(path)
