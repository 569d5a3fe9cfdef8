"""Tests for klviz._sampling: the one inverse-CDF sampler behind CategoricalPair-style draws, the Markov
chains and the gradient Monte Carlo. Uniforms are chosen by hand (a Generator whose ``random`` returns
given values) so the edges u = 0 and u = 1 - 2^-53 are hit exactly; frequencies by a chi-square test."""

import numpy as np
import pytest
from scipy import stats

from klviz._sampling import TransitionSampler, normalised_cdf, sample_categorical
from tests.conftest import GivenUniforms

LARGEST_BELOW_ONE = 1.0 - 2.0**-53




def test_normalised_cdf_ends_at_one_and_never_decreases(rng):
    # rows whose plain cumulative sum ends a few ulp above or below 1
    probabilities = np.exp(rng.normal(0.0, 20.0, (200, 7)))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    cdf = normalised_cdf(probabilities)
    assert np.all(cdf[:, -1] == 1.0)
    assert np.all(np.diff(cdf, axis=1) >= 0)


def test_zero_probability_tokens_are_never_drawn():
    probabilities = np.array([0.0, 0.25, 0.0, 0.75, 0.0])
    uniforms = [0.0, 0.25, 0.5, LARGEST_BELOW_ONE]
    drawn = sample_categorical(probabilities, len(uniforms), GivenUniforms(uniforms))
    np.testing.assert_array_equal(drawn, [1, 3, 3, 3])


def test_unnormalised_weights_and_frequencies(rng):
    weights = np.array([2.0, 1.0, 0.5, 0.5])  # total 4
    n = 100_000
    counts = np.bincount(sample_categorical(weights, n, rng), minlength=4)
    assert stats.chisquare(counts, n * weights / weights.sum()).pvalue > 1e-3


def test_transitions_stay_in_their_row_at_the_edges():
    # s + u rounds up to s + 1 for u = 1 - 2^-53 and s >= 1: the draw must stay in row s
    transition = np.array([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8], [0.0, 1.0, 0.0]])
    sampler = TransitionSampler(transition)
    states = np.array([0, 1, 2, 0, 1, 2])
    uniforms = [0.0, 0.0, 0.0, LARGEST_BELOW_ONE, LARGEST_BELOW_ONE, LARGEST_BELOW_ONE]
    np.testing.assert_array_equal(sampler(states, GivenUniforms(uniforms)), [0, 0, 1, 1, 2, 1])


@pytest.mark.parametrize("vocab", [1, 4, 50])
def test_transition_frequencies(vocab, rng):
    transition = np.exp(rng.normal(0.0, 1.5, (vocab, vocab)))
    transition /= transition.sum(axis=1, keepdims=True)
    sampler = TransitionSampler(transition)
    state = min(vocab - 1, 2)
    n = 50_000
    counts = np.bincount(sampler(np.full(n, state), rng), minlength=vocab)
    assert counts.size == vocab
    if vocab > 1:
        assert stats.chisquare(counts, n * transition[state]).pvalue > 1e-3
