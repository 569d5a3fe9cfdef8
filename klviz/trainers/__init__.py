"""What RLHF trainers compute for their KL settings, where those settings converge, and a diagnosis of logged log-probs.

* :mod:`klviz.trainers.recipes` — one :class:`TrainerRecipe` per framework setting (verl, TRL, OpenRLHF,
  NeMo-RL, slime, open-instruct), read from the code: estimator with the code's clamps, use, weight,
  aggregation, source;
* :mod:`klviz.trainers.stationary` — :func:`stationary_policy`, the softmax policy where a recipe's expected
  on-policy gradient of reward − β·penalty vanishes;
* :mod:`klviz.trainers.gradients` — :func:`recipe_gradient` and :func:`recipe_sequence_gradient`, the gradient a
  recipe's code gets in expectation (one token, or sequences), on-policy or in a later epoch;
* :mod:`klviz.trainers.floating` — :func:`recipe_in_precision`, the value and gradient each recipe's code computes
  in float32/bfloat16, every operation correctly rounded;
* :mod:`klviz.trainers.simulate` — :func:`train_tabular_policy`, a small simulated run that logs what a trainer
  logs;
* :mod:`klviz.trainers.diagnose` — :func:`diagnose`, a report on per-token log-probabilities.
"""

from klviz.trainers.diagnose import Diagnosis, TailDiagnostic, diagnose
from klviz.trainers.floating import FloatingPenalty, recipe_in_precision
from klviz.trainers.gradients import recipe_gradient, recipe_sequence_gradient
from klviz.trainers.simulate import TrainingRun, train_tabular_policy
from klviz.trainers.recipes import (
    FRAMEWORKS,
    UNIT_RATIO_EPOCH_USE,
    RecipeSource,
    TrainerRecipe,
    get_trainer_recipe,
    trainer_recipes,
)
from klviz.trainers.stationary import StationaryPolicy, stationary_policy

__all__ = ["FRAMEWORKS", "UNIT_RATIO_EPOCH_USE", "RecipeSource", "TrainerRecipe", "trainer_recipes",
           "get_trainer_recipe", "recipe_gradient", "recipe_sequence_gradient", "FloatingPenalty",
           "recipe_in_precision", "TrainingRun", "train_tabular_policy", "StationaryPolicy",
           "stationary_policy", "Diagnosis", "TailDiagnostic", "diagnose"]
