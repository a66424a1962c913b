"""Reading a prepared set back through Ray Data, and sharding it across Ray Train workers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from image_files import encode, pokemon_like, write_files
from pokegan_ray.data import InMemoryImages, PrepareError, PrepareOptions, iter_images, open_prepared, prepare

IMAGES, AUGMENT = 4, 2


@pytest.fixture(scope="module")
def prepared(ray_cluster, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("labelled")
    colours = {"fire": (230, 60, 20), "water": (30, 90, 230)}
    write_files(folder, {f"{kind}/{i}.png": encode(Image.fromarray(pokemon_like(64, colours[kind], seed=i)), "PNG")
                         for kind in colours for i in range(IMAGES // 2)})
    dest = str(tmp_path_factory.mktemp("prepared"))
    prepare(str(folder), dest, PrepareOptions(resolutions=(32, 64), augment=AUGMENT, seed=1))
    return dest


def test_rows_come_back_as_float_nchw_in_range_with_labels(prepared):
    batches = list(iter_images(open_prepared(prepared, 32), batch_size=5))
    assert [images.shape[0] for images, _ in batches] == [5, 5, 2]
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert images.shape == (IMAGES * (AUGMENT + 1), 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.max() == 1.0  # the white background maps to exactly +1
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6
    # Channel order is RGB: "fire" (label 0) images are redder than "water" (label 1) ones.
    red_minus_blue = (images[:, 0] - images[:, 2]).mean(dim=(1, 2))
    assert (red_minus_blue[labels == 0] > red_minus_blue[labels == 1].max()).all()


def test_originals_only_and_other_resolution(prepared):
    originals = torch.cat([images for images, _ in iter_images(open_prepared(prepared, 64, rows="originals"),
                                                                batch_size=100)])
    assert originals.shape == (IMAGES, 3, 64, 64)
    with pytest.raises(PrepareError, match="has no 128 px images"):
        open_prepared(prepared, 128)


def test_in_memory_shard_matches_the_streamed_float_images(prepared):
    in_memory = InMemoryImages.load(open_prepared(prepared, 32))
    assert in_memory.images.dtype == torch.uint8 and len(in_memory) == 12
    streamed = torch.cat([images for images, _ in iter_images(open_prepared(prepared, 32), batch_size=100)])
    epoch = list(in_memory.epoch(batch_size=5, generator=torch.Generator().manual_seed(0)))
    assert [images.shape[0] for images, _ in epoch] == [5, 5]  # full batches only
    seen = torch.cat([images for images, _ in epoch])
    # Every image of the epoch is one of the streamed images, bit for bit.
    streamed_keys = {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in streamed}
    assert all(hashlib.sha1(image.numpy().tobytes()).hexdigest() in streamed_keys for image in seen)


def _record_shard(config):
    """Ray Train worker: write the hashes of every image in this worker's shard to a file."""
    import ray.train

    from pokegan_ray.data import iter_images

    shard = ray.train.get_dataset_shard("train")
    hashes = [hashlib.sha1(image.numpy().tobytes()).hexdigest()
              for images, _ in iter_images(shard, batch_size=4) for image in images]
    rank = ray.train.get_context().get_world_rank()
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(hashes))


def test_two_train_workers_get_disjoint_shards_that_cover_the_set(prepared, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    dataset = open_prepared(prepared, 32)
    everything = [hashlib.sha1(image.numpy().tobytes()).hexdigest()
                  for images, _ in iter_images(dataset, batch_size=100) for image in images]
    assert len(set(everything)) == len(everything) == 12

    trainer = TorchTrainer(
        _record_shard, train_loop_config={"out": str(tmp_path)}, datasets={"train": dataset},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "runs"), name="shards"))
    trainer.fit()

    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first and second
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(everything)
