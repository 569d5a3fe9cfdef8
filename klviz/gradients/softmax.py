r"""Softmax quantities for one token: a policy q_θ = softmax(θ) against a reference p, exactly, by sums.

With :math:`L(x) = \log r(x) = \log p(x) - \log q_\theta(x)` and the score
:math:`g(x) = \nabla_\theta \log q_\theta(x) = e_x - q_\theta`, every expected gradient here is
:math:`\sum_x m_x (e_x - q) = m - (\sum_x m_x)\,q` for per-token masses :math:`m_x`
(:func:`mean_gradient`). The divergences KL(q‖p) = KL[q, p] and KL(p‖q) = KL[p, q] and their gradients are
sums of non-negative terms with log r from the logit differences (:class:`klviz.CategoricalPair`), so
nothing cancels when the policies are close. :func:`coefficients` gives, for any :class:`~klviz.Estimator`,
the per-token factor :math:`w\,(s\,k(L) - d\,k'(L))` of a use with score switch s and pathwise switch d.
"""

from __future__ import annotations

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax
from klviz.estimators import Estimator, ExpPolynomial
from klviz.pairs import CategoricalPair

__all__ = ["kl_qp", "kl_pq", "kl_qp_gradient", "kl_pq_gradient", "expected_k2_gradient", "coefficients",
           "mean_gradient", "policy_pair", "finite_logits", "log_probs", "positive_int"]

def finite_logits(logits, name: str) -> np.ndarray:
    """A finite 1-D float64 array of logits, or a TypeError/ValueError naming ``name``."""
    # A differentiable policy needs every token in its support, and the reference must cover the
    # policy's support for KL(q||p) to be finite: no -inf logits here.
    return _checks.logits(logits, name, zero_probability=False)


def log_probs(logits, name: str) -> np.ndarray:
    """Stable log-softmax of finite 1-D logits (validated as in :func:`finite_logits`)."""
    return log_softmax(finite_logits(logits, name))


def policy_pair(logits, ref_logits) -> CategoricalPair:
    """q = softmax(logits) and p = softmax(ref_logits) as a CategoricalPair, after this module's checks.

    Its ``log_ratio_table`` is log r = log p - log q to full precision also when q ≈ p.
    """
    q_logits = finite_logits(logits, "logits")
    p_logits = finite_logits(ref_logits, "ref_logits")
    if p_logits.shape != q_logits.shape:
        raise ValueError(
            f"logits and ref_logits must have the same length, got {q_logits.size} and {p_logits.size}"
        )
    return CategoricalPair(p_logits=p_logits, q_logits=q_logits)


def positive_int(value, name: str) -> int:
    return _checks.integer(value, name, 1)


def kl_qp(logits, ref_logits) -> float:
    r"""The exact reverse (mode-seeking) divergence :math:`\mathrm{KL}(q_\theta\|p) = \sum_x q(\log q - \log p)`.

    Summed as :math:`\sum_x q\,k_3(\log r)` (:meth:`klviz.CategoricalPair.kl`): non-negative terms, with
    log r from the logit differences, so the relative precision is ~1e-16 also when q ≈ p (the plain
    sum of :math:`q(\log q - \log p)` cancels: its error is ~1e-16·|log q| on a KL of order δ²).

    Parameters
    ----------
    logits : array_like, shape (V,)
        Logits θ of the policy :math:`q_\theta = \mathrm{softmax}(\theta)`; finite.
    ref_logits : array_like, shape (V,)
        Logits (or log-probabilities) of the reference p; finite.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If an argument is not real-valued.
    ValueError
        If an argument is not a finite 1-D array, or the lengths differ.

    Examples
    --------
    >>> round(kl_qp([0.0, 0.0], [0.0, 1.0]), 6)
    0.120115
    """
    return policy_pair(logits, ref_logits).kl_qp()


def kl_pq(logits, ref_logits) -> float:
    r"""The exact forward (mass-covering) divergence :math:`\mathrm{KL}(p\|q_\theta) = \sum_x p(\log p - \log q)`.

    Summed as :math:`\sum_x p\,k_3(\log q - \log p)` (:meth:`klviz.CategoricalPair.kl_pq`), to full
    relative precision. Parameters and errors as in :func:`kl_qp`.

    Examples
    --------
    >>> round(kl_pq([0.0, 0.0], [0.0, 1.0]), 6)
    0.110944
    """
    return policy_pair(logits, ref_logits).kl_pq()


def kl_qp_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathrm{KL}(q_\theta\|p)`.

    .. math:: \nabla_\theta \mathrm{KL}(q_\theta\|p) = \mathbb{E}_q[-\log r\; g]
              = q \odot \big(\log q - \log p - \mathrm{KL}(q_\theta\|p)\big).

    Parameters and errors as in :func:`kl_qp`.

    Returns
    -------
    ndarray, shape (V,)
        Sums to zero (a softmax gradient is orthogonal to shifting all logits).

    Examples
    --------
    >>> kl_qp_gradient([0.0, 0.0], [0.0, 0.0])
    array([0., 0.])
    """
    pair = policy_pair(logits, ref_logits)
    q = np.exp(pair.log_q)
    log_ratio = pair.log_ratio_table
    # Centring by the plain mean (not by kl()) cancels any constant offset in the log-ratios exactly.
    return q * (np.sum(q * log_ratio) - log_ratio)


def kl_pq_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathrm{KL}(p\|q_\theta)`: :math:`-\mathbb{E}_p[g] = q - p`.

    Parameters and errors as in :func:`kl_qp`.

    Examples
    --------
    >>> kl_pq_gradient([0.0, 0.0], [0.0, 0.0])
    array([0., 0.])
    """
    pair = policy_pair(logits, ref_logits)
    return np.exp(pair.log_q) - np.exp(pair.log_p)


def expected_k2_gradient(logits, ref_logits) -> np.ndarray:
    r"""The exact gradient in θ of :math:`\mathbb{E}_q[k_2] = \sum_x q_\theta(x)\,\tfrac12 L(x)^2`.

    With :math:`\nabla q = q\,g` and :math:`\nabla L = -g`,
    :math:`\nabla \sum_x q\,\tfrac12 L^2 = \mathbb{E}_q[(\tfrac12 L^2 - L)\,g]`, and for any f,
    :math:`\mathbb{E}_q[f\,g] = q \odot (f - \mathbb{E}_q[f])`:

    .. math:: \nabla_\theta \mathbb{E}_q[k_2] = q \odot \big(f(L) - \mathbb{E}_q[f(L)]\big),
              \qquad f = k_2 + k_1 = \tfrac12 L^2 - L .

    (The same form with f = -L is :func:`kl_qp_gradient`.) It is the expected gradient of ``ρ·k2``
    with a differentiable ratio. Parameters and errors as in :func:`kl_qp`.

    Returns
    -------
    ndarray, shape (V,)
        Sums to zero.

    Examples
    --------
    q uniform on two tokens, p = softmax(0, 1): f = (0.8124, -0.3077), so the gradient is ±0.28.

    >>> np.round(expected_k2_gradient([0.0, 0.0], [0.0, 1.0]), 6)
    array([ 0.280029, -0.280029])
    """
    pair = policy_pair(logits, ref_logits)
    q = np.exp(pair.log_q)
    log_ratio = pair.log_ratio_table
    f = log_ratio * (0.5 * log_ratio - 1.0)
    # Centring by the plain mean (not by E_q[k2] + KL) keeps Σ = 0 to rounding.
    return q * (f - np.sum(q * f))


def mean_gradient(q: np.ndarray, weighted: np.ndarray, log_scale: float = 0.0) -> np.ndarray:
    """Σ_x m_x (e_x - q) = m - (Σ m) q, for per-token masses m = e^log_scale · weighted.

    A scale beyond float64 gives ±inf where the exact result is non-zero (never 0·inf = NaN).
    """
    bracket = weighted - np.sum(weighted) * q
    if log_scale == 0.0:
        return bracket
    with np.errstate(over="ignore"):
        return np.where(bracket == 0.0, 0.0, bracket * np.exp(log_scale))


def coefficients(estimator: Estimator, log_weight: np.ndarray, log_ratio: np.ndarray, score: bool,
                 pathwise: bool) -> np.ndarray:
    r"""Per-token :math:`w\,(s\,k(L) - d\,k'(L))` with :math:`w = e^{\log w}`, for any estimator, without inf·0.

    With an exact form (every built-in), the combination :math:`s\,k - d\,k'` is formed symbolically first,
    so terms that cancel exactly do (k3 with both terms: :math:`k_3 - k_3' = -L`), and where a float
    product :math:`w\,e^{tL}` would be 0·inf (w tiny, L huge) each term is taken as :math:`e^{\log w + tL}`.
    Without one, the estimator's own ``value`` and ``derivative`` are combined, and a weight that underflows
    to 0 contributes 0.

    Parameters
    ----------
    estimator : Estimator
    log_weight, log_ratio : ndarray
        Per token (broadcast).
    score, pathwise : bool
        s and d.

    Returns
    -------
    ndarray
    """
    s, d = float(score), float(pathwise)
    log_weight, log_ratio = np.broadcast_arrays(np.asarray(log_weight, dtype=np.float64),
                                                np.asarray(log_ratio, dtype=np.float64))
    weight = np.exp(log_weight)
    form = None
    if estimator.expansion is not None and (not pathwise or estimator.derivative_expansion is not None):
        form = estimator.expansion.scaled(s) if score else ExpPolynomial({})
        if pathwise:
            form = form - estimator.derivative_expansion.scaled(d)
    if form is not None and all(t == 0 for t, _ in form.coefficients):
        # A polynomial in L: exact, and nothing to overflow (k1, k2, k3 with both terms, k_λ with both).
        return weight * _polynomial(form, log_ratio)
    with np.errstate(all="ignore"):
        combined = np.zeros(log_ratio.shape)
        if score:
            combined = combined + s * np.asarray(estimator.value(log_ratio), dtype=np.float64)
        if pathwise:
            combined = combined - d * np.asarray(estimator.derivative(log_ratio), dtype=np.float64)
        out = weight * combined
    bad = ~np.isfinite(out) | ((weight < 1e-290) & (combined != 0))
    if np.any(bad):
        if form is None:
            out[bad & (weight == 0)] = 0.0
        else:
            out[bad] = _termwise(form, log_weight[bad], log_ratio[bad])
    return out


def _polynomial(form: ExpPolynomial, log_ratio: np.ndarray) -> np.ndarray:
    total = np.zeros(log_ratio.shape)
    for (_, j), c in form.coefficients.items():
        total = total + c * (log_ratio**j if j else 1.0)
    return total


def _termwise(form: ExpPolynomial, log_weight: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """Σ c e^{log w + tL} L^j, each weight-times-exponential in log space."""
    total = np.zeros(log_ratio.shape)
    with np.errstate(all="ignore"):
        for (t, j), c in form.coefficients.items():
            scale = np.exp(log_weight + t * log_ratio)
            total = total + c * np.where(scale == 0, 0.0, scale * (log_ratio**j if j else 1.0))
    return total
