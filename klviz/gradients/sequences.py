r"""Gradients of KL penalties over whole sequences, exactly, by dynamic programming over a Markov chain.

A :class:`~klviz.MarkovChainPair` whose q is the policy: its initial logits (V,) and transition logits
(V, V) are the parameters θ. A sampled sequence has per-token log-ratios
:math:`\ell_t = \log p(x_t \mid x_{t-1}) - \log q_\theta(x_t \mid x_{t-1})`, their sum :math:`L`, and per-token
scores :math:`g_t = \nabla_\theta \log q_\theta(x_t \mid x_{t-1})` — in row :math:`x_{t-1}` of the transition
logits, :math:`e_{x_t} - q(\cdot \mid x_{t-1})` (and :math:`e_{x_0} - q_0` in the initial logits for t = 0).
With samples not differentiated, each use of an estimator k gives a per-sequence gradient
:math:`G = \sum_t c_t\, g_t` with one scalar :math:`c_t` per token (:data:`SEQUENCE_USES`):

=================  ========================================================  =================================
use                what autodiff differentiates (sg = stop-gradient)         :math:`c_t`
=================  ========================================================  =================================
``token_loss``     :math:`\sum_t k(\ell_t)` (GRPO / verl's per-token KL loss)  :math:`-k'(\ell_t)`
``sequence_loss``  :math:`k(L)`                                              :math:`-k'(L)`
``token_reward``   :math:`\sum_t \mathrm{sg}(k(\ell_t)) \log q(x_t\mid x_{t-1})`  :math:`k(\ell_t)`
``reward_to_go``   :math:`\sum_t (\sum_{s\ge t}\mathrm{sg}\,k(\ell_s)) \log q(x_t\mid\cdot)`  :math:`\sum_{s\ge t} k(\ell_s)`
``sequence_reward`` :math:`\mathrm{sg}(k(L)) \sum_t \log q(x_t\mid x_{t-1})`  :math:`k(L)`
=================  ========================================================  =================================

The exact expected gradient is :math:`\mathbb{E}[G] = \sum_t \mathbb{E}[c_t\, g_t]`, and since
:math:`g_t` is :math:`e_{x_t} - q(\cdot\mid x_{t-1})` in row :math:`x_{t-1}`, it is assembled from one (V, V) matrix
:math:`W(s, s') = \sum_t \mathbb{E}[c_t\,1\{x_{t-1} = s, x_t = s'\}]` (and its initial vector): row s of the
gradient is :math:`W(s, \cdot) - (\sum_{s'} W(s, s'))\, q(\cdot\mid s)`. W comes from forward passes over the
state marginals and backward passes over what is still to come (the return-to-go
:math:`\mathbb{E}[\sum_{u>t} k(\ell_u) \mid x_t]`, the expected :math:`1/\text{length}` for GRPO's token mean,
and, for the sequence-level uses, tilted moments :math:`\mathbb{E}[e^{\tau L_{<t}} L_{<t}^a 1\{x_{t-1}\}]` and
:math:`\mathbb{E}[e^{\tau L_{>t}} L_{>t}^c \mid x_t]` of an estimator with an exact form
:math:`\sum c\, e^{\tau L} L^j`) — :math:`O(T V^2)` work, never the :math:`V^T` sequences of the definition.

Off-policy (samples from a behaviour chain μ): ``ratio="none"`` (PPO epochs with a KL loss: the same surrogate
on μ's samples), ``"token"`` (each token's term weighted by :math:`\rho_t = q/\mu` at that token — for the
losses a differentiable ρ, :math:`\nabla(\rho_t k(\ell_t)) = \rho_t(k - k')g_t`, DeepSeek-V3.2's per-token
estimate; for the rewards a stopped one), ``"sequence"`` (the whole surrogate weighted by the stopped
:math:`\prod_t \rho_t`: exact importance sampling, the on-policy expected gradient with more variance).
GRPO's length normalisation: ``normalisation="sequence_mean"`` (each sequence's token terms divided by its
length, which varies with an ``eos`` state), ``"max_length"`` (divided by T, as Dr. GRPO), ``"sum"``.

Also here: the exact gradient of an expected per-position reward (:func:`sequence_reward_gradient`), the
frozen-prefix ("partial") KL gradients that the per-token losses follow (:func:`sequence_partial_kl_gradient`), and
the full-vocabulary per-step KL of Amini et al. used as a penalty (:data:`STEP_KL_USES`: its expected gradient,
exact projection moments, per-sample gradients and Monte Carlo averages), a check of per-token coefficients
computed by hand (:func:`check_sequence_coefficients`) and per-sequence projections of any coefficients
(:func:`sequence_projections`).

Precision: plain float64 sums; every quantity is exact up to rounding of the terms it sums (no
cancellation of the sort that costs 1e-16/δ appears for the token-level uses; the sequence-level ones with
k3 combine :math:`\mathbb{E}[R\,g]` and :math:`\mathbb{E}[g]` and lose relative precision like 1e-16/δ at gap δ).

References: Y. Tang and R. Munos, "On a few pitfalls in KL divergence gradient estimation for RL",
arXiv:2506.09477 (2025); Shah et al., "A Comedy of Estimators" (arXiv:2512.21852); Z. Shao et al. (GRPO,
arXiv:2402.03300); DeepSeek-AI, "DeepSeek-V3.2", arXiv:2512.02556, §3.1; A. Amini, T. Vieira and R. Cotterell,
"Better Estimation of the KL Divergence Between Language Models", arXiv:2504.10637 (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax
from klviz._results import Result, Shown
from klviz.estimators import Estimator, ExpPolynomial, get_estimator
from klviz.pairs import MarkovChainPair

__all__ = [
    "SEQUENCE_USES",
    "RATIOS",
    "NORMALISATIONS",
    "SequenceUse",
    "SequenceGradient",
    "SequenceGradientMoments",
    "MonteCarloSequenceGradient",
    "sequence_kl_gradient",
    "sequence_expected_gradient",
    "sequence_gradient_moments",
    "sequence_per_sample_gradients",
    "sequence_monte_carlo_gradient",
    "sequence_reward_gradient",
    "sequence_partial_kl_gradient",
    "STEP_KL_USES",
    "sequence_step_kl_gradient",
    "sequence_step_kl_moments",
    "sequence_step_kl_per_sample_gradients",
    "sequence_step_kl_monte_carlo",
    "CoefficientCheck",
    "check_sequence_coefficients",
    "sequence_projections",
]

RATIOS = ("none", "token", "sequence")
NORMALISATIONS = ("sum", "sequence_mean", "max_length")


@dataclass(frozen=True, repr=False)
class SequenceUse(Result):
    """How an estimator enters a sequence's surrogate: per token or on the whole log-ratio, loss or reward."""

    name: str
    level: str  # "token" or "sequence"
    kind: str  # "loss", "reward" or "reward_to_go"
    surrogate: str

    def _display_fields(self):
        return [("name", self.name), ("differentiates", Shown(self.surrogate))]


#: The five uses over sequences, by name (module docstring).
SEQUENCE_USES: dict[str, SequenceUse] = {
    u.name: u
    for u in (
        SequenceUse("token_loss", "token", "loss", "sum_t k(l_t)"),
        SequenceUse("sequence_loss", "sequence", "loss", "k(L)"),
        SequenceUse("token_reward", "token", "reward", "sum_t sg[k(l_t)] log q(x_t|x_t-1)"),
        SequenceUse("reward_to_go", "token", "reward_to_go", "sum_t sg[sum_{s>=t} k(l_s)] log q(x_t|x_t-1)"),
        SequenceUse("sequence_reward", "sequence", "reward", "sg[k(L)] sum_t log q(x_t|x_t-1)"),
    )
}


@dataclass(frozen=True, repr=False)
class SequenceGradient(Result):
    r"""A gradient with respect to a Markov-chain policy's logits: ``initial`` (V,) and ``transition`` (V, V).

    Supports ``+``, ``-``, scaling, :meth:`dot` and :attr:`norm`, so gradients of different uses can be compared
    (``(a - b).norm / b.norm``, the cosine ``a.dot(b) / (a.norm * b.norm)``).
    """

    initial: np.ndarray = field(repr=False)
    transition: np.ndarray = field(repr=False)

    @property
    def flat(self) -> np.ndarray:
        return np.concatenate([self.initial, self.transition.ravel()])

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.flat))

    def dot(self, other: "SequenceGradient") -> float:
        return float(self.flat @ other.flat)

    def cosine(self, other: "SequenceGradient") -> float:
        """The cosine of the angle between two gradients (NaN if either is zero)."""
        denominator = self.norm * other.norm
        return self.dot(other) / denominator if denominator else math.nan

    def __add__(self, other):
        return SequenceGradient(self.initial + other.initial, self.transition + other.transition)

    def __sub__(self, other):
        return SequenceGradient(self.initial - other.initial, self.transition - other.transition)

    def __mul__(self, factor: float):
        return SequenceGradient(self.initial * factor, self.transition * factor)

    __rmul__ = __mul__

    def _display_fields(self):
        return [("V", self.initial.size), ("norm", self.norm)]


# --------------------------------------------------------------------------------------------------
# The chains, validated once
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Chains:
    """Everything the passes need: log-probabilities of q, p and the sampling chain ν, log-ratios, eos."""

    V: int
    T: int
    log_q0: np.ndarray
    log_p0: np.ndarray
    log_Q: np.ndarray
    log_P: np.ndarray
    log_n0: np.ndarray  # sampling chain ν (q, or the behaviour μ)
    log_N: np.ndarray
    ell0: np.ndarray
    ell: np.ndarray
    going: np.ndarray  # 1 where a sequence goes on after the state (0 at eos)
    eos: int | None

    @property
    def q0(self):
        return np.exp(self.log_q0)

    @property
    def Q(self):
        return np.exp(self.log_Q)

    @property
    def n0(self):
        return np.exp(self.log_n0)

    @property
    def N(self):
        return np.exp(self.log_N)

    def marginals(self) -> np.ndarray:
        """ν's marginals of sequences still going before each step: a[t](s) = ν(x_t = s, alive), (T, V)."""
        out = np.empty((self.T, self.V))
        out[0] = self.n0
        N = self.N
        for t in range(1, self.T):
            out[t] = (out[t - 1] * self.going) @ N
        return out


def _check_pair(pair) -> MarkovChainPair:
    if not isinstance(pair, MarkovChainPair):
        raise TypeError(f"pair must be a MarkovChainPair (its q is the policy), got {type(pair).__name__}")
    return pair


def _behaviour(pair: MarkovChainPair, behaviour_logits):
    """log ν0, log N: q's own chain, or μ's from (initial logits (V,), transition logits (V, V))."""
    if behaviour_logits is None:
        return pair.log_q_initial, pair.log_q_transition
    if not (isinstance(behaviour_logits, (tuple, list)) and len(behaviour_logits) == 2):
        raise TypeError("behaviour_logits must be a pair (initial logits (V,), transition logits (V, V)), got "
                        f"{type(behaviour_logits).__name__}")
    initial = _checks.logits(behaviour_logits[0], "behaviour_logits[0]", zero_probability=False)
    transition = np.asarray(behaviour_logits[1])
    if transition.shape != (pair.vocab_size, pair.vocab_size):
        raise ValueError(f"behaviour_logits[1] must have shape {(pair.vocab_size,) * 2}, got {transition.shape}")
    transition = _checks.real_array(transition, "behaviour_logits[1]")
    if not np.isfinite(transition).all():
        raise ValueError("behaviour_logits[1] must be finite (every transition positive under μ)")
    if initial.size != pair.vocab_size:
        raise ValueError(f"behaviour_logits[0] must have length {pair.vocab_size}, got {initial.size}")
    return log_softmax(initial), log_softmax(transition, axis=-1)


def _chains(pair: MarkovChainPair, behaviour_logits=None) -> _Chains:
    log_n0, log_N = _behaviour(pair, behaviour_logits)
    return _Chains(pair.vocab_size, pair.length, pair.log_q_initial, pair.log_p_initial, pair.log_q_transition,
                   pair.log_p_transition, log_n0, log_N, np.asarray(pair.initial_log_ratio),
                   np.asarray(pair.transition_log_ratio), pair.continues, pair.eos)


def _assemble(chains: _Chains, w0: np.ndarray, W: np.ndarray) -> SequenceGradient:
    """Gradient from per-token masses: initial w0 - (Σ w0) q0; row s of the transition W[s] - (Σ W[s]) Q[s]."""
    initial = w0 - np.sum(w0) * chains.q0
    transition = W - np.sum(W, axis=1, keepdims=True) * chains.Q
    if chains.eos is not None:  # nothing follows eos: its row is not a parameter any sequence uses
        transition[chains.eos] = 0.0
    return SequenceGradient(initial, transition)


# --------------------------------------------------------------------------------------------------
# The divergences' own gradients (independent formulas)
# --------------------------------------------------------------------------------------------------

def sequence_kl_gradient(pair, target: str = "kl_qp") -> SequenceGradient:
    r"""The exact gradient of the sequence KL with respect to q's initial and transition logits.

    * ``"kl_qp"``: :math:`\nabla\,\mathrm{KL}(q_\theta\|p) = \mathbb{E}_q\big[\sum_t (-\ell_t + V_t(x_t))\, g_t\big]`
      with :math:`V_t(s) = \mathbb{E}_q[\sum_{u>t} -\ell_u \mid x_t = s]` the KL still to come (a backward pass):
      the score-function form with returns-to-go (the pathwise part :math:`\mathbb{E}_q[\nabla(-L)] = \sum_t
      \mathbb{E}_q[g_t] = 0`).
    * ``"kl_pq"``: :math:`\nabla\,\mathrm{KL}(p\|q_\theta) = -\sum_t \mathbb{E}_p[g_t]`: row s of the transition
      gradient is :math:`-\sum_t p(x_{t-1} = s)\,(p(\cdot\mid s) - q(\cdot\mid s))`, p's own marginals.

    Parameters
    ----------
    pair : MarkovChainPair
        q is the policy; p the reference. With ``eos``, sequences end at it.
    target : {"kl_qp", "kl_pq"}

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For a pair that is not a MarkovChainPair or an unknown target.

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> g = sequence_kl_gradient(random_markov_chain_pair(3, 4, 0.0, rng=0))
    >>> g.norm
    0.0
    """
    pair = _check_pair(pair)
    target = _checks.choice(target, "target", ("kl_qp", "kl_pq"))
    chains = _chains(pair)
    if target == "kl_qp":
        return _token_gradient(chains, phi0=-chains.ell0, phi=-chains.ell, future=(-chains.ell0, -chains.ell),
                               normalisation="sum")
    # p's marginals of sequences still going, and -E_p[g_t] = q - p per row
    p0, P = np.exp(chains.log_p0), np.exp(chains.log_P)
    marginal = p0.copy()
    visits = np.zeros(chains.V)
    for _ in range(1, chains.T):
        going = marginal * chains.going
        visits += going
        marginal = going @ P
    initial = chains.q0 - p0
    transition = visits[:, None] * (chains.Q - P)
    if chains.eos is not None:
        transition[chains.eos] = 0.0
    return SequenceGradient(initial, transition)


# --------------------------------------------------------------------------------------------------
# Token-level uses: forward marginals, backward returns-to-go and 1/length
# --------------------------------------------------------------------------------------------------

def _inverse_length(chains: _Chains, normalisation: str) -> np.ndarray:
    r"""h[t](s) = E_ν[1/length | x_t = s, alive] (sequence_mean), 1/T (max_length) or 1 (sum), shape (T, V)."""
    T, V = chains.T, chains.V
    if normalisation == "sum":
        return np.ones((T, V))
    if normalisation == "max_length" or chains.eos is None:
        return np.full((T, V), 1.0 / T)
    h = np.empty((T, V))
    h[T - 1] = 1.0 / T
    N = chains.N
    for t in range(T - 2, -1, -1):
        h[t] = N @ h[t + 1]
        h[t, chains.eos] = 1.0 / (t + 1)
    return h


def _returns(chains: _Chains, psi: np.ndarray, h: np.ndarray) -> np.ndarray:
    r"""y[t](s) = E_ν[(1/length)·Σ_{u>t} ψ_u | x_t = s]: the (normalised) return still to come, shape (T, V).

    Later tokens' terms are not importance-weighted (a per-token ratio weights the score of its own token)."""
    T, V = chains.T, chains.V
    y = np.zeros((T, V))
    N = chains.N
    N_psi = N * psi
    for t in range(T - 2, -1, -1):
        y[t] = N_psi @ h[t + 1] + N @ y[t + 1]
        if chains.eos is not None:
            y[t, chains.eos] = 0.0
    return y


def _token_gradient(chains: _Chains, *, phi0, phi, future=None, normalisation="sum",
                    weight0=None, weight=None) -> SequenceGradient:
    r"""Expected gradient of :math:`G = \sum_t c_t g_t` with :math:`c_t = w_t(\phi_t + \sum_{u>t} \psi_u)/\text{len}`:
    token-local coefficients φ, an optional return still to come ψ (``future = (psi0, psi)``), stopped weights w
    (per-token ratios) and the length normalisation."""
    a = chains.marginals()
    h = _inverse_length(chains, normalisation)
    w0 = np.ones(chains.V) if weight0 is None else weight0
    w = np.ones((chains.V, chains.V)) if weight is None else weight
    going = a[:-1] * chains.going  # sequences that take step t, by x_{t-1}
    N = chains.N
    # Σ_t a_{t-1}(s) h_t(s') and, for returns, Σ_t a_{t-1}(s) y_t(s')
    visits_h = going.T @ h[1:]
    W = N * w * phi * visits_h
    mass0 = chains.n0 * w0 * phi0 * h[0]
    if future is not None:
        _, psi = future
        y = _returns(chains, psi, h)
        W = W + N * w * (going.T @ y[1:])
        mass0 = mass0 + chains.n0 * w0 * y[0]
    return _assemble(chains, mass0, W)


def _token_coefficients(record: Estimator, use: SequenceUse, ell, ratio_log):
    """(φ, ψ): token-local coefficient and return term of one use, per transition (or initial state)."""
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.asarray(record.value(ell), dtype=np.float64)
        derivative = np.asarray(record.derivative(ell), dtype=np.float64)
    if use.kind == "loss":
        if ratio_log is not None:  # ∇(ρ k) with ρ differentiable: ρ (k - k')
            return value - derivative, None
        return -derivative, None
    if use.kind == "reward":
        return value, None
    return value, value  # reward_to_go: the token's own term, and what later tokens add


# --------------------------------------------------------------------------------------------------
# Sequence-level uses: tilted forward and backward moments of the sequence log-ratio
# --------------------------------------------------------------------------------------------------

def _sequence_masses(chains: _Chains, form: ExpPolynomial) -> tuple[np.ndarray, np.ndarray]:
    r"""w0(s) = E_ν[f(L) 1{x_0 = s}] and W(s, s') = Σ_t E_ν[f(L) 1{x_{t-1} = s, x_t = s'}] for
    :math:`f = \sum c\,e^{\tau L} L^j`, from forward moments :math:`F_a` and backward moments :math:`B_c`:
    :math:`\mathbb{E}[e^{\tau L}L^j 1\{s, s'\}] = \sum_{a+b+c=j} \frac{j!}{a!b!c!} F_a(t-1, s)\,
    \nu(s'|s) e^{\tau\ell}\ell^b\, B_c(t, s')`."""
    T, V = chains.T, chains.V
    N, n0 = chains.N, chains.n0
    ell, ell0, going = chains.ell, chains.ell0, chains.going
    w0 = np.zeros(V)
    W = np.zeros((V, V))
    by_tau: dict[int, dict[int, float]] = {}
    for (tau, j), c in form.coefficients.items():
        by_tau.setdefault(tau, {})[j] = c
    with np.errstate(over="ignore", invalid="ignore"):
        for tau, powers in by_tau.items():
            J = max(powers)
            tilt = N * np.exp(tau * ell)  # ν(s'|s) e^{τℓ}
            steps = [tilt * ell**b for b in range(J + 1)]
            # backward: B[t][c](s) = E[e^{τ L_{>t}} L_{>t}^c | x_t = s]; nothing follows eos or the last token
            B = np.zeros((T, J + 1, V))
            B[T - 1, 0] = 1.0
            for t in range(T - 2, -1, -1):
                for cc in range(J + 1):
                    B[t, cc] = sum(math.comb(cc, i) * (steps[cc - i] @ B[t + 1, i]) for i in range(cc + 1))
                if chains.eos is not None:
                    B[t, :, chains.eos] = 0.0
                    B[t, 0, chains.eos] = 1.0
            # forward: F[t][a](s) = E[e^{τ L_{≤t}} L_{≤t}^a 1{x_t = s}] over sequences going on after t
            F = np.zeros((T, J + 1, V))
            start = n0 * np.exp(tau * ell0)
            for a in range(J + 1):
                F[0, a] = start * ell0**a
            for t in range(1, T):
                prev = F[t - 1] * going
                for a in range(J + 1):
                    F[t, a] = sum(math.comb(a, i) * (prev[i] @ steps[a - i]) for i in range(a + 1))
            for j, coef in powers.items():
                # initial: E[e^{τL} L^j 1{x_0 = s}] = ν0 e^{τℓ0} Σ_{b+c=j} C(j,b) ℓ0^b B_c(0, s)
                w0 += coef * sum(math.comb(j, b) * start * ell0**b * B[0, j - b] for b in range(j + 1))
                for a in range(j + 1):
                    for b in range(j - a + 1):
                        cc = j - a - b
                        multinomial = math.factorial(j) // (math.factorial(a) * math.factorial(b) * math.factorial(cc))
                        visits = (F[:-1, a] * going).T @ B[1:, cc]  # Σ_t F_a(t-1, s) B_c(t, s')
                        W += coef * multinomial * visits * steps[b]
    return w0, W


# --------------------------------------------------------------------------------------------------
# Public: expected gradients
# --------------------------------------------------------------------------------------------------

def _use(use) -> SequenceUse:
    if isinstance(use, SequenceUse):
        return use
    return SEQUENCE_USES[_checks.choice(use, "use", SEQUENCE_USES)]


def _prepare(pair, estimator, use, behaviour_logits, ratio, normalisation):
    pair = _check_pair(pair)
    record = get_estimator(estimator)
    use = _use(use)
    ratio = _checks.choice(ratio, "ratio", RATIOS)
    normalisation = _checks.choice(normalisation, "normalisation", NORMALISATIONS)
    if behaviour_logits is None and ratio != "none":
        raise ValueError(f"ratio={ratio!r} weights samples from a behaviour chain: give behaviour_logits")
    if use.level == "sequence":
        if ratio == "token":
            raise ValueError(f"use {use.name!r} is sequence-level: a per-token ratio has no token to weight "
                             "(use ratio='sequence' or 'none')")
        if normalisation != "sum":
            raise ValueError(f"use {use.name!r} is sequence-level: length normalisation applies to per-token terms")
        form = record.expansion if use.kind == "reward" else record.derivative_expansion
        if form is None:
            raise ValueError(
                f"use {use.name!r} needs the exact form of the estimator's "
                f"{'value' if use.kind == 'reward' else 'derivative'} (an ExpPolynomial) to be computed by dynamic "
                f"programming; {record.name!r} has none (sequence_monte_carlo_gradient works for any estimator)"
            )
    return pair, record, use, ratio, normalisation


def sequence_expected_gradient(pair, estimator, use, *, behaviour_logits=None, ratio: str = "none",
                               normalisation: str = "sum") -> SequenceGradient:
    r"""The exact expected gradient of one use of an estimator over whole sequences, by dynamic programming.

    .. math:: \mathbb{E}_{x\sim\nu}\Big[\sum_t c_t\, g_t\Big] \text{ assembled from }
              W(s, s') = \sum_t \mathbb{E}_\nu\big[c_t\, 1\{x_{t-1} = s, x_t = s'\}\big]

    with :math:`c_t` per use as in the module docstring, ν the policy q (on-policy) or a behaviour chain μ.
    Cost :math:`O(T V^2)` (times the degree of the estimator's exact form for the sequence-level uses).

    Parameters
    ----------
    pair : MarkovChainPair
        q is the policy (its logits are θ), p the reference; ``eos`` gives variable lengths.
    estimator : str or Estimator
        Any estimator for the token-level uses; one with an exact form (``expansion``; its
        ``derivative_expansion`` for ``sequence_loss``) for the sequence-level ones.
    use : str or SequenceUse
        One of :data:`SEQUENCE_USES`.
    behaviour_logits : (array_like (V,), array_like (V, V)), optional
        μ's initial and transition logits: samples come from μ (default: from q).
    ratio : {"none", "token", "sequence"}
        How μ's samples are weighted (module docstring). "token" and "sequence" need ``behaviour_logits``.
    normalisation : {"sum", "sequence_mean", "max_length"}
        Token-level uses: each sequence's token terms summed, averaged over its length (GRPO), or divided by T.

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For bad arguments, a ratio without a behaviour chain, a per-token ratio or a normalisation with a
        sequence-level use, or a sequence-level use of an estimator without an exact form.

    Examples
    --------
    k1 with returns-to-go follows the sequence KL; k2 per token in the loss does not:

    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 5, 0.5, rng=0)
    >>> exact = sequence_kl_gradient(pair, "kl_qp")
    >>> (sequence_expected_gradient(pair, "k1", "reward_to_go") - exact).norm < 1e-14
    True
    >>> (sequence_expected_gradient(pair, "k2", "token_loss") - exact).norm > 0.01
    True
    """
    pair, record, use, ratio, normalisation = _prepare(pair, estimator, use, behaviour_logits, ratio, normalisation)
    if ratio == "sequence":
        # E_μ[Π ρ_t · G] = E_q[G]: exact importance sampling gives the on-policy expected gradient.
        behaviour_logits, ratio = None, "none"
    chains = _chains(pair, behaviour_logits)
    if use.level == "sequence":
        form = record.expansion if use.kind == "reward" else record.derivative_expansion.scaled(-1.0)
        w0, W = _sequence_masses(chains, form)
        return _assemble(chains, w0, W)
    log_rho0 = chains.log_q0 - chains.log_n0 if ratio == "token" else None
    log_rho = chains.log_Q - chains.log_N if ratio == "token" else None
    phi0, psi0 = _token_coefficients(record, use, chains.ell0, log_rho0)
    phi, psi = _token_coefficients(record, use, chains.ell, log_rho)
    weight0 = np.exp(log_rho0) if log_rho0 is not None else None
    weight = np.exp(log_rho) if log_rho is not None else None
    future = None if psi is None else (psi0, psi)
    return _token_gradient(chains, phi0=phi0, phi=phi, future=future, normalisation=normalisation,
                           weight0=weight0, weight=weight)


# --------------------------------------------------------------------------------------------------
# The spread of one gradient estimate: its projection on a direction, exactly
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class SequenceGradientMoments(Result):
    r"""Exact mean and variance of the projection :math:`X = \langle G, d\rangle` of one sequence's gradient estimate.

    ``mean`` is :math:`\mathbb{E}[X] = \langle \mathbb{E}G, d\rangle`; ``var`` its variance over sequences (divide
    by the number of sequences for a batch mean); ``relative_std`` = std/|mean|: how many sequences it takes to
    see the direction (n ≈ relative_std² for one standard error per unit of signal).
    """

    estimator: str
    use: str
    mean: float
    var: float

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def relative_std(self) -> float:
        return self.std / abs(self.mean) if self.mean else math.inf

    def _display_fields(self):
        return [("estimator", self.estimator), ("use", self.use), ("mean", self.mean), ("std", self.std)]


def _projection(chains: _Chains, direction: SequenceGradient) -> tuple[np.ndarray, np.ndarray]:
    """δ0(s) = <e_s - q0, d0> and δ(s, s') = <e_s' - Q[s], D[s]>: what one token's score adds to <G, d>."""
    d0, D = np.asarray(direction.initial, dtype=np.float64), np.asarray(direction.transition, dtype=np.float64)
    if d0.shape != (chains.V,) or D.shape != (chains.V, chains.V):
        raise ValueError(f"direction must be a SequenceGradient of shapes ({chains.V},) and {(chains.V,) * 2}")
    delta0 = d0 - float(chains.q0 @ d0)
    delta = D - np.sum(chains.Q * D, axis=1, keepdims=True)
    return delta0, delta


def _ending_weights(chains: _Chains, normalisation: str, t: int) -> float:
    return {"sum": 1.0, "sequence_mean": 1.0 / (t + 1), "max_length": 1.0 / chains.T}[normalisation]


def _forward_finish(chains, start, step, normalisation, powers):
    """Run a forward pass of per-state moment vectors; sequences finish at eos or at T - 1, and their
    moments (of the normalised X, ``powers[k]`` = the power of 1/length moment k carries) are summed.

    ``start`` -> list of (V,) vectors at t = 0; ``step(moments)`` -> the vectors one step later."""
    moments = start
    totals = np.zeros(len(moments))
    for t in range(chains.T):
        scale = _ending_weights(chains, normalisation, t)
        if t == chains.T - 1:
            totals += [float(np.sum(m)) * scale ** powers[k] for k, m in enumerate(moments)]
            break
        if chains.eos is not None:
            totals += [float(m[chains.eos]) * scale ** powers[k] for k, m in enumerate(moments)]
            moments = [m * chains.going for m in moments]
        moments = step(moments)
    return totals


def sequence_gradient_moments(pair, estimator, use, direction: SequenceGradient, *, behaviour_logits=None,
                              ratio: str = "none", normalisation: str = "sum") -> SequenceGradientMoments:
    r"""Exact mean and variance of :math:`\langle G, d\rangle` for one sequence's gradient estimate G, by forward passes.

    With :math:`\delta_t = \langle g_t, d\rangle` a function of the transition, the projection is a polynomial in
    running sums: :math:`\sum_t w_t\phi_t\delta_t` (token-level uses), :math:`\sum_u k_u D_u` with
    :math:`D_u = \sum_{t\le u} w_t\delta_t` (returns-to-go), :math:`f(L)\,\Delta` with :math:`\Delta = \sum_t \delta_t`
    (sequence-level uses, f = k or -k' with an exact form). The passes carry the moments of these sums jointly
    with the state, as the sequence-level moments do (:class:`klviz.MarkovChainPair`): :math:`O(T V^2)`.
    A sequence-level ratio :math:`\prod\rho_t` enters as a tilt of the sampling chain (:math:`\mu\rho` for the
    mean, :math:`\mu\rho^2` for the second moment).

    Parameters
    ----------
    pair, estimator, use, behaviour_logits, ratio, normalisation
        As in :func:`sequence_expected_gradient`.
    direction : SequenceGradient
        d, e.g. the gradient the use should follow (:func:`sequence_kl_gradient`) or its difference from it.

    Returns
    -------
    SequenceGradientMoments

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 6, 0.5, rng=0)
    >>> d = sequence_kl_gradient(pair)
    >>> m = sequence_gradient_moments(pair, "k1", "reward_to_go", d)
    >>> bool(abs(m.mean - d.dot(d)) < 1e-12 * d.dot(d))
    True
    """
    pair, record, use, ratio, normalisation = _prepare(pair, estimator, use, behaviour_logits, ratio, normalisation)
    if not isinstance(direction, SequenceGradient):
        raise TypeError(f"direction must be a SequenceGradient, got {type(direction).__name__}")
    chains = _chains(pair, behaviour_logits)
    delta0, delta = _projection(chains, direction)
    log_rho0, log_rho = chains.log_q0 - chains.log_n0, chains.log_Q - chains.log_N
    results = []
    for moment, tilt in ((1, 1.0), (2, 2.0)):
        power = tilt if ratio == "sequence" else 0.0  # E_μ[ρ^m X^m]: the chain tilted by ρ^m
        start_weight = chains.n0 * np.exp(power * log_rho0)
        N_tilted = chains.N * np.exp(power * log_rho)
        if use.level == "sequence":
            form = record.expansion if use.kind == "reward" else record.derivative_expansion.scaled(-1.0)
            results.append(_sequence_projection_moment(chains, form, moment, delta0, delta, start_weight, N_tilted))
            continue
        w0 = np.exp(log_rho0) if ratio == "token" else np.ones(chains.V)
        w = np.exp(log_rho) if ratio == "token" else np.ones((chains.V, chains.V))
        phi0, psi0 = _token_coefficients(record, use, chains.ell0, log_rho0 if ratio == "token" else None)
        phi, psi = _token_coefficients(record, use, chains.ell, log_rho if ratio == "token" else None)
        if psi is None:
            results.append(_additive_moment(chains, w0 * phi0 * delta0, w * phi * delta, moment, start_weight,
                                            N_tilted, normalisation))
        else:
            results.append(_return_moment(chains, psi0, psi, w0 * delta0, w * delta, moment, start_weight,
                                          N_tilted, normalisation))
    mean, second = results
    return SequenceGradientMoments(record.name, use.name, mean, max(second - mean * mean, 0.0))


def _additive_moment(chains, x0, x, moment, start_weight, N, normalisation) -> float:
    """E[(norm · Σ_t x_t)^moment] for per-transition values x (and x0 at t = 0)."""
    start = [start_weight * x0**k for k in range(moment + 1)]
    powers = [N * x**k for k in range(moment + 1)]

    def step(m):
        return [sum(math.comb(k, i) * (m[i] @ powers[k - i]) for i in range(k + 1)) for k in range(moment + 1)]

    return _forward_finish(chains, start, step, normalisation, list(range(moment + 1)))[moment]


def _return_moment(chains, k0, k, y0, y, moment, start_weight, N, normalisation) -> float:
    """E[(norm · Σ_u k_u D_u)^moment], D_u = Σ_{t≤u} y_t: moments of (D, X) carried jointly."""
    # order: m00, m10, m20, m01, m11, m02 (m_ab = E[D^a X^b 1{x_t = s}])
    x0 = k0 * y0
    start = [start_weight, start_weight * y0, start_weight * y0**2, start_weight * x0, start_weight * y0 * x0,
             start_weight * x0**2]
    P = {name: N * f for name, f in (("1", 1.0), ("y", y), ("y2", y**2), ("k", k), ("ky", k * y),
                                     ("ky2", k * y**2), ("k2", k**2), ("k2y2", k**2 * y**2), ("k2y", k**2 * y))}

    def step(m):
        m00, m10, m20, m01, m11, m02 = m
        return [
            m00 @ P["1"],
            m10 @ P["1"] + m00 @ P["y"],
            m20 @ P["1"] + 2 * (m10 @ P["y"]) + m00 @ P["y2"],
            m01 @ P["1"] + m10 @ P["k"] + m00 @ P["ky"],
            m11 @ P["1"] + m01 @ P["y"] + m20 @ P["k"] + 2 * (m10 @ P["ky"]) + m00 @ P["ky2"],
            m02 @ P["1"] + m20 @ P["k2"] + m00 @ P["k2y2"] + 2 * (m11 @ P["k"]) + 2 * (m01 @ P["ky"])
            + 2 * (m10 @ P["k2y"]),
        ]

    totals = _forward_finish(chains, start, step, normalisation, [0, 0, 0, 1, 1, 2])
    return totals[3] if moment == 1 else totals[5]


def _sequence_projection_moment(chains, form: ExpPolynomial, moment, delta0, delta, start_weight, N) -> float:
    r"""E[(f(L) Δ)^moment]: Σ over the terms c e^{τL} L^j of f^moment of E[e^{τL} L^j Δ^moment], from per-τ
    passes carrying :math:`M_{j,b}(s) = \mathbb{E}[e^{\tau L}L^j\Delta^b 1\{x_t = s\}]`."""
    power_form = form if moment == 1 else form * form
    by_tau: dict[int, dict[int, float]] = {}
    for (tau, j), c in power_form.coefficients.items():
        by_tau.setdefault(tau, {})[j] = c
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for tau, powers in by_tau.items():
            J, B = max(powers), moment
            index = [(j, b) for j in range(J + 1) for b in range(B + 1)]
            tilt = N * np.exp(tau * chains.ell)
            factors = {(i, c): tilt * chains.ell**i * delta**c for i in range(J + 1) for c in range(B + 1)}
            w = start_weight * np.exp(tau * chains.ell0)
            start = [w * chains.ell0**j * delta0**b for j, b in index]

            def step(m, index=index, factors=factors):
                values = dict(zip(index, m))
                return [sum(math.comb(j, i) * math.comb(b, c) * (values[(i, c)] @ factors[(j - i, b - c)])
                            for i in range(j + 1) for c in range(b + 1)) for j, b in index]

            totals = dict(zip(index, _forward_finish(chains, start, step, "sum", [0] * len(index))))
            total += sum(coef * totals[(j, B)] for j, coef in powers.items())
    return total


# --------------------------------------------------------------------------------------------------
# Monte Carlo: per-sample gradients as autodiff returns them
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class MonteCarloSequenceGradient(Result):
    r"""The average of n sequences' gradient estimates, with per-coordinate standard errors, and the projection on
    a direction (mean ± standard error, and its sample standard deviation) when one was given."""

    estimator: str
    use: str
    n: int
    mean: SequenceGradient
    stderr: SequenceGradient
    projection_mean: float = math.nan
    projection_std: float = math.nan

    @property
    def projection_stderr(self) -> float:
        return self.projection_std / math.sqrt(self.n)

    def z_scores(self, exact: SequenceGradient) -> np.ndarray:
        """(Monte Carlo mean - exact)/stderr per coordinate (0 where both agree and the stderr is 0)."""
        diff = self.mean.flat - exact.flat
        with np.errstate(divide="ignore", invalid="ignore"):
            z = diff / self.stderr.flat
        return np.where(self.stderr.flat > 0, z, np.where(diff == 0, 0.0, np.inf))

    def _display_fields(self):
        fields = [("estimator", self.estimator), ("use", self.use), ("n", self.n)]
        if math.isfinite(self.projection_mean):
            fields.append(("projection", Shown(f"{self.projection_mean:.6g} ± {self.projection_stderr:.2g}")))
        return fields


def sequence_per_sample_gradients(pair, tokens, estimator, use, *, behaviour_logits=None, ratio: str = "none",
                                  normalisation: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    r"""Each sequence's coefficients :math:`c_t`, as the autodiff gradient of its surrogate has them:
    :math:`G = \sum_t c_t g_t` (module docstring), shape (n, T) (0 at padding after eos), and the tokens.

    Parameters
    ----------
    pair, estimator, use, behaviour_logits, ratio, normalisation
        As in :func:`sequence_expected_gradient`.
    tokens : array_like of int, shape (n, T)
        Sequences drawn from the sampling chain (q, or μ when ``behaviour_logits`` is given).

    Returns
    -------
    (coefficients, tokens) : ndarray (n, T), ndarray (n, T)
    """
    pair, record, use, ratio, normalisation = _prepare(pair, estimator, use, behaviour_logits, ratio, normalisation)
    tokens = pair._check_tokens(tokens)
    chains = _chains(pair, behaviour_logits)
    mask = tokens >= 0
    safe = np.maximum(tokens, 0)
    ell = pair.token_log_ratios(tokens)
    log_rho = np.empty(tokens.shape)
    log_rho[:, 0] = (chains.log_q0 - chains.log_n0)[safe[:, 0]]
    log_rho[:, 1:] = (chains.log_Q - chains.log_N)[safe[:, :-1], safe[:, 1:]]
    log_rho = np.where(mask, log_rho, 0.0)
    lengths = mask.sum(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.where(mask, np.asarray(record.value(ell), dtype=np.float64), 0.0)
        derivative = np.where(mask, np.asarray(record.derivative(ell), dtype=np.float64), 0.0)
        L = ell.sum(axis=1)
        rho = np.exp(log_rho)
    norm = {"sum": np.ones(len(tokens)), "sequence_mean": 1.0 / lengths,
            "max_length": np.full(len(tokens), 1.0 / pair.length)}[normalisation][:, None]
    token_weight = rho if ratio == "token" else 1.0
    if use.name == "token_loss":
        c = norm * (rho * (value - derivative) if ratio == "token" else -derivative)
    elif use.name == "token_reward":
        c = norm * token_weight * value
    elif use.name == "reward_to_go":
        to_go = np.cumsum(value[:, ::-1], axis=1)[:, ::-1]
        c = norm * token_weight * to_go
    elif use.name == "sequence_loss":
        c = np.repeat(-np.asarray(record.derivative(L), dtype=np.float64)[:, None], tokens.shape[1], axis=1)
    else:
        c = np.repeat(np.asarray(record.value(L), dtype=np.float64)[:, None], tokens.shape[1], axis=1)
    if ratio == "sequence":
        c = c * np.exp(log_rho.sum(axis=1))[:, None]
    return np.where(mask, c, 0.0), tokens


def sequence_monte_carlo_gradient(pair, estimator, use, n: int, *, rng=None, behaviour_logits=None,
                                  ratio: str = "none", normalisation: str = "sum",
                                  direction: SequenceGradient | None = None) -> MonteCarloSequenceGradient:
    r"""Average the gradient estimates of n sequences drawn from q (or μ), with standard errors.

    The estimates are those autodiff returns for each sequence's surrogate (:func:`sequence_per_sample_gradients`);
    their per-coordinate means and variances are accumulated from the per-sequence sums
    :math:`A_i(s, s') = \sum_t c_{it} 1\{x_{t-1} = s, x_t = s'\}` (memory O(nT + V²), no n × V² array).

    Parameters
    ----------
    pair, estimator, use, behaviour_logits, ratio, normalisation
        As in :func:`sequence_expected_gradient`.
    n : int
        Number of sequences; at least 2.
    rng : {None, int, numpy.random.Generator}, optional
    direction : SequenceGradient, optional
        Also average the projection :math:`\langle G_i, d\rangle` (compare with :func:`sequence_gradient_moments`).

    Returns
    -------
    MonteCarloSequenceGradient

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 5, 0.5, rng=0)
    >>> mc = sequence_monte_carlo_gradient(pair, "k1", "reward_to_go", 20_000, rng=1)
    >>> bool(np.all(np.abs(mc.z_scores(sequence_kl_gradient(pair))) < 5))
    True
    """
    pair = _check_pair(pair)
    n = _checks.sample_size(n, "n", 2)
    rng = _checks.rng(rng)
    sampler = pair
    if behaviour_logits is not None:
        log_n0, log_N = _behaviour(pair, behaviour_logits)
        sampler = MarkovChainPair(pair.p_initial_logits, pair.p_transition_logits, log_n0, log_N, pair.length,
                                  eos=pair.eos)
    tokens = sampler.sample(n, rng=rng)
    c, tokens = sequence_per_sample_gradients(pair, tokens, estimator, use, behaviour_logits=behaviour_logits,
                                              ratio=ratio, normalisation=normalisation)
    V = pair.vocab_size
    q0, Q = np.exp(pair.log_q_initial), np.exp(pair.log_q_transition)
    # initial: a_i = c_i0 at x_i0; transitions: A_i(s, s') grouped by (i, s, s')
    a = np.zeros((n, V))
    a[np.arange(n), tokens[:, 0]] = c[:, 0]
    g0 = a - a.sum(axis=1, keepdims=True) * q0
    prev, nxt = tokens[:, :-1], tokens[:, 1:]
    valid = nxt >= 0
    rows = np.repeat(np.arange(n)[:, None], prev.shape[1], axis=1)[valid]
    keys = (rows * V + prev[valid]) * V + nxt[valid]
    unique, inverse = np.unique(keys, return_inverse=True)
    values = np.bincount(inverse, weights=c[:, 1:][valid], minlength=unique.size)
    sample, cell = unique // (V * V), unique % (V * V)
    s_row, s_col = cell // V, cell % V
    row_keys = sample * V + s_row  # B_i(s) = Σ_s' A_i(s, s')
    row_unique, row_inverse = np.unique(row_keys, return_inverse=True)
    row_sums = np.bincount(row_inverse, weights=values, minlength=row_unique.size)
    A_mean = np.zeros(V * V)
    np.add.at(A_mean, cell, values)
    A2 = np.zeros(V * V)
    np.add.at(A2, cell, values**2)
    AB = np.zeros(V * V)
    np.add.at(AB, cell, values * row_sums[row_inverse])
    B_mean = np.zeros(V)
    np.add.at(B_mean, row_unique % V, row_sums)
    B2 = np.zeros(V)
    np.add.at(B2, row_unique % V, row_sums**2)
    A_mean, A2, AB = (x.reshape(V, V) / n for x in (A_mean, A2, AB))
    B_mean, B2 = B_mean / n, B2 / n
    mean_T = A_mean - B_mean[:, None] * Q
    second_T = A2 - 2 * Q * AB + Q**2 * B2[:, None]
    correction = n / (n - 1)
    var_T = np.maximum(second_T - mean_T**2, 0.0) * correction
    var_0 = g0.var(axis=0, ddof=1)
    mean = SequenceGradient(g0.mean(axis=0), mean_T)
    stderr = SequenceGradient(np.sqrt(var_0 / n), np.sqrt(var_T / n))
    if pair.eos is not None:
        mean.transition[pair.eos] = 0.0
        stderr.transition[pair.eos] = 0.0
    projection_mean = projection_std = math.nan
    if direction is not None:
        delta0, delta = _projection(_chains(pair), direction)
        x = c[:, 0] * delta0[tokens[:, 0]]
        safe = np.maximum(tokens, 0)
        x = x + np.sum(np.where(valid, c[:, 1:] * delta[safe[:, :-1], safe[:, 1:]], 0.0), axis=1)
        projection_mean, projection_std = float(x.mean()), float(x.std(ddof=1))
    record = get_estimator(estimator)
    return MonteCarloSequenceGradient(record.name, _use(use).name, n, mean, stderr, projection_mean, projection_std)


# --------------------------------------------------------------------------------------------------
# The reward's own gradient, the frozen-prefix ("partial") KL gradients, and the full-vocabulary step KL
# --------------------------------------------------------------------------------------------------

def _check_rewards(pair: MarkovChainPair, rewards) -> np.ndarray:
    rewards = _checks.real_array(rewards, "rewards")
    want = (pair.length, pair.vocab_size)
    if rewards.shape != want:
        raise ValueError(f"rewards must have shape (T, V) = {want}, got {rewards.shape}")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    return rewards


def sequence_reward_gradient(pair, rewards) -> SequenceGradient:
    r"""The exact gradient of the expected reward :math:`\mathbb{E}_q\big[\sum_t \texttt{rewards}[t, x_t]\big]`.

    A reward for being in state s at position t (with ``eos``: only at positions a sequence reaches, the eos
    token included). By the score-function identity, with rewards at earlier positions dropping out since
    :math:`\mathbb{E}[g_u \mid x_{<u}] = 0`,

    .. math:: \nabla_\theta\,\mathbb{E}_q\Big[\sum_t R_t(x_t)\Big]
              = \mathbb{E}_q\Big[\sum_u g_u \sum_{t\ge u} R_t(x_t)\Big],

    computed from a backward pass over the reward still to come, :math:`Y_t(s) = \mathbb{E}_q[\sum_{u>t} R_u(x_u)
    \mid x_t = s]`, and q's forward marginals: :math:`O(T V^2)`.

    Parameters
    ----------
    pair : MarkovChainPair
        q is the policy (its logits are θ); p plays no part.
    rewards : array_like, shape (T, V)
        ``rewards[t, s]``: the reward for :math:`x_t = s`.

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For a pair that is not a MarkovChainPair, or rewards of the wrong shape, NaN or infinite.

    Examples
    --------
    A reward that does not depend on the state has gradient 0:

    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    >>> bool(sequence_reward_gradient(pair, np.ones((4, 3))).norm < 1e-15)
    True
    """
    pair = _check_pair(pair)
    rewards = _check_rewards(pair, rewards)
    chains = _chains(pair)
    T, N = chains.T, chains.N
    to_come = np.zeros((T, chains.V))
    for t in range(T - 2, -1, -1):
        to_come[t] = N @ (rewards[t + 1] + to_come[t + 1])
        if chains.eos is not None:
            to_come[t, chains.eos] = 0.0
    returns = rewards + to_come  # E[Σ_{u≥t} R_u | x_t = s]
    going = chains.marginals()[:-1] * chains.going
    W = N * (going.T @ returns[1:])
    return _assemble(chains, chains.n0 * returns[0], W)


def _prefix_visits(chains: _Chains) -> np.ndarray:
    """Σ_{t ≤ T-2} ν(x_t = s, a step follows): how often row s of the transition is used, shape (V,)."""
    if chains.T == 1:
        return np.zeros(chains.V)
    return np.sum(chains.marginals()[:-1] * chains.going, axis=0)


def _row_kl_gradients(log_q: np.ndarray, log_p: np.ndarray, target: str) -> np.ndarray:
    r"""Per row, the gradient of KL(q_s‖p_s) (q_s ⊙ (log q_s/p_s - KL_s)) or KL(p_s‖q_s) (q_s - p_s) in q's logits."""
    q = np.exp(log_q)
    if target == "kl_pq":
        return q - np.exp(log_p)
    log_ratio = log_q - log_p
    kl = np.sum(q * log_ratio, axis=-1, keepdims=True)
    return q * (log_ratio - kl)


def sequence_partial_kl_gradient(pair, target: str = "kl_qp", *, prefix_logits=None) -> SequenceGradient:
    r"""The gradient of the per-step KLs with the prefixes' distribution held fixed: Tang & Munos' "partial gradient".

    With ν the chain the prefixes come from (q itself, or ``prefix_logits``) and :math:`\theta_0` the current
    logits, the frozen-prefix objective is

    .. math:: J_\nu(\theta) = \sum_t \mathbb{E}_{x_{<t}\sim\nu}\big[D\big(\cdot \mid x_{t-1}\big)\big],\qquad
              D = \mathrm{KL}(q_\theta(\cdot\mid x_{t-1})\,\|\,p(\cdot\mid x_{t-1}))\ \text{(kl_qp)}
              \ \text{or}\ \mathrm{KL}(p(\cdot\mid x_{t-1})\,\|\,q_\theta(\cdot\mid x_{t-1}))\ \text{(kl_pq)},

    and this returns :math:`\nabla_\theta J_\nu` (ν not differentiated): row s is
    :math:`m_\nu(s)\,\nabla D_s` with :math:`m_\nu(s) = \sum_{t\le T-2}\nu(x_t = s)` the visits after which a step
    follows. With ν = q it is the expected gradient of k2 (kl_qp) or k3 (kl_pq) per token in the loss; the sequence
    KL's gradient adds the term through the prefixes' distribution, :math:`\sum_u \mathbb{E}[g_u \sum_{t>u} D_t]`.

    Parameters
    ----------
    pair : MarkovChainPair
    target : {"kl_qp", "kl_pq"}
    prefix_logits : (array_like (V,), array_like (V, V)), optional
        Initial and transition logits of the chain ν that draws the prefixes (default: q).

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For a pair that is not a MarkovChainPair, an unknown target or malformed logits.

    Examples
    --------
    For one token there is no prefix, and the partial gradient is the KL's own:

    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 1, 0.5, rng=0)
    >>> bool((sequence_partial_kl_gradient(pair) - sequence_kl_gradient(pair)).norm < 1e-15)
    True
    """
    pair = _check_pair(pair)
    target = _checks.choice(target, "target", ("kl_qp", "kl_pq"))
    chains = _chains(pair, prefix_logits)
    initial = _row_kl_gradients(chains.log_q0, chains.log_p0, target)
    transition = _prefix_visits(chains)[:, None] * _row_kl_gradients(chains.log_Q, chains.log_P, target)
    if chains.eos is not None:
        transition[chains.eos] = 0.0
    return SequenceGradient(initial, transition)


#: The full-vocabulary per-step KL of Amini et al. (arXiv:2504.10637) as a penalty, by what autodiff differentiates.
STEP_KL_USES: dict[str, SequenceUse] = {
    u.name: u
    for u in (
        SequenceUse("step_kl_loss", "token", "loss", "sum_t KL_t(x_t-1)"),
        SequenceUse("step_kl_reward_to_go", "token", "reward_to_go",
                    "sum_t KL_t(x_t-1) + sum_t sg[sum_{s>t} KL_s] log q(x_t|x_t-1)"),
        SequenceUse("step_kl_sequence_reward", "sequence", "reward",
                    "sum_t KL_t(x_t-1) + sg[sum_t KL_t] sum_t log q(x_t|x_t-1)"),
    )
}


def _step_kl_use(use) -> SequenceUse:
    if isinstance(use, SequenceUse) and use.name in STEP_KL_USES:
        return STEP_KL_USES[use.name]
    return STEP_KL_USES[_checks.choice(use, "use", STEP_KL_USES)]


def _step_kl_parts(chains: _Chains):
    """KL_0 (float), κ(s) = KL(q_s‖p_s) per row (V,), ∇KL_0 (V,) and ∇KL(q_s‖p_s) per row (V, V)."""
    q0, Q = chains.q0, chains.Q
    kl0 = float(np.sum(q0 * (chains.log_q0 - chains.log_p0)))
    kappa = np.sum(Q * (chains.log_Q - chains.log_P), axis=1)
    h0 = _row_kl_gradients(chains.log_q0, chains.log_p0, "kl_qp")
    H = _row_kl_gradients(chains.log_Q, chains.log_P, "kl_qp")
    if chains.eos is not None:  # nothing follows eos: no step KL, no parameter
        kappa = kappa * chains.going
        H = H * chains.going[:, None]
    return kl0, kappa, h0, H


def sequence_step_kl_gradient(pair, use: str = "step_kl_reward_to_go") -> SequenceGradient:
    r"""The exact expected gradient of the full-vocabulary per-step KL used as a penalty (on-policy, x ~ q).

    The step KL :math:`\mathrm{KL}_t(x_{t-1}) = \mathrm{KL}(q_\theta(\cdot\mid x_{t-1})\,\|\,p(\cdot\mid x_{t-1}))` is
    computed from both models' logits at every sampled prefix; its sum is the Rao–Blackwellised estimate of the
    sequence KL (Amini, Vieira and Cotterell, arXiv:2504.10637). Autodiff of it gives (:data:`STEP_KL_USES`):

    * ``"step_kl_loss"``: :math:`\sum_t \nabla\mathrm{KL}_t(x_{t-1})`, through the conditionals only — the
      conditional expectation of k2-per-token-in-the-loss's per-token gradient given the prefix, so its expected
      gradient is the same partial one (:func:`sequence_partial_kl_gradient`);
    * ``"step_kl_reward_to_go"``: that plus :math:`\sum_u g_u \sum_{t>u}\mathrm{KL}_t(x_{t-1})` (the step KLs
      still to come as a stopped reward on each token's score): the gradient of the sequence KL, exactly;
    * ``"step_kl_sequence_reward"``: that plus :math:`(\sum_t \mathrm{KL}_t)\sum_u g_u` instead (the whole sum on
      every score, as the step KLs enter the advantage in the authors' released RLOO code, there without stopping
      their gradient and with a baseline): the same expectation, with the zero-mean past terms added.

    Parameters
    ----------
    pair : MarkovChainPair
        q is the policy, p the reference; ``eos`` gives variable lengths.
    use : str
        One of :data:`STEP_KL_USES`.

    Returns
    -------
    SequenceGradient

    Raises
    ------
    TypeError, ValueError
        For a pair that is not a MarkovChainPair or an unknown use.

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 5, 0.5, rng=0)
    >>> bool((sequence_step_kl_gradient(pair) - sequence_kl_gradient(pair)).norm < 1e-14)
    True
    """
    pair = _check_pair(pair)
    use = _step_kl_use(use)
    chains = _chains(pair)
    kl0, kappa, h0, H = _step_kl_parts(chains)
    pathwise = SequenceGradient(h0, _prefix_visits(chains)[:, None] * H)
    if use.name == "step_kl_loss":
        return pathwise
    # both score forms have the causal expectation: Y_t(s) = E[Σ_{t ≤ v ≤ T-2} κ(x_v) | x_t = s]
    T, N = chains.T, chains.N
    to_come = np.zeros((T, chains.V))
    for t in range(T - 2, -1, -1):
        to_come[t] = kappa + N @ to_come[t + 1]
        if chains.eos is not None:
            to_come[t, chains.eos] = 0.0
    going = chains.marginals()[:-1] * chains.going
    score = _assemble(chains, chains.n0 * to_come[0], N * (going.T @ to_come[1:]))
    return score + pathwise


def _step_kl_projection_parts(chains: _Chains, direction: SequenceGradient):
    """What one step adds to <G, d>: a0 and a(s) (pathwise), δ0 and δ(s, s') (score), KL_0 and κ(s)."""
    delta0, delta = _projection(chains, direction)
    kl0, kappa, h0, H = _step_kl_parts(chains)
    a0 = float(h0 @ np.asarray(direction.initial, dtype=np.float64))
    a = np.sum(H * np.asarray(direction.transition, dtype=np.float64), axis=1)
    return a0, a, delta0, delta, kl0, kappa


def _causal_moments(chains, a0, a, delta0, delta, kappa) -> tuple[float, float]:
    r"""E[X], E[X²] for X = a0 + Σ_v (a(x_v) + κ(x_v) D_v) over the steps v → v+1, D_v = Σ_{u≤v} δ_u.

    Carries :math:`m_{ij}(s) = \mathbb{E}[D^i X^j 1\{x_t = s\}]` for ij in 00, 10, 20, 01, 11, 02; a step maps
    (D, X) to (D + δ, X + κD + a)."""
    N = chains.N
    y = delta
    k = np.broadcast_to(kappa[:, None], N.shape)
    b = np.broadcast_to(a[:, None], N.shape)
    P = {name: N * f for name, f in (("1", 1.0), ("y", y), ("y2", y**2), ("k", k), ("b", b), ("ky", k * y),
                                     ("yb", y * b), ("k2", k**2), ("b2", b**2), ("kb", k * b))}
    w = chains.n0
    start = [w, w * delta0, w * delta0**2, w * a0, w * delta0 * a0, w * a0**2]

    def step(m):
        m00, m10, m20, m01, m11, m02 = m
        return [
            m00 @ P["1"],
            m10 @ P["1"] + m00 @ P["y"],
            m20 @ P["1"] + 2 * (m10 @ P["y"]) + m00 @ P["y2"],
            m01 @ P["1"] + m10 @ P["k"] + m00 @ P["b"],
            m11 @ P["1"] + m20 @ P["k"] + m10 @ P["b"] + m01 @ P["y"] + m10 @ P["ky"] + m00 @ P["yb"],
            m02 @ P["1"] + m20 @ P["k2"] + m00 @ P["b2"] + 2 * (m11 @ P["k"]) + 2 * (m01 @ P["b"])
            + 2 * (m10 @ P["kb"]),
        ]

    totals = _forward_finish(chains, start, step, "sum", [0] * 6)
    return totals[3], totals[5]


def _monomial_moments(chains, sums, exponents) -> dict:
    r"""E[Π_i S_i^{α_i}] for additive sums :math:`S_i = s_i(x_0) + \sum_{t\ge1} \sigma_i(x_{t-1}, x_t)` and every α
    in ``exponents``, by one forward pass carrying :math:`\mathbb{E}[\prod_i S_i^{\beta_i} 1\{x_t = s\}]` for all
    β below them (binomial expansion of each increment)."""
    import itertools

    # only the monomials below a wanted one are ever needed: the downward closure of ``exponents``
    index = sorted({beta for alpha in exponents for beta in itertools.product(*(range(x + 1) for x in alpha))})
    N = chains.N
    factor = {}
    for gamma in index:
        f = N.copy()
        for (_, step_values), g in zip(sums, gamma):
            if g:
                f = f * step_values**g
        factor[gamma] = f
    start = []
    for beta in index:
        v = chains.n0.copy()
        for (start_values, _), b in zip(sums, beta):
            if b:
                v = v * start_values**b
        start.append(v)

    def step(m):
        values = dict(zip(index, m))
        out = []
        for alpha in index:
            acc = np.zeros(chains.V)
            for beta in itertools.product(*(range(x + 1) for x in alpha)):
                coef = math.prod(math.comb(x, y) for x, y in zip(alpha, beta))
                gamma = tuple(x - y for x, y in zip(alpha, beta))
                acc = acc + coef * (values[beta] @ factor[gamma])
            out.append(acc)
        return out

    totals = dict(zip(index, _forward_finish(chains, start, step, "sum", [0] * len(index))))
    return {alpha: totals[alpha] for alpha in exponents}


def sequence_step_kl_moments(pair, use, direction: SequenceGradient) -> SequenceGradientMoments:
    r"""Exact mean and variance of :math:`\langle G, d\rangle` for one sequence's step-KL gradient G (x ~ q).

    With :math:`a(s) = \langle\nabla\mathrm{KL}(q_s\|p_s), d_s\rangle` (pathwise), :math:`\delta_t = \langle g_t, d\rangle`
    and :math:`\kappa(s) = \mathrm{KL}(q_s\|p_s)`: ``step_kl_loss`` is the additive :math:`\sum_t a(x_{t-1})`;
    ``step_kl_reward_to_go`` adds :math:`\sum_v \kappa(x_v) D_v` with :math:`D_v = \sum_{u\le v}\delta_u`
    (moments of (D, X) carried with the state); ``step_kl_sequence_reward`` adds :math:`C\Delta`, the product of two
    additive sums (:math:`C = \mathrm{KL}_0 + \sum_v\kappa(x_v)`, :math:`\Delta = \sum_u\delta_u`), whose joint moments
    up to :math:`C^2\Delta^2` one forward pass carries. :math:`O(T V^2)`.

    Parameters
    ----------
    pair : MarkovChainPair
    use : str
        One of :data:`STEP_KL_USES`.
    direction : SequenceGradient
        d, e.g. :func:`sequence_kl_gradient`.

    Returns
    -------
    SequenceGradientMoments
        With estimator ``"step_kl"``.

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 6, 0.5, rng=0)
    >>> d = sequence_kl_gradient(pair)
    >>> m = sequence_step_kl_moments(pair, "step_kl_reward_to_go", d)
    >>> bool(abs(m.mean - d.dot(d)) < 1e-12 * d.dot(d))
    True
    """
    pair = _check_pair(pair)
    use = _step_kl_use(use)
    if not isinstance(direction, SequenceGradient):
        raise TypeError(f"direction must be a SequenceGradient, got {type(direction).__name__}")
    chains = _chains(pair)
    a0, a, delta0, delta, kl0, kappa = _step_kl_projection_parts(chains, direction)
    a_step = np.broadcast_to(a[:, None], (chains.V, chains.V))
    a_start = np.full(chains.V, a0)
    if use.name == "step_kl_loss":
        first, second = (_additive_moment(chains, a_start, a_step, m, chains.n0, chains.N, "sum") for m in (1, 2))
    elif use.name == "step_kl_reward_to_go":
        first, second = _causal_moments(chains, a0, a, delta0, delta, kappa)
    else:
        sums = [(a_start, a_step), (np.full(chains.V, kl0), np.broadcast_to(kappa[:, None], (chains.V, chains.V))),
                (delta0, delta)]
        m = _monomial_moments(chains, sums, [(1, 0, 0), (0, 1, 1), (2, 0, 0), (1, 1, 1), (0, 2, 2)])
        first = m[(1, 0, 0)] + m[(0, 1, 1)]
        second = m[(2, 0, 0)] + 2 * m[(1, 1, 1)] + m[(0, 2, 2)]
    return SequenceGradientMoments("step_kl", use.name, first, max(second - first * first, 0.0))


def sequence_step_kl_per_sample_gradients(pair, tokens, use) -> np.ndarray:
    r"""Each sequence's step-KL gradient as autodiff returns it, flattened like :attr:`SequenceGradient.flat`.

    :math:`G = \nabla\mathrm{KL}_0 + \sum_{t\ge1}\nabla\mathrm{KL}(q_{x_{t-1}}\|p_{x_{t-1}}) + \sum_u c_u g_u`, with
    :math:`c_u = 0` (``step_kl_loss``), :math:`\sum_{t>u}\mathrm{KL}_t` (``step_kl_reward_to_go``) or
    :math:`\sum_t\mathrm{KL}_t` (``step_kl_sequence_reward``). Dense: shape (n, V + V²).

    Parameters
    ----------
    pair : MarkovChainPair
    tokens : array_like of int, shape (n, T)
        Sequences from q (padded with -1 after eos).
    use : str
        One of :data:`STEP_KL_USES`.

    Returns
    -------
    ndarray, shape (n, V + V²)
    """
    pair = _check_pair(pair)
    use = _step_kl_use(use)
    tokens = pair._check_tokens(tokens)
    chains = _chains(pair)
    V = chains.V
    kl0, kappa, h0, H = _step_kl_parts(chains)
    n, T = tokens.shape
    mask = tokens >= 0
    safe = np.maximum(tokens, 0)
    # step KLs: KL_0 at t = 0, κ(x_{t-1}) at t ≥ 1 (0 at padding)
    step_kls = np.zeros((n, T))
    step_kls[:, 0] = kl0
    step_kls[:, 1:] = np.where(mask[:, 1:], kappa[safe[:, :-1]], 0.0)
    if use.name == "step_kl_loss":
        c = np.zeros((n, T))
    elif use.name == "step_kl_reward_to_go":
        after = np.cumsum(step_kls[:, ::-1], axis=1)[:, ::-1]
        c = np.zeros((n, T))
        c[:, :-1] = after[:, 1:]
    else:
        c = np.repeat(step_kls.sum(axis=1)[:, None], T, axis=1)
    c = np.where(mask, c, 0.0)
    rows = np.arange(n)
    q0, Q = chains.q0, chains.Q
    initial = h0 + c[:, :1] * (np.eye(V)[safe[:, 0]] - q0)
    transition = np.zeros((n, V, V))
    for t in range(1, T):
        alive = mask[:, t]
        prev, cur = safe[alive, t - 1], safe[alive, t]
        idx = rows[alive]
        score = -Q[prev] * c[alive, t][:, None]
        score[np.arange(idx.size), cur] += c[alive, t]
        transition[idx, prev] += H[prev] + score
    if chains.eos is not None:
        transition[:, chains.eos] = 0.0
    return np.concatenate([initial, transition.reshape(n, V * V)], axis=1)


def sequence_step_kl_monte_carlo(pair, use, n: int, *, rng=None,
                                 direction: SequenceGradient | None = None) -> MonteCarloSequenceGradient:
    r"""Average the step-KL gradients of n sequences from q, with per-coordinate standard errors (and the
    projection on ``direction``), in blocks of sequences so that memory stays bounded.

    Parameters
    ----------
    pair : MarkovChainPair
    use : str
        One of :data:`STEP_KL_USES`.
    n : int
        Number of sequences; at least 2.
    rng : {None, int, numpy.random.Generator}, optional
    direction : SequenceGradient, optional

    Returns
    -------
    MonteCarloSequenceGradient
        With estimator ``"step_kl"``.

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 5, 0.5, rng=0)
    >>> mc = sequence_step_kl_monte_carlo(pair, "step_kl_reward_to_go", 20_000, rng=1)
    >>> bool(np.all(np.abs(mc.z_scores(sequence_kl_gradient(pair))) < 5))
    True
    """
    pair = _check_pair(pair)
    use = _step_kl_use(use)
    n = _checks.sample_size(n, "n", 2)
    rng = _checks.rng(rng)
    if direction is not None and not isinstance(direction, SequenceGradient):
        raise TypeError(f"direction must be a SequenceGradient, got {type(direction).__name__}")
    V = pair.vocab_size
    tokens = pair.sample(n, rng=rng)
    block = max(1, 2**20 // (V + V * V))
    total, total2 = np.zeros(V + V * V), np.zeros(V + V * V)
    projections = []
    d = None if direction is None else direction.flat
    shift = None  # sums of deviations from the first sample: exact for constant coordinates, no cancellation
    for start in range(0, n, block):
        g = sequence_step_kl_per_sample_gradients(pair, tokens[start:start + block], use)
        if shift is None:
            shift = g[0].copy()
        deviation = g - shift
        total += deviation.sum(axis=0)
        total2 += np.sum(deviation * deviation, axis=0)
        if d is not None:
            projections.append(g @ d)
    mean_deviation = total / n
    mean = shift + mean_deviation
    var = np.maximum(total2 / n - mean_deviation**2, 0.0) * n / (n - 1)
    split = lambda v: SequenceGradient(v[:V].copy(), v[V:].reshape(V, V).copy())  # noqa: E731
    projection_mean = projection_std = math.nan
    if d is not None:
        x = np.concatenate(projections)
        projection_mean, projection_std = float(x.mean()), float(x.std(ddof=1))
    return MonteCarloSequenceGradient("step_kl", use.name, n, split(mean), split(np.sqrt(var / n)), projection_mean,
                                      projection_std)


@dataclass(frozen=True, repr=False)
class CoefficientCheck(Result):
    r"""The verdict on a reader's per-token coefficients :math:`c_t` (an exercise's answer) against klviz's."""

    use: str
    ok: bool
    largest_difference: float
    message: str

    def _display_fields(self):
        return [("use", self.use), ("ok", self.ok), ("message", Shown(self.message))]


def check_sequence_coefficients(pair, tokens, coefficients, estimator, use, *, rtol: float = 1e-9) -> CoefficientCheck:
    r"""Compare per-token coefficients computed by hand with :func:`sequence_per_sample_gradients`' (on-policy).

    Each sequence's gradient estimate is :math:`G = \sum_t c_t g_t`; an implementation of a use is right when its
    (n, T) array of :math:`c_t` is, token by token (0 at padding after eos).

    Parameters
    ----------
    pair : MarkovChainPair
    tokens : array_like of int, shape (n, T)
    coefficients : array_like, shape (n, T)
        The reader's :math:`c_t`.
    estimator, use
        As in :func:`sequence_expected_gradient`.
    rtol : float
        Relative tolerance (of the largest coefficient's size).

    Returns
    -------
    CoefficientCheck
        ``ok`` and a message naming the first sequence and position that differ.

    Raises
    ------
    ValueError
        If ``coefficients`` does not have the shape of ``tokens``.

    Examples
    --------
    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    >>> tokens = pair.sample(5, rng=1)
    >>> check_sequence_coefficients(pair, tokens, np.ones((5, 4)), "k1", "token_loss").ok
    True
    """
    tokens = _check_pair(pair)._check_tokens(tokens)
    expected, _ = sequence_per_sample_gradients(pair, tokens, estimator, use)
    got = _checks.real_array(coefficients, "coefficients")
    if got.shape != expected.shape:
        raise ValueError(f"coefficients must have the shape of tokens, {expected.shape}, got {got.shape}")
    got = np.where(tokens >= 0, got, 0.0)
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    difference = np.abs(got - expected)
    largest = float(np.max(difference)) if difference.size else 0.0
    name = _use(use).name
    if largest <= rtol * scale:
        return CoefficientCheck(name, True, largest, f"all {expected.size} coefficients agree")
    i, t = np.unravel_index(int(np.argmax(difference > rtol * scale)), difference.shape)
    return CoefficientCheck(name, False, largest,
                            f"sequence {i}, position {t}: expected {expected[i, t]:.6g}, got {got[i, t]:.6g}")


def sequence_projections(pair, tokens, coefficients, direction: SequenceGradient) -> np.ndarray:
    r"""Each sequence's :math:`\langle G_i, d\rangle` for :math:`G_i = \sum_t c_{it}\, g_t`, from its coefficients.

    :math:`\langle g_t, d\rangle = d_{x_{t-1}}(x_t) - \sum_{s'} q(s'\mid x_{t-1})\, d_{x_{t-1}}(s')` (and
    :math:`d_0(x_0) - q_0\cdot d_0` at t = 0), so the projection needs no V² array per sequence. The coefficients may
    be any (n, T) array: one use's (:func:`sequence_per_sample_gradients`), a sum of two uses', or an exercise's.

    Parameters
    ----------
    pair : MarkovChainPair
    tokens : array_like of int, shape (n, T)
    coefficients : array_like, shape (n, T)
    direction : SequenceGradient

    Returns
    -------
    ndarray, shape (n,)

    Raises
    ------
    TypeError, ValueError
        For malformed tokens, coefficients of another shape, or a direction that is not a SequenceGradient.

    Examples
    --------
    k1 per token in the loss (every :math:`c_t = 1`) projects to a mean-zero number:

    >>> from klviz import random_markov_chain_pair
    >>> pair = random_markov_chain_pair(3, 4, 0.5, rng=0)
    >>> tokens = pair.sample(100_000, rng=1)
    >>> x = sequence_projections(pair, tokens, np.ones((100_000, 4)), sequence_kl_gradient(pair))
    >>> bool(abs(x.mean()) < 5 * x.std() / np.sqrt(x.size))
    True
    """
    pair = _check_pair(pair)
    tokens = pair._check_tokens(tokens)
    if not isinstance(direction, SequenceGradient):
        raise TypeError(f"direction must be a SequenceGradient, got {type(direction).__name__}")
    c = _checks.real_array(coefficients, "coefficients")
    if c.shape != tokens.shape:
        raise ValueError(f"coefficients must have the shape of tokens, {tokens.shape}, got {c.shape}")
    delta0, delta = _projection(_chains(pair), direction)
    safe = np.maximum(tokens, 0)
    out = c[:, 0] * delta0[safe[:, 0]]
    steps = np.where(tokens[:, 1:] >= 0, c[:, 1:] * delta[safe[:, :-1], safe[:, 1:]], 0.0)
    return out + steps.sum(axis=1)
