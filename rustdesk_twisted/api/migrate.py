"""Bring an API database to this code's schema, or refuse it (at start and by ``rustdesk-admin``).

The schema's history is a chain of Alembic revisions in ``migrations/versions``
(shipped inside the package); a database records where it stands in its
``api_schema_version`` table.  Before anything is written the database is
examined read-only, and then:

- no tables at all: the schema is created at the newest revision;
- ours at an older revision: a SQLite file is first copied to
  ``FILE.backup-REVISION`` (0600), then upgraded in one transaction;
- ours at the newest revision: left alone;
- ours at a revision this code does not know (a newer release upgraded it),
  or tables without our revision table (another application's): refused
  with one sentence, untouched.

Whoever changes ``tables.py`` adds the revision that makes the change:
``.venv/bin/python scripts/api_revision.py "what changed"`` writes it (review it);
``tests.test_api_migrate`` fails until the chain creates what tables.py says.
"""

import os
import sqlite3

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .. import __version__
from ..hbbs import dbfile
from ..hbbs.dbfile import DatabaseRefused
from ..logs import Logger
from .db import reason, where

VERSION_TABLE = "api_schema_version"
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")

log = Logger()


def alembic_config(connection=None, scripts=MIGRATIONS):
    """Alembic's configuration, built in code: no alembic.ini to ship or to find."""
    config = Config()
    config.set_main_option("script_location", scripts)
    config.attributes["connection"] = connection
    return config


def revisions(scripts=MIGRATIONS):
    """The revisions this code knows, oldest first."""
    return [script.revision for script in reversed(list(
        ScriptDirectory.from_config(alembic_config(scripts=scripts)).walk_revisions()))]


def examine(url):
    """``(revision or None, table names)`` of the database at ``url``, read without writing.

    A SQLite file that is absent or empty has no tables; one that is no SQLite
    database, or a server that cannot be reached, raises DatabaseRefused.
    """
    if url.get_backend_name() == "sqlite":
        conn = dbfile.open_read_only(url.database, setting="API_DB_URL")
        if conn is None:
            return None, set()
        engine = create_engine("sqlite://", creator=lambda: conn, poolclass=NullPool)
    else:
        engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
    except DBAPIError as e:
        raise DatabaseRefused(f"cannot read the API database {where(url)}: {reason(e)}") from None
    finally:
        engine.dispose()
    return revision, tables


def check(revision, tables, known, place):
    """Refuse (DatabaseRefused) what this code must not write to; True when work is due."""
    if revision is None and tables:
        names = ", ".join(sorted(tables)[:5])
        raise DatabaseRefused(f"{place} holds tables that are not the API's ({names}): it belongs "
                              "to another application; point API_DB_URL elsewhere")
    if revision is not None and revision not in known:
        raise DatabaseRefused(f"{place} is at API schema revision {revision}, which "
                              f"rustdesk-twisted {__version__} does not know (its newest is "
                              f"{known[-1]}): run the release that upgraded it, or restore the "
                              "backup taken before that upgrade")
    return revision != known[-1]


def upgrade(database, scripts=MIGRATIONS):
    """Examine ``database`` (not yet open), back it up if it is to change, open it and bring it
    to the newest revision of ``scripts``; returns ``(revision before or None, revision now)``."""
    url = database.url
    place = where(url)
    before, tables = examine(url)
    known = revisions(scripts)
    due = check(before, tables, known, place)
    if database.is_sqlite:
        dbfile.check_writable(url.database)
    backup = None
    if due and before is not None and database.is_sqlite:
        backup = back_up(url.database, before)
    database.open()
    if not due:
        return before, before
    try:
        _run_migrations(database, scripts)
    except DBAPIError as e:
        kept = f"; the database was left as it was (copy in {backup})" if backup else ""
        raise DatabaseRefused(f"cannot upgrade the API database {place}: {reason(e)}{kept}") \
            from None
    if before is None:
        log.info("API database {place} created at schema revision {revision}", place=place,
                 revision=known[-1], event="api.db_created")
    else:
        log.info("API database {place} upgraded from schema revision {before} to {after}"
                 "{kept}", place=place, before=before, after=known[-1],
                 kept=f" (copy of revision {before} in {backup})" if backup else "",
                 event="api.db_upgraded")
    return before, known[-1]


def _run_migrations(database, scripts):
    """Every due revision in one transaction.

    SQLite: foreign keys are off meanwhile (a rebuilt table must not cascade
    deletes into its children) and checked before the commit, as SQLite's
    manual prescribes for schema changes; the explicit BEGIN makes its DDL
    part of the transaction, which pysqlite would otherwise commit at once.
    """
    with database.engine.connect() as connection:
        if database.is_sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.exec_driver_sql("BEGIN")
        command.upgrade(alembic_config(connection, scripts), "head")
        if database.is_sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                connection.rollback()
                raise DatabaseRefused(f"upgrading the API database {database.url.database} "
                                      f"would break {len(broken)} references (first in table "
                                      f"{broken[0][0]}); it was left as it was")
        connection.commit()
        if database.is_sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def back_up(path, revision):
    """A consistent copy of the SQLite file ``path`` as ``path.backup-REVISION``, mode 0600."""
    target = f"{path}.backup-{revision}"
    partial = target + ".partial"
    try:
        if os.path.exists(partial):
            os.remove(partial)
        dbfile.create_private(partial)
        conn = dbfile.open_read_only(path, setting="API_DB_URL")
        try:
            conn.execute("VACUUM INTO ?", (partial,))
        finally:
            conn.close()
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as e:
        raise DatabaseRefused(f"cannot back up {path} to {target} before upgrading it: {e}; it "
                              "was left as it was") from None
    return target


def current(url):
    """One line on where the database at ``url`` stands, for ``rustdesk-admin api-db current``."""
    revision, tables = examine(url)
    known = revisions()
    place = where(url)
    check(revision, tables, known, place)
    if revision is None:
        return f"{place}: no schema yet (the API creates revision {known[-1]} at start)"
    if revision == known[-1]:
        return f"{place}: schema revision {revision}, the newest this version knows"
    return (f"{place}: schema revision {revision}; the API upgrades it to {known[-1]} at start "
            "(or run rustdesk-admin api-db upgrade)")
