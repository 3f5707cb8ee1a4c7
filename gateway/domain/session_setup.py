"""Session setup and teardown: what every relayed session does before its first byte and
after its last, whichever lane it came in on.

Setup (:meth:`SessionSetup.open`), in this order, so that nothing reaches a
target unrecorded: a new session id; the credential for the target (a
certificate minted for this session by the upstream CA, or, for a legacy
target, its static key, flagged as an exception); the recording; then the
session's row and its ``session.start`` event in one transaction. If the
recording or the ledger cannot be written, the session is refused.

Teardown (:meth:`SessionSetup.close`), once: seal the recording, write the
``session.end`` event with its sha256, then extract the commands.

The protocol side (:mod:`gateway.ssh.relay`) connects to the target with
the credential and moves the bytes; it never decides any of this.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, TargetSettings
from gateway.crypto.upstream_ca import UpstreamCA, UpstreamCredential
from gateway.domain.recordings.indexing import command_indexer
from gateway.domain.recordings.service import RecordingService
from gateway.domain.recordings.tap import SessionTap
from gateway.domain.sessions import SessionEnd, SessionLedger, SessionStart
from gateway.errors import PamgateError, StoreError

logger = logging.getLogger("pamgate.sessions")


class SessionRefused(PamgateError):
    """The session cannot be set up (it could not be recorded); nothing reached the target."""


@dataclass(frozen=True)
class Terminal:
    """The pty a client asked for (None for exec and subsystems without one)."""

    term_type: str
    width: int
    height: int


@dataclass
class OpenedSession:
    """A session that is set up: recorded, in the ledger, with its credential for the target."""

    session_id: str
    start: SessionStart
    #: None when the session reaches the gateway itself (console, admin command).
    target: TargetSettings | None
    #: The minted certificate, or None for a legacy target or the gateway itself.
    credential: UpstreamCredential | None
    #: The static key of a legacy target (``upstream_auth = "key"``), else None.
    legacy_key_path: Path | None
    tap: SessionTap
    closed: bool = False


class SessionSetup:
    """Sets sessions up and closes them out (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        ledger: SessionLedger,
        recordings: RecordingService,
        upstream_ca: Callable[[], UpstreamCA],
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._recordings = recordings
        self._upstream_ca = upstream_ca

    def open(
        self, start: SessionStart, target: TargetSettings | None, terminal: Terminal | None
    ) -> OpenedSession:
        """Set up a session for ``start`` towards ``target`` (None: the gateway itself, for
        the console or an admin command, with no credential); SessionRefused if it cannot be
        recorded. Blocking (disk, database, signing): run it off the event loop."""
        session_id = self._ledger.new_session_id()
        if target is not None and target.upstream_auth == "key":
            # A static target secret is a documented exception; say so in the record.
            start = dataclasses.replace(
                start, authority=start.authority + ";exception=legacy-static-key"
            )
        credential, legacy_key = None, None
        if target is not None and target.upstream_auth == "certificate":
            credential = self._upstream_ca().mint_upstream_certificate(
                user=start.user, account=start.account, session_id=session_id
            )
        elif target is not None:
            legacy_key = self._config.resolve_path(target.key_file)  # type: ignore[arg-type]
            logger.warning(
                'EXCEPTION: target %s uses a static legacy key (upstream_auth = "key")', target.name
            )
        recordings = self._recordings
        width, height = (terminal.width, terminal.height) if terminal else (80, 24)
        writer = recordings.start(
            session_id, width=width, height=height,
            term=terminal.term_type if terminal else None,
            metadata=self._metadata(session_id, start, pty=terminal is not None),
        )  # fmt: skip
        try:
            self._ledger.open(session_id, start, recording_path=recordings.relative(writer.path))
        except StoreError as exc:
            recordings.discard(writer)
            logger.error("refusing session: cannot record it: %s", exc)
            raise SessionRefused(
                "the session cannot be recorded right now, so it is refused"
            ) from None
        cap = None if terminal is not None else recordings.exec_payload_cap
        tap = SessionTap(writer, exec_payload_cap=cap)
        return OpenedSession(session_id, start, target, credential, legacy_key, tap)

    def close(self, session: OpenedSession, end: SessionEnd) -> None:
        """Seal the recording and record the end (with the recording's sha256).

        Once per session; later calls do nothing. Blocking: run it off the event loop,
        then :meth:`extract_commands` (kept apart so that extraction, the slow part of a
        large session's end, runs on its own threads).
        """
        if session.closed:
            return
        session.closed = True
        recordings, tap = self._recordings, session.tap
        details: dict[str, object] = dict(tap.summary())
        sealed = recordings.seal(session.session_id, tap.writer)
        if sealed is None:
            details["recording_incomplete"] = tap.writer.failed or "unknown error"
        else:
            end = dataclasses.replace(
                end, recording_path=recordings.relative(sealed.path),
                recording_sha256=sealed.sha256,
            )  # fmt: skip
        end = dataclasses.replace(end, details=details)
        self._ledger.close(session.session_id, session.start, end)

    def extract_commands(self, session: OpenedSession) -> None:
        """Extract the commands of a closed session (logged, not raised, if that fails)."""
        try:
            command_indexer(self._config).index(session.session_id)
        except (PamgateError, OSError) as exc:
            logger.warning("cannot extract commands of session %s: %s", session.session_id, exc)

    def _metadata(self, session_id: str, start: SessionStart, *, pty: bool) -> dict[str, Any]:
        return {
            # Without a pty the command log is read from the input lines, not a screen.
            "pty": pty,
            "session": session_id,
            "lane": start.lane,
            "user": start.user,
            "target": start.target,
            "account": start.account,
            "source": start.source,
            "authority": start.authority,
            # Emergency access is flagged for the reviewers who replay it.
            "flagged": start.authority.startswith("breakglass:"),
            "kind": start.kind,
            "command": start.command,
            "node": self._config.node_name,
        }
