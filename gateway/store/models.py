"""Database tables of the access domain (SQLAlchemy 2.x declarative models).

The lanes, the CLI and the console never touch these directly: they call the
domain services (:mod:`gateway.domain.identities`, :mod:`gateway.domain.lockout`,
:mod:`gateway.domain.sessions`, :mod:`gateway.crypto.upstream_ca`), which own the rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no time zones and hands back naive values; normalising here
    means no caller ever compares naive with aware times.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of all pamgate tables."""


class User(Base):
    """A human who logs in on the human lane."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: argon2id hash; None for a key-only user.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    #: The TOTP secret, encrypted (gateway.crypto.secret_box); never stored in clear.
    totp_secret: Mapped[str] = mapped_column(String(255))
    #: Last TOTP time step accepted; a code for this step or earlier is a replay.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    keys: Mapped[list[UserKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class UserKey(Base):
    """A public key registered as a user's first factor."""

    __tablename__ = "user_keys"
    __table_args__ = (UniqueConstraint("user_id", "key_data"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: ``<type> <base64>`` without the comment; compared byte for byte.
    key_data: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(String(255), default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="keys")


class AuthThrottle(Base):
    """Recent failed sign-ins for one (user name, source) pair or one source.

    ``level`` is the number of failures still remembered: it falls by one
    every whole forget period (applied when the row is next read), counted
    from ``updated_at``.
    """

    __tablename__ = "auth_throttles"

    #: ``pair`` (one user name from one source) or ``source`` (any user name).
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: The source: an IPv4 address, an IPv6 network, or ``console:HOST`` and the like.
    source: Mapped[str] = mapped_column(String(300), primary_key=True)
    #: The user name for ``pair``; empty for ``source``.
    user: Mapped[str] = mapped_column(String(200), primary_key=True)
    level: Mapped[float] = mapped_column(default=0.0)
    #: Where the current forget period started (epoch seconds).
    updated_at: Mapped[float] = mapped_column(default=0.0)
    #: No attempt is checked before this time (epoch seconds).
    blocked_until: Mapped[float] = mapped_column(default=0.0)


class IssuedCertificate(Base):
    """Every certificate a gateway CA signed. The row id is the serial."""

    __tablename__ = "issued_certificates"
    __table_args__ = (Index("ix_issued_certificates_ca_principal", "ca", "principal"),)

    serial: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ca: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(255))
    principal: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(64))
    valid_after: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_before: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Machine CA only: the credential line (join or issue) and its generation.
    lineage_id: Mapped[int | None] = mapped_column(Integer, index=True)
    generation: Mapped[int | None] = mapped_column(Integer)
    #: SHA256 fingerprint of the certified key (machine and login CAs).
    key_fingerprint: Mapped[str | None] = mapped_column(String(128))
    #: Login CA only: the address the certificate is bound to (``source-address``), if any.
    source_address: Mapped[str | None] = mapped_column(String(64))
    #: Login CA only: when the sign-in with both factors behind the certificate happened.
    mfa_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Login CA only: when and why it was revoked (logout, user disabled, MFA reset).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(255))


class SessionRecord(Base):
    """One relayed session, live or finished."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_node_status", "node", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lane: Mapped[str] = mapped_column(String(16))
    node: Mapped[str] = mapped_column(String(64))
    #: The relay worker process of ``node`` that holds the session (0..N-1); None when
    #: the node relays in one process, or for sessions from before workers.
    worker: Mapped[int | None] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    #: What allowed the session (for now, the allow-list group).
    authority: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    command: Mapped[str | None] = mapped_column(Text)
    #: ``live``, ``closed``, ``failed`` or ``interrupted``.
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bytes_to_target: Mapped[int] = mapped_column(Integer, default=0)
    bytes_from_target: Mapped[int] = mapped_column(Integer, default=0)
    exit_status: Mapped[int | None] = mapped_column(Integer)
    exit_signal: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    #: The recording file (relative to the recordings folder) and its sealed sha256.
    recording_path: Mapped[str | None] = mapped_column(Text)
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    #: Set when someone asks for a live session to end; its node ends it within ~2 s.
    terminate_reason: Mapped[str | None] = mapped_column(Text)
    terminate_by: Mapped[str | None] = mapped_column(String(255))
    #: When the final extraction pass stored the session's command log (read from the whole
    #: sealed recording). None: the log holds what live passes found so far, if anything.
    commands_extracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SessionCommand(Base):
    """A command line extracted from a session's recording (an audit aid)."""

    __tablename__ = "session_commands"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    #: Seconds from the start of the recording (where replay jumps to).
    offset: Mapped[float] = mapped_column()
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)
    #: Which witness found it: screen+keys, screen, keys, input (no terminal), request (exec).
    source: Mapped[str] = mapped_column(String(16), server_default="screen")
    #: Why only one witness saw it, or what the other one said ("" if they agreed).
    note: Mapped[str] = mapped_column(Text, server_default="")


class _AuditEventColumns:
    """Columns shared by the two audit trails (each trail has its own table and chain)."""

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: ISO 8601 UTC with microseconds, stored as text so the hash covers exact bytes.
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(255))
    actor_type: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    account: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    authority: Mapped[str | None] = mapped_column(String(255))
    #: Canonical JSON object with action-specific fields.
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class HumanAuditEvent(_AuditEventColumns, Base):
    """The human trail: people, their sessions, and administration of people."""

    __tablename__ = "audit_human"


class MachineAuditEvent(_AuditEventColumns, Base):
    """The machine trail: non-human identities and their sessions."""

    __tablename__ = "audit_machine"


class AuditHead(Base):
    """The newest event of each trail. Appends lock this row, so chains never fork."""

    __tablename__ = "audit_heads"

    trail: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AccessRequest(Base):
    """A request for access under an approval rule."""

    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    rule_id: Mapped[str] = mapped_column(String(64))
    approver_groups: Mapped[list[str]] = mapped_column(JSON)
    approvals_required: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    #: ``pending``, ``approved``, ``denied``, ``expired`` or ``cancelled``.
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    grant_id: Mapped[int | None] = mapped_column(Integer)


class RequestApproval(Base):
    """One approver's approval of a request."""

    __tablename__ = "request_approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    approver: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccessGrant(Base):
    """Time-bounded access for one user to one target account."""

    __tablename__ = "access_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(Integer)
    #: ``approval`` (break-glass comes later).
    kind: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(255))
    revoke_reason: Mapped[str] = mapped_column(Text, default="")
    #: The break-glass case, for an emergency grant.
    exception_id: Mapped[int | None] = mapped_column(Integer)


class BreakGlassCase(Base):
    """One use of break-glass, awaiting (or given) its after-the-fact review."""

    __tablename__ = "breakglass_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text)
    grant_id: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    review_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ``justified`` or ``unjustified`` once reviewed.
    verdict: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")


class NonHumanIdentity(Base):
    """A service account, CI pipeline or agent, with its owners and scope."""

    __tablename__ = "machine_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(255))
    tech_owner: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(Text)
    #: ``[{"target": ..., "account": ...}]``
    targets: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    #: Exact command strings, or ``re:PATTERN`` (matched against the whole command).
    commands: Mapped[list[str]] = mapped_column(JSON)
    sources: Mapped[list[str]] = mapped_column(JSON)
    allow_pty: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_sftp: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Directories SFTP (and scp/rsync) may touch; NULL means wherever the account can.
    sftp_paths: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    max_ttl_seconds: Mapped[int] = mapped_column(Integer)
    review_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ``active``, ``suspended`` or ``offboarded`` (final).
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MachineLineage(Base):
    """One workload's line of certificates: a join (or a hand issue), then its renewals.

    ``generation`` is that of the newest certificate. Presenting an older
    one after a renewal means the credential was copied.
    """

    __tablename__ = "machine_lineages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nhi: Mapped[str] = mapped_column(String(64), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    #: ``issue`` (by an administrator) or ``join`` (with a join token).
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MachineJoinToken(Base):
    """A join token: a workload trades it (and its public key) for a first certificate."""

    __tablename__ = "machine_join_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nhi: Mapped[str] = mapped_column(String(64), index=True)
    #: sha256 of the secret part; the token itself is shown once and never stored.
    secret_sha256: Mapped[str] = mapped_column(String(64))
    uses_left: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MachineRevocation(Base):
    """A revoked machine certificate serial, key id or key (what the KRL holds)."""

    __tablename__ = "machine_revocations"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``serial``, ``key_id`` or ``key`` (value: the public key line, ``TYPE BASE64``).
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    #: SHA256 fingerprint, for ``key`` entries.
    fingerprint: Mapped[str | None] = mapped_column(String(128), index=True)
    nhi: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    revoked_by: Mapped[str] = mapped_column(String(255))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GatewayNodeRecord(Base):
    """A gateway node sharing this database, and its last heartbeat."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: ``up``, ``stopped`` (a clean stop) or ``dead`` (missed heartbeats; taken over).
    status: Mapped[str] = mapped_column(String(16))
    #: Which node declared it dead, and when.
    taken_over_by: Mapped[str | None] = mapped_column(String(64))
    taken_over_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: sha256 of its targets and rules (see gateway.domain.node_identity).
    policy_digest: Mapped[str | None] = mapped_column(String(64))
    #: Fingerprints of the keys every node must share, as JSON {name: fingerprint}.
    key_fingerprints: Mapped[str | None] = mapped_column(Text)
    #: When an operator asked the node to re-read its policy (``pamgate node reload``);
    #: the node clears it once it has. Nodes of older releases ignore it.
    reload_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set while the node drains (``pamgate node drain``): it refuses new sessions and ends
    #: the live ones at this time, then stops.
    drain_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditCheckpointRecord(Base):
    """A signed audit checkpoint of one node: in ``trail``, event ``seq`` had ``hash``.

    Each node writes its own rows (keyed by its name), so ``pamgate audit verify``
    on any node checks every node's checkpoints.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    trail: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    #: When it was signed, ``YYYY-MM-DDTHH:MM:SSZ`` as signed.
    ts: Mapped[str] = mapped_column(String(32))
    #: Ed25519 signature (base64) over the other fields, by the node's audit signing key.
    signature: Mapped[str] = mapped_column(Text)


class OutboxMessage(Base):
    """A webhook alert waiting for delivery: written with (or right after) the action it
    announces, delivered by a running node's delivery worker with bounded retries.

    A durable queue rather than a thread per alert, so an unreachable webhook
    never holds anyone up, and alerts survive a restart or a CLI process that exits.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    kind: Mapped[str] = mapped_column(String(64))
    #: The JSON body to POST.
    body: Mapped[str] = mapped_column(Text)
    #: The trail the delivery's outcome is audited in, and the authority it names.
    trail: Mapped[str] = mapped_column(String(16))
    authority: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Not tried again before this time (epoch seconds).
    due_at: Mapped[float] = mapped_column(default=0.0, index=True)
    #: A node delivering it holds it until this time (epoch seconds), so two do not.
    claimed_until: Mapped[float] = mapped_column(default=0.0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyslogCursor(Base):
    """How far each trail has been copied to the syslog collector.

    The trail itself is the queue: the forwarder sends the events after ``seq``
    and moves the cursor, so records written while the collector was away
    are sent when it is back. One node at a time holds the lease.
    """

    __tablename__ = "syslog_cursors"

    trail: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    leased_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[float] = mapped_column(default=0.0)


class ReviewCampaign(Base):
    """An entitlement review: one item per identity, to be decided by a due date."""

    __tablename__ = "review_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``machines``, ``humans`` or ``all``.
    scope: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Days without use that count as stale in the evidence the items carry.
    stale_days: Mapped[int] = mapped_column(Integer)


class ReviewItem(Base):
    """One identity in a campaign: who reviews it, on what evidence, and what they decided."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("review_campaigns.id"), index=True)
    #: ``human`` or ``machine``: also the audit trail its events go to.
    identity_type: Mapped[str] = mapped_column(String(16))
    identity: Mapped[str] = mapped_column(String(64), index=True)
    #: Who may decide: user names and ``group:NAME`` entries.
    reviewers: Mapped[list[str]] = mapped_column(JSON)
    #: ``pending``, ``escalated`` (overdue; still decidable), ``deciding`` (a decision being
    #: carried out) or ``decided``.
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: The access, use and suggestion the reviewer saw, fixed when the item was opened.
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: ``keep``, ``narrow``, ``suspend`` or ``offboard``.
    decision: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What the decision changed (the scope applied, the status set).
    applied: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
