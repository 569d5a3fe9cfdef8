"""Tests for klviz.plots.trainers: the lines carry each recipe's values, computed here from the frameworks' formulas,
and the low-precision errors; colours follow the base estimator.

References: the upstream formulas of tests/trainers/test_recipes.py (numpy, float64) for the values; for the errors,
TRL's k3 evaluated in numpy float32 arithmetic with a correctly rounded exp (tests/trainers/test_floating.py).
"""

import numpy as np
import pytest
from matplotlib.colors import to_hex

import klviz.plots as kp
from klviz.plots import PALETTE
from klviz.plots.trainers import ABS_COLOR, precision_error_curves, recipe_base, recipe_value_curves
from tests.trainers.test_floating import reference_exp32
from tests.trainers.test_recipes import UPSTREAM


def test_bases_and_colours():
    assert [recipe_base(n) for n in ("verl:kl-loss", "verl:mse-loss", "openrlhf:k3-loss", "verl:abs+-loss")] == [
        "k1", "k2", "k3", "abs"]
    assert kp.recipe_color("nemo-rl:k2-loss") == PALETTE["k2"] and kp.recipe_color("verl:abs-loss") == ABS_COLOR


def test_value_curves_are_the_upstream_values(rng):
    names = ["verl:low_var_kl-loss", "openrlhf:k1-reward", "open-instruct:kl3-loss", "trl:grpo-k3"]
    L = np.sort(rng.uniform(-45, 4, 200))
    ax = recipe_value_curves(names, L)
    assert [line.get_gid() for line in ax.lines[:4]] == names
    logprob = np.full_like(L, -1.3)
    for line, name in zip(ax.lines, names):
        expected = UPSTREAM[name](np, logprob, logprob, logprob + L, logprob) if not name.endswith("reward") else \
            np.clip(-L, -10, 10)
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12, atol=1e-13)
    # three k3 recipes: one colour, three line styles
    colours = [to_hex(line.get_color()) for line in ax.lines[:4]]
    assert colours[0] == colours[2] == colours[3] == PALETTE["k3"].lower()
    assert len({ax.lines[i].get_linestyle() for i in (0, 2, 3)}) == 3
    assert ax.get_xlabel().startswith("log r")


def test_precision_curves_are_float32_errors():
    magnitudes = np.array([1e-5, 1e-3, 0.1, 3.0])
    ax = precision_error_curves(["trl:grpo-k3"], "float32", magnitudes, floor=1e-12)
    logp = (-magnitudes).astype(np.float32)
    d = np.float32(0) - logp
    value = (reference_exp32(d) - d) - np.float32(1)
    L = magnitudes.astype(np.float32).astype(np.float64)     # the log-ratio the float32 log-probs hold
    exact = np.expm1(L) - L
    error = np.abs(value.astype(np.float64) - exact) / exact
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.maximum(error, 1e-12), rtol=1e-6)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.lines[1].get_ydata()[0] == 1e-12   # the floor


def test_validation():
    with pytest.raises(ValueError, match="log_ratio must be a one-dimensional grid"):
        recipe_value_curves(["trl:grpo-k3"], [1.0])
    with pytest.raises(ValueError, match="magnitudes must be"):
        precision_error_curves(["trl:grpo-k3"], "float32", [-1.0])
    with pytest.raises(ValueError, match="sign must be 1 or -1"):
        precision_error_curves(["trl:grpo-k3"], "float32", sign=2)
