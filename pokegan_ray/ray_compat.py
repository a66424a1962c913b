"""Every private Ray API pokegan uses, in one file, so a Ray upgrade is one file to read.

Each function says which Ray internal it touches and what it falls back to when that
internal is gone. Checked against Ray 2.60.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeType:
    """A node shape the autoscaler can launch: its resources and how many of it at most."""

    name: str
    resources: dict[str, float]
    max_count: int  # -1: unbounded


def autoscaler_node_types() -> list[NodeType] | None:
    """The node types of the cluster's autoscaler, or None when no autoscaler reported a config.

    Ray's autoscaler publishes its cluster config (node types with their resources and
    `max_workers`) to the GCS; Ray Train V2 reads the same record through
    `ray._private.state.state.get_cluster_config()` to refuse worker groups larger than the
    cluster can ever grow. A local Ray and a cluster of hand-started nodes have no such record.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as error:  # an internal that moved: behave as if there were no autoscaler
        log.debug("cannot read the autoscaler's cluster config: %s", error)
        return None
    if config is None:
        return None
    return [NodeType(name=group.name, resources={key: float(value) for key, value in group.resources.items()},
                     max_count=int(group.max_count))
            for group in config.node_group_configs]


@dataclass(frozen=True)
class AutoscalerReport:
    """What the cluster's autoscaler last told the GCS (Ray's autoscaler v2, the default of `ray up`)."""

    reporting: bool  # an autoscaler has reported at least once
    # Each `request_resources` constraint it cannot meet with any mix of its node types: [(bundle, count)].
    infeasible_constraints: list[list[tuple[dict[str, float], int]]]


def autoscaler_report() -> AutoscalerReport:
    """The autoscaler's last report, read from the GCS as `ray status` does.

    Autoscaler v2 marks a resource constraint it can never meet as infeasible (and logs "No
    available node types can fulfill cluster constraint"); the public `get_cluster_status` leaves
    that out, so the raw `GetClusterStatusReply` is read here. Without an autoscaler (a local Ray,
    hand-started nodes) nothing was reported.
    """
    try:
        import ray
        from ray._raylet import GcsClient
        from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

        reply = GetClusterStatusReply()
        reply.ParseFromString(GcsClient(address=ray.get_runtime_context().gcs_address).get_cluster_status())
    except Exception as error:  # an internal that moved: behave as if no autoscaler reported
        log.debug("cannot read the autoscaler's state: %s", error)
        return AutoscalerReport(reporting=False, infeasible_constraints=[])
    state = reply.autoscaling_state
    infeasible = [[({key: float(value) for key, value in by_count.request.resources_bundle.items()},
                    int(by_count.count)) for by_count in constraint.resource_requests]
                  for constraint in state.infeasible_cluster_resource_constraints]
    return AutoscalerReport(reporting=state.autoscaler_state_version > 0, infeasible_constraints=infeasible)


# How long a request through Ray's autoscaling coordinator lives unless asked again (Ray Train uses 180 s);
# a driver that dies while it waits leaves nothing behind for longer than this.
AUTOSCALER_REQUEST_EXPIRY_S = 180.0
AUTOSCALER_REQUEST_TIMEOUT_S = 5.0


def request_cluster_resources(requester_id: str, bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler to make room for `bundles` on behalf of `requester_id`; [] withdraws the request.

    The GCS keeps one resource constraint per cluster, and Ray Data and Ray Train (2.60) send theirs
    through one detached actor, `AutoscalingCoordinator`, which merges every requester's bundles and
    sends the merged list again every 20 s. A plain `ray.autoscaler.sdk.request_resources` from here
    would be overwritten by that actor's next tick (with [] once its own requests expired), so the
    request goes through the same actor. Falls back to the plain call where the actor is gone. Raises
    what the call raised.
    """
    import ray

    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(bundle) for bundle in bundles])
        return
    coordinator = get_or_create_autoscaling_coordinator()
    if bundles:
        call = coordinator.request_resources.remote(requester_id=requester_id, resources=[dict(b) for b in bundles],
                                                    expire_after_s=AUTOSCALER_REQUEST_EXPIRY_S)
    else:
        call = coordinator.cancel_request.remote(requester_id)
    ray.get(call, timeout=AUTOSCALER_REQUEST_TIMEOUT_S)


def quiet_train_loggers() -> None:
    """Ray Train (and Tune, in a trial process) log every report and checkpoint in full at INFO; the
    progress line says what matters. Its report logger is named after its module's file path, so
    it is reached through the module's own `logger` attribute."""
    try:
        from ray.train.v2._internal.execution import context as train_context

        train_context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass
    # "Checkpoint successfully created at ...", once per checkpoint, from Ray Train's and Tune's storage code.
    for name in ("ray.train.v2._internal.execution.storage", "ray.train._internal.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


DRIVER_LOG_HANDLER = "ray_print_logs"


def filter_forwarded_logs(keep: Callable[[Any, str], bool]) -> bool:
    """Drop the lines Ray forwards to this driver that `keep(source, line)` rejects (`source`: the "pid" Ray
    names the line's process by: a number, "gcs_server", "raylet", "autoscaler").

    With `log_to_driver` (the default) `ray.init` registers one handler, "ray_print_logs" (a partial of
    `ray._private.worker.print_to_stdstream`), on `ray._private.ray_logging.global_worker_stdstream_dispatcher`,
    which the driver's log thread feeds with each batch the log monitors publish: workers' output and the
    GCS's and raylet's error files. That handler is wrapped here. False (nothing filtered) where it is not
    registered (log_to_driver=False, or Ray not started) or the internals moved.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    with dispatcher._lock:
        handlers = list(dispatcher.handlers)
    for name, handler in handlers:
        if name != DRIVER_LOG_HANDLER or getattr(handler, "pokegan_filtered", False):
            continue

        def print_kept(data, print_lines=handler):
            lines = [line for line in data.get("lines", []) if keep(data.get("pid"), line)]
            if lines:
                print_lines({**data, "lines": lines})

        print_kept.pokegan_filtered = True
        dispatcher.remove_handler(DRIVER_LOG_HANDLER)
        dispatcher.add_handler(DRIVER_LOG_HANDLER, print_kept)
        return True
    return any(name == DRIVER_LOG_HANDLER for name, _ in handlers)
