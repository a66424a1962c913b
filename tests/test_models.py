"""Networks: shapes and ranges for every loss x upsampler x resolution x conditioning, the
palette head's convex hull, AC-GAN conditioning, initialisation and the generator EMA."""

import pytest
import torch
from torch import nn

from pokegan_ray.losses import LOSSES, GanConfig
from pokegan_ray.models import (
    ARCHITECTURES,
    UPSAMPLERS,
    GeneratorEma,
    ModelConfig,
    PaletteHead,
    build_networks,
    channel_widths,
    count_parameters,
)

# Small widths keep the 36 shape cases to a few seconds; the structure is the same at 64.
TINY = {"generator_channels": 4, "discriminator_channels": 4, "latent_size": 8}
NUM_CLASSES = 5


def _config(loss: str, upsampler: str, resolution_px: int, conditional: bool) -> GanConfig:
    return GanConfig.from_dict(
        {
            "model": {
                **TINY,
                "upsampler": upsampler,
                "resolution_px": resolution_px,
                "conditional": conditional,
                "num_classes": NUM_CLASSES if conditional else 0,
                # WGAN-GP must not use BatchNorm in D; the others keep DCGAN's.
                "discriminator_norm": "layer" if loss == "wgan-gp" else "batch",
            },
            "loss": {"name": loss},
        }
    )


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "acgan"])
@pytest.mark.parametrize("resolution_px", [64, 128])
@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_shapes_and_ranges(loss, upsampler, resolution_px, conditional):
    torch.manual_seed(0)
    config = _config(loss, upsampler, resolution_px, conditional)
    generator, discriminator = build_networks(config.model)
    labels = torch.randint(NUM_CLASSES, (3,)) if conditional else None
    images = generator(torch.randn(3, TINY["latent_size"]), labels)
    assert images.shape == (3, 3, resolution_px, resolution_px)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0  # not a constant (e.g. a dead head)
    outputs = discriminator(images)
    assert outputs.shape == (3, 1 + (NUM_CLASSES if conditional else 0))
    assert torch.isfinite(outputs).all()


def test_wgan_gp_preset_discriminator_has_no_batchnorm():
    _, discriminator = build_networks(GanConfig.from_preset("wgan-gp").model)
    kinds = {type(m) for m in discriminator.modules()}
    assert nn.BatchNorm2d not in kinds and nn.GroupNorm in kinds


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_wgan_gp_discriminator_treats_samples_independently(architecture):
    # The gradient penalty is per sample; a sample's score must not depend on its batch mates.
    torch.manual_seed(0)
    _, discriminator = build_networks(ModelConfig(architecture=architecture, discriminator_norm="layer", **TINY))
    images = torch.randn(4, 3, 64, 64)
    assert torch.allclose(discriminator(images)[:1], discriminator(images[:1]), atol=1e-5)


def test_default_widths_are_the_classic_dcgan():
    generator, discriminator = build_networks(ModelConfig())
    assert channel_widths(64, 64) == [512, 256, 128, 64]
    assert channel_widths(128, 64) == [512, 512, 256, 128, 64]  # capped at 8x
    assert 3_500_000 < count_parameters(generator) < 3_650_000
    assert 2_700_000 < count_parameters(discriminator) < 2_800_000


def test_dcgan_initialisation():
    torch.manual_seed(0)
    generator, discriminator = build_networks(ModelConfig())
    for network in (generator, discriminator):
        convs = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        weights = torch.cat([m.weight.flatten() for m in convs])
        assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
        norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
        scales = torch.cat([m.weight.flatten() for m in norms])
        assert abs(scales.mean().item() - 1) < 0.01 and scales.std().item() < 0.03
        assert all((m.bias == 0).all() for m in norms)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_palette_pixels_lie_in_the_convex_hull_of_their_image_palette(architecture):
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, upsampler="palette", palette_size=6, **TINY)
    generator, _ = build_networks(config)
    assert isinstance(generator.output_head, PaletteHead)
    latent = torch.randn(4, TINY["latent_size"])
    images = generator(latent)
    mixture = generator.palette_mixture(latent)

    assert mixture.weights.shape == (4, 6, 64, 64) and mixture.colours.shape == (4, 6, 3)
    # Weights form a probability simplex at every pixel ...
    assert (mixture.weights >= 0).all()
    assert torch.allclose(mixture.weights.sum(dim=1), torch.ones(4, 64, 64), atol=1e-5)
    # ... the palette is a set of valid colours ...
    assert mixture.colours.abs().max() <= 1
    # ... and each output pixel is exactly that convex combination of its own image's palette.
    assert torch.allclose(images, torch.einsum("bkhw,bkc->bchw", mixture.weights, mixture.colours), atol=1e-6)
    # So each channel stays within the palette's range for that image (a necessary condition,
    # checked directly on the output). Image 0 must not borrow image 1's colours.
    low = mixture.colours.min(dim=1).values[:, :, None, None]
    high = mixture.colours.max(dim=1).values[:, :, None, None]
    assert ((images >= low - 1e-6) & (images <= high + 1e-6)).all()
    assert not torch.allclose(mixture.colours[0], mixture.colours[1])


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_palette_mixture_needs_the_palette_upsampler(architecture):
    generator, _ = build_networks(ModelConfig(architecture=architecture, **TINY))
    with pytest.raises(ValueError, match="palette"):
        generator.palette_mixture(torch.randn(1, TINY["latent_size"]))


@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_acgan_same_latent_different_types_give_different_images(architecture, upsampler):
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, upsampler=upsampler, conditional=True, num_classes=NUM_CLASSES, **TINY)
    generator, _ = build_networks(config)
    # Train mode (batch statistics) on purpose: a fresh network's running statistics would
    # squash every image to ~0. Both rows share a latent, so only the type can tell them apart.
    latent = torch.randn(1, TINY["latent_size"]).expand(2, -1)
    images = generator(latent, torch.tensor([0, 3]))
    assert (images[0] - images[1]).abs().max() > 1e-3
    same = generator(latent, torch.tensor([3, 3]))
    assert torch.allclose(same[0], same[1])


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_generator_rejects_labels_that_do_not_match_its_conditioning(architecture):
    conditional, _ = build_networks(ModelConfig(architecture=architecture, conditional=True, num_classes=3, **TINY))
    unconditional, _ = build_networks(ModelConfig(architecture=architecture, **TINY))
    latent = torch.randn(2, TINY["latent_size"])
    with pytest.raises(ValueError, match="needs labels"):
        conditional(latent)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(latent, torch.tensor([0, 1]))


def test_generator_ema_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    generator, _ = build_networks(ModelConfig(**TINY))
    ema = GeneratorEma(generator, decay=0.9)
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(1.0)
    generator(torch.randn(4, TINY["latent_size"]))  # train mode: updates BatchNorm running stats
    ema.update(generator)
    for old, average, current in zip(before, ema.module.parameters(), generator.parameters()):
        assert torch.allclose(average, 0.9 * old + 0.1 * current, atol=1e-6)
    for average, current in zip(ema.module.buffers(), generator.buffers()):
        assert torch.equal(average, current)
    # The copy is independent: changing the EMA never touches the generator.
    with torch.no_grad():
        next(ema.module.parameters()).zero_()
    assert next(generator.parameters()).abs().sum() > 0


def test_generator_ema_ramps_its_decay_up_with_the_step():
    torch.manual_seed(0)
    generator = nn.Linear(4, 4)
    ema = GeneratorEma(generator, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(100_000) == 0.999 and ema.decay_at(None) == 0.999
    before = ema.module.weight.clone()
    with torch.no_grad():
        generator.weight.add_(1.0)
    ema.update(generator, step=0)  # the first update moves 90 % of the way, not 0.1 %
    assert torch.allclose(ema.module.weight, 0.1 * before + 0.9 * generator.weight, atol=1e-6)


def test_generator_ema_rejects_bad_decay():
    generator, _ = build_networks(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="decay"):
        GeneratorEma(generator, decay=1.0)
