r"""Two Gaussians: q = N(μ_q, σ_q²) to sample from, p = N(μ_p, σ_p²) the target, exact in closed form.

With :math:`x = \mu_q + \sigma_q z`, :math:`z \sim N(0, 1)`, the log-ratio is a quadratic in z,

.. math:: L = \log r = a + b z + c z^2,\quad s = \sigma_q/\sigma_p,\ d = (\mu_q - \mu_p)/\sigma_p,\
          a = \log s - d^2/2,\ b = -d s,\ c = (1 - s^2)/2.

Estimators with an exact form :math:`\sum c_{tj}\, e^{tL} L^j` (every built-in) get closed forms by
completing the square,

.. math:: \mathbb{E}\big[e^{tL} L^j\big] = \frac{e^{ta + t^2 b^2/(2(1-2tc))}}{\sqrt{1-2tc}}\;
          \mathbb{E}_{z'\sim N(m, v)}\big[(a + bz' + cz'^2)^j\big],\qquad v = \frac{1}{1-2tc},\ m = tbv,

infinite exactly when :math:`1 - 2tc \le 0`; they are evaluated in 60-digit arithmetic (mpmath), so a
variance keeps full double precision even when it is 1e-30 of its terms (gaps of 1e-8), a bias is not
the difference of two rounded floats, and a variance beyond float64 (Var k3 = e^{μ²} - 1 - μ² at μ = 30)
keeps its magnitude. Any other estimator is integrated over z by tanh-sinh, split at its kinks, with
divergence decided from its growth in L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from klviz import _checks, _quadrature
from klviz._kernels import exp_minus_1_minus_x
from klviz.estimators import Estimator, ExpPolynomial
from klviz.pairs.base import Pair, sample_size

__all__ = ["GaussianPair"]

_DPS = 60
# Beyond these the quadratic form of log r leaves float64 (σ ratios of 1e150 square to 1e300).
_MAX_SIGMA_RATIO = 1e150


def _log_sigma_ratio(sigma_q: float, sigma_p: float) -> float:
    """log(sigma_q / sigma_p), to full relative precision also when the two are close.

    log(sigma_q) - log(sigma_p) cancels when sigma_q ≈ sigma_p (relative error ~1e-16/|log ratio|); for
    ratios in [1/2, 2] the difference sigma_q - sigma_p is exact (Sterbenz) and log1p keeps every digit.
    """
    relative_difference = (sigma_q - sigma_p) / sigma_p
    if abs(relative_difference) <= 0.5:
        return math.log1p(relative_difference)
    return math.log(sigma_q) - math.log(sigma_p)


@dataclass(frozen=True)
class GaussianPair(Pair):
    r"""q = N(mu_q, sigma_q²) and p = N(mu_p, sigma_p²), with everything in closed form.

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
        If a parameter is not finite, a standard deviation is not positive, or the pair is so extreme
        that log r leaves float64 (σ_q/σ_p outside [1e-150, 1e150], or a gap of more than 1e150 σ_p).

    Notes
    -----
    The module docstring gives the quadratic form and the closed forms used for exact moments.

    Examples
    --------
    >>> pair = GaussianPair(mu_p=1.0)
    >>> pair.kl_qp()
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
        ratio = self.sigma_q / self.sigma_p
        if not (1.0 / _MAX_SIGMA_RATIO <= ratio <= _MAX_SIGMA_RATIO):
            raise ValueError(f"sigma_q / sigma_p must lie in [1e-150, 1e150] (log r would overflow float64), "
                             f"got sigma_p={self.sigma_p:g}, sigma_q={self.sigma_q:g}")
        with np.errstate(over="ignore"):
            gap = abs(self.mu_q - self.mu_p) / self.sigma_p
        if not gap <= _MAX_SIGMA_RATIO:
            raise ValueError(f"|mu_q - mu_p| / sigma_p must be at most 1e150 (log r would overflow float64), "
                             f"got mu_p={self.mu_p:g}, mu_q={self.mu_q:g}, sigma_p={self.sigma_p:g}")

    @property
    def quadratic(self) -> tuple[float, float, float]:
        """(a, b, c) with log r = a + b z + c z² at x = mu_q + sigma_q z."""
        s = self.sigma_q / self.sigma_p
        d = (self.mu_q - self.mu_p) / self.sigma_p
        log_s = _log_sigma_ratio(self.sigma_q, self.sigma_p)
        # (1 - s²)/2 = -expm1(2 log s)/2 keeps c exact when the variances are close.
        return log_s - 0.5 * d * d, -d * s, -0.5 * math.expm1(2.0 * log_s)

    def sample(self, n: int, *, rng=None) -> np.ndarray:
        """n draws from q = N(mu_q, sigma_q²)."""
        n = sample_size(n)
        return self.mu_q + self.sigma_q * _checks.rng(rng).standard_normal(n)

    def log_ratio_from_standard(self, z) -> np.ndarray:
        """log r at x = mu_q + sigma_q z, for standard-normal z (the quadratic form)."""
        a, b, c = self.quadratic
        z = np.asarray(z, dtype=np.float64)
        if c == 0.0:
            return a + b * z
        return a + z * (b + c * z)

    def sample_log_ratio(self, n: int, *, rng=None) -> np.ndarray:
        n = sample_size(n)
        return self.log_ratio_from_standard(_checks.rng(rng).standard_normal(n))

    def log_ratio(self, x) -> np.ndarray:
        r""":math:`\log p(x) - \log q(x)` for Gaussian densities."""
        x = _checks.real_array(x, "x")
        return self.log_ratio_from_standard((x - self.mu_q) / self.sigma_q)

    def kl_qp(self) -> float:
        r""":math:`\mathrm{KL}[q,p] = \tfrac12\big(d^2 + s^2 - 1 - \log s^2\big)`, with the bracket computed
        as ``k3(log s²)`` so that it stays exact when the variances are close."""
        d = (self.mu_q - self.mu_p) / self.sigma_p
        log_s2 = 2.0 * _log_sigma_ratio(self.sigma_q, self.sigma_p)
        return 0.5 * (d * d + float(exp_minus_1_minus_x(np.array([log_s2]))[0]))

    def swapped(self) -> "GaussianPair":
        return GaussianPair(mu_p=self.mu_q, sigma_p=self.sigma_q, mu_q=self.mu_p, sigma_q=self.sigma_p)

    # --- exact moments ----------------------------------------------------------------------------------
    def _mean(self, estimator: Estimator):
        if estimator.expansion is not None:
            return _closed_forms(self).expect(estimator.expansion)
        return _z_expectation(self, estimator)

    def _covariance(self, a: Estimator, b: Estimator):
        if a.expansion is not None and b.expansion is not None:
            return _closed_forms(self).covariance(a.expansion, b.expansion)
        mean_a, mean_b = float(self._mean(a)), float(self._mean(b))
        if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
            return math.inf
        return _z_expectation(self, a, mean_a, b, mean_b)

    def _bias(self, estimator: Estimator):
        if estimator.expansion is None:
            return super()._bias(estimator)
        forms = _closed_forms(self)
        mean = forms.expect(estimator.expansion)
        if isinstance(mean, float):  # ±inf
            return mean
        return mean - forms.target(estimator.target)

    def _log10_variance(self, estimator: Estimator) -> float:
        var = self._covariance(estimator, estimator)
        if isinstance(var, float):
            return math.log10(var) if var > 0 else (math.inf if math.isinf(var) else -math.inf)
        mp = _closed_forms(self).mp
        return float(mp.log10(var)) if var > 0 else -math.inf

    def _f_divergence(self, numerics) -> float:
        r""":math:`\int \varphi(z)\, g(e^{a + bz + cz^2})\,dz` over the real line, the product formed in log space.

        Finite exactly when the growth of g is beaten by φ: with :math:`g(u) \sim u^\alpha` as
        :math:`u \to \infty` and :math:`u^\beta` as :math:`u \to 0` (logarithmic factors aside), the integral
        diverges iff :math:`c > 0,\ \alpha > 0,\ 1 - 2\alpha c \le 0` or
        :math:`c < 0,\ \beta < 0,\ 1 - 2\beta c \le 0`
        (e.g. Pearson χ², α = 2: :math:`\sigma_p^2 \ge 2\sigma_q^2`). The z-scale, unlike the quantile scale,
        keeps full accuracy right up to that boundary, where the integrand decays like :math:`e^{-\epsilon z^2}`.
        Each piece's convergence is checked (ArithmeticError otherwise).
        """
        if self.mu_p == self.mu_q and self.sigma_p == self.sigma_q:
            return 0.0
        a, b, c = self.quadratic
        alpha, beta = numerics.growth
        if (c > 0 and alpha > 0 and 1 - 2 * alpha * c <= 0) or (c < 0 and beta < 0 and 1 - 2 * beta * c <= 0):
            return math.inf
        # Near that boundary e^{tL} (t = α or β with tc > 0) widens φ's envelope into a bump of precision
        # k = 1 - 2tc (variance 1/k) at z = tb/k — variance 3e3 at z ~ 1e3 for Pearson at σ_p = 1.414 —
        # so the integral runs over w = z√k, split at the bump, where tanh-sinh converges at its ordinary
        # pace. Three more precautions there:
        # * log φ + log g ≈ -z²/2 + tL cancels two terms of size |L| ~ 1e5-1e6: the rounding of L makes
        #   the integrand noisy (~1e-16·|L| relative) and tanh-sinh cannot reach 1e-12. Where |L| > 100
        #   on the bump's side, the envelope -kz²/2 + t(a + bz) is formed directly and multiplied by the
        #   slowly varying g e^{-tL} (Numerics.times_envelope).
        # * k = 1 - t + t σ_q²/σ_p² comes from the parameters in 40 digits: from the rounded c it would be
        #   off by ~1e-16/k relative, which the value's exponent t²b²/(2k) amplifies (4e-11 at σ_p = 1.414).
        # * A value beyond the float range overflows the integrand at the bump: inf, not an error.
        scale, power, precision = 1.0, None, 1.0
        points = set(_roots(a, b, c) if not numerics.smooth else []) | {0.0}
        for t in (alpha, beta):
            if t * c > 0:  # at most one of them: α ≥ 0 matters for c > 0, β ≤ 0 for c < 0
                mp = numerics.mp
                with mp.workdps(40):
                    precision = float(1 - mp.mpf(t) + t * (mp.mpf(self.sigma_q) / mp.mpf(self.sigma_p)) ** 2)
                if precision <= 0.0:  # on the boundary, which the rounded c above put just inside
                    return math.inf
                scale, power = 1.0 / math.sqrt(precision), t
                points.add(t * b / precision)
        edges = [-math.inf, *sorted(z / scale for z in points), math.inf]
        log_constant = math.log(scale) - 0.5 * math.log(2.0 * math.pi)  # dz = scale dw; φ's normalisation

        overflow = set()  # signs of integrand values beyond the float range

        def integrand(w):
            z = scale * np.asarray(w, dtype=np.float64)
            log_ratio = a + z * (b + c * z)
            values = np.zeros_like(z)
            ok = np.isfinite(z)  # the transformed rule may evaluate z = ±inf, where φ(z) = 0
            far = ok & (power * log_ratio > 100.0 * abs(power)) if power is not None else np.zeros(z.shape, bool)
            near = ok & ~far
            values[near] = numerics.times_weight(log_ratio[near], -0.5 * z[near] * z[near] + log_constant)
            if far.any():
                zf = z[far]
                envelope = -0.5 * precision * zf * zf + power * (a + b * zf) + log_constant
                values[far] = numerics.times_envelope(log_ratio[far], power, envelope)
            overflow.update(np.sign(values[np.isinf(values)]).tolist())
            return values

        results = _quadrature.tanhsinh_pieces(integrand, edges)
        if len(overflow) == 1:
            # Finite (divergence is excluded above) but beyond the float range: the integrand overflows on
            # a bump about 1 wide in w, e.g. Pearson χ² ≈ e^{2370} at μ_p = 0.3, σ_p = 1.4142.
            return math.copysign(math.inf, overflow.pop())
        total, converged = _quadrature.combine(results)
        if not converged:
            _quadrature.raise_unconverged(repr(self))
        return total




# --------------------------------------------------------------------------------------------------
# Closed forms in 60 digits
# --------------------------------------------------------------------------------------------------

class _ClosedForms:
    """E[e^{tL} L^j] for L = a + bz + cz², z ~ N(0, 1), cached per (t, j), in mpmath."""

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

    def expect(self, form: ExpPolynomial):
        """E[Σ c e^{tL} L^j] (mpf); ±inf (float, the sign of the divergent term's coefficient) if a term diverges."""
        total = self.mp.mpf(0)
        for (t, j), coef in form.coefficients.items():
            value = self.term(t, j)
            if self.mp.isinf(value):
                return math.copysign(math.inf, coef)
            total += self.mp.mpf(coef) * value
        return total

    def covariance(self, g: ExpPolynomial, h: ExpPolynomial):
        product = g * h
        # A divergent term of the product: for g = h the leading one is a square, so +inf is right; for
        # g != h klviz only asks for Cov(k1, r - 1), finite whenever Var(r) is.
        if any(self.mp.isinf(self.term(t, j)) for (t, j) in product.coefficients):
            return math.inf
        mean_g, mean_h = self.expect(g), self.expect(h)
        return self.expect(product) - mean_g * mean_h

    def target(self, target: str):
        mp, a, b, c = self.mp, self.a, self.b, self.c
        # KL[q, p] = E_q[-L] = -(a + c); KL[p, q] = E_q[r L] = E[e^L L].
        return -(a + c) if target == "kl_qp" else self.term(1, 1)


@lru_cache(maxsize=256)
def _closed_forms(pair: GaussianPair) -> _ClosedForms:
    # Frozen dataclasses hash by value, so sweeping sliders back and forth reuses the work.
    return _ClosedForms(pair)


# --------------------------------------------------------------------------------------------------
# Any other estimator: quadrature over z
# --------------------------------------------------------------------------------------------------

def _log_abs_function(estimator: Estimator, centre: float):
    if estimator.expansion is not None:
        form = estimator.expansion - ExpPolynomial({(0, 0): centre})
        return form.log_abs

    def log_abs(log_ratio):
        with np.errstate(all="ignore"):
            return np.log(np.abs(np.asarray(estimator.value(np.asarray(log_ratio, dtype=np.float64)),
                                            dtype=np.float64) - centre))
    return log_abs


def _z_expectation(pair: GaussianPair, a: Estimator, centre_a: float = 0.0, b: Estimator | None = None,
                   centre_b: float = 0.0) -> float:
    r""":math:`\mathbb{E}_z[(a(L) - m_a)(b(L) - m_b)]` (b = 1 if None) by tanh-sinh over z, or ±inf.

    Divergence: with :math:`|a|\,|b| \sim e^{sL}` as L runs to the side where :math:`L \approx c z^2` goes
    (measured by :func:`klviz._quadrature.growth_rate`), the integrand behaves like :math:`e^{-(1 - 2sc) z^2/2}`,
    finite iff :math:`1 - 2sc > 0`. Near that boundary the integrand is a wide bump, so the integral runs
    over :math:`w = z\sqrt{1 - 2sc}` split at the bump; it is also split at 0, the quadratic's vertex, and
    wherever L crosses one of the estimators' kinks.
    """
    qa, qb, qc = pair.quadratic
    estimators = [(a, centre_a)] + ([] if b is None else [(b, centre_b)])
    log_abs = [_log_abs_function(e, m) for e, m in estimators]
    side = 1 if qc > 0 else -1
    rate = sum(_quadrature.growth_rate(f, side) for f in log_abs) if qc != 0 else 0.0
    precision = 1.0 - 2.0 * rate * qc
    if qc != 0 and precision <= 0:
        return math.inf
    scale = 1.0 / math.sqrt(precision) if 0 < precision < 1 else 1.0
    points = {0.0}
    if qc != 0:
        points.add(-qb / (2 * qc))
        if precision < 1:
            points.add(rate * qb / precision)
    for estimator, _ in estimators:
        for kink in estimator.kinks:
            points.update(_roots(qa - kink, qb, qc))
    edges = [-math.inf, *sorted(z / scale for z in points if math.isfinite(z)), math.inf]
    log_norm = math.log(scale) - 0.5 * math.log(2.0 * math.pi)

    def integrand(w):
        z = scale * np.asarray(w, dtype=np.float64)
        with np.errstate(all="ignore"):
            L = qa + z * (qb + qc * z)
            value = np.ones(z.shape)
            for estimator, centre in estimators:
                value = value * (np.asarray(estimator.value(L), dtype=np.float64) - centre)
            out = np.exp(log_norm - 0.5 * z * z) * value
        # Far nodes where a value overflowed carry no mass once the tail is known to converge.
        return np.where(np.isfinite(out), out, 0.0)

    return _quadrature.integrate(integrand, edges, f"E[{a.name}] under {pair!r}")


def _roots(a: float, b: float, c: float) -> list[float]:
    """Real roots of a + b z + c z² (none when it is identically zero)."""
    if c == 0.0:
        return [-a / b] if b != 0.0 else []
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return []
    s = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    return [s / c, a / s] if s != 0.0 else [0.0]
