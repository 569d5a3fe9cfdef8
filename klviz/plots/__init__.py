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
# Notebooks 04-07 (breaking, tokens, gradients, explorer).
from klviz.plots.breaking import batch_rmse, plain_log_ticks, running_estimate, width_sweep
from klviz.plots.gradients import (
    ESTIMATOR_STYLES,
    FORWARD_COLOR,
    USE_STYLES,
    gradient_bars,
    path_traces,
    policy_fits,
    policy_paths,
    variance_sweep,
)
from klviz.plots.tokens import (
    SEQUENCE_STYLES,
    curves_against_kl,
    log_ratio_histogram,
    relative_spread,
    sequence_biases,
    sequence_variances,
)

_LECTURES_04_07 = ["plain_log_ticks", "width_sweep", "running_estimate", "batch_rmse",
                   "SEQUENCE_STYLES", "relative_spread", "log_ratio_histogram", "curves_against_kl",
                   "sequence_variances", "sequence_biases",
                   "FORWARD_COLOR", "USE_STYLES", "ESTIMATOR_STYLES", "gradient_bars", "variance_sweep", "policy_fits",
                   "policy_paths", "path_traces"]

__all__ = ["PALETTE", "EXTRA_COLORS", "TRUE_KL_COLOR", "STYLE", "use_style", "axes", "estimator_color",
           "estimator_label", "histogram_estimators", "mark_value", "control_variate_curve", "tangent_gap"]

# Figures of notebooks 01-03 (one block, so that other topics' lines merge beside it).
from klviz.plots.control_variates import k_lambda_family, optimal_lambda_curve, variance_ratio_curve
from klviz.plots.fdiv import generator_color, tangent_parabola, taylor_error_coefficients
from klviz.plots.monte_carlo import error_against_samples, histogram_with_negatives

__all__ += ["histogram_with_negatives", "error_against_samples", "generator_color", "tangent_parabola",
            "taylor_error_coefficients", "k_lambda_family", "optimal_lambda_curve", "variance_ratio_curve"]
__all__ += _LECTURES_04_07
# Figures of notebook 09 (one block).
from klviz.plots.trainers import precision_error_curves, recipe_color, recipe_value_curves

__all__ += ["recipe_color", "recipe_value_curves", "precision_error_curves"]
