"""Tests for klviz.trainers.simulate: the logs are what a trainer would log, and training goes where the recipe's
stationary policy is (derived in closed form here: the tilt p·e^{R/β} for k1 in the reward)."""

import numpy as np
import pytest

from klviz.trainers import stationary_policy
from klviz.trainers.simulate import TrainingRun, train_tabular_policy

REF = np.array([0.4, -0.2, 0.0, -1.0, 0.7])
REWARD = np.array([0.3, -0.5, 1.0, 0.2, -0.1])


def log_softmax(v):
    return v - np.logaddexp.reduce(v)


def test_first_forward_pass_is_the_reference_and_logs_line_up():
    run = train_tabular_policy("verl:low_var_kl-loss", REF, REWARD, beta=0.5, steps=1, batch=100, epochs=1, rng=3)
    log_p = log_softmax(REF)
    np.testing.assert_allclose(run.ref_logp, log_p[run.tokens], atol=1e-14)
    np.testing.assert_array_equal(run.logp, run.old_logp)          # one epoch: the policy is the rollout policy
    np.testing.assert_allclose(run.logp, log_p[run.tokens], atol=1e-15)
    two = train_tabular_policy("verl:low_var_kl-loss", REF, REWARD, beta=0.5, steps=1, batch=100, epochs=2, rng=3)
    np.testing.assert_array_equal(two.tokens, run.tokens)          # same seed, same rollout
    assert np.max(np.abs(two.logp - two.old_logp)) > 1e-3          # the second epoch's policy has moved
    np.testing.assert_array_equal(two.logp, two.logged_logits[two.tokens])
    np.testing.assert_array_equal(two.old_logp, two.rollout_logits[two.tokens])
    np.testing.assert_allclose(np.logaddexp.reduce(two.logged_logits), 0.0, atol=1e-14)


def test_reproducible_and_displayed():
    a = train_tabular_policy("trl:grpo-k3", REF, REWARD, beta=0.5, steps=3, batch=50, rng=7)
    b = train_tabular_policy("trl:grpo-k3", REF, REWARD, beta=0.5, steps=3, batch=50, rng=7)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert isinstance(a, TrainingRun) and repr(a).startswith("TrainingRun(recipe='trl:grpo-k3', steps=3")


@pytest.mark.parametrize("name", ["verl:kl-reward", "trl:grpo-k3"])
def test_training_goes_to_the_stationary_policy(name):
    """Many small steps on large batches: the policy ends within 2% (in KL) of where it started from the target."""
    target = stationary_policy(name, REF, REWARD, 1.0).probs
    if name == "verl:kl-reward":
        tilt = np.exp(log_softmax(REF) + REWARD / 1.0)
        np.testing.assert_allclose(target, tilt / tilt.sum(), rtol=1e-9)
    run = train_tabular_policy(name, REF, REWARD, beta=1.0, steps=300, batch=20_000, epochs=1, learning_rate=0.5,
                               rng=11)
    q = np.exp(log_softmax(run.logits))
    p = np.exp(log_softmax(REF))
    start, end = np.sum(p * np.log(p / target)), np.sum(q * np.log(q / target))
    assert end < 0.02 * start


def test_validation():
    with pytest.raises(ValueError, match="rewards must be finite, one per token"):
        train_tabular_policy("trl:grpo-k3", REF, REWARD[:3], beta=0.5, steps=1, batch=10)
    with pytest.raises(ValueError, match="beta must be positive"):
        train_tabular_policy("trl:grpo-k3", REF, REWARD, beta=0.0, steps=1, batch=10)
    with pytest.raises(ValueError, match="batch must be at least 2"):
        train_tabular_policy("trl:grpo-k3", REF, REWARD, beta=0.5, steps=1, batch=1)
