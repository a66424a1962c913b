"""`pokegan train` on a real local Ray: DDP workers, checkpoints in (moto) S3, resume, recovery, failures."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
from pathlib import Path

import boto3
import pytest
import torch
from PIL import Image

from conftest import TEST_SECRET_KEY, s3_keys
from image_files import prepare_two_type_set, write_two_type_source
from pokegan_ray.cluster import ClusterOptions
from pokegan_ray.data import PrepareOptions, prepare
from pokegan_ray.storage import location
from pokegan_ray.training.checkpoint import FILE_NAME, load_checkpoint
from pokegan_ray.training.trainer import TrainError, train

# Tiny networks and few steps: these tests check the orchestration, not image quality.
TINY = {
    "model": {"generator_channels": 8, "discriminator_channels": 8, "latent_size": 16},
    "train": {"steps": 4, "batch_size": 8, "report_every": 1, "eval_every": 4, "eval_images": 8,
              "sample_every": 2, "checkpoint_every": 2},
}

REPORTED = {"step", "images_seen", "epoch", "d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake",
            "images_per_second"}


def config(**sections) -> dict:
    merged = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return merged


@pytest.fixture(scope="module")
def local_data(ray_cluster, tmp_path_factory) -> str:
    return prepare_two_type_set(tmp_path_factory)  # 24 rows, 2 classes


class RankMetrics:
    """A Ray Train callback that keeps every worker's reports in a file (it runs in the controller)."""

    def __new__(cls, path: Path):
        from ray.train import UserCallback

        class _Callback(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                with open(path, "a") as handle:
                    handle.write(json.dumps(metrics) + "\n")

        return _Callback()


def reports(path: Path) -> list[list[dict]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_workers_on_s3_data_report_everything_and_write_checkpoint_and_grid(ray_cluster, local_data,
                                                                               s3_endpoint, s3_bucket, tmp_path):
    s3_data = f"s3://{s3_bucket}/data"
    source = tmp_path / "source"
    write_two_type_source(source, labelled=True)
    prepare(str(source), s3_data, PrepareOptions(resolutions=(64,), augment=2))

    outcome = train(config(data={"uri": s3_data}), storage_uri=f"s3://{s3_bucket}/runs", name="s3run",
                    callbacks=[RankMetrics(tmp_path / "ranks.jsonl")])

    assert outcome.status == "completed" and outcome.step == 4
    every_report = reports(tmp_path / "ranks.jsonl")
    assert all(len(per_rank) == 2 for per_rank in every_report)
    last = every_report[-1][0]
    assert REPORTED <= set(last) and last["step"] == 4 and last["images_seen"] == 4 * 8
    assert {"fid", "kid", "fid_num_images"} <= set(last) and last["fid_num_images"] == 8
    assert outcome.fid == pytest.approx(last["fid"])
    # DDP keeps both replicas identical after every step.
    for per_rank in every_report:
        assert per_rank[0]["generator_checksum"] == per_rank[1]["generator_checksum"]
        assert per_rank[0]["discriminator_checksum"] == per_rank[1]["discriminator_checksum"]

    keys = s3_keys(s3_endpoint, s3_bucket, "runs/s3run/")
    checkpoints = [k for k in keys if k.endswith("/" + FILE_NAME)]
    assert checkpoints and outcome.latest_checkpoint_uri.startswith(f"s3://{s3_bucket}/runs/s3run/")
    for name in ("config.yaml", "samples/step-0000002.png", "samples/step-0000004.png", "progress.gif",
                 "history.png", "status.json"):
        assert f"runs/s3run/{name}" in keys, name
    assert any("/tensorboard/events.out.tfevents" in k for k in keys)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for key in [k for k in keys if k.endswith((".yaml", ".json", ".pt"))]:
        assert TEST_SECRET_KEY.encode() not in client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()

    state = load_checkpoint(location(f"s3://{s3_bucket}/{checkpoints[-1]}").read_bytes(), checkpoints[-1])
    assert state["step"] in (2, 4) and set(state["rng"]) == {"ranks"} and len(state["rng"]["ranks"]) == 2
    grid = Image.open(io.BytesIO(location(outcome.sample_grid_uri).read_bytes()))
    assert grid.size[0] > 64 * 8  # an 8-column grid of 64 px samples
    # Rank 0's report.html in the run folder on S3: the run's row, both grids over time, the best one large.
    assert outcome.report_uri == f"s3://{s3_bucket}/runs/s3run/report.html"
    page = location(outcome.report_uri).read_bytes().decode()
    assert page.count('<tr data-trial="1">') == 1 and '<span class="status completed">' in page
    assert page.count('src="data:image/jpeg;base64,') == 3 and 'alt="trial 1 samples at step 4"' in page


def test_lightweight_gan_under_ddp_keeps_both_replicas_and_their_augment_probability_identical(
        ray_cluster, local_data, tmp_path):
    # The self-supervised D (its decoders run only on real images), hinge loss, lazy R1 and adaptive
    # augmentation, whose statistics are summed over the two ranks (target 0: p rises whenever most of the
    # 16 real scores of a step are positive; at the paper's 0.6 it may never leave 0 in 4 steps).
    loss = {"name": "hinge", "augment_probability": "adaptive", "ada_interval": 1, "ada_adjust_images": 64,
            "ada_target": 0.0, "r1_gamma": 1.0, "r1_interval": 2}
    outcome = train(config(data={"uri": local_data}, model={"architecture": "lightweight"}, loss=loss,
                           train={"eval_every": 0, "sample_every": 4}),
                    storage_uri=str(tmp_path), name="lightweight", callbacks=[RankMetrics(tmp_path / "ranks.jsonl")])
    assert outcome.status == "completed" and outcome.step == 4
    every_report = reports(tmp_path / "ranks.jsonl")
    assert all(len(per_rank) == 2 for per_rank in every_report)
    for per_rank in every_report:
        for key in ("generator_checksum", "discriminator_checksum"):
            assert per_rank[0][key] == per_rank[1][key], key
    assert "d_reconstruction" in every_report[-1][0]
    assert any(per_rank[0]["augment_probability"] > 0 for per_rank in every_report)  # p moved
    # Each rank's own p and last r_t, as its checkpoint keeps them: the same on both, though their shards differ.
    state = load_checkpoint(Path(outcome.latest_checkpoint_uri, FILE_NAME).read_bytes(), "lightweight")
    rank_0, rank_1 = state["loss_states"]
    for key in ("augment_probability", "ada_overfitting"):
        assert rank_0[key] == rank_1[key], key


def _evaluate_on_ranks(rank: int, world_size: int, data_uri: str, weights_file: str, out_folder: str,
                       init_file: str = "") -> None:
    """One rank of an evaluation (world_size 1: in this process; more: a gloo group of processes)."""
    from pokegan_ray.data.prepare import class_frequencies, read_manifest
    from pokegan_ray.models import build_networks
    from pokegan_ray.training.config import ExperimentConfig
    from pokegan_ray.training.evaluation import Evaluator

    torch.set_num_threads(1)
    if world_size > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                             world_size=world_size)
    manifest = read_manifest(location(data_uri))
    experiment = ExperimentConfig.from_dict(config(
        data={"uri": data_uri}, model={"conditional": True, "num_classes": len(manifest["classes"])},
        train={"eval_images": 10}))
    generator, _ = build_networks(experiment.gan.model)
    generator.load_state_dict(torch.load(weights_file, weights_only=True))
    generated = []
    generator.register_forward_hook(lambda module, inputs, output: generated.append(output.shape[0]))
    evaluator = Evaluator(experiment, manifest["classes"], manifest["content_hash"], class_frequencies(manifest),
                          None, torch.device("cpu"), batch_size=4)
    scores = evaluator.evaluate(generator, rank=rank, world_size=world_size)
    Path(out_folder, f"{world_size}-{rank}.json").write_text(json.dumps({"scores": scores, "generated": generated}))
    if world_size > 1:
        torch.distributed.destroy_process_group()


def test_two_ranks_share_an_evaluation_and_score_it_as_one_rank_does(local_data, tmp_path):
    from pokegan_ray.models import build_networks
    from pokegan_ray.models.config import ModelConfig

    torch.manual_seed(3)
    generator, _ = build_networks(ModelConfig(generator_channels=8, discriminator_channels=8, latent_size=16,
                                              conditional=True, num_classes=2))
    weights = str(tmp_path / "generator.pt")
    torch.save(generator.state_dict(), weights)

    _evaluate_on_ranks(0, 1, local_data, weights, str(tmp_path))
    torch.multiprocessing.spawn(_evaluate_on_ranks, args=(2, local_data, weights, str(tmp_path),
                                                          str(tmp_path / "rendezvous")), nprocs=2)

    one, *two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("1-0", "2-0", "2-1"))
    # 10 images in batches of 4: rank 0 generates batches 0 and 2, rank 1 batch 1; only rank 0 scores.
    assert one["generated"] == [4, 4, 2]
    assert [rank["generated"] for rank in two] == [[4, 2], [4]]
    assert two[1]["scores"] == {}
    assert one["scores"]["fid_num_images"] == two[0]["scores"]["fid_num_images"] == 10
    assert abs(one["scores"]["fid"] - two[0]["scores"]["fid"]) <= 1e-6
    assert abs(one["scores"]["kid"] - two[0]["scores"]["kid"]) <= 1e-9


def test_acgan_grids_have_a_row_per_type_and_evaluate_prints_fid_and_kid(ray_cluster, local_data, tmp_path,
                                                                          capsys, monkeypatch):
    from pokegan_ray.cli import main

    # A relative data path, as the README's default is: workers run elsewhere and must still find it.
    monkeypatch.chdir(Path(local_data).parent)
    outcome = train(config(data={"uri": Path(local_data).name}, model={"conditional": True}, scale={"workers": 1},
                           train={"steps": 2, "eval_every": 0}),
                    storage_uri=str(tmp_path), name="for-evaluation")
    assert outcome.status == "completed"
    state = load_checkpoint(Path(outcome.latest_checkpoint_uri, FILE_NAME).read_bytes(), "acgan")
    assert state["config"]["model"]["num_classes"] == 2 and state["classes"] == ["fire", "water"]
    grid = Image.open(outcome.sample_grid_uri)
    assert grid.size[1] == 2 * (64 + 2) + 2  # one row of samples per type: fire, water
    assert main(["evaluate", "--checkpoint", outcome.latest_checkpoint_uri, "--data", local_data,
                 "--images", "8"]) == 0
    printed = capsys.readouterr().out
    assert "FID " in printed and "KID " in printed and "N=8 generated vs 8 real originals" in printed
    fid = float(printed.split("FID ", 1)[1].split()[0])
    assert fid > 0  # an untrained generator is far from the real Pokémon


# The loss state a resume must carry over: adaptive augmentation's p (moved every D step here), the lazy R1's
# step count, and a learning rate that steps down after the first epoch (3 batches of 8 of the 24 rows).
# (ada_target 0: p rises as soon as D calls most reals real, which a few steps reach.)
STATEFUL_LOSS = {"name": "hinge", "augment_probability": "adaptive", "ada_interval": 1, "ada_adjust_images": 64,
                 "ada_target": 0.0,
                 "r1_gamma": 1.0, "r1_interval": 3, "lr_schedule": "step", "lr_step_epochs": 1}


def test_checkpoint_round_trip_and_resume_continue_exactly(ray_cluster, local_data, tmp_path):
    one_worker = config(data={"uri": local_data}, scale={"workers": 1}, train={"eval_every": 0},
                        loss=STATEFUL_LOSS)
    straight = train(one_worker, storage_uri=str(tmp_path), name="straight")
    assert straight.status == "completed"

    halted = config(data={"uri": local_data}, scale={"workers": 1}, train={"eval_every": 0, "steps": 2},
                    loss=STATEFUL_LOSS)
    first_half = train(halted, storage_uri=str(tmp_path), name="halted")
    assert first_half.step == 2
    state = load_checkpoint(Path(first_half.latest_checkpoint_uri, FILE_NAME).read_bytes(), "halted")
    assert state["step"] == 2 and state["real_batches"] == 2
    assert state["optimizer_discriminator"]["state"]  # Adam moments are saved, not dropped
    assert set(state["generator_ema"]) == set(state["generator"])
    assert state["loss_states"][0]["discriminator_steps"] == 2 and "augment_probability" in state["loss_states"][0]

    resumed = train({"train": {"steps": 4}}, storage_uri=str(tmp_path), name="halted", resume=True)
    assert resumed.status == "completed" and resumed.step == 4

    def losses(run: str) -> dict[int, tuple[float, float, float]]:
        history = json.loads((tmp_path / run / "history.json").read_text())
        return {int(e["step"]): (e["d_loss"], e["g_loss"], e["augment_probability"]) for e in history}

    continued, reference = losses("halted"), losses("straight")
    assert sorted(continued) == [1, 2, 3, 4]  # the step counter continued, history kept across the resume
    assert reference[4][2] > reference[2][2]  # p moved after the checkpoint, so its restore is tested
    for step in (3, 4):
        assert continued[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


def test_a_killed_worker_is_replaced_and_the_run_finishes(ray_cluster, local_data, tmp_path):
    from ray.util.state import list_actors

    run_config = config(data={"uri": local_data}, train={"steps": 12, "eval_every": 0, "checkpoint_every": 3,
                                                          "sample_every": 12})
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(
        result=train(run_config, storage_uri=str(tmp_path), name="killed")))
    runner.start()
    killed = None
    checkpoint_seen = threading.Event()
    while runner.is_alive() and killed is None:
        if list((tmp_path / "killed").glob("checkpoint_*/" + FILE_NAME)):
            checkpoint_seen.set()
            # Name this test's cluster: another local Ray on the machine would make "auto" ambiguous.
            workers = list_actors(address=ray_cluster.get_runtime_context().gcs_address,
                                  filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        else:
            checkpoint_seen.wait(0.2)  # poll for the first checkpoint of the run
    runner.join(timeout=600)
    assert killed is not None, "the run finished before a worker could be killed"
    result = outcome["result"]
    assert result.status == "completed" and result.step == 12
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert history[-1]["step"] == 12


# A real way to break a run: a learning rate so large that the weights overflow at the next step.
DIVERGING = {"discriminator_learning_rate": 1.0e+30, "generator_learning_rate": 1.0e+30}


def test_a_non_finite_loss_stops_the_run_with_a_clear_status(ray_cluster, local_data, tmp_path):
    healthy = train(config(data={"uri": local_data}, train={"steps": 2}), storage_uri=str(tmp_path), name="nan")
    assert healthy.status == "completed"
    # Resumed with the diverging rates: NaN from step 3, found at the next report (every 2 steps).
    outcome = train({"loss": DIVERGING, "train": {"steps": 8, "report_every": 2}}, storage_uri=str(tmp_path),
                    name="nan", resume=True)
    assert outcome.status == "non-finite" and outcome.step == 4
    assert "became NaN or infinite between steps 3 and 4" in outcome.message
    assert outcome.fid == healthy.fid  # the healthy part's; none for the broken state
    assert "Non-finite: a loss or weight became NaN" in (tmp_path / "nan" / "report.html").read_text()
    # The last good checkpoint (step 2) is kept, and its weights are finite.
    states = [load_checkpoint((folder / FILE_NAME).read_bytes(), str(folder))
              for folder in sorted(p.parent for p in (tmp_path / "nan").glob("checkpoint_*/" + FILE_NAME))]
    assert [state["step"] for state in states] == [2]
    assert all(torch.isfinite(tensor).all() for tensor in states[0]["generator"].values()
               if tensor.is_floating_point())


def test_a_run_whose_data_reads_cannot_get_a_cpu_says_so_and_fails_after_the_timeout(ray_cluster, local_data,
                                                                                    tmp_path, capfd):
    """The hang seen in a search: a placement group left behind holds the CPUs Ray Data's read tasks need.
    The run's worker fits in what is left, its data never comes; it must not wait in silence forever."""
    from ray.util.placement_group import placement_group, remove_placement_group

    left_behind = placement_group([{"CPU": 1.5}])  # of the cluster's 2 CPUs; the worker takes the other 0.5
    assert left_behind.wait(timeout_seconds=60)
    try:
        outcome = train(config(data={"uri": local_data}, scale={"workers": 1}), storage_uri=str(tmp_path),
                        name="starved", cluster=ClusterOptions(wait_timeout_s=20))
    finally:
        remove_placement_group(left_behind)
    assert outcome.status == "failed" and outcome.step == 0
    assert "did not arrive within 20 s" in outcome.message and "waited for CPUs" in outcome.message
    # Said on the terminal (the worker's line reaches the driver's), well before giving up.
    assert re.search(r"worker 0 has waited 1\d s for its share of the data", capfd.readouterr().out)


@pytest.mark.parametrize("raw, storage, message", [
    ({"model": {"architecture": "stylegan9"}}, None, "model.architecture='stylegan9' is not allowed"),
    ({"model": {"conditional": True}}, "unlabelled", "needs labelled data"),
    ({"scale": {"workers": 8}}, None, "this Ray cluster has 2"),
    ({}, "s3://no-such-bucket-for-runs/runs", "cannot be written"),
])
def test_bad_configs_fail_before_training(ray_cluster, local_data, tmp_path, s3_endpoint, raw, storage, message):
    data = local_data
    if storage == "unlabelled":
        source = tmp_path / "unlabelled"
        write_two_type_source(source, labelled=False)
        data = str(tmp_path / "unlabelled_data")
        prepare(str(source), data, PrepareOptions(resolutions=(64,), augment=0))
        storage = None
    raw = {**raw, "data": {"uri": data}}
    with pytest.raises(TrainError, match=message):
        train(raw, storage_uri=storage or str(tmp_path / "runs"), name="bad")
    assert not (tmp_path / "runs" / "bad").exists()
