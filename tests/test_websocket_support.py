"""The WebSocket listener pieces shared by hbbs and hbbr: forwarded addresses, trusted
proxies, and the guard every connection passes from accept (counting, handshake deadline,
request head, message sizes read from frame headers), on StringTransports and a Clock."""

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.wire.websocket import (
    DEFAULT_TRUSTED_PROXIES,
    FrameHeaders,
    TrustedProxies,
    WebSocketAdmission,
    forwarded_address,
    guard_of,
    websocket_site,
)

from .test_hbbr_support import WsPeer
from .websocket_wire import UPGRADE, frame, masked_frame, upgrade


class ForwardedAddressTests(SynchronousTestCase):
    def test_official_parse(self):
        self.assertEqual(forwarded_address("8.8.8.8"), "8.8.8.8")
        self.assertEqual(forwarded_address(" 2001:db8::1 "), "2001:db8::1")

    def test_lists_ports_and_mixed_forms_are_refused(self):
        for header in ("8.8.8.8, 1.1.1.1", "8.8.8.8:80", "::ffff:1.2.3.4", "[::1]:5", "", None,
                       "example.com"):
            self.assertIsNone(forwarded_address(header), header)


class TrustedProxiesTests(SynchronousTestCase):
    def test_membership(self):
        trusted = TrustedProxies()
        self.assertIn("127.0.0.1", trusted)
        self.assertIn("::1", trusted)
        self.assertIn("::ffff:127.0.0.5", trusted)
        self.assertNotIn("203.0.113.5", trusted)
        self.assertNotIn("not an address", trusted)

    def test_configured_networks(self):
        trusted = TrustedProxies(["10.0.0.0/8", " ", "2001:db8::/32"])
        self.assertIn("10.1.2.3", trusted)
        self.assertIn("2001:db8::7", trusted)
        self.assertNotIn("127.0.0.1", trusted)
        self.assertRaises(ValueError, TrustedProxies, ["nonsense"])


class FrameHeadersTests(SynchronousTestCase):
    def sizes(self, stream, cuts=()):
        scanner = FrameHeaders()
        found = []
        previous = 0
        for cut in list(cuts) + [len(stream)]:
            found += [size for _, size in scanner.feed(stream[previous:cut])]
            previous = cut
        return found

    def test_every_length_form(self):
        stream = (masked_frame(b"x" * 5) + frame(300, masked=False) + b"y" * 300
                  + frame(70_000) + b"z" * 70_000 + frame(64 << 20))
        self.assertEqual(self.sizes(stream), [5, 300, 70_000, 64 << 20])

    def test_continuation_frames_add_up_and_control_frames_stand_alone(self):
        stream = (masked_frame(b"a" * 40, fin=False) + masked_frame(b"", opcode=9)
                  + masked_frame(b"b" * 40, opcode=0, fin=False)
                  + masked_frame(b"c" * 40, opcode=0) + masked_frame(b"d" * 7))
        self.assertEqual(self.sizes(stream), [40, 0, 80, 120, 7])

    def test_offset_of_a_header_split_across_chunks(self):
        scanner = FrameHeaders()
        stream = masked_frame(b"q" * 10) + frame(1000)
        self.assertEqual(list(scanner.feed(stream[:20])), [(0, 10)])
        self.assertEqual(list(scanner.feed(stream[20:])), [(-4, 1000)])

    @given(st.lists(st.integers(0, 70_000), max_size=6), st.lists(st.integers(0, 150_000)))
    @settings(max_examples=50, deadline=None)
    def test_any_chunking_finds_the_same_headers(self, lengths, cuts):
        stream = b"".join(frame(n) + bytes(n) for n in lengths)
        cuts = sorted({c for c in cuts if c < len(stream)})
        self.assertEqual(self.sizes(stream, cuts), lengths)


class _Apps:
    """The application side: one WsPeer per upgrade, with the address the guard gave it."""

    def __init__(self):
        self.built = []

    def buildProtocol(self, request):
        app = WsPeer()
        app.address = guard_of(request).address
        self.built.append(app)
        return app


class Listener:
    """A WebSocket listener on StringTransports with a Clock, as tap.py builds it."""

    def __init__(self, max_message=64 * 1024, max_per_ip=256, max_per_proxy=4096,
                 trusted=DEFAULT_TRUSTED_PROXIES):
        self.clock = Clock()
        self.limits = ConnectionLimits(self.clock, max_per_ip=max_per_ip)
        self.admission = WebSocketAdmission(
            self.clock, self.limits, TrustedProxies(trusted),
            ConnectionLimits(self.clock, max_per_ip=max_per_proxy, name="connections-per-proxy"))
        self.apps = _Apps()
        self.site = websocket_site(self.apps, self.admission, max_message)
        self._port = 50000

    def connect(self, host="198.51.100.7"):
        """(guard, transport), or None when refused at accept."""
        self._port += 1
        peer = IPv4Address("TCP", host, self._port)
        guard = self.site.buildProtocol(peer)
        if guard is None:
            return None
        transport = StringTransport(peerAddress=peer)
        guard.makeConnection(transport)
        return guard, transport

    def upgraded(self, host="198.51.100.7", *headers):
        guard, transport = self.connect(host)
        guard.dataReceived(upgrade(*headers))
        return guard, transport


class HandshakeTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def limit_lines(self):
        return [formatEvent(e) for e in self.events if e.get("event") == "limit_reached"]

    def test_upgrade_deadline_is_absolute_however_bytes_trickle(self):
        listener = Listener()
        guard, transport = listener.connect()
        for byte in UPGRADE[:3]:
            listener.clock.advance(3)
            guard.dataReceived(bytes([byte]))
        self.assertFalse(transport.disconnecting)
        listener.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.limit_lines(), [
            "198.51.100.7 limit websocket-handshake-timeout reached: no upgrade 10s after accept"])
        self.assertEqual(listener.admission.limit_log.hits, {"websocket-handshake-timeout": 1})

    def test_an_upgraded_connection_outlives_the_deadline(self):
        listener = Listener()
        listener.clock.advance(9)
        guard, transport = listener.upgraded()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        listener.clock.advance(60)
        self.assertFalse(transport.disconnecting)

    def test_a_refused_upgrade_keeps_the_deadline(self):
        listener = Listener()
        guard, transport = listener.connect()
        guard.dataReceived(b"GET / HTTP/1.1\r\nHost: hbbs\r\n\r\n")
        self.assertIn(b" 400 ", transport.value())
        listener.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_request_head_is_capped(self):
        listener = Listener()
        guard, transport = listener.connect()
        guard.dataReceived(b"GET / HTTP/1.1\r\n")
        for _ in range(200):
            guard.dataReceived(b"X-Padding: " + b"p" * 87 + b"\r\n")
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertEqual(listener.apps.built, [])
        self.assertEqual(listener.admission.limit_log.hits, {"websocket-request-head-size": 1})

    def test_counted_per_source_from_accept(self):
        listener = Listener(max_per_ip=2)
        first = listener.connect("192.0.2.1")
        self.assertIsNotNone(listener.connect("192.0.2.1"))
        self.assertIsNone(listener.connect("192.0.2.1"))
        self.assertIsNotNone(listener.connect("192.0.2.2"))
        first[0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(listener.connect("192.0.2.1"))
        self.assertEqual(listener.admission.limit_log.hits, {"connections": 1})
        self.assertEqual(self.limit_lines(),
                         ["192.0.2.1 limit connections-per-ip reached: 2 open from it"])


class TrustedProxyTests(SynchronousTestCase):
    PROXY = "127.0.0.1"

    def test_300_clients_through_one_proxy_each_under_their_own_cap(self):
        listener = Listener()
        for n in range(300):
            client = f"203.0.113.{n % 250}" if n < 250 else f"198.51.100.{n - 250}"
            guard, transport = listener.upgraded(self.PROXY, (b"X-Real-IP", client.encode()))
            self.assertFalse(transport.disconnecting, n)
            self.assertEqual(listener.apps.built[-1].address, (client, 0))
        self.assertEqual(listener.admission.proxy_limits.per_source, {self.PROXY: 300})

    def test_the_257th_from_one_forwarded_address_is_refused(self):
        listener = Listener()
        header = (b"X-Forwarded-For", b"203.0.113.9")
        connections = [listener.upgraded(self.PROXY, header) for _ in range(257)]
        self.assertEqual([t.disconnecting for _, t in connections], [False] * 256 + [True])
        self.assertEqual(len(listener.apps.built), 256)
        connections[0][0].connectionLost(Failure(ConnectionDone()))
        _, transport = listener.upgraded(self.PROXY, header)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(listener.limits.per_source, {"203.0.113.9": 256})

    def test_the_proxy_has_its_own_larger_cap(self):
        listener = Listener(max_per_ip=1, max_per_proxy=3)
        for n in range(3):
            self.assertIsNotNone(listener.connect(self.PROXY))
        self.assertIsNone(listener.connect(self.PROXY))
        self.assertEqual(listener.admission.limit_log.hits, {"connections-per-proxy": 1})

    def test_untrusted_sources_are_keyed_by_their_own_address(self):
        listener = Listener(max_per_ip=256)
        for n in range(256):
            guard, transport = listener.upgraded("192.0.2.44",
                                                 (b"X-Real-IP", f"203.0.113.{n}".encode()))
            self.assertEqual(listener.apps.built[-1].address[0], "192.0.2.44")
        self.assertIsNone(listener.connect("192.0.2.44"))
        self.assertEqual(listener.limits.per_source, {"192.0.2.44": 256})

    def test_one_connection_carries_one_forwarded_client(self):
        listener = Listener()
        guard, transport = listener.connect(self.PROXY)
        guard.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Real-IP: 203.0.113.1\r\n\r\n")
        self.assertFalse(transport.disconnecting)
        guard.dataReceived(upgrade((b"X-Real-IP", b"203.0.113.2")))
        self.assertTrue(transport.disconnecting)
        guard.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((listener.limits.per_source, listener.admission.proxy_limits.per_source),
                         ({}, {}))


class MessageSizeTests(SynchronousTestCase):
    def test_a_header_announcing_64_mib_is_refused_after_the_header(self):
        listener = Listener(max_message=64 * 1024)
        guard, transport = listener.upgraded()
        header = frame(64 << 20)
        for byte in header:
            self.assertFalse(transport.disconnecting)
            guard.dataReceived(bytes([byte]))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(listener.apps.built[0].messages, [])
        self.assertEqual(listener.admission.limit_log.hits, {"websocket-message-size": 1})

    def test_a_message_at_the_limit_is_delivered(self):
        listener = Listener(max_message=1000)
        guard, transport = listener.upgraded()
        guard.dataReceived(masked_frame(b"m" * 1000) + masked_frame(b"n" * 10))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(listener.apps.built[0].messages, [b"m" * 1000, b"n" * 10])

    def test_continuation_frames_are_capped_by_their_total(self):
        listener = Listener(max_message=1000)
        guard, transport = listener.upgraded()
        guard.dataReceived(masked_frame(b"a" * 400, fin=False)
                           + masked_frame(b"b" * 400, opcode=0, fin=False))
        self.assertFalse(transport.disconnecting)
        guard.dataReceived(frame(201, opcode=0))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(listener.apps.built[0].messages, [])

    def test_the_limit_may_change_with_what_precedes_a_header(self):
        listener = Listener(max_message=1000)
        guard, transport = listener.upgraded()

        def raise_limit(data):
            guard.limit = 5000
            app.messages.append(data)

        app = listener.apps.built[0]
        app.bytesMessageReceived = raise_limit
        guard.dataReceived(masked_frame(b"r" * 10) + masked_frame(b"s" * 4000))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(app.messages, [b"r" * 10, b"s" * 4000])
