r"""A small simulated training run that logs what a trainer logs: per-token log-probabilities for :func:`diagnose`.

A tabular softmax policy :math:`q_\theta` over V tokens (one token per sample, a bandit) is trained from the
reference p on a reward R with one recipe's KL penalty, GRPO/PPO style: each step draws a batch from the current
policy μ (the rollout), then takes ``epochs`` gradient-ascent steps on the same batch, the first on-policy and the
later ones on μ's tokens. Per token the ascent coefficient on :math:`\nabla_\theta\log q_\theta(x) = e_x - q` is

.. math:: \rho\,A - \beta\,c_{\text{KL}},\qquad \rho = q_\theta/\mu,\quad A = R_x - \bar R_{\text{batch}},

with :math:`c_{\text{KL}}` the recipe's gradient coefficient (:meth:`TrainerRecipe.gradient_coefficient`) for a
loss; a reward recipe instead puts :math:`-\beta\,k(\log p - \log\mu)` into the reward at the rollout (before the
batch mean is subtracted). PPO's clip is not applied. The last epoch's tokens are logged with ``logp`` (the
current policy), ``ref_logp`` and ``old_logp`` (the rollout policy), as a trainer's logs would hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from klviz import _checks
from klviz._kernels import log_softmax
from klviz._results import Result
from klviz._sampling import sample_categorical
from klviz.trainers.recipes import get_trainer_recipe

__all__ = ["TrainingRun", "train_tabular_policy"]


@dataclass(frozen=True, repr=False)
class TrainingRun(Result):
    r"""A simulated run: the final policy, per-step summaries and the last update's per-token logs.

    Attributes
    ----------
    recipe : str
    logits : ndarray, shape (V,)
        The final policy's logits.
    kl_qp, mean_reward : ndarray, shape (steps,)
        Exact KL(q‖p) and :math:`\mathbb{E}_q[R]` of the policy after each step.
    logp, ref_logp, old_logp : ndarray, shape (batch,)
        The last step's last epoch: log-probabilities of its tokens under the policy being updated, the reference
        and the rollout policy.
    tokens : ndarray of int, shape (batch,)
    logged_logits, rollout_logits : ndarray, shape (V,)
        The policies behind ``logp`` (the last epoch's forward pass) and ``old_logp`` (the last rollout), normalised:
        for exact values to set beside what the logs estimate.
    """

    recipe: str
    logits: np.ndarray = field(repr=False)
    kl_qp: np.ndarray = field(repr=False)
    mean_reward: np.ndarray = field(repr=False)
    logp: np.ndarray = field(repr=False)
    ref_logp: np.ndarray = field(repr=False)
    old_logp: np.ndarray = field(repr=False)
    tokens: np.ndarray = field(repr=False)
    logged_logits: np.ndarray = field(repr=False)
    rollout_logits: np.ndarray = field(repr=False)

    def _display_fields(self):
        return [("recipe", self.recipe), ("steps", self.kl_qp.size), ("tokens logged", self.tokens.size),
                ("final KL(q||p)", float(self.kl_qp[-1])), ("final E_q[R]", float(self.mean_reward[-1]))]


def train_tabular_policy(recipe, p_logits, rewards, *, beta: float, steps: int, batch: int, epochs: int = 2,
                         learning_rate: float = 1.0, rng=None) -> TrainingRun:
    r"""Train a tabular softmax policy from p with one recipe's KL penalty; log the last update's tokens.

    Parameters
    ----------
    recipe : TrainerRecipe or str
    p_logits, rewards : array_like, shape (V,)
        The reference (and starting policy) and each token's reward; finite.
    beta : float
        The penalty's coefficient, > 0.
    steps, batch, epochs : int
        Rollouts, tokens per rollout, gradient steps per rollout (≥ 1).
    learning_rate : float
        Step size on the logits, > 0.
    rng : {None, int, numpy.random.Generator}

    Returns
    -------
    TrainingRun

    Raises
    ------
    TypeError, ValueError
        For a bad recipe or arguments.

    Examples
    --------
    >>> run = train_tabular_policy("verl:low_var_kl-loss", [0.0, 0.5, -0.5], [1.0, 0.0, -1.0], beta=0.5,
    ...                            steps=5, batch=64, rng=0)
    >>> run.logp.shape, bool(run.kl_qp[-1] > 0)
    ((64,), True)
    """
    record = get_trainer_recipe(recipe)
    log_p = log_softmax(_checks.logits(p_logits, "p_logits", zero_probability=False))
    reward = _checks.real_array(np.asarray(rewards), "rewards")
    if reward.shape != log_p.shape or not np.isfinite(reward).all():
        raise ValueError(f"rewards must be finite, one per token ({log_p.size}), got shape {reward.shape}")
    beta = _checks.positive(beta, "beta")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    steps = _checks.integer(steps, "steps", 1)
    batch = _checks.integer(batch, "batch", 2)
    epochs = _checks.integer(epochs, "epochs", 1)
    rng = _checks.rng(rng)

    theta = log_p.copy()
    kls, means = np.empty(steps), np.empty(steps)
    for step in range(steps):
        log_mu = log_softmax(theta)
        tokens = sample_categorical(np.exp(log_mu), batch, rng)
        shaped = reward[tokens].astype(np.float64)
        if record.use == "reward":  # the KL enters the reward at the rollout
            shaped = shaped - beta * np.asarray(record.estimator.value(log_p[tokens] - log_mu[tokens]), dtype=np.float64)
        advantage = shaped - shaped.mean()
        for _ in range(epochs):
            log_q = log_softmax(theta)      # the epoch's forward pass: what a trainer logs
            log_rho = log_q[tokens] - log_mu[tokens]
            coefficient = np.exp(log_rho) * advantage
            if record.use == "loss":
                coefficient = coefficient - beta * record.gradient_coefficient(log_p[tokens] - log_q[tokens],
                                                                             log_weight=log_rho)
            counts = np.bincount(tokens, weights=coefficient, minlength=theta.size) / batch
            theta = theta + learning_rate * (counts - counts.sum() * np.exp(log_q))
        final = log_softmax(theta)
        kls[step] = float(np.sum(np.exp(final) * (final - log_p)))
        means[step] = float(np.exp(final) @ reward)
    return TrainingRun(record.name, theta - np.max(theta), kls, means, log_q[tokens], log_p[tokens],
                       log_mu[tokens], tokens, log_q, log_mu)
