"""Login certificates for people (``pamgate-login``): their source binding, when the MFA
behind each happened, and their revocation; issued certificates found by CA and principal.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_certificates") as batch:
        batch.add_column(sa.Column("source_address", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("mfa_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_reason", sa.String(length=255), nullable=True))
        batch.create_index("ix_issued_certificates_ca_principal", ["ca", "principal"])


def downgrade() -> None:
    with op.batch_alter_table("issued_certificates") as batch:
        batch.drop_index("ix_issued_certificates_ca_principal")
        batch.drop_column("revoked_reason")
        batch.drop_column("revoked_at")
        batch.drop_column("mfa_at")
        batch.drop_column("source_address")
