"""`ModelConfig`: the shape of the two networks, validated once where it is built.

Allowed names come from the registries themselves, so this module imports torch.
The small `require_*` helpers here are shared with `pokegan_ray.losses.config`: every
message names the dotted key (`model.upsampler`) and, for a choice, the allowed values,
so a typo in a YAML file or a search space fails before any Ray work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The registries are the single list of allowed names: adding an entry there makes it valid here.
from pokegan_ray.models.layers import DISCRIMINATOR_NORMS
from pokegan_ray.models.networks import ARCHITECTURES
from pokegan_ray.models.upsamplers import UPSAMPLERS

RESOLUTIONS_PX = (64, 128)


# -- validation helpers (shared with the loss config) ------------------------------------
def require_known_keys(section: str, data: Mapping[str, Any], config_class: type) -> None:
    """Reject keys that no field of `config_class` has: a typo must not be silently ignored."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{section}: expected a mapping of keys to values, got {type(data).__name__}")
    allowed = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}")


def require_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")


def require_int(key: str, value: Any, *, minimum: int) -> None:
    # bool is an int subclass; `conditional: true` landing in an int field is a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")


def require_float(
    key: str,
    value: Any,
    *,
    minimum: float,
    maximum: float | None = None,
    minimum_inclusive: bool = True,
    maximum_inclusive: bool = True,
) -> float:
    """Check a number's range and return it as a float (YAML and JSON may give ints)."""
    # PyYAML reads `1e-4` (no dot) as a string: name the key rather than fail later in torch.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    value = float(value)
    too_small = value < minimum if minimum_inclusive else value <= minimum
    too_big = maximum is not None and (value > maximum if maximum_inclusive else value >= maximum)
    if too_small or too_big:
        lower = f"{'>=' if minimum_inclusive else '>'} {minimum}"
        upper = "" if maximum is None else f" and {'<=' if maximum_inclusive else '<'} {maximum}"
        raise ValueError(f"{key} must be {lower}{upper}, got {value}")
    return value


def require_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")


# -- the model config ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """Generator and discriminator shape. Defaults are the classic DCGAN at 64 px (G 3.6M, D 2.8M params)."""

    # "dcgan" | "lightweight" (FastGAN-style; see pokegan_ray.models.lightweight).
    architecture: str = "dcgan"
    resolution_px: int = 64
    # 100 is the DCGAN paper's latent size.
    latent_size: int = 100
    # Base widths: the generator's last up-block and the discriminator's first conv have this
    # many channels; each step towards 4x4 doubles it, capped at 8x (so 128 px adds no 1024-wide layer).
    generator_channels: int = 64
    discriminator_channels: int = 64
    # "transposed" | "upsample" | "palette"; see pokegan_ray.models.upsamplers.
    upsampler: str = "transposed"
    # Colours per image for the "palette" upsampler (ignored by the others).
    palette_size: int = 16
    # "batch" is DCGAN's; WGAN-GP needs a per-sample norm ("layer", "instance" or "none").
    discriminator_norm: str = "batch"
    # AC-GAN: condition G on the Pokémon type and give D an auxiliary classifier head.
    conditional: bool = False
    # Number of types in the data set (0 when it has no labels). Needed when conditional.
    num_classes: int = 0
    # lightweight only: per-pixel noise after each G block's conv, scaled by learnt weights that start at 0.
    noise_injection: bool = False

    def __post_init__(self) -> None:
        require_choice("model.architecture", self.architecture, ARCHITECTURES)
        require_choice("model.resolution_px", self.resolution_px, RESOLUTIONS_PX)
        require_int("model.latent_size", self.latent_size, minimum=1)
        require_int("model.generator_channels", self.generator_channels, minimum=1)
        require_int("model.discriminator_channels", self.discriminator_channels, minimum=1)
        require_choice("model.upsampler", self.upsampler, UPSAMPLERS)
        require_int("model.palette_size", self.palette_size, minimum=2)
        require_choice("model.discriminator_norm", self.discriminator_norm, DISCRIMINATOR_NORMS)
        require_bool("model.conditional", self.conditional)
        require_int("model.num_classes", self.num_classes, minimum=0)
        require_bool("model.noise_injection", self.noise_injection)
        if self.noise_injection and self.architecture != "lightweight":
            raise ValueError(
                f"model.noise_injection applies to architecture='lightweight' only, not {self.architecture!r}; set it to false"
            )
        if self.conditional and self.num_classes == 0:
            raise ValueError(
                "model.num_classes must be > 0 when model.conditional is true: an AC-GAN needs class labels "
                "(is the data set unlabelled? then set model.conditional to false)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        require_known_keys("model", data, cls)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
