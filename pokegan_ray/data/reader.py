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


def open_prepared(uri: str, resolution: int, *, rows: Rows = "all"):
    """The prepared set as a `ray.data.Dataset` of raw rows: `pixels` (HWC uint8 bytes) and `label`.

    Pass it to a `TorchTrainer` (`datasets={"train": ...}`) and turn a worker's shard
    into tensors with `iter_images` (streaming) or `InMemoryImages.load` (read once).
    Only the columns training needs are read from the Parquet files. The rows stay
    compact uint8 bytes all the way to the consumer, which decodes them: on a 2-core
    machine that is ~3x faster than decoding to float32 in a Ray Data stage and moving
    4x the bytes through the object store (benchmarks/data_throughput.py).
    `rows="originals"` keeps only the un-augmented images.
    """
    import ray.data
    from ray.data.expressions import col

    if rows not in ("all", "originals"):
        raise ValueError(f"rows must be 'all' or 'originals', got {rows!r}")
    _, paths, filesystem = prepared_files(uri, resolution)
    columns = ["pixels", "label"] + (["augmentation"] if rows == "originals" else [])
    dataset = ray.data.read_parquet(paths, filesystem=filesystem, columns=columns, partitioning=None)
    if rows == "originals":
        dataset = dataset.filter(expr=col("augmentation") == 0).select_columns(["pixels", "label"])
    return dataset


def iter_images(data, *, batch_size: int, as_float: bool = True, device: torch.device | str = "cpu",
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (images NCHW, labels int64) from a Dataset or a worker's DataIterator.

    Images are float32 in [-1, 1] (the generator's range), or uint8 with `as_float=False`.
    """
    for batch in data.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=drop_last):
        images = torch.from_numpy(pixels_to_nchw(batch.column("pixels"))).to(device)
        labels = torch.from_numpy(batch.column("label").to_numpy().astype(np.int64)).to(device)
        yield (to_model_range(images) if as_float else images), labels


def pixels_to_nchw(pixels: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Raw HWC uint8 RGB bytes (one square image per row) -> an (N, 3, H, W) uint8 array."""
    flat = np.frombuffer(bytearray().join(pixels.to_pylist()), dtype=np.uint8)  # writable, for torch
    count = len(pixels)
    side = int(round((flat.size / max(count, 1) / 3) ** 0.5))
    return flat.reshape(count, side, side, 3).transpose(0, 3, 1, 2)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


@dataclass
class InMemoryImages:
    """One worker's shard held as uint8 tensors on `device`, reshuffled every epoch."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 when unlabelled

    @classmethod
    def load(cls, data, device: torch.device | str = "cpu", read_batch_size: int = 1024) -> "InMemoryImages":
        """Read a whole shard (a Ray `DataIterator` or `Dataset` from `open_prepared`) as uint8."""
        images, labels = [], []
        for batch_images, batch_labels in iter_images(data, batch_size=read_batch_size, as_float=False,
                                                      device=device):
            images.append(batch_images)
            labels.append(batch_labels)
        if not images:
            raise PrepareError("this worker's shard of the prepared set is empty: use fewer workers or more data")
        return cls(*_canonical_order(torch.cat(images), torch.cat(labels)))

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * 8

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows at `index`: float [-1, 1] images and labels."""
        return to_model_range(self.images[index]), self.labels[index]

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass: float [-1, 1] images and labels, full batches only (equal steps on every rank)."""
        if batch_size > len(self):
            raise ValueError(f"batch size {batch_size} is larger than this worker's {len(self)} images")
        order = torch.randperm(len(self), generator=generator).to(self.images.device)
        for start in range(0, len(self) - batch_size + 1, batch_size):
            yield self.batch(order[start:start + batch_size])


def _canonical_order(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort rows by their content, so a shard's order never depends on which Ray block arrived first
    (a resumed run must see its batches in the same order as the run it continues)."""
    flat = images.reshape(images.shape[0], -1)[:, ::7]  # every 7th byte tells images apart well enough
    weights = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=torch.int64)
    keys = torch.cat([(chunk.to(torch.int64) * weights).sum(dim=1) for chunk in flat.split(1024)])
    order = torch.argsort(keys * 37 + labels, stable=True)
    return images[order], labels[order]


def read_images(uri: str, resolution: int, *, rows: Rows = "originals") -> tuple[torch.Tensor, torch.Tensor]:
    """A whole prepared set (or its originals) as uint8 (N, 3, H, W) and labels, read with pyarrow in
    this process: for the FID reference images, which one process needs whole."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _, paths, filesystem = prepared_files(uri, resolution)
    images, labels = [], []
    for path in paths:
        with filesystem.open_input_file(path) as handle:
            table = pq.read_table(handle, columns=["pixels", "label", "augmentation"])
        if rows == "originals":
            table = table.filter(pc.equal(table["augmentation"], 0))
        if table.num_rows:
            images.append(torch.from_numpy(pixels_to_nchw(table.column("pixels"))))
            labels.append(torch.from_numpy(table.column("label").to_numpy().astype(np.int64)))
    return _canonical_order(torch.cat(images), torch.cat(labels))
