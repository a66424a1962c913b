"""The model registry, its lock and `pokegan retrain`, on a real local Ray and a real (moto) S3 server."""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
import uuid
from pathlib import Path

import boto3
import pytest
import torch
from mlflow import MlflowClient

from conftest import TEST_SECRET_KEY, s3_keys
from image_files import prepare_two_type_set
from pokegan_ray.cli import EXIT_LOCKED, main
from pokegan_ray.models import build_networks
from pokegan_ray.operations.lock import LockHeld, LockRecord, ObjectStoreLock
from pokegan_ray.operations.registry import ModelRegistry
from pokegan_ray.operations.retrain import RetrainOptions, retrain
from pokegan_ray.storage import location
from pokegan_ray.training.checkpoint import FILE_NAME, load_checkpoint, load_tensors
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.trainer import resolve_config

# Tiny networks, 4 steps, 1 worker (so a run is exactly repeatable), FID on 8 images.
TINY = {
    "model": {"generator_channels": 8, "discriminator_channels": 8, "latent_size": 16},
    "train": {"steps": 4, "batch_size": 8, "report_every": 2, "eval_every": 0, "eval_images": 8,
              "sample_every": 4, "checkpoint_every": 4},
    "scale": {"workers": 1},
}
TINY_ARGS = [argument for section, values in TINY.items() for key, value in values.items()
             for argument in ("--set", f"{section}.{key}={value}")]
SUMMARY = re.compile(r"^retrain \d{4}-\d\d-\d\dT\d\d:\d\dZ: ")


def summary_line(stdout: str) -> str:
    """The one summary line among the stdout that Ray forwards from the training workers."""
    lines = [line for line in stdout.splitlines() if SUMMARY.match(line)]
    assert len(lines) == 1, stdout[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def data_uri(ray_cluster, tmp_path_factory) -> str:
    return prepare_two_type_set(tmp_path_factory)  # 8 images x 3 versions, 2 types


@pytest.fixture(scope="module")
def module_bucket(s3_endpoint) -> str:
    name = f"pokegan-registry-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def s3_champion(data_uri, module_bucket):
    """An S3 registry after its first retrain; the tests that use it must leave its champion as it is."""
    registry_uri = f"s3://{module_bucket}/registry"
    outcome = retrain(RetrainOptions(registry_uri=registry_uri, overrides=TINY, data_uri=data_uri))
    return registry_uri, outcome


def registry_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in s3_keys(endpoint, bucket, "registry/models/") if not key.endswith("/")}  # not folder markers


def publish(registry: ModelRegistry, data_uri: str, generator_ema: dict, fid: float) -> None:
    """Promote a hand-made generator with the tiny config, as if a retrain had."""
    experiment, manifest = resolve_config({**TINY, "data": {"uri": data_uri}})
    registry.promote(generator_ema=generator_ema, config=experiment.to_dict(), classes=manifest["classes"],
                     dataset={"uri": data_uri, "content_hash": manifest["content_hash"]},
                     evaluation={"fid": fid, "fid_num_images": 8}, source={"run_uri": "made by a test"},
                     training={"steps": 0})


def tiny_generator_weights(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A freshly initialised tiny generator's weights, as training seeded with `seed` starts."""
    torch.manual_seed(seed)
    generator, _ = build_networks(ExperimentConfig.from_dict(TINY).gan.model)
    return {name: tensor * scale if tensor.is_floating_point() else tensor
            for name, tensor in generator.state_dict().items()}


# -- the lock (no Ray) --------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def lock_location(request, tmp_path):
    if request.param == "local":
        return location(str(tmp_path / "models" / "pokegan" / "lock.json"))
    bucket = request.getfixturevalue("s3_bucket")
    return location(f"s3://{bucket}/registry/models/pokegan/lock.json")


def test_of_many_racing_retrains_exactly_one_takes_the_lock(lock_location):
    racers = 6
    start = threading.Barrier(racers)
    results: dict[int, str] = {}

    def race(index: int) -> None:
        lock = ObjectStoreLock(lock_location, owner=f"racer-{index}")
        start.wait()
        try:
            lock.acquire()
            results[index] = "won"
        except LockHeld as error:
            results[index] = str(error)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [index for index, result in results.items() if result == "won"]
    assert len(winners) == 1, results
    holder = json.loads(lock_location.read_bytes())
    assert holder["owner"] == f"racer-{winners[0]}"
    for index, message in results.items():
        if index != winners[0]:
            assert f"held by racer-{winners[0]} (" in message and " since " in message


def test_a_stale_lock_is_broken_with_a_warning_and_a_fresh_one_is_respected(lock_location, caplog):
    def crashed_run_lock(hours_ago: float) -> None:
        started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours_ago)
        record = LockRecord(owner="pokegan retrain", user="night", host="old-node", pid=4242,
                            started_at=started.isoformat(timespec="seconds"), token="crashed")
        lock_location.write_bytes_atomic(record.to_bytes())

    crashed_run_lock(hours_ago=1)
    with pytest.raises(LockHeld, match=r"held by pokegan retrain \(night@old-node, pid 4242\) since .* \(1h00m ago\)"):
        ObjectStoreLock(lock_location, owner="me").acquire()

    crashed_run_lock(hours_ago=13)
    lock = ObjectStoreLock(lock_location, owner="me", ttl_seconds=12 * 3600)
    with caplog.at_level(logging.WARNING, logger="pokegan_ray.operations.lock"):
        record = lock.acquire()
    assert "breaking the stale lock" in caplog.text and "night@old-node" in caplog.text
    assert json.loads(lock_location.read_bytes())["token"] == record.token
    lock.release()
    assert not lock_location.exists()


def test_release_leaves_alone_a_lock_that_someone_else_took_over(lock_location, caplog):
    first = ObjectStoreLock(lock_location, owner="first")
    first.acquire()
    second = ObjectStoreLock(lock_location, owner="second", ttl_seconds=0)  # every lock is stale to it
    second_record = second.acquire()
    with caplog.at_level(logging.WARNING, logger="pokegan_ray.operations.lock"):
        first.release()
    assert "no longer ours" in caplog.text
    assert json.loads(lock_location.read_bytes())["token"] == second_record.token
    second.release()
    assert not lock_location.exists()


def test_waiting_takes_the_lock_as_soon_as_its_holder_lets_go(tmp_path):
    target = location(str(tmp_path / "lock.json"))
    holder = ObjectStoreLock(target, owner="holder")
    holder.acquire()
    naps: list[float] = []

    def nap(seconds: float) -> None:  # the holder finishes while we wait
        naps.append(seconds)
        holder.release()

    record = ObjectStoreLock(target, owner="waiter").acquire(wait_seconds=60, poll_seconds=5, sleep=nap)
    assert naps == [5] and record.owner == "waiter"
    with pytest.raises(LockHeld, match=r"held by waiter .* after waiting 0.01 s"):
        ObjectStoreLock(target, owner="third").acquire(wait_seconds=0.01)


# -- the registry (no training) -----------------------------------------------------------
def test_promotions_keep_every_version_and_never_reuse_a_number(data_uri, tmp_path):
    registry = ModelRegistry(str(tmp_path / "registry"))
    assert registry.champion() is None
    publish(registry, data_uri, tiny_generator_weights(seed=1), fid=90.0)
    publish(registry, data_uri, tiny_generator_weights(seed=2), fid=80.0)
    # A promotion that crashed after writing its file but before the index swap leaves an orphan folder.
    orphan = tmp_path / "registry" / "models" / "pokegan" / "versions" / "0003" / "generator.pt"
    orphan.parent.mkdir()
    orphan.write_bytes(b"half-written")
    assert registry.champion().number == 2  # readers follow the index, never the orphan
    publish(registry, data_uri, tiny_generator_weights(seed=3), fid=70.0)

    index = registry.read_index()
    assert index["champion"] == 4
    assert [entry["version"] for entry in index["versions"]] == [1, 2, 4]
    assert [entry["replaced"] for entry in index["versions"]] == [None, "v0001", "v0002"]
    first = registry.version(1)
    state = registry.load_generator_state(first)
    assert torch.equal(state["generator_ema"]["stem.0.weight"], tiny_generator_weights(seed=1)["stem.0.weight"])
    assert first.record["evaluation"]["fid"] == 90.0 and first.record["classes"] == ["fire", "water"]
    folder = tmp_path / "registry" / "models" / "pokegan" / "versions"
    assert sorted(p.name for p in (folder / "0004").iterdir()) == ["config.yaml", "generator.pt", "model.json"]


def test_a_model_name_that_could_escape_its_folder_is_refused(tmp_path):
    from pokegan_ray.operations.registry import RegistryError

    with pytest.raises(RegistryError, match="model name '../other'"):
        ModelRegistry(str(tmp_path), "../other")


# -- pokegan retrain (real training) -------------------------------------------------------
def test_the_first_retrain_promotes_its_model_into_the_s3_registry(s3_champion, s3_endpoint, module_bucket,
                                                                  data_uri):
    _, outcome = s3_champion
    assert outcome.decision == "promoted" and outcome.champion == "v0001"
    assert SUMMARY.match(outcome.summary)
    assert re.search(r": promoted v0001 \(first model; FID \d+\.\d, N=8\), data [0-9a-f]{12}, 4 steps in (\d+m)?\d+s$",
                     outcome.summary), outcome.summary

    objects = registry_objects(s3_endpoint, module_bucket)
    prefix = "registry/models/pokegan/"
    assert {prefix + name for name in ("index.json", "versions/0001/generator.pt", "versions/0001/model.json",
                                       "versions/0001/config.yaml", "versions/0001/samples.png")} == set(objects)
    assert all(TEST_SECRET_KEY.encode() not in data for data in objects.values())
    index = json.loads(objects[prefix + "index.json"])
    assert index["champion"] == 1 and [entry["version"] for entry in index["versions"]] == [1]
    record = json.loads(objects[prefix + "versions/0001/model.json"])
    manifest = json.loads(Path(data_uri, "manifest.json").read_text())
    assert record["dataset"]["content_hash"] == manifest["content_hash"]
    assert record["classes"] == ["fire", "water"]
    assert record["evaluation"]["fid"] == pytest.approx(outcome.candidate_fid)
    assert record["evaluation"]["fid_num_images"] == 8 and record["evaluation"]["seed"] == 0
    assert record["source"]["run_uri"].startswith(f"s3://{module_bucket}/registry/runs/retrain-")
    assert record["source"]["checkpoint_uri"].startswith(record["source"]["run_uri"] + "/checkpoint_")
    assert record["config"]["train"]["steps"] == 4 and record["config"]["model"]["generator_channels"] == 8
    state = load_tensors(objects[prefix + "versions/0001/generator.pt"], "generator.pt")  # weights_only=True
    source = load_checkpoint(location(record["source"]["checkpoint_uri"]).join(FILE_NAME).read_bytes(), "source")
    assert all(torch.equal(state["generator_ema"][key], source["generator_ema"][key]) for key in source["generator_ema"])


def test_a_candidate_no_better_than_the_champion_is_kept(s3_champion, s3_endpoint, module_bucket, capsys):
    registry_uri, _ = s3_champion
    before = registry_objects(s3_endpoint, module_bucket)
    # The same config and seed on one worker trains the very same generator: equal FIDs, and a tie keeps.
    assert main(["retrain", "--registry", registry_uri]) == 0
    summary = summary_line(capsys.readouterr().out)
    assert re.search(r": kept champion v0001 \(FID (\d+\.\d); candidate \1, not below \1 - margin 0, N=8\), "
                     r"data [0-9a-f]{12}, 4 steps in (\d+m)?\d+s$", summary), summary
    assert registry_objects(s3_endpoint, module_bucket) == before


def test_a_failed_training_leaves_the_champion_untouched(s3_champion, s3_endpoint, module_bucket, capsys):
    registry_uri, _ = s3_champion
    before = registry_objects(s3_endpoint, module_bucket)
    # A learning rate of 1e30 overflows the weights within a few steps.
    assert main(["retrain", "--registry", registry_uri, "--set", "loss.discriminator_learning_rate=1.0e+30",
                 "--set", "loss.generator_learning_rate=1.0e+30"]) == 1
    summary = summary_line(capsys.readouterr().out)
    assert re.search(r"FAILED: training non-finite at step [24]: a loss or weight became NaN or infinite", summary), \
        summary
    assert summary.endswith("; champion v0001 untouched")
    assert registry_objects(s3_endpoint, module_bucket) == before  # the lock is gone again too


def test_a_second_retrain_is_refused_while_the_lock_is_held(s3_champion, s3_endpoint, module_bucket, capsys):
    registry_uri, _ = s3_champion
    before = registry_objects(s3_endpoint, module_bucket)
    other = ModelRegistry(registry_uri).lock("pokegan retrain")
    held = other.acquire()
    try:
        assert main(["retrain", "--registry", registry_uri]) == EXIT_LOCKED
        printed = capsys.readouterr()
        assert not any(SUMMARY.match(line) for line in printed.out.splitlines())  # it did not start at all
        assert f"is held by pokegan retrain ({held.user}@{held.host}, pid {held.pid}) since {held.started_at}" \
            in printed.err
        after = registry_objects(s3_endpoint, module_bucket)
        lock_key = "registry/models/pokegan/lock.json"
        assert json.loads(after.pop(lock_key))["token"] == held.token  # the refused run left it alone
        assert after == before
    finally:
        other.release()


def test_a_better_candidate_replaces_a_champion_whose_recorded_fid_looks_unbeatable(data_uri, tmp_path, capsys,
                                                                                   mlflow_server):
    registry = ModelRegistry(str(tmp_path / "registry"))
    # Weights x30 make saturated colour noise: far from any Pokémon, though its record claims FID 0.
    publish(registry, data_uri, tiny_generator_weights(seed=1, scale=30.0), fid=0.0)
    tracking_uri = mlflow_server.uri()
    assert main(["retrain", "--registry", str(tmp_path / "registry"), "--margin", "1", "--mlflow", tracking_uri]) == 0
    summary = summary_line(capsys.readouterr().out)
    match = re.search(r": promoted v0002 \(FID (\d+\.\d) < champion v0001 (\d+\.\d) - margin 1, N=8\)", summary)
    assert match, summary
    assert float(match.group(1)) < float(match.group(2)) - 1
    index = registry.read_index()
    assert index["champion"] == 2 and [entry["version"] for entry in index["versions"]] == [1, 2]
    assert registry.version(1).record["evaluation"]["fid"] == 0.0  # history is kept as it was
    assert f"{registry.version(2).record['evaluation']['champion_fid_same_evaluation']:.1f}" == match.group(2)

    # The promotion is recorded on the candidate's MLflow run, with both FIDs of the same evaluation.
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("pokegan-retrain").experiment_id],
                               f"tags.registry_uri = '{tmp_path / 'registry'}'")
    tags = run.data.tags
    assert (tags["decision"], tags["promoted"], tags["registry_version"], run.info.status) == \
        ("promoted", "true", "v0002", "FINISHED")
    assert f"{run.data.metrics['candidate_fid']:.1f}" == match.group(1)
    assert f"{run.data.metrics['champion_fid']:.1f}" == match.group(2)
    assert tags["best_checkpoint_uri"] == registry.version(2).record["source"]["checkpoint_uri"]
    assert tags["run_uri"] == registry.version(2).record["source"]["run_uri"]
    logged = [*run.data.params.values(), *tags.values()]
    assert all(TEST_SECRET_KEY not in value for value in logged)


def test_warm_start_begins_from_the_champion_generator(data_uri, tmp_path, capsys):
    registry_uri = str(tmp_path / "registry")
    registry = ModelRegistry(registry_uri)
    champion_weights = tiny_generator_weights(seed=7)
    publish(registry, data_uri, champion_weights, fid=500.0)

    # A different network cannot start from the champion's weights: refused before any training.
    assert main(["retrain", "--registry", registry_uri, "--warm-start",
                 "--set", "model.generator_channels=16"]) == 1
    assert "needs the champion's network" in summary_line(capsys.readouterr().out)

    assert main(["retrain", "--registry", registry_uri, "--warm-start", "--set", "train.steps=1"]) == 0
    capsys.readouterr()
    run = next((tmp_path / "registry" / "runs").glob("retrain-*"))
    state = load_checkpoint(next(run.glob("checkpoint_*/" + FILE_NAME)).read_bytes(), "candidate")
    assert state["step"] == 1
    # One Adam step moves each weight by at most about the learning rate (2e-4) from where it started.
    for name, tensor in state["generator"].items():
        if tensor.is_floating_point() and not name.endswith(("running_mean", "running_var")):
            assert (tensor - champion_weights[name]).abs().max() < 1e-3, name
    fresh = tiny_generator_weights(seed=0)  # what training without --warm-start starts from
    assert (fresh["stem.0.weight"] - champion_weights["stem.0.weight"]).abs().max() > 1e-2


def test_a_champion_file_carrying_code_is_refused_and_never_run(data_uri, tmp_path, capsys):
    from test_generate import malicious_model_bytes

    registry_uri = str(tmp_path / "registry")
    registry = ModelRegistry(registry_uri)
    publish(registry, data_uri, tiny_generator_weights(seed=1), fid=100.0)
    marker = tmp_path / "pwned"
    Path(registry.champion().generator_uri).write_bytes(malicious_model_bytes(marker))
    index_before = (tmp_path / "registry" / "models" / "pokegan" / "index.json").read_bytes()

    assert main(["retrain", "--registry", registry_uri, "--warm-start"]) == 1
    summary = summary_line(capsys.readouterr().out)
    assert "FAILED: refusing to load" in summary and "loads model files only as data" in summary
    assert summary.endswith("; champion v0001 untouched")
    assert not marker.exists()
    assert (tmp_path / "registry" / "models" / "pokegan" / "index.json").read_bytes() == index_before
