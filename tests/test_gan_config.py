"""GanConfig: per-loss defaults, JSON round trips, and errors that name the key and the allowed values."""

import dataclasses
import json

import pytest

from pokegan_ray.losses import LOSSES, PRESETS, GanConfig, LossConfig
from pokegan_ray.models import UPSAMPLERS, ModelConfig


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_round_trip_through_json(preset):
    config = GanConfig.from_preset(preset)
    data = json.loads(json.dumps(config.to_dict()))
    assert GanConfig.from_dict(data) == config
    assert data == config.to_dict()


def test_loss_defaults_depend_on_the_loss_and_are_resolved():
    dcgan, wgan, wgan_gp = (LossConfig(name=name) for name in ("dcgan", "wgan", "wgan-gp"))
    assert (dcgan.generator_learning_rate, dcgan.adam_betas, dcgan.n_critic) == (2e-4, (0.5, 0.999), 1)
    assert (wgan.discriminator_learning_rate, wgan.adam_betas, wgan.clip_value, wgan.n_critic) == (5e-5, None, 0.01, 5)
    assert wgan.paper_critic_schedule is True
    assert (wgan_gp.adam_betas, wgan_gp.gp_weight, wgan_gp.paper_critic_schedule) == ((0.0, 0.9), 10.0, False)
    assert dcgan.clip_value is None and dcgan.gp_weight is None
    # An explicit value wins over the loss's default.
    assert LossConfig(name="wgan", n_critic=2).n_critic == 2
    assert LossConfig.from_dict({"name": "dcgan", "adam_betas": [0.0, 0.99]}).adam_betas == (0.0, 0.99)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().latent_size = 3


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"model": {"upsampler": "bilinear"}}, ["model.upsampler", "'transposed'", "'upsample'", "'palette'"]),
        ({"model": {"resolution_px": 96}}, ["model.resolution_px", "64", "128"]),
        ({"model": {"discriminator_norm": "spectral"}}, ["model.discriminator_norm", "'batch'", "'layer'", "'instance'", "'none'"]),
        ({"model": {"architecture": "stylegan"}}, ["model.architecture", "'dcgan'"]),
        ({"model": {"latent_size": 0}}, ["model.latent_size", ">= 1"]),
        ({"model": {"generator_channels": 8.5}}, ["model.generator_channels", "integer"]),
        ({"model": {"conditional": "yes", "num_classes": 3}}, ["model.conditional", "true or false"]),
        ({"loss": {"name": "lsgan"}}, ["loss.name", "'dcgan'", "'hinge'", "'wgan'", "'wgan-gp'"]),
        ({"loss": {"lr_schedule": "exponential"}}, ["loss.lr_schedule", "'constant'", "'step'", "'cosine'", "'linear'"]),
        ({"loss": {"augment_probability": "auto"}}, ["loss.augment_probability", "'adaptive'"]),
        ({"loss": {"name": "wgan", "augment_probability": "adaptive"}}, ["adaptive", "fixed zero"]),
        ({"loss": {"name": "hinge", "r1_gamma": -1}}, ["loss.r1_gamma", ">= 0"]),
        ({"loss": {"generator_lr_step_factor": 0}}, ["loss.generator_lr_step_factor", "> 0"]),
        ({"loss": {"generator_learning_rate": "1e-4"}}, ["loss.generator_learning_rate", "number"]),
        ({"loss": {"discriminator_learning_rate": 0}}, ["loss.discriminator_learning_rate", "> 0"]),
        ({"loss": {"adam_betas": [0.5]}}, ["loss.adam_betas", "two numbers"]),
        ({"loss": {"adam_betas": [0.5, 1.0]}}, ["loss.adam_betas", "< 1.0"]),
        ({"loss": {"n_critic": 0}}, ["loss.n_critic", ">= 1"]),
        ({"loss": {"real_label_smoothing": 0.5}}, ["loss.real_label_smoothing", "< 0.5"]),
        ({"loss": {"ema_decay": 1.0}}, ["loss.ema_decay", "< 1.0"]),
        ({"loss": {"augment_policy": "color,colour"}}, ["loss.augment_policy", "'colour'", "color, translation, cutout"]),
        ({"loss": {"name": "dcgan", "clip_value": 0.01}}, ["loss.clip_value", "does not apply", "'dcgan'"]),
        ({"loss": {"name": "wgan", "gp_weight": 10}}, ["loss.gp_weight", "does not apply", "'wgan'"]),
        ({"loss": {"name": "wgan", "adam_betas": [0.5, 0.9]}}, ["loss.adam_betas", "does not apply"]),
        ({"loss": {"name": "dcgan", "paper_critic_schedule": True}}, ["loss.paper_critic_schedule", "does not apply"]),
        ({"loss": {"name": "wgan", "real_label_smoothing": 0.1}}, ["loss.real_label_smoothing", "'dcgan' only"]),
        ({"loss": {"name": "wgan-gp", "instance_noise_std": 0.1}, "model": {"discriminator_norm": "layer"}}, ["loss.instance_noise_std", "'dcgan' only"]),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(data, fragments):
    with pytest.raises(ValueError) as error:
        GanConfig.from_dict(data)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"modle": {}}, ["'modle'", "model", "loss"]),
        ({"model": {"latent_dim": 128}}, ["model", "'latent_dim'", "latent_size", "upsampler"]),
        ({"loss": {"lambda_gp": 10}}, ["loss", "'lambda_gp'", "gp_weight", "n_critic"]),
    ],
)
def test_unknown_keys_are_rejected_with_the_allowed_keys(data, fragments):
    with pytest.raises(ValueError) as error:
        GanConfig.from_dict(data)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_acgan_without_labels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model\.num_classes must be > 0 when model\.conditional is true"):
        GanConfig.from_dict({"model": {"conditional": True, "num_classes": 0}})
    with pytest.raises(ValueError, match=r"model\.num_classes"):
        GanConfig.from_preset("acgan", {"model": {"num_classes": 0}})
    # Labels without conditioning are fine: an unconditional model on a labelled data set.
    assert GanConfig.from_dict({"model": {"num_classes": 18}}).model.conditional is False


def test_wgan_gp_refuses_a_batchnorm_critic_and_defaults_to_layer_norm():
    with pytest.raises(ValueError, match=r"model\.discriminator_norm='batch'.*'layer', 'instance', 'none'"):
        GanConfig.from_dict({"loss": {"name": "wgan-gp"}, "model": {"discriminator_norm": "batch"}})
    assert GanConfig.from_dict({"loss": {"name": "wgan-gp"}, "model": {"discriminator_norm": "instance"}})
    assert GanConfig.from_dict({"loss": {"name": "wgan-gp"}}).model.discriminator_norm == "layer"
    assert GanConfig.from_dict({"loss": {"name": "wgan"}}).model.discriminator_norm == "batch"


def test_presets_cover_every_loss_and_the_acgan():
    assert {GanConfig.from_preset(name).loss.name for name in PRESETS} == set(LOSSES)
    acgan = GanConfig.from_preset("acgan", {"model": {"num_classes": 7, "upsampler": "palette"}})
    assert acgan.model.conditional and acgan.model.num_classes == 7 and acgan.model.upsampler == "palette"
    with pytest.raises(ValueError, match="preset='began'.*'acgan'"):
        GanConfig.from_preset("began")


def test_every_registered_upsampler_is_a_valid_choice():
    for name in UPSAMPLERS:
        assert ModelConfig(upsampler=name).upsampler == name
