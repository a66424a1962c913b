"""`pokegan generate` from checkpoints and from the registry (moto S3), and the refusal of files that carry code."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import s3_keys
from pokegan_ray.cli import main
from pokegan_ray.losses import build_optimizers
from pokegan_ray.models import build_networks
from pokegan_ray.operations.generate import INTERPOLATION_KEYFRAMES, INTERPOLATION_STEPS, WRITE_BATCH, \
    generated_batches, load_model, slerp
from pokegan_ray.operations.registry import ModelRegistry
from pokegan_ray.storage import location
from pokegan_ray.training.checkpoint import FILE_NAME, FORMAT_VERSION, checkpoint_bytes, rng_state
from pokegan_ray.training.config import ExperimentConfig

TYPES = ["fire", "grass", "water"]


def experiment(conditional: bool) -> ExperimentConfig:
    model = {"generator_channels": 8, "discriminator_channels": 8, "latent_size": 16, "conditional": conditional,
             "num_classes": len(TYPES) if conditional else 0}
    return ExperimentConfig.from_dict({"data": {"uri": "/nowhere"}, "model": model, "scale": {"workers": 1}})


def checkpoint_state(conditional: bool) -> dict:
    """A complete checkpoint as the training loop writes it, of an untrained tiny generator."""
    config = experiment(conditional)
    torch.manual_seed(3)
    generator, discriminator = build_networks(config.gan.model)
    optimizer_g, optimizer_d = build_optimizers(generator, discriminator, config.gan.loss)
    return {"format_version": FORMAT_VERSION, "step": 0, "real_batches": 0, "images_seen": 0,
            "config": config.to_dict(), "classes": TYPES if conditional else [], "dataset_hash": "test",
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "generator_ema": generator.state_dict(), "optimizer_generator": optimizer_g.state_dict(),
            "optimizer_discriminator": optimizer_d.state_dict(), "scaler": None, "rng": {"ranks": [rng_state()]},
            "history": []}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """{"unconditional": a Ray checkpoint folder, "conditional": a checkpoint.pt file}."""
    root = tmp_path_factory.mktemp("checkpoints")
    folder = root / "checkpoint_2026-11-25_02-00-00.000000"
    folder.mkdir()
    (folder / FILE_NAME).write_bytes(checkpoint_bytes(checkpoint_state(conditional=False)))
    conditional_file = root / "acgan.pt"
    conditional_file.write_bytes(checkpoint_bytes(checkpoint_state(conditional=True)))
    return {"unconditional": str(folder), "conditional": str(conditional_file)}


class _OpensAFile:
    """Unpickling this calls open(marker, "w"): the file appears only if the pickle's code runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def malicious_model_bytes(marker: Path) -> bytes:
    """A model file shaped like pokegan's whose generator weights are a pickled call."""
    state = checkpoint_state(conditional=False)
    state["generator_ema"] = _OpensAFile(marker)
    return checkpoint_bytes(state)


def generated(out: Path) -> dict:
    return json.loads((out / "generate.json").read_text())


def test_a_checkpoint_folder_gives_the_requested_images_and_the_same_ones_for_the_same_seed(checkpoints, tmp_path,
                                                                                           capsys):
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    for out, seed in ((first, 5), (again, 5), (other, 6)):
        assert main(["generate", "--model", checkpoints["unconditional"], "--n", "5", "--seed", str(seed),
                     "--out", str(out)]) == 0
    assert f"wrote 5 images, grid.png to {first}" in capsys.readouterr().out
    names = sorted(path.name for path in first.iterdir())
    assert names == ["generate.json", "grid.png"] + [f"pokemon-{index:03d}.png" for index in range(5)]
    image = Image.open(first / "pokemon-000.png")
    assert image.size == (64, 64) and image.mode == "RGB"
    assert Image.open(first / "grid.png").size == (3 * 66 + 2, 2 * 66 + 2)  # 5 tiles in 3 columns, 2 rows
    record = generated(first)
    assert record["seed"] == 5 and record["model"] == checkpoints["unconditional"]
    assert [entry["type"] for entry in record["images"]] == [None] * 5
    for index in range(5):
        name = f"pokemon-{index:03d}.png"
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()


def test_a_conditional_model_makes_the_requested_type_or_cycles_through_its_types(checkpoints, tmp_path):
    cycled, water, fire = tmp_path / "cycled", tmp_path / "water", tmp_path / "fire"
    assert main(["generate", "--model", checkpoints["conditional"], "--n", "6", "--out", str(cycled)]) == 0
    assert main(["generate", "--model", checkpoints["conditional"], "--n", "6", "--type", "Water",
                 "--out", str(water)]) == 0
    assert main(["generate", "--model", checkpoints["conditional"], "--n", "6", "--type", "fire",
                 "--out", str(fire)]) == 0
    assert [entry["type"] for entry in generated(cycled)["images"]] == TYPES + TYPES
    assert [entry["type"] for entry in generated(water)["images"]] == ["water"] * 6
    # Image k always has latent k: where the cycle reaches water (k = 2, 5) it is the same picture,
    # and the same latent as fire is a different one, so the type really reaches the generator.
    for index in (2, 5):
        name = f"pokemon-{index:03d}.png"
        assert (cycled / name).read_bytes() == (water / name).read_bytes()
        assert (fire / name).read_bytes() != (water / name).read_bytes()


@pytest.mark.parametrize("model, type_name, message", [
    ("conditional", "lava", "unknown type 'lava'; .* knows: fire, grass, water"),
    ("unconditional", "fire", "--type fire needs a conditional \\(AC-GAN\\) model, but .* is unconditional"),
])
def test_a_type_the_model_cannot_make_is_a_clear_error(checkpoints, tmp_path, capsys, model, type_name, message):
    out = tmp_path / "out"
    assert main(["generate", "--model", checkpoints[model], "--type", type_name, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pokegan generate: error: ") and len(error.strip().splitlines()) == 1
    assert re.search(message, error), error
    assert not out.exists()


@pytest.mark.parametrize("model, tiles", [("unconditional", 1), ("conditional", len(TYPES))])
def test_interpolate_writes_a_looping_gif_walking_between_seeds(checkpoints, tmp_path, model, tiles):
    out = tmp_path / "out"
    assert main(["generate", "--model", checkpoints[model], "--n", "2", "--interpolate", "--out", str(out)]) == 0
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames == INTERPOLATION_KEYFRAMES * INTERPOLATION_STEPS and gif.info.get("loop") == 0
    # One 64 px tile per type side by side (2 px padding), never shown below 128 px across.
    width = tiles * 66 + 2
    assert gif.size[0] == width * max(1, -(-128 // width))
    frames = []
    for index in (0, INTERPOLATION_STEPS // 2, INTERPOLATION_STEPS):
        gif.seek(index)
        frames.append(gif.convert("RGB").tobytes())
    assert len(set(frames)) == 3  # the walk moves
    assert generated(out)["interpolation"] == "interpolation.gif"


def test_slerp_keeps_to_the_sphere_between_its_end_points():
    generator = torch.Generator().manual_seed(0)
    start, end = torch.randn(128, generator=generator), torch.randn(128, generator=generator)
    end = end / end.norm() * start.norm()
    assert torch.allclose(slerp(start, end, 0.0), start, atol=1e-5)
    assert torch.allclose(slerp(start, end, 1.0), end, atol=1e-5)
    middle = slerp(start, end, 0.5)
    assert middle.norm() == pytest.approx(start.norm().item(), rel=1e-4)
    assert torch.lerp(start, end, 0.5).norm() < 0.8 * start.norm()  # where a straight line would go


def test_the_registry_champion_on_s3_generates_into_s3(s3_bucket, s3_endpoint, tmp_path, capsys):
    registry_uri = f"s3://{s3_bucket}/registry"
    assert main(["generate", "--registry", registry_uri, "--out", str(tmp_path / "none")]) == 2
    assert f"there is no model registry at {registry_uri}" in capsys.readouterr().err

    state = checkpoint_state(conditional=True)
    ModelRegistry(registry_uri).promote(
        generator_ema=state["generator_ema"], config=state["config"], classes=TYPES,
        dataset={"content_hash": "test"}, evaluation={"fid": 100.0}, source={"run_uri": "a test"}, training={})
    assert main(["generate", "--registry", registry_uri, "--n", "3", "--type", "grass", "--seed", "9",
                 "--out", f"s3://{s3_bucket}/out"]) == 0
    keys = {key for key in s3_keys(s3_endpoint, s3_bucket, "out/") if not key.endswith("/")}  # not folder markers
    assert keys == {"out/pokemon-000.png", "out/pokemon-001.png", "out/pokemon-002.png", "out/grid.png",
                    "out/generate.json"}
    record = json.loads(location(f"s3://{s3_bucket}/out/generate.json").read_bytes())
    assert record["model"] == f"champion v0001 of s3://{s3_bucket}/registry/models/pokegan"
    assert [entry["type"] for entry in record["images"]] == ["grass"] * 3

    # The same model named by its version, and the checkpoint it came from, give the same picture.
    by_version, by_checkpoint = tmp_path / "by-version", tmp_path / "by-checkpoint"
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint_bytes(state))
    assert main(["generate", "--registry", registry_uri, "--model", "v0001", "--n", "3", "--type", "grass",
                 "--seed", "9", "--out", str(by_version)]) == 0
    assert main(["generate", "--model", str(checkpoint), "--n", "3", "--type", "grass", "--seed", "9",
                 "--out", str(by_checkpoint)]) == 0
    from_s3 = location(f"s3://{s3_bucket}/out/pokemon-002.png").read_bytes()
    assert (by_version / "pokemon-002.png").read_bytes() == from_s3 == (by_checkpoint / "pokemon-002.png").read_bytes()


@pytest.mark.parametrize("where", ["checkpoint", "registry"])
def test_a_model_file_carrying_code_is_refused_and_its_code_never_runs(tmp_path, capsys, where):
    marker = tmp_path / "pwned"
    payload = malicious_model_bytes(marker)
    if where == "checkpoint":
        model_file = tmp_path / "checkpoint_evil" / FILE_NAME
        model_file.parent.mkdir()
        arguments = ["--model", str(model_file.parent)]
    else:
        registry = ModelRegistry(str(tmp_path / "registry"))
        state = checkpoint_state(conditional=False)
        registry.promote(generator_ema=state["generator_ema"], config=state["config"], classes=[],
                         dataset={}, evaluation={"fid": 1.0}, source={}, training={})
        model_file = Path(registry.champion().generator_uri)  # an attacker replaces the champion's weights
        arguments = ["--registry", str(tmp_path / "registry")]
    model_file.write_bytes(payload)

    assert main(["generate", *arguments, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    # what it refused: the payload's `open`, pickled as io.open before Python 3.13 and _io.open since
    assert f"refusing to load {model_file}" in error and f"GLOBAL {open.__module__}.open" in error
    assert "weights_only" not in error and "can still be loaded" not in error  # never advise the unsafe load
    assert not marker.exists() and not (tmp_path / "out").exists()

    # The control: the file's code is live, and a plain torch.load would have run it.
    torch.load(io.BytesIO(payload), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("contents, message", [
    (b"", "is empty (0 bytes)"),
    (b"step: 400\nfid: 312.5\n", "is not a model file: it does not start as torch.save writes one"),
    (b"PK\x03\x04cut short", "is not a readable model file"),
])
def test_a_file_that_is_not_a_model_is_named_as_such_for_evaluate_and_generate(contents, message, tmp_path,
                                                                               capsys):
    model = tmp_path / "checkpoint.pt"
    model.write_bytes(contents)
    for command in (["evaluate", "--checkpoint", str(model)], ["generate", "--model", str(model), "--out",
                                                                 str(tmp_path / "out")]):
        assert main([*command, "--device", "cpu"]) == 2
        error = capsys.readouterr().err
        assert f"{model} {message}" in error and "weights_only" not in error and "code" not in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device, message", [("gpu", "'gpu' is not a device: use cpu, cuda or cuda:N"),
                                             ("cuda:7", "'cuda:7': ")])
def test_a_device_this_machine_lacks_is_refused_as_an_argument(device, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tmp_path / "checkpoint.pt"), "--device", device])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument --device: {message}" in error and "not a readable model file" not in error


def test_generate_names_a_registry_that_does_not_exist_and_an_out_that_is_a_file(tmp_path, capsys):
    assert main(["generate", "--registry", str(tmp_path / "no-registry"), "--device", "cpu"]) == 2
    assert f"there is no model registry at {tmp_path / 'no-registry'}" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file\n")
    assert main(["generate", "--model", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "taken"),
                     "--device", "cpu"]) == 2
    assert f"--out {tmp_path / 'taken'} is a file" in capsys.readouterr().err


def test_generating_many_images_holds_one_batch_at_a_time_and_keeps_the_seeds_images(checkpoints):
    loaded = load_model(checkpoints["unconditional"])
    sizes = [batch.images.shape[0] for batch in generated_batches(loaded, 2 * WRITE_BATCH + 5, seed=3)]
    assert sizes == [WRITE_BATCH, WRITE_BATCH, 5]
    # The latents are drawn a batch at a time: asking for more keeps the images a smaller --n gave.
    one_batch = next(generated_batches(loaded, WRITE_BATCH, seed=3)).images
    assert torch.equal(one_batch, next(generated_batches(loaded, 2 * WRITE_BATCH + 5, seed=3)).images)
