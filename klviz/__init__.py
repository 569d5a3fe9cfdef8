"""klviz: exact and fast Monte Carlo estimators of KL divergence (k1, k2, k3), for teaching.

Nothing happens at import: no figures, no sampling, no UI imports. See the notebooks for the story and
CONTRIBUTING.md for where a new estimator, pair or notebook goes.
"""

from klviz.estimators import (
    ESTIMATORS,
    TARGETS,
    Estimator,
    ExpPolynomial,
    control_variate,
    get_estimator,
    k1,
    k1_pq,
    k2,
    k3,
    k3_pq,
    k_lambda,
)
from klviz.exact import (
    ExactMoments,
    OptimalLambda,
    control_variate_moments,
    control_variate_variance,
    exact_moments,
    expected_r_squared,
    optimal_lambda,
)
from klviz.experiment import SeedTable, seed_table
from klviz.montecarlo import MonteCarloEstimate, SimulationResult, simulate
from klviz.pairs import CategoricalPair, GaussianPair, MarkovChainPair, Pair, ScipyPair
from klviz.sequences import (
    SEQUENCE_ESTIMATORS,
    SequenceEstimator,
    sequence_estimates,
    sequence_estimator,
    sequence_moments,
)
from klviz.factories import perturbed_policy_pair, random_markov_chain_pair
from klviz.precision import PRECISIONS, naive_k3, naive_k3_in_precision, round_to_bfloat16, round_to_precision
from klviz._results import Table, residue
from klviz.checks import CheckResult, check_estimator, check_function
from klviz.fdiv import GENERATORS, Generator, f_divergence, get_generator, taylor_approximation
from klviz.gradients import (
    GradientMoments,
    MonteCarloGradient,
    PolicyPath,
    expected_gradient,
    expected_k2_gradient,
    fit_gaussian_policy,
    gradient_moments,
    kl_pq,
    kl_pq_gradient,
    kl_qp,
    kl_qp_gradient,
    monte_carlo_gradient,
    per_sample_gradient,
    sequence_expected_gradient,
    sequence_gradient_moments,
    sequence_kl_gradient,
    sequence_monte_carlo_gradient,
    sequence_partial_kl_gradient,
    sequence_reward_gradient,
    sequence_step_kl_gradient,
)
from klviz.trainers import (
    Diagnosis,
    RecipeSource,
    StationaryPolicy,
    TailDiagnostic,
    TrainerRecipe,
    diagnose,
    get_trainer_recipe,
    stationary_policy,
    trainer_recipes,
)
# notebook 09: what each recipe's gradient follows, and its arithmetic in low precision
from klviz.trainers import (
    FloatingPenalty,
    TrainingRun,
    recipe_gradient,
    recipe_in_precision,
    recipe_sequence_gradient,
    train_tabular_policy,
)

__all__ = [
    # estimators
    "ESTIMATORS", "TARGETS", "Estimator", "ExpPolynomial", "control_variate", "get_estimator",
    "k1", "k2", "k3", "k1_pq", "k3_pq", "k_lambda",
    # pairs
    "Pair", "GaussianPair", "ScipyPair", "CategoricalPair", "MarkovChainPair",
    # exact moments
    "ExactMoments", "OptimalLambda", "exact_moments", "control_variate_moments", "control_variate_variance",
    "optimal_lambda", "expected_r_squared",
    # Monte Carlo and the article's table
    "MonteCarloEstimate", "SimulationResult", "simulate", "SeedTable", "seed_table",
    # sequences
    "SEQUENCE_ESTIMATORS", "SequenceEstimator", "sequence_estimator", "random_markov_chain_pair",
    "sequence_estimates", "sequence_moments",
    # precision and token pairs
    "PRECISIONS", "naive_k3", "naive_k3_in_precision", "round_to_bfloat16", "round_to_precision",
    "perturbed_policy_pair", "random_markov_chain_pair",
    # display
    "Table", "residue",
    # exercise checks
    "CheckResult", "check_estimator", "check_function",
    # f-divergences
    "GENERATORS", "Generator", "f_divergence", "get_generator", "taylor_approximation",
    # gradients
    "GradientMoments", "MonteCarloGradient", "PolicyPath", "expected_gradient", "expected_k2_gradient",
    "fit_gaussian_policy", "gradient_moments", "kl_pq", "kl_pq_gradient", "kl_qp", "kl_qp_gradient",
    "monte_carlo_gradient", "per_sample_gradient",
    "sequence_kl_gradient", "sequence_expected_gradient", "sequence_gradient_moments", "sequence_monte_carlo_gradient",
    "sequence_reward_gradient", "sequence_partial_kl_gradient", "sequence_step_kl_gradient",
    # what trainers compute
    "TrainerRecipe", "RecipeSource", "trainer_recipes", "get_trainer_recipe", "StationaryPolicy",
    "stationary_policy", "Diagnosis", "TailDiagnostic", "diagnose",
    "recipe_gradient", "recipe_sequence_gradient", "FloatingPenalty", "recipe_in_precision", "TrainingRun",
    "train_tabular_policy",
]
__version__ = "0.2.0"
