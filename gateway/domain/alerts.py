"""Alerts: a JSON POST to configured webhooks, queued durably, delivered in the background.

Used for new requests, decisions, break-glass and machine-identity events.
:class:`WebhookAlerts` only writes one row per URL to the ``outbox`` table and
returns: an emergency never waits for a webhook, and an alert raised by a CLI
process that exits at once is not lost. A running node's
:class:`WebhookDelivery` (see :mod:`gateway.domain.deliveries`) posts due rows,
retries a failing or slow webhook with backoff a bounded number of times, and
audits the outcome (``alert.sent`` / ``alert.failed``) in the trail of the
event announced. Several nodes share the queue: a row is claimed before it
is posted, so each alert is delivered by one node.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, AuditWriteFailed, Trail
from gateway.errors import StoreError
from gateway.store.database import Store
from gateway.store.models import OutboxMessage

logger = logging.getLogger("pamgate.alerts")

#: Deliveries tried per alert and URL before it is given up (and audited as failed).
ATTEMPTS = 4
TIMEOUT_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.5
#: How long a node holds a claimed alert; past it another node may deliver it.
CLAIM_SECONDS = 60.0
#: Alerts claimed per round.
BATCH = 20


class WebhookAlerts:
    """Queues alerts for every configured URL; never blocks, never raises."""

    def __init__(
        self,
        urls: list[str],
        audit: AuditLog,
        *,
        store: Store | None = None,
        queued: Callable[[], None] | None = None,
    ) -> None:
        """``queued`` is called after alerts are queued (a running node wakes its
        delivery worker with it, so alerts leave within milliseconds, not a poll later)."""
        self._urls = list(urls)
        self._audit = audit
        self._store = store if store is not None else audit.store
        self.queued = queued

    def send(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        authority: str | None = None,
        trail: Trail = Trail.HUMAN,
    ) -> None:
        """Announce ``kind`` (e.g. ``breakglass.invoked``); returns at once.

        The delivery's outcome is audited in ``trail``, the trail of the event announced.
        """
        body = {
            "kind": kind,
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **payload,
        }
        # Break-glass is loud in the log; routine request news is not.
        level = logging.WARNING if kind.startswith(("breakglass", "machine")) else logging.INFO
        text = json.dumps(body, default=str)
        logger.log(level, "ALERT %s", text)
        if not self._urls:
            return
        now = datetime.now(UTC)
        try:
            with self._store.transaction() as db:
                db.add_all(
                    OutboxMessage(
                        url=url, kind=kind, body=text, trail=trail.value, authority=authority,
                        attempts=0, due_at=0.0, claimed_until=0.0, last_error="", created_at=now,
                    )  # fmt: skip
                    for url in self._urls
                )
        except StoreError as exc:
            # The action already happened and is audited; the page is what is lost.
            logger.error("cannot queue the %s alert for its webhooks: %s", kind, exc)
            return
        if self.queued is not None:
            self.queued()


class WebhookDelivery:
    """Posts queued alerts that are due; one round per :meth:`deliver_due` call."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        post: Callable[[str, bytes], int] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._post = post or _post_json

    def deliver_due(self) -> int:
        """Try every due alert once; returns how many were tried. Never raises."""
        try:
            claimed = self._claim()
        except StoreError as exc:
            logger.error("cannot read the alert outbox: %s", exc)
            return 0
        for message in claimed:
            self._attempt(message)
        return len(claimed)

    def pending(self) -> int:
        """Alerts still queued (delivering or waiting for a retry)."""
        with self._store.transaction(write=False) as db:
            return len(db.scalars(select(OutboxMessage.id)).all())

    def _claim(self) -> list[OutboxMessage]:
        now = self._clock()
        with self._store.transaction() as db:
            rows = db.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.due_at <= now, OutboxMessage.claimed_until < now)
                .order_by(OutboxMessage.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)  # another node's claim is skipped
            ).all()
            for row in rows:
                row.claimed_until = now + CLAIM_SECONDS
            db.flush()
            db.expunge_all()
            return list(rows)

    def _attempt(self, message: OutboxMessage) -> None:
        attempt = message.attempts + 1
        try:
            status = self._post(message.url, message.body.encode())
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc)) or type(exc).__name__
        trail = Trail(message.trail)
        try:
            if not error:
                self._finish(message.id)
                self._record(trail, "alert.sent", "success", message, attempt, "")
            elif attempt >= ATTEMPTS:
                self._finish(message.id)
                logger.error(
                    "webhook %s failed for %s after %d attempts: %s",
                    message.url, message.kind, attempt, error,
                )  # fmt: skip
                self._record(trail, "alert.failed", "failure", message, attempt, error)
            else:
                delay = FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1)
                with self._store.transaction() as db:
                    db.execute(
                        update(OutboxMessage).where(OutboxMessage.id == message.id).values(
                            attempts=attempt, due_at=self._clock() + delay, claimed_until=0.0,
                            last_error=error,
                        )
                    )  # fmt: skip
        except StoreError as exc:
            # The claim runs out and the alert is tried again (at least once, never lost).
            logger.error("cannot update the alert outbox: %s", exc)

    def _finish(self, message_id: int) -> None:
        with self._store.transaction() as db:
            db.execute(delete(OutboxMessage).where(OutboxMessage.id == message_id))

    def _record(
        self, trail: Trail, action: str, outcome: str, message: OutboxMessage, attempts: int,
        error: str,
    ) -> None:  # fmt: skip
        try:
            self._audit.record(trail, AuditEvent(
                actor="gateway", actor_type=ActorType.GATEWAY, action=action, outcome=outcome,
                target=message.url, reason=error, authority=message.authority,
                details={"alert": message.kind, "attempts": attempts},
            ))  # fmt: skip
        except AuditWriteFailed:
            logger.exception("could not audit the webhook outcome")


def _post_json(url: str, data: bytes) -> int:
    """POST ``data`` as JSON; the HTTP status (urllib raises for 4xx/5xx)."""
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        return int(response.status)
