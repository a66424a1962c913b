"""FastGAN-style "lightweight" generator and self-supervised discriminator, for 64 and 128 px.

Liu et al. 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis" (FastGAN, which lucidrains' lightweight-gan follows), built for ~1000-image data sets:

- G: GLU blocks (a conv makes twice the channels; one half gates the other) and skip-layer
  excitation (SLE): a coarse map, pooled to 4x4, becomes one sigmoid gate per channel of a finer
  map, a cheap long shortcut through which the coarse layout steers the fine texture.
  `model.noise_injection` adds FastGAN's per-pixel noise after each block's conv.
- SLE pairs: 4->32 and 8->64 at 64 px, plus 16->128 at 128 px (every map from 32 px up, gated by
  the map 8x coarser). FastGAN pairs maps 16x apart (4->64, 8->128, 16->256 at 256 px); at 64 px
  that would leave one gate, while ratio 8 still skips three blocks and, like FastGAN, gates
  every fine map.
- D: spectral norm on every conv, stride-2 blocks down to 4x4 and DCGAN's 4x4 head (column 0 the
  adversarial score, then AC-GAN class logits). Small decoders redraw the real image at R/2 px from
  D's 8x8 features and, at 128 px, a random quadrant at 64 px (its native size) from an 8x8 crop of
  the 16x16 features, so D keeps features that describe whole images rather than the few cues that
  separate this small set from the fakes. `forward(images, reconstruct=True)` returns
  (prediction, target) pairs; the loss computes their MSE, as lightweight-gan does (FastGAN's LPIPS
  needs VGG weights that an offline cluster cannot download).
- Upsamplers: "upsample" is FastGAN's block (nearest x2 + 3x3 conv), "transposed" doubles with a
  ConvTranspose2d(4, stride 2) instead, "palette" uses the "upsample" blocks and the palette head.
  The last block reaches full resolution (the finest SLE gate needs a map there), so the head does
  no doubling: a 3x3 conv + tanh, or the palette head at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pokegan_ray.models.dcgan import channel_widths
from pokegan_ray.models.layers import (
    DISCRIMINATOR_NORMS,
    GeneratorBase,
    init_dcgan_weights,
)
from pokegan_ray.models.upsamplers import PaletteHead, RgbHead

if TYPE_CHECKING:
    from pokegan_ray.models.config import ModelConfig

_SMALLEST_SIDE_PX = 4
# SLE gates a map with the one this many up-blocks earlier: 3 blocks = 8x smaller side.
_SLE_SPAN_BLOCKS = 3


def generator_widths(resolution_px: int, base_channels: int) -> list[int]:
    """Channels of G's maps at 4x4, 8x8, ..., R, coarsest first (256, 256, 128, 64, 32 at 64 px, base 64).

    DCGAN's rule carried one block further (the last block reaches R), halved because every GLU
    conv makes twice its output channels: the parameter count stays close to DCGAN's.
    """
    return [max(1, width // 2) for width in channel_widths(2 * resolution_px, base_channels)]


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise times a learnt per-channel weight that starts at 0.

    As FastGAN's NoiseInjection (a single scalar there; per channel as in StyleGAN): G starts
    noise-free and learns how much stochastic detail each channel wants.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, _, height_px, width_px = features.shape
        noise = torch.randn(batch, 1, height_px, width_px, device=features.device, dtype=features.dtype)
        return features + self.weight * noise


def _transposed_doubling(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)]


def _upsample_doubling(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]


# model.upsampler -> the layers that double a map's side inside a GLU block.
DOUBLING_LAYERS: dict[str, Callable[[int, int], list[nn.Module]]] = {
    "transposed": _transposed_doubling,
    "upsample": _upsample_doubling,
    "palette": _upsample_doubling,
}


def glu_up_block(
    doubling: Callable[[int, int], list[nn.Module]], in_channels: int, out_channels: int, noise_injection: bool
) -> nn.Sequential:
    # GLU halves the channels, so the doubling conv makes 2 * out_channels.
    layers = doubling(in_channels, 2 * out_channels)
    if noise_injection:
        layers.append(NoiseInjection(2 * out_channels))
    return nn.Sequential(*layers, nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1))


class SkipLayerExcitation(nn.Module):
    """`forward(coarse, fine) -> fine * gates(coarse)`, one sigmoid gate per channel of `fine`."""

    def __init__(self, coarse_channels: int, fine_channels: int):
        super().__init__()
        self.gates = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(coarse_channels, fine_channels, 4, bias=False),  # 4x4 -> 1x1
            nn.SiLU(),  # FastGAN's Swish
            nn.Conv2d(fine_channels, fine_channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return fine * self.gates(coarse)


class LightweightGenerator(GeneratorBase):
    """`forward(latent (B, latent_size), labels (B,) long or None) -> images (B, 3, R, R)` in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        widths = generator_widths(config.resolution_px, config.generator_channels)
        doubling = DOUBLING_LAYERS[config.upsampler]
        # FastGAN's InitLayer: the latent as a 1x1 map, spread to 4x4 by a transposed conv.
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(config.latent_size, 2 * widths[0], _SMALLEST_SIDE_PX, bias=False),
            nn.BatchNorm2d(2 * widths[0]),
            nn.GLU(dim=1),
        )
        self.blocks = nn.ModuleList(
            glu_up_block(doubling, a, b, config.noise_injection) for a, b in pairwise(widths)
        )
        # Keyed by the side of the map the gates act on ("32px", ...).
        self.excitations = nn.ModuleDict(
            {
                f"{_SMALLEST_SIDE_PX * 2**index}px": SkipLayerExcitation(widths[index - _SLE_SPAN_BLOCKS], widths[index])
                for index in range(_SLE_SPAN_BLOCKS, len(widths))
            }
        )
        if config.upsampler == "palette":
            self.output_head = PaletteHead(widths[-1], config.latent_size, config.palette_size, doubles_resolution=False)
        else:
            self.output_head = RgbHead(nn.Conv2d(widths[-1], 3, 3, padding=1))
        self.apply(init_dcgan_weights)

    def _features(self, code: torch.Tensor) -> torch.Tensor:
        maps = [self.stem(code[:, :, None, None])]  # 4x4, 8x8, ..., R
        for block in self.blocks:
            features = block(maps[-1])
            key = f"{features.shape[-1]}px"
            if key in self.excitations:
                features = self.excitations[key](maps[-_SLE_SPAN_BLOCKS], features)
            maps.append(features)
        return maps[-1]


def _decoder(in_channels: int, widths: list[int]) -> nn.Sequential:
    """An 8x8 feature map -> an RGB image in [-1, 1], one doubling per entry of `widths` (FastGAN's SimpleDecoder).

    BatchNorm whatever model.discriminator_norm says: the decoders never touch the scores, so
    they cannot break a per-sample gradient penalty.
    """
    blocks = []
    for out_channels in widths:
        blocks.append(glu_up_block(_upsample_doubling, in_channels, out_channels, noise_injection=False))
        in_channels = out_channels
    return nn.Sequential(*blocks, nn.Conv2d(in_channels, 3, 3, padding=1), nn.Tanh())


def _quadrant(maps: torch.Tensor, row: int, column: int) -> torch.Tensor:
    half_px = maps.shape[-1] // 2
    return maps[..., row * half_px : (row + 1) * half_px, column * half_px : (column + 1) * half_px]


class LightweightDiscriminator(nn.Module):
    """`forward(images (B, 3, R, R), reconstruct=False) -> (B, 1 + num_classes)`, like DcganDiscriminator.

    With `reconstruct=True` it returns `(scores, reconstructions)`, a list of (prediction, target)
    pairs of equal shape, the targets cut from `images` and detached: one pair at 64 px (the
    whole image at 32 px), two at 128 px (the whole image at 64 px, a random quadrant at 64 px).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        widths = channel_widths(config.resolution_px, config.discriminator_channels)  # at 4, 8, ..., R/2 px
        make_norm = DISCRIMINATOR_NORMS[config.discriminator_norm]
        # A conv followed by a norm with a shift needs no bias of its own.
        conv_bias = config.discriminator_norm == "none"
        fine_to_coarse = widths[::-1]
        # The first layer is unnormalised, as in DCGAN and FastGAN.
        blocks = [nn.Sequential(nn.Conv2d(3, fine_to_coarse[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))]
        for in_channels, out_channels in pairwise(fine_to_coarse):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=conv_bias),
                    make_norm(out_channels),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        self.down_blocks = nn.ModuleList(blocks)
        class_outputs = config.num_classes if config.conditional else 0
        self.head = nn.Conv2d(widths[0], 1 + class_outputs, _SMALLEST_SIDE_PX)
        # Decoders are auxiliary: half the trunk's width at each side (16 px, ..., R/2).
        decoder_widths = [max(1, width // 2) for width in widths[2:]]
        self.decoders = nn.ModuleDict({"whole": _decoder(widths[1], decoder_widths)})
        if config.resolution_px >= 128:
            self.decoders["quadrant"] = _decoder(widths[2], decoder_widths)
        self.apply(init_dcgan_weights)
        # After the initialisation: spectral norm reparametrises each weight as original / sigma.
        for conv in [module for module in self.modules() if isinstance(module, nn.Conv2d)]:
            spectral_norm(conv)

    def forward(
        self, images: torch.Tensor, reconstruct: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        feature_maps = []  # R/2, R/4, ..., 4 px
        features = images
        for block in self.down_blocks:
            features = block(features)
            feature_maps.append(features)
        scores = self.head(features).flatten(1)
        if not reconstruct:
            # DDP (find_unused_parameters=False) needs every parameter in every forward, and the
            # generator step does not reconstruct: the decoders take part with weight zero.
            return scores + 0.0 * sum(parameter.sum() for parameter in self.decoders.parameters())
        return scores, self._reconstructions(images, feature_maps[-2], feature_maps[-3])

    def _reconstructions(
        self, images: torch.Tensor, features_8px: torch.Tensor, features_16px: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # "area" averages each 2x2 block: the target is exactly the image at half size.
        whole_target = F.interpolate(images, scale_factor=0.5, mode="area")
        pairs = [(self.decoders["whole"](features_8px), whole_target.detach())]
        if "quadrant" in self.decoders:
            # One quadrant per batch, drawn from torch's global RNG so a run's seed governs it.
            row, column = divmod(int(torch.randint(4, (1,)).item()), 2)
            prediction = self.decoders["quadrant"](_quadrant(features_16px, row, column))
            pairs.append((prediction, _quadrant(images, row, column).detach()))
        return pairs
