"""Benchmark the article's seed table: klviz's streaming path against a naive numpy/scipy version, the
article's own torch code, and the floor (numpy drawing the normal samples and nothing else).

The computation timed, in every variant: q = N(0, 1), p = N(0.1, 1) and p = N(1, 1), N samples x ~ q per
gap (10^7 as in the article), log r = log p(x) - log q(x), the estimators k1 = -log r, k2 = (log r)²/2,
k3 = (r - 1) - log r, and the mean and standard deviation of each.

Variants (each runs in a fresh subprocess, so imports and memory of one never reach another):

* ``klviz``            ``klviz.simulate`` for both gaps (streaming, chunked, 2 threads by default);
* ``klviz-1thread``    the same with ``workers=1``, to compare with the one-thread floor;
* ``klviz-seed_table`` ``klviz.seed_table`` (the same simulations plus the exact moments);
* ``naive``            full arrays: ``x = rng.standard_normal(N)``, log r from ``scipy.stats.norm.logpdf``,
                       k arrays, ``.mean()``/``.std()``;
* ``torch``            the article's PyTorch code, re-implemented (``torch.distributions.Normal``,
                       float32, 2 threads); skipped when torch is not installed;
* ``floor-1thread``    one generator (SFC64, klviz's) drawing the 2N standard normals into a reused chunk
  buffer: "the time numpy needs just to draw the same normal samples";
* ``floor-2threads``   two SFC64 generators in two threads, N normals each (the stricter floor);
* ``floor-1thread-pcg64`` the same with numpy's default bit generator (what ``default_rng`` gives).

Timing: best and median of ``--repeats`` runs after one untimed first call (reported as "first"), with
``time.perf_counter`` inside the subprocess, imports excluded (``--rounds R`` runs every variant R times,
interleaved, and pools the timed runs). Memory: the subprocess reads its resident set size (``VmRSS``)
after imports as the baseline, resets the high-water mark (``/proc/self/clear_refs``), runs, and reads
``VmHWM``: "peak" is the whole process's peak RSS, "added" is peak minus baseline. Where the mark cannot
be reset, "added" may include the imports' own transient peak (flagged with ``*``).

Usage::

    .venv/bin/python benchmarks/bench_table.py            # N = 10^7, plus klviz at N = 10^8
    .venv/bin/python benchmarks/bench_table.py --quick    # N = 10^6, no 10^8 run

The machine may be shared: run it twice and compare; ratios from one run are more reliable than the
absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

GAPS = (0.1, 1.0)
ESTIMATOR_NAMES = ("k1", "k2", "k3")
CHUNK = 2**16  # the floor's chunk size, the same as klviz's default
TORCH_THREADS = 2

# Goals from the issue, checked (PASS/MISS), never asserted.
GOAL_VS_TORCH = 2.0
GOAL_VS_NAIVE = 4.0
GOAL_VS_FLOOR = 1.5
GOAL_PEAK_MB = 100.0


# ---------------------------------------------------------------------------------------------------------
# Memory, read by the worker about itself.

def _status_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MB (10^6 bytes), from /proc; ru_maxrss where /proc is missing."""
    values = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    if "VmHWM" not in values:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        values["VmHWM"] = peak_kb * 1024 / 1e6
        values.setdefault("VmRSS", values["VmHWM"])
    return values


def _reset_peak() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------
# The variants. Each setup_* does the imports and returns a function of (n, seed) that computes the
# table and returns {gap: {estimator: (mean, std)}}.

def setup_klviz(workers=None):
    import klviz

    def run(n, seed):
        out = {}
        for gap in GAPS:
            result = klviz.simulate(klviz.GaussianPair(mu_p=gap), n, rng=seed, estimators=ESTIMATOR_NAMES,
                                    workers=workers)
            out[gap] = {k: (result[k].mean, result[k].std) for k in ESTIMATOR_NAMES}
        return out

    return run


def setup_klviz_seed_table():
    import klviz

    def run(n, seed):
        table = klviz.seed_table(gaps=GAPS, n=n, rng=seed, estimators=ESTIMATOR_NAMES)
        out = {}
        for row in table.rows:
            out.setdefault(row.gap, {})[row.estimator] = (row.monte_carlo.mean, row.monte_carlo.std)
        return out

    return run


def setup_naive():
    import numpy as np
    from scipy.stats import norm

    def run(n, seed):
        rng = np.random.default_rng(seed)
        out = {}
        for gap in GAPS:
            x = rng.standard_normal(n)                                  # x ~ q = N(0, 1), the full array
            logr = norm.logpdf(x, loc=gap) - norm.logpdf(x)             # log p(x) - log q(x)
            k1 = -logr
            k2 = logr**2 / 2
            k3 = (np.exp(logr) - 1) - logr
            out[gap] = {name: (float(k.mean()), float(k.std(ddof=1)))
                        for name, k in zip(ESTIMATOR_NAMES, (k1, k2, k3))}
        return out

    return run


def setup_torch():
    import torch
    import torch.distributions as dis

    torch.set_num_threads(TORCH_THREADS)

    def run(n, seed):
        # The article's code, with q the sampling distribution N(0, 1) (the article names them the other
        # way round, which gives the same figures because the variances are equal). float32, as torch's default.
        torch.manual_seed(seed)
        out = {}
        for gap in GAPS:
            q = dis.Normal(loc=0.0, scale=1.0)
            p = dis.Normal(loc=gap, scale=1.0)
            x = q.sample(sample_shape=(n,))
            true_kl = dis.kl_divergence(q, p)
            logr = p.log_prob(x) - q.log_prob(x)
            k1 = -logr
            k2 = logr**2 / 2
            k3 = (logr.exp() - 1) - logr
            # What the article prints: bias/true and stdev/true; turned back into moments for the report.
            kl = true_kl.item()
            out[gap] = {}
            for name, k in zip(ESTIMATOR_NAMES, (k1, k2, k3)):
                relative_bias = ((k.mean() - true_kl) / true_kl).item()
                relative_std = (k.std() / true_kl).item()
                out[gap][name] = (kl * (1 + relative_bias), kl * relative_std)
        return out

    return run


def setup_floor(threads: int, bit_generator: str = "SFC64"):
    """Drawing the normals and nothing else, with klviz's bit generator (SFC64) by default, or
    numpy's default (PCG64, what ``default_rng`` gives)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    def make(seed):
        return np.random.Generator(getattr(np.random, bit_generator)(seed))

    def draw(generator, count):
        buffer = np.empty(CHUNK)
        for start in range(0, count, CHUNK):
            size = min(CHUNK, count - start)
            generator.standard_normal(out=buffer[:size])

    def run(n, seed):
        if threads == 1:
            draw(make(seed), len(GAPS) * n)
        else:
            generators = [make(s) for s in np.random.SeedSequence(seed).spawn(len(GAPS))]
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(draw, generators, [n] * len(GAPS)))
        return {}

    return run


def setup_profile():
    """Per-chunk breakdown of klviz's work, one thread, timed stage by stage."""
    import numpy as np

    import klviz
    from klviz import montecarlo

    def two_pass_stats(values):
        mean = float(np.sum(values)) / values.size
        deviations = values - mean
        return mean, float(np.einsum("i,i->", deviations, deviations))

    # _chunk_stats is private; fall back to the same two-pass computation if it moves.
    chunk_stats = getattr(montecarlo, "_chunk_stats", two_pass_stats)
    chunk = getattr(montecarlo, "DEFAULT_CHUNK_SIZE", CHUNK)

    def run(n, seed):
        rng = np.random.default_rng(seed)
        report = {"chunk": chunk}
        for gap in GAPS:
            pair = klviz.GaussianPair(mu_p=gap)
            z = rng.standard_normal(chunk)
            logr = pair.log_ratio_from_standard(z)
            values = [klviz.k1(logr), klviz.k2(logr), klviz.k3(logr)]
            stages = {
                "spawn child stream": lambda: rng.spawn(1),
                "standard_normal": lambda: rng.standard_normal(chunk),
                "log r (quadratic)": lambda: pair.log_ratio_from_standard(z),
                "k1": lambda: klviz.k1(logr),
                "k2": lambda: klviz.k2(logr),
                "k3": lambda: klviz.k3(logr),
                "stats (x3 estimators)": lambda: [chunk_stats(v) for v in values],
            }
            rows = {}
            for name, stage in stages.items():
                rows[name] = _best_ns_per_sample(stage, chunk)
            sims = max(4, n // 4 // chunk)  # a short single-thread simulate, for the total
            faults_before = _minor_faults()
            rows["simulate(workers=1) total"] = _best_ns_per_sample(
                lambda: klviz.simulate(pair, sims * chunk, rng=seed, workers=1), sims * chunk, repeats=3, inner=1)
            # Page faults per chunk: temporaries that the allocator returns to the OS and faults in again.
            rows["minor page faults per chunk"] = (_minor_faults() - faults_before) / (4 * sims)
            report[gap] = rows
        return report

    return run


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _best_ns_per_sample(function, samples, repeats=7, inner=10):
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        best = min(best, (time.perf_counter() - start) / inner)
    return best / samples * 1e9


VARIANTS = {
    "klviz": lambda: setup_klviz(),
    "klviz-1thread": lambda: setup_klviz(workers=1),
    "klviz-seed_table": setup_klviz_seed_table,
    "naive": setup_naive,
    "torch": setup_torch,
    "floor-1thread": lambda: setup_floor(1),
    "floor-2threads": lambda: setup_floor(2),
    "floor-1thread-pcg64": lambda: setup_floor(1, "PCG64"),
    "profile": setup_profile,
}


def worker(name: str, n: int, repeats: int, seed: int) -> dict:
    """Run one variant in this (fresh) process and return its figures."""
    if name == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"name": name, "skipped": "torch not installed"}
    run = VARIANTS[name]()
    imports = _status_mb()
    if name == "profile":
        return {"name": name, "profile": run(n, seed)}
    peak_reset = _reset_peak()
    baseline = _status_mb()["VmRSS"]

    start = time.perf_counter()
    results = run(n, seed)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(n, seed)
        times.append(time.perf_counter() - start)

    after = _status_mb()
    run_peak = after["VmHWM"]
    return {
        "name": name,
        "n": n,
        "samples": len(GAPS) * n,
        "first": first,
        "times": times,
        "baseline_mb": baseline,
        # Whole-process peak: the larger of the import phase's and the run's high-water marks.
        "peak_mb": max(run_peak, imports["VmHWM"]) if peak_reset else run_peak,
        "added_mb": run_peak - baseline,
        "peak_reset": peak_reset,
        "results": {str(gap): values for gap, values in results.items()},
    }


# ---------------------------------------------------------------------------------------------------------
# The driver.

def run_variant(name: str, n: int, repeats: int, seed: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--n", str(n),
               "--repeats", str(repeats), "--seed", str(seed)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        return {"name": name, "failed": [lines[-1] if lines else f"exit code {completed.returncode}"]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _combine(before: dict | None, new: dict) -> dict:
    """One variant's figures over several rounds: all timed runs, the fastest first call, the largest peak."""
    if before is None or "times" not in before or "times" not in new:
        return new if before is None or "times" not in before else before
    combined = dict(new)
    combined["times"] = before["times"] + new["times"]
    combined["first"] = min(before["first"], new["first"])
    for key in ("peak_mb", "added_mb", "baseline_mb"):
        combined[key] = max(before[key], new[key])
    return combined


_VERSIONS = """
import numpy, scipy
try:
    import torch
    t = torch.__version__
except ImportError:
    t = "not installed"
print(f"numpy {numpy.__version__}, scipy {scipy.__version__}, torch {t}")
"""


def _versions() -> str:
    return subprocess.run([sys.executable, "-c", _VERSIONS], capture_output=True, text=True).stdout.strip()


def _fmt_n(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


def _print_figures(figures: list[dict]) -> None:
    header = (f"{'variant':18}{'N per gap':>10}{'best s':>9}{'median s':>10}{'first s':>9}{'ns/sample':>11}"
              f"{'baseline MB':>13}{'peak MB':>9}{'added MB':>10}")
    print(header)
    print("-" * len(header))
    for fig in figures:
        if "skipped" in fig:
            print(f"{fig['name']:18}skipped ({fig['skipped']})")
            continue
        if "failed" in fig:
            print(f"{fig['name']:18}FAILED: {fig['failed'][0]}")
            continue
        best, median = min(fig["times"]), statistics.median(fig["times"])
        print(f"{fig['name']:18}{_fmt_n(fig['n']):>10}{best:>9.3f}{median:>10.3f}{fig['first']:>9.3f}"
              f"{best / fig['samples'] * 1e9:>11.1f}{fig['baseline_mb']:>13.1f}{fig['peak_mb']:>9.1f}"
              f"{fig['added_mb']:>10.1f}{'' if fig['peak_reset'] else ' *'}")
    print("ns/sample: best time / (2 gaps x N). Peak: whole-process peak RSS; added: peak - RSS after imports.")
    if any(not fig.get("peak_reset", True) for fig in figures):
        print("* the peak mark could not be reset after imports: 'added' may include the imports' own peak.")


def _print_agreement(figures: list[dict]) -> None:
    """mean/true and std/true of each estimator, per variant: they all compute the same table."""
    print("\nThe table each variant computed (mean/KL and std/KL; true KL = gap^2/2):")
    for fig in figures:
        for gap, values in sorted(fig.get("results", {}).items(), key=lambda item: float(item[0])):
            kl = float(gap) ** 2 / 2
            cells = "  ".join(f"{k} {values[k][0] / kl:8.5f} {values[k][1] / kl:7.4f}" for k in ESTIMATOR_NAMES)
            print(f"  {fig['name']:18} gap {float(gap):<4g} {cells}")


def _print_profile(profile: dict) -> None:
    print(f"\nWhere klviz's time goes per chunk ({profile['chunk']:,} samples, one thread, best of 7; "
          "ns per sample):")
    gaps = [key for key in profile if key != "chunk"]
    faults = "minor page faults per chunk"
    stages = [stage for stage in profile[gaps[0]] if stage != faults]
    print(f"  {'stage':28}" + "".join(f"{'gap ' + format(float(g), 'g'):>10}" for g in gaps))
    for stage in stages:
        print(f"  {stage:28}" + "".join(f"{profile[g][stage]:>10.2f}" for g in gaps))
    parts = [s for s in stages if s not in ("simulate(workers=1) total", "spawn child stream")]
    print(f"  {'sum of the stages above':28}" + "".join(f"{sum(profile[g][s] for s in parts):>10.2f}"
                                                         for g in gaps))
    if faults in profile[gaps[0]]:
        print(f"  {faults:28}" + "".join(f"{profile[g][faults]:>10.0f}" for g in gaps)
              + "   (in simulate; 256 = one 1 MiB array faulted in anew)")


def _ratio(numerator: dict, denominator: dict, pick) -> float | None:
    if any("times" not in fig for fig in (numerator, denominator)):
        return None
    return pick(numerator["times"]) / pick(denominator["times"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10^6 per gap and no 10^8 run")
    parser.add_argument("--n", type=int, default=None, help="samples per gap (default 10^7, 10^6 with --quick)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant after the first")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, interleaved (timed runs pooled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-chunk breakdown")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or (10**6 if args.quick else 10**7)

    if args.worker:
        print(json.dumps(worker(args.worker, n, args.repeats, args.seed)))
        return 0

    print(f"Seed table benchmark: 2 gaps x {_fmt_n(n)} samples, k1/k2/k3 mean and std; "
          f"{args.repeats} timed repeats after a first call, imports excluded; each variant in its own process"
          + (f", {args.rounds} interleaved rounds." if args.rounds > 1 else "."))
    print(f"{platform.python_implementation()} {platform.python_version()}, {_versions()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          "(the machine may be shared: compare two runs).\n")

    names = ("klviz", "klviz-1thread", "klviz-seed_table", "naive", "torch", "floor-1thread", "floor-2threads",
             "floor-1thread-pcg64")
    figures = {}
    for _ in range(args.rounds):  # rounds interleave the variants, so a burst of load hits them all alike
        for name in names:
            figures[name] = _combine(figures.get(name), run_variant(name, n, args.repeats, args.seed))
    ordered = list(figures.values())
    big = None
    if not args.quick:
        big = run_variant("klviz", 10 * n, 0, args.seed)  # one (first) run: memory is the point
        if "first" in big:
            big["times"] = [big["first"]]
            big["name"] = "klviz (10x N)"
        ordered.append(big)
    _print_figures(ordered)
    if "skipped" in figures["torch"]:
        print("torch not installed: skipped")
    _print_agreement([figures[k] for k in ("klviz", "naive", "torch") if "results" in figures[k]])

    print("\nRatios of times (best / median):")
    checks = []
    for label, num, den, goal, better in (
        ("naive / klviz", "naive", "klviz", GOAL_VS_NAIVE, "ge"),
        ("torch / klviz", "torch", "klviz", GOAL_VS_TORCH, "ge"),
        ("klviz / floor-1thread", "klviz", "floor-1thread", GOAL_VS_FLOOR, "le"),
        ("klviz / floor-2threads", "klviz", "floor-2threads", GOAL_VS_FLOOR, "le"),
        ("klviz / floor-1thread-pcg64", "klviz", "floor-1thread-pcg64", None, None),
        ("klviz-1thread / floor-1thread", "klviz-1thread", "floor-1thread", None, None),
        ("klviz-1thread / klviz", "klviz-1thread", "klviz", None, None),
        ("klviz-seed_table / klviz", "klviz-seed_table", "klviz", None, None),
        ("floor-1thread / floor-2threads", "floor-1thread", "floor-2threads", None, None),
    ):
        best = _ratio(figures[num], figures[den], min)
        median = _ratio(figures[num], figures[den], statistics.median)
        if best is None:
            print(f"  {label:32} n/a ({num if 'times' not in figures[num] else den} not measured)")
            if goal is not None:
                checks.append((f"{label} {'>=' if better == 'ge' else '<='} {goal:g}", None))
            continue
        print(f"  {label:32} {best:6.2f} / {median:6.2f}")
        if goal is not None:
            ok = best >= goal if better == "ge" else best <= goal
            checks.append((f"{label} {'>=' if better == 'ge' else '<='} {goal:g} (best times: {best:.2f})", ok))

    peaks = [fig for fig in (figures["klviz"], big) if fig and "peak_mb" in fig]
    if peaks:
        worst = max(peaks, key=lambda fig: fig["peak_mb"])
        sizes = " and ".join(_fmt_n(fig["n"]) for fig in peaks)
        checks.append((f"klviz whole-process peak RSS < {GOAL_PEAK_MB:g} MB at N = {sizes} "
                       f"(max {worst['peak_mb']:.1f} MB; added {max(f['added_mb'] for f in peaks):.1f} MB)",
                       worst["peak_mb"] < GOAL_PEAK_MB))

    print("\nGoals:")
    for text, ok in checks:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'MISS'}  {text}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")

    if not args.no_profile:
        profile = run_variant("profile", n, 0, args.seed)
        if "profile" in profile:
            _print_profile(profile["profile"])
        else:
            print(f"\nprofile failed: {profile.get('failed')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
