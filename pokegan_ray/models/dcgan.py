"""DCGAN generator and discriminator (Radford et al. 2016), for 64 and 128 px.

The same two networks serve every loss: WGAN uses them as they are (the critic's score is
the raw output, never a sigmoid), WGAN-GP swaps the discriminator's BatchNorm for a
per-sample norm, and AC-GAN (`conditional`) adds a class embedding to the generator and
class logits to the discriminator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pokegan_ray.models.layers import (
    DISCRIMINATOR_NORMS,
    GeneratorBase,
    init_dcgan_weights,
)
from pokegan_ray.models.upsamplers import UPSAMPLERS

if TYPE_CHECKING:
    from pokegan_ray.models.config import ModelConfig

_SMALLEST_SIDE_PX = 4
_MAX_WIDTH_MULTIPLIER = 8


def channel_widths(resolution_px: int, base_channels: int) -> list[int]:
    """Channels of the feature maps at 4x4, 8x8, ..., resolution/2, coarsest first.

    The finest map has `base_channels`; each halving of the side doubles the width, capped at
    8x base so that 128 px adds a layer rather than a 1024-channel one.
    """
    widths = []
    side_px = _SMALLEST_SIDE_PX
    while side_px < resolution_px:
        widths.append(base_channels * min(_MAX_WIDTH_MULTIPLIER, resolution_px // (2 * side_px)))
        side_px *= 2
    return widths


class DcganGenerator(GeneratorBase):
    """`forward(latent (B, latent_size), labels (B,) long or None) -> images (B, 3, R, R)` in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        widths = channel_widths(config.resolution_px, config.generator_channels)
        upsampler = UPSAMPLERS[config.upsampler]
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(config.latent_size, widths[0], _SMALLEST_SIDE_PX, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(upsampler.up_block(a, b) for a, b in zip(widths, widths[1:])))
        self.output_head = upsampler.output_head(widths[-1], config.latent_size, config.palette_size)
        self.apply(init_dcgan_weights)

    def _features(self, code: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(code[:, :, None, None]))


class DcganDiscriminator(nn.Module):
    """`forward(images (B, 3, R, R)) -> (B, 1 + num_classes)`.

    Column 0 is the adversarial score: a logit for the BCE loss, a critic value for the
    Wasserstein losses. The other columns (AC-GAN only) are class logits. One tensor rather
    than a tuple keeps DistributedDataParallel's output handling trivial.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        widths = channel_widths(config.resolution_px, config.discriminator_channels)[::-1]
        make_norm = DISCRIMINATOR_NORMS[config.discriminator_norm]
        # A conv followed by a norm with a shift needs no bias of its own.
        conv_bias = config.discriminator_norm == "none"
        # The DCGAN paper leaves the first layer unnormalised.
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        for in_channels, out_channels in zip(widths, widths[1:]):
            layers += [
                nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=conv_bias),
                make_norm(out_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.trunk = nn.Sequential(*layers)
        class_outputs = config.num_classes if config.conditional else 0
        # The 4x4 map -> one score (+ class logits): the adversarial and auxiliary heads share
        # the trunk and differ only in their output channels.
        self.head = nn.Conv2d(widths[-1], 1 + class_outputs, _SMALLEST_SIDE_PX, stride=1, padding=0)
        self.apply(init_dcgan_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images)).flatten(1)
