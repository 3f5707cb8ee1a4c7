"""Reload and drain requests for a node, and each node's signed audit checkpoints.

``nodes.reload_requested_at`` and ``nodes.drain_deadline`` carry ``pamgate node
reload`` and ``pamgate node drain`` to a node on another host; the table
``audit_checkpoints`` holds every node's signed checkpoints, keyed by node name.
Additive (expand only): a node of the previous release keeps running on this
schema and never reads them.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("reload_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("drain_deadline", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("trail", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_checkpoints_node", "audit_checkpoints", ["node"])


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoints_node", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("drain_deadline")
        batch.drop_column("reload_requested_at")
