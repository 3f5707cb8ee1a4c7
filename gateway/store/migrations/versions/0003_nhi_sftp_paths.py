"""The directories an NHI's SFTP, scp and rsync are held to (``machine add --sftp-path``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machine_identities") as batch:
        batch.add_column(sa.Column("sftp_paths", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("machine_identities") as batch:
        batch.drop_column("sftp_paths")
