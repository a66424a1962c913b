"""Mistakes a new user makes, each answered with one clear line and exit status 2, before Ray starts.

The commands run as a user runs them (`python -m pokegan_ray.cli` in a fresh process) with Ray's
temp dir (RAY_TMPDIR) inside the test's folder: a command that started Ray before it found the
mistake leaves its session there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(arguments: list[str], tmp_path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray-tmp"), "RAY_ADDRESS": "", **env_vars}
    return subprocess.run([sys.executable, "-m", "pokegan_ray.cli", *arguments], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)


MISTAKES = {
    "prepare-missing-source": (["prepare", "--source", "does-not-exist", "--dest", "{tmp}/new-data"],
                               "source folder {tmp}/does-not-exist does not exist"),
    "train-bad-value": (["train", "--set", "train.steps=many", "--storage", "{tmp}/new-runs"], "train.steps"),
    "train-unknown-key": (["train", "--set", "train.stepz=4", "--storage", "{tmp}/new-runs"], "stepz"),
    "train-scalar-section": (["train", "--config", "{tmp}/scalar.yaml", "--storage", "{tmp}/new-runs"],
                             "section 'train' must be a mapping"),
    "train-missing-data": (["train", "--data", "{tmp}/no-data", "--storage", "{tmp}/new-runs"], "{tmp}/no-data"),
    "train-storage-scheme": (["train", "--storage", "ftp://host/runs"], "unsupported URI scheme 'ftp'"),
    "train-storage-file": (["train", "--storage", "{tmp}/a-file/runs"], "a-file is a file, not a folder"),
    "tune-resume-unknown": (["tune", "--resume", "--name", "nope", "--storage", "{tmp}/new-runs"],
                            "no search 'nope'"),
    "retrain-registry-file": (["retrain", "--registry", "{tmp}/a-file"], "is a file; a registry is a folder"),
    # The FID weights are checked at start-up, not in a worker after minutes of training.
    "tune-missing-fid-weights": (["tune", "--space", "{spaces}/quick.yaml", "--storage", "{tmp}/new-runs"],
                                 "the FID Inception weights file {tmp}/no-weights.pt does not exist"),
    # --mlflow: an MLflow tracking server that does not answer is found before any training.
    "train-mlflow-unreachable": (["train", "--mlflow", "http://127.0.0.1:1", "--storage", "{tmp}/new-runs"],
                                 "cannot reach the MLflow tracking server at http://127.0.0.1:1 (connection refused): "
                                 "start it or fix --mlflow"),
    "tune-mlflow-unreachable": (["tune", "--space", "{spaces}/quick.yaml", "--mlflow", "http://127.0.0.1:1",
                                 "--storage", "{tmp}/new-runs"], "cannot reach the MLflow tracking server at "
                                                                 "http://127.0.0.1:1 (connection refused)"),
    # Credentials belong in MLflow's variables: a URI carrying them is refused (and not echoed).
    "retrain-mlflow-credentials": (["retrain", "--registry", "{tmp}/new-runs", "--mlflow",
                                    "http://pokegan:hunter2@127.0.0.1:1"],
                                   "--mlflow must not carry credentials (user:password@): set "
                                   "MLFLOW_TRACKING_USERNAME"),
}
SPACES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search_spaces")


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_is_one_line_and_exit_2_before_ray_starts_and_leaves_nothing_behind(mistake, tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "scalar.yaml").write_text("train: 5\n")
    arguments, message = MISTAKES[mistake]
    result = run_cli([argument.replace("{tmp}", str(tmp_path)).replace("{spaces}", SPACES) for argument in arguments],
                     tmp_path, POKEGAN_INCEPTION_WEIGHTS=str(tmp_path / "no-weights.pt") if "fid" in mistake else "")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("pokegan "), result.stderr[-2000:]
    assert message.replace("{tmp}", str(tmp_path)) in errors[0]
    assert "hunter2" not in result.stderr + result.stdout  # a password given by mistake is never echoed
    assert not (tmp_path / "ray-tmp").exists(), "Ray was started before the mistake was found"
    assert not (tmp_path / "new-runs").exists() and not (tmp_path / "new-data").exists()


def test_a_driver_on_another_python_than_the_cluster_is_told_to_submit_a_job():
    """Ray refuses a driver whose Python differs from the cluster's (3.13 here, a 3.11 cluster image): the
    user is told what differs and that `ray job submit` works from any client Python (checked by hand with a
    3.13 client against a 3.11 head). The message is Ray's own, from the check `ray.init` runs."""
    from ray._private.utils import check_version_info

    from pokegan_ray.cli import version_mismatch

    with pytest.raises(RuntimeError) as refused:
        check_version_info({"ray_version": "2.60.0", "python_version": "3.9.18"}, "node 10.0.0.1",
                           raise_on_mismatch=True, python_version_match_level="minor")
    advice = version_mismatch(str(refused.value))
    own = "%d.%d.%d" % sys.version_info[:3]
    assert advice.startswith(f"it runs Ray 2.60.0 on Python 3.9.18, this process Ray 2.60.0 on Python {own}")
    assert "ray job submit" in advice and "a Python 3.9 environment" in advice
    assert version_mismatch("Failed to connect to GCS at 10.0.0.1:6379") is None
