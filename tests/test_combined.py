"""``twistd rustdesk-server``: hbbs and hbbr built together on a memory reactor, one key,
and the in-process announce wiring driven by a real RequestRelay through hbbs."""

import os
import stat

from twisted.internet import reactor as real_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from rustdesk_twisted.combined_tap import API_DERIVED, RELAY_DERIVED, Options, makeService
from rustdesk_twisted.hbbr.server import ANNOUNCE_GRACE
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPeer, RegisterPk

from .livesupport import FramedClient
from .test_admission import FakeLimits
from .test_hbbr_support import TcpPeer, frame_request

PORT = 30116
B_ID = "123456789"
B_ADDRESS = ("203.0.113.20", 40000)


class ThreadedMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock plus UDP listeners, and thread results through the real reactor
    (hbbs's peer store commits on a thread)."""

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return _UDPPort()

    def callFromThread(self, f, *args, **kwargs):
        real_reactor.callFromThread(f, *args, **kwargs)


class _UDPPort:
    def stopListening(self):
        return None


def options(*argv):
    config = Options()
    config.parseOptions(list(argv))
    return config


class CombinedServiceTests(TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.reactor = ThreadedMemoryReactor()
        self.reactor.advance(1_700_000_000)

    def start(self, *argv, descriptors=20000):
        service = makeService(options("--data-dir", self.directory, "-p", str(PORT),
                                      "-b", "127.0.0.1", *argv), reactor=self.reactor)
        self.assertEqual(os.listdir(self.directory), [], "makeService touched the disk")
        service.rlimits = FakeLimits(descriptors, descriptors)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def ports(self):
        """The TCP ports listened on; each only once."""
        ports = [p for p, _, _, _ in self.reactor.tcpServers]
        self.assertEqual(len(ports), len(set(ports)), "two listeners on one port")
        return set(ports)

    def listener(self, port):
        [factory] = [f for p, f, _, _ in self.reactor.tcpServers if p == port]
        return factory

    def connect(self, port, client, host):
        peer = IPv4Address("TCP", host, 50000)
        server = self.listener(port).buildProtocol(peer)
        pump = iosim.connect(server, iosim.FakeTransport(server, True, peerAddress=peer), client,
                             iosim.makeFakeClient(client), greet=False, clock=self.reactor)
        pump.flush()
        return pump

    def test_both_servers_one_key(self):
        service = self.start()
        self.assertEqual(self.ports() & {PORT - 1, PORT, PORT + 1, PORT + 2, PORT + 3},
                         {PORT - 1, PORT, PORT + 1, PORT + 2, PORT + 3})
        self.assertEqual([u[0] for u in self.reactor.udpServers], [PORT])
        with open(os.path.join(self.directory, keys.SECRET_FILE)) as f:
            secret = keys.decode_secret(f.read())
        licence = keys.b64(secret[32:])
        self.assertEqual(service.hbbs.server.server_key.licence, licence)
        self.assertEqual(service.hbbr.relay.licence, licence)
        self.assertIsNone(service.hbbr.relay.allowed)
        consoles = sorted(os.path.basename(u[0]) for u in self.reactor.unixServers)
        self.assertEqual(consoles, ["hbbr-console.sock", "hbbs-console.sock"])

    def test_api_on_port_minus_2_with_its_database_in_the_data_directory(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.start("--admin-token", "t0k", "--api-token-lifetime", "120")
        self.assertIn(PORT - 2, self.ports())
        path = os.path.join(self.directory, "db_api.sqlite3")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        config = service.api.config
        self.assertEqual((config.data_dir, config.token_lifetime, config.admin_token,
                          config.hbbs, config.bind), (self.directory, 120, "t0k",
                                                      ("127.0.0.1", PORT - 1), "127.0.0.1"))
        [ready] = [e for e in events if e.get("event") == "combined_ready"]
        self.assertEqual(ready["api"], f"API on tcp:{PORT - 2}:interface=127.0.0.1, database "
                                       f"sqlite:///{path}")

    def test_api_off_and_its_own_port(self):
        service = self.start("--api", "off")
        self.assertIsNone(service.api)
        self.assertNotIn(PORT - 2, self.ports())
        self.assertNotIn("db_api.sqlite3", os.listdir(self.directory))
        self.assertRaises(usage.UsageError, options, "--api", "maybe")

    def test_api_port_option(self):
        self.start("--api-port", "31114")
        self.assertEqual(self.ports() & {PORT - 2, 31114}, {31114})

    def test_relay_flood_leaves_hbbs_its_descriptors(self):
        """hbbr and hbbs draw on one budget: 256 + 40 descriptors leave 40 for connections,
        a quarter of them kept for hbbs, so a relay flood cannot take hbbs's TCP down.  A
        relay connection costs three (its splice pipes)."""
        service = self.start("--relay-max-connections-per-ip", "1000",
                             "--relay-max-connections", "1000", descriptors=296)
        relay, rendezvous = self.listener(PORT + 1), self.listener(PORT)
        hosts = (IPv4Address("TCP", f"198.51.100.{n}", 50000) for n in range(1, 255))
        flood = 0
        while relay.buildProtocol(next(hosts)) is not None:
            flood += 1
        self.assertEqual(flood, 10)
        hbbs = [rendezvous.buildProtocol(next(hosts)) for _ in range(11)]
        self.assertEqual([p is not None for p in hbbs], [True] * 10 + [False])
        self.assertEqual(service.hbbr.relay.limits.limit_log.hits, {"descriptors": 1})

    def test_relay_connections_default_to_what_hbbs_leaves(self):
        service = self.start("--hbbs-descriptors", "100", descriptors=1256)
        self.assertEqual(service.hbbr.relay.limits.max_total, (1000 - 100) // 3)

    def test_key_option_reaches_both(self):
        service = self.start("-k", "")
        self.assertEqual((service.hbbs.server.server_key.licence, service.hbbr.relay.licence),
                         ("", ""))
        self.assertIsNotNone(service.hbbs.server.server_key.signing)

    def test_hbbs_descriptors_above_the_budget_is_one_sentence(self):
        service = makeService(options("--data-dir", self.directory, "-p", str(PORT),
                                      "--hbbs-descriptors", "5000"), reactor=self.reactor)
        service.rlimits = FakeLimits(1256, 1256)
        error = self.assertRaises(SystemExit, service.startService)
        self.assertEqual(str(error), "rustdesk-server: --hbbs-descriptors 5000 leaves the relay "
                                     "nothing of the 1000 descriptors for connections")

    def test_relay_port_and_bad_values(self):
        self.start("--relay-port", "31000", "--relay-console", "off")
        ports = self.ports()
        self.assertEqual(ports & {PORT + 1, PORT + 3, 31000, 31002}, {31000, 31002})
        self.assertEqual(len(self.reactor.unixServers), 1)
        self.assertRaises(usage.UsageError, options, "--relay-port", "x")
        self.assertRaises(SystemExit, makeService, options("--relay-port", "70000"),
                          reactor=self.reactor)

    def test_relay_pairs_only_uuids_hbbs_brokered(self):
        service = self.start("--announced-only", "-k", "")
        hbbs = service.hbbs.server
        notices = []
        hbbs.send_datagram = lambda data, address: notices.append(messages.parse(data))
        hbbs.datagram_received(messages.wrap("register_pk", RegisterPk(
            id=B_ID, uuid=b"machine", pk=b"\x11" * 32)).SerializeToString(), B_ADDRESS)
        hbbs.datagram_received(messages.wrap("register_peer", RegisterPeer(
            id=B_ID)).SerializeToString(), B_ADDRESS)

        requester = FramedClient()
        pump = self.connect(PORT, requester, "203.0.113.10")
        requester.send(messages.wrap("request_relay", id=B_ID, uuid="brokered-uuid",
                                     relay_server="127.0.0.1"))
        pump.flush()
        self.assertEqual(notices[-1].request_relay.uuid, "brokered-uuid")
        answerer = FramedClient()
        answer_pump = self.connect(PORT, answerer, B_ADDRESS[0])
        answerer.send(messages.wrap("relay_response", id=B_ID, uuid="brokered-uuid",
                                    socket_addr=notices[-1].request_relay.socket_addr,
                                    relay_server="127.0.0.1"))
        answer_pump.flush()
        pump.flush()

        def relay_client(uuid):
            client = TcpPeer()
            pump = self.connect(PORT + 1, client, "198.51.100.7")
            client.transport.write(frame_request(uuid))
            pump.flush()
            return client, pump

        stranger, stranger_pump = relay_client("stranger-uuid")
        self.reactor.advance(ANNOUNCE_GRACE)
        stranger_pump.flush()
        self.assertIsNotNone(stranger.lost, "an unannounced uuid was not refused")
        (a, a_pump), (b, b_pump) = relay_client("brokered-uuid"), relay_client("brokered-uuid")
        self.assertEqual(len(service.hbbr.relay.sessions), 1)
        a.transport.write(b"hello B")
        a_pump.flush()
        b_pump.flush()
        self.assertEqual(bytes(b.received), b"hello B")
        self.assertIsNone(a.lost)


class EveryOptionTests(TestCase):
    """rustdesk-server takes every hbbs option as hbbs does, official flags included, and
    every hbbr option as --relay-NAME (issue 10 item 8)."""

    def test_help_lists_every_option_of_the_servers(self):
        from rustdesk_twisted.api import tap as api_tap
        from rustdesk_twisted.hbbr import tap as hbbr_tap
        from rustdesk_twisted.hbbs import tap as hbbs_tap
        names = {parameter[0] for parameter in Options.optParameters + Options.optFlags}
        self.assertLessEqual({long for long, *_ in hbbs_tap.OPTIONS}, names)
        relay = {long for long, *_ in hbbr_tap.Options.optParameters + hbbr_tap.Options.optFlags}
        for long in relay - RELAY_DERIVED:
            self.assertTrue({"relay-" + long, "relay-listen"} & names, long)
        for long in {long for long, *_ in api_tap.OPTIONS} - API_DERIVED:
            self.assertIn("api-" + long, names)

    def test_official_hbbs_flags_reach_hbbs_and_relay_flags_reach_hbbr(self):
        directory = os.path.abspath(self.mktemp())
        given = options("--data-dir", directory, "-p", str(PORT), "--mask", "10.0.0.0/8",
                        "-M", "0", "-s", "3", "-R", "rs.example.com", "--log-format", "json",
                        "--admin", "off", "--relay-no-throttle", "--relay-admin", "off",
                        "--relay-max-connections-per-ip", "7")
        service = makeService(given, reactor=MemoryReactorClock())
        config = service.hbbs.config
        self.assertEqual((config.mask, config.rmem, config.serial, config.rendezvous_servers,
                          config.log_format, config.admin_endpoint),
                         ("10.0.0.0/8", 0, 3, ["rs.example.com"], "json", "off"))
        relay = service.hbbr.options
        self.assertEqual((relay["no-throttle"], relay["admin"], relay["max-connections-per-ip"],
                          relay["log-format"]), (True, "off", 7, "json"))
