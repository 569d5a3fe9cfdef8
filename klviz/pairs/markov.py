r"""Two Markov chains over V states, q (the sampling policy) and p (the reference): exact by dynamic programming.

The toy model of two autoregressive models: initial logits (V,) and transition logits (V, V) each, and
sequences of T tokens :math:`x_0, \dots, x_{T-1}`. With per-token log-ratios
:math:`\ell_t = \log p(x_t \mid x_{t-1}) - \log q(x_t \mid x_{t-1})`, the sequence log-ratio is
:math:`L = \log R = \sum_t \ell_t`, and the sequence KL is, by the chain rule, a sum over steps of the
expected KL between the step-t conditionals,

.. math:: \mathrm{KL}[q, p] = \sum_{t=0}^{T-1} \sum_s m_{t-1}(s)\,\mathrm{KL}\big[q(\cdot \mid s), p(\cdot \mid s)\big],

with :math:`m_{t-1}` q's state marginal one step earlier: :math:`O(T V^2)` instead of :math:`V^T` terms.

As a :class:`~klviz.pairs.base.Pair`, a sample is a whole sequence and ``log_ratio`` is L: the
sequence-level estimators k(L). Their exact moments are forward passes over q's state marginals that
carry expectations of powers of partial sums, one kind per exact form:

* k1 = -L and k2 = L²/2: centred moments of L up to the fourth (:meth:`MarkovChainPair.centred_log_ratio_moments`);
* k3(L) = R - 1 - L: the recurrences :math:`k_3(L + \ell) = k_3(L) + k_3(\ell) + (e^L - 1)(e^\ell - 1)` and
  :math:`e^{L+\ell} - 1 = (e^L - 1) e^\ell + (e^\ell - 1)` carry :math:`k_3(L_t)` and :math:`e^{L_t} - 1`,
  both small when p ≈ q, so :math:`\mathbb{E}[k_3(L)^2]` is a sum of terms of its own order (no
  :math:`\mathrm{Var} R - 2\,\mathrm{Cov}(R, L) + \mathrm{Var} L` cancellation);
* R - 1: :math:`\chi^2` of the sequences as a sum of per-row :math:`\chi^2` terms;
* any other exact form :math:`\sum c\,e^{tL} L^j`: tilted passes over :math:`q^{1-t} p^t`.

All logits are finite: every transition has positive probability under both chains, so
:math:`\mathbb{E}_q[R] = 1` exactly and every moment is finite (possibly beyond float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.special import logsumexp

from klviz import _checks
from klviz._kernels import exp_minus_1_minus_x, log_softmax
from klviz._sampling import TransitionSampler, sample_categorical
from klviz.estimators import CONTROL_VARIATE, ESTIMATORS, Estimator, accurate_decomposition
from klviz.pairs.base import Pair, sample_size
from klviz.pairs.categorical import kl_rows

__all__ = ["MarkovChainPair"]

# Sequences are simulated in blocks of at most this many tokens (n × T), whatever T is.
_TOKENS_PER_BLOCK = 2**16


def _log_softmax_rows(logits, name: str, ndim: int) -> np.ndarray:
    """Row-wise log-softmax of a finite real array with ``ndim`` dimensions, read-only."""
    arr = np.asarray(logits)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != ndim:
        want = "(V,)" if ndim == 1 else "(V, V)"
        raise ValueError(f"{name} must have shape {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (every token must have positive probability); got NaN or inf")
    log_probs = log_softmax(arr, axis=-1)
    log_probs.flags.writeable = False
    return log_probs


@dataclass(frozen=True, eq=False)
class MarkovChainPair(Pair):
    r"""Two Markov chains over V states, q (the sampling policy) and p (the reference), T tokens long.

    A sample is a whole sequence :math:`x_{0:T}` drawn from q; ``log_ratio`` is the sequence-level
    :math:`L = \log p(x_{0:T}) - \log q(x_{0:T})`, so the pair plugs into :func:`klviz.simulate` and
    :func:`klviz.exact_moments` for the sequence-level k1/k2/k3; ``kl_qp()`` is the exact sequence KL[q, p].

    Parameters
    ----------
    p_initial_logits, q_initial_logits : array_like, shape (V,)
        Logits of the first token under p and q.
    p_transition_logits, q_transition_logits : array_like, shape (V, V)
        Row s holds the logits of the next token after state s.
    length : int
        T, the number of tokens per sequence (the maximum, with ``eos``); at least 1.
    eos : int, optional
        An end-of-sequence state: a sequence ends with its first ``eos`` token (included), so lengths vary
        up to T. Sampled token arrays are padded with -1 after it; per-token quantities are 0 there. The
        sequence KL, sampling and the sequence gradients (:mod:`klviz.gradients.sequences`) handle it; the
        moment passes of :func:`klviz.exact_moments` and :func:`klviz.sequence_moments` do not (ValueError).

    Attributes
    ----------
    log_p_initial, log_q_initial : ndarray, shape (V,)
        Normalised log-probabilities (stable log-softmax).
    log_p_transition, log_q_transition : ndarray, shape (V, V)
        Row-normalised log transition probabilities.

    Raises
    ------
    TypeError
        If logits are not real arrays or ``length`` is not an integer.
    ValueError
        If shapes are wrong or disagree, a logit is NaN or infinite, or ``length`` < 1.

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.zeros(2)
    >>> pair = MarkovChainPair(flat, np.zeros((2, 2)), flat, np.zeros((2, 2)), length=5)
    >>> pair.kl_qp()
    0.0
    """

    p_initial_logits: np.ndarray
    p_transition_logits: np.ndarray
    q_initial_logits: np.ndarray
    q_transition_logits: np.ndarray
    length: int
    eos: int | None = field(default=None, kw_only=True)
    log_p_initial: np.ndarray = field(init=False, repr=False)
    log_q_initial: np.ndarray = field(init=False, repr=False)
    log_p_transition: np.ndarray = field(init=False, repr=False)
    log_q_transition: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        parts = (("log_q_initial", "q_initial_logits", 1), ("log_p_initial", "p_initial_logits", 1),
                 ("log_q_transition", "q_transition_logits", 2), ("log_p_transition", "p_transition_logits", 2))
        arrays = {attr: _log_softmax_rows(getattr(self, name), name, ndim) for attr, name, ndim in parts}
        vocab = arrays["log_q_initial"].size
        for attr, name, ndim in parts:
            want = (vocab,) * ndim
            if arrays[attr].shape != want:
                raise ValueError(f"{name} must have shape {want} to match q_initial_logits (V = {vocab}), "
                                 f"got shape {arrays[attr].shape}")
        object.__setattr__(self, "length", _checks.integer(self.length, "length", 1))
        if self.eos is not None:
            eos = _checks.integer(self.eos, "eos", 0)
            if eos >= vocab:
                raise ValueError(f"eos must be a state in [0, {vocab}), got {eos}")
            object.__setattr__(self, "eos", eos)
        for attr, name, _ in parts:
            logits = np.array(getattr(self, name), dtype=np.float64)
            logits.flags.writeable = False
            object.__setattr__(self, name, logits)
            object.__setattr__(self, attr, arrays[attr])

    def __repr__(self) -> str:
        eos = "" if self.eos is None else f", eos={self.eos}"
        return f"MarkovChainPair(vocabulary={self.vocab_size}, length={self.length}{eos})"

    @property
    def vocab_size(self) -> int:
        return self.log_q_initial.size

    def with_length(self, length: int) -> "MarkovChainPair":
        """The same two chains with sequences of ``length`` tokens."""
        return MarkovChainPair(self.p_initial_logits, self.p_transition_logits,
                               self.q_initial_logits, self.q_transition_logits, length, eos=self.eos)

    def swapped(self) -> "MarkovChainPair":
        return MarkovChainPair(self.q_initial_logits, self.q_transition_logits,
                               self.p_initial_logits, self.p_transition_logits, self.length, eos=self.eos)

    @property
    def continues(self) -> np.ndarray:
        """Per state, 1.0 if a sequence goes on after it (0.0 at ``eos``): multiplies marginals before a step."""
        out = np.ones(self.vocab_size)
        if self.eos is not None:
            out[self.eos] = 0.0
        return out

    def _fixed_length_only(self, what: str) -> None:
        if self.eos is not None:
            raise ValueError(f"{what} is for fixed-length sequences; this pair ends at eos = {self.eos} "
                             "(its sequence KL, sampling and sequence gradients handle variable lengths)")

    # --- per-token quantities ------------------------------------------------------------------------
    @cached_property
    def initial_log_ratio(self) -> np.ndarray:
        """ℓ_0(s) = log p(x_0 = s) - log q(x_0 = s), shape (V,), from logit differences (full precision)."""
        from klviz.pairs.categorical import log_ratio_rows

        out = log_ratio_rows(self.p_initial_logits, self.q_initial_logits, self.log_p_initial, self.log_q_initial)[0]
        out.flags.writeable = False
        return out

    @cached_property
    def transition_log_ratio(self) -> np.ndarray:
        """ℓ(s, s') = log p(s'|s) - log q(s'|s), shape (V, V), from logit differences (full precision)."""
        from klviz.pairs.categorical import log_ratio_rows

        out = log_ratio_rows(self.p_transition_logits, self.q_transition_logits,
                             self.log_p_transition, self.log_q_transition)
        out.flags.writeable = False
        return out

    def sample(self, n: int, *, rng=None) -> np.ndarray:
        """n sequences from q, shape (n, T), integer states (inverse CDF, one uniform per token)."""
        n = sample_size(n)
        rng = _checks.rng(rng)
        tokens = np.empty((n, self.length), dtype=np.int64)
        tokens[:, 0] = sample_categorical(np.exp(self.log_q_initial), n, rng)
        next_states = self._sampler
        for t in range(1, self.length):
            tokens[:, t] = next_states(np.maximum(tokens[:, t - 1], 0), rng)
            if self.eos is not None:  # ended sequences are padded with -1 (their draws are discarded)
                tokens[:, t] = np.where((tokens[:, t - 1] == self.eos) | (tokens[:, t - 1] < 0), -1, tokens[:, t])
        return tokens

    @cached_property
    def _sampler(self) -> TransitionSampler:
        return TransitionSampler(np.exp(self.log_q_transition))

    def sample_log_ratio(self, n: int, *, rng=None) -> np.ndarray:
        """Sequence log-ratios L of n sequences from q, streamed over time: memory O(n), not O(n T).

        The same draws as ``log_ratio(sample(n, rng=rng))`` (one uniform per token, in the same order)."""
        n = sample_size(n)
        rng = _checks.rng(rng)
        states = sample_categorical(np.exp(self.log_q_initial), n, rng)
        total = self.initial_log_ratio[states].copy()
        step = self.transition_log_ratio.ravel()
        alive = np.ones(n, dtype=bool)
        for _ in range(1, self.length):
            new = self._sampler(states, rng)
            if self.eos is not None:
                alive &= states != self.eos
                total += np.where(alive, step[states * self.vocab_size + new], 0.0)
            else:
                total += step[states * self.vocab_size + new]
            states = new
        return total

    def simulation_batch(self, chunk_size: int) -> int:
        """How many sequences :func:`klviz.simulate` draws at once: ``chunk_size`` tokens' worth, at least one."""
        return max(1, min(chunk_size, _TOKENS_PER_BLOCK) // self.length)

    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.dtype == np.bool_ or not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"tokens must be integer states, got dtype {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[1] != self.length:
            raise ValueError(f"tokens must have shape (n, {self.length}), got shape {tokens.shape}")
        low = -1 if self.eos is not None else 0
        if tokens.size and (tokens.min() < low or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must be states in [0, {self.vocab_size})"
                             + (" or -1 (padding after eos)" if low else "") + ", got values outside")
        if self.eos is not None and tokens.size:
            padding = tokens < 0
            ended = np.zeros_like(padding)
            ended[:, 1:] = np.cumsum(tokens[:, :-1] == self.eos, axis=1) > 0
            if np.any(padding != ended):
                raise ValueError("tokens must be padded with -1 exactly after each sequence's first eos")
        return tokens

    def token_mask(self, tokens) -> np.ndarray:
        """Which positions hold a token (True) rather than padding after eos, shape (n, T)."""
        return self._check_tokens(tokens) >= 0

    def token_log_ratios(self, tokens) -> np.ndarray:
        r"""Per-token :math:`\ell_t = \log p(x_t \mid x_{t-1}) - \log q(x_t \mid x_{t-1})`, shape (n, T)."""
        tokens = self._check_tokens(tokens)
        out = np.empty(tokens.shape, dtype=np.float64)
        out[:, 0] = self.initial_log_ratio[tokens[:, 0]]
        safe = np.maximum(tokens, 0)
        out[:, 1:] = self.transition_log_ratio.ravel()[safe[:, :-1] * self.vocab_size + safe[:, 1:]]
        return np.where(tokens >= 0, out, 0.0)

    def log_ratio(self, x) -> np.ndarray:
        r"""Sequence-level :math:`L = \sum_t \ell_t` for sequences ``x`` of shape (n, T)."""
        return self.token_log_ratios(x).sum(axis=1)

    def step_kls(self, tokens) -> np.ndarray:
        r""":math:`\mathrm{KL}[q(\cdot\mid x_{t-1}), p(\cdot\mid x_{t-1})]` at each step of each sequence, (n, T).

        The full-vocabulary KL of the step-t conditionals given the sampled prefix: what a trainer can
        compute from both models' logits at every position, instead of using the sampled token."""
        tokens = self._check_tokens(tokens)
        initial, rows = self.conditional_kls
        out = np.empty(tokens.shape, dtype=np.float64)
        out[:, 0] = initial
        out[:, 1:] = rows[np.maximum(tokens[:, :-1], 0)]
        return np.where(tokens >= 0, out, 0.0)

    # --- exact quantities ----------------------------------------------------------------------------
    @cached_property
    def conditional_kls(self) -> tuple[float, np.ndarray]:
        """KL of the initial distributions and of every transition row (one vectorised pass): sums of
        non-negative q·k3 terms, full precision also when p ≈ q."""
        initial = float(kl_rows(self.p_initial_logits, self.q_initial_logits)[0])
        rows = kl_rows(self.p_transition_logits, self.q_transition_logits)
        rows.flags.writeable = False
        return initial, rows

    @cached_property
    def _q_transition(self) -> np.ndarray:
        return np.exp(self.log_q_transition)

    def state_marginals(self) -> np.ndarray:
        r"""q's state marginals :math:`m_t(s) = q(x_t = s)`, shape (T, V); with ``eos``, of sequences still
        going at t (:math:`q(x_t = s,\ x_u \ne \text{eos for } u < t)`)."""
        marginals = np.empty((self.length, self.vocab_size))
        marginals[0] = np.exp(self.log_q_initial)
        going = self.continues
        for t in range(1, self.length):
            marginals[t] = (marginals[t - 1] * going) @ self._q_transition
        return marginals

    def kl_per_step(self) -> np.ndarray:
        r""":math:`\mathbb{E}_q\big[\mathrm{KL}_t(x_{t-1})\big]` for t = 0..T-1, shape (T,); they sum to ``kl_qp()``."""
        initial, rows = self.conditional_kls
        per_step = np.empty(self.length)
        per_step[0] = initial
        if self.length > 1:
            per_step[1:] = (self.state_marginals()[:-1] * self.continues) @ rows
        return per_step

    def kl_qp(self) -> float:
        r"""The exact sequence :math:`\mathrm{KL}[q, p] = \sum_t \mathbb{E}_q[\mathrm{KL}_t]` (chain rule)."""
        return float(math.fsum(self.kl_per_step()))

    def additive_moments(self, initial: np.ndarray, step: np.ndarray) -> tuple[float, float]:
        r"""Mean and variance of :math:`S = g_0(x_0) + \sum_{t\ge1} G(x_{t-1}, x_t)` under q.

        Forward pass over :math:`A_t(s) = q(x_t = s)`, :math:`B_t(s) = \mathbb{E}[D_t 1\{x_t = s\}]` and
        :math:`C_t(s) = \mathbb{E}[D_t^2 1\{x_t = s\}]`, where :math:`D_t` is the partial sum with each
        step's mean subtracted — centring first keeps the variance free of the cancellation in E[S²] - E[S]².
        """
        self._fixed_length_only("additive_moments")
        q_initial = np.exp(self.log_q_initial)
        transition = self._q_transition
        initial = np.asarray(initial, dtype=np.float64)
        step = np.broadcast_to(np.asarray(step, dtype=np.float64), transition.shape)
        mean_0 = float(q_initial @ initial)
        dev = initial - mean_0
        a, b, c = q_initial, q_initial * dev, q_initial * dev * dev
        means = [mean_0]
        row_means = np.sum(transition * step, axis=1)
        for _ in range(1, self.length):
            mean_t = float(a @ row_means)
            weighted = transition * (step - mean_t)
            c = c @ transition + 2.0 * (b @ weighted) + a @ (weighted * (step - mean_t))
            b = b @ transition + a @ weighted
            a = a @ transition
            means.append(mean_t)
        return math.fsum(means), max(float(np.sum(c)), 0.0)

    def centred_log_ratio_moments(self, order: int = 4) -> list[float]:
        r""":math:`\mathbb{E}_q[D^k]` for k = 0..order, with :math:`D = L - \mathbb{E}L` the centred sequence
        log-ratio: a forward pass over :math:`W_k(s) = \mathbb{E}[D_t^k 1\{x_t = s\}]` and the binomial
        expansion of :math:`(D_t + d)^k`, d the step's centred log-ratio.

        Cost: per step, one product of the (order+1, V) moment block with each of the order+1 matrices
        :math:`T \circ \ell^l` (precomputed), i.e. :math:`O(T V^2 \cdot \text{order})` (timed at V = 1000,
        T = 200, order 4 in benchmarks/bench_sequences.py)."""
        self._fixed_length_only("centred_log_ratio_moments")
        order = _checks.integer(order, "order", 0)
        transition = self._q_transition
        step = self.transition_log_ratio
        initial = self.initial_log_ratio
        q_initial = np.exp(self.log_q_initial)
        dev = initial - float(q_initial @ initial)
        moments = np.stack([q_initial * dev**k for k in range(order + 1)])  # (order+1, V)
        powers = [transition * step**l for l in range(order + 1)]  # T ∘ ℓ^l
        row_means = np.sum(powers[1], axis=1)
        binom = [[math.comb(k, i) for i in range(k + 1)] for k in range(order + 1)]
        for _ in range(1, self.length):
            m = float(moments[0] @ row_means)  # the step's mean contribution, subtracted: d = ℓ - m
            products = [moments[: order + 1 - l] @ powers[l] for l in range(order + 1)]  # products[l][i] = W_i @ S_l
            # W_i @ (T ∘ d^j) = Σ_l C(j, l) (-m)^{j-l} W_i @ S_l
            new = np.empty_like(moments)
            for k in range(order + 1):
                acc = np.zeros(self.vocab_size)
                for i in range(k + 1):
                    j = k - i
                    inner = np.zeros(self.vocab_size)
                    for l in range(j + 1):
                        inner += math.comb(j, l) * (-m) ** (j - l) * products[l][i]
                    acc += binom[k][i] * inner
                new[k] = acc
            moments = new
        return [float(np.sum(w)) for w in moments]

    def chi_square(self) -> float:
        r""":math:`\chi^2(p\|q) = \mathrm{Var}_q(R) = \mathbb{E}_q[R^2] - 1` of the sequences, without cancellation.

        With :math:`w_t(s) = \mathbb{E}_q[R_{0:t}^2 1\{x_t = s\}]`, each step adds
        :math:`\sum_s w_{t-1}(s)\,\chi^2_s`, where :math:`\chi^2_s = \sum_{s'} q(s'|s)(r(s,s') - 1)^2` is the
        row's chi-square divergence, a sum of non-negative terms. ``inf`` beyond float64."""
        self._fixed_length_only("chi_square")
        step = self.transition_log_ratio
        row_chi2 = np.sum(self._q_transition * np.expm1(step) ** 2, axis=1)
        total = float(np.sum(np.exp(self.log_q_initial) * np.expm1(self.initial_log_ratio) ** 2))
        weights = np.exp(2.0 * self.log_p_initial - self.log_q_initial)
        tilted = np.exp(2.0 * self.log_p_transition - self.log_q_transition)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(1, self.length):
                total += float(weights @ row_chi2)
                weights = weights @ tilted
        return total if math.isfinite(total) else math.inf

    def _k3_second_moment(self) -> float:
        r""":math:`\mathbb{E}_q[k_3(L)^2]` by the (k3, expm1) recurrences of the module docstring."""
        self._fixed_length_only("_k3_second_moment")
        q0 = np.exp(self.log_q_initial)
        eps0, kap0 = np.expm1(self.initial_log_ratio), exp_minus_1_minus_x(np.array(self.initial_log_ratio))
        a, e1, k1, e2, ke, k2 = q0, q0 * eps0, q0 * kap0, q0 * eps0**2, q0 * kap0 * eps0, q0 * kap0**2
        T = self._q_transition
        ell = self.transition_log_ratio
        eps, kap = np.expm1(ell), exp_minus_1_minus_x(np.array(ell))
        P = np.exp(self.log_p_transition)  # T ∘ r
        with np.errstate(over="ignore", invalid="ignore"):
            PR = np.exp(2.0 * self.log_p_transition - self.log_q_transition)  # T ∘ r²
        Te, Tk = T * eps, T * kap
        Pe, Pk = P * eps, P * kap
        Tee, Tke, Tkk = T * eps * eps, T * kap * eps, T * kap * kap
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(1, self.length):
                a, e1, k1, e2, ke, k2 = (
                    a @ T,
                    e1 @ P + a @ Te,
                    k1 @ T + a @ Tk + e1 @ Te,
                    e2 @ PR + 2.0 * (e1 @ Pe) + a @ Tee,
                    ke @ P + k1 @ Te + e1 @ Pk + a @ Tke + e2 @ Pe + e1 @ Tee,
                    k2 @ T + a @ Tkk + e2 @ Tee + 2.0 * (k1 @ Tk) + 2.0 * (ke @ Te) + 2.0 * (e1 @ Tke),
                )
        total = float(np.sum(k2))
        return total if math.isfinite(total) else math.inf

    def _tilted_moment(self, t: int, j: int) -> float:
        r""":math:`\mathbb{E}_q[e^{tL} L^j] = \sum_x q(x)^{1-t} p(x)^t L(x)^j` by a forward pass carrying the
        powers 0..j of the partial sums under the tilted weights (plain sums: no accuracy guarantee
        where terms cancel)."""
        self._fixed_length_only("_tilted_moment")
        with np.errstate(over="ignore", invalid="ignore"):
            w0 = np.exp((1 - t) * self.log_q_initial + t * self.log_p_initial)
            W = np.exp((1 - t) * self.log_q_transition + t * self.log_p_transition)
            moments = [w0 * self.initial_log_ratio**k for k in range(j + 1)]
            step_powers = [W * self.transition_log_ratio**l for l in range(j + 1)]
            for _ in range(1, self.length):
                moments = [sum(math.comb(k, i) * (moments[i] @ step_powers[k - i]) for i in range(k + 1))
                           for k in range(j + 1)]
        value = float(np.sum(moments[j]))
        return value if math.isfinite(value) else math.inf

    # --- hooks: sequence-level estimators k(L) ------------------------------------------------------------
    def _form_mean(self, estimator: Estimator) -> float:
        if estimator.expansion is None:
            raise ValueError(
                f"exact moments of the sequence log-ratio under a MarkovChainPair need the estimator's exact "
                f"form (an ExpPolynomial expansion); {estimator.name!r} has none. Per-token sums of any "
                "estimator: klviz.sequence_moments"
            )
        return math.fsum(c * self._tilted_moment(t, j) for (t, j), c in estimator.expansion.coefficients.items())

    def _mean(self, estimator: Estimator) -> float:
        if estimator is CONTROL_VARIATE:
            return 0.0  # every transition has positive probability under both chains
        decomposition = accurate_decomposition(estimator)
        if decomposition is not None:
            base, _ = decomposition  # E[R - 1] = 0
            return self.kl_qp() if base.target == "kl_qp" else self.kl_pq()
        if estimator.expansion == ESTIMATORS["k2"].expansion:
            _, _, m2 = self.centred_log_ratio_moments(2)
            kl = self.kl_qp()
            return 0.5 * (kl * kl + m2)
        return self._form_mean(estimator)

    def _covariance(self, a: Estimator, b: Estimator) -> float:
        forms = {name: ESTIMATORS[name].expansion for name in ("k1", "k2", "k3")}
        forms["r - 1"] = CONTROL_VARIATE.expansion
        kind = {id(e): next((n for n, f in forms.items() if e.expansion is not None and e.expansion == f), None)
                for e in (a, b)}
        ka, kb = kind[id(a)], kind[id(b)]
        kl = self.kl_qp()
        if a is b or (ka is not None and ka == kb):
            if ka == "k1":
                return self.centred_log_ratio_moments(2)[2]
            if ka == "k2":
                _, _, m2, m3, m4 = self.centred_log_ratio_moments(4)
                # L = -KL + D: Var(L²) = 4 KL² E[D²] - 4 KL E[D³] + E[D⁴] - E[D²]².
                return max(0.25 * (4.0 * kl * kl * m2 - 4.0 * kl * m3 + m4 - m2 * m2), 0.0)
            if ka == "k3":
                second = self._k3_second_moment()
                return math.inf if math.isinf(second) else max(second - kl * kl, 0.0)
            if ka == "r - 1":
                return self.chi_square()
        if {ka, kb} == {"k1", "r - 1"}:  # Cov(-L, R) = -E[R L] + E[L] E[R] = -(KL[p,q] + KL[q,p])
            return -(self.kl_pq() + kl)
        if a.expansion is None or b.expansion is None:
            self._form_mean(a if a.expansion is None else b)  # raises the explanatory ValueError
        product = a.expansion * b.expansion
        second = math.fsum(c * self._tilted_moment(t, j) for (t, j), c in product.coefficients.items())
        return second - self._mean(a) * self._mean(b)

    def _log10_variance(self, estimator: Estimator) -> float:
        var = self._covariance(estimator, estimator)
        if math.isfinite(var):
            return math.log10(var) if var > 0 else -math.inf
        return math.inf  # beyond float64 (the passes are in floats): reported as infinite

    def _f_divergence(self, numerics) -> float:  # pragma: no cover - no f-divergences of sequences yet
        raise TypeError("f-divergences of Markov-chain sequence pairs are not implemented")
