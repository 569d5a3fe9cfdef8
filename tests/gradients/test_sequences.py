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


# --------------------------------------------------------------------------------------------------
# Notebook 08's additions: the reward's gradient, frozen-prefix gradients, the full-vocabulary step KL
# --------------------------------------------------------------------------------------------------

from klviz.gradients.sequences import (  # noqa: E402
    STEP_KL_USES,
    sequence_partial_kl_gradient,
    sequence_reward_gradient,
    sequence_step_kl_gradient,
    sequence_step_kl_moments,
    sequence_step_kl_monte_carlo,
    sequence_step_kl_per_sample_gradients,
)

REWARDS = np.random.default_rng(5).normal(size=(PAIR.length, 3))
EOS_REWARDS = np.random.default_rng(6).normal(size=(EOS_PAIR.length, 3))


def with_q(pair, a, B):
    return MarkovChainPair(pair.p_initial_logits, pair.p_transition_logits, a, B, pair.length, eos=pair.eos)


def finite_difference_gradient(pair, f, h=1e-6):
    """∇ of f(q initial logits, q transition logits) at the pair's q, by central differences."""
    V = pair.vocab_size
    a0, B0 = pair.q_initial_logits, pair.q_transition_logits
    gi = np.array([(f(a0 + h * e, B0) - f(a0 - h * e, B0)) / (2 * h) for e in np.eye(V)])
    gT = np.zeros((V, V))
    for i in range(V):
        for j in range(V):
            E = np.zeros((V, V))
            E[i, j] = h
            gT[i, j] = (f(a0, B0 + E) - f(a0, B0 - E)) / (2 * h)
    return gi, gT


def sequence_log_prob(seq, initial_logits, transition_logits):
    l0, lT = log_softmax(initial_logits), log_softmax(transition_logits)
    return l0[seq[0]] + sum(lT[a, b] for a, b in zip(seq[:-1], seq[1:]))


def expected_reward(pair, rewards, a, B):
    """E_q[Σ_t rewards[t, x_t]] over every sequence, q with logits (a, B)."""
    return math.fsum(math.exp(sequence_log_prob(seq, a, B)) * sum(rewards[t, s] for t, s in enumerate(seq))
                     for seq in sequences(pair.vocab_size, pair.length, pair.eos))


def scores_of(seq, a, B):
    """The per-token scores g_t of one sequence: (initial (V,), list of (row, (V,) vector))."""
    q0, Q = np.exp(log_softmax(a)), np.exp(log_softmax(B))
    g0 = -q0.copy()
    g0[seq[0]] += 1.0
    rows = []
    for prev, cur in zip(seq[:-1], seq[1:]):
        g = -Q[prev].copy()
        g[cur] += 1.0
        rows.append((prev, g))
    return g0, rows


@pytest.mark.parametrize("pair, rewards", [(PAIR, REWARDS), (EOS_PAIR, EOS_REWARDS)], ids=["fixed", "eos"])
def test_reward_gradient_matches_enumeration_and_finite_differences(pair, rewards):
    # reference 1: Σ_x q(x) R(x) Σ_t g_t (the whole-sequence score, no returns-to-go)
    a, B = pair.q_initial_logits, pair.q_transition_logits
    V = pair.vocab_size
    total0, totalT = np.zeros(V), np.zeros((V, V))
    for seq in sequences(V, pair.length, pair.eos):
        weight = math.exp(sequence_log_prob(seq, a, B)) * sum(rewards[t, s] for t, s in enumerate(seq))
        g0, rows = scores_of(seq, a, B)
        total0 += weight * g0
        for row, g in rows:
            totalT[row] += weight * g
    if pair.eos is not None:
        totalT[pair.eos] = 0.0  # never used
    gradient = sequence_reward_gradient(pair, rewards)
    assert_close(gradient, (total0, totalT))
    # reference 2: central differences of the expected reward
    assert_close(gradient, finite_difference_gradient(pair, lambda a, B: expected_reward(pair, rewards, a, B)),
                 tol=1e-8)


def frozen_objective(pair, target, prefix, a, B):
    """J(θ) = Σ_x ν(x) Σ_t D_t(x_{t-1}) with ν fixed (prefix logits) and D the step KL of q_θ = (a, B)."""
    lq0, lQ = log_softmax(a), log_softmax(B)
    lp0, lP = log_softmax(pair.p_initial_logits), log_softmax(pair.p_transition_logits)

    def kl(lq, lp):
        return float(np.sum(np.exp(lq) * (lq - lp))) if target == "kl_qp" else float(np.sum(np.exp(lp) * (lp - lq)))

    total = 0.0
    for seq in sequences(pair.vocab_size, pair.length, pair.eos):
        weight = math.exp(sequence_log_prob(seq, *prefix))
        total += weight * (kl(lq0, lp0) + sum(kl(lQ[s], lP[s]) for s in seq[:-1]))
    return total


@pytest.mark.parametrize("pair", [PAIR, EOS_PAIR], ids=["fixed", "eos"])
@pytest.mark.parametrize("target", ["kl_qp", "kl_pq"])
@pytest.mark.parametrize("prefixes", ["q", "behaviour"])
def test_partial_gradient_is_the_gradient_of_the_frozen_prefix_objective(pair, target, prefixes):
    prefix = (pair.q_initial_logits, pair.q_transition_logits) if prefixes == "q" else BEHAVIOUR
    kwargs = {} if prefixes == "q" else {"prefix_logits": BEHAVIOUR}
    gradient = sequence_partial_kl_gradient(pair, target, **kwargs)
    reference = finite_difference_gradient(pair, lambda a, B: frozen_objective(pair, target, prefix, a, B))
    if pair.eos is not None:
        reference[1][pair.eos] = 0.0  # the eos row is never used: its finite difference is 0 too
    assert_close(gradient, reference, tol=1e-8)


def test_partial_gradients_are_what_the_per_token_losses_follow():
    # Tang & Munos' partial gradient: k2 per token in the loss (and k1 per token in the reward) at q's prefixes,
    # k3 per token in the loss: the forward KL at q's prefixes; ρ·k3 per token (DeepSeek-V3.2): the reverse
    # KL at μ's prefixes
    for pair in (PAIR, EOS_PAIR):
        partial_qp, partial_pq = (sequence_partial_kl_gradient(pair, t) for t in ("kl_qp", "kl_pq"))
        for estimator, use, target in (("k2", "token_loss", partial_qp), ("k1", "token_reward", partial_qp),
                                       ("k3", "token_loss", partial_pq)):
            assert (sequence_expected_gradient(pair, estimator, use) - target).norm <= 1e-14 * target.norm
        deepseek = sequence_expected_gradient(pair, "k3", "token_loss", behaviour_logits=BEHAVIOUR, ratio="token")
        at_mu = sequence_partial_kl_gradient(pair, "kl_qp", prefix_logits=BEHAVIOUR)
        assert (deepseek - at_mu).norm <= 1e-14 * at_mu.norm
        # and none of them is the sequence KL's gradient
        assert (partial_qp - sequence_kl_gradient(pair)).norm > 0.01 * partial_qp.norm


def row_kl_gradient(logits, log_p):
    """∇_z KL(softmax(z)‖p) by the chain rule through the probabilities: J^T (log q - log p + 1), J = diag(q) - qq^T."""
    q = np.exp(log_softmax(logits))
    jacobian = np.diag(q) - np.outer(q, q)
    return jacobian.T @ (np.log(q) - log_p + 1.0)


def step_kl_brute_force(pair, use):
    """Every sequence's step-KL gradient from its definition, with its probability under q."""
    V, T, eos = pair.vocab_size, pair.length, pair.eos
    a, B = pair.q_initial_logits, pair.q_transition_logits
    lq0, lQ = log_softmax(a), log_softmax(B)
    lp0, lP = log_softmax(pair.p_initial_logits), log_softmax(pair.p_transition_logits)
    kl0 = float(np.sum(np.exp(lq0) * (lq0 - lp0)))
    kl_rows = np.sum(np.exp(lQ) * (lQ - lP), axis=1)
    out = []
    for seq in sequences(V, T, eos):
        step_kls = [kl0] + [kl_rows[s] for s in seq[:-1]]
        g0, rows = scores_of(seq, a, B)
        initial = row_kl_gradient(a, lp0)
        transition = np.zeros((V, V))
        for s in seq[:-1]:
            transition[s] += row_kl_gradient(B[s], lP[s])
        coefficients = {"step_kl_loss": [0.0] * len(seq),
                        "step_kl_reward_to_go": [sum(step_kls[u + 1:]) for u in range(len(seq))],
                        "step_kl_sequence_reward": [sum(step_kls)] * len(seq)}[use]
        initial = initial + coefficients[0] * g0
        for u, (row, g) in enumerate(rows, start=1):
            transition[row] += coefficients[u] * g
        out.append((seq, math.exp(sequence_log_prob(seq, a, B)), initial, transition))
    return out


@pytest.mark.parametrize("pair", [PAIR, EOS_PAIR], ids=["fixed", "eos"])
@pytest.mark.parametrize("use", list(STEP_KL_USES))
def test_step_kl_gradients_and_moments_match_enumeration(pair, use):
    cases = step_kl_brute_force(pair, use)
    mean0 = sum(w * g0 for _, w, g0, _ in cases)
    meanT = sum(w * gT for _, w, _, gT in cases)
    gradient = sequence_step_kl_gradient(pair, use)
    assert_close(gradient, (mean0, meanT))
    target = sequence_partial_kl_gradient(pair) if use == "step_kl_loss" else sequence_kl_gradient(pair)
    assert (gradient - target).norm <= 1e-13 * target.norm
    # per-sample gradients: the same vectors, sequence by sequence (padded with -1 after eos)
    tokens = np.array([list(seq) + [-1] * (pair.length - len(seq)) for seq, *_ in cases])
    per_sample = sequence_step_kl_per_sample_gradients(pair, tokens, use)
    reference = np.array([np.concatenate([g0, gT.ravel()]) for _, _, g0, gT in cases])
    np.testing.assert_allclose(per_sample, reference, rtol=0, atol=1e-13)
    # exact moments of the projection on two directions
    for direction in (sequence_kl_gradient(pair, "kl_qp"), sequence_kl_gradient(pair, "kl_pq")):
        x = reference @ direction.flat
        w = np.array([w for _, w, _, _ in cases])
        mean = float(w @ x)
        var = float(w @ (x - mean) ** 2)
        moments = sequence_step_kl_moments(pair, use, direction)
        assert moments.mean == pytest.approx(mean, rel=1e-11)
        assert moments.var == pytest.approx(var, rel=1e-9)


@pytest.mark.parametrize("use", list(STEP_KL_USES))
def test_step_kl_monte_carlo_agrees_with_exact(use):
    d = sequence_kl_gradient(EOS_PAIR, "kl_qp")
    mc = sequence_step_kl_monte_carlo(EOS_PAIR, use, 40_000, rng=4, direction=d)
    assert np.max(np.abs(mc.z_scores(sequence_step_kl_gradient(EOS_PAIR, use)))) < 5
    moments = sequence_step_kl_moments(EOS_PAIR, use, d)
    assert abs(mc.projection_mean - moments.mean) < 5 * moments.std / math.sqrt(mc.n)
    assert mc.projection_std == pytest.approx(moments.std, rel=0.05)


def test_step_kl_is_rao_blackwellised_k2_per_token():
    # E[-ℓ_t g_t | x_{<t}] = ∇KL_t(x_{t-1}): same mean, smaller variance along any direction
    d = sequence_kl_gradient(PAIR, "kl_qp")
    from klviz.gradients.sequences import sequence_gradient_moments

    sampled = sequence_gradient_moments(PAIR, "k2", "token_loss", d)
    exact = sequence_step_kl_moments(PAIR, "step_kl_loss", d)
    assert exact.mean == pytest.approx(sampled.mean, rel=1e-12)
    assert exact.var < sampled.var


def test_additions_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"rewards must have shape \(T, V\)"):
        sequence_reward_gradient(PAIR, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="rewards must be finite"):
        sequence_reward_gradient(PAIR, np.full((PAIR.length, 3), np.inf))
    with pytest.raises(TypeError, match="rewards must be an array of real numbers"):
        sequence_reward_gradient(PAIR, np.full((PAIR.length, 3), "a"))
    with pytest.raises(ValueError, match="use must be one of"):
        sequence_step_kl_gradient(PAIR, "token_loss")
    with pytest.raises(ValueError, match="target must be one of"):
        sequence_partial_kl_gradient(PAIR, "forward")
    with pytest.raises(TypeError, match="direction must be a SequenceGradient"):
        sequence_step_kl_moments(PAIR, "step_kl_loss", np.zeros(3))
    with pytest.raises(TypeError, match="pair must be a MarkovChainPair"):
        sequence_reward_gradient("chain", REWARDS)


def test_coefficient_check_accepts_the_definition_and_names_the_first_wrong_token():
    from klviz.gradients.sequences import check_sequence_coefficients

    tokens = EOS_PAIR.sample(50, rng=8)
    ell = EOS_PAIR.token_log_ratios(tokens)  # 0 at padding
    causal = np.cumsum((-ell)[:, ::-1], axis=1)[:, ::-1]  # Σ_{s≥t} k1(ℓ_s), written out here
    verdict = check_sequence_coefficients(EOS_PAIR, tokens, causal, "k1", "reward_to_go")
    assert verdict.ok and verdict.largest_difference < 1e-12
    # the classic slip: the whole sequence's sum on every token is the sequence-level use, not reward_to_go
    whole = np.repeat((-ell).sum(axis=1)[:, None], EOS_PAIR.length, axis=1)
    verdict = check_sequence_coefficients(EOS_PAIR, tokens, whole, "k1", "reward_to_go")
    first = next((i, t) for i in range(50) for t in range(1, EOS_PAIR.length)
                 if tokens[i, t] >= 0 and abs(whole[i, t] - causal[i, t]) > 1e-9)
    assert not verdict.ok
    assert verdict.message.startswith(f"sequence {first[0]}, position {first[1]}:")
    with pytest.raises(ValueError, match="coefficients must have the shape of tokens"):
        check_sequence_coefficients(EOS_PAIR, tokens, causal[:, :2], "k1", "reward_to_go")


@pytest.mark.parametrize("pair", [PAIR, EOS_PAIR], ids=["fixed", "eos"])
def test_projections_of_coefficients_match_the_dense_gradients(pair):
    from klviz.gradients.sequences import sequence_per_sample_gradients, sequence_projections

    cases = step_kl_brute_force(pair, "step_kl_loss")  # for the list of sequences only
    tokens = np.array([list(seq) + [-1] * (pair.length - len(seq)) for seq, *_ in cases])
    c, _ = sequence_per_sample_gradients(pair, tokens, "k3", "reward_to_go")
    d = sequence_kl_gradient(pair, "kl_pq")
    a, B = pair.q_initial_logits, pair.q_transition_logits
    reference = []
    for (seq, *_), row in zip(cases, c):
        g0, rows = scores_of(seq, a, B)
        x = row[0] * float(g0 @ d.initial)
        x += sum(row[t] * float(g @ d.transition[r]) for t, (r, g) in enumerate(rows, start=1))
        reference.append(x)
    np.testing.assert_allclose(sequence_projections(pair, tokens, c, d), reference, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="coefficients must have the shape of tokens"):
        sequence_projections(pair, tokens, c[:, :1], d)
