"""`pokegan tune`: Ray Tune + Optuna over a search space, with FID-based early stopping.

    driver (this module)                         one trial (a Tune function trainable)
    ---------------------------------------      ------------------------------------------
    OptunaSearch proposes params (TPE)   --->    run_trial: params -> raw config -> train()
    ASHA + plateau stopper read FIDs     <---    FidReporter: each Train report with an FID
    SearchProgress writes the ledger             (a TorchTrainer of its own, the Train V2 way)

Each trial runs exactly what `pokegan train` runs, into `SEARCH/runs/<trial id>/`. Only reports
that carry an FID reach Tune, so every result the scheduler, stopper and searcher see has one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from pokegan_ray.search.ledger import COMPLETED, FAILED, RUNNING, STOPPED, Ledger, TrialRecord
from pokegan_ray.search.space import SearchSettings, SearchSpace, define_by_run, trial_config
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training.config import ExperimentConfig, merge_sections
from pokegan_ray.training.trainer import CONFIG_FILE, TrainError, check_cluster, resolve_config, train

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"  # what --resume needs: the space, the overrides, the settings
RUNS_FOLDER = "runs"
STOPS_FILE = "stops.json"
# The trial's own process only waits for its TorchTrainer; Tune refuses zero, so a sliver.
TRIAL_DRIVER_CPUS = 0.01
# Ray Data reads each trial's shards with tasks of one CPU each: leave a whole CPU free, or they starve.
DATA_READ_CPUS = 1.0
# The metric Optuna minimises: the lowest FID a trial reached (its best checkpoint).
SEARCH_METRIC = "best_fid"


class SearchError(RuntimeError):
    """The search cannot start (or resume); the message says what to fix."""


class TrialFailed(RuntimeError):
    """A trial ended without completing; Tune records the message and the search goes on."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its params (plain values; Ray ships it to the trial)."""

    space: SearchSpace
    overrides: dict[str, dict[str, Any]]  # raw config sections over every trial (data uri, --set)
    runs_uri: str
    inception_weights: str | None


@dataclass(frozen=True)
class SearchOutcome:
    search_uri: str
    space: SearchSpace
    records: list[TrialRecord]
    best: TrialRecord | None
    best_config_uri: str | None
    best_checkpoint_uri: str | None
    leaderboard_uri: str
    plot_uri: str
    best_samples_uri: str | None
    interrupted: bool = False  # stopped (Ctrl+C) before every trial finished: continue with --resume


# -- one trial -------------------------------------------------------------------------------
def run_trial(params: dict[str, Any], context: TrialContext) -> None:
    """Tune's function trainable: train one sampled config to the end (or until Tune stops it)."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    sampled = {name: params[name] for name in context.space.dimension_names if name in params}
    raw = merge_sections(trial_config(context.space, sampled), context.overrides)
    # A restored trial (after --resume or a crash) continues its own run from its last checkpoint.
    resume = location(context.runs_uri).join(trial_id, CONFIG_FILE).exists()
    try:
        outcome = train(raw, storage_uri=context.runs_uri, name=trial_id, resume=resume,
                        inception_weights=context.inception_weights, callbacks=[FidReporter()])
    except TrainError as error:
        raise TrialFailed(f"the sampled config cannot train: {error}") from None
    if outcome.status != "completed":
        raise TrialFailed(f"{outcome.status} at step {outcome.step}: {outcome.message}")


def _fid_reporter_base():
    from ray.tune.integration.ray_train import TuneReportCallback

    return TuneReportCallback


class FidReporter(_fid_reporter_base()):
    """Passes Ray Train's reports that carry an FID on to Tune, adding the lowest FID so far."""

    def __init__(self):
        super().__init__()
        self.best_fid = math.inf

    def after_report(self, run_context, metrics, checkpoint):
        first = metrics[0]
        if "fid" not in first:
            return
        self.best_fid = min(self.best_fid, first["fid"])
        super().after_report(run_context, [{**first, SEARCH_METRIC: self.best_fid}], checkpoint)


# -- early stopping that says why -----------------------------------------------------------
class StopLog:
    """Why the scheduler or the stopper ended a trial early, in `SEARCH/stops.json` (survives --resume)."""

    def __init__(self, search_folder: Location):
        self.file = search_folder.join(STOPS_FILE)

    def reasons(self) -> dict[str, str]:
        try:
            return json.loads(self.file.read_bytes())
        except StorageError:
            return {}

    def record(self, trial_id: str, reason: str) -> None:
        self.file.write_bytes_atomic(json.dumps({**self.reasons(), trial_id: reason}, indent=1).encode())


def _asha(stops: StopLog, max_steps: int, grace_steps: int, reduction_factor: float):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingAsha(ASHAScheduler):
        """ASHA over generator steps on FID; records each early stop with its reason."""

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result["step"] < max_steps:
                stops.record(trial.trial_id, f"stopped early by the ASHA scheduler at step {result['step']}: "
                                             f"FID {result['fid']:.1f} is not in the best 1/{reduction_factor:g} "
                                             "of the trials at this rung")
            return decision

    return RecordingAsha(time_attr="step", metric="fid", mode="min", max_t=max_steps, grace_period=grace_steps,
                         reduction_factor=reduction_factor)


def _plateau_stopper(stops: StopLog, evaluations: int, std: float):
    from ray.tune.stopper import TrialPlateauStopper

    class RecordingPlateauStopper(TrialPlateauStopper):
        def __call__(self, trial_id, result):
            stop = super().__call__(trial_id, result)
            if stop:
                stops.record(trial_id, f"stopped at step {result['step']}: FID plateaued (the last {evaluations} "
                                       f"evaluations vary by less than {std:g})")
            return stop

    return RecordingPlateauStopper(metric="fid", mode="min", std=std, num_results=evaluations,
                                   grace_period=evaluations)


# -- progress and the ledger ----------------------------------------------------------------
def _progress_callback(ledger: Ledger, stops: StopLog, context: TrialContext, samples: int):
    from ray.tune import Callback

    class SearchProgress(Callback):
        """One line per trial event on stdout, and the ledger written as things happen."""

        def on_trial_start(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id)
            if record is None:
                params = {name: trial.config[name] for name in context.space.dimension_names if name in trial.config}
                record = TrialRecord(trial_id=trial.trial_id, number=len(ledger.records()) + 1, params=params,
                                     run_uri=location(context.runs_uri).join(trial.trial_id).uri)
            record.status, record.reason = RUNNING, ""
            ledger.write(record)
            _say(f"trial {record.number}/{samples} {trial.trial_id} started: {record.params_text()}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            record = ledger.read(trial.trial_id)
            runs = location(context.runs_uri)
            checkpoint = result.get("checkpoint_path")
            record.history.append({
                "step": int(result["step"]), "images_seen": int(result["images_seen"]), "fid": float(result["fid"]),
                "kid": float(result.get("kid", math.nan)),
                "checkpoint_uri": runs.uri_of(checkpoint) if checkpoint else None})
            ledger.write(record)
            _say(f"trial {record.number}/{samples} step {result['step']}: FID {result['fid']:.1f} "
                 f"(best {record.best_fid:.1f}) after {int(result['images_seen']):,} images")

        def on_trial_complete(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id)
            reason = stops.reasons().get(trial.trial_id)
            record.status, record.reason = (STOPPED, reason) if reason else (COMPLETED, "")
            ledger.write(record)
            _say(f"trial {record.number}/{samples} {record.status}: best FID {record.best_fid:.1f} after "
                 f"{record.images_seen:,} images{f' ({reason})' if reason else ''}")

        def on_trial_error(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id) or TrialRecord(
                trial_id=trial.trial_id, number=len(ledger.records()) + 1, params={}, run_uri="")
            record.status, record.reason = FAILED, _error_reason(trial)
            ledger.write(record)
            _say(f"trial {record.number}/{samples} failed: {record.reason} (the search goes on)")

    return SearchProgress()


def _error_reason(trial) -> str:
    """The trial's own message (TrialFailed's), else the last line of the traceback Tune stored."""
    text = ""
    if trial.error_file and os.path.exists(trial.error_file):  # the driver's copy, written before callbacks run
        with open(trial.error_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    text = text or trial.get_error() or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if "TrialFailed:" in line:
            return line.split("TrialFailed:", 1)[1].strip()
    return lines[-1] if lines else "the trial failed without an error message"


def _say(line: str) -> None:
    sys.stdout.write(f"[pokegan] {line}\n")
    sys.stdout.flush()


# -- the search ------------------------------------------------------------------------------
def check_search(space: SearchSpace, settings: SearchSettings, overrides: dict[str, dict[str, Any]]
                 ) -> tuple[ExperimentConfig, dict[str, Any], int]:
    """Everything that can fail before Ray Tune starts: (base config, data manifest, trials at once)."""
    import ray

    clashes = [f"{section}.{key}" for section, keys in overrides.items() for key in keys
               if f"{section}.{key}" in space.dimension_names]
    if clashes:
        raise SearchError(f"--set {clashes[0]} is a dimension of {space.source}; remove it there or from --set")
    try:
        experiment, manifest = resolve_config(merge_sections(dict(space.base), overrides))
        check_cluster(experiment)
    except TrainError as error:
        raise SearchError(f"the search's base config: {error}") from None
    if settings.scheduler == "asha" and experiment.train.eval_every == 0:
        raise SearchError("the ASHA scheduler compares FIDs during training, but train.eval_every is 0 (FID only "
                          "at the end); set train.eval_every in the space's base, or search.scheduler: none")
    per_trial = experiment.scale.workers * experiment.scale.cpus_per_worker + TRIAL_DRIVER_CPUS
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    fits = int((cluster_cpus - DATA_READ_CPUS) // per_trial)
    if fits < 1:
        raise SearchError(f"one trial needs {per_trial:g} CPUs plus {DATA_READ_CPUS:g} for reading data; this Ray "
                          f"cluster has {cluster_cpus:g}. Lower scale.workers or scale.cpus_per_worker (--set)")
    concurrent = min(settings.concurrent, fits)
    if concurrent < settings.concurrent:
        log.warning("running %d trial(s) at once, not %d: each needs %g CPUs and this cluster has %g (%g kept for "
                    "reading data)", concurrent, settings.concurrent, per_trial, cluster_cpus, DATA_READ_CPUS)
    return experiment, manifest, concurrent


def run_search(space: SearchSpace | None, *, storage_uri: str, name: str, data_uri: str | None = None,
               overrides: dict[str, dict[str, Any]] | None = None, samples: int | None = None,
               concurrent: int | None = None, resume: bool = False,
               inception_weights: str | None = None) -> SearchOutcome:
    """Run (or, with resume=True, continue) the search `name` under `storage_uri`."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    try:
        storage = location(storage_uri)
        storage.check_writable()
    except StorageError as error:
        raise SearchError(f"the storage {storage_uri} cannot be written: {error}") from None
    folder = storage.join(name)
    saved = folder.join(SEARCH_FILE)
    if resume:
        if not saved.exists():
            raise SearchError(f"no search {name!r} under {storage.uri} (no {saved.uri}) to resume")
        state = json.loads(saved.read_bytes())
        space = SearchSpace.from_dict(state["space"], source=state["space_source"])
        overrides = state["overrides"]
        settings = SearchSettings(**state["settings"])
    else:
        if space is None:
            raise SearchError("a new search needs --space")
        if saved.exists():
            raise SearchError(f"a search named {name!r} already exists under {storage.uri}; pass --resume to "
                              "continue it or choose another --name")
        overrides = merge_sections(overrides or {}, {"data": {"uri": data_uri}} if data_uri else {})
        settings = space.settings.with_overrides(samples=samples, concurrent=concurrent)
    experiment, manifest, concurrent_trials = check_search(space, settings, overrides)
    # Trials read the same data as the check did (an absolute path: trials run in other folders).
    overrides = merge_sections(overrides, {"data": {"uri": experiment.data.uri}})
    if not resume:
        folder.join(SEARCH_FILE).write_bytes_atomic(json.dumps({
            "space": _space_as_dict(space), "space_source": space.source, "overrides": overrides,
            "settings": dataclasses.asdict(settings)}, indent=1).encode())

    context = TrialContext(space=space, overrides=overrides, runs_uri=folder.join(RUNS_FOLDER).uri,
                           inception_weights=inception_weights)
    ledger, stops = Ledger(folder), StopLog(folder)
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": TRIAL_DRIVER_CPUS})
    if resume:
        log.info("resuming search %s: finished trials are kept, unfinished ones continue from their checkpoints",
                 folder.uri)
        tuner = tune.Tuner.restore(folder.path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=storage.filesystem)
    else:
        facts = {"data.labelled": bool(manifest["classes"])}
        searcher = OptunaSearch(
            space=define_by_run(space, facts), metric=SEARCH_METRIC, mode="min",
            points_to_evaluate=[_optuna_point(space, point) for point in settings.first_trials] or None,
            sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials))
        scheduler = None
        if settings.scheduler == "asha":
            grace = settings.grace_steps or experiment.train.eval_every
            scheduler = _asha(stops, experiment.train.steps, min(grace, experiment.train.steps),
                              settings.reduction_factor)
        stopper = (_plateau_stopper(stops, settings.plateau_evaluations, settings.plateau_std)
                   if settings.plateau_evaluations else None)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(num_samples=settings.samples, search_alg=searcher, scheduler=scheduler,
                                        max_concurrent_trials=concurrent_trials),
            run_config=tune.RunConfig(
                name=name, storage_path=storage.path, storage_filesystem=storage.filesystem, stop=stopper,
                callbacks=[_progress_callback(ledger, stops, context, settings.samples)],
                failure_config=tune.FailureConfig(max_failures=0), verbose=0))
    log.info("search %s: %d trials of %s, %d at a time, %s; results in %s", name, settings.samples, space.source,
             concurrent_trials, "ASHA on FID" if settings.scheduler == "asha" else "no early stopping", folder.uri)
    tuner.fit()  # returns (does not raise) when interrupted by Ctrl+C, with Tune's state saved

    from pokegan_ray.search import results

    records = ledger.records()
    outcome = results.write_results(folder, records, space)
    interrupted = len(records) < settings.samples or any(record.status == RUNNING for record in records)
    return dataclasses.replace(outcome, interrupted=interrupted)


def _space_as_dict(space: SearchSpace) -> dict[str, Any]:
    """The space as its YAML would say it, for --resume (which must not depend on the file staying the same)."""
    dimensions = {}
    for dimension in space.dimensions:
        spec: dict[str, Any] = {"type": dimension.type}
        if dimension.type == "categorical":
            spec["values"] = [list(value) if isinstance(value, tuple) else value for value in dimension.values]
        else:
            spec.update(low=dimension.low, high=dimension.high, log=dimension.log)
            if dimension.step is not None:
                spec["step"] = dimension.step
        if dimension.when:
            spec["when"] = {key: [list(value) if isinstance(value, tuple) else value for value in allowed]
                            for key, allowed in dimension.when}
        dimensions[dimension.name] = spec
    settings = dataclasses.asdict(space.settings)
    settings["first_trials"] = [dict(point) for point in space.settings.first_trials]
    return {"description": space.description, "base": dict(space.base), "dimensions": dimensions,
            "search": settings}


def _optuna_point(space: SearchSpace, point: dict[str, Any]) -> dict[str, Any]:
    """A first trial as Optuna labels (a list-valued choice is its JSON text)."""
    labelled = {}
    for key, value in point.items():
        dimension = space.dimension(key)
        if dimension.type == "categorical" and isinstance(value, list):
            value = json.dumps(value)
        labelled[key] = value
    return labelled
