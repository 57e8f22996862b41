"""Audit over HTTP (API.md 1.6): the client's exact bodies, dedup, notes, retention, console
reads; the official client's calls replayed."""

import base64
import json
import os
import sqlite3
import uuid as uuidlib
from urllib.parse import urlencode

from nacl.signing import SigningKey
from sqlalchemy import insert, select, text
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.app import at_once
from rustdesk_twisted.api.audit import Nonces, PerMinute
from rustdesk_twisted.api.hbbs import HbbsLink
from rustdesk_twisted.client.api import ApiCallError, OfficialApiClient
from rustdesk_twisted.hbbs.store import OFFICIAL_SCHEMA

from .apisupport import ApiHarness
from .services import fresh_postgres_database

DEVICE = "123456789"
UUID = base64.b64encode(b"machine-uid-of-the-device").decode()
CONTROLLER = "987654321"
SESSION = 18446744073709551615


def hbbs_peers(testcase, peers):
    """An HbbsLink reading a real db_v2.sqlite3 made with the official schema, holding
    ``peers``: (id, raw uuid, pk)."""
    path = testcase.mktemp() + ".sqlite3"
    connection = sqlite3.connect(path)
    connection.executescript(OFFICIAL_SCHEMA)
    connection.executemany(
        "insert into peer (guid, id, uuid, pk, info) values (?, ?, ?, ?, '{}')",
        [(uuidlib.uuid4().bytes, peer_id, raw_uuid, pk) for peer_id, raw_uuid, pk in peers])
    connection.commit()
    connection.close()
    return HbbsLink(MemoryReactorClock(), peer_db=path, blocking=at_once)


def add_device(api, rustdesk_id=DEVICE, uuid=UUID):
    api.db.run_now(lambda c: c.execute(insert(tables.devices).values(
        rustdesk_id=rustdesk_id, uuid=uuid, created_at=api.clock.seconds())))


def opened(conn_id=17, **extra):
    body = {"ip": "203.0.113.5", "action": "new", "id": DEVICE, "uuid": UUID,
            "conn_id": conn_id, "session_id": 0, "nonce": str(uuidlib.uuid4())}
    body.update(extra)
    return body


def authorised(conn_id=17, **extra):
    body = {"peer": [CONTROLLER, "alice-laptop"], "type": 0, "primary_auth": 2,
            "two_factor": 1, "id": DEVICE, "uuid": UUID, "conn_id": conn_id,
            "session_id": SESSION, "nonce": str(uuidlib.uuid4())}
    body.update(extra)
    return body


def closed(conn_id=17, **extra):
    body = {"action": "close", "id": DEVICE, "uuid": UUID, "conn_id": conn_id,
            "session_id": SESSION, "nonce": str(uuidlib.uuid4())}
    body.update(extra)
    return body


def file_body(**extra):
    info = {"ip": "203.0.113.5", "name": "alice-laptop", "num": 2,
            "files": [["a.pdf", 1048576], ["b.txt", 12]]}
    body = {"id": DEVICE, "uuid": UUID, "peer_id": CONTROLLER, "conn_id": 17, "type": 0,
            "path": "/home/bob/Documents", "is_file": False, "info": json.dumps(info),
            "nonce": str(uuidlib.uuid4())}
    body.update(extra)
    return body


def rows(api, table):
    return api.db.run_now(lambda c: [dict(r._mapping) for r in
                                     c.execute(select(table).order_by(table.c.id))])


class OnSQLite:
    """The harness's database: SQLite in the test's directory."""

    def database(self):
        return None


class OnPostgres:
    """A fresh PostgreSQL database instead, for the same tests."""

    def database(self):
        return fresh_postgres_database(self)


class Posting(OnSQLite):
    """A harness with a registered device (``options`` go to the app)."""

    options = {}

    def setUp(self):
        self.api = ApiHarness(self, url=self.database(), **self.options)
        add_device(self.api)

    def post(self, path, body, client="192.0.2.10"):
        return self.api.request("POST", path, body, client=client)

    def assertStored(self, reply):
        self.assertEqual((reply.status, reply.body), (200, b""))


class ConnectionTests(Posting, unittest.TestCase):
    def test_open_authorised_close_fill_one_row(self):
        self.assertStored(self.post("/api/audit/conn", opened()))
        self.api.clock.advance(5)
        self.assertStored(self.post("/api/audit/conn", authorised()))
        self.api.clock.advance(60)
        self.assertStored(self.post("/api/audit/conn", closed()))
        [row] = rows(self.api, tables.audit_conn)
        start = self.api.clock.seconds() - 65
        self.assertEqual(
            {k: row[k] for k in ("rustdesk_id", "device_uuid", "conn_id", "ip", "session_id",
                                 "controller_id", "controller_name", "conn_type",
                                 "primary_auth", "two_factor", "started_at", "authorized_at",
                                 "closed_at")},
            {"rustdesk_id": DEVICE, "device_uuid": UUID, "conn_id": 17, "ip": "203.0.113.5",
             "session_id": str(SESSION), "controller_id": CONTROLLER,
             "controller_name": "alice-laptop", "conn_type": 0, "primary_auth": 2,
             "two_factor": 1, "started_at": start, "authorized_at": start + 5,
             "closed_at": start + 65})
        uuidlib.UUID(row["guid"])
        self.assertIsNone(row["controller_user_id"])

    def test_the_controllers_logged_in_user_is_linked(self):
        bob = self.api.add_user("bob")
        self.api.login("bob", id=CONTROLLER)
        self.post("/api/audit/conn", opened())
        self.post("/api/audit/conn", authorised())
        [row] = rows(self.api, tables.audit_conn)
        self.assertEqual(row["controller_user_id"], bob)

    def test_authorised_without_open_creates_the_row(self):
        self.assertStored(self.post("/api/audit/conn", authorised(conn_id=3, type=1)))
        [row] = rows(self.api, tables.audit_conn)
        self.assertEqual((row["conn_id"], row["conn_type"], row["closed_at"]), (3, 1, None))

    def test_a_new_open_with_the_same_conn_id_closes_the_stale_row(self):
        self.post("/api/audit/conn", opened())
        self.api.clock.advance(10)
        self.post("/api/audit/conn", opened())
        first, second = rows(self.api, tables.audit_conn)
        self.assertEqual(first["closed_at"], self.api.clock.seconds())
        self.assertIsNone(second["closed_at"])
        self.post("/api/audit/conn", closed())
        self.assertIsNotNone(rows(self.api, tables.audit_conn)[1]["closed_at"])

    def test_a_repeated_nonce_is_stored_once_for_five_minutes(self):
        body = opened()
        self.assertStored(self.post("/api/audit/conn", body))
        self.assertStored(self.post("/api/audit/conn", body))
        self.assertEqual(len(rows(self.api, tables.audit_conn)), 1)
        self.assertEqual(self.api.app.audit.duplicates, 1)
        self.api.clock.advance(301)
        self.assertStored(self.post("/api/audit/conn", body))
        self.assertEqual(len(rows(self.api, tables.audit_conn)), 2)

    def test_a_failed_write_answers_an_error_and_frees_the_nonce(self):
        self.api.db.run_now(lambda c: c.execute(text(
            "alter table audit_file rename to audit_file_away")))
        body = file_body()
        reply = self.post("/api/audit/file", body)
        self.assertEqual(reply.status, 503)
        self.assertIn("error", reply.json())
        self.api.db.run_now(lambda c: c.execute(text(
            "alter table audit_file_away rename to audit_file")))
        self.assertStored(self.post("/api/audit/file", body))
        self.assertEqual(len(rows(self.api, tables.audit_file)), 1)

    def test_another_machine_cannot_write_for_a_registered_id(self):
        reply = self.post("/api/audit/conn", opened(uuid="b3RoZXI="))
        self.assertEqual(reply.status, 403)
        self.assertIn("error", reply.json())
        self.assertEqual(rows(self.api, tables.audit_conn), [])

    def test_unknown_action_and_bad_fields_are_4xx(self):
        for body in (opened(action="login"), opened(conn_id="17"), opened(conn_id=1.5),
                     opened(conn_id=True), opened(session_id=-1), opened(session_id=1 << 64),
                     opened(id="../etc"), opened(id=""), opened(uuid=None),
                     opened(ip=5), opened(nonce="n" * 65), authorised(peer="987654321"),
                     authorised(peer=[1, 2]), authorised(type=256), {"note": 5, "id": DEVICE}):
            reply = self.post("/api/audit/conn", body)
            self.assertEqual(reply.status, 400, body)
            self.assertIn("error", reply.json())
        for raw, status in ((b"{nope", 400), (b"[1]", 400), (b'"x"', 400),
                            (json.dumps(opened(ip="x" * 70_000)).encode(), 413)):
            self.assertEqual(self.api.request("POST", "/api/audit/conn", raw=raw).status, status)
        self.assertEqual(rows(self.api, tables.audit_conn), [])


class UnknownDeviceTests(Posting, unittest.TestCase):
    def setUp(self):
        self.hbbs_uuid = b"raw-uuid-bytes-of-hbbs-peer"
        self.api = ApiHarness(self, audit_unknown_per_minute=2, hbbs=hbbs_peers(
            self, [("555555555", self.hbbs_uuid, b"k" * 32)]))

    def test_an_unknown_id_is_recorded_with_its_uuid_and_only_that_uuid_updates_it(self):
        self.assertStored(self.post("/api/audit/conn", opened()))
        self.assertStored(self.post("/api/audit/conn", closed(uuid="b3RoZXI=")))
        [row] = rows(self.api, tables.audit_conn)
        self.assertEqual((row["device_uuid"], row["closed_at"]), (UUID, None))

    def test_unknown_devices_are_limited_per_source_and_minute(self):
        self.assertStored(self.post("/api/audit/conn", opened(conn_id=1)))
        self.assertStored(self.post("/api/audit/conn", opened(conn_id=2)))
        reply = self.post("/api/audit/conn", opened(conn_id=3))
        self.assertEqual(reply.status, 429)
        self.assertStored(self.post("/api/audit/conn", opened(conn_id=3), client="192.0.2.77"))
        self.assertEqual(self.api.app.audit.limits.hits, {"audit-unknown-per-minute": 1})
        self.api.clock.advance(60)
        self.assertStored(self.post("/api/audit/conn", opened(conn_id=4)))

    def test_hbbs_peer_table_proves_the_uuid(self):
        good = base64.b64encode(self.hbbs_uuid).decode()
        body = opened(id="555555555", uuid=good)
        self.assertStored(self.post("/api/audit/conn", body))
        reply = self.post("/api/audit/conn", opened(id="555555555", uuid=UUID))
        self.assertEqual(reply.status, 403)
        for n in range(3):
            self.assertStored(self.post("/api/audit/conn", opened(id="555555555", uuid=good,
                                                                  conn_id=n)))


class FileAndAlarmTests(Posting, unittest.TestCase):
    def test_file_audit_is_stored_with_its_info(self):
        self.assertStored(self.post("/api/audit/file", file_body()))
        [row] = rows(self.api, tables.audit_file)
        self.assertEqual((row["rustdesk_id"], row["peer_id"], row["conn_id"], row["direction"],
                          row["path"], row["is_file"]),
                         (DEVICE, CONTROLLER, 17, 0, "/home/bob/Documents", False))
        self.assertEqual(json.loads(row["info"])["files"], [["a.pdf", 1048576], ["b.txt", 12]])

    def test_file_list_is_cut_to_ten_and_bad_info_refused(self):
        files = [[f"f{n}", 100 - n] for n in range(12)]
        info = json.dumps({"ip": "203.0.113.5", "name": "x", "num": 12, "files": files})
        self.assertStored(self.post("/api/audit/file", file_body(info=info)))
        [row] = rows(self.api, tables.audit_file)
        self.assertEqual(json.loads(row["info"])["files"], files[:10])
        for info in ("{nope", "[1]", json.dumps({"files": [["a"]]}),
                     json.dumps({"files": [["a", "big"]]}), json.dumps({"files": "a"}),
                     "x" * (16 * 1024 + 1), 7):
            reply = self.post("/api/audit/file", file_body(info=info))
            self.assertEqual(reply.status, 400, info)
        self.assertEqual(self.post("/api/audit/file", file_body(is_file="yes")).status, 400)

    def test_alarm_as_the_client_sends_it(self):
        body = {"id": DEVICE, "uuid": UUID, "typ": 1,
                "info": json.dumps({"ip": "203.0.113.5", "id": CONTROLLER, "name": "eve"}),
                "conn_id": 17, "nonce": str(uuidlib.uuid4()), "conn_audit_ref": "ref-1"}
        self.assertStored(self.post("/api/audit/alarm", body))
        self.assertStored(self.post("/api/audit/alarm", body))
        [row] = rows(self.api, tables.audit_alarm)
        self.assertEqual((row["typ"], row["conn_audit_ref"], json.loads(row["info"])["name"]),
                         (1, "ref-1", "eve"))
        del body["typ"]
        self.assertEqual(self.post("/api/audit/alarm", body).status, 400)


class NoteTests(Posting, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.bob = self.api.add_user("bob")
        self.api.add_user("carol")
        self.api.add_user("root", is_admin=True)
        self.bob_token = self.api.login("bob", id=CONTROLLER)
        self.post("/api/audit/conn", opened())
        self.post("/api/audit/conn", authorised())
        [self.row] = rows(self.api, tables.audit_conn)

    def active(self, token, session=SESSION, conn_type=0, peer=DEVICE):
        return self.api.request(
            "GET", f"/api/audit/conn/active?id={peer}&session_id={session}"
                   f"&conn_type={conn_type}", token=token)

    def test_the_controllers_note_from_the_session_menu(self):
        reply = self.post("/api/audit/conn", {"id": DEVICE, "session_id": SESSION,
                                              "note": "printer fixed"})
        self.assertStored(reply)
        self.assertEqual(rows(self.api, tables.audit_conn)[0]["note"], "printer fixed")
        reply = self.post("/api/audit/conn", {"id": DEVICE, "session_id": 5, "note": "x"})
        self.assertEqual(reply.status, 404)

    def test_only_the_controllers_user_gets_the_guid(self):
        reply = self.active(self.bob_token)
        self.assertEqual((reply.status, reply.json()), (200, self.row["guid"]))
        self.assertEqual(self.active(self.bob_token, peer=DEVICE + "@other.host").json(),
                         self.row["guid"])
        self.assertEqual(self.active(self.api.login("carol")).json(), "")
        self.assertEqual(self.active(self.api.login("root")).json(), self.row["guid"])
        self.assertEqual(self.active(self.bob_token, conn_type=1).json(), "")
        self.assertEqual(self.active(None).status, 401)
        self.assertEqual(self.active(self.bob_token, session="x").status, 400)
        self.assertEqual(self.api.request("GET", f"/api/audit/conn/active?id={DEVICE}",
                                          token=self.bob_token).status, 400)

    def test_put_note_by_the_controllers_user_or_an_admin(self):
        guid = self.row["guid"]
        reply = self.api.request("PUT", "/api/audit", {"guid": guid, "note": "done"},
                                 token=self.bob_token)
        self.assertStored(reply)
        self.assertEqual(rows(self.api, tables.audit_conn)[0]["note"], "done")
        reply = self.api.request("PUT", "/api/audit", {"guid": guid, "note": "mine"},
                                 token=self.api.login("carol"))
        self.assertEqual(reply.status, 403)
        self.assertEqual(rows(self.api, tables.audit_conn)[0]["note"], "done")
        self.assertStored(self.api.request("PUT", "/api/audit", {"guid": guid, "note": "ok"},
                                           token=self.api.login("root")))
        self.assertEqual(self.api.request("PUT", "/api/audit", {"guid": "nope", "note": "x"},
                                          token=self.bob_token).status, 404)
        self.assertEqual(self.api.request("PUT", "/api/audit", {"note": "x"},
                                          token=self.bob_token).status, 400)
        self.assertEqual(self.api.request("PUT", "/api/audit", {"guid": guid}).status, 401)

    def test_without_a_linked_user_the_token_of_the_controller_id_decides(self):
        self.api.db.run_now(lambda c: c.execute(
            tables.audit_conn.update().values(controller_user_id=None)))
        self.assertEqual(self.active(self.bob_token).json(), self.row["guid"])
        carol = self.api.login("carol", id="111111111")
        self.assertEqual(self.active(carol).json(), "")


class RetentionTests(Posting, unittest.TestCase):
    options = {"audit_retention_days": 2}

    def setUp(self):
        super().setUp()
        self.addCleanup(self.api.app.audit.pruner.stopService)

    def test_rows_past_the_retention_are_pruned_hourly_on_the_clock(self):
        self.post("/api/audit/conn", opened())
        self.post("/api/audit/file", file_body())
        self.api.db.run_now(lambda c: c.execute(insert(tables.audit_console).values(
            action="login", created_at=self.api.clock.seconds())))
        self.api.clock.advance(86400)
        self.post("/api/audit/conn", opened(conn_id=2))
        self.api.app.audit.pruner.startService()
        self.assertEqual(len(rows(self.api, tables.audit_conn)), 2)
        self.api.clock.advance(86400 + 3600)
        self.assertEqual([r["conn_id"] for r in rows(self.api, tables.audit_conn)], [2])
        self.assertEqual(rows(self.api, tables.audit_file), [])
        self.assertEqual(rows(self.api, tables.audit_console), [])
        self.assertEqual(self.api.app.audit.pruned, 3)
        self.api.clock.advance(86400)
        self.assertEqual(rows(self.api, tables.audit_conn), [])

    def test_zero_days_keeps_everything(self):
        self.api.app.audit.retention_days = 0
        self.post("/api/audit/conn", opened())
        self.api.app.audit.pruner.startService()
        self.api.clock.advance(1000 * 86400)
        self.assertEqual(len(rows(self.api, tables.audit_conn)), 1)


class ConsoleTests(OnSQLite, unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self, url=self.database())
        self.audit = self.api.app.audit
        now = self.api.clock.seconds()
        self.api.db.run_now(lambda c: c.execute(insert(tables.audit_conn), [
            {"guid": f"g{n}", "rustdesk_id": "111111111" if n % 2 else "222222222",
             "conn_id": n, "conn_type": n % 3, "started_at": now + n,
             "controller_name": "=cmd|' /C calc'!A0" if n == 7 else f"c{n}",
             "closed_at": None if n >= 2495 else now + n + 1} for n in range(2500)]))

    def result(self, d):
        return self.successResultOf(d)

    def test_query_filters_and_paginates_newest_first(self):
        page = self.result(self.audit.query("conn", rustdesk_id="111111111", typ=1,
                                            current=2, page_size=10))
        self.assertEqual(page["total"], len([n for n in range(2500) if n % 2 and n % 3 == 1]))
        self.assertEqual([r["conn_id"] for r in page["data"]][:3], [2437, 2431, 2425])
        start = self.api.clock.seconds()
        page = self.result(self.audit.query("conn", since=start + 10, until=start + 20))
        self.assertEqual(page["total"], 10)
        page = self.result(self.audit.query("conn", page_size=3))
        self.assertEqual([(r["conn_id"], r["active"]) for r in page["data"]],
                         [(2499, True), (2498, True), (2497, True)])
        self.assertEqual(self.result(self.audit.query("file"))["total"], 0)
        self.assertRaises(ValueError, self.audit.query, "console")

    def test_csv_export_has_no_row_cap_and_no_formulas(self):
        chunks = []
        count = self.result(self.audit.export_csv("conn", chunks.append, chunk_rows=1000))
        self.assertEqual(count, 2500)
        self.assertEqual(len(chunks), 4)
        lines = b"".join(chunks).decode().splitlines()
        self.assertEqual(len(lines), 2501)
        self.assertTrue(lines[0].startswith("id,guid,rustdesk_id,conn_id,"))
        self.assertIn("'=cmd|' /C calc'!A0", "".join(lines))
        self.assertNotIn(",=cmd", "".join(lines))

    def test_csv_export_waits_for_the_writer_and_can_be_cancelled(self):
        chunks, slow = [], Deferred()

        def write(data):
            chunks.append(data)
            return slow if len(chunks) == 3 else None
        d = self.audit.export_csv("conn", write, rustdesk_id="111111111", chunk_rows=100)
        self.assertEqual(len(chunks), 3)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        slow.callback(None)
        self.assertEqual(len(chunks), 3)

    def test_csv_export_stops_when_the_writer_fails(self):
        def write(data):
            raise ConnectionDone()
        self.failureResultOf(self.audit.export_csv("alarm", write), ConnectionDone)

    def test_connection_shows_what_disconnect_needs_and_notes_can_be_set(self):
        row = self.result(self.audit.connection("g2496"))
        self.assertEqual((row["rustdesk_id"], row["conn_id"], row["active"]),
                         ("222222222", 2496, True))
        self.assertFalse(self.result(self.audit.connection("g3"))["active"])
        self.assertIsNone(self.result(self.audit.connection("nope")))
        self.assertTrue(self.result(self.audit.set_note("g3", "checked")))
        self.assertEqual(self.result(self.audit.connection("g3"))["note"], "checked")
        self.assertFalse(self.result(self.audit.set_note("nope", "x")))


class NonceTests(unittest.TestCase):
    def test_a_duplicate_waits_for_the_write_under_way(self):
        nonces = Nonces(ttl=300, max_entries=2)
        self.assertIsNone(nonces.claim("a", 0))
        waiting = nonces.claim("a", 1)
        self.assertNoResult(waiting)
        nonces.release("a")
        self.assertFalse(self.successResultOf(waiting))
        self.assertIsNone(nonces.claim("a", 2))
        waiting = nonces.claim("a", 3)
        nonces.stored("a", 4)
        self.assertTrue(self.successResultOf(waiting))
        self.assertTrue(self.successResultOf(nonces.claim("a", 303)))
        self.assertIsNone(nonces.claim("a", 304))

    def test_the_table_is_bounded(self):
        nonces = Nonces(ttl=300, max_entries=2)
        for key in "abc":
            nonces.claim(key, 0)
            nonces.stored(key, 0)
        self.assertEqual(list(nonces.done), ["b", "c"])
        self.assertEqual(nonces.forgotten_early, 1)

    def test_per_minute_bounded_by_sources(self):
        limit = PerMinute(1, max_sources=2)
        self.assertTrue(limit.allow("a", 0))
        self.assertFalse(limit.allow("a", 1))
        self.assertTrue(limit.allow("b", 1))
        self.assertFalse(limit.allow("c", 2))
        self.assertTrue(limit.allow("c", 61))


class PostgresConnectionTests(OnPostgres, ConnectionTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""


class PostgresNoteTests(OnPostgres, NoteTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""


class PostgresRetentionTests(OnPostgres, RetentionTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""


class PostgresConsoleTests(OnPostgres, ConsoleTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""


class ReplayTests(unittest.TestCase):
    """The official client's calls (rustdesk_twisted.client.api), controlled side and
    controller, replayed in one session: audit, notes, switch-sides grant, recording."""

    def setUp(self):
        self.key = SigningKey.generate()
        hbbs = hbbs_peers(self, [(DEVICE, base64.b64decode(UUID), self.key.verify_key.encode())])
        self.directory = os.path.abspath(self.mktemp())
        self.api = ApiHarness(self, hbbs=hbbs, recording_dir=self.directory)
        add_device(self.api)
        self.api.add_user("bob", "bob-pass")
        self.http = StubTreq(self.api.app.resource())
        self.controlled = OfficialApiClient(self.http, "http://api.test", DEVICE, UUID)
        self.controller = OfficialApiClient(self.http, "http://api.test", CONTROLLER)

    def run_client(self, d):
        self.http.flush()
        return self.successResultOf(d)

    def done(self, d):
        return OfficialApiClient.done(self.run_client(d))

    def test_a_session_as_both_clients_make_it(self):
        controlled, controller = self.controlled, self.controller
        self.run_client(controller.login("bob", "bob-pass"))
        self.assertTrue(self.done(controlled.audit_open(17, 0, "203.0.113.5")))
        self.assertTrue(self.done(controlled.audit_authorised(17, SESSION, CONTROLLER, "bob-pc")))
        guid = OfficialApiClient.parsed(self.run_client(controller.audit_active(DEVICE, SESSION)))
        self.assertTrue(self.done(controller.audit_note(DEVICE, SESSION, "mid-session")))
        self.assertTrue(self.done(controlled.audit_file(CONTROLLER, 17, 0, "/srv", [("a", 9)])))
        self.assertTrue(self.done(controlled.audit_alarm(2, {"ip": "203.0.113.5",
                                                             "id": CONTROLLER, "name": "x"})))
        self.assertTrue(self.done(controlled.audit_close(17, SESSION)))
        self.assertTrue(self.done(controller.audit_put_note(guid, "end of session")))
        [row] = rows(self.api, tables.audit_conn)
        self.assertEqual((row["guid"], row["note"], row["controller_id"]),
                         (guid, "end of session", CONTROLLER))
        self.assertIsNotNone(row["closed_at"])
        self.assertEqual(len(rows(self.api, tables.audit_file)), 1)
        self.assertEqual(len(rows(self.api, tables.audit_alarm)), 1)

        answer = self.run_client(controlled.switch_grant(self.key, now=self.api.clock.seconds()))
        self.assertEqual(OfficialApiClient.parsed(answer), {"accepted": True})

        ours = "&" + urlencode({"id": DEVICE, "uuid": UUID})
        self.assertTrue(self.done(controlled.record("new", "s1_VP9.webm", query=ours)))
        self.assertTrue(self.done(controlled.record("part", "s1_VP9.webm", b"frames", offset=0,
                                                    query=ours)))
        self.assertTrue(self.done(controlled.record("tail", "s1_VP9.webm", b"FR", offset=0,
                                                    query=ours)))
        with open(os.path.join(self.directory, DEVICE, "s1_VP9.webm"), "rb") as f:
            self.assertEqual(f.read(), b"FRames")
        failure = self.assertRaises(ApiCallError, OfficialApiClient.done, self.run_client(
            controlled.record("new", "s2_VP9.webm")))
        self.assertEqual(failure.status, 400)
