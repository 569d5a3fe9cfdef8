r"""What each RLHF framework's KL setting computes: one :class:`TrainerRecipe` per setting, read from its code.

Every framework logs per-token log-probabilities of the sampled tokens under the policy q (``logprob``)
and the reference p (``ref_logprob``); with klviz's log-ratio :math:`L = \log r = \log p - \log q`
(``ref_logprob - logprob``) each setting is a function of L — an :class:`~klviz.Estimator` — plus where it
enters training (the loss, or the reward), an optional importance weight
:math:`\rho = q_\theta/\mu` against the rollout policy μ (differentiable, or stopped), and a token
aggregation. The :class:`~klviz.Estimator` holds the *exact arithmetic* of the code: its clamps on L and on
the output, straight-through derivatives, in the order the code applies them. Floating-point rounding
(the dtype the code computes in) is recorded in :attr:`TrainerRecipe.precision` and left to
:mod:`klviz.precision`.

A clamp ``torch.clamp(x, lo, hi)`` passes the gradient where :math:`lo \le x \le hi` and blocks it
outside; a straight-through value ``b - b.detach() + f.detach()`` has the value of f and the gradient of
b. With the per-sample gradient written as :math:`c(x)\,\nabla_\theta\log q_\theta(x)`
(:mod:`klviz.gradients.uses`), on-policy

.. math:: c = s\,k(L) - d\,k'(L),

with s = 1 when the score term is present (a reward, or a differentiable ratio) and d = 1 when the
pathwise term is (a loss): :attr:`TrainerRecipe.gradient_use` names the klviz use.

Sources were read on 2026-12-02 from the stored copies of the repositories (commit in each
:class:`RecipeSource`); where the code differs from what is commonly said of it, :attr:`TrainerRecipe.notes`
says how.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from klviz._kernels import exp_minus_1_minus_x
from klviz._results import Result, Shown
from klviz.estimators import Estimator, ExpPolynomial
from klviz.gradients.uses import GradientUse

__all__ = ["RecipeSource", "TrainerRecipe", "trainer_recipes", "get_trainer_recipe", "FRAMEWORKS",
           "UNIT_RATIO_EPOCH_USE"]

#: The frameworks covered, in the order :func:`trainer_recipes` lists them.
FRAMEWORKS = ("verl", "trl", "openrlhf", "nemo-rl", "slime", "open-instruct")
USES = ("loss", "reward")
WEIGHTINGS = ("none", "ratio", "stopped_ratio", "unit_ratio")
READ_ON = "2026-12-02"

#: A loss times :math:`e^{\log q - \mathrm{sg}[\log q]}` on an older policy μ's samples (NeMo-RL's KL loss in a
#: later epoch): value 1, both gradient terms, no reweighting, so :math:`\mathbb{E}_\mu[(k - k')\,g]`.
UNIT_RATIO_EPOCH_USE = GradientUse("unit_ratio_loss", "exp(log q - sg[log q]) * k(x)", True, True, True,
                                   reweighted=False)


# --------------------------------------------------------------------------------------------------
# The per-token formulas
# --------------------------------------------------------------------------------------------------

def _as_log_ratio(logr) -> tuple[np.ndarray, np.dtype]:
    """log r as a float64 array and the dtype the result must have (floats keep theirs)."""
    arr = np.asarray(logr)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"logr must be a real number or an array of real numbers, got dtype {arr.dtype}")
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    x = np.asarray(arr, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("logr contains NaN; a log-ratio is a real number or ±inf")
    return x, dtype


def _finish(value: np.ndarray, dtype: np.dtype, like):
    with np.errstate(over="ignore"):  # float64 -> float32 beyond its range is inf, as intended
        value = np.asarray(value, dtype=dtype)
    return value[()] if np.ndim(like) == 0 else value


def _base_value(base: str, L: np.ndarray) -> np.ndarray:
    if base == "k1":
        return -L
    if base == "k2":
        with np.errstate(over="ignore"):
            return 0.5 * (L * L)
    if base == "k3":
        return exp_minus_1_minus_x(np.array(L, dtype=np.float64, ndmin=1)).reshape(np.shape(L))
    return np.abs(L)  # "abs"


def _base_derivative(base: str, L: np.ndarray) -> np.ndarray:
    if base == "k1":
        return np.full(np.shape(L), -1.0)
    if base == "k2":
        return np.array(L, dtype=np.float64)
    if base == "k3":
        with np.errstate(over="ignore"):
            return np.expm1(L)
    return np.sign(L)  # torch's abs backward: sign(x), 0 at 0


_EXPANSIONS = {
    "k1": ExpPolynomial({(0, 1): -1.0}),
    "k2": ExpPolynomial({(0, 2): 0.5}),
    "k3": ExpPolynomial({(1, 0): 1.0, (0, 0): -1.0, (0, 1): -1.0}),
}
_BASE_LABELS = {"k1": r"-\log r", "k2": r"\frac{1}{2}(\log r)^2", "k3": r"k_3", "abs": r"|\log r|"}


def _k3_level(level: float) -> tuple[float, float]:
    """The two log-ratios where k3 = e^L - 1 - L equals ``level`` > 0 (Newton from outside the roots)."""
    roots = []
    for x in (-(level + 1.0) - 1.0, math.log(level + 2.0) + 1.0):  # left of the negative root / right of the positive
        for _ in range(100):
            step = (math.expm1(x) - x - level) / math.expm1(x)
            x -= step
            if abs(step) <= 1e-15 * max(1.0, abs(x)):
                break
        roots.append(x)
    return roots[0], roots[1]


@dataclass(frozen=True)
class _Formula:
    """A base estimator of L with the code's clamps: clip(base(clip(L, ±log_clamp)), ±value_clamp)."""

    base: str
    log_clamp: float | None = None
    value_clamp: float | None = None
    straight_through: bool = False     # verl "+": gradient of ½(log q - log p)², never clamped
    clamp_after_weight: bool = False   # slime, NeMo-RL: the clamps act on w·k, so they cut the weight's gradient too

    def clipped_log_ratio(self, L: np.ndarray) -> np.ndarray:
        return L if self.log_clamp is None else np.clip(L, -self.log_clamp, self.log_clamp)

    def unclamped_value(self, L: np.ndarray) -> np.ndarray:
        """The base of the clipped log-ratio, before the output clamp."""
        return _base_value(self.base, self.clipped_log_ratio(L))

    def value(self, L: np.ndarray) -> np.ndarray:
        raw = self.unclamped_value(L)
        return raw if self.value_clamp is None else np.clip(raw, -self.value_clamp, self.value_clamp)

    def derivative(self, L: np.ndarray) -> np.ndarray:
        if self.straight_through:
            return np.array(L, dtype=np.float64)
        inside = np.ones(np.shape(L), dtype=bool)
        if self.log_clamp is not None:
            inside &= np.abs(L) <= self.log_clamp
        raw = self.unclamped_value(L)
        bound = np.ones(np.shape(L), dtype=bool) if self.value_clamp is None else np.abs(raw) <= self.value_clamp
        with np.errstate(invalid="ignore"):
            out = np.where(inside & bound, _base_derivative(self.base, self.clipped_log_ratio(L)), 0.0)
        if self.clamp_after_weight:
            # clamp(w·k) blocks the whole gradient where it binds, the score term w·k as well (and NeMo-RL
            # detaches w where its log-ratio clamp binds): with the differentiable weight's score term s·k, a
            # pathwise factor equal to the value cancels it.
            out = np.where(inside & bound, out, self.value(L))
        return out

    def kinks(self) -> tuple[float, ...]:
        points = [] if self.log_clamp is None else [-self.log_clamp, self.log_clamp]
        if self.base == "abs":
            points.append(0.0)
        v = self.value_clamp
        if v is not None:
            if self.base == "k3":
                points += list(_k3_level(v))
            elif self.base == "k2":
                points += [-math.sqrt(2.0 * v), math.sqrt(2.0 * v)]
            else:
                points += [-v, v]
        return tuple(points)

    def label(self) -> str:
        inner = _BASE_LABELS[self.base]
        if self.log_clamp is not None:
            inner = inner.replace(r"\log r", rf"\log r_{{\pm{self.log_clamp:g}}}")
            if self.base == "k3":
                inner = rf"k_3(\mathrm{{clip}}(\log r, \pm{self.log_clamp:g}))"
        if self.value_clamp is not None:
            inner = rf"\mathrm{{clip}}({inner}, \pm{self.value_clamp:g})"
        if self.straight_through:
            inner += r"\ [\nabla\!: k_2]"
        return f"${inner}$"

    def estimator(self, name: str) -> Estimator:
        def value(logr):
            L, dtype = _as_log_ratio(logr)
            return _finish(self.value(L), dtype, logr)

        def derivative(logr):
            L, dtype = _as_log_ratio(logr)
            return _finish(self.derivative(L), dtype, logr)

        exact = self.log_clamp is None and self.value_clamp is None and self.base in _EXPANSIONS
        expansion = _EXPANSIONS[self.base] if exact else None
        derivative_expansion = None
        if self.straight_through and expansion is not None:
            derivative_expansion = ExpPolynomial({(0, 1): 1.0})
        return Estimator(name, value, derivative, "kl_qp", self.label(), expansion=expansion,
                         derivative_expansion=derivative_expansion, kinks=self.kinks())


# --------------------------------------------------------------------------------------------------
# The records
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class RecipeSource(Result):
    """Where a recipe was read: repository, file, function, the stored commit, the date, other files used."""

    repository: str
    path: str
    function: str
    commit: str | None
    read: str = READ_ON
    also: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repository}/blob/{self.commit or 'main'}/{self.path}"

    def _display_fields(self):
        return [("repository", self.repository), ("path", self.path), ("function", self.function),
                ("commit", Shown((self.commit or "unknown")[:10])), ("read", Shown(self.read))]


@dataclass(frozen=True, repr=False)
class TrainerRecipe(Result):
    r"""One framework setting of a KL penalty, as its code computes it.

    Attributes
    ----------
    name : str
        A short key, ``"framework:setting"`` (e.g. ``"verl:low_var_kl-loss"``).
    framework : str
        One of :data:`FRAMEWORKS`.
    option : str
        The setting as its users write it (config keys or command-line flags).
    estimator : Estimator
        Value and derivative in :math:`\log r = \log p - \log q` (exact arithmetic, the code's clamps).
    use : {"loss", "reward"}
        A loss term differentiated through :math:`\log q_\theta` (pathwise), or a detached per-token
        reward (score function).
    weighting : {"none", "ratio", "stopped_ratio", "unit_ratio"}
        The factor :math:`\rho = q_\theta/\mu` multiplying the per-token value: absent, differentiable
        (adds the score term), or detached; ``"unit_ratio"`` is :math:`e^{\log q_\theta - \mathrm{sg}[\log q_\theta]}`,
        value 1 and the gradient of a ratio, whatever policy the tokens came from (NeMo-RL's default).
    aggregation : str
        How per-token values become the scalar the optimiser sees.
    source : RecipeSource
    log_ratio_clamp, value_clamp : float or None
        Symmetric bounds the code clips log r and the output to.
    clamp_after_weight : bool
        The output clamp acts on :math:`\rho\,k` rather than on k (slime, NeMo-RL); on-policy the two agree
        in value, and :attr:`estimator`'s derivative is set so that the gradient agrees too. (A
        ``"unit_ratio"`` recipe clamps :math:`1\cdot k`: False here, but its Estimator's derivative is set the
        same way.)
    precision : str
        The dtype the code computes in.
    notes : tuple of str
        Where the code differs from what is said of it, and caveats.
    """

    name: str
    framework: str
    option: str
    estimator: Estimator = field(repr=False)
    use: str
    weighting: str
    aggregation: str
    source: RecipeSource = field(repr=False)
    log_ratio_clamp: float | None
    value_clamp: float | None
    precision: str
    clamp_after_weight: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {list(FRAMEWORKS)}, got {self.framework!r}")
        if self.use not in USES:
            raise ValueError(f"use must be one of {list(USES)}, got {self.use!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {self.weighting!r}")
        if self.use == "reward" and self.weighting != "none":
            raise ValueError("a reward recipe has no importance weight of its own (weighting must be 'none')")

    @property
    def gradient_use(self) -> str:
        """The :mod:`klviz.gradients` use that gives this recipe's gradient on-policy (samples from q)."""
        if self.use == "reward":
            return "reward"
        return {"none": "loss", "ratio": "ratio_loss", "stopped_ratio": "stopgrad_ratio_loss",
                "unit_ratio": "ratio_loss"}[self.weighting]

    @property
    def epoch_use(self):
        """The use for a later PPO/GRPO epoch, samples from an older policy μ: ``no_ratio_loss`` for an
        unweighted loss (the code applies it to μ's samples as if they were q's), the weighted uses as on-policy
        (their ratio corrects for μ), :data:`UNIT_RATIO_EPOCH_USE` (a :class:`~klviz.gradients.GradientUse`:
        both gradient terms, no reweighting) for ``"unit_ratio"``. None for a reward: it is computed once, at
        the rollout (:func:`klviz.trainers.recipe_gradient` follows it into later epochs)."""
        if self.use == "reward":
            return None
        if self.weighting == "unit_ratio":
            return UNIT_RATIO_EPOCH_USE
        return {"none": "no_ratio_loss", "ratio": "ratio_loss", "stopped_ratio": "stopgrad_ratio_loss"}[self.weighting]

    def penalty(self, logp, ref_logp, *, old_logp=None) -> np.ndarray:
        r"""The per-token value the code computes from log-probabilities (float64, exact arithmetic).

        .. math:: w\,k(\log p - \log q)\quad\text{or, with the clamp after the weight,}\quad
                  \mathrm{clip}\big(w\,k_{\text{unclamped}}, \pm v\big),\qquad
                  w = e^{\log q - \log\mu}\ \text{(weighted recipes), else } 1.

        Parameters
        ----------
        logp, ref_logp : array_like
            Log-probabilities of the sampled tokens under the policy q and the reference p.
        old_logp : array_like, optional
            Under the rollout policy μ (weighted recipes; default μ = q, so w = 1).

        Returns
        -------
        ndarray of float64

        Raises
        ------
        TypeError, ValueError
            For non-real, NaN or mismatched arrays, or ``old_logp`` given to an unweighted recipe.

        Examples
        --------
        >>> recipe = get_trainer_recipe("trl:grpo-k3-ratio")
        >>> float(recipe.penalty([-1.0], [-1.5], old_logp=[-1.2])[0])   # e^0.2 · (e^-0.5 - 1 + 0.5)
        0.13011684160163295
        """
        logp = _log_probs(logp, "logp")
        ref_logp = _log_probs(ref_logp, "ref_logp")
        if logp.shape != ref_logp.shape:
            raise ValueError(f"logp and ref_logp must have the same shape, got {logp.shape} and {ref_logp.shape}")
        if old_logp is not None:
            if self.weighting in ("none", "unit_ratio"):
                raise ValueError(f"old_logp is only used by recipes weighted by q/mu; {self.name!r} has weighting "
                                 f"{self.weighting!r} (a weight of 1 whatever the rollout policy)")
            old_logp = _log_probs(old_logp, "old_logp")
            if old_logp.shape != logp.shape:
                raise ValueError(f"old_logp must have the shape of logp, got {old_logp.shape} and {logp.shape}")
            with np.errstate(over="ignore"):
                weight = np.exp(logp - old_logp)
        else:
            weight = np.ones_like(logp)
        L = ref_logp - logp
        formula = _FORMULAS[self.name]
        with np.errstate(over="ignore", invalid="ignore"):
            if self.clamp_after_weight:
                v = formula.value_clamp
                return np.clip(weight * formula.unclamped_value(L), -v, v)
            value = np.asarray(self.estimator.value(L), dtype=np.float64)
            # ρ > 0 exactly; a product where ρ underflowed and k overflowed is ±inf, not 0·inf.
            return np.where(np.isinf(value), value, weight * value)

    def gradient_coefficient(self, log_ratio, *, log_weight=None) -> np.ndarray:
        r"""Per token, the factor c of the gradient the code's autodiff returns: :math:`c\,\nabla_\theta\log q_\theta`.

        c is the derivative of the code's per-token surrogate in :math:`\log q_\theta` at the token (detached
        tensors held at their values), with :math:`L = \log p - \log q` and :math:`\rho = q/\mu = e^{w}` for
        a token drawn from μ (``log_weight`` w; 0 on-policy):

        ==================  =====================================================================
        weighting / use      c
        ==================  =====================================================================
        none (loss)          :math:`-k'(L)` (μ plays no part: the code uses μ's tokens as q's)
        ratio                :math:`\rho\,(k - k')(L)`; with the clamps after the weight, 0 where
                             :math:`|\rho\,k| > v` or :math:`|L|` exceeds the log-ratio clamp
        stopped_ratio        :math:`\rho\,(-k'(L))`
        unit_ratio           :math:`(k - k')(L)` (the weight is 1 whatever μ; 0 where a clamp binds)
        reward               :math:`\rho\,k(L + w)`: the reward computed at the rollout from
                             :math:`\log p - \log\mu`, times the policy loss's ratio (PPO's clip aside)
        ==================  =====================================================================

        For a reward this is the token's own term; the rest of its return (the later tokens' rewards) is a
        sequence matter (:func:`klviz.trainers.recipe_sequence_gradient`).

        Parameters
        ----------
        log_ratio : array_like
            :math:`L = \log p - \log q` per token (real; ±inf allowed).
        log_weight : array_like, optional
            :math:`\log q - \log\mu` per token (finite), same shape; default 0 (tokens from q).

        Returns
        -------
        ndarray of float64

        Raises
        ------
        TypeError, ValueError
            For non-real or NaN input, a non-finite ``log_weight`` or mismatched shapes.

        Examples
        --------
        >>> recipe = get_trainer_recipe("trl:grpo-k3")
        >>> float(recipe.gradient_coefficient([0.5])[0])            # -k3'(0.5) = 1 - e^0.5
        -0.6487212707001282
        >>> ratio = get_trainer_recipe("trl:grpo-k3-ratio")
        >>> float(ratio.gradient_coefficient([0.5])[0])             # k3 - k3' = -L on-policy
        -0.5
        """
        L, _ = _as_log_ratio(log_ratio)
        L = np.array(L, dtype=np.float64, ndmin=1)
        if log_weight is None:
            w = np.zeros_like(L)
        else:
            w = np.array(np.asarray(log_weight), dtype=np.float64, ndmin=1)
            if w.shape != L.shape:
                raise ValueError(f"log_weight must have the shape of log_ratio, got {w.shape} and {L.shape}")
            if not np.isfinite(w).all():
                raise ValueError("log_weight must be finite (log q - log mu of tokens both policies can draw)")
        estimator, formula = self.estimator, _FORMULAS[self.name]
        with np.errstate(over="ignore", invalid="ignore"):
            rho = np.exp(w)
            if self.use == "reward":
                factor = np.asarray(estimator.value(L + w), dtype=np.float64)
            elif self.weighting == "none":
                return 0.0 - np.asarray(estimator.derivative(L), dtype=np.float64).reshape(np.shape(L))  # no -0
            elif self.weighting == "stopped_ratio":
                factor = 0.0 - np.asarray(estimator.derivative(L), dtype=np.float64)
            elif self.weighting == "unit_ratio":
                return _cancelled(np.asarray(estimator.value(L), dtype=np.float64)
                                  - np.asarray(estimator.derivative(L), dtype=np.float64), L, estimator)
            elif self.clamp_after_weight:
                raw = formula.unclamped_value(L)
                inside = np.ones(L.shape, dtype=bool) if formula.log_clamp is None else np.abs(L) <= formula.log_clamp
                # |ρ k| ≤ v in logs (ρ k overflows where the clamp binds anyway)
                with np.errstate(divide="ignore"):
                    kept = inside & (np.log(np.abs(raw)) + w <= math.log(formula.value_clamp))
                slope = _base_derivative(formula.base, formula.clipped_log_ratio(L))
                factor = np.where(kept, raw - slope, 0.0)
            else:
                factor = (np.asarray(estimator.value(L), dtype=np.float64)
                          - np.asarray(estimator.derivative(L), dtype=np.float64))
                factor = _cancelled(factor, L, estimator)
            # ρ > 0: a zero factor stays 0 where ρ overflows (no 0·inf)
            return np.where(factor == 0.0, 0.0, rho * factor)

    def clamp_hits(self, logp, ref_logp, *, old_logp=None) -> np.ndarray:
        r"""Per token, whether one of the code's clamps binds (the value or the gradient is cut there).

        A clamp to [lo, hi] binds where its argument lies outside: :math:`|\log r|` beyond
        :attr:`log_ratio_clamp`, or the estimate (ρ·estimate with :attr:`clamp_after_weight`) beyond
        :attr:`value_clamp`. Arguments as in :meth:`penalty`.

        Returns
        -------
        ndarray of bool
            All False for a recipe without clamps.

        Examples
        --------
        >>> recipe = get_trainer_recipe("verl:low_var_kl-loss")
        >>> recipe.clamp_hits([-1.0, -1.0, -1.0], [-1.0, -13.0, 2.0]).tolist()   # log r = 0, -12, 3
        [False, True, True]
        """
        logp = _log_probs(logp, "logp")
        ref_logp = _log_probs(ref_logp, "ref_logp")
        if logp.shape != ref_logp.shape:
            raise ValueError(f"logp and ref_logp must have the same shape, got {logp.shape} and {ref_logp.shape}")
        L = ref_logp - logp
        formula = _FORMULAS[self.name]
        hits = np.zeros(L.shape, dtype=bool)
        if formula.log_clamp is not None:
            hits |= np.abs(L) > formula.log_clamp
        if formula.value_clamp is not None:
            raw = formula.unclamped_value(L)
            if self.clamp_after_weight and old_logp is not None:
                old_logp = _log_probs(old_logp, "old_logp")
                if old_logp.shape != logp.shape:
                    raise ValueError(f"old_logp must have the shape of logp, got {old_logp.shape} and {logp.shape}")
                with np.errstate(over="ignore", invalid="ignore"):
                    raw = np.where(np.isinf(raw), raw, np.exp(logp - old_logp) * raw)
            hits |= np.abs(raw) > formula.value_clamp
        return hits

    def _display_fields(self):
        clamps = []
        if self.log_ratio_clamp is not None:
            clamps.append(f"log r to ±{self.log_ratio_clamp:g}")
        if self.value_clamp is not None:
            clamps.append(f"{'ρ·k' if self.clamp_after_weight else 'value'} to ±{self.value_clamp:g}")
        return [("name", self.name), ("option", Shown(self.option)), ("use", self.use),
                ("weighting", self.weighting), ("clamps", Shown(", ".join(clamps) or "none")),
                ("gradient_use", self.gradient_use), ("aggregation", Shown(self.aggregation))]


def _cancelled(difference: np.ndarray, L: np.ndarray, estimator: Estimator) -> np.ndarray:
    """k - k' where the two overflowed (inf - inf): from the exact form, whose e^L terms cancel (k3: -L), and at
    L = ±inf its limit. Elsewhere the difference as computed."""
    bad = np.isnan(difference)
    if not bad.any() or estimator.expansion is None or estimator.derivative_expansion is None:
        return difference
    form = estimator.expansion - estimator.derivative_expansion
    exact = form.evaluate(L[bad])
    for i in np.flatnonzero(np.isnan(exact) & np.isinf(L[bad])):
        exact[i] = _limit(form, float(L[bad][i]))
    out = difference.copy()
    out[bad] = exact
    return out


def _limit(form: ExpPolynomial, end: float) -> float:
    """The limit of Σ c e^{tL} L^j as L -> +inf or -inf (the dominant term)."""
    terms = [(t, j, c) for (t, j), c in form.coefficients.items() if end > 0 or t == 0]
    if not terms:
        return 0.0
    t, j, c = max(terms, key=lambda term: (term[0], term[1]))
    if t == 0 and j == 0:
        return c
    return math.copysign(math.inf, c * (1.0 if end > 0 else (-1.0) ** j))


def _log_probs(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64, ndmin=1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite log-probabilities (got NaN or ±inf)")
    return arr


# --------------------------------------------------------------------------------------------------
# The catalogue (read from the frameworks' code on READ_ON)
# --------------------------------------------------------------------------------------------------

_VERL = RecipeSource(
    "verl-project/verl", "verl/trainer/ppo/core_algos.py", "kl_penalty, kl_penalty_forward",
    "018f23b5f83a13340421349e40ec42530739b23a",
    also=("verl/workers/config/actor.py: ActorConfig(use_kl_loss=False, kl_loss_type='low_var_kl', "
          "kl_loss_coef=0.001, loss_agg_mode='token-mean')",
          "verl/workers/actor/dp_actor.py: update_policy (use_kl_loss: kl_penalty(log_prob, ref_log_prob, "
          "kl_loss_type) aggregated by agg_loss(loss_agg_mode), no ratio)",
          "verl/trainer/ppo/ray_trainer.py: apply_kl_penalty (use_kl_in_reward: token_level_scores - "
          "beta * kl_penalty(old_log_probs, ref_log_prob, kl_penalty))"))
_TRL_GRPO = RecipeSource(
    "huggingface/trl", "trl/trainer/grpo_trainer.py", "GRPOTrainer._compute_loss", None,
    also=("the stored copy of grpo_trainer.py (d2b69d769dab) predates the flag: the formula was read from the "
          "code quoted in huggingface/trl#6586 (2026-07-30) and in downstream copies of _compute_loss",
          "trl/trainer/grpo_config.py: use_bias_correction_kl, loss_type (default 'dapo')",
          "huggingface/trl#4638 (the flag, 2025-12-07), #6503 (default True, merged 2026-07-22), "
          "#6586/#7188 (sequence-level coef_1, open)"))
_TRL_PPO = RecipeSource(
    "huggingface/trl", "trl/experimental/ppo/ppo_trainer.py", "PPOTrainer.train (4. compute rewards)",
    "d6196b61d8c275f2b2d2d76faef3fcf9982972f6",
    also=("trl/experimental/ppo/ppo_config.py: kl_estimator: Literal['k1', 'k3'] = 'k1', kl_coef = 0.05",))
_OPENRLHF = RecipeSource(
    "OpenRLHF/OpenRLHF", "openrlhf/models/utils.py", "compute_approx_kl, compute_reward",
    "473f61bd290a1718381e65338316a87b4f722b5a",
    also=("openrlhf/trainer/ppo_utils/experience_maker.py: KL in the reward unless --use_kl_loss",
          "openrlhf/trainer/ray/ppo_actor.py: --use_kl_loss, masked_mean(kl, action_mask)"))
_NEMO = RecipeSource(
    "NVIDIA-NeMo/RL", "nemo_rl/algorithms/loss/loss_functions.py", "ClippedPGLossFn.__call__",
    "006907a9570734f3e5d484c08ada84b0b89224c9",
    also=("nemo_rl/algorithms/utils.py: calculate_kl(logprobs, logprobs_reference, kl_type, input_clamp_value=20, "
          "output_clamp_value=10, importance_sampling_weights) (a stored copy after #2958; the copy at 7fb98c885ddb "
          "predates the weights)",
          "NVIDIA-NeMo/RL#2506 (2026-05-15) and #2958 (2026-06-26), both merged",
          "nemo_rl/algorithms/loss_functions.py @ b816b57be28b: the code before #2506 (no weight, or the detached "
          "exp(curr - generation) with use_on_policy_kl_approximation)"))
_SLIME = RecipeSource(
    "THUDM/slime", "slime/utils/ppo_utils.py", "compute_approx_kl", "501dae9c59e7203c88a0cd912892b152af5436a8",
    also=("slime/backends/megatron_utils/loss.py: policy_loss_function (--use-kl-loss, --use-unbiased-kl: "
          "importance_ratio = exp(log_probs - old_log_probs), sum_of_sample_mean)",
          "THUDM/slime#1004 (unbiased KL, 2025-12-02)"))
_OPEN_INSTRUCT = RecipeSource(
    "allenai/open-instruct", "open_instruct/model_utils.py", "estimate_kl", None,
    also=("estimate_kl read from a stored copy of model_utils.py without its commit (the copy at ebae1d15cff3 "
          "predates it)",
          "open_instruct/grpo_utils.py @ 7ee66551ab8e: ExperimentConfig.kl_estimator: Literal[0, 1, 2, 3] = 2, "
          "beta = 0.05, loss_denominator = 'token'",
          "open_instruct/grpo_fast.py: ref_logprobs_diff = (new_logprobs - ref_logprobs).clamp(-40.0, 40.0); "
          "ratio = exp(new_logprobs - old_logprobs), old detached"))

_K3_CORNERS = "k3 = 10 at log r = -10.99998 and 2.61087"
_VERL_LOSS_AGG = 'loss_agg_mode (default "token-mean")'
_RETURN_AGG = "per-token reward, summed into the return (GAE / reward-to-go)"
_VERL_LOSS_OPT = 'actor_rollout_ref.actor.use_kl_loss=True, actor_rollout_ref.actor.kl_loss_type="{}"'
_VERL_REWARD_OPT = 'algorithm.use_kl_in_reward=True, algorithm.kl_penalty="{}"'
_NO_CAST = "the log-probs' dtype (no cast)"
_FP32 = "float32 (log-probs cast with .float() before the subtraction)"

# name -> (formula, fields)
_SPECS: dict[str, tuple[_Formula, dict]] = {}


def _spec(name, formula, **fields):
    _SPECS[name] = (formula, fields)


_VERL_LOW_VAR = (f"log r is clamped to ±20 and k3 to ±10 (core_algos.py kl_penalty_forward). In exact arithmetic "
                 f"the ±20 clamp never changes the value or the gradient: {_K3_CORNERS}, inside ±20, so the "
                 "output clamp binds first; it only keeps exp from overflowing. The -10 bound never binds (k3 ≥ 0).")
_STRAIGHT = ("'+' suffix: the value of the base estimator with the gradient of ½(log q - log p)², unclamped: "
             "backward_score - backward_score.detach() + forward_score.detach() (kl_penalty). Its expected "
             "gradient is that of k2 in the loss, ∇KL(q‖p).")
_spec("verl:kl-loss", _Formula("k1"), framework="verl", option=_VERL_LOSS_OPT.format("kl") + ' (alias "k1")',
      use="loss", weighting="none", aggregation=_VERL_LOSS_AGG, source=_VERL, precision=_NO_CAST,
      notes=("k1 in the loss has zero expected gradient: E_q[∇(log q - log p)] = E_q[∇ log q] = 0.",))
_spec("verl:abs-loss", _Formula("abs"), framework="verl", option=_VERL_LOSS_OPT.format("abs"), use="loss",
      weighting="none", aggregation=_VERL_LOSS_AGG, source=_VERL, precision=_NO_CAST)
_spec("verl:mse-loss", _Formula("k2"), framework="verl", option=_VERL_LOSS_OPT.format("mse") + ' (alias "k2")',
      use="loss", weighting="none", aggregation=_VERL_LOSS_AGG, source=_VERL, precision=_NO_CAST)
_spec("verl:low_var_kl-loss", _Formula("k3", log_clamp=20.0, value_clamp=10.0), framework="verl",
      option=_VERL_LOSS_OPT.format("low_var_kl") + ' (alias "k3"; the default kl_loss_type)', use="loss",
      weighting="none", aggregation=_VERL_LOSS_AGG, source=_VERL, precision=_NO_CAST, notes=(_VERL_LOW_VAR,))
_spec("verl:k1+-loss", _Formula("k1", straight_through=True), framework="verl",
      option=_VERL_LOSS_OPT.format("k1+"), use="loss", weighting="none", aggregation=_VERL_LOSS_AGG,
      source=_VERL, precision=_NO_CAST, notes=(_STRAIGHT,))
_spec("verl:abs+-loss", _Formula("abs", straight_through=True), framework="verl",
      option=_VERL_LOSS_OPT.format("abs+"), use="loss", weighting="none", aggregation=_VERL_LOSS_AGG,
      source=_VERL, precision=_NO_CAST, notes=(_STRAIGHT,))
_spec("verl:low_var_kl+-loss", _Formula("k3", log_clamp=20.0, value_clamp=10.0, straight_through=True),
      framework="verl", option=_VERL_LOSS_OPT.format("low_var_kl+") + ' (alias "k3+")', use="loss",
      weighting="none", aggregation=_VERL_LOSS_AGG, source=_VERL, precision=_NO_CAST,
      notes=(_STRAIGHT, "The value keeps low_var_kl's clamps; the gradient (of k2) has none."))
_spec("verl:kl-reward", _Formula("k1"), framework="verl", option=_VERL_REWARD_OPT.format("kl") + " (the default)",
      use="reward", weighting="none", aggregation=_RETURN_AGG, source=_VERL, precision=_NO_CAST,
      notes=("Computed once from old_log_probs at the rollout (apply_kl_penalty), then a constant reward.",))
_K3_REWARD = ("As a reward (score function), k3's expected gradient is that of KL(q‖p) - KL(p‖q) "
              "(klviz.gradients.FOLLOWED), which is not bounded below: see stationary_policy.")
_spec("verl:low_var_kl-reward", _Formula("k3", log_clamp=20.0, value_clamp=10.0), framework="verl",
      option=_VERL_REWARD_OPT.format("low_var_kl"), use="reward", weighting="none", aggregation=_RETURN_AGG,
      source=_VERL, precision=_NO_CAST, notes=(_VERL_LOW_VAR, _K3_REWARD))

_TRL_AGG = 'loss_type (default "dapo": token sum over active tokens of the global accumulated batch)'
_spec("trl:grpo-k3", _Formula("k3"), framework="trl", option="GRPOConfig(beta>0, use_bias_correction_kl=False)",
      use="loss", weighting="none", aggregation=_TRL_AGG, source=_TRL_GRPO, precision=_NO_CAST,
      notes=("per_token_kl = exp(ref - logp) - (ref - logp) - 1, no clamp: it overflows to inf in float32 at "
             "log r > 88.7 (and to NaN through inf - inf at log r = +inf).",
             "No longer the default: use_bias_correction_kl=True since huggingface/trl#6503 (2026-07-22)."))
_spec("trl:grpo-k3-ratio", _Formula("k3"), framework="trl",
      option="GRPOConfig(beta>0, use_bias_correction_kl=True) (the default since trl#6503)", use="loss",
      weighting="ratio", aggregation=_TRL_AGG, source=_TRL_GRPO, precision=_NO_CAST,
      notes=("per_token_kl *= coef_1 with coef_1 = exp(logp - old_logp) not detached (DeepSeek-V3.2, "
             "arXiv:2512.02556, §3.1): the gradient on-policy is that of KL(q‖p), although the value is unchanged.",
             "With importance_sampling_level='sequence' coef_1 is the sequence's geometric-mean ratio broadcast "
             "to every token (trl#6586; per-token fix open in #7188): not modelled here (token level)."))
_spec("trl:ppo-k1", _Formula("k1"), framework="trl", option='PPOConfig(kl_estimator="k1") (the default, kl_coef=0.05)',
      use="reward", weighting="none", aggregation=_RETURN_AGG, source=_TRL_PPO, precision=_NO_CAST,
      notes=("PPOTrainer now lives in trl.experimental.ppo.",))
_spec("trl:ppo-k3", _Formula("k3"), framework="trl", option='PPOConfig(kl_estimator="k3")', use="reward",
      weighting="none", aggregation=_RETURN_AGG, source=_TRL_PPO, precision=_NO_CAST,
      notes=("kl = (logr.exp() - 1) - logr, no clamp.", _K3_REWARD))

_OPENRLHF_CLAMP = ("The ±10 clamp applies to every estimator, k1 included (log_ratio.clamp(min=-10, max=10) "
                   "after the branch).")
_OPENRLHF_LOSS_AGG = "masked_mean over the batch's response tokens (token-mean)"
_OPENRLHF_UNBIASED = ("OpenRLHF#1309 (merged 2026-08-14) adds an opt-in flag that keeps this value and backpropagates "
                      "w·k1·∇log q (w = q/q_old, clamped and detached): not in the stored copy, not modelled here.")
_spec("openrlhf:k1-reward", _Formula("k1", value_clamp=10.0), framework="openrlhf",
      option="--init_kl_coef > 0 --kl_estimator k1 (the default; without --use_kl_loss)", use="reward",
      weighting="none", aggregation=_RETURN_AGG, source=_OPENRLHF, precision=_FP32, notes=(_OPENRLHF_CLAMP,))
_spec("openrlhf:k2-loss", _Formula("k2", value_clamp=10.0), framework="openrlhf",
      option="--use_kl_loss --kl_estimator k2", use="loss", weighting="none", aggregation=_OPENRLHF_LOSS_AGG,
      source=_OPENRLHF, precision=_FP32, notes=(_OPENRLHF_CLAMP, _OPENRLHF_UNBIASED))
_spec("openrlhf:k3-loss", _Formula("k3", value_clamp=10.0), framework="openrlhf",
      option="--use_kl_loss --kl_estimator k3", use="loss", weighting="none", aggregation=_OPENRLHF_LOSS_AGG,
      source=_OPENRLHF, precision=_FP32,
      notes=(_OPENRLHF_CLAMP, "No clamp on log r in the stored copy: at log r = +inf the float value is NaN "
             "(inf - inf), which the output clamp keeps; where exp overflows (log r > 88.7 in float32) the value is "
             "clamped to 10 but the backward pass is 0·inf = NaN.",
             "OpenRLHF#1335 (merged 2026-09-11) bounds log r before exp where the output clamp saturates: the same "
             "value and gradient in exact arithmetic, no overflow.", _OPENRLHF_UNBIASED))

_NEMO_AGG = "token_level_loss=True: token-mean over the global batch; False: mean over sequences of token-means"
_NEMO_OPT = ("loss_fn.reference_policy_kl_penalty > 0, reference_policy_kl_type: {}, kl_input_clamp_value: 20, "
             "kl_output_clamp_value: 10")
_NEMO_PREC = "float32 (ClippedPGLossFn casts the logits to float32)"
_NEMO_NOTE = ("calculate_kl(..., importance_sampling_weights=w): log r clamped to ±20 (w detached where it binds), "
              f"then w·k clamped to ±10, so both clamps cut the whole gradient where they bind. For k3: {_K3_CORNERS}.")
_NEMO_CHANGED = ("Changed on 2026-05-15 (NVIDIA-NeMo/RL#2506, 'fix: KL backward in GRPO'; #2958 detaches w where "
                 "the log-ratio clamp binds): before, the KL loss had no weight ({}), so k3 followed KL(p‖q) "
                 "and k1 had zero expected gradient.")
_NEMO_UNIT = ("w = exp(curr_logprobs - curr_logprobs.detach()): value 1 and the gradient of a ratio, so on-policy "
              "the gradient has the score term and follows E_q[k] (KL(q‖p) for k1 and k3). In later epochs w is "
              "still 1 on the rollout's tokens: E_mu[(k - k')∇log q], no correction for mu.")
_spec("nemo-rl:k3-loss", _Formula("k3", log_clamp=20.0, value_clamp=10.0, clamp_after_weight=True),
      framework="nemo-rl", option=_NEMO_OPT.format("k3") + ", use_on_policy_kl_approximation: false (the default)",
      use="loss", weighting="unit_ratio", aggregation=_NEMO_AGG, source=_NEMO, precision=_NEMO_PREC,
      notes=(_NEMO_NOTE, _NEMO_UNIT, _NEMO_CHANGED.format("weighting 'none'")))
_spec("nemo-rl:k3-loss-on-policy", _Formula("k3", log_clamp=20.0, value_clamp=10.0, clamp_after_weight=True),
      framework="nemo-rl", option=_NEMO_OPT.format("k3") + ", use_on_policy_kl_approximation: true", use="loss",
      weighting="ratio", aggregation=_NEMO_AGG, source=_NEMO, precision=_NEMO_PREC, clamp_after_weight=True,
      notes=(_NEMO_NOTE, "w = exp(curr_logprobs - generation_logprobs), differentiable (nan/inf mapped to 0): "
             "DeepSeek-V3.2's ratio times k, clamped after the weight as in slime's --use-unbiased-kl.",
             _NEMO_CHANGED.format("the detached exp(curr - generation)")))
_spec("nemo-rl:k1-loss", _Formula("k1", log_clamp=20.0, value_clamp=10.0, clamp_after_weight=True),
      framework="nemo-rl", option=_NEMO_OPT.format("k1"), use="loss", weighting="unit_ratio", aggregation=_NEMO_AGG,
      source=_NEMO, precision=_NEMO_PREC, notes=(_NEMO_NOTE, _NEMO_UNIT, _NEMO_CHANGED.format("weighting 'none'")))
_spec("nemo-rl:k2-loss", _Formula("k2", log_clamp=20.0, value_clamp=10.0, clamp_after_weight=True),
      framework="nemo-rl", option=_NEMO_OPT.format("k2"), use="loss", weighting="unit_ratio", aggregation=_NEMO_AGG,
      source=_NEMO, precision=_NEMO_PREC,
      notes=(_NEMO_NOTE, _NEMO_UNIT + " For k2 that is E_q[k2], not a KL.", _NEMO_CHANGED.format("weighting 'none'")))

_SLIME_AGG = ("sum_of_sample_mean: token-mean per sequence, summed over the micro-batch's sequences; "
              "--calculate-per-token-loss: token sum")
_SLIME_CLAMP = "Only low_var_kl is clamped (to ±10); k1, k2 and k3 are not (compute_approx_kl)."
_SLIME_AFTER = ("The clamp acts on importance_ratio·k3 (it follows the multiplication in compute_approx_kl). "
                "On-policy (ratio 1) the value is clip(k3, ±10) and the code's gradient is zero where it binds; "
                "the estimator's derivative there equals its value, so that the differentiable ratio's score term "
                "cancels (use 'ratio_loss'). Off-policy the clamp binds where ρ·k3 > 10, not k3 > 10: "
                "penalty() computes that exactly; the Estimator does not.")
_spec("slime:low_var_kl-loss", _Formula("k3", value_clamp=10.0), framework="slime",
      option="--use-kl-loss --kl-loss-type low_var_kl", use="loss", weighting="none", aggregation=_SLIME_AGG,
      source=_SLIME, precision=_FP32, notes=(_SLIME_CLAMP,))
_spec("slime:k3-loss", _Formula("k3"), framework="slime", option="--use-kl-loss --kl-loss-type k3", use="loss",
      weighting="none", aggregation=_SLIME_AGG, source=_SLIME, precision=_FP32, notes=(_SLIME_CLAMP,))
_spec("slime:low_var_kl-loss-unbiased", _Formula("k3", value_clamp=10.0, clamp_after_weight=True),
      framework="slime", option="--use-kl-loss --kl-loss-type low_var_kl --use-unbiased-kl", use="loss",
      weighting="ratio", aggregation=_SLIME_AGG, source=_SLIME, precision=_FP32, clamp_after_weight=True,
      notes=(_SLIME_CLAMP, _SLIME_AFTER))
_spec("slime:k3-loss-unbiased", _Formula("k3"), framework="slime",
      option="--use-kl-loss --kl-loss-type k3 --use-unbiased-kl", use="loss", weighting="ratio",
      aggregation=_SLIME_AGG, source=_SLIME, precision=_FP32,
      notes=(_SLIME_CLAMP, "importance_ratio = exp(log_probs - old_log_probs), not detached (DeepSeek-V3.2)."))

_OI_AGG = 'masked_mean with loss_denominator (default "token": token-mean over the batch)'
_OI_CLAMP = "ref_logprobs_diff = (new_logprobs - ref_logprobs).clamp(-40, 40): log r is clamped to ±40 first."
_OI_OPT = "--beta > 0 --kl_estimator {} (formerly \"kl{}\")"
_spec("open-instruct:kl1-loss", _Formula("k1", log_clamp=40.0), framework="open-instruct",
      option=_OI_OPT.format(0, 1), use="loss", weighting="none", aggregation=_OI_AGG, source=_OPEN_INSTRUCT,
      precision=_NO_CAST, notes=(_OI_CLAMP,))
_spec("open-instruct:kl2-loss", _Formula("k2", log_clamp=40.0), framework="open-instruct",
      option=_OI_OPT.format(1, 2), use="loss", weighting="none", aggregation=_OI_AGG, source=_OPEN_INSTRUCT,
      precision=_NO_CAST, notes=(_OI_CLAMP,))
_spec("open-instruct:kl3-loss", _Formula("k3", log_clamp=40.0), framework="open-instruct",
      option=_OI_OPT.format(2, 3) + " (the default)", use="loss", weighting="none", aggregation=_OI_AGG,
      source=_OPEN_INSTRUCT, precision=_NO_CAST,
      notes=(_OI_CLAMP, "Computed as expm1(-d) + d, d = clamped log q - log p: rounding error ~2ε/|d| relative to "
             "k3, against ~2ε/d² for exp(x) - 1 - x (the Estimator is the exact value)."))
_spec("open-instruct:kl4-loss", _Formula("k1", log_clamp=40.0), framework="open-instruct",
      option=_OI_OPT.format(3, 4), use="loss", weighting="ratio", aggregation=_OI_AGG, source=_OPEN_INSTRUCT,
      precision=_NO_CAST,
      notes=(_OI_CLAMP, "kl4 = ratio * ref_logprobs_diff: k1 times the differentiable ratio, whose gradient on-policy "
             "is that of KL(q‖p)."))

_FORMULAS: dict[str, _Formula] = {name: formula for name, (formula, _) in _SPECS.items()}


@lru_cache(maxsize=1)
def _catalogue() -> tuple[TrainerRecipe, ...]:
    records = []
    for name, (formula, fields) in _SPECS.items():
        records.append(TrainerRecipe(name=name, estimator=formula.estimator(name),
                                     log_ratio_clamp=formula.log_clamp, value_clamp=formula.value_clamp, **fields))
    return tuple(records)


def trainer_recipes(framework: str | None = None) -> tuple[TrainerRecipe, ...]:
    r"""Every framework KL setting klviz knows, as read from the frameworks' code.

    Parameters
    ----------
    framework : str, optional
        One of :data:`FRAMEWORKS` to list only its settings.

    Returns
    -------
    tuple of TrainerRecipe

    Raises
    ------
    TypeError, ValueError
        If ``framework`` is not one of :data:`FRAMEWORKS`.

    Examples
    --------
    >>> recipe = get_trainer_recipe("verl:low_var_kl-loss")
    >>> recipe.gradient_use, recipe.value_clamp
    ('loss', 10.0)
    >>> float(recipe.estimator.value(25.0))     # log r = 25: clamped to 20, then k3 to 10
    10.0
    >>> sorted({r.framework for r in trainer_recipes()}) == sorted(FRAMEWORKS)
    True
    """
    records = _catalogue()
    if framework is None:
        return records
    if not isinstance(framework, str):
        raise TypeError(f"framework must be a string, one of {list(FRAMEWORKS)}, got {type(framework).__name__}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {list(FRAMEWORKS)}, got {framework!r}")
    return tuple(r for r in records if r.framework == framework)


def get_trainer_recipe(recipe) -> TrainerRecipe:
    """A :class:`TrainerRecipe` by name (a TrainerRecipe passes through).

    Raises
    ------
    TypeError
        If ``recipe`` is neither a string nor a TrainerRecipe.
    ValueError
        If no recipe has that name (the message lists them).

    Examples
    --------
    >>> get_trainer_recipe("trl:grpo-k3").framework
    'trl'
    """
    if isinstance(recipe, TrainerRecipe):
        return recipe
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a TrainerRecipe or a name, got {type(recipe).__name__}")
    for record in _catalogue():
        if record.name == recipe:
            return record
    raise ValueError(f"recipe must be one of {[r.name for r in _catalogue()]}, got {recipe!r}")
