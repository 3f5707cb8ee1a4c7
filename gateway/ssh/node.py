"""Running a gateway node: open the services, start the lanes, stop cleanly.

A node relays its sessions in one of two ways (``[node] workers``): its two
lanes in this process (:class:`InProcessLanes`, ``workers = 1``), or relay
worker processes that each run both lanes on the same ports
(:class:`gateway.ssh.workers.WorkerPool`). Either way the node-wide duties run
once, here, in :class:`GatewayNode`: registration and heartbeats, takeover and
request expiry, crash sealing of interrupted recordings, webhook and syslog
delivery, review escalation, the live command index, audit checkpoints and
the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import resource
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gateway.config import GatewayConfig, ListenerSettings
from gateway.datadir import DataDir, check_ready
from gateway.domain.alerts import WebhookDelivery
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditRecord, Trail
from gateway.domain.deliveries import DeliveryWorker
from gateway.domain.metrics import GatewayMetrics
from gateway.domain.node_identity import node_identity
from gateway.domain.recordings.indexing import command_indexer
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from gateway.ssh import cipher_packets
from gateway.ssh.human.lane import HumanLane
from gateway.ssh.lane import Lane
from gateway.ssh.machine.lane import MachineLane
from gateway.ssh.metrics_endpoint import MetricsEndpoint
from gateway.ssh.reload_drain import ReloadAndDrain
from gateway.ssh.workers import WorkerPool

logger = logging.getLogger("pamgate")

#: Seconds between passes storing the commands of live sessions (search sees them this late).
LIVE_COMMANDS_INTERVAL = 3.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: A relay worker's log lines say which worker wrote them.
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[worker {worker}]: %(message)s"
#: How often a node escalates review items past their due date (`pamgate review escalate` now).
REVIEW_ESCALATION_SECONDS = 60.0


def configure_logging(
    config: GatewayConfig, *, to_stderr: bool = True, worker: int | None = None
) -> None:
    """Log to ``DATA_DIR/logs/gateway.log`` and, unless told not to, to stderr;
    ``worker``: the relay worker process logging (its lines name it)."""
    data = DataDir(config.data_dir)
    data.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The log names users and sources: owner-only, like the database.
    os.close(os.open(data.gateway_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handlers: list[logging.Handler] = [logging.FileHandler(data.gateway_log)]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(
            LOG_FORMAT if worker is None else WORKER_LOG_FORMAT.format(worker=worker)
        ))  # fmt: skip
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.WARNING)
    logging.getLogger("pamgate").setLevel(config.gateway.log_level.upper())
    # asyncssh logs every connection at INFO; keep its warnings only.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's open-files soft limit to its hard limit, where allowed, and log it.

    Every connection is a file descriptor (a relayed session three: client,
    target, recording); systemd's default soft limit of 1,024 runs out at
    about a thousand idle connections. Returns the (before, after) soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if wanted <= soft:
        logger.info("open files: soft limit %d (the hard limit)", soft)
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        logger.warning("open files: cannot raise the soft limit %d to %d: %s", soft, wanted, exc)
        return soft, soft
    logger.info("open files: soft limit raised from %d to %d (the hard limit)", soft, wanted)
    return soft, wanted


class Relay(Protocol):
    """Where a node's sessions are relayed: its lanes in this process, or worker processes."""

    async def start(self) -> None:
        """Listen on both lanes' ports; PamgateError if that is impossible."""

    async def stop(self) -> None:
        """Stop listening and end the live sessions, telling their users."""

    @property
    def listening(self) -> bool:
        """Whether logins are taken (``/healthz``)."""

    @property
    def workers(self) -> int:
        """Processes relaying sessions now (``pamgate_workers``)."""


class InProcessLanes:
    """Both lanes of a node in this process: the whole node (``workers = 1``), or one
    relay worker process of it (``reuse_port``: its siblings listen on the same ports)."""

    def __init__(self, services: GatewayServices, *, reuse_port: bool = False) -> None:
        self.services = services
        self.human_lane = HumanLane(services)
        self.machine_lane = MachineLane(services)
        self._reuse_port = reuse_port
        self._listening = False

    async def start(self) -> None:
        """Listen on both lanes' ports (the machine lane's if enabled)."""
        config = self.services.config
        lanes: list[tuple[str, Lane, ListenerSettings]] = [
            ("human", self.human_lane, config.listeners.human)
        ]
        if config.listeners.machine.enabled:
            lanes.append(("machine", self.machine_lane, config.listeners.machine))
        for name, lane, settings in lanes:
            try:
                await lane.start(reuse_port=self._reuse_port)
            except OSError as exc:
                raise PamgateError(
                    f"cannot listen on {settings.address}:{settings.port} for the {name} lane: "
                    f"{exc.strerror}"
                ) from None
        self._listening = True

    async def stop(self) -> None:
        """Stop both lanes; their live sessions are told and end."""
        self._listening = False
        await asyncio.gather(self.human_lane.stop(), self.machine_lane.stop())

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def workers(self) -> int:
        return 1


class GatewayNode:
    """One running gateway: its services, its node-wide duties and its relay.

    ``workers``: relay worker processes; 1 relays in this process.
    """

    def __init__(self, config: GatewayConfig, *, workers: int = 1) -> None:
        check_ready(config)
        self.config = config
        self.services = GatewayServices.open(config)
        self.relay: Relay
        if workers == 1:
            self.relay = InProcessLanes(self.services)
        else:
            self.relay = WorkerPool(config, workers, on_exit=self._worker_died)
        self._checkpointer: asyncio.Task[None] | None = None
        self._indexing: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._escalation: asyncio.Task[None] | None = None
        self._live_indexing: asyncio.Task[None] | None = None
        #: Set when the node should stop (a signal, or a drain that has finished).
        self.stop_requested = asyncio.Event()
        #: SIGHUP, ``pamgate node reload`` and ``pamgate node drain``: over the lanes in
        #: this process, or passed on to the relay workers, which act on their own lanes.
        if isinstance(self.relay, InProcessLanes):
            lanes: tuple[Lane, ...] = (self.relay.human_lane, self.relay.machine_lane)
            self.reload_and_drain = ReloadAndDrain(
                config, self.services, lanes, self.stop_requested
            )
        else:
            self.reload_and_drain = ReloadAndDrain(
                config, self.services, (), self.stop_requested, workers=self.relay.signal_all
            )
        self._deliveries = self._delivery_workers()
        self._metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics.port is not None:
            metrics = GatewayMetrics(
                self.services.store, self.services.audit, config.node_name,
                workers=lambda: self.relay.workers,
            )  # fmt: skip
            self.services.audit.add_listener(metrics.on_audit_record)
            self._metrics_endpoint = MetricsEndpoint(
                metrics, node=config.node_name, ping_database=self.services.store.ping,
                lanes_listening=lambda: self.relay.listening,
                draining=lambda: self.reload_and_drain.draining,
            )  # fmt: skip

    def _delivery_workers(self) -> list[DeliveryWorker]:
        """Webhook alerts and the syslog copy, each in its own worker thread."""
        services = self.services
        webhooks = DeliveryWorker(
            "webhook-delivery", WebhookDelivery(services.store, services.audit).deliver_due
        )
        services.alerts.queued = webhooks.wake
        workers = [webhooks]
        if services.syslog is not None:
            syslog = DeliveryWorker("syslog-forwarding", services.syslog.forward_new)

            def wake_syslog(_record: AuditRecord) -> None:
                syslog.wake()

            services.audit.add_listener(wake_syslog)
            workers.append(syslog)
        return workers

    async def start(self) -> None:
        """Recover from a previous crash, then start listening."""
        upgrade = f"pamgate --config {self.config.source} db upgrade"
        await self.services.executors.run_db(self.services.store.require_current_schema, upgrade)
        # Before anything else: a second process with this node's name must not
        # mark the first one's sessions interrupted.
        identity = node_identity(self.config, DataDir(self.config.data_dir).keys)
        await self.services.executors.run_db(self.services.nodes.register, identity)
        # Heartbeats from registration on: the rest of the start (password hashing,
        # relay workers importing the gateway) can outlast the heartbeat timeout on a
        # loaded host, and a silent node is taken over by the others.
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_every(self.config.node.heartbeat_interval_seconds)
        )
        for worker in self._deliveries:
            worker.start()
        await self.services.executors.run_db(self._record, "gateway.started")
        interrupted = await self.services.executors.run_db(self.services.ledger.mark_interrupted)
        if interrupted:
            logger.warning(
                "marked %d sessions interrupted (the gateway stopped while they were live)",
                len(interrupted),
            )
            # Their recordings stay as written (readable up to the crash); index them.
            self._indexing = asyncio.get_running_loop().create_task(
                self.services.executors.run_extraction(self._index_commands, interrupted)
            )
        # A missing or wrong TOTP secret key, or secrets left in clear, stop the node here.
        await self.services.executors.run_db(self.services.users.check_secrets)
        if isinstance(self.relay, InProcessLanes):
            await self.services.executors.run_db(self.services.users.prepare_for_logins)
        if not self.services.data.login_ca_key.exists():
            # A data directory from before login certificates: everything else works.
            logger.warning(
                "login certificates are off: %s is missing (run 'pamgate init', which keeps "
                "existing keys, to create it)", self.services.data.login_ca_key,
            )  # fmt: skip
        raise_open_files_limit()
        await self.relay.start()
        if self._metrics_endpoint is not None:
            address, port = self.config.metrics.address, self.config.metrics.port
            assert port is not None
            try:
                self._metrics_endpoint.start(address, port)
            except OSError as exc:
                await self.relay.stop()
                raise PamgateError(
                    f"cannot listen on {address}:{port} for [metrics]: {exc.strerror}"
                ) from None
        self._escalation = asyncio.get_running_loop().create_task(
            self._escalate_reviews_every(REVIEW_ESCALATION_SECONDS)
        )
        self._live_indexing = asyncio.get_running_loop().create_task(self._index_live_every())
        self.reload_and_drain.start()
        interval = self.config.audit.checkpoint_interval_seconds
        if interval:
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoint_every(interval)
            )

    def signal_handlers(self) -> dict[int, Callable[[], None]]:
        """SIGHUP reloads the policy (and has the relay workers adopt it)."""
        return {signal.SIGHUP: lambda: self.reload_and_drain.reload_soon("SIGHUP")}

    async def stop(self) -> None:
        """Stop the lanes, record the stop, sign a final checkpoint and release the store."""
        if self._live_indexing is not None:
            self._live_indexing.cancel()
        self.reload_and_drain.stop()
        # /healthz turns 503 first: the balancer stops sending logins.
        await self.relay.stop()
        try:
            await self.services.executors.run_db(self._record, "gateway.stopped")
        except PamgateError as exc:
            logger.error("cannot audit the gateway's stop: %s", exc)
        if self._escalation is not None:
            self._escalation.cancel()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await self._checkpoint()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self.services.executors.run_db(self.services.nodes.stopped)
            except PamgateError as exc:
                logger.error("cannot record this node's stop: %s", exc)
        # A last round for what is due (the stop's own record to syslog among it);
        # what is left stays queued for the next node to run.
        await asyncio.gather(*(self.services.executors.run_db(w.stop) for w in self._deliveries))
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.stop()
        self.services.close()

    async def _worker_died(self, worker: int, reason: str) -> None:
        """A relay worker process died (``reason``: how): its live sessions are
        interrupted, their recordings sealed as found, and the death audited.
        Called before a replacement takes its place."""
        try:
            interrupted = await asyncio.to_thread(
                self.services.ledger.mark_interrupted, worker=worker
            )
        except PamgateError as exc:
            # The heartbeat's takeover or the next start marks them; no worker's
            # watch holds them any more, so nothing is relayed meanwhile.
            logger.error("cannot mark relay worker %d's sessions interrupted: %s", worker, exc)
            interrupted = []
        try:
            await asyncio.to_thread(self.services.audit.record, Trail.HUMAN, AuditEvent(
                actor=f"gateway:{self.config.gateway.name}", actor_type=ActorType.GATEWAY,
                action="gateway.worker_died", outcome="failure", reason=reason,
                target=f"node:{self.config.node_name}",
                details={"node": self.config.node_name, "worker": worker,
                         "sessions_interrupted": len(interrupted)},
            ))  # fmt: skip
        except PamgateError as exc:
            logger.error("cannot audit relay worker %d's death (%s): %s", worker, reason, exc)
        if interrupted:
            logger.warning(
                "marked %d sessions of relay worker %d interrupted", len(interrupted), worker
            )
            await asyncio.to_thread(self._index_commands, interrupted)

    def _record(self, action: str) -> None:
        """Audit a start or stop with a digest of the config, so config changes are traceable."""
        digest = hashlib.sha256(self.config.source.read_bytes()).hexdigest()
        self.services.audit.record(Trail.HUMAN, AuditEvent(
            actor=f"gateway:{self.config.gateway.name}", actor_type=ActorType.GATEWAY,
            action=action, target=str(self.config.source),
            authority=f"config:sha256={digest[:16]}",
            details={"config_sha256": digest, "node": self.config.node_name,
                     "targets": len(self.config.targets),
                     "rules": len(self.config.rules)},
        ))  # fmt: skip

    def _index_commands(self, session_ids: list[str]) -> None:
        """Seal interrupted sessions' recordings as found, then extract their commands."""
        for session_id in session_ids:
            try:
                self.services.recordings.seal_interrupted(session_id, node=self.config.node_name)
                self.services.recordings.index_commands(session_id)
            except (PamgateError, OSError) as exc:
                logger.warning("cannot seal or index session %s: %s", session_id, exc)

    async def _index_live_every(self, interval: float = LIVE_COMMANDS_INTERVAL) -> None:
        """Store the commands of this node's live shell sessions as they happen.

        So they are searchable (and in the audit trail) while the session runs,
        not only once it ends. The extraction runs in the indexing worker process.
        """
        indexer = command_indexer(self.config)
        while True:
            await asyncio.sleep(interval)
            try:
                live = await self.services.executors.run_db(self.services.ledger.live)
                for session in live:
                    if session.node == self.config.node_name and session.kind == "shell":
                        await self.services.executors.run_extraction(
                            indexer.index, session.id, live=True
                        )
            except (PamgateError, OSError) as exc:
                logger.warning("cannot index the commands of live sessions: %s", exc)

    async def _heartbeat_every(self, interval: float) -> None:
        """Tell the other nodes this one is alive; take over any that went silent."""
        while True:
            await asyncio.sleep(interval)
            try:
                alive = await self.services.executors.run_db(self.services.nodes.heartbeat)
                takeovers = await self.services.executors.run_db(self.services.nodes.take_over_dead)
                # Requests nobody answered: written (and audited) here, not by readers.
                await self.services.executors.run_db(self.services.requests.expire_stale)
            except PamgateError as exc:
                logger.error("heartbeat failed (the database may be unreachable): %s", exc)
                continue
            if not alive:
                logger.error(
                    "another node took this one for dead (missed heartbeats): its live "
                    "sessions were marked interrupted and are being ended"
                )
            for takeover in takeovers:
                logger.warning(
                    "node %s missed heartbeats since %s: took it over, marked %d sessions "
                    "interrupted",
                    takeover.node, takeover.last_heartbeat.isoformat(), len(takeover.interrupted),
                )  # fmt: skip
                self._indexing = asyncio.get_running_loop().create_task(
                    self.services.executors.run_extraction(
                        self._index_commands, takeover.interrupted
                    )
                )

    async def _escalate_reviews_every(self, interval: float) -> None:
        """Escalate review items past their campaign's due date (webhook, and suspension if
        configured); with several nodes, each item is escalated once, by whichever claims it."""
        while True:
            await asyncio.sleep(interval)
            try:
                escalated = await self.services.executors.run_db(
                    self.services.reviews.escalate_overdue
                )
            except PamgateError as exc:
                logger.error("escalating overdue review items failed: %s", exc)
                continue
            for item in escalated:
                logger.warning("review item #%d (%s %s) is overdue: escalated", item.id,
                               item.identity_type, item.identity)  # fmt: skip

    async def _checkpoint_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._checkpoint()
            await self.services.executors.run_db(self._log_overdue_reviews)

    def _log_overdue_reviews(self) -> None:
        for case in self.services.breakglass.list(overdue=True):
            logger.warning(
                "break-glass case #%d (%s on %s@%s) is overdue for review since %s",
                case.id, case.user, case.account, case.target, case.review_due_at.isoformat(),
            )  # fmt: skip

    async def _checkpoint(self) -> None:
        try:
            await self.services.executors.run_db(self.services.checkpoints.checkpoint)
        except PamgateError as exc:
            logger.error("audit checkpoint failed: %s", exc)


class Runnable(Protocol):
    """What :func:`run_until_signalled` runs: a whole node, or one relay worker of it."""

    #: Set when it should stop of its own accord.
    stop_requested: asyncio.Event

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def signal_handlers(self) -> dict[int, Callable[[], None]]:
        """What to do on signals other than SIGINT and SIGTERM (which stop it)."""
        ...


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway's event loop: uvloop when installed (the relay moves bytes
    with less overhead per packet there), else asyncio's own loop; with the
    gateway's AEAD cipher packets (:mod:`gateway.ssh.cipher_packets`)."""
    cipher_packets.install()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def run_until_signalled(node: Runnable, on_ready: Callable[[], None] | None = None) -> None:
    """Start ``node``, call ``on_ready``, and run until SIGINT or SIGTERM, or until the node
    asks to stop (a drain that has finished); its own handlers take the other signals."""
    stop = node.stop_requested
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    for other, handler in node.signal_handlers().items():
        loop.add_signal_handler(other, handler)
    await node.start()
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        logger.info("shutting down")
        await node.stop()
