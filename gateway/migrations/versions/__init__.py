"""Schema revisions, oldest first (see :mod:`gateway.schema` for how to add one)."""
