r"""Sequence-KL estimators over Markov-chain pairs: per-token sums, sequence-level values, exactly and from samples.

An LLM policy q and a reference p generate a sequence token by token; :class:`klviz.MarkovChainPair` is
the toy model (its docstring gives the chain rule). Three ways to turn an estimator k of log-ratios into
an estimator of the sequence KL (:class:`SequenceEstimator`, ``level``):

=============  ===================================================  =================================
level          per sequence                                          unbiased for KL[q, p] when
=============  ===================================================  =================================
``token``      :math:`\sum_t k(\ell_t)`                              k is (k1, k3): E_q[r_t - 1 | prefix] = 0
``sequence``   :math:`k(L)`, :math:`L = \sum_t \ell_t = \log R`     k is (k1, k3): E_q[R - 1] = 0
``step``       :math:`\sum_t \mathrm{KL}_t(x_{t-1})`                 always (the full-vocabulary KL)
=============  ===================================================  =================================

:data:`SEQUENCE_ESTIMATORS` holds the ones notebook 06 compares (``token_k1`` = ``sequence_k1`` = -L, ...);
:func:`sequence_estimator` makes one from any :class:`~klviz.Estimator`. :func:`sequence_moments` gives the
exact mean and variance by dynamic programming, :func:`sequence_estimates` the per-sequence values at
sampled sequences.

``step_kl`` replaces each sampled token's term by its conditional expectation given the prefix. By
Rao–Blackwell that lowers each step's variance; for the sum over steps it usually does too, but not
always: covariances between a step's sampled term and later steps' KLs can make ``token_k1`` the
lower-variance one (tests/test_sequences.py has a 2-state example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from klviz import _checks
from klviz._results import Result
from klviz.estimators import ESTIMATORS, Estimator, accurate_decomposition, get_estimator
from klviz.exact import ExactMoments, exact_moments
from klviz.pairs import MarkovChainPair
from klviz.pairs.base import reference_estimator

__all__ = [
    "LEVELS",
    "SequenceEstimator",
    "SEQUENCE_ESTIMATORS",
    "sequence_estimator",
    "sequence_estimates",
    "sequence_moments",
]

#: How an estimator of log-ratios becomes an estimator of the sequence KL.
LEVELS = ("token", "sequence", "step")


@dataclass(frozen=True, repr=False)
class SequenceEstimator(Result):
    """An estimator of the sequence KL: a per-token estimator summed over tokens, applied to the sequence
    log-ratio, or the per-step full-vocabulary KL (``estimator`` None).

    Parameters
    ----------
    name : str
    estimator : Estimator or None
        The estimator of log-ratios (None for ``level="step"``).
    level : {"token", "sequence", "step"}
    """

    name: str
    estimator: Estimator | None
    level: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        _checks.choice(self.level, "level", LEVELS)
        if (self.estimator is None) != (self.level == "step"):
            raise ValueError("estimator must be an Estimator for the token and sequence levels, None for step")
        if self.estimator is not None:
            object.__setattr__(self, "estimator", get_estimator(self.estimator))

    @property
    def target(self) -> str:
        return "kl_qp" if self.estimator is None else self.estimator.target

    def _display_fields(self):
        return [("name", self.name), ("estimator", None if self.estimator is None else self.estimator.name),
                ("level", self.level)]


def sequence_estimator(estimator, level: str) -> SequenceEstimator:
    """A :class:`SequenceEstimator` named ``f"{level}_{estimator.name}"`` from a name or an Estimator.

    Examples
    --------
    >>> sequence_estimator("k3", "token").name
    'token_k3'
    """
    record = get_estimator(estimator)
    level = _checks.choice(level, "level", ("token", "sequence"))
    return SequenceEstimator(f"{level}_{record.name}", record, level)


#: The sequence-KL estimators of notebook 06, by name.
SEQUENCE_ESTIMATORS: dict[str, SequenceEstimator] = {
    **{f"token_{k}": sequence_estimator(k, "token") for k in ("k1", "k2", "k3")},
    **{f"sequence_{k}": sequence_estimator(k, "sequence") for k in ("k2", "k3")},
    "step_kl": SequenceEstimator("step_kl", None, "step"),
}


def _sequence_estimator(estimator) -> SequenceEstimator:
    if isinstance(estimator, SequenceEstimator):
        return estimator
    if not isinstance(estimator, str):
        raise TypeError(f"estimator must be a SequenceEstimator or a name, one of {list(SEQUENCE_ESTIMATORS)}, "
                        f"got {type(estimator).__name__}")
    if estimator in SEQUENCE_ESTIMATORS:
        return SEQUENCE_ESTIMATORS[estimator]
    level, _, base = estimator.partition("_")
    if level in ("token", "sequence") and base in ESTIMATORS:
        return sequence_estimator(base, level)
    raise ValueError(f"estimator must be one of {list(SEQUENCE_ESTIMATORS)} (or 'token_<k>' / 'sequence_<k>' "
                     f"for k in {sorted(ESTIMATORS)}), got {estimator!r}")


def _check_pair(pair) -> MarkovChainPair:
    if not isinstance(pair, MarkovChainPair):
        raise TypeError(f"pair must be a MarkovChainPair, got {type(pair).__name__}")
    return pair


def sequence_estimates(pair: MarkovChainPair, tokens, estimators=tuple(SEQUENCE_ESTIMATORS)) -> dict[str, np.ndarray]:
    r"""Per-sequence values of sequence-KL estimators at sampled sequences.

    .. math:: \texttt{token\_k3} = \sum_t (r_t - 1 - \log r_t),\qquad
              \texttt{sequence\_k3} = (R - 1) - \log R,\quad R = \prod_t r_t,

    and the others as listed in the module docstring.

    Parameters
    ----------
    pair : MarkovChainPair
    tokens : array_like of int, shape (n, T)
        Sequences drawn from q, e.g. ``pair.sample(n, rng=rng)``.
    estimators : sequence of str or SequenceEstimator
        Names from :data:`SEQUENCE_ESTIMATORS` (or ``"token_<k>"``, ``"sequence_<k>"``) or records.

    Returns
    -------
    dict
        Estimator name -> array of shape (n,).

    Raises
    ------
    TypeError, ValueError
        For a wrong pair type, bad tokens, or an unknown estimator.

    Examples
    --------
    >>> from klviz.factories import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 4, 0.5, rng=1)
    >>> values = sequence_estimates(pair, pair.sample(5, rng=2), ["token_k1", "token_k3"])
    >>> sorted(values), values["token_k3"].shape
    (['token_k1', 'token_k3'], (5,))
    """
    pair = _check_pair(pair)
    if isinstance(estimators, (str, SequenceEstimator)):
        estimators = (estimators,)
    records = [_sequence_estimator(e) for e in estimators]
    log_ratios = pair.token_log_ratios(tokens)
    total = log_ratios.sum(axis=1)
    out = {}
    for record in records:
        if record.level == "token":
            out[record.name] = np.asarray(record.estimator.value(log_ratios), dtype=np.float64).sum(axis=1)
        elif record.level == "sequence":
            out[record.name] = np.asarray(record.estimator.value(total), dtype=np.float64)
        else:
            out[record.name] = pair.step_kls(tokens).sum(axis=1)
    return out


def sequence_moments(pair: MarkovChainPair, estimator) -> ExactMoments:
    r"""Exact mean and variance of a sequence-KL estimator under q, by dynamic programming.

    Token-level sums of any estimator, and ``step_kl``, are additive over steps: a forward pass over q's
    state marginals carries :math:`\mathbb{E}[S_t 1\{x_t=s\}]` and :math:`\mathbb{E}[S_t^2 1\{x_t=s\}]`
    (centred). Sequence-level ones are the pair's exact moments of k(L)
    (:func:`klviz.exact_moments`; see :class:`klviz.MarkovChainPair` for the passes: k3(L)'s variance by
    recurrences with no cancellation, k2(L)'s from the centred moments of L up to the fourth). Cost
    :math:`O(T V^2)`. A variance beyond float64 is returned as ``inf``.

    Parameters
    ----------
    pair : MarkovChainPair
    estimator : str or SequenceEstimator
        One of :data:`SEQUENCE_ESTIMATORS`, ``"token_<k>"`` / ``"sequence_<k>"``, or a record.

    Returns
    -------
    ExactMoments
        ``.target`` is the sequence divergence the underlying estimator targets.

    Raises
    ------
    TypeError
        If ``pair`` is not a :class:`MarkovChainPair` or ``estimator`` has the wrong type.
    ValueError
        If ``estimator`` is unknown (or, at the sequence level, has no exact form).

    Examples
    --------
    >>> from klviz.factories import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(4, 16, 0.3, rng=0)
    >>> m = sequence_moments(pair, "token_k3")
    >>> m.mean == pair.kl_qp(), m.bias
    (True, 0.0)
    """
    pair = _check_pair(pair)
    record = _sequence_estimator(estimator)
    if record.level == "sequence":
        moments = exact_moments(pair, record.estimator)
        return ExactMoments(record.name, moments.mean, moments.var, moments.target, moments.bias, moments.log10_var)
    kl = pair.kl_qp()
    if record.level == "step":
        _, rows = pair.conditional_kls
        # The first term, KL of the initial distributions, is a constant: it adds nothing to the variance.
        _, var = pair.additive_moments(np.zeros(pair.vocab_size), rows[:, None])
        return ExactMoments(record.name, kl, var, kl, 0.0, _log10(var))
    k = record.estimator
    target = kl if k.target == "kl_qp" else pair.kl_pq()
    with np.errstate(over="ignore", invalid="ignore"):
        initial = np.asarray(k.value(pair.initial_log_ratio), dtype=np.float64)
        step = np.asarray(k.value(pair.transition_log_ratio), dtype=np.float64)
    mean, var = pair.additive_moments(initial, step)
    decomposition = accurate_decomposition(k)
    reference = reference_estimator("kl_qp")
    if decomposition is not None and decomposition[0] is reference:
        # Σ_t (k3 + λ (r_t - 1)): E[r_t - 1 | prefix] = 0 at every step, so the mean is KL exactly.
        return ExactMoments(record.name, kl, var, target, 0.0 if k.target == "kl_qp" else kl - target, _log10(var))
    # bias = E[Σ_t (k - k3)(ℓ_t)] (+ E[Σ k3] - KL = 0): pointwise differences cancel far less than mean - KL.
    with np.errstate(over="ignore", invalid="ignore"):
        diff_initial = initial - reference.value(pair.initial_log_ratio)
        diff_step = step - reference.value(pair.transition_log_ratio)
    bias_qp, _ = pair.additive_moments(diff_initial, diff_step)
    bias = bias_qp if k.target == "kl_qp" else mean - target
    return ExactMoments(record.name, kl + bias_qp if math.isfinite(bias_qp) else mean, var, target, bias, _log10(var))


def _log10(var: float) -> float:
    return math.log10(var) if 0 < var < math.inf else (-math.inf if var == 0 else math.inf)
