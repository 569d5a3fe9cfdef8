"""Plotting for the collection: one palette and style (:mod:`klviz.plots.core`), and one module of figure
functions per topic (``ax=None``, draw onto it, return the Axes; never ``plt.show()``). matplotlib is imported
inside the functions, so ``import klviz`` stays light."""

from klviz.plots.control_variates import control_variate_curve, tangent_gap
from klviz.plots.core import (
    EXTRA_COLORS,
    PALETTE,
    STYLE,
    TRUE_KL_COLOR,
    axes,
    estimator_color,
    estimator_label,
    histogram_estimators,
    mark_value,
    use_style,
)
# notebook 09
from klviz.plots.trainers import precision_error_curves, recipe_color, recipe_value_curves

__all__ = ["PALETTE", "EXTRA_COLORS", "TRUE_KL_COLOR", "STYLE", "use_style", "axes", "estimator_color",
           "estimator_label", "histogram_estimators", "mark_value", "control_variate_curve", "tangent_gap",
           # notebook 09
           "recipe_color", "recipe_value_curves", "precision_error_curves"]
