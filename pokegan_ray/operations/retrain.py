"""`pokegan retrain`: the nightly job. Read it top to bottom:

1. take the registry's lock (a second retrain while one runs stops with LockHeld);
2. refresh the prepared set from the source its manifest names (a no-op when nothing changed);
3. train a candidate from the champion's config (or the defaults when there is none yet),
   with the caller's overrides on top; `warm_start` starts its G from the champion's;
4. score the candidate's EMA generator and the champion's with one Evaluator: the same real
   statistics, the same number of generated images, the same seed;
5. promote the candidate only when its FID < champion FID - margin (the first model always);
6. any failure leaves the champion untouched;
7. release the lock, and say what happened in one line (`RetrainOutcome.summary`).
"""

from __future__ import annotations

import datetime
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pokegan_ray.cluster import ClusterError, ClusterOptions, require_shared_storage
from pokegan_ray.data.prepare import MANIFEST_NAME, PrepareError, PrepareOptions, class_frequencies, prepare, \
    read_manifest
from pokegan_ray.data.sources import BUNDLED
from pokegan_ray.defaults import DEFAULT_DATA_URI
from pokegan_ray.metrics import InceptionWeightsError
from pokegan_ray.operations.lock import DEFAULT_TTL_SECONDS, format_duration
from pokegan_ray.operations.registry import DEFAULT_MODEL_NAME, ModelRegistry, ModelVersion, RegistryError
from pokegan_ray.storage import StorageError, location
from pokegan_ray.tracking import Tracking, public_uri, train_tracking
from pokegan_ray.training.checkpoint import CheckpointError, load_generator, read_checkpoint
from pokegan_ray.training.config import ExperimentConfig, merge_sections
from pokegan_ray.training.evaluation import Evaluator
from pokegan_ray.training.trainer import TrainError, check_config_without_data, resolve_config, train

log = logging.getLogger(__name__)

LOCK_OWNER = "pokegan retrain"
RUNS_FOLDER = "runs"
# Failures with a message a person can act on; anything else is a bug and also logs its traceback.
EXPECTED_FAILURES = (TrainError, PrepareError, StorageError, CheckpointError, RegistryError, InceptionWeightsError,
                     ValueError)


class RetrainFailure(RuntimeError):
    """A step of the retrain failed; the message is the reason shown in the summary line."""


class RetrainConfigError(ValueError):
    """The requested config cannot work (a bad --set, no data set): found before taking the lock."""


@dataclass(frozen=True)
class RetrainOptions:
    registry_uri: str
    model_name: str = DEFAULT_MODEL_NAME
    # Raw config sections (from --config and --set) applied over the champion's config or the defaults.
    overrides: dict[str, Any] = field(default_factory=dict)
    data_uri: str | None = None  # default: the champion's data set, else the default location
    storage_uri: str | None = None  # where the candidate's run goes; default REGISTRY/runs
    margin: float = 0.0  # FID points the candidate must beat the champion by
    warm_start: bool = False
    wait_seconds: float = 0.0  # how long to wait for another retrain's lock
    lock_ttl_seconds: float = DEFAULT_TTL_SECONDS
    inception_weights: str | None = None
    device: str = "cpu"  # where the evaluation runs (this process)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    # `--mlflow`: the candidate's run and the decision go to this MLflow experiment (checked by the caller).
    tracking: Tracking | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"the margin must be a finite number of FID points >= 0, got {self.margin}")
        if self.wait_seconds < 0:
            raise ValueError(f"the lock wait must be >= 0 seconds, got {self.wait_seconds}")


@dataclass(frozen=True)
class RetrainOutcome:
    decision: str  # "promoted", "kept" or "failed"
    summary: str  # the one line for a person (cron mail)
    champion: str | None  # the champion's label after this run ("v0004"), None when there is none
    candidate_fid: float | None = None
    champion_fid: float | None = None
    run_uri: str | None = None


@dataclass
class _Progress:
    """What is known so far, for the summary line of a run that fails half-way."""

    champion: ModelVersion | None = None
    champion_known: bool = False
    run_uri: str | None = None


def retrain(options: RetrainOptions,
            clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),
            ) -> RetrainOutcome:
    """The whole nightly job. Before doing anything it raises RegistryError for a registry that cannot
    be read, RetrainConfigError for a config that cannot work, and LockHeld when another retrain
    holds the lock; every later failure becomes a "failed" outcome with the champion untouched."""
    started_at = clock()
    registry = ModelRegistry(options.registry_uri, options.model_name)
    check_cluster_reach(registry, options, check_config(registry, options))
    lock = registry.lock(LOCK_OWNER, ttl_seconds=options.lock_ttl_seconds)
    lock.acquire(options.wait_seconds)
    progress = _Progress()
    # The candidate's MLflow run (`--mlflow`); it ends with the block.
    with train_tracking(options.tracking, "retrain", {"registry_uri": public_uri(registry.base.uri),
                                                      "model_name": options.model_name}) as tracker:
        try:
            outcome = _retrain_locked(registry, options, started_at, progress, tracker)
        except Exception as error:  # noqa: BLE001 - the nightly job must always end with its summary line
            reason = _one_line(error)
            if not isinstance(error, (RetrainFailure, *EXPECTED_FAILURES)):
                log.exception("retrain failed unexpectedly")
            if not progress.champion_known:
                untouched = "champion untouched"
            elif progress.champion is None:
                untouched = "no champion yet"
            else:
                untouched = f"champion {progress.champion.label} untouched"
            champion = progress.champion.label if progress.champion else None
            outcome = RetrainOutcome("failed", f"retrain {_stamp(started_at)}: FAILED: {reason}; {untouched}",
                                     champion, run_uri=progress.run_uri)
        finally:
            try:
                lock.release()
            except StorageError as error:
                log.error("could not release the lock %s (%s): the next retrain will wait until it is %g h old or "
                          "someone deletes it", lock.target.uri, error, options.lock_ttl_seconds / 3600)
        if tracker is not None:
            _record_decision(tracker, outcome)
    return outcome


def _record_decision(tracker, outcome: RetrainOutcome) -> None:
    """The decision on the candidate's MLflow run: `promoted` true or false, and the version it became."""
    promoted = outcome.decision == "promoted"
    tracker.record_decision(outcome.decision, {
        "promoted": "true" if promoted else "false", "registry_version": outcome.champion if promoted else None,
        "champion": outcome.champion, "summary": outcome.summary},
        {key: value for key, value in (("candidate_fid", outcome.candidate_fid), ("champion_fid", outcome.champion_fid))
         if value is not None})


def _retrain_locked(registry: ModelRegistry, options: RetrainOptions, started_at: datetime.datetime,
                    progress: _Progress, tracker=None) -> RetrainOutcome:
    champion = registry.champion()
    progress.champion, progress.champion_known = champion, True
    log.info("registry %s: %s", registry.root.uri,
             f"champion {champion.label}, promoted {champion.record.get('promoted_at')}" if champion
             else "no champion yet")

    raw = candidate_config(champion, options)
    data_uri = raw.get("data", {}).get("uri", DEFAULT_DATA_URI)
    if _needs_bundled_set(raw):
        log.info("no prepared set at %s yet: preparing the bundled Pokémon set first", data_uri)
        manifest = prepare(BUNDLED, data_uri, PrepareOptions(), options.cluster)
    else:
        manifest = refresh_data(data_uri, options.cluster)
    raw = merge_sections(raw, {"data": {"uri": location(data_uri).uri}})

    warm_start_uri = None
    if options.warm_start:
        if champion is None:
            log.info("--warm-start: no champion yet, so the first model trains from scratch")
        else:
            check_warm_start(registry, champion, raw)
            warm_start_uri = champion.generator_uri
    storage_uri = _runs_uri(registry, options)
    run_name = "retrain-" + started_at.strftime("%Y%m%d-%H%M%S")
    clock_started = time.monotonic()
    outcome = train(raw, storage_uri=storage_uri, name=run_name, inception_weights=options.inception_weights,
                    warm_start_uri=warm_start_uri, cluster=options.cluster, show_progress=True, tracker=tracker)
    training_seconds = time.monotonic() - clock_started
    progress.run_uri = outcome.run_uri
    if outcome.status != "completed":
        raise RetrainFailure(f"training {outcome.status} at step {outcome.step}: {outcome.message} "
                             f"(run {outcome.run_uri})")
    if not outcome.latest_checkpoint_uri:
        raise RetrainFailure(f"training completed but left no checkpoint (run {outcome.run_uri})")

    # 4. Both generators against the same real statistics, N and seed.
    device = torch.device(options.device)
    candidate_state = read_checkpoint(outcome.latest_checkpoint_uri, map_location=device)
    candidate, experiment = load_generator(candidate_state, device)
    evaluator = Evaluator(experiment, manifest["classes"], manifest["content_hash"], class_frequencies(manifest),
                          options.inception_weights, device)
    candidate_scores = evaluator.evaluate(candidate)
    champion_scores = None
    if champion is not None:
        champion_state = registry.load_generator_state(champion, map_location=device)
        champion_generator, champion_experiment = load_generator(champion_state, device)
        check_comparable(champion, champion_experiment, champion_state["classes"], experiment, manifest)
        champion_scores = evaluator.evaluate(champion_generator, champion_experiment.gan.model)
    for who, scores in (("the candidate", candidate_scores), ("the champion", champion_scores)):
        if scores is not None and not math.isfinite(scores["fid"]):
            raise RetrainFailure(f"evaluating {who} gave FID {scores['fid']}")

    # 5. The rule.
    candidate_fid = candidate_scores["fid"]
    number_of_images = int(candidate_scores["fid_num_images"])
    tail = (f"data {manifest['content_hash'][:12]}, {outcome.step} steps in {format_duration(training_seconds)}")
    stamp = _stamp(started_at)
    if champion is not None:
        champion_fid = champion_scores["fid"]
        if not candidate_fid < champion_fid - options.margin:
            log.info("kept the champion; the candidate's run stays at %s", outcome.run_uri)
            return RetrainOutcome(
                "kept", f"retrain {stamp}: kept champion {champion.label} (FID {champion_fid:.1f}; candidate "
                        f"{candidate_fid:.1f}, not below {champion_fid:.1f} - margin {options.margin:g}, "
                        f"N={number_of_images}), {tail}",
                champion.label, candidate_fid, champion_fid, outcome.run_uri)

    promoted = registry.promote(
        generator_ema=candidate_state["generator_ema"],
        config=experiment.to_dict(),
        classes=list(manifest["classes"]),
        dataset={"uri": experiment.data.uri, "content_hash": manifest["content_hash"],
                 "resolution": experiment.data.resolution, "kept_images": manifest["kept"]},
        evaluation={**candidate_scores, "seed": experiment.train.seed, "reference_rows": "originals",
                    "champion_fid_same_evaluation": champion_scores["fid"] if champion_scores else None},
        source={"run_uri": outcome.run_uri, "checkpoint_uri": outcome.latest_checkpoint_uri, "step": outcome.step},
        training={"steps": outcome.step, "seconds": round(training_seconds, 1),
                  "warm_start_from": champion.label if warm_start_uri else None},
        sample_grid_png=_read_optional(outcome.sample_grid_uri))
    if champion is None:
        why = f"first model; FID {candidate_fid:.1f}, N={number_of_images}"
    else:
        why = (f"FID {candidate_fid:.1f} < champion {champion.label} {champion_scores['fid']:.1f} - margin "
               f"{options.margin:g}, N={number_of_images}")
    return RetrainOutcome("promoted", f"retrain {stamp}: promoted {promoted.label} ({why}), {tail}", promoted.label,
                          candidate_fid, champion_scores["fid"] if champion_scores else None, outcome.run_uri)


def check_config(registry: ModelRegistry, options: RetrainOptions) -> dict[str, Any]:
    """Resolve the candidate's config once without the lock and return it raw: a typo in --set is the
    caller's to fix (the run under the lock resolves it again, from the champion it then sees)."""
    try:
        raw = candidate_config(registry.champion(), options)
        location(_runs_uri(registry, options)).check_writable()
        if _needs_bundled_set(raw):
            check_config_without_data(raw)  # AC-GAN's classes come from the data set: checked once it is prepared
        else:
            resolve_config(raw)
    except (ValueError, TrainError, StorageError) as error:
        raise RetrainConfigError(str(error)) from None
    return raw


def check_cluster_reach(registry: ModelRegistry, options: RetrainOptions, raw: dict[str, Any]) -> None:
    """Every node must reach the candidate's data (`raw`'s) and run folder (a multi-node cluster needs s3://)."""
    try:
        require_shared_storage({"--data": raw.get("data", {}).get("uri", DEFAULT_DATA_URI),
                                "--storage": _runs_uri(registry, options)},
                               options.cluster)
    except ClusterError as error:
        raise RetrainConfigError(str(error)) from None


def _runs_uri(registry: ModelRegistry, options: RetrainOptions) -> str:
    """Where the candidate's run goes: --storage, else REGISTRY/runs."""
    return options.storage_uri or registry.base.join(RUNS_FOLDER).uri


def candidate_config(champion: ModelVersion | None, options: RetrainOptions) -> dict[str, Any]:
    """The raw config to train: the champion's resolved config (or the defaults), then the overrides."""
    overrides = dict(options.overrides)
    if options.data_uri:
        overrides = merge_sections(overrides, {"data": {"uri": options.data_uri}})
    if champion is None:
        return merge_sections({}, overrides)
    # with_overrides drops the old loss's filled-in defaults when the overrides change the loss.
    base = ExperimentConfig.from_dict(champion.record["config"])
    return base.with_overrides(overrides).to_dict()


def refresh_data(data_uri: str, cluster: ClusterOptions = ClusterOptions()) -> dict[str, Any]:
    """Re-run prepare with the source and options the manifest records: a no-op when nothing changed."""
    previous = read_manifest(location(data_uri))
    source_uri = source_of(previous)
    record = previous["options"]
    options = PrepareOptions(**{**record, "resolutions": tuple(record["resolutions"])})
    manifest = prepare(source_uri, data_uri, options, cluster)
    if manifest["content_hash"] != previous["content_hash"]:
        log.info("data set %s refreshed from %s: %s -> %s (%d images)", data_uri, source_uri,
                 previous["content_hash"][:12], manifest["content_hash"][:12], manifest["kept"])
    return manifest


def source_of(manifest: dict[str, Any]) -> str:
    """The source URI prepare was called with; older manifests only describe it for people."""
    if manifest.get("source_uri"):
        return manifest["source_uri"]
    description = manifest["source"]
    if description.startswith("bundled ("):
        return "bundled"
    return re.sub(r", first \d+ images$", "", description)


def check_warm_start(registry: ModelRegistry, champion: ModelVersion, raw: dict[str, Any]) -> None:
    """Warm start loads the champion's G into the candidate's: both must be the same network, and the
    file must load safely here, before any worker starts (a refused file would fail every restart)."""
    state = registry.load_generator_state(champion)
    experiment, _ = resolve_config(raw)
    ours = experiment.gan.model
    theirs = ExperimentConfig.from_dict(state["config"]).gan.model
    if ours != theirs:
        differences = [f"model.{key}: {getattr(theirs, key)!r} -> {getattr(ours, key)!r}"
                       for key in ours.__dataclass_fields__ if getattr(ours, key) != getattr(theirs, key)]
        raise RetrainFailure(f"--warm-start needs the champion's network, but the model settings differ from "
                             f"{champion.label}'s ({'; '.join(differences)}); drop --warm-start or those overrides")


def check_comparable(champion: ModelVersion, champion_experiment: ExperimentConfig, champion_classes: list[str],
                     experiment: ExperimentConfig, manifest: dict[str, Any]) -> None:
    """FIDs are only comparable at the same resolution, and a conditional champion must know today's types."""
    if champion_experiment.data.resolution != experiment.data.resolution:
        raise RetrainFailure(f"the candidate is {experiment.data.resolution} px but champion {champion.label} is "
                             f"{champion_experiment.data.resolution} px: their FIDs are not comparable")
    if champion_experiment.gan.model.conditional and list(champion_classes) != list(manifest["classes"]):
        raise RetrainFailure(f"champion {champion.label} was trained on types {champion_classes}, the data set now "
                             f"has {manifest['classes']}: it cannot be scored on today's data")


def _needs_bundled_set(raw: dict[str, Any]) -> bool:
    """The default data location is prepared from the bundled set on first use, as `pokegan train` does."""
    data_uri = raw.get("data", {}).get("uri", DEFAULT_DATA_URI)
    return data_uri == DEFAULT_DATA_URI and not location(data_uri).join(MANIFEST_NAME).exists()


def _read_optional(uri: str | None) -> bytes | None:
    if not uri:
        return None
    try:
        return location(uri).read_bytes()
    except StorageError as error:
        log.warning("the run's sample grid is not stored with the model: %s", error)
        return None


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
