"""`pokegan generate`: new Pokémon from the registry's champion or any checkpoint.

Writes `pokemon-000.png`..., `grid.png`, `generate.json` (which type each image got, the model,
the seed) and, on request, `interpolation.gif`: a walk through the latent space along great
circles (spherical interpolation) between the latents of several seeds and back. The same
seed always gives the same images: the latents are drawn on the CPU from that seed alone.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from pokegan_ray.operations.registry import ModelRegistry
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training import artifacts
from pokegan_ray.training.checkpoint import load_generator, read_checkpoint
from pokegan_ray.training.config import ExperimentConfig

CHAMPION = "champion"
INTERPOLATION_KEYFRAMES = 4  # seeds seed, seed+1, ... walked through in a loop
INTERPOLATION_STEPS = 12  # frames from one keyframe to the next
INTERPOLATION_FRAME_MS = 80
GENERATION_BATCH = 64  # images through the generator at once
WRITE_BATCH = 256  # images generated, then written, at once: memory is this many, whatever --n asks
GRID_IMAGES = 256  # grid.png shows the first this many


class GenerateError(ValueError):
    """The request cannot be served (bad type, no champion, ...); the message says what to change."""


@dataclass(frozen=True)
class LoadedModel:
    generator: torch.nn.Module  # the EMA generator, in eval mode
    experiment: ExperimentConfig
    classes: list[str]  # type names, index = label (empty for an unconditional model)
    description: str  # for people: "champion v0003 of s3://.../models/pokegan" or the checkpoint URI

    @property
    def conditional(self) -> bool:
        return self.experiment.gan.model.conditional


@dataclass(frozen=True)
class GeneratedImages:
    images: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    types: list[str | None]  # per image; None for an unconditional model


def load_model(model: str, *, registry_uri: str | None = None, name: str = "pokegan",
               device: str | torch.device = "cpu") -> LoadedModel:
    """`model` is "champion", a registry version ("v0003") or a checkpoint URI (file or Ray folder)."""
    if model == CHAMPION or _is_version_label(model):
        if not registry_uri:
            raise GenerateError(f"--model {model} reads the model registry: pass --registry URI")
        registry = ModelRegistry(registry_uri, name)
        version = registry.champion() if model == CHAMPION else registry.version(int(model.lstrip("vV")))
        if version is None and not registry.base.exists():
            raise GenerateError(f"there is no model registry at {registry_uri} (nothing is there): check --registry, "
                                "or fill one with pokegan retrain")
        if version is None:
            raise GenerateError(f"the registry {registry.root.uri} has no champion yet; run pokegan retrain first")
        state = registry.load_generator_state(version, map_location=device)
        description = f"{'champion ' if model == CHAMPION else ''}{version.label} of {registry.root.uri}"
    else:
        state = read_checkpoint(model, map_location=device)
        description = model
    generator, experiment = load_generator(state, device)
    classes = list(state.get("classes") or [])
    if experiment.gan.model.conditional and len(classes) != experiment.gan.model.num_classes:
        classes = [f"class-{index}" for index in range(experiment.gan.model.num_classes)]
    return LoadedModel(generator, experiment, classes if experiment.gan.model.conditional else [], description)


def type_index(loaded: LoadedModel, type_name: str | None) -> int | None:
    """The label of `type_name`, None when no type was asked for; a clear error for a wrong one."""
    if type_name is None:
        return None
    if not loaded.conditional:
        raise GenerateError(f"--type {type_name} needs a conditional (AC-GAN) model, but {loaded.description} is "
                            "unconditional: it was trained without types; drop --type")
    wanted = type_name.strip().lower()
    for index, name in enumerate(loaded.classes):
        if name.lower() == wanted:
            return index
    raise GenerateError(f"unknown type {type_name!r}; {loaded.description} knows: {', '.join(loaded.classes)}")


@torch.no_grad()
def generated_batches(loaded: LoadedModel, count: int, *, seed: int = 0, type_name: str | None = None,
                      device: str | torch.device = "cpu", batch: int = WRITE_BATCH) -> Iterator[GeneratedImages]:
    """`count` images, `batch` at a time (memory stays that of one batch, whatever `count`); a conditional
    model makes `type_name`, or cycles through its types without one. The latents are drawn `batch` at a
    time from one generator seeded with `seed`, so the same seed gives the same images."""
    if count < 1:
        raise GenerateError(f"--n must be at least 1, got {count}")
    label = type_index(loaded, type_name)
    random = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch):
        size = min(batch, count - start)
        latents = torch.randn(size, loaded.experiment.gan.model.latent_size, generator=random)
        labels = None
        if loaded.conditional:
            labels = (torch.full((size,), label) if label is not None
                      else torch.arange(start, start + size) % len(loaded.classes))
        types = [loaded.classes[i] for i in labels.tolist()] if labels is not None else [None] * size
        yield GeneratedImages(_run(loaded, latents, labels, device), types)


def slerp(start: torch.Tensor, end: torch.Tensor, fraction: float) -> torch.Tensor:
    """Spherical interpolation: Gaussian latents live near a sphere, and a straight line between
    two of them cuts through its low-density inside (images there look washed out)."""
    cosine = torch.nn.functional.cosine_similarity(start, end, dim=-1).clamp(-1.0, 1.0)
    angle = torch.arccos(cosine).unsqueeze(-1)
    if float(angle.abs().max()) < 1e-4:  # (nearly) parallel: the straight line is the arc
        return torch.lerp(start, end, fraction)
    return (torch.sin((1 - fraction) * angle) * start + torch.sin(fraction * angle) * end) / torch.sin(angle)


@torch.no_grad()
def interpolation_gif(loaded: LoadedModel, *, seed: int = 0, type_name: str | None = None,
                      device: str | torch.device = "cpu", keyframes: int = INTERPOLATION_KEYFRAMES,
                      steps: int = INTERPOLATION_STEPS) -> bytes:
    """A looping GIF through the latents of seeds seed, seed+1, ... and back to the first.

    A conditional model walks in `type_name`, or without one shows the same walk in every type
    side by side (one tile per type)."""
    label = type_index(loaded, type_name)
    latent_size = loaded.experiment.gan.model.latent_size
    points = [torch.randn(latent_size, generator=torch.Generator().manual_seed(seed + k)) for k in range(keyframes)]
    path = [slerp(points[k], points[(k + 1) % keyframes], step / steps)
            for k in range(keyframes) for step in range(steps)]
    if loaded.conditional:
        labels = torch.tensor([label]) if label is not None else torch.arange(len(loaded.classes))
    else:
        labels = None
    tiles = 1 if labels is None else len(labels)
    frames = []
    for latent in path:
        images = _run(loaded, latent.unsqueeze(0).repeat(tiles, 1), labels, device)
        grid = artifacts.grid_image(images, columns=min(tiles, 6))
        # Small models make tiny frames: show them at least 128 px across, pixels kept sharp.
        scale = max(1, math.ceil(128 / grid.width))
        frames.append(grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=INTERPOLATION_FRAME_MS, loop=0)
    return buffer.getvalue()


def write_generated(out: Location, batches: Iterable[GeneratedImages], count: int, *, description: str, seed: int,
                    interpolation: bytes | None = None) -> list[str]:
    """Write the PNGs (batch by batch), the grid of the first GRID_IMAGES, generate.json and the GIF under
    `out`; returns the URIs written."""
    width = max(3, len(str(count - 1)))
    written = []
    entries = []
    grid_images = []
    for generated in batches:
        if len(entries) < GRID_IMAGES:
            grid_images.append(generated.images[:GRID_IMAGES - len(entries)])
        for image, type_name in zip(artifacts.to_uint8_images(generated.images), generated.types):
            name = f"pokemon-{len(entries):0{width}d}.png"
            target = out.join(name)
            target.write_bytes_atomic(artifacts.png_bytes(Image.fromarray(image)))
            written.append(target.uri)
            entries.append({"file": name, "type": type_name})
    grid = out.join("grid.png")
    grid.write_bytes_atomic(artifacts.png_bytes(artifacts.grid_image(torch.cat(grid_images))))
    written.append(grid.uri)
    if interpolation is not None:
        gif = out.join("interpolation.gif")
        gif.write_bytes_atomic(interpolation)
        written.append(gif.uri)
    record = {"model": description, "seed": seed, "count": len(entries), "images": entries, "grid": "grid.png",
              "interpolation": "interpolation.gif" if interpolation is not None else None}
    out.join("generate.json").write_bytes_atomic(json.dumps(record, indent=2).encode())
    return written


def generate(model: str, *, out_uri: str, count: int = 64, seed: int = 0, type_name: str | None = None,
             interpolate: bool = False, registry_uri: str | None = None, name: str = "pokegan",
             device: str | torch.device = "cpu") -> list[str]:
    """Everything `pokegan generate` does; returns the URIs written."""
    if count < 1:
        raise GenerateError(f"--n must be at least 1, got {count}")
    try:
        out = location(out_uri)
        if out.is_file():
            raise StorageError(f"--out {out_uri} is a file; give a folder (it is created if absent)")
        out.check_writable()
    except StorageError as error:
        raise GenerateError(str(error)) from None
    loaded = load_model(model, registry_uri=registry_uri, name=name, device=device)
    type_index(loaded, type_name)  # an unknown type fails before anything is written
    gif = interpolation_gif(loaded, seed=seed, type_name=type_name, device=device) if interpolate else None
    batches = generated_batches(loaded, count, seed=seed, type_name=type_name, device=device)
    return write_generated(out, batches, count, description=loaded.description, seed=seed, interpolation=gif)


def _run(loaded: LoadedModel, latents: torch.Tensor, labels: torch.Tensor | None,
         device: str | torch.device) -> torch.Tensor:
    outputs = []
    for start in range(0, latents.shape[0], GENERATION_BATCH):
        latent_batch = latents[start:start + GENERATION_BATCH].to(device)
        label_batch = None if labels is None else labels[start:start + GENERATION_BATCH].to(device)
        outputs.append(loaded.generator(latent_batch, label_batch).float().cpu())
    return torch.cat(outputs)


def _is_version_label(model: str) -> bool:
    return len(model) > 1 and model[0] in "vV" and model[1:].isdigit()
