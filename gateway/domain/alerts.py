"""Alerts: a JSON POST to configured webhooks, with retries, that never blocks anyone.

Used for new requests, decisions and break-glass. Each alert is sent from a
background thread; a failing or slow webhook is retried with backoff and
then given up, and the outcome (``alert.sent`` / ``alert.failed``) is
written to the human audit trail. An emergency never waits for a webhook.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, AuditWriteFailed, Trail

logger = logging.getLogger("pamgate.alerts")

ATTEMPTS = 4
TIMEOUT_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.5


class WebhookAlerts:
    """Posts alerts to every configured URL, in the background."""

    def __init__(self, urls: list[str], audit: AuditLog) -> None:
        self._urls = list(urls)
        self._audit = audit
        self._deliveries: list[threading.Thread] = []

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
        logger.log(level, "ALERT %s", json.dumps(body, default=str))
        for url in self._urls:
            thread = threading.Thread(
                target=self._deliver, args=(url, kind, body, authority, trail), daemon=True,
                name=f"webhook-{kind}",
            )  # fmt: skip
            thread.start()
            self._deliveries = [t for t in self._deliveries if t.is_alive()] + [thread]

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the deliveries under way (a short-lived process,
        such as a CLI command, would otherwise end them when it exits)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._deliveries):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _deliver(
        self, url: str, kind: str, body: dict[str, Any], authority: str | None, trail: Trail
    ) -> None:
        data = json.dumps(body, default=str).encode()
        delay, error = FIRST_BACKOFF_SECONDS, ""
        for attempt in range(1, ATTEMPTS + 1):
            request = urllib.request.Request(
                url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                    if 200 <= response.status < 300:
                        self._record(
                            trail, "alert.sent", "success", kind, url, attempt, "", authority
                        )
                        return
                    error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        logger.error("webhook %s failed for %s after %d attempts: %s", url, kind, ATTEMPTS, error)
        self._record(trail, "alert.failed", "failure", kind, url, ATTEMPTS, error, authority)

    def _record(
        self, trail: Trail, action: str, outcome: str, kind: str, url: str, attempts: int,
        error: str, authority: str | None,
    ) -> None:  # fmt: skip
        try:
            self._audit.record(trail, AuditEvent(
                actor="gateway", actor_type=ActorType.GATEWAY, action=action, outcome=outcome,
                target=url, reason=error, authority=authority,
                details={"alert": kind, "attempts": attempts},
            ))  # fmt: skip
        except AuditWriteFailed:
            logger.exception("could not audit the webhook outcome")
