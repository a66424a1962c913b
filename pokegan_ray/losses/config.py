"""`LossConfig` (how the two networks are trained) and `GanConfig` (model + loss), validated once.

Build at the edge with `GanConfig.from_dict(...)` or `GanConfig.from_preset("wgan-gp", overrides)`,
send `config.to_dict()` to Ray, rebuild in the worker with `GanConfig.from_dict`.

Keys whose sensible value depends on the loss (learning rates, Adam betas, n_critic, the WGAN
critic schedule, clip value, penalty weight) default to None, meaning "this loss's default":
they are filled in from the loss's DEFAULTS when the config is built, so `to_dict()` always
shows the values in use. A key that does not apply to the chosen loss stays None, and setting
it is an error rather than a silent no-op.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pokegan_ray.losses.diff_augment import parse_policy
from pokegan_ray.losses.gan_losses import LOSSES
from pokegan_ray.losses.schedules import LR_SCHEDULES
from pokegan_ray.models.config import (
    ModelConfig,
    require_bool,
    require_choice,
    require_float,
    require_int,
    require_known_keys,
)

# Zhao et al. (2020) found all three transforms best when data is scarce (their 100-shot and
# 10%-CIFAR runs); ~1000 Pokémon is that regime, where D otherwise memorises the set.
DEFAULT_AUGMENT_POLICY = "color,translation,cutout"
ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class LossConfig:
    # "dcgan" (non-saturating BCE) | "hinge" | "wgan" (weight clipping) | "wgan-gp" (gradient penalty).
    name: str = "dcgan"
    # None: the loss's default (dcgan 2e-4, hinge 2e-4, wgan 5e-5, wgan-gp 1e-4).
    generator_learning_rate: float | None = None
    discriminator_learning_rate: float | None = None
    # Adam's (beta1, beta2); dcgan (0.5, 0.999), hinge (0.5, 0.9), wgan-gp (0.0, 0.9); not for wgan (RMSProp).
    adam_betas: tuple[float, float] | None = None
    # Discriminator (critic) steps per generator step: dcgan 1, hinge 1, wgan 5, wgan-gp 5.
    n_critic: int | None = None
    # WGAN paper schedule: 100 critic steps for the first 25 generator steps and every 500th
    # (wgan default true, wgan-gp false; not for dcgan).
    paper_critic_schedule: bool | None = None
    # wgan only: every critic weight is clipped to [-clip_value, clip_value] (default 0.01).
    clip_value: float | None = None
    # wgan-gp only: lambda of the gradient penalty (default 10).
    gp_weight: float | None = None
    # dcgan and hinge: R1 penalty gamma/2 * E||grad_x D(real)||^2 (Mescheder et al. 2018); 0 = off.
    r1_gamma: float | None = None
    # R1 is "lazy" (StyleGAN2): computed every this many D steps and weighted by it, so its cost is 1/k.
    r1_interval: int | None = None
    # dcgan only: the real target becomes 1 - value (0.1 -> 0.9); 0 = off.
    real_label_smoothing: float = 0.0
    # dcgan only: starting std of Gaussian noise added to every D input; the loop anneals it
    # and passes the current value to the steps. 0 = off.
    instance_noise_std: float = 0.0
    # AC-GAN: weight of the auxiliary class cross-entropy, for D (real + fake) and for G.
    auxiliary_class_weight: float = 1.0
    # DiffAugment transforms before every D call, comma-separated from color, translation, cutout; "" = off.
    augment_policy: str = DEFAULT_AUGMENT_POLICY
    # Probability that a sample gets each transform of the policy: a number in [0, 1], or "adaptive"
    # (StyleGAN2-ADA): p starts at 0 and follows D's overfitting, r_t = E[sign(D(real))], towards ada_target.
    augment_probability: float | str = 1.0
    # ADA: the r_t p steers to (the paper's 0.6), how many D steps between adjustments, and how many real
    # images it takes p to move by 1 (the paper's 500k fits 25M-image runs; ours see ~50k-500k).
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_adjust_images: int = 50_000
    # Learning-rate schedule of both optimisers, from the rates above: "constant", "step" (times each
    # network's *_lr_step_factor every lr_step_epochs epochs), "cosine" or "linear" (to zero at the run's last step).
    lr_schedule: str = "constant"
    lr_step_epochs: float = 10.0
    generator_lr_step_factor: float = 0.5
    discriminator_lr_step_factor: float = 0.5
    # The self-supervised D's reconstruction MSE (model.architecture: lightweight), added to D's loss.
    reconstruction_weight: float = 1.0
    # Generator EMA: the average moves (1 - decay) of the way to G after each G step.
    # 0.999 averages over roughly the last thousand steps.
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        require_choice("loss.name", self.name, LOSSES)
        for key, default in LOSSES[self.name].DEFAULTS.items():
            value = getattr(self, key)
            if value is None:
                object.__setattr__(self, key, default)
            elif default is None:
                raise ValueError(f"loss.{key} does not apply to loss.name={self.name!r}; leave it unset (null)")

        for key in ("generator_learning_rate", "discriminator_learning_rate"):
            object.__setattr__(self, key, require_float(f"loss.{key}", getattr(self, key), minimum=0.0, minimum_inclusive=False))
        if self.adam_betas is not None:
            object.__setattr__(self, "adam_betas", _betas(self.adam_betas))
        require_int("loss.n_critic", self.n_critic, minimum=1)
        if self.paper_critic_schedule is not None:
            require_bool("loss.paper_critic_schedule", self.paper_critic_schedule)
        if self.clip_value is not None:
            object.__setattr__(self, "clip_value", require_float("loss.clip_value", self.clip_value, minimum=0.0, minimum_inclusive=False))
        if self.gp_weight is not None:
            object.__setattr__(self, "gp_weight", require_float("loss.gp_weight", self.gp_weight, minimum=0.0))
        if self.r1_gamma is not None:
            object.__setattr__(self, "r1_gamma", require_float("loss.r1_gamma", self.r1_gamma, minimum=0.0))
            require_int("loss.r1_interval", self.r1_interval, minimum=1)
        self._check_augmentation_and_schedule()

        smoothing = require_float("loss.real_label_smoothing", self.real_label_smoothing, minimum=0.0, maximum=0.5, maximum_inclusive=False)
        noise_std = require_float("loss.instance_noise_std", self.instance_noise_std, minimum=0.0)
        object.__setattr__(self, "real_label_smoothing", smoothing)
        object.__setattr__(self, "instance_noise_std", noise_std)
        # Both act on D's probability of "real"; a critic's unbounded score has no target to smooth.
        for key, value in (("real_label_smoothing", smoothing), ("instance_noise_std", noise_std)):
            if value and self.name != "dcgan":
                raise ValueError(f"loss.{key} applies to loss.name='dcgan' only, not {self.name!r}; set it to 0")
        object.__setattr__(
            self, "auxiliary_class_weight", require_float("loss.auxiliary_class_weight", self.auxiliary_class_weight, minimum=0.0)
        )
        if not isinstance(self.augment_policy, str):
            raise ValueError(f"loss.augment_policy must be a string such as {DEFAULT_AUGMENT_POLICY!r}, got {self.augment_policy!r}")
        try:
            parse_policy(self.augment_policy)
        except ValueError as error:
            raise ValueError(f"loss.augment_policy: {error}") from None
        object.__setattr__(
            self, "ema_decay", require_float("loss.ema_decay", self.ema_decay, minimum=0.0, maximum=1.0, maximum_inclusive=False)
        )

    def _check_augmentation_and_schedule(self) -> None:
        if self.augment_probability == ADAPTIVE and self.name in ("wgan", "wgan-gp"):
            raise ValueError(f"loss.augment_probability='adaptive' needs a D whose score has a fixed zero (dcgan, "
                             f"hinge): its signal is E[sign(D(real))], and a {self.name} critic can shift all "
                             "its scores freely; use a fixed probability")
        if self.augment_probability != ADAPTIVE:
            object.__setattr__(self, "augment_probability", require_float(
                "loss.augment_probability (a number in [0, 1] or 'adaptive')", self.augment_probability,
                minimum=0.0, maximum=1.0))
        object.__setattr__(self, "ada_target", require_float("loss.ada_target", self.ada_target, minimum=0.0,
                                                             maximum=1.0))
        require_int("loss.ada_interval", self.ada_interval, minimum=1)
        require_int("loss.ada_adjust_images", self.ada_adjust_images, minimum=1)
        require_choice("loss.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        object.__setattr__(self, "lr_step_epochs", require_float("loss.lr_step_epochs", self.lr_step_epochs,
                                                                 minimum=0.0, minimum_inclusive=False))
        for key in ("generator_lr_step_factor", "discriminator_lr_step_factor"):
            object.__setattr__(self, key, require_float(f"loss.{key}", getattr(self, key), minimum=0.0,
                                                        maximum=1.0, minimum_inclusive=False))
        object.__setattr__(self, "reconstruction_weight", require_float(
            "loss.reconstruction_weight", self.reconstruction_weight, minimum=0.0))

    @property
    def adaptive_augmentation(self) -> bool:
        return self.augment_probability == ADAPTIVE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LossConfig":
        require_known_keys("loss", data, cls)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["adam_betas"] is not None:
            data["adam_betas"] = list(data["adam_betas"])  # what JSON and YAML give back
        return data


def _betas(value: Any) -> tuple[float, float]:
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"loss.adam_betas must be two numbers [beta1, beta2], got {value!r}")
    return tuple(require_float("loss.adam_betas", beta, minimum=0.0, maximum=1.0, maximum_inclusive=False) for beta in value)


@dataclass(frozen=True)
class GanConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig) or not isinstance(self.loss, LossConfig):
            raise TypeError("GanConfig(model=ModelConfig(...), loss=LossConfig(...)); use GanConfig.from_dict for plain dicts")
        if self.loss.name == "wgan-gp" and self.model.discriminator_norm == "batch":
            raise ValueError(
                "model.discriminator_norm='batch' cannot be used with loss.name='wgan-gp': BatchNorm mixes the "
                "samples of a batch, so the per-sample gradient penalty is wrong; choose one of: 'layer', 'instance', 'none'"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GanConfig":
        require_known_keys("gan config", data, cls)
        model, loss = dict(data.get("model") or {}), dict(data.get("loss") or {})
        # An unset critic norm follows the loss: BatchNorm breaks WGAN-GP's per-sample penalty,
        # so `loss.name: wgan-gp` alone gets the layer norm its paper recommends.
        if loss.get("name") == "wgan-gp":
            model.setdefault("discriminator_norm", "layer")
        return cls(model=ModelConfig.from_dict(model), loss=LossConfig.from_dict(loss))

    @classmethod
    def from_preset(cls, name: str, overrides: Mapping[str, Any] | None = None) -> "GanConfig":
        """A preset from PRESETS with `overrides` ({"model": {...}, "loss": {...}}) merged over it."""
        require_choice("preset", name, PRESETS)
        data = copy.deepcopy(PRESETS[name])
        overrides = overrides or {}
        require_known_keys("gan config", overrides, cls)
        for section, values in overrides.items():
            if not isinstance(values, Mapping):
                raise ValueError(f"{section}: expected a mapping of keys to values, got {type(values).__name__}")
            data[section].update(values)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "loss": self.loss.to_dict()}


# The four classic set-ups by name. "acgan" is the DCGAN loss with type conditioning; its 18 is
# the number of Pokémon types, and a loop should override it with the data set's own count.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dcgan": {"model": {}, "loss": {"name": "dcgan"}},
    "wgan": {"model": {}, "loss": {"name": "wgan"}},
    # Layer norm is what the WGAN-GP paper recommends in place of BatchNorm.
    "wgan-gp": {"model": {"discriminator_norm": "layer"}, "loss": {"name": "wgan-gp"}},
    "acgan": {"model": {"conditional": True, "num_classes": 18}, "loss": {"name": "dcgan"}},
    # FastGAN / lightweight-gan: skip-layer excitation, a self-supervised D, hinge loss.
    # Its native block is nearest-upsample + conv (FastGAN's).
    "lightweight": {"model": {"architecture": "lightweight", "upsampler": "upsample"}, "loss": {"name": "hinge"}},
}
