"""Alembic migrations of the job database (installed as ``batchfuse.migrations``)."""
