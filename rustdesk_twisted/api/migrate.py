"""Bring an API database to the current schema (run at start and by ``rustdesk-admin``)."""

from .tables import metadata


def upgrade(database):
    """Create what is missing; the first schema version, before the first migration."""
    metadata.create_all(database.engine)
