r"""A report on a trainer's logged per-token log-probabilities: what its KL estimates say, and whether to trust them.

From the log-probabilities of the sampled tokens under the policy q and the reference p (and, for later
PPO/GRPO epochs, under the rollout policy μ the tokens were drawn from), :func:`diagnose` gives

* each estimator's mean ± standard error (k1, k2, k3; with μ also the importance-weighted ρ·k1 and ρ·k3,
  :math:`\rho = q/\mu`, which estimate KL(q‖p) from μ's samples);
* the share of tokens where k1 = log q − log p is negative (its mean is a difference of large parts);
* the share of tokens each framework's clamps would cut (:meth:`TrainerRecipe.clamp_hits`);
* the tail of :math:`r = p/q`. The variance of :math:`k_3 = r - 1 - \log r` is finite only when
  :math:`\mathbb{E}_q[r^2] < \infty`; for a tail :math:`P(r > t) \sim t^{-1/\xi}` that is ξ < 1/2. ξ is
  estimated by Hill's estimator on the largest :math:`m = \min(\lfloor n/5\rfloor, \lfloor 3\sqrt n\rfloor)`
  log-ratios, the tail size of Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao & Gabry,
  arXiv:1507.02646, whose diagnostic thresholds the same ξ at 1/2 for a finite variance):

  .. math:: \hat\xi = \frac1m\sum_{i=1}^{m} \big(L_{(i)} - L_{(m+1)}\big),\qquad L_{(1)}\ge L_{(2)}\ge\dots,

  exact in log space (:math:`\log(r_{(i)}/r_{(m+1)}) = L_{(i)} - L_{(m+1)}`, no overflow). A warning
  is raised when :math:`\hat\xi \ge 1/2`. A second, assumption-free check: when one token carries 10% or
  more of :math:`\sum_i (k_{3,i} - \bar k_3)^2`, removing it moves the standard error by
  :math:`1 - \sqrt{0.9} \approx 5\%` or more — the standard error is not estimated by the data.
  The same two checks are applied to ρ when μ is given (the weighted means need :math:`\mathbb{E}_\mu[\rho^2]<\infty`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from klviz._kernels import exp_minus_1_minus_x, weighted_k3
from klviz._results import Result, Shown
from klviz.montecarlo import MonteCarloEstimate
from klviz.trainers.recipes import trainer_recipes

__all__ = ["Diagnosis", "TailDiagnostic", "diagnose", "TAIL_INDEX_LIMIT", "DOMINANT_SHARE_LIMIT",
           "MIN_TAIL_TOKENS"]

#: Warn when the Hill tail index of r (or ρ) reaches this: E[r²] = ∞ for a Pareto tail with ξ ≥ 1/2.
TAIL_INDEX_LIMIT = 0.5
#: Warn when one token's squared deviation is this share of the sum (the standard error moves ≥ 5% without it).
DOMINANT_SHARE_LIMIT = 0.1
#: Fewest tokens for a tail estimate (the tail then has 10 points).
MIN_TAIL_TOKENS = 50


@dataclass(frozen=True, repr=False)
class TailDiagnostic(Result):
    r"""The upper tail of a weight (r = p/q, or ρ = q/μ) from the log-weights of n tokens.

    Attributes
    ----------
    name : str
    tail_index : float or None
        Hill's :math:`\hat\xi` on the top ``tail_size`` log-weights (None for fewer than
        :data:`MIN_TAIL_TOKENS` tokens).
    tail_size : int
    ess_fraction : float
        Kish's effective sample size of the weights over n, :math:`(\sum w)^2/(n\sum w^2)` (≈ 1/(1 + χ²)).
    dominant_share : float
        The largest token's share of the sum of squared deviations of the weighted estimate checked
        (k3 for r, ρ·k3 for ρ).
    """

    name: str
    tail_index: float | None
    tail_size: int
    ess_fraction: float
    dominant_share: float

    @property
    def heavy(self) -> bool:
        return self.tail_index is not None and self.tail_index >= TAIL_INDEX_LIMIT

    @property
    def dominated(self) -> bool:
        return self.dominant_share >= DOMINANT_SHARE_LIMIT

    def _display_fields(self):
        index = "n/a" if self.tail_index is None else f"{self.tail_index:.3g}"
        return [("name", self.name), ("tail_index", Shown(index)), ("tail_size", self.tail_size),
                ("ess_fraction", self.ess_fraction), ("dominant_share", self.dominant_share)]


@dataclass(frozen=True, repr=False)
class Diagnosis(Result):
    r"""What a batch of logged log-probabilities says about the KL penalty, and what to distrust.

    Attributes
    ----------
    n : int
        Tokens.
    off_policy : bool
        Whether ``old_logp`` was given (tokens drawn from μ, not q).
    estimates : dict of str to MonteCarloEstimate
        ``k1``, ``k2``, ``k3`` of :math:`L = \log p - \log q` (with μ these estimate
        :math:`\mathbb{E}_\mu[k]`), and with μ ``rho*k1``, ``rho*k3`` (estimates of KL(q‖p)).
    k1_negative_share : float
        Share of tokens with k1 < 0 (p > q at the token).
    clamp_shares : dict of str to float
        Per recipe with a clamp, the share of tokens where one binds.
    r_tail, rho_tail : TailDiagnostic (rho_tail None on-policy)
    warnings : tuple of str
    """

    n: int
    off_policy: bool
    estimates: dict = field(repr=False)
    k1_negative_share: float
    clamp_shares: dict = field(repr=False)
    r_tail: TailDiagnostic = field(repr=False)
    rho_tail: TailDiagnostic | None = field(repr=False)
    warnings: tuple[str, ...] = ()

    def _display_fields(self):
        fields = [("n", self.n), ("off_policy", self.off_policy)]
        fields += [(name, Shown(f"{e.mean:.6g} ± {e.stderr:.2g}")) for name, e in self.estimates.items()]
        fields += [("k1_negative_share", self.k1_negative_share), ("warnings", len(self.warnings))]
        return fields

    def _clamp_groups(self) -> list[tuple[str, float]]:
        """Recipes with the same share grouped into one line (the same clamps bind on the same tokens)."""
        groups: dict[float, list[str]] = {}
        for name, share in self.clamp_shares.items():
            groups.setdefault(share, []).append(name)
        return sorted(((", ".join(names), share) for share, names in groups.items()), key=lambda item: -item[1])

    def to_text(self) -> str:
        """The report as plain text (what ``python -m klviz diagnose`` prints)."""
        source = "the rollout policy μ (old_logp given)" if self.off_policy else "the policy q (on-policy)"
        lines = [f"klviz diagnose: {self.n:,} tokens sampled from {source}", "",
                 "KL estimates, mean ± standard error:"]
        for name, e in self.estimates.items():
            lines.append(f"  {name:<7} {e.mean: .6g} ± {e.stderr:.2g}")
        if self.off_policy:
            lines.append("  (k1, k2, k3 average over μ's tokens: E_mu[k]; rho*k1 and rho*k3 estimate KL(q||p))")
        lines += ["", f"k1 < 0 on {100 * self.k1_negative_share:.3g}% of tokens", "",
                  "share of tokens where a clamp binds:"]
        for names, share in self._clamp_groups():
            lines.append(f"  {100 * share:8.4g}%  {names}")
        lines += ["", "tails (Hill index ξ of the top tokens; ξ ≥ 1/2: infinite variance):"]
        for tail in (self.r_tail, self.rho_tail):
            if tail is None:
                continue
            index = "n/a (too few tokens)" if tail.tail_index is None else f"{tail.tail_index:.3g}"
            lines.append(f"  {tail.name}: ξ = {index} (top {tail.tail_size}), ESS {100 * tail.ess_fraction:.3g}%, "
                         f"largest token's share of squared deviations {100 * tail.dominant_share:.3g}%")
        lines += ["", "warnings:" if self.warnings else "no warnings"]
        lines += [f"  - {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        def row(*cells, header=False):
            tag = "th" if header else "td"
            inner = "".join(f"<{tag} style='text-align:left'>{html.escape(str(c))}</{tag}>" for c in cells)
            return f"<tr>{inner}</tr>"

        caption = f"Diagnosis: {self.n:,} tokens{' (off-policy)' if self.off_policy else ''}"
        parts = [f"<table><caption>{caption}</caption>", row("estimate", "mean ± stderr", header=True)]
        parts += [row(name, f"{e.mean:.6g} ± {e.stderr:.2g}") for name, e in self.estimates.items()]
        parts.append(row("k1 < 0", f"{100 * self.k1_negative_share:.3g}% of tokens"))
        parts.append(row("clamp binds", "share of tokens", header=True))
        parts += [row(names, f"{100 * share:.4g}%") for names, share in self._clamp_groups()]
        parts.append(row("tail", "Hill ξ / ESS / largest share", header=True))
        for tail in (self.r_tail, self.rho_tail):
            if tail is not None:
                index = "n/a" if tail.tail_index is None else f"{tail.tail_index:.3g}"
                summary = f"{index} / {100 * tail.ess_fraction:.3g}% / {100 * tail.dominant_share:.3g}%"
                parts.append(row(tail.name, summary))
        parts.append("</table>")
        if self.warnings:
            parts.append("<ul>" + "".join(f"<li><b>warning:</b> {html.escape(w)}</li>" for w in self.warnings) + "</ul>")
        return "".join(parts)


def _log_probs(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be an array of real numbers (log-probabilities), got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite log-probabilities (got NaN or ±inf; drop padding tokens first)")
    return arr


def _estimate(name: str, values: np.ndarray) -> MonteCarloEstimate:
    n = values.size
    if not np.isfinite(values).all():
        # Only overflowed products are infinite here (finite log-probabilities); both signs: no mean.
        signs = np.unique(np.sign(values[~np.isfinite(values)]))
        mean = math.copysign(math.inf, float(signs[0])) if signs.size == 1 else math.nan
        return MonteCarloEstimate(name, n, mean, math.inf)
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if n > 1 else math.inf
    return MonteCarloEstimate(name, n, mean, std)


def _dominant_share(values: np.ndarray) -> float:
    """The largest squared deviation over their sum (1 when some value is infinite, 0 for constant values)."""
    if not np.isfinite(values).all():
        return 1.0
    squares = (values - np.mean(values)) ** 2
    total = float(np.sum(squares))
    return float(np.max(squares)) / total if total > 0 else 0.0


def _tail(name: str, log_weights: np.ndarray, checked: np.ndarray) -> TailDiagnostic:
    n = log_weights.size
    size = min(n // 5, int(math.floor(3.0 * math.sqrt(n))))
    index = None
    if n >= MIN_TAIL_TOKENS:
        top = np.sort(log_weights)[::-1][: size + 1]
        index = float(np.mean(top[:size] - top[size]))
    ess = float(np.exp(2.0 * logsumexp(log_weights) - logsumexp(2.0 * log_weights) - math.log(n)))
    return TailDiagnostic(name, index, size, min(ess, 1.0), _dominant_share(checked))


def diagnose(logp, ref_logp, *, old_logp=None) -> Diagnosis:
    r"""A report on logged per-token log-probabilities: KL estimates, clamp hits and tail warnings.

    Parameters
    ----------
    logp : array_like
        Log-probabilities of the sampled tokens under the policy q being trained (any shape; flattened).
    ref_logp : array_like
        Under the reference p, same shape.
    old_logp : array_like, optional
        Under the rollout policy μ the tokens were drawn from (later PPO/GRPO epochs); default: the tokens
        are q's own samples.

    Returns
    -------
    Diagnosis
        Prints as a text report; displays as HTML in a notebook.

    Raises
    ------
    TypeError
        If an array is not real-valued.
    ValueError
        If an array is empty, not finite, or the shapes differ.

    Notes
    -----
    With :math:`L = \log p - \log q` per token: k1 = -L, k2 = L²/2, k3 = e^L - 1 - L (accurate near 0);
    ρ·k3 is formed in log space (:math:`\rho r = p/\mu`), so it does not overflow where ρ·r is finite.
    The warnings' rules and their justification are in the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from klviz import CategoricalPair
    >>> pair = CategoricalPair(p_logits=[0.0, 0.3, -0.2], q_logits=[0.0, 0.0, 0.0])
    >>> tokens = pair.sample(20_000, rng=0)
    >>> report = diagnose(pair.log_q[tokens], pair.log_p[tokens])
    >>> bool(abs(report.estimates["k3"].mean - pair.kl_qp()) < 4 * report.estimates["k3"].stderr)
    True
    >>> report.warnings
    ()
    """
    logp = _log_probs(logp, "logp")
    ref_logp = _log_probs(ref_logp, "ref_logp")
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp and ref_logp must have the same number of tokens, got {logp.size} and {ref_logp.size}")
    if old_logp is not None:
        old_logp = _log_probs(old_logp, "old_logp")
        if old_logp.shape != logp.shape:
            raise ValueError(f"old_logp must have as many tokens as logp, got {old_logp.size} and {logp.size}")
    L = ref_logp - logp
    with np.errstate(over="ignore"):
        k3 = exp_minus_1_minus_x(L.copy())
    estimates = {"k1": _estimate("k1", -L), "k2": _estimate("k2", 0.5 * L * L), "k3": _estimate("k3", k3)}
    warnings = []
    rho_tail = None
    if old_logp is not None:
        log_rho = logp - old_logp
        with np.errstate(over="ignore"):
            rho = np.exp(log_rho)
            rho_k1 = np.where(L == 0.0, 0.0, -rho * L)
        rho_k3 = weighted_k3(log_rho, L, ref_logp - old_logp)
        estimates["rho*k1"] = _estimate("rho*k1", rho_k1)
        estimates["rho*k3"] = _estimate("rho*k3", rho_k3)
        rho_tail = _tail("rho = q/mu", log_rho, rho_k3)
    r_tail = _tail("r = p/q", L, k3)

    clamp_shares = {}
    for recipe in trainer_recipes():
        if recipe.log_ratio_clamp is None and recipe.value_clamp is None:
            continue
        old = old_logp if recipe.clamp_after_weight else None
        clamp_shares[recipe.name] = float(np.mean(recipe.clamp_hits(logp, ref_logp, old_logp=old)))

    if r_tail.heavy:
        warnings.append(
            f"the tail of r = p/q looks heavy (Hill index {r_tail.tail_index:.2g} ≥ {TAIL_INDEX_LIMIT:g}): "
            "E_q[r²] and so Var(k3) behave as infinite, and k3's ± is not a valid error bar; prefer k1's mean "
            "for the value, or a clamped k3 (and say so)")
    if r_tail.dominated:
        warnings.append(
            f"one token carries {100 * r_tail.dominant_share:.2g}% of k3's squared deviations: its standard "
            "error is set by a single token and is not reliable")
    if rho_tail is not None:
        if rho_tail.heavy:
            warnings.append(
                f"the tail of rho = q/mu looks heavy (Hill index {rho_tail.tail_index:.2g} ≥ {TAIL_INDEX_LIMIT:g}): "
                "the importance-weighted estimates (rho*k1, rho*k3) and ratio-weighted losses have infinite "
                "variance; the rollout policy is too far from the current one")
        if rho_tail.dominated:
            warnings.append(
                f"one token carries {100 * rho_tail.dominant_share:.2g}% of rho*k3's squared deviations: the "
                "weighted estimates' standard errors are not reliable")
    if r_tail.tail_index is None:
        warnings.append(f"only {logp.size} tokens: too few for a tail estimate (at least {MIN_TAIL_TOKENS})")
    return Diagnosis(logp.size, old_logp is not None, estimates, float(np.mean(L > 0.0)), clamp_shares,
                     r_tail, rho_tail, tuple(warnings))
