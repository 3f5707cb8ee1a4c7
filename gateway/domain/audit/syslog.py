"""Copying the audit trails to syslog (RFC 5424), for a SIEM.

The database trail is the evidence; the copy follows it. Each record becomes
one RFC 5424 message whose MSGID is the trail name and whose MSG is the
record as JSON. UDP sends one datagram per record; TCP uses RFC 6587 octet
counting.

The trail is its own queue: :class:`SyslogForwarder` sends the events after a
per-trail cursor (table ``syslog_cursors``) and then moves it, in a worker of
the running node (:mod:`gateway.domain.deliveries`), never in the writer's
path. So an unreachable collector never delays a login or an audit write, and
the records written while it was away are sent, in order, when it is back
(at least once: a record sent just before a crash is sent again). Forwarding
starts at the trail's head when it is first configured: history is not
replayed. With several nodes, one holds a lease on each cursor at a time.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from itertools import islice

from sqlalchemy import select, update

from gateway.domain.audit.trail import AuditLog, AuditRecord, Trail
from gateway.errors import StoreError
from gateway.store.database import Store
from gateway.store.models import SyslogCursor

logger = logging.getLogger("pamgate.audit.syslog")

FACILITY_AUTHPRIV = 10
SEVERITY_INFO = 6
SEVERITY_WARNING = 4
#: Records sent per trail and round; the cursor moves after each batch.
BATCH = 500
#: How long a node holds a cursor; past it another node takes over.
LEASE_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 2.0


def format_rfc5424(record: AuditRecord, *, hostname: str, app_name: str = "pamgate") -> bytes:
    """One RFC 5424 message for ``record``."""
    severity = SEVERITY_INFO if record.outcome == "success" else SEVERITY_WARNING
    priority = FACILITY_AUTHPRIV * 8 + severity
    structured = f'[pamgate@32473 trail="{record.trail}" seq="{record.seq}" hash="{record.hash}"]'
    header = f"<{priority}>1 {record.ts} {hostname or '-'} {app_name} - {record.trail} {structured}"
    # BOM marks the MSG as UTF-8, as RFC 5424 section 6.4 allows.
    return header.encode() + b" \xef\xbb\xbf" + record.to_json().encode("utf-8")


class SyslogForwarder:
    """Sends each trail's records after its cursor to one syslog collector."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        host: str,
        port: int,
        protocol: str = "udp",
        app_name: str = "pamgate",
        *,
        node: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._address = (host, port)
        self._protocol = protocol
        self._app_name = app_name
        self._hostname = socket.gethostname()
        self._node = node or self._hostname
        self._clock = clock
        self._socket: socket.socket | None = None

    def forward_new(self) -> int:
        """Send what each trail gained since its cursor; returns how many records were sent.

        Stops at the first failure (the collector is away, or the database); the
        rest is sent on a later call. Never raises.
        """
        sent = 0
        for trail in Trail:
            try:
                start = self._lease(trail)
                if start is None:
                    continue  # another node forwards this trail
                sent += self._forward(trail, start)
            except StoreError as exc:
                logger.error("syslog forwarding cannot read the %s trail: %s", trail, exc)
            except OSError as exc:
                logger.warning("syslog forwarding to %s:%s failed: %s", *self._address, exc)
                self.close()
                break
        return sent

    def _forward(self, trail: Trail, start: int) -> int:
        sent = 0
        records = self._batch(trail, start)
        while records:
            for record in records:
                try:
                    self._send(format_rfc5424(record, hostname=self._hostname,
                                              app_name=self._app_name))  # fmt: skip
                except OSError:
                    self._advance(trail, record.seq - 1)
                    raise
                sent += 1
            last = records[-1].seq
            if not self._advance(trail, last):
                return sent  # the lease ran out: another node goes on from the cursor
            records = self._batch(trail, last)
        return sent

    def _batch(self, trail: Trail, after_seq: int) -> list[AuditRecord]:
        return list(islice(self._audit.events(trail, after_seq=after_seq, batch=BATCH), BATCH))

    def _lease(self, trail: Trail) -> int | None:
        """Take or keep the lease on the trail's cursor: its seq, or None if another node has it."""
        now = self._clock()
        with self._store.transaction() as db:
            cursor = db.get(SyslogCursor, trail.value, with_for_update=True)
            if cursor is None:
                head, _ = self._audit.head(trail)
                cursor = SyslogCursor(trail=trail.value, seq=head)
                db.add(cursor)
            elif cursor.leased_by != self._node and cursor.lease_until > now:
                return None
            cursor.leased_by = self._node
            cursor.lease_until = now + LEASE_SECONDS
            return cursor.seq

    def _advance(self, trail: Trail, seq: int) -> bool:
        """Move the cursor to ``seq`` if this node still holds the lease."""
        with self._store.transaction() as db:
            moved = db.execute(
                update(SyslogCursor)
                .where(SyslogCursor.trail == trail.value, SyslogCursor.leased_by == self._node,
                       SyslogCursor.seq <= seq)
                .values(seq=seq, lease_until=self._clock() + LEASE_SECONDS)
            )  # fmt: skip
            return bool(moved.rowcount)  # type: ignore[attr-defined]

    def cursor(self, trail: Trail) -> int | None:
        """The last record of ``trail`` sent (None before forwarding started)."""
        with self._store.transaction(write=False) as db:
            return db.scalar(select(SyslogCursor.seq).where(SyslogCursor.trail == trail.value))

    def _send(self, message: bytes) -> None:
        if self._protocol == "udp":
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socket.sendto(message, self._address)
            return
        if self._socket is None:
            self._socket = socket.create_connection(
                self._address, timeout=CONNECT_TIMEOUT_SECONDS
            )
        self._socket.sendall(f"{len(message)} ".encode() + message)

    def close(self) -> None:
        """Close the socket (a new one is opened for the next record)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
