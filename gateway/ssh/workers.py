"""Relay worker processes: ``pamgate serve`` with ``[node] workers`` > 1.

One Python process relays on about one core. With N workers, each worker is
a process of its own (``multiprocessing``'s spawn: a fork would copy the
parent's threads, locks and database connections) that listens on both lanes'
ports with ``SO_REUSEPORT``, so the kernel spreads new connections over them.
Each runs its own event loop, lanes, session watches and database pool; a
session lives in one worker from its login to its end, and its ledger row
carries that worker's index.

The parent (:class:`gateway.ssh.node.GatewayNode`) binds no lane port; it
runs the node-wide duties once and supervises the workers here:

- a worker is told to die with its parent (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of ``pamgate serve`` leaves no process behind;
- a worker that dies is logged with its exit reason; its live sessions are
  marked interrupted and their recordings sealed as found, then a
  replacement starts (after a back-off if workers keep dying young);
- :meth:`WorkerPool.stop` sends SIGTERM: each worker stops as a single-process
  node does (live sessions are told and end) and exits.

What the workers share goes through the database, as between nodes:
terminations, revocations and the login throttles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.config import GatewayConfig
from gateway.errors import PamgateError
from gateway.processes import die_with_parent

logger = logging.getLogger("pamgate.workers")

#: Seconds a stopping worker has to end its sessions before it is killed.
STOP_TIMEOUT = 20.0
#: Seconds a starting worker has to listen, at the node's start.
START_TIMEOUT = 60.0
#: A worker that dies younger than this is restarted after a growing back-off.
YOUNG_SECONDS = 10.0
#: The longest back-off before restarting a worker that keeps dying young.
MAX_RESTART_DELAY = 30.0

_READY = "ready"
_FAILED = "failed"


@dataclass
class _Worker:
    """One relay worker process as its parent tracks it."""

    index: int
    process: BaseProcess
    reports: Connection
    started: float
    ready: asyncio.Future[None]
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def exit_reason(exitcode: int | None) -> str:
    """How a worker process ended, in words (``exitcode`` as multiprocessing gives it)."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class WorkerPool:
    """Starts, supervises, restarts and stops a node's relay worker processes.

    ``on_exit(index, reason)`` is awaited after worker ``index`` died while the
    node runs (or had to be killed at stop), before any replacement starts: the
    node interrupts that worker's sessions there.
    """

    def __init__(
        self,
        config: GatewayConfig,
        count: int,
        *,
        on_exit: Callable[[int, str], Awaitable[None]],
    ) -> None:
        if count < 2:
            raise ValueError("a worker pool has at least two workers")
        self._config = config
        self._count = count
        self._on_exit = on_exit
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._restarts: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def workers(self) -> int:
        """Worker processes alive now."""
        return sum(1 for worker in self._workers.values() if not worker.exited.is_set())

    @property
    def listening(self) -> bool:
        """At least one worker listens (the kernel only hands connections to those)."""
        return any(
            worker.ready.done() and not worker.ready.exception() and not worker.exited.is_set()
            for worker in self._workers.values()
            if not worker.ready.cancelled()
        )

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every worker that listens (one still starting has no handler
        for it yet, and reads the node's config and drain deadline as it starts)."""
        for worker in self._workers.values():
            ready = worker.ready.done() and not worker.ready.cancelled()
            if ready and worker.ready.exception() is None and not worker.exited.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)  # type: ignore[arg-type]

    def pids(self) -> dict[int, int]:
        """Each live worker's pid, by worker index."""
        return {
            index: worker.process.pid
            for index, worker in self._workers.items()
            if worker.process.pid is not None and not worker.exited.is_set()
        }

    async def start(self) -> None:
        """Start every worker and wait until each listens.

        Raises PamgateError (and stops the others) if one cannot: a port taken,
        a host key unreadable. Such a worker would fail again on every restart.
        """
        for index in range(self._count):
            self._spawn(index)
        pending = [worker.ready for worker in self._workers.values()]
        try:
            done, not_done = await asyncio.wait(pending, timeout=START_TIMEOUT)
            if not_done:
                raise PamgateError(
                    f"relay workers did not start listening within {START_TIMEOUT:.0f} s"
                )
            for future in done:
                future.result()
        except BaseException:
            await self.stop()
            raise
        logger.info("%d relay workers listening: pids %s", self._count, self.pids())

    async def stop(self) -> None:
        """SIGTERM every worker and wait for it (SIGKILL after ``STOP_TIMEOUT``)."""
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            if not worker.exited.is_set():
                worker.process.terminate()
        waits = [asyncio.ensure_future(worker.exited.wait()) for worker in workers]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for wait in late:
                wait.cancel()
        for worker in workers:
            if not worker.exited.is_set():
                logger.error("relay worker %d did not stop in time: killed", worker.index)
                worker.process.kill()
                await asyncio.to_thread(worker.process.join)
                self._closed(worker)
                await self._on_exit(worker.index, "did not stop in time: killed")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        reports, report_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_worker,
            args=(self._config, index, os.getpid(), report_end),
            name=f"pamgate-worker-{index}",
        )
        process.start()
        report_end.close()  # the worker holds the only writing end: EOF when it dies
        worker = _Worker(index, process, reports, time.monotonic(), loop.create_future())
        self._workers[index] = worker
        loop.add_reader(reports.fileno(), self._on_report, worker)
        loop.add_reader(process.sentinel, self._on_sentinel, worker)

    def _on_report(self, worker: _Worker) -> None:
        try:
            kind, message = worker.reports.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.reports.fileno())
            return
        self._settle(worker, kind, message)

    def _settle(self, worker: _Worker, kind: str, message: str) -> None:
        """A worker told whether it listens (``ready``) or why it cannot (``failed``)."""
        if worker.ready.done():
            return
        if kind == _READY:
            worker.ready.set_result(None)
            logger.info("relay worker %d listening (pid %s)", worker.index, worker.process.pid)
        else:
            worker.ready.set_exception(PamgateError(message))

    def _read_last_reports(self, worker: _Worker) -> None:
        """Read what a worker that just ended said before it ended (its reason)."""
        try:
            while worker.reports.poll():
                self._settle(worker, *worker.reports.recv())
        except (EOFError, OSError):
            pass

    def _on_sentinel(self, worker: _Worker) -> None:
        # The sentinel is readable as the process exits; reaping it takes a moment more.
        worker.process.join(5)
        self._read_last_reports(worker)
        self._closed(worker)
        reason = exit_reason(worker.process.exitcode)
        if not worker.ready.done():
            worker.ready.set_exception(
                PamgateError(f"relay worker {worker.index} ended before listening ({reason})")
            )
            worker.ready.exception()  # retrieved: a restart's failure is only logged
        if self._stopping:
            logger.info("relay worker %d stopped (%s)", worker.index, reason)
            return
        logger.warning(
            "relay worker %d (pid %s) died (%s): interrupting its sessions and starting "
            "a replacement", worker.index, worker.process.pid, reason,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._replace(worker, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closed(self, worker: _Worker) -> None:
        """Stop watching ``worker``'s descriptors and close them (once)."""
        if worker.exited.is_set():
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        loop.remove_reader(worker.reports.fileno())
        worker.reports.close()
        worker.exited.set()

    async def _replace(self, worker: _Worker, reason: str) -> None:
        await self._on_exit(worker.index, reason)
        if time.monotonic() - worker.started < YOUNG_SECONDS:
            failures = self._restarts.get(worker.index, 0) + 1
            self._restarts[worker.index] = failures
            delay = min(2.0 ** (failures - 1), MAX_RESTART_DELAY)
            logger.warning("relay worker %d died young: restarting in %.0f s", worker.index, delay)
            await asyncio.sleep(delay)
        else:
            self._restarts.pop(worker.index, None)
        if not self._stopping:
            self._spawn(worker.index)


def run_worker(config: GatewayConfig, index: int, parent_pid: int, reports: Connection) -> None:
    """A relay worker process: both lanes on the shared ports until SIGTERM or SIGINT.

    Tells its parent on ``reports`` once it listens (``("ready", "")``) or why it
    cannot (``("failed", message)``).
    """
    die_with_parent(parent_pid)
    from gateway.ssh.node import configure_logging, run_event_loop, run_until_signalled

    configure_logging(config, worker=index)
    worker = RelayWorker(config, index, reports)
    try:
        run_event_loop(run_until_signalled(worker))
    except PamgateError as exc:
        logger.error("relay worker %d cannot start: %s", index, exc)
        reports.send((_FAILED, str(exc)))
        raise SystemExit(1) from None


class RelayWorker:
    """One relay worker's lanes, services and metrics (run by :func:`run_worker`)."""

    def __init__(self, config: GatewayConfig, index: int, reports: Connection) -> None:
        from gateway.services import GatewayServices
        from gateway.ssh.node import InProcessLanes
        from gateway.ssh.reload_drain import ReloadAndDrain

        self.index = index
        self._reports = reports
        self.services = GatewayServices.open(config, worker=index)
        self.lanes = InProcessLanes(self.services, reuse_port=True)
        self.stop_requested = asyncio.Event()
        #: Follows the node's process: adopts the policy it reloaded, drains these lanes.
        self.follower = ReloadAndDrain(
            config, self.services, (self.lanes.human_lane, self.lanes.machine_lane),
            self.stop_requested, leads=False,
        )  # fmt: skip
        if config.metrics.port is not None:
            from gateway.domain.metrics import GatewayMetrics

            # Counted here, into the files the parent's endpoint adds up.
            metrics = GatewayMetrics(self.services.store, self.services.audit, config.node_name)
            self.services.audit.add_listener(metrics.on_audit_record)

    async def start(self) -> None:
        """Listen on both lanes' ports, then tell the parent."""
        from gateway.ssh.node import raise_open_files_limit

        await asyncio.to_thread(self.services.users.prepare_for_logins)
        raise_open_files_limit()
        await self.lanes.start()
        self._reports.send((_READY, ""))
        # A worker started (or restarted) during a drain drains too.
        self.follower.follow_drain_soon()

    def signal_handlers(self) -> dict[int, Callable[[], None]]:
        """What the node's process passes on: adopt the policy again, follow a drain."""
        from gateway.ssh.reload_drain import DRAIN_SIGNAL, RELOAD_SIGNAL

        return {
            RELOAD_SIGNAL: lambda: self.follower.reload_soon("the node's reload"),
            DRAIN_SIGNAL: self.follower.follow_drain_soon,
        }

    async def stop(self) -> None:
        """End the live sessions (their users are told), then release the store."""
        self.follower.stop()
        await self.lanes.stop()
        self.services.close()
