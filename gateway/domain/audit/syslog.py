"""Forwarding audit records to syslog (RFC 5424), as a copy for a SIEM.

The database trail is the evidence; this is a best-effort stream. Each record
becomes one RFC 5424 message whose MSGID is the trail name and whose MSG is
the record as JSON. UDP sends one datagram per record; TCP uses RFC 6587
octet counting and reconnects on the next record after a failure.
"""

from __future__ import annotations

import logging
import socket
import threading

from gateway.domain.audit.trail import AuditRecord

logger = logging.getLogger("pamgate.audit.syslog")

FACILITY_AUTHPRIV = 10
SEVERITY_INFO = 6
SEVERITY_WARNING = 4


def format_rfc5424(record: AuditRecord, *, hostname: str, app_name: str = "pamgate") -> bytes:
    """One RFC 5424 message for ``record``."""
    severity = SEVERITY_INFO if record.outcome == "success" else SEVERITY_WARNING
    priority = FACILITY_AUTHPRIV * 8 + severity
    structured = f'[pamgate@32473 trail="{record.trail}" seq="{record.seq}" hash="{record.hash}"]'
    header = f"<{priority}>1 {record.ts} {hostname or '-'} {app_name} - {record.trail} {structured}"
    # BOM marks the MSG as UTF-8, as RFC 5424 section 6.4 allows.
    return header.encode() + b" \xef\xbb\xbf" + record.to_json().encode("utf-8")


class SyslogForwarder:
    """Sends committed audit records to a syslog collector."""

    def __init__(
        self, host: str, port: int, protocol: str = "udp", app_name: str = "pamgate"
    ) -> None:
        self._address = (host, port)
        self._protocol = protocol
        self._app_name = app_name
        self._hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def __call__(self, record: AuditRecord) -> None:
        message = format_rfc5424(record, hostname=self._hostname, app_name=self._app_name)
        with self._lock:
            try:
                self._send(message)
            except OSError as exc:
                logger.warning("syslog forwarding to %s:%s failed: %s", *self._address, exc)
                self.close()

    def _send(self, message: bytes) -> None:
        if self._protocol == "udp":
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socket.sendto(message, self._address)
            return
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=2)
        self._socket.sendall(f"{len(message)} ".encode() + message)

    def close(self) -> None:
        """Close the socket (a new one is opened for the next record)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
