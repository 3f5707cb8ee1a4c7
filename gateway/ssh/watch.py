"""One watch per lane: every second, each live session's (and forward's) checks in one round.

A live session ends when its grant ends or is revoked, its user is disabled,
its NHI is suspended or its certificate revoked, or someone terminates it
from the console. A loop per session used to ask the database about each of
them every second (a thread hop and two or three queries per session): with
a thousand sessions those checks took most of the gateway's time. A round
reads what changed for every watched session at once, one query per kind
(:class:`~gateway.domain.live_checks.LiveChecks`), then asks each session what that
means for it.

If rounds keep failing (the database is unreachable) for MAX_FAILED_ROUNDS
seconds, every watched session ends: access that cannot be checked is not
kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.services import GatewayServices

logger = logging.getLogger("pamgate.watch")

#: Seconds between rounds: revocation and termination take effect within ~2 s.
WATCH_INTERVAL = 1.0
#: Consecutive failed rounds (seconds) before live sessions are ended.
MAX_FAILED_ROUNDS = 30


class Watched(Protocol):
    """A live session as the watch sees it (see :class:`gateway.ssh.relay.RelayedSession`)."""

    @property
    def watch_subject(self) -> WatchSubject: ...

    @property
    def watch_finished(self) -> bool: ...

    def check_time(self) -> str | None:
        """Time-based limits (grant end), checked on the event loop; why to end, or None."""

    def ended_because(self, checks: LiveChecks) -> str | None:
        """Why the session must end given ``checks`` (run off the event loop), or None.

        The reason is shown to the user as it is.
        """

    def warn(self, message: str) -> None:
        """Tell the user ``message`` (a line on stderr); the session goes on."""

    def terminate(self, reason: str) -> None: ...


class SessionWatch:
    """The watch loop of one lane; sessions join when they start relaying."""

    def __init__(
        self, services: GatewayServices, track_task: Callable[[asyncio.Task[Any]], None]
    ) -> None:
        self._services = services
        self._track_task = track_task
        self._sessions: set[Watched] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def live(self) -> list[Watched]:
        """The watched sessions and forwards that have not finished."""
        return [s for s in self._sessions if not s.watch_finished]

    def add(self, session: Watched) -> None:
        """Watch ``session`` from the next round on (starts the loop if it is not running)."""
        self._sessions.add(session)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._track_task(self._task)

    def discard(self, session: Watched) -> None:
        """Stop watching ``session`` (it ended)."""
        self._sessions.discard(session)

    def stop(self) -> None:
        """Stop the loop (the lane is stopping)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        failed = 0
        while self._sessions:
            await asyncio.sleep(WATCH_INTERVAL)
            self._sessions = {s for s in self._sessions if not s.watch_finished}
            for session in list(self._sessions):
                reason = session.check_time()
                if reason:
                    self._end(session, reason)
            watched = list(self._sessions)
            if not watched:
                continue
            try:
                reasons = await self._services.executors.run_db(self._round, watched)
            except PamgateError as exc:
                failed += 1
                logger.warning("live-session checks failed (%d in a row): %s", failed, exc)
                if failed >= MAX_FAILED_ROUNDS:
                    for session in watched:
                        self._end(session, f"cannot check that access is still allowed ({exc})")
                continue  # the database is unreachable for a moment; check again
            failed = 0
            for session, reason in reasons.items():
                self._end(session, reason)

    def _round(self, watched: list[Watched]) -> dict[Watched, str]:
        checks = self._services.live_checks.read(s.watch_subject for s in watched)
        reasons = {}
        for session in watched:
            reason = session.ended_because(checks)
            if reason:
                reasons[session] = reason
        return reasons

    def _end(self, session: Watched, reason: str) -> None:
        self._sessions.discard(session)
        if not session.watch_finished:
            session.terminate(reason)
