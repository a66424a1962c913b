"""One MLflow run, logged from the driver: its params, its curves over images seen, its grids and tags."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from pokegan_ray.report import SAMPLES_FOLDER, grid_files
from pokegan_ray.storage import Location, StorageError
from pokegan_ray.tracking import Tracking, failure_reason, redact

log = logging.getLogger(__name__)

# What a run folder holds at its end that a person wants next to the curves.
END_FILES = ("history.png", "progress.gif")
# Report values that are bookkeeping, not curves (the step is MLflow's own: images seen).
NOT_CURVES = frozenset({
    "images_seen", "evaluated", "replayed", "replayed_checkpoint_uri", "checkpoint_fid", "checkpoint_path",
    "first_step_at", "resumed_from_step", "resumed_generator_checksum", "generator_checksum",
    "discriminator_checksum", "handoffs"})
# An evaluation's outputs: in a report that evaluated nothing they are the last ones, carried over.
SCORE_PREFIXES = ("fid", "kid", "best_")
TAG_LENGTH = 8000  # MLflow's limit on a tag's value


def curves(report: dict[str, Any]) -> dict[str, float]:
    """The values of a training report that MLflow should chart (finite numbers only)."""
    evaluated = bool(report.get("evaluated", "fid" in report))
    values = {}
    for key, value in report.items():
        if key in NOT_CURVES or key.startswith("last_") or isinstance(value, bool):
            continue
        if not evaluated and key.startswith(SCORE_PREFIXES):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            values[key] = float(value)
    return values


def tag_values(tags: dict[str, Any]) -> dict[str, str]:
    """Tags as MLflow keeps them: strings without secrets, at most its length; None values left out."""
    return {key: redact(str(value))[:TAG_LENGTH] for key, value in tags.items() if value is not None}


class Guard:
    """Stops logging at the first MLflow failure (MLflow has retried already): one warning, and the training
    or search goes on without it."""

    def __init__(self, what: str):
        self.what = what
        self.stopped = False

    def call(self, function: Callable[..., Any], *args, **kwargs) -> Any:
        if self.stopped:
            return None
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - tracking must never end a training
            self.stopped = True
            log.warning("MLflow logging stopped (%s); the %s goes on without it", failure_reason(error), self.what)
            return None


class RunTracker:
    """One MLflow run in `tracking`'s experiment, found again by its `key` tags when the work it tracks
    continues (a resumed run or search), else created."""

    def __init__(self, tracking: Tracking, experiment_id: str, *, key: dict[str, str], name: str,
                 tags: dict[str, Any]):
        self.tracking = tracking
        self.client = MlflowClient(tracking_uri=tracking.uri)
        self.experiment_id = experiment_id
        self.last_step = -1  # MLflow steps are images seen; a repeated report (a restart) is not logged again
        self.grids: set[str] = set()
        self.params: dict[str, str] = {}
        existing = self._find(key)
        if existing is None:
            self.run_id = self.client.create_run(experiment_id, run_name=name,
                                                 tags={**tag_values(tags), **key}).info.run_id
            return
        self.run_id = existing.info.run_id
        self.params = dict(existing.data.params)
        self.last_step = max((metric.step for metric in self.client.get_metric_history(self.run_id, "step")),
                             default=-1)
        self.grids = {os.path.basename(info.path) for info in self.client.list_artifacts(self.run_id, SAMPLES_FOLDER)}
        if existing.info.status != "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")
        self.set_tags(tags)

    def _find(self, key: dict[str, str]):
        if any("'" in value for value in key.values()):
            return None  # not expressible in a filter: a new run
        query = " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in key.items())
        runs = self.client.search_runs([self.experiment_id], query, max_results=1)
        return runs[0] if runs else None

    @property
    def url(self) -> str:
        """Where a person sees the run: its page for a tracking server, else its id and store."""
        if self.tracking.uri.startswith(("http://", "https://")):
            return f"{self.tracking.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"run {self.run_id} in {self.tracking.uri}"

    def log_params(self, params: dict[str, str]) -> None:
        """Params not logged yet (MLflow refuses to change one: a PBT trial's later values are metrics)."""
        new = {key: value for key, value in params.items() if key not in self.params}
        if new:
            self.client.log_batch(self.run_id, params=[Param(key, value) for key, value in new.items()])
            self.params.update(new)

    def log_report(self, report: dict[str, Any]) -> bool:
        """A training report's curves at step = its images seen; False for one at or before a step already
        logged (a restarted run repeats the steps since its checkpoint)."""
        step = int(report["images_seen"])
        if step <= self.last_step:
            return False
        self.log_metrics(curves(report), step)
        self.last_step = step
        return True

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        if values:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def log_new_grids(self, run_folder: Location) -> None:
        """The sample grids in the run folder that are not in the run yet (`samples/step-NNNNNNN.png`)."""
        new = [grid for _, grid in grid_files(run_folder) if os.path.basename(grid.path) not in self.grids]
        if not new:
            return
        with tempfile.TemporaryDirectory(prefix="pokegan-mlflow-") as folder:
            for grid in new:
                with open(os.path.join(folder, os.path.basename(grid.path)), "wb") as handle:
                    handle.write(grid.read_bytes())
            self.client.log_artifacts(self.run_id, folder, SAMPLES_FOLDER)
        self.grids.update(os.path.basename(grid.path) for grid in new)

    def log_end_files(self, run_folder: Location) -> None:
        """The loss/FID plot and the progress GIF, where the run wrote them."""
        with tempfile.TemporaryDirectory(prefix="pokegan-mlflow-") as folder:
            for name in END_FILES:
                try:
                    data = run_folder.join(name).read_bytes()
                except StorageError:
                    continue
                path = os.path.join(folder, name)
                with open(path, "wb") as handle:
                    handle.write(data)
                self.client.log_artifact(self.run_id, path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        values = tag_values(tags)
        if values:
            self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in values.items()])

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


def experiment_id(tracking: Tracking) -> str:
    """The experiment's id, created when it does not exist yet."""
    client = MlflowClient(tracking_uri=tracking.uri)
    found = client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(tracking.experiment)
    except Exception:  # another process created it just now
        found = client.get_experiment_by_name(tracking.experiment)
        if found is None:
            raise
        return found.experiment_id
