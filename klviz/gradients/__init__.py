"""Gradients of KL penalties for softmax policies: what each estimator's gradient optimises, exactly.

* :mod:`klviz.gradients.softmax` — one token: KL(q‖p), KL(p‖q) and their gradients, per-token coefficients;
* :mod:`klviz.gradients.uses` — the uses (loss, reward, ratios, no ratio), exact expected gradients,
  per-sample gradients, their moments and Monte Carlo averages, and the objective each use follows;
* :mod:`klviz.gradients.gaussian_policy` — the discretised-Gaussian policy that notebook 07 trains;
* :mod:`klviz.gradients.sequences` — the same questions over whole sequences of a Markov-chain policy
  (per-token and sequence-level uses, off-policy ratios, GRPO's length normalisation, the full-vocabulary step
  KL), by dynamic programming.
"""

from klviz.gradients.gaussian_policy import PolicyPath, discretised_gaussian_logits, fit_gaussian_policy, gaussian_policy_kls
from klviz.gradients.sequences import (
    NORMALISATIONS,
    RATIOS,
    SEQUENCE_USES,
    STEP_KL_USES,
    CoefficientCheck,
    MonteCarloSequenceGradient,
    SequenceGradient,
    SequenceGradientMoments,
    SequenceUse,
    sequence_expected_gradient,
    sequence_gradient_moments,
    sequence_kl_gradient,
    sequence_monte_carlo_gradient,
    check_sequence_coefficients,
    sequence_partial_kl_gradient,
    sequence_per_sample_gradients,
    sequence_projections,
    sequence_reward_gradient,
    sequence_step_kl_gradient,
    sequence_step_kl_moments,
    sequence_step_kl_monte_carlo,
    sequence_step_kl_per_sample_gradients,
)
from klviz.gradients.softmax import expected_k2_gradient, kl_pq, kl_pq_gradient, kl_qp, kl_qp_gradient
from klviz.gradients.uses import (
    FOLLOWED,
    USES,
    GradientMoments,
    GradientUse,
    MonteCarloGradient,
    expected_gradient,
    followed_gradient,
    followed_label,
    followed_objective,
    get_use,
    gradient_moments,
    monte_carlo_gradient,
    per_sample_gradient,
)

__all__ = [
    "GradientUse", "USES", "FOLLOWED", "get_use", "GradientMoments", "MonteCarloGradient", "PolicyPath",
    "kl_qp", "kl_pq", "kl_qp_gradient", "kl_pq_gradient", "expected_k2_gradient",
    "followed_objective", "followed_gradient", "followed_label",
    "expected_gradient", "per_sample_gradient", "gradient_moments", "monte_carlo_gradient",
    "discretised_gaussian_logits", "gaussian_policy_kls", "fit_gaussian_policy",
    "SEQUENCE_USES", "RATIOS", "NORMALISATIONS", "SequenceUse", "SequenceGradient", "SequenceGradientMoments",
    "MonteCarloSequenceGradient", "sequence_kl_gradient", "sequence_expected_gradient", "sequence_gradient_moments",
    "sequence_per_sample_gradients", "sequence_monte_carlo_gradient",
    "sequence_reward_gradient", "sequence_partial_kl_gradient", "STEP_KL_USES", "sequence_step_kl_gradient",
    "sequence_step_kl_moments", "sequence_step_kl_per_sample_gradients", "sequence_step_kl_monte_carlo",
    "CoefficientCheck", "check_sequence_coefficients", "sequence_projections",
]
