"""Metrics collectors, the admin HTTP site (health, readiness, token) and JSON logs."""

import io
import json
import os

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Application, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.test import __file__ as twisted_tests
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted import adminweb, logs, metrics
from rustdesk_twisted.admission import ConnectionLimits, DescriptorBudget
from rustdesk_twisted.config import ConfigError
from rustdesk_twisted.hbbr.announce import AllowedUuids, AnnounceGate
from rustdesk_twisted.hbbr.server import RelayServer
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.wire import addr_mangle, keys, messages
from rustdesk_twisted.wire.websocket import TrustedProxies, WebSocketAdmission
from rustdesk_twisted.wire.rendezvous_pb2 import (
    PunchHoleRequest,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
)

PK = bytes(range(32))


PEM = os.path.join(os.path.dirname(twisted_tests), "server.pem")

class _Store:
    path = "db_v2.sqlite3"
    writes = 4
    write_seconds = 0.5
    pending = 2
    failed_ops = 1
    refused_ops = 3
    failure = None

    def check_writable(self):
        return succeed(0.001)


class _Service:
    announce_gate = None
    announce_limits = None
    websocket_admission = None

    def __init__(self, server, store):
        self.server = server
        self.store = store


class _Channel:
    def __init__(self, address):
        self.address = address
        self.key = address
        self.is_websocket = False
        self.parked_key = None
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def scrape(collector):
    text = metrics.exposition(metrics.registry_for(collector)).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


class HbbsCollectorTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = PeerRegistry()
        self.server = RendezvousServer(self.registry, keys.ServerKey("", None, "test"),
                                       RelayRotation(["relay.example.com"]), self.clock)
        self.server.send_datagram = lambda payload, address: None
        self.collector = metrics.HbbsCollector(_Service(self.server, _Store()), self.clock)

    def register(self, peer_id, ip):
        pk = messages.wrap("register_pk", RegisterPk(id=peer_id, uuid=b"u" + ip.encode(), pk=PK))
        self.server.datagram_received(pk.SerializeToString(), (ip, 4000))
        peer = messages.wrap("register_peer", RegisterPeer(id=peer_id))
        self.server.datagram_received(peer.SerializeToString(), (ip, 4000))

    def test_connection_refusals_at_accept_are_counted(self):
        """The TCP listeners' per-source cap (shared with WebSocket) counts in limit_hits."""
        limits = ConnectionLimits(self.clock, max_per_ip=1)
        self.collector.service.websocket_admission = WebSocketAdmission(
            self.clock, limits, TrustedProxies())
        limits.admit("198.51.100.1")
        limits.admit("198.51.100.1")
        self.assertEqual(scrape(self.collector)[
            ("rustdesk_hbbs_limit_hits_total", (("limit", "connections-per-ip"),))], 1)

    def test_counters_move(self):
        before = scrape(self.collector)
        self.assertEqual(before[("rustdesk_hbbs_peers_registered", ())], 0)
        self.register("123456789", "10.0.0.1")
        self.register("234567891", "10.0.0.2")
        self.server.stream_message(_Channel(("10.0.0.9", 5)), messages.wrap(
            "punch_hole_request", PunchHoleRequest(id="123456789")))
        self.server.stream_message(_Channel(("10.0.0.9", 6)), messages.wrap(
            "punch_hole_request", PunchHoleRequest(id="nobody123")))
        after = scrape(self.collector)
        self.assertEqual(after[("rustdesk_hbbs_peers_registered", ())], 2)
        self.assertEqual(after[("rustdesk_hbbs_peers_online", ())], 2)
        self.assertEqual(after[("rustdesk_hbbs_registrations_total", (("kind", "register_pk"),))],
                         2)
        self.assertEqual(after[("rustdesk_hbbs_registrations_total",
                                (("kind", "register_peer"),))], 2)
        self.assertEqual(after[("rustdesk_hbbs_punch_requests_total",
                                (("outcome", "punch_hole"),))], 1)
        self.assertEqual(after[("rustdesk_hbbs_punch_requests_total",
                                (("outcome", "ID_NOT_EXIST"),))], 1)
        self.assertEqual(after[("rustdesk_hbbs_relays_configured", ())], 1)
        self.server.stream_message(_Channel(("10.0.0.1", 7)), messages.wrap(
            "punch_hole_sent", PunchHoleSent(socket_addr=addr_mangle.encode(("10.0.0.9", 5), 0),
                                             id="123456789")))
        answered = scrape(self.collector)
        self.assertEqual(answered[("rustdesk_hbbs_answers_total",
                                   (("kind", "punch_hole_response"), ("result", "delivered")))], 1)
        self.assertEqual(sorted(outcome for (name, labels) in answered
                                if name == "rustdesk_hbbs_punch_requests_total"
                                for _, outcome in labels), ["ID_NOT_EXIST", "punch_hole"])
        self.assertEqual(after[("rustdesk_hbbs_db_write_seconds_count", ())], 4)
        self.assertEqual(after[("rustdesk_hbbs_db_failed_ops_total", ())], 1)
        self.clock.advance(31)
        self.assertEqual(scrape(self.collector)[("rustdesk_hbbs_peers_online", ())], 0)

    def test_websocket_and_rate_limits(self):
        self.server.counters.update(websocket_opened=5, websocket_closed=2)
        self.registry.ip_blocker.blocked = 3
        values = scrape(self.collector)
        self.assertEqual(values[("rustdesk_hbbs_websocket_connections_total", ())], 5)
        self.assertEqual(values[("rustdesk_hbbs_websocket_connections_open", ())], 3)
        self.assertEqual(values[("rustdesk_hbbs_rate_limit_hits_total",
                                 (("limit", "ip_per_minute_or_ids_per_day"),))], 3)

    def test_change_id_and_refused_key_changes(self):
        self.server.counters.update(change_id_without_proof=4, change_id_ok=1,
                                    change_id_refused=2, change_id_udp_ignored=3)
        self.registry.key_changes_refused = 5
        values = scrape(self.collector)
        self.assertEqual({labels[0][1]: value for (name, labels), value in values.items()
                          if name == "rustdesk_hbbs_change_id_total"},
                         {"without_proof": 4, "ok": 1, "refused": 2, "udp_ignored": 3})
        self.assertEqual(values[("rustdesk_hbbs_rate_limit_hits_total",
                                 (("limit", "key_change_while_online_elsewhere"),))], 5)


class _Side:
    def __init__(self, received):
        self.received = received
        self.peer = ("10.1.1.1", 5000)
        self.closed = False

    def close(self):
        self.closed = True


class _Session:
    def __init__(self, first, second):
        self.first, self.second = first, second


class HbbrCollectorTests(SynchronousTestCase):
    def test_sessions_bytes_refusals(self):
        relay = RelayServer(Clock(), licence="key")
        service = _Service(None, None)
        service.relay = relay
        collector = metrics.HbbrCollector(service)
        relay.refuse(_Side(0), "licence key mismatch")
        relay.counters.update(sessions=3, bytes=1000, throttled=1)
        relay.sessions.add(_Session(_Side(10), _Side(20)))
        values = scrape(collector)
        self.assertEqual(values[("rustdesk_hbbr_sessions_active", ())], 1)
        self.assertEqual(values[("rustdesk_hbbr_sessions_total", ())], 3)
        self.assertEqual(values[("rustdesk_hbbr_relayed_bytes_total", ())], 1030)
        self.assertEqual(values[("rustdesk_hbbr_throttled_sessions_total", ())], 1)
        self.assertEqual(values[("rustdesk_hbbr_refused_total",
                                 (("reason", "licence_key_mismatch"),))], 1)
        self.assertNotIn(("rustdesk_hbbr_announce_lines_total", (("result", "accepted"),)),
                         values)

    def test_connection_limits_and_descriptors(self):
        clock = Clock()
        budget = DescriptorBudget()
        budget.total = 10
        service = _Service(None, None)
        service.relay = RelayServer(clock, limits=ConnectionLimits(
            clock, max_per_ip=2, budget=budget.share("hbbr"), cost=3))
        service.announce_limits = ConnectionLimits(clock, max_per_ip=1,
                                                   name="announce-connections-per-ip")
        for host in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3"):
            service.relay.admit(host)
        service.announce_limits.admit("192.0.2.9")
        service.announce_limits.admit("192.0.2.9")
        values = scrape(metrics.HbbrCollector(service))
        hits = {labels[0][1]: value for (name, labels), value in values.items()
                if name == "rustdesk_hbbr_limit_hits_total"}
        self.assertEqual(hits, {"connections-per-ip": 1, "descriptors": 1,
                                "announce-connections-per-ip": 1})
        self.assertEqual(values[("rustdesk_hbbr_connections_open", ())], 3)
        self.assertEqual(values[("rustdesk_hbbr_descriptors_used", ())], 9)
        self.assertEqual(values[("rustdesk_hbbr_descriptors_budget", ())], 10)

    def test_announce_channel(self):
        service = _Service(None, None)
        service.relay = RelayServer(Clock())
        service.announce_gate = gate = AnnounceGate(AllowedUuids(), None)
        gate.counts.update(accepted=5, used=2, bad_signature=1, idle_timeout=3)
        values = scrape(metrics.HbbrCollector(service))
        lines = {labels[0][1]: value for (name, labels), value in values.items()
                 if name == "rustdesk_hbbr_announce_lines_total"}
        self.assertEqual(lines, {"accepted": 5, "keepalive": 0, "used": 2, "bad_signature": 1,
                                 "stale": 0, "malformed": 0})
        self.assertEqual(values[("rustdesk_hbbr_announce_timeouts_total",
                                 (("phase", "idle"),))], 3)
        self.assertEqual(values[("rustdesk_hbbr_announce_timeouts_total",
                                 (("phase", "first_line"),))], 0)


class ExposureTests(SynchronousTestCase):
    def test_exposed_needs_a_token(self):
        self.assertFalse(adminweb.is_exposed("tcp:21120:interface=127.0.0.1"))
        self.assertFalse(adminweb.is_exposed("tcp:21120:interface=\\:\\:1"))
        self.assertFalse(adminweb.is_exposed("unix:/run/admin.sock"))
        self.assertTrue(adminweb.is_exposed("tcp:21120"))
        pem = PEM.replace(":", "\\:")
        self.assertTrue(adminweb.is_exposed(f"ssl:21120:privateKey={pem}:interface=0.0.0.0"))
        self.assertRaises(ConfigError, adminweb.check_exposure, "tcp:21120", None)
        self.assertIn("TLS", adminweb.check_exposure("tcp:21120", "t"))
        self.assertIsNone(adminweb.check_exposure(f"ssl:21120:privateKey={pem}", "t"))
        self.assertIsNone(adminweb.check_exposure("off", None))

    def test_the_built_endpoint_counts_not_the_string(self):
        """Twisted binds the last ``interface=``, and takes it positionally too."""
        for description in ("tcp:21120:interface=127.0.0.1:interface=0.0.0.0",
                            "tcp:21120:0.0.0.0", "tcp:port=21120:interface=\\:\\:",
                            "tcp:21120:interface=localhost.example.com"):
            self.assertTrue(adminweb.is_exposed(description), description)
            self.assertRaises(ConfigError, adminweb.check_exposure, description, None)
        self.assertFalse(adminweb.is_exposed("tcp:21120:interface=0.0.0.0:interface=127.0.0.2"))

    def test_unusable_endpoint_is_one_sentence(self):
        for description in ("tcp:99999", "ssl:21120:privateKey=/nonexistent.pem", "bogus:1"):
            error = self.assertRaises(ConfigError, adminweb.check_exposure, description, "t")
            self.assertIn(repr(description), str(error))


class AdminSiteTests(TestCase):
    """The site over a real loopback socket, asked with treq."""

    def serve(self, checks, token=None):
        status = {"server": "test"}
        site = adminweb.admin_site(lambda: iter(checks), _EmptyCollector(), lambda: status,
                                   reactor, token)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def get(self, url, **kwargs):
        response = await treq.get(url, persistent=False, **kwargs)
        return response.code, await response.text()

    async def test_health_ready_metrics(self):
        base = self.serve([("database", lambda: succeed("fine"))])
        self.assertEqual(await self.get(base + "/healthz"), (200, "ok\n"))
        code, body = await self.get(base + "/readyz")
        self.assertEqual((code, json.loads(body)["ready"]), (200, True))
        code, body = await self.get(base + "/metrics")
        self.assertEqual(code, 200)
        self.assertIn("\nrustdesk_test_total 7.0\n", body)
        self.assertEqual((await self.get(base + "/nothing"))[0], 404)

    async def test_not_ready_names_the_failure(self):
        base = self.serve([("database", lambda: succeed("fine")),
                           ("relay r1", lambda: fail(ConnectionError("refused")))])
        code, body = await self.get(base + "/readyz")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["checks"]["relay r1"],
                         {"ok": False, "detail": "refused"})

    async def test_token(self):
        base = self.serve([], token="s3cret")
        self.assertEqual((await self.get(base + "/metrics"))[0], 401)
        self.assertEqual((await self.get(base + "/status", headers={
            "Authorization": "Bearer wrong"}))[0], 401)
        code, body = await self.get(base + "/status", headers={"Authorization": "Bearer s3cret"})
        self.assertEqual((code, json.loads(body)), (200, {"server": "test"}))
        self.assertEqual((await self.get(base + "/healthz"))[0], 200)

    def test_listeners_check(self):
        parent = MultiService()
        child = Service()
        child.setName("tcp")
        child.setServiceParent(parent)
        check = adminweb._listeners_bound(parent)
        self.assertRaises(RuntimeError, check)
        parent.startService()
        self.assertEqual(check(), "1 services running")
        parent.stopService()


class _EmptyCollector:
    def collect(self):
        yield metrics._counter("rustdesk_test", "A test counter.", samples=[((), 7)])


class JsonLogTests(SynchronousTestCase):
    def test_one_object_per_line_with_event_field(self):
        stream = io.StringIO()
        log = Logger(observer=logs.json_observer(stream))
        log.info("punch {outcome} from {requester}", outcome="OFFLINE", requester="1.2.3.4",
                 event="punch_refused")
        log.info("second")
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual((first["event"], first["requester"]), ("punch_refused", "1.2.3.4"))

    def test_use_format(self):
        application = Application("x")
        logs.use_format(application, "text")
        self.assertIsNone(application.getComponent(ILogObserver, None))
        logs.use_format(application, "json")
        self.assertIsNotNone(application.getComponent(ILogObserver, None))
        self.assertRaises(ValueError, logs.check_format, "xml")
        self.assertEqual(logs.check_format(None), "text")
