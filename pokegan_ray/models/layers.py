"""Small building blocks shared by the networks: discriminator norms, the DCGAN initialisation
and `GeneratorBase` (AC-GAN conditioning and the palette read-out every generator has)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from pokegan_ray.models.upsamplers import PaletteHead, PaletteMixture

if TYPE_CHECKING:
    from pokegan_ray.models.config import ModelConfig


def _layer_norm(channels: int) -> nn.Module:
    # GroupNorm with one group normalises each sample over (C, H, W), i.e. LayerNorm, but with a
    # per-channel affine and no fixed spatial size, so one factory serves every resolution.
    return nn.GroupNorm(1, channels)


def _instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


# Discriminator normalisation, by name. BatchNorm mixes the samples of a batch, which breaks
# WGAN-GP's per-sample gradient penalty; the other three keep each sample on its own.
DISCRIMINATOR_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "layer": _layer_norm,
    "instance": _instance_norm,
    "none": _no_norm,
}

_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper initialisation: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0.

    Linear layers and embeddings keep PyTorch's defaults: the palette head's colours should
    start spread over the colour cube, not squeezed near grey by a 0.02 scale.
    Use as `network.apply(init_dcgan_weights)`.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORM_TYPES) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class GeneratorBase(nn.Module):
    """`forward(latent (B, latent_size), labels (B,) long or None) -> images (B, 3, R, R)` in [-1, 1].

    A subclass builds `output_head` (an upsampler head: `head(features, code)`) and defines
    `_features(code)`; this class turns (latent, labels) into the code both of them read.
    """

    output_head: nn.Module

    def __init__(self, config: ModelConfig):
        super().__init__()
        # AC-GAN conditioning multiplies the latent by a learnt per-type vector (as in
        # PyTorch-GAN's AC-GAN): the input width stays latent_size, and every latent
        # direction can be modulated by the type.
        self.class_embedding = nn.Embedding(config.num_classes, config.latent_size) if config.conditional else None

    def latent_code(self, latent: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.class_embedding is None:
            if labels is not None:
                raise ValueError("this generator is unconditional (model.conditional is false) but was given labels")
            return latent
        if labels is None:
            raise ValueError("this generator is conditional (model.conditional is true) and needs labels")
        return latent * self.class_embedding(labels)

    def _features(self, code: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        code = self.latent_code(latent, labels)
        return self.output_head(self._features(code), code)

    def palette_mixture(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> PaletteMixture:
        """The per-pixel weights and per-image palette behind `forward` (palette upsampler only),
        e.g. to show each invented Pokémon's colours."""
        if not isinstance(self.output_head, PaletteHead):
            raise ValueError("palette_mixture needs model.upsampler='palette'")
        code = self.latent_code(latent, labels)
        return self.output_head.mixture(self._features(code), code)
