"""Health of a gateway deployment: the database and every node, for ``pamgate status``.

Plain Python over the store; no sockets of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.domain.nodes import NodeInfo, NodeRegistry
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.schema import SchemaState


@dataclass(frozen=True)
class DeploymentStatus:
    """What ``pamgate status`` reports."""

    database_url: str
    reachable: bool
    #: Round trip of ``SELECT 1``, in milliseconds.
    latency_ms: float | None = None
    schema: SchemaState | None = None
    problem: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)
    #: Where recordings go (a folder, a bucket), and why they cannot ('' when they can).
    recordings: str = ""
    recordings_problem: str = ""
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def database_healthy(self) -> bool:
        """The database answers and its schema is the one this release needs."""
        return self.reachable and self.schema is not None and self.schema.up_to_date

    def node_problems(self, heartbeat_timeout: float) -> list[str]:
        """What is wrong with the nodes: silent or dead ones (a stopped node is not a fault)."""
        problems = []
        for node in self.nodes:
            age = node.heartbeat_age(self.checked_at)
            if node.status == "up" and age > heartbeat_timeout:
                problems.append(f"node {node.name} is silent ({age:.0f} s without a heartbeat)")
            elif node.status == "dead":
                problems.append(
                    f"node {node.name} is dead: bring it back, or retire it with "
                    f"'pamgate node forget {node.name}'"
                )
        policies = {n.name: n.policy_digest for n in self.nodes if n.status == "up"
                    and n.policy_digest}  # fmt: skip
        if len(set(policies.values())) > 1:
            each = ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(policies.items()))
            problems.append(f"the nodes' targets and rules differ (policy sha256: {each})")
        return problems

    def healthy(self, heartbeat_timeout: float) -> bool:
        """The database is healthy, recordings can be stored and no node is silent or dead."""
        return (self.database_healthy and not self.recordings_problem
                and not self.node_problems(heartbeat_timeout))  # fmt: skip

    def lines(self, heartbeat_timeout: float) -> list[str]:
        """The report, one line each; nodes silent past ``heartbeat_timeout`` are flagged."""
        out = [f"database: {_redact(self.database_url)}"]
        if not self.reachable:
            return [*out, f"  unreachable: {self.problem}", *self._recordings_lines()]
        out.append(f"  reachable, round trip {self.latency_ms:.1f} ms")
        if self.schema is not None:
            out.append(f"  schema: {self.schema.describe()}")
        if self.problem:
            out.append(f"  {self.problem}")
        out.append(f"nodes: {len(self.nodes)}")
        for node in self.nodes:
            age = node.heartbeat_age(self.checked_at)
            state = node.status
            if node.status == "up" and age > heartbeat_timeout:
                state = "up?  (silent: a surviving node will take it over)"
            elif node.status == "dead" and node.taken_over_by:
                state = f"dead (taken over by {node.taken_over_by})"
            elif node.status == "up" and node.drain_deadline is not None:
                state = f"draining (sessions end by {node.drain_deadline:%H:%M:%S} UTC)"
            policy = f"  policy {node.policy_digest[:12]}" if node.policy_digest else ""
            out.append(
                f"  {node.name:<20} {state:<10} heartbeat {age:6.1f} s ago  "
                f"live sessions {node.live_sessions:<4} {node.host} pid {node.pid}{policy}"
            )
        out += self._recordings_lines()
        out += [f"unhealthy: {problem}" for problem in self.node_problems(heartbeat_timeout)]
        if self.recordings_problem:
            out.append("unhealthy: recordings cannot be stored here, so no session can start")
        return out

    def _recordings_lines(self) -> list[str]:
        if not self.recordings:
            return []
        if self.recordings_problem:
            return [f"recordings: {self.recordings}", f"  unreachable: {self.recordings_problem}"]
        return [f"recordings: {self.recordings} (reachable)"]


def deployment_status(
    store: Store, nodes: NodeRegistry, recordings: tuple[str, str] = ("", "")
) -> DeploymentStatus:
    """Check the database (reachable, latency, schema) and list the nodes; ``recordings`` is
    where recordings go and the problem reaching it (RecordingService.storage_status)."""
    status = _database_status(store, nodes)
    return replace(status, recordings=recordings[0], recordings_problem=recordings[1])


def _database_status(store: Store, nodes: NodeRegistry) -> DeploymentStatus:
    try:
        started = time.perf_counter()
        store.ping()
        latency = (time.perf_counter() - started) * 1000
        schema = store.schema_state()
    except PamgateError as exc:
        return DeploymentStatus(store.url, reachable=False, problem=str(exc))
    if not schema.up_to_date:
        return DeploymentStatus(
            store.url, True, latency, schema, problem="run 'pamgate db upgrade' to list nodes"
        )
    try:
        listed = nodes.list()
    except PamgateError as exc:
        return DeploymentStatus(store.url, True, latency, schema, problem=str(exc))
    return DeploymentStatus(store.url, True, latency, schema, nodes=listed)


def _redact(url: str) -> str:
    """The URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(invalid URL)"
