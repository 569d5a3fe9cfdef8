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
  :math:`\sigma_p^2 \ge 2\sigma_q^2`), and values just inside that boundary stay accurate.
* Any two scipy distributions: the integral is split smoothly between q and p,

  .. math:: D_f = \mathbb{E}_q\Big[\frac{g(r)}{1 + r^2}\Big] + \mathbb{E}_p\Big[\frac{g(r)}{r + 1/r}\Big],

  so that where r is large (p ≫ q) the integrand is carried by p and where r is small by q: both parts
  stay bounded for generators growing no faster than :math:`u^2` at ∞ and :math:`1/u` at 0. Each part is
  taken on its measure's quantile scale (halves split at ½, ``isf`` for the upper one, breaks at support
  edges and kinks); divergence is detected first from the tail slope, as in :mod:`klviz.exact` (which,
  like it, can call a barely convergent integral, tail ~ :math:`u^{-0.99}`, infinite).
* Categorical pairs: exact sums.

Relative tolerance 1e-12 throughout. Masses where one density vanishes use the limits :math:`g(0^+)`
and :math:`\lim_{u\to\infty} g(u)/u = f'(\infty) - f'(1)` (Csiszár's convention :math:`0 f(p/0) = p\,
f'(\infty)`).

sympy is imported on first use, not with ``import klviz``.

References: I. Csiszár (1967), "Information-type measures of difference of probability distributions";
S. M. Ali and S. D. Silvey (1966); J. Schulman, "Approximating KL Divergence" (2020),
http://joschu.net/blog/kl-approx.html.
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
# Continuous pairs: two quantile-scale integrals
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Measure:
    """One of the two distributions, as the quadrature needs it: quantiles, tails, support."""

    ppf: Callable
    isf: Callable
    cdf: Callable
    sf: Callable
    inside: Callable  # x -> bool array: finite x where the density is positive
    low: float
    high: float


def _scipy_measure(dist) -> _Measure:
    def inside(x):
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            return np.isfinite(x) & (dist.logpdf(x) > -np.inf)

    low, high = dist.support()
    return _Measure(dist.ppf, dist.isf, dist.cdf, dist.sf, inside, float(low), float(high))


class _Continuous:
    """q, p and log r(x) for a ScipyPair."""

    def __init__(self, pair: ScipyPair):
        self.q = _scipy_measure(pair.q)
        self.p = _scipy_measure(pair.p)
        self.log_ratio = lambda x: _scipy_log_ratio(pair, x)

    def measure(self, side: str) -> _Measure:
        return self.q if side == "q" else self.p

    def log_ratio_at(self, u, side: str, upper: bool) -> np.ndarray:
        """log r at the u-quantile of the side's measure (from the right if upper); NaN off its support."""
        measure = self.measure(side)
        u = np.asarray(u, dtype=np.float64)
        x = np.asarray(measure.isf(u) if upper else measure.ppf(u), dtype=np.float64)
        inside = measure.inside(x)
        out = np.full(x.shape, np.nan)
        if inside.any():
            out[inside] = self.log_ratio(x[inside])
        return out

    def other_mass(self, side: str) -> float:
        """The side's mass outside the other distribution's support interval."""
        measure, other = self.measure(side), self.measure("p" if side == "q" else "q")
        mass = 0.0
        if other.low > measure.low:
            mass += float(measure.cdf(other.low))
        if other.high < measure.high:
            mass += float(measure.sf(other.high))
        return mass


def _scipy_log_ratio(pair: ScipyPair, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        log_p, log_q = pair.p.logpdf(x), pair.q.logpdf(x)
        out = np.asarray(log_p - log_q, dtype=np.float64)
    out = np.where((log_q == -np.inf) & (log_p > -np.inf), np.inf, out)
    return np.where((log_p == -np.inf) & (log_q > -np.inf), -np.inf, out)


def _diverges(problem: _Continuous, numerics: _Numerics) -> bool:
    """Tail test: ∫_0 G(u) du diverges if log|G| falls with slope ≤ -1 against log u far in a tail."""
    from klviz.exact import _SLOPE_TOLERANCE, _TAIL_U

    for side in ("q", "p"):
        for upper in (False, True):
            log_ratio = problem.log_ratio_at(np.array(_TAIL_U), side, upper)
            if np.isnan(log_ratio).any():  # the tail ends (bounded support) before u = 1e-200
                continue
            log_g = [numerics.log_abs_weighted(float(x), side) for x in log_ratio]
            if any(v == math.inf or math.isnan(v) for v in log_g):
                return True
            if all(v == -math.inf for v in log_g):
                continue
            slope = (log_g[1] - log_g[0]) / (math.log(_TAIL_U[1]) - math.log(_TAIL_U[0]))
            if slope <= -1.0 + _SLOPE_TOLERANCE:
                return True
    return False


def _breaks(problem: _Continuous, side: str, upper: bool, kinked: bool) -> list[float]:
    """Quantile levels in (0, ½) where the part's integrand is not smooth: support edges, kinks (r = 1)."""
    measure, other = problem.measure(side), problem.measure("p" if side == "q" else "q")
    points = [x for x in (other.low, other.high) if measure.low < x < measure.high]
    levels = _sign_changes(problem, side, upper) if kinked else []
    for x in points:
        level = float(measure.sf(x) if upper else measure.cdf(x))
        if 0.0 < level < 0.5:
            levels.append(level)
    return sorted(set(levels))


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


def _sign_changes(problem: _Continuous, side: str, upper: bool) -> list[float]:
    """Quantile levels where log r changes sign, bracketed on a grid and refined by Brent's method."""
    from scipy.optimize import brentq

    grid = np.concatenate([np.logspace(-60, -3, 120), np.linspace(1e-3, 0.5, 200)[1:]])
    values = problem.log_ratio_at(grid, side, upper)
    levels = []
    for i in np.flatnonzero(values[:-1] * values[1:] < 0):  # NaN compares False: skipped
        root = brentq(lambda v: float(problem.log_ratio_at(v, side, upper)), grid[i], grid[i + 1],
                      xtol=1e-300, rtol=4 * np.finfo(float).eps)
        levels.append(root)
    return levels


def _scipy_divergence(pair: ScipyPair, numerics: _Numerics) -> float:
    from scipy.integrate import tanhsinh

    problem = _Continuous(pair)
    # Mass of one distribution where the other vanishes: weighted by g(0+) (p = 0 < q) or by
    # lim g(u)/u (q = 0 < p); an infinite weight on positive mass is an infinite divergence.
    for side, weight in (("q", numerics.at_zero), ("p", numerics.per_mass_at_infinity)):
        if math.isinf(weight) and problem.other_mass(side) > 0.0:
            return math.inf
    if _diverges(problem, numerics):
        return math.inf
    total = 0.0
    for side in ("q", "p"):
        for upper in (False, True):
            edges = np.array([0.0, *_breaks(problem, side, upper, not numerics.smooth), 0.5])

            def integrand(u, side=side, upper=upper):
                log_ratio = problem.log_ratio_at(u, side, upper)
                values = np.zeros_like(log_ratio)
                ok = ~np.isnan(log_ratio)  # NaN: the node lies outside this measure's support
                values[ok] = numerics.weighted(log_ratio[ok], side)
                return values

            result = tanhsinh(integrand, edges[:-1], edges[1:], rtol=_RTOL, atol=0.0)
            total += float(np.sum(result.integral))
    return total if math.isfinite(total) else math.inf


def _gaussian_divergence(pair: GaussianPair, numerics: _Numerics) -> float:
    r""":math:`\int \varphi(z)\, g(e^{a + bz + cz^2})\,dz` over the real line, the product formed in log space.

    Finite exactly when the growth of g is beaten by φ: with :math:`g(u) \sim u^\alpha` as
    :math:`u \to \infty` and :math:`u^\beta` as :math:`u \to 0` (logarithmic factors aside), the integral
    diverges iff :math:`c > 0,\ \alpha > 0,\ 1 - 2\alpha c \le 0` or
    :math:`c < 0,\ \beta < 0,\ 1 - 2\beta c \le 0`
    (e.g. Pearson χ², α = 2: :math:`\sigma_p^2 \ge 2\sigma_q^2`). The z-scale, unlike the quantile scale,
    keeps full accuracy right up to that boundary, where the integrand decays like :math:`e^{-\epsilon z^2}`.
    """
    from scipy.integrate import tanhsinh

    a, b, c = pair.quadratic
    alpha, beta = numerics.growth
    if (c > 0 and alpha > 0 and 1 - 2 * alpha * c <= 0) or (c < 0 and beta < 0 and 1 - 2 * beta * c <= 0):
        return math.inf
    roots = _quadratic_roots(a, b, c) if not numerics.smooth else []
    edges = np.array([-np.inf, *sorted(set(roots) | {0.0}), np.inf])

    def integrand(z):
        z = np.asarray(z, dtype=np.float64)
        log_ratio = a + z * (b + c * z)
        values = np.zeros_like(z)
        ok = np.isfinite(z)  # the transformed rule may evaluate z = ±inf, where φ(z) = 0
        log_phi = -0.5 * z[ok] * z[ok] - 0.5 * math.log(2.0 * math.pi)
        values[ok] = numerics.times_weight(log_ratio[ok], log_phi)
        return values

    result = tanhsinh(integrand, edges[:-1], edges[1:], rtol=_RTOL, atol=0.0)
    total = float(np.sum(result.integral))
    return total if math.isfinite(total) else math.inf


def _categorical_divergence(pair: CategoricalPair, numerics: _Numerics) -> float:
    log_p, log_q = pair.log_p, pair.log_q
    both = (log_q > -np.inf) & (log_p > -np.inf)
    g = numerics.g(log_p[both] - log_q[both])
    terms = list(np.exp(log_q[both]) * g)
    q_only = float(np.sum(np.exp(log_q[(log_q > -np.inf) & (log_p == -np.inf)])))
    p_only = float(np.sum(np.exp(log_p[(log_p > -np.inf) & (log_q == -np.inf)])))
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
    quantile scales of q and p; see the module docstring). Relative tolerance 1e-12; accuracy 1e-10
    relative or better in the tests, also for gaps of 1e-6. Divergent values are ``math.inf``: decided
    exactly for Gaussians, from the tails for scipy pairs.

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

    .. math:: D_f(p, q) \approx \tfrac12 f''(1)\,\mathbb{E}_q[(r-1)^2]
              = \tfrac12 f''(1)\,\big(\mathbb{E}_q[r^2] - 1\big),

    with :math:`\mathbb{E}_q[r^2]` from :func:`klviz.expected_r_squared`. Relative error O(gap) in general,
    O(gap²) when the perturbation is symmetric (E_q[ε³] of higher order, e.g. a Gaussian mean shift).

    Parameters
    ----------
    pair : GaussianPair, ScipyPair or CategoricalPair
    generator : str or Generator
        As in :func:`f_divergence`.

    Returns
    -------
    float
        ``inf`` where :math:`\chi^2(p\|q)` is infinite.

    Raises
    ------
    ValueError
        If the generator is not twice differentiable at 1 (total variation), or an unknown name.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> round(taylor_approximation(GaussianPair(mu_p=0.1), "kl"), 10)   # ½ (e^{0.01} - 1)
    0.0050250835
    """
    from klviz.exact import expected_r_squared

    generator = get_generator(generator)
    curvature = generator.curvature_at_1
    if math.isnan(curvature):
        raise ValueError(
            f"generator {generator.name!r} is not twice differentiable at u = 1, so it has no second-order "
            "Taylor approximation"
        )
    chi_squared = expected_r_squared(pair) - 1.0
    if math.isinf(chi_squared):
        return math.inf if curvature > 0 else (-math.inf if curvature < 0 else math.nan)
    return 0.5 * curvature * chi_squared
