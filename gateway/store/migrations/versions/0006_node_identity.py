"""Each node's policy digest and key fingerprints, so nodes that disagree are caught.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: a node on the previous release keeps running on this schema
    # (expand first; nothing is removed).
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("policy_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("key_fingerprints", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("key_fingerprints")
        batch.drop_column("policy_digest")
