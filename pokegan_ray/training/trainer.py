"""The driver side of `pokegan train`: check everything, then run a Ray `TorchTrainer`.

Every check that can fail without training (config, data, labels, cluster size, storage)
runs before Ray Train starts, so a bad run fails in seconds with one clear message.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from pokegan_ray.data.prepare import PrepareError, class_frequencies, read_manifest
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training.config import ExperimentConfig, merge_sections, run_name
from pokegan_ray.training.loop import STATUS_FILE, RunContext, train_worker

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MAX_FAILURES = 3


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


def check_cluster(experiment: ExperimentConfig) -> None:
    """More workers than the cluster can ever hold would wait forever: fail now instead."""
    import ray

    resources = ray.cluster_resources()
    scale = experiment.scale
    needed_cpus = scale.workers * scale.cpus_per_worker
    if needed_cpus > resources.get("CPU", 0):
        raise TrainError(f"scale.workers={scale.workers} x scale.cpus_per_worker={scale.cpus_per_worker} needs "
                         f"{needed_cpus:g} CPUs; this Ray cluster has {resources.get('CPU', 0):g}. Use fewer "
                         "workers or fewer CPUs per worker")
    if scale.use_gpu and scale.workers > resources.get("GPU", 0):
        raise TrainError(f"scale.workers={scale.workers} with GPUs needs {scale.workers} GPUs; this Ray cluster "
                         f"has {resources.get('GPU', 0):g}. Use fewer workers, or drop --gpu")


def ray_storage(storage: Location) -> dict[str, Any]:
    """RunConfig arguments for a Location: pyarrow wants `bucket/key`, not `s3://bucket/key`."""
    return {"storage_path": storage.path, "storage_filesystem": storage.filesystem}


def train(raw_config: dict[str, Any], *, storage_uri: str, name: str | None = None, resume: bool = False,
          inception_weights: str | None = None, callbacks: list | None = None,
          warm_start_uri: str | None = None) -> TrainOutcome:
    """Run (or resume) one training run; returns what happened. Raises TrainError before training
    when anything is wrong with the config, data, cluster or storage.

    `warm_start_uri` (a checkpoint or registry model file) starts G and its EMA from that file's
    EMA generator instead of random weights; D and the optimisers start fresh."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pokegan_ray.data.reader import open_prepared

    try:
        storage = location(storage_uri)
        storage.check_writable()
    except StorageError as error:
        raise TrainError(f"the storage {storage_uri} cannot be written: {error}") from None

    if resume:
        if not name:
            raise TrainError("--resume needs the run's name")
        saved = storage.join(name, CONFIG_FILE)
        if not saved.exists():
            raise TrainError(f"no run {name!r} under {storage.uri} (no {saved.uri}); `ls` the storage for run names")
        raw_config = merge_sections(yaml.safe_load(saved.read_bytes()), raw_config)
    experiment, manifest = resolve_config(raw_config)
    check_cluster(experiment)
    if not name:
        name = run_name(experiment, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))
    run_folder = storage.join(name)
    if not resume and run_folder.join(CONFIG_FILE).exists():
        raise TrainError(f"a run named {name!r} already exists under {storage.uri}; pass --resume to continue it "
                         "or choose another --name")
    run_folder.join(STATUS_FILE).delete_file()
    run_folder.join(CONFIG_FILE).write_bytes_atomic(
        yaml.safe_dump(experiment.to_dict(), sort_keys=False).encode())

    run = RunContext(run_uri=run_folder.uri, classes=list(manifest["classes"]),
                     dataset_hash=manifest["content_hash"], class_frequencies=class_frequencies(manifest),
                     inception_weights=inception_weights, warm_start_uri=warm_start_uri)
    scale = experiment.scale
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"experiment": experiment.to_dict(), "run": run.to_dict()},
        datasets={"train": open_prepared(experiment.data.uri, experiment.data.resolution, rows=experiment.data.rows)},
        scaling_config=ScalingConfig(num_workers=scale.workers, use_gpu=scale.use_gpu,
                                     resources_per_worker={"CPU": scale.cpus_per_worker,
                                                           **({"GPU": 1} if scale.use_gpu else {})}),
        run_config=RunConfig(
            name=name, **ray_storage(storage),
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=CheckpointConfig(num_to_keep=experiment.train.keep_checkpoints,
                                               checkpoint_score_attribute="checkpoint_fid",
                                               checkpoint_score_order="min"),
            callbacks=callbacks or None),
    )
    log.info("training %s: %d steps on %d %s worker(s); run folder %s", name, experiment.train.steps,
             scale.workers, "GPU" if scale.use_gpu else "CPU", run_folder.uri)
    try:
        result = trainer.fit()
    except Exception as error:  # Ray wraps worker errors: keep its headline and the worker's own last line
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        message = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        status = {"status": "failed", "step": 0, "message": message}
        return _outcome(run_folder, status, None, None)
    status = _read_status(run_folder)
    return _outcome(run_folder, status, result, storage)


def _read_status(run_folder: Location) -> dict[str, Any]:
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
    grids = [info.path for info in _safe_list(run_folder.join("samples")) if info.path.endswith(".png")]
    grid_uri = run_folder.uri_of(grids[-1]) if grids else None
    history = _safe_history(run_folder)
    evaluated = [entry for entry in history if "fid" in entry]
    return TrainOutcome(
        run_uri=run_folder.uri, status=status["status"], message=status.get("message", ""),
        step=int(status.get("step", 0)), fid=evaluated[-1]["fid"] if evaluated else None,
        fid_num_images=int(evaluated[-1]["fid_num_images"]) if evaluated else None,
        best_checkpoint_uri=best, latest_checkpoint_uri=latest, sample_grid_uri=grid_uri, metrics=metrics)


def _safe_list(folder: Location):
    try:
        return folder.list_files()
    except StorageError:
        return []


def _safe_history(run_folder: Location) -> list[dict[str, float]]:
    try:
        return json.loads(run_folder.join("history.json").read_bytes())
    except StorageError:
        return []
