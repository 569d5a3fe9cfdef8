r"""Exact moments of the estimators under x ~ q: closed forms, quadrature and sums — never Monte Carlo.

Three back ends, one per kind of pair:

* **Gaussian pairs** — closed forms. With :math:`L = \log r = a + bz + cz^2`, z ~ N(0, 1), every
  estimator is a sum of terms :math:`e^{tL} L^j` (see :class:`klviz.estimators.EstimatorSpec`), and

  .. math:: \mathbb{E}\big[e^{tL} L^j\big] = \frac{e^{ta + t^2 b^2/(2(1-2tc))}}{\sqrt{1-2tc}}\;
            \mathbb{E}_{z'\sim N(m, v)}\big[(a + bz' + cz'^2)^j\big],\qquad v = \frac{1}{1-2tc},\ m = tbv,

  by completing the square; it is infinite exactly when :math:`1 - 2tc \le 0`. The formulas are
  evaluated in 60-digit arithmetic (mpmath) so that :math:`\mathrm{Var} = \mathbb{E}[g^2] - \mathbb{E}[g]^2` keeps
  full double precision even when the variance is 1e-30 of its terms (gaps of 1e-8).
* **Categorical pairs** — exact sums over the vocabulary, two-pass for variances.
* **Any two scipy distributions** — adaptive tanh-sinh quadrature on q's quantile scale,
  :math:`\mathbb{E}_q[g] = \int_0^1 g(\log r(F_q^{-1}(u)))\,du`, split at u = ½ and using ``isf`` for the
  upper half so both tails keep full resolution. Before integrating, divergence is *detected*: an
  integral :math:`\int_0 G(u)\,du` converges only if :math:`G(u) = o(u^{-1})`, so the log-log slope of
  |G| is measured far in each tail (u = 1e-100 and 1e-200, in log space to avoid overflow) and a slope
  at or below -1 (within 0.005, to catch :math:`1/(u\sqrt{\log 1/u})` at the boundary) reports ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from klviz.estimators import (
    ESTIMATORS,
    FORWARD,
    EstimatorSpec,
    control_variate_spec,
    get_estimator,
)
from klviz.pairs import CategoricalPair, GaussianPair, Pair, ScipyPair

__all__ = [
    "ExactMoments",
    "OptimalLambda",
    "exact_moments",
    "control_variate_variance",
    "control_variate_moments",
    "optimal_lambda",
    "expected_r_squared",
]

_R_MINUS_1 = EstimatorSpec("r - 1", lambda logr: np.expm1(np.asarray(logr, dtype=np.float64)),
                           ((1, 0, 1.0), (0, 0, -1.0)), FORWARD)


@dataclass(frozen=True)
class ExactMoments:
    r"""Exact mean and variance of an estimator under x ~ q, and the divergence it targets.

    Attributes
    ----------
    estimator : str
        The estimator's name.
    mean, var : float
        :math:`\mathbb{E}_q[k]` and :math:`\mathrm{Var}_q[k]`; ``math.inf`` where they diverge.
    target : float
        The divergence the estimator is meant to estimate (KL[q, p], or KL[p, q] for the reverse ones).
    """

    estimator: str
    mean: float
    var: float
    target: float

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def bias(self) -> float:
        return self.mean - self.target

    @property
    def relative_bias(self) -> float:
        """bias / target (the article's "bias/true")."""
        return self.bias / self.target if self.target else math.nan

    @property
    def relative_std(self) -> float:
        """std / target (the article's "stdev/true")."""
        return self.std / self.target if self.target else math.nan

    def __repr__(self) -> str:
        return (f"ExactMoments({self.estimator}: mean={self.mean:.10g}, std={self.std:.10g}, "
                f"bias/true={self.relative_bias:.6g}, std/true={self.relative_std:.6g})")


@dataclass(frozen=True)
class OptimalLambda:
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

    def __repr__(self) -> str:
        return (f"OptimalLambda(lam={self.lam:.10g}, var={self.var:.6g}, "
                f"var_k1={self.var_k1:.6g}, var_k3={self.var_k3:.6g})")


# --------------------------------------------------------------------------------------------------
# Gaussian pairs: closed forms in high precision
# --------------------------------------------------------------------------------------------------

_DPS = 60


class _GaussianBackend:
    """E[e^{tL} L^j] for L = a + bz + cz², z ~ N(0,1), cached per (t, j)."""

    def __init__(self, pair: GaussianPair):
        import mpmath

        self.mp = mpmath.MPContext()
        self.mp.dps = _DPS
        mp = self.mp
        # Recompute a, b, c from the parameters in high precision rather than from rounded floats.
        s = mp.mpf(pair.sigma_q) / mp.mpf(pair.sigma_p)
        d = (mp.mpf(pair.mu_q) - mp.mpf(pair.mu_p)) / mp.mpf(pair.sigma_p)
        self.a = mp.log(s) - d * d / 2
        self.b = -d * s
        self.c = (1 - s * s) / 2
        self._cache: dict[tuple[int, int], object] = {}

    def term(self, t: int, j: int):
        key = (t, j)
        if key not in self._cache:
            self._cache[key] = self._term(t, j)
        return self._cache[key]

    def _term(self, t: int, j: int):
        mp, a, b, c = self.mp, self.a, self.b, self.c
        alpha = 1 - 2 * t * c
        if alpha <= 0:
            return mp.inf
        v = 1 / alpha
        m = t * b * v
        scale = mp.exp(t * a + (t * b) ** 2 * v / 2) * mp.sqrt(v)
        # Polynomial (a + b z + c z²)^j in z, then raw moments of N(m, v).
        poly = [mp.mpf(1)]
        for _ in range(j):
            new = [mp.mpf(0)] * (len(poly) + 2)
            for k, coef in enumerate(poly):
                new[k] += coef * a
                new[k + 1] += coef * b
                new[k + 2] += coef * c
            poly = new
        moments = [mp.mpf(1), m]
        for k in range(2, len(poly)):
            moments.append(m * moments[k - 1] + (k - 1) * v * moments[k - 2])
        return scale * mp.fsum(coef * moments[k] for k, coef in enumerate(poly))

    def expect(self, terms):
        """E[sum c e^{tL} L^j]; inf (with the sign of its coefficient) if a term diverges."""
        mp = self.mp
        total = mp.mpf(0)
        for t, j, coef in terms:
            if coef == 0:
                continue
            value = self.term(t, j)
            if mp.isinf(value):
                return math.copysign(math.inf, coef)
            total += mp.mpf(coef) * value
        return total

    def mean(self, spec: EstimatorSpec):
        return self.expect(spec.terms)

    def cov(self, g: EstimatorSpec, h: EstimatorSpec):
        product = [(t1 + t2, j1 + j2, c1 * c2) for t1, j1, c1 in g.terms for t2, j2, c2 in h.terms]
        # The product's divergent terms: if g = h the leading one is a square, so +inf is right; for
        # g != h we only use Cov(k1, r), which is finite whenever Var(r) is.
        if any(self.mp.isinf(self.term(t, j)) for t, j, c in product if c != 0):
            return math.inf
        mean_g, mean_h = self.expect(g.terms), self.expect(h.terms)
        return self.expect(product) - mean_g * mean_h


# --------------------------------------------------------------------------------------------------
# Categorical pairs: exact sums
# --------------------------------------------------------------------------------------------------

class _CategoricalBackend:
    def __init__(self, pair: CategoricalPair):
        self.log_ratio = pair.support_log_ratio
        self.log_q = pair.log_q[pair.log_q > -np.inf]
        self.q = np.exp(self.log_q)
        # E_q[r - 1] = (mass of p on q's support) - 1 = -(mass of p where q = 0), exactly.
        self.mean_r_minus_1 = -float(np.sum(np.exp(pair.log_p[pair.log_q == -np.inf])))

    def values(self, spec: EstimatorSpec) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(spec.function(self.log_ratio), dtype=np.float64)

    def _weighted_sum(self, values: np.ndarray, log_abs: np.ndarray) -> float:
        """Σ q·v, with q·v = ±exp(log q + log|v|) where q underflows or v overflows (a token with
        q = 1e-350 and r = 1e349 contributes q·r = p, not 0 · inf)."""
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            terms = self.q * values
            bad = ~np.isfinite(terms) | ((self.q == 0) & (values != 0))
            if np.any(bad):
                terms[bad] = np.sign(values[bad]) * np.exp(self.log_q[bad] + log_abs[bad])
        return float(np.sum(terms))

    def mean(self, spec: EstimatorSpec) -> float:
        # k1 = k3 - (r - 1) and r log r = k3_reverse + (r - 1): summing the non-negative k3 forms avoids
        # the cancellation of a sum of terms of both signs when p ≈ q.
        if spec.name == "k1":
            return self.mean(ESTIMATORS["k3"]) - self.mean_r_minus_1
        if spec.name == "k1_reverse":
            return self.mean(ESTIMATORS["k3_reverse"]) + self.mean_r_minus_1
        if spec is _R_MINUS_1:
            return self.mean_r_minus_1
        # p = 0 where q > 0 gives log r = -inf: an infinite k1/k3 term (a true infinity) but r log r = 0.
        return self._weighted_sum(self.values(spec), _log_abs(spec, self.log_ratio))

    def cov(self, g: EstimatorSpec, h: EstimatorSpec) -> float:
        mean_g, mean_h = self.mean(g), self.mean(h)
        if not (math.isfinite(mean_g) and math.isfinite(mean_h)):
            return math.inf
        with np.errstate(over="ignore", invalid="ignore"):
            dg = self.values(g) - mean_g
            dh = dg if h is g else self.values(h) - mean_h
            product = dg * dh
        log_abs = _log_abs_centred(g, self.log_ratio, mean_g) + _log_abs_centred(h, self.log_ratio, mean_h)
        return self._weighted_sum(product, log_abs)


# --------------------------------------------------------------------------------------------------
# Any two scipy distributions: quadrature on q's quantile scale, with divergence detection
# --------------------------------------------------------------------------------------------------

_TAIL_U = (1e-100, 1e-200)
_TAIL_X = (1e50, 1e100)
_SLOPE_TOLERANCE = 0.005
_RTOL = 1e-12


def _log_abs(spec: EstimatorSpec, log_ratio: np.ndarray) -> np.ndarray:
    """log|g(L)| from the term list, in log space, for the extreme L of the tail test.

    Terms with the same exponent t are summed as a polynomial in L first (factoring out the top power
    for |L| > 1), so that e.g. r log r - r keeps its log L at L = 1e99 instead of cancelling to NaN."""
    from scipy.special import logsumexp

    L = np.asarray(log_ratio, dtype=np.float64)
    groups: dict[float, dict[int, float]] = {}
    for t, j, c in spec.terms:
        groups.setdefault(t, {})
        groups[t][j] = groups[t].get(j, 0.0) + c
    logs, signs = [], []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for t, coeffs in groups.items():
            coeffs = {j: c for j, c in coeffs.items() if c != 0}
            if not coeffs:
                continue
            top = max(coeffs)
            big = np.abs(L) > 1
            inverse = np.where(big, 1.0 / np.where(big, L, 1.0), 0.0)
            scaled = sum(c * inverse ** (top - j) for j, c in coeffs.items())  # P(L) / L^top
            direct = sum(c * np.where(big, 0.0, L) ** j for j, c in coeffs.items())
            log_poly = np.where(big, top * np.log(np.abs(L)) + np.log(np.abs(scaled)), np.log(np.abs(direct)))
            sign = np.where(big, np.sign(scaled) * np.sign(L) ** top, np.sign(direct))
            exponent = 0.0 if t == 0 else t * L
            log_term = exponent + log_poly
            if t > 0:  # e^{tL} -> 0 at L = -inf, whatever the polynomial does
                log_term = np.where(L == -np.inf, -np.inf, log_term)
            logs.append(log_term)
            signs.append(sign)
    value, _ = logsumexp(np.stack(logs, axis=-1), b=np.stack(signs, axis=-1), axis=-1, return_sign=True)
    return value


class _ScipyBackend:
    def __init__(self, pair: ScipyPair):
        self.pair = pair
        self._means: dict[tuple, float] = {}

    def _dist(self, under: str):
        return self.pair.q if under == "q" else self.pair.p

    def _at_x(self, x: np.ndarray, under: str) -> tuple[np.ndarray, np.ndarray]:
        """(log density of q or p, log r) at x; log r is NaN outside q's support (no mass under q)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_q = self.pair.q.logpdf(x)
            log_p = self.pair.p.logpdf(x)
            log_ratio = log_p - log_q
        inside = log_q > -np.inf
        log_ratio = np.where(inside & np.isnan(log_ratio), -np.inf, log_ratio)
        return (log_q if under == "q" else log_p), np.where(inside, log_ratio, np.nan)

    def _location_scale(self, under: str) -> tuple[float, float]:
        dist = self._dist(under)
        scale = float(dist.isf(0.25) - dist.ppf(0.25))
        return float(dist.median()), scale if scale > 0 else 1.0

    def _inner_edges(self, under: str) -> list[float]:
        """Finite ends of the other distribution's support strictly inside this one's: the integrand
        jumps there (log r becomes ±inf), so quadrature must not step across them."""
        dist, other = self._dist(under), self._dist("p" if under == "q" else "q")
        low, high = dist.support()
        return [float(e) for e in other.support() if math.isfinite(e) and low < e < high]

    def _pieces_u(self, under: str, upper: bool) -> list[float]:
        """[0, ..., 1/2] on the quantile scale (from the left, or from the right for the upper half),
        split where an inner support edge falls."""
        dist = self._dist(under)
        cuts = [float(dist.sf(e) if upper else dist.cdf(e)) for e in self._inner_edges(under)]
        return sorted({0.0, 0.5} | {u for u in cuts if 0.0 < u < 0.5})

    def _converges(self, log_abs_integrand, under: str = "q") -> bool:
        """Whether E[G(log r)] under q (or p) is finite: the tails of the integrand, tested at both ends."""
        dist = self._dist(under)
        loc, scale = self._location_scale(under)
        for side, end in ((-1, dist.support()[0]), (1, dist.support()[1])):
            if math.isinf(end):
                verdict = self._tail_x(log_abs_integrand, under, loc, side * scale)
                if verdict is not None:
                    if not verdict:
                        return False
                    continue
            if not self._tail_u(log_abs_integrand, under, upper=side > 0):
                return False
        return True

    def _tail_x(self, log_abs_integrand, under, loc, signed_scale) -> bool | None:
        """Infinite end: density × |G| must fall faster than 1/|x|. At |x| = 1e50 and 1e100 scales the
        log-log slope is exact to ~1e-15 for power laws (and huge for Gaussian-type exponents), so
        the boundary itself (slope -1, e.g. Var k2 for a t with 8 dof against a normal) is decided
        right. None when the densities underflow there and the test cannot tell."""
        offsets = np.array(_TAIL_X)
        x = loc + signed_scale * offsets
        for dist in (self.pair.q, self.pair.p):
            low, high = dist.support()
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                underflow = (x >= low) & (x <= high) & (dist.logpdf(x) == -np.inf)
            if np.any(underflow):  # a logpdf that underflows inside its own support (e.g. laplace at 1e50)
                return None
        log_density, log_ratio = self._at_x(x, under)
        if np.any(np.isnan(log_ratio)):  # p's far tail lies outside q's support: no mass there
            return True
        with np.errstate(invalid="ignore"):
            log_f = log_density + log_abs_integrand(log_ratio)
        if np.any(np.isnan(log_f)) or np.any(log_density == -np.inf):
            return None
        if np.any(log_f == np.inf):
            return False
        if log_f[1] == -np.inf:  # the integrand vanishes that far out
            return True
        if log_f[0] == -np.inf:
            return None
        slope = (log_f[1] - log_f[0]) / math.log(offsets[1] / offsets[0])
        return bool(slope < -1.0 - 1e-9)

    def _tail_u(self, log_abs_integrand, under, upper: bool) -> bool:
        """Finite end (or an inconclusive x test): on the quantile scale ∫_0 G(u) du converges only if
        G = o(1/u); the log-log slope of |G| is measured at u = 1e-100 and 1e-200."""
        u = np.array(_TAIL_U)
        dist = self._dist(under)
        _, log_ratio = self._at_x(dist.isf(u) if upper else dist.ppf(u), under)
        if np.any(np.isnan(log_ratio)):
            return True
        log_g = log_abs_integrand(log_ratio)
        if np.any(np.isnan(log_g)) or np.any(log_g == np.inf):
            return False
        if np.all(log_g == -np.inf):
            return True
        slope = (log_g[1] - log_g[0]) / (math.log(u[1]) - math.log(u[0]))
        return bool(slope > -1.0 + _SLOPE_TOLERANCE)

    def _integrate(self, integrand, log_abs, under: str = "q") -> float:
        """E[G(log r)] under q (or p): tanh-sinh on the quantile scale, where the integration range
        always matches the mass; if that does not converge (an integrand close to non-integrable on
        that scale, e.g. r² when sigma_p² is just below 2 sigma_q²), tanh-sinh on x with the density
        in log space. Raises rather than return an unconverged number."""
        from scipy.integrate import tanhsinh

        dist = self._dist(under)
        results = []
        for upper in (False, True):
            pieces = self._pieces_u(under, upper)

            def func(u, upper=upper):
                _, log_ratio = self._at_x(dist.isf(u) if upper else dist.ppf(u), under)
                values = np.zeros_like(log_ratio)
                # tanh-sinh can step onto u so close to 0 that x leaves the representable range; such
                # nodes carry no mass (the tail test has already shown the integrand is integrable).
                ok = ~np.isnan(log_ratio)
                with np.errstate(over="ignore", invalid="ignore"):
                    values[ok] = integrand(log_ratio[ok])
                return np.where(np.isfinite(values), values, 0.0)

            for a, b in zip(pieces[:-1], pieces[1:]):
                results.append(tanhsinh(func, a, b, rtol=_RTOL, atol=0.0))
        total, converged = _combine(results)
        if converged:
            return total

        loc, _ = self._location_scale(under)
        low, high = dist.support()

        def func_x(x):
            log_density, log_ratio = self._at_x(x, under)
            values = np.zeros_like(log_ratio)
            ok = ~np.isnan(log_ratio) & (log_density > -np.inf)
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                g = integrand(log_ratio[ok])
                v = np.exp(log_density[ok]) * g
                bad = ~np.isfinite(v)
                # Where G overflowed, density × G is taken in log space (the density is tiny there).
                v[bad] = np.sign(g[bad]) * np.exp(log_density[ok][bad] + log_abs(log_ratio[ok][bad]))
            values[ok] = np.where(np.isfinite(v), v, 0.0)
            return values

        edges = sorted({low, loc, high} | set(self._inner_edges(under)))
        total, converged = _combine([tanhsinh(func_x, a, b, rtol=_RTOL, atol=0.0)
                                     for a, b in zip(edges[:-1], edges[1:])])
        if not converged:
            raise ArithmeticError(
                f"quadrature did not converge for {self.pair!r}: the integrand is too close to "
                "non-integrable for a reliable value (try a GaussianPair for closed forms)"
            )
        return total

    def mean_r_minus_1(self) -> float:
        """E_q[r - 1] = P_p(support of q) - 1, from p's CDF: no quadrature needed."""
        low, high = self.pair.q.support()
        return -float(self.pair.p.cdf(low) + self.pair.p.sf(high))

    def mean(self, spec: EstimatorSpec) -> float:
        key = (spec.name, spec.terms)  # the terms tell two λ of the control-variate family apart
        if key not in self._means:
            self._means[key] = self._mean(spec)
        return self._means[key]

    def _mean(self, spec: EstimatorSpec) -> float:
        # Terms in r are integrated under p (E_q[r h(L)] = E_p[h(L)]), where they are tame even when
        # p has heavier tails than q and r is nearly non-integrable on q's quantile scale.
        if spec is _R_MINUS_1:
            return self.mean_r_minus_1()
        if spec.name == "k3":
            return self.mean(ESTIMATORS["k1"]) + self.mean_r_minus_1()
        if spec.name == "k3_reverse":
            return self.mean(ESTIMATORS["k1_reverse"]) - self.mean_r_minus_1()
        if spec.name == "k1_reverse":
            def log_abs_l(L):
                with np.errstate(divide="ignore"):
                    return np.log(np.abs(L))

            if not self._converges(log_abs_l, under="p"):
                return math.inf
            return self._integrate(lambda L: L, log_abs_l, under="p")

        def log_abs(L):
            return _log_abs(spec, L)

        if not self._converges(log_abs):
            # The estimators integrated here (k1, k2) diverge only to +inf (KL cannot be -inf).
            return math.inf
        return self._integrate(lambda L: spec.function(L), log_abs)

    def cov(self, g: EstimatorSpec, h: EstimatorSpec) -> float:
        mean_g, mean_h = self.mean(g), self.mean(h)
        if math.isinf(mean_g) or math.isinf(mean_h):
            return math.inf

        def log_abs(L):
            return _log_abs_centred(g, L, mean_g) + _log_abs_centred(h, L, mean_h)

        if not self._converges(log_abs):
            return math.inf
        return self._integrate(lambda L: (g.function(L) - mean_g) * (h.function(L) - mean_h), log_abs)


def _combine(results) -> tuple[float, bool]:
    """The sum of piecewise integrals, and whether it is converged: each piece by tanh-sinh's own
    verdict, or with an error negligible against the whole (a piece that is ~0, e.g. next to a
    support edge, cannot reach a relative tolerance of its own)."""
    total = sum(float(result.integral) for result in results)
    converged = all(_converged(result) or float(result.error) <= _RTOL * abs(total) for result in results)
    return total, converged


def _converged(result) -> bool:
    """tanh-sinh's own verdict; an integrand that is 0 everywhere (p = q) has error 0 but no relative error."""
    return bool(np.all((result.status == 0) | ((result.integral == 0) & (result.error == 0))))


def _log_abs_centred(spec: EstimatorSpec, log_ratio, centre: float) -> np.ndarray:
    """log|g(L) - centre|: exact where g is moderate, asymptotic (log|g|) where it is huge."""
    log_g = _log_abs(spec, log_ratio)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        direct = np.log(np.abs(spec.function(np.clip(log_ratio, -700, 700)) - centre))
    return np.where(log_g > math.log(abs(centre) + 1.0) + 40.0, log_g, direct)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def _backend(pair):
    if isinstance(pair, GaussianPair):
        return _gaussian_backend(pair)
    if isinstance(pair, CategoricalPair):
        return _CategoricalBackend(pair)
    if isinstance(pair, ScipyPair):
        return _scipy_backend(pair)
    raise TypeError(
        "pair must be a GaussianPair, ScipyPair or CategoricalPair, got " f"{type(pair).__name__}"
    )


@lru_cache(maxsize=256)
def _gaussian_backend(pair: GaussianPair) -> _GaussianBackend:
    # Frozen dataclasses hash by value, so sweeping sliders back and forth reuses the work.
    return _GaussianBackend(pair)


@lru_cache(maxsize=64)
def _scipy_backend(pair: ScipyPair) -> _ScipyBackend:
    # ScipyPair hashes by identity: asking one pair for several moments (a λ curve, its marks, λ*)
    # integrates each quantity once.
    return _ScipyBackend(pair)


_to_float = float  # mpmath numbers (Gaussian back end) and numpy scalars alike


def quadrature_kl(pair: ScipyPair) -> float:
    """KL[q, p] of a :class:`~klviz.ScipyPair` by quadrature (the mean only: no variance integral)."""
    return float(_scipy_backend(pair).mean(ESTIMATORS["k1"]))


def _target(pair: Pair, spec: EstimatorSpec, backend) -> float:
    if spec.target == FORWARD:
        return float(backend.mean(ESTIMATORS["k1"])) if isinstance(pair, ScipyPair) else pair.kl()
    return float(pair.kl_reverse())


def exact_moments(pair: Pair, estimator: str) -> ExactMoments:
    r"""Exact mean and variance of an estimator under x ~ q.

    .. math:: \mathbb{E}_q[k(\log r)],\qquad \mathrm{Var}_q[k(\log r)] = \mathbb{E}_q\big[(k - \mathbb{E}_q k)^2\big]

    Closed forms for :class:`~klviz.GaussianPair` (60-digit arithmetic), exact sums for
    :class:`~klviz.CategoricalPair`, adaptive quadrature for :class:`~klviz.ScipyPair`; relative
    accuracy better than 1e-8 where finite. Divergent moments are ``math.inf``: e.g. Var(k3) for
    Gaussians with :math:`\sigma_p^2 \ge 2\sigma_q^2`, where :math:`\mathbb{E}_q[r^2] = \infty`.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
        The sampling distribution q and the target p.
    estimator : str
        One of ``"k1"``, ``"k2"``, ``"k3"``, ``"k1_reverse"``, ``"k3_reverse"``.

    Returns
    -------
    ExactMoments
        ``.mean``, ``.var``, ``.std``, ``.target`` (the divergence it estimates), ``.bias``,
        ``.relative_bias``, ``.relative_std``.

    Raises
    ------
    TypeError
        If ``pair`` is not a supported pair or ``estimator`` is not a string.
    ValueError
        If ``estimator`` is not a known name.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> m = exact_moments(GaussianPair(mu_p=1.0), "k2")
    >>> round(m.mean, 12), round(m.relative_bias, 12)
    (0.625, 0.25)
    """
    spec = get_estimator(estimator)
    backend = _backend(pair)
    mean = _to_float(backend.mean(spec))
    var = math.inf if math.isinf(mean) else _to_float(backend.cov(spec, spec))
    return ExactMoments(spec.name, mean, max(var, 0.0), _target(pair, spec, backend))


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


def _lambda_parts(pair: Pair) -> _LambdaParts:
    backend = _backend(pair)
    k1 = ESTIMATORS["k1"]
    mean_k1 = _to_float(backend.mean(k1))
    mean_r = _to_float(backend.mean(_R_MINUS_1))
    var_k1 = backend.cov(k1, k1)
    var_r = backend.cov(_R_MINUS_1, _R_MINUS_1)
    if math.isinf(var_k1) or math.isinf(var_r):
        return _LambdaParts(mean_k1, mean_r, _to_float(var_k1), _to_float(var_r), 0.0, _to_float(var_k1))
    if var_r == 0:  # r is constant under q (p = q): log r is too, and every member has variance 0
        return _LambdaParts(mean_k1, mean_r, _to_float(var_k1), 0.0, 1.0, _to_float(var_k1))
    cov = backend.cov(k1, _R_MINUS_1)
    lam_opt = -cov / var_r
    if isinstance(backend, _GaussianBackend):
        var_opt = var_k1 - cov * cov / var_r  # 60 digits: the cancellation is harmless
    else:
        spec = control_variate_spec(_to_float(lam_opt))
        var_opt = backend.cov(spec, spec)  # two-pass sum/integral of the optimal estimator itself
    return _LambdaParts(mean_k1, mean_r, _to_float(var_k1), _to_float(var_r), _to_float(lam_opt),
                        max(_to_float(var_opt), 0.0))


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


def control_variate_variance(pair: Pair, lam):
    r"""Exact variance of :math:`-\log r + \lambda (r - 1)` under x ~ q, for one λ or an array of them.

    .. math:: \mathrm{Var}(k_\lambda) = \mathrm{Var}(k_1) + 2\lambda\,\mathrm{Cov}(k_1, r) + \lambda^2\,\mathrm{Var}(r)
              = \mathrm{Var}^* + \mathrm{Var}(r)\,(\lambda - \lambda^*)^2,

    a parabola in λ (exact moments once, then free to evaluate on a grid), evaluated in the centred
    form so that it keeps full precision near λ* even when Var(k3) ~ gap⁴/2 is tiny; ``inf`` for
    λ ≠ 0 when Var(r) diverges.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
    lam : float or array_like

    Returns
    -------
    float or ndarray

    Raises
    ------
    TypeError, ValueError
        If ``lam`` is not real, or not finite.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> v = control_variate_variance(GaussianPair(mu_p=1.0), [0.0, 1.0])
    >>> [round(float(x), 10) for x in v]   # Var(k1) = 1, Var(k3) = e - 2
    [1.0, 0.7182818285]
    """
    lam_arr = _lambda_values(lam)
    out = _lambda_parts(pair).variance(lam_arr)
    return float(out) if out.ndim == 0 else out


def control_variate_moments(pair: Pair, lam: float) -> ExactMoments:
    r"""Exact mean and variance of :math:`k_\lambda = -\log r + \lambda (r - 1)` under x ~ q.

    The mean is :math:`\mathrm{KL}[q,p] + \lambda\,\mathbb{E}_q[r - 1]`: KL[q, p] for every λ unless p has
    mass where q has none (then :math:`\mathbb{E}_q[r - 1] < 0`).

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
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
    lam_arr = _lambda_values(lam)
    if lam_arr.ndim != 0:
        raise ValueError(f"lam must be a single number, got shape {lam_arr.shape} (see control_variate_variance)")
    parts = _lambda_parts(pair)
    lam = float(lam_arr)
    mean = parts.mean_k1 + lam * parts.mean_r_minus_1
    return ExactMoments(control_variate_spec(lam).name, mean, float(parts.variance(lam_arr)), parts.mean_k1)


def optimal_lambda(pair: Pair) -> OptimalLambda:
    r"""The variance-optimal λ of the control-variate family and its variance.

    .. math:: \lambda^* = -\frac{\mathrm{Cov}(k_1, r)}{\mathrm{Var}(r)}
              = \frac{\mathrm{KL}[q,p] + \mathrm{KL}[p,q]}{\mathbb{E}_q[r^2] - 1}

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair

    Returns
    -------
    OptimalLambda
        ``.lam``, ``.var`` (the minimum), ``.var_k1`` (λ = 0) and ``.var_k3`` (λ = 1).

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> opt = optimal_lambda(GaussianPair(mu_p=1.0))
    >>> round(opt.lam, 10)   # (0.5 + 0.5) / (e - 1)
    0.5819767069
    """
    parts = _lambda_parts(pair)
    if math.isinf(parts.var_k1):
        return OptimalLambda(0.0, math.inf, math.inf, math.inf)
    if math.isinf(parts.var_r):
        return OptimalLambda(0.0, parts.var_k1, parts.var_k1, math.inf)
    return OptimalLambda(parts.lam_opt, parts.var_opt, parts.var_k1, float(parts.variance(np.float64(1.0))))


def expected_r_squared(pair: Pair) -> float:
    r""":math:`\mathbb{E}_q[r^2] = \mathrm{Var}_q(r) + (\mathbb{E}_q r)^2`: finite exactly when k3 has finite variance.

    When p's support lies within q's, :math:`\mathbb{E}_q r = 1` and this is :math:`1 + \chi^2(p\|q)`.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair

    Returns
    -------
    float
        ``math.inf`` when the integral diverges (Gaussians: :math:`\sigma_p^2 \ge 2\sigma_q^2`).

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> round(expected_r_squared(GaussianPair(mu_p=1.0)), 12)   # e^{μ²}
    2.718281828459
    """
    backend = _backend(pair)
    mean_r = 1.0 + _to_float(backend.mean(_R_MINUS_1))
    return _to_float(backend.cov(_R_MINUS_1, _R_MINUS_1)) + mean_r * mean_r
