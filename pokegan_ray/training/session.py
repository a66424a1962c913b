"""How the training loop talks to Ray, in two forms.

- `RayTrainSession`: one worker of a Ray Train `TorchTrainer` (DDP across workers, the data
  set sharded by Ray Data, checkpoints kept by Ray Train). `pokegan train`, `pokegan retrain`
  and multi-worker search trials run this way.
- `TuneTrialSession`: a single-worker search trial runs the loop inside its own Tune trial
  process. A `TorchTrainer` per trial costs ~18 s of start-up and seven helper actors (~2.6 GB
  resident) before the first step; here the trial reads the prepared set itself with pyarrow
  and reports (and checkpoints) through Tune, which also restarts it after a failure.

The loop (`pokegan_ray.training.loop.run_training`) sees only this interface.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Protocol

import torch

from pokegan_ray.data.reader import InMemoryImages, read_images
from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.training.checkpoint import FILE_NAME, checkpoint_bytes
from pokegan_ray.training.config import ExperimentConfig

# A worker that has waited this long for its data says so (the driver's terminal shows worker output).
DATA_WAIT_NOTICE_S = 45.0


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def load_shard(self) -> InMemoryImages | None:
        """This worker's images in memory; None if they did not come within the cluster wait timeout."""

    def latest_checkpoint(self) -> tuple[bytes, str] | None:
        """(bytes of checkpoint.pt, where it came from) of the checkpoint to continue from, if any."""

    def report(self, metrics: dict[str, float], checkpoint_state: dict[str, Any] | None) -> None:
        """Pass metrics (and, from rank 0 at checkpoint steps, a complete checkpoint) to Ray."""

    def all_true(self, flag: bool) -> bool:
        """True only when `flag` holds on every rank (a collective when there are several)."""


class RayTrainSession:
    """A Ray Train worker: rank, device and data shard from Ray Train; reports through `ray.train.report`."""

    def __init__(self, experiment: ExperimentConfig, data_wait_timeout_s: float):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.experiment = experiment
        self.data_wait_timeout_s = data_wait_timeout_s

    def load_shard(self) -> InMemoryImages | None:
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        return load_within(lambda: InMemoryImages.load(shard, self.device), self.rank, self.data_wait_timeout_s)

    def latest_checkpoint(self) -> tuple[bytes, str] | None:
        import ray.train

        return _checkpoint_file(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, float], checkpoint_state: dict[str, Any] | None) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if checkpoint_state is not None:
                _write_checkpoint(folder, checkpoint_state)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint)

    def all_true(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())


class TuneTrialSession:
    """A single-worker search trial running the loop in its own Tune trial process.

    Only reports that Tune acts on are sent: evaluations (the scheduler, stopper and searcher
    compare FIDs) and checkpoints (Tune keeps them and restarts a failed trial from the latest).
    Every report carries each signal (`fid`, `kid`, `fid_infinity`) and its best so far (Tune checks
    that each result has the metrics its scheduler and searcher use): a report without a new
    evaluation carries the last scores, and `evaluated` says whether this report's are new.
    """

    rank, world_size = 0, 1

    def __init__(self, experiment: ExperimentConfig):
        self.experiment = experiment
        if experiment.scale.use_gpu and not torch.cuda.is_available():
            # Ray gave this trial a GPU share (CUDA_VISIBLE_DEVICES), but torch sees no GPU: a node whose
            # "GPU" resource has no driver behind it. Training on its CPU instead would be silently slow.
            raise RuntimeError(f"scale.use_gpu is true, but torch sees no GPU on this trial's node "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})")
        self.device = torch.device("cuda" if experiment.scale.use_gpu else "cpu")

    def load_shard(self) -> InMemoryImages:
        data = self.experiment.data
        images, labels = read_images(data.uri, data.resolution, rows=data.rows)
        return InMemoryImages(images.to(self.device), labels.to(self.device))

    def latest_checkpoint(self) -> tuple[bytes, str] | None:
        from ray import tune

        return _checkpoint_file(tune.get_checkpoint())

    def report(self, metrics: dict[str, float], checkpoint_state: dict[str, Any] | None) -> None:
        from ray import tune

        evaluated = "fid" in metrics
        if not evaluated and checkpoint_state is None:
            return
        result = {**metrics, "evaluated": float(evaluated)}
        for signal in SIGNALS:
            result[signal] = metrics.get(signal, metrics.get(f"last_{signal}", math.inf))
            result[f"best_{signal}"] = metrics.get(f"best_{signal}", math.inf)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if checkpoint_state is not None:
                _write_checkpoint(folder, checkpoint_state)
                checkpoint = tune.Checkpoint.from_directory(folder)
            tune.report(result, checkpoint=checkpoint)

    def all_true(self, flag: bool) -> bool:
        return flag


def load_within(load: Callable[[], InMemoryImages], rank: int, timeout_s: float) -> InMemoryImages | None:
    """Run `load` (reading a Ray Data shard), saying so when it waits; None after `timeout_s`.

    Ray Data's read tasks need free CPUs; when something else holds them the read waits without
    a word on the driver's terminal ("the job may hang forever" lands only in a worker log). The
    read runs in a thread so this one can speak up and give up; a thread left waiting dies with
    the worker process when the run ends.
    """
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            outcome["shard"] = load()
        except BaseException as error:  # handed to the training thread below
            outcome["error"] = error

    reader = threading.Thread(target=read, name="pokegan-read-shard", daemon=True)
    reader.start()
    started = time.monotonic()
    next_notice = min(DATA_WAIT_NOTICE_S, timeout_s / 2)
    while reader.is_alive():
        reader.join(timeout=1.0)
        waited = time.monotonic() - started
        if reader.is_alive() and waited >= timeout_s:
            return None
        if reader.is_alive() and waited >= next_notice:
            next_notice += 60.0
            sys.stdout.write(f"[pokegan] worker {rank} has waited {waited:.0f} s for its share of the data: Ray "
                             f"Data's read tasks wait for free CPUs ({_free_cpus_text()}). It gives up after "
                             f"{timeout_s:.0f} s\n")
            sys.stdout.flush()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["shard"]


def _free_cpus_text() -> str:
    import ray

    try:
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        return f"{free:g} of the cluster's {total:g} CPUs are free"
    except Exception:  # only for the message
        return "the cluster's free CPUs are unknown"


def _checkpoint_file(checkpoint) -> tuple[bytes, str] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        with open(os.path.join(folder, FILE_NAME), "rb") as handle:
            return handle.read(), f"checkpoint {checkpoint.path}"


def _write_checkpoint(folder: str, state: dict[str, Any]) -> None:
    with open(os.path.join(folder, FILE_NAME), "wb") as handle:
        handle.write(checkpoint_bytes(state))
