"""The database: ORM models, schema checks and Alembic migrations."""
