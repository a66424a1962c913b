"""A search's trials in MLflow: Ray Tune's `MLflowLoggerCallback`, stepped by images seen (see
`pokegan_ray.tracking`)."""

from __future__ import annotations

import logging
from typing import Any

import yaml
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from pokegan_ray.search.ledger import FAILED, Ledger
from pokegan_ray.storage import StorageError, location
from pokegan_ray.tracking import Tracking, config_params, param_value, public_uri
from pokegan_ray.tracking.runs import Guard, RunTracker, experiment_id
from pokegan_ray.training.trainer import CONFIG_FILE

log = logging.getLogger(__name__)

# What Tune adds to every result: its own clock and bookkeeping, not the training's.
TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}


class TrialLogger(MLflowLoggerCallback):
    """One MLflow run per trial, logged from the search driver as Tune reports the trial's events.

    Ray's callback sets up the experiment (created if needed) and calls `log_trial_start`,
    `log_trial_result` and `log_trial_end`; those are pokegan's:

    - start: the run (found again after `--resume` by its `trial_id` and `search_uri` tags) and the sampled
      params; a PBT trial that continues with perturbed values logs them as `pbt/<dimension>` metrics (params
      cannot change);
    - result: the curves at step = images seen (Ray's would step by `training_iteration`, which counts
      reports, not compute), in one request; then the trial's resolved config as params, once it is written,
      and any new sample grid from the trial's run folder;
    - end: the status and reason from the search's ledger, `best_checkpoint_uri` (the checkpoint saved with
      the trial's best FID), the plot and GIF, and MLflow's FINISHED or FAILED.

    Only plain values are kept (Tune pickles its callbacks with the search for `--resume`): the URI carries
    no credentials.
    """

    def __init__(self, tracking: Tracking, *, search_name: str, search_uri: str, runs_uri: str,
                 dimensions: list[str], mutable: list[str]):
        super().__init__(tracking_uri=tracking.uri, experiment_name=tracking.experiment,
                         tags={"search": search_name, "search_uri": public_uri(search_uri)})
        self.tracking = tracking
        self.search_uri = search_uri
        self.runs_uri = runs_uri
        self.dimensions = list(dimensions)
        self.mutable = list(mutable)

    def setup(self, *args, **kwargs):
        self.guard = Guard("search")
        self.runs: dict[str, RunTracker] = {}
        self.configs_logged: set[str] = set()
        self.guard.call(super().setup, *args, **kwargs)  # Ray's: the experiment, created when it is new
        self.experiment_id = self.guard.call(experiment_id, self.tracking)

    def log_trial_start(self, trial):
        self.guard.call(self._start, trial)

    def log_trial_result(self, iteration: int, trial, result: dict[str, Any]):
        self.guard.call(self._result, trial, result)

    def log_trial_end(self, trial, failed: bool = False):
        self.guard.call(self._end, trial, failed)

    def on_experiment_end(self, trials, **info):
        """A search that stops before its trials end (Ctrl+C, no room): their runs are KILLED; `--resume`
        finds them again and sets them running."""
        for trial_id in list(self.runs):
            self.guard.call(self.runs.pop(trial_id).end, "KILLED")

    # -- the trial's events -------------------------------------------------------------------
    def _start(self, trial) -> None:
        tracker = self._tracker(trial)
        sampled = {name: param_value(trial.config[name]) for name in self.dimensions
                   if trial.config.get(name) is not None}
        if not tracker.params:
            tracker.log_params(sampled)
        record = Ledger(location(self.search_uri)).read(trial.trial_id) if self.mutable else None
        if record is not None:
            # A PBT trial's values now (after a copy and perturbation), from where it goes on.
            step = int(record.exploitations[-1]["images_seen"]) if record.exploitations else 0
            now = {f"pbt/{name}": float(trial.config[name]) for name in self.mutable
                   if isinstance(trial.config.get(name), (int, float))}
            tracker.log_metrics(now, step)

    def _result(self, trial, result: dict[str, Any]) -> None:
        tracker = self._tracker(trial)
        tracker.log_report({key: value for key, value in result.items() if key not in TUNE_KEYS})
        run_folder = location(self.runs_uri).join(trial.trial_id)
        if trial.trial_id not in self.configs_logged:
            try:
                config = yaml.safe_load(run_folder.join(CONFIG_FILE).read_bytes())  # the trial's resolved config
            except StorageError:
                config = None
            if config:
                tracker.log_params(config_params(config))
                self.configs_logged.add(trial.trial_id)
        tracker.log_new_grids(run_folder)

    def _end(self, trial, failed: bool) -> None:
        tracker = self._tracker(trial)
        run_folder = location(self.runs_uri).join(trial.trial_id)
        tracker.log_new_grids(run_folder)
        tracker.log_end_files(run_folder)
        record = Ledger(location(self.search_uri)).read(trial.trial_id)
        if record is not None:
            best = record.best_checkpoint_uri()
            tracker.set_tags({"status": record.status, "status_reason": record.reason or None,
                              "best_checkpoint_uri": public_uri(best) if best else None})
            failed = failed or record.status == FAILED
        tracker.end("FAILED" if failed else "FINISHED")
        self.runs.pop(trial.trial_id, None)

    def _tracker(self, trial) -> RunTracker:
        if trial.trial_id not in self.runs:
            record = Ledger(location(self.search_uri)).read(trial.trial_id)
            number = record.number if record else None
            run_folder = location(self.runs_uri).join(trial.trial_id)
            self.runs[trial.trial_id] = RunTracker(
                self.tracking, self.experiment_id,
                key={"trial_id": trial.trial_id, "search_uri": public_uri(self.search_uri)},
                name=f"trial {number} ({trial.trial_id})" if number else trial.trial_id,
                tags={"search": self.tags["search"], "trial_number": number, "run_uri": public_uri(run_folder.uri)})
        return self.runs[trial.trial_id]
