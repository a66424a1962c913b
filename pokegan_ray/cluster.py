"""The Ray cluster a job runs on: what it holds now, what it could ever hold, and waiting for it.

pokegan meets three kinds of cluster:

- a local Ray that pokegan started itself (no RAY_ADDRESS): one node that cannot grow, so a
  job that does not fit fails at once;
- a cluster joined through RAY_ADDRESS that has an autoscaler (`ray up cluster.yaml`): its
  head offers no CPUs and it may have no worker at all until a job asks, so a job that does
  not fit *now* asks the autoscaler for nodes and waits; it fails at once only when it is
  larger than anything the autoscaler may launch (node types x `max_workers`);
- a cluster joined through RAY_ADDRESS without an autoscaler (nodes started by hand, Ray's
  test cluster): nodes may still join, so a job waits for them.

A wait ends with a clear error after `ClusterOptions.wait_timeout_s`. The same module refuses
local paths that the other nodes of a multi-node cluster cannot see.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from pokegan_ray import ray_compat
from pokegan_ray.defaults import DEFAULT_WAIT_TIMEOUT_S

log = logging.getLogger(__name__)

# How often a waiting job looks at the cluster again, and how often it says it still waits.
POLL_INTERVAL_S = 2.0
REMIND_INTERVAL_S = 60.0
# Enough copies of each autoscaler node type to tell "fits" from "never fits" for any job pokegan runs.
MAX_COPIES_PER_NODE_TYPE = 64

Bundle = dict[str, float]


class ClusterError(RuntimeError):
    """The job cannot run on this cluster (now or ever); the message says what to change."""


@dataclass(frozen=True)
class ClusterOptions:
    """How pokegan treats the Ray cluster under it. The CLI fills these in; plain values only."""

    # True when pokegan started this Ray itself (no RAY_ADDRESS): it is this machine and cannot grow.
    pokegan_started: bool = True
    # How long a job waits for nodes (a scale-up, a node that rejoins) before it fails.
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    # The user says local paths are on a file system every node mounts (NFS, EFS, Lustre ...).
    shared_filesystem: bool = False

    def __post_init__(self) -> None:
        if not self.wait_timeout_s > 0:
            raise ValueError(f"the cluster wait timeout must be positive, got {self.wait_timeout_s:g} s")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Capacity:
    """A snapshot of the cluster: its live nodes and, when an autoscaler runs, what it may add."""

    nodes: list[Bundle]  # total resources of each live node
    # The autoscaler's node types, where Ray publishes them (None: unknown; Ray 2.60's autoscaler does not).
    node_types: list[ray_compat.NodeType] | None = None
    launchable: list[Bundle] = field(default_factory=list)  # every node the autoscaler may still launch
    autoscaler: ray_compat.AutoscalerReport = ray_compat.AutoscalerReport(False, [])

    @property
    def has_autoscaler(self) -> bool:
        return self.node_types is not None or self.autoscaler.reporting

    @property
    def can_grow(self) -> bool:
        return bool(self.launchable) or self.autoscaler.reporting

    @property
    def single_node(self) -> bool:
        return len(self.nodes) <= 1 and not self.can_grow

    def total(self) -> Bundle:
        return add_up(self.nodes)

    def ceiling(self) -> Bundle:
        """The most the autoscaler could ever offer (live nodes plus every node it may launch)."""
        return add_up(self.nodes + self.launchable)


def read_capacity() -> Capacity:
    """The cluster as Ray sees it now (needs `ray.init`)."""
    import ray

    nodes = [{key: float(value) for key, value in node["Resources"].items() if _is_plain_resource(key)}
             for node in ray.nodes() if node.get("Alive")]
    node_types = ray_compat.autoscaler_node_types()
    launchable = []
    for node_type in node_types or []:
        copies = MAX_COPIES_PER_NODE_TYPE if node_type.max_count < 0 else min(node_type.max_count,
                                                                                MAX_COPIES_PER_NODE_TYPE)
        launchable += [dict(node_type.resources) for _ in range(copies)]
    return Capacity(nodes=nodes, node_types=node_types, launchable=launchable,
                    autoscaler=ray_compat.autoscaler_report())


def _is_plain_resource(key: str) -> bool:
    # Ray also lists one `node:<ip>` marker per node, bundle-internal names and memory; jobs here ask for CPU/GPU.
    return key in ("CPU", "GPU")


def add_up(bundles: list[Bundle]) -> Bundle:
    total: Bundle = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def fits(bundles: list[Bundle], nodes: list[Bundle]) -> bool:
    """Whether every bundle can be placed on some node at once (first fit, largest bundles first).

    Ray places each bundle of a placement group on one node, so 2 x 0.5 CPU fits two 0.5-CPU
    nodes but 1 x 1 CPU does not. First fit decreasing is exact for the few bundles of one job.
    """
    free = [dict(node) for node in nodes]
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0.0), -b.get("CPU", 0.0))):
        for node in free:
            if all(node.get(key, 0.0) + 1e-9 >= amount for key, amount in bundle.items()):
                for key, amount in bundle.items():
                    node[key] = node.get(key, 0.0) - amount
                break
        else:
            return False
    return True


def describe(resources: Bundle) -> str:
    """{CPU: 2.5, GPU: 1} -> '2.5 CPU, 1 GPU' (CPU 0 when empty)."""
    shown = {key: value for key, value in resources.items() if value}
    return ", ".join(f"{value:g} {key}" for key, value in sorted(shown.items())) or "0 CPU"


def wait_for_capacity(bundles: list[Bundle], what: str, options: ClusterOptions,
                      say: Callable[[str], None] = log.warning) -> None:
    """Return once the cluster can hold `bundles` at once; fail at once when it never can.

    `what` names the job in messages ("run X: 2 Train workers"). On a cluster that may grow,
    asks the autoscaler for the bundles, says what it waits for (and again every minute) and
    fails with ClusterError after `options.wait_timeout_s`. Without `ray.init` there is no cluster
    to wait for yet (Ray Data starts a local one on first use).
    """
    import ray

    if not ray.is_initialized():
        return
    capacity = read_capacity()
    if fits(bundles, capacity.nodes):
        return
    needed = describe(add_up(bundles))
    if options.pokegan_started:
        raise ClusterError(f"{what} needs {needed}; this Ray cluster has {describe(capacity.total())} and cannot "
                           "grow (pokegan started it on this machine). Ask for less, or join a larger cluster "
                           "with RAY_ADDRESS")
    if capacity.node_types is not None and not fits(bundles, capacity.nodes + capacity.launchable):
        raise ClusterError(f"{what} needs {needed} (bundles {_bundles_text(bundles)}), more than this cluster can "
                           f"ever hold: its autoscaler may grow it to {describe(capacity.ceiling())} "
                           f"({_node_types_text(capacity.node_types)}). Ask for less, or raise max_workers in the "
                           "cluster config")
    requester_id = f"pokegan-{uuid.uuid4().hex[:12]}"
    _ask_autoscaler(requester_id, bundles)
    timeout = options.wait_timeout_s
    source = ("asked the autoscaler for nodes" if capacity.has_autoscaler
              else "no autoscaler reports to this cluster: start nodes that can hold it")
    say(f"{what} waits for the cluster: it needs {needed} and the cluster has {describe(capacity.total())} "
        f"on {len(capacity.nodes)} node(s); {source}. Giving up after {duration_text(timeout)}")
    started = last_said = time.monotonic()
    try:
        while True:
            time.sleep(POLL_INTERVAL_S)  # polling the cluster, not waiting for a test
            capacity = read_capacity()
            waited = time.monotonic() - started
            if fits(bundles, capacity.nodes):
                say(f"{what}: the cluster has room now ({describe(capacity.total())} on "
                    f"{len(capacity.nodes)} node(s), after {duration_text(waited)})")
                return
            if _same_request(bundles, capacity.autoscaler.infeasible_constraints):
                raise ClusterError(f"{what} needs {needed} (bundles {_bundles_text(bundles)}), more than this cluster "
                                   "can ever hold: its autoscaler says none of its node types can fulfil that (`ray "
                                   "status`). Ask for less, or add a node type that fits to the cluster config")
            if waited >= timeout:
                raise ClusterError(f"{what} waited {duration_text(waited)} for {needed}, but the cluster still has "
                                   f"{describe(capacity.total())} on {len(capacity.nodes)} node(s). Check the "
                                   "autoscaler (`ray status`, its monitor log: quota, spot capacity) or wait "
                                   "longer (--cluster-timeout)")
            if time.monotonic() - last_said >= REMIND_INTERVAL_S:
                last_said = time.monotonic()
                # Again: a request the autoscaler never got (a failed call, a restarted head) must not
                # leave the job waiting out its whole timeout; it also keeps the request from expiring
                # (ray_compat.AUTOSCALER_REQUEST_EXPIRY_S). The same request twice changes nothing.
                _ask_autoscaler(requester_id, bundles)
                say(f"{what} still waits ({duration_text(waited)} of {duration_text(timeout)}): the cluster has "
                    f"{describe(capacity.total())} on {len(capacity.nodes)} node(s)")
    finally:
        _ask_autoscaler(requester_id, [])


def _same_request(bundles: list[Bundle], constraints: list[list[tuple[Bundle, int]]]) -> bool:
    """Whether one of the autoscaler's infeasible constraints is this request (same bundles, same counts).

    While Ray Data asks for nodes too, the constraint is both requests merged; its being infeasible
    says nothing certain about this one, so the job waits (and times out) as it would for any node.
    """
    wanted: dict[tuple, int] = {}
    for bundle in bundles:
        shape = tuple(sorted((key, value) for key, value in bundle.items() if value))
        wanted[shape] = wanted.get(shape, 0) + 1
    for constraint in constraints:
        reported: dict[tuple, int] = {}
        for bundle, count in constraint:
            shape = tuple(sorted((key, value) for key, value in bundle.items() if value))
            reported[shape] = reported.get(shape, 0) + count
        if reported == wanted:
            return True
    return False


def _ask_autoscaler(requester_id: str, bundles: list[Bundle]) -> None:
    """Ask the autoscaler to make room for `bundles` (an empty list withdraws the request).

    Goes through the coordinator Ray Data and Ray Train share (`ray_compat.request_cluster_resources`),
    so their requests and this one add up instead of overwriting each other. On a cluster without an
    autoscaler nobody reads the request, which is harmless.
    """
    try:
        ray_compat.request_cluster_resources(requester_id, bundles)
    except Exception as error:  # a hint, never a reason to fail the job; asked again within a minute
        log.warning("could not pass a request to the autoscaler (%s: %s)", type(error).__name__, error)


def require_shared_storage(places: dict[str, str], options: ClusterOptions, capacity: Capacity | None = None) -> None:
    """Refuse local paths on a cluster of several nodes (or one that may grow): the others cannot see them.

    `places` maps a name for people ("--storage") to a URI. Ray Train writes checkpoints from
    the workers and Ray Data reads on any node, so both need storage every node reaches.
    """
    if options.shared_filesystem or options.pokegan_started:
        return
    local = {name: uri for name, uri in places.items() if uri and not uri.startswith("s3://")}
    if not local:
        return
    capacity = capacity or read_capacity()
    if capacity.single_node:
        return
    name, uri = next(iter(local.items()))
    size = (f"{len(capacity.nodes)} nodes" if len(capacity.nodes) > 1
            else "one node now, and its autoscaler may add more")
    raise ClusterError(f"{name} {uri} is a local path, but this Ray cluster has {size}: the other nodes cannot see "
                       "it. Use s3://bucket/prefix (Ray Train needs storage that every node reaches), or pass "
                       "--shared-filesystem if that path is on a file system every node mounts")


def _bundles_text(bundles: list[Bundle]) -> str:
    counts: dict[str, int] = {}
    for bundle in bundles:
        counts[describe(bundle)] = counts.get(describe(bundle), 0) + 1
    return " + ".join(f"{count} x ({text})" for text, count in counts.items())


def _node_types_text(node_types: list[ray_compat.NodeType] | None) -> str:
    parts = [f"{node_type.name}: up to {'any number' if node_type.max_count < 0 else node_type.max_count} x "
             f"({describe(node_type.resources)})" for node_type in node_types or [] if node_type.max_count]
    return "; ".join(parts) or "no node type it may launch"


def duration_text(seconds: float) -> str:
    """42 -> '42s', 900 -> '15m00s'."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def ray_init_arguments(address: str | None, env_vars: dict[str, str], worker_setup: str | None = None) -> dict:
    """`ray.init` arguments that let every worker of this job find its own cluster's state API.

    Ray Train's placement-group cleaner (the actor that frees a run's reserved CPUs once its
    controller is gone, which is how every Train run inside a Tune trial ends) asks the state API,
    which finds the cluster from RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else by scanning the
    machine. With a second Ray on the machine the scan fails ("Found multiple active Ray
    instances"), the cleaner dies, and the next trials wait forever for CPUs that nobody frees. So a
    local cluster gets its dashboard on a port chosen here, and a joined cluster's address is
    passed on to the workers. `worker_setup` ("module.function") runs in every worker process of the job
    (Ray's `worker_process_setup_hook`).
    """
    env = dict(env_vars)
    runtime_env: dict = {"env_vars": env}
    if worker_setup:
        runtime_env["worker_process_setup_hook"] = worker_setup
    if address is None:
        port = free_port()
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        return {"address": None, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
                "runtime_env": runtime_env}
    if "://" not in address and address != "auto":
        env["RAY_ADDRESS"] = address
    return {"address": address, "runtime_env": runtime_env}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
