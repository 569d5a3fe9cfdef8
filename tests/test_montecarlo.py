r"""Tests for klviz.montecarlo: agreement with exact moments in standard errors, reproducibility,
independence from threads and chunking, validation, and bounded memory.

Every Monte Carlo check states its tolerance in standard errors (5) and fixes its seed.
"""

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from klviz import CategoricalPair, GaussianPair, ScipyPair, exact_moments, simulate
from klviz.montecarlo import MonteCarloEstimate, SimulationResult

ALL = ("k1", "k2", "k3", "k1_pq", "k3_pq")


def assert_within_standard_errors(result, pair, names, z=5.0, check_variance=True):
    for name in names:
        estimate, exact = result[name], exact_moments(pair, name)
        assert estimate.n == result.n
        assert abs(estimate.mean - exact.mean) <= z * estimate.stderr, (name, estimate, exact)
        if check_variance:
            # the sample variance too: its standard error is ~ sqrt((μ4 - σ⁴)/n), a few % for these
            # light-tailed pairs at n >= 1e5, so 25% is generous
            assert estimate.var == pytest.approx(exact.var, rel=0.25), (name, estimate.var, exact.var)


def assert_variance_within_batch_standard_errors(pair, names, n, batches=16, z=5.0):
    """Heavy-ish tails (k2 against a logistic q involves x^16 moments): the sample variance's own
    standard error is estimated from independent batches, not assumed."""
    children = np.random.SeedSequence(777).spawn(batches)
    runs = [simulate(pair, n, rng=np.random.default_rng(child), estimators=names) for child in children]
    for name in names:
        variances = np.array([run[name].var for run in runs])
        stderr = variances.std(ddof=1) / math.sqrt(batches)
        assert abs(variances.mean() - exact_moments(pair, name).var) <= z * stderr, (name, variances)


@pytest.mark.parametrize(
    "pair, n",
    [
        (GaussianPair(mu_p=0.1), 400_000),
        (GaussianPair(mu_p=1.0), 400_000),
        (GaussianPair(mu_p=0.3, sigma_p=1.1, mu_q=-0.1, sigma_q=1.0), 400_000),
        (CategoricalPair(p_logits=[0.0, 1.0, 2.0, -1.0], q_logits=[1.0, 0.0, 0.5, 0.2]), 200_000),
        (ScipyPair(p=stats.norm(0.5, 1.0), q=stats.logistic(0.0, 0.6)), 100_000),
    ],
    ids=["gauss_0.1", "gauss_1", "gauss_general", "categorical", "scipy_logistic"],
)
def test_simulate_matches_exact_moments(pair, n):
    result = simulate(pair, n, rng=12345, estimators=ALL)
    assert isinstance(result, SimulationResult)
    assert list(result) == list(ALL) and len(result) == 5 and result.n == n
    heavy = isinstance(pair, ScipyPair)
    assert_within_standard_errors(result, pair, ALL, check_variance=not heavy)
    if heavy:
        assert_variance_within_batch_standard_errors(pair, ALL, n // 4)


def test_article_regime_k3_is_unbiased_and_k2_is_not():
    # gap 1: k2's bias (0.125) is ~300 standard errors at n = 1e6, k3's mean sits on KL = 0.5
    pair = GaussianPair(mu_p=1.0)
    result = simulate(pair, 10**6, rng=1)
    assert abs(result["k3"].mean - 0.5) <= 5 * result["k3"].stderr
    assert abs(result["k1"].mean - 0.5) <= 5 * result["k1"].stderr
    assert (result["k2"].mean - 0.5) / result["k2"].stderr > 100
    assert abs(result["k2"].mean - 0.625) <= 5 * result["k2"].stderr


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    mu_p=st.floats(-1.5, 1.5),
    log_sigma_ratio=st.floats(-0.1, 0.1),
    mu_q=st.floats(-1.0, 1.0),
    sigma_q=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_k1_k3_unbiased_for_random_gaussian_pairs(mu_p, log_sigma_ratio, mu_q, sigma_q, seed):
    # σp/σq within e^±0.1 keeps E r⁴ finite, so the standard error itself is trustworthy
    pair = GaussianPair(mu_p=mu_p, sigma_p=sigma_q * math.exp(log_sigma_ratio), mu_q=mu_q, sigma_q=sigma_q)
    kl = pair.kl_qp()
    for name in ("k1", "k3"):
        assert exact_moments(pair, name).mean == pytest.approx(kl, rel=1e-10, abs=1e-300)
    result = simulate(pair, 50_000, rng=seed, estimators=("k1", "k3"))
    for name in ("k1", "k3"):
        assert abs(result[name].mean - kl) <= 5 * result[name].stderr


def test_same_seed_same_result_and_generator_accepted():
    pair = GaussianPair(mu_p=0.5)
    a = simulate(pair, 100_001, rng=42, chunk_size=10_000)
    b = simulate(pair, 100_001, rng=42, chunk_size=10_000)
    c = simulate(pair, 100_001, rng=np.random.default_rng(42), chunk_size=10_000)
    assert a == b == c
    d = simulate(pair, 100_001, rng=43, chunk_size=10_000)
    assert d["k1"].mean != a["k1"].mean
    # a Generator is consumed (its spawn counter advances): two calls give two independent results
    generator = np.random.default_rng(7)
    first, second = simulate(pair, 1000, rng=generator), simulate(pair, 1000, rng=generator)
    assert first["k1"].mean != second["k1"].mean
    # rng=None draws fresh entropy
    assert simulate(pair, 1000)["k1"].mean != simulate(pair, 1000)["k1"].mean


@pytest.mark.parametrize("pair", [GaussianPair(mu_p=0.5), CategoricalPair([0.0, 1.0, 2.0], [1.0, 1.0, 0.0])])
def test_result_independent_of_workers(pair):
    runs = [simulate(pair, 300_000, rng=3, chunk_size=2**14, workers=w, estimators=ALL) for w in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]  # bit for bit


def test_chunk_sizes_change_streams_not_statistics():
    pair = GaussianPair(mu_p=1.0)
    n = 200_003  # not a multiple of any chunk size below
    for chunk_size in (1_000, 2**16, 2**17, 10**6):
        result = simulate(pair, n, rng=9, chunk_size=chunk_size)
        assert result.n == n
        assert_within_standard_errors(result, pair, ("k1", "k2", "k3"))


def test_streaming_statistics_equal_two_pass_statistics_of_the_same_draws():
    # Rebuild the exact draws simulate makes (documented: one SFC64 child stream per chunk, seeded by
    # SeedSequence.spawn from rng's seed sequence) and compare the merged chunk statistics with numpy's
    # two-pass mean and std of all of them.
    pair = GaussianPair(mu_p=0.7, sigma_p=1.2)
    n, chunk_size = 25_000, 4_096
    result = simulate(pair, n, rng=2024, chunk_size=chunk_size, estimators=ALL)
    sizes = [chunk_size] * (n // chunk_size) + [n % chunk_size]
    seeds = np.random.default_rng(2024).bit_generator.seed_seq.spawn(len(sizes))
    streams = [np.random.Generator(np.random.SFC64(seed)) for seed in seeds]
    log_r = np.concatenate([pair.sample_log_ratio(size, rng=stream) for size, stream in zip(sizes, streams)])
    values = {
        "k1": -log_r,
        "k2": 0.5 * log_r**2,
        "k3": np.expm1(log_r) - log_r,
        "k1_pq": np.exp(log_r) * log_r,
        "k3_pq": np.exp(log_r) * log_r - np.expm1(log_r),
    }
    for name, v in values.items():
        assert result[name].mean == pytest.approx(v.mean(), rel=1e-12, abs=1e-15), name
        assert result[name].std == pytest.approx(v.std(ddof=1), rel=1e-10), name
        assert result[name].stderr == pytest.approx(v.std(ddof=1) / math.sqrt(n), rel=1e-10)


def test_stderr_is_std_over_root_n():
    result = simulate(GaussianPair(mu_p=1.0), 12_345, rng=0)
    for estimate in result.values():
        assert isinstance(estimate, MonteCarloEstimate)
        assert estimate.stderr == estimate.std / math.sqrt(12_345)
        assert estimate.var == estimate.std**2
    assert "stderr=" in repr(result["k3"]) and "n=12,345" in repr(result["k3"])
    with pytest.raises(KeyError, match="k1_pq.*not simulated"):
        result["k1_pq"]


def test_minimum_sample_size_and_single_estimator():
    result = simulate(GaussianPair(mu_p=1.0), 2, rng=0, estimators="k3")
    assert list(result) == ["k3"] and result["k3"].n == 2 and math.isfinite(result["k3"].std)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n=1), ValueError, "n must be at least 2"),
        (dict(n=0), ValueError, "n must"),
        (dict(n=-10), ValueError, "n must"),
        (dict(n=1e6), TypeError, "n must be an integer"),
        (dict(n="1000"), TypeError, "n must be an integer"),
        (dict(n=True), TypeError, "n must be an integer"),
        (dict(n=1000, chunk_size=0), ValueError, "chunk_size must be at least 1"),
        (dict(n=1000, chunk_size=2.5), TypeError, "chunk_size must be an integer"),
        (dict(n=1000, chunk_size=np.bool_(True)), TypeError, "chunk_size"),
        (dict(n=1000, estimators=("k1", "k4")), ValueError, r"estimators must be one of \['k1', 'k1_pq'"),
        (dict(n=1000, estimators=()), ValueError, "estimators"),
        (dict(n=1000, estimators=(3,)), TypeError, "estimators must be an Estimator or a name"),
        (dict(n=1000, workers=0), ValueError, "workers"),
        (dict(n=1000, workers=1.5), ValueError, "workers"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate(GaussianPair(mu_p=1.0), rng=0, **kwargs)


def test_numpy_integer_n_accepted():
    assert simulate(GaussianPair(mu_p=1.0), np.int64(1000), rng=0, chunk_size=np.int32(256)).n == 1000


def test_memory_is_bounded_by_chunks_not_n():
    pair = GaussianPair(mu_p=0.1)
    tracemalloc.start()
    try:
        result = simulate(pair, 10**7, rng=0, chunk_size=2**16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 10^7 float64 log-ratios alone would be 80 MB; a few chunks of 2^16 are ~0.5 MB each
    assert peak < 30 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert abs(result["k3"].mean - 0.005) <= 5 * result["k3"].stderr


@pytest.mark.parametrize("chunk_size", [10, 2**16])
def test_divergent_kl_gives_inf_for_any_chunk_size(chunk_size):
    # p = 0 on a token q produces: k1 = inf there. A finite chunk merged with an infinite one gave NaN.
    pair = CategoricalPair(p_logits=[-np.inf, 0.0, 0.0], q_logits=[-3.0, 0.0, 0.0])
    result = simulate(pair, 1000, rng=0, chunk_size=chunk_size, workers=1)
    assert result["k1"].mean == math.inf and result["k1"].std == math.inf


# --------------------------------------------------------------------------------------------------
# Issue 10: clear errors, and chunk streams made as they are needed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, match", [
    (lambda: simulate(None, 1000), TypeError, "pair must be a klviz pair"),
    (lambda: simulate(GaussianPair(mu_p=1.0), 1000, rng=np.random.RandomState(0)), TypeError,
     "rng must be None, an int seed or a numpy.random.Generator, got RandomState"),
    (lambda: simulate(GaussianPair(mu_p=1.0), 1000, rng=-1), ValueError, "rng must be a non-negative seed"),
    (lambda: simulate(GaussianPair(mu_p=1.0), 1000, estimators=None), TypeError, "estimators must be"),
    (lambda: simulate(GaussianPair(mu_p=1.0), 10**40), ValueError, r"n must be at most 2\*\*63 - 1"),
    (lambda: simulate(GaussianPair(mu_p=1.0), 1000, estimators=("k1", "k1")), ValueError, "must not repeat"),
])
def test_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_streams_are_spawned_as_chunks_are_needed():
    # Before: every chunk's generator (~1 KB each) was made up front, 810 MB at n = 10^11.
    spawned = []

    class CountingSeedSequence(np.random.SeedSequence):
        def spawn(self, count):
            spawned.append(count)
            return super().spawn(count)

    rng = np.random.Generator(np.random.PCG64(CountingSeedSequence(0)))
    simulate(GaussianPair(mu_p=1.0), 100 * 64, rng=rng, chunk_size=64, workers=2)
    assert sum(spawned) == 100 and max(spawned) <= 8


def test_results_do_not_depend_on_workers_or_on_streams_being_lazy():
    pair = GaussianPair(mu_p=0.7, sigma_p=1.2)
    one = simulate(pair, 50_000, rng=11, chunk_size=1000, workers=1)
    two = simulate(pair, 50_000, rng=11, chunk_size=1000, workers=2)
    # the same as drawing every chunk from the i-th child spawned at once
    children = np.random.default_rng(11).bit_generator.seed_seq.spawn(50)
    logr = np.concatenate([pair.sample_log_ratio(1000, rng=np.random.Generator(np.random.SFC64(c))) for c in children])
    for name in ("k1", "k2", "k3"):
        assert one[name].mean == two[name].mean
    assert one["k1"].mean == pytest.approx(float(np.mean(-logr)), rel=1e-13)
