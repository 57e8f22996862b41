"""hbbs's SQLite persistence, drop-in compatible with the official ``db_v2.sqlite3``.

The ``peer`` table is created and written exactly as the official server does
(PROTOCOL.md section 8, G13), so the file can be moved between the two servers.
Last-seen times live in a table of our own that the official server never reads.

An OK to a registration means its row is on disk.  Every write returns a
Deferred that fires only once its transaction is committed (WAL, fsync on
commit), or fails when it could not be.  Writes are group-committed by one
writer thread: when it is idle, whatever arrives within a couple of
milliseconds goes into one transaction; while it commits, the next batch
gathers.  So a burst of registrations costs one fsync per batch and the
reactor never waits for the disk.  While commits fail (disk full, read-only
mount) the store says so once, refuses, and recovers by itself.
"""

import json
import os
import sqlite3
import threading
from contextlib import suppress
from functools import partial

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..logs import Logger
from ..logtext import untrusted
from . import dbfile

# The official creation SQL, whitespace included, so that ``.schema`` of a
# file we created is identical to one the official server created.
OFFICIAL_SCHEMA = """
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

LAST_SEEN_SCHEMA = """
create table if not exists peer_last_seen (
    guid blob primary key not null,
    last_seen integer not null
) without rowid;
"""

BUSY_TIMEOUT = 5.0
BACKLOG_WARNING = 100_000

# Every column goes through ``cast(... as blob)``: other tools may have stored
# TEXT (possibly not even UTF-8) where the official server stores BLOBs.
_LOAD = """
select cast(p.guid as blob), typeof(p.guid), cast(p.id as blob), cast(p.uuid as blob),
       cast(p.pk as blob), cast(p.info as blob), s.last_seen
from peer as p left join peer_last_seen as s on s.guid = cast(p.guid as blob)
"""

_INSERT = (
    "insert into peer(guid, id, uuid, pk, info)"
    " values (:guid, :id, :uuid, :pk, json_object('ip', :ip))"
)
# The same for many peers in one statement: SQLite then runs once for all of them, where
# executemany lets go of the GIL for each row and waits for the reactor thread to give it
# back (up to the 5 ms switch interval) before the next.
_INSERT_MANY = "insert into peer(guid, id, uuid, pk, info) values "
_INSERT_ROW = "(?, ?, ?, ?, json_object('ip', ?))"
INSERTS_PER_STATEMENT = 1000

# Keeps whatever other keys another server stored in info; the nested CASE
# makes sure no row content can make the statement itself fail.
_SET_INFO_IP = (
    "case when not json_valid(info) then json_object('ip', :ip)"
    " when json_type(info) = 'object' then json_set(info, '$.ip', :ip)"
    " else json_object('ip', :ip) end"
)

# A guid that another tool stored as TEXT only matches a TEXT operand.
_WHERE_GUID = {False: "where guid = :guid", True: "where guid = cast(:guid as text)"}
_UPDATE = {
    text: f"update peer set id = :id, pk = :pk, info = {_SET_INFO_IP} {where}"
    for text, where in _WHERE_GUID.items()
}
_RENAME = {text: f"update peer set id = :id {where}" for text, where in _WHERE_GUID.items()}
_DELETE = {text: f"delete from peer {where}" for text, where in _WHERE_GUID.items()}
_FORGET_SEEN = "delete from peer_last_seen where guid = :guid"

_TOUCH = (
    "insert into peer_last_seen(guid, last_seen) values (?, ?)"
    " on conflict(guid) do update set last_seen = excluded.last_seen"
)

# Errors caused by one statement's data: the op is dropped, the batch goes on.
_OP_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)


def path_from_db_url(url):
    """The file path of a ``DB_URL``: a plain path or an sqlx ``sqlite:`` URL.

    ``sqlite://db_v2.sqlite3`` is relative, ``sqlite:///var/db.sqlite3``
    absolute; a ``?mode=rwc`` style query string is ignored.
    """
    if not url.startswith("sqlite:"):
        return url
    path = url[len("sqlite:"):].partition("?")[0]
    if path.startswith("//"):
        path = path[2:]
    return path


def _insertMany(conn, ops):
    """Insert the peers of ``ops`` (insert ops) with one statement; rows inserted."""
    values = []
    for _, _, p, _ in ops:
        values += (p["guid"], p["id"], p["uuid"], p["pk"], p["ip"])
    return conn.execute(_INSERT_MANY + ",".join([_INSERT_ROW] * len(ops)), values).rowcount


def _runs(ops):
    """``(start, end)`` of each run of consecutive ops with one statement (deletes alone)."""
    start = 0
    for index in range(1, len(ops) + 1):
        if index == len(ops) or ops[index][1] != ops[start][1] or ops[start][0] == "delete":
            yield start, index
            start = index


def new_guid():
    """A fresh guid as the official server makes it: a UUIDv4 in raw binary form (built from
    16 random bytes directly; ``uuid.uuid4()`` costs several times more per new peer)."""
    guid = bytearray(os.urandom(16))
    guid[6] = (guid[6] & 0x0F) | 0x40
    guid[8] = (guid[8] & 0x3F) | 0x80
    return bytes(guid)


def _ip_from_info(info):
    """``info.ip`` parsed leniently, as the official server does: "" when unusable."""
    try:
        parsed = json.loads(info) if info is not None else None
    except ValueError:
        return ""
    if isinstance(parsed, dict) and isinstance(parsed.get("ip"), str):
        return parsed["ip"]
    return ""


def _require(name, value, kind):
    """Refuse wrong types when queueing: a str pk would silently be stored as TEXT (G13)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {kind.__name__}, not {type(value).__name__}")


class StoredPeer:
    """One row of ``peer`` as loaded at start-up, with its last-seen time if known."""

    __slots__ = ("guid", "id", "uuid", "pk", "ip", "last_seen")

    def __init__(self, guid, id, uuid, pk, ip, last_seen):
        self.guid = guid
        self.id = id
        self.uuid = uuid
        self.pk = pk
        self.ip = ip
        self.last_seen = last_seen

    def __repr__(self):
        return (
            f"StoredPeer(guid={self.guid.hex()}, id={self.id!r}, ip={self.ip!r},"
            f" last_seen={self.last_seen!r})"
        )


class StoreUnavailable(Exception):
    """The database could not commit; the write was not made (the client is refused)."""


class StoreOpRefused(Exception):
    """The database rejected this write's own data (a duplicate id, a vanished row)."""


def _describe(error):
    """One line for an operator: the SQLite message, without a traceback."""
    return str(error) or type(error).__name__


class PeerStore:
    """Group-committed writes of peers to SQLite from one writer thread.

    ``insert``, ``update``, ``rename`` and ``delete`` return Deferreds that
    fire once committed; ``touch`` (last-seen times) is best effort and is
    written at least every ``touch_interval``.  Ops are written in the order
    they were queued.  An op whose own data is rejected fails alone
    (StoreOpRefused); any other database error fails the whole batch
    (StoreUnavailable), puts the store in the *failing* state (``failure``
    holds the reason, ``/readyz`` shows it) and is logged once.  The state
    ends when a commit succeeds at least ``RECOVERY_HOLD`` seconds after the
    last failure with enough free space on the disk, so a nearly full disk
    does not flap between the two states on every batch.
    """

    log = Logger()

    COMMIT_DELAY = 0.002
    MAX_BATCH = 4096
    TOUCH_INTERVAL = 1.0
    RECOVERY_HOLD = 5.0

    def __init__(self, path, reactor, commit_delay=COMMIT_DELAY, max_batch=MAX_BATCH,
                 touch_interval=TOUCH_INTERVAL):
        self.path = path_from_db_url(path)
        self.failed_ops = 0
        self.refused_ops = 0
        self.writes = 0
        self.write_seconds = 0.0
        self.failure = None
        self._failedAt = None
        self._reactor = reactor
        self._commitDelay = commit_delay
        self._maxBatch = max_batch
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="hbbs-peer-store")
        # A store never closed (a crash, a forgetful test) must not keep the
        # process alive; an interrupted commit just rolls back on next open.
        self._pool.threadFactory = partial(threading.Thread, daemon=True)
        self._lock = DeferredLock()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._touchInterval = touch_interval
        self._conn = None
        self._closing = False
        self._ops = []
        self._touches = {}
        self._inflight = 0
        self._commitRequested = False
        self._timer = None
        self._backlogWarned = False
        self._textGuids = set()
        self._kind = None

    @property
    def pending(self):
        """Ops queued or being written, not yet committed."""
        return len(self._ops) + len(self._touches) + self._inflight

    def examine(self):
        """Refuse (DatabaseRefused) a file that is not a sound RustDesk database, reading only."""
        self._kind = dbfile.examine(self.path)
        dbfile.check_writable(self.path)

    def open(self):
        """Check the file, create it or take it over, load every peer, and start writing.

        Synchronous on purpose: it runs once before the listeners serve, and
        the registry cannot answer anything before it knows the peers.  Any
        problem raises DatabaseRefused with one sentence for the operator;
        a file that is not ours is never written.
        """
        if self._kind is None:
            self.examine()
        if self._kind == dbfile.NEW:
            dbfile.create_private(self.path)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise dbfile.DatabaseRefused(f"cannot open the database {self.path}: {e}") from None
        try:
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=full")
            conn.executescript(OFFICIAL_SCHEMA + LAST_SEEN_SCHEMA)
            _rewriteHeader(conn)
            dbfile.make_private(self.path)
            peers = [self._peerFromRow(row) for row in conn.execute(_LOAD)]
        except sqlite3.Error as e:
            conn.close()
            raise dbfile.DatabaseRefused(f"cannot use the database {self.path}: {e}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._pool.start()
        self._loop.start(self._touchInterval, now=False)
        self.log.info("peer store {path} opened with {count} peers", path=self.path,
                      count=len(peers), event="store_opened")
        return peers

    def _peerFromRow(self, row):
        guid, guidType, peerId, uuid, pk, info, lastSeen = row
        if guidType != "blob":
            self._textGuids.add(guid)
        return StoredPeer(
            guid=guid,
            id=(peerId or b"").decode("utf-8", "replace"),
            uuid=uuid or b"",
            pk=pk or b"",
            ip=_ip_from_info(info),
            last_seen=None if lastSeen is None else float(lastSeen),
        )

    def insert(self, guid, peer_id, uuid, pk, ip):
        """Queue a new row (``guid`` from ``new_guid()``); fires once committed."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        _require("uuid", uuid, bytes)
        _require("pk", pk, bytes)
        _require("ip", ip, str)
        params = {"guid": guid, "id": peer_id, "uuid": uuid, "pk": pk, "ip": ip}
        return self._queue("insert", _INSERT, params)

    def update(self, guid, peer_id, pk, ip):
        """Queue a change of id, key and address (the uuid is never updated, G13)."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        _require("pk", pk, bytes)
        _require("ip", ip, str)
        params = {"guid": guid, "id": peer_id, "pk": pk, "ip": ip}
        return self._queue("update", _UPDATE[guid in self._textGuids], params)

    def rename(self, guid, new_id):
        """Queue an id change; guid and uuid stay, so the machine keeps its row."""
        _require("guid", guid, bytes)
        _require("new_id", new_id, str)
        params = {"guid": guid, "id": new_id}
        return self._queue("rename", _RENAME[guid in self._textGuids], params)

    def delete(self, guid, peer_id):
        """Queue the removal of a row and its last-seen time (an admin releasing an id)."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        self._touches.pop(guid, None)
        params = {"guid": guid, "id": peer_id}
        return self._queue("delete", _DELETE[guid in self._textGuids], params)

    def touch(self, guid, last_seen):
        """Queue a last-seen time (unix seconds); only the latest per guid is written."""
        _require("guid", guid, bytes)
        if self._closing:
            self.log.warn("peer store closed: last-seen time of guid {guid} not written",
                          guid=guid.hex(), event="store_op_dropped")
            return
        self._touches[guid] = int(last_seen)
        self._checkBacklog()

    def _queue(self, kind, sql, params):
        if self._closing:
            self.refused_ops += 1
            self.log.error("peer store closed: refused {op} of peer {peer_id}", op=kind,
                           peer_id=untrusted(params["id"]), event="store_op_refused")
            return fail(StoreUnavailable("the peer store is closed"))
        d = Deferred()
        self._ops.append((kind, sql, params, d))
        self._checkBacklog()
        self._requestCommit()
        return d

    def _requestCommit(self):
        """Commit soon: at once when a batch is full, else after the gathering delay."""
        if self._commitRequested:
            if self._timer is not None and len(self._ops) >= self._maxBatch:
                self._commitNow()
            return
        self._commitRequested = True
        if len(self._ops) >= self._maxBatch or not self._commitDelay:
            self._commitNow()
        else:
            self._timer = self._reactor.callLater(self._commitDelay, self._commitNow)

    def _commitNow(self):
        self._cancelTimer()
        # Failures reach each op's own Deferred; the batch's is only for flush() callers.
        self._lock.run(self._writeQueued).addErrback(lambda failure: None)

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _checkBacklog(self):
        if not self._backlogWarned and self.pending > BACKLOG_WARNING:
            self._backlogWarned = True
            self.log.warn(
                "peer store backlog of {pending} ops exceeds {limit}: the database is too slow",
                pending=self.pending, limit=BACKLOG_WARNING, event="store_backlog",
            )

    def flush(self):
        """Commit everything queued so far; fires once committed, fails with StoreUnavailable."""
        return self._lock.run(self._writeQueued)

    def _tick(self):
        """Last-seen times wait for the next batch or this tick; while failing, a probe."""
        if self._lock.locked or self._commitRequested:
            return None
        if self._touches:
            return self.flush().addErrback(lambda failure: None)
        if self.failure is not None:
            return self._lock.run(self._probe).addErrback(lambda failure: None)
        return None

    def _probe(self):
        """A write transaction that changes nothing, to see whether commits work again."""
        d = deferToThreadPool(self._reactor, self._pool, self._probeInThread)
        d.addCallbacks(lambda _: self._committed(), self._commitFailed)
        return d

    @staticmethod
    def _writeRun(conn, ops, start, end):
        """Ops ``start`` to ``end`` (one statement, not deletes) in one ``executemany``:
        True if each changed its row; else nothing of them is left and each goes alone,
        so a rejected op refuses only itself."""
        conn.execute("savepoint run")
        try:
            if ops[start][0] == "insert":
                # SQLite before 3.32 allows only 999 variables in a statement.
                rows = min(INSERTS_PER_STATEMENT,
                           conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5)
                changed = sum(_insertMany(conn, ops[first:min(first + rows, end)])
                              for first in range(start, end, rows))
            else:
                changed = conn.executemany(ops[start][1],
                                           [op[2] for op in ops[start:end]]).rowcount
        except _OP_ERRORS:
            changed = -1
        if changed == end - start:
            conn.execute("release run")
            return True
        conn.execute("rollback to run")
        conn.execute("release run")
        return False

    def _probeInThread(self):
        conn = self._conn
        conn.execute("begin immediate")
        try:
            _rewriteHeader(conn)
            conn.execute("commit")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.rollback()
            raise

    def _writeQueued(self):
        """Hand the queue to the writer thread; the lock keeps batches in order."""
        self._commitRequested = False
        self._cancelTimer()
        if not (self._ops or self._touches):
            return succeed(None)
        ops, touches = self._ops, self._touches
        self._ops, self._touches = [], {}
        self._inflight = len(ops) + len(touches)
        started = self._reactor.seconds()
        d = deferToThreadPool(self._reactor, self._pool, self._writeBatch, ops, touches)

        def written(dropped):
            self._inflight = 0
            self.writes += 1
            self.write_seconds += self._reactor.seconds() - started
            if self.pending <= BACKLOG_WARNING:
                self._backlogWarned = False
            self._committed()
            for index, (kind, _, params, done) in enumerate(ops):
                reason = dropped.get(index)
                if reason is None:
                    done.callback(None)
                    continue
                self.failed_ops += 1
                self.log.error(
                    "peer store dropped {op} of peer {peer_id} (guid {guid}): {reason}",
                    op=kind, peer_id=untrusted(params["id"]), guid=params["guid"].hex(),
                    reason=reason, event="store_op_dropped")
                done.errback(StoreOpRefused(reason))

        def failed(failure):
            self._inflight = 0
            for guid, lastSeen in touches.items():
                self._touches.setdefault(guid, lastSeen)
            self._commitFailed(failure)
            refusal = StoreUnavailable(self.failure)
            self.refused_ops += len(ops)
            for _, _, _, done in ops:
                done.errback(refusal)
            return failure

        d.addCallbacks(written, failed)
        return d

    def _writeBatch(self, ops, touches):
        """Runs in the writer thread: one transaction; returns ``{op index: reason}`` of the
        ops whose own data was rejected.

        A failing statement only undoes itself (SQLite's default ABORT), so
        the ops around a rejected one still commit together.
        """
        conn = self._conn
        dropped = {}
        conn.execute("begin immediate")
        try:
            for start, end in _runs(ops):
                if end - start > 1 and self._writeRun(conn, ops, start, end):
                    continue
                for index in range(start, end):
                    kind, sql, params, _ = ops[index]
                    try:
                        changed = conn.execute(sql, params).rowcount
                    except _OP_ERRORS as e:
                        dropped[index] = str(e)
                        continue
                    if not changed:
                        dropped[index] = "no row has this guid"
                    elif kind == "delete":
                        conn.execute(_FORGET_SEEN, params)
            conn.executemany(_TOUCH, touches.items())
            conn.execute("commit")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.rollback()
            raise
        return dropped

    def _commitFailed(self, failure):
        """Enter (or stay in) the failing state; logged once per entry, never a traceback."""
        reason = _describe(failure.value)
        self._failedAt = self._reactor.seconds()
        if self.failure is None:
            self.log.error(
                "peer store {path}: commits fail ({reason}); registrations are refused until "
                "a write succeeds", path=self.path, reason=reason, event="store_failing")
        self.failure = reason
        return failure

    def _committed(self):
        """A commit worked; leave the failing state once that is more than a lucky batch."""
        if self.failure is None:
            return
        now = self._reactor.seconds()
        if now - self._failedAt < self.RECOVERY_HOLD or not dbfile.space_to_spare(self.path):
            return
        self.log.info("peer store {path}: commits work again (failing for {seconds:.0f}s: "
                      "{reason})", path=self.path, seconds=now - self._failedAt,
                      reason=self.failure, event="store_recovered")
        self.failure = None

    def backup(self, target_path):
        """Copy the live database to ``target_path`` (SQLite online backup, mode 0600).

        Queued ops are flushed first if possible; a failing flush does not
        stop the backup, which may be exactly what the operator needs.
        """
        return self._lock.run(self._backupAfterFlush, target_path)

    def _backupAfterFlush(self, targetPath):
        d = self._writeQueued()
        d.addErrback(lambda failure: None)
        d.addCallback(
            lambda _: deferToThreadPool(self._reactor, self._pool, self._backupInThread, targetPath)
        )
        return d

    def _backupInThread(self, targetPath):
        dbfile.create_private(targetPath)
        target = sqlite3.connect(targetPath)
        try:
            self._conn.backup(target)
        finally:
            target.close()

    def check_writable(self):
        """Fires with the seconds a write transaction took to open, for readiness checks.

        Fails while commits fail, with the reason.  Otherwise ``begin
        immediate`` takes SQLite's write lock, so a read-only file or another
        writer holding the lock show here too.
        """
        if self._conn is None or self._closing:
            return fail(StoreUnavailable("peer store is not open"))
        if self.failure is not None:
            return fail(StoreUnavailable(f"commits fail: {self.failure}"))
        started = self._reactor.seconds()
        d = deferToThreadPool(self._reactor, self._pool, self._beginAndRollback)
        d.addCallback(lambda _: self._reactor.seconds() - started)
        return d

    def _beginAndRollback(self):
        self._conn.execute("begin immediate")
        self._conn.execute("rollback")

    def close(self):
        """Stop the loop, commit what is queued, close, stop the thread.

        Ops that the final commit cannot write are refused (their Deferreds
        fail) and counted: shutdown must not hang on a broken disk.
        """
        if self._conn is None or self._closing:
            return succeed(None)
        self._closing = True
        if self._loop.running:
            self._loop.stop()
        d = self.flush()
        d.addErrback(self._loseTouches)
        d.addCallback(lambda _: self._lock.run(self._closeConnection))
        d.addBoth(self._stopPool)
        return d

    def _loseTouches(self, failure):
        lost = len(self._touches)
        self._touches = {}
        if lost:
            self.log.critical("peer store closed with {count} last-seen times unwritten",
                              count=lost, event="store_ops_lost")

    def _closeConnection(self):
        return deferToThreadPool(self._reactor, self._pool, self._conn.close)

    def _stopPool(self, result):
        self._conn = None
        self._pool.stop()
        return result


def _rewriteHeader(conn):
    """Rewrite the header page without changing it: a real write, for probing the disk."""
    (version,) = conn.execute("pragma user_version").fetchone()
    conn.execute(f"pragma user_version = {int(version)}")
