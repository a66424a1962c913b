"""Inception statistics of the real data, computed once per key and kept beside the data set.

The key names everything that changes the numbers: the prepared set's content hash, its
resolution, which rows (e.g. "originals" or "all"), the Inception weights' sha256, the
preprocessing protocol and the number of images. Its hash names the object
`<cache_root>/<hash>.npz` (by convention `<dataset>/fid-stats/`, see `default_cache_root`),
which holds:

* `mu` (2048,) and `sigma` (2048, 2048) in float64 for FID (32 MB), and
* `kid_features`, float32 features for KID: all rows up to `KID_FEATURES_MAX` (5000), else a
  seeded subsample of that many. KID draws subsets of at most 1000 rows, so 5000 rows keep
  its subsets varied while capping the file at ~40 MB more; the Pokémon set (~1000 images
  per row kind) is stored whole.
* `key_json`, the key itself, checked on load (a hash collision or a hand-copied file can
  never pass for another key).

A `<hash>.json` beside it shows the key to people. Both are written with
`Location.write_bytes_atomic`, so a reader sees a whole file or none; two trials racing on
a missing key both compute it and write the same bytes. The cache is independent of how
the data are read: the caller passes `compute_features`, called only on a miss.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from pokegan_ray.metrics.statistics import covariance_root, feature_statistics

if TYPE_CHECKING:
    from pokegan_ray.metrics.inception import InceptionFeatureExtractor
    from pokegan_ray.storage import Location

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
KID_FEATURES_MAX = 5000
_SUBSAMPLE_SEED = 0
CACHE_FOLDER = "fid-stats"


@dataclass(frozen=True)
class RealStatsKey:
    """Everything that determines the real statistics; its `digest()` names the cache object."""

    dataset_hash: str
    resolution_px: int
    rows: str
    weights_sha256: str
    protocol: str
    num_images: int

    def __post_init__(self):
        for name in ("dataset_hash", "rows", "weights_sha256", "protocol"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"RealStatsKey.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.resolution_px < 1:
            raise ValueError(f"RealStatsKey.resolution_px must be positive, got {self.resolution_px}")
        if self.num_images < 2:
            raise ValueError(f"RealStatsKey.num_images must be at least 2 (a covariance needs 2), "
                             f"got {self.num_images}")

    @classmethod
    def for_extractor(cls, extractor: InceptionFeatureExtractor, *, dataset_hash: str, resolution_px: int, rows: str,
                      num_images: int) -> "RealStatsKey":
        """The key for real images fed through `extractor` (its weights' hash and protocol)."""
        return cls(dataset_hash=dataset_hash, resolution_px=resolution_px, rows=rows,
                   weights_sha256=extractor.weights.sha256, protocol=extractor.protocol, num_images=num_images)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def digest(self) -> str:
        # The file layout (format version, KID row cap) is part of what the object holds, so of its name too.
        payload = json.dumps({"key": asdict(self), "format": CACHE_FORMAT_VERSION,
                              "kid_features_max": KID_FEATURES_MAX}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True, eq=False)
class RealStatistics:
    """FID statistics of the real images and (up to KID_FEATURES_MAX of) their features for KID."""

    key: RealStatsKey
    mu: np.ndarray
    sigma: np.ndarray
    kid_features: np.ndarray

    @property
    def num_images(self) -> int:
        return self.key.num_images

    @functools.cached_property
    def sigma_root(self) -> np.ndarray:
        """√Σ of the real features, computed once per process: every FID against these statistics uses it."""
        return covariance_root(self.sigma)


def real_statistics_from_features(features: np.ndarray, key: RealStatsKey) -> RealStatistics:
    """Statistics of `key.num_images` real feature rows (no cache involved)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != key.num_images:
        raise ValueError(f"expected {key.num_images} real feature rows (the key's num_images), "
                         f"got an array shaped {features.shape}")
    mu, sigma = feature_statistics(features)
    kid_features = features
    if features.shape[0] > KID_FEATURES_MAX:
        rows = np.random.default_rng(_SUBSAMPLE_SEED).choice(features.shape[0], KID_FEATURES_MAX, replace=False)
        kid_features = features[np.sort(rows)]
    return RealStatistics(key=key, mu=mu, sigma=sigma, kid_features=np.asarray(kid_features, dtype=np.float32))


def default_cache_root(dataset: Location) -> Location:
    """`<dataset>/fid-stats`: the statistics live next to the prepared data they describe."""
    return dataset.join(CACHE_FOLDER)


def real_statistics(cache_root: Location, key: RealStatsKey,
                    compute_features: Callable[[], np.ndarray]) -> RealStatistics:
    """The cached statistics for `key`, or compute them with `compute_features()` and store them.

    `compute_features` returns the (key.num_images, 2048) Inception features of the real
    images; it is not called when the cache holds the key. A cache object that cannot be
    decoded (truncated, foreign) is recomputed and replaced; a store that cannot be reached
    raises `StorageError` rather than silently recomputing every time.
    """
    target = cache_root.join(f"{key.digest()}.npz")
    if target.exists():
        try:
            cached = _decode(target.read_bytes())
        except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile, EOFError) as error:
            logger.warning("real FID statistics %s are unreadable (%s); recomputing them", target.uri, error)
        else:
            if cached.key == key:
                logger.debug("real FID statistics loaded from %s", target.uri)
                return cached
            logger.warning("real FID statistics %s hold another key (%s); recomputing them", target.uri,
                           cached.key.to_json())

    statistics = real_statistics_from_features(compute_features(), key)
    target.write_bytes_atomic(_encode(statistics))
    cache_root.join(f"{key.digest()}.json").write_bytes_atomic(
        (json.dumps({"key": asdict(key), "format": CACHE_FORMAT_VERSION,
                     "kid_feature_rows": int(statistics.kid_features.shape[0])}, indent=2, sort_keys=True) + "\n")
        .encode())
    logger.info("real FID statistics of %d images written to %s", key.num_images, target.uri)
    return statistics


def _encode(statistics: RealStatistics) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, mu=statistics.mu, sigma=statistics.sigma, kid_features=statistics.kid_features,
             key_json=np.array(statistics.key.to_json()))
    return buffer.getvalue()


def _decode(data: bytes) -> RealStatistics:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        key = RealStatsKey(**json.loads(str(archive["key_json"])))
        statistics = RealStatistics(key=key, mu=archive["mu"], sigma=archive["sigma"],
                                    kid_features=archive["kid_features"])
    dim = statistics.mu.shape[0] if statistics.mu.ndim == 1 else -1
    if dim < 1 or statistics.sigma.shape != (dim, dim) or statistics.kid_features.ndim != 2 \
            or statistics.kid_features.shape[1] != dim:
        raise ValueError("the arrays have inconsistent shapes")
    return statistics
