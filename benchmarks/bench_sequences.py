"""Exact sequence moments at scale: V = 1000 states, T = 200 tokens (issue 10: sequence_k2 took 48 s).

Times, in one run, klviz's dynamic programmes and the baselines they replaced, written out here:

* per-row conditional KLs: one vectorised pass (``kl_rows``) against a loop of one ``CategoricalPair`` a row;
* ``sequence_k2`` (centred moments of L to the fourth): the block pass (one (5, V) @ (V, V) product per power
  and step) against the previous pass (every power of the centred step matrix recomputed each step);
* ``sequence_k3``, ``token_k3``, ``step_kl`` and the sequence KL itself;
* the exact expected gradients of notebook 08's uses (issue 11: <= 2 s at V = 1000, T = 200) and their peak memory.

    python benchmarks/bench_sequences.py            # V = 1000, T = 200
    python benchmarks/bench_sequences.py --quick    # V = 300, T = 100

Prints best-of-3 seconds and the ratios baseline / klviz. Nothing is asserted (speed lives here, not in
the tests).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np


def best_of(function, repeats: int = 3) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def rows_one_by_one(pair):
    """The replaced baseline: one CategoricalPair (validation, log-softmax, accurate log-ratios) per row."""
    from klviz import CategoricalPair

    return np.array([CategoricalPair(p_logits=p, q_logits=q).kl_qp()
                     for p, q in zip(pair.p_transition_logits, pair.q_transition_logits)])


def centred_moments_previous(pair, order: int = 4) -> list[float]:
    """The replaced baseline: powers of the centred step matrix recomputed at every step."""
    transition = np.exp(pair.log_q_transition)
    step = pair.log_p_transition - pair.log_q_transition
    initial = pair.log_p_initial - pair.log_q_initial
    q_initial = np.exp(pair.log_q_initial)
    dev = initial - float(q_initial @ initial)
    moments = [q_initial * dev**k for k in range(order + 1)]
    row_means = np.sum(transition * step, axis=1)
    binom = [[math.comb(k, i) for i in range(k + 1)] for k in range(order + 1)]
    for _ in range(1, pair.length):
        d = step - float(moments[0] @ row_means)
        powers = [transition * d**j for j in range(order + 1)]
        moments = [sum(binom[k][i] * (moments[i] @ powers[k - i]) for i in range(k + 1)) for k in range(order + 1)]
    return [float(np.sum(w)) for w in moments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="V = 300, T = 100")
    args = parser.parse_args()
    vocab, length = (300, 100) if args.quick else (1000, 200)

    from klviz import random_markov_chain_pair, sequence_moments
    from klviz.pairs.categorical import kl_rows

    print(f"load average at start: {os.getloadavg()[0]:.2f}; V = {vocab}, T = {length}")
    pair = random_markov_chain_pair(vocab, length, 0.3, logit_scale=1.5, rng=0)

    rows_new, new = best_of(lambda: kl_rows(pair.p_transition_logits, pair.q_transition_logits))
    rows_old, old = best_of(lambda: rows_one_by_one(pair), repeats=1)
    print(f"per-row conditional KLs: vectorised {rows_new:.3f} s ({rows_new / vocab * 1e3:.3f} ms a row), "
          f"one CategoricalPair a row {rows_old:.3f} s ({rows_old / vocab * 1e3:.3f} ms a row): "
          f"ratio {rows_old / rows_new:.1f}x; max relative difference {np.max(np.abs(new / old - 1)):.1e}")

    moments_new, m_new = best_of(lambda: pair.centred_log_ratio_moments(4))
    moments_old, m_old = best_of(lambda: centred_moments_previous(pair), repeats=1)
    print(f"centred moments of L to the 4th: block pass {moments_new:.3f} s, previous pass {moments_old:.3f} s: "
          f"ratio {moments_old / moments_new:.1f}x; relative differences "
          + ", ".join(f"{abs(a / b - 1):.1e}" for a, b in zip(m_new[2:], m_old[2:])))

    for name in ("sequence_k2", "sequence_k3", "token_k3", "step_kl"):
        seconds, moments = best_of(lambda name=name: sequence_moments(pair.with_length(length), name))
        print(f"sequence_moments(..., {name!r}): {seconds:.3f} s   (mean {moments.mean:.6g}, std {moments.std:.6g})")
    seconds, _ = best_of(lambda: pair.with_length(length).kl_qp())
    print(f"sequence KL (fresh pair, per-row KLs included): {seconds:.3f} s")

    import tracemalloc

    from klviz.gradients.sequences import sequence_expected_gradient, sequence_kl_gradient

    for estimator, use in (("k1", "reward_to_go"), ("k3", "token_loss"), ("k2", "token_loss"), ("k3", "sequence_loss"),
                           ("k2", "sequence_reward"), ("k3", "sequence_reward")):
        tracemalloc.start()
        seconds, _ = best_of(lambda: sequence_expected_gradient(pair, estimator, use))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"sequence_expected_gradient(..., {estimator!r}, {use!r}): {seconds:.3f} s, peak {peak / 1e6:.0f} MB "
              f"(one V x V float64 array is {vocab * vocab * 8 / 1e6:.0f} MB)")
    seconds, _ = best_of(lambda: sequence_kl_gradient(pair, "kl_qp"))
    print(f"sequence_kl_gradient(..., 'kl_qp'): {seconds:.3f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
