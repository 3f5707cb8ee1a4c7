"""Alembic environment: runs revisions on the connection pamgate hands over.

pamgate drives Alembic from Python (:mod:`gateway.store.schema`), never from an
``alembic.ini``: the connection comes in ``config.attributes["connection"]``.
Batch mode lets the same revision alter tables on SQLite, which has only a
limited ``ALTER TABLE``.
"""

from __future__ import annotations

from alembic import context

from gateway.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=False,
)
with context.begin_transaction():
    context.run_migrations()
