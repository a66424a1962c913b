"""FID/KID of the EMA generator during training, against the real originals' cached statistics."""

from __future__ import annotations

import torch

from pokegan_ray.data.reader import read_images
from pokegan_ray.metrics import RealStatsKey, default_cache_root, evaluate_generator, load_inception, \
    real_statistics
from pokegan_ray.models import ModelConfig
from pokegan_ray.storage import location
from pokegan_ray.training.config import ExperimentConfig

# The reference for FID is the real, un-augmented Pokémon: the augmentations are a training aid,
# not the distribution we want to imitate.
REFERENCE_ROWS = "originals"


class Evaluator:
    """Loads the Inception network and the real statistics on first use (computing and caching them
    next to the data set when no run has yet), then scores generators."""

    def __init__(self, experiment: ExperimentConfig, classes: list[str], dataset_hash: str,
                 class_frequencies: list[float], weights_path: str | None, device: torch.device):
        self.experiment = experiment
        self.dataset_hash = dataset_hash
        self.class_frequencies = class_frequencies or None
        self.weights_path = weights_path
        self.device = device
        self._extractor = None
        self._real = None

    def _prepare(self) -> None:
        if self._real is not None:
            return
        data = self.experiment.data
        self._extractor = load_inception(self.weights_path, device=self.device)
        real_images, _ = read_images(data.uri, data.resolution, rows=REFERENCE_ROWS)
        key = RealStatsKey.for_extractor(self._extractor, dataset_hash=self.dataset_hash, resolution_px=data.resolution,
                                         rows=REFERENCE_ROWS, num_images=real_images.shape[0])
        self._real = real_statistics(default_cache_root(location(data.uri)), key,
                                     lambda: self._extractor.features(real_images))

    def evaluate(self, generator: torch.nn.Module, model: ModelConfig | None = None) -> dict[str, float]:
        """FID/KID of `generator`; `model` describes it when it is not this experiment's own (another
        model scored against the same real statistics, N and seed, as `pokegan retrain` does)."""
        self._prepare()
        model = model or self.experiment.gan.model
        scores = evaluate_generator(
            generator, real=self._real, extractor=self._extractor, num_images=self.experiment.train.eval_images,
            batch_size=64, latent_size=model.latent_size, device=self.device,
            num_classes=model.num_classes if model.conditional else 0,
            label_probabilities=self.class_frequencies if model.conditional else None,
            seed=self.experiment.train.seed)
        return {key: float(value) for key, value in scores.items()}
