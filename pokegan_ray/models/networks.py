"""The architecture registry and `build_networks`, the one way the loop makes G and D."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from pokegan_ray.models.dcgan import DcganDiscriminator, DcganGenerator
from pokegan_ray.models.lightweight import (
    LightweightDiscriminator,
    LightweightGenerator,
)

if TYPE_CHECKING:
    from pokegan_ray.models.config import ModelConfig


# name -> (generator class, discriminator class); both take a ModelConfig.
ARCHITECTURES: dict[str, tuple[Callable[[ModelConfig], nn.Module], Callable[[ModelConfig], nn.Module]]] = {
    "dcgan": (DcganGenerator, DcganDiscriminator),
    "lightweight": (LightweightGenerator, LightweightDiscriminator),
}

# Architectures whose D has reconstruction decoders: `D(images, reconstruct=True)` returns
# (scores, [(prediction, target), ...]) and the loss adds their MSE.
SELF_SUPERVISED_ARCHITECTURES = frozenset({"lightweight"})


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator), freshly initialised on the CPU; seed torch first for repeatable weights."""
    make_generator, make_discriminator = ARCHITECTURES[config.architecture]
    return make_generator(config), make_discriminator(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
