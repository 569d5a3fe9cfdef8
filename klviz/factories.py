r"""Random pairs at a controlled distance: softmax policies over a vocabulary, and Markov chains.

:func:`perturbed_policy_pair` makes two softmax policies over V tokens a distance δ apart;
:func:`random_markov_chain_pair` two Markov chains over V states whose logits differ by δ-sized noise.
"""

from __future__ import annotations

import numpy as np

from klviz import _checks
from klviz.pairs import CategoricalPair, MarkovChainPair

__all__ = ["perturbed_policy_pair", "random_markov_chain_pair"]


def perturbed_policy_pair(vocab_size: int, perturbation: float, *, logit_scale: float = 2.0,
                          rng=None) -> CategoricalPair:
    r"""Two softmax policies over ``vocab_size`` tokens, p's logits a Gaussian perturbation of q's.

    .. math:: z^q_i \sim N(0, \sigma^2),\qquad z^p_i = z^q_i + \delta\,\varepsilon_i,\
              \varepsilon_i \sim N(0, 1),

    with :math:`\sigma` = ``logit_scale`` and :math:`\delta` = ``perturbation``. For small δ,
    :math:`\mathrm{KL}[q, p] \approx \tfrac12 \mathrm{Var}_q(\delta\varepsilon) \approx \delta^2/2`
    (less the collision probability :math:`\sum_i q_i^2`), whatever V is, so δ sets the gap.

    Parameters
    ----------
    vocab_size : int
        V >= 1.
    perturbation : float
        δ >= 0.
    logit_scale : float, default 2.0
        Spread of q's logits: larger is more peaked.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    CategoricalPair

    Raises
    ------
    TypeError, ValueError
        For a non-integer or non-positive ``vocab_size``, or a negative or non-finite scale.

    Examples
    --------
    >>> pair = perturbed_policy_pair(50_000, 0.01, rng=0)
    >>> pair.vocab_size, round(pair.kl_qp() / (0.01**2 / 2), 2)   # about 1
    (50000, 1.05)
    """
    vocab_size = _checks.integer(vocab_size, "vocab_size", 1)
    perturbation = _checks.non_negative(perturbation, "perturbation")
    logit_scale = _checks.non_negative(logit_scale, "logit_scale")
    rng = _checks.rng(rng)
    q_logits = logit_scale * rng.standard_normal(vocab_size)
    p_logits = q_logits + perturbation * rng.standard_normal(vocab_size)
    return CategoricalPair(p_logits=p_logits, q_logits=q_logits)


def random_markov_chain_pair(vocab_size: int, length: int, perturbation: float, *,
                             logit_scale: float = 1.0, rng=None) -> MarkovChainPair:
    r"""A random pair of Markov chains: p's logits are q's plus Gaussian noise of size ``perturbation``.

    .. math:: z^q \sim N(0, \sigma^2),\qquad z^p = z^q + \delta\,\varepsilon,\ \varepsilon \sim N(0, 1),

    elementwise for the initial logits (V,) and the transition logits (V, V), with
    :math:`\sigma` = ``logit_scale`` and :math:`\delta` = ``perturbation``. Each step's KL is then about
    :math:`\delta^2/2` times (1 - the conditional's collision probability), so the sequence KL grows
    roughly linearly in T.

    Parameters
    ----------
    vocab_size : int
        V, the number of states; at least 1.
    length : int
        T; at least 1.
    perturbation : float
        :math:`\delta \ge 0`; 0 gives p = q.
    logit_scale : float, default 1.0
        Spread of q's logits; larger is more peaked (more deterministic) transitions.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    MarkovChainPair

    Raises
    ------
    TypeError, ValueError
        For a non-integer or too small ``vocab_size``/``length``, or a negative or non-finite scale.

    Examples
    --------
    >>> pair = random_markov_chain_pair(4, 8, 0.0, rng=0)
    >>> pair.kl_qp()
    0.0
    """
    vocab_size = _checks.integer(vocab_size, "vocab_size", 1)
    length = _checks.integer(length, "length", 1)
    perturbation = _checks.non_negative(perturbation, "perturbation")
    logit_scale = _checks.non_negative(logit_scale, "logit_scale")
    rng = _checks.rng(rng)
    shape = (vocab_size, vocab_size)
    q_initial = logit_scale * rng.standard_normal(vocab_size)
    q_transition = logit_scale * rng.standard_normal(shape)
    p_initial = q_initial + perturbation * rng.standard_normal(vocab_size)
    p_transition = q_transition + perturbation * rng.standard_normal(shape)
    return MarkovChainPair(p_initial, p_transition, q_initial, q_transition, length)
