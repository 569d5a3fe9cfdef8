"""Figures of notebook 09: what each trainer's KL setting computes per token, and how its arithmetic rounds.

Every function takes ``ax=None``, draws onto it (or the current Axes), passes ``**kwargs`` to the lines and
returns the Axes. A recipe's colour is its base estimator's palette colour (k1, k2, k3; |log r| grey), so
settings that compute the same thing look alike; line styles tell recipes of one colour apart.
"""

from __future__ import annotations

import numpy as np

from klviz.plots.core import PALETTE, TRUE_KL_COLOR, _axes

__all__ = ["ABS_COLOR", "recipe_base", "recipe_color", "recipe_value_curves", "precision_error_curves"]

#: |log r| is no estimator of the palette: grey.
ABS_COLOR = "#999999"
_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
_PROBE = np.array([-0.5, 0.3])  # log-ratios where no recipe's clamp binds


def recipe_base(recipe) -> str:
    """The estimator a recipe's value is built on, from its values where no clamp binds: k1, k2, k3 or abs.

    Examples
    --------
    >>> recipe_base("verl:low_var_kl-loss"), recipe_base("verl:abs-loss")
    ('k3', 'abs')
    """
    from klviz.trainers import get_trainer_recipe

    value = np.asarray(get_trainer_recipe(recipe).estimator.value(_PROBE), dtype=np.float64)
    candidates = {"k1": -_PROBE, "k2": 0.5 * _PROBE**2, "k3": np.expm1(_PROBE) - _PROBE, "abs": np.abs(_PROBE)}
    for name, reference in candidates.items():
        if np.allclose(value, reference, rtol=1e-12, atol=1e-15):
            return name
    raise ValueError(f"recipe {get_trainer_recipe(recipe).name!r} is none of k1, k2, k3, |log r| where no clamp binds")


def recipe_color(recipe) -> str:
    """The palette colour of a recipe's base estimator (:func:`recipe_base`).

    Examples
    --------
    >>> recipe_color("trl:grpo-k3") == PALETTE["k3"]
    True
    """
    base = recipe_base(recipe)
    return ABS_COLOR if base == "abs" else PALETTE[base]


def _styled(recipes):
    """(name, colour, line style) per recipe: styles cycle within each colour."""
    from klviz.trainers import get_trainer_recipe

    seen: dict[str, int] = {}
    out = []
    for recipe in recipes:
        name, colour = get_trainer_recipe(recipe).name, recipe_color(recipe)
        index = seen.get(colour, 0)
        seen[colour] = index + 1
        out.append((name, colour, _STYLES[index % len(_STYLES)]))
    return out


def recipe_value_curves(recipes, log_ratio=None, *, ax=None, true_zero: bool = True, **kwargs):
    r"""Each recipe's per-token value :math:`k(\log r)` against :math:`\log r = \log p - \log q`, clamps included.

    Parameters
    ----------
    recipes : sequence of str or TrainerRecipe
    log_ratio : array_like, optional
        The grid; default 801 points on [-14, 4] (k3's clamp at 10 binds below -11.0 and above 2.61).
    ax : matplotlib Axes, optional
    true_zero : bool
        Draw the zero line.
    **kwargs
        Passed to ``Axes.plot``.

    Returns
    -------
    matplotlib Axes
        One line per recipe (``get_gid()`` its name), in the order given.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = recipe_value_curves(["verl:low_var_kl-loss"], [-12.0, 0.0, 3.0], ax=ax)
    >>> [float(v) for v in ax.lines[0].get_ydata()]
    [10.0, 0.0, 10.0]
    """
    from klviz.trainers import get_trainer_recipe

    L = np.linspace(-14.0, 4.0, 801) if log_ratio is None else np.asarray(log_ratio, dtype=np.float64)
    if L.ndim != 1 or L.size < 2:
        raise ValueError(f"log_ratio must be a one-dimensional grid of at least two values, got shape {L.shape}")
    ax = _axes(ax)
    kwargs.setdefault("linewidth", 1.8)
    for name, colour, style in _styled(recipes):
        value = np.asarray(get_trainer_recipe(name).estimator.value(L), dtype=np.float64)
        (line,) = ax.plot(L, value, color=colour, linestyle=style, label=name, **kwargs)
        line.set_gid(name)
    if true_zero:
        ax.axhline(0.0, color=TRUE_KL_COLOR, linewidth=0.8)
    ax.set_xlabel("log r = log p − log q")
    ax.set_ylabel("per-token value")
    return ax


def precision_error_curves(recipes, precision: str = "float32", magnitudes=None, *, sign: float = 1.0,
                           floor: float = 1e-9, ax=None, **kwargs):
    r"""Relative error of each recipe's value as its code computes it in ``precision``, against :math:`|\log r|`.

    The tokens have :math:`\log q = -|\log r|`, :math:`\log p = 0` (``sign`` +1) or :math:`\log q = 0`,
    :math:`\log p = -|\log r|` (``sign`` −1): a confident token, whose log-probabilities hold :math:`\log r` to full
    precision, so the error is the formula's (:func:`klviz.trainers.recipe_in_precision`). Errors below ``floor``
    (exact results included) are drawn at ``floor``.

    Parameters
    ----------
    recipes : sequence of str or TrainerRecipe
    precision : {"float32", "bfloat16", "float16"}
    magnitudes : array_like, optional
        :math:`|\log r|`; default 61 points from 1e-6 to 10, log-spaced.
    sign : {1, -1}
    floor : float
    ax : matplotlib Axes, optional
    **kwargs
        Passed to ``Axes.plot``.

    Returns
    -------
    matplotlib Axes
        Log-log; one line per recipe (``get_gid()`` its name), and a dotted line at ``floor``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = precision_error_curves(["trl:grpo-k3"], "float32", [1e-4, 1.0], ax=ax)
    >>> float(ax.lines[0].get_ydata()[0])     # (e^L - L) - 1 rounds to 0 at log r = 1e-4: all of it lost
    1.0
    """
    from klviz.trainers.floating import recipe_in_precision

    if sign not in (1, -1, 1.0, -1.0):
        raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    magnitude = np.geomspace(1e-6, 10.0, 61) if magnitudes is None else np.asarray(magnitudes, dtype=np.float64)
    if magnitude.ndim != 1 or np.any(magnitude <= 0) or not np.isfinite(magnitude).all():
        raise ValueError("magnitudes must be a one-dimensional array of positive finite values")
    if sign > 0:
        logp, ref = -magnitude, np.zeros_like(magnitude)
    else:
        logp, ref = np.zeros_like(magnitude), -magnitude
    ax = _axes(ax)
    kwargs.setdefault("linewidth", 1.8)
    for name, colour, style in _styled(recipes):
        error = recipe_in_precision(name, logp, ref, precision).value_error
        (line,) = ax.plot(magnitude, np.maximum(error, floor), color=colour, linestyle=style, label=name, **kwargs)
        line.set_gid(name)
    ax.axhline(floor, color=TRUE_KL_COLOR, linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|log r|" + (" (log r > 0)" if sign > 0 else " (log r < 0)"))
    ax.set_ylabel(f"relative error in {precision}")
    return ax
