"""The experiment config: YAML + --set assignments, validation that names the key, run names."""

import pytest

from pokegan_ray.training.config import ExperimentConfig, load_raw_config, merge_sections, parse_assignments, run_name


def test_assignments_are_read_as_yaml_scalars():
    assert parse_assignments(["train.steps=100", "loss.ema_decay=0.99", "scale.use_gpu=true",
                              "loss.adam_betas=[0.5, 0.9]", "model.upsampler=palette"]) == {
        "train": {"steps": 100}, "loss": {"ema_decay": 0.99, "adam_betas": [0.5, 0.9]},
        "scale": {"use_gpu": True}, "model": {"upsampler": "palette"}}
    with pytest.raises(ValueError, match="expected section.key=value"):
        parse_assignments(["steps=100"])


def test_file_then_assignments_and_a_loss_switch_brings_its_own_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss: {name: wgan}\ntrain: {steps: 50, batch_size: 32}\n")
    config = ExperimentConfig.from_dict(load_raw_config(str(path), ["loss.name=wgan-gp", "train.steps=7"]))
    assert config.gan.loss.name == "wgan-gp" and config.gan.loss.gp_weight == 10
    assert config.gan.model.discriminator_norm == "layer"  # WGAN-GP's critic cannot use BatchNorm
    assert config.train.steps == 7 and config.train.batch_size == 32
    assert config.batch_per_worker == 16
    assert ExperimentConfig.from_dict(config.to_dict()) == config  # the round trip through Ray is lossless
    back_to_dcgan = config.with_overrides({"loss": {"name": "dcgan"}})
    assert back_to_dcgan.gan.loss.n_critic == 1 and back_to_dcgan.gan.model.discriminator_norm == "batch"


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown config section.*'trian'.*allowed sections: data, model, loss, train, scale"),
    ({"train": {"stepz": 3}}, "train: unknown key.*'stepz'.*allowed keys:.*steps"),
    ({"train": {"steps": 0}}, "train.steps must be >= 1"),
    ({"train": {"images": 0}}, "train.images must be >= 1"),
    ({"train": {"steps": 10, "images": 640}}, "train.steps=10 and train.images=640: give the run's length in one unit"),
    ({"data": {"resolution": 96}}, "data.resolution=96 is not allowed; choose one of: 64, 128"),
    ({"train": {"batch_size": 9}}, "train.batch_size=9 must divide evenly across scale.workers=2"),
    ({"model": {"upsampler": "pixelshuffle"}}, "model.upsampler='pixelshuffle'.*'transposed', 'upsample', 'palette'"),
    ({"scale": {"gpus_per_worker": 0.5}}, "scale.gpus_per_worker=0.5 needs scale.use_gpu=true"),
    ({"scale": {"use_gpu": True, "gpus_per_worker": 1.5}}, "a fraction up to 1 or a whole number, got 1.5"),
    ({"scale": {"use_gpu": True, "gpus_per_worker": 0.5, "workers": 2}}, "give DDP workers whole GPUs"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_dict(raw)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {steps: [\n")
    with pytest.raises(ValueError, match="broken.yaml is not valid YAML"):
        load_raw_config(str(path))
    with pytest.raises(ValueError, match="cannot read the config file"):
        load_raw_config(str(tmp_path / "missing.yaml"))


def test_run_names_say_what_differs_from_the_defaults():
    assert run_name(ExperimentConfig(), "20261125-120000") == "20261125-120000-default"
    changed = ExperimentConfig.from_dict({"loss": {"name": "wgan-gp"}, "model": {"upsampler": "palette"},
                                          "data": {"uri": "s3://bucket/set"}, "train": {"steps": 5}})
    name = run_name(changed, "20261125-120000")
    assert name.startswith("20261125-120000-wgan-gp") and "upsampler=palette" in name
    assert "bucket" not in name and "steps" not in name  # paths and bookkeeping stay in config.yaml


def test_a_run_measured_in_images_counts_critic_batches_and_its_cadences_in_images():
    wgan = ExperimentConfig.from_dict({"loss": {"name": "wgan-gp", "n_critic": 3},
                                       "train": {"images": 960, "batch_size": 32, "eval_every": 480}})
    train = wgan.train
    assert train.unit == "images" and wgan.total_steps == 10  # 3 critic batches of 32 images per generator step
    assert train.report_every == 25 * 32  # a default cadence: that many steps' worth of batches
    # After generator step 5 the clock went from 384 to 480 images: the evaluation's mark was crossed.
    assert train.clock(5, 480) == 480 and train.evaluation_due(384, 480) and not train.evaluation_due(288, 384)
    assert train.finished(960) and not train.finished(864)
    dcgan = ExperimentConfig.from_dict({"train": {"images": 960, "batch_size": 32}})
    assert dcgan.total_steps == 30
    # The WGAN paper's schedule: 100 critic steps before each of the first 25 generator steps.
    paper = ExperimentConfig.from_dict({"loss": {"name": "wgan"}, "train": {"images": 64 * 250, "batch_size": 64}})
    assert paper.total_steps == 3

    assert ExperimentConfig.from_dict(wgan.to_dict()) == wgan
    assert wgan.with_overrides({"train": {"steps": 4}}).train.unit == "steps"  # a new length replaces the old
    assert ExperimentConfig.from_dict(merge_sections(wgan.to_dict(), {"train": {"steps": 4}})).total_steps == 4
    assert run_name(wgan, "20261125-120000") == "20261125-120000-wgan-gp-n-critic=3-batch-size=32"
