"""`pokegan prepare`: build the augmented set once, as a Ray Data job, into Parquet shards.

Stages (each visible in the log):

1. list   - the driver lists the source's image files and labels (no image bytes read);
2. scan   - Ray tasks read every file, hash it and decode it fully; unusable files get
            a reason. The content hash of inputs + options is known before any write,
            so a re-run with the same inputs is a no-op;
3. build  - Ray tasks decode the usable files again, pad, augment and resize them, and
            write Parquet under `DEST/data-<hash>/resolution=<px>/`;
4. commit - `manifest.json` is written last, atomically, and lists every shard. A reader
            only ever follows the manifest, so it never sees a half-written set. Shards of
            a previous, replaced set are deleted afterwards.

On any failure the new `data-<hash>/` folder is removed and the previous manifest, if
any, stays in place.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import logging
import posixpath
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from pokegan_ray import terminal
from pokegan_ray.cluster import ClusterError, ClusterOptions, wait_for_capacity
from pokegan_ray.data import images as image_ops
from pokegan_ray.data.sources import BUNDLED, Source, SourceError, open_source
from pokegan_ray.storage import Location, StorageError, location

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Bump when decoding or augmentation changes what rows look like, so old sets are rebuilt.
PIPELINE_VERSION = 1
MANIFEST_NAME = "manifest.json"
PIXEL_LAYOUT = "HWC uint8 RGB, raw bytes (resolution x resolution x 3)"


class PrepareError(RuntimeError):
    """Prepare cannot go on; the message says what to fix. Nothing partial is left behind."""


@dataclass(frozen=True)
class PrepareOptions:
    resolutions: tuple[int, ...] = (64, 128)
    augment: int = 10  # extra versions per image; the seeds multiplied their sets by 10-13
    seed: int = 0
    min_side_px: int = 24
    max_pixels: int = image_ops.DecodeLimits().max_pixels
    limit: int | None = None  # only the first N source images (quick trials)

    def __post_init__(self):
        if not self.resolutions or any(r not in (32, 64, 128, 256) for r in self.resolutions):
            raise PrepareError(f"resolutions must be chosen from 32, 64, 128, 256; got {list(self.resolutions)}")
        if not 0 <= self.augment <= 64:
            raise PrepareError(f"augment must be between 0 and 64 extra versions per image; got {self.augment}")
        if self.limit is not None and self.limit < 1:
            raise PrepareError(f"limit must be a positive number of images; got {self.limit}")

    @property
    def limits(self) -> image_ops.DecodeLimits:
        return image_ops.DecodeLimits(self.min_side_px, self.max_pixels)


@dataclass(frozen=True)
class PreparePlan:
    """What `prepare` checked before it needs Ray: the source's listing and a destination it can write."""

    source: Source
    source_uri: str  # the URI prepare can be called with again (the manifest's "source" is for people)
    dest: Location
    options: PrepareOptions
    dest_existed: bool  # a failed prepare removes the destination only when it created it


def plan_prepare(source_uri: str, dest_uri: str, options: PrepareOptions = PrepareOptions()) -> PreparePlan:
    """List the source and check the destination, without Ray: a mistake here costs no cluster start."""
    try:
        source = open_source(source_uri, limit=options.limit)
        dest = location(dest_uri)
        source_uri = BUNDLED if source_uri == BUNDLED else location(source_uri).uri
    except (SourceError, StorageError) as error:
        raise PrepareError(str(error)) from None
    log.info("list: %d image files in %s (labels: %s, %d classes, %d non-image files ignored)",
             len(source.images), source.description, source.label_source, len(source.classes),
             source.ignored_files)
    existed = _exists(dest)
    try:
        dest.check_writable()
    except StorageError as error:
        raise PrepareError(f"the destination cannot be written: {error}") from None
    return PreparePlan(source, source_uri, dest, options, existed)


def prepare(source_uri: str, dest_uri: str, options: PrepareOptions = PrepareOptions(),
            cluster: ClusterOptions = ClusterOptions(), plan: PreparePlan | None = None) -> dict:
    """Build the prepared set at `dest_uri` and return its manifest (`plan`: what `plan_prepare` already
    checked for these arguments, so the source is listed once).

    On a cluster with no free CPU yet (an autoscaling cluster whose head takes no work) it first
    waits for one: Ray Data holds its tasks back while the cluster has no room for any of them,
    so they alone would never make the autoscaler add a node."""
    import ray.data  # deferred: importing Ray costs seconds and is not needed to list a source

    plan = plan or plan_prepare(source_uri, dest_uri, options)
    try:
        wait_for_capacity([{"CPU": 1.0}], f"prepare {plan.dest.uri}", cluster)
    except ClusterError as error:
        raise PrepareError(str(error)) from None
    try:
        return _prepare(plan.source, plan.source_uri, plan.dest, plan.options, ray.data)
    except BaseException:
        if not plan.dest_existed:
            _quietly(plan.dest.delete_tree)
        raise


def _prepare(source: Source, source_uri: str, dest: Location, options: PrepareOptions, ray_data) -> dict:
    by_path = {image.path: image for image in source.images}
    scanned = _scan(source, options, ray_data)
    content_hash = _content_hash(source, scanned, options)
    previous = _previous_manifest(dest)
    if previous is not None and previous.get("content_hash") == content_hash:
        log.info("up to date: %s already holds this set (content hash %s); nothing written",
                 dest.uri, content_hash[:12])
        return previous

    skipped = [{"source": by_path[path].key, "reason": reason}
               for path, (_, reason) in sorted(scanned.items(), key=lambda item: by_path[item[0]].key) if reason]
    usable = [by_path[path] for path, (_, reason) in scanned.items() if not reason]
    _log_skipped(skipped)
    if not usable:
        raise PrepareError(f"no usable image in {source.description}: all {len(skipped)} files were skipped "
                           "(see the reasons above)")

    data_dir = dest.join(f"data-{content_hash[:16]}")
    try:
        shards = _build(source, usable, data_dir, options, ray_data)
        manifest = _manifest(source, source_uri, usable, skipped, shards, content_hash, options)
        dest.join(MANIFEST_NAME).write_bytes_atomic(json.dumps(manifest, indent=2).encode())
    except BaseException:
        _quietly(data_dir.delete_tree)
        raise
    if previous is not None:
        _remove_replaced(dest, previous, manifest)
    log.info("done: kept %d images, wrote %d rows (%s), skipped %d; manifest %s",
             manifest["kept"], manifest["rows"],
             ", ".join(f"{r} px: {n}" for r, n in manifest["rows_per_resolution"].items()),
             len(skipped), dest.join(MANIFEST_NAME).uri)
    return manifest


def _scan(source: Source, options: PrepareOptions, ray_data) -> dict[str, tuple[str, str]]:
    """path -> (sha256, reason); reason is "" for a usable image."""
    limits = options.limits

    def scan_batch(batch):
        digests, reasons = [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            digests.append(image_ops.sha256_hex(data))
            try:
                image_ops.decode_square_rgb(data, path, limits)
                reasons.append("")
            except image_ops.UnusableImage as unusable:
                reasons.append(unusable.reason)
        return {"path": np.asarray(batch["path"], dtype=object), "sha256": np.asarray(digests, dtype=object),
                "reason": np.asarray(reasons, dtype=object)}

    log.info("scan: hashing and decoding %d files", len(source.images))
    dataset = ray_data.read_binary_files([image.path for image in source.images], filesystem=source.filesystem,
                                         include_paths=True)
    scanned = {}
    # Streamed back as Ray Data finishes each block, so the driver counts the files as they are scanned.
    with terminal.Counter("scan", len(source.images), "files") as counter:
        for batch in dataset.map_batches(scan_batch, batch_size=32, batch_format="numpy").iter_batches(
                batch_size=None, batch_format="numpy"):
            scanned.update((path, (sha256, reason)) for path, sha256, reason in
                           zip(batch["path"], batch["sha256"], batch["reason"]))
            counter.advance(len(batch["path"]))
    return scanned


def _content_hash(source: Source, scanned: dict[str, tuple[str, str]], options: PrepareOptions) -> str:
    """Hash of every input's bytes and labels and of every option that shapes the rows."""
    inputs = sorted((image.key, scanned[image.path][0], list(image.types)) for image in source.images)
    described = {
        "format_version": FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "options": _options_record(options),
        "classes": list(source.classes),
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _options_record(options: PrepareOptions) -> dict:
    record = dataclasses.asdict(options)
    record["resolutions"] = sorted(options.resolutions)
    return record


class _BuildRows:
    """Ray Data UDF: raw file bytes -> one row per (augmentation, resolution); each batch's row count is added
    to `rows_built` (a `RowCounter` actor) for the driver's progress."""

    def __init__(self, by_path, classes, options: PrepareOptions, rows_built=None):
        self.by_path = by_path
        self.class_index = {name: index for index, name in enumerate(classes)}
        self.options = options
        self.work_px = 2 * max(options.resolutions)
        self.rows_built = rows_built

    def __call__(self, batch):
        columns = collections.defaultdict(list)
        for path, data in zip(batch["path"], batch["bytes"]):
            image = self.by_path[path]
            square = image_ops.decode_square_rgb(data, path, self.options.limits)
            label = self.class_index[image.types[0]] if image.types else -1
            for augmentation_id, version in image_ops.versions(square, image.key, count=self.options.augment,
                                                                seed=self.options.seed, work_px=self.work_px):
                for resolution in self.options.resolutions:
                    pixels = np.asarray(image_ops.resize(version, resolution), dtype=np.uint8)
                    columns["pixels"].append(pixels.tobytes())
                    columns["resolution"].append(resolution)
                    columns["label"].append(label)
                    columns["type_primary"].append(image.types[0] if image.types else None)
                    columns["type_secondary"].append(image.types[1] if len(image.types) > 1 else None)
                    columns["source"].append(image.key)
                    columns["augmentation"].append(augmentation_id)
        if self.rows_built is not None:
            self.rows_built.add.remote(len(columns["pixels"]))  # not waited for: progress only
        return {
            "pixels": np.asarray(columns["pixels"], dtype=object),
            "resolution": np.asarray(columns["resolution"], dtype=np.int16),
            "label": np.asarray(columns["label"], dtype=np.int16),
            "type_primary": np.asarray(columns["type_primary"], dtype=object),
            "type_secondary": np.asarray(columns["type_secondary"], dtype=object),
            "source": np.asarray(columns["source"], dtype=object),
            "augmentation": np.asarray(columns["augmentation"], dtype=np.int16),
        }


def _build(source: Source, usable, data_dir: Location, options: PrepareOptions, ray_data) -> dict[str, list]:
    log.info("build: %d images x %d versions x resolutions %s -> %s", len(usable), options.augment + 1,
             list(options.resolutions), data_dir.uri)
    _quietly(data_dir.delete_tree)  # leftovers of an interrupted run with the same hash
    dataset = ray_data.read_binary_files([image.path for image in usable], filesystem=source.filesystem,
                                         include_paths=True)
    rows_built = row_counter()
    rows = dataset.map_batches(_BuildRows({image.path: image for image in usable}, source.classes, options,
                                          rows_built), batch_size=4, batch_format="numpy")
    total = len(usable) * (options.augment + 1) * len(options.resolutions)
    with terminal.Counter("build", total, "rows") as counter:
        # The rows are written where they are built; the driver learns how many from the counter.
        built = threading.Event()
        watcher = threading.Thread(target=_follow, args=(rows_built, counter, built), daemon=True)
        watcher.start()
        try:
            rows.write_parquet(data_dir.path, filesystem=data_dir.filesystem, partition_cols=["resolution"],
                               compression="zstd")
        finally:
            built.set()
            watcher.join(timeout=10)
        counter.set(total)
    return _list_shards(data_dir)


class RowCounter:
    """A count the build tasks add to (a Ray actor that takes no CPU), read by the driver."""

    def __init__(self):
        self.count = 0

    def add(self, amount: int) -> None:
        self.count += amount

    def value(self) -> int:
        return self.count


def row_counter():
    import ray

    return ray.remote(num_cpus=0)(RowCounter).remote()


def _follow(rows_built, counter: terminal.Counter, built: threading.Event, interval: float = 0.5) -> None:
    """Copy the actor's count into the driver's progress until the build is done."""
    import ray

    while not built.wait(interval):
        try:
            counter.set(ray.get(rows_built.value.remote(), timeout=5))
        except Exception as error:  # noqa: BLE001 - progress only
            log.debug("rows built: %s", error)


def _list_shards(data_dir: Location) -> dict[str, list]:
    """resolution -> [{"path": relative to the set root, "rows": n}], from the Parquet footers."""
    root = posixpath.dirname(data_dir.path)
    shards: dict[str, list] = collections.defaultdict(list)
    for info in data_dir.list_files():
        if not info.path.endswith(".parquet"):
            continue
        partition = posixpath.basename(posixpath.dirname(info.path))  # "resolution=64"
        resolution = partition.split("=", 1)[1]
        rows = pq.ParquetFile(data_dir.filesystem.open_input_file(info.path)).metadata.num_rows
        shards[resolution].append({"path": posixpath.relpath(info.path, root), "rows": rows})
    return dict(shards)


def _manifest(source: Source, source_uri: str, usable, skipped, shards, content_hash: str,
              options: PrepareOptions) -> dict:
    rows_per_resolution = {res: sum(s["rows"] for s in shards.get(str(res), [])) for res in
                           sorted(options.resolutions)}
    class_counts = collections.Counter(image.types[0] for image in usable if image.types)
    return {
        "format_version": FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "content_hash": content_hash,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source.description,
        "source_uri": source_uri,
        "options": _options_record(options),
        "kept": len(usable),
        "rows": sum(rows_per_resolution.values()),
        "rows_per_resolution": {str(res): n for res, n in rows_per_resolution.items()},
        "originals_per_resolution": len(usable),
        "classes": list(source.classes),
        "class_counts": {name: class_counts.get(name, 0) for name in source.classes},
        "labelled": sum(1 for image in usable if image.types),
        "label_source": source.label_source,
        "skipped": skipped,
        "ignored_non_images": source.ignored_files,
        "pixel_layout": PIXEL_LAYOUT,
        "columns": ["pixels", "label", "type_primary", "type_secondary", "source", "augmentation"],
        "shards": {res: sorted(files, key=lambda s: s["path"]) for res, files in sorted(shards.items())},
    }


def read_manifest(dest: Location) -> dict:
    try:
        manifest = json.loads(dest.join(MANIFEST_NAME).read_bytes())
    except StorageError as error:
        raise PrepareError(f"no prepared set at {dest.uri} ({error}); run `pokegan prepare --dest {dest.uri}`") \
            from None
    except json.JSONDecodeError as error:
        raise PrepareError(f"{dest.join(MANIFEST_NAME).uri} is not valid JSON ({error}); re-run pokegan prepare") \
            from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PrepareError(f"{dest.uri} has format version {manifest.get('format_version')}, this pokegan reads "
                           f"{FORMAT_VERSION}; re-run `pokegan prepare --dest {dest.uri}`")
    return manifest


def class_frequencies(manifest: dict) -> list[float]:
    """Each class's share of the kept images, in the manifest's class order ([] when unlabelled)."""
    counts = manifest.get("class_counts", {})
    total = sum(counts.values())
    return [counts.get(name, 0) / total for name in manifest["classes"]] if total else []


def _previous_manifest(dest: Location) -> dict | None:
    """The manifest already at `dest`, or None when there is none we can read (it will be replaced)."""
    if not dest.join(MANIFEST_NAME).exists():
        return None
    try:
        return read_manifest(dest)
    except PrepareError as error:
        log.warning("replacing the set at %s: %s", dest.uri, error)
        return None


def _remove_replaced(dest: Location, previous: dict, current: dict) -> None:
    keep = {shard["path"].split("/", 1)[0] for files in current["shards"].values() for shard in files}
    old = {shard["path"].split("/", 1)[0] for files in previous.get("shards", {}).values() for shard in files}
    for folder in sorted(old - keep):
        _quietly(dest.join(folder).delete_tree)


def _log_skipped(skipped: list[dict]) -> None:
    if not skipped:
        return
    by_reason = collections.Counter(entry["reason"].split(":", 1)[0] for entry in skipped)
    for entry in skipped:
        log.debug("skipped %s: %s", entry["source"], entry["reason"])
    log.warning("skipped %d files:", len(skipped))
    for reason, count in by_reason.most_common():
        example = next(e["source"] for e in skipped if e["reason"].split(":", 1)[0] == reason)
        log.warning("  %4d  %s (e.g. %s)", count, reason, example)


def _exists(dest: Location) -> bool:
    try:
        return dest.exists()
    except StorageError as error:
        raise PrepareError(f"the destination cannot be reached: {error}") from None


def _quietly(action) -> None:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - cleanup must not hide the original error
        log.warning("cleanup failed: %s", error)
