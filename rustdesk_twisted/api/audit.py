"""Audit logs (API.md 1.6): connections, file transfers and alarms the clients report.

The controlled device posts with no credentials, naming itself by ``id`` and
``uuid`` (:mod:`.identity`): a post whose uuid differs from the one registered
for the id is refused (403), so no machine writes rows for another's id.  An
id nobody registered yet (no devices row, not in hbbs's peer table) is
accepted and its rows keep the uuid it gave, at most ``unknown_per_minute``
such posts per source.  Success is 200 with an empty body, the only answer the
client does not retry; a database failure answers 503 and frees the record's
nonce, so the retry stores it.  Nonces are remembered five minutes, per id, in
memory (the client stops retrying after 120 s); a duplicate of a record still
being written waits for that write's outcome.

A connection row is created by the "new" post and found again by (id, uuid,
conn_id) -- the most recent row of that key still open -- since "new" is sent
before the controller's LoginRequest and carries session_id 0; "authorised"
fills in the session, the controller and its user, "close" the end.  The
controller's user is the owner of the freshest unexpired login token issued
to the controller's id (``tokens.rustdesk_id``).  A "new" for a key that still
has an open row closes that row: conn_id restarts with the client's process.

Notes: the controlling side posts ``{id, session_id, note}`` to the same path
(no uuid: the random u64 session id is its proof), or fetches the row's guid
(``GET /api/audit/conn/active``) and later ``PUT /api/audit``; both of the
latter need a login, and only the controller's user (or an admin) gets the
guid or may write the note.

Rows older than ``retention_days`` go every hour.  The web console reads
through :meth:`Audit.query`, :meth:`Audit.export_csv`, :meth:`Audit.connection`
and :meth:`Audit.set_note`.
"""

import csv
import io
import json
import uuid as uuidlib
from collections import OrderedDict

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred, succeed

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .accounts import text_field
from .db import page
from .http import ApiError, bad_request, empty_reply, error_reply, json_reply
from .identity import MISMATCH, UNKNOWN, check_device, device_id, device_uuid

DEFAULT_RETENTION_DAYS = 180
DEFAULT_UNKNOWN_PER_MINUTE = 120
NONCE_TTL = 300.0
MAX_NONCES = 200_000
MAX_SOURCES = 100_000
MAX_BODY = 64 * 1024
MAX_INFO = 16 * 1024
MAX_FILES_KEPT = 10
MAX_PATH = 4096
PRUNE_INTERVAL = 3600.0
PRUNE_BATCH = 10_000
EXPORT_CHUNK = 1000
INT64 = (1 << 63) - 1
UINT64 = (1 << 64) - 1
NOT_STORED = "the audit record was not stored, try again"

# kind -> (table, time column, type column), for the console's queries.
KINDS = {
    "conn": (tables.audit_conn, "started_at", "conn_type"),
    "file": (tables.audit_file, "created_at", "direction"),
    "alarm": (tables.audit_alarm, "created_at", "typ"),
}


class Nonces:
    """Records already stored, by (id, nonce), for ``ttl`` seconds; records being written.

    :meth:`claim` answers None for a new record (the caller writes it, then calls
    :meth:`stored` or :meth:`release`), else a Deferred of True (stored already)
    or False (the write under way failed: the client should try again).
    At most ``max_entries`` stored nonces: past it the oldest is forgotten early.
    """

    def __init__(self, ttl=NONCE_TTL, max_entries=MAX_NONCES):
        self.ttl = ttl
        self.max_entries = max_entries
        self.done = OrderedDict()
        self.pending = {}
        self.forgotten_early = 0

    def claim(self, key, now):
        self.prune(now)
        if key in self.done:
            return succeed(True)
        waiters = self.pending.get(key)
        if waiters is not None:
            waiter = Deferred()
            waiters.append(waiter)
            return waiter
        self.pending[key] = []
        return None

    def stored(self, key, now):
        self.done[key] = now
        self.done.move_to_end(key)
        while len(self.done) > self.max_entries:
            self.done.popitem(last=False)
            self.forgotten_early += 1
        for waiter in self.pending.pop(key, ()):
            waiter.callback(True)

    def release(self, key):
        for waiter in self.pending.pop(key, ()):
            waiter.callback(False)

    def prune(self, now):
        done = self.done
        while done:
            key, when = next(iter(done.items()))
            if now - when < self.ttl:
                break
            del done[key]


class PerMinute:
    """At most ``limit`` events per source key in each minute; ``max_sources`` keys kept."""

    def __init__(self, limit, max_sources=MAX_SOURCES):
        self.limit = limit
        self.max_sources = max_sources
        self.counts = {}

    def allow(self, key, now):
        minute = int(now // 60)
        entry = self.counts.get(key)
        if entry is None or entry[0] != minute:
            if entry is None and len(self.counts) >= self.max_sources:
                self.prune(now)
                if len(self.counts) >= self.max_sources:
                    return False
            entry = self.counts[key] = [minute, 0]
        if entry[1] >= self.limit:
            return False
        entry[1] += 1
        return True

    def prune(self, now):
        minute = int(now // 60)
        for key in [k for k, (m, _) in self.counts.items() if m != minute]:
            del self.counts[key]


def integer(body, name, minimum, maximum, required=False, default=0):
    """``body[name]`` as an int in [minimum, maximum] (JSON true/false and floats refused)."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise bad_request(f"{name} is out of range")
    return value


def info_text(body, keep_files):
    """The ``info`` field (a JSON object sent as a string) checked, bounded and re-encoded;
    with ``keep_files`` its ``files`` list of [name, size] cut to the largest ten."""
    text = text_field(body, "info", MAX_INFO)
    if not text:
        return "{}"
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):
        raise bad_request("info is not valid JSON") from None
    if not isinstance(info, dict):
        raise bad_request("info must hold a JSON object")
    if keep_files and "files" in info:
        files = info["files"]
        if not isinstance(files, list) or not all(
                isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
                and isinstance(f[1], int) and not isinstance(f[1], bool) for f in files):
            raise bad_request("info.files must be a list of [name, size]")
        info["files"] = files[:MAX_FILES_KEPT]
    return json.dumps(info, separators=(",", ":"), ensure_ascii=False)


def may_annotate(row, user, token):
    """Whether ``user`` (logged in with ``token``) controlled the connection ``row``."""
    if user["is_admin"]:
        return True
    if row["controller_user_id"] is not None:
        return row["controller_user_id"] == user["id"]
    return bool(row["controller_id"]) and row["controller_id"] == token["rustdesk_id"]


def _csv_cell(value):
    """A cell a spreadsheet shows as text: no formula from a controller's name or a path."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


class Audit:
    """The audit routes, their pruning (:attr:`pruner`, a service) and the console's reads."""

    log = Logger()

    def __init__(self, db, clock, hbbs, authenticate, retention_days=DEFAULT_RETENTION_DAYS,
                 unknown_per_minute=DEFAULT_UNKNOWN_PER_MINUTE):
        self.db = db
        self.clock = clock
        self.hbbs = hbbs
        self.authenticate = authenticate
        self.retention_days = retention_days
        self.nonces = Nonces()
        self.unknown = PerMinute(unknown_per_minute)
        self.limits = LimitLog(self.log)
        self.records = {"conn": 0, "file": 0, "alarm": 0, "note": 0}
        self.duplicates = 0
        self.pruned = 0
        self.pruner = TimerService(PRUNE_INTERVAL, self.prune)
        self.pruner.clock = clock

    # -- device posts ----------------------------------------------------------------------

    def post_conn(self, call):
        """POST /api/audit/conn: open, authorised and close from the controlled side, or the
        controller's note."""
        body = self._body(call)
        action = body.get("action")
        if action is None and "peer" not in body and "note" in body:
            return self._note(call, body)
        rustdesk_id = device_id(body.get("id"))
        key = (rustdesk_id, device_uuid(body), integer(body, "conn_id", -INT64, INT64, True))
        session = integer(body, "session_id", 0, UINT64)
        session_id = str(session) if session else ""
        if action == "new":
            row = {"ip": text_field(body, "ip", 64),
                   "conn_audit_ref": text_field(body, "conn_audit_ref", tables.SHORT),
                   "session_id": session_id}
            return self._record(call, body, key, "conn", _opened, key, row)
        if action == "close":
            return self._record(call, body, key, "conn", _closed, key, session_id)
        if action is not None:
            raise bad_request("action must be \"new\" or \"close\"")
        peer = body.get("peer")
        if not (isinstance(peer, list) and 1 <= len(peer) <= 2
                and all(isinstance(p, str) for p in peer)):
            raise bad_request("peer must be [controller id, controller name]")
        controller_id = peer[0].split("@", 1)[0][:tables.NAME]
        values = {"controller_id": controller_id,
                  "controller_name": (peer[1] if len(peer) > 1 else "")[:tables.SHORT],
                  "conn_type": integer(body, "type", 0, 255),
                  "primary_auth": integer(body, "primary_auth", 0, 255),
                  "two_factor": integer(body, "two_factor", 0, 255)}
        if session_id:
            values["session_id"] = session_id
        return self._record(call, body, key, "conn", _authorised, key, values)

    def post_file(self, call):
        """POST /api/audit/file: files sent (type 0) or received (type 1) by the device."""
        body = self._body(call)
        key = (device_id(body.get("id")), device_uuid(body),
               integer(body, "conn_id", -INT64, INT64))
        is_file = body.get("is_file", False)
        if not isinstance(is_file, bool):
            raise bad_request("is_file must be true or false")
        row = {"rustdesk_id": key[0], "conn_id": key[2],
               "peer_id": text_field(body, "peer_id", tables.NAME),
               "direction": integer(body, "type", 0, 255),
               "path": text_field(body, "path", MAX_PATH), "is_file": is_file,
               "info": info_text(body, keep_files=True)}
        return self._record(call, body, key, "file", _inserted, tables.audit_file, row)

    def post_alarm(self, call):
        """POST /api/audit/alarm: whitelist refusals, password guessing, scope violations."""
        body = self._body(call)
        key = (device_id(body.get("id")), device_uuid(body),
               integer(body, "conn_id", -INT64, INT64))
        row = {"rustdesk_id": key[0], "conn_id": key[2],
               "typ": integer(body, "typ", 0, 255, required=True),
               "info": info_text(body, keep_files=False),
               "conn_audit_ref": text_field(body, "conn_audit_ref", tables.SHORT)}
        return self._record(call, body, key, "alarm", _inserted, tables.audit_alarm, row)

    @staticmethod
    def _body(call):
        if len(call.body) > MAX_BODY:
            raise ApiError(413, "the audit record is too large")
        return call.json()

    def _record(self, call, body, key, kind, work, *args):
        """Check the device, then write once per nonce: empty 200 when stored."""
        nonce = text_field(body, "nonce", 64)
        d = check_device(self.db, self.hbbs, key[0], key[1])
        d.addCallback(self._checked, call, key, kind, nonce, work, args)
        return d

    def _checked(self, verdict, call, key, kind, nonce, work, args):
        source = source_key(call.client_ip)
        if verdict == MISMATCH:
            self.limits.hit(call.now, "audit-uuid-mismatch", source,
                            f"id {quoted(key[0])} is registered with another uuid")
            raise ApiError(403, "this id is registered to another machine")
        if verdict == UNKNOWN and not self.unknown.allow(source, call.now):
            self.limits.hit(call.now, "audit-unknown-per-minute", source,
                            f"{self.unknown.limit}/min, id {quoted(key[0])}")
            raise ApiError(429, "too many audit records from unregistered devices")
        claimed = (key[0], nonce)
        if nonce:
            waiting = self.nonces.claim(claimed, call.now)
            if waiting is not None:
                self.duplicates += 1
                return waiting.addCallback(
                    lambda stored: empty_reply() if stored else error_reply(503, NOT_STORED))
        d = self.db.run(work, *args, call.now)
        d.addCallbacks(self._written, self._not_written, callbackArgs=(call, kind, claimed),
                       errbackArgs=(call, kind, claimed))
        return d

    def _written(self, _, call, kind, claimed):
        if claimed[1]:
            self.nonces.stored(claimed, call.now)
        self.records[kind] += 1
        self.log.debug("{client} audit {kind} stored for {id}", client=call.client_ip,
                       kind=kind, id=quoted(claimed[0]), event="api.audit_stored")
        return empty_reply()

    def _not_written(self, failure, call, kind, claimed):
        if claimed[1]:
            self.nonces.release(claimed)
        failure.trap(SQLAlchemyError)
        self.log.warn("{client} audit {kind} for {id} not stored: {why}", client=call.client_ip,
                      kind=kind, id=quoted(claimed[0]), why=type(failure.value).__name__,
                      event="api.audit_not_stored")
        return error_reply(503, NOT_STORED)

    def _note(self, call, body):
        """The controller's note from the session menu: ``{id, session_id, note}``."""
        rustdesk_id = device_id(body.get("id"))
        session_id = str(integer(body, "session_id", 1, UINT64, required=True))
        note = text_field(body, "note", tables.NOTE)
        d = self.db.run(_noted, rustdesk_id, session_id, note)

        def done(found):
            if not found:
                raise ApiError(404, "no connection with this id and session")
            self.records["note"] += 1
            return empty_reply()
        return d.addCallback(done)

    # -- the controller, logged in -----------------------------------------------------------

    def conn_active(self, call):
        """GET /api/audit/conn/active: the guid of the caller's open connection to ``id`` in
        session ``session_id``, as a JSON string ("" while there is none: the client asks again)."""
        rustdesk_id = device_id(call.query.get("id"))
        session = call.query_int("session_id", None, minimum=1, maximum=UINT64)
        if session is None:
            raise bad_request("session_id is required")
        session_id = str(session)
        conn_type = call.query_int("conn_type", None, minimum=0, maximum=255)
        d = self.db.run(_active, rustdesk_id, session_id, conn_type)
        d.addCallback(lambda row: json_reply(
            row["guid"] if row is not None and may_annotate(row, call.user, call.token) else ""))
        return d

    def put_note(self, call):
        """PUT /api/audit ``{guid, note}``: the note asked for at the end of a session."""
        body = call.json()
        guid = text_field(body, "guid", 40, required=True)
        note = text_field(body, "note", tables.NOTE)
        d = self.db.run(_by_guid, guid)

        def found(row):
            if row is None:
                raise ApiError(404, "no such connection")
            if not may_annotate(row, call.user, call.token):
                raise ApiError(403, "only the controller's user may note this connection")
            return self.set_note(guid, note)
        return d.addCallback(found).addCallback(lambda _: empty_reply())

    # -- the web console ---------------------------------------------------------------------

    def query(self, kind, rustdesk_id=None, since=None, until=None, typ=None, current=1,
              page_size=100):
        """Deferred of ``{"total", "data"}``: rows of ``kind`` ("conn", "file", "alarm"),
        newest first, filtered by device, time range [since, until) and type (conn_type,
        direction or typ).  Connection rows carry ``active`` (not closed yet) beside
        ``rustdesk_id`` and ``conn_id``, what a Disconnect button needs."""
        statement = self._filtered(kind, rustdesk_id, since, until, typ)
        table, time_column, _ = KINDS[kind]
        statement = statement.order_by(table.c[time_column].desc(), table.c.id.desc())
        d = self.db.run(page, statement, current, page_size)
        if kind == "conn":
            d.addCallback(_with_active)
        return d

    def export_csv(self, kind, write, rustdesk_id=None, since=None, until=None, typ=None,
                   chunk_rows=EXPORT_CHUNK):
        """Write every matching row of ``kind`` as CSV (a header line first) through
        ``write(bytes)``, ``chunk_rows`` rows per database read, newest first, no cap.
        ``write`` may return a Deferred: the next chunk is read once it fires
        (backpressure).  Deferred of the number of rows; cancelling it stops the export."""
        statement = self._filtered(kind, rustdesk_id, since, until, typ)
        table = KINDS[kind][0]
        names = [c.name for c in table.columns]
        state = {"cancelled": False, "rows": 0}
        done = Deferred(lambda _: state.update(cancelled=True))
        header = io.StringIO()
        csv.writer(header).writerow(names)

        def send(data, then):
            if not state["cancelled"]:
                maybeDeferred(write, data).addCallback(lambda _: then()).addErrback(failed)

        def more(last_id):
            if not state["cancelled"]:
                d = self.db.run(_csv_chunk, statement, table, names, last_id, chunk_rows)
                d.addCallback(got).addErrback(failed)

        def got(chunk):
            data, count, last_id = chunk
            state["rows"] += count
            if count < chunk_rows:
                send(data, finish)
            else:
                send(data, lambda: more(last_id))

        def finish():
            if not state["cancelled"]:
                done.callback(state["rows"])

        def failed(failure):
            if not done.called:
                done.errback(failure)
        send(header.getvalue().encode(), lambda: more(None))
        return done

    def _filtered(self, kind, rustdesk_id, since, until, typ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        table, time_column, type_column = KINDS[kind]
        statement = select(table)
        if rustdesk_id:
            statement = statement.where(table.c.rustdesk_id == rustdesk_id)
        if since is not None:
            statement = statement.where(table.c[time_column] >= since)
        if until is not None:
            statement = statement.where(table.c[time_column] < until)
        if typ is not None:
            statement = statement.where(table.c[type_column] == typ)
        return statement

    def connection(self, guid):
        """Deferred of the connection row with ``guid`` (a dict with ``active``), or None."""
        def found(row):
            if row is not None:
                row["active"] = row["closed_at"] is None
            return row
        return self.db.run(_by_guid, guid).addCallback(found)

    def set_note(self, guid, note):
        """Deferred of True when the connection ``guid`` exists and now has ``note``."""
        return self.db.run(_set_note, guid, note[:tables.NOTE])

    # -- retention ---------------------------------------------------------------------------

    def prune(self):
        """Forget nonces past their time and delete audit rows past the retention (0: keep
        them); never fails, so the hourly timer keeps running."""
        now = self.clock.seconds()
        self.nonces.prune(now)
        self.unknown.prune(now)
        if not self.retention_days:
            return succeed(0)
        cutoff = now - self.retention_days * 86400
        d = self._prune_from(cutoff, 0)
        d.addCallback(self._pruned)
        d.addErrback(self._prune_failed)
        return d

    def _prune_from(self, cutoff, total):
        def next_batch(result):
            deleted, more = result
            if more:
                return self._prune_from(cutoff, total + deleted)
            return total + deleted
        return self.db.run(_prune_batch, cutoff, PRUNE_BATCH).addCallback(next_batch)

    def _pruned(self, deleted):
        self.pruned += deleted
        if deleted:
            self.log.info("audit retention: {count} rows older than {days} days deleted",
                          count=deleted, days=self.retention_days, event="api.audit_pruned")
        return deleted

    def _prune_failed(self, failure):
        failure.trap(SQLAlchemyError)
        self.log.warn("audit retention: rows not deleted this time: {why}",
                      why=type(failure.value).__name__, event="api.audit_prune_failed")
        return 0

    def add_routes(self, router):
        identity = {"id": {"type": "string"}, "uuid": {"type": "string"},
                    "conn_id": {"type": "integer"}, "nonce": {"type": "string"}}
        router.add("POST", "/api/audit/conn", self.post_conn,
                   summary="Connection audit from the controlled device (new, authorised, "
                           "close) or the controller's note",
                   body={"type": "object", "required": ["id"], "properties": {
                       **identity, "session_id": {"type": "integer", "minimum": 0},
                       "action": {"enum": ["new", "close"]}, "ip": {"type": "string"},
                       "conn_audit_ref": {"type": "string"},
                       "peer": {"type": "array", "items": {"type": "string"}},
                       "type": {"type": "integer"}, "primary_auth": {"type": "integer"},
                       "two_factor": {"type": "integer"}, "note": {"type": "string"}}},
                   reply="empty")
        router.add("GET", "/api/audit/conn/active", self.conn_active,
                   auth=self.authenticate,
                   summary="The guid of the caller's open connection audit to a peer",
                   query={"id": {"type": "string"}, "session_id": {"type": "integer"},
                          "conn_type": {"type": "integer"}},
                   reply={"type": "string"})
        router.add("PUT", "/api/audit", self.put_note, auth=self.authenticate,
                   summary="Set the note of a connection the caller controlled",
                   body={"type": "object", "required": ["guid"], "properties": {
                       "guid": {"type": "string"}, "note": {"type": "string"}}},
                   reply="empty")
        router.add("POST", "/api/audit/file", self.post_file,
                   summary="File-transfer audit from the controlled device",
                   body={"type": "object", "required": ["id", "uuid"], "properties": {
                       **identity, "peer_id": {"type": "string"}, "type": {"type": "integer"},
                       "path": {"type": "string"}, "is_file": {"type": "boolean"},
                       "info": {"type": "string"}}},
                   reply="empty")
        router.add("POST", "/api/audit/alarm", self.post_alarm,
                   summary="Alarm audit from the controlled device",
                   body={"type": "object", "required": ["id", "uuid", "typ"], "properties": {
                       **identity, "typ": {"type": "integer"}, "info": {"type": "string"},
                       "conn_audit_ref": {"type": "string"}}},
                   reply="empty")



def _with_active(result):
    for row in result["data"]:
        row["active"] = row["closed_at"] is None
    return result


def _current(connection, key):
    """The id of the most recent open row of (rustdesk_id, device_uuid, conn_id), or None."""
    t = tables.audit_conn
    return connection.execute(
        select(t.c.id).where(t.c.rustdesk_id == key[0], t.c.device_uuid == key[1],
                             t.c.conn_id == key[2], t.c.closed_at.is_(None))
        .order_by(t.c.started_at.desc(), t.c.id.desc()).limit(1)).scalar()


def _new_row(key, now):
    return {"guid": str(uuidlib.uuid4()), "rustdesk_id": key[0], "device_uuid": key[1],
            "conn_id": key[2], "started_at": now}


def _opened(connection, key, row, now):
    t = tables.audit_conn
    connection.execute(update(t).where(
        t.c.rustdesk_id == key[0], t.c.device_uuid == key[1], t.c.conn_id == key[2],
        t.c.closed_at.is_(None)).values(closed_at=now))
    connection.execute(insert(t).values(**_new_row(key, now), **row))


def _authorised(connection, key, values, now):
    t, k = tables.audit_conn, tables.tokens
    values = dict(values, authorized_at=now)
    if values["controller_id"]:
        values["controller_user_id"] = connection.execute(
            select(k.c.user_id).where(k.c.rustdesk_id == values["controller_id"],
                                      k.c.kind == "session", k.c.expires_at > now)
            .order_by(k.c.last_used_at.desc(), k.c.id.desc()).limit(1)).scalar()
    row_id = _current(connection, key)
    if row_id is None:
        connection.execute(insert(t).values(**_new_row(key, now), **values))
    else:
        connection.execute(update(t).where(t.c.id == row_id).values(**values))


def _closed(connection, key, session_id, now):
    t = tables.audit_conn
    row_id = _current(connection, key)
    if row_id is not None:
        values = {"closed_at": now}
        if session_id:
            values["session_id"] = session_id
        connection.execute(update(t).where(t.c.id == row_id).values(**values))


def _inserted(connection, table, row, now):
    connection.execute(insert(table).values(**row, created_at=now))


def _noted(connection, rustdesk_id, session_id, note):
    t = tables.audit_conn
    row_id = connection.execute(
        select(t.c.id).where(t.c.rustdesk_id == rustdesk_id, t.c.session_id == session_id)
        .order_by(t.c.started_at.desc(), t.c.id.desc()).limit(1)).scalar()
    if row_id is None:
        return False
    connection.execute(update(t).where(t.c.id == row_id).values(note=note))
    return True


def _active(connection, rustdesk_id, session_id, conn_type):
    t = tables.audit_conn
    statement = select(t).where(t.c.rustdesk_id == rustdesk_id, t.c.session_id == session_id,
                                t.c.closed_at.is_(None))
    if conn_type is not None:
        statement = statement.where(t.c.conn_type == conn_type)
    row = connection.execute(
        statement.order_by(t.c.started_at.desc(), t.c.id.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def _by_guid(connection, guid):
    t = tables.audit_conn
    row = connection.execute(select(t).where(t.c.guid == guid)).first()
    return dict(row._mapping) if row is not None else None


def _set_note(connection, guid, note):
    t = tables.audit_conn
    return connection.execute(update(t).where(t.c.guid == guid).values(note=note)).rowcount > 0


def _csv_chunk(connection, statement, table, names, last_id, limit):
    """(CSV bytes, row count, last id) of the next ``limit`` rows below ``last_id``."""
    if last_id is not None:
        statement = statement.where(table.c.id < last_id)
    rows = connection.execute(statement.order_by(table.c.id.desc()).limit(limit)).all()
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([_csv_cell(row._mapping[name]) for name in names])
    return out.getvalue().encode(), len(rows), rows[-1].id if rows else last_id


def _prune_batch(connection, cutoff, limit):
    """Delete up to ``limit`` rows older than ``cutoff`` from each audit table:
    (rows deleted, whether some table may have more)."""
    deleted, more = 0, False
    for table, column in ((tables.audit_conn, "started_at"), (tables.audit_file, "created_at"),
                          (tables.audit_alarm, "created_at"),
                          (tables.audit_console, "created_at")):
        old = select(table.c.id).where(table.c[column] < cutoff).limit(limit)
        count = connection.execute(delete(table).where(table.c.id.in_(old))).rowcount
        deleted += count
        more = more or count >= limit
    return deleted, more
