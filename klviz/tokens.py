r"""Token distributions: softmax policies over a vocabulary, and what low precision does to their KL.

In RLHF the KL penalty is estimated per token from log-probabilities the models return, often in
float32 or bfloat16. Two separate things can go wrong:

* the *formula*: :math:`k_3 = e^x - 1 - x` written naively cancels when :math:`|x| \ll 1`, i.e. for close
  policies (:func:`naive_k3` evaluates it that way, in the input's precision, to show it);
  :func:`klviz.k3` is accurate to a few ulp there;
* the *inputs*: once :math:`\log p` and :math:`\log q` are rounded (:func:`round_to_precision`), their
  difference carries a rounding error of the order of the spacing of floats near :math:`|\log p|`,
  which no formula can undo.

:func:`perturbed_policy_pair` makes a pair of softmax policies over V tokens a controlled distance
apart.
"""

from __future__ import annotations


import numpy as np

from klviz import _checks
from klviz.pairs import CategoricalPair

__all__ = ["PRECISIONS", "round_to_bfloat16", "round_to_precision", "naive_k3", "perturbed_policy_pair"]

#: Precisions known to :func:`round_to_precision`, with their significand bits (implicit bit included).
PRECISIONS = {"float64": 53, "float32": 24, "bfloat16": 8, "float16": 11}


def round_to_bfloat16(x) -> np.ndarray:
    r"""Round to the nearest bfloat16 value (ties to even), returned as float32.

    bfloat16 is the top half of a float32: the same sign bit and 8-bit exponent (so the same range)
    but 7 stored significand bits instead of 23, i.e. 8 significant bits and a relative spacing of
    :math:`2^{-7}`. Rounding a float32 to it is a bit operation on its 32-bit pattern u:

    .. math:: u' = \big(u + \mathtt{0x7FFF} + \lfloor u / 2^{16} \rfloor \bmod 2\big)
              \;\&\; \mathtt{0xFFFF0000},

    adding just under half of the dropped range, plus one more when the kept part is odd, so
    exact halves round to an even last kept bit (IEEE round-half-to-even); a carry propagates into the
    exponent as it should, and values beyond bfloat16's largest finite number become ±inf. NaN stays
    NaN. Input is first rounded to float32 (as a model computing in float32 would), so float64
    input is rounded twice; that double rounding can differ from a direct float64 -> bfloat16
    rounding only for values within 2^-24 relative of a halfway point.

    Parameters
    ----------
    x : float or array_like
        Real numbers.

    Returns
    -------
    ndarray of float32
        Same shape as ``x``; every value representable in bfloat16.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued.

    Examples
    --------
    >>> import numpy as np
    >>> round_to_bfloat16(np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -10.3]))
    array([  1.      ,   1.      ,   1.015625, -10.3125  ], dtype=float32)
    """
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"x must be real-valued, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        single = np.array(arr, dtype=np.float32, ndmin=1)
    bits = single.view(np.uint32)
    lowest_kept_bit = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = ((bits + np.uint32(0x7FFF) + lowest_kept_bit) & np.uint32(0xFFFF0000)).view(np.float32)
    # A NaN's payload could carry into the sign or vanish: keep NaN as NaN explicitly.
    rounded = np.where(np.isnan(single), np.float32(np.nan), rounded)
    return rounded.reshape(np.shape(arr))


def round_to_precision(x, precision: str) -> np.ndarray:
    r"""Round real numbers to float64, float32, bfloat16 or float16 and return them as float64.

    The float64 result holds exactly the rounded values, so arithmetic done on it afterwards shows
    the effect of the rounding alone. The spacing of the rounded values near x is about
    :math:`|x|\,2^{1-b}` with b the significand bits in :data:`PRECISIONS`: for a log-probability near
    -10 that is 1e-15 (float64), 1e-6 (float32), 0.008 (float16) and 0.06 (bfloat16).

    Parameters
    ----------
    x : float or array_like
        Real numbers (±inf pass through).
    precision : {"float64", "float32", "bfloat16", "float16"}

    Returns
    -------
    ndarray of float64

    Raises
    ------
    TypeError
        If ``x`` is not real-valued or ``precision`` is not a string.
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.

    Examples
    --------
    >>> round_to_precision([-10.3], "bfloat16")
    array([-10.3125])
    >>> round_to_precision([-10.3], "float16")
    array([-10.296875])
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string, one of {list(PRECISIONS)}, got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"x must be real-valued, got dtype {arr.dtype}")
    if precision == "bfloat16":
        return round_to_bfloat16(arr).astype(np.float64)
    with np.errstate(over="ignore"):
        return arr.astype(precision).astype(np.float64)


def naive_k3(logr) -> np.ndarray:
    r""":math:`k_3 = e^x - 1 - x` written the naive way, evaluated in the precision of its input.

    This is the formula as commonly written (``torch.exp(x) - 1 - x``, in the tensor's dtype), kept
    for comparison with the accurate :func:`klviz.k3`. For :math:`|x| \ll 1` the true value is about
    :math:`x^2/2`, but :math:`e^x` is rounded to the spacing :math:`\epsilon` of floats near 1
    (:math:`2^{-23}` in float32), so the result is off by up to :math:`\epsilon`: relative error
    :math:`\sim 2\epsilon/x^2`, and it can even be negative. In float32 this ruins k3 for
    :math:`|x| \lesssim 10^{-3}` — log-ratios of close policies.

    Parameters
    ----------
    logr : float or array_like
        Log-ratios, float16, float32 or float64 (other real input is computed in float64).

    Returns
    -------
    ndarray
        Same shape, same floating dtype as ``logr``.

    Raises
    ------
    TypeError
        If ``logr`` is not real-valued.

    Examples
    --------
    >>> import numpy as np
    >>> from klviz import k3
    >>> x = np.float32(1e-4)
    >>> f"{naive_k3(x):.4e} vs {k3(x):.4e}"   # the true value is 5.0002e-09
    '1.6596e-08 vs 5.0002e-09'
    """
    arr = np.asarray(logr)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"logr must be real-valued, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    one = arr.dtype.type(1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(arr) - one - arr


def perturbed_policy_pair(vocab_size: int, perturbation: float, *, logit_scale: float = 2.0,
                          rng=None) -> CategoricalPair:
    r"""Two softmax policies over ``vocab_size`` tokens, p's logits a Gaussian perturbation of q's.

    .. math:: z^q_i \sim N(0, \sigma^2),\qquad z^p_i = z^q_i + \delta\,\varepsilon_i,\
              \varepsilon_i \sim N(0, 1),

    with :math:`\sigma` = ``logit_scale`` and :math:`\delta` = ``perturbation``. For small δ,
    :math:`\mathrm{KL}[q, p] \approx \tfrac12 \mathrm{Var}_q(\delta\varepsilon) \approx \delta^2/2`
    (less the collision probability :math:`\sum_i q_i^2`), whatever V is, so δ sets the gap.

    Parameters
    ----------
    vocab_size : int
        V >= 1.
    perturbation : float
        δ >= 0.
    logit_scale : float, default 2.0
        Spread of q's logits: larger is more peaked.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    CategoricalPair

    Raises
    ------
    TypeError, ValueError
        For a non-integer or non-positive ``vocab_size``, or a negative or non-finite scale.

    Examples
    --------
    >>> pair = perturbed_policy_pair(50_000, 0.01, rng=0)
    >>> pair.vocab_size, round(pair.kl() / (0.01**2 / 2), 2)   # about 1
    (50000, 1.05)
    """
    vocab_size = _checks.integer(vocab_size, "vocab_size", 1)
    perturbation = _checks.non_negative(perturbation, "perturbation")
    logit_scale = _checks.non_negative(logit_scale, "logit_scale")
    rng = np.random.default_rng(rng)
    q_logits = logit_scale * rng.standard_normal(vocab_size)
    p_logits = q_logits + perturbation * rng.standard_normal(vocab_size)
    return CategoricalPair(p_logits=p_logits, q_logits=q_logits)
