"""Structured event log lines: one JSON object per security-relevant event.

Until the hash-chained audit trail exists, this is where authentication,
refusals and session events are written. Every event goes through
:func:`emit`, so the audit trail can later replace one function, not many
call sites. Secrets (passwords, codes, keys) are never passed here.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

event_logger = logging.getLogger("pamgate.events")


def emit(event: str, **fields: Any) -> None:
    """Write one event as a JSON log line: ``{"ts": ..., "event": ..., **fields}``."""
    record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
    record.update(fields)
    event_logger.info(json.dumps(record, default=str, sort_keys=False))
