"""Sequence gradients (issue 11) against brute force: every sequence enumerated, each per-sample gradient
written out from its definition (the surrogate's derivative), weighted by the sampling chain's probability.

The references share nothing with klviz.gradients.sequences: probabilities, log-ratios, scores and ratios
are recomputed here from the logits with numpy's own log-softmax.
"""

import itertools
import math

import numpy as np
import pytest

from klviz import ESTIMATORS, Estimator, MarkovChainPair, random_markov_chain_pair
from klviz.gradients.sequences import (
    SEQUENCE_USES,
    sequence_expected_gradient,
    sequence_kl_gradient,
)


def log_softmax(v):
    v = np.asarray(v, dtype=np.float64)
    return v - np.logaddexp.reduce(v, axis=-1, keepdims=True)


def sequences(V, T, eos):
    """Every sequence of length ≤ T (ending at its first eos, if any): lists of states."""
    out = []
    for seq in itertools.product(range(V), repeat=T):
        if eos is not None and eos in seq:
            seq = seq[: seq.index(eos) + 1]
        if seq not in out:
            out.append(seq)
    return out


def brute_force(pair, estimator, use, behaviour=None, ratio="none", normalisation="sum"):
    """Σ_x ν(x) G(x), with G the per-sequence gradient of the surrogate, by its definition."""
    k = ESTIMATORS[estimator] if isinstance(estimator, str) else estimator
    V, T, eos = pair.vocab_size, pair.length, pair.eos
    lq0, lp0 = log_softmax(pair.q_initial_logits), log_softmax(pair.p_initial_logits)
    lQ, lP = log_softmax(pair.q_transition_logits), log_softmax(pair.p_transition_logits)
    if behaviour is None:
        ln0, lN = lq0, lQ
    else:
        ln0, lN = log_softmax(behaviour[0]), log_softmax(behaviour[1])
    q0, Q = np.exp(lq0), np.exp(lQ)
    total0, totalT = np.zeros(V), np.zeros((V, V))
    for seq in sequences(V, T, eos):
        n = len(seq)
        log_nu = ln0[seq[0]] + sum(lN[a, b] for a, b in zip(seq[:-1], seq[1:]))
        ell = [lp0[seq[0]] - lq0[seq[0]]] + [lP[a, b] - lQ[a, b] for a, b in zip(seq[:-1], seq[1:])]
        log_rho = [lq0[seq[0]] - ln0[seq[0]]] + [lQ[a, b] - lN[a, b] for a, b in zip(seq[:-1], seq[1:])]
        L = sum(ell)
        value = [float(k.value(np.array([x]))[0]) for x in ell]
        deriv = [float(k.derivative(np.array([x]))[0]) for x in ell]
        norm = {"sum": 1.0, "sequence_mean": 1.0 / n, "max_length": 1.0 / T}[normalisation]
        c = []
        for t in range(n):
            rho = math.exp(log_rho[t])
            if use == "token_loss":
                c.append(norm * (rho * (value[t] - deriv[t]) if ratio == "token" else -deriv[t]))
            elif use == "token_reward":
                c.append(norm * (rho if ratio == "token" else 1.0) * value[t])
            elif use == "reward_to_go":
                c.append(norm * (rho if ratio == "token" else 1.0) * sum(value[t:]))
            elif use == "sequence_loss":
                c.append(-float(k.derivative(np.array([L]))[0]))
            else:
                c.append(float(k.value(np.array([L]))[0]))
        weight = math.exp(sum(log_rho)) if ratio == "sequence" else 1.0
        g0 = -q0.copy()
        g0[seq[0]] += 1.0
        total0 += math.exp(log_nu) * weight * c[0] * g0
        for t in range(1, n):
            row = seq[t - 1]
            g = -Q[row].copy()
            g[seq[t]] += 1.0
            totalT[row] += math.exp(log_nu) * weight * c[t] * g
    return total0, totalT


def assert_close(gradient, reference, tol=1e-12):
    initial, transition = reference
    # relative to the gradient's size; k1 in the loss has expected gradient 0 (the brute-force sum leaves ~1e-16)
    scale = max(np.max(np.abs(initial)), np.max(np.abs(transition)), 1e-3)
    assert np.max(np.abs(gradient.initial - initial)) <= tol * scale
    assert np.max(np.abs(gradient.transition - transition)) <= tol * scale


PAIR = random_markov_chain_pair(3, 4, 0.8, logit_scale=1.0, rng=7)
BEHAVIOUR = (PAIR.q_initial_logits + 0.4 * np.array([1.0, -1.0, 0.5]),
             PAIR.q_transition_logits + 0.3 * np.random.default_rng(1).normal(size=(3, 3)))


@pytest.mark.parametrize("use", list(SEQUENCE_USES))
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_on_policy_expected_gradients_match_enumeration(estimator, use):
    assert_close(sequence_expected_gradient(PAIR, estimator, use), brute_force(PAIR, estimator, use))


@pytest.mark.parametrize("ratio", ["none", "token", "sequence"])
@pytest.mark.parametrize("use", list(SEQUENCE_USES))
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_off_policy_expected_gradients_match_enumeration(estimator, use, ratio):
    level = SEQUENCE_USES[use].level
    if level == "sequence" and ratio == "token":
        with pytest.raises(ValueError, match="per-token ratio"):
            sequence_expected_gradient(PAIR, estimator, use, behaviour_logits=BEHAVIOUR, ratio=ratio)
        return
    gradient = sequence_expected_gradient(PAIR, estimator, use, behaviour_logits=BEHAVIOUR, ratio=ratio)
    assert_close(gradient, brute_force(PAIR, estimator, use, BEHAVIOUR, ratio))


EOS_PAIR = MarkovChainPair(PAIR.p_initial_logits, PAIR.p_transition_logits, PAIR.q_initial_logits,
                           PAIR.q_transition_logits, 5, eos=2)


@pytest.mark.parametrize("normalisation", ["sum", "sequence_mean", "max_length"])
@pytest.mark.parametrize("use", ["token_loss", "token_reward", "reward_to_go"])
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_length_normalisation_on_variable_lengths_matches_enumeration(estimator, use, normalisation):
    gradient = sequence_expected_gradient(EOS_PAIR, estimator, use, normalisation=normalisation)
    assert_close(gradient, brute_force(EOS_PAIR, estimator, use, normalisation=normalisation))
    off = sequence_expected_gradient(EOS_PAIR, estimator, use, normalisation=normalisation,
                                     behaviour_logits=BEHAVIOUR, ratio="token")
    assert_close(off, brute_force(EOS_PAIR, estimator, use, BEHAVIOUR, "token", normalisation))


@pytest.mark.parametrize("use", ["sequence_loss", "sequence_reward"])
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_sequence_level_uses_with_eos_match_enumeration(estimator, use):
    assert_close(sequence_expected_gradient(EOS_PAIR, estimator, use), brute_force(EOS_PAIR, estimator, use))


def finite_differences(pair, kl):
    """∇ of pair -> kl(pair) in q's logits, by central differences."""
    def with_q(a, B):
        return MarkovChainPair(pair.p_initial_logits, pair.p_transition_logits, a, B, pair.length, eos=pair.eos)

    V, h = pair.vocab_size, 1e-6
    a0, B0 = pair.q_initial_logits, pair.q_transition_logits
    gi = np.array([(kl(with_q(a0 + h * e, B0)) - kl(with_q(a0 - h * e, B0))) / (2 * h) for e in np.eye(V)])
    gT = np.zeros((V, V))
    for i in range(V):
        for j in range(V):
            E = np.zeros((V, V))
            E[i, j] = h
            gT[i, j] = (kl(with_q(a0, B0 + E)) - kl(with_q(a0, B0 - E))) / (2 * h)
    return gi, gT


@pytest.mark.parametrize("pair", [PAIR, EOS_PAIR], ids=["fixed", "eos"])
def test_sequence_kl_gradients_match_finite_differences(pair):
    for target, kl in (("kl_qp", lambda pr: pr.kl_qp()), ("kl_pq", lambda pr: pr.kl_pq())):
        assert_close(sequence_kl_gradient(pair, target), finite_differences(pair, kl), tol=1e-8)


def test_what_follows_the_sequence_kl():
    # Tang & Munos' second pitfall, exactly: k1 with returns-to-go and k2 on the sequence log-ratio follow
    # ∇KL(q‖p); k2 per token in the loss drops the future (a partial gradient); k3 on the sequence in the
    # loss follows ∇KL(p‖q); per token, neither.
    qp, pq = sequence_kl_gradient(PAIR, "kl_qp"), sequence_kl_gradient(PAIR, "kl_pq")
    for estimator, use in (("k1", "reward_to_go"), ("k1", "sequence_reward"), ("k2", "sequence_loss")):
        assert (sequence_expected_gradient(PAIR, estimator, use) - qp).norm <= 1e-14 * qp.norm
    assert (sequence_expected_gradient(PAIR, "k3", "sequence_loss") - pq).norm <= 1e-14 * pq.norm
    for estimator in ("k2", "k3"):
        g = sequence_expected_gradient(PAIR, estimator, "token_loss")
        assert min((g - qp).norm / qp.norm, (g - pq).norm / pq.norm) > 1e-3
    # one token (T = 1): k2 per token in the loss is the sequence-level one
    single = PAIR.with_length(1)
    assert (sequence_expected_gradient(single, "k2", "token_loss")
            - sequence_kl_gradient(single, "kl_qp")).norm <= 1e-15


def test_any_estimator_for_token_level_uses_and_clear_errors():
    clipped = Estimator("k3_clip", value=lambda L: np.minimum(ESTIMATORS["k3"].value(L), 0.3),
                        derivative=lambda L: np.where(ESTIMATORS["k3"].value(L) < 0.3, np.expm1(L), 0.0))
    assert_close(sequence_expected_gradient(PAIR, clipped, "token_loss"), brute_force(PAIR, clipped, "token_loss"))
    with pytest.raises(ValueError, match="needs the exact form"):
        sequence_expected_gradient(PAIR, clipped, "sequence_loss")
    with pytest.raises(ValueError, match="give behaviour_logits"):
        sequence_expected_gradient(PAIR, "k3", "token_loss", ratio="token")
    with pytest.raises(ValueError, match="length normalisation applies to per-token terms"):
        sequence_expected_gradient(PAIR, "k3", "sequence_loss", normalisation="sequence_mean")
    with pytest.raises(ValueError, match="use must be one of"):
        sequence_expected_gradient(PAIR, "k3", "loss")
    with pytest.raises(TypeError, match="pair must be a MarkovChainPair"):
        sequence_expected_gradient("chain", "k3", "token_loss")


def brute_force_projection(pair, estimator, use, direction, behaviour=None, ratio="none", normalisation="sum"):
    """E_ν[X] and Var_ν[X] for X = <G(x), d>, over every sequence (G from the brute-force coefficients)."""
    V, T, eos = pair.vocab_size, pair.length, pair.eos
    values, weights = [], []
    # reuse brute_force on one sequence at a time: a chain that puts all its mass on it is awkward, so redo
    k = ESTIMATORS[estimator] if isinstance(estimator, str) else estimator
    lq0, lp0 = log_softmax(pair.q_initial_logits), log_softmax(pair.p_initial_logits)
    lQ, lP = log_softmax(pair.q_transition_logits), log_softmax(pair.p_transition_logits)
    ln0, lN = (lq0, lQ) if behaviour is None else (log_softmax(behaviour[0]), log_softmax(behaviour[1]))
    q0, Q = np.exp(lq0), np.exp(lQ)
    for seq in sequences(V, T, eos):
        n = len(seq)
        log_nu = ln0[seq[0]] + sum(lN[a, b] for a, b in zip(seq[:-1], seq[1:]))
        ell = [lp0[seq[0]] - lq0[seq[0]]] + [lP[a, b] - lQ[a, b] for a, b in zip(seq[:-1], seq[1:])]
        log_rho = [lq0[seq[0]] - ln0[seq[0]]] + [lQ[a, b] - lN[a, b] for a, b in zip(seq[:-1], seq[1:])]
        L = sum(ell)
        value = [float(k.value(np.array([x]))[0]) for x in ell]
        deriv = [float(k.derivative(np.array([x]))[0]) for x in ell]
        norm = {"sum": 1.0, "sequence_mean": 1.0 / n, "max_length": 1.0 / T}[normalisation]
        x = 0.0
        for t in range(n):
            rho = math.exp(log_rho[t])
            if use == "token_loss":
                c = norm * (rho * (value[t] - deriv[t]) if ratio == "token" else -deriv[t])
            elif use == "token_reward":
                c = norm * (rho if ratio == "token" else 1.0) * value[t]
            elif use == "reward_to_go":
                c = norm * (rho if ratio == "token" else 1.0) * sum(value[t:])
            elif use == "sequence_loss":
                c = -float(k.derivative(np.array([L]))[0])
            else:
                c = float(k.value(np.array([L]))[0])
            if t == 0:
                g = -q0.copy()
                g[seq[0]] += 1.0
                x += c * float(g @ direction.initial)
            else:
                g = -Q[seq[t - 1]].copy()
                g[seq[t]] += 1.0
                x += c * float(g @ direction.transition[seq[t - 1]])
        weight = math.exp(sum(log_rho)) if ratio == "sequence" else 1.0
        values.append(weight * x)
        weights.append(math.exp(log_nu))
    values, weights = np.array(values), np.array(weights)
    mean = float(np.sum(weights * values))
    return mean, float(np.sum(weights * (values - mean) ** 2))


@pytest.mark.parametrize("use", list(SEQUENCE_USES))
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_exact_projection_moments_match_enumeration(estimator, use):
    from klviz.gradients.sequences import sequence_gradient_moments

    d = sequence_kl_gradient(PAIR, "kl_qp")
    for behaviour, ratio in ((None, "none"), (BEHAVIOUR, "none"), (BEHAVIOUR, "token"), (BEHAVIOUR, "sequence")):
        if SEQUENCE_USES[use].level == "sequence" and ratio == "token":
            continue
        moments = sequence_gradient_moments(PAIR, estimator, use, d, behaviour_logits=behaviour, ratio=ratio)
        mean, var = brute_force_projection(PAIR, estimator, use, d, behaviour, ratio)
        assert moments.mean == pytest.approx(mean, rel=1e-10, abs=1e-15), ratio
        assert moments.var == pytest.approx(var, rel=1e-9), ratio
    assert moments.mean == pytest.approx(sequence_expected_gradient(PAIR, estimator, use).dot(d), rel=1e-10,
                                         abs=1e-15)


@pytest.mark.parametrize("normalisation", ["sum", "sequence_mean", "max_length"])
@pytest.mark.parametrize("use", ["token_loss", "reward_to_go", "sequence_reward"])
def test_exact_projection_moments_with_eos_match_enumeration(use, normalisation):
    from klviz.gradients.sequences import sequence_gradient_moments

    if use == "sequence_reward" and normalisation != "sum":
        return
    d = sequence_kl_gradient(EOS_PAIR, "kl_pq")
    moments = sequence_gradient_moments(EOS_PAIR, "k3", use, d, normalisation=normalisation)
    mean, var = brute_force_projection(EOS_PAIR, "k3", use, d, normalisation=normalisation)
    assert moments.mean == pytest.approx(mean, rel=1e-10)
    assert moments.var == pytest.approx(var, rel=1e-9)


@pytest.mark.parametrize("use", list(SEQUENCE_USES))
def test_monte_carlo_agrees_with_exact(use):
    from klviz.gradients.sequences import sequence_gradient_moments, sequence_monte_carlo_gradient

    d = sequence_kl_gradient(EOS_PAIR, "kl_qp")
    for behaviour, ratio in ((None, "none"), (BEHAVIOUR, "token")):
        if SEQUENCE_USES[use].level == "sequence" and ratio == "token":
            continue
        mc = sequence_monte_carlo_gradient(EOS_PAIR, "k3", use, 40_000, rng=3, behaviour_logits=behaviour,
                                           ratio=ratio, direction=d)
        exact = sequence_expected_gradient(EOS_PAIR, "k3", use, behaviour_logits=behaviour, ratio=ratio)
        assert np.max(np.abs(mc.z_scores(exact))) < 5
        moments = sequence_gradient_moments(EOS_PAIR, "k3", use, d, behaviour_logits=behaviour, ratio=ratio)
        assert abs(mc.projection_mean - moments.mean) < 5 * moments.std / math.sqrt(mc.n)
        assert mc.projection_std == pytest.approx(moments.std, rel=0.05)
