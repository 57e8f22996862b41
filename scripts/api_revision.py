"""Write the next API schema revision: what tables.py has that the newest revision lacks.

    .venv/bin/python scripts/api_revision.py "add devices.location"

Builds a scratch SQLite database at the newest revision, lets Alembic's
autogenerate compare it with tables.py and writes
rustdesk_twisted/api/migrations/versions/NNNN_<message>.py.  Read it before
committing: autogenerate cannot tell a rename from a drop and an add, and a new
NOT NULL column needs a server_default for the rows already there.
"""

import os
import sys
import tempfile

from alembic import command

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rustdesk_twisted.api import migrate  # noqa: E402
from rustdesk_twisted.api.db import Database, engine_url  # noqa: E402


def main(message):
    with tempfile.TemporaryDirectory() as scratch:
        database = Database(engine_url(os.path.join(scratch, "scratch.sqlite3"), scratch), None,
                            in_thread_pool=False)
        migrate.upgrade(database)
        try:
            with database.engine.connect() as connection:
                script = command.revision(migrate.alembic_config(connection), message,
                                          autogenerate=True,
                                          rev_id=f"{len(migrate.revisions()) + 1:04d}")
        finally:
            database.close()
    print(script.path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
