"""Baseline: the schema as it stood when migrations arrived (or adopt an older store).

Revision ID: 0001
Revises:
Create Date: 2026-11-23

A store created before migrations (by ``create_all``) has these tables but
no ``alembic_version``; it may lack nullable columns added since. This
revision therefore creates each table that is missing and adds each missing
nullable column to the tables that exist, so a fresh database and an old
data directory both end up exactly here. A missing NOT NULL column cannot be
filled in safely and stops the upgrade.

The tables are written out in full (not taken from gateway.store.models) so this
revision never changes when the models do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = sa.MetaData()

sa.Table(
    "access_grants",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("user", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=64), nullable=False),
    sa.Column("account", sa.String(length=64), nullable=False),
    sa.Column("rule_id", sa.String(length=64), nullable=False),
    sa.Column("request_id", sa.Integer(), nullable=True),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.String(length=255), nullable=True),
    sa.Column("revoke_reason", sa.Text(), nullable=False),
    sa.Column("exception_id", sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_access_grants_user", "user", unique=False),
)
sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("user", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=64), nullable=False),
    sa.Column("account", sa.String(length=64), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("rule_id", sa.String(length=64), nullable=False),
    sa.Column("approver_groups", sa.JSON(), nullable=False),
    sa.Column("approvals_required", sa.Integer(), nullable=False),
    sa.Column("duration_seconds", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decided_by", sa.String(length=64), nullable=True),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("grant_id", sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_access_requests_status", "status", unique=False),
    sa.Index("ix_access_requests_user", "user", unique=False),
)
sa.Table(
    "audit_heads",
    metadata,
    sa.Column("trail", sa.String(length=16), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("hash", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("trail"),
)
sa.Table(
    "audit_human",
    metadata,
    sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("ts", sa.String(length=40), nullable=False),
    sa.Column("actor", sa.String(length=255), nullable=False),
    sa.Column("actor_type", sa.String(length=16), nullable=False),
    sa.Column("action", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=255), nullable=True),
    sa.Column("account", sa.String(length=64), nullable=True),
    sa.Column("session_id", sa.String(length=64), nullable=True),
    sa.Column("source", sa.String(length=64), nullable=True),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("authority", sa.String(length=255), nullable=True),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(length=64), nullable=False),
    sa.Column("hash", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("seq"),
)
sa.Table(
    "audit_machine",
    metadata,
    sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
    sa.Column("ts", sa.String(length=40), nullable=False),
    sa.Column("actor", sa.String(length=255), nullable=False),
    sa.Column("actor_type", sa.String(length=16), nullable=False),
    sa.Column("action", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=255), nullable=True),
    sa.Column("account", sa.String(length=64), nullable=True),
    sa.Column("session_id", sa.String(length=64), nullable=True),
    sa.Column("source", sa.String(length=64), nullable=True),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("authority", sa.String(length=255), nullable=True),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(length=64), nullable=False),
    sa.Column("hash", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("seq"),
)
sa.Table(
    "auth_failures",
    metadata,
    sa.Column("key", sa.String(length=300), nullable=False),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("window_start", sa.Float(), nullable=False),
    sa.Column("locked_until", sa.Float(), nullable=False),
    sa.Column("lockouts", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("key"),
)
sa.Table(
    "breakglass_cases",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("user", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=64), nullable=False),
    sa.Column("account", sa.String(length=64), nullable=False),
    sa.Column("rule_id", sa.String(length=64), nullable=False),
    sa.Column("justification", sa.Text(), nullable=False),
    sa.Column("grant_id", sa.Integer(), nullable=False),
    sa.Column("source", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("review_due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reviewed_by", sa.String(length=64), nullable=True),
    sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("verdict", sa.String(length=16), nullable=True),
    sa.Column("note", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_breakglass_cases_user", "user", unique=False),
)
sa.Table(
    "issued_certificates",
    metadata,
    sa.Column("serial", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("ca", sa.String(length=32), nullable=False),
    sa.Column("key_id", sa.String(length=255), nullable=False),
    sa.Column("principal", sa.String(length=64), nullable=False),
    sa.Column("session_id", sa.String(length=64), nullable=True),
    sa.Column("valid_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lineage_id", sa.Integer(), nullable=True),
    sa.Column("generation", sa.Integer(), nullable=True),
    sa.Column("key_fingerprint", sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint("serial"),
    sa.Index("ix_issued_certificates_lineage_id", "lineage_id", unique=False),
)
sa.Table(
    "machine_identities",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("owner", sa.String(length=255), nullable=False),
    sa.Column("tech_owner", sa.String(length=255), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=False),
    sa.Column("targets", sa.JSON(), nullable=False),
    sa.Column("commands", sa.JSON(), nullable=False),
    sa.Column("sources", sa.JSON(), nullable=False),
    sa.Column("allow_pty", sa.Boolean(), nullable=False),
    sa.Column("allow_sftp", sa.Boolean(), nullable=False),
    sa.Column("max_ttl_seconds", sa.Integer(), nullable=False),
    sa.Column("review_by", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("status_reason", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name"),
)
sa.Table(
    "machine_join_tokens",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("nhi", sa.String(length=64), nullable=False),
    sa.Column("secret_sha256", sa.String(length=64), nullable=False),
    sa.Column("uses_left", sa.Integer(), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(length=255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_machine_join_tokens_nhi", "nhi", unique=False),
)
sa.Table(
    "machine_lineages",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("nhi", sa.String(length=64), nullable=False),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("origin", sa.String(length=16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_machine_lineages_nhi", "nhi", unique=False),
)
sa.Table(
    "machine_revocations",
    metadata,
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("fingerprint", sa.String(length=128), nullable=True),
    sa.Column("nhi", sa.String(length=64), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("revoked_by", sa.String(length=255), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("kind", "value"),
    sa.Index("ix_machine_revocations_fingerprint", "fingerprint", unique=False),
)
sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(length=64), nullable=False),
    sa.Column("lane", sa.String(length=16), nullable=False),
    sa.Column("node", sa.String(length=64), nullable=False),
    sa.Column("user", sa.String(length=64), nullable=False),
    sa.Column("target", sa.String(length=64), nullable=False),
    sa.Column("account", sa.String(length=64), nullable=False),
    sa.Column("source", sa.String(length=64), nullable=False),
    sa.Column("authority", sa.String(length=255), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("command", sa.Text(), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("bytes_to_target", sa.Integer(), nullable=False),
    sa.Column("bytes_from_target", sa.Integer(), nullable=False),
    sa.Column("exit_status", sa.Integer(), nullable=True),
    sa.Column("exit_signal", sa.String(length=32), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("recording_path", sa.Text(), nullable=True),
    sa.Column("recording_sha256", sa.String(length=64), nullable=True),
    sa.Column("terminate_reason", sa.Text(), nullable=True),
    sa.Column("terminate_by", sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("password_hash", sa.String(length=255), nullable=True),
    sa.Column("totp_secret", sa.String(length=64), nullable=False),
    sa.Column("totp_last_step", sa.Integer(), nullable=True),
    sa.Column("groups", sa.JSON(), nullable=False),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name"),
)
sa.Table(
    "request_approvals",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("request_id", sa.Integer(), nullable=False),
    sa.Column("approver", sa.String(length=64), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["request_id"],
        ["access_requests.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("request_id", "approver"),
    sa.Index("ix_request_approvals_request_id", "request_id", unique=False),
)
sa.Table(
    "session_commands",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("session_id", sa.String(length=64), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("offset", sa.Float(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("session_id", "seq"),
    sa.Index("ix_session_commands_session_id", "session_id", unique=False),
)
sa.Table(
    "user_keys",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("key_data", sa.Text(), nullable=False),
    sa.Column("fingerprint", sa.String(length=128), nullable=False),
    sa.Column("comment", sa.String(length=255), nullable=False),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("user_id", "key_data"),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        for column in missing:
            if not column.nullable:
                raise RuntimeError(
                    f"cannot adopt this database: table {table.name} lacks the NOT NULL "
                    f"column {column.name}"
                )
        if missing:
            with op.batch_alter_table(table.name) as batch:
                for column in missing:
                    batch.add_column(sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    for table in reversed(metadata.sorted_tables):
        op.drop_table(table.name)
