"""Complete training checkpoints: everything needed to continue a run exactly, nothing executable.

A checkpoint is one `checkpoint.pt` holding plain tensors, numbers, strings, lists and
dicts only (no pickled classes), so it loads with `torch.load(..., weights_only=True)`:
a file that smuggles code is refused instead of run.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pt"
# What a file from torch.save starts with: a zip archive (the default since torch 1.6) or a pickle
# (protocol 2, the legacy format).
TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80\x02")
REQUIRED_KEYS = ("format_version", "step", "images_seen", "config", "generator", "discriminator", "generator_ema",
                 "optimizer_generator", "optimizer_discriminator", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why and what to do."""


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_tensors(data: bytes, source: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Unpickle a torch file that may hold only tensors and plain values (a dict at the top).

    Every model file pokegan reads goes through here: `weights_only=True` refuses any other
    object before it is built, so a file that smuggles code fails with a clear error and
    runs nothing. `source` names the file in errors.
    """
    if not data:
        raise CheckpointError(f"{source} is empty (0 bytes): not a model file. Point at a checkpoint.pt, a Ray "
                              "checkpoint folder or a registry version, or write the file again")
    if not data.startswith(TORCH_FILE_MAGIC):
        raise CheckpointError(f"{source} is not a model file: it does not start as torch.save writes one "
                              f"(it starts with {data[:16]!r}). Point at a checkpoint.pt, a Ray checkpoint folder "
                              "or a registry version")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # Torch's message goes on to suggest weights_only=False, i.e. running the file's code: only its
        # reason (which global it refused) is passed on.
        reasons = [line.split("WeightsUnpickler error:", 1)[1] for line in str(error).splitlines()
                   if "WeightsUnpickler error:" in line]
        reason = reasons[0].split(" was not an allowed global")[0].strip() if reasons else "not plain values"
        raise CheckpointError(
            f"refusing to load {source}: it holds Python objects beyond tensors and plain values ({reason}), "
            "and pokegan loads model files only as data. Use a checkpoint pokegan wrote") from None
    except (RuntimeError, EOFError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise CheckpointError(f"{source} is not a readable model file ({first}); it may be cut short, "
                              "or written by another program") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} is not a pokegan model file (it holds a {type(state).__name__})")
    return state


def load_checkpoint(data: bytes, source: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint's bytes; `source` names it in errors."""
    state = load_tensors(data, source, map_location)
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source} has checkpoint format {state.get('format_version')!r}; this pokegan reads "
                              f"format {FORMAT_VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}; it is not a complete pokegan checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """This process's torch random state (CPU and, if present, every CUDA device)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint from the object store: a `checkpoint.pt` file or the Ray checkpoint folder holding it."""
    data, source = _read_model_file(uri)
    return load_checkpoint(data, source, map_location=map_location)


def read_generator_weights(uri: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The EMA generator's state dict from any pokegan model file holding `generator_ema`: a
    `checkpoint.pt` (or the Ray checkpoint folder holding it) or a registry model's `generator.pt`."""
    data, source = _read_model_file(uri)
    state = load_tensors(data, source, map_location=map_location)
    if not isinstance(state.get("generator_ema"), dict):
        raise CheckpointError(f"{source} holds no generator_ema weights; it is not a pokegan model file")
    return state["generator_ema"]


def _read_model_file(uri: str) -> tuple[bytes, str]:
    """(bytes, URI) of a `.pt` file, or of the `checkpoint.pt` inside a Ray checkpoint folder."""
    from pokegan_ray.storage import StorageError, location

    target = location(uri)
    if not target.path.endswith(".pt"):
        target = target.join(FILE_NAME)
    try:
        return target.read_bytes(), target.uri
    except StorageError as error:
        raise CheckpointError(str(error)) from None


def load_generator(state: dict[str, Any], device: str | torch.device = "cpu"):
    """(the EMA generator in eval mode, its ExperimentConfig) from a loaded checkpoint or registry
    model file (both hold `config` and `generator_ema`)."""
    from pokegan_ray.models import build_networks
    from pokegan_ray.training.config import ExperimentConfig

    experiment = ExperimentConfig.from_dict(state["config"])
    generator, _ = build_networks(experiment.gan.model)
    generator.load_state_dict(state["generator_ema"])
    return generator.to(device).eval(), experiment
