"""Sign-in throttles per (user name, source) and per source; room for encrypted TOTP secrets.

The per-user lockout counters (``auth_failures``) are replaced by
``auth_throttles``; recent failures are forgotten by the upgrade. The TOTP
secret column grows to hold a secret encrypted at rest (``pamgate db upgrade``
encrypts the existing ones after the schema revisions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("auth_failures")
    op.create_table(
        "auth_throttles",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("blocked_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "source", "user"),
    )
    with op.batch_alter_table("users") as batch:
        batch.alter_column(
            "totp_secret", existing_type=sa.String(length=64), type_=sa.String(length=255),
            existing_nullable=False,
        )  # fmt: skip


def downgrade() -> None:
    # Secrets must be decrypted first (they no longer fit in 64 characters).
    with op.batch_alter_table("users") as batch:
        batch.alter_column(
            "totp_secret", existing_type=sa.String(length=255), type_=sa.String(length=64),
            existing_nullable=False,
        )  # fmt: skip
    op.drop_table("auth_throttles")
    op.create_table(
        "auth_failures",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
