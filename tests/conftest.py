"""Shared fixtures: a real S3 endpoint (moto server on loopback) and a real local Ray cluster.

The S3 settings go into os.environ before Ray starts, so Ray's worker processes
inherit them exactly as they would on a machine configured for S3.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest

from pokegan_ray.cluster import ray_init_arguments

# moto's server logs every request through werkzeug; a failing test's log should show ours.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

TEST_ACCESS_KEY = "testing-access-key"
# A value that must never show up in any output, manifest or checkpoint.
TEST_SECRET_KEY = "pokegan-test-secret-d6f1c8"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on a free loopback port for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3",
                                            "AWS_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID=TEST_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET_KEY,
                      AWS_ENDPOINT_URL_S3=endpoint, AWS_REGION="us-east-1",
                      # never let the SDK probe the EC2 metadata address for credentials
                      AWS_EC2_METADATA_DISABLED="true")
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket per test."""
    name = f"pokegan-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under a prefix, as S3 itself lists them."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """A real local Ray cluster with 2 CPUs, started after the S3 settings are in the environment."""
    import ray

    # Ray workers unpickle functions defined in test modules, so they need this folder on their path.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    python_path = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    # As `pokegan` starts it: with the dashboard (it cleans up after stopped trials and serves the state API)
    # at an address every worker knows, even while other Ray instances run on this machine.
    ray.init(num_cpus=2, logging_level="WARNING", configure_logging=False,
             **ray_init_arguments(None, {"PYTHONPATH": python_path}))
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def strict_s3_endpoint():
    """A second moto server that enforces IAM auth, so unknown credentials are refused (403)."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)  # waiting for a server to listen, not for a result
    else:
        process.kill()
        pytest.fail("the auth-enforcing moto server did not start")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


class MlflowServer:
    """A real MLflow tracking server (`mlflow server`, SQLite backend, artifacts served by it) on a free loopback
    port. It starts at once and boots while other fixtures set up; `uri()` waits until it answers /health."""

    def __init__(self, folder):
        self.port = _free_port()
        self.log_path = folder / "server.log"
        # No background job runner (MLflow's GenAI jobs): nothing here uses it.
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
                 "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: see stop
        self.healthy = False

    def uri(self, timeout_s: float = 180.0) -> str:
        address = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout_s
        while not self.healthy:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the MLflow server did not come up:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=2) as answer:
                    self.healthy = answer.status == 200
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)  # polling a starting server, not waiting for a result
        return address

    def stop(self) -> None:
        # `mlflow server` runs uvicorn as a child process: end the group this fixture started.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
