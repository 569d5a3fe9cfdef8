"""MarkovChainPair's dynamic programmes against enumeration of every sequence in mpmath (issue 10)."""

import itertools
import math

import mpmath as mp
import numpy as np
import pytest

from klviz import MarkovChainPair, exact_moments, random_markov_chain_pair, sequence_moments, simulate

mp.mp.dps = 60


def enumerate_sequence_moments(pair):
    """E_q and second moments of k1, k2, k3 of the sequence log-ratio, over all V^T sequences."""
    def log_softmax(v):
        v = [mp.mpf(float(x)) for x in v]
        top = max(v)
        lse = top + mp.log(mp.fsum(mp.exp(x - top) for x in v))
        return [x - lse for x in v]

    lq0, lp0 = log_softmax(pair.q_initial_logits), log_softmax(pair.p_initial_logits)
    lqT = [log_softmax(r) for r in pair.q_transition_logits]
    lpT = [log_softmax(r) for r in pair.p_transition_logits]
    sums = {k: [mp.mpf(0), mp.mpf(0)] for k in ("k1", "k2", "k3")}
    for seq in itertools.product(range(pair.vocab_size), repeat=pair.length):
        lq = lq0[seq[0]] + mp.fsum(lqT[a][b] for a, b in zip(seq[:-1], seq[1:]))
        lp = lp0[seq[0]] + mp.fsum(lpT[a][b] for a, b in zip(seq[:-1], seq[1:]))
        w, L = mp.exp(lq), lp - lq
        for name, value in (("k1", -L), ("k2", L * L / 2), ("k3", mp.expm1(L) - L)):
            sums[name][0] += w * value
            sums[name][1] += w * value * value
    return {name: (m1, m2 - m1 * m1) for name, (m1, m2) in sums.items()}


@pytest.mark.parametrize("delta", [1.0, 1e-3, 1e-6])
def test_sequence_level_moments_match_enumeration(delta):
    pair = random_markov_chain_pair(3, 5, delta, logit_scale=1.5, rng=3)
    reference = enumerate_sequence_moments(pair)
    for name in ("k1", "k2", "k3"):
        mean, var = reference[name]
        moments = exact_moments(pair, name)
        assert moments.mean == pytest.approx(float(mean), rel=1e-10), name
        # was 240× too big for k3 at δ = 1e-6 (Var R - 2 Cov(R, L) + Var L cancelling)
        assert moments.var == pytest.approx(float(var), rel=1e-8), name
        assert sequence_moments(pair, f"sequence_{name}").var == pytest.approx(moments.var, rel=1e-12)


def test_sampling_log_ratios_streams_over_time_in_bounded_memory():
    import tracemalloc

    pair = random_markov_chain_pair(4, 20_000, 0.2, rng=1)
    tracemalloc.start()
    values = pair.sample_log_ratio(16, rng=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert values.shape == (16,)
    assert peak < 2_000_000  # a (16, 20000) token array alone would be 2.6 MB
    # and the same draws as sampling the tokens first
    np.testing.assert_allclose(values, pair.log_ratio(pair.sample(16, rng=0)), rtol=1e-12)


def test_simulate_chunks_sequences_by_tokens():
    pair = random_markov_chain_pair(3, 1000, 0.05, rng=2)
    assert pair.simulation_batch(2**16) == 65
    assert pair.with_length(10**6).simulation_batch(2**16) == 1
    result = simulate(pair, 400, rng=1, estimators=("k1", "k3"))
    exact = exact_moments(pair, "k3")
    assert abs(result["k3"].mean - exact.mean) < 4 * result["k3"].stderr


def test_vectorised_row_kls_match_per_row_sums():
    pair = random_markov_chain_pair(30, 3, 0.4, rng=6)
    _, rows = pair.conditional_kls
    for s in (0, 11, 29):
        q = np.exp(pair.log_q_transition[s])
        expected = float(np.sum(q * (pair.log_q_transition[s] - pair.log_p_transition[s])))
        assert rows[s] == pytest.approx(expected, rel=1e-12)


def test_user_estimator_without_exact_form_is_refused_at_sequence_level():
    from klviz import Estimator, k3

    pair = random_markov_chain_pair(3, 4, 0.3, rng=0)
    plain = Estimator("k3_plain", value=k3, derivative=lambda L: np.expm1(L))
    with pytest.raises(ValueError, match="need the estimator's exact form"):
        exact_moments(pair, plain)
    # per-token sums of it are fine
    assert sequence_moments(pair, "token_k3").mean == pytest.approx(pair.kl_qp(), rel=1e-14)


def test_markov_pair_validation():
    flat = np.zeros(2)
    with pytest.raises(ValueError, match="q_transition_logits must have shape"):
        MarkovChainPair(flat, np.zeros((2, 2)), flat, np.zeros((3, 3)), length=3)
    with pytest.raises(TypeError, match="length must be an integer"):
        MarkovChainPair(flat, np.zeros((2, 2)), flat, np.zeros((2, 2)), length=2.5)
    assert math.isfinite(MarkovChainPair(flat, np.zeros((2, 2)), flat, np.zeros((2, 2)), length=3).kl_qp())
