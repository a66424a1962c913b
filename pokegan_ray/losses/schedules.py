"""Learning-rate schedules: the factor each optimiser's base rate is multiplied by at a given step.

A schedule is a pure function of where the run is (generator step, epoch), so a resumed run
gets exactly the rates an uninterrupted one would, with nothing to checkpoint. The loop sets
`param_group["lr"]` from it before every generator step: a Python float, no device work.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pokegan_ray.losses.config import LossConfig


def constant_factor(step: int, total_steps: int, epoch: int, step_epochs: float, step_factor: float) -> float:
    return 1.0


def step_decay_factor(step: int, total_steps: int, epoch: int, step_epochs: float, step_factor: float) -> float:
    """Times `step_factor` after every `step_epochs` whole epochs (StepLR, counted in epochs of the data)."""
    return step_factor ** math.floor(epoch / step_epochs)


def cosine_factor(step: int, total_steps: int, epoch: int, step_epochs: float, step_factor: float) -> float:
    """Half a cosine from 1 at step 0 to 0 at the last step."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def linear_factor(step: int, total_steps: int, epoch: int, step_epochs: float, step_factor: float) -> float:
    """A straight line from 1 at step 0 to 0 at the last step."""
    return max(0.0, 1.0 - step / total_steps)


LR_SCHEDULES = {
    "constant": constant_factor,
    "step": step_decay_factor,
    "cosine": cosine_factor,
    "linear": linear_factor,
}


def learning_rates(config: LossConfig, step: int, total_steps: int, epoch: int) -> tuple[float, float]:
    """(generator rate, discriminator rate) for the generator step that follows `step` steps and `epoch` epochs."""
    schedule = LR_SCHEDULES[config.lr_schedule]
    return (
        config.generator_learning_rate * schedule(step, total_steps, epoch, config.lr_step_epochs,
                                                  config.generator_lr_step_factor),
        config.discriminator_learning_rate * schedule(step, total_steps, epoch, config.lr_step_epochs,
                                                      config.discriminator_lr_step_factor),
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate
