"""Persistence: SQLAlchemy schema + Alembic migrations, content-addressed blobs, queries."""
