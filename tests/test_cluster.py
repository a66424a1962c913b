"""pokegan on a real multi-node Ray: a 0-CPU head (as cluster.yaml's) and worker nodes the tests add and remove.

`ray.cluster_utils.Cluster` starts real raylets on this machine; `pokegan` runs as a separate
driver process joined through RAY_ADDRESS, as on a cluster, with its data and runs in the moto S3
server (the nodes' shared storage). Networks are tiny; the point is the orchestration.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from drivers import Driver, library_noise, prepare_in_s3, tiny_settings, tiny_space
from pokegan_ray.search.runner import trial_bundles, trials_at_once, tune_bundles
from pokegan_ray.storage import location
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.trainer import scaling_config

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    """A 0-CPU head node, like cluster.yaml's; tests add and remove 2-CPU worker nodes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": _free_port()})
    yield cluster
    cluster.shutdown()


@pytest.fixture
def workers(cluster):
    """Add worker nodes with `workers.add()`; every node still there is removed after the test."""

    class Workers:
        def __init__(self):
            self.nodes = []

        def add(self, cpus: int = 2):
            node = cluster.add_node(num_cpus=cpus)
            self.nodes.append(node)
            return node

        def remove(self, node) -> None:
            cluster.remove_node(node)
            self.nodes.remove(node)

    added = Workers()
    yield added
    for node in list(added.nodes):
        added.remove(node)


@pytest.fixture
def driver_env(cluster) -> dict[str, str]:
    """The environment of a pokegan command joined to the cluster (the S3 settings come from conftest)."""
    return {**os.environ, "RAY_ADDRESS": cluster.address}


@pytest.fixture(scope="module")
def s3_data(cluster, s3_endpoint, tmp_path_factory) -> str:
    """The two-type set prepared into S3 by `pokegan prepare` on the cluster, on a node added for it."""
    node = cluster.add_node(num_cpus=2)
    try:
        return prepare_in_s3({**os.environ, "RAY_ADDRESS": cluster.address}, s3_endpoint, tmp_path_factory)
    finally:
        cluster.remove_node(node)


def run_status(uri: str) -> dict:
    return json.loads(location(uri).join("status.json").read_bytes())


def test_local_paths_are_refused_on_a_multi_node_cluster(cluster, workers, driver_env, s3_data, s3_bucket, tmp_path):
    workers.add()  # head + one worker: two nodes, and the head's disk is not the worker's
    train = Driver(["train", "--data", s3_data, "--storage", str(tmp_path / "runs"), *tiny_settings()], driver_env)
    assert train.finish(timeout=120) == 2
    assert "--storage" in train.output and "is a local path, but this Ray cluster has 2 nodes" in train.output
    assert "Use s3://bucket/prefix" in train.output and "--shared-filesystem" in train.output

    tune = Driver(["tune", "--space", str(tiny_space(tmp_path / "space.yaml", samples=1)), "--data",
                   str(tmp_path / "data"), "--storage", f"s3://{s3_bucket}/searches"], driver_env)
    assert tune.finish(timeout=120) == 2
    assert "--data" in tune.output and "is a local path" in tune.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # nothing written or prepared


def test_train_and_tune_started_on_an_empty_cluster_wait_for_a_node_and_complete(cluster, workers, driver_env,
                                                                                  s3_data, s3_bucket, tmp_path):
    runs = f"s3://{s3_bucket}/runs"
    train = Driver(["train", "--data", s3_data, "--storage", runs, "--name", "waited", "--cluster-timeout", "5",
                    *tiny_settings(**{"train.steps": 4, "train.eval_every": 4, "train.report_every": 2,
                                      "train.checkpoint_every": 4, "train.sample_every": 4})], driver_env)
    waiting = train.wait_for("waits for the cluster", timeout=120)
    assert "needs 0.5 CPU" in waiting and "0 CPU on 1 node(s)" in waiting
    node = workers.add()
    assert train.finish(timeout=300) == 0, train.output[-4000:]
    assert "the cluster has room now" in train.output
    assert run_status(f"{runs}/waited")["status"] == "completed"
    # The run's progress off a terminal: plain lines the driver reads from the run folder (in S3 here), not
    # the workers' own; none of Ray Train's or Ray Data's logging (issue 14).
    steps = [line for line in train.output.splitlines() if "[pokegan] step " in line]
    assert steps and all(line.startswith("[pokegan] step ") for line in steps), train.output[-4000:]
    assert "[pokegan] step 4/4 | images 32 |" in train.output, train.output[-4000:]
    assert not library_noise(train.output), library_noise(train.output)

    workers.remove(node)  # empty again: now a search
    space = tiny_space(tmp_path / "space.yaml", samples=1, steps=4, eval_every=4, report_every=2,
                       checkpoint_every=4, sample_every=4)
    tune = Driver(["tune", "--space", str(space), "--data", s3_data, "--storage", f"s3://{s3_bucket}/searches",
                   "--name", "waited", "--cluster-timeout", "5"], driver_env)
    assert "needs 0.5 CPU" in tune.wait_for("waits for the cluster", timeout=120)
    workers.add()
    assert tune.finish(timeout=300) == 0, tune.output[-4000:]
    assert "trial 1/1 completed" in tune.output
    # pokegan's lines, not Tune's configuration box and hints or Optuna's banner (issue 14).
    assert not library_noise(tune.output), library_noise(tune.output)


def test_a_trial_whose_node_is_lost_continues_from_its_checkpoint_on_another_node(cluster, workers, driver_env,
                                                                                   s3_data, s3_bucket, tmp_path):
    first = workers.add()
    space = tiny_space(tmp_path / "space.yaml", samples=1, steps=240, eval_every=40, report_every=40,
                       checkpoint_every=40, sample_every=240, keep_checkpoints=2)
    searches = f"s3://{s3_bucket}/searches"
    tune = Driver(["tune", "--space", str(space), "--data", s3_data, "--storage", searches, "--name", "spot"],
                  driver_env)
    tune.wait_for("trial 1/1 step 40:", timeout=240)  # its first checkpoint is stored with this report
    workers.add()  # where the trial can go on
    workers.remove(first)  # a spot node taken away mid-trial
    assert tune.finish(timeout=600) == 0, tune.output[-4000:]

    (trial_file,) = location(f"{searches}/spot/trials").list_files()
    record = json.loads(location(f"{searches}/spot/trials").filesystem.open_input_stream(trial_file.path).read())
    assert record["status"] == "completed", record
    assert len(record["restarts"]) == 1 and record["restarts"][0]["after_step"] >= 40, record["restarts"]
    steps = [entry["step"] for entry in record["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 240
    # The restarted process continued from a checkpoint, not from step 0.
    history = json.loads(location(record["run_uri"]).join("history.json").read_bytes())
    assert history[-1]["resumed_from_step"] >= 40
    assert "continuing from the checkpoint at step" in tune.output
    assert "lost its process after step" in tune.output


def test_a_fraction_of_a_gpu_reaches_ray_train_and_packs_search_trials_on_a_gpu_node():
    quarter = ExperimentConfig.from_dict({"scale": {"workers": 1, "use_gpu": True, "cpus_per_worker": 1,
                                                    "gpus_per_worker": 0.25}})
    train = scaling_config(quarter)
    assert train.use_gpu and train.num_workers == 1 and train.resources_per_worker == {"CPU": 1.0, "GPU": 0.25}
    assert trial_bundles(quarter) == tune_bundles(quarter) == [{"CPU": 1.0, "GPU": 0.25}]  # what a trial takes
    # A DDP trial's TorchTrainer reserves its GPUs itself: Tune reserving them too would hold every GPU twice.
    ddp = quarter.with_overrides({"scale": {"workers": 2, "gpus_per_worker": 1}})
    assert trial_bundles(ddp) == [{"CPU": 0.01}, {"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert tune_bundles(ddp) == [{"CPU": 0.01}]
    g5_xlarge = {"CPU": 4.0, "GPU": 1.0}  # cluster.yaml's GPU worker
    assert trials_at_once(trial_bundles(quarter), [], [g5_xlarge], wanted=16) == 4
    assert trials_at_once(trial_bundles(quarter), [], [g5_xlarge] * 4, wanted=16) == 16
    whole = quarter.with_overrides({"scale": {"gpus_per_worker": 1, "cpus_per_worker": 1}})
    assert trials_at_once(trial_bundles(whole), [], [g5_xlarge] * 4, wanted=16) == 4  # GPUs bound it
    cpu_bound = quarter.with_overrides({"scale": {"cpus_per_worker": 2}})
    assert trials_at_once(trial_bundles(cpu_bound), [], [g5_xlarge], wanted=16) == 2  # CPUs bound it
