r"""Exact f-divergences :math:`D_f(p, q) = \mathbb{E}_q[f(r)]` for any pair, and the second-order Taylor approximation.

:func:`f_divergence` validates, then asks the pair (its ``_f_divergence`` hook) with the generator's
:class:`GeneratorNumerics`; the pair integrates or sums with its own method. Since :math:`\mathbb{E}_q[r - 1] = 0` when p has no mass outside q's
support, f may be replaced by :math:`g(u) = f(u) - f'(1)(u - 1)`, which for convex f is never negative (the
gap between f and its tangent at 1), so no sum of terms of both signs cancels. g is written in
:math:`L = \log r` with ``expm1``/``log1p`` (sympy's C99 rewriting) and by its Taylor series in L for
:math:`|L| < 0.1`, so it keeps full relative precision as :math:`r \to 1` (gaps of 1e-6 and below).

* Gaussian pairs: :math:`\int \varphi(z)\, g(e^{a+bz+cz^2})\,dz` by tanh-sinh quadrature on the real line
  (split at 0 and, for total variation, at the kinks r = 1), products formed in log space; infinite
  values are decided exactly from the growth of g (e.g. Pearson χ² is infinite iff
  :math:`\sigma_p^2 \ge 2\sigma_q^2`), and values just inside that boundary stay accurate. Every piece
  must report convergence (``ArithmeticError`` otherwise).
* Any two scipy distributions: the integral is split smoothly between q and p,

  .. math:: D_f = \mathbb{E}_q\Big[\frac{g(r)}{1 + r^2}\Big] + \mathbb{E}_p\Big[\frac{g(r)}{r + 1/r}\Big],

  so that where r is large (p ≫ q) the integrand is carried by p and where r is small by q: both parts
  stay bounded for generators growing no faster than :math:`u^2` at ∞ and :math:`1/u` at 0. Each part
  goes through the scipy pair's own machinery: its tail test decides divergence (log-log
  slopes at |x| = 1e50 and 1e100 at an infinite end, exact for power laws; on the quantile scale at a
  finite end or where the densities underflow), and its quadrature integrates (tanh-sinh on the
  quantile scale, falling back to the x scale, ``ArithmeticError`` rather than an unconverged value).
  Generators with a kink at 1 (total variation) are integrated here instead, on the same quantile
  scale with breaks at the kinks r = 1 and at support edges, and their convergence is checked too.
* Categorical pairs: exact sums, with log r from the pair's own table (built from logit differences,
  so a KL of 1e-17 at a gap of 1e-8 keeps full relative precision).

Relative tolerance 1e-12 throughout. Masses where one density vanishes use the limits :math:`g(0^+)`
and :math:`\lim_{u\to\infty} g(u)/u = f'(\infty) - f'(1)` (Csiszár's convention :math:`0 f(p/0) = p\,
f'(\infty)`).
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from klviz import _checks
from klviz.fdiv.generators import to_float, symbol_log_ratio, symbol_u, sympy_module, get_generator

__all__ = ["GeneratorNumerics", "f_divergence", "taylor_approximation"]

# |L| below which g(e^L) is summed from its Taylor series, and the series' length: the nearest
# singularity of our generators' g in the complex L-plane is at distance π (log1p(e^L) in JS), so the
# truncation error is ~ (0.1/π)^16 relative, and expm1/log1p forms are accurate to ~1e-14 above 0.1.
_SERIES_CUTOFF = 0.1
_SERIES_ORDER = 18
_RTOL = 1e-12
_MP_DPS = 40




class GeneratorNumerics:
    """Float and mpmath versions of g(e^L) = f(e^L) - f'(1)(e^L - 1), and its limits, for one generator.

    What a pair's ``_f_divergence(numerics)`` hook uses: ``g`` and ``times_weight`` (pointwise, accurate near
    L = 0 and in log space where floats overflow), ``weighted``/``log_abs_weighted`` (the two parts of the
    q/p split), ``times_envelope`` (near a divergence boundary), ``growth`` (power growth at 0 and ∞),
    ``at_zero`` and ``per_mass_at_infinity`` (Csiszár's limits), ``smooth`` (no kink at 1) and ``mp``.
    """

    def __init__(self, generator):
        import mpmath
        from sympy.codegen.rewriting import optimize, optims_c99

        sp = sympy_module()
        u, L = symbol_u(), symbol_log_ratio()
        f = generator.expression
        slope = generator.derivative_at_1(1)
        # Where f has a kink at 1 (total variation) any subgradient works; 0 is one of them for ½|u-1|.
        if slope is sp.nan:
            slope = sp.Integer(0)
        self.smooth = generator.twice_differentiable_at_1
        g = f - slope * (u - 1)
        g_of_log = sp.expand_log(sp.powsimp(g.subs(u, sp.exp(L))), force=True)
        self.g_numpy = sp.lambdify(L, optimize(g_of_log, optims_c99), modules="numpy")
        self.g_mpmath = sp.lambdify(L, g_of_log, modules="mpmath")
        # lambdify's mpmath functions use mpmath's global context: evaluate inside mpmath.workdps(...).
        self.mp = mpmath
        #: g(0+): the integrand where p = 0 < q; and lim g(u)/u: per unit of p-mass where q = 0 < p.
        self.at_zero = to_float(sp.limit(g, u, 0, "+"))
        self.per_mass_at_infinity = to_float(sp.limit(g / u, u, sp.oo))
        self.series = self._series() if self.smooth else None

    @cached_property
    def growth(self) -> tuple[float, float]:
        """(α, β) with |g(u)| ~ u^α as u -> ∞ and ~ u^β as u -> 0, up to logarithmic factors.

        Measured as log-log slopes at L = ±10⁶ and ±2·10⁶ in mpmath, where a factor (log u)^k moves the
        slope by k·7e-7: rounding to 3 decimals leaves the power alone.
        """
        mp = self.mp
        with mp.workdps(_MP_DPS):
            def log_abs_g(x):
                value = abs(self.g_mpmath(mp.mpf(x)))
                return -mp.inf if value == 0 else mp.log(value)

            alpha = (log_abs_g(2e6) - log_abs_g(1e6)) / mp.mpf(1e6)
            beta = (log_abs_g(-2e6) - log_abs_g(-1e6)) / mp.mpf(-1e6)
            return tuple(round(float(x), 3) if mp.isfinite(x) else 0.0 for x in (alpha, beta))

    def _series(self) -> np.ndarray | None:
        """Taylor coefficients of g(e^L) at L = 0, highest first; None if they fail a spot check."""
        mp = self.mp
        with mp.workdps(2 * _MP_DPS):
            coeffs = mp.taylor(lambda x: self.g_mpmath(x), 0, _SERIES_ORDER)
            series = np.array([float(c) for c in coeffs[::-1]])
            # A derivative of order above 2 could still jump at 1 (custom generators): check the series
            # against the direct high-precision value on both sides before trusting it.
            exact = [float(self.g_mpmath(mp.mpf(x))) for x in (-_SERIES_CUTOFF, -0.03, 0.03, _SERIES_CUTOFF)]
        for x, exact in zip((-_SERIES_CUTOFF, -0.03, 0.03, _SERIES_CUTOFF), exact):
            approx = float(np.polyval(series, x))
            if not math.isclose(approx, exact, rel_tol=1e-13, abs_tol=1e-300):
                return None
        return series

    def g(self, log_ratio: np.ndarray) -> np.ndarray:
        """g(e^L) for finite L, full relative precision near L = 0, mpmath where floats overflow."""
        L = np.asarray(log_ratio, dtype=np.float64)
        with np.errstate(all="ignore"):
            out = np.array(np.broadcast_to(self.g_numpy(L), L.shape), dtype=np.float64)
        if self.series is not None:
            small = np.abs(L) < _SERIES_CUTOFF
            if small.any():
                out[small] = np.polyval(self.series, L[small])
        return out

    def times_weight(self, log_ratio: np.ndarray, log_weight: np.ndarray) -> np.ndarray:
        """g(e^L) · e^{log_weight} for finite L; mpmath where the float product over- or underflows."""
        with np.errstate(all="ignore"):
            values = self.g(log_ratio) * np.exp(log_weight)
        bad = ~np.isfinite(values)
        if bad.any():  # g overflowed (L in the hundreds): redo those points in mpmath...
            L, w = log_ratio[bad], log_weight[bad]
            # ...unless a generous bound on log|g| (power growth plus slack for log factors) shows the
            # product underflows anyway, as at the far nodes of an infinite-interval rule.
            alpha, beta = self.growth
            bound = np.where(L > 0, max(alpha, 0.0) * L, min(beta, 0.0) * L) + 20.0 * np.log1p(np.abs(L)) + 50.0
            redo = np.zeros(L.shape)
            needed = w + bound > -800.0
            redo[needed] = [float(self._times_weight_mp(x, y)) for x, y in zip(L[needed], w[needed])]
            values[bad] = redo
        return values

    def _times_weight_mp(self, log_ratio: float, log_weight: float):
        mp = self.mp
        with mp.workdps(_MP_DPS):
            return self.g_mpmath(mp.mpf(log_ratio)) * mp.exp(log_weight)

    def times_envelope(self, log_ratio: np.ndarray, power: float, log_envelope: np.ndarray) -> np.ndarray:
        r""":math:`g(e^L)\, e^{-tL} e^{E}` in mpmath, for large L on the side where :math:`g \sim e^{tL}`.

        There :math:`g e^{-tL}` varies like a power of L, so the rounding of a huge L (1e-16·|L| absolute)
        leaves it alone; the caller forms E = (log weight) + tL in closed form, without the cancellation
        of two terms of size |L| that makes the plain product noisy near a divergence boundary.
        """
        L, E = np.asarray(log_ratio, dtype=np.float64), np.asarray(log_envelope, dtype=np.float64)
        out = np.zeros(L.shape)
        needed = E + 20.0 * np.log1p(np.abs(L)) + 50.0 > -800.0  # else the product underflows anyway
        mp = self.mp
        with mp.workdps(_MP_DPS):
            out[needed] = [float(self.g_mpmath(mp.mpf(x)) * mp.exp(e - power * mp.mpf(x)))
                           for x, e in zip(L[needed].tolist(), E[needed].tolist())]
        return out

    @staticmethod
    def log_weight(log_ratio: np.ndarray, side: str) -> np.ndarray:
        r"""log of the split weight: :math:`-\log(1 + r^2)` under q, :math:`-\log(r + 1/r)` under p."""
        L = np.asarray(log_ratio, dtype=np.float64)
        if side == "q":
            return -np.logaddexp(0.0, 2.0 * L)
        return -np.abs(L) - np.log1p(np.exp(-2.0 * np.abs(L)))

    def weighted(self, log_ratio: np.ndarray, side: str) -> np.ndarray:
        r"""The integrand of one part: :math:`g/(1+r^2)` under q, :math:`g/(r + 1/r)` under p."""
        L = np.asarray(log_ratio, dtype=np.float64)
        out = np.zeros_like(L)
        finite = np.isfinite(L)
        out[finite] = self.times_weight(L[finite], self.log_weight(L[finite], side))
        # L = -inf (p = 0 < q) only carries q-mass, L = +inf (q = 0 < p) only p-mass.
        if side == "q":
            out[L == -np.inf] = self.at_zero
        else:
            out[L == np.inf] = self.per_mass_at_infinity
        return out

    def log_abs_weighted(self, log_ratio: float, side: str) -> float:
        """log|integrand| in high precision, for the tail-slope test at extreme L."""
        if log_ratio == -math.inf:
            value = self.at_zero if side == "q" else 0.0
        elif log_ratio == math.inf:
            value = self.per_mass_at_infinity if side == "p" else 0.0
        else:
            mp = self.mp
            with mp.workdps(_MP_DPS):
                log_weight = float(self.log_weight(log_ratio, side))
                product = abs(self._times_weight_mp(log_ratio, log_weight))
                return -math.inf if product == 0 else float(mp.log(product))
        return math.log(abs(value)) if value != 0 else -math.inf


def f_divergence(pair, generator) -> float:
    r"""The exact f-divergence :math:`D_f(p, q) = \mathbb{E}_{x\sim q}[f(p(x)/q(x))]`.

    With :math:`g(u) = f(u) - f'(1)(u - 1) \ge 0` (same integral, no cancellation) and Csiszár's
    convention for mass where one density vanishes,

    .. math:: D_f = \sum_{q > 0,\, p > 0} q\, g(r) \;+\; g(0^+)\, Q(p = 0)
              \;+\; \lim_{u\to\infty}\frac{g(u)}{u}\, P(q = 0),

    summed exactly for a :class:`~klviz.CategoricalPair`; an integral by tanh-sinh quadrature for a
    :class:`~klviz.GaussianPair` (over z, with x = μ_q + σ_q z) or a :class:`~klviz.ScipyPair` (on the
    quantile scales of q and p, or on x; see the module docstring). Relative tolerance 1e-12, and each
    quadrature piece must report convergence (otherwise ``ArithmeticError``, never an unconverged
    number); accuracy 1e-10 relative or better in the tests, also for gaps of 1e-6. Divergent values
    are ``math.inf``: decided exactly for Gaussians, from the tails for scipy pairs.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
        q (the measure of the expectation) and p.
    generator : str or Generator
        A name in :data:`GENERATORS` — ``"kl_qp"``, ``"kl_pq"``, ``"half_log_sq"``, ``"pearson"``,
        ``"neyman"``, ``"hellinger"``, ``"jensen_shannon"``, ``"total_variation"`` — or a :class:`Generator`.

    Returns
    -------
    float
        :math:`D_f(p, q)`, possibly ``math.inf``.

    Raises
    ------
    TypeError
        If ``pair`` or ``generator`` has the wrong type.
    ValueError
        If ``generator`` is an unknown name.
    ArithmeticError
        If the quadrature does not converge (an integrand too close to non-integrable for a reliable
        value, e.g. a power-law tail barely integrable; scipy pairs only in practice).

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> pair = GaussianPair(mu_p=1.0)
    >>> round(f_divergence(pair, "kl_qp"), 12)           # μ²/2
    0.5
    >>> round(f_divergence(pair, "pearson"), 12)         # e^{μ²} - 1
    1.718281828459
    >>> f_divergence(GaussianPair(mu_p=0.0, sigma_p=2.0), "pearson")   # σ_p² ≥ 2σ_q²
    inf
    """
    pair = _checks.pair(pair)
    generator = get_generator(generator)
    return float(pair._f_divergence(generator._numerics))


def taylor_approximation(pair, generator) -> float:
    r"""The second-order Taylor approximation :math:`D_f \approx \tfrac12 f''(1)\, \chi^2(p\|q)`.

    From :math:`f(1+\varepsilon) = f'(1)\varepsilon + \tfrac12 f''(1)\varepsilon^2 + O(\varepsilon^3)` with
    :math:`\varepsilon = r - 1` and :math:`\mathbb{E}_q[\varepsilon] = 0`:

    .. math:: D_f(p, q) \approx \tfrac12 f''(1)\,\chi^2(p\|q),\qquad
              \chi^2(p\|q) = D_{(u-1)^2}(p, q) = \mathbb{E}_q[(r-1)^2] + \infty \cdot P_p(q = 0),

    the Pearson divergence from :func:`f_divergence` (Csiszár's convention for p-mass where q = 0).
    When p has no mass outside q's support, :math:`\mathbb{E}_q[r] = 1` and
    :math:`\chi^2 = \mathbb{E}_q[r^2] - 1 = \mathrm{Var}_q(r)`, computed here without that
    subtraction (full relative precision at gaps of 1e-6 and below). When p does have mass there,
    :math:`\mathbb{E}_q[\varepsilon] = -P_p(q = 0) \ne 0`, the premise fails, χ² is infinite and so is
    the approximation.

    Accuracy. With :math:`m_k = \mathbb{E}_q[\varepsilon^k]`, the relative error is

    .. math:: \frac{D_f}{\tfrac12 f''(1)\chi^2} - 1 = \frac{f'''(1)}{3 f''(1)}\,\frac{m_3}{m_2}
              + \frac{f''''(1)}{12 f''(1)}\,\frac{m_4}{m_2} + \dots

    (zero for Pearson χ², whose generator is the parabola). It is first order in the gap when the pair is
    skewed, :math:`m_3 \sim \text{gap}^3` — for a Gaussian scale change :math:`\sigma_p = 1 + \delta`,
    :math:`\tfrac43 \tfrac{f'''(1)}{f''(1)}\,\delta + O(\delta^2)` — and second order when :math:`m_3`
    is of fourth order like :math:`m_4`: for a Gaussian mean shift both are :math:`3\mu^4 + O(\mu^6)`,
    so the two terms enter together and the relative error is
    :math:`\frac{f'''(1) + f''''(1)/4}{f''(1)}\,\mu^2 + O(\mu^4)` (:math:`-\mu^2/2` for KL). "Symmetric"
    here is a property of the pair, not of the generator: a symmetric generator (Hellinger,
    Jensen–Shannon) still has a first-order error for a scale change.

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
    generator : str or Generator
        As in :func:`f_divergence`.

    Returns
    -------
    float
        ±``inf`` (the sign of f''(1)) where :math:`\chi^2(p\|q)` is infinite.

    Raises
    ------
    TypeError
        If ``pair`` or ``generator`` has the wrong type.
    ValueError
        If the generator is not twice differentiable at 1 (total variation), or an unknown name.
    ArithmeticError
        If the quadrature for χ² does not converge (see :func:`f_divergence`).

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> round(taylor_approximation(GaussianPair(mu_p=0.1), "kl_qp"), 10)   # ½ (e^{0.01} - 1)
    0.0050250835
    """
    generator = get_generator(generator)
    curvature = generator.curvature_at_1
    if math.isnan(curvature):
        raise ValueError(
            f"generator {generator.name!r} is not twice differentiable at u = 1, so it has no second-order "
            "Taylor approximation"
        )
    chi_squared = f_divergence(pair, "pearson")
    if math.isinf(chi_squared):
        return math.inf if curvature > 0 else (-math.inf if curvature < 0 else math.nan)
    return 0.5 * curvature * chi_squared
