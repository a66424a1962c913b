"""`pokegan train` and `pokegan retrain` in MLflow: Ray Train V2's reports, forwarded to the driver (see
`pokegan_ray.tracking` for why the driver logs)."""

from __future__ import annotations

import queue as queue_module
import threading
from typing import TYPE_CHECKING, Any

from ray.train import UserCallback

from pokegan_ray.tracking import Tracking, config_params, public_uri

if TYPE_CHECKING:
    from pokegan_ray.tracking.runs import RunTracker
    from pokegan_ray.training.trainer import PreparedRun, TrainOutcome


# How often the driver's thread looks for the end of the run while no report comes.
POLL_S = 0.5


class ReportsToDriver(UserCallback):
    """Runs in Ray Train's controller: hands rank 0's report of every `ray.train.report` (and the path of
    the checkpoint that came with it) to the driver over a Ray queue, as Ray's TuneReportCallback hands them
    to Tune. It holds only the queue's handle; MLflow is neither imported nor reached here."""

    def __init__(self, reports):
        self.reports = reports

    def after_report(self, run_context, metrics, checkpoint):
        self.reports.put({**metrics[0], "checkpoint_path": checkpoint.path if checkpoint else None})


class TrainTracking:
    """The MLflow run of one `pokegan train` (or a retrain's candidate), used as a context manager around
    the training. `train()` calls `begin` once the run is set up: the MLflow run (the same one again when the
    run resumes) with its tags and resolved config, and a thread in this process that logs each report Ray
    Train hands over (`callbacks` go into the trainer's RunConfig); after `trainer.fit()` it calls
    `record_outcome`. Leaving the block ends the MLflow run (KILLED or FAILED on an exception). `begin` is where
    MLflow is first reached, so a run that never starts training leaves nothing there."""

    def __init__(self, tracking: Tracking, command: str, tags: dict[str, Any] | None = None):
        from pokegan_ray.tracking.runs import Guard

        self.tracking = tracking
        self.tags = {"command": command, **(tags or {})}
        self.guard = Guard(command)
        self.run: RunTracker | None = None
        self.status = "FINISHED"
        self.callbacks: list = []
        self._reports = None
        self._follower: threading.Thread | None = None
        self._finished = threading.Event()

    def __enter__(self) -> "TrainTracking":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._stop_following()
        if error is not None:
            self.status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        if self.run is not None:
            self.guard.call(self.run.end, self.status)

    @property
    def url(self) -> str | None:
        return self.run.url if self.run is not None and not self.guard.stopped else None

    def begin(self, run: "PreparedRun") -> None:
        from pokegan_ray.tracking.runs import RunTracker, experiment_id

        def begin() -> None:
            uri = public_uri(run.folder.uri)
            self.run = RunTracker(self.tracking, experiment_id(self.tracking), key={"run_uri": uri}, name=run.name,
                                  tags={**self.tags, "run_name": run.name})
            self.run.log_params(config_params(run.experiment.to_dict()))

        self.guard.call(begin)
        if self.run is not None and not self.guard.stopped:
            self._follow(run)

    def _follow(self, run: "PreparedRun") -> None:
        """Rank 0's reports, as they come: curves at step = images seen, and each new sample grid."""
        from ray.util.queue import Empty, Queue

        reports = Queue(actor_options={"num_cpus": 0})

        def follow() -> None:
            while not self.guard.stopped:
                try:
                    report = reports.get(timeout=POLL_S)
                except (Empty, queue_module.Empty):
                    if self._finished.is_set():
                        return
                    continue
                except Exception:  # noqa: BLE001 - the queue is gone: the run has ended
                    return
                self.guard.call(self._log_report, report, run)

        self._reports = reports
        self._follower = threading.Thread(target=follow, name="pokegan-mlflow", daemon=True)
        self._follower.start()
        self.callbacks = [ReportsToDriver(reports)]

    def _log_report(self, report: dict[str, Any], run: "PreparedRun") -> None:
        if self.run.log_report(report):
            self.run.log_new_grids(run.folder)

    def _stop_following(self) -> None:
        """Once the trainer is done: the reports still queued are logged, then the thread and queue end."""
        if self._follower is None:
            return
        self._finished.set()
        self._follower.join()
        self._follower = None
        try:
            self._reports.shutdown()
        except Exception:  # noqa: BLE001 - Ray is already gone (an interrupted run)
            pass

    def record_outcome(self, outcome: "TrainOutcome", run: "PreparedRun") -> None:
        """How the training ended, its best checkpoint and the run folder's last grid, plot and GIF."""
        self._stop_following()
        if self.run is None:
            return
        self.status = "FINISHED" if outcome.status == "completed" else "FAILED"
        checkpoint = outcome.best_checkpoint_uri or outcome.latest_checkpoint_uri

        def record() -> None:
            self.run.log_new_grids(run.folder)
            self.run.log_end_files(run.folder)
            self.run.set_tags({"status": outcome.status, "status_reason": outcome.message or None,
                               "best_checkpoint_uri": public_uri(checkpoint) if checkpoint else None})

        self.guard.call(record)

    def record_decision(self, decision: str, tags: dict[str, Any], metrics: dict[str, float]) -> None:
        """A retrain's decision (promoted, kept or failed) on its candidate's run."""
        if self.run is None:
            return
        if decision == "failed":
            self.status = "FAILED"
        step = max(self.run.last_step, 0)
        self.guard.call(self.run.set_tags, {"decision": decision, **tags})
        self.guard.call(self.run.log_metrics, metrics, step)
