"""Validation at the public boundary, shared by every module: one wording for one kind of mistake.

Each check returns the cleaned value or raises a ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) whose message starts with the argument's name.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def real(value, name: str) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive(value, name: str) -> float:
    value = real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def non_negative(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and non-negative, got {value}")
    return value


def integer(value, name: str, minimum: int | None = None) -> int:
    """An integer (not a bool), at least ``minimum`` (a minimum of 0 is spelled "non-negative")."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        bound = "non-negative" if minimum == 0 else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def logits(values, name: str, *, zero_probability: bool) -> np.ndarray:
    """A non-empty 1-D float64 array of logits. With ``zero_probability``, -inf (a token with
    probability 0) is allowed as long as some token is finite; NaN and +inf never are."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one logit per token), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not zero_probability:
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite (every token with positive probability); got NaN or ±inf")
        return arr
    if np.isnan(arr).any() or (arr == np.inf).any():
        raise ValueError(f"{name} must be finite or -inf (a token with probability 0); got NaN or +inf")
    if (arr == -np.inf).all():
        raise ValueError(f"{name} must give some token a positive probability; all logits are -inf")
    return arr


#: The largest sample size klviz accepts: counts are int64 inside numpy.
MAX_SAMPLES = 2**63 - 1


def sample_size(value, name: str = "n", minimum: int = 1) -> int:
    """A number of samples: an integer (not a bool) from ``minimum`` up to 2^63 - 1."""
    value = integer(value, name, minimum)
    if value > MAX_SAMPLES:
        raise ValueError(f"{name} must be at most 2**63 - 1 (a count numpy can hold), got {value:.3g}")
    return value


def rng(value, name: str = "rng"):
    """SPEC 7: None, an int seed (non-negative), a SeedSequence or a numpy.random.Generator -> a Generator."""
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be None, an int seed or a numpy.random.Generator, "
                        f"got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative seed, got {value}")
    return np.random.default_rng(int(value))


def choice(value, name: str, options) -> str:
    """One of the strings in ``options``."""
    options = list(options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {options}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def pair(value, name: str = "pair"):
    """A :class:`klviz.Pair`."""
    from klviz.pairs import Pair

    if not isinstance(value, Pair):
        raise TypeError(f"{name} must be a klviz pair (GaussianPair, ScipyPair, CategoricalPair or "
                        f"MarkovChainPair), got {type(value).__name__}")
    return value


def real_array(values, name: str) -> np.ndarray:
    """A float64 array of real numbers (no NaN; ±inf allowed)."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    return arr
