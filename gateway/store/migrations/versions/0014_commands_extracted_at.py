"""When each session's command log became final.

Live extraction passes store a shell session's commands while it runs; just
after it ends, the final pass reads the whole sealed recording and replaces
them. ``sessions.commands_extracted_at`` is set by the final pass, in the
same transaction as its rows, so a reader can tell the definitive log from a
live pass's prefix (a session still being extracted, or one whose
extraction failed). Nullable and additive; sessions that had ended before
this revision are taken as extracted (their final pass ran at their end,
unless it failed, which was not recorded), and get their end time.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("commands_extracted_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE sessions SET commands_extracted_at = ended_at WHERE status <> 'live'")


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("commands_extracted_at")
