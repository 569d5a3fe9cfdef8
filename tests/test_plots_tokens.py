"""Tests for klviz.plots.tokens (notebook 06's figures): the returned Axes and their artists' data.

References are computed here differently from klviz: spreads from the Gaussian closed forms (sd(k1) = μ,
KL = μ²/2) and by summing over a small vocabulary by hand; histogram heights with numpy; sequence moments by
enumerating every sequence of a short chain.
"""

import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from klviz import CategoricalPair, GaussianPair, random_markov_chain_pair, sequence_estimates, sequence_moments
from klviz.plots import (PALETTE, SEQUENCE_STYLES, curves_against_kl, log_ratio_histogram, relative_spread,
                         sequence_biases, sequence_variances)


def test_relative_spread_gaussian_closed_forms_and_a_hand_sum():
    gaps = np.array([0.5, 1.0, 2.0])
    fig, ax = plt.subplots()
    assert relative_spread(gaps, [GaussianPair(mu_p=g) for g in gaps], estimators=("k1", "k3"), ax=ax,
                           labels={"k1": "k1 here"}) is ax
    lines = {line.get_gid(): line for line in ax.lines}
    np.testing.assert_allclose(lines["k1"].get_ydata(), gaps / (gaps**2 / 2), rtol=1e-12)
    np.testing.assert_allclose(lines["k3"].get_ydata(), np.sqrt(np.expm1(gaps**2) - gaps**2) / (gaps**2 / 2), rtol=1e-9)
    assert lines["k1"].get_label() == "k1 here" and lines["k3"].get_label() == "k3"
    assert to_hex(lines["k3"].get_color()) == PALETTE["k3"].lower()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # a categorical pair, summed by hand
    p_logits, q_logits = np.array([0.2, -0.4, 1.0]), np.array([0.0, 0.3, 0.5])
    q = np.exp(q_logits) / np.exp(q_logits).sum()
    log_ratio = np.log(np.exp(p_logits) / np.exp(p_logits).sum()) - np.log(q)
    k2 = 0.5 * log_ratio**2
    want = math.sqrt(np.sum(q * k2**2) - np.sum(q * k2) ** 2) / np.sum(q * -log_ratio)
    fig, ax = plt.subplots()
    relative_spread([1.0], [CategoricalPair(p_logits=p_logits, q_logits=q_logits)], estimators=["k2"], ax=ax)
    assert ax.lines[0].get_ydata()[0] == pytest.approx(want, rel=1e-10)


def test_relative_spread_errors():
    with pytest.raises(ValueError, match="x must give one value per pair"):
        relative_spread([1.0, 2.0], [GaussianPair(mu_p=1.0)])
    with pytest.raises(ValueError, match="x must be positive"):
        relative_spread([0.0], [GaussianPair(mu_p=1.0)])


def test_log_ratio_histogram_is_q_weighted():
    pair = CategoricalPair(p_logits=[0.0, 1.0, -1.0, 0.5, 0.0], q_logits=[0.3, 0.0, 0.0, -0.2, -np.inf])
    fig, ax = plt.subplots()
    assert log_ratio_histogram(pair, bins=3, ax=ax, linewidth=2) is ax
    step = ax.patches[-1]
    q = np.exp(pair.log_q[:4])
    log_ratio = (pair.log_p - pair.log_q)[:4]
    edges = np.linspace(log_ratio.min(), log_ratio.max(), 4)
    want = [q[(log_ratio >= lo) & ((log_ratio < hi) | (hi == edges[-1]))].sum() for lo, hi in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(step.get_data().values, want, rtol=1e-12)
    np.testing.assert_allclose(step.get_data().edges, edges, rtol=1e-12)
    assert step.get_data().values.sum() == pytest.approx(1.0) and step.get_linewidth() == 2
    (mean,) = ax.lines
    assert mean.get_xdata()[0] == pytest.approx(np.sum(q * log_ratio), rel=1e-12)  # E_q[log r] = -KL
    with pytest.raises(TypeError, match="pair must be a categorical pair"):
        log_ratio_histogram(GaussianPair(mu_p=1.0))


def test_curves_against_kl():
    kl = np.array([1e-6, 1e-4, 1e-2])
    fig, ax = plt.subplots()
    out = curves_against_kl(kl, {"a": [0.5, -2.0, 0.0], "b": [1e-3, 1e-3, 1e-3]},
                            styles={"a": {"color": "#123456", "linestyle": "--"}}, ax=ax, linewidth=3)
    assert out is ax
    a, b = (line for line in ax.lines if line.get_gid())
    np.testing.assert_array_equal(a.get_ydata(), [0.5, 2.0, 1e-12])  # absolute values, an exact 0 on the floor
    assert to_hex(a.get_color()) == "#123456" and a.get_linestyle() == "--" and a.get_linewidth() == 3
    assert b.get_label() == "b"
    (reference,) = [line for line in ax.lines if not line.get_gid()]
    assert reference.get_ydata()[0] == 1.0 and reference.get_linestyle() == ":"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fig, ax = plt.subplots()
    curves_against_kl(kl, {"share": [0.5, -0.1, 0.0]}, yscale="linear", reference=None, ax=ax)
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_ydata(), [0.5, -0.1, 0.0])
    assert ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="yscale must be 'log' or 'linear'"):
        curves_against_kl(kl, {"a": kl}, yscale="symlog")
    with pytest.raises(ValueError, match=r"curves\['a'\] has 2 values for 3 KLs"):
        curves_against_kl(kl, {"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="kl must be a 1-D array of positive exact KLs"):
        curves_against_kl([0.0, 1.0], {"a": [1.0, 2.0]})


def _enumerated_moments(chain, name):
    sequences = np.array(list(itertools.product(range(chain.vocab_size), repeat=chain.length)))
    log_q = chain.log_q_initial[sequences[:, 0]]
    if chain.length > 1:
        log_q = log_q + chain.log_q_transition[sequences[:, :-1], sequences[:, 1:]].sum(axis=1)
    q = np.exp(log_q)
    estimates = sequence_estimates(chain, sequences)
    values, kl = estimates[name], math.fsum(q * estimates["token_k1"])  # the KL is E_q[-log R]
    mean = math.fsum(q * values)
    return mean, math.fsum(q * (values - mean) ** 2), (mean - kl) / kl


def test_sequence_variances_against_enumeration(rng):
    chain = random_markov_chain_pair(3, 4, 0.4, rng=1)
    lengths = [1, 2, 3, 4]
    names = ("token_k1", "sequence_k3", "step_kl")
    moments = {name: [sequence_moments(chain.with_length(t), name) for t in lengths] for name in names}
    samples = {2: {name: rng.normal(size=50) for name in names}, 4: {name: rng.normal(2.0, 3.0, 80) for name in names}}
    fig, ax = plt.subplots()
    assert sequence_variances(lengths, moments, samples=samples, ax=ax) is ax
    lines = {line.get_gid(): line for line in ax.lines}
    for name in names:
        want = [_enumerated_moments(chain.with_length(t), name)[1] for t in lengths]
        got = np.asarray(lines[name].get_ydata(), dtype=float)
        if name == "step_kl":  # the per-step KL is exact at T = 1: variance 0, left off the log axis
            assert math.isnan(got[0])
            got, want = got[1:], want[1:]
        np.testing.assert_allclose(got, want, rtol=1e-9)
        color, style = SEQUENCE_STYLES[name]
        assert lines[name].get_linestyle() == style and to_hex(lines[name].get_color()) == to_hex(color)
        dots = lines[f"{name} (MC)"]
        assert list(dots.get_xdata()) == [2, 4]
        np.testing.assert_allclose(dots.get_ydata(), [np.var(samples[t][name], ddof=1) for t in (2, 4)], rtol=1e-12)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_sequence_biases_against_enumeration():
    chain = random_markov_chain_pair(3, 4, 0.4, rng=1)
    lengths = [1, 2, 4]
    names = ("token_k1", "token_k2", "sequence_k2", "token_k3")
    moments = {name: [sequence_moments(chain.with_length(t), name) for t in lengths] for name in names}
    fig, ax = plt.subplots()
    assert sequence_biases(lengths, moments, ax=ax) is ax
    lines = {line.get_gid(): line for line in ax.lines}
    assert set(lines) == {"token_k2", "sequence_k2", "unbiased"}
    for name in ("token_k2", "sequence_k2"):
        want = [_enumerated_moments(chain.with_length(t), name)[2] for t in lengths]
        np.testing.assert_allclose(lines[name].get_ydata(), want, rtol=1e-9)
    assert lines["unbiased"].get_label() == "unbiased, all on 0:\ntoken_k1, token_k3"
    assert list(lines["unbiased"].get_ydata()) == [0.0, 0.0]
    assert ax.get_yscale() == "symlog"


def test_sequence_plot_errors():
    chain = random_markov_chain_pair(3, 2, 0.4, rng=1)
    moments = {"token_k1": [sequence_moments(chain, "token_k1")]}
    with pytest.raises(ValueError, match="unknown sequence estimator 'k1'"):
        sequence_variances([2], {"k1": moments["token_k1"]})
    with pytest.raises(ValueError, match=r"moments\['token_k1'\] has 1 entries for 2 lengths"):
        sequence_biases([1, 2], moments)
    with pytest.raises(ValueError, match="lengths must be a 1-D array of sequence lengths >= 1"):
        sequence_variances([0], moments)
    with pytest.raises(ValueError, match="linthresh must be a positive number"):
        sequence_biases([2], moments, linthresh=0)
