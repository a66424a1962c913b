"""The GAN zoo's losses: non-saturating BCE ("dcgan"), WGAN with weight clipping ("wgan"),
WGAN-GP ("wgan-gp"), each optionally with the AC-GAN class term; DiffAugment; the configs.

Plain PyTorch; nothing here knows about Ray.
"""

from pokegan_ray.losses.config import DEFAULT_AUGMENT_POLICY, PRESETS, GanConfig, LossConfig
from pokegan_ray.losses.diff_augment import AUGMENTATIONS, diff_augment, parse_policy
from pokegan_ray.losses.gan_losses import (
    LOSSES,
    AdversarialLoss,
    GradientPenaltyLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    WeightClippingLoss,
    build_loss,
    build_optimizers,
    critic_steps,
    gradient_penalty,
)

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_AUGMENT_POLICY",
    "LOSSES",
    "PRESETS",
    "AdversarialLoss",
    "GanConfig",
    "GradientPenaltyLoss",
    "LossConfig",
    "NonSaturatingLoss",
    "WassersteinLoss",
    "WeightClippingLoss",
    "build_loss",
    "build_optimizers",
    "critic_steps",
    "diff_augment",
    "gradient_penalty",
    "parse_policy",
]
