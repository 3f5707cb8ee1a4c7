"""PostgreSQL LISTEN/NOTIFY between the processes and nodes that share one database.

The deciding transaction sends ``NOTIFY`` (``pg_notify``), which PostgreSQL
delivers only if, and when, that transaction commits; each gateway process
with a waiting session keeps one connection listening in a thread of its
own. This is the :class:`gateway.domain.wakeups.DecisionChannel` for
PostgreSQL; SQLite has none (its waiters poll, see that module).

psycopg is used directly for the listening connection: SQLAlchemy's pool
has no notion of a connection that idles waiting for notifications.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import text

from gateway.store.database import Store

logger = logging.getLogger("pamgate.notifications")

#: The channel decisions on access requests are announced on (payload: the request id).
DECISION_CHANNEL = "pamgate_request_decided"
#: How long :meth:`PostgresDecisionChannel.listen` waits for the listening connection.
CONNECT_WAIT_SECONDS = 10.0
#: Pause before listening again after the connection failed.
RECONNECT_SECONDS = 1.0


class PostgresDecisionChannel:
    """Announces decided requests with NOTIFY; listens for them with LISTEN."""

    def __init__(self, store: Store, channel: str = DECISION_CHANNEL) -> None:
        self._conninfo = store.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._channel = channel

    def announce(self, db: Any, request_id: int) -> None:
        """NOTIFY the request id as part of ``db``'s transaction (a SQLAlchemy session)."""
        db.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": self._channel, "payload": str(request_id)},
        )

    def listen(self, on_decided: Callable[[int | None], None]) -> Callable[[], None]:
        """Start listening in a thread; return once it listens (or after
        :data:`CONNECT_WAIT_SECONDS` if the database cannot be reached: waiters then
        rely on their safety poll). The returned function stops the thread."""
        listener = _Listener(self._conninfo, self._channel, on_decided)
        listener.start()
        listener.ready.wait(CONNECT_WAIT_SECONDS)
        return listener.stop


class _Listener(threading.Thread):
    def __init__(
        self, conninfo: str, channel: str, on_decided: Callable[[int | None], None]
    ) -> None:
        super().__init__(name=f"pamgate-listen-{channel}", daemon=True)
        self._conninfo = conninfo
        self._channel = channel
        self._on_decided = on_decided
        self._stopped = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        connected_before = False
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as connection:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if connected_before:
                        self._on_decided(None)  # anything announced while down was lost
                    connected_before = True
                    self.ready.set()
                    while not self._stopped.is_set():
                        for notice in connection.notifies(timeout=1.0):
                            self._deliver(notice.payload)
            except psycopg.Error as exc:
                logger.warning("listening for decisions failed (retrying): %s", exc)
                self.ready.set()  # callers go on; their safety poll covers the gap
                self._stopped.wait(RECONNECT_SECONDS)

    def _deliver(self, payload: str) -> None:
        try:
            request_id = int(payload)
        except ValueError:
            logger.warning("ignoring a decision notification with payload %r", payload)
            return
        try:
            self._on_decided(request_id)
        except Exception:  # the listener must outlive a failing callback
            logger.exception("handling the decision of request #%d failed", request_id)

    def stop(self) -> None:
        self._stopped.set()
