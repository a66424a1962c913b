"""Reading a prepared set back: a Ray Dataset for `ray.train.get_dataset_shard`, and an
in-memory copy of one worker's shard for many cheap epochs.

The prepared set is small (~11k images at 64 px is ~135 MB as uint8), so a training
worker normally reads its shard once, keeps it as a uint8 tensor (on its GPU when it
has one) and shuffles it there every epoch. Streaming through Ray Data every epoch
stays available for sets that do not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
import torch

from pokegan_ray.data.prepare import PrepareError, read_manifest
from pokegan_ray.storage import StorageError, location

Rows = Literal["all", "originals"]


def prepared_files(uri: str, resolution: int) -> tuple[dict, list[str], object]:
    """(manifest, shard paths inside the filesystem, filesystem) of one resolution of a prepared set."""
    try:
        root = location(uri)
    except StorageError as error:
        raise PrepareError(str(error)) from None
    manifest = read_manifest(root)
    shards = manifest["shards"].get(str(resolution))
    if not shards:
        available = ", ".join(sorted(manifest["shards"], key=int)) or "none"
        raise PrepareError(f"{root.uri} has no {resolution} px images (it has: {available}); "
                           f"re-run pokegan prepare with --resolutions including {resolution}")
    return manifest, [root.join(shard["path"]).path for shard in shards], root.filesystem


def open_prepared(uri: str, resolution: int, *, rows: Rows = "all", as_float: bool = True):
    """The prepared set as a `ray.data.Dataset` with columns `image` (NCHW) and `label` (int64, -1 = none).

    `as_float=True` yields float32 in [-1, 1] (the generator's range); `as_float=False`
    yields uint8, 4x smaller, for workers that keep their shard in memory and convert
    per batch. `rows="originals"` keeps only the un-augmented images.
    Only the columns training needs are read from the Parquet files.
    """
    import ray.data

    if rows not in ("all", "originals"):
        raise ValueError(f"rows must be 'all' or 'originals', got {rows!r}")
    _, paths, filesystem = prepared_files(uri, resolution)
    columns = ["pixels", "label"] + (["augmentation"] if rows == "originals" else [])
    dataset = ray.data.read_parquet(paths, filesystem=filesystem, columns=columns, partitioning=None)
    if rows == "originals":
        dataset = dataset.filter(expr="augmentation == 0")
    return dataset.map_batches(_PixelsToImages(resolution, as_float), batch_format="pyarrow", batch_size=256)


class _PixelsToImages:
    def __init__(self, resolution: int, as_float: bool):
        self.resolution = resolution
        self.as_float = as_float

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        images = pixels_to_nchw(batch.column("pixels"), self.resolution)
        if self.as_float:
            images = images.astype(np.float32) / 127.5 - 1.0
        return {"image": images, "label": batch.column("label").to_numpy().astype(np.int64)}


def pixels_to_nchw(pixels: pa.ChunkedArray | pa.Array, resolution: int) -> np.ndarray:
    """Raw HWC uint8 bytes (one value per row) -> an (N, 3, H, W) uint8 array."""
    flat = np.frombuffer(b"".join(pixels.to_pylist()), dtype=np.uint8)
    return flat.reshape(-1, resolution, resolution, 3).transpose(0, 3, 1, 2)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


@dataclass
class InMemoryImages:
    """One worker's shard held as uint8 tensors on `device`, reshuffled every epoch."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 when unlabelled

    @classmethod
    def load(cls, shard, device: torch.device | str = "cpu", read_batch_size: int = 1024) -> "InMemoryImages":
        """Read a whole shard (a Ray `DataIterator` or `Dataset` opened with `as_float=False`)."""
        images, labels = [], []
        for batch in shard.iter_torch_batches(batch_size=read_batch_size, dtypes={"image": torch.uint8,
                                                                                "label": torch.int64}):
            images.append(batch["image"].to(device))
            labels.append(batch["label"].to(device))
        if not images:
            raise PrepareError("this worker's shard of the prepared set is empty: use fewer workers or more data")
        return cls(torch.cat(images), torch.cat(labels))

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * 8

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass: float [-1, 1] images and labels, full batches only (equal steps on every rank)."""
        if batch_size > len(self):
            raise ValueError(f"batch size {batch_size} is larger than this worker's {len(self)} images")
        order = torch.randperm(len(self), generator=generator).to(self.images.device)
        for start in range(0, len(self) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            yield to_model_range(self.images[index]), self.labels[index]
