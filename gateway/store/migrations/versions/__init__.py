"""Schema revisions, oldest first (see :mod:`gateway.store.schema` for how to add one)."""
