"""What RLHF trainers compute for their KL settings, where those settings converge, and a diagnosis of logged log-probs.

* :mod:`klviz.trainers.recipes` — one :class:`TrainerRecipe` per framework setting (verl, TRL, OpenRLHF,
  NeMo-RL, slime, open-instruct), read from the code: estimator with the code's clamps, use, weight,
  aggregation, source;
* :mod:`klviz.trainers.stationary` — :func:`stationary_policy`, the softmax policy where a recipe's expected
  on-policy gradient of reward − β·penalty vanishes;
* :mod:`klviz.trainers.diagnose` — :func:`diagnose`, a report on per-token log-probabilities.
"""

from klviz.trainers.diagnose import Diagnosis, TailDiagnostic, diagnose
from klviz.trainers.recipes import FRAMEWORKS, RecipeSource, TrainerRecipe, get_trainer_recipe, trainer_recipes
from klviz.trainers.stationary import StationaryPolicy, stationary_policy

__all__ = ["FRAMEWORKS", "RecipeSource", "TrainerRecipe", "trainer_recipes", "get_trainer_recipe",
           "StationaryPolicy", "stationary_policy", "Diagnosis", "TailDiagnostic", "diagnose"]
