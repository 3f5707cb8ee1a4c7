"""Which witness found each logged command, and what the witnesses disagreed on.

``session_commands.source`` is ``screen+keys``, ``screen``, ``keys`` (see
recordings/commands.py), ``input`` (a shell without a terminal, read from its
input lines) or ``request`` (an exec command); ``note`` says why only one
witness saw it, or what the other one said. Rows from before the upgrade
were read off the screen.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("session_commands") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="screen")
        )
        batch.add_column(sa.Column("note", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("session_commands") as batch:
        batch.drop_column("note")
        batch.drop_column("source")
