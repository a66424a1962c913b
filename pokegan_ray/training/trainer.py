"""The driver side of `pokegan train`: check everything, then run a Ray `TorchTrainer`.

Every check that can fail without training (config, data, labels, cluster size, storage)
runs before Ray Train starts, so a bad run fails in seconds with one clear message.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from pokegan_ray.cluster import ClusterError, ClusterOptions, require_shared_storage, wait_for_capacity
from pokegan_ray.data.prepare import PrepareError, class_frequencies, read_manifest
from pokegan_ray.report import REPORT_FILE, grid_files
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training.config import ExperimentConfig, merge_sections, run_name
from pokegan_ray.training.loop import PROGRESS_FILE, STATUS_FILE, RunContext, train_worker

if TYPE_CHECKING:
    from pokegan_ray.tracking.train import TrainTracking

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MAX_FAILURES = 3
# Ray Train's default wait for a worker group's placement group (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S).
WORKER_GROUP_START_S = 60.0


class TrainError(RuntimeError):
    """Training cannot start (or resume); the message says what to fix."""


@dataclass(frozen=True)
class TrainOutcome:
    run_uri: str
    status: str  # "completed", "non-finite" or "failed"
    message: str
    step: int
    fid: float | None
    fid_num_images: int | None
    best_checkpoint_uri: str | None
    latest_checkpoint_uri: str | None
    sample_grid_uri: str | None
    metrics: dict[str, Any]
    report_uri: str | None = None  # RUN/report.html, which rank 0 rewrites at each grid and evaluation


def resolve_config(raw: dict[str, Any]) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Validate a raw config against its data set: (config, the data set's manifest).

    AC-GAN's number of classes comes from the data (when not given), and AC-GAN on an
    unlabelled set fails here.
    """
    try:
        base = ExperimentConfig.from_dict({"data": raw.get("data", {})})
        # Workers run in another working directory: a relative local path must become absolute here.
        data_uri = location(base.data.uri).uri
    except (ValueError, StorageError) as error:
        raise TrainError(str(error)) from None
    raw = merge_sections(raw, {"data": {"uri": data_uri}})
    base = ExperimentConfig.from_dict({"data": raw["data"]})
    try:
        manifest = read_manifest(location(base.data.uri))
    except (PrepareError, StorageError) as error:
        raise TrainError(str(error)) from None
    if str(base.data.resolution) not in manifest["shards"]:
        raise TrainError(f"the data set {base.data.uri} has no {base.data.resolution} px images (it has "
                         f"{', '.join(sorted(manifest['shards']))}); prepare it with --resolutions "
                         f"{base.data.resolution}")
    model = dict(raw.get("model", {}))
    if model.get("conditional"):
        if not manifest["classes"]:
            raise TrainError(f"model.conditional=true (AC-GAN) needs labelled data, but {base.data.uri} is "
                             "unlabelled; label it (sub-folders or labels.csv) and prepare again, or set "
                             "model.conditional=false")
        model.setdefault("num_classes", len(manifest["classes"]))
        if model["num_classes"] != len(manifest["classes"]):
            raise TrainError(f"model.num_classes={model['num_classes']} but {base.data.uri} has "
                             f"{len(manifest['classes'])} classes; leave model.num_classes unset")
    try:
        return ExperimentConfig.from_dict(merge_sections(raw, {"model": model})), manifest
    except ValueError as error:
        raise TrainError(str(error)) from None


def worker_bundles(experiment: ExperimentConfig) -> list[dict[str, float]]:
    """The placement group a run's Train workers need: one bundle per worker."""
    return [experiment.scale.worker_resources() for _ in range(experiment.scale.workers)]


def check_cluster(experiment: ExperimentConfig, storage_uri: str, cluster: ClusterOptions, what: str) -> None:
    """The run's storage and data must be reachable from every node, and the cluster must (come to) hold
    its workers: waits for nodes on a cluster that may grow, fails at once when it never can."""
    try:
        require_shared_storage({"--data": experiment.data.uri, "--storage": storage_uri}, cluster)
        wait_for_capacity(worker_bundles(experiment), what, cluster, say=_say)
    except ClusterError as error:
        raise TrainError(str(error)) from None


def scaling_config(experiment: ExperimentConfig):
    """Ray Train's ScalingConfig: the workers, and each one's CPU (and GPU share) reservation."""
    from ray.train import ScalingConfig

    scale = experiment.scale
    return ScalingConfig(num_workers=scale.workers, use_gpu=scale.use_gpu, resources_per_worker=scale.worker_resources())


def ray_storage(storage: Location) -> dict[str, Any]:
    """RunConfig arguments for a Location: pyarrow wants `bucket/key`, not `s3://bucket/key`."""
    return {"storage_path": storage.path, "storage_filesystem": storage.filesystem}


@dataclass(frozen=True)
class PreparedRun:
    """A run about to train: its name, folder, resolved config and what its workers are told
    (`write_run_config` then puts the config in the folder)."""

    name: str
    folder: Location
    experiment: ExperimentConfig
    context: RunContext


def prepare_run(raw_config: dict[str, Any], *, storage: Location, name: str | None, resume: bool,
                inception_weights: str | None, warm_start_uri: str | None, cluster: ClusterOptions,
                continue_from: tuple[str, int] | None = None, fresh_config: bool = False) -> PreparedRun:
    """Resolve the config (a resumed run's saved one under the new overrides) and set up `STORAGE/NAME/`.
    `fresh_config`: a resumed run's config is `raw_config` alone, as for a PBT trial that took another trial's
    checkpoint: it trains that trial's config (perturbed), and the defaults its own saved config resolved for
    what it was before (another loss's Adam betas, a critic schedule) must not leak into it."""
    if resume:
        if not name:
            raise TrainError("--resume needs the run's name")
        saved = storage.join(name, CONFIG_FILE)
        if not saved.exists():
            raise TrainError(f"no run {name!r} under {storage.uri} (no {saved.uri}); `ls` the storage for run names")
        if not fresh_config:
            raw_config = merge_sections(yaml.safe_load(saved.read_bytes()), raw_config)
    experiment, manifest = resolve_config(raw_config)
    if not name:
        name = run_name(experiment, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))
    run_folder = storage.join(name)
    if not resume and run_folder.join(CONFIG_FILE).exists():
        raise TrainError(f"a run named {name!r} already exists under {storage.uri}; pass --resume to continue it "
                         "or choose another --name")
    context = RunContext(run_uri=run_folder.uri, classes=list(manifest["classes"]),
                         dataset_hash=manifest["content_hash"], class_frequencies=class_frequencies(manifest),
                         inception_weights=inception_weights, warm_start_uri=warm_start_uri,
                         continue_from_uri=continue_from[0] if continue_from else None,
                         handoffs=continue_from[1] if continue_from else 0,
                         data_wait_timeout_s=cluster.wait_timeout_s)
    return PreparedRun(name=name, folder=run_folder, experiment=experiment, context=context)


def writable_storage(storage_uri: str) -> Location:
    try:
        storage = location(storage_uri)
        storage.check_writable()
    except StorageError as error:
        raise TrainError(f"the storage {storage_uri} cannot be written: {error}") from None
    return storage


def check_before_ray(raw_config: dict[str, Any], *, storage_uri: str, name: str | None, resume: bool,
                     data_checked_later: bool = False) -> None:
    """What `train` checks that needs no cluster (the storage, the config, the data set, the run's name), so a
    mistake costs no Ray start. With `data_checked_later` (the bundled set, prepared on first use; a local
    data set on a joined cluster, whose reach is checked first once Ray is up) the config
    is checked without its data set; `train` checks it against the set again."""
    storage = writable_storage(storage_uri)
    if not data_checked_later:
        prepare_run(raw_config, storage=storage, name=name, resume=resume, inception_weights=None,
                    warm_start_uri=None, cluster=ClusterOptions())
        return
    try:
        check_config_without_data(raw_config)
    except ValueError as error:
        raise TrainError(str(error)) from None


def check_config_without_data(raw_config: dict[str, Any]) -> None:
    """Validate a raw config as far as it can be before its data set exists (ValueError): AC-GAN's number of
    classes, which only the data set knows, is taken as given."""
    model = dict(raw_config.get("model") or {})
    if model.get("conditional") and not model.get("num_classes"):
        model["num_classes"] = 2  # any count: resolve_config checks the real one against the data set
    ExperimentConfig.from_dict(merge_sections(raw_config, {"model": model}))


def write_run_config(run: PreparedRun) -> None:
    run.folder.join(STATUS_FILE).delete_file()
    run.folder.join(PROGRESS_FILE).delete_file()  # progress shown is this start's
    run.folder.join(CONFIG_FILE).write_bytes_atomic(yaml.safe_dump(run.experiment.to_dict(), sort_keys=False).encode())


def train(raw_config: dict[str, Any], *, storage_uri: str, name: str | None = None, resume: bool = False,
          inception_weights: str | None = None, callbacks: list | None = None,
          warm_start_uri: str | None = None, cluster: ClusterOptions = ClusterOptions(),
          continue_from: tuple[str, int] | None = None, fresh_config: bool = False, show_progress: bool = False,
          tracker: "TrainTracking | None" = None) -> TrainOutcome:
    """Run (or resume) one training run; returns what happened. Raises TrainError before training
    when anything is wrong with the config, data, cluster or storage.

    `warm_start_uri` (a checkpoint or registry model file) starts G and its EMA from that file's
    EMA generator instead of random weights; D and the optimisers start fresh. `continue_from` (a PBT trial's
    (checkpoint, copies of other trials' checkpoints taken); see RunContext) continues from that
    checkpoint unless the run has written one since its latest copy (with `fresh_config`: see prepare_run). On a
    cluster that may grow, waits (up to `cluster.wait_timeout_s`) for the nodes the workers need.
    `show_progress`: this process shows the run's progress (a bar on a terminal, else a line per report), read
    from the run folder's progress.json. With a `tracker` (`--mlflow`) the run is logged to MLflow from this
    process as it trains (pokegan_ray.tracking.train); the caller ends the MLflow run."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from pokegan_ray import terminal

    from pokegan_ray.data.reader import open_prepared

    storage = writable_storage(storage_uri)
    run = prepare_run(raw_config, storage=storage, name=name, resume=resume, inception_weights=inception_weights,
                      warm_start_uri=warm_start_uri, cluster=cluster, continue_from=continue_from,
                      fresh_config=fresh_config)
    experiment, scale = run.experiment, run.experiment.scale
    check_cluster(experiment, storage.uri, cluster, f"run {run.name} ({scale.workers} Train worker(s))")
    write_run_config(run)
    if tracker is not None:
        tracker.begin(run)  # the MLflow run, and a thread here that logs each report Ray Train hands over
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"experiment": experiment.to_dict(), "run": run.context.to_dict()},
        datasets={"train": open_prepared(experiment.data.uri, experiment.data.resolution, rows=experiment.data.rows)},
        scaling_config=scaling_config(experiment),
        run_config=RunConfig(
            name=run.name, **ray_storage(storage),
            failure_config=FailureConfig(
                max_failures=MAX_FAILURES,
                # Ray Train gives up on starting the workers after WORKER_GROUP_START_S and tries again
                # without limit; stop trying once the cluster wait timeout has passed.
                controller_failure_limit=max(1, math.ceil(cluster.wait_timeout_s / WORKER_GROUP_START_S))),
            checkpoint_config=CheckpointConfig(num_to_keep=experiment.train.keep_checkpoints,
                                               checkpoint_score_attribute="checkpoint_fid",
                                               checkpoint_score_order="min"),
            callbacks=[*(callbacks or []), *(tracker.callbacks if tracker is not None else [])] or None,
            # Ray Train's own INFO lines (resources requested, worker group started, process group set up) stay
            # in its log files; pokegan says what matters.
            logging_config=LoggingConfig(log_level="INFO" if terminal.verbose() else "WARNING")),
    )
    log.info("training %s: %d steps on %d %s worker(s); run folder %s", run.name, experiment.total_steps,
             scale.workers, "GPU" if scale.use_gpu else "CPU", run.folder.uri)
    read_progress = terminal.progress_reader(PROGRESS_FILE)
    try:
        if show_progress:
            with terminal.TrainingView(lambda: read_progress(run.folder.uri), experiment.total_steps):
                result = trainer.fit()
        else:
            result = trainer.fit()
    except Exception as error:  # Ray wraps worker errors: keep its headline and the worker's own last line
        return _tracked(tracker, run, _outcome(run.folder, {"status": "failed", "step": 0,
                                                            "message": _error_line(error)}, None, None))
    return _tracked(tracker, run, _outcome(run.folder, read_status(run.folder), result, storage))


def _tracked(tracker: "TrainTracking | None", run: PreparedRun, outcome: TrainOutcome) -> TrainOutcome:
    """The outcome, recorded in the run's MLflow run (`--mlflow`) once its last reports are logged."""
    if tracker is not None:
        tracker.record_outcome(outcome, run)
    return outcome


def _error_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    message = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    if "WorkerGroupStartupTimeoutError" in str(error):
        message = ("the Train workers could not be placed: the cluster kept lacking free resources for them "
                   f"(see `ray status`). Ray said: {message}")
    return message


def _say(line: str) -> None:
    sys.stdout.write(f"[pokegan] {line}\n")
    sys.stdout.flush()


def read_status(run_folder: Location) -> dict[str, Any]:
    try:
        return json.loads(run_folder.join(STATUS_FILE).read_bytes())
    except StorageError:
        return {"status": "failed", "step": 0, "message": "the run ended without writing its status"}


def _outcome(run_folder: Location, status: dict[str, Any], result, storage: Location | None) -> TrainOutcome:
    metrics = dict(result.metrics or {}) if result is not None else {}
    best = latest = None
    if result is not None and storage is not None:
        if result.checkpoint is not None:
            latest = storage.uri_of(result.checkpoint.path)
        scored = [(m.get("checkpoint_fid", float("inf")), c) for c, m in (result.best_checkpoints or [])]
        if scored:
            best = storage.uri_of(min(scored, key=lambda pair: pair[0])[1].path)
    grids = grid_files(run_folder)
    grid_uri = grids[-1][1].uri if grids else None
    history = _safe_history(run_folder)
    evaluated = [entry for entry in history if "fid" in entry]
    report = run_folder.join(REPORT_FILE)
    return TrainOutcome(
        run_uri=run_folder.uri, status=status["status"], message=status.get("message", ""),
        step=int(status.get("step", 0)), fid=evaluated[-1]["fid"] if evaluated else None,
        fid_num_images=int(evaluated[-1]["fid_num_images"]) if evaluated else None,
        best_checkpoint_uri=best, latest_checkpoint_uri=latest, sample_grid_uri=grid_uri, metrics=metrics,
        report_uri=report.uri if _safe_exists(report) else None)


def _safe_exists(file: Location) -> bool:
    try:
        return file.exists()
    except StorageError:
        return False


def _safe_history(run_folder: Location) -> list[dict[str, float]]:
    try:
        return json.loads(run_folder.join("history.json").read_bytes())
    except StorageError:
        return []
