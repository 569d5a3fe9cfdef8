r"""The article's experiment: q = N(0, 1), p = N(gap, 1), bias/true and stdev/true of k1, k2, k3.

Schulman's post (and the Chinese write-up this project starts from) reports, from 10^7 samples:

====  ============  ============   ============  ============
      gap 0.1 (KL = 0.005)         gap 1 (KL = 0.5)
----  --------------------------   --------------------------
      bias/true     stdev/true     bias/true     stdev/true
====  ============  ============   ============  ============
k1    0             20             0             2
k2    0.002         1.42           0.25          1.73
k3    0             1.42           0             1.7
====  ============  ============   ============  ============

:func:`seed_table` reproduces it with the Monte Carlo value and its standard error next to the
exact value (closed forms: bias/true of k2 is gap²/4, stdev/true of k1 is 2/gap).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from klviz import _checks
from klviz._results import Result, Shown
from klviz.estimators import get_estimators
from klviz.exact import ExactMoments, exact_moments
from klviz.montecarlo import MonteCarloEstimate, simulate
from klviz.pairs import GaussianPair

__all__ = ["ARTICLE", "TableRow", "SeedTable", "seed_table"]

#: The article's reported (bias/true, stdev/true), by gap and estimator.
ARTICLE = {
    0.1: {"k1": (0.0, 20.0), "k2": (0.002, 1.42), "k3": (0.0, 1.42)},
    1.0: {"k1": (0.0, 2.0), "k2": (0.25, 1.73), "k3": (0.0, 1.7)},
}


def _relative_std_text(exact: ExactMoments) -> str:
    """stdev/true as printed: a number, '10^x' for a finite value beyond float64, or 'inf' (diverges)."""
    if exact.var_overflows:
        return f"10^{exact.log10_var / 2 - math.log10(exact.target):.1f}"
    return f"{exact.relative_std:.5g}"


@dataclass(frozen=True, repr=False)
class TableRow(Result):
    """One estimator at one gap: exact moments, Monte Carlo estimate, and the article's figures."""

    gap: float
    kl: float
    exact: ExactMoments
    monte_carlo: MonteCarloEstimate
    article: tuple[float, float] | None

    def _display_fields(self):
        return [("gap", self.gap), ("estimator", self.estimator), ("exact mean", self.exact.mean),
                ("Monte Carlo", Shown(f"{self.monte_carlo.mean:.8g} ± {self.monte_carlo.stderr:.2g}"))]

    @property
    def estimator(self) -> str:
        return self.exact.estimator

    @property
    def mc_relative_bias(self) -> float:
        """(Monte Carlo mean - KL) / KL; NaN when KL = 0 (as for :class:`~klviz.ExactMoments`)."""
        return (self.monte_carlo.mean - self.kl) / self.kl if self.kl else math.nan

    @property
    def mc_relative_bias_stderr(self) -> float:
        return self.monte_carlo.stderr / self.kl if self.kl else math.nan

    @property
    def mc_relative_std(self) -> float:
        return self.monte_carlo.std / self.kl if self.kl else math.nan

    @property
    def z_score(self) -> float:
        """(Monte Carlo mean - exact mean) / standard error: how many standard errors apart."""
        return (self.monte_carlo.mean - self.exact.mean) / self.monte_carlo.stderr


@dataclass(frozen=True, repr=False)
class SeedTable(Result):
    """The reproduced table: rows for every gap and estimator, plus how it was made."""

    rows: tuple[TableRow, ...]
    n: int
    seed: object

    def __str__(self) -> str:
        return self.to_text()

    def _display_fields(self):
        gaps = ", ".join(f"{g:g}" for g in dict.fromkeys(row.gap for row in self.rows))
        return [("gaps", Shown(f"[{gaps}]")), ("n", self.n), ("seed", self.seed)]
    def to_text(self) -> str:
        """A plain-text table (84 columns), 4+ significant digits, one block per gap."""
        lines = []
        header = (f"{'':4}{'MC mean ± s.e.':>22}{'exact':>11}{'bias/true MC ± s.e.':>22}"
                  f"{'exact':>8}{'std/true MC':>12}{'exact':>10}")
        for gap in dict.fromkeys(row.gap for row in self.rows):
            rows = [row for row in self.rows if row.gap == gap]
            lines.append(f"q = N(0,1), p = N({gap:g},1): KL[q,p] = {rows[0].kl:.6g} exactly; "
                         f"n = {self.n:,}, seed = {self.seed}")
            lines.append(header)
            for row in rows:
                lines.append(
                    f"{row.estimator:4}{row.monte_carlo.mean:>13.7g} ± {row.monte_carlo.stderr:<7.2g}"
                    f"{row.exact.mean:>11.7g}{row.mc_relative_bias:>12.5f} ± {row.mc_relative_bias_stderr:<7.2g}"
                    f"{row.exact.relative_bias:>8.4g}{row.mc_relative_std:>12.5g}{_relative_std_text(row.exact):>10}"
                )
            article = [f"{row.estimator} {row.article[0]:g}/{row.article[1]:g}" for row in rows if row.article]
            if article:
                lines.append("the article (bias/true / std/true): " + ", ".join(article))
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def _repr_html_(self) -> str:
        head = ("<tr><th>gap</th><th>KL[q,p]</th><th>estimator</th><th>MC mean ± s.e.</th><th>exact mean</th>"
                "<th>bias/true MC ± s.e.</th><th>bias/true exact</th><th>stdev/true MC</th>"
                "<th>stdev/true exact</th><th>article (bias, stdev)</th></tr>")
        body = "".join(
            f"<tr><td>{r.gap:g}</td><td>{r.kl:.6g}</td><td>{r.estimator}</td>"
            f"<td>{r.monte_carlo.mean:.7g} ± {r.monte_carlo.stderr:.2g}</td><td>{r.exact.mean:.7g}</td>"
            f"<td>{r.mc_relative_bias:.5f} ± {r.mc_relative_bias_stderr:.2g}</td>"
            f"<td>{r.exact.relative_bias:.6g}</td><td>{r.mc_relative_std:.5g}</td>"
            f"<td>{_relative_std_text(r.exact)}</td>"
            f"<td>{'' if r.article is None else f'{r.article[0]:g}, {r.article[1]:g}'}</td></tr>"
            for r in self.rows
        )
        return f"<table><thead>{head}</thead><tbody>{body}</tbody></table><p>n = {self.n:,}, seed = {self.seed}</p>"


def seed_table(gaps=(0.1, 1.0), n: int = 10**7, *, rng=None, estimators=("k1", "k2", "k3"),
               workers: int | None = None) -> SeedTable:
    r"""Reproduce the article's table: q = N(0, 1), p = N(gap, 1), n samples per gap.

    Parameters
    ----------
    gaps : sequence of float
        Mean gaps μ_p - μ_q; the article uses 0.1 and 1.
    n : int
        Samples per gap (10^7 in the article).
    rng : None, int or numpy.random.Generator
        Seed or generator; each gap gets its own child stream.
    estimators : sequence of str
    workers : int, optional
        Threads for :func:`klviz.simulate`.

    Returns
    -------
    SeedTable
        Printable (``print(table)``) and shown as HTML in a notebook.

    Raises
    ------
    ValueError
        If ``gaps`` is empty or a gap is 0 (KL = 0 leaves bias/true undefined).

    Examples
    --------
    >>> table = seed_table(gaps=[1.0], n=200_000, rng=0)
    >>> row = table.rows[1]                       # k2 at gap 1
    >>> row.estimator, round(row.exact.relative_bias, 12)
    ('k2', 0.25)
    >>> abs(row.z_score) < 4
    True
    """
    records = get_estimators(estimators)
    gaps_array = _checks.real_array(gaps, "gaps")
    if gaps_array.ndim > 1:
        raise ValueError(f"gaps must be a number or a flat sequence of numbers, got shape {gaps_array.shape}")
    gaps = [float(g) for g in np.atleast_1d(gaps_array)]
    if not gaps:
        raise ValueError("gaps must contain at least one gap")
    if any(g == 0 or not math.isfinite(g) for g in gaps):
        raise ValueError(f"gaps must be finite and non-zero (KL = 0 makes bias/true undefined), got {gaps}")
    seed = rng
    rng = _checks.rng(rng)
    rows = []
    for gap, stream in zip(gaps, rng.spawn(len(gaps))):
        pair = GaussianPair(mu_p=gap)
        kl = pair.kl_qp()
        result = simulate(pair, n, rng=stream, estimators=records, workers=workers)
        for record in records:
            rows.append(TableRow(gap, kl, exact_moments(pair, record), result[record.name],
                                 ARTICLE.get(gap, {}).get(record.name)))
    shown = int(seed) if isinstance(seed, numbers.Integral) else (None if seed is None else "generator")
    return SeedTable(tuple(rows), n, shown)
