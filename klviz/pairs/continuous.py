r"""Any two frozen continuous ``scipy.stats`` distributions: exact moments by quadrature, divergence detected.

:math:`\mathbb{E}_q[G(\log r)] = \int_0^1 G(\log r(F_q^{-1}(u)))\,du` is integrated on q's quantile scale
(so the range always matches where q has its mass), in two halves (``ppf`` for the lower, ``isf`` for
the upper, so both tails keep full resolution), split at every point where the integrand may not be
smooth: the other distribution's support edges, both distributions' medians and modes (the kinks of a
Laplace log-density), and the log-ratios where an estimator has a kink (a clamp). Terms carrying
:math:`r` are integrated under p instead (:math:`\mathbb{E}_q[r\,h] = \mathbb{E}_p[h]`), where they are tame
when p has heavier tails than q.

Before integrating, divergence is *decided* (:func:`klviz._quadrature.tail_converges`): at an infinite
end from the log-log slope of density × |G| at |x| = 1e50 and 1e100 scales (exact for power laws),
at a finite end from the slope against the distance to the end (1e-8 and 1e-12 of the scale, where
``1 - 1e-100`` would round to the edge itself), on the quantile scale where the densities underflow.
Mass of q where p = 0 enters in closed form (:math:`G(-\infty)` times it), as does :math:`\mathbb{E}_q[r-1]`
(from p's CDF).

Close pairs: log r is the difference of two log-densities of size ~1, so it carries a rounding error of
~1e-16 absolute whatever its size. Means are taken from non-negative forms (k3 rather than k1; see
:func:`klviz.estimators.accurate_decomposition`), which turns that into a relative error ~1e-16/gap
instead of 1e-16/gap², and the quadrature's convergence test allows for the integrand's own rounding
noise (estimated on the same pieces), so that a KL of 5e-17 (gap 1e-8) is found to ~1e-8.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from klviz import _checks, _quadrature
from klviz.estimators import CONTROL_VARIATE, ESTIMATORS, Estimator, ExpPolynomial, accurate_decomposition
from klviz.pairs.base import Pair, reference_estimator, sample_size

__all__ = ["ScipyPair"]

# Pairs of depths for the tail tests, deepest first (shallower ones where a log-density underflows).
_TAIL_X = ((1e50, 1e100), (1e20, 1e40), (1e8, 1e16))
_TAIL_U = ((1e-100, 1e-200), (1e-50, 1e-100), (1e-20, 1e-40), (1e-10, 1e-20))
_EDGE_DISTANCES = ((1e-8, 1e-12), (1e-5, 1e-8))
_EPS = np.finfo(float).eps


def _frozen_continuous(dist, name: str):
    from scipy.stats._distn_infrastructure import rv_continuous_frozen

    if not isinstance(dist, rv_continuous_frozen):
        raise TypeError(
            f"{name} must be a frozen continuous scipy.stats distribution such as "
            f"scipy.stats.norm(0, 1), got {type(dist).__name__}"
        )
    with np.errstate(all="ignore"):
        median = float(dist.median())
        log_density = float(dist.logpdf(median)) if math.isfinite(median) else math.nan
    if not (math.isfinite(median) and log_density > -math.inf and not math.isnan(log_density)):
        raise ValueError(f"{name} has invalid parameters ({_describe(dist)}: median {median}, "
                         f"log-density there {log_density}); scipy.stats accepts them but returns NaN")
    return dist


def _mass_edge(tail, guess: float, median: float) -> float:
    """The end of the mass next to ``guess`` (an extreme quantile), for a distribution whose CDF goes on
    periodically beyond its mass (scipy's von Mises): the float where the tail mass turns negative, by
    bisection — so two such distributions on the same interval get the same end (-π), not two quantiles a
    few ulp apart."""
    outward = -1.0 if guess < median else 1.0
    inside, outside = guess, guess + outward * 1e-6 * max(1.0, abs(guess))
    with np.errstate(all="ignore"):
        if not (tail(inside) >= 0 and tail(outside) < 0):
            return guess
        for _ in range(200):
            middle = 0.5 * (inside + outside)
            if middle in (inside, outside):
                break
            if tail(middle) >= 0:
                inside = middle
            else:
                outside = middle
    return float(inside)


def _log_weight(under: str):
    """log of the split weight as a function of L: -log(1 + r²) under q, log r - log(1 + r²) under p."""
    if under == "q":
        return lambda L: -np.logaddexp(0.0, 2.0 * np.asarray(L, dtype=np.float64))
    return lambda L: (lambda L: L - np.logaddexp(0.0, 2.0 * L))(np.asarray(L, dtype=np.float64))


def _describe(dist) -> str:
    def show(value):
        return f"{value:g}" if isinstance(value, numbers.Real) else repr(value)

    args = ", ".join(show(a) for a in dist.args)
    kwds = ", ".join(f"{k}={show(v)}" for k, v in dist.kwds.items())
    return f"{dist.dist.name}({', '.join(s for s in (args, kwds) if s)})"


@dataclass(frozen=True, eq=False)
class ScipyPair(Pair):
    r"""Any two frozen continuous ``scipy.stats`` distributions: q to sample from, p the target.

    Densities are only ever used through ``logpdf``. Exact values are one-dimensional integrals, taken
    by adaptive quadrature (module docstring); infinite ones are detected, not guessed.

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
    ValueError
        If a distribution's parameters are invalid (scipy freezes ``norm(0, -1)`` and returns NaN).

    Examples
    --------
    >>> from scipy import stats
    >>> pair = ScipyPair(p=stats.norm(1, 1), q=stats.norm(0, 1))
    >>> round(pair.kl_qp(), 12)
    0.5
    """

    p: object
    q: object

    def __post_init__(self):
        _frozen_continuous(self.p, "p")
        _frozen_continuous(self.q, "q")

    def __repr__(self) -> str:
        return f"ScipyPair(p={_describe(self.p)}, q={_describe(self.q)})"

    def sample(self, n: int, *, rng=None) -> np.ndarray:
        """n draws from q."""
        n = sample_size(n)
        return np.asarray(self.q.rvs(size=n, random_state=_checks.rng(rng)), dtype=np.float64).reshape(n)

    def log_ratio(self, x) -> np.ndarray:
        r""":math:`\log p(x) - \log q(x)`; x must lie in the support of q."""
        x = _checks.real_array(x, "x")
        log_q = self.q.logpdf(x)
        if np.any(log_q == -np.inf):
            raise ValueError("x must lie in the support of q (where log q(x) > -inf)")
        with np.errstate(divide="ignore"):
            return self.p.logpdf(x) - log_q

    def kl_qp(self) -> float:
        r"""The exact KL[q, p] by quadrature; ``inf`` when it diverges."""
        return float(self._mean(ESTIMATORS["k1"]))

    def swapped(self) -> "ScipyPair":
        return ScipyPair(p=self.q, q=self.p)

    # --- geometry ---------------------------------------------------------------------------------------
    def _dist(self, under: str):
        return self.q if under == "q" else self.p

    def _at_x(self, x: np.ndarray, under: str = "q") -> tuple[np.ndarray, np.ndarray]:
        """(log density of q or p, log r) at x; log r is NaN outside q's support (no q-mass there)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_q = self.q.logpdf(x)
            log_p = self.p.logpdf(x)
            log_ratio = log_p - log_q
        inside = log_q > -np.inf
        log_ratio = np.where(inside & np.isnan(log_ratio), -np.inf, log_ratio)
        return (log_q if under == "q" else log_p), np.where(inside, log_ratio, np.nan)

    def _noise(self, x: np.ndarray) -> np.ndarray:
        """A bound on the rounding error of log r at x: a few ulp of the two log-densities subtracted."""
        with np.errstate(all="ignore"):
            size = np.abs(self.q.logpdf(x)) + np.abs(self.p.logpdf(x)) + 1.0
        return 4.0 * _EPS * np.where(np.isfinite(size), size, 0.0)

    @cached_property
    def _supports(self) -> dict:
        """Where each distribution has mass: its support, narrowed at an infinite end where the density
        is positive but the CDF puts no mass there or leaves [0, 1] (scipy's von Mises reports (-inf, inf),
        has a periodic logpdf and CDF, and its mass on [-π, π]): there the end is the extreme quantile."""
        out = {}
        for under in ("q", "p"):
            dist = self._dist(under)
            low, high = (float(e) for e in dist.support())
            median = float(dist.median())
            with np.errstate(all="ignore"):
                far_low, far_high = median - 1e50, median + 1e50
                if low == -math.inf and dist.pdf(far_low) > 1e-300 and not 0 < dist.cdf(far_low) < 1:
                    low = _mass_edge(dist.cdf, float(dist.ppf(1e-300)), median)
                if high == math.inf and dist.pdf(far_high) > 1e-300 and not 0 < dist.sf(far_high) < 1:
                    high = _mass_edge(dist.sf, float(dist.isf(1e-300)), median)
            out[under] = (low, high)
        return out

    @cached_property
    def _scales(self) -> dict:
        out = {}
        for under in ("q", "p"):
            dist = self._dist(under)
            with np.errstate(all="ignore"):
                scale = float(dist.isf(0.25) - dist.ppf(0.25))
            out[under] = (float(dist.median()), scale if scale > 0 and math.isfinite(scale) else 1.0)
        return out

    @cached_property
    def _break_points(self) -> tuple[float, ...]:
        """x where the integrand may not be smooth: medians, modes, support edges (of both)."""
        from scipy.optimize import minimize_scalar

        points = set()
        for under in ("q", "p"):
            dist = self._dist(under)
            points.add(float(dist.median()))
            points.update(e for e in self._supports[under] if math.isfinite(e))
            with np.errstate(all="ignore"):
                low, high = float(dist.ppf(1e-3)), float(dist.ppf(1 - 1e-3))
            if low < high:
                found = minimize_scalar(lambda x: -float(dist.logpdf(x)), bounds=(low, high), method="bounded",
                                        options={"xatol": 1e-12 * max(1.0, abs(low), abs(high))})
                if found.success and math.isfinite(found.x):
                    points.add(float(found.x))
        # A mode found to ~1e-11 next to the median (symmetric densities) is the same point: merge points
        # closer than 1e-9 of the scales, keeping the first (medians and edges sort the same way).
        tolerance = 1e-9 * min(self._scales["q"][1], self._scales["p"][1])
        merged: list[float] = []
        for point in sorted(points):
            if not merged or point - merged[-1] > tolerance * max(1.0, abs(point)):
                merged.append(point)
            elif point == 0.0 or not math.isfinite(merged[-1]):
                merged[-1] = point  # prefer the round point (0) over its rounding neighbour
        return tuple(merged)

    def _kink_points(self, estimator: Estimator) -> set[float]:
        """x where log r crosses one of the estimator's kinks (sign changes on a grid, refined)."""
        if not estimator.kinks:
            return set()
        from scipy.optimize import brentq

        dist = self.q
        grid_u = np.concatenate([np.logspace(-30, -2, 60), np.linspace(0.01, 0.99, 197), 1 - np.logspace(-2, -15, 50)])
        x = np.unique(dist.ppf(grid_u))
        x = x[np.isfinite(x)]
        _, log_ratio = self._at_x(x)
        found = set()
        for kink in estimator.kinks:
            with np.errstate(invalid="ignore"):
                shifted = log_ratio - kink
                change = np.isfinite(shifted[:-1]) & np.isfinite(shifted[1:]) & (shifted[:-1] * shifted[1:] < 0)
            for i in np.flatnonzero(change):
                found.add(brentq(lambda v: float(self._at_x(np.array([v]))[1][0]) - kink, x[i], x[i + 1],
                                 xtol=1e-300, rtol=4 * _EPS))
        return found

    def _pieces(self, under: str, upper: bool, extra=(), start: float = 0.0) -> list[float]:
        """[start, ..., 1/2] on the quantile scale of q (or p), split at the break points (cuts closer
        than 1e-12 relative merged: a sliver of width 1e-17 is rounding, not a piece)."""
        dist = self._dist(under)
        low, high = self._supports[under]
        cuts = []
        for x in (*self._break_points, *extra):
            if low < x < high:
                with np.errstate(all="ignore"):
                    cuts.append(float(dist.sf(x) if upper else dist.cdf(x)))
        levels = sorted({start, 0.5} | {u for u in cuts if start < u < 0.5})
        merged = [levels[0]]
        for level in levels[1:]:
            if level - merged[-1] > 1e-12 * max(level, 1e-300) and level - merged[-1] > 1e-15 * 0.5:
                merged.append(level)
            elif level == 0.5:
                merged[-1] = 0.5
        return merged if len(merged) > 1 else [start, 0.5]

    def _edge_cut(self, under: str, upper: bool) -> tuple[float, float, float]:
        """(u, x, x2) where the quantile scale stops resolving a finite end that is not 0: x a few ulp
        inside the end (``1 - 1e-100`` rounds to 1), u its tail mass, x2 a thousand times farther in.
        u = 0 where the end is infinite or 0 (floats resolve it)."""
        dist = self._dist(under)
        end = self._supports[under][1 if upper else 0]
        if not math.isfinite(end) or end == 0.0:
            return 0.0, math.nan, math.nan
        inward = -1.0 if upper else 1.0
        x = end + inward * 16 * np.spacing(abs(end))
        x2 = end + inward * 16e3 * np.spacing(abs(end))
        with np.errstate(all="ignore"):
            u = float(dist.sf(x) if upper else dist.cdf(x))
        return (u, float(x), float(x2)) if 0.0 < u < 0.5 else (0.0, math.nan, math.nan)

    # --- divergence -------------------------------------------------------------------------------------
    def _converges(self, log_abs, under: str = "q") -> bool:
        """Whether E[G(log r)] under q (or p), over the region where both densities are positive, is
        finite: the integrand's tails at both ends of its support, and next to every end of the other
        distribution's support that lies inside it (where p or q may vanish continuously)."""
        own_low, own_high = self._supports[under]
        tests = [(own_low, -1), (own_high, 1)]
        other_low, other_high = self._supports["p" if under == "q" else "q"]
        if own_low < other_low < own_high:
            tests.append((other_low, 1))  # approached from above, inside the other's support
        if own_low < other_high < own_high:
            tests.append((other_high, -1))
        for end, side in tests:
            inner = (end, side) not in ((own_low, -1), (own_high, 1))
            if math.isinf(end):
                verdict = self._tail_x(log_abs, under, side)
                if verdict is None:
                    verdict = self._tail_u(log_abs, under, upper=side > 0)
            else:
                # s = distance to the end; an inner end is approached from the other support's inside.
                verdict = self._tail_edge(log_abs, under, end, -side if inner else side)
                if verdict is None and not inner:
                    verdict = self._tail_u(log_abs, under, upper=side > 0)
                if verdict is None:
                    verdict = True  # nothing resolvable there: the quadrature's own check remains
            if not verdict:
                return False
        return True

    def _log_integrand(self, x: np.ndarray, log_abs, under: str) -> np.ndarray | None:
        """log(density × |G(log r)|) at x over the region where both densities are positive (-inf
        elsewhere); None where a log-density underflows inside its own support (the test cannot tell)."""
        with np.errstate(all="ignore"):
            logs = {which: self._dist(which).logpdf(x) for which in ("q", "p")}
        inside = {which: (x >= self._supports[which][0]) & (x <= self._supports[which][1]) for which in ("q", "p")}
        for which in ("q", "p"):
            if np.any(inside[which] & ~np.isfinite(logs[which]) & inside["q" if which == "p" else "p"]):
                return None
        both = inside["q"] & inside["p"] & np.isfinite(logs["q"]) & np.isfinite(logs["p"])
        out = np.full(x.shape, -np.inf)
        if np.any(both):
            log_ratio = logs["p"][both] - logs["q"][both]
            with np.errstate(invalid="ignore"):
                out[both] = logs[under][both] + log_abs(log_ratio)
        return out

    def _tail_x(self, log_abs, under: str, side: int) -> bool | None:
        """Infinite end: density × |G| must fall faster than 1/|x|. With s = 1/|x|,
        ∫^∞ f dx = ∫_0 f(1/s) s^-2 ds, so the slope test is on f x². Power laws are exact this far out
        (|x| = 1e50 and 1e100 scales; shallower pairs where a log-density underflows); None if none works."""
        loc, scale = self._scales[under]
        for depths in _TAIL_X:
            offsets = np.array(depths)
            values = self._log_integrand(loc + side * scale * offsets, log_abs, under)
            if values is not None:
                return _quadrature.tail_converges(values + 2.0 * np.log(offsets), -np.log(offsets), tolerance=1e-9)
        return None

    def _tail_edge(self, log_abs, under: str, end: float, side: int) -> bool | None:
        """Finite end: density × |G| as a function of the distance s to the end must fall slower than 1/s.
        ``side`` = -1 approaches the end from above, +1 from below."""
        _, scale = self._scales[under]
        for relative in (_TAIL_U if end == 0 else _EDGE_DISTANCES):  # near 0 floats resolve 1e-200 too
            distances = np.maximum(scale * np.array(relative), 64 * np.spacing(abs(end)) * np.array([1e4, 1.0]))
            if distances[0] <= distances[1]:
                continue
            values = self._log_integrand(end - side * distances, log_abs, under)
            if values is not None:
                return _quadrature.tail_converges(values, np.log(distances))
        return None

    def _tail_u(self, log_abs, under: str, upper: bool) -> bool | None:
        """On the quantile scale: ∫_0 G(u) du converges only if G = o(1/u)."""
        dist = self._dist(under)
        for depths in _TAIL_U:
            u = np.array(depths)
            with np.errstate(all="ignore"):
                x = dist.isf(u) if upper else dist.ppf(u)
            values = self._log_integrand(x, log_abs, under)
            if values is None:
                continue
            values = values - self._dist(under).logpdf(x) if np.all(np.isfinite(values)) else values
            # on the u scale the density is absorbed by du = density dx: G(u) = |G(log r(x(u)))|
            verdict = _quadrature.tail_converges(values, np.log(u))
            return bool(verdict) if verdict is not None else False
        return None

    # --- integration ------------------------------------------------------------------------------------
    def _integrate(self, integrand, log_abs, under: str = "q", *, extra=(), noise_of=None) -> float:
        """E[G(log r)] under q (or p): tanh-sinh on the quantile scale, falling back to x with the density
        in log space; ``noise_of(log_ratio, noise)`` bounds the integrand's rounding error."""
        from scipy.integrate import tanhsinh  # noqa: F401 (imported by _quadrature; kept lazy)

        dist = self._dist(under)
        results, noise, remainder = [], 0.0, 0.0
        for upper in (False, True):
            def func(u, upper=upper):
                with np.errstate(all="ignore"):
                    x = dist.isf(u) if upper else dist.ppf(u)
                _, log_ratio = self._at_x(x, under)
                values = np.zeros_like(log_ratio)
                # Nodes so close to an end that x leaves the representable range (or hits the edge itself)
                # carry no mass: the tail test has shown the integral converges. log r = -inf (p = 0 < q) is
                # passed on: the integrand decides what that region carries.
                ok = ~np.isnan(log_ratio) & (log_ratio < np.inf)
                with np.errstate(all="ignore"):
                    values[ok] = integrand(log_ratio[ok])
                return np.where(np.isfinite(values), values, 0.0)

            cut, x_cut, x_far = self._edge_cut(under, upper)
            pieces = self._pieces(under, upper, extra, start=cut)
            results += _quadrature.tanhsinh_pieces(func, pieces)
            if noise_of is not None:
                noise += self._noise_integral(dist, upper, pieces, under, noise_of)
            if cut > 0.0:
                remainder += self._edge_remainder(func, cut, dist, upper, x_far)
        total, converged = _quadrature.combine(results, noise=2.0 * noise + abs(remainder))
        if converged:
            return total + remainder
        return self._integrate_x(integrand, log_abs, under, extra)

    @staticmethod
    def _edge_remainder(func, cut: float, dist, upper: bool, x_far: float) -> float:
        r""":math:`\int_0^{u_c} G(u)\,du` beyond the last resolvable point :math:`u_c`, from G at three points
        going inward (:math:`u_c` and 10 and 1000 times farther from the end in x).

        Near a finite end the integrand on the quantile scale behaves like :math:`a + b \log u` (a log-ratio
        of two power-law densities) or :math:`c\,u^\beta` (β > -1 once the tail test has passed): both models
        are fitted to the outer two points, the one that predicts the middle point better is used, and its
        integral from 0 is added: :math:`u_c (a + b(\log u_c - 1))` or :math:`u_c G(u_c)/(1 + \beta)`."""
        end = x_far + (16e3 * np.spacing(abs(x_far)) if upper else -16e3 * np.spacing(abs(x_far)))
        x_mid = end + (x_far - end) / 1000 * 10
        with np.errstate(all="ignore"):
            u_mid = float(dist.sf(x_mid) if upper else dist.cdf(x_mid))
            u_far = float(dist.sf(x_far) if upper else dist.cdf(x_far))
            g = np.asarray(func(np.array([cut, u_mid, u_far])), dtype=np.float64)
        if not (np.all(np.isfinite(g)) and u_far > u_mid > cut > 0):
            return 0.0
        log_u = np.log([cut, u_mid, u_far])
        b = (g[2] - g[0]) / (log_u[2] - log_u[0])
        a = g[0] - b * log_u[0]
        log_model = (a + b * log_u[1], cut * (a + b * (log_u[0] - 1.0)))
        if g[0] != 0 and g[2] != 0 and np.sign(g[0]) == np.sign(g[2]):
            beta = min(max(math.log(g[2] / g[0]) / (log_u[2] - log_u[0]), -0.99), 10.0)
            power_model = (g[0] * math.exp(beta * (log_u[1] - log_u[0])), cut * g[0] / (1.0 + beta))
        else:
            power_model = (math.nan, math.nan)
        candidates = [m for m in (log_model, power_model) if math.isfinite(m[0])]
        return min(candidates, key=lambda m: abs(m[0] - g[1]))[1] if candidates else 0.0

    def _noise_integral(self, dist, upper: bool, pieces, under: str, noise_of) -> float:
        """∫ |rounding error of the integrand| du on the pieces, by 48-point Gauss–Legendre."""
        nodes, weights = np.polynomial.legendre.leggauss(48)
        total = 0.0
        for a, b in zip(pieces[:-1], pieces[1:]):
            u = 0.5 * (b - a) * nodes + 0.5 * (a + b)
            with np.errstate(all="ignore"):
                x = dist.isf(u) if upper else dist.ppf(u)
            _, log_ratio = self._at_x(x, under)
            ok = np.isfinite(log_ratio)
            bound = np.zeros_like(u)
            with np.errstate(all="ignore"):
                bound[ok] = noise_of(log_ratio[ok], self._noise(x[ok]))
            total += 0.5 * (b - a) * float(np.sum(weights * np.where(np.isfinite(bound), bound, 0.0)))
        return total

    def _integrate_x(self, integrand, log_abs, under: str, extra=()) -> float:
        r"""The fallback on the x scale, for integrands too close to non-integrable on the quantile scale:
        tanh-sinh between break points over the whole line; if that fails too (a power-law tail barely
        integrable, e.g. x⁴ under t(4.01)), between break points and geometric steps out to 1e8 scales,
        plus each infinite tail beyond in closed form for its measured
        power law, :math:`\int_X^\infty C x^{-\alpha} = X f(X)/(\alpha - 1)` (corrections O(X⁻²))."""
        loc, scale = self._scales[under]
        low, high = self._supports[under]

        def func_x(x):
            log_density, log_ratio = self._at_x(x, under)
            values = np.zeros_like(log_ratio)
            ok = np.isfinite(log_ratio) & (log_density > -np.inf)
            with np.errstate(all="ignore"):
                g = integrand(log_ratio[ok])
                v = np.exp(log_density[ok]) * g
                bad = ~np.isfinite(v)
                # Where G overflowed, density × G is taken in log space (the density is tiny there).
                v[bad] = np.sign(g[bad]) * np.exp(log_density[ok][bad] + log_abs(log_ratio[ok][bad]))
            values[ok] = np.where(np.isfinite(v), v, 0.0)
            return values

        plain = sorted({low, loc, high} | {x for x in (*self._break_points, *extra) if low < x < high})
        total, converged = _quadrature.combine(_quadrature.tanhsinh_pieces(func_x, plain))
        if converged:
            return total
        reach = 1e8
        power_law = [side for side, end in ((-1, low), (1, high)) if math.isinf(end)
                     and np.all(func_x(np.array([loc + side * scale * reach])) != 0.0)]
        if not power_law:  # nothing reaches 1e8 scales: splitting out there cannot help
            _quadrature.raise_unconverged(repr(self))
        steps = scale * np.logspace(0, 8, 9)
        edges = {loc} | {x for x in (*self._break_points, *extra) if low < x < high}
        tails = 0.0
        for side, end in ((-1, low), (1, high)):
            if math.isinf(end):
                far = loc + side * scale * reach
                edges |= {loc + side * step for step in steps}
                f = func_x(np.array([far, loc + side * 2 * scale * reach]))
                if f[0] != 0.0 and f[1] != 0.0 and np.sign(f[0]) == np.sign(f[1]):
                    alpha = math.log(f[0] / f[1]) / math.log(2.0)
                    if alpha <= 1.0:
                        _quadrature.raise_unconverged(f"{self!r} (a tail decaying like |x|^-{alpha:.4g})")
                    tails += abs(far - loc) * float(f[0]) / (alpha - 1.0)
            else:
                edges.add(end)
        ordered = sorted(x for x in edges if math.isfinite(x))
        ordered = [x for x in ordered if (not math.isfinite(low) or x >= low) and (not math.isfinite(high) or x <= high)]
        if math.isinf(low):
            ordered = [x for x in ordered if x >= loc - scale * reach]
        if math.isinf(high):
            ordered = [x for x in ordered if x <= loc + scale * reach]
        return _quadrature.integrate(func_x, ordered, repr(self)) + tails

    # --- exact moments ----------------------------------------------------------------------------------
    @cached_property
    def _cache(self) -> dict:
        return {}

    def _mean_r_minus_1(self) -> float:
        """E_q[r - 1] = P_p(support of q) - 1, from p's CDF: no quadrature needed."""
        low, high = self._supports["q"]
        return -float(self.p.cdf(low) + self.p.sf(high))

    def _q_mass_outside_p(self) -> float:
        low, high = self._supports["p"]
        return float(self.q.cdf(low) + self.q.sf(high))

    def _mean(self, estimator: Estimator):
        key = ("mean", id(estimator))
        if key not in self._cache:
            self._cache[key] = (estimator, self._compute_mean(estimator))  # keep the record alive with its id
        return self._cache[key][1]

    def _compute_mean(self, estimator: Estimator) -> float:
        if estimator is CONTROL_VARIATE:
            return self._mean_r_minus_1()
        decomposition = accurate_decomposition(estimator)
        if decomposition is not None and decomposition[1] != 0.0:
            base, lam = decomposition
            return self._mean(base) + lam * self._mean_r_minus_1()
        mean_outside = self._mass_outside_term(estimator)
        if math.isinf(mean_outside) or math.isnan(mean_outside):
            return mean_outside
        return mean_outside + self._expect([(estimator, 0.0)])

    def _mass_outside_term(self, estimator: Estimator) -> float:
        """G(-inf) times the q-mass where p = 0 (0 if there is none)."""
        mass = self._q_mass_outside_p()
        if mass <= 0.0:
            return 0.0
        with np.errstate(all="ignore"):
            at_minus_inf = float(np.asarray(estimator.value(np.array([-np.inf])), dtype=np.float64)[0])
        return mass * at_minus_inf if at_minus_inf != 0 else 0.0

    def _expect(self, records) -> float:
        r""":math:`\mathbb{E}_q[\prod_i (G_i(\log r) - m_i)]` over q's support where p > 0, or ±inf.

        Split smoothly between the two measures, :math:`q\,F = q\,F\,w_q + p\,F\,w_p` with
        :math:`w_q = 1/(1 + r^2)` and :math:`w_p = r/(1 + r^2)`: where r is large (p ≫ q, e.g. p's heavier
        tail) the integrand is carried by p, where r is small by q, and both parts keep the sign of F (no
        cancellation between them). Each part's divergence is decided first, then it is integrated."""
        def evaluate(L):
            out = np.ones(np.shape(L))
            with np.errstate(all="ignore"):
                for record, m in records:
                    out = out * (np.asarray(record.value(L), dtype=np.float64) - m)
            return out

        def log_abs(L):
            total = np.zeros(np.shape(L))
            with np.errstate(all="ignore"):
                for record, m in records:
                    direct = np.log(np.abs(np.asarray(record.value(L), dtype=np.float64) - m))
                    if record.expansion is not None:  # exact at extreme L, where the value overflows
                        exact = (record.expansion - ExpPolynomial({(0, 0): m})).log_abs(L)
                        direct = np.where(np.isfinite(direct) & (np.abs(L) < 300), direct, exact)
                    total = total + direct
            return total

        extra = set().union(*(self._kink_points(record) for record, _ in records))
        total = 0.0
        for under in ("q", "p"):
            weight = _log_weight(under)

            def part(L, weight=weight):
                with np.errstate(all="ignore"):
                    out = evaluate(L) * np.exp(weight(L))
                    bad = ~np.isfinite(out) & np.isfinite(L)
                    if np.any(bad):  # F overflowed where the weight underflows: the product in log space
                        out[bad] = np.sign(evaluate(L[bad])) * np.exp(log_abs(L[bad]) + weight(L[bad]))
                # q-mass where p = 0 (log r = -inf) enters in closed form (_mass_outside_term), not here.
                return np.where(L == -np.inf, 0.0, out)

            def part_log_abs(L, weight=weight):
                return log_abs(L) + weight(L)

            if not self._converges(part_log_abs, under=under):
                with np.errstate(all="ignore"):
                    sign = np.sign(evaluate(np.array([300.0 if under == "p" else -300.0])))[0]
                return math.copysign(math.inf, sign if sign != 0 else 1.0)
            total += self._integrate(part, part_log_abs, under, extra=extra,
                                     noise_of=lambda L, e, part=part: np.abs(part(L + e) - part(L - e)) / 2)
        return total

    def _bias(self, estimator: Estimator) -> float:
        mean, target = float(self._mean(estimator)), float(self._target(estimator))
        if not (math.isfinite(mean) and math.isfinite(target)):
            return super()._bias(estimator)
        reference = reference_estimator(estimator.target)
        decomposition = accurate_decomposition(estimator)
        sign = 1.0 if estimator.target == "kl_qp" else -1.0  # target = E_q[reference] - sign E_q[r - 1]
        if decomposition is not None and decomposition[0] is reference:
            return (decomposition[1] + sign) * self._mean_r_minus_1()
        difference = Estimator(f"{estimator.name} - {reference.name}",
                               lambda L: np.asarray(estimator.value(L), dtype=np.float64) - reference.value(L),
                               lambda L: np.zeros(np.shape(L)), kinks=estimator.kinks)
        try:
            value = self._expect([(difference, 0.0)])
        except ArithmeticError:
            return mean - target
        return value + sign * self._mean_r_minus_1() if math.isfinite(value) else mean - target

    def _covariance(self, a: Estimator, b: Estimator) -> float:
        mean_a, mean_b = float(self._mean(a)), float(self._mean(b))
        if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
            return math.inf
        if self._q_mass_outside_p() > 0:
            # Finite means with q-mass where p = 0 need G(-inf) finite there; it adds (G - m)(H - m') mass.
            with np.errstate(all="ignore"):
                ga = float(np.asarray(a.value(np.array([-np.inf])), dtype=np.float64)[0]) - mean_a
                gb = float(np.asarray(b.value(np.array([-np.inf])), dtype=np.float64)[0]) - mean_b
            outside = self._q_mass_outside_p() * ga * gb
        else:
            outside = 0.0
        key = ("cov", id(a), id(b))
        if key not in self._cache:
            self._cache[key] = ((a, b), self._expect([(a, mean_a), (b, mean_b)]))
        return outside + self._cache[key][1]

    # --- f-divergences (klviz.fdiv) -----------------------------------------------------------------------
    def _f_divergence(self, numerics) -> float:
        r""":math:`\mathbb{E}_q[g/(1+r^2)] + \mathbb{E}_p[g/(r+1/r)]` plus Csiszár's term for p-mass where q = 0.

        Both parts go through this pair's tail tests (divergence decided first) and quadrature. Where log r
        is NaN (x outside q's support) nothing is integrated, so the p-mass there enters in closed form,
        :math:`\lim g(u)/u \cdot P_p(q = 0)`; the q-mass where p = 0 is integrated (log r = -∞ there, the
        integrand is g(0+)). Generators with a kink at 1 (total variation) are integrated across it.
        """
        q_outside = self._q_mass_outside_p()  # q-mass where p = 0: weight g(0+)
        p_outside = -self._mean_r_minus_1()  # p-mass where q = 0: weight lim g(u)/u
        for mass, weight in ((q_outside, numerics.at_zero), (p_outside, numerics.per_mass_at_infinity)):
            if mass > 0.0 and math.isinf(weight):
                return math.inf
        log_abs = {side: _log_abs_part(numerics, side) for side in ("q", "p")}
        if not all(self._converges(log_abs[side], under=side) for side in ("q", "p")):
            return math.inf
        total = p_outside * numerics.per_mass_at_infinity if p_outside > 0.0 else 0.0
        for side in ("q", "p"):
            if numerics.smooth:
                total += self._integrate(lambda L, side=side: numerics.weighted(L, side), log_abs[side], under=side)
            else:
                total += self._integrate_across_kinks(numerics, side)
        return total

    def _integrate_across_kinks(self, numerics, side: str) -> float:
        """One part for a generator with a kink at r = 1 (total variation): tanh-sinh on the side's quantile
        scale (halves split at ½, ``isf`` for the upper one), with breaks at the other distribution's
        support edges and where log r changes sign."""
        dist = self._dist(side)
        low, high = self._supports[side]
        other_edges = self._supports["p" if side == "q" else "q"]
        results = []
        for upper in (False, True):
            def log_ratio_at(u, upper=upper):
                u = np.asarray(u, dtype=np.float64)
                with np.errstate(all="ignore"):
                    x = dist.isf(u) if upper else dist.ppf(u)
                return np.asarray(self._at_x(x, side)[1], dtype=np.float64)

            def integrand(u, log_ratio_at=log_ratio_at):
                log_ratio = log_ratio_at(u)
                values = np.zeros_like(log_ratio)
                ok = ~np.isnan(log_ratio)  # NaN: outside q's support (p-mass there is added in closed form)
                values[ok] = numerics.weighted(log_ratio[ok], side)
                return values

            with np.errstate(all="ignore"):
                edges = [float(dist.sf(e) if upper else dist.cdf(e)) for e in other_edges if low < e < high]
            levels = sorted({0.0, 0.5} | {v for v in (*edges, *_sign_changes(log_ratio_at)) if 0.0 < v < 0.5})
            results += _quadrature.tanhsinh_pieces(integrand, levels)
        total, converged = _quadrature.combine(results)
        if not converged:
            _quadrature.raise_unconverged(f"{self!r} under {side}")
        return total


def _log_abs_part(numerics, side: str):
    """log|integrand| of one f-divergence part as a vectorised function of log r (mpmath: exact at extreme L)."""
    def log_abs(log_ratio):
        L = np.asarray(log_ratio, dtype=np.float64)
        out = [math.nan if math.isnan(x) else numerics.log_abs_weighted(x, side) for x in L.ravel().tolist()]
        return np.array(out, dtype=np.float64).reshape(L.shape)

    return log_abs


def _sign_changes(log_ratio_at) -> list[float]:
    """Quantile levels in (0, ½) where a finite log r changes sign, bracketed on a grid and refined by
    Brent's method (jumps to ±∞ are support edges, already breaks)."""
    from scipy.optimize import brentq

    grid = np.concatenate([np.logspace(-60, -3, 120), np.linspace(1e-3, 0.5, 200)[1:]])
    values = log_ratio_at(grid)
    with np.errstate(invalid="ignore"):
        bracket = np.isfinite(values[:-1]) & np.isfinite(values[1:]) & (values[:-1] * values[1:] < 0)
    return [brentq(lambda v: float(log_ratio_at(v)), grid[i], grid[i + 1], xtol=1e-300,
                   rtol=4 * np.finfo(float).eps) for i in np.flatnonzero(bracket)]
