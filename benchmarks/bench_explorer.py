"""Benchmark every control of the interactive figures, kernel side: notebook 04's explorer and 07's panel.

For each control, the same sequence of settings (what the browser test's key presses do) is timed in one
run for these variants:

* ``live``       the real path in a notebook: ``BiasExplorer`` (or 07's ``GradientVarianceExplorer``) on an
                 ipympl canvas with a browser connection simulated, so every step also computes and
                 encodes the PNG frame ipympl sends (frames are discarded);
* ``agg``        the same widget on a plain Agg canvas (no frame encoding);
* ``full draw``  ``blit=False``: every step draws the whole figure (the 04 explorer only);
* ``naive``      the baseline: the common pattern of re-creating the figure at every change (clear, fresh
                 samples, ``ax.hist`` three times, the bias panel, ``canvas.draw()``; for 07, the notebook's
                 former ``variance_panel``, a new figure per move, drawn).

Each variant's median ms per step and p90, and the ratios naive / live and full draw / agg, are printed
per control. Nothing is asserted: speed is reported, not tested. The browser's share (websocket, PNG
decode, drawing) is measured by ``tests/browser`` and printed in pytest's summary.

Usage::

    python benchmarks/bench_explorer.py              # n = 200,000, the notebook's default
    python benchmarks/bench_explorer.py --n 1000000

The machine is small (2 cores) and may be shared: compare ratios from one run, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import klviz  # noqa: E402
import klviz.gradients as kg  # noqa: E402
from klviz.explorer import GAP_GRID, BiasExplorer, ExplorerFigure, exact_relative_bias  # noqa: E402
from klviz.plots import PALETTE  # noqa: E402
from klviz.variance_panel import GradientVarianceExplorer  # noqa: E402

SIZES_PATH = [500_000, 1_000_000, 500_000, 200_000, 100_000, 30_000, 10_000, 3_000, 10_000, 30_000, 100_000, 200_000]


def connect_browser(canvas):
    """Act as if a browser had connected to a live canvas: frames are then encoded and 'sent' (dropped)."""
    canvas.send_binary = lambda data: None
    canvas._handle_message(canvas, {"type": "initialized"}, [])
    canvas.handle_event({"type": "refresh"})
    canvas.handle_event({"type": "draw"})


def time_steps(step, values) -> list[float]:
    times = []
    for value in values:
        start = time.perf_counter()
        step(value)
        times.append(time.perf_counter() - start)
    return times


def there_and_back(start: float, step: float, count: int) -> list[float]:
    up = [round(start + step * (i + 1), 10) for i in range(count)]
    return up + up[-2::-1] + [start]


def explorer_controls(n: int) -> dict:
    """Per control: (name of the widget control, the values it takes in turn)."""
    return {
        "gap": ("gap", there_and_back(1.0, 0.05, 10)),
        "σp/σq": ("sigma_ratio", there_and_back(1.0, 0.05, 10)),
        "n": ("n", [size for size in SIZES_PATH if size != n] + [n]),
        "resample": ("seed", None),
        "toggles": ("toggle", [(name, shown) for name in ("k1", "k2", "k3") for shown in (False, True)] * 2),
    }


def explorer_step(explorer, key):
    controls = explorer.controls
    if key == "seed":
        return lambda _value: controls["resample"].click()
    if key == "toggle":
        return lambda value: setattr(controls[value[0]], "value", value[1])
    return lambda value: setattr(controls[key], "value", value)


def naive_factory(n: int, seed: int):
    """Clear, resample, ax.hist, draw: the pattern a first explorer is usually written in."""
    fig = plt.figure(figsize=ExplorerFigure.figsize)
    rng = np.random.default_rng(seed)
    settings = {"gap": 1.0, "sigma_ratio": 1.0, "n": n, "shown": {"k1", "k2", "k3"}}

    def step(update: dict):
        settings.update(update)
        fig.clf()
        grid = fig.add_gridspec(3, 2, width_ratios=(1.25, 1.0))
        pair = klviz.GaussianPair(mu_p=settings["gap"], sigma_p=settings["sigma_ratio"])
        log_ratio = pair.sample_log_ratio(settings["n"], rng)
        values = {name: klviz.ESTIMATORS[name].function(log_ratio) for name in ("k1", "k2", "k3")
                  if name in settings["shown"]}
        kl = pair.kl()
        first = None
        for row, (name, sample) in enumerate(values.items()):
            ax = fig.add_subplot(grid[row, 0], sharex=first)
            first = first or ax
            ax.hist(sample, bins=100, range=tuple(np.percentile(sample, [1, 99])), color=PALETTE[name], alpha=0.5)
            ax.axvline(sample.mean(), color=PALETTE[name])
            ax.axvline(kl, color="black", linestyle="--")
            ax.set_title(name, loc="left")
        bias_ax = fig.add_subplot(grid[:, 1])
        bias_ax.plot(GAP_GRID, exact_relative_bias("k2", GAP_GRID, settings["sigma_ratio"]), color=PALETTE["k2"])
        bias_ax.axvline(settings["gap"], linestyle=":")
        for name, sample in values.items():
            bias_ax.errorbar([settings["gap"]], [(sample.mean() - kl) / kl], yerr=[sample.std() / np.sqrt(sample.size) / kl],
                             fmt="o", color=PALETTE[name])
        fig.suptitle(f"gap {settings['gap']:.2f}: KL = {kl:.4g}")
        fig.canvas.draw()

    return step, fig


def naive_updates(control: str, values, n: int):
    if control == "gap":
        return [{"gap": v} for v in values]
    if control == "σp/σq":
        return [{"sigma_ratio": v} for v in values]
    if control == "n":
        return [{"n": v} for v in values]
    if control == "resample":
        return [{} for _ in range(12)]
    shown = {"k1", "k2", "k3"}
    updates = []
    for name, visible in values:
        shown = shown | {name} if visible else shown - {name}
        updates.append({"shown": set(shown)})
    return updates


# ---- notebook 07's panel --------------------------------------------------------------------------------
def variance_setup():
    rng = np.random.default_rng(20250607)
    ref = rng.normal(0.0, 1.0, 8)
    direction = rng.normal(0.0, 1.0, 8)
    direction -= direction.mean()
    log_p = ref - np.logaddexp.reduce(ref)

    def policies(s):
        return log_p + s * direction, log_p + 0.75 * s * direction

    combos = [(k, u) for u in ("loss", "reward", "ratio_loss", "stopgrad_ratio_loss", "ratio_reward")
              for k in ("k1", "k2", "k3")]

    def moments_at(s, estimator, use):
        policy, old = policies(s)
        kwargs = {"behaviour_logits": old} if kg.USES[use].off_policy else {}
        return kg.gradient_moments(policy, ref, estimator, use, **kwargs)

    return policies, ref, combos, moments_at


def naive_variance_panel(policies, ref, combos, moments_at):
    """07's former cell: a new figure per slider move, bars drawn from scratch."""
    def step(s):
        policy, old = policies(s)
        moments = [moments_at(s, *combo) for combo in combos]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.4]})
        tokens = np.arange(ref.size)
        for j, logits in enumerate((ref, old, policy)):
            left.bar(tokens + (j - 1) * 0.27, np.exp(logits - np.logaddexp.reduce(logits)), width=0.27)
        left.set_title(f"s = {s:.2f}: KL(q‖p) = {kg.kl_qp(policy, ref):.3f}, KL(p‖q) = {kg.kl_pq(policy, ref):.3f}")
        rows = np.arange(len(combos))
        right.barh(rows, [m.trace_covariance for m in moments], color=[PALETTE[k] for k, _ in combos])
        right.plot([max(m.signal, 1e-6) for m in moments], rows, "|")
        right.set_yticks(rows, [f"{k} {u}" for k, u in combos])
        right.set_xscale("log")
        right.set_xlim(1e-6, 1e4)
        fig.tight_layout()
        fig.canvas.draw()
        plt.close(fig)

    return step


def row(label: str, times: list[float]) -> str:
    return (f"  {label:<11}{statistics.median(times) * 1e3:>9.1f}{np.percentile(times, 90) * 1e3:>8.1f}"
            f"{len(times):>7}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="samples (default 200,000, the notebook's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.n
    print(f"interactive figures, kernel side: explorer n = {n:,}, figure {ExplorerFigure.figsize[0]:g}x"
          f"{ExplorerFigure.figsize[1]:g} in at 100 dpi; python {platform.python_version()}, numpy {np.__version__}, "
          f"matplotlib {matplotlib.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"  {'variant':<11}{'median ms':>9}{'p90':>8}{'steps':>7}")

    summary = []
    for control, (key, values) in explorer_controls(n).items():
        results = {}
        for variant in ("live", "agg", "full draw"):
            explorer = BiasExplorer(n=n, rng=args.seed, live=variant == "live", blit=variant != "full draw")
            if variant == "live":
                connect_browser(explorer.figure.canvas)
            sequence = values if values is not None else range(12)
            explorer_step(explorer, key)(sequence[0] if values is not None else 0)  # warm-up
            results[variant] = time_steps(explorer_step(explorer, key), sequence)
            explorer.close()
        naive, fig = naive_factory(n, args.seed)
        updates = naive_updates(control, values, n)
        naive(updates[0])  # warm-up (font caches)
        results["naive"] = time_steps(naive, updates)
        plt.close(fig)
        print(f"04 {control}")
        for variant, times in results.items():
            print(row(variant, times))
        live, agg = (statistics.median(results[v]) for v in ("live", "agg"))
        full, slow = statistics.median(results["full draw"]), statistics.median(results["naive"])
        print(f"  ratios: naive / live = {slow / live:.1f}x, full draw / agg = {full / agg:.1f}x, "
              f"live / agg = {live / agg:.2f}x (the frame encoding)")
        summary.append((f"04 {control}", live, slow))

    policies, ref, combos, moments_at = variance_setup()
    separations = there_and_back(1.0, 0.05, 10)
    results = {}
    for variant in ("live", "agg"):
        panel = GradientVarianceExplorer(policies, ref, combos, moments_at, live=variant == "live")
        if variant == "live":
            connect_browser(panel.figure.canvas)
        slider = panel.controls["separation"]
        results[variant] = time_steps(lambda s: setattr(slider, "value", s), separations)
        panel.close()
    naive = naive_variance_panel(policies, ref, combos, moments_at)
    naive(separations[0])
    results["naive"] = time_steps(naive, separations)
    print("07 separation (first visits and revisits: the exact moments are cached per separation)")
    for variant, times in results.items():
        print(row(variant, times))
    live, slow = statistics.median(results["live"]), statistics.median(results["naive"])
    print(f"  ratios: naive / live = {slow / live:.1f}x")
    summary.append(("07 separation", live, slow))

    print()
    print("summary, median ms per step (live canvas, frame encoding included) and the baseline:")
    for name, live, slow in summary:
        print(f"  {name:<16} live {live * 1e3:6.1f}   naive {slow * 1e3:7.1f}   {slow / live:5.1f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
