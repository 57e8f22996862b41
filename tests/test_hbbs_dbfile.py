"""hbbs never writes a database that is not RustDesk's, and keeps its files private.

Each refused file must come out byte for byte as it went in, with no side files
left beside it; the operator gets one sentence naming the file and the problem.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted.hbbs import dbfile
from rustdesk_twisted.hbbs.dbfile import DatabaseRefused
from rustdesk_twisted.hbbs.store import LAST_SEEN_SCHEMA, OFFICIAL_SCHEMA, PeerStore

from .livesupport import run_twistd
from .test_store import make_official_db

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = [(n.to_bytes(16, "big"), f"1000000{n:03d}", b"u" * 36, b"k" * 32, '{"ip":"1.2.3.4"}')
        for n in range(300)]


def snapshot(directory):
    """Every file of ``directory`` with its content's hash.

    A WAL database's ``-shm`` is SQLite's shared-memory index, rewritten by
    every reader: only its presence counts.
    """
    result = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isdir(path) or name.endswith("-shm"):
            result[name] = "present"
            continue
        with open(path, "rb") as f:
            result[name] = hashlib.sha256(f.read()).hexdigest()
    return result


class ExamineTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "db_v2.sqlite3")

    def assertRefusedUntouched(self, *words):
        before = snapshot(self.dir)
        try:
            PeerStore(self.path, reactor).open()
        except DatabaseRefused as e:
            message = str(e)
        else:
            self.fail("the store opened the file")
        self.assertIn(self.path, message)
        for word in words:
            self.assertIn(word, message)
        self.assertNotIn("\n", message)
        self.assertEqual(snapshot(self.dir), before)
        return message

    def test_random_bytes(self):
        with open(self.path, "wb") as f:
            f.write(os.urandom(8192))
        self.assertRefusedUntouched("not an SQLite database")

    def test_another_applications_peer_table(self):
        conn = sqlite3.connect(self.path)
        conn.execute("create table peer (id integer primary key, name text not null)")
        conn.execute("insert into peer(name) values ('somebody else')")
        conn.commit()
        conn.close()
        self.assertRefusedUntouched("not RustDesk's", "no column guid")

    def test_another_applications_database(self):
        conn = sqlite3.connect(self.path)
        conn.execute("create table invoices (id integer primary key, total real)")
        conn.commit()
        conn.close()
        self.assertRefusedUntouched("holds no RustDesk peer table", "invoices")

    def test_foreign_database_with_a_pending_wal_is_not_checkpointed(self):
        """Reading a WAL database read-write would fold its WAL into the file on close."""
        writer = sqlite3.connect(self.path, isolation_level=None)
        writer.execute("pragma journal_mode=wal")
        writer.execute("pragma wal_autocheckpoint=0")
        writer.execute("create table accounts (id integer primary key)")
        writer.execute("insert into accounts values (1)")
        self.assertGreater(os.path.getsize(self.path + "-wal"), 0)
        self.addCleanup(writer.close)
        self.assertRefusedUntouched("accounts")

    def test_damaged_pages(self):
        make_official_db(self.path, ROWS)
        with open(self.path, "r+b") as f:
            f.seek(3 * 4096)
            f.write(os.urandom(4096))
        self.assertRefusedUntouched("damaged")

    def test_not_null_column_we_would_not_fill(self):
        make_official_db(self.path, [], create=OFFICIAL_SCHEMA +
                         "alter table peer add column tenant integer not null default 0;")
        self.assertEqual(dbfile.examine(self.path), dbfile.OFFICIAL)
        os.remove(self.path)
        conn = sqlite3.connect(self.path)
        conn.executescript(OFFICIAL_SCHEMA.replace("info text not null",
                                                   "info text not null, tenant integer not null"))
        conn.close()
        self.assertRefusedUntouched("tenant")

    def test_a_directory(self):
        os.makedirs(self.path)
        self.assertRefusedUntouched("not a regular file")

    def test_kinds(self):
        self.assertEqual(dbfile.examine(self.path), dbfile.NEW)
        open(self.path, "wb").close()
        self.assertEqual(dbfile.examine(self.path), dbfile.NEW)
        os.remove(self.path)
        make_official_db(self.path, ROWS)
        self.assertEqual(dbfile.examine(self.path), dbfile.OFFICIAL)
        conn = sqlite3.connect(self.path)
        conn.executescript(LAST_SEEN_SCHEMA)
        conn.close()
        self.assertEqual(dbfile.examine(self.path), dbfile.OURS)

    def test_read_only_file(self):
        make_official_db(self.path, ROWS)
        if os.geteuid() == 0:
            self.skipTest("root may write any file; tests.test_hbbs_disk covers a read-only mount")
        os.chmod(self.path, 0o444)
        self.assertRefusedUntouched("read-only")


class PrivateFilesTests(TestCase):
    """Database, WAL files and backups are 0600 whatever the umask."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "db_v2.sqlite3")
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)

    def modes(self):
        return {name: oct(os.stat(os.path.join(self.dir, name)).st_mode & 0o777)
                for name in os.listdir(self.dir)}

    async def test_new_database_and_its_wal_files(self):
        store = PeerStore(self.path, reactor)
        store.open()
        await store.insert(b"g" * 16, "123456789", b"u" * 36, b"k" * 32, "1.2.3.4")
        modes = self.modes()
        await store.close()
        self.assertEqual(set(modes), {"db_v2.sqlite3", "db_v2.sqlite3-wal", "db_v2.sqlite3-shm"})
        self.assertEqual(set(modes.values()), {"0o600"})

    async def test_official_database_made_private(self):
        make_official_db(self.path, ROWS)
        os.chmod(self.path, 0o666)
        store = PeerStore(self.path, reactor)
        store.open()
        await store.close()
        self.assertEqual(set(self.modes().values()), {"0o600"})

    async def test_console_backup_snapshot(self):
        store = PeerStore(self.path, reactor)
        store.open()
        target = os.path.join(self.dir, "snapshot.sqlite3")
        await store.backup(target)
        await store.close()
        self.assertEqual(oct(os.stat(target).st_mode & 0o777), "0o600")

    def test_admin_backup_archive(self):
        make_official_db(self.path, ROWS)
        archive = os.path.join(self.dir, "backup.tar.gz")
        done = subprocess.run(
            [sys.executable, "-c", "import os, sys; os.umask(0); "
             "from rustdesk_twisted.admin import main; main(sys.argv[1:])",
             "--data-dir", self.dir, "backup", archive],
            capture_output=True, text=True, timeout=60, cwd=REPOSITORY)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(oct(os.stat(archive).st_mode & 0o777), "0o600")


class StartupTests(SynchronousTestCase):
    """The real twistd plugin: one sentence on stderr, exit status 1, nothing created."""

    def test_hbbs_refuses_a_foreign_database(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "db_v2.sqlite3")
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        before = snapshot(directory)
        code, output = run_twistd(
            "rustdesk-hbbs", ["--data-dir", directory, "--listen-tcp", "tcp:0", "--listen-nat",
                              "tcp:0", "--listen-ws", "tcp:0", "--listen-udp", "127.0.0.1:0",
                              "--admin", "off"], directory)
        self.assertEqual(code, 1, output)
        self.assertIn(f"rustdesk-hbbs: {path} is not an SQLite database", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(snapshot(directory), before)
