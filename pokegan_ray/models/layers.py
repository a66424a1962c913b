"""Small building blocks shared by the networks: discriminator norms and the DCGAN initialisation."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


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
