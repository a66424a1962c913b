"""The model registry: promoted generators in the object store, the current champion, their history.

Layout under `REGISTRY/models/NAME/`:

    index.json                  the champion's version number and every promotion, oldest first
    lock.json                   present while a retrain runs (see operations.lock)
    versions/0001/generator.pt  the EMA generator: tensors and plain values only (weights_only=True)
    versions/0001/model.json    what it is: config, data set hash and classes, FID/KID and N, time, source run
    versions/0001/config.yaml   the resolved training config, for people (no secrets: URIs only)
    versions/0001/samples.png   the source run's last sample grid

A promotion writes the whole version folder first (model.json last) and then replaces
`index.json` in one atomic write, so a reader that follows the index never sees a
half-promoted model. Versions are never deleted or rewritten; a new version gets the next
number after every folder that exists, even an orphan left by a crash before its index swap.
"""

from __future__ import annotations

import datetime
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import torch
import yaml

from pokegan_ray.operations.lock import DEFAULT_TTL_SECONDS, ObjectStoreLock
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training.checkpoint import CheckpointError, checkpoint_bytes, load_tensors

DEFAULT_MODEL_NAME = "pokegan"
MODELS_FOLDER = "models"
VERSIONS_FOLDER = "versions"
INDEX_FILE = "index.json"
LOCK_FILE = "lock.json"
GENERATOR_FILE = "generator.pt"
RECORD_FILE = "model.json"
CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.png"
INDEX_FORMAT_VERSION = 1
MODEL_FORMAT_VERSION = 1
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class RegistryError(RuntimeError):
    """The registry cannot be read or written; the message names the object and what to do."""


@dataclass(frozen=True)
class ModelVersion:
    """One promoted model: its number, folder and `model.json` record."""

    number: int
    folder: Location
    record: dict[str, Any]

    @property
    def label(self) -> str:
        return version_label(self.number)

    @property
    def generator_uri(self) -> str:
        return self.folder.join(GENERATOR_FILE).uri


def version_label(number: int) -> str:
    return f"v{number:04d}"


class ModelRegistry:
    """`ModelRegistry("s3://bucket/registry")`: the models named NAME in that object store."""

    def __init__(self, registry_uri: str, name: str = DEFAULT_MODEL_NAME):
        if not _NAME_PATTERN.fullmatch(name):
            raise RegistryError(f"model name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
                                "starting with a letter or digit")
        try:
            self.base = location(registry_uri)
            is_file = self.base.is_file()
        except StorageError as error:
            raise RegistryError(str(error)) from None
        if is_file:
            raise RegistryError(f"the registry {registry_uri} is a file; a registry is a folder (a local path "
                                "or s3://bucket/prefix) that pokegan retrain creates and fills")
        self.name = name
        self.root = self.base.join(MODELS_FOLDER, name)

    def lock(self, owner: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> ObjectStoreLock:
        return ObjectStoreLock(self.root.join(LOCK_FILE), owner=owner, ttl_seconds=ttl_seconds)

    # -- reading ---------------------------------------------------------------
    def read_index(self) -> dict[str, Any]:
        """The index; an empty one (no champion, no versions) when nothing was promoted yet."""
        index_location = self.root.join(INDEX_FILE)
        try:
            if not index_location.exists():
                return {"format_version": INDEX_FORMAT_VERSION, "name": self.name, "champion": None, "versions": []}
            index = json.loads(index_location.read_bytes())
        except StorageError as error:
            raise RegistryError(str(error)) from None
        except ValueError as error:
            raise RegistryError(f"{index_location.uri} is not valid JSON ({error}); restore it from the "
                                f"versions/*/model.json records") from None
        if not isinstance(index, dict) or index.get("format_version") != INDEX_FORMAT_VERSION:
            raise RegistryError(f"{index_location.uri} is not a registry index of format {INDEX_FORMAT_VERSION}")
        return index

    def champion(self) -> ModelVersion | None:
        number = self.read_index().get("champion")
        return None if number is None else self.version(int(number))

    def version(self, number: int) -> ModelVersion:
        folder = self.root.join(VERSIONS_FOLDER, f"{number:04d}")
        record_location = folder.join(RECORD_FILE)
        try:
            record = json.loads(record_location.read_bytes())
        except StorageError:
            raise RegistryError(f"{self.root.uri} has no model {version_label(number)} (no "
                                f"{record_location.uri})") from None
        except ValueError as error:
            raise RegistryError(f"{record_location.uri} is not valid JSON ({error})") from None
        return ModelVersion(number, folder, record)

    def load_generator_state(self, version: ModelVersion,
                             map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The version's `generator.pt`, loaded with weights_only=True: a file that carries code is
        refused (CheckpointError) before anything in it runs."""
        target = version.folder.join(GENERATOR_FILE)
        try:
            data = target.read_bytes()
        except StorageError as error:
            raise RegistryError(str(error)) from None
        state = load_tensors(data, target.uri, map_location=map_location)
        if state.get("format_version") != MODEL_FORMAT_VERSION:
            raise CheckpointError(f"{target.uri} has model format {state.get('format_version')!r}; this pokegan "
                                  f"reads format {MODEL_FORMAT_VERSION}")
        missing = [key for key in ("generator_ema", "config", "classes") if key not in state]
        if missing:
            raise CheckpointError(f"{target.uri} lacks {', '.join(missing)}; it is not a pokegan registry model")
        return state

    # -- writing (hold the lock) -------------------------------------------------
    def promote(self, *, generator_ema: dict[str, torch.Tensor], config: dict[str, Any], classes: list[str],
                dataset: dict[str, Any], evaluation: dict[str, Any], source: dict[str, Any],
                training: dict[str, Any], sample_grid_png: bytes | None = None,
                now: datetime.datetime | None = None) -> ModelVersion:
        """Write a new version and make it the champion. The caller holds the registry's lock."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        index = self.read_index()
        previous = index.get("champion")
        number = self._next_number(index)
        folder = self.root.join(VERSIONS_FOLDER, f"{number:04d}")
        record = {
            "format_version": MODEL_FORMAT_VERSION,
            "name": self.name,
            "version": number,
            "label": version_label(number),
            "promoted_at": now.isoformat(timespec="seconds"),
            "replaced": None if previous is None else version_label(int(previous)),
            "dataset": dataset,
            "classes": list(classes),
            "evaluation": evaluation,
            "source": source,
            "training": training,
            "config": config,
        }
        model_state = {"format_version": MODEL_FORMAT_VERSION, "generator_ema": generator_ema, "config": config,
                       "classes": list(classes), "dataset_hash": dataset.get("content_hash")}
        try:
            folder.join(GENERATOR_FILE).write_bytes_atomic(checkpoint_bytes(model_state))
            folder.join(CONFIG_FILE).write_bytes_atomic(yaml.safe_dump(config, sort_keys=False).encode())
            if sample_grid_png:
                folder.join(SAMPLES_FILE).write_bytes_atomic(sample_grid_png)
            # Last inside the folder: a version with its model.json is complete.
            folder.join(RECORD_FILE).write_bytes_atomic(json.dumps(record, indent=2).encode())
            index = {
                **index,
                "champion": number,
                "updated_at": record["promoted_at"],
                "versions": [*index.get("versions", []), {
                    "version": number,
                    "label": record["label"],
                    "promoted_at": record["promoted_at"],
                    "replaced": record["replaced"],
                    "fid": evaluation.get("fid"),
                    "fid_num_images": evaluation.get("fid_num_images"),
                    "kid": evaluation.get("kid"),
                    "dataset_hash": dataset.get("content_hash"),
                    "source_run": source.get("run_uri"),
                }],
            }
            # The swap: only now does any reader see the new champion.
            self.root.join(INDEX_FILE).write_bytes_atomic(json.dumps(index, indent=2).encode())
        except StorageError as error:
            raise RegistryError(f"promoting {version_label(number)} failed, the champion is unchanged: "
                                f"{error}") from None
        return ModelVersion(number, folder, record)

    def _next_number(self, index: dict[str, Any]) -> int:
        numbers = [int(entry["version"]) for entry in index.get("versions", [])]
        try:
            files = self.root.join(VERSIONS_FOLDER).list_files()
        except StorageError:
            files = []  # no versions folder yet
        versions_path = self.root.join(VERSIONS_FOLDER).path
        for info in files:
            first = posixpath.relpath(info.path, versions_path).split("/", 1)[0]
            if first.isdigit():
                numbers.append(int(first))
        return max(numbers, default=0) + 1
