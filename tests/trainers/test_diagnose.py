r"""Tests for klviz.diagnose on log-probabilities drawn from pairs with known exact answers.

Monte Carlo means are compared with klviz.exact_moments (closed forms for Gaussians, sums for categorical
pairs) or with sums written out here, in standard errors (4.5 σ: a false alarm rate of 7e-6 per check),
with fixed seeds. Clamp shares are compared with their exact probabilities (sums over the tokens) in
binomial standard errors. The tail warnings must fire on a pair whose Var(k3) is infinite
(σ_p = 2σ_q: E_q[r²] = ∞) and stay silent on benign ones.
"""

import math

import numpy as np
import pytest
from scipy.stats import norm

import klviz
from klviz.__main__ import main
from klviz.trainers import Diagnosis, diagnose, trainer_recipes

Z = 4.5


def gaussian_log_probs(pair, n, seed):
    x = pair.sample(n, rng=seed)
    return norm.logpdf(x, pair.mu_q, pair.sigma_q), norm.logpdf(x, pair.mu_p, pair.sigma_p)


def assert_close(estimate, exact):
    assert abs(estimate.mean - exact) < Z * estimate.stderr, (estimate, exact)


@pytest.mark.parametrize("pair", [klviz.GaussianPair(mu_p=0.5), klviz.GaussianPair(mu_p=0.3, sigma_p=0.8)],
                         ids=["mean-shift", "narrower-p"])
def test_benign_gaussian_pairs_match_exact_moments_and_do_not_warn(pair):
    logp, ref_logp = gaussian_log_probs(pair, 100_000, 11)
    report = diagnose(logp, ref_logp)
    for name in ("k1", "k2", "k3"):
        exact = klviz.exact_moments(pair, name)
        assert_close(report.estimates[name], exact.mean)
        assert report.estimates[name].std == pytest.approx(exact.std, rel=0.05)
    assert report.warnings == ()
    assert not report.r_tail.heavy and not report.r_tail.dominated
    # k1 < 0 exactly where log r > 0: a probability under q, in binomial standard errors.
    a, b, c = pair.quadratic
    if c == 0:
        exact_share = norm.sf(-a / b) if b > 0 else norm.cdf(-a / b)
        assert abs(report.k1_negative_share - exact_share) < Z * math.sqrt(exact_share * (1 - exact_share) / 1e5)


def test_infinite_variance_of_k3_warns():
    pair = klviz.GaussianPair(mu_p=0.0, sigma_p=2.0)   # log r = a + 3z²/8: P(r > t) ~ t^{-4/3}, ξ = 3/4
    assert klviz.exact_moments(pair, "k3").var_diverges
    logp, ref_logp = gaussian_log_probs(pair, 100_000, 3)
    report = diagnose(logp, ref_logp)
    assert report.r_tail.heavy
    assert report.r_tail.tail_index == pytest.approx(0.75, abs=0.15)
    assert any("tail of r = p/q looks heavy" in w for w in report.warnings)
    # k1's variance is finite: its mean is still right.
    assert_close(report.estimates["k1"], pair.kl_qp())


def test_categorical_on_policy_means_and_clamp_shares_are_exact():
    pair = klviz.CategoricalPair(p_logits=[0.0, 1.0, -12.0, 3.0, -2.0, 0.5],
                                   q_logits=[0.0, 0.0, 0.0, -2.5, 0.0, 0.0])
    n = 60_000
    tokens = pair.sample(n, rng=5)
    report = diagnose(pair.log_q[tokens], pair.log_p[tokens])
    for name in ("k1", "k2", "k3"):
        assert_close(report.estimates[name], klviz.exact_moments(pair, name).mean)
    q = np.exp(pair.log_q)
    L = pair.log_p - pair.log_q
    for recipe in trainer_recipes():
        if recipe.log_ratio_clamp is None and recipe.value_clamp is None:
            assert recipe.name not in report.clamp_shares
            continue
        exact = float(np.sum(q * recipe.clamp_hits(pair.log_q, pair.log_p)))
        share = report.clamp_shares[recipe.name]
        assert abs(share - exact) <= Z * math.sqrt(exact * (1 - exact) / n) + 1e-12, recipe.name
    # Here the k3 clamp at 10 binds on the tokens with log r = -13.6 and 3.9, 21% of q's mass.
    binding = float(np.sum(q[np.expm1(L) - L > 10]))
    assert binding == pytest.approx(0.2129214680, rel=1e-9)
    assert abs(report.clamp_shares["verl:low_var_kl-loss"] - binding) < Z * math.sqrt(binding * (1 - binding) / n)
    assert report.k1_negative_share == pytest.approx(float(np.sum(q[L > 0])), abs=Z * 0.5 / math.sqrt(n))
    assert report.warnings == ()


def test_off_policy_weighted_estimates_are_unbiased_for_kl_qp():
    """Tokens from μ: k1..k3 average to E_mu[k(log p - log q)], rho*k1 and rho*k3 to KL(q||p)."""
    mu = klviz.CategoricalPair(p_logits=[0.0] * 5, q_logits=[0.2, -0.1, 0.4, 0.0, -0.6])
    q_logits = np.array([0.5, -0.3, 0.2, 0.1, -0.4])
    p_logits = np.array([0.0, 0.6, -0.5, 0.3, 0.2])
    policy = klviz.CategoricalPair(p_logits=p_logits, q_logits=q_logits)
    n = 100_000
    tokens = mu.sample(n, rng=9)
    log_mu = mu.log_q
    report = diagnose(policy.log_q[tokens], policy.log_p[tokens], old_logp=log_mu[tokens])
    assert report.off_policy
    L = policy.log_p - policy.log_q
    weights = np.exp(log_mu)
    assert_close(report.estimates["k1"], float(np.sum(weights * -L)))
    assert_close(report.estimates["k3"], float(np.sum(weights * (np.exp(L) - 1 - L))))
    assert_close(report.estimates["rho*k1"], policy.kl_qp())
    assert_close(report.estimates["rho*k3"], policy.kl_qp())
    assert report.rho_tail is not None and not report.rho_tail.heavy
    assert report.warnings == ()


def test_a_heavy_importance_ratio_warns():
    """q = N(0, 2²) trained on samples of μ = N(0, 1): ρ = q/μ has E_mu[ρ²] = ∞ (σ_q² ≥ 2σ_μ²)."""
    n = 100_000
    x = np.random.default_rng(4).standard_normal(n)
    logp, old_logp, ref_logp = norm.logpdf(x, 0, 2.0), norm.logpdf(x), norm.logpdf(x, 0.2, 1.9)
    report = diagnose(logp, ref_logp, old_logp=old_logp)
    assert report.rho_tail.heavy
    assert any("tail of rho = q/mu looks heavy" in w for w in report.warnings)


def test_few_tokens_say_so():
    report = diagnose([-1.0, -2.0, -0.5], [-1.1, -1.9, -0.7])
    assert report.r_tail.tail_index is None
    assert any("too few for a tail estimate" in w for w in report.warnings)
    single = diagnose([-1.0], [-1.5])
    assert single.estimates["k3"].std == math.inf and single.n == 1


def test_overflowing_k3_gives_inf_not_nan():
    report = diagnose([-800.0, -1.0], [-1.0, -1.0])    # log r = 799: r overflows
    assert report.estimates["k3"].mean == math.inf and report.estimates["k3"].std == math.inf
    assert report.r_tail.dominated


def test_text_and_html_reports():
    pair = klviz.GaussianPair(mu_p=0.5)
    logp, ref_logp = gaussian_log_probs(pair, 5_000, 1)
    report = diagnose(logp, ref_logp)
    assert isinstance(report, Diagnosis)
    text = report.to_text()
    assert str(report) == text
    for part in ("5,000 tokens", "k3 ", "k1 < 0 on", "clamp binds", "verl:low_var_kl-loss", "Hill index", "no warnings"):
        assert part in text
    html = report._repr_html_()
    assert html.startswith("<table>") and "verl:low_var_kl-loss" in html
    assert repr(report).startswith("Diagnosis(n=5,000, off_policy=False, k1=")


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="logp and ref_logp must have the same number of tokens"):
        diagnose([-1.0, -2.0], [-1.0])
    with pytest.raises(ValueError, match="ref_logp must be finite"):
        diagnose([-1.0], [np.nan])
    with pytest.raises(ValueError, match="logp must not be empty"):
        diagnose([], [])
    with pytest.raises(TypeError, match="logp must be an array of real numbers"):
        diagnose(["a"], [-1.0])
    with pytest.raises(ValueError, match="old_logp must have as many tokens as logp"):
        diagnose([-1.0], [-1.0], old_logp=[-1.0, -2.0])


def test_command_line(tmp_path, capsys):
    pair = klviz.GaussianPair(mu_p=0.5)
    logp, ref_logp = gaussian_log_probs(pair, 2_000, 2)
    path = tmp_path / "run.npz"
    np.savez(path, logp=logp.reshape(40, 50), ref_logp=ref_logp.reshape(40, 50))
    assert main(["diagnose", str(path)]) == 0
    assert capsys.readouterr().out == diagnose(logp, ref_logp).to_text()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, policy=logp)
    with pytest.raises(SystemExit):
        main(["diagnose", str(wrong)])
    assert "must hold arrays 'logp' and 'ref_logp'" in capsys.readouterr().err
    text = tmp_path / "not.npz"
    text.write_text("hello")
    with pytest.raises(SystemExit):
        main(["diagnose", str(text)])
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, logp=np.array([-1.0, np.nan]), ref_logp=np.array([-1.0, -1.0]))
    with pytest.raises(SystemExit):
        main(["diagnose", str(bad)])
    assert "logp must be finite" in capsys.readouterr().err
