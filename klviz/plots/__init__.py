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

__all__ = ["PALETTE", "EXTRA_COLORS", "TRUE_KL_COLOR", "STYLE", "use_style", "axes", "estimator_color",
           "estimator_label", "histogram_estimators", "mark_value", "control_variate_curve", "tangent_gap"]

# Figures of notebooks 01-03 (one block, so that other topics' lines merge beside it).
from klviz.plots.control_variates import k_lambda_family, optimal_lambda_curve, variance_ratio_curve
from klviz.plots.fdiv import generator_color, tangent_parabola, taylor_error_coefficients
from klviz.plots.monte_carlo import error_against_samples, histogram_with_negatives

__all__ += ["histogram_with_negatives", "error_against_samples", "generator_color", "tangent_parabola",
            "taylor_error_coefficients", "k_lambda_family", "optimal_lambda_curve", "variance_ratio_curve"]
