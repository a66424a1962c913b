"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With ~1000 training images a discriminator memorises the real set within a few thousand
steps and its feedback to G collapses. DiffAugment applies the same random, differentiable
transforms to real and fake images every time they enter D, so D cannot memorise exact
pixels, and because the transforms are differentiable G still gets gradients through them.
Each sample draws its own transform; real and fake batches draw from the same distribution.

The transforms follow the authors' reference code (images in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Fractions of the image side, as in the reference code.
_TRANSLATION_RATIO = 0.125
_CUTOUT_RATIO = 0.5


def _per_sample_uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def random_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_per_sample_uniform(x) - 0.5)


def random_saturation(x: torch.Tensor) -> torch.Tensor:
    grey = x.mean(dim=1, keepdim=True)
    return (x - grey) * (_per_sample_uniform(x) * 2) + grey


def random_contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample_uniform(x) + 0.5) + mean


def random_translation(x: torch.Tensor) -> torch.Tensor:
    """Shift each image by up to 1/8 of its side, filling with zeros (mid-grey in [-1, 1])."""
    batch, _, height, width = x.shape
    max_shift_y, max_shift_x = int(height * _TRANSLATION_RATIO + 0.5), int(width * _TRANSLATION_RATIO + 0.5)
    shift_y = torch.randint(-max_shift_y, max_shift_y + 1, (batch, 1, 1), device=x.device)
    shift_x = torch.randint(-max_shift_x, max_shift_x + 1, (batch, 1, 1), device=x.device)
    index_b, index_y, index_x = torch.meshgrid(
        torch.arange(batch, device=x.device),
        torch.arange(height, device=x.device),
        torch.arange(width, device=x.device),
        indexing="ij",
    )
    # Read from a 1-pixel zero border: every source index that falls off the image lands on it.
    index_y = torch.clamp(index_y + shift_y + 1, 0, height + 1)
    index_x = torch.clamp(index_x + shift_x + 1, 0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[index_b, index_y, index_x].permute(0, 3, 1, 2).contiguous()


def random_cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero one square of half the image side per image, at a random centre (it may hang over the edge)."""
    batch, _, height, width = x.shape
    cut_h, cut_w = int(height * _CUTOUT_RATIO + 0.5), int(width * _CUTOUT_RATIO + 0.5)
    centre_y = torch.randint(0, height + (1 - cut_h % 2), (batch, 1, 1), device=x.device)
    centre_x = torch.randint(0, width + (1 - cut_w % 2), (batch, 1, 1), device=x.device)
    index_b, index_y, index_x = torch.meshgrid(
        torch.arange(batch, device=x.device),
        torch.arange(cut_h, device=x.device),
        torch.arange(cut_w, device=x.device),
        indexing="ij",
    )
    index_y = torch.clamp(index_y + centre_y - cut_h // 2, 0, height - 1)
    index_x = torch.clamp(index_x + centre_x - cut_w // 2, 0, width - 1)
    mask = torch.ones(batch, height, width, dtype=x.dtype, device=x.device)
    mask[index_b, index_y, index_x] = 0
    return x * mask.unsqueeze(1)


# Policy word -> the transforms it applies, in order.
AUGMENTATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (random_brightness, random_saturation, random_contrast),
    "translation": (random_translation,),
    "cutout": (random_cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """"color,translation" -> ["color", "translation"]; "" -> []; an unknown word is a ValueError."""
    words = [word.strip() for word in policy.split(",") if word.strip()]
    for word in words:
        if word not in AUGMENTATIONS:
            raise ValueError(f"unknown DiffAugment transform {word!r}; choose from: {', '.join(AUGMENTATIONS)}")
    return words


def diff_augment(x: torch.Tensor, policy: str, probability: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Apply the policy's transforms to a batch (B, C, H, W); an empty policy returns `x` itself.

    With `probability` below 1 each sample gets each policy word's transforms with that probability
    (drawn per sample and word, as StyleGAN2-ADA does per transform). It may be a 0-dim tensor on the
    device (adaptive augmentation), so choosing costs no host synchronisation.
    """
    always = isinstance(probability, (int, float)) and probability >= 1.0
    for word in parse_policy(policy):
        augmented = x
        for transform in AUGMENTATIONS[word]:
            augmented = transform(augmented)
        if always:
            x = augmented
        else:
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < probability
            x = torch.where(chosen, augmented, x)
    return x
