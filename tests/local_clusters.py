"""Real multi-node Rays started the way a cluster is, on this machine, and stopped without touching any other Ray.

`AutoscalingCluster`: Ray's autoscaler v2 (what `ray up` runs) with its fake node provider. The head is a real `ray start --head` with an autoscaling config; the autoscaler launches worker
nodes as real raylets on this machine when demand (or `request_resources`) asks for them.
`ray.cluster_utils.AutoscalingCluster` cannot be used as it is in Ray 2.60:

- it reads `fake_multi_node/example.yaml`, which the wheel lacks (the base config is here, and
  the provider is loaded by module path, so the autoscaler never opens that file either);
- without `provider.gcs_address` the fake provider starts nodes against port 6379, not the
  head's, and hangs after "Got 1 nodes to launch";
- its start() and shutdown() run `ray stop --force`, which ends every Ray on the machine; this
  one gives the head its own temp dir and free ports, and stops only its own processes.

`TokenCluster`: `ray start --head` and `ray start --address` with token authentication, as
cluster.yaml runs them (the head offers 0 CPUs), for the job API and the nightly script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# The fake provider names the head node with this id (ray.autoscaler._private.fake_multi_node.node_provider).
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


class AutoscalingCluster:
    """A 0-CPU head whose autoscaler may launch up to `max_workers` nodes of `worker_resources` each."""

    def __init__(self, worker_resources: dict[str, float], max_workers: int, idle_timeout_minutes: float = 0.2):
        import ray._private.services

        self.port = _free_port()
        self.address = f"{ray._private.services.get_node_ip_address()}:{self.port}"
        self.config = {
            "cluster_name": "pokegan-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
            # The fake provider calls its head's type "ray.head.default" whatever the config says.
            "idle_timeout_minutes": idle_timeout_minutes, "head_node_type": "ray.head.default",
            "provider": {"type": "external", "module": PROVIDER, "gcs_address": self.address,
                         "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "launch_multiple": True,
                         "head_node_id": FAKE_HEAD_NODE_ID},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "ray.worker.cpu": {"resources": dict(worker_resources), "node_config": {}, "min_workers": 0,
                           "max_workers": max_workers}},
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
            "rsync_filter": [], "file_mounts_sync_continuously": False, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": []}
        self.temp_dir = short_temp_dir("pas-")

    def client_env(self) -> dict[str, str]:
        """What a driver needs to join (this test cluster runs without token auth)."""
        return {**os.environ, "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}

    def start(self) -> None:
        config_file = os.path.join(self.temp_dir, "autoscaling.json")
        with open(config_file, "w") as handle:
            json.dump(self.config, handle)
        ports = ["dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port"]
        command = [RAY, "start", "--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                   f"--autoscaling-config={config_file}", "--num-cpus=0", "--num-gpus=0", "--disable-usage-stats",
                   *[f"--{name}={_free_port()}" for name in ports]]
        env = {**self.client_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "AUTOSCALER_METRIC_PORT": str(_free_port()), "RAY_enable_autoscaler_v2": "1",
               "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
        env.pop("RAY_ADDRESS")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            self.shutdown()
            raise RuntimeError(f"ray start failed:\n{(result.stdout + result.stderr)[-3000:]}")

    def autoscaler_log_tail(self, characters: int = 6000) -> str:
        """The end of the autoscaler's own log (monitor.log), for a test that waited for a node in vain."""
        path = os.path.join(self.temp_dir, "session_latest", "logs", "monitor.log")
        try:
            with open(path, errors="replace") as handle:
                return handle.read()[-characters:]
        except OSError as error:
            return f"(no autoscaler log: {error})"

    def worker_nodes(self) -> int:
        """Live worker nodes, counted by the raylets of this cluster (the head's is the first)."""
        return max(0, len([pid for pid in self._pids() if "raylet/raylet" in _cmdline(pid)]) - 1)

    def _pids(self) -> list[int]:
        return processes_under(self.temp_dir)

    def shutdown(self) -> list[int]:
        """Stop every process of this cluster; returns any that would not stop."""
        return stop_processes_under(self.temp_dir)


def processes_under(temp_dir: str) -> list[int]:
    """Every live process of the Ray whose temp dir this is: its command line or an open file names it.
    (Process groups would not do: Ray's agents leave them, and pids are reused here.)"""
    owned = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if temp_dir in _cmdline(int(entry)) or any(
                    os.readlink(f"/proc/{entry}/fd/{fd}").startswith(temp_dir + "/")
                    for fd in os.listdir(f"/proc/{entry}/fd")):
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[-1].split()[0] != "Z":
                        owned.append(int(entry))
        except OSError:
            continue
    return owned


def stop_processes_under(temp_dir: str) -> list[int]:
    """SIGTERM, then SIGKILL (Ray's GCS and monitor ignore SIGTERM for a while); returns leftovers."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in processes_under(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while processes_under(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting for processes to exit
    left = processes_under(temp_dir)
    if not left:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return left


def short_temp_dir(prefix: str) -> str:
    """A fresh folder for a Ray's temp dir; short, because Ray's Unix socket paths live under it."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace")


class TokenCluster:
    """A 0-CPU head and one 2-CPU worker node started with `ray start`, token authentication on.

    The token file comes from ops/cluster_token.sh; every process (head, worker, clients) finds it
    through RAY_AUTH_TOKEN_PATH, as the nodes of cluster.yaml find theirs in ~/.ray/auth_token.
    """

    def __init__(self, token_file: str, path_prefix: str):
        import ray._private.services

        self.token_file = token_file
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"{ray._private.services.get_node_ip_address()}:{self.port}"
        self.job_api = f"http://127.0.0.1:{self.dashboard_port}"
        self.temp_dir = short_temp_dir("tok-")
        # `ray` and `pokegan` for the nodes and for the jobs they run.
        self.path_prefix = path_prefix
        self._blocking: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        """A client's environment: the cluster's token, and RAY_ADDRESS for pokegan drivers."""
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_file,
               "PATH": f"{self.path_prefix}:{os.environ.get('PATH', '')}", **extra}
        env.pop("RAY_AUTH_TOKEN", None)
        return env

    def start(self) -> None:
        agent_ports = lambda: [f"--{name}={_free_port()}" for name in (  # noqa: E731 - fresh ports per node
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port")]
        self._start_node([RAY, "start", "--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                          f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                          f"--ray-client-server-port={_free_port()}", "--num-cpus=0", "--num-gpus=0",
                          "--disable-usage-stats", "--block", *agent_ports()])
        self._wait(lambda: self._job_api_answers(), "the head's job API")
        self._start_node([RAY, "start", f"--address={self.address}", "--num-cpus=2", "--num-gpus=0",
                          "--disable-usage-stats", "--block", *agent_ports()])

    def _start_node(self, command: list[str]) -> None:
        log = open(os.path.join(self.temp_dir, f"node-{len(self._blocking)}.log"), "w")
        self._blocking.append(subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def _job_api_answers(self) -> bool:
        result = subprocess.run([RAY, "job", "list", "--address", self.job_api], env=self.env(),
                                capture_output=True, text=True, timeout=60)
        return result.returncode == 0

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or any(node.poll() is not None for node in self._blocking):
                self.shutdown()
                raise RuntimeError(f"{what} did not come up; logs in {self.temp_dir}")
            time.sleep(1)  # polling a starting server

    def shutdown(self) -> list[int]:
        for node in self._blocking:
            node.terminate()
        for node in self._blocking:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
        return stop_processes_under(self.temp_dir)
