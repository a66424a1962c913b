"""The README's cluster commands against a real Ray with token authentication (`ray start`, as cluster.yaml's
nodes run it: a 0-CPU head and a worker): `ray job submit`, the nightly retrain script and its cron line.

The cluster's token comes from ops/cluster_token.sh; data, runs and the registry live in the moto S3 server.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from drivers import prepare_in_s3
from local_clusters import RAY, TokenCluster
from pokegan_ray.storage import location

ROOT = Path(__file__).resolve().parent.parent
RETRAIN_SCRIPT = ROOT / "ops" / "nightly_retrain.sh"
CRON_FILE = ROOT / "ops" / "nightly-retrain.cron"
VENV_BIN = os.path.dirname(sys.executable)
LOG_LINE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
TINY = ["--set", "model.generator_channels=8", "--set", "model.discriminator_channels=8",
        "--set", "model.latent_size=16", "--set", "train.steps=4", "--set", "train.batch_size=8",
        "--set", "train.eval_every=4", "--set", "train.eval_images=8", "--set", "train.report_every=2",
        "--set", "train.sample_every=4", "--set", "train.checkpoint_every=4", "--set", "train.mixed_precision=false",
        "--set", "scale.workers=1", "--set", "scale.threads_per_worker=1"]
needs_flock = pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")


@pytest.fixture(scope="module")
def token_cluster(s3_endpoint, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "pokegan-cluster-token"
    subprocess.run([str(ROOT / "ops" / "cluster_token.sh"), str(token_file)], check=True, capture_output=True)
    cluster = TokenCluster(str(token_file), VENV_BIN)
    cluster.start()
    yield cluster
    assert cluster.shutdown() == []


@pytest.fixture(scope="module")
def s3_data(token_cluster, s3_endpoint, tmp_path_factory) -> str:
    """Prepared by a pokegan driver that joins the cluster through RAY_ADDRESS with the token."""
    return prepare_in_s3(token_cluster.env(RAY_ADDRESS=token_cluster.address), s3_endpoint, tmp_path_factory)


def token_of(cluster: TokenCluster) -> str:
    return Path(cluster.token_file).read_text().strip()


def run_retrain_script(cluster: TokenCluster, log_dir: Path, *arguments: str, env: dict | None = None):
    env = env or cluster.env(RAY_API_SERVER_ADDRESS=cluster.job_api, POKEGAN_LOG_DIR=str(log_dir))
    return subprocess.run([str(RETRAIN_SCRIPT), *arguments], env=env, capture_output=True, text=True, timeout=600)


def submitted_jobs(cluster: TokenCluster) -> list[str]:
    """The submission ids the cluster's job API knows."""
    result = subprocess.run([RAY, "job", "list", "--address", cluster.job_api], env=cluster.env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return re.findall(r"submission_id='([^']+)'", result.stdout)


def test_the_job_api_refuses_callers_without_the_cluster_token(token_cluster):
    for env in (token_cluster.env(RAY_AUTH_TOKEN="0" * 64, RAY_AUTH_TOKEN_PATH=""),  # a wrong token
                {key: value for key, value in token_cluster.env().items() if not key.startswith("RAY_AUTH")}):
        result = subprocess.run([RAY, "job", "list", "--address", token_cluster.job_api], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert re.search(r"(?i)401|unauthori[sz]ed|authentication", result.stdout + result.stderr)


def test_ray_job_submit_runs_pokegan_train_with_the_token(token_cluster, s3_data, s3_bucket):
    storage = f"s3://{s3_bucket}/runs"
    result = subprocess.run([RAY, "job", "submit", "--address", token_cluster.job_api, "--working-dir", str(ROOT),
                             "--", "pokegan", "train", "--data", s3_data, "--storage", storage, "--name", "via-job",
                             *TINY], env=token_cluster.env(), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "run completed" in output and f"run folder:  {storage}/via-job" in output
    run = location(f"{storage}/via-job")  # STORAGE/NAME/, as the README says
    assert json.loads(run.join("status.json").read_bytes())["status"] == "completed"
    assert run.join("config.yaml").exists() and any(info.path.endswith(".png")
                                                    for info in run.join("samples").list_files())
    assert token_of(token_cluster) not in output + run.join("config.yaml").read_bytes().decode()


@needs_flock
def test_the_nightly_script_submits_a_retrain_that_promotes_its_first_model(token_cluster, s3_data, s3_bucket,
                                                                          tmp_path):
    registry = f"s3://{s3_bucket}/registry"
    result = run_retrain_script(token_cluster, tmp_path / "logs", "--registry", registry, "--data", s3_data, *TINY)
    log = (tmp_path / "logs" / "nightly-retrain.log").read_text()
    assert result.returncode == 0, log[-4000:]
    assert re.search(LOG_LINE + rf"submitting nightly-retrain-\d{{8}}-\d{{6}} to {re.escape(token_cluster.job_api)}: "
                     rf"pokegan retrain --registry {re.escape(registry)}", log, re.MULTILINE)
    assert re.search(r"retrain \S+: promoted v0001", log)
    assert re.search(LOG_LINE + r"finished nightly-retrain-\S+: exit status 0$", log, re.MULTILINE)
    assert json.loads(location(f"{registry}/models/pokegan/index.json").read_bytes())["champion"] == 1
    assert token_of(token_cluster) not in log


@needs_flock
def test_a_failed_retrain_job_is_passed_on_with_its_arguments_intact(token_cluster, tmp_path):
    marker = tmp_path / "injected"
    awkward = f"s3://pokegan-no-such-bucket-{uuid.uuid4().hex[:6]}/registry with space;$(touch {marker})"
    result = run_retrain_script(token_cluster, tmp_path / "logs", f"--registry={awkward}", "--name", "nightly")
    log = (tmp_path / "logs" / "nightly-retrain.log").read_text()
    assert result.returncode == 1, log[-4000:]
    (submission,) = [line for line in log.splitlines() if " submitting " in line]
    assert shlex.split(submission.split(": ", 1)[1]) == ["pokegan", "retrain", f"--registry={awkward}",
                                                        "--name", "nightly"]
    assert "pokegan retrain: error:" in log and "registry with space;$(touch" in log  # one argument, unexpanded
    assert re.search(LOG_LINE + r"finished nightly-retrain-\S+: exit status 1$", log, re.MULTILINE)
    assert not marker.exists()


@needs_flock
def test_the_cron_line_itself_submits_the_retrain_to_the_cluster(token_cluster, tmp_path):
    """The exact command cron runs on the head, in cron's environment (the file's settings, HOME, and the
    node's token), with this checkout standing in for ~/pokegan_ray and this venv for the image's Python."""
    settings = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", CRON_FILE.read_text(), re.MULTILINE))
    (job,) = [line for line in CRON_FILE.read_text().splitlines()
              if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    command = job.split(None, 5)[5].replace("/home/ray/pokegan_ray", shlex.quote(str(ROOT)))
    env = {**settings, "PATH": settings["PATH"].replace("/home/ray/anaconda3/bin", VENV_BIN),
           "HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": token_cluster.token_file,
           "RAY_API_SERVER_ADDRESS": token_cluster.job_api, "POKEGAN_LOG_DIR": str(tmp_path / "logs")}
    result = subprocess.run([settings["SHELL"], "-c", command], env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "logs" / "nightly-retrain.log").read_text()
    # The cron file's bucket is a placeholder (EDIT), so the retrain itself stops at its registry; what counts
    # here is that the job was accepted with the token and ran.
    assert result.returncode == 1, log[-3000:]
    assert "pokegan retrain --registry s3://YOUR-BUCKET/pokegan/registry" in log
    assert "pokegan retrain: error:" in log and "YOUR-BUCKET" in log.split("submitting", 1)[1]


def test_the_retrain_script_refuses_to_submit_without_a_registry(token_cluster, tmp_path):
    before = submitted_jobs(token_cluster)
    assert before, "the earlier tests' jobs are listed"
    result = run_retrain_script(token_cluster, tmp_path / "logs", "--data", "s3://pokemon/data")
    assert result.returncode == 2
    assert "no --registry" in (tmp_path / "logs" / "nightly-retrain.log").read_text()
    assert submitted_jobs(token_cluster) == before


@needs_flock
def test_the_retrain_script_skips_a_night_while_the_previous_run_holds_the_lock(token_cluster, tmp_path):
    before = submitted_jobs(token_cluster)
    (tmp_path / "logs").mkdir()
    with open(tmp_path / "logs" / "nightly-retrain.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_retrain_script(token_cluster, tmp_path / "logs", "--registry", "s3://pokemon/registry")
    assert result.returncode == 75
    assert "previous nightly retrain is still running" in (tmp_path / "logs" / "nightly-retrain.log").read_text()
    assert submitted_jobs(token_cluster) == before
