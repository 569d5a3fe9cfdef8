r"""Tests for klviz.experiment (the article's table) and the command line ``python -m klviz table``.

Closed forms for q = N(0, 1), p = N(μ, 1) (see test_exact.py for the derivation): KL = μ²/2,
bias/true of k2 = μ²/4, std/true of k1 = 2/μ, of k2 = √(2 + μ²), of k3 = √(e^{μ²} - 1 - μ²)/(μ²/2).
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from klviz import seed_table
from klviz.__main__ import main
from klviz.experiment import ARTICLE, SeedTable, TableRow

ROOT = Path(__file__).resolve().parents[1]


def exact_relative(gap):
    """{estimator: (bias/true, std/true)} from the closed forms in the module docstring."""
    mu2 = gap * gap
    kl = mu2 / 2
    return {
        "k1": (0.0, 2 / abs(gap)),
        "k2": (mu2 / 4, math.sqrt(2 + mu2)),
        "k3": (0.0, math.sqrt(math.expm1(mu2) - mu2) / kl),
    }


@pytest.fixture(scope="module")
def table():
    return seed_table(gaps=(0.1, 1.0, -0.5), n=200_000, rng=0)


def test_rows_cover_every_gap_and_estimator_in_order(table):
    assert isinstance(table, SeedTable)
    assert [(row.gap, row.estimator) for row in table.rows] == [
        (gap, name) for gap in (0.1, 1.0, -0.5) for name in ("k1", "k2", "k3")
    ]
    assert table.n == 200_000 and table.seed == 0
    for row in table.rows:
        assert isinstance(row, TableRow)
        assert row.kl == pytest.approx(row.gap**2 / 2, rel=1e-15, abs=0)
        assert row.monte_carlo.n == 200_000
        assert row.article == ARTICLE.get(row.gap, {}).get(row.estimator)
    assert table.rows[0].article == (0.0, 20.0) and table.rows[-1].article is None


def test_monte_carlo_within_5_standard_errors_of_exact(table):
    for row in table.rows:
        assert abs(row.z_score) < 5, row
        z = (row.monte_carlo.mean - row.exact.mean) / row.monte_carlo.stderr  # the definition, by hand
        assert row.z_score == pytest.approx(z, rel=1e-12)


def test_exact_columns_match_closed_forms(table):
    for row in table.rows:
        bias, std = exact_relative(row.gap)[row.estimator]
        assert row.exact.relative_bias == pytest.approx(bias, rel=1e-10, abs=1e-12), row.estimator
        assert row.exact.relative_std == pytest.approx(std, rel=1e-10, abs=0), row.estimator
    k2_rows = [row for row in table.rows if row.estimator == "k2"]
    assert [row.exact.relative_bias for row in k2_rows] == pytest.approx([0.0025, 0.25, 0.0625], rel=1e-12)


def test_monte_carlo_columns_are_derived_from_the_estimate(table):
    for row in table.rows:
        mc = row.monte_carlo
        assert row.mc_relative_bias == pytest.approx((mc.mean - row.kl) / row.kl, rel=1e-12, abs=1e-15)
        assert row.mc_relative_bias_stderr == pytest.approx(mc.std / math.sqrt(mc.n) / row.kl, rel=1e-12)
        assert row.mc_relative_std == pytest.approx(mc.std / row.kl, rel=1e-12)
        # the sample std/true agrees with the exact one to a few percent at n = 2e5
        assert row.mc_relative_std == pytest.approx(row.exact.relative_std, rel=0.05)


def test_article_values_are_consistent_with_exact_values():
    # The article rounds to 2-3 digits and its biases are Monte Carlo estimates from 10^7 samples:
    # each reported bias must lie within 3 standard errors (std/true / √1e7) of the exact bias, and each
    # reported std/true within rounding of its last printed digit.
    for gap, entries in ARTICLE.items():
        exact = exact_relative(gap)
        for name, (bias, std) in entries.items():
            exact_bias, exact_std = exact[name]
            assert abs(bias - exact_bias) <= 3 * exact_std / math.sqrt(1e7), (gap, name)
            decimals = 0 if std == round(std) else len(repr(std).split(".")[1])  # 1.42 -> 2, 20.0 -> 0
            assert abs(std - exact_std) <= 0.5 * 10.0**-decimals, (gap, name, std, exact_std)


def test_reproducible_and_generator_seed():
    a = seed_table(gaps=[1.0], n=5_000, rng=3)
    b = seed_table(gaps=[1.0], n=5_000, rng=3)
    assert a.to_text() == b.to_text() and str(a) == a.to_text()
    c = seed_table(gaps=[1.0], n=5_000, rng=np.random.default_rng(3))
    assert c.seed == "generator"
    assert [row.monte_carlo for row in c.rows] == [row.monte_carlo for row in a.rows]


def test_text_and_html(table):
    text = table.to_text()
    assert text.endswith("\n")
    for gap in ("0.1", "1", "-0.5"):
        assert f"N({gap}" in text
    for row in table.rows:
        assert re.search(rf"^{row.estimator}\s", text, flags=re.MULTILINE)
    html = table._repr_html_()
    assert html.count("<tr>") == len(table.rows) + 1
    assert "200,000" in html and "<table>" in html
    assert "SeedTable" in repr(table)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gaps=[]), "gaps"),
        (dict(gaps=[0.0]), "gaps"),
        (dict(gaps=[0.1, math.inf]), "gaps"),
        (dict(gaps=[math.nan]), "gaps"),
        (dict(gaps=[1.0], n=1), "n must"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        seed_table(**{"n": 1000, **kwargs})


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def numbers_in(line):
    return [float(token) for token in NUMBER.findall(line.replace(",", ""))]


def contains_value(line, value, rel=1e-4):
    """Whether ``line`` prints ``value`` (to the 4+ significant digits the table promises)."""
    return any(math.isclose(number, value, rel_tol=rel) for number in numbers_in(line))


def estimator_line(output, name):
    (line,) = [line for line in output.splitlines() if re.match(rf"{name}\s", line)]
    return line


def test_cli_prints_exact_values():
    completed = subprocess.run(
        [sys.executable, "-m", "klviz", "table", "--n", "200000", "--gaps", "0.5"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    output = completed.stdout
    gap, kl = 0.5, 0.125
    assert re.search(r"KL\[q,\s*p\]\s*=\s*0\.125\b", output)
    assert "200,000" in output
    exact = exact_relative(gap)
    means = {"k1": kl, "k2": kl + gap**4 / 8, "k3": kl}  # E k2 = μ²/2 + μ⁴/8 = 0.1328125
    for name in ("k1", "k2", "k3"):
        line = estimator_line(output, name)
        assert contains_value(line, means[name], rel=1e-6), (name, line)
        assert contains_value(line, exact[name][1]), (name, line)  # std/true
        # the Monte Carlo mean and its standard error are the first two numbers after the name
        mc_mean, stderr = numbers_in(line.split(None, 1)[1])[:2]
        assert abs(mc_mean - means[name]) <= 5 * stderr
    assert contains_value(estimator_line(output, "k2"), 0.0625)  # bias/true = μ²/4


def test_cli_in_process_default_seed_is_reproducible(capsys):
    assert main(["table", "--n", "1e4", "--gaps", "1", "--seed", "5"]) == 0
    first = capsys.readouterr().out
    assert main(["table", "--n", "10000", "--gaps", "1", "--seed", "5"]) == 0
    assert capsys.readouterr().out == first
    assert "10,000" in first


@pytest.mark.parametrize(
    "argv, match",
    [
        (["table", "--n", "1"], "--n"),
        (["table", "--n", "0"], "--n"),
        (["table", "--n", "-5"], "--n"),
        (["table", "--n", "abc"], "--n"),
        (["table", "--n", "1.5"], "--n"),
        (["table", "--n", "2.55e1"], "--n"),  # 25.5: must not be truncated to 25
        (["table", "--n", "1e400"], "--n"),  # inf: must not crash with OverflowError
        (["table", "--n", "nan"], "--n"),
        (["table", "--n", "100", "--gaps", "0"], "gaps"),
        (["table", "--n", "100", "--gaps", "x"], "--gaps"),
        (["table", "--n", "100", "--workers", "0"], "workers"),
        ([], "command"),
        (["tabel"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_exit_with_usage_error(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "usage:" in err


def test_seed_table_takes_one_estimator_name_and_numpy_seeds():
    table = seed_table(gaps=[1.0], n=1000, rng=np.int64(3), estimators="k3")
    assert [row.estimator for row in table.rows] == ["k3"] and table.seed == 3
    with pytest.raises(ValueError, match="flat sequence"):
        seed_table(gaps=[[0.1, 1.0]], n=1000)
