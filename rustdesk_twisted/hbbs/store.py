"""hbbs's SQLite persistence, drop-in compatible with the official ``db_v2.sqlite3``.

The ``peer`` table is created and written exactly as the official server does
(PROTOCOL.md section 8, G13), so the file can be moved between the two servers.
Last-seen times live in a table of our own that the official server never reads.

Callers queue writes; a dedicated one-thread pool commits them in batches, one
transaction per flush, so the reactor never waits for the disk and a burst of
registrations costs one fsync.
"""

import json
import sqlite3
import threading
import uuid as uuid_module
from contextlib import suppress
from functools import partial

from twisted.internet.defer import DeferredLock, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.threadpool import ThreadPool

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
# Ops that may legitimately change no row.
_MAY_BE_NOOP = {"forget_seen"}

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


def new_guid():
    """A fresh guid as the official server makes it: a UUIDv4 in raw binary form."""
    return uuid_module.uuid4().bytes


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


class PeerStore:
    """Queued, batched writes of peers to SQLite from one writer thread.

    The queue is deliberately unbounded: every op is a registration the client
    was already told succeeded, and dropping it would silently forget a key.
    When the database cannot keep up, ``BACKLOG_WARNING`` pending ops log a
    warning instead, once per crossing.

    Ops are written in the order they were queued.  An op whose own data is
    rejected (a duplicate id, an update of a vanished row) is logged, counted
    in ``failed_ops`` and dropped; any other database error (locked, disk full)
    keeps the whole batch queued for the next flush.
    """

    log = Logger()

    def __init__(self, path, reactor, flush_interval=1.0):
        self.path = path_from_db_url(path)
        self.failed_ops = 0
        self.writes = 0
        self.write_seconds = 0.0
        self._reactor = reactor
        self._flushInterval = flush_interval
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="hbbs-peer-store")
        # A store never closed (a crash, a forgetful test) must not keep the
        # process alive; an interrupted commit just rolls back on next open.
        self._pool.threadFactory = partial(threading.Thread, daemon=True)
        self._lock = DeferredLock()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._conn = None
        self._closing = False
        self._ops = []
        self._touches = {}
        self._inflight = 0
        self._backlogWarned = False
        self._textGuids = set()

    @property
    def pending(self):
        """Ops queued or being written, not yet committed."""
        return len(self._ops) + len(self._touches) + self._inflight

    def open(self):
        """Create the file and schema, load every peer, and start writing.

        Synchronous on purpose: it runs once before the listeners open, and
        the registry cannot answer anything before it knows the peers.
        """
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("pragma journal_mode=wal")
            conn.executescript(OFFICIAL_SCHEMA + LAST_SEEN_SCHEMA)
            peers = [self._peerFromRow(row) for row in conn.execute(_LOAD)]
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._pool.start()
        self._loop.start(self._flushInterval, now=False)
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
        """Queue a new row; ``guid`` should come from ``new_guid()``."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        _require("uuid", uuid, bytes)
        _require("pk", pk, bytes)
        _require("ip", ip, str)
        params = {"guid": guid, "id": peer_id, "uuid": uuid, "pk": pk, "ip": ip}
        self._queue("insert", _INSERT, params)

    def update(self, guid, peer_id, pk, ip):
        """Queue a change of id, key and address; the uuid is never updated (G13)."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        _require("pk", pk, bytes)
        _require("ip", ip, str)
        params = {"guid": guid, "id": peer_id, "pk": pk, "ip": ip}
        self._queue("update", _UPDATE[guid in self._textGuids], params)

    def rename(self, guid, new_id):
        """Queue an id change (Change-ID); guid and uuid stay, so the machine keeps its row."""
        _require("guid", guid, bytes)
        _require("new_id", new_id, str)
        params = {"guid": guid, "id": new_id}
        self._queue("rename", _RENAME[guid in self._textGuids], params)

    def delete(self, guid, peer_id):
        """Queue the removal of a row and its last-seen time (an admin releasing an id)."""
        _require("guid", guid, bytes)
        _require("peer_id", peer_id, str)
        self._touches.pop(guid, None)
        params = {"guid": guid, "id": peer_id}
        self._queue("delete", _DELETE[guid in self._textGuids], params)
        self._queue("forget_seen", _FORGET_SEEN, params)

    def touch(self, guid, last_seen):
        """Queue a last-seen time (unix seconds); only the latest per guid is written."""
        _require("guid", guid, bytes)
        if self._refuseAfterClose("touch", guid):
            return
        self._touches[guid] = int(last_seen)
        self._checkBacklog()

    def _queue(self, kind, sql, params):
        if self._refuseAfterClose(kind, params["guid"]):
            return
        self._ops.append((kind, sql, params))
        self._checkBacklog()

    def _refuseAfterClose(self, kind, guid):
        """Ops racing a shutdown cannot be written any more: say so, don't hide it."""
        if not self._closing:
            return False
        self.failed_ops += 1
        self.log.error("peer store closed: dropped {op} (guid {guid})", op=kind, guid=guid.hex(),
                       event="store_op_dropped")
        return True

    def _checkBacklog(self):
        if not self._backlogWarned and self.pending > BACKLOG_WARNING:
            self._backlogWarned = True
            self.log.warn(
                "peer store backlog of {pending} ops exceeds {limit}: the database is too slow",
                pending=self.pending, limit=BACKLOG_WARNING, event="store_backlog",
            )

    def flush(self):
        """Write everything queued so far in one transaction in the writer thread.

        Fires once it is committed; errbacks with the database error if the
        batch could not be written, in which case it stays queued.
        """
        return self._lock.run(self._writeQueued)

    def _tick(self):
        if self._lock.locked or not (self._ops or self._touches):
            return None
        return self.flush().addErrback(lambda failure: None)

    def _writeQueued(self):
        """Hand the queue to the writer thread; the lock keeps batches in order."""
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
            for kind, params, reason in dropped:
                self.failed_ops += 1
                self.log.error(
                    "peer store dropped {op} of peer {peer_id} (guid {guid}): {reason}",
                    op=kind, peer_id=params["id"], guid=params["guid"].hex(), reason=reason,
                    event="store_op_dropped",
                )
            if self.pending <= BACKLOG_WARNING:
                self._backlogWarned = False

        def failed(failure):
            self._inflight = 0
            self._ops[:0] = ops
            for guid, lastSeen in touches.items():
                self._touches.setdefault(guid, lastSeen)
            self.log.failure(
                "peer store could not write {count} ops; kept for the next flush",
                failure, level=LogLevel.error, count=len(ops) + len(touches),
                event="store_write_failed",
            )
            return failure

        d.addCallbacks(written, failed)
        return d

    def _writeBatch(self, ops, touches):
        """Runs in the writer thread: one transaction, returns the dropped ops.

        A failing statement only undoes itself (SQLite's default ABORT), so
        the ops around a rejected one still commit together.
        """
        conn = self._conn
        dropped = []
        conn.execute("begin immediate")
        try:
            for kind, sql, params in ops:
                try:
                    changed = conn.execute(sql, params).rowcount
                except _OP_ERRORS as e:
                    dropped.append((kind, params, str(e)))
                    continue
                if not changed and kind not in _MAY_BE_NOOP:
                    dropped.append((kind, params, "no row has this guid"))
            conn.executemany(_TOUCH, touches.items())
            conn.execute("commit")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.rollback()
            raise
        return dropped

    def backup(self, target_path):
        """Copy the live database to ``target_path`` (SQLite online backup).

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
        target = sqlite3.connect(targetPath)
        try:
            self._conn.backup(target)
        finally:
            target.close()

    def check_writable(self):
        """Fires with the seconds a write transaction took to open, for readiness checks.

        ``begin immediate`` takes SQLite's write lock, so a read-only file, a
        full disk's journal or another writer holding the lock all show here.
        """
        if self._conn is None or self._closing:
            return fail(sqlite3.OperationalError("peer store is not open"))
        started = self._reactor.seconds()
        d = deferToThreadPool(self._reactor, self._pool, self._beginAndRollback)
        d.addCallback(lambda _: self._reactor.seconds() - started)
        return d

    def _beginAndRollback(self):
        self._conn.execute("begin immediate")
        self._conn.execute("rollback")

    def close(self):
        """Stop the flush loop, write what is queued, close, stop the thread.

        Ops that the final flush cannot write are logged as lost and counted
        in ``failed_ops``: shutdown must not hang on a broken disk.
        """
        if self._conn is None or self._closing:
            return succeed(None)
        self._closing = True
        if self._loop.running:
            self._loop.stop()
        d = self.flush()
        d.addErrback(self._loseQueued)
        d.addCallback(lambda _: self._lock.run(self._closeConnection))
        d.addBoth(self._stopPool)
        return d

    def _loseQueued(self, failure):
        lost = len(self._ops) + len(self._touches)
        self.failed_ops += lost
        self._ops, self._touches = [], {}
        self.log.critical("peer store closed with {count} ops unwritten", count=lost,
                          event="store_ops_lost")

    def _closeConnection(self):
        return deferToThreadPool(self._reactor, self._pool, self._conn.close)

    def _stopPool(self, result):
        self._conn = None
        self._pool.stop()
        return result
