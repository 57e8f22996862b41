"""Bad input never hurts hbbs: garbage, truncation, huge headers, nesting, floods."""

import os

from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.hbbs.console import HbbsConsole
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.store import PeerStore
from rustdesk_twisted.hbbs.streams import RendezvousTCPFactory
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.framing import encode_frame
from rustdesk_twisted.wire.rendezvous_pb2 import ConfigUpdate, RegisterPk

SEED = bytes(range(32))


def make_server(clock, store=None, serial=0):
    signing = keys.signing_key_from_secret(SEED + SEED)
    server_key = keys.ServerKey(keys.b64(bytes(signing.verify_key)), signing, "test")
    server = RendezvousServer(PeerRegistry(store), server_key, RelayRotation(["r:21117"]), clock,
                              serial=serial, rendezvous_servers=["a.example.com", "b.example.com"])
    replies = []
    server.send_datagram = lambda payload, address: replies.append((payload, address))
    return server, replies


def connect(factory, host="198.51.100.7", port=40000):
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    if protocol is None:
        return None, None
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    transport.clear()
    return protocol, transport


class DatagramTests(unittest.SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_no_reply_larger_than_request(self, data):
        """Any datagram from an unverified source: no exception, no amplification."""
        clock = Clock()
        server, replies = make_server(clock, serial=99)
        server.datagram_received(data, ("203.0.113.9", 5000))
        for payload, _ in replies:
            self.assertLessEqual(len(payload), len(data))

    def test_config_update_only_to_registered_address(self):
        """The larger ConfigUpdate goes only to the address the peer registered from."""
        clock = Clock()
        clock.advance(1000)
        server, replies = make_server(clock, serial=99)
        register_pk = messages.wrap("register_pk", RegisterPk(
            id="123456789", uuid=b"u" * 36, pk=b"k" * 32)).SerializeToString()
        peer_address = ("192.0.2.1", 4000)
        server.datagram_received(register_pk, peer_address)
        register_peer = bytes.fromhex("320d0a09313233343536373839 1003".replace(" ", ""))
        replies.clear()
        server.datagram_received(register_peer, ("192.0.2.1", 4000))
        kinds = [messages.parse(p).WhichOneof("union") for p, _ in replies]
        self.assertEqual(kinds, ["register_peer_response", "configure_update"])

    def test_loopback_config_update_needs_the_console(self):
        """A local process cannot set what every peer is sent; the console can, within a cap."""
        clock = Clock()
        clock.advance(1000)
        server, replies = make_server(clock, serial=3)
        huge = messages.wrap("configure_update", ConfigUpdate(
            serial=4, rendezvous_servers=[f"h{i}.example.com" * 5 for i in range(100)]))
        small = messages.wrap("configure_update", ConfigUpdate(
            serial=5, rendezvous_servers=["evil.example.com"]))
        for update in (huge, small):
            server.datagram_received(update.SerializeToString(), ("127.0.0.1", 5000))
        self.assertEqual((server.serial, server.rendezvous_servers),
                         (3, ["a.example.com", "b.example.com"]))
        self.assertEqual(server.limits.hits, {"config-update-over-udp": 2})

        console = HbbsConsole(server)
        reply = console.execute("rendezvous-servers 9 " + ",".join(["x" * 100] * 9), 1000)
        self.assertTrue(reply.startswith("refused: rendezvous servers: at most 8 names"), reply)
        self.assertEqual(console.execute("rendezvous-servers 9 c.example.com,d.example.com", 1000),
                         "serial 9: c.example.com,d.example.com\n")
        self.assertEqual(server.serial, 9)

    def test_official_loopback_config_update_is_capped(self):
        clock = Clock()
        server, _ = make_server(clock, serial=3)
        server.loopback_config_update = True
        huge = messages.wrap("configure_update", ConfigUpdate(
            serial=4, rendezvous_servers=["x" * 250] * 8))
        server.datagram_received(huge.SerializeToString(), ("127.0.0.1", 5000))
        self.assertEqual(server.serial, 3)
        server.datagram_received(messages.wrap("configure_update", ConfigUpdate(
            serial=4, rendezvous_servers=["c.example.com"])).SerializeToString(),
            ("127.0.0.1", 5000))
        self.assertEqual((server.serial, server.rendezvous_servers), (4, ["c.example.com"]))

    def test_deep_nesting(self):
        clock = Clock()
        server, replies = make_server(clock)
        server.datagram_received(b"\x0b" * 300_000, ("203.0.113.9", 5000))
        server.datagram_received(b"\x32" + b"\xff" * 10, ("203.0.113.9", 5000))
        self.assertEqual(replies, [])
        self.assertEqual(server.counters["udp_garbage"], 2)


class StreamTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.server, _ = make_server(self.clock)
        self.factory = RendezvousTCPFactory(self.server, self.clock, max_frame=64 * 1024)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_huge_length_header(self):
        """A 1 GiB header closes the connection at once, with a log line, allocating nothing."""
        protocol, transport = connect(self.factory)
        protocol.dataReceived(b"\xff\xff\xff\xff" + b"x" * 100)
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(protocol.decoder.buffered(), 104)
        self.assertIn("frame_too_large", [e.get("event") for e in self.events])

    def test_oversized_frame(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(encode_frame(b"\x00" * (64 * 1024 + 1))[:100])
        self.assertTrue(transport.disconnecting)

    def test_truncated_frame_then_silence(self):
        """Half a frame is kept only until the idle timeout."""
        protocol, transport = connect(self.factory)
        protocol.dataReceived(encode_frame(b"\x42" * 500)[:200])
        self.assertFalse(transport.disconnecting)
        self.clock.advance(30)
        self.assertTrue(transport.disconnecting)

    def test_garbage_frame_closes(self):
        protocol, transport = connect(self.factory)
        protocol.dataReceived(encode_frame(b"\x0b" * 50_000))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=8))
    def test_any_stream_is_survivable(self, chunks):
        clock = Clock()
        server, _ = make_server(clock)
        factory = RendezvousTCPFactory(server, clock)
        protocol, transport = connect(factory)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        protocol.connectionLost(None)
        clock.advance(60)
        self.assertEqual(server.waiting.channels, {})
        self.assertEqual(factory.limits.total, 0)

    def test_flood_of_silent_connections(self):
        """Connections that never speak are capped per IP and all closed after 30 s."""
        factory = RendezvousTCPFactory(self.server, self.clock,
                                       limits=ConnectionLimits(self.clock, max_total=1000,
                                                               max_per_ip=100))
        opened = []
        for i in range(150):
            protocol, transport = connect(factory, "198.51.100.50", 10000 + i)
            if protocol is not None:
                opened.append((protocol, transport))
        self.assertEqual(len(opened), 100)
        self.assertEqual(factory.limits.refused, 50)
        self.clock.advance(30)
        self.assertTrue(all(t.disconnecting for _, t in opened))
        for protocol, _ in opened:
            protocol.connectionLost(None)
        self.assertEqual(factory.limits.total, 0)
        self.assertEqual(factory.limits.per_source, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StoredDataSurvivesTests(unittest.TestCase):
    def test_garbage_does_not_touch_the_database(self):
        directory = self.mktemp()
        os.makedirs(directory)
        clock = Clock()
        clock.advance(1000)
        store = PeerStore(os.path.join(directory, "db_v2.sqlite3"), reactor)
        registry_rows = store.open()
        self.assertEqual(registry_rows, [])
        server, _ = make_server(clock, store)
        server.datagram_received(messages.wrap("register_pk", RegisterPk(
            id="123456789", uuid=b"u" * 36, pk=b"k" * 32)).SerializeToString(), ("192.0.2.1", 4000))
        for junk in (b"\x7a\x05garbage", b"\x0b" * 1000, b"\x7a\x00", os.urandom(64)):
            server.datagram_received(junk, ("192.0.2.1", 4000))

        def reopened(_):
            again = PeerStore(os.path.join(directory, "db_v2.sqlite3"), reactor)
            rows = again.open()
            self.addCleanup(again.close)
            self.assertEqual([(r.id, r.uuid, r.pk) for r in rows],
                             [("123456789", b"u" * 36, b"k" * 32)])

        return store.close().addCallback(reopened)
