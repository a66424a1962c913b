"""Helpers for tests that run `pokegan` as its own driver process joined to a multi-node Ray (RAY_ADDRESS)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from image_files import write_two_type_source

TINY = {
    "model.generator_channels": 8, "model.discriminator_channels": 8, "model.latent_size": 16,
    "train.batch_size": 8, "train.eval_images": 8, "train.mixed_precision": False, "scale.workers": 1,
    "scale.cpus_per_worker": 0.5, "scale.threads_per_worker": 1,
}


# What Ray's, Ray Data's, Ray Train's, Tune's and Optuna's own logging prints at INFO (and the GCS's errors about
# actors it could not kill, whose processes had exited): none of it may reach a pokegan command's output unless
# -v (issue 14). Ray's driver-side records and Optuna's carry their level; Ray's libraries in worker processes
# print bare messages, named here.
LIBRARY_INFO = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+INFO \S+:\d+ -- "  # Ray's format, at INFO
    r"|\[I \d{4}-\d\d-\d\d "  # Optuna's
    r"|Starting execution of Dataset|Execution plan of Dataset|execution finished in|Progress bars disabled"
    r"|Progress will be logged|Requesting resources|training worker group|Setting up process group"
    r"|A new study created|Failed to kill actor|constructor arguments in the object store"
    r"|Configuration for experiment|View detailed results here|tensorboard --logdir|may be a performance bottleneck"
    r"|RayDeprecationWarning")


def library_noise(output: str) -> list[str]:
    """The lines of a command's output that are Ray's or Optuna's own chatter (see LIBRARY_INFO)."""
    return [line for line in output.splitlines() if LIBRARY_INFO.search(line)]


def tiny_settings(**extra) -> list[str]:
    arguments = []
    for key, value in {**TINY, **extra}.items():
        arguments += ["--set", f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    return arguments


def tiny_space(path: Path, samples: int, **train) -> Path:
    sections: dict = {}
    for key, value in TINY.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    sections["train"].update(train)
    path.write_text(yaml.safe_dump({
        "description": "cluster test", "base": sections,
        "dimensions": {"loss.generator_learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-4}},
        "search": {"samples": samples, "scheduler": "none", "seed": 0}}))
    return path


class Driver:
    """A `pokegan` command running as its own driver process; its output is read line by line."""

    def __init__(self, arguments: list[str], env: dict[str, str]):
        self.process = subprocess.Popen([sys.executable, "-m", "pokegan_ray.cli", *arguments], env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line containing `text` (fails when the process ends or the time is up first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {timeout:.0f} s; output so far:\n{self.output[-4000:]}")
            if line is None:
                pytest.fail(f"the driver ended (status {self.process.wait()}) before a line with {text!r}:\n"
                            f"{self.output[-4000:]}")
            self.lines.append(line)
            if text in line:
                return line

    def finish(self, timeout: float) -> int:
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the driver did not end within {timeout:.0f} s:\n{self.output[-4000:]}")
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return status

    @property
    def output(self) -> str:
        while True:  # whatever the process printed that no wait_for has read yet
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def prepare_in_s3(env: dict[str, str], s3_endpoint: str, tmp_path_factory) -> str:
    """`pokegan prepare` of the two-type set into a new bucket, run on the cluster `env` joins. The source is a
    local folder that every node sees because they all run on this machine (--shared-filesystem)."""
    bucket = f"pokegan-data-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    source = tmp_path_factory.mktemp("cluster-source")
    write_two_type_source(source, labelled=True)
    prepare = Driver(["prepare", "--source", str(source), "--dest", f"s3://{bucket}/data", "--resolutions", "64",
                      "--augment", "2", "--shared-filesystem"], env)
    assert prepare.finish(timeout=300) == 0, prepare.output[-3000:]
    # Its own progress off a terminal, a plain line per quarter of each stage; none of Ray Data's logging.
    assert not library_noise(prepare.output), library_noise(prepare.output)
    assert "[pokegan] scan: 8/8 files (100%)" in prepare.output, prepare.output[-3000:]
    return f"s3://{bucket}/data"
