r"""Exact moments of the estimators under x ~ q: closed forms, quadrature, sums and dynamic programmes — never Monte Carlo.

Each function validates its arguments and asks the pair (its private hooks, :mod:`klviz.pairs.base`),
which computes with its own method: closed forms in 60 digits for :class:`~klviz.GaussianPair`,
quadrature with divergence detection for :class:`~klviz.ScipyPair`, exact sums for
:class:`~klviz.CategoricalPair`, dynamic programmes for the sequence log-ratio of
:class:`~klviz.MarkovChainPair`. Divergent moments are ``inf``; a finite variance beyond float64 is shown
as ``inf`` too, but :attr:`ExactMoments.log10_var` keeps its magnitude and :attr:`ExactMoments.var_overflows`
tells the two apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from klviz import _checks
from klviz._results import Result, Shown
from klviz.estimators import CONTROL_VARIATE, ESTIMATORS, control_variate, get_estimator

__all__ = [
    "ExactMoments",
    "OptimalLambda",
    "exact_moments",
    "control_variate_variance",
    "control_variate_moments",
    "optimal_lambda",
    "expected_r_squared",
]


def _float(value) -> float:
    """A float from a float, numpy scalar or mpmath number (beyond the float range: ±inf)."""
    try:
        return float(value)
    except OverflowError:  # pragma: no cover - mpmath returns inf itself
        return math.copysign(math.inf, value)


@dataclass(frozen=True, repr=False)
class ExactMoments(Result):
    r"""Exact mean and variance of an estimator under x ~ q, and the divergence it targets.

    Attributes
    ----------
    estimator : str
        The estimator's name.
    mean, var : float
        :math:`\mathbb{E}_q[k]` and :math:`\mathrm{Var}_q[k]`; ``inf`` where they diverge (or, for ``var``,
        exceed float64: see ``log10_var``).
    target : float
        The divergence the estimator targets: KL[q, p] or KL[p, q].
    bias : float
        :math:`\mathbb{E}_q[k] - \text{target}`, computed by the pair without the cancellation of the
        subtraction (0 exactly for unbiased estimators).
    log10_var : float
        :math:`\log_{10}\mathrm{Var}_q[k]`: ``inf`` when the variance diverges, finite (above 308) when it is
        finite but beyond float64 (Var k3 at gap 30: 390.87).
    """

    estimator: str
    mean: float
    var: float
    target: float
    bias: float
    log10_var: float

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def relative_bias(self) -> float:
        """bias / target (the article's "bias/true"); NaN when the target is 0."""
        return self.bias / self.target if self.target else math.nan

    @property
    def relative_std(self) -> float:
        """std / target (the article's "stdev/true"); NaN when the target is 0."""
        return self.std / self.target if self.target else math.nan

    @property
    def var_diverges(self) -> bool:
        """Whether the variance is infinite (not merely beyond float64)."""
        return self.log10_var == math.inf

    @property
    def var_overflows(self) -> bool:
        """Whether the variance is finite but beyond float64 (``var`` shows ``inf``)."""
        return math.isinf(self.var) and math.isfinite(self.log10_var)

    def _display_fields(self):
        fields = [("estimator", self.estimator), ("mean", self.mean)]
        if self.var_overflows:
            fields.append(("var", Shown(f"10^{self.log10_var:.4f} (finite, beyond float64)")))
        else:
            fields.append(("std", self.std))
        fields += [("bias/true", self.relative_bias), ("std/true", self.relative_std)]
        return fields


@dataclass(frozen=True, repr=False)
class OptimalLambda(Result):
    r"""The variance-minimising member of :math:`-\log r + \lambda(r-1)`.

    :math:`\lambda^* = \mathrm{Cov}(\log r, r)/\mathrm{Var}(r) = (\mathrm{KL}[q,p] + \mathrm{KL}[p,q]) / \chi^2(p\|q)`,
    and :math:`\mathrm{Var}^* = \mathrm{Var}(k_1) - \mathrm{Cov}(k_1, r)^2/\mathrm{Var}(r)`. When Var(r) is infinite
    every λ ≠ 0 has infinite variance, so λ* = 0 (k1).
    """

    lam: float
    var: float
    var_k1: float
    var_k3: float

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def _display_fields(self):
        return [("lam", self.lam), ("var", self.var), ("var_k1", self.var_k1), ("var_k3", self.var_k3)]


def exact_moments(pair, estimator) -> ExactMoments:
    r"""Exact mean and variance of an estimator under x ~ q.

    .. math:: \mathbb{E}_q[k(\log r)],\qquad \mathrm{Var}_q[k(\log r)] = \mathbb{E}_q\big[(k - \mathbb{E}_q k)^2\big]

    Relative accuracy better than 1e-8 where finite. Divergent moments are ``math.inf``: e.g. Var(k3)
    for Gaussians with :math:`\sigma_p^2 \ge 2\sigma_q^2`, where :math:`\mathbb{E}_q[r^2] = \infty`.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair
        The sampling distribution q and the target p (for a Markov pair: the sequence log-ratio).
    estimator : str or Estimator
        A name from :data:`klviz.ESTIMATORS` or any :class:`~klviz.Estimator`.

    Returns
    -------
    ExactMoments

    Raises
    ------
    TypeError
        If ``pair`` is not a klviz pair or ``estimator`` is neither a name nor an Estimator.
    ValueError
        If ``estimator`` is an unknown name, or the pair cannot compute it exactly (a Markov pair and an
        estimator without an exact form).
    ArithmeticError
        If a quadrature cannot reach the promised accuracy (ScipyPair, or a custom estimator).

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> m = exact_moments(GaussianPair(mu_p=1.0), "k2")
    >>> round(m.mean, 12), round(m.relative_bias, 12)
    (0.625, 0.25)
    """
    pair = _checks.pair(pair)
    record = get_estimator(estimator)
    mean = _float(pair._mean(record))
    target = _float(pair._target(record))
    if math.isinf(mean) or math.isnan(mean):
        return ExactMoments(record.name, mean, math.inf, target, mean - target if math.isfinite(target) else math.nan,
                            math.inf)
    var = max(_float(pair._covariance(record, record)), 0.0)
    log10_var = math.log10(var) if 0 < var < math.inf else (-math.inf if var == 0 else pair._log10_variance(record))
    return ExactMoments(record.name, mean, var, target, _float(pair._bias(record)), log10_var)


@dataclass(frozen=True)
class _LambdaParts:
    """Var(k_λ) = var_opt + var_r (λ - lam_opt)²: the parabola centred at its minimum, so that nothing
    cancels near λ* (the uncentred Var(k1) + 2λCov + λ²Var(r) loses ~1e-16/gap² relative at λ = 1)."""

    mean_k1: float
    mean_r_minus_1: float  # 0 unless p has mass where q has none
    var_k1: float
    var_r: float
    lam_opt: float
    var_opt: float

    def variance(self, lam: np.ndarray) -> np.ndarray:
        if math.isinf(self.var_r) or math.isinf(self.var_k1):
            return np.where(lam == 0, self.var_k1, np.inf)
        return self.var_opt + self.var_r * (lam - self.lam_opt) ** 2


def _lambda_parts(pair) -> _LambdaParts:
    k1 = ESTIMATORS["k1"]
    mean_k1 = _float(pair._mean(k1))
    mean_r = _float(pair._mean(CONTROL_VARIATE))
    var_k1 = _float(pair._covariance(k1, k1))
    var_r = _float(pair._covariance(CONTROL_VARIATE, CONTROL_VARIATE))
    if math.isinf(var_k1) or math.isinf(var_r):
        return _LambdaParts(mean_k1, mean_r, var_k1, var_r, 0.0, var_k1)
    if var_r == 0:  # r is constant under q (p = q): log r is too, and every member has variance 0
        return _LambdaParts(mean_k1, mean_r, var_k1, 0.0, 1.0, var_k1)
    lam_opt = -_float(pair._covariance(k1, CONTROL_VARIATE)) / var_r
    best = control_variate(lam_opt)
    var_opt = _float(pair._covariance(best, best))  # the optimal estimator's own variance: no cancellation
    return _LambdaParts(mean_k1, mean_r, var_k1, var_r, lam_opt, max(var_opt, 0.0))


def _lambda_values(lam) -> np.ndarray:
    lam_arr = np.asarray(lam)
    if lam_arr.dtype == np.bool_ or not (
        np.issubdtype(lam_arr.dtype, np.floating) or np.issubdtype(lam_arr.dtype, np.integer)
    ):
        raise TypeError(f"lam must be real, got dtype {lam_arr.dtype}")
    lam_arr = lam_arr.astype(np.float64)
    if not np.isfinite(lam_arr).all():
        raise ValueError("lam must be finite (no NaN or ±inf)")
    return lam_arr


def control_variate_variance(pair, lam):
    r"""Exact variance of :math:`-\log r + \lambda (r - 1)` under x ~ q, for one λ or an array of them.

    .. math:: \mathrm{Var}(k_\lambda) = \mathrm{Var}(k_1) + 2\lambda\,\mathrm{Cov}(k_1, r) + \lambda^2\,\mathrm{Var}(r)
              = \mathrm{Var}^* + \mathrm{Var}(r)\,(\lambda - \lambda^*)^2,

    a parabola in λ (exact moments once, then free to evaluate on a grid), evaluated in the centred
    form so that it keeps full precision near λ* even when Var(k3) ~ gap⁴/2 is tiny; ``inf`` for
    λ ≠ 0 when Var(r) diverges.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair
    lam : float or array_like

    Returns
    -------
    float or ndarray

    Raises
    ------
    TypeError, ValueError
        If ``pair`` is not a pair, or ``lam`` is not real, or not finite.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> v = control_variate_variance(GaussianPair(mu_p=1.0), [0.0, 1.0])
    >>> [round(float(x), 10) for x in v]   # Var(k1) = 1, Var(k3) = e - 2
    [1.0, 0.7182818285]
    """
    pair = _checks.pair(pair)
    lam_arr = _lambda_values(lam)
    out = _lambda_parts(pair).variance(lam_arr)
    return float(out) if out.ndim == 0 else out


def control_variate_moments(pair, lam: float) -> ExactMoments:
    r"""Exact mean and variance of :math:`k_\lambda = -\log r + \lambda (r - 1)` under x ~ q.

    The mean is :math:`\mathrm{KL}[q,p] + \lambda\,\mathbb{E}_q[r - 1]`: KL[q, p] for every λ unless p has
    mass where q has none (then :math:`\mathbb{E}_q[r - 1] < 0`).

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair
    lam : float
        The coefficient λ.

    Returns
    -------
    ExactMoments
        Named ``k_lambda(λ)``, with KL[q, p] as its target.

    Raises
    ------
    TypeError, ValueError
        If ``lam`` is not a finite real number.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> m = control_variate_moments(GaussianPair(mu_p=1.0), 1.0)   # λ = 1 is k3
    >>> round(m.mean, 12), round(m.var, 10)
    (0.5, 0.7182818285)
    """
    pair = _checks.pair(pair)
    lam_arr = _lambda_values(lam)
    if lam_arr.ndim != 0:
        raise ValueError(f"lam must be a single number, got shape {lam_arr.shape} (see control_variate_variance)")
    parts = _lambda_parts(pair)
    lam = float(lam_arr)
    mean = parts.mean_k1 + lam * parts.mean_r_minus_1
    var = float(parts.variance(lam_arr))
    log10_var = math.log10(var) if 0 < var < math.inf else (-math.inf if var == 0 else math.inf)
    return ExactMoments(control_variate(lam).name, mean, var, parts.mean_k1, lam * parts.mean_r_minus_1, log10_var)


def optimal_lambda(pair) -> OptimalLambda:
    r"""The variance-optimal λ of the control-variate family and its variance.

    .. math:: \lambda^* = -\frac{\mathrm{Cov}(k_1, r)}{\mathrm{Var}(r)}
              = \frac{\mathrm{KL}[q,p] + \mathrm{KL}[p,q]}{\mathbb{E}_q[r^2] - 1}

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair

    Returns
    -------
    OptimalLambda
        ``.lam``, ``.var`` (the minimum), ``.var_k1`` (λ = 0) and ``.var_k3`` (λ = 1).

    Raises
    ------
    TypeError
        If ``pair`` is not a klviz pair.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> opt = optimal_lambda(GaussianPair(mu_p=1.0))
    >>> round(opt.lam, 10)   # (0.5 + 0.5) / (e - 1)
    0.5819767069
    """
    pair = _checks.pair(pair)
    parts = _lambda_parts(pair)
    if math.isinf(parts.var_k1):
        return OptimalLambda(0.0, math.inf, math.inf, math.inf)
    if math.isinf(parts.var_r):
        return OptimalLambda(0.0, parts.var_k1, parts.var_k1, math.inf)
    return OptimalLambda(parts.lam_opt, parts.var_opt, parts.var_k1, float(parts.variance(np.float64(1.0))))


def expected_r_squared(pair) -> float:
    r""":math:`\mathbb{E}_q[r^2] = \mathrm{Var}_q(r) + (\mathbb{E}_q r)^2`: finite exactly when k3 has finite variance.

    When p's support lies within q's, :math:`\mathbb{E}_q r = 1` and this is :math:`1 + \chi^2(p\|q)`.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair

    Returns
    -------
    float
        ``math.inf`` when the integral diverges (Gaussians: :math:`\sigma_p^2 \ge 2\sigma_q^2`).

    Raises
    ------
    TypeError
        If ``pair`` is not a klviz pair.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> round(expected_r_squared(GaussianPair(mu_p=1.0)), 12)   # e^{μ²}
    2.718281828459
    """
    pair = _checks.pair(pair)
    mean_r = 1.0 + _float(pair._mean(CONTROL_VARIATE))
    return _float(pair._covariance(CONTROL_VARIATE, CONTROL_VARIATE)) + mean_r * mean_r

