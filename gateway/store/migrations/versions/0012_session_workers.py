"""Which relay worker process of its node holds each session.

``sessions.worker`` is the index (0..N-1) of the ``pamgate serve`` worker that
relays the session, so that when one worker dies the node marks only that
worker's sessions interrupted. Nullable and additive: a release from before
workers leaves it empty and reads around it.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("worker", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("worker")
