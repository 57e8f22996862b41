"""The official client's calls (rustdesk_twisted.client.api) replayed against the API."""

import base64
import json
import os
from urllib.parse import quote

from nacl.signing import SigningKey
from sqlalchemy import insert
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest
from twisted.web.client import Agent

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.accounts import hash_password
from rustdesk_twisted.api.db import Database, engine_url
from rustdesk_twisted.client import ReactorHost, ServerAddress
from rustdesk_twisted.client.api import ApiCallError, OfficialApiClient, version_number
from rustdesk_twisted.client.apiproxy import ProxiedHttp
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPk

from .apisupport import ApiHarness
from .livesupport import DatagramClient, free_port_block, start_twistd, stop_twistd
from .services import fresh_postgres_database


class AccountReplayTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self)
        self.api.add_user("alice", "alice-pass")
        self.http = StubTreq(self.api.app.resource())
        self.client = OfficialApiClient(self.http, "http://api.test")

    def run_client(self, d):
        self.http.flush()
        return self.successResultOf(d)

    def test_login_current_user_logout(self):
        self.assertEqual(self.run_client(self.client.probe()).status, 200)
        self.assertEqual(self.run_client(self.client.login_options()), [])
        reply = self.run_client(self.client.login("alice", "alice-pass"))
        self.assertEqual(reply["type"], "access_token")
        self.assertEqual(self.run_client(self.client.current_user())["name"], "alice")
        token = self.client.token
        self.run_client(self.client.logout())
        self.client.token = token
        failure = self.failureResultOf(self.client.current_user(), ApiCallError)
        self.assertEqual((failure.value.status, failure.value.text), (401, "Invalid token"))

    def test_versions_as_the_client_counts_them(self):
        self.assertEqual(version_number("1.4.2"), 1004020)
        self.assertEqual(version_number("1.3.9-2"), 1003092)


class LiveReplay:
    """The official client's calls, one scenario, against a real ``rustdesk-server`` (hbbs,
    hbbr and the API in one process): directly on the API port, and through hbbs's
    HttpProxyRequest.  ``database`` gives the API_DB_URL (None: the SQLite file)."""

    timeout = 180

    def database(self):
        return None

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        url = self.database()
        seed_admin(directory, url, reactor.seconds())
        self.port = free_port_block((-2, -1, 0, 1, 2, 3, 4, 5))
        args = ["-p", str(self.port), "-b", "127.0.0.1", "--data-dir", directory,
                "--console", "off", "--relay-console", "off"]
        if url is not None:
            args += ["--api-db-url", url]
        self.process = yield start_twistd(reactor, "rustdesk-server", args, directory,
                                          b"Listening on http").ready
        self.addCleanup(stop_twistd, self.process)
        with open(os.path.join(directory, "id_ed25519.pub")) as f:
            self.server_key = keys.decode_public(f.read())
        self.base = f"http://127.0.0.1:{self.port - 2}"
        self.http = HTTPClient(Agent(reactor))

    @inlineCallbacks
    def register_in_hbbs(self, client, signing_key):
        """RegisterPk over UDP as the desktop client does, so hbbs knows the id's key."""
        peer = DatagramClient()
        udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        peer.transport.write(messages.wrap("register_pk", RegisterPk(
            id=client.id, uuid=base64.b64decode(client.uuid),
            pk=bytes(signing_key.verify_key))).SerializeToString(), ("127.0.0.1", self.port))
        answer = yield peer.next("register_pk_response")
        self.assertEqual(answer.register_pk_response.result, 0)

    @inlineCallbacks
    def test_the_official_client_end_to_end(self):
        device = OfficialApiClient(self.http, self.base, rustdesk_id="987654321")
        controller = OfficialApiClient(self.http, self.base, rustdesk_id="123456789")
        self.assertEqual((yield device.probe()).status, 200)
        self.assertEqual((yield device.login_options()), [])
        reply = yield controller.login("admin", ADMIN_PASSWORD)
        self.assertEqual(reply["type"], "access_token")
        self.assertEqual((yield controller.current_user())["name"], "admin")

        # The device's telemetry (1.2) and the group tab (1.5).
        self.assertEqual((yield device.sysinfo()).body, b"SYSINFO_UPDATED")
        self.assertEqual((yield device.sysinfo_ver()).status, 200)
        beat = yield device.heartbeat()
        self.assertEqual(beat.status, 200)
        self.assertNotIn("sysinfo", beat.json())
        peers = yield controller.accessible_peers()
        self.assertEqual([(p["id"], p["info"]["device_name"]) for p in peers],
                         [(device.id, device.hostname)])
        self.assertEqual([u["name"] for u in (yield controller.accessible_users())], ["admin"])
        self.assertEqual((yield controller.accessible_device_groups()), [])

        # Address books (1.4), then the legacy book (1.3) over the same rows.
        guid = (yield controller.ab_personal()).json()["guid"]
        self.assertEqual((yield controller.ab_settings()), {"max_peer_one_ab": 0})
        self.assertEqual((yield controller.ab_shared_profiles()), [])
        yield controller.ab_add_tag(guid, "office", 0xFF00FF00)
        yield controller.ab_add_peer(guid, {
            "id": device.id, "hash": "", "username": "user", "hostname": "desk",
            "platform": "Linux", "alias": "front desk", "tags": ["office"], "note": "",
            "forceAlwaysRelay": "false", "rdpPort": "", "rdpUsername": ""})
        yield controller.ab_update_peer(guid, {"id": device.id, "note": "by the door"})
        yield controller.ab_rename_tag(guid, "office", "hq")
        yield controller.ab_update_tag(guid, "hq", 0xFF0000FF)
        peers = yield controller.ab_peers(guid)
        self.assertEqual([(p["id"], p["alias"], p["note"], p["tags"]) for p in peers],
                         [(device.id, "front desk", "by the door", ["hq"])])
        self.assertEqual((yield controller.ab_tags(guid)), [{"name": "hq", "color": 0xFF0000FF}])
        legacy = json.loads((yield controller.legacy_pull()).json()["data"])
        self.assertEqual([p["id"] for p in legacy["peers"]], [device.id])
        legacy["peers"].append({"id": "555000111", "username": "", "hostname": "", "platform": "",
                                "alias": "from the legacy client", "tags": [], "hash": ""})
        self.assertEqual((yield controller.legacy_push(legacy)).status, 200)
        self.assertEqual(sorted(p["id"] for p in (yield controller.ab_peers(guid))),
                         ["555000111", device.id])
        yield controller.ab_delete_peers(guid, ["555000111"])
        yield controller.ab_delete_tags(guid, ["hq"])
        self.assertEqual((yield controller.ab_tags(guid)), [])

        # Audit (1.6): the controlled side posts, the controller adds its note.
        signing_key = SigningKey.generate()
        yield self.register_in_hbbs(device, signing_key)
        session = 77
        for answer in ((yield device.audit_open(5, 0, "127.0.0.1")),
                       (yield device.audit_authorised(5, session, controller.id, "admin")),
                       (yield device.audit_file(controller.id, 5, 0, "/tmp/a.txt",
                                                [("a.txt", 12)])),
                       (yield device.audit_alarm(2, {"ip": "192.0.2.1", "id": "x", "name": "y"}))):
            self.assertEqual((answer.status, answer.body), (200, b""))
        audit_guid = (yield controller.audit_active(device.id, session)).json()
        self.assertTrue(audit_guid)
        self.assertEqual((yield controller.audit_put_note(audit_guid, "checked")).status, 200)
        self.assertEqual((yield device.audit_close(5, session)).body, b"")

        # Switch sides (1.8), signed with the key hbbs holds for the id.
        grant = (yield device.switch_grant(signing_key)).json()
        self.assertEqual(grant, {"accepted": True})

        # Recordings (1.9), with the id and uuid our contract asks for.
        query = f"&id={device.id}&uuid={quote(device.uuid, safe='')}"
        for kind, data, offset in (("new", b"", None), ("part", b"\x1aE\xdf\xa3" + b"x" * 100, 0),
                                   ("tail", b"\x1aE\xdf\xa3", 0)):
            answer = yield device.record(kind, "session.webm", data, offset, query=query)
            self.assertEqual(answer.status, 200, answer.body)

        # The same account through hbbs, as a client whose port 21114 is blocked.
        proxied = OfficialApiClient(
            ProxiedHttp(ReactorHost(reactor, "127.0.0.1"), ServerAddress("127.0.0.1", self.port),
                        self.server_key), self.base, rustdesk_id="123456789")
        yield proxied.login("admin", ADMIN_PASSWORD)
        self.assertEqual((yield proxied.ab_personal()).json()["guid"], guid)
        yield proxied.logout()

        yield controller.logout()
        failure = yield self.assertFailure(controller.current_user(), ApiCallError)
        self.assertEqual(failure.status, 401)
        self.assertNotIn(b"Traceback", self.process.output)


class LiveReplayOnSqliteTests(LiveReplay, unittest.TestCase):
    pass


class LiveReplayOnPostgresTests(LiveReplay, unittest.TestCase):
    def database(self):
        return fresh_postgres_database(self)


ADMIN_PASSWORD = "admin-password-1"


def seed_admin(directory, url, now):
    """The first administrator, written before the server starts (as `rustdesk-admin user
    add` does)."""
    db = Database(engine_url(url, directory), reactor, in_thread_pool=False)
    try:
        migrate.upgrade(db)
        db.run_now(lambda c: c.execute(insert(tables.users).values(
            name="admin", password_hash=hash_password(ADMIN_PASSWORD), status=1, is_admin=True,
            created_at=now, updated_at=now)))
    finally:
        db.close()
