"""rustdesk-admin: keys, offline peers, backup/restore archives, health URLs, console additions."""

import hashlib
import json
import os
import socket
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted import admin
from rustdesk_twisted.config import ConfigError, Settings
from rustdesk_twisted.hbbs.console import HbbsConsole
from rustdesk_twisted.hbbs.dbfile import read_only_uri as dbfile_uri
from rustdesk_twisted.textconsole import ConsoleFactory
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.store import LAST_SEEN_SCHEMA, OFFICIAL_SCHEMA, PeerStore
from rustdesk_twisted.wire import keys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UUID = b"machine-uuid-0001"
PK = bytes(range(32))


def _directory(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _database(path, rows):
    conn = sqlite3.connect(path)
    conn.executescript(OFFICIAL_SCHEMA + LAST_SEEN_SCHEMA)
    for number, (peer_id, ip) in enumerate(rows):
        guid = bytes([number]) * 16
        conn.execute("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)",
                     (guid, peer_id, UUID, PK, f'{{"ip":"{ip}"}}'))
        conn.execute("insert into peer_last_seen values (?, ?)", (guid, 1_700_000_000))
    conn.commit()
    conn.close()


class KeyCommandTests(SynchronousTestCase):
    def setUp(self):
        self.dir = _directory(self)

    def test_gen_show_check(self):
        shown = admin.gen_key(self.dir)
        secret = keys.load_keypair(self.dir)
        public = keys.b64(secret[32:])
        self.assertEqual(shown, f"Key: {public}\nFingerprint: {keys.fingerprint(secret[32:])}\n")
        self.assertEqual(admin.show_key(self.dir), shown)
        self.assertEqual(admin.check_key(self.dir, public)[0], True)
        other = keys.b64(bytes(32))
        ok, message = admin.check_key(self.dir, other)
        self.assertFalse(ok)
        self.assertIn("MISMATCH", message)
        self.assertFalse(admin.check_key(self.dir, "not a key")[0])

    def test_gen_key_never_replaces(self):
        admin.gen_key(self.dir)
        before = keys.load_keypair(self.dir)
        self.assertRaises(admin.AdminError, admin.gen_key, self.dir)
        self.assertEqual(admin.gen_key(self.dir, if_missing=True), admin.show_key(self.dir))
        self.assertEqual(keys.load_keypair(self.dir), before)

    def test_show_key_from_public_file_only(self):
        with open(os.path.join(self.dir, keys.PUBLIC_FILE), "w") as f:
            f.write(keys.b64(PK))
        self.assertIn(keys.fingerprint(PK), admin.show_key(self.dir))
        os.remove(os.path.join(self.dir, keys.PUBLIC_FILE))
        self.assertRaises(admin.AdminError, admin.show_key, self.dir)

    def test_relay_key_conflict(self):
        admin.gen_key(self.dir)
        secret = keys.load_keypair(self.dir)
        self.assertIsNone(keys.relay_key_conflict(keys.b64(secret[32:]), self.dir))
        self.assertIsNone(keys.relay_key_conflict("", self.dir))
        self.assertIsNone(keys.relay_key_conflict("some licence string", self.dir))
        self.assertIn("differs", keys.relay_key_conflict(keys.b64(PK), self.dir))


class OfflinePeerTests(SynchronousTestCase):
    def setUp(self):
        self.dir = _directory(self)
        self.db = os.path.join(self.dir, "db_v2.sqlite3")
        _database(self.db, [("123456789", "1.2.3.4"), ("987654321", "5.6.7.8")])
        self.peers = admin.OfflinePeers(self.db, write=True)
        self.addCleanup(self.peers.close)

    def test_list_and_show(self):
        self.assertEqual(self.peers.list(), [("123456789", False, 1_700_000_000, "1.2.3.4"),
                                             ("987654321", False, 1_700_000_000, "5.6.7.8")])
        shown = self.peers.show("123456789")
        self.assertIn("ip: 1.2.3.4\n", shown)
        self.assertIn(f"key: {keys.fingerprint(PK)}\n", shown)
        self.assertEqual(self.peers.show("nobody"), "nobody: not registered\n")

    def test_release_removes_row_and_last_seen(self):
        self.assertEqual(self.peers.release("123456789"), "123456789: released\n")
        self.assertEqual(self.peers.release("123456789"), "123456789: not registered\n")
        conn = sqlite3.connect(self.db)
        self.assertEqual(conn.execute("select count(*) from peer_last_seen").fetchone()[0], 1)
        self.assertEqual(conn.execute("select id from peer").fetchall(), [("987654321",)])
        conn.close()

    def test_rename(self):
        self.assertEqual(self.peers.rename("123456789", "office-pc"),
                         "123456789: renamed to office-pc\n")
        self.assertTrue(self.peers.rename("987654321", "office-pc").startswith("error:"))
        self.assertTrue(self.peers.rename("nobody1", "fresh-id").startswith("error:"))
        self.assertTrue(self.peers.rename("office-pc", "1bad").startswith("error:"))
        self.assertIn("ip: 1.2.3.4", self.peers.show("office-pc"))


class OfflineForeignDatabaseTests(SynchronousTestCase):
    """`rustdesk-admin peers` on a file that is not ours: a sentence, and the file untouched."""

    def setUp(self):
        self.dir = _directory(self)
        self.db = os.path.join(self.dir, "db_v2.sqlite3")

    def run_admin(self, *argv):
        return subprocess.run([sys.executable, "-m", "rustdesk_twisted.admin", "--data-dir",
                               self.dir, *argv], capture_output=True, text=True, timeout=60,
                              cwd=REPOSITORY)

    def snapshot(self):
        with open(self.db, "rb") as f:
            return sorted(os.listdir(self.dir)), hashlib.sha256(f.read()).hexdigest()

    def test_another_applications_peer_table(self):
        conn = sqlite3.connect(self.db)
        conn.execute("create table peer (id integer primary key, name text not null)")
        conn.execute("insert into peer(name) values ('not a rustdesk peer')")
        conn.commit()
        conn.close()
        before = self.snapshot()
        for argv in (("peers", "list"), ("peers", "show", "x"), ("peers", "release", "x")):
            done = self.run_admin(*argv)
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertIn("peer table that is not RustDesk's", done.stderr)
            self.assertNotIn("Traceback", done.stderr)
            self.assertEqual(self.snapshot(), before)

    def test_official_database_is_listed_read_only(self):
        conn = sqlite3.connect(self.db)
        conn.executescript(OFFICIAL_SCHEMA)
        conn.execute("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)",
                     (b"g" * 16, "123456789", UUID, PK, '{"ip":"1.2.3.4"}'))
        conn.commit()
        conn.close()
        before = self.snapshot()
        done = self.run_admin("peers", "list")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout, "ID         ONLINE   LAST SEEN  IP\n"
                                      "123456789  offline  never      1.2.3.4\n1 peer\n")
        self.assertEqual(self.snapshot(), before)


class PeerListFormatTests(SynchronousTestCase):
    """One time format (UTC, ISO 8601) whether the rows come from the console or the file."""

    def test_console_rows_use_times(self):
        reply = "2\n123456789 online 0 10.0.0.1\n234567891 offline never -\n"
        self.assertEqual(admin.live_rows(reply, 1_700_000_040),
                         [("123456789", True, 1_700_000_040, "10.0.0.1"),
                          ("234567891", False, None, "")])

    def test_table_and_json(self):
        rows = [("123456789", True, 1_700_000_000, "10.0.0.1"), ("office-pc", False, None, "")]
        self.assertEqual(admin.format_peers(rows),
                         "ID         ONLINE   LAST SEEN             IP\n"
                         "123456789  online   2023-11-14T22:13:20Z  10.0.0.1\n"
                         "office-pc  offline  never                 -\n"
                         "2 peers\n")
        self.assertEqual(json.loads(admin.format_peers(rows, as_json=True)), [
            {"id": "123456789", "online": True, "last_seen": "2023-11-14T22:13:20Z",
             "ip": "10.0.0.1"},
            {"id": "office-pc", "online": False, "last_seen": None, "ip": ""}])


class CommandLineTests(SynchronousTestCase):
    """The console script as the operator types it."""

    def setUp(self):
        self.dir = _directory(self)
        _database(os.path.join(self.dir, "db_v2.sqlite3"), [("123456789", "1.2.3.4")])

    def run_admin(self, *argv):
        return subprocess.run([sys.executable, "-m", "rustdesk_twisted.admin", *argv],
                              capture_output=True, text=True, timeout=60, cwd=REPOSITORY)

    def test_options_after_the_command(self):
        admin.gen_key(self.dir)
        before = self.run_admin("--data-dir", self.dir, "show-key")
        after = self.run_admin("show-key", "--data-dir", self.dir)
        self.assertEqual((after.returncode, after.stdout), (0, before.stdout), after.stderr)
        self.assertIn("Key: ", after.stdout)
        listed = self.run_admin("peers", "list", "--json", "--data-dir", self.dir)
        self.assertEqual([peer["id"] for peer in json.loads(listed.stdout)], ["123456789"])

    def test_console_socket_left_by_a_stopped_server(self):
        """A socket file nobody listens on: the file is read instead, no traceback."""
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(os.path.join(self.dir, "hbbs-console.sock"))
        stale.close()
        listed = self.run_admin("--data-dir", self.dir, "peers", "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("123456789", listed.stdout)
        self.assertNotIn("Traceback", listed.stderr)

    def test_unknown_id_exits_1(self):
        for action in ("show", "release"):
            done = self.run_admin("--data-dir", self.dir, "peers", action, "nobody1")
            self.assertEqual((done.returncode, done.stdout), (1, "nobody1: not registered\n"))
        done = self.run_admin("--data-dir", self.dir, "peers", "show", "123456789")
        self.assertEqual(done.returncode, 0, done.stderr)


class BackupArchiveTests(SynchronousTestCase):
    def setUp(self):
        self.dir = _directory(self)
        self.db = os.path.join(self.dir, "db_v2.sqlite3")
        _database(self.db, [("123456789", "1.2.3.4")])
        admin.gen_key(self.dir)
        with open(os.path.join(self.dir, "blocklist.txt"), "w") as f:
            f.write("9.9.9.9\n")
        self.archive = os.path.join(self.dir, "backup.tar.gz")

    def _backup(self):
        snapshot = os.path.join(self.dir, "snapshot.sqlite3")
        admin.sqlite_copy(self.db, snapshot)
        return admin.write_archive(self.archive, snapshot, self.dir, "now")

    def test_copy_leaves_no_wal_files(self):
        """A copy of a WAL-mode database, once archived, has no -wal/-shm beside it."""
        conn = sqlite3.connect(self.db)
        conn.execute("pragma journal_mode=wal")
        conn.close()
        self._backup()
        self.assertEqual(sorted(n for n in os.listdir(self.dir) if n.startswith("snapshot")),
                         ["snapshot.sqlite3"])

    def test_round_trip(self):
        manifest = self._backup()
        self.assertEqual(manifest["peers"], 1)
        with tarfile.open(self.archive) as tar:
            self.assertEqual(sorted(tar.getnames()), sorted(
                ["db_v2.sqlite3", "id_ed25519", "id_ed25519.pub", "blocklist.txt",
                 "MANIFEST.json"]))
        target = _directory(self)
        db = os.path.join(target, "db_v2.sqlite3")
        restored = admin.restore_archive(self.archive, target, db)
        self.assertEqual(restored["key_fingerprint"], manifest["key_fingerprint"])
        self.assertEqual(keys.load_keypair(target), keys.load_keypair(self.dir))
        self.assertEqual(os.stat(os.path.join(target, "id_ed25519")).st_mode & 0o777, 0o600)
        self.assertEqual(admin.database_summary(db), (1, "ok"))

    def test_restore_refuses_to_overwrite(self):
        self._backup()
        self.assertRaises(admin.AdminError, admin.restore_archive, self.archive, self.dir,
                          self.db)
        os.remove(os.path.join(self.dir, "blocklist.txt"))
        admin.restore_archive(self.archive, self.dir, self.db, force=True)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "blocklist.txt")))

    def test_restore_reads_only_known_names(self):
        evil = os.path.join(self.dir, "evil.tar.gz")
        with tarfile.open(evil, "w:gz") as tar:
            tar.add(self.db, arcname="db_v2.sqlite3")
            tar.add(self.db, arcname="../escaped")
        target = _directory(self)
        admin.restore_archive(evil, target, os.path.join(target, "db_v2.sqlite3"))
        self.assertFalse(os.path.exists(os.path.join(target, "..", "escaped")))
        self.assertEqual(sorted(os.listdir(target)), ["db_v2.sqlite3"])

    def test_not_a_backup(self):
        bogus = os.path.join(self.dir, "bogus.tar.gz")
        with tarfile.open(bogus, "w:gz") as tar:
            tar.add(os.path.join(self.dir, "blocklist.txt"), arcname="blocklist.txt")
        self.assertRaises(admin.AdminError, admin.restore_archive, bogus, _directory(self), "x")


class HealthUrlTests(SynchronousTestCase):
    def test_defaults_follow_the_port_arithmetic(self):
        self.assertEqual(admin.health_url(Settings()), "http://127.0.0.1:21120/healthz")
        self.assertEqual(admin.health_url(Settings(), relay=True, ready=True),
                         "http://127.0.0.1:21121/readyz")
        shared = Settings({"PORT": "31116"})
        self.assertEqual(admin.health_url(shared), "http://127.0.0.1:31120/healthz")
        self.assertEqual(admin.health_url(shared, relay=True), "http://127.0.0.1:31121/healthz")

    def test_admin_setting(self):
        settings = Settings({"ADMIN": "tcp:9000:interface=10.0.0.1"})
        self.assertEqual(admin.health_url(settings), "http://10.0.0.1:9000/healthz")
        self.assertRaises(admin.AdminError, admin.health_url, Settings({"ADMIN": "unix:/x"}))


class SecretFileSettingTests(SynchronousTestCase):
    def test_name_file(self):
        directory = _directory(self)
        path = os.path.join(directory, "key")
        with open(path, "w") as f:
            f.write("secret-value\n")
        settings = Settings({"KEY_FILE": path, "ADMIN-TOKEN": "direct"})
        self.assertEqual(settings.get("KEY"), "secret-value")
        self.assertIn("KEY", settings)
        self.assertEqual(settings.get("ADMIN_TOKEN"), "direct")
        self.assertIsNone(settings.get("OTHER"))
        self.assertRaises(ConfigError, Settings({"KEY_FILE": path + ".missing"}).get, "KEY")

    def test_value_beats_file(self):
        settings = Settings({"KEY": "given", "KEY_FILE": "/nonexistent"})
        self.assertEqual(settings.get("KEY"), "given")


class ConsoleAdditionTests(TestCase):
    """peer-list, peer-release, peer-rename and backup on a real registry and store."""

    def setUp(self):
        from twisted.internet import reactor
        self.dir = _directory(self)
        self.store = PeerStore(os.path.join(self.dir, "db_v2.sqlite3"), reactor)
        self.registry = PeerRegistry(self.store)
        self.registry.load(self.store.open())
        self.addCleanup(self.store.close)
        self.clock = Clock()
        self.clock.advance(1000)
        self.server = RendezvousServer(self.registry, keys.ServerKey("", None, "test"),
                                       RelayRotation(), self.clock)
        self.console = HbbsConsole(self.server)
        for number, peer_id in enumerate(("123456789", "234567891", "345678912")):
            self.registry.register_pk(peer_id, UUID + bytes([number]), PK,
                                      (f"10.0.0.{number}", 4000), 1000)

    def run_command(self, text):
        return self.console.execute(text, self.clock.seconds())

    def stored_ids(self):
        conn = sqlite3.connect(self.store.path)
        try:
            return sorted(row[0] for row in conn.execute("select id from peer"))
        finally:
            conn.close()

    def test_peer_list_pages(self):
        self.assertEqual(self.run_command("peer-list"),
                         "3\n123456789 online 0 10.0.0.0\n234567891 online 0 10.0.0.1\n"
                         "345678912 online 0 10.0.0.2\n")
        self.clock.advance(40)
        self.assertEqual(self.run_command("peer-list 1 1"), "3\n234567891 offline 40 10.0.0.1\n")

    async def test_release_and_rename_reach_the_database(self):
        """The replies come once the change is committed: the rows are already moved."""
        self.assertEqual(await self.run_command("peer-release 123456789"),
                         "123456789: released\n")
        self.assertEqual(self.run_command("peer-release 123456789"),
                         "123456789: not registered\n")
        self.assertEqual(await self.run_command("peer-rename 234567891 office-pc"),
                         "234567891: renamed to office-pc\n")
        self.assertEqual(self.stored_ids(), ["345678912", "office-pc"])
        self.assertTrue(self.run_command("peer-rename 345678912 office-pc").startswith("error:"))
        self.assertEqual(self.run_command("peer-rename 345678912"), "")
        self.assertIsNone(self.registry.get("123456789"))
        self.assertEqual(await self.registry.register_pk("123456789", b"another machine", PK,
                                                         ("10.9.9.9", 1), 2000), 0)

    async def test_backup(self):
        target = os.path.join(self.dir, "snap.sqlite3")
        self.assertEqual(await self.run_command("backup snap.sqlite3"), f"ok {target}\n")
        self.assertEqual(admin.database_summary(target), (3, "ok"))
        conn = sqlite3.connect(dbfile_uri(target), uri=True)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("select last_seen from peer_last_seen").fetchall(),
                         [(1000,)] * 3)
        self.assertEqual(self.run_command("backup snap.sqlite3"), f"error: {target} exists\n")
        self.assertTrue(self.run_command("backup ../x").startswith("error:"))


class DeferredConsoleReplyTests(SynchronousTestCase):
    def test_reply_written_when_ready(self):
        pending = Deferred()
        protocol = ConsoleFactory(lambda text: pending, Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"backup x")
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        pending.callback("ok x\n")
        self.assertEqual((transport.value(), transport.disconnecting), (b"ok x\n", True))
