"""The FastGAN-style "lightweight" networks: shapes and ranges, the discriminator's reconstructions
(their targets, the parameters every forward must use for DDP, and that they can be learnt),
noise injection and its validation, and the registry entry."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pokegan_ray.models import (
    ARCHITECTURES,
    SELF_SUPERVISED_ARCHITECTURES,
    UPSAMPLERS,
    LightweightDiscriminator,
    LightweightGenerator,
    ModelConfig,
    build_networks,
    count_parameters,
)
from pokegan_ray.models.lightweight import DOUBLING_LAYERS, NoiseInjection

TINY = {"architecture": "lightweight", "generator_channels": 8, "discriminator_channels": 8, "latent_size": 8}
NUM_CLASSES = 5


def _smooth_images(batch: int, resolution_px: int) -> torch.Tensor:
    # Sprite-like: flat colour areas (a 4x4 pattern blown up), in [-1, 1].
    coarse = torch.rand(batch, 3, 4, 4) * 2 - 1
    return F.interpolate(coarse, size=resolution_px, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "acgan"])
@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
@pytest.mark.parametrize("resolution_px", [64, 128])
def test_shapes_and_ranges(resolution_px, upsampler, conditional):
    torch.manual_seed(0)
    config = ModelConfig(
        **TINY, resolution_px=resolution_px, upsampler=upsampler, conditional=conditional,
        num_classes=NUM_CLASSES if conditional else 0,
    )
    generator, discriminator = build_networks(config)
    labels = torch.randint(NUM_CLASSES, (3,)) if conditional else None
    images = generator(torch.randn(3, TINY["latent_size"]), labels)
    assert images.shape == (3, 3, resolution_px, resolution_px)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0  # not a constant (e.g. a dead head or a closed gate)
    scores = discriminator(images)
    assert scores.shape == (3, 1 + (NUM_CLASSES if conditional else 0))
    assert torch.isfinite(scores).all()


def test_every_upsampler_has_a_lightweight_block():
    assert set(DOUBLING_LAYERS) == set(UPSAMPLERS)


@pytest.mark.parametrize("resolution_px", [64, 128])
def test_reconstructions_are_pairs_with_targets_cut_from_the_input(resolution_px):
    torch.manual_seed(0)
    discriminator = LightweightDiscriminator(ModelConfig(**TINY, resolution_px=resolution_px))
    images = torch.rand(2, 3, resolution_px, resolution_px, requires_grad=True)
    scores, reconstructions = discriminator(images, reconstruct=True)
    assert scores.shape == (2, 1)
    assert len(reconstructions) == (1 if resolution_px == 64 else 2)
    half_px = resolution_px // 2
    for prediction, target in reconstructions:
        assert prediction.shape == target.shape == (2, 3, half_px, half_px)
        assert prediction.requires_grad and not target.requires_grad
    # The whole image, each target pixel the mean of its 2x2 block.
    assert torch.allclose(reconstructions[0][1], F.avg_pool2d(images, 2))
    if resolution_px == 128:
        quadrant = reconstructions[1][1]
        quadrants = [images[..., r * half_px : (r + 1) * half_px, c * half_px : (c + 1) * half_px] for r in (0, 1) for c in (0, 1)]
        assert sum(torch.equal(quadrant, candidate) for candidate in quadrants) == 1


def test_the_quadrant_follows_the_global_rng():
    discriminator = LightweightDiscriminator(ModelConfig(**TINY, resolution_px=128))
    images = torch.rand(2, 3, 128, 128)

    def drawn_quadrants(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [discriminator(images, reconstruct=True)[1][1][1] for _ in range(8)]

    first, again = drawn_quadrants(0), drawn_quadrants(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    distinct = {tuple(target.flatten()[:4].tolist()) for target in first}
    assert len(distinct) > 1  # 8 draws of 4 quadrants: not always the same one


@pytest.mark.parametrize("resolution_px", [64, 128])
def test_every_parameter_takes_part_in_every_forward(resolution_px):
    # DDP with find_unused_parameters=False fails on a parameter without a gradient.
    torch.manual_seed(0)
    discriminator = LightweightDiscriminator(ModelConfig(**TINY, resolution_px=resolution_px, conditional=True, num_classes=3))
    images = torch.rand(2, 3, resolution_px, resolution_px) * 2 - 1
    discriminator(images).sum().backward()
    assert all(p.grad is not None for p in discriminator.parameters())
    # ... though without reconstruction the decoders must not learn anything.
    assert all((p.grad == 0).all() for p in discriminator.decoders.parameters())

    discriminator.zero_grad(set_to_none=True)
    scores, reconstructions = discriminator(images, reconstruct=True)
    (scores.mean() + sum(F.mse_loss(prediction, target) for prediction, target in reconstructions)).backward()
    assert all(p.grad is not None for p in discriminator.parameters())
    for decoder in discriminator.decoders.values():
        assert any(p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_the_decoder_learns_to_reconstruct_a_fixed_batch():
    torch.manual_seed(0)
    discriminator = LightweightDiscriminator(ModelConfig(**TINY))
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3)
    images = _smooth_images(4, 64)
    losses = []
    for _ in range(40):
        _, reconstructions = discriminator(images, reconstruct=True)
        loss = sum(F.mse_loss(prediction, target) for prediction, target in reconstructions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_noise_injection_draws_from_the_global_rng_once_its_weights_are_nonzero():
    torch.manual_seed(0)
    generator = LightweightGenerator(ModelConfig(**TINY, noise_injection=True)).eval()
    noise_layers = [m for m in generator.modules() if isinstance(m, NoiseInjection)]
    assert len(noise_layers) == len(generator.blocks)
    latent = torch.randn(2, TINY["latent_size"])

    def generate(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return generator(latent)

    # Weights start at 0: noise-free, whatever the seed.
    assert torch.equal(generate(1), generate(2))
    with torch.no_grad():
        for layer in noise_layers:
            layer.weight.fill_(1.0)
    assert torch.equal(generate(1), generate(1))
    assert (generate(1) - generate(2)).abs().max() > 1e-3


def test_noise_injection_is_validated():
    with pytest.raises(ValueError, match="model.noise_injection applies to architecture='lightweight' only"):
        ModelConfig(noise_injection=True)
    with pytest.raises(ValueError, match="model.noise_injection must be true or false"):
        ModelConfig(architecture="lightweight", noise_injection="yes")
    assert ModelConfig.from_dict({"architecture": "lightweight", "noise_injection": True}).noise_injection


def test_build_networks_makes_the_lightweight_pair():
    assert "lightweight" in ARCHITECTURES and SELF_SUPERVISED_ARCHITECTURES <= set(ARCHITECTURES)
    generator, discriminator = build_networks(ModelConfig(architecture="lightweight", upsampler="upsample"))
    assert isinstance(generator, LightweightGenerator) and isinstance(discriminator, LightweightDiscriminator)
    # Default widths with FastGAN's own block stay in DCGAN's league (3.6M / 2.8M at 64 px).
    assert 3_000_000 < count_parameters(generator) < 3_300_000
    assert 3_000_000 < count_parameters(discriminator) < 3_200_000
    # Every discriminator conv is spectrally normalised, decoders included.
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert list(generator.excitations) == ["32px", "64px"]
