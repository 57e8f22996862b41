"""The API schema: its migrations create what tables.py says; a database is created, upgraded
(a SQLite file after a backup) or refused with one sentence and left untouched."""

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool
from twisted.trial import unittest

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.accounts import hash_password
from rustdesk_twisted.api.db import Database, engine_url
from rustdesk_twisted.hbbs.dbfile import DatabaseRefused

from .apisupport import database_url, on_both_backends

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEWEST = migrate.revisions()[-1]
# A later revision for the upgrade tests: users.email becomes nullable (SQLite rebuilds the
# table for that, PostgreSQL alters it) and users gains a column.
LATER = f'''"""users.email nullable, users.nickname."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{NEWEST}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch_op:
        batch_op.alter_column("email", existing_type=sa.String(255), nullable=True)
        batch_op.add_column(sa.Column("nickname", sa.String(64), nullable=False,
                                      server_default=""))
'''


def later_scripts(testcase):
    """The package's migrations plus revision 9001, in a directory of the test's own."""
    scripts = os.path.abspath(testcase.mktemp())
    shutil.copytree(migrate.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(scripts, "versions", "9001_later.py"), "w") as f:
        f.write(LATER)
    return scripts


def add_user_with_token(db):
    def work(connection):
        user = connection.execute(insert(tables.users).values(
            name="alice", password_hash=hash_password("pw"), display_name="", email="a@b.c",
            note="", status=1, is_admin=False, totp_backup="[]", oidc_provider="",
            created_at=1.0, updated_at=1.0)).inserted_primary_key[0]
        connection.execute(insert(tables.tokens).values(
            user_id=user, token_hash="0" * 64, kind="session", name="", scopes="",
            rustdesk_id="", device_uuid="", device_info="{}", ip="", created_at=1.0,
            expires_at=2.0, last_used_at=1.0))
    db.run_now(work)


@on_both_backends
class SchemaTests(unittest.TestCase):
    def setUp(self):
        self.url = engine_url(database_url(self), ".")

    def database(self):
        db = Database(self.url, None, in_thread_pool=False)
        self.addCleanup(db.close)
        return db

    def test_migrations_create_what_tables_py_says(self):
        db = self.database()
        self.assertEqual(migrate.upgrade(db), (None, NEWEST))
        with db.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": migrate.VERSION_TABLE})
            differences = compare_metadata(context, tables.metadata)
        self.assertEqual(differences, [], "tables.py differs from what the migrations create: "
                         "add a revision with scripts/api_revision.py")

    def test_a_database_at_the_newest_revision_is_left_alone(self):
        migrate.upgrade(self.database())
        self.assertEqual(migrate.upgrade(self.database()), (NEWEST, NEWEST))

    def test_an_upgrade_keeps_rows_and_their_children(self):
        """A rebuilt parent table must not cascade deletes into its children (SQLite drops
        and renames tables for what it cannot ALTER)."""
        db = self.database()
        migrate.upgrade(db)
        add_user_with_token(db)
        db.close()
        db = self.database()
        self.assertEqual(migrate.upgrade(db, later_scripts(self)), (NEWEST, "9001"))
        users = db.run_now(lambda c: c.exec_driver_sql(
            "select name, email, nickname from users").fetchall())
        self.assertEqual([tuple(row) for row in users], [("alice", "a@b.c", "")])
        self.assertEqual(db.run_now(lambda c: len(c.execute(select(tables.tokens)).all())), 1)

    def test_revision_0002_keeps_address_book_entries(self):
        db = self.database()
        db.open()
        with db.engine.begin() as connection:
            command.upgrade(migrate.alembic_config(connection), "0001")
        add_user_with_token(db)
        db.run_now(lambda c: c.exec_driver_sql(
            "insert into address_books (guid, name, owner_id, personal, note, password, version,"
            " created_at, updated_at) values ('g', 'My', 1, true, '', '', 3, 1.0, 1.0)"))
        db.run_now(lambda c: c.exec_driver_sql(
            "insert into ab_peers (ab_id, peer_id, hash, password, username, hostname, platform,"
            " alias, tags, note, force_always_relay, rdp_port, rdp_username, login_name,"
            " updated_at) values (1, '123456789', '', '', '', '', '', '', '[]', '', false, '',"
            " '', '', 1.0)"))
        db.close()
        db = self.database()
        self.assertEqual(migrate.upgrade(db)[0], "0001")
        peers = db.run_now(lambda c: c.execute(select(
            tables.ab_peers.c.peer_id, tables.ab_peers.c.version,
            tables.ab_peers.c.updated_by)).all())
        self.assertEqual([tuple(row) for row in peers], [("123456789", 0, None)])

    def test_a_newer_revision_is_refused(self):
        db = self.database()
        migrate.upgrade(db, later_scripts(self))
        db.close()
        error = self.assertRaises(DatabaseRefused, migrate.upgrade, self.database())
        self.assertIn("is at API schema revision 9001, which rustdesk-twisted", str(error))
        self.assertIn(f"its newest is {NEWEST}", str(error))
        self.assertNotIn("\n", str(error))
        self.assertEqual(migrate.examine(self.url)[0], "9001")

    def test_another_applications_tables_are_refused(self):
        engine = create_engine(self.url, poolclass=NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql("create table customers (id integer primary key)")
        engine.dispose()
        error = self.assertRaises(DatabaseRefused, migrate.upgrade, self.database())
        self.assertIn("holds tables that are not the API's (customers): it belongs to another "
                      "application; point API_DB_URL elsewhere", str(error))
        self.assertEqual(migrate.examine(self.url), (None, {"customers"}))

    def test_a_version_table_on_a_foreign_revision_chain_is_refused_too(self):
        db = self.database()
        migrate.upgrade(db)
        db.run_now(lambda c: c.exec_driver_sql(
            f"update {migrate.VERSION_TABLE} set version_num = 'abc123'"))
        db.close()
        self.assertRaises(DatabaseRefused, migrate.upgrade, self.database())


class SqliteFileTests(unittest.TestCase):
    """What only a SQLite file has: a mode, bytes to leave untouched, a backup beside it."""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "db_api.sqlite3")

    def database(self):
        db = Database(engine_url(self.path, "."), None, in_thread_pool=False)
        self.addCleanup(db.close)
        return db

    def snapshot(self):
        with open(self.path, "rb") as f:
            return sorted(os.listdir(self.directory)), hashlib.sha256(f.read()).hexdigest()

    def mode(self, path):
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_a_new_database_is_private_whatever_the_umask(self):
        old = os.umask(0)
        try:
            migrate.upgrade(self.database())
        finally:
            os.umask(old)
        for name in os.listdir(self.directory):
            self.assertEqual(self.mode(os.path.join(self.directory, name)), 0o600, name)

    def test_an_upgrade_first_copies_the_file(self):
        db = self.database()
        migrate.upgrade(db)
        add_user_with_token(db)
        db.close()
        migrate.upgrade(self.database(), later_scripts(self))
        backup = f"{self.path}.backup-{NEWEST}"
        self.assertEqual(self.mode(backup), 0o600)
        conn = sqlite3.connect(backup)
        try:
            self.assertEqual(conn.execute(f"select version_num from {migrate.VERSION_TABLE}")
                             .fetchall(), [(NEWEST,)])
            self.assertEqual(conn.execute("select name from users").fetchall(), [("alice",)])
            self.assertEqual(conn.execute("pragma journal_mode").fetchone(), ("delete",))
        finally:
            conn.close()

    def test_creating_takes_no_backup(self):
        migrate.upgrade(self.database())
        self.assertEqual([n for n in os.listdir(self.directory) if "backup" in n], [])

    def assertRefusedUntouched(self, expected):
        before = self.snapshot()
        error = self.assertRaises(DatabaseRefused, migrate.upgrade, self.database())
        self.assertIn(expected, str(error))
        self.assertNotIn("\n", str(error))
        self.assertEqual(self.snapshot(), before)

    def test_another_applications_file_is_untouched(self):
        conn = sqlite3.connect(self.path)
        conn.execute("create table invoices (id integer primary key, total real)")
        conn.execute("insert into invoices (total) values (12.5)")
        conn.commit()
        conn.close()
        self.assertRefusedUntouched(f"{self.path} holds tables that are not the API's (invoices)")

    def test_a_file_that_is_no_database_is_untouched(self):
        with open(self.path, "wb") as f:
            f.write(os.urandom(4096))
        self.assertRefusedUntouched(f"{self.path} is not an SQLite database (it may belong to "
                                    "another program, or be damaged); move it away or set "
                                    "API_DB_URL")

    def test_a_newer_revision_is_untouched(self):
        db = self.database()
        migrate.upgrade(db, later_scripts(self))
        db.close()
        self.assertRefusedUntouched("is at API schema revision 9001")


class AdminCommandTests(unittest.TestCase):
    """``rustdesk-admin api-db current`` and ``upgrade`` on a data directory."""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def run_admin(self, *argv, **environ):
        return subprocess.run([sys.executable, "-m", "rustdesk_twisted.admin", "--data-dir",
                               self.directory, "api-db", *argv], capture_output=True, text=True,
                              timeout=60, cwd=REPOSITORY, env=dict(os.environ, **environ))

    def test_current_reads_only_and_upgrade_creates(self):
        path = os.path.join(self.directory, "db_api.sqlite3")
        done = self.run_admin("current")
        self.assertEqual((done.returncode, done.stdout),
                         (0, f"{path}: no schema yet (the API creates revision {NEWEST} at "
                             "start)\n"))
        self.assertEqual(os.listdir(self.directory), [])
        done = self.run_admin("upgrade")
        self.assertEqual(done.stdout, f"{path}: created at schema revision {NEWEST}\n")
        self.assertEqual(self.run_admin("upgrade").stdout,
                         f"{path}: already at schema revision {NEWEST}\n")
        self.assertEqual(self.run_admin("current").stdout,
                         f"{path}: schema revision {NEWEST}, the newest this version knows\n")

    def test_api_db_url_and_a_refusal(self):
        other = os.path.join(self.directory, "other.sqlite3")
        conn = sqlite3.connect(other)
        conn.execute("create table invoices (id integer primary key)")
        conn.close()
        done = self.run_admin("upgrade", API_DB_URL=other)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr, f"rustdesk-admin: {other} holds tables that are not the "
                                      "API's (invoices): it belongs to another application; "
                                      "point API_DB_URL elsewhere\n")
        self.assertEqual(done.stdout, "")
