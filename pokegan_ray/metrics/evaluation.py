"""FID and KID of a generator against cached real statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pokegan_ray.metrics.cache import RealStatistics
from pokegan_ray.metrics.inception import InceptionFeatureExtractor, quantize_to_uint8
from pokegan_ray.metrics.statistics import KID_NUM_SUBSETS, KID_SUBSET_SIZE_MAX, fid_infinity, \
    frechet_distance_to_sample, kernel_inception_distance

# What an evaluation scores a generator by; a search ranks its trials at each rung by one of them
# (`search.signal`). Lower is better for each. FID at a larger N is `fid` with a larger train.eval_images.
SIGNALS = {
    "fid": "FID",  # Fréchet distance at the evaluation's N: biased upwards, by an amount that depends on the model
    "kid": "KID",  # unbiased MMD² (Bińkowski et al. 2018)
    "fid_infinity": "FID∞",  # FID extrapolated to infinitely many images (Chong & Forsyth 2020)
}


def sample_latents_and_labels(num_images: int, latent_size: int, *, num_classes: int = 0,
                              label_probabilities: Sequence[float] | np.ndarray | None = None,
                              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seeded latents (N, latent_size) and, for a conditional generator, labels (N,).

    Drawn on the CPU, so a seed gives the same sample on any device. Labels are uniform
    over the classes unless `label_probabilities` (one weight per class) says otherwise,
    e.g. the real type frequencies.
    """
    if num_images < 2 or latent_size < 1 or num_classes < 0:
        raise ValueError(f"need num_images >= 2, latent_size >= 1 and num_classes >= 0; got {num_images}, "
                         f"{latent_size}, {num_classes}")
    rng = torch.Generator().manual_seed(seed)
    latents = torch.randn(num_images, latent_size, generator=rng)
    if num_classes == 0:
        if label_probabilities is not None:
            raise ValueError("label_probabilities were given for an unconditional generator (num_classes = 0)")
        return latents, None
    if label_probabilities is None:
        return latents, torch.randint(0, num_classes, (num_images,), generator=rng)
    weights = torch.as_tensor(np.asarray(label_probabilities, dtype=np.float64))
    if weights.shape != (num_classes,) or (weights < 0).any() or not weights.sum() > 0:
        raise ValueError(f"label_probabilities must be {num_classes} non-negative weights with a positive sum, "
                         f"got {label_probabilities!r}")
    return latents, torch.multinomial(weights, num_images, replacement=True, generator=rng)


def evaluate_generator(generator: nn.Module, *, real: RealStatistics, extractor: InceptionFeatureExtractor,
                       num_images: int, batch_size: int, latent_size: int, device: str | torch.device,
                       num_classes: int = 0, label_probabilities: Sequence[float] | np.ndarray | None = None,
                       seed: int = 0, kid_num_subsets: int = KID_NUM_SUBSETS) -> dict[str, float | int]:
    """FID and KID of `num_images` generated images against `real`, on one process.

    The generator lives on `device` and is called as `generator(z)`, or `generator(z, labels)`
    when `num_classes > 0`, with z shaped (batch, latent_size); it must return images in
    [-1, 1], which are quantised to uint8 exactly as stored real images are. It runs in eval
    mode under no_grad and gets its previous mode back. A DDP-wrapped generator should be
    passed as `.module`.

    Returns {"fid", "kid", "kid_std", "fid_infinity", "fid_num_images": N generated,
    "fid_real_images": N real, "kid_subset_size"}. FID is biased upwards for small N, so only compare runs evaluated
    with the same N. Several processes share the work with `generated_features` (each its
    batches) and `scores_from_features` (on the one that gathered them).
    """
    check_compatible(real, extractor)
    latents, labels = sample_latents_and_labels(num_images, latent_size, num_classes=num_classes,
                                                label_probabilities=label_probabilities, seed=seed)
    features = generated_features(generator, extractor, latents, labels, batch_size=batch_size, device=device)
    return scores_from_features(real, merge_batch_features([features]), seed=seed, kid_num_subsets=kid_num_subsets)


def check_compatible(real: RealStatistics, extractor: InceptionFeatureExtractor) -> None:
    """Refuse to compare features of two different Inception networks or protocols."""
    if real.key.weights_sha256 != extractor.weights.sha256 or real.key.protocol != extractor.protocol:
        raise ValueError(f"the real statistics were made with weights {real.key.weights_sha256[:12]} / protocol "
                         f"{real.key.protocol!r}, the extractor uses {extractor.weights.sha256[:12]} / "
                         f"{extractor.protocol!r}: FID between them would be meaningless; "
                         "recompute the real statistics")


def generated_features(generator: nn.Module, extractor: InceptionFeatureExtractor, latents: torch.Tensor,
                       labels: torch.Tensor | None, *, batch_size: int, device: str | torch.device,
                       rank: int = 0, world_size: int = 1) -> dict[int, np.ndarray]:
    """{batch index: Inception features} of this process's share of the generated images.

    The images are cut into batches of `batch_size` the same way for any `world_size`, and batch b
    belongs to rank b % world_size: every image goes through the same batch on one process or on
    many, so gathering the shares gives the features a single process would have computed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    device = torch.device(device)
    was_training = generator.training
    generator.eval()
    features = {}
    try:
        with torch.no_grad():
            for index, start in enumerate(range(0, latents.shape[0], batch_size)):
                if index % world_size != rank:
                    continue
                latent_batch = latents[start:start + batch_size].to(device)
                if labels is None:
                    images = generator(latent_batch)
                else:
                    images = generator(latent_batch, labels[start:start + batch_size].to(device))
                features[index] = extractor.features(quantize_to_uint8(images))
    finally:
        generator.train(was_training)
    return features


def merge_batch_features(shares: Sequence[dict[int, np.ndarray]]) -> np.ndarray:
    """Every process's `generated_features` share, concatenated in batch order."""
    merged = {index: features for share in shares for index, features in share.items()}
    if sorted(merged) != list(range(len(merged))) or not merged:
        raise ValueError(f"the gathered shares hold batches {sorted(merged)}, not 0..n-1: a process's share is missing")
    return np.concatenate([merged[index] for index in range(len(merged))])


def scores_from_features(real: RealStatistics, fake_features: np.ndarray, *, seed: int = 0,
                         kid_num_subsets: int = KID_NUM_SUBSETS) -> dict[str, float | int]:
    """FID and KID of generated images' features against `real` (see `evaluate_generator`)."""
    kid_subset_size = min(KID_SUBSET_SIZE_MAX, real.kid_features.shape[0], fake_features.shape[0])
    kid, kid_std = kernel_inception_distance(real.kid_features, fake_features, num_subsets=kid_num_subsets,
                                             subset_size=kid_subset_size, seed=seed)
    return {
        "fid": frechet_distance_to_sample(real.mu, real.sigma_root, fake_features),
        "kid": kid,
        "kid_std": kid_std,
        "fid_infinity": fid_infinity(real.mu, real.sigma_root, fake_features, seed=seed),
        "fid_num_images": int(fake_features.shape[0]),
        "fid_real_images": int(real.num_images),
        "kid_subset_size": int(kid_subset_size),
    }
