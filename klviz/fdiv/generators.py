r"""f-divergence generators: f as one sympy expression, its derivatives, and the Taylor argument.

An f-divergence compares p with q through the ratio :math:`u = r = p/q` at draws from q,

.. math:: D_f(p, q) = \mathbb{E}_{x\sim q}\big[f(r(x))\big] = \int q(x)\, f\!\Big(\frac{p(x)}{q(x)}\Big)\,dx,
          \qquad f \text{ convex},\ f(1) = 0,

so it is zero when p = q and, by Jensen, never negative (for convex f). Each :class:`Generator` holds f as one sympy
expression in the positive symbol u — the single source from which f, f', f'' (numpy, via
``sympy.lambdify``), :math:`f^{(n)}(1)` (exact) and the integrands of :func:`f_divergence` are derived.

The registry :data:`GENERATORS` (natural logarithms; the conventions chosen where several exist):

* ``kl_qp`` — :math:`f = -\log u`: KL[q, p], the mean of k1 and k3; f''(1) = 1.
* ``kl_pq`` — :math:`f = u\log u`: KL[p, q], the mean of k1_pq and k3_pq; f''(1) = 1.
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

Relative tolerance 1e-12 throughout. Masses where one density vanishes use the limits :math:`g(0^+)`
and :math:`\lim_{u\to\infty} g(u)/u = f'(\infty) - f'(1)` (Csiszár's convention :math:`0 f(p/0) = p\,
f'(\infty)`).

sympy is imported on first use, not with ``import klviz``. A generator given as a string is parsed by a
small parser of its own (numbers, u, + - * / **, and named functions), never evaluated as code.
Exact values of :math:`D_f` are :func:`klviz.f_divergence` (:mod:`klviz.fdiv.divergence`).

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

__all__ = ["Generator", "GENERATORS", "get_generator", "parse_expression"]

_MP_DPS = 40
# Symbols that make a generator possibly non-smooth; otherwise derivatives at 1 are plain substitution.
_NON_SMOOTH = ("Abs", "sign", "Piecewise", "Heaviside", "Max", "Min", "floor", "ceiling")


def sympy_module():
    import sympy

    return sympy


def symbol_u():
    sp = sympy_module()
    return sp.Symbol("u", positive=True)


def symbol_log_ratio():
    sp = sympy_module()
    return sp.Symbol("L", real=True)


def to_float(value) -> float:
    """A sympy number as a float: ±oo -> ±inf, nan or non-numbers -> nan."""
    sp = sympy_module()
    value = sp.sympify(value)
    if value in (sp.oo, -sp.oo):
        return math.inf if value == sp.oo else -math.inf
    if value.has(sp.zoo, sp.nan) or not value.is_number:
        return math.nan
    try:
        return float(value)
    except TypeError:  # a complex or unevaluated number
        return math.nan


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
            sp = sympy_module()
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
        sp = sympy_module()
        u = symbol_u()
        if isinstance(self.expr, str):
            expr = parse_expression(self.expr, f"expr of generator {self.name!r}")
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
        return sympy_module().latex(self.expression)

    def derivative(self, order: int):
        r"""The symbolic derivative :math:`f^{(n)}(u)` (sympy expression; n = 0 is f itself)."""
        order = _order(order)
        cache = self.__dict__.setdefault("_derivatives", {})
        if order not in cache:
            cache[order] = sympy_module().diff(self.expression, symbol_u(), order) if order else self.expression
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
        sp = sympy_module()
        u = symbol_u()
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
        return to_float(self.derivative_at_1(2))

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
    def _numerics(self):
        from klviz.fdiv.divergence import GeneratorNumerics

        return GeneratorNumerics(self)

    @cached_property
    def _f_mpmath(self) -> Callable:
        return sympy_module().lambdify(symbol_u(), self.expression, modules="mpmath")

    def _derivative_numpy(self, order: int) -> tuple[Callable, float, float]:
        cache = self.__dict__.setdefault("_numpy", {})
        if order not in cache:
            sp = sympy_module()
            u = symbol_u()
            expr = self.derivative(order)
            # d/du |u - 1| brings DiracDelta(u - 1); away from the kink it is 0 (the kink is set to NaN).
            expr = expr.replace(sp.DiracDelta, lambda *args: sp.Integer(0))
            at_zero = to_float(sp.limit(expr, u, 0, "+"))
            at_infinity = to_float(sp.limit(expr, u, sp.oo))
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
            if math.isnan(to_float(self.derivative_at_1(order))):  # a kink at 1: no derivative there
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
        >>> GENERATORS["kl_pq"].f([0.0, 1.0, np.e])
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
        >>> GENERATORS["kl_qp"].f_second([0.5, 1.0, 2.0])
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
        Generator("kl_qp", "KL[q,p]", "-log(u)"),
        Generator("kl_pq", "KL[p,q]", "u*log(u)"),
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
# Parsing generator strings without evaluating code
# --------------------------------------------------------------------------------------------------

#: Functions a generator string may call, by name, and the symbols it may use.
_FUNCTIONS = ("log", "exp", "sqrt", "Abs", "sign", "Max", "Min", "sin", "cos", "tan", "atan", "sinh", "cosh",
              "tanh", "asinh", "erf", "Piecewise", "Heaviside", "floor", "ceiling")
_CONSTANTS = ("pi", "E")


def parse_expression(text: str, name: str = "expr"):
    """A sympy expression in the positive symbol u from a string, by walking its Python syntax tree.

    Only numbers, the names u, pi and E, the operators + - * / ** and calls of the functions in
    ``_FUNCTIONS`` are accepted; nothing is evaluated as code (``sympy.sympify`` would ``eval`` the string).

    Raises
    ------
    ValueError
        If the string does not parse or uses anything else.

    Examples
    --------
    >>> parse_expression("u*log(u) - (u - 1)")
    u*log(u) - u + 1
    """
    import ast
    import operator

    sp = sympy_module()
    u = symbol_u()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{name} {text!r} does not parse: {error.msg}") from None
    binary = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow}

    def build(node):
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return sp.Rational(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id == "u":
                return u
            if node.id in _CONSTANTS:
                return getattr(sp, node.id)
            raise ValueError(f"{name} {text!r} may only use the variable u (and pi, E), got {node.id!r}")
        if isinstance(node, ast.BinOp) and type(node.op) in binary:
            return binary[type(node.op)](build(node.left), build(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords):
            return getattr(sp, node.func.id)(*[build(arg) for arg in node.args])
        raise ValueError(f"{name} {text!r} may only use numbers, u, + - * / ** and the functions "
                         f"{', '.join(_FUNCTIONS)}; got {ast.dump(node)[:60]}")

    return build(tree)
