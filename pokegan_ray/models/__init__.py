"""The GAN zoo's networks: DCGAN and FastGAN-style "lightweight" G and D, three upsamplers, generator EMA.

Plain PyTorch; nothing here knows about Ray. Build with `build_networks(ModelConfig(...))`.
"""

from pokegan_ray.models.config import ModelConfig
from pokegan_ray.models.dcgan import DcganDiscriminator, DcganGenerator, channel_widths
from pokegan_ray.models.ema import GeneratorEma
from pokegan_ray.models.layers import (
    DISCRIMINATOR_NORMS,
    GeneratorBase,
    init_dcgan_weights,
)
from pokegan_ray.models.lightweight import (
    LightweightDiscriminator,
    LightweightGenerator,
)
from pokegan_ray.models.networks import (
    ARCHITECTURES,
    SELF_SUPERVISED_ARCHITECTURES,
    build_networks,
    count_parameters,
)
from pokegan_ray.models.upsamplers import (
    UPSAMPLERS,
    PaletteHead,
    PaletteMixture,
    Upsampler,
)

__all__ = [
    "ARCHITECTURES",
    "DISCRIMINATOR_NORMS",
    "SELF_SUPERVISED_ARCHITECTURES",
    "UPSAMPLERS",
    "DcganDiscriminator",
    "DcganGenerator",
    "GeneratorBase",
    "GeneratorEma",
    "LightweightDiscriminator",
    "LightweightGenerator",
    "ModelConfig",
    "PaletteHead",
    "PaletteMixture",
    "Upsampler",
    "build_networks",
    "channel_widths",
    "count_parameters",
    "init_dcgan_weights",
]
