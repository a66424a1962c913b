"""`pokegan tune`: Ray Tune + Optuna over a search space, with FID-based early stopping.

    driver (this module)                         one trial (a Tune function trainable)
    ---------------------------------------      ------------------------------------------
    OptunaSearch proposes params (TPE)   --->    run_trial: params -> raw config -> the loop
    ASHA + plateau stopper read FIDs     <---    reports that carry an FID (or a checkpoint)
    SearchProgress writes the ledger

A single-worker trial runs the training loop in its own Tune trial process
(`TuneTrialSession`): it starts in seconds and Tune keeps its checkpoints. A trial with
several workers starts a `TorchTrainer` of its own (the Train V2 way) and passes Ray Train's
FID reports on (`FidReporter`). Either way each trial trains into `SEARCH/runs/<trial id>/`,
and Tune restarts a trial whose process died (a lost node) from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import posixpath
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from pokegan_ray import ray_compat, terminal
from pokegan_ray.cluster import Bundle, ClusterError, ClusterOptions, add_up, describe, duration_text, fits, \
    read_capacity, require_shared_storage, wait_for_capacity
from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.search.ledger import COMPLETED, FAILED, RUNNING, STOPPED, Ledger, TrialRecord
from pokegan_ray.search.space import SearchSettings, SearchSpace, define_by_run, trial_config
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.tracking import Tracking
from pokegan_ray.training.checkpoint import FILE_NAME as CHECKPOINT_FILE
from pokegan_ray.training.config import ExperimentConfig, ScaleConfig, merge_sections
from pokegan_ray.training.loop import PROGRESS_FILE, STATUS_FILE, run_training
from pokegan_ray.training.session import TuneTrialSession
from pokegan_ray.training.trainer import CONFIG_FILE, TrainError, check_config_without_data, prepare_run, \
    read_status, resolve_config, train, worker_bundles, write_run_config

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"  # what --resume needs: the space, the overrides, the settings
RUNS_FOLDER = "runs"
HANDOFFS_FOLDER = "handoffs"  # PBT: the copies of checkpoints handed from one trial to another
STOPS_FILE = "stops.json"
# A multi-worker trial's own process only waits for its TorchTrainer; Tune refuses zero, so a sliver.
TRIAL_DRIVER_CPUS = 0.01
# Ray Data reads a multi-worker trial's shards with tasks of one CPU each: leave a whole CPU free, or they starve.
DATA_READ_CPUS = 1.0
# A trial whose process dies (its node went away) is restarted from its last checkpoint this many times.
TRIAL_MAX_FAILURES = 3
# Optuna minimises the search's signal at a trial's last evaluation (Tune's OptunaSearch reads the last
# result), as the leaderboard ranks trials: not the best value it reached, which rewards a lucky evaluation.
# A trial that cannot be placed while nothing else of the search runs is reported after this long.
PENDING_NOTICE_S = 45.0


class SearchError(RuntimeError):
    """The search cannot start (or resume); the message says what to fix."""


class TrialFailed(RuntimeError):
    """A trial ended without completing; Tune records the message and the search goes on."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its params (plain values; Ray ships it to the trial)."""

    space: SearchSpace
    overrides: dict[str, dict[str, Any]]  # raw config sections over every trial (data uri, --set)
    search_uri: str
    runs_uri: str
    inception_weights: str | None
    cluster: ClusterOptions = ClusterOptions()
    pbt: bool = False  # trials continue from the checkpoints the ledger names (see pbt_continuation)
    threads: int = 0  # torch threads of a single-worker trial when trials share nodes (threads_per_trial); 0: its own


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
    failure: str | None = None  # why the search stopped by itself before its end (it waited too long for room)
    unit: str = "steps"  # the base config's train.unit: what the rungs compared trials at
    report_uri: str | None = None  # SEARCH/report.html; None when it could not be written


def runs_in_trial(experiment: ExperimentConfig) -> bool:
    """A single-worker trial trains inside its Tune trial process; more workers need Ray Train's DDP."""
    return experiment.scale.workers == 1


def trial_bundles(experiment: ExperimentConfig) -> list[Bundle]:
    """What one trial takes from the cluster while it runs (what decides how many trials fit at once)."""
    if runs_in_trial(experiment):
        return worker_bundles(experiment)
    return [{"CPU": TRIAL_DRIVER_CPUS}] + worker_bundles(experiment)


def tune_bundles(experiment: ExperimentConfig) -> list[Bundle]:
    """What Tune reserves for one trial. A multi-worker trial's TorchTrainer reserves its workers itself
    (Ray Train V2), so Tune holds only the trial's driver: reserving the workers in Tune's placement group too
    would take them twice, leave Ray Data no CPU to read with, and on a GPU cluster hold every GPU in Tune's
    groups while the trainers wait for them. Tune's max_concurrent_trials keeps such trials within the
    cluster instead."""
    if runs_in_trial(experiment):
        return worker_bundles(experiment)
    return [{"CPU": TRIAL_DRIVER_CPUS}]


# -- one trial -------------------------------------------------------------------------------
def run_trial(params: dict[str, Any], context: TrialContext) -> None:
    """Tune's function trainable: train one sampled config to the end (or until Tune stops it)."""
    from ray import tune

    ray_compat.quiet_train_loggers()
    trial_id = tune.get_context().get_trial_id()
    if replay_finished_trial(context, trial_id):
        return
    sampled = {name: params[name] for name in context.space.dimension_names if params.get(name) is not None}
    record = Ledger(location(context.search_uri)).read(trial_id)
    # A PBT trial that took another's checkpoint trains the copied trial's config, perturbed (Tune's restored
    # one may be older), and nothing of the config it had before.
    copied = bool(record and record.exploitations)
    if copied:
        sampled = dict(record.params)
    raw = merge_sections(trial_config(context.space, sampled), context.overrides)
    storage = location(context.runs_uri)
    # A restarted trial (a lost node, or --resume) continues its own run from its last checkpoint.
    resume = storage.join(trial_id, CONFIG_FILE).exists()
    continue_from = pbt_continuation(record) if context.pbt else None
    try:
        run = prepare_run(raw, storage=storage, name=trial_id, resume=resume,
                          inception_weights=context.inception_weights, warm_start_uri=None, cluster=context.cluster,
                          continue_from=continue_from, fresh_config=copied)
    except TrainError as error:
        raise TrialFailed(f"the sampled config cannot train: {error}") from None
    if runs_in_trial(run.experiment):
        write_run_config(run)
        experiment = run.experiment
        if context.threads:  # not written to the run's config: best_config.yaml keeps a lone run's threads
            experiment = experiment.with_overrides({"scale": {"threads_per_worker": context.threads}})
        run_training(experiment, run.context, TuneTrialSession(experiment))
        status = read_status(run.folder)
    else:
        try:
            outcome = train(raw, storage_uri=context.runs_uri, name=trial_id, resume=resume,
                            inception_weights=context.inception_weights, callbacks=[FidReporter()],
                            cluster=context.cluster, continue_from=continue_from, fresh_config=copied)
        except TrainError as error:
            raise TrialFailed(f"the sampled config cannot train: {error}") from None
        status = {"status": outcome.status, "step": outcome.step, "message": outcome.message}
    if status["status"] != "completed":
        raise TrialFailed(f"{status['status']} at step {status['step']}: {status['message']}")


def pbt_continuation(record: TrialRecord | None) -> tuple[str, int] | None:
    """Where the ledger says a PBT trial goes on from, and how many checkpoints of other trials it has taken:
    the copy made at its latest exploitation, unless it has reported an evaluation since; else its latest
    evaluation's checkpoint. None for a trial that has reported nothing."""
    if record is None:
        return None
    own = [entry["checkpoint_uri"] for entry in record.since_last_copy() if entry.get("checkpoint_uri")]
    if own:
        return own[-1], len(record.exploitations)
    if record.exploitations:
        return record.exploitations[-1]["checkpoint_uri"], len(record.exploitations)
    return None


def replay_finished_trial(context: TrialContext, trial_id: str) -> bool:
    """True when this trial had already finished (Tune's saved state was older than the ledger, as after
    the search driver was killed): its results are reported to Tune again, and nothing is retrained.

    The ledger and the run's status file are the truth. A trial that ended non-finite (or gave up
    waiting for its data) fails again at once, so Tune's restarts cost no training.
    """
    from ray import tune

    run_folder = location(context.runs_uri).join(trial_id)
    status = read_status(run_folder) if run_folder.join(STATUS_FILE).exists() else None
    if status and status["status"] != "completed":
        raise TrialFailed(f"{status['status']} at step {status['step']}: {status['message']}")
    record = Ledger(location(context.search_uri)).read(trial_id)
    if not ((record and record.status in (COMPLETED, STOPPED)) or status):
        return False
    # The ledger's evaluations (with their checkpoints), then any the driver died before recording.
    history = list(record.history) if record else []
    recorded = {entry["step"] for entry in history}
    history += [entry for entry in _evaluations_of(run_folder) if int(entry["step"]) not in recorded]
    best = {signal: math.inf for signal in SIGNALS}
    for entry in history:
        scores = {signal: float(entry.get(signal, math.nan)) for signal in SIGNALS}
        best = {signal: min(best[signal], value) if math.isfinite(value) else best[signal]
                for signal, value in scores.items()}
        tune.report({"step": entry["step"], "images_seen": entry["images_seen"], **scores,
                     **{f"best_{signal}": value for signal, value in best.items()}, "evaluated": 1.0,
                     "replayed": 1.0, "replayed_checkpoint_uri": entry.get("checkpoint_uri") or ""})
    return True


def _evaluations_of(run_folder: Location) -> list[dict[str, Any]]:
    try:
        history = json.loads(run_folder.join("history.json").read_bytes())
    except StorageError:
        return []
    return [{**entry, "step": int(entry["step"]), "images_seen": int(entry["images_seen"])}
            for entry in history if "fid" in entry]


def _fid_reporter_base():
    from ray.tune.integration.ray_train import TuneReportCallback

    return TuneReportCallback


class FidReporter(_fid_reporter_base()):
    """Passes Ray Train's reports that carry an FID on to Tune (rank 0's, with the run's best FID so far)."""

    def after_report(self, run_context, metrics, checkpoint):
        first = metrics[0]
        if "fid" not in first:
            return
        super().after_report(run_context, [{**first, "evaluated": 1.0}], checkpoint)


# -- early stopping that says why -----------------------------------------------------------
class StopLog:
    """Why the scheduler or the stopper ended a trial early, in `SEARCH/stops.json` (survives --resume): for
    each trial the reason for people and the decision's facts (which stopper, signal and value, when)."""

    def __init__(self, search_folder: Location):
        self.file = search_folder.join(STOPS_FILE)

    def _stops(self) -> dict[str, dict[str, Any]]:
        try:
            stops = json.loads(self.file.read_bytes())
        except StorageError:
            return {}
        # A search begun before stops had their facts kept them as the reason alone.
        return {trial_id: stop if isinstance(stop, dict) else {"reason": stop} for trial_id, stop in stops.items()}

    def reasons(self) -> dict[str, str]:
        return {trial_id: stop["reason"] for trial_id, stop in self._stops().items()}

    def decision(self, trial_id: str) -> dict[str, Any] | None:
        stop = self._stops().get(trial_id)
        return stop and {key: value for key, value in stop.items() if key != "reason"}

    def record(self, trial_id: str, reason: str, decision: dict[str, Any]) -> None:
        stops = {**self._stops(), trial_id: {"reason": reason, **decision}}
        self.file.write_bytes_atomic(json.dumps(stops, indent=1).encode())


# Dimensions that change how many real images a generator step shows D.
COMPUTE_PER_STEP_DIMENSIONS = ("train.batch_size", "loss.n_critic", "loss.name", "loss.paper_critic_schedule")
# What a search's schedulers compare trials at, by the base config's train.unit (a result's key).
TIME_ATTRIBUTES = {"steps": "step", "images": "images_seen"}


def _asha(stops: StopLog, unit: str, length: int, grace: int, reduction_factor: float, signal: str = "fid"):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    time_attr = TIME_ATTRIBUTES[unit]

    class RecordingAsha(ASHAScheduler):
        """ASHA on the search's signal over the run's clock (generator steps, or real images seen: equal
        compute); records each early stop with the signal and its value. Reports that only carry a
        checkpoint (their scores are the last ones measured) are not rung decisions."""

        def on_trial_result(self, tune_controller, trial, result):
            if not result.get("evaluated", 1.0):
                return TrialScheduler.CONTINUE
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result[time_attr] < length:
                stops.record(trial.trial_id, f"stopped early by the ASHA scheduler at step {result['step']} "
                                             f"({int(result['images_seen']):,} images): {_signal_text(signal, result)} "
                                             f"is not in the best 1/{reduction_factor:g} of the trials at this rung "
                                             f"({unit} {int(result[time_attr]):,})",
                             _decision("asha", signal, result))
            return decision

    return RecordingAsha(time_attr=time_attr, metric=signal, mode="min", max_t=length, grace_period=grace,
                         reduction_factor=reduction_factor)


def _decision(by: str, signal: str, result: dict[str, Any]) -> dict[str, Any]:
    """The facts of an early stop, for the ledger: which stopper, on which signal, its value, and when."""
    return {"by": by, "signal": signal, "value": float(result[signal]), "step": int(result["step"]),
            "images_seen": int(result["images_seen"])}


def _signal_text(signal: str, result: dict[str, Any]) -> str:
    """`FID 312.4` / `KID 0.1834` / `FID∞ 290.1`: a signal's name for people and its value in this result."""
    value = float(result[signal])
    return f"{SIGNALS[signal]} {value:.4f}" if abs(value) < 10 else f"{SIGNALS[signal]} {value:.1f}"


def _check_pbt_cadence(settings: SearchSettings, experiment: ExperimentConfig) -> None:
    """PBT copies the checkpoint a trial reported with its evaluation at the interval: both must come together."""
    train = experiment.train
    interval = settings.perturbation_interval or train.eval_every
    if train.checkpoint_every != train.eval_every or interval % train.eval_every:
        raise SearchError(f"PBT copies the checkpoint saved with an evaluation: set train.checkpoint_every equal to "
                          f"train.eval_every ({train.checkpoint_every:,} and {train.eval_every:,} now) and "
                          f"search.perturbation_interval to a multiple of it ({interval:,} now), all in {train.unit}")


def _pbt(space: SearchSpace, settings: SearchSettings, experiment: ExperimentConfig, search: Location):
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    ledger = Ledger(search)
    train = experiment.train
    time_attr = TIME_ATTRIBUTES[train.unit]
    interval = settings.perturbation_interval or train.eval_every
    mutations: dict[str, Any] = {}
    for dimension in space.mutable_dimensions:
        if dimension.type == "categorical":
            mutations[dimension.name] = [dimension.value_of(label) for label in dimension.choice_labels()]
        else:
            mutations[dimension.name] = (tune.loguniform if dimension.log else tune.uniform)(dimension.low,
                                                                                             dimension.high)

    class RecordingPbt(PopulationBasedTraining):
        """Tune's PBT on the search's signal over the run's clock. The checkpoint a trial continues from is
        handed over explicitly: each exploitation copies the better trial's checkpoint (the one reported with
        its evaluation, by a single-worker trial or by Ray Train) to `SEARCH/handoffs/` and writes the copy,
        the point and what changed into the ledger, which the trial reads when it starts (pbt_continuation).
        Reports that only carry a checkpoint are not decisions."""

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            # A resumed search: PBT's state of the trial (how far it got, its last score) from the ledger, so
            # the synchronous schedule neither waits for trials that are past the boundary nor repeats one.
            record = ledger.read(trial.trial_id)
            if record is None or not record.history:
                return
            last = record.history[-1]
            reached = max([int(last[time_attr])] + [int(copy[time_attr]) for copy in record.exploitations])
            state = self._trial_state[trial]
            state.last_train_time = reached
            state.last_perturbation_time = reached - reached % interval
            state.last_score = self._metric_op * float(last.get(settings.signal, math.nan))
            state.last_result = {**last, "evaluated": 1.0}
            self._next_perturbation_sync = max(self._next_perturbation_sync, state.last_perturbation_time + interval)

        def on_trial_result(self, tune_controller, trial, result):
            # A trial's last evaluation is its end: nothing is left to continue, so no copy into it.
            if not result.get("evaluated", 1.0) or result[time_attr] >= train.length:
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
            """Tune's, but a better trial's checkpoint is the one it reported with this evaluation (a trial
            that trains in its own TorchTrainer has no Tune checkpoint, only Ray Train's)."""
            state = self._trial_state[trial]
            uri = _checkpoint_uri(search, trial, state.last_result or {}) if trial in upper_quantile else None
            state.last_checkpoint = tune.Checkpoint(path=location(uri).path, filesystem=search.filesystem) \
                if uri else None
            if trial in lower_quantile:
                donor = random.choice(upper_quantile)
                if self._trial_state[donor].last_checkpoint is not None:
                    self._exploit(tune_controller, trial, donor)

        def _exploit(self, tune_controller, trial, trial_to_clone):
            before = dict(trial.config)
            copied = self._trial_state[trial_to_clone].last_result or {}
            record, donor = ledger.read(trial.trial_id), ledger.read(trial_to_clone.trial_id)
            handoff = None
            if record is not None:
                source = search.uri_of(self._trial_state[trial_to_clone].last_checkpoint.path)
                handoff = search.join(HANDOFFS_FOLDER, trial.trial_id, f"{len(record.exploitations) + 1:03d}")
                handoff.join(CHECKPOINT_FILE).write_bytes_atomic(location(source).join(CHECKPOINT_FILE).read_bytes())
            super()._exploit(tune_controller, trial, trial_to_clone)
            if record is None:
                return
            # PBT copies the better trial's whole config, then perturbs the mutable dimensions.
            changed = {name: {"before": before.get(name), "copied": trial_to_clone.config.get(name),
                              "now": trial.config.get(name)} for name in space.dimension_names
                       if name in mutations or before.get(name) != trial.config.get(name)}
            record.exploitations.append({
                "from_trial": trial_to_clone.trial_id, "from_number": donor.number if donor else None,
                "step": int(copied.get("step", 0)), "images_seen": int(copied.get("images_seen", 0)),
                settings.signal: float(copied.get(settings.signal, math.nan)), "changed": changed,
                "checkpoint_uri": handoff.uri})
            record.params = {name: trial.config[name] for name in space.dimension_names
                             if trial.config.get(name) is not None}
            ledger.write(record)
            _say(f"trial {record.number} continues from trial {donor.number if donor else trial_to_clone.trial_id}'s "
                 f"checkpoint at step {int(copied.get('step', 0))} ({int(copied.get('images_seen', 0)):,} images), "
                 "with " + ", ".join(f"{name}={_short(trial.config.get(name))}" for name in mutations))

    # Tune multiplies a float by 0.8 or 1.2 without looking at its range: an EMA decay of 0.999 would
    # become 1.2. Perturbed values are kept within the dimension's bounds.
    bounds = {dimension.name: (dimension.low, dimension.high) for dimension in space.mutable_dimensions
              if dimension.type == "float"}

    def within_bounds(config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in bounds.items():
            config[name] = min(max(config[name], low), high)
        return config

    return RecordingPbt(time_attr=time_attr, metric=settings.signal, mode="min", perturbation_interval=interval,
                        hyperparam_mutations=mutations, quantile_fraction=settings.pbt_quantile,
                        synch=settings.pbt_synchronous, custom_explore_fn=within_bounds)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plateau_stopper(stops: StopLog, evaluations: int, std: float, signal: str = "fid"):
    from ray.tune.stopper import TrialPlateauStopper

    class RecordingPlateauStopper(TrialPlateauStopper):
        def __call__(self, trial_id, result):
            if not result.get("evaluated", 1.0):
                return False
            stop = super().__call__(trial_id, result)
            if stop:
                stops.record(trial_id, f"stopped at step {result['step']} ({int(result['images_seen']):,} images): "
                                       f"{SIGNALS[signal]} plateaued (the last {evaluations} evaluations vary by less "
                                       f"than {std:g}; now {_signal_text(signal, result)})",
                             _decision("plateau", signal, result))
            return stop

    return RecordingPlateauStopper(metric=signal, mode="min", std=std, num_results=evaluations,
                                   grace_period=evaluations)


class PendingWatch:
    """Notices a search that cannot place its next trial while none of its trials runs.

    A trial that waits while others of the search run is just queued. One that waits with nothing
    running means the cluster lacks room (still scaling up, or something else holds it): the
    search says so within a minute, with what the trial needs and what the cluster has, and after
    `timeout_s` it stops instead of waiting forever. It stops the way Ctrl+C does (Tune's SIGUSR1
    handler), so the waiting trials stay in Tune's saved state and --resume runs them.
    """

    def __init__(self, needs: list[Bundle], timeout_s: float):
        self.needs = needs
        self.timeout_s = timeout_s
        self.first_notice = min(PENDING_NOTICE_S, timeout_s / 2)
        self.idle_since: float | None = None
        self.next_notice = self.first_notice
        self.failure: str | None = None
        self.interrupted_tune = False  # stopped through Tune's signal handler, not through the stopper

    def check(self, trials) -> None:
        statuses = [trial.status for trial in trials]
        if "RUNNING" in statuses or "PENDING" not in statuses:
            self.idle_since, self.next_notice = None, self.first_notice
            return
        now = time.monotonic()
        self.idle_since = self.idle_since or now
        waited = now - self.idle_since
        if waited < self.next_notice and waited < self.timeout_s:
            return
        self.next_notice += 60.0
        free = describe(_available_resources())
        needed = describe(add_up(self.needs))
        if waited >= self.timeout_s:
            self.failure = (f"no trial could start for {duration_text(waited)}: a trial needs {needed} and the "
                            f"cluster has {free} free ({describe(read_capacity().total())} in all). Free the cluster "
                            "or let it grow, then continue with --resume")
            _say(f"stopping the search: {self.failure}")
            self.interrupted_tune = _interrupt_tune()
        else:
            _say(f"the next trial has waited {waited:.0f} s for room: it needs {needed}; the cluster has {free} "
                 f"free ({describe(read_capacity().total())} in all). The search stops after "
                 f"{duration_text(self.timeout_s)} without room (--cluster-timeout)")


def _interrupt_tune() -> bool:
    """End the Tune run as Ctrl+C would, keeping unfinished trials resumable: Tune's own SIGUSR1 handler,
    which `tune.run` installs when it runs in the main thread. False where it cannot."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1") \
            or signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False
    signal.raise_signal(signal.SIGUSR1)
    return True


def _available_resources() -> Bundle:
    import ray

    return {key: value for key, value in ray.available_resources().items() if key in ("CPU", "GPU")}


def _watch_stopper(watch: PendingWatch):
    from ray.tune.stopper import Stopper

    class StopWhenStuck(Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):  # the fallback: ends every trial, so --resume has none left to run
            return watch.failure is not None and not watch.interrupted_tune

    return StopWhenStuck()


def _report_callback(ledger: Ledger, folder: Location, space: SearchSpace, unit: str):
    """Rewrites SEARCH/report.html after every trial event the ledger records, so the page can be opened while
    the search runs. A page that cannot be written is a warning; the search goes on."""
    from ray.tune import Callback

    from pokegan_ray.search.results import SearchReport

    class ReportRefresh(Callback):
        def __init__(self):
            self.report = SearchReport(folder, space, unit)  # keeps its thumbnails from one rewrite to the next

        def refresh(self, *_, **__):
            self.report.write_safely(ledger.records())

        on_trial_start = on_trial_complete = on_trial_error = refresh

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("evaluated", 1.0):  # an evaluation, not a report that only carries a checkpoint
                self.refresh()

    return ReportRefresh()


# -- progress and the ledger ----------------------------------------------------------------
def _progress_callback(ledger: Ledger, stops: StopLog, context: TrialContext, samples: int, watch: PendingWatch,
                       signal: str):
    from ray.tune import Callback

    search = location(context.search_uri)

    class SearchProgress(Callback):
        """Each trial event to the search's view (a line, or its row in the live table), and the ledger written
        as things happen.

        A trial the ledger already calls finished (its results replayed after the search driver
        died) is left exactly as it is.
        """

        def __init__(self):
            self.first_seen: dict[str, float] = {}

        def on_step_end(self, iteration, trials, **info):
            for trial in trials:
                self.first_seen.setdefault(trial.trial_id, time.time())
            watch.check(trials)

        def on_trial_start(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id)
            if record is None:
                # (A PBT point holds every dimension; None is one its `when` switched off: not sampled.)
                params = {name: trial.config[name] for name in context.space.dimension_names
                          if trial.config.get(name) is not None}
                record = TrialRecord(trial_id=trial.trial_id, number=len(ledger.records()) + 1, params=params,
                                     run_uri=location(context.runs_uri).join(trial.trial_id).uri,
                                     queued_at=self.first_seen.get(trial.trial_id, time.time()), started_at=time.time())
            elif record.finished:
                _show(record, f"trial {record.number}/{samples} {trial.trial_id} had {record.status} before the "
                              "restart: its results are kept", note=True)
                return
            record.status, record.reason = RUNNING, ""
            ledger.write(record)
            # Again after a pause (PBT) or a lost process: it goes on from its latest checkpoint.
            started = "continues" if record.history else "started"
            _show(record, f"trial {record.number}/{samples} {trial.trial_id} {started}: {record.params_text()}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            record = ledger.read(trial.trial_id)
            if record.finished or not result.get("evaluated", 1.0):
                return
            if any(entry["step"] == int(result["step"]) for entry in record.since_last_copy()):
                return  # a restarted trial repeating an evaluation it had already reported
            record.history.append({
                "step": int(result["step"]), "images_seen": int(result["images_seen"]),
                **{score: float(result.get(score, math.nan)) for score in SIGNALS},
                "checkpoint_uri": _checkpoint_uri(search, trial, result),
                "handoffs": int(result.get("handoffs", 0))})
            ledger.write(record)
            also = f", {_signal_text(signal, result)}" if signal != "fid" else ""
            _show(record, f"trial {record.number}/{samples} step {result['step']}: FID {result['fid']:.1f} "
                          f"(best {record.best_fid:.1f}){also} after {int(result['images_seen']):,} images")

        def on_trial_recover(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id)
            if record is None or record.finished:
                return
            error = _error_reason(trial)
            record.restarts.append({"after_step": record.step, "error": error})
            ledger.write(record)
            _show(record, f"trial {record.number}/{samples} lost its process after step {record.step} ({error}): Tune "
                          "restarts it from its last checkpoint", note=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id)
            if record.finished:
                return
            reason = stops.reasons().get(trial.trial_id)
            record.status, record.reason = (STOPPED, reason) if reason else (COMPLETED, "")
            record.stop = stops.decision(trial.trial_id)
            ledger.write(record)
            _show(record, f"trial {record.number}/{samples} {record.status}: best FID {record.best_fid:.1f} after "
                          f"{record.images_seen:,} images{f' ({reason})' if reason else ''}")

        def on_trial_error(self, iteration, trials, trial, **info):
            record = ledger.read(trial.trial_id) or TrialRecord(
                trial_id=trial.trial_id, number=len(ledger.records()) + 1, params={}, run_uri="")
            if record.finished:
                return
            record.status, record.reason = FAILED, _error_reason(trial)
            ledger.write(record)
            _show(record, f"trial {record.number}/{samples} failed: {record.reason} (the search goes on)")

    return SearchProgress()


def _checkpoint_uri(search: Location, trial, result: dict[str, Any]) -> str | None:
    """Where the checkpoint reported with this result is kept: Ray Train's (a multi-worker trial), Tune's
    (a single-worker trial), or the one a replayed result names."""
    if result.get("replayed"):
        return result.get("replayed_checkpoint_uri") or None
    if result.get("checkpoint_path"):
        return search.uri_of(result["checkpoint_path"])
    if result.get("checkpoint_dir_name"):
        return search.uri_of(posixpath.join(trial.path, result["checkpoint_dir_name"]))
    return None


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


def _show(record: TrialRecord, line: str, note: bool = False) -> None:
    """A trial event through the search's view: its row, or off a terminal the line (`note`: the line always)."""
    terminal.show_trial(record, line, note=note)


# -- the search ------------------------------------------------------------------------------
def check_search_config(space: SearchSpace, settings: SearchSettings,
                        overrides: dict[str, dict[str, Any]]) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The search's base config against its data set, and its settings against that config: (base config,
    data manifest). Needs no Ray."""
    clashes = [f"{section}.{key}" for section, keys in overrides.items() for key in keys
               if f"{section}.{key}" in space.dimension_names]
    if clashes:
        raise SearchError(f"--set {clashes[0]} is a dimension of {space.source}; remove it there or from --set")
    try:
        experiment, manifest = resolve_config(merge_sections(dict(space.base), overrides))
    except TrainError as error:
        raise SearchError(f"the search's base config: {error}") from None
    if settings.scheduler in ("asha", "pbt") and experiment.train.eval_every == 0:
        raise SearchError(f"the {settings.scheduler.upper()} scheduler compares trials during training, but "
                          "train.eval_every is 0 (FID only at the end); set train.eval_every in the space's base, "
                          "or search.scheduler: none")
    if settings.scheduler == "pbt":
        _check_pbt_cadence(settings, experiment)
        if settings.pbt_synchronous and settings.concurrent < settings.samples:
            raise SearchError(f"synchronous PBT waits at each perturbation interval for its whole population: set "
                              f"search.concurrent to at least search.samples ({settings.samples}), or "
                              "search.pbt_synchronous: false")
    compute_per_step = [name for name in space.dimension_names if name in COMPUTE_PER_STEP_DIMENSIONS]
    if experiment.train.unit == "steps" and compute_per_step:
        _say(f"note: trials differ in {', '.join(compute_per_step)} but are compared at equal generator steps, so "
             "after unequal numbers of images; give the base's length as train.images for compute-fair rungs")
    return experiment, manifest


def check_search_cluster(experiment: ExperimentConfig, settings: SearchSettings, storage_uri: str,
                         cluster: ClusterOptions) -> int:
    """Whether the cluster can run the search's trials, and how many at once.

    On a cluster that may grow this waits until one trial fits. Concurrency is what fits at once in
    the largest cluster the search may get: the autoscaler's maximum where Ray publishes it, else
    today's nodes. An autoscaler that does not say its maximum (Ray 2.60's) gets the space's
    concurrency as asked: the trials that wait for room are the demand that makes it add nodes.
    """
    one_trial = trial_bundles(experiment)
    # Ray Data's read tasks (multi-worker trials only) need a CPU beside the trials.
    reserve = [] if runs_in_trial(experiment) else [{"CPU": DATA_READ_CPUS}]
    try:
        require_shared_storage({"--data": experiment.data.uri, "--storage": storage_uri}, cluster)
        wait_for_capacity(one_trial + reserve, "the search's first trial", cluster, say=_say)
    except ClusterError as error:
        raise SearchError(str(error)) from None
    capacity = read_capacity()
    if capacity.autoscaler.reporting and capacity.node_types is None:
        return settings.concurrent
    nodes = capacity.nodes + capacity.launchable
    concurrent = trials_at_once(one_trial, reserve, nodes, settings.concurrent)
    if (settings.scheduler == "pbt" and settings.pbt_synchronous and not runs_in_trial(experiment)
            and concurrent < settings.samples):
        # Tune reserves only a multi-worker trial's driver (tune_bundles): nothing would queue the population.
        raise SearchError(f"synchronous PBT trains its population together, but {concurrent} of its "
                          f"{settings.samples} multi-worker trials (each {describe(add_up(one_trial))}) fit on this "
                          "cluster; lower search.samples or scale.workers, or set search.pbt_synchronous: false")
    if concurrent < settings.concurrent:
        log.warning("running %d trial(s) at once, not %d: each needs %s and the cluster %s %s%s", concurrent,
                    settings.concurrent, describe(add_up(one_trial)), "may grow to" if capacity.can_grow else "has",
                    describe(add_up(nodes)), f" ({DATA_READ_CPUS:g} CPU kept for reading data)" if reserve else "")
    return concurrent


def trials_at_once(one_trial: list[Bundle], reserve: list[Bundle], nodes: list[Bundle], wanted: int) -> int:
    """How many trials (at least one, at most `wanted`) fit on `nodes` together, CPUs and GPUs alike: four
    trials of a quarter GPU and one CPU each share a 4-CPU, 1-GPU node."""
    concurrent = 1
    while concurrent < wanted and fits(one_trial * (concurrent + 1) + reserve, nodes):
        concurrent += 1
    return concurrent


def threads_per_trial(scale: ScaleConfig, concurrent: int, nodes: list[Bundle]) -> int:
    """The torch threads a single-worker trial may use when `concurrent` trials run at once, or 0 for the
    config's own. `scale.threads_per_worker` may exceed a trial's CPUs so that a lone trial uses the whole
    node (quick.yaml: 0.5 CPU, 2 threads); trials sharing the node must split its cores instead: four
    trials of two threads each on a 2-core node trained at a quarter of their fair share (PBT here)."""
    cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if scale.workers != 1 or not scale.threads_per_worker or cpus < 1 or scale.cpus_per_worker <= 0:
        return 0
    sharing = max(1, min(concurrent, int(cpus // scale.cpus_per_worker)))
    cap = max(1, int(cpus // sharing))
    return cap if cap < scale.threads_per_worker else 0


@dataclass(frozen=True)
class SearchPlan:
    """A search checked as far as it can be without Ray (see `plan_search`)."""

    storage: Location
    folder: Location  # STORAGE/NAME
    space: SearchSpace
    overrides: dict[str, dict[str, Any]]  # --set and --data over the space's base
    settings: SearchSettings
    resume: bool
    # The base config resolved against the data set and its manifest; None while the data set is to be prepared.
    experiment: ExperimentConfig | None
    manifest: dict[str, Any] | None
    # Where each trial is logged in MLflow (`--mlflow`; kept with the search, so --resume logs there too).
    tracking: Tracking | None = None


def plan_search(space: SearchSpace | None, *, storage_uri: str, name: str, data_uri: str | None = None,
                overrides: dict[str, dict[str, Any]] | None = None, samples: int | None = None,
                concurrent: int | None = None, resume: bool = False, data_checked_later: bool = False,
                tracking: Tracking | None = None) -> SearchPlan:
    """Everything about a search that can be wrong before Ray starts: the storage, the search to resume (or
    a name already taken), the settings, and the base config against its data set. With
    `data_checked_later` (the bundled set, prepared on first use; a local data set
    on a joined cluster, whose reach is checked first once Ray is up) the config is checked without its data.
    A resumed search logs to the MLflow tracking it started with (`tracking` may only repeat it); whether
    that server answers is the caller's check (pokegan_ray.tracking.check_tracking)."""
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
        started_with = Tracking(**state["mlflow"]) if state.get("mlflow") else None
        if tracking is not None and (started_with is None or tracking.uri != started_with.uri):
            raise SearchError(f"the search {name!r} logs to " + (f"MLflow at {started_with.uri}" if started_with
                                                                   else "no MLflow server") +
                              " as it started: --resume keeps that; drop --mlflow")
        tracking = started_with
    else:
        if space is None:
            raise SearchError("a new search needs --space")
        if saved.exists():
            raise SearchError(f"a search named {name!r} already exists under {storage.uri}; pass --resume to "
                              "continue it or choose another --name")
        try:
            overrides = merge_sections(overrides or {}, {"data": {"uri": data_uri}} if data_uri else {})
            settings = space.settings.with_overrides(samples=samples, concurrent=concurrent)
        except ValueError as error:
            raise SearchError(str(error)) from None
    if data_checked_later:
        try:
            check_config_without_data(merge_sections(dict(space.base), overrides))
        except ValueError as error:
            raise SearchError(f"the search's base config: {error}") from None
        return SearchPlan(storage, folder, space, overrides, settings, resume, None, None, tracking)
    experiment, manifest = check_search_config(space, settings, overrides)
    return SearchPlan(storage, folder, space, overrides, settings, resume, experiment, manifest, tracking)


def run_search(space: SearchSpace | None, *, storage_uri: str, name: str, data_uri: str | None = None,
               overrides: dict[str, dict[str, Any]] | None = None, samples: int | None = None,
               concurrent: int | None = None, resume: bool = False, inception_weights: str | None = None,
               cluster: ClusterOptions = ClusterOptions(), plan: SearchPlan | None = None,
               tracking: Tracking | None = None) -> SearchOutcome:
    """Run (or, with resume=True, continue) the search `name` under `storage_uri` (`plan`: what
    `plan_search` already checked for these arguments). With `tracking` (`--mlflow`) each trial is an MLflow
    run (pokegan_ray.tracking.tune)."""
    from ray import tune

    if plan is None or plan.experiment is None:
        plan = plan_search(space, storage_uri=storage_uri, name=name, data_uri=data_uri, overrides=overrides,
                           samples=samples, concurrent=concurrent, resume=resume,
                           tracking=tracking or (plan.tracking if plan else None))
    storage, folder, space, settings, resume = plan.storage, plan.folder, plan.space, plan.settings, plan.resume
    experiment, manifest = plan.experiment, plan.manifest
    concurrent_trials = check_search_cluster(experiment, settings, storage.uri, cluster)
    # Trials read the same data as the check did (an absolute path: trials run in other folders).
    overrides = merge_sections(plan.overrides, {"data": {"uri": experiment.data.uri}})
    if not resume:
        folder.join(SEARCH_FILE).write_bytes_atomic(json.dumps({
            "space": _space_as_dict(space), "space_source": space.source, "overrides": overrides,
            "settings": dataclasses.asdict(settings),
            "mlflow": plan.tracking.to_dict() if plan.tracking else None}, indent=1).encode())

    pbt = settings.scheduler == "pbt"
    threads = threads_per_trial(experiment.scale, concurrent_trials, read_capacity().nodes)
    if threads:
        _say(f"{concurrent_trials} trials at once share each node's cores: {threads} torch thread(s) a trial, "
             f"not scale.threads_per_worker={experiment.scale.threads_per_worker}")
    context = TrialContext(space=space, overrides=overrides, search_uri=folder.uri,
                           runs_uri=folder.join(RUNS_FOLDER).uri, inception_weights=inception_weights,
                           cluster=cluster, pbt=pbt, threads=threads)
    ledger, stops = Ledger(folder), StopLog(folder)
    watch = PendingWatch(trial_bundles(experiment), cluster.wait_timeout_s)
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context),
                                    tune.PlacementGroupFactory(tune_bundles(experiment)))
    if resume:
        log.info("resuming search %s: finished trials are kept, unfinished ones continue from their checkpoints",
                 folder.uri)
        tuner = tune.Tuner.restore(folder.path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=storage.filesystem)
    else:
        tuner = tune.Tuner(
            trainable,
            # PBT's population comes as points, and Tune wants each point's keys in the param space: None
            # stands for "not sampled" (a dimension switched off by `when`), as run_trial reads it.
            param_space={name: None for name in space.dimension_names} if pbt else None,
            tune_config=tune.TuneConfig(num_samples=settings.samples,
                                        search_alg=_searcher(space, settings, manifest, concurrent_trials),
                                        scheduler=_scheduler(settings, experiment, stops, space, folder),
                                        # (PBT's generator limits them itself.)
                                        max_concurrent_trials=None if pbt else concurrent_trials,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage.path, storage_filesystem=storage.filesystem,
                stop=_stopper(settings, stops, watch),
                # The ledger first: the report and the MLflow logger read each trial's record from it (Tune calls
                # callbacks in order).
                callbacks=[_progress_callback(ledger, stops, context, settings.samples, watch, settings.signal),
                           _report_callback(ledger, folder, space, experiment.train.unit),
                           *_tracking_callbacks(plan.tracking, name, context, space, pbt)],
                # Tune keeps single-worker trials' checkpoints (multi-worker ones are Ray Train's).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=experiment.train.keep_checkpoints,
                                                        checkpoint_score_attribute="checkpoint_fid",
                                                        checkpoint_score_order="min"),
                failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES), verbose=0))
    stopping = {"asha": f"ASHA on {SIGNALS[settings.signal]}", "pbt": f"PBT on {SIGNALS[settings.signal]}",
                "none": "no early stopping"}[settings.scheduler]
    log.info("search %s: %d trials of %s, %d at a time, %s; results in %s", name, settings.samples, space.source,
             concurrent_trials, stopping, folder.uri)
    # The callback (restored from Tune's saved state on --resume) shows each trial event through this view.
    with terminal.SearchView(f"search {name}", settings.samples, SIGNALS[settings.signal], settings.signal,
                             read=terminal.progress_reader(PROGRESS_FILE),
                             length_images=experiment.train.length if experiment.train.unit == "images" else None
                             ) as view:
        view.preload(ledger.records())
        results = tuner.fit()  # returns (does not raise) when interrupted by Ctrl+C, with Tune's state saved
    # (Tune calls the trials a stuck search never placed "terminated" too.)
    every_trial_ended = (watch.failure is None and len(results) >= settings.samples
                         and results.num_terminated + results.num_errors == len(results))
    if every_trial_ended:
        _close_lost_trials(ledger)

    from pokegan_ray.search import results as search_results

    records = ledger.records()
    outcome = search_results.write_results(folder, records, space, experiment.train.unit)
    interrupted = not every_trial_ended or any(record.status == RUNNING for record in records)
    return dataclasses.replace(outcome, interrupted=interrupted, failure=watch.failure)


def _tracking_callbacks(tracking: Tracking | None, name: str, context: TrialContext, space: SearchSpace,
                        pbt: bool) -> list:
    if tracking is None:
        return []
    from pokegan_ray.tracking.tune import TrialLogger

    return [TrialLogger(tracking, search_name=name, search_uri=context.search_uri, runs_uri=context.runs_uri,
                        dimensions=list(space.dimension_names),
                        mutable=[dimension.name for dimension in space.mutable_dimensions] if pbt else [])]


def _trial_dirname(trial) -> str:
    """Tune's folder of a trial (its checkpoints, for a single-worker trial): short, by trial id, instead of
    Tune's default that spells out every sampled value."""
    return f"trial_{trial.trial_id}"


def _searcher(space: SearchSpace, settings: SearchSettings, manifest: dict[str, Any], concurrent: int):
    import optuna
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    facts = {"data.labelled": bool(manifest["classes"])}
    _quiet_optuna(optuna)
    if settings.scheduler == "pbt":
        # Tune's PBT takes no search algorithm: the population is drawn up front (first_trials, then seeded
        # random draws from the same define-by-run sampler), and PBT's exploits and perturbations do the rest.
        # A synchronous PBT pauses each trial at the interval until the whole population reached it, and a
        # concurrency limit counts paused trials as running: with fewer slots than trials it would wait forever.
        # So the limit (the generator's own: Tune ignores max_concurrent_trials with a generator) is for the
        # asynchronous schedule only; check_search_cluster made sure a synchronous population fits.
        return BasicVariantGenerator(points_to_evaluate=initial_population(space, settings, facts),
                                     max_concurrent=0 if settings.pbt_synchronous else concurrent)
    return OptunaSearch(
        space=define_by_run(space, facts), metric=settings.signal, mode="min",
        points_to_evaluate=[_optuna_point(space, point) for point in settings.first_trials] or None,
        sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials))


def _quiet_optuna(optuna) -> None:
    """Optuna announces every study it creates at INFO (and sets its own logger's level when first used, over
    any set before); pokegan prints the search's own lines. With `pokegan -v` (DEBUG) it still speaks."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def initial_population(space: SearchSpace, settings: SearchSettings, facts: dict[str, Any]) -> list[dict[str, Any]]:
    """`settings.samples` points: the first trials (any dimension they leave out drawn), then seeded draws
    from the same define-by-run sampler Optuna uses."""
    import optuna

    sampler = define_by_run(space, facts)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=settings.seed))
    for point in settings.first_trials:
        study.enqueue_trial(_optuna_point(space, point))
    return [sampler(study.ask()) for _ in range(settings.samples)]


def _scheduler(settings: SearchSettings, experiment: ExperimentConfig, stops: StopLog, space: SearchSpace,
               search: Location):
    if settings.scheduler == "pbt":
        return _pbt(space, settings, experiment, search)
    if settings.scheduler != "asha":
        return None
    train = experiment.train
    grace = settings.grace or train.eval_every
    return _asha(stops, train.unit, train.length, min(grace, train.length), settings.reduction_factor,
                 settings.signal)


def _stopper(settings: SearchSettings, stops: StopLog, watch: PendingWatch):
    from ray.tune.stopper import CombinedStopper

    stoppers = [_watch_stopper(watch)]
    if settings.plateau_evaluations:
        stoppers.append(_plateau_stopper(stops, settings.plateau_evaluations, settings.plateau_std, settings.signal))
    return CombinedStopper(*stoppers)


def _close_lost_trials(ledger: Ledger) -> None:
    """Every Tune trial has ended, yet the ledger may still call one running: a trial that started after
    Tune last saved its state, before the search driver was killed. Tune's restored state never knew it
    and the searcher proposed another in its place; it ends here, as failed, with that reason."""
    for record in ledger.records():
        if record.status == RUNNING:
            record.status = FAILED
            record.reason = ("lost when the search driver was killed: it started after Tune last saved the search, "
                             "so the resumed search ran another trial in its place")
            ledger.write(record)


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
        if dimension.mutable:
            spec["mutable"] = True
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
