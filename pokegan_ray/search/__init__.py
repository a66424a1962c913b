"""Hyperparameter search: YAML search spaces (`space`) for Ray Tune + Optuna."""

from pokegan_ray.search.space import FACTS, Dimension, SearchSpace, TrialSampler, define_by_run, trial_config

__all__ = ["FACTS", "Dimension", "SearchSpace", "TrialSampler", "define_by_run", "trial_config"]
