"""Devices over HTTP: sysinfo, heartbeat, strategies, disconnects, deploy/assign (API.md 1.2,
1.7), the group tab (1.5) and the access rules behind it (2.2)."""

import base64
import json
import os
import sqlite3
from io import BytesIO

from sqlalchemy import event, insert, select, update
from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from rustdesk_twisted.api import devices as devices_module
from rustdesk_twisted.api import tables
from rustdesk_twisted.api.app import ApiApp, at_once
from rustdesk_twisted.api.addressbooks import BookLimits
from rustdesk_twisted.api.devices import (
    DEFAULT_MAX_DEVICES,
    DEFAULT_SEEN_INTERVAL,
    SYSINFO_REFRESH,
    TAG_COLOR,
    Disconnects,
)
from rustdesk_twisted.api.groups import Access
from rustdesk_twisted.api.hbbs import HbbsLink
from rustdesk_twisted.api.tap import Options, build_config
from rustdesk_twisted.client.api import OfficialApiClient
from rustdesk_twisted.config import ConfigError
from rustdesk_twisted.hbbs.store import OFFICIAL_SCHEMA

from .apisupport import ApiHarness
from .livesupport import free_port_block, start_twistd, stop_twistd
from .services import fresh_postgres_database

UUID_A = base64.b64encode(b"machine-a").decode()
UUID_B = base64.b64encode(b"machine-b").decode()
PK = base64.b64encode(bytes(range(32))).decode()
# The client's sysinfo body (API.md 1.2), as src/hbbs_http/sync.rs builds it.
SYSINFO = {"cpu": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz, 3.2GHz, 12/6 cores",
           "memory": "15.9GB", "os": "linux / Ubuntu 22.04.4 LTS", "hostname": "box",
           "username": "alice", "version": "1.4.2", "id": "123456789", "uuid": UUID_A}


class DeviceTestCase(unittest.TestCase):
    def setUp(self):
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.api = ApiHarness(self, url=self.database(), **self.app_options())
        self.devices = self.api.app.devices
        self.devices.writer.startService()
        self.addCleanup(self.stop_writer)

    def stop_writer(self):
        if self.devices.writer.running:
            return self.devices.writer.stopService()

    def app_options(self):
        return {}

    def database(self):
        """The URL of the database (None: SQLite in the test's directory)."""
        return None

    @property
    def now(self):
        return self.api.clock.seconds()

    def sysinfo(self, client="192.0.2.10", **fields):
        body = dict(SYSINFO, **fields)
        return self.api.request("POST", "/api/sysinfo", body, client=client)

    def heartbeat(self, modified_at=0, rustdesk_id="123456789", uuid=UUID_A, **fields):
        body = dict({"id": rustdesk_id, "uuid": uuid, "ver": 1004002,
                     "modified_at": modified_at}, **fields)
        reply = self.api.request("POST", "/api/heartbeat", body)
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()

    def device(self, rustdesk_id="123456789"):
        row = self.api.db.run_now(lambda c: c.execute(select(tables.devices).where(
            tables.devices.c.rustdesk_id == rustdesk_id)).first())
        return dict(row._mapping) if row is not None else None

    def insert(self, table, **values):
        return self.api.db.run_now(
            lambda c: c.execute(insert(table).values(**values)).inserted_primary_key[0])

    def set_device(self, rustdesk_id="123456789", **values):
        return self.successResultOf(self.devices.update(rustdesk_id, **values))

    def strategy(self, name, options, enabled=True):
        return self.successResultOf(self.devices.strategies.create(name, options, enabled))["id"]

    def events(self, name):
        return [e for e in self.logged if e.get("event") == name]


class SysinfoTests(DeviceTestCase):
    def test_new_device_is_stored_and_answered_in_plain_text(self):
        reply = self.sysinfo(client="198.51.100.7")
        self.assertEqual((reply.status, reply.body), (200, b"SYSINFO_UPDATED"))
        self.assertTrue(reply.header("content-type").startswith("text/plain"))
        row = self.device()
        self.assertEqual({k: row[k] for k in ("cpu", "memory", "os", "hostname", "username",
                                              "version", "uuid", "ip")},
                         dict({k: SYSINFO[k] for k in ("cpu", "memory", "os", "hostname",
                                                       "username", "version", "uuid")},
                              ip="198.51.100.7"))
        self.assertEqual((row["sysinfo_at"], row["created_at"], row["status"]),
                         (self.now, self.now, 1))

    def test_the_same_machine_updates_its_record(self):
        self.sysinfo()
        self.api.clock.advance(60)
        self.assertEqual(self.sysinfo(hostname="renamed", version="1.4.3").body,
                         b"SYSINFO_UPDATED")
        row = self.device()
        self.assertEqual((row["hostname"], row["version"], row["sysinfo_at"]),
                         ("renamed", "1.4.3", self.now))

    def test_another_machine_with_the_id_is_refused_and_logged(self):
        self.sysinfo()
        reply = self.sysinfo(client="203.0.113.9", uuid=UUID_B, hostname="intruder")
        self.assertEqual((reply.status, reply.body), (200, b"UUID_MISMATCH"))
        self.assertEqual(self.device()["hostname"], "box")
        [event] = self.events("limit_reached")
        self.assertEqual(event["source"], "203.0.113.9")
        self.assertEqual(event["limit"], "device-uuid")
        self.assertIn('"123456789"', event["detail"])

    def test_a_disabled_device_still_gets_its_answer(self):
        self.sysinfo()
        self.set_device(status=0)
        self.assertEqual(self.sysinfo(hostname="again").body, b"SYSINFO_UPDATED")
        self.assertEqual((self.device()["hostname"], self.device()["status"]), ("again", 0))

    def test_overlong_telemetry_is_cut_to_its_column_and_nul_dropped(self):
        self.sysinfo(hostname="h" * 1000, cpu="a\x00b", **{"preset-note": "n\x00"})
        row = self.device()
        self.assertEqual((row["hostname"], row["cpu"], row["note"]),
                         ("h" * tables.SHORT, "ab", "n"))

    def test_bad_bodies_get_a_json_4xx(self):
        for raw, why in [(b"{not json", "the body is not valid JSON"),
                         (b"[]", "the body must be a JSON object"),
                         (json.dumps({"uuid": UUID_A}).encode(),
                          "id must be 1 to 64 printable characters"),
                         (json.dumps(dict(SYSINFO, id=5)).encode(),
                          "id must be 1 to 64 printable characters"),
                         (json.dumps(dict(SYSINFO, id="12\x0034")).encode(),
                          "id must be 1 to 64 printable characters"),
                         (json.dumps(dict(SYSINFO, uuid="")).encode(),
                          "uuid must be 1 to 255 printable characters"),
                         (json.dumps(dict(SYSINFO, hostname=["x"])).encode(),
                          "hostname must be a string"),
                         (json.dumps(dict(SYSINFO, **{"preset-note": 3})).encode(),
                          "preset-note must be a string of at most 2000 characters")]:
            reply = self.api.request("POST", "/api/sysinfo", raw=raw)
            self.assertEqual((reply.status, reply.json()), (400, {"error": why}), raw)
        self.assertIsNone(self.device())

    def test_sysinfo_ver_changes_with_the_stored_sysinfo(self):
        first = self.api.request("POST", "/api/sysinfo_ver", raw=b"").body
        self.assertEqual(first, self.api.request("POST", "/api/sysinfo_ver").body)
        self.sysinfo()
        self.assertNotEqual(self.api.request("POST", "/api/sysinfo_ver").body, first)


class PresetTests(DeviceTestCase):
    def setUp(self):
        super().setUp()
        self.alice = self.api.add_user("alice")
        self.strategy_id = self.strategy("office", {"enable-audio": "N"})
        self.group = self.insert(tables.device_groups, name="kiosks", created_at=self.now)
        self.book = self.insert(tables.address_books, guid="g-1", name="Fleet",
                                owner_id=self.alice, personal=False, created_at=self.now,
                                updated_at=self.now, version=4)

    PRESETS = {"preset-user-name": "alice", "preset-strategy-name": "office",
               "preset-device-group-name": "kiosks", "preset-note": "front desk",
               "preset-address-book-name": "Fleet", "preset-address-book-tag": "lobby",
               "preset-address-book-alias": "Reception", "preset-address-book-password": "pw1",
               "preset-address-book-note": "ask Bob"}

    def test_presets_assign_owner_strategy_group_note_and_address_book(self):
        self.assertEqual(self.sysinfo(**self.PRESETS).body, b"SYSINFO_UPDATED")
        row = self.device()
        self.assertEqual((row["user_id"], row["strategy_id"], row["device_group_id"],
                          row["note"]), (self.alice, self.strategy_id, self.group, "front desk"))
        peer = self.api.db.run_now(lambda c: c.execute(select(tables.ab_peers)).one())
        self.assertEqual((peer.ab_id, peer.peer_id, peer.alias, peer.password, peer.note,
                          json.loads(peer.tags), peer.hostname, peer.username, peer.platform),
                         (self.book, "123456789", "Reception", "pw1", "ask Bob", ["lobby"],
                          "box", "alice", "Linux"))
        tag = self.api.db.run_now(lambda c: c.execute(select(tables.ab_tags)).one())
        self.assertEqual((tag.ab_id, tag.name), (self.book, "lobby"))
        version = self.api.db.run_now(lambda c: c.execute(
            select(tables.address_books.c.version)).scalar())
        self.assertEqual(version, 5)
        self.assertEqual(self.heartbeat()["strategy"]["config_options"], {"enable-audio": "N"})

    def test_the_address_book_module_serves_the_provisioned_entry(self):
        self.sysinfo(**self.PRESETS)
        token = self.api.login("alice")
        peers = self.api.request("POST", "/api/ab/peers?current=1&pageSize=100&ab=g-1",
                                 token=token).json()
        [peer] = peers["data"]
        self.assertEqual((peer["id"], peer["alias"], peer["tags"], peer["password"],
                          peer["note"], peer["platform"]),
                         ("123456789", "Reception", ["lobby"], "pw1", "ask Bob", "Linux"))
        tags = self.api.request("POST", "/api/ab/tags/g-1", token=token).json()
        self.assertEqual(tags, [{"name": "lobby", "color": TAG_COLOR}])
        stamp = self.api.db.run_now(lambda c: c.execute(
            select(tables.ab_peers.c.version, tables.ab_peers.c.updated_by)).one())
        self.assertEqual(tuple(stamp), (5, None))

    def test_presets_leave_what_an_administrator_set_since(self):
        self.sysinfo(**self.PRESETS)
        bob = self.api.add_user("bob")
        self.set_device(user_id=bob, note="moved upstairs")
        self.api.db.run_now(lambda c: c.execute(update(tables.ab_peers).values(alias="Edited")))
        self.sysinfo(**self.PRESETS)
        row = self.device()
        self.assertEqual((row["user_id"], row["note"]), (bob, "moved upstairs"))
        alias = self.api.db.run_now(lambda c: c.execute(select(tables.ab_peers.c.alias)).scalar())
        self.assertEqual(alias, "Edited")

    def test_unknown_names_are_logged_and_the_rest_applied(self):
        reply = self.sysinfo(**{"preset-user-name": "nobody", "preset-address-book-name": "None",
                                "preset-note": "kept"})
        self.assertEqual(reply.body, b"SYSINFO_UPDATED")
        self.assertEqual((self.device()["user_id"], self.device()["note"]), (None, "kept"))
        problems = [e["problem"] for e in self.events("api.preset_not_applied")]
        self.assertEqual(problems, ['user name "nobody" not found',
                                    'address book "None" not found'])


class BookLimitTests(DeviceTestCase):
    """Provisioning holds the address books' limits as the address-book routes do."""

    def app_options(self):
        return {"ab_limits": BookLimits(max_peers=1, max_tags=1)}

    def setUp(self):
        super().setUp()
        alice = self.api.add_user("alice")
        self.book = self.insert(tables.address_books, guid="g-1", name="Fleet", owner_id=alice,
                                personal=False, created_at=self.now, updated_at=self.now)
        self.insert(tables.ab_tags, ab_id=self.book, name="old", color=1)

    def entries(self):
        return self.api.db.run_now(lambda c: [(r.peer_id, json.loads(r.tags)) for r in c.execute(
            select(tables.ab_peers).order_by(tables.ab_peers.c.peer_id))])

    def test_a_full_book_and_too_many_tags(self):
        book = {"preset-address-book-name": "Fleet", "preset-address-book-tag": "new"}
        self.assertEqual(self.sysinfo(**book).body, b"SYSINFO_UPDATED")
        self.assertEqual(self.sysinfo(id="987654321", **book).body, b"SYSINFO_UPDATED")
        self.assertEqual(self.entries(), [("123456789", [])])
        self.assertEqual([e["problem"] for e in self.events("api.preset_not_applied")], [
            'address book "Fleet" has too many tags for "new"',
            'address book "Fleet" is full'])
        user = self.api.add_user("operator", is_admin=True)
        token = self.successResultOf(self.api.app.accounts.issue_token(
            user, self.now, {}, "127.0.0.1", kind="api", scopes="devices:rw"))
        reply = self.api.request("POST", "/api/devices/cli", {
            "id": "987654321", "uuid": UUID_A, "address_book_name": "Fleet", "note": "n"},
            token=token)
        self.assertEqual((reply.status, reply.json()),
                         (400, {"error": 'address book "Fleet" is full'}))
        self.assertEqual(self.device("987654321")["note"], "")


class DeviceCapTests(DeviceTestCase):
    def app_options(self):
        return {"max_devices": 1}

    def test_new_devices_past_the_cap_are_refused_with_a_log_line(self):
        self.sysinfo()
        reply = self.sysinfo(id="987654321", uuid=UUID_B, client="203.0.113.5")
        self.assertEqual(reply.body, b"TOO_MANY_DEVICES")
        self.assertIsNone(self.device("987654321"))
        [event] = self.events("limit_reached")
        self.assertEqual((event["source"], event["limit"]), ("203.0.113.5", "max-devices"))
        self.assertEqual(self.sysinfo(hostname="known").body, b"SYSINFO_UPDATED")
        self.assertEqual(self.devices.limits.hits["max-devices"], 1)

    def test_a_full_directory_is_said_at_start(self):
        self.assertEqual(self.events("api.devices_full"), [])
        self.sysinfo()
        ApiApp(self.api.db, self.api.clock, at_once, max_devices=1)
        [event] = self.events("api.devices_full")
        self.assertEqual((event["count"], event["limit"]), (1, 1))


class HeartbeatTests(DeviceTestCase):
    def test_unknown_device_is_asked_for_its_sysinfo(self):
        self.assertEqual(self.heartbeat(), {"sysinfo": True})
        self.sysinfo()
        self.assertEqual(self.heartbeat(), {})

    def test_conns_and_version_are_accepted(self):
        self.sysinfo()
        self.assertEqual(self.heartbeat(conns=[3, 4]), {})

    def test_sysinfo_is_asked_again_once_it_is_stale(self):
        self.sysinfo()
        self.api.clock.advance(SYSINFO_REFRESH + 1)
        self.assertEqual(self.heartbeat(), {"sysinfo": True})

    def test_another_machine_learns_nothing_and_moves_nothing(self):
        self.sysinfo()
        self.api.clock.advance(60)
        self.devices.disconnect("123456789", 9)
        self.assertEqual(self.heartbeat(uuid=UUID_B), {})
        self.api.clock.advance(self.devices.seen_interval)
        self.assertEqual(self.device()["last_seen"], self.now - 60 - self.devices.seen_interval)
        self.assertEqual(self.heartbeat(), {"disconnect": [9]})

    def test_last_seen_is_written_in_batches_on_the_clock(self):
        self.sysinfo()
        created = self.now
        self.api.clock.advance(5)
        self.heartbeat()
        self.assertEqual(self.device()["last_seen"], created)
        self.assertEqual(self.devices.directory["123456789"].last_seen, created + 5)
        self.api.clock.advance(self.devices.seen_interval)
        self.assertEqual(self.device()["last_seen"], created + 5)

    def test_many_devices_are_written_a_batch_a_transaction(self):
        self.patch(devices_module, "WRITE_BATCH", 2)
        ids = [str(100_000_000 + i) for i in range(5)]
        for rustdesk_id in ids:
            self.sysinfo(id=rustdesk_id)
        self.api.clock.advance(5)
        for rustdesk_id in ids:
            self.heartbeat(rustdesk_id=rustdesk_id)
        statements = []
        event.listen(self.api.db.engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))
        self.successResultOf(self.devices.flush())
        self.assertEqual(len([s for s in statements if s.startswith("UPDATE devices")]), 3)
        self.assertEqual([self.device(i)["last_seen"] for i in ids], [self.now] * 5)

    def test_a_failed_write_is_logged_and_kept_for_the_next(self):
        self.sysinfo()
        self.heartbeat()
        self.api.db.run_now(lambda c: c.exec_driver_sql("ALTER TABLE devices RENAME TO moved"))
        self.successResultOf(self.devices.flush())
        [event_] = self.events("api.devices_not_written")
        self.assertEqual(event_["count"], 1)
        self.assertEqual(self.devices.seen, {"123456789"})
        self.api.db.run_now(lambda c: c.exec_driver_sql("ALTER TABLE moved RENAME TO devices"))
        self.successResultOf(self.devices.flush())
        self.assertEqual(self.devices.seen, set())

    def test_stop_writes_the_pending_batch(self):
        self.sysinfo()
        self.api.clock.advance(5)
        self.heartbeat()
        self.successResultOf(self.devices.writer.stopService())
        self.assertEqual(self.device()["last_seen"], self.now)
        self.assertFalse(self.devices.writer.running)

    def test_disconnect_is_delivered_once(self):
        self.sysinfo()
        self.assertTrue(self.devices.disconnect("123456789", 7))
        self.devices.disconnect("123456789", 8)
        self.devices.disconnect("123456789", 7)
        self.assertEqual(self.heartbeat(conns=[7, 8]), {"disconnect": [7, 8]})
        self.assertEqual(self.heartbeat(conns=[7, 8]), {})
        for bad in (2**31, "7", 1.5):
            self.assertRaises(ValueError, self.devices.disconnect, "123456789", bad)

    def test_disconnect_requests_expire(self):
        self.sysinfo()
        self.devices.disconnect("123456789", 7)
        self.api.clock.advance(self.devices.disconnects.ttl)
        self.assertEqual(self.heartbeat(), {})
        self.assertEqual(self.devices.disconnects.pending, {})

    def test_bad_heartbeats_get_a_json_400(self):
        for body in [{"uuid": UUID_A}, {"id": 1, "uuid": UUID_A},
                     {"id": "123456789", "uuid": UUID_A, "modified_at": "0"},
                     {"id": "123456789", "uuid": UUID_A, "modified_at": True}]:
            reply = self.api.request("POST", "/api/heartbeat", body)
            self.assertEqual(reply.status, 400, body)
            self.assertIn("error", reply.json())


class DisconnectTableTests(unittest.TestCase):
    def test_bounded_and_pruned(self):
        table = Disconnects(ttl=10, max_entries=2)
        self.assertTrue(table.add("a", 1, 0))
        self.assertTrue(table.add("b", 1, 0))
        self.assertFalse(table.add("c", 1, 5))
        self.assertTrue(table.add("a", 2, 5))
        self.assertTrue(table.add("c", 1, 10))
        self.assertEqual(sorted(table.pending), ["a", "c"])
        self.assertEqual(table.take("a", 11), [1, 2])


class StrategyTests(DeviceTestCase):
    def setUp(self):
        super().setUp()
        self.sysinfo()

    def test_assigned_strategy_arrives_once(self):
        sid = self.strategy("office", {"enable-audio": "N", "allow-remote-config-modification": "Y"})
        self.successResultOf(self.devices.strategies.assign(sid, device="123456789"))
        reply = self.heartbeat()
        stamp = reply["modified_at"]
        self.assertEqual(reply["strategy"], {"config_options": {
            "enable-audio": "N", "allow-remote-config-modification": "Y"}, "extra": {}})
        self.assertEqual(self.heartbeat(modified_at=stamp), {})

    def test_an_edit_reaches_the_device_with_removed_keys_cleared(self):
        sid = self.strategy("office", {"enable-audio": "N", "enable-clipboard": "N"})
        self.set_device(strategy_id=sid)
        stamp = self.heartbeat()["modified_at"]
        self.api.clock.advance(1)
        self.successResultOf(self.devices.strategies.edit(sid, options={"enable-audio": "Y"}))
        reply = self.heartbeat(modified_at=stamp)
        self.assertGreater(reply["modified_at"], stamp)
        self.assertEqual(reply["strategy"]["config_options"],
                         {"enable-audio": "Y", "enable-clipboard": ""})
        self.assertEqual(self.heartbeat(modified_at=reply["modified_at"]), {})

    def test_edits_in_the_same_millisecond_still_get_new_stamps(self):
        sid = self.strategy("office", {"a": "1"})
        self.set_device(strategy_id=sid)
        stamp = self.heartbeat()["modified_at"]
        self.successResultOf(self.devices.strategies.edit(sid, options={"a": "2"}))
        self.assertNotEqual(self.heartbeat(modified_at=stamp)["modified_at"], stamp)

    def test_precedence_device_then_owner_then_group_disabled_skipped(self):
        by_device = self.strategy("device", {"k": "device"})
        by_user = self.strategy("user", {"k": "user"})
        by_group = self.strategy("group", {"k": "group"})
        alice = self.api.add_user("alice")
        group = self.insert(tables.device_groups, name="lab", created_at=self.now)
        self.set_device(user_id=alice, device_group_id=group, strategy_id=by_device)
        strategies = self.devices.strategies
        self.successResultOf(strategies.assign(by_user, user_id=alice))
        self.successResultOf(strategies.assign(by_group, device_group_id=group))

        def effective():
            return self.heartbeat(modified_at=-1)["strategy"]["config_options"]["k"]
        self.assertEqual(effective(), "device")
        self.successResultOf(strategies.edit(by_device, enabled=False))
        self.assertEqual(effective(), "user")
        self.successResultOf(strategies.assign(None, user_id=alice))
        self.assertEqual(effective(), "group")
        self.successResultOf(strategies.edit(by_user, enabled=False))
        self.successResultOf(strategies.assign(by_user, user_id=alice))
        self.assertEqual(effective(), "group")

    def test_losing_the_strategy_clears_its_options_until_acknowledged(self):
        sid = self.strategy("office", {"enable-audio": "N"})
        self.set_device(strategy_id=sid)
        stamp = self.heartbeat()["modified_at"]
        self.heartbeat(modified_at=stamp)
        self.set_device(strategy_id=None)
        clear = {"modified_at": 0, "strategy": {"config_options": {"enable-audio": ""},
                                                "extra": {}}}
        self.assertEqual(self.heartbeat(modified_at=stamp), clear)
        self.assertEqual(self.heartbeat(modified_at=stamp), clear)
        self.assertEqual(self.heartbeat(modified_at=0), {})
        self.assertEqual(self.devices.directory["123456789"].keys, frozenset())

    def test_keys_to_clear_survive_a_restart(self):
        sid = self.strategy("office", {"enable-audio": "N"})
        self.set_device(strategy_id=sid)
        stamp = self.heartbeat()["modified_at"]
        self.successResultOf(self.devices.writer.stopService())
        self.successResultOf(self.devices.strategies.delete(sid))
        again = ApiApp(self.api.db, self.api.clock, at_once)
        self.api.app = again
        self.api.site = again.site()
        self.assertEqual(self.heartbeat(modified_at=stamp)["strategy"]["config_options"],
                         {"enable-audio": ""})

    def test_deleting_a_strategy_unassigns_it(self):
        sid = self.strategy("office", {"enable-audio": "N"})
        alice = self.api.add_user("alice")
        self.set_device(user_id=alice)
        self.successResultOf(self.devices.strategies.assign(sid, user_id=alice))
        stamp = self.heartbeat()["modified_at"]
        self.successResultOf(self.devices.strategies.delete(sid))
        self.assertEqual(self.heartbeat(modified_at=stamp)["modified_at"], 0)
        owner = self.api.db.run_now(lambda c: c.execute(select(tables.users.c.strategy_id).where(
            tables.users.c.id == alice)).scalar())
        self.assertIsNone(owner)
        self.assertEqual(self.successResultOf(self.devices.strategies.list()), [])

    def test_bad_strategies_are_refused(self):
        strategies = self.devices.strategies
        self.strategy("office", {})
        self.failureResultOf(strategies.create("office", {}), ValueError)
        for name, options in [("", {}), ("x" * 65, {}), ("ok", []), ("ok", {"k": 1}),
                              ("ok", {"": "v"}), ("ok", {str(i): "" for i in range(501)})]:
            self.assertRaises(ValueError, strategies.create, name, options)
        other = self.strategy("other", {})
        self.failureResultOf(strategies.edit(other, name="office"), ValueError)
        self.assertRaises(ValueError, strategies.assign, other)
        self.assertRaises(ValueError, self.devices.update, "123456789", uuid="x")


class ApiTokenTests(DeviceTestCase):
    def token(self, scopes="devices:rw", kind="api", name="operator"):
        user = self.api.add_user(name, is_admin=True)
        return self.successResultOf(self.api.app.accounts.issue_token(
            user, self.now, {}, "127.0.0.1", kind=kind, scopes=scopes))

    def deploy(self, token, **body):
        reply = self.api.request("POST", "/api/devices/deploy",
                                 dict({"id": "123456789", "uuid": UUID_A, "pk": PK}, **body),
                                 token=token)
        return reply.status, reply.json()

    def test_only_api_tokens_with_the_devices_scope_pass(self):
        self.assertEqual(self.deploy(None), (401, {"error": "Invalid token"}))
        refused = (403, {"error": "an API token with scope devices:rw is required"})
        self.assertEqual(self.deploy(self.token(kind="session", name="s")), refused)
        self.assertEqual(self.deploy(self.token(scopes="devices:r audit:rw", name="r")), refused)
        self.assertEqual(self.deploy(self.token(scopes="audit:r,devices:rw", name="ok")),
                         (200, {"result": "OK"}))
        self.assertIsNone(self.device("000"))

    def test_deploy_stores_the_key_and_the_device(self):
        self.assertEqual(self.deploy(self.token()), (200, {"result": "OK"}))
        row = self.device()
        self.assertEqual((row["uuid"], row["pk"], row["deployed"]),
                         (UUID_A, bytes(range(32)), True))
        self.assertEqual(self.heartbeat(), {"sysinfo": True})
        self.assertEqual(self.sysinfo().body, b"SYSINFO_UPDATED")

    def test_deploy_invalid_input(self):
        token = self.token()
        for body in [{"pk": "not base64!"}, {"pk": base64.b64encode(b"short").decode()},
                     {"id": ""}, {"id": 12}, {"uuid": None}, {"pk": None}]:
            self.assertEqual(self.deploy(token, **body), (200, {"result": "INVALID_INPUT"}))
        self.assertIsNone(self.device())

    def test_deploy_id_taken_by_another_device(self):
        self.sysinfo(uuid=UUID_B)
        self.assertEqual(self.deploy(self.token()), (200, {"result": "ID_TAKEN"}))

    def test_deploy_not_enabled_for_a_disabled_device(self):
        self.sysinfo()
        self.set_device(status=0)
        self.assertEqual(self.deploy(self.token()), (200, {"result": "NOT_ENABLED"}))

    def test_assign_writes_every_field(self):
        token = self.token()
        self.sysinfo()
        alice = self.api.add_user("alice")
        sid = self.strategy("office", {"a": "b"})
        group = self.insert(tables.device_groups, name="lab", created_at=self.now)
        book = self.insert(tables.address_books, guid="g-1", name="Fleet", owner_id=alice,
                           personal=False, created_at=self.now, updated_at=self.now)
        self.set_device(note="old", user_id=self.api.add_user("bob"))
        reply = self.api.request("POST", "/api/devices/cli", {
            "id": "123456789", "uuid": UUID_A, "user_name": "alice", "strategy_name": "office",
            "device_group_name": "lab", "note": "new", "device_username": "kiosk",
            "device_name": "lobby-pc", "address_book_name": "Fleet", "address_book_tag": "t",
            "address_book_alias": "Lobby", "address_book_password": "pw",
            "address_book_note": "n"}, token=token)
        self.assertEqual((reply.status, reply.body), (200, b""))
        row = self.device()
        self.assertEqual((row["user_id"], row["strategy_id"], row["device_group_id"],
                          row["note"], row["username"], row["hostname"]),
                         (alice, sid, group, "new", "kiosk", "lobby-pc"))
        peer = self.api.db.run_now(lambda c: c.execute(select(tables.ab_peers)).one())
        self.assertEqual((peer.ab_id, peer.alias, peer.password, peer.note, peer.hostname),
                         (book, "Lobby", "pw", "n", "lobby-pc"))
        self.assertEqual(self.heartbeat()["strategy"]["config_options"], {"a": "b"})

    def test_assign_an_unknown_name_changes_nothing(self):
        token = self.token()
        self.sysinfo()
        reply = self.api.request("POST", "/api/devices/cli", {
            "id": "123456789", "uuid": UUID_A, "note": "new", "strategy_name": "missing"},
            token=token)
        self.assertEqual((reply.status, reply.json()),
                         (400, {"error": 'strategy name "missing" not found'}))
        self.assertEqual(self.device()["note"], "")

    def test_assign_refuses_another_machines_id(self):
        token = self.token()
        self.sysinfo(uuid=UUID_B)
        reply = self.api.request("POST", "/api/devices/cli",
                                 {"id": "123456789", "uuid": UUID_A, "note": "x"}, token=token)
        self.assertEqual((reply.status, reply.json()),
                         (409, {"error": "this id belongs to another device"}))

    def test_assign_creates_an_unknown_device(self):
        reply = self.api.request("POST", "/api/devices/cli",
                                 {"id": "555", "uuid": UUID_A, "note": "x"}, token=self.token())
        self.assertEqual(reply.status, 200)
        self.assertEqual((self.device("555")["note"], self.device("555")["uuid"]), ("x", UUID_A))


class HbbsPeerTableTests(DeviceTestCase):
    """deploy's ID_TAKEN also looks at hbbs's own peer table (read-only)."""

    def app_options(self):
        path = os.path.abspath(self.mktemp())
        connection = sqlite3.connect(path)
        connection.executescript(OFFICIAL_SCHEMA)
        connection.execute("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, '{}')",
                           (b"g1", "123456789", b"machine-b", bytes(32)))
        connection.execute("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, '{}')",
                           (b"g2", "555", b"machine-a", bytes(32)))
        connection.commit()
        connection.close()
        return {"hbbs": HbbsLink(MemoryReactorClock(), peer_db=path, blocking=at_once)}

    def test_an_id_hbbs_gave_another_machine_is_taken(self):
        user = self.api.add_user("operator", is_admin=True)
        token = self.successResultOf(self.api.app.accounts.issue_token(
            user, self.now, {}, "127.0.0.1", kind="api", scopes="devices:rw"))
        for rustdesk_id, result in [("123456789", "ID_TAKEN"), ("555", "OK"), ("777", "OK")]:
            reply = self.api.request("POST", "/api/devices/deploy",
                                     {"id": rustdesk_id, "uuid": UUID_A, "pk": PK}, token=token)
            self.assertEqual(reply.json(), {"result": result}, rustdesk_id)


def user_row(user_id, group_id=None, status=1, is_admin=False):
    return {"id": user_id, "group_id": group_id, "status": status, "is_admin": is_admin}


def device_row(user_id=None, owner_group_id=None, device_group_id=None, status=1):
    return {"user_id": user_id, "owner_group_id": owner_group_id,
            "device_group_id": device_group_id, "status": status}


class AccessRuleTests(unittest.TestCase):
    """The access decision alone (API.md 2.2 "Users and groups")."""

    RULES = [{"group_id": 1, "target_kind": "user_group", "target_id": 2},
             {"group_id": 1, "target_kind": "device_group", "target_id": 30},
             {"group_id": 1, "target_kind": "user", "target_id": 40},
             {"group_id": 9, "target_kind": "device_group", "target_id": 31},
             {"group_id": 1, "target_kind": "unknown", "target_id": 31}]

    def test_admin_reaches_everything_enabled(self):
        access = Access(user_row(1, is_admin=True), [])
        self.assertTrue(access.device(device_row(user_id=99)))
        self.assertTrue(access.device(device_row()))
        self.assertTrue(access.user(user_row(99, group_id=5)))
        self.assertTrue(access.device_group({"id": 77}))
        self.assertFalse(access.device(device_row(status=0)))
        self.assertFalse(access.user(user_row(99, status=0)))

    def test_user_without_group_reaches_only_itself(self):
        access = Access(user_row(10), self.RULES)
        self.assertTrue(access.user(user_row(10)))
        self.assertTrue(access.device(device_row(user_id=10)))
        self.assertFalse(access.device(device_row(user_id=11)))
        self.assertFalse(access.device(device_row()))
        self.assertFalse(access.user(user_row(11)))
        self.assertFalse(access.device_group({"id": 30}))

    def test_group_member_reaches_same_group_and_granted_targets(self):
        access = Access(user_row(10, group_id=1), self.RULES)
        cases = [
            (device_row(user_id=11, owner_group_id=1), True),     # same group, implicit
            (device_row(user_id=12, owner_group_id=2), True),     # user group rule
            (device_row(user_id=13, owner_group_id=3), False),    # no rule
            (device_row(device_group_id=30), True),               # device group rule
            (device_row(device_group_id=31), False),              # another group's rule
            (device_row(user_id=40, owner_group_id=3), True),     # user rule
            (device_row(user_id=11, owner_group_id=1, status=0), False),  # disabled
            (device_row(owner_group_id=1), False),                # no owner, no group
        ]
        for row, expected in cases:
            self.assertEqual(access.device(row), expected, row)
        self.assertEqual([access.user(u) for u in (
            user_row(11, 1), user_row(12, 2), user_row(13, 3), user_row(40, 3),
            user_row(11, 1, status=0), user_row(10, 1))], [True, True, False, True, False, True])
        self.assertEqual([access.device_group({"id": i}) for i in (30, 31)], [True, False])


class GroupTabTests(DeviceTestCase):
    """The three calls of the client's group tab (API.md 1.5)."""

    def setUp(self):
        super().setUp()
        db = self.api.db
        self.staff = self.insert(tables.user_groups, name="staff", created_at=self.now)
        self.other = self.insert(tables.user_groups, name="other", created_at=self.now)
        self.lab = self.insert(tables.device_groups, name="lab", created_at=self.now)
        self.insert(tables.device_groups, name="hidden", created_at=self.now)
        self.alice = self.api.add_user("alice", group_id=self.staff, display_name="Alice A")
        self.api.add_user("bob", group_id=self.staff, email="bob@example.com")
        carol = self.api.add_user("carol", group_id=self.other)
        self.api.add_user("dave", group_id=self.staff, status=0)
        self.api.add_user("root", is_admin=True)
        db.run_now(lambda c: c.execute(insert(tables.group_rules).values(
            group_id=self.staff, target_kind="device_group", target_id=self.lab)))
        for rustdesk_id, owner, group, status in [("100", self.alice, None, 1),
                                                  ("200", carol, None, 1),
                                                  ("300", carol, self.lab, 1),
                                                  ("400", self.alice, None, 0)]:
            self.sysinfo(id=rustdesk_id, uuid=UUID_A + rustdesk_id, hostname=f"h{rustdesk_id}")
            self.set_device(rustdesk_id, user_id=owner, device_group_id=group, status=status)
        self.token = self.api.login("alice")

    def get(self, path, token=None):
        reply = self.api.request("GET", path, token=token or self.token)
        return reply.status, reply.json()

    def test_device_groups_accessible(self):
        self.assertEqual(self.get("/api/device-group/accessible?current=1&pageSize=100"),
                         (200, {"total": 1, "data": [{"name": "lab"}]}))
        root = self.api.login("root")
        self.assertEqual(self.get("/api/device-group/accessible", root)[1]["total"], 2)

    def test_users_accessible(self):
        status, body = self.get("/api/users?current=1&pageSize=100&accessible=&status=1")
        self.assertEqual(status, 200)
        self.assertEqual([u["name"] for u in body["data"]], ["alice", "bob"])
        alice = body["data"][0]
        self.assertEqual({k: alice[k] for k in ("name", "display_name", "avatar", "email", "note",
                                                "status", "is_admin")},
                         {"name": "alice", "display_name": "Alice A", "avatar": "",
                          "email": "", "note": "", "status": 1, "is_admin": False})

    def test_peers_accessible_with_the_client_shape(self):
        status, body = self.get("/api/peers?current=1&pageSize=100&accessible=&status=1")
        self.assertEqual(status, 200)
        self.assertEqual(body["total"], 2)
        self.assertEqual(body["data"], [
            {"id": "100", "info": {"username": "alice", "os": "linux / Ubuntu 22.04.4 LTS",
                                   "device_name": "h100"},
             "status": 1, "user": "alice", "user_name": "Alice A", "device_group_name": "",
             "note": ""},
            {"id": "300", "info": {"username": "alice", "os": "linux / Ubuntu 22.04.4 LTS",
                                   "device_name": "h300"},
             "status": 1, "user": "carol", "user_name": "carol", "device_group_name": "lab",
             "note": ""}])

    def test_pages(self):
        root = self.api.login("root")
        pages = [self.get(f"/api/peers?current={n}&pageSize=1&accessible=&status=1", root)[1]
                 for n in (1, 2, 3, 4)]
        self.assertEqual([p["total"] for p in pages], [3, 3, 3, 3])
        self.assertEqual([[d["id"] for d in p["data"]] for p in pages],
                         [["100"], ["200"], ["300"], []])
        self.assertEqual(self.get("/api/peers?current=0&accessible=", root)[0], 400)
        self.assertEqual(self.get("/api/peers?pageSize=x&accessible=", root)[0], 400)

    def test_full_lists_are_for_admins(self):
        self.assertEqual(self.get("/api/users?current=1&pageSize=100"),
                         (403, {"error": "Admin required!"}))
        self.assertEqual(self.get("/api/peers")[0], 403)
        root = self.api.login("root")
        self.assertEqual(self.get("/api/users", root)[1]["total"], 5)
        self.assertEqual(self.get("/api/peers?status=0", root)[1]["data"][0]["id"], "400")

    def test_no_token_is_401(self):
        for path in ("/api/device-group/accessible", "/api/users?accessible=",
                     "/api/peers?accessible="):
            self.assertEqual(self.api.request("GET", path).status, 401)

    def test_console_listing(self):
        self.api.clock.advance(7)
        self.heartbeat(rustdesk_id="100", uuid=UUID_A + "100")
        listing = self.successResultOf(self.devices.listing())
        self.assertEqual(listing["total"], 4)
        first = listing["data"][0]
        self.assertEqual({k: first[k] for k in ("id", "owner", "device_group", "status",
                                                "online", "hostname")},
                         {"id": "100", "owner": "alice", "device_group": "", "status": 1,
                          "online": False, "hostname": "h100"})
        self.assertEqual(first["last_seen"], self.now)
        viewer = self.api.db.run_now(lambda c: dict(c.execute(select(tables.users).where(
            tables.users.c.id == self.alice)).first()._mapping))
        mine = self.successResultOf(self.devices.listing(viewer))
        self.assertEqual([d["id"] for d in mine["data"]], ["100", "300"])
        found = self.successResultOf(self.devices.listing(search="H30", limit=10))
        self.assertEqual([d["id"] for d in found["data"]], ["300"])
        self.assertEqual(self.successResultOf(self.devices.listing(offset=3))["data"][0]["id"],
                         "400")

    def test_removed_devices_are_forgotten(self):
        self.assertEqual(self.successResultOf(self.devices.remove("100")), 1)
        self.assertIsNone(self.device("100"))
        self.assertEqual(self.heartbeat(rustdesk_id="100", uuid=UUID_A + "100"),
                         {"sysinfo": True})


class OptionTests(unittest.TestCase):
    def config(self, *args):
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), *args])
        return build_config(options, environ={})

    def test_device_options_and_their_defaults(self):
        config = self.config()
        self.assertEqual((config.max_devices, config.seen_interval),
                         (DEFAULT_MAX_DEVICES, DEFAULT_SEEN_INTERVAL))
        config = self.config("--max-devices", "5", "--last-seen-interval", "10")
        self.assertEqual((config.max_devices, config.seen_interval), (5, 10))
        for bad in (["--max-devices", "0"], ["--last-seen-interval", "0"]):
            self.assertRaises(ConfigError, self.config, *bad)
        self.assertIn("--max-devices", str(Options()))
        self.assertIn("--last-seen-interval", str(Options()))


class LiveTests(unittest.TestCase):
    """A real ``twistd rustdesk-api``: the pending last-seen batch is written as it stops."""

    @inlineCallbacks
    def test_stop_writes_last_seen(self):
        from twisted.internet import reactor
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port_block((0,))
        process = yield start_twistd(reactor, "rustdesk-api", [
            "-p", str(port), "-b", "127.0.0.1", "--hbbs", "off", "--data-dir", directory,
            "--last-seen-interval", "3600"], directory, b"Devices: at most").ready
        self.addCleanup(stop_twistd, process)
        agent = Agent(reactor)

        @inlineCallbacks
        def post(path, body):
            response = yield agent.request(
                b"POST", f"http://127.0.0.1:{port}{path}".encode(),
                Headers({b"content-type": [b"application/json"]}),
                FileBodyProducer(BytesIO(json.dumps(body).encode())))
            return (yield readBody(response))
        self.assertEqual((yield post("/api/sysinfo", SYSINFO)), b"SYSINFO_UPDATED")
        self.assertEqual((yield post("/api/heartbeat", {"id": SYSINFO["id"], "uuid": UUID_A,
                                                        "ver": 1004002, "modified_at": 0})),
                         b"{}")
        yield stop_twistd(process)
        connection = sqlite3.connect(os.path.join(directory, "db_api.sqlite3"))
        self.addCleanup(connection.close)
        sysinfo_at, last_seen = connection.execute(
            "select sysinfo_at, last_seen from devices").fetchone()
        self.assertGreater(last_seen, sysinfo_at)


class DeviceReplayTests(DeviceTestCase):
    """The official client's device calls, as rustdesk_twisted.client.api makes them."""

    def setUp(self):
        super().setUp()
        self.http = StubTreq(self.api.app.resource())
        self.client = OfficialApiClient(self.http, "http://api.test")

    def run_client(self, d):
        self.http.flush()
        return self.successResultOf(d)

    def test_a_device_day(self):
        client, devices = self.client, self.devices
        self.assertEqual(self.run_client(client.heartbeat()).json(), {"sysinfo": True})
        answer = self.run_client(client.sysinfo(**{"preset-note": "provisioned"}))
        self.assertEqual(answer.body, b"SYSINFO_UPDATED")
        self.assertEqual(self.run_client(client.sysinfo_ver()).status, 200)
        self.assertEqual(self.run_client(client.heartbeat()).json(), {})
        sid = self.strategy("office", {"enable-audio": "N"})
        self.successResultOf(devices.strategies.assign(sid, device=client.id))
        devices.disconnect(client.id, 5)
        reply = self.run_client(client.heartbeat(conns=[5])).json()
        self.assertEqual((reply["disconnect"], reply["strategy"]["config_options"]),
                         ([5], {"enable-audio": "N"}))
        self.assertEqual(self.run_client(client.heartbeat(
            modified_at=reply["modified_at"])).json(), {})
        self.api.add_user("alice", "alice-pass", is_admin=True)
        self.run_client(client.login("alice", "alice-pass"))
        self.assertEqual(self.run_client(client.accessible_device_groups()), [])
        self.assertEqual([u["name"] for u in self.run_client(client.accessible_users())],
                         ["alice"])
        [peer] = self.run_client(client.accessible_peers())
        self.assertEqual((peer["id"], peer["note"], peer["info"]["os"]),
                         (client.id, "provisioned", "debian / Linux 12 (bookworm)"))

    def test_deploy_then_assign_with_an_api_token(self):
        user = self.api.add_user("operator", is_admin=True)
        token = self.successResultOf(self.api.app.accounts.issue_token(
            user, self.now, {}, "127.0.0.1", kind="api", scopes="devices:rw"))
        answer = self.run_client(self.client.deploy(token, bytes(32)))
        self.assertEqual(answer.json(), {"result": "OK"})
        self.api.add_user("alice")
        self.assertTrue(OfficialApiClient.done(self.run_client(self.client.assign(
            token, user_name="alice", note="lobby"))))
        self.assertEqual(self.device(self.client.id)["note"], "lobby")


class OnPostgres:
    """The same tests on a fresh PostgreSQL database."""

    def database(self):
        return fresh_postgres_database(self)


class PostgresSysinfoTests(OnPostgres, SysinfoTests):
    pass


class PostgresPresetTests(OnPostgres, PresetTests):
    pass


class PostgresHeartbeatTests(OnPostgres, HeartbeatTests):
    pass


class PostgresStrategyTests(OnPostgres, StrategyTests):
    pass


class PostgresApiTokenTests(OnPostgres, ApiTokenTests):
    pass


class PostgresGroupTabTests(OnPostgres, GroupTabTests):
    pass


class PostgresDeviceReplayTests(OnPostgres, DeviceReplayTests):
    pass
