"""The data stage: prepare the augmented Pokémon set once, read it back through Ray Data."""

from pokegan_ray.data.prepare import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PrepareError,
    PrepareOptions,
    prepare,
    read_manifest,
)
from pokegan_ray.data.reader import (
    InMemoryImages,
    iter_images,
    open_prepared,
    pixels_to_nchw,
    prepared_files,
    to_model_range,
)
from pokegan_ray.data.sources import BUNDLED, SourceError, open_source

__all__ = [
    "BUNDLED",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "InMemoryImages",
    "PrepareError",
    "PrepareOptions",
    "SourceError",
    "iter_images",
    "open_prepared",
    "open_source",
    "pixels_to_nchw",
    "prepare",
    "prepared_files",
    "read_manifest",
    "to_model_range",
]
