"""How a generator doubles its resolution, and how its last features become an RGB image.

An upsampler is two factories: `up_block(in_channels, out_channels)` doubles the spatial size
of a feature map, and `output_head(in_channels, code_size, palette_size)` takes the last
feature map (at half the output resolution) to an image in [-1, 1], doing the final doubling
itself as the DCGAN paper does. Any generator can use any upsampler.

- "transposed": ConvTranspose2d(4, stride 2, pad 1), the DCGAN paper's choice.
- "upsample": nearest-neighbour x2 then a 3x3 conv, which avoids the checkerboard pattern a
  stride-2 transposed conv tends to draw (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").
- "palette": the colour picker of ConorLazarou's PokeGAN. The up-blocks are those of "upsample"
  (its point is flat, clean colour areas, which checkerboard artefacts would spoil); the head
  turns the last features into a softmax over `palette_size` colours per pixel, and the
  latent code into that image's palette of RGB colours in [-1, 1]. Every pixel is then a
  convex combination of its image's palette, as in hand-drawn sprites with few colours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn


def transposed_up_block(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample_up_block(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class RgbHead(nn.Module):
    """Final doubling straight to three channels, squashed into [-1, 1] by tanh."""

    def __init__(self, to_rgb: nn.Module):
        super().__init__()
        self.to_rgb = to_rgb

    def forward(self, features: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_rgb(features))


class PaletteMixture(NamedTuple):
    """Per-pixel colour weights (batch, palette_size, H, W), each a probability simplex,
    and per-image colours (batch, palette_size, 3) in [-1, 1]."""

    weights: torch.Tensor
    colours: torch.Tensor

    def image(self) -> torch.Tensor:
        return torch.einsum("bkhw,bkc->bchw", self.weights, self.colours)


class PaletteHead(nn.Module):
    """Colour picker: each pixel = sum_k softmax_k(features) * palette_k(code)."""

    def __init__(self, in_channels: int, code_size: int, palette_size: int, doubles_resolution: bool = True):
        super().__init__()
        # doubles_resolution=False is for generators whose last block already reaches full size
        # (lightweight); the Identity keeps the conv's state_dict key the same either way.
        self.to_weights = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest") if doubles_resolution else nn.Identity(),
            nn.Conv2d(in_channels, palette_size, 3, padding=1),
        )
        # The palette comes from the (class-conditioned) latent code rather than pooled
        # features: it is a per-image choice, like picking the colours before drawing.
        self.to_colours = nn.Linear(code_size, palette_size * 3)

    def mixture(self, features: torch.Tensor, code: torch.Tensor) -> PaletteMixture:
        weights = torch.softmax(self.to_weights(features), dim=1)
        colours = torch.tanh(self.to_colours(code)).view(code.shape[0], -1, 3)
        return PaletteMixture(weights, colours)

    def forward(self, features: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.mixture(features, code).image()


def transposed_head(in_channels: int, code_size: int, palette_size: int) -> nn.Module:
    return RgbHead(nn.ConvTranspose2d(in_channels, 3, 4, stride=2, padding=1))


def upsample_head(in_channels: int, code_size: int, palette_size: int) -> nn.Module:
    return RgbHead(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, 3, 3, padding=1)))


def palette_head(in_channels: int, code_size: int, palette_size: int) -> nn.Module:
    return PaletteHead(in_channels, code_size, palette_size)


class Upsampler(NamedTuple):
    up_block: Callable[[int, int], nn.Module]
    output_head: Callable[[int, int, int], nn.Module]


UPSAMPLERS: dict[str, Upsampler] = {
    "transposed": Upsampler(transposed_up_block, transposed_head),
    "upsample": Upsampler(upsample_up_block, upsample_head),
    "palette": Upsampler(upsample_up_block, palette_head),
}
