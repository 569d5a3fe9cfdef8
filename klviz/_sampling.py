r"""Inverse-CDF sampling of categorical distributions: one implementation for every module that draws tokens.

A draw is one uniform :math:`u \in [0, 1)` and one binary search in the cumulative probabilities,
:math:`x = \min\{i : u < F_i\}`. The CDF is divided by its last entry, so it ends at exactly 1
(:math:`F/F = 1` in IEEE arithmetic) and stays non-decreasing (cumulative sums of non-negative numbers
and division by a positive constant are monotone under rounding): every u < 1 finds a token, and a
token of probability 0 (a zero-width step) is never returned.
"""

from __future__ import annotations

import numpy as np


def normalised_cdf(probabilities: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, each row divided by its total: non-decreasing, ending at exactly 1."""
    cdf = np.cumsum(np.asarray(probabilities, dtype=np.float64), axis=-1)
    cdf /= cdf[..., -1:]
    return cdf


def sample_categorical(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn from a 1-D vector of non-negative weights (normalised here), one uniform each."""
    # side="right": u < 1 = F[-1] always finds an index, and never one with F_i = F_{i-1} (probability 0).
    return np.searchsorted(normalised_cdf(probabilities), rng.random(n), side="right")


class TransitionSampler:
    r"""Next states for many Markov chains at once, from the rows of a (V, V) transition matrix.

    Row s of the normalised CDF is shifted up by s and the rows are concatenated: one sorted array
    (row s spans [s, s + 1] and ends at exactly s + 1), so a single binary search for
    :math:`s + u` inverts the right row for every chain. The shift rounds the CDF to the spacing of
    floats near V (:math:`V \cdot 2^{-53}`), so a transition less likely than that is drawn as a
    neighbour: a bias below :math:`V \cdot 10^{-16}` in any frequency.
    """

    def __init__(self, probabilities: np.ndarray):
        cdf = normalised_cdf(probabilities)
        self.vocab_size = cdf.shape[0]
        self._offset_cdf = (cdf + np.arange(self.vocab_size)[:, None]).ravel()

    def __call__(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One next state for each current state in ``states`` (integer array), one uniform each."""
        states = np.asarray(states)
        target = states + rng.random(states.size)
        # s + u can round up to s + 1 (u within 2^-53 s of 1); the largest float below s + 1 stays in row s.
        np.minimum(target, np.nextafter(states + 1.0, -np.inf), out=target)
        return np.searchsorted(self._offset_cdf, target, side="right") - states * self.vocab_size
