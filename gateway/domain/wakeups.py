"""Waking the sessions that wait for a request's decision, instead of polling for it.

A session waiting for approval registers with :class:`DecisionWakeups`
(:meth:`~DecisionWakeups.watch`) and sleeps. Whoever decides the request
(approve, deny, cancel, expiry) calls :meth:`~DecisionWakeups.announce`
inside the deciding transaction and :meth:`~DecisionWakeups.decided` after
it commits:

- in the same process, ``decided`` wakes the waiters at once;
- in another process or node (the CLI, the console over SSH, which runs as a
  child process, or a second gateway), the :class:`DecisionChannel` carries
  the news: on PostgreSQL a ``NOTIFY`` sent by the deciding transaction and
  delivered when it commits (``gateway.store.notifications``).

SQLite has no such channel, so a waiter there also re-reads the request
every :data:`SQLITE_SAFETY_POLL_SECONDS` (one cheap read); with a channel
the safety poll is rare, for a notification lost while the listening
connection was down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger("pamgate.wakeups")

#: Without a channel between processes (SQLite), how often a waiter re-reads its request.
SQLITE_SAFETY_POLL_SECONDS = 1.0
#: With one (PostgreSQL LISTEN/NOTIFY), how often it re-reads anyway.
CHANNEL_SAFETY_POLL_SECONDS = 10.0


class DecisionChannel(Protocol):
    """Carries "request N was decided" between processes and nodes."""

    def announce(self, db: Any, request_id: int) -> None:
        """Send the news as part of ``db``'s transaction: delivered only if it commits."""

    def listen(self, on_decided: Callable[[int | None], None]) -> Callable[[], None]:
        """Call ``on_decided(request_id)`` for every decision announced anywhere, and
        ``on_decided(None)`` when news may have been lost (the connection was re-made).

        Returns once listening (so nothing committed after the return is missed);
        the returned function stops it.
        """
        ...


class DecisionWakeups:
    """Who waits for which request's decision, and waking them when it is made."""

    def __init__(self, channel: DecisionChannel | None = None) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._waiters: dict[int, list[Callable[[], None]]] = {}
        self._listening_lock = threading.Lock()
        self._stop_listening: Callable[[], None] | None = None

    @property
    def safety_poll_seconds(self) -> float:
        """How often a waiter re-reads its request even though nobody woke it."""
        return SQLITE_SAFETY_POLL_SECONDS if self._channel is None else CHANNEL_SAFETY_POLL_SECONDS

    def watch(self, request_id: int, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread; it must be quick) when ``request_id`` may
        have been decided. Returns the function that stops watching.

        Blocking the first time with a channel (it starts listening): run it off the
        event loop. Read the request after this returns: a decision made before it is
        not announced again.
        """
        with self._lock:
            self._waiters.setdefault(request_id, []).append(wake)
        if self._channel is not None:
            # Every caller waits until the listener is up, not only the one starting it.
            with self._listening_lock:
                if self._stop_listening is None:
                    self._stop_listening = self._channel.listen(self._heard)

        def stop_watching() -> None:
            with self._lock:
                waiting = self._waiters.get(request_id, [])
                if wake in waiting:
                    waiting.remove(wake)
                if not waiting:
                    self._waiters.pop(request_id, None)

        return stop_watching

    def announce(self, db: Any, request_id: int) -> None:
        """Tell other processes, as part of the deciding transaction ``db``."""
        if self._channel is not None:
            self._channel.announce(db, request_id)

    def decided(self, request_id: int) -> None:
        """Wake this process's waiters for ``request_id`` (after the decision committed)."""
        with self._lock:
            waiting = list(self._waiters.get(request_id, ()))
        for wake in waiting:
            try:
                wake()
            except Exception:  # one waiter's failure must not keep the others asleep
                logger.exception("waking a session waiting for request #%d failed", request_id)

    def _heard(self, request_id: int | None) -> None:
        if request_id is not None:
            self.decided(request_id)
            return
        with self._lock:
            ids = list(self._waiters)
        for each in ids:
            self.decided(each)

    def close(self) -> None:
        """Stop listening to the channel (if listening)."""
        with self._listening_lock:
            stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            stop()
