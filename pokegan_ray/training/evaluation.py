"""FID/KID of the EMA generator during training, against the real originals' cached statistics.

With several workers every rank generates and extracts its share of the evaluation's images (the same
seeded latents on every rank, batch b on rank b % world size); rank 0 gathers the features and scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pokegan_ray.data.reader import read_images
from pokegan_ray.metrics import RealStatsKey, check_compatible, default_cache_root, generated_features, \
    load_inception, merge_batch_features, real_statistics, sample_latents_and_labels, scores_from_features
from pokegan_ray.models import ModelConfig
from pokegan_ray.storage import location
from pokegan_ray.training.config import ExperimentConfig

# The reference for FID is the real, un-augmented Pokémon: the augmentations are a training aid,
# not the distribution we want to imitate.
REFERENCE_ROWS = "originals"


# Generated images per generator + Inception call during an evaluation.
EVALUATION_BATCH = 64


class Evaluator:
    """Loads the Inception network (every rank) and the real statistics (rank 0, computing and caching
    them next to the data set when no run has yet) on first use, then scores generators."""

    def __init__(self, experiment: ExperimentConfig, classes: list[str], dataset_hash: str,
                 class_frequencies: list[float], weights_path: str | None, device: torch.device,
                 batch_size: int = EVALUATION_BATCH):
        self.experiment = experiment
        self.batch_size = batch_size
        self.dataset_hash = dataset_hash
        self.class_frequencies = class_frequencies or None
        self.weights_path = weights_path
        self.device = device
        self._extractor = None
        self._real = None

    def _prepare(self, rank: int = 0) -> None:
        if self._extractor is None:
            self._extractor = load_inception(self.weights_path, device=self.device)
        if rank != 0 or self._real is not None:
            return
        data = self.experiment.data
        real_images, _ = read_images(data.uri, data.resolution, rows=REFERENCE_ROWS)
        key = RealStatsKey.for_extractor(self._extractor, dataset_hash=self.dataset_hash, resolution_px=data.resolution,
                                         rows=REFERENCE_ROWS, num_images=real_images.shape[0])
        self._real = real_statistics(default_cache_root(location(data.uri)), key,
                                     lambda: self._extractor.features(real_images))
        check_compatible(self._real, self._extractor)

    def features(self, generator: torch.nn.Module, model: ModelConfig | None = None, *,
                 num_images: int | None = None, rank: int = 0, world_size: int = 1) -> dict[int, Any]:
        """This rank's share of the Inception features of `num_images` (default train.eval_images) images
        from the run's seeded latents: {batch index: features} (see `generated_features`)."""
        self._prepare(rank)
        model = model or self.experiment.gan.model
        latents, labels = sample_latents_and_labels(
            num_images or self.experiment.train.eval_images, model.latent_size,
            num_classes=model.num_classes if model.conditional else 0,
            label_probabilities=self.class_frequencies if model.conditional else None,
            seed=self.experiment.train.seed)
        return generated_features(generator, self._extractor, latents, labels, batch_size=self.batch_size,
                                  device=self.device, rank=rank, world_size=world_size)

    def scores(self, features: np.ndarray) -> dict[str, float]:
        """FID, KID, FID∞ ... of generated images' features (rows) against the real statistics."""
        self._prepare()
        scores = scores_from_features(self._real, features, seed=self.experiment.train.seed)
        return {key: float(value) for key, value in scores.items()}

    def evaluate(self, generator: torch.nn.Module, model: ModelConfig | None = None, *, rank: int = 0,
                 world_size: int = 1) -> dict[str, float]:
        """FID/KID of `generator`; `model` describes it when it is not this experiment's own (another
        model scored against the same real statistics, N and seed, as `pokegan retrain` does).

        With `world_size` > 1 every rank of the process group must call it (a collective): each
        extracts its share, rank 0 returns the scores and the other ranks return {}.
        """
        share = self.features(generator, model, rank=rank, world_size=world_size)
        shares: list[Any] = [share]
        if world_size > 1:
            shares = [None] * world_size
            dist.all_gather_object(shares, share)
        if rank != 0:
            return {}
        return self.scores(merge_batch_features(shares))


def evaluate_checkpoint(checkpoint_uri: str, *, data_uri: str | None = None, num_images: int | None = None,
                        weights_path: str | None = None, device: str = "cpu") -> tuple[dict[str, float], int, str]:
    """A checkpoint's scores from `num_images` generated images (default: as many as the data set's
    originals) against every original: `(scores, the checkpoint's step, the data set's URI)`, what
    `pokegan evaluate` prints. The data set is the one the run trained on unless `data_uri` names another."""
    from pokegan_ray.data.prepare import class_frequencies, read_manifest
    from pokegan_ray.training.checkpoint import load_generator, read_checkpoint

    state = read_checkpoint(checkpoint_uri, map_location=device)
    generator, experiment = load_generator(state, device)
    data_uri = data_uri or experiment.data.uri
    manifest = read_manifest(location(data_uri))
    experiment = experiment.with_overrides({"data": {"uri": data_uri},
                                            "train": {"eval_images": num_images or manifest["kept"]}})
    evaluator = Evaluator(experiment, manifest["classes"], manifest["content_hash"], class_frequencies(manifest),
                          weights_path, torch.device(device))
    return evaluator.evaluate(generator), int(state["step"]), data_uri
