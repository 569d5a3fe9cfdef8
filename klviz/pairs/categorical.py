r"""Two softmax distributions over one vocabulary: exact moments are sums over the tokens.

Precision where p ≈ q is the point here (the RLHF regime). Three devices keep every sum free of
cancellation:

* log-ratios from logit differences (:func:`log_ratio_rows`), not from two log-softmaxes;
* means of estimators that differ from a non-negative one (k3, k3_pq) by a multiple of r - 1 are taken
  through it (:func:`klviz.estimators.accurate_decomposition`); variances two-pass;
* products :math:`q\cdot g(\log r)` where q underflows and g overflows formed in log space from the
  estimator's exact form (a token with q = 1e-350 and p = 1/3 contributes q r = p, not 0 · inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from klviz import _checks
from klviz._kernels import exp_minus_1_minus_x, log_softmax, weighted_k3
from klviz._sampling import sample_categorical
from klviz.estimators import CONTROL_VARIATE, Estimator, accurate_decomposition
from klviz.pairs.base import Pair, reference_estimator, sample_size

__all__ = ["CategoricalPair", "log_ratio_rows", "kl_rows"]


def log_ratio_rows(p_logits: np.ndarray, q_logits: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    r"""log r = log p - log q per token along the last axis, to full precision also when p ≈ q.

    The difference of two log-softmaxes rounds at the log-probabilities' magnitude (~1e-16 × |log q|), a
    relative error 1e-16/δ on a KL of order δ². Instead, with logit differences
    :math:`\delta_i = \ell^p_i - \ell^q_i` (exact when the logits are close) centred at their q-mean c,

    .. math:: \log r_i = (\delta_i - c) - \log\Big(\sum_j q_j e^{\delta_j - c} + \sum_{q_j = 0} e^{\ell^p_j - c - \mathrm{lse}(\ell^q)}\Big),

    the sum taken as ``log1p`` of non-negative k3 terms plus a near-zero remainder (rows whose centred
    differences all lie within ±1/2; other rows use the plain difference, exact enough there). A rounding
    error in the log1p is a constant shift of every log r, which moves E_q[k3] only at second order.
    Tokens with q = 0 get NaN (q never produces them). Vectorised over leading axes (rows).
    """
    p_logits, q_logits = np.atleast_2d(p_logits), np.atleast_2d(q_logits)
    log_p, log_q = np.atleast_2d(log_p), np.atleast_2d(log_q)
    keep = log_q > -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        table = np.where(keep, log_p - log_q, np.nan)
        delta = np.where(keep, p_logits - q_logits, 0.0)  # -inf where p = 0
    q = np.exp(log_q)
    finite_rows = np.all(np.isfinite(delta), axis=-1)
    with np.errstate(invalid="ignore"):
        centre = np.sum(np.where(keep, q * np.where(np.isfinite(delta), delta, 0.0), 0.0), axis=-1)
        centred = delta - centre[:, None]
        close = finite_rows & (np.max(np.where(keep, np.abs(centred), 0.0), axis=-1) < 0.5)
    if np.any(close):
        rows = np.flatnonzero(close)
        c_rows, k_rows, q_rows = centred[rows], keep[rows], q[rows]
        outside = ~k_rows & (log_p[rows] > -np.inf)
        lse_q = logsumexp(np.where(k_rows, q_logits[rows], -np.inf), axis=-1)
        with np.errstate(over="ignore", invalid="ignore"):
            rest = np.sum(np.where(outside, np.exp(p_logits[rows] - centre[rows, None] - lse_q[:, None]), 0.0),
                          axis=-1)
        k3_terms = np.where(k_rows, q_rows * exp_minus_1_minus_x(np.where(k_rows, c_rows, 0.0)), 0.0)
        linear = np.where(k_rows, q_rows * c_rows, 0.0)
        total = np.sum(k3_terms, axis=-1) + np.sum(linear, axis=-1) + rest
        table[rows] = np.where(k_rows, c_rows - np.log1p(total)[:, None], np.nan)
    return table


def kl_rows(p_logits, q_logits) -> np.ndarray:
    r"""KL[q_s, p_s] for every row s of two (..., V) logit arrays, each summed as :math:`\sum q\,k_3(\log r)`
    plus p's mass where q = 0 (``inf`` where p = 0 < q): non-negative terms, full relative precision."""
    p_logits = np.atleast_2d(np.asarray(p_logits, dtype=np.float64))
    q_logits = np.atleast_2d(np.asarray(q_logits, dtype=np.float64))
    log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
    table = log_ratio_rows(p_logits, q_logits, log_p, log_q)
    keep = log_q > -np.inf
    with np.errstate(invalid="ignore"):
        terms = weighted_k3(np.where(keep, log_q, -np.inf), np.where(keep, table, 0.0), np.where(keep, log_p, -np.inf))
    terms = np.where(keep, terms, 0.0)
    divergent = np.any(keep & (table == -np.inf), axis=-1)
    outside = np.sum(np.where(keep, 0.0, np.exp(log_p)), axis=-1)
    return np.where(divergent, np.inf, np.sum(terms, axis=-1) + outside)


def _logits(values, name: str) -> np.ndarray:
    return _checks.logits(values, name, zero_probability=True)


@dataclass(frozen=True, eq=False)
class CategoricalPair(Pair):
    r"""Two softmax distributions over the same vocabulary: q = softmax(q_logits), p = softmax(p_logits).

    The token-level picture of an RLHF policy q and a reference p. Log-probabilities come from a
    stable log-softmax (shifted by the largest logit), so vocabularies of 50k tokens and logits up to
    1e300 are fine; a logit of ``-inf`` is a token with probability 0. Exact values are sums.

    Parameters
    ----------
    p_logits : array_like, shape (V,)
        Logits of the target p.
    q_logits : array_like, shape (V,)
        Logits of the sampling distribution q.

    Raises
    ------
    TypeError
        If the logits are not real numbers.
    ValueError
        If the logits are not 1-D, have different lengths, contain NaN or +inf, or are all -inf.

    Notes
    -----
    The logits are copied (a caller changing its array afterwards does not change the pair).

    Examples
    --------
    >>> pair = CategoricalPair(p_logits=[0.0, 0.0], q_logits=[0.0, 0.0])
    >>> pair.kl_qp()
    0.0
    """

    p_logits: np.ndarray
    q_logits: np.ndarray
    log_p: np.ndarray = field(init=False, repr=False)
    log_q: np.ndarray = field(init=False, repr=False)
    log_ratio_table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        p_logits, q_logits = _logits(self.p_logits, "p_logits"), _logits(self.q_logits, "q_logits")
        if p_logits.shape != q_logits.shape:
            raise ValueError(
                f"p_logits and q_logits must have the same length, got {p_logits.size} and {q_logits.size}"
            )
        log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
        table = log_ratio_rows(p_logits, q_logits, log_p, log_q)[0]
        for name, array in (("p_logits", p_logits), ("q_logits", q_logits), ("log_p", log_p),
                            ("log_q", log_q), ("log_ratio_table", table)):
            array = np.array(array, dtype=np.float64)  # a copy: the caller may mutate theirs
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    def __repr__(self) -> str:
        return f"CategoricalPair(vocabulary={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return self.log_q.size

    @property
    def _support(self) -> np.ndarray:
        return self.log_q > -np.inf

    @property
    def support_log_ratio(self) -> np.ndarray:
        """log r for every token q can produce (tokens with q = 0 dropped), matching ``support_q``."""
        return self.log_ratio_table[self._support]

    @property
    def support_q(self) -> np.ndarray:
        return np.exp(self.log_q[self._support])

    def sample(self, n: int, *, rng=None) -> np.ndarray:
        """n token indices drawn from q (inverse CDF: one uniform and one binary search each)."""
        n = sample_size(n)
        return sample_categorical(np.exp(self.log_q), n, _checks.rng(rng))

    def log_ratio(self, x) -> np.ndarray:
        """log p - log q at token indices ``x``."""
        tokens = np.asarray(x)
        if tokens.dtype == np.bool_ or not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"x must be integer token indices, got dtype {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"x must be token indices in [0, {self.vocab_size}), got values outside")
        if np.any(self.log_q[tokens] == -np.inf):
            raise ValueError("x contains tokens with q-probability 0, which q never samples")
        return self.log_ratio_table[tokens]

    def kl_qp(self) -> float:
        r""":math:`\sum_x q(x) (\log q(x) - \log p(x))`; ``inf`` if p(x) = 0 where q(x) > 0.

        Summed as :math:`\sum_x q\,k_3(\log r) + P_p(q = 0)` (since :math:`\sum_x q (r - 1) = -P_p(q = 0)`):
        every term is non-negative, so nothing cancels when p ≈ q."""
        return float(kl_rows(self.p_logits, self.q_logits)[0])

    def kl_pq(self) -> float:
        r""":math:`\sum_x p(x) (\log p(x) - \log q(x))`, summed the same way from p's side."""
        return float(kl_rows(self.q_logits, self.p_logits)[0])

    def swapped(self) -> "CategoricalPair":
        return CategoricalPair(p_logits=self.q_logits, q_logits=self.p_logits)

    # --- exact moments: sums over the vocabulary -------------------------------------------------------
    def _mean_r_minus_1(self) -> float:
        return -float(np.sum(np.exp(self.log_p[~self._support])))

    def _termwise(self, form, bad: np.ndarray) -> np.ndarray:
        r""":math:`\sum c\, q\, r^t L^j` at the tokens ``bad`` of q's support, each :math:`q r^t` formed as
        :math:`e^{(1-t)\log q + t \log p}` (exact: no rounding of log q + t log r at huge logits)."""
        log_q = self.log_q[self._support][bad]
        log_p = self.log_p[self._support][bad]
        log_ratio = self.support_log_ratio[bad]
        total = np.zeros(log_q.shape)
        with np.errstate(all="ignore"):
            for (t, j), c in form.coefficients.items():
                weight = np.exp((1 - t) * log_q + t * log_p) if t else np.exp(log_q)
                power = log_ratio**j if j else 1.0
                total = total + c * np.where(weight == 0, 0.0, weight * power)
        return total

    def _weighted_terms(self, estimator: Estimator, centre: float = 0.0, other: Estimator | None = None,
                        other_centre: float = 0.0) -> np.ndarray:
        """q·(a - centre)(b - other_centre) per token of q's support (b = 1 when ``other`` is None), with
        the exact forms evaluated term by term where the float product is 0·inf or underflows."""
        log_ratio = self.support_log_ratio
        q = np.exp(self.log_q[self._support])
        with np.errstate(all="ignore"):
            da = np.asarray(estimator.value(log_ratio), dtype=np.float64) - centre
            db = 1.0 if other is None else (
                da if other is estimator and other_centre == centre
                else np.asarray(other.value(log_ratio), dtype=np.float64) - other_centre)
            values = da * db
            terms = q * values
        bad = np.isfinite(log_ratio) & (~np.isfinite(terms) | ((q < 1e-290) & (values != 0)))
        forms = [estimator.expansion] if other is None else [estimator.expansion, other.expansion]
        if np.any(bad) and all(form is not None for form in forms):
            from klviz.estimators import ExpPolynomial

            form = estimator.expansion - ExpPolynomial({(0, 0): centre})
            if other is not None:
                form = form * (other.expansion - ExpPolynomial({(0, 0): other_centre}))
            terms[bad] = self._termwise(form, bad)
        return terms

    def _direct_mean(self, estimator: Estimator) -> float:
        terms = self._weighted_terms(estimator)
        with np.errstate(invalid="ignore"):
            total = float(np.sum(terms))
        return math.fsum(terms.tolist()) if math.isfinite(total) else total

    def _mean(self, estimator: Estimator) -> float:
        if estimator is CONTROL_VARIATE:
            return self._mean_r_minus_1()
        decomposition = accurate_decomposition(estimator)
        if decomposition is not None:
            base, lam = decomposition
            # E_q[k3] = KL[q, p] + E_q[r - 1], the sum of non-negative q k3 terms (kl_rows).
            base_mean = self.kl_qp() + self._mean_r_minus_1() if base.target == "kl_qp" else self._direct_mean(base)
            return base_mean + (lam * self._mean_r_minus_1() if lam else 0.0)
        return self._direct_mean(estimator)

    def _bias(self, estimator: Estimator) -> float:
        target = self._target(estimator)
        mean = self._mean(estimator)
        if not (math.isfinite(mean) and math.isfinite(target)):
            return super()._bias(estimator)
        reference = reference_estimator(estimator.target)
        decomposition = accurate_decomposition(estimator)
        sign = 1.0 if estimator.target == "kl_qp" else -1.0  # target = E[reference] - sign E[r - 1]
        if decomposition is not None and decomposition[0] is reference:
            return (decomposition[1] + sign) * self._mean_r_minus_1()
        difference = self._weighted_terms(estimator) - self._weighted_terms(reference)
        if not np.all(np.isfinite(difference)):
            return mean - target
        return math.fsum(difference.tolist()) + sign * self._mean_r_minus_1()

    def _covariance(self, a: Estimator, b: Estimator) -> float:
        mean_a, mean_b = self._mean(a), self._mean(b)
        if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
            return math.inf
        with np.errstate(invalid="ignore"):
            return float(np.sum(self._weighted_terms(a, mean_a, b, mean_b)))

    def _log10_variance(self, estimator: Estimator) -> float:
        mean = self._mean(estimator)
        if not math.isfinite(mean):
            return math.inf
        log_ratio = self.support_log_ratio
        log_q = self.log_q[self._support]
        with np.errstate(all="ignore"):
            log_abs = np.log(np.abs(np.asarray(estimator.value(log_ratio), dtype=np.float64) - mean))
        if estimator.expansion is not None:  # where g overflows, log|g| from its exact form
            bad = ~np.isfinite(log_abs) & np.isfinite(log_ratio)
            log_abs[bad] = estimator.expansion.log_abs(log_ratio[bad])
        log_terms = log_q + 2.0 * log_abs
        return float(logsumexp(log_terms)) / math.log(10.0)

    def _f_divergence(self, numerics) -> float:
        r"""Exact sum :math:`\sum q\,g(r)` with the pair's own log r (from logit differences, full relative
        precision as p -> q), each term formed in log space where q underflows and g overflows (q_logits =
        [0, 800]: 0 · inf otherwise), plus Csiszár's terms for mass where one distribution vanishes."""
        log_ratio, log_q = self.support_log_ratio, self.log_q[self._support]
        both = log_ratio > -np.inf
        terms = list(numerics.times_weight(log_ratio[both], log_q[both]))
        q_only = float(np.sum(np.exp(log_q[~both])))
        p_only = -self._mean_r_minus_1()
        if q_only > 0.0:
            terms.append(q_only * numerics.at_zero)
        if p_only > 0.0:
            terms.append(p_only * numerics.per_mass_at_infinity)
        if any(math.isinf(t) for t in terms):
            return math.inf
        return math.fsum(terms)
