"""A running node's answers to SIGHUP, ``pamgate node reload`` and ``pamgate node drain``.

The decisions (what a reload adopts, what is audited, how requests travel
through the database) are :mod:`gateway.domain.node_control`'s; this is the
event-loop side: the loop that reads this node's requests, the reload under
live sessions, and the drain over the node's lanes.

With relay worker processes (:mod:`gateway.ssh.workers`) the node's process
has no lanes: its :class:`ReloadAndDrain` reads the requests, audits and
passes each on to the workers by signal (:data:`RELOAD_SIGNAL`,
:data:`DRAIN_SIGNAL`), and each worker's own follower (``leads=False``)
re-reads the policy, or reads the drain deadline from the registry, and acts
on its lanes without auditing or stopping: the node's process does both once,
counting the live sessions of all workers in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.config import GatewayConfig
from gateway.domain.node_control import DRAINED_REASON, adopt_policy, read_for_reload
from gateway.domain.node_identity import policy_digest
from gateway.errors import ConfigError, PamgateError
from gateway.services import GatewayServices
from gateway.ssh.lane import Lane
from gateway.ssh.watch import Watched

logger = logging.getLogger("pamgate")

#: How often a node reads the reload and drain requests in its registry row.
REQUESTS_INTERVAL = 2.0
#: How often a draining node looks whether its last sessions have ended.
DRAIN_POLL_SECONDS = 0.5
#: What the node's process sends its relay workers: adopt the policy again, and
#: read the drain deadline from the registry.
RELOAD_SIGNAL = signal.SIGHUP
DRAIN_SIGNAL = signal.SIGUSR1
#: How long after the deadline the node's process waits for its workers to record
#: the ends of the sessions they ended.
WORKERS_GRACE_SECONDS = 10.0


class ReloadAndDrain:
    """Policy reloads and the drain of one running node (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        services: GatewayServices,
        lanes: Sequence[Lane],
        stop_requested: asyncio.Event,
        *,
        workers: Callable[[int], None] | None = None,
        leads: bool = True,
    ) -> None:
        """``lanes``: this process's lanes (none in a node with relay workers).
        ``workers``: sends a signal to every relay worker (the node's process of a
        node with workers). ``leads=False``: a relay worker's follower, which neither
        audits nor stops the node."""
        self._config = config
        self._services = services
        self._lanes = lanes
        self._workers = workers
        self._leads = leads
        #: Set once a drain has ended the last sessions: the node then stops.
        self._stop_requested = stop_requested
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drain: asyncio.Task[None] | None = None
        #: When a drain ends the sessions still live (a later request may move it).
        self._drain_deadline: datetime | None = None

    @property
    def draining(self) -> bool:
        """A drain was asked for (``/healthz`` answers 503)."""
        return self._drain_deadline is not None

    def start(self) -> None:
        """Start reading this node's requests every :data:`REQUESTS_INTERVAL` seconds."""
        self._spawn(self._answer_requests_every(REQUESTS_INTERVAL))

    def stop(self) -> None:
        """Stop reading requests; a drain in progress stops where it is (the node stops)."""
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reload ------------------------------------------------------------------------

    def reload_soon(self, trigger: str) -> None:
        """Start a policy reload (for a signal handler, which cannot wait for it)."""
        self._spawn(self.reload(trigger))

    async def reload(self, trigger: str) -> bool:
        """Re-read the config file and adopt its targets, target groups and rules; live
        sessions go on (the lanes' watch ends those the new policy no longer allows).

        An invalid file changes nothing; the failure is audited
        (``node.reload_failed``) and logged. A reload is audited
        (``node.reloaded``) before it takes effect, and does not happen if that
        write fails. ``trigger`` says what asked for it. True if adopted.
        """
        if not self._leads:
            return await self._follow_reload()
        control, run_db = self._services.node_control, self._services.executors.run_db
        async with self._reloading:
            try:
                reload = await self._services.executors.run_files(read_for_reload, self._config)
            except ConfigError as exc:
                logger.error("reload refused, the running policy stays: %s", exc)
                try:
                    await run_db(
                        control.record_reload_failure, str(exc),
                        digest=policy_digest(self._config), trigger=trigger,
                    )  # fmt: skip
                except PamgateError as audit_exc:
                    logger.error("cannot audit the refused reload: %s", audit_exc)
                return False
            try:
                await run_db(control.record_reload, reload, trigger=trigger)
            except PamgateError as exc:
                logger.error("reload not done: it cannot be audited (%s)", exc)
                return False
            adopt_policy(self._config, reload)
            if self._workers is not None:
                self._workers(RELOAD_SIGNAL)
        logger.warning(
            "policy reloaded (%s): %d targets, %d rules, policy sha256 %s -> %s",
            trigger, len(reload.new.targets), len(reload.new.rules),
            reload.old_digest[:12], reload.new_digest[:12],
        )  # fmt: skip
        for name in reload.restart_needed:
            logger.warning(
                "[%s] changed in %s: a reload does not apply it; restart the node",
                name, self._config.source,
            )  # fmt: skip
        return True

    async def _follow_reload(self) -> bool:
        """A relay worker adopts the policy its node's process has just audited."""
        try:
            reload = await self._services.executors.run_files(read_for_reload, self._config)
        except ConfigError as exc:
            # The node's process read the same file a moment ago: it changed since.
            logger.error("reload refused in this worker, its policy stays: %s", exc)
            return False
        # Only what the node's process audited takes effect: the digest it recorded.
        name = self._config.node_name
        try:
            nodes = await self._services.executors.run_db(self._services.nodes.list)
        except PamgateError as exc:
            logger.error("reload not adopted in this worker: cannot read its audit (%s)", exc)
            return False
        audited = next((node.policy_digest for node in nodes if node.name == name), None)
        if audited != reload.new_digest:
            logger.error(
                "reload not adopted in this worker: the file changed after the node audited "
                "its reload (policy sha256 %s here, %s audited); reload the node again",
                reload.new_digest[:12], (audited or "none")[:12],
            )  # fmt: skip
            return False
        adopt_policy(self._config, reload)
        logger.info("policy adopted: sha256 %s", reload.new_digest[:12])
        return True

    def follow_drain_soon(self) -> None:
        """A relay worker reads its node's drain deadline and drains its lanes (a signal
        handler, which cannot wait)."""
        self._spawn(self._follow_drain())

    async def _follow_drain(self) -> None:
        try:
            requests = await self._services.executors.run_db(self._services.node_control.requests)
        except PamgateError as exc:
            logger.error("cannot read the drain deadline: %s", exc)
            return
        if requests.drain_deadline is not None:
            self.drain(requests.drain_deadline)

    async def _answer_requests_every(self, interval: float) -> None:
        """Act on ``pamgate node reload`` and ``pamgate node drain`` (from any host)."""
        control = self._services.node_control
        while True:
            await asyncio.sleep(interval)
            try:
                requests = await self._services.executors.run_db(control.requests)
            except PamgateError as exc:
                logger.error("cannot read this node's reload and drain requests: %s", exc)
                continue
            if requests.reload:
                await self.reload("pamgate node reload")
            if requests.drain_deadline is not None:
                self.drain(requests.drain_deadline)

    # -- drain -------------------------------------------------------------------------

    def drain(self, deadline: datetime) -> None:
        """Drain the node: refuse new sessions, warn the live ones, end those left at
        ``deadline``, then ask the node to stop. Called again, moves the deadline."""
        moved = self._drain is not None and deadline != self._drain_deadline
        self._drain_deadline = deadline
        if self._drain is None:
            self._drain = self._spawn(self._drain_until_done())
        elif moved:
            logger.warning("draining: the deadline moved to %s", deadline.isoformat())
            if self._workers is not None:
                self._workers(DRAIN_SIGNAL)
            if self._leads:
                self._spawn(self._record_moved_deadline(deadline))

    async def _record_moved_deadline(self, deadline: datetime) -> None:
        await self._record_drain(
            "node.draining", deadline=deadline.isoformat(), moved=True,
            live_sessions=await self._live_count(),
        )  # fmt: skip

    def _live_sessions(self) -> list[Watched]:
        return [session for lane in self._lanes for session in lane.watch.live()]

    async def _live_count(self) -> int:
        """This process's live sessions; with relay workers, the node's, from the ledger."""
        if self._workers is None:
            return len(self._live_sessions())
        name = self._config.node_name

        def count() -> int:
            return sum(1 for session in self._services.ledger.live() if session.node == name)

        try:
            return await self._services.executors.run_db(count)
        except PamgateError as exc:
            logger.error("cannot count the node's live sessions: %s", exc)
            return 1  # go on waiting until the deadline: never drain early on a doubt

    async def _drain_until_done(self) -> None:
        assert self._drain_deadline is not None
        name = self._config.node_name
        refusal = (
            f"node {name} is draining: it takes no new sessions; connect again to reach "
            "another node"
        )
        # Refusing sessions is the safe side: it starts before anything else can fail.
        for lane in self._lanes:
            lane.draining = refusal
        if self._workers is not None:
            self._workers(DRAIN_SIGNAL)
        live = self._live_sessions()
        deadline = self._drain_deadline
        count = await self._live_count()
        logger.warning("draining: %d live sessions, ended at %s at the latest",
                       count, deadline.isoformat())  # fmt: skip
        if self._leads:
            await self._record_drain(
                "node.draining", deadline=deadline.isoformat(), live_sessions=count
            )
        warning = (
            f"node {name} is draining: this session will be ended at "
            f"{deadline:%H:%M:%S} UTC; finish your work and connect again"
        )
        for session in live:
            session.warn(warning)
        while count and datetime.now(UTC) < self._drain_deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
            count = await self._live_count()
        live = self._live_sessions()
        for session in live:
            session.terminate(DRAINED_REASON)
        # Sessions still being admitted (waiting for an approval) end too.
        for lane in self._lanes:
            for waiting in list(lane.sessions):
                waiting.terminate(DRAINED_REASON)
        if not self._leads:
            logger.warning("drained: ended %d sessions at the deadline", len(live))
            return
        if self._workers is not None:
            # The workers end theirs at the same deadline: wait for the ledger to say so.
            grace = asyncio.get_running_loop().time() + WORKERS_GRACE_SECONDS
            while count and asyncio.get_running_loop().time() < grace:
                await asyncio.sleep(DRAIN_POLL_SECONDS)
                count = await self._live_count()
        logger.warning("drained: ended %d sessions at the deadline; stopping", count)
        await self._record_drain("node.drained", ended_at_deadline=count)
        self._stop_requested.set()

    async def _record_drain(self, action: str, **details: object) -> None:
        try:
            await self._services.executors.run_db(
                self._services.node_control.record_drain, action, **details
            )
        except PamgateError as exc:
            logger.error("cannot audit %s: %s", action, exc)
