r"""The pair protocol: a sampling distribution q, a target p, and the hooks through which klviz computes exactly.

Every pair answers, in log space throughout:

* ``sample(n, *, rng=None)`` — n draws x ~ q;
* ``log_ratio(x)`` — :math:`\log r(x) = \log p(x) - \log q(x)`;
* ``sample_log_ratio(n, *, rng=None)`` — log-ratios at n draws (pairs override it where a closed form is
  cheaper than sampling x and evaluating two densities);
* ``kl_qp()`` and ``kl_pq()`` — the exact :math:`\mathrm{KL}[q, p] = \mathbb{E}_q[\log q/p]` (what k1, k2, k3
  estimate) and :math:`\mathrm{KL}[p, q]`;
* ``swapped()`` — the same two distributions with the roles exchanged.

Exact computation follows scipy.stats' pattern (a public function validates, then calls the object's
private hook): :func:`klviz.exact_moments` and friends call

* ``_mean(estimator)`` — :math:`\mathbb{E}_q[k(\log r)]`;
* ``_covariance(a, b)`` — :math:`\mathrm{Cov}_q[a(\log r), b(\log r)]`;
* ``_bias(estimator)`` — :math:`\mathbb{E}_q[k] - \text{target}`, without the cancellation of the
  subtraction where a pair can do better (default: the subtraction);
* ``_log10_variance(estimator)`` — :math:`\log_{10}\mathrm{Var}_q[k]` where the variance is finite but
  beyond float64 (default: from ``_covariance``);
* ``_f_divergence(numerics)`` — :math:`\mathbb{E}_q[f(r)]` for :mod:`klviz.fdiv`'s generator numerics,

each implemented by the pair with its own method: closed forms (Gaussian), quadrature (scipy), sums
(categorical), dynamic programmes (Markov chains). A new kind of pair subclasses :class:`Pair` and
implements these; nothing else in klviz changes.
"""

from __future__ import annotations

import math

import numpy as np

from klviz import _checks
from klviz.estimators import CONTROL_VARIATE, ESTIMATORS, Estimator

__all__ = ["Pair"]


class Pair:
    """Base class: a sampling distribution q and a target p (see the module docstring for the protocol)."""

    # --- the public protocol ---------------------------------------------------------------------------
    def sample(self, n: int, *, rng=None) -> np.ndarray:  # pragma: no cover - abstract
        """n draws x ~ q."""
        raise NotImplementedError

    def log_ratio(self, x) -> np.ndarray:  # pragma: no cover - abstract
        r""":math:`\log p(x) - \log q(x)` at points of q's support."""
        raise NotImplementedError

    def sample_log_ratio(self, n: int, *, rng=None) -> np.ndarray:
        """``log_ratio(sample(n, rng=rng))``: n log-ratios at draws x ~ q."""
        return self.log_ratio(self.sample(n, rng=rng))

    def simulation_batch(self, chunk_size: int) -> int:
        """How many samples :func:`klviz.simulate` draws at once for a chunk of ``chunk_size``: all of them,
        except where one sample is itself large (a sequence of T tokens)."""
        return chunk_size

    def kl_qp(self) -> float:  # pragma: no cover - abstract
        r"""The exact :math:`\mathrm{KL}[q, p] = \mathbb{E}_q[\log q/p]`; ``inf`` when it diverges."""
        raise NotImplementedError

    def kl_pq(self) -> float:
        r"""The exact :math:`\mathrm{KL}[p, q] = \mathbb{E}_p[\log p/q]`; ``inf`` when it diverges."""
        return self.swapped().kl_qp()

    def swapped(self) -> "Pair":  # pragma: no cover - abstract
        """The same two distributions with the roles of p and q exchanged."""
        raise NotImplementedError

    # --- hooks for klviz.exact and klviz.fdiv -------------------------------------------------------------
    def _target(self, estimator: Estimator) -> float:
        return self.kl_qp() if estimator.target == "kl_qp" else self.kl_pq()

    def _mean(self, estimator: Estimator):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no exact moments")

    def _covariance(self, a: Estimator, b: Estimator):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no exact moments")

    def _bias(self, estimator: Estimator):
        mean = self._mean(estimator)
        target = self._target(estimator)
        if math.isinf(float(mean)) or math.isinf(float(target)):
            return math.nan if float(mean) == float(target) else float(mean) - float(target)
        return mean - target

    def _log10_variance(self, estimator: Estimator) -> float:
        var = float(self._covariance(estimator, estimator))
        return math.log10(var) if var > 0 else -math.inf

    def _mean_r_minus_1(self) -> float:
        r""":math:`\mathbb{E}_q[r - 1] = -P_p(q = 0)`: 0 unless p has mass where q has none."""
        return float(self._mean(CONTROL_VARIATE))

    def _f_divergence(self, numerics) -> float:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no exact f-divergences")


def sample_size(n) -> int:
    return _checks.sample_size(n, "n", 0)


def reference_estimator(target: str) -> Estimator:
    """The non-negative unbiased estimator of a target (k3 for KL[q, p], k3_pq for KL[p, q]): biases are
    taken as expectations of differences from it, which cancel far less than mean - target."""
    return ESTIMATORS["k3"] if target == "kl_qp" else ESTIMATORS["k3_pq"]
