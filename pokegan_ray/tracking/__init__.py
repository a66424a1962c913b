"""Experiment tracking in MLflow: `--mlflow URI` on `pokegan train`, `tune` and `retrain`.

What is logged, for each training run and for each search trial (one MLflow run each):

- params: a search trial's sampled dimensions (`loss.name`, ...) and then every setting of the
  resolved config, flattened (`train.batch_size`); a run's resolved config. URIs lose any
  `user:password@` and query string;
- metrics: everything the training loop reports that is a curve (losses, images/s, FID, KID,
  FID∞, their best so far), with MLflow's step = real images seen, the project's compute-fair
  clock (not Tune's `training_iteration`); scores only at the reports that evaluated them;
- artifacts: each sample grid as it is written (`samples/step-NNNNNNN.png`), and at the end the
  loss/FID plot and the progress GIF;
- tags: the run folder, the run's status and why, and `best_checkpoint_uri`; a retrain adds its
  decision (`decision`, `promoted`, `registry_version`) and both generators' FIDs from the same
  evaluation.

Where the logging runs, and why. Every MLflow call is made by the process the user started (the
search's or the run's driver), with that process's MLflow environment (MLFLOW_TRACKING_USERNAME /
_PASSWORD, MLFLOW_TRACKING_TOKEN, Databricks settings ...). Nothing MLflow-related runs on a Ray
worker: credentials never travel with Ray's tasks or into Ray's saved state, a cluster's nodes
need neither MLflow nor its credentials, and a tracking server that only the driver's machine can
reach works.

- `pokegan tune` (`tracking.tune.TrialLogger`): Ray Tune's own `MLflowLoggerCallback`, subclassed,
  in the search's RunConfig: Tune calls it on the driver for each trial's start, results and end.
  The subclass keeps Ray's experiment setup and trial lifecycle but logs by images seen, in one
  request per result, and adds the grids, the resolved config and the ledger's best checkpoint.
- `pokegan train` and `retrain` (`tracking.train`): a Ray Train V2 run has no Tune callbacks, and
  Ray's `setup_mlflow` logs from rank 0, a worker: that would need MLflow and the credentials on
  every node. Instead the driver logs. Ray Train calls a `UserCallback` in its controller after
  every report; it forwards rank 0's metrics over a Ray queue to a thread in the driver, the way
  Ray's own `TuneReportCallback` hands Train V2 reports to Tune.

The tracking URI itself must carry no credentials (it is stored with a search for `--resume` and
printed), so `user:password@` in it is refused. Logging that fails mid-run (MLflow has retried
already) stops with one warning; the training goes on.

Without `--mlflow` nothing here is imported and MLflow need not be installed
(`pip install "pokegan-ray[mlflow]"` brings the client).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from pokegan_ray import storage

INSTALL_HINT = 'pip install "pokegan-ray[mlflow]"'
# Experiment names when MLFLOW_EXPERIMENT_NAME does not name one (a search gets its own).
TRAIN_EXPERIMENT = "pokegan-train"
RETRAIN_EXPERIMENT = "pokegan-retrain"
SEARCH_EXPERIMENT_PREFIX = "pokegan-tune-"
# The reachability check fails fast: no retries, and a short wait for an answer.
CHECK_TIMEOUT_S = 10
# Variables whose values are secrets: never in a message of ours.
_SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN",
                     "DATABRICKS_CLIENT_SECRET", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class TrackingError(Exception):
    """`--mlflow` cannot work: MLflow missing, credentials in the URI, or the server unreachable."""


@dataclass(frozen=True)
class Tracking:
    """Where runs are logged: an MLflow tracking URI (without credentials) and an experiment's name."""

    uri: str
    experiment: str

    def to_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "experiment": self.experiment}


def check_tracking(uri: str, experiment: str, reach: bool = True) -> Tracking:
    """Everything about `--mlflow URI` that can fail before Ray starts (TrackingError, one line): MLflow
    installed, no credentials in the URI, the tracking server answering (with MLflow's own credentials from
    the environment), and the experiment usable. Makes no change on the server. reach=False: the first two."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise TrackingError(f"--mlflow needs the MLflow client, which is not installed: {INSTALL_HINT}") from None
    try:
        parts = urlsplit(uri)
        with_credentials = bool(parts.username or parts.password)
    except ValueError:
        raise TrackingError(f"--mlflow {uri!r} is not a URI; e.g. http://127.0.0.1:5000") from None
    if with_credentials:
        # The URI is stored with a search and printed: its credentials would be too. (Not echoed here either.)
        raise TrackingError("--mlflow must not carry credentials (user:password@): set MLFLOW_TRACKING_USERNAME "
                            "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead")
    if not reach:
        return Tracking(uri=uri, experiment=experiment)
    with _failing_fast():
        try:
            found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
        except Exception as error:  # MLflow raises its own and requests' errors, and ValueError for a bad URI
            raise TrackingError(_unreachable(uri, error)) from None
    if found is not None and found.lifecycle_stage == "deleted":
        raise TrackingError(f"the MLflow experiment {experiment!r} at {uri} is deleted: restore it (mlflow "
                            "experiments restore) or name another with MLFLOW_EXPERIMENT_NAME")
    return Tracking(uri=uri, experiment=experiment)


@contextlib.contextmanager
def _failing_fast() -> Iterator[None]:
    """MLflow's HTTP settings for one quick question: no retries (its default backs off for minutes)."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S)}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _unreachable(uri: str, error: BaseException) -> str:
    text = redact(str(error))
    status = re.search(r"error code (\d{3})", text)
    code = status.group(1) if status else None
    refused = getattr(error, "error_code", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    if code in ("401", "403") or refused:
        code = code or ("401" if error.error_code == "UNAUTHENTICATED" else "403")
        return (f"the MLflow tracking server at {uri} refused the request (HTTP {code}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for it")
    if urlsplit(uri).scheme in ("http", "https"):
        return f"cannot reach the MLflow tracking server at {uri} ({_reason(text, code)}): start it or fix --mlflow"
    return f"cannot use the MLflow tracking URI {uri} ({_reason(text, code)}): fix --mlflow"


def failure_reason(error: BaseException) -> str:
    """A few words for why an MLflow call failed, without secrets."""
    text = redact(str(error))
    status = re.search(r"error code (\d{3})", text)
    return _reason(text, status.group(1) if status else None)


def _reason(text: str, code: str | None) -> str:
    """A few words for why a request failed, from the error MLflow (or requests under it) raised."""
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno_text:
        return errno_text.group(1).strip().lower()
    if re.search(r"timed? ?out", text, re.IGNORECASE):
        return f"no answer within {CHECK_TIMEOUT_S} s"
    if code in ("404", "405"):
        return f"HTTP {code}: is it an MLflow tracking server?"
    if code:
        return f"HTTP {code}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "no reason given")[:200]


def redact(text: str) -> str:
    """Any secret value from the environment (MLflow's or AWS's) removed from a message or a logged value."""
    return storage.redact(text, _SECRET_VARIABLES)


def public_uri(uri: str) -> str:
    """A URI as it may be logged: without `user:password@` and without a query string (which can carry
    tokens); a plain path stays as it is."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return redact(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return redact(urlunsplit((parts.scheme, host, parts.path, "", "")))


def param_value(value: Any) -> str:
    """A setting as an MLflow param: lists as JSON, URIs without credentials, at most MLflow's 6000 characters."""
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value))
    else:
        text = str(value)
    if "://" in text or "@" in text:
        text = public_uri(text)
    return text[:6000]


def config_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `{"train": {"batch_size": 8}}` -> `{"train.batch_size": "8"}`."""
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.update(config_params(value, f"{name}."))
        else:
            params[name] = param_value(value)
    return params


def train_tracking(tracking: Tracking | None, command: str, tags: dict[str, Any] | None = None):
    """The MLflow run of a `pokegan train` or a retrain's candidate (tracking.train.TrainTracking), a context
    manager that ends it; a no-op one without `--mlflow` (MLflow is then not imported)."""
    if tracking is None:
        return contextlib.nullcontext()
    from pokegan_ray.tracking.train import TrainTracking

    return TrainTracking(tracking, command, tags)


def search_experiment(search_name: str) -> str:
    return SEARCH_EXPERIMENT_PREFIX + search_name
