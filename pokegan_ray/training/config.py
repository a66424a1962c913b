"""`ExperimentConfig`: everything one training run needs, validated once at the edge.

A run is described by a YAML file and/or `--set section.key=value` overrides:

    data:  {uri: artifacts/data/bundled, resolution: 64, rows: all}
    model: {upsampler: palette, ...}          # pokegan_ray.models.ModelConfig
    loss:  {name: wgan-gp, ...}               # pokegan_ray.losses.LossConfig
    train: {steps: 2000, batch_size: 64, ...}    # or {images: 128000, ...}
    scale: {workers: 2, use_gpu: false, cpus_per_worker: 0.5}

The config is turned into a plain dict for Ray (`to_dict`) and rebuilt in every worker
(`from_dict`). Unknown keys and bad values fail here, naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pokegan_ray.defaults import DEFAULT_DATA_URI
from pokegan_ray.losses.config import GanConfig, LossConfig
from pokegan_ray.models.config import (
    ModelConfig,
    require_bool,
    require_choice,
    require_float,
    require_int,
    require_known_keys,
)



@dataclass(frozen=True)
class DataConfig:
    uri: str = DEFAULT_DATA_URI
    resolution: int = 64
    # "all" rows, or only the un-augmented "originals".
    rows: str = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri:
            raise ValueError(f"data.uri must be a local path or s3://bucket/prefix, got {self.uri!r}")
        require_choice("data.resolution", self.resolution, (64, 128))
        require_choice("data.rows", self.rows, ("all", "originals"))


# Each cadence's default in generator steps; a run measured in images gets that many batches' worth.
DEFAULT_CADENCE_STEPS = {"report_every": 25, "eval_every": 500, "sample_every": 250, "checkpoint_every": 250}
DEFAULT_STEPS = 2000


@dataclass(frozen=True)
class TrainConfig:
    # The run's length: generator steps (each runs the loss's critic steps first), or real images shown
    # to D. Runs with different batch sizes or critic steps see equal data, and a search compares them
    # at equal compute, only when measured in images. Give one of the two (neither: 2000 steps); with
    # `images` every cadence below counts real images too.
    steps: int | None = None
    images: int | None = None
    # Global batch: split evenly across workers.
    batch_size: int = 64
    seed: int = 0
    # How often a report reaches Ray and the progress line (default: every 25 steps' worth).
    report_every: int | None = None
    # FID/KID on the EMA generator this often (and always at the end); 0 = only at the end (default: 500 steps' worth).
    eval_every: int | None = None
    # Generated images per evaluation. Inception costs ~0.1-0.5 s an image on a 2-core CPU, so the
    # default is small; a GPU can afford the whole set. FIDs at different N are not comparable.
    eval_images: int = 256
    # Fixed-noise sample grid this often (and at the end) (default: 250 steps' worth).
    sample_every: int | None = None
    # A complete checkpoint this often (and at the end); recovery restarts from the last (default: 250 steps' worth).
    checkpoint_every: int | None = None
    # Checkpoints kept: the best by FID, plus always the latest.
    keep_checkpoints: int = 3
    # bf16 autocast + channels_last on GPU (ignored on CPU).
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        if self.steps is not None and self.images is not None:
            raise ValueError(f"train.steps={self.steps} and train.images={self.images}: give the run's length in one "
                             "unit (set the other to null)")
        if self.steps is None and self.images is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        require_int("train.batch_size", self.batch_size, minimum=2)
        require_int(f"train.{self.unit}", self.length, minimum=1)
        require_int("train.seed", self.seed, minimum=0)
        for key, default_steps in DEFAULT_CADENCE_STEPS.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default_steps * (self.batch_size if self.unit == "images" else 1))
            require_int(f"train.{key}", getattr(self, key), minimum=0 if key == "eval_every" else 1)
        require_int("train.keep_checkpoints", self.keep_checkpoints, minimum=1)
        require_int("train.eval_images", self.eval_images, minimum=4)  # FID∞ fits subsets of N/2..N
        require_bool("train.mixed_precision", self.mixed_precision)

    @property
    def unit(self) -> str:
        """What the run's length and cadences count: "steps" (generator steps) or "images" (real images D saw)."""
        return "images" if self.images is not None else "steps"

    @property
    def length(self) -> int:
        return self.images if self.images is not None else self.steps

    def clock(self, step: int, images_seen: int) -> int:
        """How far a run is, in its unit."""
        return images_seen if self.unit == "images" else step

    # The schedule: what happens after a generator step that moved the clock from `before` to `after`
    # (a step crosses a cadence's mark or not; the last step does everything).
    def finished(self, after: int) -> bool:
        return after >= self.length

    def evaluation_due(self, before: int, after: int) -> bool:
        return self.finished(after) or _crosses(before, after, self.eval_every)

    def checkpoint_due(self, before: int, after: int) -> bool:
        return self.finished(after) or _crosses(before, after, self.checkpoint_every)

    def sample_due(self, before: int, after: int) -> bool:
        return self.finished(after) or _crosses(before, after, self.sample_every)

    def report_due(self, before: int, after: int) -> bool:
        return (self.evaluation_due(before, after) or self.checkpoint_due(before, after)
                or self.sample_due(before, after) or _crosses(before, after, self.report_every))


def _crosses(before: int, after: int, every: int) -> bool:
    """Whether the clock passed a multiple of `every` (0 = never) going from `before` to `after`."""
    return every > 0 and after // every > before // every


@dataclass(frozen=True)
class ScaleConfig:
    workers: int = 2
    use_gpu: bool = False
    # On a 2-CPU machine a whole CPU per worker starves Ray Data; half a CPU each runs.
    cpus_per_worker: float = 0.5
    # With use_gpu: the share of a GPU each worker reserves. A fraction (0.25) packs several small trials
    # on one GPU; Ray splits the reservation, not the memory (README "Sharing a GPU").
    gpus_per_worker: float = 1.0
    # torch threads per worker; 0 keeps Ray's choice (OMP_NUM_THREADS = the worker's whole CPUs, at least 1).
    threads_per_worker: int = 0

    def __post_init__(self) -> None:
        require_int("scale.workers", self.workers, minimum=1)
        require_int("scale.threads_per_worker", self.threads_per_worker, minimum=0)
        require_bool("scale.use_gpu", self.use_gpu)
        object.__setattr__(self, "cpus_per_worker",
                           require_float("scale.cpus_per_worker", self.cpus_per_worker, minimum=0.0,
                                         minimum_inclusive=False))
        gpus = require_float("scale.gpus_per_worker", self.gpus_per_worker, minimum=0.0, minimum_inclusive=False)
        object.__setattr__(self, "gpus_per_worker", gpus)
        if gpus > 1 and not gpus.is_integer():
            raise ValueError(f"scale.gpus_per_worker must be a fraction up to 1 or a whole number, got {gpus:g} "
                             "(Ray hands out GPUs above 1 only whole)")
        if gpus != 1 and not self.use_gpu:
            raise ValueError(f"scale.gpus_per_worker={gpus:g} needs scale.use_gpu=true (or --gpu); on CPUs leave "
                             "it at 1")
        if gpus < 1 and self.workers > 1:
            # Two ranks of one DDP group could land on the same GPU, which NCCL refuses.
            raise ValueError(f"scale.gpus_per_worker={gpus:g} with scale.workers={self.workers}: a fraction of a "
                             "GPU is for packing single-worker trials; give DDP workers whole GPUs "
                             "(scale.gpus_per_worker=1) or use scale.workers=1")

    def worker_resources(self) -> dict[str, float]:
        """What Ray reserves for each Train worker."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.use_gpu else {})}


SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "scale": ScaleConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        if self.train.batch_size % self.scale.workers:
            raise ValueError(f"train.batch_size={self.train.batch_size} must divide evenly across "
                             f"scale.workers={self.scale.workers}")
        if self.gan.model.resolution_px != self.data.resolution:
            raise ValueError(f"model.resolution_px={self.gan.model.resolution_px} differs from data.resolution="
                             f"{self.data.resolution}; set only data.resolution")

    @property
    def batch_per_worker(self) -> int:
        return self.train.batch_size // self.scale.workers

    @functools.cached_property
    def total_steps(self) -> int:
        """Generator steps the run takes: `train.steps`, or the fewest whose critic batches reach `train.images`
        (counting the loss's critic steps before each generator step, the WGAN paper's schedule included)."""
        from pokegan_ray.losses.gan_losses import steps_to_reach

        if self.train.unit == "steps":
            return self.train.steps
        steps, _ = steps_to_reach(math.ceil(self.train.images / self.train.batch_size), self.gan.loss)
        return steps

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExperimentConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"a config must be a mapping of sections ({', '.join(SECTIONS)}), got "
                             f"{type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown config section(s) {', '.join(map(repr, unknown))}; allowed sections: "
                             f"{', '.join(SECTIONS)}")
        sections = {name: _section(name, data.get(name)) for name in SECTIONS}
        for name in ("data", "train", "scale"):
            require_known_keys(name, sections[name], SECTIONS[name])
        data_config = DataConfig(**sections["data"])
        # The model's resolution follows the data's unless it was set explicitly (then both must agree).
        sections["model"].setdefault("resolution_px", data_config.resolution)
        return cls(data=data_config, gan=GanConfig.from_dict({"model": sections["model"], "loss": sections["loss"]}),
                   train=TrainConfig(**sections["train"]), scale=ScaleConfig(**sections["scale"]))

    def to_dict(self) -> dict[str, Any]:
        gan = self.gan.to_dict()
        return {"data": dataclasses.asdict(self.data), "model": gan["model"], "loss": gan["loss"],
                "train": dataclasses.asdict(self.train), "scale": dataclasses.asdict(self.scale)}

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "ExperimentConfig":
        merged = self.to_dict()
        # Loss keys filled from the previous loss's defaults must not survive a change of loss.
        if overrides.get("loss", {}).get("name", merged["loss"]["name"]) != merged["loss"]["name"]:
            merged["loss"] = {key: value for key, value in merged["loss"].items()
                              if key not in _loss_dependent_keys()}
            merged["model"].pop("discriminator_norm")  # the new loss picks its own (GanConfig.from_dict)
        for section, values in overrides.items():
            if section not in SECTIONS:
                raise ValueError(f"unknown config section {section!r}; allowed sections: {', '.join(SECTIONS)}")
            merged[section] = {**merged[section], **values}
        _length_replaces_length(merged, overrides)
        if "resolution" in overrides.get("data", {}) and "resolution_px" not in overrides.get("model", {}):
            merged["model"]["resolution_px"] = merged["data"]["resolution"]
        return ExperimentConfig.from_dict(merged)


def _loss_dependent_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(LossConfig) if f.default is None}


def parse_assignments(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """["loss.name=wgan-gp", "train.steps=100"] -> {"loss": {"name": "wgan-gp"}, "train": {"steps": 100}}.

    Values are read as YAML scalars, so numbers, booleans, lists and `null` work as in a file.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        match = re.fullmatch(r"([a-z_]+)\.([a-z_0-9]+)=(.*)", assignment.strip(), flags=re.DOTALL)
        if not match:
            raise ValueError(f"--set {assignment!r}: expected section.key=value, e.g. loss.name=wgan-gp")
        section, key, text = match.groups()
        overrides.setdefault(section, {})[key] = yaml.safe_load(text) if text.strip() else ""
    return overrides


def merge_sections(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Section-wise merge of two raw config dicts (values of `overrides` win)."""
    for name, values in (("config", base), ("overrides", overrides)):
        if not isinstance(values, Mapping):
            raise ValueError(f"{name}: expected a mapping of sections ({', '.join(SECTIONS)}), got "
                             f"{type(values).__name__}")
    merged = {section: _section(section, values) for section, values in base.items()}
    for section, values in overrides.items():
        merged[section] = {**merged.get(section, {}), **_section(section, values)}
    _length_replaces_length(merged, overrides)
    return merged


def _section(name: str, values: Any) -> dict[str, Any]:
    """A config section as a dict: `train: {steps: 100}`; an empty `train:` is {}; `train: 5` is an error."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValueError(f"section {name!r} must be a mapping of keys to values (e.g. {name}: {{key: value}}), "
                         f"got {values!r}")
    return dict(values)


def _length_replaces_length(merged: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """A length given in one unit replaces the base's in the other: `--set train.steps=4` on a config measured
    in images trains 4 steps (its cadences then count steps)."""
    train = overrides.get("train") or {}
    for key, other in (("steps", "images"), ("images", "steps")):
        if train.get(key) is not None and other not in train and merged.get("train", {}).get(other) is not None:
            merged["train"][other] = None


def load_raw_config(path: str | None = None, assignments: list[str] = ()) -> dict[str, dict[str, Any]]:
    """The YAML file (if any) with the `--set` assignments on top, not yet validated.

    Kept raw so settings that depend on the data (AC-GAN's number of classes) can be filled
    in before `ExperimentConfig.from_dict` validates everything.
    """
    data: Any = {}
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except OSError as error:
            raise ValueError(f"cannot read the config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
    return merge_sections(data, parse_assignments(list(assignments)))


def differences_from_defaults(config: ExperimentConfig) -> list[tuple[str, Any]]:
    """("section.key", value) for every setting that differs from a default config with the same loss."""
    reference = ExperimentConfig.from_dict({"loss": {"name": config.gan.loss.name}}).to_dict()
    current = config.to_dict()
    differences = [("loss.name", config.gan.loss.name)] if config.gan.loss.name != LossConfig().name else []
    for section, values in current.items():
        for key, value in values.items():
            if (section, key) != ("loss", "name") and reference[section].get(key) != value:
                differences.append((f"{section}.{key}", value))
    return differences


def run_name(config: ExperimentConfig, when: str) -> str:
    """`<when>-<what differs from the defaults>`, like stylegan's `00012-pokemon-mirror-gamma10`."""
    parts = []
    for key, value in differences_from_defaults(config):
        # What was trained names the run; paths and bookkeeping (steps, report cadence) are in config.yaml.
        if key == "data.uri" or (key.startswith(("train.", "scale.")) and key != "train.batch_size"):
            continue
        parts.append(str(value) if key == "loss.name" else f"{key.split('.', 1)[1]}={value}")
    slug = re.sub(r"[^A-Za-z0-9=.+-]+", "-", "-".join(parts)).strip("-")[:80] or "default"
    return f"{when}-{slug}"
