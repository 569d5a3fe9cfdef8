"""CategoricalPair at extreme logits and close policies (issue 10's regressions), against mpmath sums."""

import math

import mpmath as mp
import numpy as np
import pytest

from klviz import GENERATORS, CategoricalPair, exact_moments, f_divergence
from klviz.gradients import kl_qp

mp.mp.dps = 50


def mp_kl(p_logits, q_logits):
    """KL[q, p] = Σ q (log q - log p) from the logits, in 50 digits (log-softmax with mpmath)."""
    def log_softmax(v):
        v = [mp.mpf(x) for x in v]
        top = max(v)
        lse = top + mp.log(mp.fsum(mp.exp(x - top) for x in v))
        return [x - lse for x in v]

    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return mp.fsum(mp.exp(b) * (b - a) for a, b in zip(lp, lq))


@pytest.mark.parametrize("p_logits, q_logits", [
    ([0.0, 0.0], [0.0, 1e17]),           # was 1.19; log 2 is right
    ([0.0, 0.0, 0.0], [0.0, 1e300, 0.0]),  # was 2.43; log 3 is right
    ([0.0, 0.0], [0.0, 800.0]),
    ([3.0, -1e5, 2.0], [-1e5, 0.0, 1.0]),
])
def test_kl_at_extreme_logits(p_logits, q_logits):
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    reference = float(mp_kl(p_logits, q_logits))
    assert abs(pair.kl_qp() - reference) <= 1e-13 * reference
    assert exact_moments(pair, "k1").mean == pytest.approx(reference, rel=1e-13)
    assert exact_moments(pair, "k3").mean == pytest.approx(reference, rel=1e-13)


def test_gradient_module_kl_at_extreme_logits():
    assert kl_qp([0.0, 1e300, 0.0], [0.0, 0.0, 0.0]) == pytest.approx(math.log(3), rel=1e-15)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_f_divergences_at_extreme_logits_are_numbers(name):
    # q_logits = [0, 800]: q(0) = e^-800 underflows, r there overflows: was NaN (0 · inf)
    pair = CategoricalPair(p_logits=[0.0, 0.0], q_logits=[0.0, 800.0])
    value = f_divergence(pair, name)
    assert not math.isnan(value)
    if name in ("kl_qp", "half_log_sq", "hellinger", "jensen_shannon", "total_variation", "neyman"):
        assert math.isfinite(value)
    if name == "kl_qp":
        assert value == pytest.approx(math.log(2), rel=1e-13)


@pytest.mark.parametrize("delta", [1e-3, 1e-6, 1e-9])
def test_bias_of_k2_at_close_policies_is_not_the_difference_of_two_rounded_numbers(delta):
    rng = np.random.default_rng(4)
    q_logits = rng.normal(size=8)
    p_logits = q_logits + delta * rng.normal(size=8)
    pair = CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    with mp.workdps(60):
        def log_softmax(v):
            v = [mp.mpf(float(x)) for x in v]
            top = max(v)
            lse = top + mp.log(mp.fsum(mp.exp(x - top) for x in v))
            return [x - lse for x in v]

        lp, lq = log_softmax(p_logits), log_softmax(q_logits)
        L = [a - b for a, b in zip(lp, lq)]
        bias = mp.fsum(mp.exp(b) * (l * l / 2 + l) for b, l in zip(lq, L))  # E[k2 - k1]
    moments = exact_moments(pair, "k2")
    assert moments.bias == pytest.approx(float(bias), rel=1e-6)
