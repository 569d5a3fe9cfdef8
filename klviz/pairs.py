r"""Distribution pairs: q (what we sample from) and p (the target), and the log-ratio between them.

Every pair answers three questions, in log space throughout:

* ``sample(n, rng)`` — n draws x ~ q;
* ``log_ratio(x)`` — :math:`\log r(x) = \log p(x) - \log q(x)`;
* ``kl()`` — the exact :math:`\mathrm{KL}[q, p] = \mathbb{E}_{x\sim q}[\log q(x)/p(x)]` (and ``kl_reverse()``
  for :math:`\mathrm{KL}[p, q]`).

``sample_log_ratio(n, rng)`` draws log-ratios directly; pairs override it where a closed form is
cheaper than sampling x and evaluating two densities (the Gaussian pair needs one normal per sample).
Bad parameters are rejected here, at the boundary, with the argument named in the message.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from klviz import _checks
from klviz._sampling import sample_categorical
from klviz.estimators import k3 as _k3

__all__ = ["Pair", "GaussianPair", "ScipyPair", "CategoricalPair", "log_softmax"]


def _log_sigma_ratio(sigma_q: float, sigma_p: float) -> float:
    """log(sigma_q / sigma_p), to full relative precision also when the two are close.

    log(sigma_q) - log(sigma_p) cancels when sigma_q ≈ sigma_p (relative error ~1e-16/|log ratio|); for
    ratios in [1/2, 2] the difference sigma_q - sigma_p is exact (Sterbenz) and log1p keeps every digit.
    """
    relative_difference = (sigma_q - sigma_p) / sigma_p
    if abs(relative_difference) <= 0.5:
        return math.log1p(relative_difference)
    return math.log(sigma_q) - math.log(sigma_p)


def _sample_size(n) -> int:
    return _checks.integer(n, "n", 0)


class Pair:
    """Base class: a sampling distribution q and a target p. Subclasses define the three methods."""

    def sample(self, n: int, rng=None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_ratio(self, x) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def kl(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def swapped(self) -> "Pair":  # pragma: no cover - abstract
        """The same two distributions with the roles of p and q exchanged."""
        raise NotImplementedError

    def kl_reverse(self) -> float:
        r"""The exact reverse divergence :math:`\mathrm{KL}[p, q]`."""
        return self.swapped().kl()

    def sample_log_ratio(self, n: int, rng=None) -> np.ndarray:
        """``log_ratio(sample(n, rng))``: n log-ratios at draws x ~ q."""
        return self.log_ratio(self.sample(n, rng))


@dataclass(frozen=True)
class GaussianPair(Pair):
    r"""q = N(mu_q, sigma_q²) and p = N(mu_p, sigma_p²), with everything in closed form.

    With :math:`x = \mu_q + \sigma_q z`, :math:`z \sim N(0, 1)`, the log-ratio is a quadratic in z,

    .. math:: \log r = a + b z + c z^2,\quad s = \sigma_q/\sigma_p,\ d = (\mu_q - \mu_p)/\sigma_p,\
              a = \log s - d^2/2,\ b = -d s,\ c = (1 - s^2)/2,

    which is how :mod:`klviz.exact` gets exact moments and :func:`klviz.simulate` draws log-ratios
    with one normal per sample.

    Parameters
    ----------
    mu_p : float
        Mean of the target p.
    sigma_p : float, default 1.0
        Standard deviation of p; positive.
    mu_q : float, default 0.0
        Mean of the sampling distribution q.
    sigma_q : float, default 1.0
        Standard deviation of q; positive.

    Raises
    ------
    TypeError
        If a parameter is not a real number.
    ValueError
        If a parameter is not finite or a standard deviation is not positive.

    Examples
    --------
    >>> pair = GaussianPair(mu_p=1.0)
    >>> pair.kl()
    0.5
    """

    mu_p: float
    sigma_p: float = 1.0
    mu_q: float = 0.0
    sigma_q: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "mu_p", _checks.real(self.mu_p, "mu_p"))
        object.__setattr__(self, "mu_q", _checks.real(self.mu_q, "mu_q"))
        object.__setattr__(self, "sigma_p", _checks.positive(self.sigma_p, "sigma_p"))
        object.__setattr__(self, "sigma_q", _checks.positive(self.sigma_q, "sigma_q"))

    @property
    def quadratic(self) -> tuple[float, float, float]:
        """(a, b, c) with log r = a + b z + c z² at x = mu_q + sigma_q z."""
        s = self.sigma_q / self.sigma_p
        d = (self.mu_q - self.mu_p) / self.sigma_p
        log_s = _log_sigma_ratio(self.sigma_q, self.sigma_p)
        # (1 - s²)/2 = -expm1(2 log s)/2 keeps c exact when the variances are close.
        return log_s - 0.5 * d * d, -d * s, -0.5 * math.expm1(2.0 * log_s)

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws from q = N(mu_q, sigma_q²)."""
        n = _sample_size(n)
        rng = np.random.default_rng(rng)
        return self.mu_q + self.sigma_q * rng.standard_normal(n)

    def log_ratio_from_standard(self, z) -> np.ndarray:
        """log r at x = mu_q + sigma_q z, for standard-normal z (the quadratic form)."""
        a, b, c = self.quadratic
        z = np.asarray(z, dtype=np.float64)
        if c == 0.0:
            return a + b * z
        return a + z * (b + c * z)

    def sample_log_ratio(self, n: int, rng=None) -> np.ndarray:
        n = _sample_size(n)
        rng = np.random.default_rng(rng)
        return self.log_ratio_from_standard(rng.standard_normal(n))

    def log_ratio(self, x) -> np.ndarray:
        r""":math:`\log p(x) - \log q(x)` for Gaussian densities."""
        x = np.asarray(x, dtype=np.float64)
        return self.log_ratio_from_standard((x - self.mu_q) / self.sigma_q)

    def kl(self) -> float:
        r""":math:`\mathrm{KL}[q,p] = \tfrac12\big(d^2 + s^2 - 1 - \log s^2\big)`, with the bracket computed
        as ``k3(log s²)`` so that it stays exact when the variances are close."""
        d = (self.mu_q - self.mu_p) / self.sigma_p
        log_s2 = 2.0 * _log_sigma_ratio(self.sigma_q, self.sigma_p)
        return 0.5 * (d * d + float(_k3(log_s2)))

    def swapped(self) -> "GaussianPair":
        return GaussianPair(mu_p=self.mu_q, sigma_p=self.sigma_q, mu_q=self.mu_p, sigma_q=self.sigma_p)


def _frozen_continuous(dist, name: str):
    from scipy.stats._distn_infrastructure import rv_continuous_frozen

    if not isinstance(dist, rv_continuous_frozen):
        raise TypeError(
            f"{name} must be a frozen continuous scipy.stats distribution such as "
            f"scipy.stats.norm(0, 1), got {type(dist).__name__}"
        )
    return dist


@dataclass(frozen=True, eq=False)
class ScipyPair(Pair):
    r"""Any two frozen continuous ``scipy.stats`` distributions: q to sample from, p the target.

    Densities are only ever used through ``logpdf``. The exact KL is a one-dimensional integral,
    taken by adaptive quadrature in :mod:`klviz.exact` (on q's quantile scale, so the integration
    range always matches where q has its mass); infinite divergences are detected, not guessed.

    Parameters
    ----------
    p : scipy.stats frozen continuous distribution
        The target, e.g. ``scipy.stats.t(df=5)``.
    q : scipy.stats frozen continuous distribution
        The sampling distribution, e.g. ``scipy.stats.norm()``.

    Raises
    ------
    TypeError
        If ``p`` or ``q`` is not a frozen continuous scipy.stats distribution.

    Examples
    --------
    >>> from scipy import stats
    >>> pair = ScipyPair(p=stats.norm(1, 1), q=stats.norm(0, 1))
    >>> round(pair.kl(), 12)
    0.5
    """

    p: object
    q: object

    def __post_init__(self):
        _frozen_continuous(self.p, "p")
        _frozen_continuous(self.q, "q")

    def __repr__(self) -> str:
        return f"ScipyPair(p={_describe(self.p)}, q={_describe(self.q)})"

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws from q."""
        n = _sample_size(n)
        rng = np.random.default_rng(rng)
        return np.asarray(self.q.rvs(size=n, random_state=rng), dtype=np.float64)

    def log_ratio(self, x) -> np.ndarray:
        r""":math:`\log p(x) - \log q(x)`; x must lie in the support of q."""
        x = np.asarray(x, dtype=np.float64)
        log_q = self.q.logpdf(x)
        if np.any(log_q == -np.inf):
            raise ValueError("x must lie in the support of q (where log q(x) > -inf)")
        return self.p.logpdf(x) - log_q

    def kl(self) -> float:
        r"""The exact KL[q, p] by quadrature; ``inf`` when it diverges."""
        from klviz.exact import quadrature_kl

        return quadrature_kl(self)

    def swapped(self) -> "ScipyPair":
        return ScipyPair(p=self.q, q=self.p)


def _describe(dist) -> str:
    args = ", ".join(f"{a:g}" if isinstance(a, numbers.Real) else repr(a) for a in dist.args)
    kwds = ", ".join(f"{k}={v:g}" if isinstance(v, numbers.Real) else f"{k}={v!r}" for k, v in dist.kwds.items())
    return f"{dist.dist.name}({', '.join(s for s in (args, kwds) if s)})"


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Stable :math:`\log\mathrm{softmax}(\ell)_i = \ell_i - \log\sum_j e^{\ell_j}` along ``axis`` (float64, trusted input).

    Shifts by the largest logit first: ``logits - logsumexp(logits)`` would round at the logits'
    magnitude (1e-13 absolute at 1e3); the shifted logits are exact and their logsumexp is O(log V).
    A logit of -inf gives -inf (probability 0); every slice needs one finite logit.

    Examples
    --------
    >>> log_softmax(np.array([1000.0, 1000.0])).tolist() == [-np.log(2), -np.log(2)]
    True
    """
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - logsumexp(shifted, axis=axis, keepdims=True)


def weighted_k3(log_weight: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    r""":math:`w\,k_3(\log r)` with :math:`w = e^{\log w}`, also where w underflows and r overflows.

    There :math:`w k_3 = w r - w - w \log r` is taken as :math:`e^{\log w + \log r} - e^{\log w}(1 + \log r)`,
    instead of 0 · inf = NaN (a token with q = 1e-350 and p = 1/3 has q r = p)."""
    log_weight, log_ratio = np.broadcast_arrays(np.asarray(log_weight, dtype=np.float64),
                                                np.asarray(log_ratio, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        terms = np.exp(log_weight) * _k3(log_ratio)
        bad = ~np.isfinite(terms)
        if np.any(bad):
            lw, lr = log_weight[bad], log_ratio[bad]
            terms[bad] = np.exp(lw + lr) - np.exp(lw) * (1.0 + lr)
    return terms


def _log_softmax(logits, name: str) -> np.ndarray:
    log_probs = log_softmax(_checks.logits(logits, name, zero_probability=True))
    log_probs.flags.writeable = False
    return log_probs


def _categorical_log_ratio(p_logits, q_logits, log_p, log_q) -> np.ndarray:
    r"""log r = log p - log q per token, to full precision also when p ≈ q.

    The difference of two log-softmaxes rounds at the log-probabilities' magnitude (~1e-16 × |log q|), which
    is a relative error 1e-16/δ on a KL of order δ². Instead, with logit differences
    :math:`\delta_i = \ell^p_i - \ell^q_i` (exact when the logits are close) centred at their q-mean c,

    .. math:: \log r_i = (\delta_i - c) - \log\Big(\sum_j q_j e^{\delta_j - c} + \sum_{q_j = 0} e^{\ell^p_j - c - \mathrm{lse}(\ell^q)}\Big),

    the sum taken as ``log1p`` of non-negative k3 terms plus a near-zero remainder. A rounding error in
    the log1p is a constant shift of every log r, which moves E_q[k3] only at second order (E_q[r - 1] = 0).
    Tokens with q = 0 get NaN (q never produces them).
    """
    table = np.full(log_q.shape, np.nan)
    keep = log_q > -np.inf
    plain = log_p[keep] - log_q[keep]
    with np.errstate(invalid="ignore"):
        delta = p_logits[keep] - q_logits[keep]  # -inf where p = 0
    q_support = np.exp(log_q[keep])
    if np.all(np.isfinite(delta)):
        centre = float(np.sum(q_support * delta))
        centred = delta - centre
        if np.max(np.abs(centred)) < 0.5:
            outside = ~keep & (log_p > -np.inf)
            lse_q = float(logsumexp(q_logits[keep]))
            rest = float(np.sum(np.exp(p_logits[outside] - centre - lse_q)))
            total = float(np.sum(q_support * _k3(centred))) + float(np.sum(q_support * centred)) + rest
            table[keep] = centred - math.log1p(total)
            return table
    table[keep] = plain
    return table


@dataclass(frozen=True, eq=False)
class CategoricalPair(Pair):
    r"""Two softmax distributions over the same vocabulary: q = softmax(q_logits), p = softmax(p_logits).

    The token-level picture of an RLHF policy q and a reference p. Log-probabilities come from a
    stable log-softmax (:func:`log_softmax`: shifted by the largest logit), so vocabularies of 50k tokens and logits in
    the hundreds are fine; a logit of ``-inf`` is a token with probability 0. The exact KL is a sum.

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
    >>> pair.kl()
    0.0
    """

    p_logits: np.ndarray
    q_logits: np.ndarray
    log_p: np.ndarray = field(init=False, repr=False)
    log_q: np.ndarray = field(init=False, repr=False)
    log_ratio_table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        log_p = _log_softmax(self.p_logits, "p_logits")
        log_q = _log_softmax(self.q_logits, "q_logits")
        if log_p.shape != log_q.shape:
            raise ValueError(
                f"p_logits and q_logits must have the same length, got {log_p.size} and {log_q.size}"
            )
        for name in ("p_logits", "q_logits"):
            copy = np.array(getattr(self, name), dtype=np.float64)  # a copy: the caller may mutate theirs
            copy.flags.writeable = False
            object.__setattr__(self, name, copy)
        object.__setattr__(self, "log_p", log_p)
        object.__setattr__(self, "log_q", log_q)
        table = _categorical_log_ratio(self.p_logits, self.q_logits, log_p, log_q)
        table.flags.writeable = False
        object.__setattr__(self, "log_ratio_table", table)

    def __repr__(self) -> str:
        return f"CategoricalPair(vocabulary={self.vocab_size}, KL[q,p]={self.kl():.6g})"

    @property
    def vocab_size(self) -> int:
        return self.log_q.size

    @property
    def support_log_ratio(self) -> np.ndarray:
        """log r for every token q can produce (tokens with q = 0 dropped), matching ``support_q``."""
        return self.log_ratio_table[self.log_q > -np.inf]

    @property
    def support_q(self) -> np.ndarray:
        return np.exp(self.log_q[self.log_q > -np.inf])

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n token indices drawn from q (inverse CDF: one uniform and one binary search each)."""
        n = _sample_size(n)
        return sample_categorical(np.exp(self.log_q), n, np.random.default_rng(rng))

    def log_ratio(self, x) -> np.ndarray:
        """log p - log q at token indices ``x``."""
        tokens = np.asarray(x)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"x must be integer token indices, got dtype {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"x must be token indices in [0, {self.vocab_size}), got values outside")
        if np.any(self.log_q[tokens] == -np.inf):
            raise ValueError("x contains tokens with q-probability 0, which q never samples")
        return self.log_ratio_table[tokens]

    def kl(self) -> float:
        r""":math:`\sum_x q(x) (\log q(x) - \log p(x))`; ``inf`` if p(x) = 0 where q(x) > 0.

        Summed as :math:`\sum_x q\,k_3(\log r) + P_p(q = 0)` (since :math:`\sum_x q (r - 1) = -P_p(q = 0)`):
        every term is non-negative, so nothing cancels when p ≈ q."""
        log_ratio = self.support_log_ratio
        if np.any(log_ratio == -np.inf):
            return math.inf
        mass_outside = float(np.sum(np.exp(self.log_p[self.log_q == -np.inf])))
        return float(np.sum(weighted_k3(self.log_q[self.log_q > -np.inf], log_ratio))) + mass_outside

    def swapped(self) -> "CategoricalPair":
        return CategoricalPair(p_logits=self.q_logits, q_logits=self.p_logits)
