"""Metadata store: SQLAlchemy 2 schema, sessions and Alembic migrations."""

from kenning.stores.metadata.database import Database

__all__ = ["Database"]
