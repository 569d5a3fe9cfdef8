r"""Streaming Monte Carlo: the estimators' sample means and standard deviations in bounded memory.

``simulate(pair, n)`` draws n log-ratios chunk by chunk, evaluates every estimator on each chunk and
keeps only per-chunk summaries (count, mean, sum of squared deviations), merged with the pairwise update
of Chan, Golub & LeVeque (1979): exact two-pass statistics within a chunk, stable merging across chunks.
Memory is a few chunks whatever n is, and chunks are made as they are needed (10^8 samples run in
~40 MB; n = 10^15 would take days, not memory).

Randomness follows SPEC 7: ``rng`` is ``None``, a seed or a ``numpy.random.Generator``; chunk i gets the
i-th child stream (an SFC64 generator seeded by ``SeedSequence.spawn`` from ``rng``'s seed sequence), so
the result depends on the seed and the chunk size only — not on how many threads did the work.
"""

from __future__ import annotations

import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from klviz import _checks
from klviz._results import Result, Shown
from klviz.estimators import get_estimators

__all__ = ["MonteCarloEstimate", "SimulationResult", "simulate", "DEFAULT_CHUNK_SIZE"]

# 2^16 float64 values = 512 KiB per array: the temporaries of one chunk stay in L2 cache (2^20 was
# 15-70% slower here), and arrays below glibc's mmap threshold avoid page faults on every chunk.
DEFAULT_CHUNK_SIZE = 2**16


@dataclass(frozen=True, repr=False)
class MonteCarloEstimate(Result):
    r"""The sample mean of one estimator over n draws, with its spread.

    ``std`` is the sample standard deviation (ddof = 1) of the per-sample values and ``stderr`` =
    std/√n the standard error of ``mean``.
    """

    estimator: str
    n: int
    mean: float
    std: float

    @property
    def stderr(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 0 else math.nan

    @property
    def var(self) -> float:
        return self.std**2

    def _display_fields(self):
        return [("estimator", self.estimator), ("n", self.n), ("mean", self.mean), ("stderr", self.stderr),
                ("std", self.std)]


@dataclass(frozen=True, repr=False)
class SimulationResult(Mapping, Result):
    """Monte Carlo estimates by estimator name: ``result["k3"].mean``; iterate for the names."""

    n: int
    estimates: Mapping[str, MonteCarloEstimate]

    def __getitem__(self, name: str) -> MonteCarloEstimate:
        try:
            return self.estimates[name]
        except KeyError:
            raise KeyError(f"{name!r} was not simulated; available: {list(self.estimates)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.estimates)

    def __len__(self) -> int:
        return len(self.estimates)

    def _display_fields(self):
        return [("n", self.n)] + [(name, Shown(f"{e.mean:.8g} ± {e.stderr:.2g}")) for name, e in self.estimates.items()]

    __repr__ = Result.__repr__


def _chunk_stats(values: np.ndarray) -> tuple[float, float]:
    """Mean and sum of squared deviations of one chunk, two-pass (exact up to rounding); an infinite
    value (a divergent KL, e.g. p = 0 where q > 0) gives (±inf, inf)."""
    mean = float(np.sum(values)) / values.size
    if not math.isfinite(mean):
        return mean, math.inf
    dev = values - mean
    # einsum, not np.dot: BLAS would start threads of its own inside our worker threads.
    return mean, float(np.einsum("i,i->", dev, dev))


def _merge(count_a, mean_a, m2_a, count_b, mean_b, m2_b):
    """Chan et al.'s pairwise update of (count, mean, M2)."""
    count = count_a + count_b
    if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
        # inf absorbs everything finite; inf - inf (both signs) has no mean at all
        return count, mean_a + mean_b, math.inf
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / count
    m2 = m2_a + m2_b + delta * delta * count_a * count_b / count
    return count, mean, m2


def _workers(workers) -> int:
    if workers is None:
        return min(2, os.cpu_count() or 1)
    if isinstance(workers, (bool, np.bool_)) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


def simulate(pair, n: int, *, rng=None, chunk_size: int = DEFAULT_CHUNK_SIZE, estimators=("k1", "k2", "k3"),
             workers: int | None = None) -> SimulationResult:
    r"""Monte Carlo estimates of KL from n samples x ~ q, streamed in chunks.

    For each estimator k, returns :math:`\bar k = \frac1n\sum_i k(\log r(x_i))`, the sample standard
    deviation and the standard error :math:`s/\sqrt n`. Memory is bounded by a few chunks whatever n
    (for a :class:`~klviz.MarkovChainPair`, a chunk is ``chunk_size`` tokens' worth of sequences, and a
    sequence is never stored whole).

    Parameters
    ----------
    pair : GaussianPair, ScipyPair, CategoricalPair or MarkovChainPair
        The distributions: samples come from q.
    n : int
        Number of samples; from 2 to 2^63 - 1.
    rng : {None, int, numpy.random.Generator}, optional
        Source of randomness; chunk i uses the i-th child stream spawned from it.
    chunk_size : int
        Samples per chunk (the result depends on it, not on ``workers``).
    estimators : str, Estimator or sequence of them
        Names from :data:`klviz.ESTIMATORS` or :class:`~klviz.Estimator` records.
    workers : int, optional
        Threads to use (numpy releases the GIL in sampling and ufuncs). Default: up to 2.

    Returns
    -------
    SimulationResult
        ``result["k1"].mean``, ``.std``, ``.stderr``.

    Raises
    ------
    TypeError
        For a ``pair`` that is not a klviz pair, a non-integer ``n`` or ``chunk_size``, an ``rng`` that is
        not None, an int or a Generator, or ``estimators`` that are not names or Estimators.
    ValueError
        For ``n`` < 2 or beyond 2^63 - 1, ``chunk_size`` < 1, an unknown or repeated estimator, or a bad
        ``workers``.

    Examples
    --------
    >>> from klviz import GaussianPair
    >>> result = simulate(GaussianPair(mu_p=1.0), 100_000, rng=0)
    >>> abs(result["k3"].mean - 0.5) < 4 * result["k3"].stderr
    True
    """
    pair = _checks.pair(pair)
    n = _checks.sample_size(n, "n", 2)
    chunk_size = _checks.integer(chunk_size, "chunk_size", 1)
    records = get_estimators(estimators)
    workers = _workers(workers)
    seed_sequence = _checks.rng(rng).bit_generator.seed_seq
    per_chunk = _checks.integer(pair.simulation_batch(chunk_size), "simulation_batch", 1)
    chunks = -(-n // per_chunk)

    def sizes() -> Iterator[int]:
        for index in range(chunks):
            yield per_chunk if index < chunks - 1 else n - per_chunk * (chunks - 1)

    def run(size: int, stream: np.random.Generator):
        log_ratio = pair.sample_log_ratio(size, rng=stream)
        return size, [_chunk_stats(np.asarray(record.value(log_ratio), dtype=np.float64)) for record in records]

    def streams(count: int) -> list[np.random.Generator]:
        # The i-th child of the seed sequence, whenever it is spawned: SeedSequence.spawn counts.
        # SFC64 is the fastest of numpy's bit generators (standard normals ~18% faster than PCG64 here).
        return [np.random.Generator(np.random.SFC64(seed)) for seed in seed_sequence.spawn(count)]

    totals = [(0, 0.0, 0.0) for _ in records]
    window = 4 * workers  # chunks in flight: bounded memory for any n
    size_iter = sizes()
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and chunks > 1 else None
    try:
        while True:
            batch = [size for _, size in zip(range(window), size_iter)]
            if not batch:
                break
            jobs = list(zip(batch, streams(len(batch))))
            results = pool.map(lambda job: run(*job), jobs) if pool else map(lambda job: run(*job), jobs)
            for size, stats in results:  # in chunk order: the merge does not depend on the threads
                totals = [_merge(*total, size, mean, m2) for total, (mean, m2) in zip(totals, stats)]
    finally:
        if pool is not None:
            pool.shutdown()
    estimates = {
        record.name: MonteCarloEstimate(record.name, n, mean,
                                        math.sqrt(m2 / (n - 1)) if math.isfinite(m2) else math.inf)
        for record, (_, mean, m2) in zip(records, totals)
    }
    return SimulationResult(n, estimates)
