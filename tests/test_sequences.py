"""Sequence-level KL of two Markov chains: dynamic programming against brute-force enumeration.

The reference enumerates all V^T sequences and evaluates every probability and estimator in
40-digit mpmath straight from the definitions (softmax of the logits, products over steps), so it
shares no code with the forward passes in klviz.sequences.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest

from klviz import simulate
from klviz.factories import random_markov_chain_pair
from klviz.sequences import (
    SEQUENCE_ESTIMATORS,
    MarkovChainPair,
    sequence_estimates,
    sequence_moments,
)
from tests.conftest import GivenUniforms

# A private context: the 40 digits do not leak into other test modules through mpmath.mp.
M = mpmath.MPContext()
M.dps = 40


def _softmax(logits):
    logits = [M.mpf(float(v)) for v in logits]
    total = M.fsum(M.exp(v) for v in logits)
    return [M.exp(v) / total for v in logits]


def _brute_force(pair: MarkovChainPair):
    """Every sequence with its q-probability, per-token ratios and the estimators, in mpmath."""
    q0, p0 = _softmax(pair.q_initial_logits), _softmax(pair.p_initial_logits)
    q_rows = [_softmax(row) for row in pair.q_transition_logits]
    p_rows = [_softmax(row) for row in pair.p_transition_logits]

    def step_kl(q, p):
        return M.fsum(qi * M.log(qi / pi) for qi, pi in zip(q, p))

    rows = []
    for seq in itertools.product(range(pair.vocab_size), repeat=pair.length):
        q_prob = q0[seq[0]]
        ratios = [p0[seq[0]] / q0[seq[0]]]
        kls = [step_kl(q0, p0)]
        for prev, cur in zip(seq[:-1], seq[1:]):
            q_prob *= q_rows[prev][cur]
            ratios.append(p_rows[prev][cur] / q_rows[prev][cur])
            kls.append(step_kl(q_rows[prev], p_rows[prev]))
        logs = [M.log(r) for r in ratios]
        total = M.fsum(logs)
        values = {
            "token_k1": -total,
            "token_k2": M.fsum(x * x / 2 for x in logs),
            "token_k3": M.fsum(r - 1 - x for r, x in zip(ratios, logs)),
            "sequence_k2": total * total / 2,
            "sequence_k3": M.exp(total) - 1 - total,
            "step_kl": M.fsum(kls),
        }
        rows.append((seq, q_prob, ratios, values))
    return rows


def _moments(rows, name):
    mean = M.fsum(q * v[name] for _, q, _, v in rows)
    var = M.fsum(q * (v[name] - mean) ** 2 for _, q, _, v in rows)
    return mean, var


CASES = [(2, 1, 0.8, 1.0), (2, 6, 0.5, 1.5), (3, 4, 0.7, 1.0), (4, 3, 1.2, 2.0), (3, 2, 0.05, 0.5)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"V{c[0]}-T{c[1]}-d{c[2]}")
def case(request):
    vocab, length, perturbation, scale = request.param
    pair = random_markov_chain_pair(vocab, length, perturbation, logit_scale=scale, rng=vocab * 100 + length)
    return pair, _brute_force(pair)


def test_enumeration_is_a_distribution(case):
    _, rows = case
    assert abs(M.fsum(q for _, q, _, _ in rows) - 1) < M.mpf(10) ** -30


def test_kl_matches_enumeration(case):
    pair, rows = case
    exact = M.fsum(q * v["token_k1"] for _, q, _, v in rows)
    assert pair.kl_qp() == pytest.approx(float(exact), rel=1e-13, abs=1e-300)
    assert float(math.fsum(pair.kl_per_step())) == pytest.approx(pair.kl_qp(), rel=1e-15)


def test_kl_reverse_matches_enumeration(case):
    pair, rows = case
    # KL[p, q] = E_q[R log R]
    exact = M.fsum(q * M.fprod(r) * M.log(M.fprod(r)) for _, q, r, _ in rows)
    assert pair.kl_pq() == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("name", SEQUENCE_ESTIMATORS)
def test_moments_match_enumeration(case, name):
    pair, rows = case
    mean, var = _moments(rows, name)
    m = sequence_moments(pair, name)
    assert m.mean == pytest.approx(float(mean), rel=1e-12)
    # sequence_k3's variance is a difference of O(KL) terms (see its docstring).
    assert m.var == pytest.approx(float(var), rel=1e-8 if name == "sequence_k3" else 1e-11, abs=1e-300)
    assert m.target == pytest.approx(pair.kl_qp(), rel=1e-15)


@pytest.mark.parametrize("name", ["token_k1", "token_k3", "sequence_k3", "step_kl"])
def test_unbiased_estimators_are_exactly_unbiased(case, name):
    """By enumeration at 40 digits: the mean equals KL to far below double precision."""
    _, rows = case
    kl = M.fsum(q * v["token_k1"] for _, q, _, v in rows)
    mean, _ = _moments(rows, name)
    assert abs(mean - kl) < M.mpf(10) ** -30 * max(1, abs(kl))


def test_conditional_mean_of_r_minus_1_is_zero(case):
    """The proof's step: E_q[r_t - 1 | prefix] = 0 for every prefix and every t."""
    pair, rows = case
    by_prefix = {}
    for seq, q, ratios, _ in rows:
        for t in range(pair.length):
            numerator, denominator = by_prefix.get((t, seq[:t]), (0, 0))
            by_prefix[(t, seq[:t])] = (numerator + q * (ratios[t] - 1), denominator + q)
    worst = max(abs(num / den) for num, den in by_prefix.values())
    assert worst < M.mpf(10) ** -30


@pytest.mark.parametrize("name", ["token_k2", "sequence_k2"])
def test_k2_forms_are_biased(case, name):
    """Biased, in either direction: E[log² r]/2 is a different f-divergence, not KL."""
    pair, rows = case
    kl = M.fsum(q * v["token_k1"] for _, q, _, v in rows)
    mean, _ = _moments(rows, name)
    assert abs(mean - kl) > 1e-6 * kl
    assert sequence_moments(pair, name).bias == pytest.approx(float(mean - kl), rel=1e-9)


def test_sample_values_match_enumeration(case):
    """sequence_estimates and step_kls evaluated on every sequence agree with the mpmath values."""
    pair, rows = case
    tokens = np.array([seq for seq, _, _, _ in rows])
    values = sequence_estimates(pair, tokens)
    for name in SEQUENCE_ESTIMATORS:
        expected = np.array([float(v[name]) for _, _, _, v in rows])
        np.testing.assert_allclose(values[name], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pair.log_ratio(tokens), -values["token_k1"], rtol=0, atol=0)


def test_state_marginals_match_enumeration(case):
    pair, rows = case
    marginals = pair.state_marginals()
    for t in range(pair.length):
        for s in range(pair.vocab_size):
            exact = M.fsum(q for seq, q, _, _ in rows if seq[t] == s)
            assert marginals[t, s] == pytest.approx(float(exact), rel=1e-13)


def test_sampling_frequencies():
    """Sequence frequencies from 200,000 draws against exact probabilities (chi-square, 26 dof)."""
    from scipy import stats

    pair = random_markov_chain_pair(3, 3, 1.0, rng=7)
    rows = _brute_force(pair)
    n = 200_000
    tokens = pair.sample(n, rng=np.random.default_rng(11))
    assert tokens.shape == (n, 3) and tokens.dtype == np.int64
    codes = tokens @ np.array([9, 3, 1])
    observed = np.bincount(codes, minlength=27)
    expected = n * np.array([float(q) for _, q, _, _ in rows])  # itertools.product order = base-3 codes
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, df=26) > 1e-3


def test_sampling_is_reproducible_and_uses_rng():
    pair = random_markov_chain_pair(5, 7, 0.3, rng=0)
    a = pair.sample(50, rng=3)
    np.testing.assert_array_equal(a, pair.sample(50, rng=np.random.default_rng(3)))
    assert not np.array_equal(a, pair.sample(50, rng=4))
    assert pair.sample(0, rng=0).shape == (0, 7)




def test_sampling_inverts_each_row_for_peaked_chains():
    """Peaked rows: probabilities that round so a row's CDF ends a few ulp above 1. Shifting such rows by
    their index without normalising left the concatenated CDF unsorted, and the binary search returned
    states outside [0, V) (e.g. -1). Every draw must be the inverse CDF of its own row, up to rounding."""
    rng = np.random.default_rng(1)
    uniforms = np.array([0.0, 1e-300, 1e-17, 0.25, 0.5, 0.75, 1.0 - 2.0**-53])
    for _ in range(300):
        vocab = int(rng.integers(2, 6))
        transition = rng.normal(0.0, 20.0, (vocab, vocab))
        for first in range(vocab):
            initial = np.where(np.arange(vocab) == first, 50.0, -50.0)  # x_0 = first, whatever u is
            pair = MarkovChainPair(initial, transition, initial, transition, length=2)
            tokens = pair.sample(uniforms.size, rng=GivenUniforms([0.5] * uniforms.size + list(uniforms)))
            assert np.all(tokens[:, 0] == first)
            second = tokens[:, 1]
            assert np.all((second >= 0) & (second < vocab)), (transition.tolist(), first, second)
            row = np.exp(transition[first] - transition[first].max())
            cdf = np.concatenate([[0.0], np.cumsum(row) / row.sum()])
            # u lies in the chosen state's CDF step, up to the rounding of the shifted table (V ulp)
            assert np.all(cdf[second] <= uniforms + 1e-14) and np.all(uniforms < cdf[second + 1] + 1e-14)
            assert np.all(row[second] > 0)


def test_monte_carlo_agrees_with_exact_moments(rng):
    pair = random_markov_chain_pair(6, 16, 0.3, rng=5)
    n = 40_000
    values = sequence_estimates(pair, pair.sample(n, rng=rng))
    for name in SEQUENCE_ESTIMATORS:
        exact = sequence_moments(pair, name)
        stderr = values[name].std(ddof=1) / math.sqrt(n)
        assert abs(values[name].mean() - exact.mean) < 5 * stderr, name
        # sample variance of a sum of n terms: loose, the 4th moment is unknown here
        assert values[name].std(ddof=1) == pytest.approx(exact.std, rel=0.1), name


def test_simulate_gives_sequence_level_estimators(rng):
    """The pair is a Pair whose log-ratio is the sequence's: simulate's k1/k2/k3 are sequence-level."""
    pair = random_markov_chain_pair(4, 8, 0.3, rng=2)
    result = simulate(pair, 20_000, rng=rng, chunk_size=5_000)
    for name, sequence_name in (("k1", "token_k1"), ("k2", "sequence_k2"), ("k3", "sequence_k3")):
        exact = sequence_moments(pair, sequence_name)
        assert abs(result[name].mean - exact.mean) < 5 * result[name].stderr


def test_identical_chains_give_zero():
    pair = random_markov_chain_pair(4, 6, 0.0, rng=1)
    assert pair.kl_qp() == 0.0
    for name in SEQUENCE_ESTIMATORS:
        m = sequence_moments(pair, name)
        assert m.mean == 0.0 and m.var == 0.0


def test_small_gap_accuracy():
    """Close chains: variances of O(KL²) still agree with a 40-digit reference."""
    pair = random_markov_chain_pair(3, 4, 1e-3, rng=9)
    rows = _brute_force(pair)
    for name, rel in (("token_k3", 1e-9), ("step_kl", 1e-9), ("sequence_k2", 1e-9), ("sequence_k3", 1e-5)):
        _, var = _moments(rows, name)
        assert sequence_moments(pair, name).var == pytest.approx(float(var), rel=rel), name


def test_chains_offset_by_a_constant_are_identical():
    """Logits shifted by 1000 (exactly: multiples of 1/8) are the same chain: equal log-probabilities and
    KL 0 up to the last bit of CategoricalPair's centring (Σq ≠ 1 by an ulp leaves log r ~ 1e-29, KL ~ 1e-57).
    Without the max-shift in the log-softmax, each log-probability rounded at 1000's magnitude: KL ~ 1e-27."""
    rng = np.random.default_rng(4)
    initial = np.round(8 * rng.normal(size=5)) / 8
    transition = np.round(8 * rng.normal(size=(5, 5))) / 8
    pair = MarkovChainPair(initial + 1000.0, transition + 1000.0, initial, transition, length=6)
    np.testing.assert_array_equal(pair.log_p_initial, pair.log_q_initial)
    np.testing.assert_array_equal(pair.log_p_transition, pair.log_q_transition)
    assert 0.0 <= pair.kl_qp() < 1e-50 and 0.0 <= pair.kl_pq() < 1e-50
    assert np.all(pair.step_kls(pair.sample(10, rng=0)) < 1e-50)


def test_near_identical_chains_keep_full_relative_precision():
    """Per-step KLs of order 1e-17 against 40-digit sums: the log-ratios come from the logit differences."""
    pair = random_markov_chain_pair(20, 2, 1e-8, logit_scale=2.0, rng=12)

    def reference_kl(q_logits, p_logits):
        q, p = _softmax(q_logits), _softmax(p_logits)
        return float(M.fsum(qi * M.log(qi / pi) for qi, pi in zip(q, p)))

    states = np.arange(pair.vocab_size)
    step = pair.step_kls(np.stack([states, states], axis=1))  # (x_0 = s): KL of the initial rows, then row s
    expected_initial = reference_kl(pair.q_initial_logits, pair.p_initial_logits)
    np.testing.assert_allclose(step[:, 0], expected_initial, rtol=1e-13)
    expected_rows = [reference_kl(q, p) for q, p in zip(pair.q_transition_logits, pair.p_transition_logits)]
    np.testing.assert_allclose(step[:, 1], expected_rows, rtol=1e-13)
    assert pair.kl_qp() == pytest.approx(expected_initial + float(np.exp(pair.log_q_initial) @ expected_rows),
                                      rel=1e-13, abs=0)


def test_rao_blackwell_sum_is_not_always_lower():
    """Per-step KLs summed can have more variance than the k1 sum (cross-step covariances)."""
    log = np.log
    pair = MarkovChainPair(log([0.95, 0.05]), log([[0.95, 0.05], [0.4, 0.6]]),
                           log([0.5, 0.5]), log([[0.05, 0.95], [0.02, 0.98]]), length=3)
    rows = _brute_force(pair)
    _, var_k1 = _moments(rows, "token_k1")
    _, var_rb = _moments(rows, "step_kl")
    assert var_rb > 1.5 * var_k1
    assert sequence_moments(pair, "step_kl").var > sequence_moments(pair, "token_k1").var


def test_rao_blackwell_one_step_has_zero_variance():
    pair = random_markov_chain_pair(5, 1, 0.5, rng=0)
    assert sequence_moments(pair, "step_kl").var == 0.0
    assert sequence_moments(pair, "token_k3").var > 0.0


def test_sequence_k3_variance_grows_geometrically_and_overflows_to_inf():
    pair = random_markov_chain_pair(4, 1, 1.0, rng=3)
    variances = [sequence_moments(pair.with_length(t), "sequence_k3").var for t in (8, 16, 32)]
    assert variances[2] / variances[1] > variances[1] / variances[0] > 1.5
    huge = random_markov_chain_pair(4, 4000, 3.0, rng=3)
    assert sequence_moments(huge, "sequence_k3").var == math.inf


def test_with_length_and_swapped():
    pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    longer = pair.with_length(9)
    assert longer.length == 9 and longer.vocab_size == 3
    np.testing.assert_array_equal(longer.q_transition_logits, pair.q_transition_logits)
    swapped = pair.swapped()
    np.testing.assert_array_equal(swapped.log_q_transition, pair.log_p_transition)
    assert swapped.swapped().kl_qp() == pair.kl_qp()
    assert "MarkovChainPair(vocabulary=3, length=4" in repr(pair)


def test_arrays_are_read_only():
    pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    with pytest.raises(ValueError):
        pair.log_q_transition[0, 0] = 0.0
    with pytest.raises(ValueError):
        pair.p_initial_logits[0] = 0.0


# -------------------------------------------------------------------------------------------------
# Validation
# -------------------------------------------------------------------------------------------------

def _chains(**overrides):
    args = dict(p_initial_logits=np.zeros(3), p_transition_logits=np.zeros((3, 3)),
                q_initial_logits=np.zeros(3), q_transition_logits=np.zeros((3, 3)), length=4)
    args.update(overrides)
    return MarkovChainPair(**args)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(length=0), ValueError, "length must be at least 1"),
        (dict(length=2.0), TypeError, "length must be an integer"),
        (dict(length=True), TypeError, "length must be an integer"),
        (dict(q_initial_logits=np.zeros((3, 1))), ValueError, r"q_initial_logits must have shape \(V,\)"),
        (dict(p_transition_logits=np.zeros(3)), ValueError, r"p_transition_logits must have shape \(V, V\)"),
        (dict(p_transition_logits=np.zeros((3, 4))), ValueError, r"p_transition_logits must have shape \(3, 3\)"),
        (dict(p_initial_logits=np.zeros(4)), ValueError, r"p_initial_logits must have shape \(3,\)"),
        (dict(q_transition_logits=np.zeros((2, 2))), ValueError, r"q_transition_logits must have shape \(3, 3\)"),
        (dict(p_initial_logits=np.array([0.0, np.nan, 0.0])), ValueError, "p_initial_logits must be finite"),
        (dict(q_transition_logits=np.full((3, 3), -np.inf)), ValueError, "q_transition_logits must be finite"),
        (dict(q_initial_logits=np.array(["a", "b", "c"])), TypeError, "q_initial_logits must be an array of real"),
        (dict(q_initial_logits=np.zeros(0)), ValueError, "q_initial_logits must not be empty"),
    ],
)
def test_invalid_chains(overrides, error, match):
    with pytest.raises(error, match=match):
        _chains(**overrides)


def test_invalid_tokens():
    pair = _chains()
    with pytest.raises(TypeError, match="tokens must be integer"):
        pair.token_log_ratios(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"tokens must have shape \(n, 4\)"):
        pair.token_log_ratios(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=r"tokens must be states in \[0, 3\)"):
        pair.step_kls(np.full((1, 4), 3))
    with pytest.raises(ValueError, match="n must be non-negative"):
        pair.sample(-1)


def test_numpy_integers_are_accepted():
    a = random_markov_chain_pair(np.int64(3), np.int32(4), 0.5, rng=0)
    b = random_markov_chain_pair(3, 4, 0.5, rng=0)
    assert a.vocab_size == 3 and a.length == 4 and type(a.length) is int
    np.testing.assert_array_equal(a.p_transition_logits, b.p_transition_logits)


def test_invalid_estimator_and_pair():
    pair = _chains()
    with pytest.raises(ValueError, match="estimator must be one of"):
        sequence_moments(pair, "k3")
    with pytest.raises(TypeError, match="estimator must be a SequenceEstimator or a name"):
        sequence_moments(pair, 3)
    with pytest.raises(ValueError, match="estimator must be one of"):
        sequence_estimates(pair, pair.sample(2, rng=0), ["token_k4"])
    with pytest.raises(TypeError, match="pair must be a MarkovChainPair"):
        sequence_moments(object(), "token_k1")


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0, 3, 0.1), {}, ValueError, "vocab_size must be at least 1"),
        ((2.5, 3, 0.1), {}, TypeError, "vocab_size must be an integer"),
        ((3, 0, 0.1), {}, ValueError, "length must be at least 1"),
        ((3, 3, -0.1), {}, ValueError, "perturbation must be finite and non-negative"),
        ((3, 3, 0.1), {"logit_scale": math.inf}, ValueError, "logit_scale must be finite"),
        ((3, 3, "0.1"), {}, TypeError, "perturbation must be a real number"),
    ],
)
def test_invalid_random_pair(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        random_markov_chain_pair(*args, **kwargs)
