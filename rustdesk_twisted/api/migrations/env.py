"""Alembic's environment for the API schema, run by :mod:`rustdesk_twisted.api.migrate` only.

The caller hands over an open connection in ``config.attributes["connection"]``
and owns its transaction; ``render_as_batch`` makes generated revisions
rebuild tables where SQLite cannot ALTER them, which PostgreSQL runs as
plain ALTERs.
"""

from alembic import context

from rustdesk_twisted.api.migrate import VERSION_TABLE
from rustdesk_twisted.api.tables import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  version_table=VERSION_TABLE, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
