"""hbbs's SQLite store: compatibility with the official db_v2.sqlite3 (PROTOCOL.md section 8, G13).

The writer thread is real: the tests return Deferreds and let the reactor
deliver thread results.  Only the flush loop runs on a ``Clock``.
"""

import json
import sqlite3
import threading

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted.hbbs import store
from rustdesk_twisted.hbbs.store import (
    PeerStore,
    StoreOpRefused,
    StoreUnavailable,
    new_guid,
    path_from_db_url,
)

# Copied from the official server, not imported from the store, so drift shows.
OSS_CREATE = """
            create table if not exists peer (
                guid blob primary key not null,
                id varchar(100) not null,
                uuid blob not null,
                pk blob not null,
                created_at datetime not null default(current_timestamp),
                user blob,
                status tinyint,
                note varchar(300),
                info text not null
            ) without rowid;
            create unique index if not exists index_peer_id on peer (id);
            create index if not exists index_peer_user on peer (user);
            create index if not exists index_peer_created_at on peer (created_at);
            create index if not exists index_peer_status on peer (status);
        """
OSS_SELECT = "select guid, id, uuid, pk, user, status, info from peer where id = ?"
OSS_INSERT = "insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)"

GUID_A = bytes(range(16))
GUID_B = bytes(range(16, 32))
UUID_A = b"8b1e7a64-0c3e-4c1a-9a52-6c6f1f3e2d11"
UUID_B = b"0f3c1d2e-8d5a-4f7e-b6a1-2a3b4c5d6e7f"
PK_A = b"\xa1" * 32
PK_B = b"\xb2" * 32
PK_NEW = b"\xc3" * 32


def make_official_db(path, rows, create=OSS_CREATE):
    """A database as the official hbbs leaves it."""
    conn = sqlite3.connect(path)
    conn.executescript(create)
    conn.executemany(OSS_INSERT, rows)
    conn.commit()
    conn.close()


def query(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class ClockWithThreads(Clock):
    """Timed calls under test control; thread results still arrive through the real reactor.

    ``threadResults`` counts the round trips to the writer thread.
    """

    def __init__(self):
        super().__init__()
        self.threadResults = 0

    def callFromThread(self, f, *args, **kwargs):
        self.threadResults += 1
        reactor.callFromThread(f, *args, **kwargs)


class DbUrlTests(SynchronousTestCase):
    def test_plain_path(self):
        self.assertEqual(path_from_db_url("./db_v2.sqlite3"), "./db_v2.sqlite3")
        self.assertEqual(path_from_db_url("/var/lib/rustdesk/db.sqlite3"),
                         "/var/lib/rustdesk/db.sqlite3")

    def test_sqlx_urls(self):
        self.assertEqual(path_from_db_url("sqlite://db_v2.sqlite3"), "db_v2.sqlite3")
        self.assertEqual(path_from_db_url("sqlite:///var/db_v2.sqlite3"), "/var/db_v2.sqlite3")
        self.assertEqual(path_from_db_url("sqlite:db_v2.sqlite3"), "db_v2.sqlite3")

    def test_query_string_ignored(self):
        self.assertEqual(path_from_db_url("sqlite://./db_v2.sqlite3?mode=rwc"), "./db_v2.sqlite3")
        self.assertEqual(path_from_db_url("sqlite:///abs/db?mode=rwc&cache=shared"), "/abs/db")

    def test_new_guid(self):
        guid = new_guid()
        self.assertIsInstance(guid, bytes)
        self.assertEqual(len(guid), 16)
        self.assertEqual(guid[6] >> 4, 4)
        self.assertNotEqual(new_guid(), guid)


class StoreTestCase(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def openStore(self, path=None, clock=reactor, commit_delay=0):
        s = PeerStore(path or self.path, clock, commit_delay=commit_delay)
        self.addCleanup(s.close)
        return s, s.open()

    def eventsNamed(self, name):
        return [e for e in self.events if e.get("event") == name]


class OpenTests(StoreTestCase):
    def test_loads_official_db(self):
        """Every row the official server wrote is known, with info.ip parsed."""
        make_official_db(self.path, [
            (GUID_A, "123456789", UUID_A, PK_A, '{"ip":"192.168.1.122"}'),
            (GUID_B, "987654321", UUID_B, PK_B, '{"ip":"::ffff:1.2.3.4"}'),
        ])
        _, peers = self.openStore()
        got = sorted((p.guid, p.id, p.uuid, p.pk, p.ip, p.last_seen) for p in peers)
        self.assertEqual(got, [
            (GUID_A, "123456789", UUID_A, PK_A, "192.168.1.122", None),
            (GUID_B, "987654321", UUID_B, PK_B, "::ffff:1.2.3.4", None),
        ])

    def test_creates_the_official_schema(self):
        """A new file has the official table and indexes, byte for byte, in WAL mode."""
        self.openStore()
        reference = self.mktemp()
        make_official_db(reference, [])
        schema = "select type, name, tbl_name, sql from sqlite_master where tbl_name = 'peer' order by name"
        self.assertEqual(query(self.path, schema), query(reference, schema))
        self.assertEqual(query(self.path, "pragma journal_mode"), [("wal",)])
        tables = [name for (name,) in query(self.path, "select name from sqlite_master where type = 'table'")]
        self.assertEqual(sorted(tables), ["peer", "peer_last_seen"])

    def test_existing_schema_left_alone(self):
        """Columns another server added survive, and its rows still load."""
        make_official_db(self.path, [], create=OSS_CREATE + "alter table peer add column user_id integer;")
        conn = sqlite3.connect(self.path)
        conn.execute("insert into peer(guid, id, uuid, pk, info, user_id) values (?, ?, ?, ?, ?, 7)",
                     (GUID_A, "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4"}'))
        conn.commit()
        conn.close()
        _, peers = self.openStore()
        self.assertEqual([p.id for p in peers], ["123456789"])
        self.assertEqual(query(self.path, "select user_id from peer"), [(7,)])

    def test_lenient_info(self):
        """Invalid JSON, a missing or non-string ip, or a non-object all give ip ""."""
        infos = ["not json", "{}", '{"ip":5}', "[1]", "", '{"other":"x"}']
        rows = [(bytes([n]) * 16, f"10000000{n}", UUID_A, PK_A, info) for n, info in enumerate(infos)]
        make_official_db(self.path, rows)
        _, peers = self.openStore()
        self.assertEqual(len(peers), len(infos))
        self.assertEqual({p.ip for p in peers}, {""})

    def test_text_in_blob_columns(self):
        """TEXT that another tool put in guid/uuid/pk loads as bytes."""
        make_official_db(self.path, [
            ("0123456789abcdef", "123456789", UUID_A.decode(), "text-pk", '{"ip":"1.2.3.4"}'),
        ])
        _, peers = self.openStore()
        [peer] = peers
        self.assertEqual((peer.guid, peer.uuid, peer.pk), (b"0123456789abcdef", UUID_A, b"text-pk"))

    def test_sqlite_url(self):
        """DB_URL in sqlx form opens the file it names."""
        make_official_db(self.path, [(GUID_A, "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4"}')])
        s, peers = self.openStore("sqlite://" + self.path + "?mode=rwc")
        self.assertEqual(s.path, self.path)
        self.assertEqual([p.id for p in peers], ["123456789"])

    @inlineCallbacks
    def test_writer_thread_lives_with_the_store(self):
        """One writer thread, a daemon so that a store never closed cannot block exit."""
        s, _ = self.openStore()

        def writers():
            return [t for t in threading.enumerate() if "hbbs-peer-store" in t.name]

        self.assertEqual([t.daemon for t in writers()], [True])
        yield s.close()
        self.assertEqual(writers(), [])


class WriteTests(StoreTestCase):
    @inlineCallbacks
    def test_insert_reads_back_as_official(self):
        """The official select sees BLOBs and compact info JSON."""
        s, _ = self.openStore()
        d = s.insert(GUID_A, "123456789", UUID_A, PK_A, "::ffff:1.2.3.4")
        self.assertNoResult(d)
        yield d
        self.assertEqual(query(self.path, OSS_SELECT, ("123456789",)),
                         [(GUID_A, "123456789", UUID_A, PK_A, None, None, '{"ip":"::ffff:1.2.3.4"}')])
        types = query(self.path, "select typeof(guid), typeof(uuid), typeof(pk), typeof(info),"
                                 " typeof(created_at) from peer")
        self.assertEqual(types, [("blob", "blob", "blob", "text", "text")])
        self.assertEqual(s.pending, 0)

    @inlineCallbacks
    def test_update_keeps_uuid_and_foreign_info_keys(self):
        make_official_db(self.path, [
            (GUID_A, "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4","group":"ops","tags":[1,2]}'),
        ])
        s, _ = self.openStore()
        yield s.update(GUID_A, "123456789", PK_NEW, "5.6.7.8")
        [(guid, peerId, uuid, pk, _, _, info)] = query(self.path, OSS_SELECT, ("123456789",))
        self.assertEqual((guid, peerId, uuid, pk), (GUID_A, "123456789", UUID_A, PK_NEW))
        self.assertEqual(info, '{"ip":"5.6.7.8","group":"ops","tags":[1,2]}')

    @inlineCallbacks
    def test_update_replaces_unusable_info(self):
        infos = ["not json", "[1]", '"ip"']
        rows = [(bytes([n]) * 16, f"10000000{n}", UUID_A, PK_A, info) for n, info in enumerate(infos)]
        make_official_db(self.path, rows)
        s, _ = self.openStore()
        yield gatherResults([s.update(guid, peerId, PK_NEW, "5.6.7.8") for guid, peerId, *_ in rows])
        self.assertEqual(query(self.path, "select distinct info from peer"), [('{"ip":"5.6.7.8"}',)])
        self.assertEqual(s.failed_ops, 0)

    @inlineCallbacks
    def test_update_row_with_text_guid(self):
        """A TEXT guid from another tool is still found by its bytes."""
        make_official_db(self.path, [
            ("0123456789abcdef", "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4"}'),
        ])
        s, [peer] = self.openStore()
        yield gatherResults([s.update(peer.guid, "123456789", PK_NEW, "5.6.7.8"),
                             s.rename(peer.guid, "555666777")])
        self.assertEqual(query(self.path, "select id, pk, info from peer"),
                         [("555666777", PK_NEW, '{"ip":"5.6.7.8"}')])
        self.assertEqual(s.failed_ops, 0)

    @inlineCallbacks
    def test_group_commit(self):
        """Writes arriving within the delay share one transaction; none is answered before it."""
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock, commit_delay=0.002)
        writes = [s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4"),
                  s.update(GUID_A, "123456789", PK_NEW, "5.6.7.8"),
                  s.rename(GUID_A, "555666777")]
        self.assertEqual(s.pending, 3)
        clock.advance(0.001)
        self.assertEqual(clock.threadResults, 0)
        for d in writes:
            self.assertNoResult(d)
        clock.advance(0.001)
        yield gatherResults(writes)
        self.assertEqual((clock.threadResults, s.writes), (1, 1))
        self.assertEqual(query(self.path, OSS_SELECT, ("555666777",)),
                         [(GUID_A, "555666777", UUID_A, PK_NEW, None, None, '{"ip":"5.6.7.8"}')])

    @inlineCallbacks
    def test_a_full_batch_is_committed_at_once(self):
        clock = ClockWithThreads()
        s = PeerStore(self.path, clock, commit_delay=10.0, max_batch=3)
        self.addCleanup(s.close)
        s.open()
        writes = [s.insert(bytes([n]) * 16, f"10000000{n}", UUID_A, PK_A, "1.2.3.4")
                  for n in range(3)]
        yield gatherResults(writes)
        self.assertEqual(query(self.path, "select count(*) from peer"), [(3,)])

    @inlineCallbacks
    def test_integrity_error_refuses_only_that_op(self):
        """A duplicate id is logged and refused; the ops around it commit."""
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock, commit_delay=0.002)
        first = s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4")
        duplicate = s.insert(GUID_B, "123456789", UUID_B, PK_B, "1.2.3.4")
        last = s.update(GUID_A, "123456789", PK_NEW, "5.6.7.8")
        clock.advance(0.002)
        yield gatherResults([first, last])
        error = yield self.assertFailure(duplicate, StoreOpRefused)
        self.assertIn("UNIQUE", str(error))
        self.assertEqual(query(self.path, "select guid, pk from peer"), [(GUID_A, PK_NEW)])
        self.assertEqual(s.failed_ops, 1)
        [event] = self.eventsNamed("store_op_dropped")
        self.assertEqual((event["op"], event["guid"], event["peer_id"]),
                         ("insert", GUID_B.hex(), "123456789"))

    @inlineCallbacks
    def test_update_of_missing_row_is_refused(self):
        s, _ = self.openStore()
        yield self.assertFailure(s.update(GUID_A, "123456789", PK_A, "1.2.3.4"), StoreOpRefused)
        self.assertEqual(s.failed_ops, 1)
        [event] = self.eventsNamed("store_op_dropped")
        self.assertEqual(event["op"], "update")

    @inlineCallbacks
    def test_a_failed_commit_refuses_its_writes_and_the_store_recovers(self):
        """No write is kept for later: its client is refused and retries; last-seen times wait.

        The failing state is logged once, without a traceback, and ends once a
        commit works again after the hold time.
        """
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock)
        conn = sqlite3.connect(self.path)
        conn.execute("drop table peer")
        conn.commit()
        s.touch(GUID_A, 1000)
        yield self.assertFailure(s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4"),
                                 StoreUnavailable)
        yield self.assertFailure(s.insert(GUID_B, "987654321", UUID_B, PK_B, "1.2.3.4"),
                                 StoreUnavailable)
        self.assertIn("no such table", s.failure)
        yield self.assertFailure(s.check_writable(), StoreUnavailable)
        self.assertEqual((s.pending, s.refused_ops), (1, 2))
        self.assertEqual(len(self.eventsNamed("store_failing")), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        conn.executescript(OSS_CREATE)
        conn.close()
        yield s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4")
        self.assertIsNotNone(s.failure, "one lucky commit right after a failure is not recovery")
        clock.advance(PeerStore.RECOVERY_HOLD)
        yield s.insert(GUID_B, "987654321", UUID_B, PK_B, "1.2.3.4")
        self.assertIsNone(s.failure)
        self.assertEqual(len(self.eventsNamed("store_recovered")), 1)
        yield s.check_writable()
        self.assertEqual(query(self.path, "select id from peer order by id"),
                         [("123456789",), ("987654321",)])
        self.assertEqual(query(self.path, "select last_seen from peer_last_seen"), [(1000,)])

    @inlineCallbacks
    def test_failing_store_probes_until_writes_work(self):
        """With nothing to write, the tick probes with a real write transaction."""
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock)
        conn = sqlite3.connect(self.path)
        conn.execute("drop table peer")
        conn.commit()
        yield self.assertFailure(s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4"),
                                 StoreUnavailable)
        yield s.flush()
        conn.executescript(OSS_CREATE)
        conn.close()
        self.assertEqual(clock.threadResults, 1)
        clock.advance(PeerStore.RECOVERY_HOLD)
        yield s.flush()
        self.assertEqual(clock.threadResults, 2)
        self.assertIsNone(s.failure)

    def test_wrong_types_refused(self):
        """A str where a BLOB belongs fails at the call, not as TEXT in the file (G13)."""
        s = PeerStore(self.path, reactor)
        self.assertRaises(TypeError, s.insert, GUID_A, "123456789", UUID_A, PK_A.hex(), "1.2.3.4")
        self.assertRaises(TypeError, s.update, GUID_A.hex(), "123456789", PK_A, "1.2.3.4")
        self.assertRaises(TypeError, s.rename, GUID_A, b"123456789")
        self.assertEqual(s.pending, 0)

    def test_backlog_warning_once_per_crossing(self):
        self.patch(store, "BACKLOG_WARNING", 2)
        s = PeerStore(self.path, reactor)
        for n in range(5):
            s.touch(bytes([n]) * 16, 1000)
        [event] = self.eventsNamed("store_backlog")
        self.assertEqual(event["pending"], 3)


class LastSeenTests(StoreTestCase):
    @inlineCallbacks
    def test_survives_reopen(self):
        make_official_db(self.path, [(GUID_A, "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4"}')])
        s, _ = self.openStore()
        s.touch(GUID_A, 1700000000.7)
        yield s.close()
        _, [peer] = self.openStore()
        self.assertEqual(peer.last_seen, 1700000000.0)
        self.assertEqual(query(self.path, "select count(*) from peer"), [(1,)])

    @inlineCallbacks
    def test_touches_coalesce_per_guid(self):
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock, commit_delay=0.002)
        s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4")
        for t in (1000, 3000, 2000):
            s.touch(GUID_A, t)
        s.touch(GUID_B, 500)
        self.assertEqual(s.pending, 3)
        yield s.flush()
        self.assertEqual(query(self.path, "select guid, last_seen from peer_last_seen order by guid"),
                         [(GUID_A, 2000), (GUID_B, 500)])

    @inlineCallbacks
    def test_text_guid_keeps_its_last_seen(self):
        make_official_db(self.path, [("0123456789abcdef", "123456789", UUID_A, PK_A, "{}")])
        s, [peer] = self.openStore()
        s.touch(peer.guid, 1234)
        yield s.close()
        _, [peer] = self.openStore()
        self.assertEqual(peer.last_seen, 1234.0)


class LifecycleTests(StoreTestCase):
    @inlineCallbacks
    def test_last_seen_times_alone_wait_for_the_tick(self):
        clock = ClockWithThreads()
        s, _ = self.openStore(clock=clock, commit_delay=0.002)
        s.touch(GUID_A, 1000)
        clock.advance(PeerStore.TOUCH_INTERVAL - 0.01)
        self.assertEqual((s.pending, clock.threadResults), (1, 0))
        clock.advance(0.01)
        yield s.flush()
        self.assertEqual(query(self.path, "select last_seen from peer_last_seen"), [(1000,)])

    @inlineCallbacks
    def test_close_writes_what_is_queued(self):
        s, _ = self.openStore()
        s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4")
        yield s.close()
        self.assertEqual(query(self.path, "select id from peer"), [("123456789",)])

    @inlineCallbacks
    def test_ops_after_close_are_refused(self):
        s, _ = self.openStore()
        yield s.close()
        yield self.assertFailure(s.insert(GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4"),
                                 StoreUnavailable)
        self.assertEqual((s.pending, s.refused_ops), (0, 1))
        self.assertEqual(len(self.eventsNamed("store_op_refused")), 1)

    @inlineCallbacks
    def test_backup(self):
        """The copy includes queued ops and opens with the same peers."""
        make_official_db(self.path, [(GUID_A, "123456789", UUID_A, PK_A, '{"ip":"1.2.3.4"}')])
        s, _ = self.openStore()
        s.insert(GUID_B, "987654321", UUID_B, PK_B, "5.6.7.8")
        s.touch(GUID_B, 1234)
        target = self.mktemp()
        yield s.backup(target)
        _, peers = self.openStore(target)
        got = sorted((p.guid, p.id, p.uuid, p.pk, p.ip, p.last_seen) for p in peers)
        self.assertEqual(got, [
            (GUID_A, "123456789", UUID_A, PK_A, "1.2.3.4", None),
            (GUID_B, "987654321", UUID_B, PK_B, "5.6.7.8", 1234.0),
        ])
        self.assertEqual(json.loads(query(target, "select info from peer where id = '987654321'")[0][0]),
                         {"ip": "5.6.7.8"})
