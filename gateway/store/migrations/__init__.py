"""Alembic schema migrations of the store (see :mod:`gateway.store.schema`)."""
