"""hbbs's announce client against hbbr's real announce listener, in memory (iosim).

Both ends run on one MemoryReactorClock: hbbr's AnnounceFactory listens on
it, the hbbs side connects through ClientService and its endpoint string,
and ConnectionCompleter joins the two.
"""

import os

from nacl.signing import SigningKey
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted.config import ConfigError, Settings

from rustdesk_twisted.hbbr.announce import AllowedUuids, AnnounceFactory, AnnounceGate
from rustdesk_twisted.hbbs.announce import ANSWER_TIMEOUT, KEEPALIVE_INTERVAL, relay_announcer
from rustdesk_twisted.hbbs.limits import SourceRates
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.tap import HbbsConfig, HbbsService
from rustdesk_twisted.wire import addr_mangle, keys, messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPk, RelayResponse

from .test_combined import ThreadedMemoryReactor

HBBS_KEY = SigningKey(b"\x05" * 32)
START = 1_700_000_000.0
PORT = 21121
RETRY = 2.5  # ClientService's first retry: 1 s plus up to 1 s of jitter


class AnnounceClientTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(START)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.allowed = AllowedUuids()
        self.completer = ConnectionCompleter(self.reactor)

    def hbbr(self, key=HBBS_KEY):
        self.gate = AnnounceGate(self.allowed, key.verify_key)
        self.reactor.listenTCP(PORT, AnnounceFactory(self.gate, self.reactor))

    def hbbs(self, **link_options):
        announcer = relay_announcer([f"tcp:relay.example:{PORT}"], HBBS_KEY, self.reactor)
        for option, value in link_options.items():
            setattr(announcer.links[0], option, value)
        announcer.startService()
        self.addCleanup(announcer.stopService)
        return announcer

    def connect(self):
        pump = self.completer.succeedOnce()
        self.assertIsNotNone(pump, "no connection attempt to complete")
        pump.flush()
        return pump

    def logged(self, name):
        return [e for e in self.events if e.get("event") == name]

    def allows(self, *uuids):
        now = self.reactor.seconds()
        return [self.allowed.allows(uuid, now) for uuid in uuids]

    def test_announced_uuid_is_allowed_after_ok(self):
        self.hbbr()
        announcer = self.hbbs()
        pump = self.connect()
        announcer("uuid-1")
        self.assertEqual(self.allows("uuid-1"), [False])
        pump.flush()
        self.assertEqual(self.allows("uuid-1", "uuid-2"), [True, False])
        self.assertEqual(len(announcer.links[0].unanswered), 0)
        self.assertEqual(self.logged("announce_refused"), [])

    def test_wrong_key_is_refused_and_logged(self):
        self.hbbr(key=SigningKey(b"\x06" * 32))
        announcer = self.hbbs()
        pump = self.connect()
        announcer("uuid-1")
        pump.flush()
        self.assertEqual(self.allows("uuid-1"), [False])
        [refused] = self.logged("announce_refused")
        self.assertEqual(refused["what"], "keepalive")    # the first line on a connection
        self.assertEqual(len(self.logged("announce_disconnected")), 1)
        self.assertIsNone(announcer.links[0].channel)
        self.reactor.advance(RETRY)
        self.assertEqual(len(self.reactor.tcpClients), 1, "no reconnection attempt")

    def test_queue_while_disconnected_then_reconnect(self):
        self.hbbr()
        announcer = self.hbbs(limit=2)
        announcer("early")
        pump = self.connect()
        self.assertEqual(self.allows("early"), [True])
        pump.serverIO.loseConnection()
        pump.flush()
        announcer("lost-1")
        announcer("kept-1")
        announcer("kept-2")
        [dropped] = self.logged("announce_dropped")
        self.assertEqual(dropped["limit"], 2)
        self.assertEqual(self.completer.succeedOnce(), None)
        self.reactor.advance(RETRY)
        self.connect()
        self.assertEqual(self.allows("lost-1", "kept-1", "kept-2"), [False, True, True])
        connected = self.logged("announce_connected")[-1]
        self.assertEqual((connected["sent"], connected["dropped"]), (2, 1))

    def test_stale_queued_uuid_is_not_sent(self):
        self.hbbr()
        announcer = self.hbbs()
        announcer("old")
        self.reactor.advance(31)
        announcer("new")
        self.connect()
        self.assertEqual(self.allows("old", "new"), [False, True])
        self.assertEqual(self.logged("announce_connected")[-1]["expired"], 1)

    def test_keepalive_holds_the_connection_open(self):
        """hbbr closes a connection silent for 10 s after accept, or for 90 s later on;
        hbbs sends a keepalive on connecting and every 30 s."""
        self.hbbr()
        self.hbbs()
        pump = self.connect()
        for _ in range(10):
            self.reactor.advance(KEEPALIVE_INTERVAL)
            pump.flush()
        self.assertFalse(pump.serverIO.disconnected)
        self.assertEqual(self.gate.counts["keepalive"], 11)
        self.assertEqual(self.gate.counts["idle_timeout"], 0)
        self.assertEqual(self.logged("announce_refused"), [])

    def test_used_answer_is_benign(self):
        """A resent line for a uuid that paired meanwhile is answered ``used``: not an error."""
        self.hbbr()
        announcer = self.hbbs()
        pump = self.connect()
        announcer("paired")
        pump.flush()
        self.allowed.use("paired", self.reactor.seconds())
        announcer("paired")
        pump.flush()
        self.assertEqual(self.gate.counts["used"], 1)
        self.assertEqual(self.logged("announce_refused"), [])
        self.assertIs(announcer.links[0].channel.transport, pump.clientIO)

    def test_silent_relay_is_given_up_on(self):
        """An hbbr that stops answering (half-open connection) is reconnected, lines resent."""
        self.hbbr()
        announcer = self.hbbs()
        pump = self.connect()
        pump.serverIO.write = lambda data: None     # hbbr's answers are lost
        announcer("waiting")
        pump.flush()
        for _ in range(int(ANSWER_TIMEOUT // KEEPALIVE_INTERVAL)):
            self.reactor.advance(KEEPALIVE_INTERVAL)
            pump.flush()
        self.assertEqual(len(self.logged("announce_unanswered")), 1)
        self.assertIsNone(announcer.links[0].channel)
        self.assertEqual(announcer.links[0].waiting[0][0], "waiting")

    def test_unannounceable_uuid_is_not_sent(self):
        self.hbbr()
        announcer = self.hbbs()
        pump = self.connect()
        announcer("has space")
        announcer("")
        pump.flush()
        self.assertEqual(len(announcer.links[0].unanswered), 0)
        self.assertEqual(self.gate.counts["malformed"], 0)

    def test_unanswered_lines_are_resent_after_reconnect(self):
        self.hbbr()
        announcer = self.hbbs()
        pump = self.connect()
        announcer("in-flight")
        self.assertTrue(pump.clientIO.getOutBuffer(), "nothing written")  # lost on the way
        pump.clientIO.loseConnection()
        pump.flush()
        self.assertEqual(self.allows("in-flight"), [False])
        self.reactor.advance(RETRY)
        self.connect()
        self.assertEqual(self.allows("in-flight"), [True])


class _Channel:
    """A stream channel of RendezvousServer that records into a shared journal."""

    is_websocket = False
    transport_name = "tcp"
    closed = False

    def __init__(self, journal, address):
        self.journal = journal
        self.address = address
        self.key = addr_mangle.normalize(address)
        self.parked_key = None
        self.registered_id = None

    def send(self, message):
        self.journal.append(("deliver", message.WhichOneof("union")))

    def start_heartbeats(self, interval):
        pass

    def close(self):
        pass


class AnnounceBeforeDeliveryTests(SynchronousTestCase):
    """The line must be on its way to hbbr before the client may go to the relay."""

    def setUp(self):
        self.journal = []
        clock = MemoryReactorClock()
        clock.advance(START)
        self.server = RendezvousServer(PeerRegistry(), keys.ServerKey("", None, "test"),
                                       RelayRotation(["relay.example"]), clock)
        self.server.relay_announcer = lambda uuid: self.journal.append(("announce", uuid))
        self.b = _Channel(self.journal, ("203.0.113.20", 5000))
        self.server.stream_message(self.b, messages.wrap(
            "register_pk", RegisterPk(id="123456789", uuid=b"m" * 16, pk=b"k" * 32)))
        self.journal.clear()
        self.a = _Channel(self.journal, ("203.0.113.10", 6000))

    def test_requested_relay_announced_when_b_answers_before_delivery_to_a(self):
        """Section 4.4 d2: A's uuid is announced once B has answered, before A hears of it."""
        self.server.stream_message(self.a, messages.wrap(
            "request_relay", id="123456789", uuid="U1", relay_server="relay.example"))
        self.assertEqual(self.journal, [("deliver", "request_relay")])
        self.journal.clear()
        self.server.stream_message(self.b_answer(), messages.wrap("relay_response", RelayResponse(
            socket_addr=addr_mangle.encode(self.a.address, 0), version="1.4.9")))
        self.assertEqual(self.journal, [("announce", "U1"), ("deliver", "relay_response")])

    def b_answer(self, host="203.0.113.20"):
        """B's fresh connection for its answer (section 4.3 step 2)."""
        return _Channel(self.journal, (host, 5001))

    def test_relay_response_announced_before_delivery_to_a(self):
        self.server.stream_message(self.a, messages.wrap("punch_hole_request", id="123456789"))
        self.journal.clear()
        self.server.stream_message(self.b_answer(), messages.wrap("relay_response", RelayResponse(
            socket_addr=addr_mangle.encode(self.a.address, 0), uuid="U2",
            relay_server="relay.example")))
        self.assertEqual(self.journal, [("announce", "U2"), ("deliver", "relay_response")])


class BrokeredOnlyTests(AnnounceBeforeDeliveryTests):
    """Only B's answer to a request hbbs forwarded to B may open the relay (item: one
    unauthenticated RelayResponse used to announce any uuid)."""

    def answer(self, channel, uuid="X", **fields):
        self.server.stream_message(channel, messages.wrap("relay_response", RelayResponse(
            socket_addr=addr_mangle.encode(self.a.address, 0), uuid=uuid, **fields)))

    def announced(self):
        return [uuid for what, uuid in self.journal if what == "announce"]

    def test_unsolicited_relay_response_announces_nothing(self):
        stranger = _Channel(self.journal, ("198.51.100.66", 7000))
        self.answer(stranger, "forged")
        self.server.stream_message(self.a, messages.wrap("punch_hole_request", id="123456789"))
        self.answer(stranger, "forged-after-a-request")
        self.assertEqual(self.announced(), [])
        self.assertEqual(self.server.limits.hits["relay-response-not-announced"], 2)

    def test_answer_from_another_address_than_b(self):
        self.server.stream_message(self.a, messages.wrap("punch_hole_request", id="123456789"))
        self.answer(self.b_answer("198.51.100.66"), "forged")
        self.assertEqual(self.announced(), [])
        self.assertIn(("deliver", "relay_response"), self.journal, "still forwarded, as OSS does")

    def test_answer_naming_another_peer(self):
        self.server.stream_message(self.a, messages.wrap("punch_hole_request", id="123456789"))
        self.answer(self.b_answer(), "U3", id="987654321")
        self.assertEqual(self.announced(), [])

    def test_one_announcement_per_forwarded_request(self):
        self.server.stream_message(self.a, messages.wrap("punch_hole_request", id="123456789"))
        self.answer(self.b_answer(), "U4")
        self.answer(self.b_answer(), "U5")
        self.assertEqual(self.announced(), ["U4"])

    def test_a_requester_flooding_its_own_peer_has_a_quota(self):
        """Requests to one's own peer announce at most the quota: others' uuids stay."""
        self.server.request_rates = SourceRates(1000, 1000)  # only the quota is tested here
        for n in range(100):
            requester = _Channel(self.journal, ("203.0.113.10", 6000 + n))
            self.server.stream_message(requester, messages.wrap(
                "request_relay", id="123456789", uuid=f"flood-{n}"))
            self.server.stream_message(self.b_answer(), messages.wrap(
                "relay_response", RelayResponse(socket_addr=addr_mangle.encode(
                    requester.address, 0))))
        self.assertEqual(len(self.announced()), self.server.announce_rates.burst)
        other = _Channel(self.journal, ("203.0.113.11", 6000))
        self.server.stream_message(other, messages.wrap(
            "request_relay", id="123456789", uuid="someone-else"))
        self.server.stream_message(self.b_answer(), messages.wrap("relay_response", RelayResponse(
            socket_addr=addr_mangle.encode(other.address, 0))))
        self.assertEqual(self.announced()[-1], "someone-else")


class RelayAnnounceOptionTests(TestCase):
    """``--relay-announce`` in hbbs's service tree."""

    def start(self, endpoints, **settings):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        reactor = ThreadedMemoryReactor()
        config = HbbsConfig(Settings(layers=[("test", {
            "PORT": "30116", "BIND": "127.0.0.1", "DATA-DIR": directory,
            "RELAY-ANNOUNCE": endpoints, **settings})]))
        self.assertEqual(config.relay_announce, endpoints.split(","))
        service = HbbsService(config, reactor)
        return reactor, service

    def test_connects_to_each_relay_signing_with_the_key_file(self):
        reactor, service = self.start("tcp:relay1.example:21121,tcp:relay2.example:21121")
        service.startService()
        self.addCleanup(service.stopService)
        announcer = service.server.relay_announcer
        self.assertEqual([link.name for link in announcer.links],
                         ["tcp:relay1.example:21121", "tcp:relay2.example:21121"])
        self.assertEqual(sorted(c[0] for c in reactor.tcpClients),
                         ["relay1.example", "relay2.example"])
        with open(os.path.join(service.config.data_dir, keys.SECRET_FILE)) as f:
            secret = keys.decode_secret(f.read())
        self.assertEqual(bytes(announcer.links[0].signing.verify_key), secret[32:])

    def test_signs_with_the_key_option(self):
        """``-k SECRET`` is the key hbbs signs with, so announcements use it, not the files."""
        secret = bytes(SigningKey(b"\x07" * 32)) + bytes(SigningKey(b"\x07" * 32).verify_key)
        _, service = self.start("tcp:relay1.example:21121", KEY=keys.b64(secret))
        service.startService()
        self.addCleanup(service.stopService)
        link = service.server.relay_announcer.links[0]
        self.assertEqual(bytes(link.signing.verify_key), secret[32:])
        self.assertNotIn(keys.SECRET_FILE, os.listdir(service.config.data_dir))

    def test_bad_endpoint_is_a_config_error(self):
        _, service = self.start("nonsense:relay")
        self.assertRaises(ConfigError, service.startService)
