r"""f-divergences: generators f with their sympy expressions, exact values, and the Taylor argument.

An f-divergence compares p with q through the ratio :math:`u = r = p/q` at draws from q,

.. math:: D_f(p, q) = \mathbb{E}_{x\sim q}\big[f(r(x))\big] = \int q(x)\, f\!\Big(\frac{p(x)}{q(x)}\Big)\,dx,
          \qquad f \text{ convex},\ f(1) = 0,

so it is zero when p = q and, by Jensen, never negative (for convex f). Each :class:`Generator` holds f as one sympy
expression in the positive symbol u — the single source from which f, f', f'' (numpy, via
``sympy.lambdify``), :math:`f^{(n)}(1)` (exact) and the integrands of :func:`f_divergence` are derived.

The registry :data:`GENERATORS` (natural logarithms; the conventions chosen where several exist):

* ``kl`` — :math:`f = -\log u`: KL[q, p], the mean of k1 and k3; f''(1) = 1.
* ``reverse_kl`` — :math:`f = u\log u`: KL[p, q], the mean of k1_reverse and k3_reverse; f''(1) = 1.
* ``half_log_sq`` — :math:`f = \tfrac12(\log u)^2`: :math:`\mathbb{E}_q[k_2]`; f''(1) = 1.
* ``pearson`` — :math:`f = (u-1)^2`: :math:`\chi^2(p\|q) = \mathbb{E}_q[r^2] - 1`; f''(1) = 2.
* ``neyman`` — :math:`f = (1-u)^2/u`: :math:`\chi^2(q\|p)`; f''(1) = 2.
* ``hellinger`` — :math:`f = (\sqrt u - 1)^2`: :math:`\int(\sqrt p - \sqrt q)^2 = 2 - 2\int\sqrt{pq} \in [0, 2]`
  (no factor ½); f''(1) = 1/2.
* ``jensen_shannon`` — :math:`f = \tfrac12\big[u\log\frac{2u}{1+u} + \log\frac{2}{1+u}\big]`:
  :math:`\tfrac12\mathrm{KL}(p\|m) + \tfrac12\mathrm{KL}(q\|m)`, :math:`m = \tfrac12(p+q)`, in [0, log 2]; f''(1) = 1/4.
* ``total_variation`` — :math:`f = \tfrac12|u-1|`: :math:`\tfrac12\int|p-q| \in [0, 1]`; a kink at 1, no f''(1).

The Taylor argument (Schulman 2020; notebook 02): with :math:`r = 1 + \varepsilon`,
:math:`f(1+\varepsilon) = f(1) + f'(1)\varepsilon + \tfrac12 f''(1)\varepsilon^2 + O(\varepsilon^3)`, f(1) = 0 and
:math:`\mathbb{E}_q[\varepsilon] = \int p - \int q = 0`, so
:math:`D_f \approx \tfrac12 f''(1)\,\mathbb{E}_q[(r-1)^2] = \tfrac12 f''(1)\,\chi^2(p\|q)` —
:func:`taylor_approximation`. Total variation is not differentiable at 1 and escapes the argument.
For a smooth parametric family with q = p_0 and p = p_θ, :math:`r - 1 = \theta^\top\nabla_\theta\log p_\theta
+ O(|\theta|^2)` gives :math:`\chi^2 = \theta^\top F\theta + O(|\theta|^3)` with F the Fisher information at
θ = 0, hence Schulman's form :math:`D_f \approx \tfrac12 f''(1)\,\theta^\top F\theta` (the same to this
order with p and q exchanged).

How fast the ratio converges depends on the pair as well as on f. With :math:`m_k = \mathbb{E}_q[(r-1)^k]`,

.. math:: \frac{D_f}{\mathrm{KL}[q,p]} - f''(1) = \frac{f'''(1) + 2f''(1)}{3}\,\frac{m_3}{m_2} + O(\text{gap}^2),

first order in the gap when the perturbation is skewed (:math:`m_3 \sim \text{gap}^3`; for q = N(0, 1),
p = N(0, (1+δ)²), :math:`m_3/m_2 = 4\delta + O(\delta^2)`). When :math:`m_3` is itself of fourth order that
term is no larger than the remainder, and it gives the wrong coefficient (often with the wrong sign): for the
mean shift q = N(0, 1), p = N(μ, 1), :math:`m_3 = 3\mu^4 + O(\mu^6)` and :math:`m_4 = 3\mu^4 + O(\mu^6)` are
of the same order, and

.. math:: \frac{D_f}{\mathrm{KL}[q,p]}
          = f''(1) + \Big(\tfrac12 f''(1) + f'''(1) + \tfrac14 f''''(1)\Big)\mu^2 + O(\mu^4)

(derived, tabulated and checked in notebook 02; e.g. :math:`+\mu^2/4` for ½(log u)², :math:`-\mu^2/32` for
squared Hellinger).

Convexity. Every registry generator is convex on (0, ∞) except ½(log u)², which is convex only for
u ≤ e (f'' = (1 - log u)/u²); it is still never negative, so E_q[k2] ≥ 0, and it is convex near 1,
which is all the Taylor argument uses.

Numerics of :func:`f_divergence`. Since :math:`\mathbb{E}_q[r - 1] = 0` when p has no mass outside q's
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
  goes through the scipy back end of :mod:`klviz.exact`: its tail test decides divergence (log-log
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

sympy is imported on first use, not with ``import klviz``.

References: I. Csiszár (1967), "Information-type measures of difference of probability distributions";
S. M. Ali and S. D. Silvey (1966); J. Schulman, "Approximating KL Divergence" (2020),
http://joschu.net/blog/kl-approx.html (k2, f''(1), and the Fisher-information form); M. Shannon (2020),
"Properties of f-divergences and f-GAN training", arXiv:2009.00757 (all f-divergences agree up to a scale
factor between nearby distributions, for f strictly convex and twice continuously differentiable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from klviz.pairs import CategoricalPair, GaussianPair, Pair, ScipyPair

__all__ = ["Generator", "GENERATORS", "get_generator", "f_divergence", "taylor_approximation"]

# |L| below which g(e^L) is summed from its Taylor series, and the series' length: the nearest
# singularity of our generators' g in the complex L-plane is at distance π (log1p(e^L) in JS), so the
# truncation error is ~ (0.1/π)^16 relative, and expm1/log1p forms are accurate to ~1e-14 above 0.1.
_SERIES_CUTOFF = 0.1
_SERIES_ORDER = 18
_RTOL = 1e-12
_MP_DPS = 40
# Symbols that make a generator possibly non-smooth; otherwise derivatives at 1 are plain substitution.
_NON_SMOOTH = ("Abs", "sign", "Piecewise", "Heaviside", "Max", "Min", "floor", "ceiling")


def _sympy():
    import sympy

    return sympy


def _symbol_u():
    sp = _sympy()
    return sp.Symbol("u", positive=True)


def _symbol_log_ratio():
    sp = _sympy()
    return sp.Symbol("L", real=True)


def _to_float(value) -> float:
    """A sympy number as a float: ±oo -> ±inf, nan or non-numbers -> nan."""
    sp = _sympy()
    value = sp.sympify(value)
    if value in (sp.oo, -sp.oo):
        return math.inf if value == sp.oo else -math.inf
    if value.has(sp.zoo, sp.nan) or not value.is_number:
        return math.nan
    try:
        return float(value)
    except TypeError:  # a complex or unevaluated number
        return math.nan


class _Numerics:
    """Float and mpmath versions of g(e^L) = f(e^L) - f'(1)(e^L - 1), and its limits, for one generator."""

    def __init__(self, generator: "Generator"):
        import mpmath
        from sympy.codegen.rewriting import optimize, optims_c99

        sp = _sympy()
        u, L = _symbol_u(), _symbol_log_ratio()
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
        self.at_zero = _to_float(sp.limit(g, u, 0, "+"))
        self.per_mass_at_infinity = _to_float(sp.limit(g / u, u, sp.oo))
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


@dataclass(frozen=True)
class Generator:
    r"""A generator f of an f-divergence, :math:`D_f(p, q) = \mathbb{E}_q[f(p/q)]`, as a sympy expression.

    Everything numeric is derived from ``expr``: :meth:`f`, :meth:`f_prime`, :meth:`f_second` by
    ``sympy.lambdify`` of the expression and its derivatives, :meth:`derivative_at_1` exactly.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"kl"``.
    label : str
        Human-readable name for tables and legends, e.g. ``"KL[q,p]"``.
    expr : str or sympy.Expr
        f as an expression in the (positive) variable ``u``. A string is parsed by ``sympy.sympify`` on
        first use, which keeps sympy out of ``import klviz``; it is validated then (only the symbol u,
        and f(1) = 0). Convexity is the caller's promise: it makes :math:`D_f \ge 0`, and without it
        :func:`f_divergence` still integrates :math:`\mathbb{E}_q[f(r)]`.

    Raises
    ------
    TypeError
        If ``name`` or ``label`` is not a string, or ``expr`` is neither a string nor a sympy expression.
    ValueError
        If ``name`` is empty; on first use, if ``expr`` does not parse, has symbols other than u, or
        :math:`f(1) \ne 0`.

    Examples
    --------
    >>> kl = Generator("kl", "KL[q,p]", "-log(u)")
    >>> kl.curvature_at_1, float(kl.f(2.0)), float(kl.f_second(2.0))
    (1.0, -0.6931471805599453, 0.25)
    """

    name: str
    label: str
    expr: object

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        if not self.name:
            raise ValueError("name must not be empty")
        if not isinstance(self.label, str):
            raise TypeError(f"label must be a string, got {type(self.label).__name__}")
        if not isinstance(self.expr, str):
            sp = _sympy()
            if not isinstance(self.expr, sp.Basic):
                raise TypeError(
                    f"expr must be a string or a sympy expression in u, got {type(self.expr).__name__}"
                )

    def __repr__(self) -> str:
        return f"Generator({self.name!r}, {self.label!r}, f(u) = {self.expr})"

    # ---------------------------------------------------------------------------------- symbolic --
    @cached_property
    def expression(self):
        """f as a sympy expression in the positive symbol u (parsed and validated once)."""
        sp = _sympy()
        u = _symbol_u()
        if isinstance(self.expr, str):
            try:
                expr = sp.sympify(self.expr, locals={"u": u})
            except (sp.SympifyError, SyntaxError, TypeError) as error:
                raise ValueError(
                    f"expr {self.expr!r} of generator {self.name!r} does not parse: {error}"
                ) from None
        else:
            expr = self.expr
        # A user's own Symbol("u") (without assumptions) becomes ours.
        expr = expr.subs({s: u for s in expr.free_symbols if s.name == "u"})
        extra = expr.free_symbols - {u}
        if extra:
            raise ValueError(
                f"expr of generator {self.name!r} must depend on u only, got symbols {sorted(map(str, extra))}"
            )
        at_one = sp.simplify(expr.subs(u, 1))
        if at_one != 0:
            raise ValueError(f"a generator must have f(1) = 0; {self.name!r} has f(1) = {at_one}")
        return expr

    @property
    def latex(self) -> str:
        """f(u) in LaTeX (for tables)."""
        return _sympy().latex(self.expression)

    def derivative(self, order: int):
        r"""The symbolic derivative :math:`f^{(n)}(u)` (sympy expression; n = 0 is f itself)."""
        order = _order(order)
        cache = self.__dict__.setdefault("_derivatives", {})
        if order not in cache:
            cache[order] = _sympy().diff(self.expression, _symbol_u(), order) if order else self.expression
        return cache[order]

    def derivative_at_1(self, order: int):
        r"""The exact :math:`f^{(n)}(1)` as a sympy number; ``sympy.nan`` if f is not n times
        differentiable at 1 (left and right limits of some :math:`f^{(k)}`, k ≤ n, differ or are infinite).

        Examples
        --------
        >>> GENERATORS["half_log_sq"].derivative_at_1(3)
        -3
        >>> GENERATORS["total_variation"].derivative_at_1(2)
        nan
        """
        order = _order(order)
        cache = self.__dict__.setdefault("_at_one", {})
        if order not in cache:
            cache[order] = self._derivative_at_1(order)
        return cache[order]

    def _derivative_at_1(self, order: int):
        sp = _sympy()
        u = _symbol_u()
        if order == 0:
            return sp.Integer(0)
        if not any(self.expression.has(getattr(sp, name)) for name in _NON_SMOOTH):
            value = sp.simplify(self.derivative(order).subs(u, 1))
            return value if value.is_finite else sp.nan
        value = sp.nan
        for k in range(1, order + 1):
            d = self.derivative(k)
            left, right = sp.limit(d, u, 1, "-"), sp.limit(d, u, 1, "+")
            if not (left.is_finite and right.is_finite) or sp.simplify(left - right) != 0:
                return sp.nan
            value = right
        return sp.simplify(value)

    @property
    def curvature_at_1(self) -> float:
        r""":math:`f''(1)` (computed symbolically, returned as a float); NaN where f has a kink at 1."""
        return _to_float(self.derivative_at_1(2))

    @property
    def twice_differentiable_at_1(self) -> bool:
        """Whether f'' exists at u = 1, the premise of the second-order Taylor argument."""
        return not math.isnan(self.curvature_at_1)

    @property
    def symmetric(self) -> bool:
        r"""Whether :math:`D_f(p, q) = D_f(q, p)` for all p, q: the conjugate :math:`u f(1/u)` equals f up to
        a multiple of (u - 1) (which integrates to zero). Checked at 40 digits at several u."""
        import mpmath

        f = self._f_mpmath
        with mpmath.workdps(_MP_DPS):
            points = [mpmath.mpf(x) for x in ("0.3", "0.7", "1.9", "3.1", "11")]
            slopes = [(f(x) - x * f(1 / x)) / (x - 1) for x in points]
            return all(abs(s - slopes[0]) < mpmath.mpf(10) ** (-30) for s in slopes)

    # ----------------------------------------------------------------------------------- numeric --
    @cached_property
    def _numerics(self) -> _Numerics:
        return _Numerics(self)

    @cached_property
    def _f_mpmath(self) -> Callable:
        return _sympy().lambdify(_symbol_u(), self.expression, modules="mpmath")

    def _derivative_numpy(self, order: int) -> tuple[Callable, float, float]:
        cache = self.__dict__.setdefault("_numpy", {})
        if order not in cache:
            sp = _sympy()
            u = _symbol_u()
            expr = self.derivative(order)
            # d/du |u - 1| brings DiracDelta(u - 1); away from the kink it is 0 (the kink is set to NaN).
            expr = expr.replace(sp.DiracDelta, lambda *args: sp.Integer(0))
            at_zero = _to_float(sp.limit(expr, u, 0, "+"))
            at_infinity = _to_float(sp.limit(expr, u, sp.oo))
            cache[order] = (sp.lambdify(u, expr, modules="numpy"), at_zero, at_infinity)
        return cache[order]

    def _evaluate(self, u, order: int):
        arr = np.asarray(u)
        real = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        if arr.dtype == np.bool_ or not real:
            raise TypeError(f"u must be a real number or an array of real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if np.isnan(arr).any() or (arr < 0).any():
            raise ValueError("u must be non-negative (a ratio of densities p/q); got a negative value or NaN")
        function, at_zero, at_infinity = self._derivative_numpy(order)
        with np.errstate(all="ignore"):
            out = np.array(np.broadcast_to(function(arr), arr.shape), dtype=np.float64)
        out[arr == 0] = at_zero
        out[arr == np.inf] = at_infinity
        if order >= 1 and not self.twice_differentiable_at_1:
            if math.isnan(_to_float(self.derivative_at_1(order))):  # a kink at 1: no derivative there
                out[arr == 1] = np.nan
        return out[()] if arr.ndim == 0 else out

    def f(self, u):
        r""":math:`f(u)`, vectorised; the limits at u = 0 and u = ∞ where the formula gives 0·∞.

        Parameters
        ----------
        u : float or array_like
            Ratios p/q ≥ 0.

        Returns
        -------
        numpy scalar or ndarray of float64

        Raises
        ------
        TypeError
            If ``u`` is not real.
        ValueError
            If ``u`` is negative or NaN.

        Examples
        --------
        >>> GENERATORS["reverse_kl"].f([0.0, 1.0, np.e])
        array([0.        , 0.        , 2.71828183])
        """
        return self._evaluate(u, 0)

    def f_prime(self, u):
        r""":math:`f'(u)`, vectorised (NaN at a kink). Same conventions as :meth:`f`.

        Examples
        --------
        >>> GENERATORS["pearson"].f_prime([0.5, 1.0, 2.0])
        array([-1.,  0.,  2.])
        """
        return self._evaluate(u, 1)

    def f_second(self, u):
        r""":math:`f''(u)`, vectorised (NaN at a kink). Same conventions as :meth:`f`.

        Examples
        --------
        >>> GENERATORS["kl"].f_second([0.5, 1.0, 2.0])
        array([4.  , 1.  , 0.25])
        """
        return self._evaluate(u, 2)


def _order(order) -> int:
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an integer, got {type(order).__name__}")
    if order < 0:
        raise ValueError(f"order must be non-negative, got {order}")
    return int(order)


#: The generators of notebook 02, by name (see the module docstring for conventions).
GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator("kl", "KL[q,p]", "-log(u)"),
        Generator("reverse_kl", "KL[p,q]", "u*log(u)"),
        Generator("half_log_sq", "½(log u)² = E[k2]", "log(u)**2/2"),
        Generator("pearson", "Pearson χ²(p‖q)", "(u - 1)**2"),
        Generator("neyman", "Neyman χ²(q‖p)", "(1 - u)**2/u"),
        Generator("hellinger", "squared Hellinger", "(sqrt(u) - 1)**2"),
        Generator("jensen_shannon", "Jensen–Shannon", "(u*log(2*u/(1 + u)) + log(2/(1 + u)))/2"),
        Generator("total_variation", "total variation", "Abs(u - 1)/2"),
    )
}


def get_generator(generator) -> Generator:
    """Look a generator up by name in :data:`GENERATORS` (a :class:`Generator` passes through).

    Examples
    --------
    >>> get_generator("pearson").label
    'Pearson χ²(p‖q)'
    """
    if isinstance(generator, Generator):
        return generator
    if not isinstance(generator, str):
        raise TypeError(
            f"generator must be a Generator or a name, one of {sorted(GENERATORS)}, "
            f"got {type(generator).__name__}"
        )
    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {sorted(GENERATORS)}, got {generator!r}")
    return GENERATORS[generator]


# --------------------------------------------------------------------------------------------------
# Quadrature bookkeeping, and continuous pairs through klviz.exact's scipy quadrature
# --------------------------------------------------------------------------------------------------

def _checked_sum(results, what: str) -> float:
    """The sum of piecewise tanh-sinh integrals; ArithmeticError unless every piece converged.

    A piece counts as converged by tanh-sinh's own verdict (:func:`klviz.exact._converged`) or when its
    error is negligible against the whole (a piece that is ~0, e.g. beyond a kink or next to a
    support edge, cannot reach a relative tolerance of its own) — the rule :mod:`klviz.exact` uses."""
    from klviz import _quadrature

    total, converged = _quadrature.combine(results)
    if not converged:
        raise ArithmeticError(
            f"quadrature did not converge for {what}: the integrand is too close to non-integrable "
            "for a reliable value"
        )
    return total


def _log_abs_part(numerics: _Numerics, side: str) -> Callable:
    """log|integrand| of one part as a vectorised function of log r (mpmath: exact at extreme L)."""
    def log_abs(log_ratio):
        L = np.asarray(log_ratio, dtype=np.float64)
        out = [math.nan if math.isnan(x) else numerics.log_abs_weighted(x, side) for x in L.ravel().tolist()]
        return np.array(out, dtype=np.float64).reshape(L.shape)

    return log_abs


def _mass_outside(dist, support: tuple[float, float]) -> float:
    """The mass of ``dist`` outside the interval ``support`` (of the other distribution)."""
    low, high = support
    return float(dist.cdf(low) + dist.sf(high))


def _scipy_divergence(pair: ScipyPair, numerics: _Numerics) -> float:
    r""":math:`\mathbb{E}_q[g/(1+r^2)] + \mathbb{E}_p[g/(r+1/r)]` plus Csiszár's term for p-mass where q = 0.

    Both parts go through :class:`klviz.exact._ScipyBackend`: its tail test decides divergence and its
    quadrature integrates (checked, with an x-scale fallback; ArithmeticError rather than an
    unconverged value). Where the backend reports log r as NaN (x outside q's support) nothing is
    integrated, so the p-mass there enters in closed form, :math:`\lim g(u)/u \cdot P_p(q = 0)`; the
    q-mass where p = 0 is integrated (log r = -∞ there, the integrand is g(0+)).
    """
    backend = pair  # the pair's own tail tests and quadrature
    q_outside = _mass_outside(pair.q, pair.p.support())  # q-mass where p = 0: weight g(0+)
    p_outside = _mass_outside(pair.p, pair.q.support())  # p-mass where q = 0: weight lim g(u)/u
    for mass, weight in ((q_outside, numerics.at_zero), (p_outside, numerics.per_mass_at_infinity)):
        if mass > 0.0 and math.isinf(weight):
            return math.inf
    log_abs = {side: _log_abs_part(numerics, side) for side in ("q", "p")}
    if not all(backend._converges(log_abs[side], under=side) for side in ("q", "p")):
        return math.inf
    total = p_outside * numerics.per_mass_at_infinity if p_outside > 0.0 else 0.0
    for side in ("q", "p"):
        if numerics.smooth:
            total += backend._integrate(lambda L, side=side: numerics.weighted(L, side), log_abs[side], under=side)
        else:
            total += _integrate_across_kinks(backend, pair, numerics, side)
    return total


def _integrate_across_kinks(backend, pair: ScipyPair, numerics: _Numerics, side: str) -> float:
    """One part for a generator with a kink at r = 1 (total variation), which the backend's quadrature
    does not split at: tanh-sinh on the side's quantile scale (halves split at ½, ``isf`` for the
    upper one), with breaks at the other distribution's support edges and where log r changes sign."""
    from scipy.integrate import tanhsinh

    dist, other = (pair.q, pair.p) if side == "q" else (pair.p, pair.q)
    low, high = dist.support()
    results = []
    for upper in (False, True):
        def log_ratio_at(u, upper=upper):
            u = np.asarray(u, dtype=np.float64)
            return np.asarray(backend._at_x(dist.isf(u) if upper else dist.ppf(u), side)[1], dtype=np.float64)

        def integrand(u, log_ratio_at=log_ratio_at):
            log_ratio = log_ratio_at(u)
            values = np.zeros_like(log_ratio)
            ok = ~np.isnan(log_ratio)  # NaN: outside q's support (p-mass there is added in closed form)
            values[ok] = numerics.weighted(log_ratio[ok], side)
            return values

        edges = [float(dist.sf(e) if upper else dist.cdf(e)) for e in other.support() if low < e < high]
        levels = sorted({0.0, 0.5} | {v for v in (*edges, *_sign_changes(log_ratio_at)) if 0.0 < v < 0.5})
        results += [tanhsinh(integrand, a, b, rtol=_RTOL, atol=0.0) for a, b in zip(levels[:-1], levels[1:])]
    return _checked_sum(results, f"{pair!r} under {side}")


def _sign_changes(log_ratio_at: Callable) -> list[float]:
    """Quantile levels in (0, ½) where a finite log r changes sign, bracketed on a grid and refined by
    Brent's method (jumps to ±∞ are support edges, already breaks)."""
    from scipy.optimize import brentq

    grid = np.concatenate([np.logspace(-60, -3, 120), np.linspace(1e-3, 0.5, 200)[1:]])
    values = log_ratio_at(grid)
    with np.errstate(invalid="ignore"):
        bracket = np.isfinite(values[:-1]) & np.isfinite(values[1:]) & (values[:-1] * values[1:] < 0)
    return [brentq(lambda v: float(log_ratio_at(v)), grid[i], grid[i + 1], xtol=1e-300,
                   rtol=4 * np.finfo(float).eps) for i in np.flatnonzero(bracket)]


def _quadratic_roots(a: float, b: float, c: float) -> list[float]:
    """Real roots of a + b z + c z² (none when it is identically zero: then p = q)."""
    if c == 0.0:
        return [-a / b] if b != 0.0 else []
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return []
    # The stable pair of formulas: no cancellation between -b and ±√disc.
    s = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    return [s / c, a / s] if s != 0.0 else [0.0]


def _gaussian_divergence(pair: GaussianPair, numerics: _Numerics) -> float:
    r""":math:`\int \varphi(z)\, g(e^{a + bz + cz^2})\,dz` over the real line, the product formed in log space.

    Finite exactly when the growth of g is beaten by φ: with :math:`g(u) \sim u^\alpha` as
    :math:`u \to \infty` and :math:`u^\beta` as :math:`u \to 0` (logarithmic factors aside), the integral
    diverges iff :math:`c > 0,\ \alpha > 0,\ 1 - 2\alpha c \le 0` or
    :math:`c < 0,\ \beta < 0,\ 1 - 2\beta c \le 0`
    (e.g. Pearson χ², α = 2: :math:`\sigma_p^2 \ge 2\sigma_q^2`). The z-scale, unlike the quantile scale,
    keeps full accuracy right up to that boundary, where the integrand decays like :math:`e^{-\epsilon z^2}`.
    Each piece's convergence is checked (ArithmeticError otherwise).
    """
    from scipy.integrate import tanhsinh

    a, b, c = pair.quadratic
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
    points = set(_quadratic_roots(a, b, c) if not numerics.smooth else []) | {0.0}
    for t in (alpha, beta):
        if t * c > 0:  # at most one of them: α ≥ 0 matters for c > 0, β ≤ 0 for c < 0
            mp = numerics.mp
            with mp.workdps(_MP_DPS):
                precision = float(1 - mp.mpf(t) + t * (mp.mpf(pair.sigma_q) / mp.mpf(pair.sigma_p)) ** 2)
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

    results = [tanhsinh(integrand, lo, hi, rtol=_RTOL, atol=0.0) for lo, hi in zip(edges[:-1], edges[1:])]
    if len(overflow) == 1:
        # Finite (divergence is excluded above) but beyond the float range: the integrand overflows on
        # a bump about 1 wide in w, e.g. Pearson χ² ≈ e^{2370} at μ_p = 0.3, σ_p = 1.4142.
        return math.copysign(math.inf, overflow.pop())
    return _checked_sum(results, repr(pair))


def _categorical_divergence(pair: CategoricalPair, numerics: _Numerics) -> float:
    # The pair's own log r (from logit differences) keeps full relative precision as p -> q, where
    # log p - log q of the rounded log-probabilities is off by ~1e-16/gap relative.
    log_ratio, q = pair.support_log_ratio, pair.support_q
    both = log_ratio > -np.inf
    terms = list(q[both] * numerics.g(log_ratio[both]))
    q_only = float(np.sum(q[~both]))
    p_only = float(np.sum(np.exp(pair.log_p[pair.log_q == -np.inf])))
    if q_only > 0.0:
        terms.append(q_only * numerics.at_zero)
    if p_only > 0.0:
        terms.append(p_only * numerics.per_mass_at_infinity)
    if any(math.isinf(t) for t in terms):
        return math.inf
    return math.fsum(terms)


def f_divergence(pair: Pair, generator) -> float:
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
        A name in :data:`GENERATORS` — ``"kl"``, ``"reverse_kl"``, ``"half_log_sq"``, ``"pearson"``,
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
    >>> round(f_divergence(pair, "kl"), 12)              # μ²/2
    0.5
    >>> round(f_divergence(pair, "pearson"), 12)         # e^{μ²} - 1
    1.718281828459
    >>> f_divergence(GaussianPair(mu_p=0.0, sigma_p=2.0), "pearson")   # σ_p² ≥ 2σ_q²
    inf
    """
    generator = get_generator(generator)
    numerics = generator._numerics
    if isinstance(pair, CategoricalPair):
        return _categorical_divergence(pair, numerics)
    if isinstance(pair, GaussianPair):
        if pair.mu_p == pair.mu_q and pair.sigma_p == pair.sigma_q:
            return 0.0
        return _gaussian_divergence(pair, numerics)
    if isinstance(pair, ScipyPair):
        return _scipy_divergence(pair, numerics)
    raise TypeError(f"pair must be a GaussianPair, ScipyPair or CategoricalPair, got {type(pair).__name__}")


def taylor_approximation(pair: Pair, generator) -> float:
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
    >>> round(taylor_approximation(GaussianPair(mu_p=0.1), "kl"), 10)   # ½ (e^{0.01} - 1)
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
