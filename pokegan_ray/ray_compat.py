"""Every private Ray API pokegan uses, in one file, so a Ray upgrade is one file to read.

Each function says which Ray internal it touches and what it falls back to when that
internal is gone. Checked against Ray 2.60.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
