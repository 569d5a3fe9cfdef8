r"""Each recipe's penalty and its gradient as the framework computes them in float32, bfloat16 or float16: every
operation of its code, forward and backward, correctly rounded — the same result on every CPU.

A trainer evaluates its KL setting on tensors of some dtype and differentiates it with autodiff. Both steps round:
:math:`k_3 = e^L - 1 - L` written naively loses its digits for :math:`|L| \ll 1` (relative error
:math:`\sim\epsilon/L^2`), ``exp`` overflows at :math:`L > 88.7` in float32 and bfloat16, and a backward pass
through a clamp that cut an overflowed value multiplies a zero gradient by ``inf`` (NaN). Here each framework's
formula is transcribed operation by operation (:data:`OPERATIONS` names the file each follows) onto a small
elementwise reverse-mode autodiff whose every result — sums, products, ``exp``, ``expm1`` and the gradients'
products and accumulations — is rounded to nearest (ties to even) in the working precision, with IEEE overflow
to ±inf and ``0·inf = NaN``; backward rules are PyTorch's (``clamp`` passes the gradient where
:math:`lo \le x \le hi` and gives 0 elsewhere, ``exp`` multiplies by its result, ``abs`` by the sign, a
detached tensor has none). ``exp`` and ``expm1`` are correctly rounded: float64's value is rounded, and the rare
cases within its error of a midpoint are decided in 60-digit arithmetic (mpmath), so the outputs do not depend
on the machine's libm or vector unit (real GPUs' ``exp`` is faithful, within one unit in the last place, so a
trainer's last bit may differ; the orders of magnitude shown here do not).

The tokens are on-policy (the rollout policy's log-probabilities equal the policy's, detached), so a ratio
weight is exactly 1 in value and contributes its score term to the gradient. The log-probabilities are first
rounded to the given dtype (the tensors a trainer holds); recipes whose code casts them to float32 then compute
in float32 (:attr:`TrainerRecipe.precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klviz._results import Result
from klviz.trainers.recipes import get_trainer_recipe

__all__ = ["FLOAT_FORMATS", "FloatingPenalty", "recipe_in_precision", "OPERATIONS"]

#: Binary formats: significand bits (implicit bit included), exponent of the smallest normal, largest finite.
FLOAT_FORMATS = {
    "float64": (53, -1022, float(np.finfo(np.float64).max)),
    "float32": (24, -126, float(np.finfo(np.float32).max)),
    "bfloat16": (8, -126, (2.0 - 2.0**-7) * 2.0**127),
    "float16": (11, -14, 65504.0),
}

# exp/expm1 of float64 are within a few float64 ulp; values closer than this to a midpoint are decided exactly.
_GUARD_BITS = 50


def _round(values: np.ndarray, precision: str) -> np.ndarray:
    """Round float64 values to nearest in ``precision`` (ties to even), overflow to ±inf, NaN kept; exact steps."""
    if precision == "float64":
        return np.asarray(values, dtype=np.float64)
    bits, emin, largest = FLOAT_FORMATS[precision]
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _, exponent = np.frexp(values)
        quantum = np.maximum(exponent, emin + 1) - bits
        rounded = np.ldexp(np.rint(np.ldexp(values, -quantum)), quantum)
    finite = np.isfinite(values)
    rounded = np.where(finite & (np.abs(rounded) > largest), np.copysign(np.inf, values), rounded)
    return np.where(finite, rounded, values)


def _rounded_function(x: np.ndarray, approximate: np.ndarray, exact, precision: str) -> np.ndarray:
    """Correct rounding of f(x) given float64's ``approximate`` (relative error < 2^-50) and an mpmath ``exact``."""
    rounded = _round(approximate, precision)
    if precision == "float64":
        return rounded
    bits, emin, _ = FLOAT_FORMATS[precision]
    with np.errstate(invalid="ignore", over="ignore"):
        _, exponent = np.frexp(approximate)
        quantum = np.maximum(exponent, emin + 1) - bits
        scaled = np.ldexp(approximate, -quantum)
        guard = np.abs(np.ldexp(scaled, -_GUARD_BITS)) + 2.0**-60
        near = np.isfinite(scaled) & (np.abs(scaled - np.floor(scaled) - 0.5) <= guard)
    if near.any():
        import mpmath

        context = mpmath.MPContext()
        context.dps = 60
        for i in np.flatnonzero(near):
            below = float(np.floor(scaled.flat[i]))
            midpoint = math.ldexp(below + 0.5, int(quantum.flat[i]))          # exact in float64
            above = exact(context, context.mpf(float(x.flat[i]))) > context.mpf(midpoint)
            rounded.flat[i] = math.ldexp(below + 1.0 if above else below, int(quantum.flat[i]))
        rounded = _round(rounded, precision)
    return rounded


def _exp(x, precision):
    with np.errstate(over="ignore"):
        return _rounded_function(x, np.exp(x), lambda ctx, v: ctx.exp(v), precision)


def _expm1(x, precision):
    with np.errstate(over="ignore"):
        return _rounded_function(x, np.expm1(x), lambda ctx, v: ctx.expm1(v), precision)


class _Tensor:
    """An elementwise tensor of one precision with PyTorch's backward rules; values always rounded."""

    def __init__(self, value, precision: str, parents=()):
        self.value = np.asarray(value, dtype=np.float64)
        self.precision = precision
        self.parents = parents  # ((tensor, gradient -> contribution), ...)

    def _new(self, value, parents):
        return _Tensor(_round(value, self.precision), self.precision, parents)

    def _r(self, value):
        return _round(value, self.precision)

    @staticmethod
    def _value(other):
        return other.value if isinstance(other, _Tensor) else float(other)

    # arithmetic (scalars are constants)
    def __add__(self, other):
        with np.errstate(invalid="ignore"):
            value = self.value + self._value(other)
        parents = [(self, lambda g: g)]
        if isinstance(other, _Tensor):
            parents.append((other, lambda g: g))
        return self._new(value, tuple(parents))

    __radd__ = __add__

    def __neg__(self):
        return self._new(-self.value, ((self, lambda g: -g),))

    def __sub__(self, other):
        with np.errstate(invalid="ignore"):
            value = self.value - self._value(other)
        parents = [(self, lambda g: g)]
        if isinstance(other, _Tensor):
            parents.append((other, lambda g: -g))
        return self._new(value, tuple(parents))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        b = self._value(other)
        with np.errstate(invalid="ignore", over="ignore"):
            value = self.value * b
        parents = [(self, lambda g: self._r(g * b))]
        if isinstance(other, _Tensor):
            parents.append((other, lambda g: self._r(g * self.value)))
        return self._new(value, tuple(parents))

    __rmul__ = __mul__

    def __truediv__(self, scalar: float):
        with np.errstate(over="ignore"):
            return self._new(self.value / scalar, ((self, lambda g: self._r(g / scalar)),))

    def __pow__(self, exponent: int):
        if exponent != 2:
            raise ValueError("only squares are used by the transcribed formulas")
        return self.square()

    def square(self):
        x = self.value
        with np.errstate(over="ignore", invalid="ignore"):
            return self._new(x * x, ((self, lambda g: self._r(self._r(g * x) * 2.0)),))

    def exp(self):
        result = _exp(self.value, self.precision)
        with np.errstate(invalid="ignore", over="ignore"):
            return _Tensor(result, self.precision, ((self, lambda g: self._r(g * result)),))

    def expm1(self):
        result = _expm1(self.value, self.precision)
        with np.errstate(invalid="ignore", over="ignore"):
            return _Tensor(result, self.precision, ((self, lambda g: self._r(g * self._r(result + 1.0))),))

    def abs(self):
        sign = np.sign(self.value)
        with np.errstate(invalid="ignore"):
            return self._new(np.abs(self.value), ((self, lambda g: g * sign),))

    def clamp(self, lo, hi):
        x = self.value
        with np.errstate(invalid="ignore"):
            inside = (x >= lo) & (x <= hi)
        return self._new(np.clip(x, lo, hi), ((self, lambda g: np.where(inside, g, 0.0)),))

    def nan_to_num(self):
        finite = np.isfinite(self.value)
        with np.errstate(invalid="ignore"):
            return self._new(np.where(finite, self.value, 0.0), ((self, lambda g: g * finite),))

    def detach(self):
        return _Tensor(self.value, self.precision)

    def where(self, condition, other):
        """torch.where(condition, self, other)."""
        condition = np.asarray(condition, dtype=bool)
        return self._new(np.where(condition, self.value, other.value),
                         ((self, lambda g: np.where(condition, g, 0.0)), (other, lambda g: np.where(condition, 0.0, g))))

    def backward(self):
        """Gradients of every tensor in the graph (each contribution and each accumulation rounded)."""
        order, seen = [], set()

        def visit(node):
            if id(node) in seen:
                return
            seen.add(id(node))
            for parent, _ in node.parents:
                visit(parent)
            order.append(node)

        visit(self)
        grads = {id(self): np.ones_like(self.value)}
        for node in reversed(order):
            g = grads.get(id(node))
            if g is None:
                continue
            for parent, rule in node.parents:
                with np.errstate(invalid="ignore", over="ignore"):
                    contribution = rule(g)
                    previous = grads.get(id(parent))
                    grads[id(parent)] = contribution if previous is None else self._r(previous + contribution)
        return grads


# ---- the frameworks' formulas, transcribed onto _Tensor (logprob, ref_logprob, old_logprob) ----------------------

def _verl_forward(logprob, ref_logprob, kind):
    if kind == "kl":
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind == "mse":
        return 0.5 * (logprob - ref_logprob).square()
    kl = ref_logprob - logprob
    kl = kl.clamp(-20, 20)
    ratio = kl.exp()
    kld = ratio - kl - 1
    return kld.clamp(-10, 10)


def _verl(kind, straight_through=False):
    def formula(logprob, ref_logprob, old_logprob):
        forward_score = _verl_forward(logprob, ref_logprob, kind)
        if not straight_through or kind == "mse":
            return forward_score
        backward_score = 0.5 * (logprob - ref_logprob).square()
        return backward_score - backward_score.detach() + forward_score.detach()
    return formula


class _Reward:
    """A per-token reward computed at the rollout (from old_logprob); it enters the policy-gradient surrogate
    sg[k]·exp(log q - sg[log q]), whose gradient is k·∇log q. Its value is the reward, its gradient k·1."""

    def __init__(self, value):
        self.value = value

    def __call__(self, logprob, ref_logprob, old_logprob):
        reward = self.value(old_logprob, ref_logprob)
        return reward, reward.detach() * (logprob - old_logprob).exp()


def _reward(value):
    return _Reward(value)


def _trl_grpo(bias_correction):
    def formula(logprob, ref_logprob, old_logprob):
        per_token_kl = (ref_logprob - logprob).exp() - (ref_logprob - logprob) - 1
        if bias_correction:
            coef_1 = (logprob - old_logprob).exp()
            per_token_kl = per_token_kl * coef_1
        return per_token_kl
    return formula


def _trl_ppo_value(kind):
    def value(logprob, ref_logprob):
        logr = ref_logprob - logprob
        return -logr if kind == "k1" else (logr.exp() - 1) - logr
    return value


def _openrlhf_value(kind):
    def value(logprob, ref_logprob):
        log_ratio = logprob - ref_logprob
        if kind == "k2":
            log_ratio = log_ratio**2 / 2.0
        if kind == "k3":
            log_ratio = -log_ratio
            log_ratio = log_ratio.exp() - 1 - log_ratio
        return log_ratio.clamp(-10, 10)
    return value


def _nemo(kind, on_policy_approximation):
    def formula(logprob, ref_logprob, old_logprob):
        if on_policy_approximation:
            weights = (logprob - old_logprob).exp()
        else:
            weights = (logprob - logprob.detach()).exp()
        weights = weights.nan_to_num()
        logr = ref_logprob - logprob
        clamped = logr.clamp(-20.0, 20.0)
        weights = weights.where(logr.value == clamped.value, weights.detach())
        if kind == "k1":
            kl = -clamped
        elif kind == "k2":
            kl = clamped.square() / 2
        else:
            kl = clamped.exp() - 1 - clamped
        kl = weights * kl
        return kl.clamp(-10.0, 10.0)
    return formula


def _slime(kind, unbiased):
    def formula(logprob, ref_logprob, old_logprob):
        log_ratio = logprob - ref_logprob
        log_ratio = -log_ratio
        kl = log_ratio.exp() - 1 - log_ratio
        if unbiased:
            kl = (logprob - old_logprob).exp() * kl
        if kind == "low_var_kl":
            kl = kl.clamp(-10, 10)
        return kl
    return formula


def _open_instruct(index):
    def formula(logprob, ref_logprob, old_logprob):
        ref_logprobs_diff = (logprob - ref_logprob).clamp(-40.0, 40.0)
        if index == 0:
            return ref_logprobs_diff
        if index == 1:
            return ref_logprobs_diff**2 / 2
        if index == 2:
            return (-ref_logprobs_diff).expm1() + ref_logprobs_diff
        ratio = (logprob - old_logprob).exp()
        return ratio * ref_logprobs_diff
    return formula


_FORMULAS = {
    "verl:kl-loss": _verl("kl"), "verl:abs-loss": _verl("abs"), "verl:mse-loss": _verl("mse"),
    "verl:low_var_kl-loss": _verl("low_var_kl"), "verl:k1+-loss": _verl("kl", True),
    "verl:abs+-loss": _verl("abs", True), "verl:low_var_kl+-loss": _verl("low_var_kl", True),
    "verl:kl-reward": _reward(lambda lp, ref: _verl_forward(lp, ref, "kl")),
    "verl:low_var_kl-reward": _reward(lambda lp, ref: _verl_forward(lp, ref, "low_var_kl")),
    "trl:grpo-k3": _trl_grpo(False), "trl:grpo-k3-ratio": _trl_grpo(True),
    "trl:ppo-k1": _reward(_trl_ppo_value("k1")), "trl:ppo-k3": _reward(_trl_ppo_value("k3")),
    "openrlhf:k1-reward": _reward(_openrlhf_value("k1")),
    "openrlhf:k2-loss": lambda lp, ref, old: _openrlhf_value("k2")(lp, ref),
    "openrlhf:k3-loss": lambda lp, ref, old: _openrlhf_value("k3")(lp, ref),
    "nemo-rl:k3-loss": _nemo("k3", False), "nemo-rl:k3-loss-on-policy": _nemo("k3", True),
    "nemo-rl:k1-loss": _nemo("k1", False), "nemo-rl:k2-loss": _nemo("k2", False),
    "slime:low_var_kl-loss": _slime("low_var_kl", False), "slime:k3-loss": _slime("k3", False),
    "slime:low_var_kl-loss-unbiased": _slime("low_var_kl", True), "slime:k3-loss-unbiased": _slime("k3", True),
    "open-instruct:kl1-loss": _open_instruct(0), "open-instruct:kl2-loss": _open_instruct(1),
    "open-instruct:kl3-loss": _open_instruct(2), "open-instruct:kl4-loss": _open_instruct(3),
}

#: Which code each transcription follows (the recipe's source file and function).
OPERATIONS = {name: f"{get_trainer_recipe(name).source.path}: {get_trainer_recipe(name).source.function}"
              for name in _FORMULAS}


@dataclass(frozen=True, repr=False)
class FloatingPenalty(Result):
    r"""A recipe's per-token value and gradient coefficient in low precision, beside the exact ones.

    Attributes
    ----------
    recipe, precision, compute : str
        The recipe, the log-probabilities' dtype and the dtype the code computes in.
    log_ratio : ndarray
        :math:`L = \log p - \log q` of the rounded log-probabilities (exact difference).
    value, gradient : ndarray
        What the code returns and what its backward pass gives, :math:`\partial/\partial\log q` (float64
        holding values of ``compute``; inf and NaN as the arithmetic makes them).
    exact_value, exact_gradient : ndarray
        The recipe in exact arithmetic at the same :math:`L` (:meth:`TrainerRecipe.gradient_coefficient`).
    """

    recipe: str
    precision: str
    compute: str
    log_ratio: np.ndarray = field(repr=False)
    value: np.ndarray = field(repr=False)
    gradient: np.ndarray = field(repr=False)
    exact_value: np.ndarray = field(repr=False)
    exact_gradient: np.ndarray = field(repr=False)

    @property
    def value_error(self) -> np.ndarray:
        """|value - exact| / |exact| (inf where the value is not finite and the exact one is)."""
        return _relative_error(self.value, self.exact_value)

    @property
    def gradient_error(self) -> np.ndarray:
        return _relative_error(self.gradient, self.exact_gradient)

    def mean_error(self, weights) -> float:
        r"""Relative error of the weighted mean of the values, :math:`\sum w\,k` against the exact one.

        The sums are exactly rounded (``math.fsum``), so the result does not depend on summation order.

        Examples
        --------
        >>> result = recipe_in_precision("trl:grpo-k3", [-1e-4, -2e-4], [0.0, 0.0], "float32")
        >>> result.mean_error([0.5, 0.5])
        1.0
        """
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != self.value.shape or not np.isfinite(weights).all():
            raise ValueError(f"weights must be finite, one per token ({self.value.size}), got shape {weights.shape}")
        got = math.fsum(weights * self.value)
        want = math.fsum(weights * self.exact_value)
        return float(_relative_error(np.array([got]), np.array([want]))[0])

    def _display_fields(self):
        return [("recipe", self.recipe), ("precision", self.precision), ("compute", self.compute),
                ("tokens", self.value.size), ("non-finite values", int(np.sum(~np.isfinite(self.value)))),
                ("NaN gradients", int(np.sum(np.isnan(self.gradient))))]


def _relative_error(got, want):
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(got - want) / np.abs(want)
    error = np.where(got == want, 0.0, error)
    return np.where(np.isnan(error), np.inf, error)


def _compute_precision(record, precision: str) -> str:
    return "float32" if record.precision.startswith("float32") and precision != "float64" else precision


def recipe_in_precision(recipe, logp, ref_logp, precision: str = "float32") -> FloatingPenalty:
    r"""A recipe's per-token penalty and gradient as its code computes them in ``precision``, correctly rounded.

    The log-probabilities are rounded to ``precision`` (the dtype a trainer holds them in); the code's operations
    then run in that dtype, or in float32 for recipes that cast (OpenRLHF, slime, NeMo-RL), forward and backward,
    on-policy (module docstring).

    Parameters
    ----------
    recipe : TrainerRecipe or str
    logp, ref_logp : array_like
        Log-probabilities of the sampled tokens under the policy and the reference; -inf allowed (a token one of
        them gives probability 0), NaN not.
    precision : {"float64", "float32", "bfloat16", "float16"}
        float64 evaluates the same operations in double precision (a check of the transcription).

    Returns
    -------
    FloatingPenalty

    Raises
    ------
    TypeError, ValueError
        For a bad recipe or precision, non-real or NaN input, +inf log-probabilities or mismatched shapes.

    Examples
    --------
    OpenRLHF's k3 (the stored copy, before OpenRLHF#1335) at log r = 100: exp overflows, the clamp returns 10,
    and the backward pass multiplies the clamp's zero gradient by exp's inf:

    >>> result = recipe_in_precision("openrlhf:k3-loss", [-100.0], [0.0], "float32")
    >>> float(result.value[0]), float(result.gradient[0]), float(result.exact_gradient[0])
    (10.0, nan, 0.0)
    """
    record = get_trainer_recipe(recipe)
    if not isinstance(precision, str) or precision not in FLOAT_FORMATS:
        raise ValueError(f"precision must be one of {list(FLOAT_FORMATS)}, got {precision!r}")
    arrays = []
    for name, values in (("logp", logp), ("ref_logp", ref_logp)):
        arr = np.asarray(values)
        if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
        arr = np.array(arr, dtype=np.float64, ndmin=1)
        if np.isnan(arr).any() or (arr == np.inf).any():
            raise ValueError(f"{name} must be log-probabilities: real numbers or -inf (got NaN or +inf)")
        arrays.append(arr)
    lp, ref = arrays
    if lp.shape != ref.shape:
        raise ValueError(f"logp and ref_logp must have the same shape, got {lp.shape} and {ref.shape}")
    if np.any((lp == -np.inf) & (ref == -np.inf)):
        raise ValueError("logp and ref_logp are both -inf for some token: its log-ratio is undefined")
    compute = _compute_precision(record, precision)
    lp, ref = _round(lp, precision), _round(ref, precision)      # the tensors' dtype; a cast to float32 is exact
    logprob = _Tensor(lp, compute)
    ref_logprob = _Tensor(ref, compute)
    out = _FORMULAS[record.name](logprob, ref_logprob, logprob.detach())
    out, surrogate = out if isinstance(out, tuple) else (out, out)
    grads = surrogate.backward()
    gradient = grads.get(id(logprob), np.zeros_like(lp))
    with np.errstate(invalid="ignore"):
        L = ref - lp
    exact_value = np.asarray(record.estimator.value(L), dtype=np.float64)
    exact_gradient = record.gradient_coefficient(L)
    return FloatingPenalty(record.name, precision, compute, L, out.value.copy(), np.asarray(gradient, dtype=np.float64),
                           exact_value, exact_gradient)
