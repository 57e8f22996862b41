"""Announced-uuid mode: signed lines, the allow table with used uuids, the announce protocol
and its deadlines, all on a MemoryReactorClock."""

from hypothesis import given, settings, strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.announce import (
    FIRST_LINE_TIMEOUT,
    IDLE_TIMEOUT,
    AllowedUuids,
    AnnounceFactory,
    AnnounceGate,
)
from rustdesk_twisted.wire import keys
from rustdesk_twisted.wire.announce import (
    DEFAULT_SKEW,
    DOMAIN,
    MAX_LINE,
    announcement,
    check,
    keepalive,
    valid_uuid,
)

from .test_hbbr_support import Harness, frame_request

HBBS = SigningKey(b"\x01" * 32)
STRANGER = SigningKey(b"\x02" * 32)
START = 1_700_000_000.0
UUID = "8f1c5a2e-3b4d-4e6f-9a0b-1c2d3e4f5a6b"


class CheckTests(SynchronousTestCase):
    def test_round_trip(self):
        line = announcement(HBBS, UUID, START)
        self.assertEqual(check(HBBS.verify_key, line, START + 1),
                         ("announce", UUID, int(START)))
        self.assertEqual(check(HBBS.verify_key, keepalive(HBBS, START), START).result, "keepalive")
        self.assertLessEqual(len(announcement(HBBS, "u" * 128, START)) + 1, MAX_LINE)

    def test_line_format(self):
        words = announcement(HBBS, "abc", 1000).split(b" ")
        self.assertEqual(words[:3], [b"announce", b"abc", b"1000"])
        self.assertEqual(len(words), 4)

    def test_skew_is_a_few_seconds(self):
        line = announcement(HBBS, UUID, START)
        for offset in (-DEFAULT_SKEW, DEFAULT_SKEW):
            self.assertEqual(check(HBBS.verify_key, line, START + offset).result, "announce")
        for offset in (-DEFAULT_SKEW - 1, DEFAULT_SKEW + 1, 59):
            self.assertEqual(check(HBBS.verify_key, line, START + offset).result, "stale")
        self.assertEqual(check(HBBS.verify_key, line, START + 20, skew=30).result, "announce")

    def test_signature_by_another_key(self):
        self.assertEqual(check(HBBS.verify_key, announcement(STRANGER, UUID, START), START),
                         ("bad_signature", None, int(START)))
        good = announcement(HBBS, "abc", START)
        for tampered in (good.replace(b"abc", b"abd"),
                         good.replace(b" %d " % START, b" %d " % (START + 1)),
                         b"keepalive" + good[len(b"announce abc"):]):
            self.assertEqual(check(HBBS.verify_key, tampered, START).result, "bad_signature")

    def test_malformed(self):
        signature = announcement(HBBS, "abc", START).rsplit(b" ", 1)[1]
        stamp = b"%d" % START
        for line in (b"", b"garbage", b"announce abc", b"announce abc " + stamp,
                     b"announce  " + stamp + b" " + signature,
                     b"announce a\x7fb " + stamp + b" " + signature,
                     b"announce " + b"u" * 129 + b" " + stamp + b" " + signature,
                     b"announce abc +1000 " + signature,
                     b"announce abc " + b"1" * 13 + b" " + signature,
                     b"announce abc " + stamp + b" " + signature[:-4],
                     b"announce abc " + stamp + b" not-base64!",
                     b"keepalive x " + stamp + b" " + signature,
                     b"hello " + stamp + b" " + signature):
            with self.subTest(line=line):
                self.assertEqual(check(HBBS.verify_key, line, START), ("malformed", None, None))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=MAX_LINE))
    def test_garbage_never_raises(self, line):
        self.assertIn(check(HBBS.verify_key, line, START).result,
                      ("malformed", "bad_signature"))

    def test_uuid_charset(self):
        self.assertTrue(valid_uuid(UUID))
        for uuid in ("", "a b", "a\nb", "é", "u" * 129):
            self.assertFalse(valid_uuid(uuid))
            self.assertRaises(ValueError, announcement, HBBS, uuid, START)

    @settings(max_examples=200, deadline=None)
    @given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                   max_size=128),
           st.integers(min_value=0, max_value=10**11))
    def test_signature_never_verifies_as_a_signed_idpk(self, uuid, stamp):
        """The same key signs peers' IdPk; an announce signature must not pass for one."""
        line = announcement(HBBS, uuid, stamp)
        payload, _, _ = line.rpartition(b" ")
        signed = HBBS.sign(DOMAIN + payload)
        for peer_id in ("", uuid, "123456789"):
            self.assertIsNone(keys.verify_id_pk(bytes(HBBS.verify_key), bytes(signed), peer_id))


class AllowedUuidsTests(SynchronousTestCase):
    def test_ttl(self):
        allowed = AllowedUuids(ttl=60)
        self.assertTrue(allowed.announce("u", now=100))
        self.assertTrue(allowed.allows("u", now=159))
        self.assertFalse(allowed.allows("u", now=160))
        self.assertFalse(allowed.allows("other", now=100))
        allowed.prune(now=200)
        self.assertEqual(len(allowed), 0)

    def test_bounded(self):
        allowed = AllowedUuids(ttl=60, limit=2)
        for i, uuid in enumerate("abc"):
            allowed.announce(uuid, now=i)
            allowed.use(uuid * 2, now=i)
        self.assertEqual(len(allowed), 2)
        self.assertFalse(allowed.allows("a", now=3))
        self.assertTrue(allowed.allows("c", now=3))
        self.assertTrue(allowed.announce("aa", now=3), "the oldest used uuid was not dropped")
        self.assertFalse(allowed.announce("cc", now=3))

    def test_used_uuid_stays_closed_while_a_line_for_it_could_verify(self):
        allowed = AllowedUuids(ttl=60, skew=5)
        allowed.announce("u", now=100)
        allowed.use("u", now=110)
        self.assertFalse(allowed.allows("u", now=111))
        self.assertFalse(allowed.announce("u", now=111))
        self.assertFalse(allowed.announce("u", now=110 + 60 + 2 * 5 - 1))
        self.assertFalse(allowed.allows("u", now=110 + 60 + 2 * 5 - 1))
        allowed.prune(now=110 + 70)
        self.assertTrue(allowed.announce("u", now=110 + 70))

    def test_listener_only_for_accepted_announcements(self):
        heard = []
        allowed = AllowedUuids()
        allowed.listener = heard.append
        allowed.announce("u", now=1)
        allowed.use("u", now=2)
        allowed.announce("u", now=3)
        self.assertEqual(heard, ["u"])


class UsedUuidTests(SynchronousTestCase):
    """Issue 9 item 5: once a pair formed under a uuid, it is closed to everyone."""

    def setUp(self):
        self.allowed = AllowedUuids(ttl=60)
        self.h = Harness(allowed=self.allowed)

    def pair(self, uuid):
        a, b = self.h.tcp(), self.h.tcp()
        a[2].write(frame_request(uuid))
        b[2].write(frame_request(uuid))
        self.h.flush()
        return a, b

    def test_announced_uuid_pairs_once(self):
        self.allowed.announce("u", self.h.reactor.seconds())
        a, _ = self.pair("u")
        self.assertEqual(len(self.h.server.sessions), 1)
        a[2].loseConnection()
        self.h.flush()
        self.allowed.announce("u", self.h.reactor.seconds())   # a replayed line
        self.pair("u")
        self.h.reactor.advance(5)
        self.h.flush()
        self.assertEqual(self.h.server.counters.get("sessions"), 1)
        self.assertEqual(self.h.server.counters.get("refused_uuid_not_announced_by_hbbs"), 2)


class ProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.allowed = AllowedUuids()
        self.h = Harness(allowed=self.allowed)
        self.clock = self.h.reactor
        self.clock.advance(START)
        self.gate = AnnounceGate(self.allowed, HBBS.verify_key)
        self.factory = AnnounceFactory(self.gate, self.clock)

    def connect(self, host="192.0.2.7"):
        peer = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 50000)
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def limit_lines(self):
        return [formatEvent(e) for e in self.events if e.get("event") == "limit_reached"]

    def test_answers(self):
        protocol, transport = self.connect()
        protocol.dataReceived(announcement(HBBS, "u1", START) + b"\n")
        protocol.dataReceived(keepalive(HBBS, START) + b"\r\n")
        self.assertTrue(self.allowed.allows("u1", self.clock.seconds()))
        protocol.dataReceived(announcement(HBBS, "u2", START - 60) + b"\n")
        self.assertEqual(transport.value(), b"ok\nok\nrefused\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.allowed.allows("u2", self.clock.seconds()))
        self.assertEqual(self.gate.counts["accepted"], 1)
        self.assertEqual(self.gate.counts["keepalive"], 1)
        self.assertEqual(self.gate.counts["stale"], 1)

    def test_replayed_line_for_a_used_uuid(self):
        """The line that opened a uuid, sent again after its pair formed, is answered ``used``."""
        h = self.h
        protocol, transport = self.connect()
        line = announcement(HBBS, "u", START) + b"\n"
        protocol.dataReceived(line)
        a, b = h.tcp(), h.tcp()
        a[2].write(frame_request("u"))
        b[2].write(frame_request("u"))
        h.flush()
        self.assertEqual(len(h.server.sessions), 1)
        self.clock.advance(DEFAULT_SKEW)
        protocol.dataReceived(line)
        self.assertEqual(transport.value(), b"ok\nused\n")
        self.assertFalse(transport.disconnecting)
        c, d = h.tcp(), h.tcp()
        c[2].write(frame_request("u"))
        d[2].write(frame_request("u"))
        h.flush()
        self.assertEqual(h.server.counters["sessions"], 1)
        self.assertEqual(self.gate.counts["used"], 1)

    def test_refusals_logged_once_per_source_with_the_address_first(self):
        for _ in range(3):
            protocol, _ = self.connect("192.0.2.7")
            protocol.dataReceived(announcement(STRANGER, "u", START) + b"\n")
        protocol, _ = self.connect("2001:db8::1")
        protocol.dataReceived(b"\x1b[31mhello\n")
        lines = self.limit_lines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("192.0.2.7 limit announce_bad_signature reached"))
        self.assertIn(keys.fingerprint(bytes(HBBS.verify_key)), lines[0])
        self.assertTrue(lines[1].startswith("2001:db8::/64 limit announce_malformed reached"))
        self.assertIn('"\\x1b[31mhello"', lines[1])
        self.assertEqual(self.gate.counts["bad_signature"], 3)
        self.assertEqual(self.gate.counts["malformed"], 1)

    def test_overlong_line(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"a" * (MAX_LINE + 1))
        self.assertEqual(transport.value(), b"refused\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.gate.counts["malformed"], 1)

    def test_first_line_deadline(self):
        """A connection that never sends a valid line is closed after 10 s."""
        _, transport = self.connect()
        self.clock.advance(FIRST_LINE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.gate.counts["first_line_timeout"], 1)
        [line] = self.limit_lines()
        self.assertTrue(line.startswith("192.0.2.7 limit announce_first_line_timeout reached"))

    def test_idle_deadline_after_each_valid_line(self):
        protocol, transport = self.connect()
        self.clock.advance(FIRST_LINE_TIMEOUT - 1)
        protocol.dataReceived(announcement(HBBS, "u", self.clock.seconds()) + b"\n")
        for _ in range(3):
            self.clock.advance(IDLE_TIMEOUT - 1)
            protocol.dataReceived(keepalive(HBBS, self.clock.seconds()) + b"\n")
        self.assertFalse(transport.disconnected)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.gate.counts["idle_timeout"], 1)
        self.assertEqual(self.gate.counts["first_line_timeout"], 0)

    def test_closed_connection_leaves_no_timer(self):
        before = len(self.clock.getDelayedCalls())
        protocol, _ = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), before + 1)
        protocol.connectionLost(None)
        self.assertEqual(len(self.clock.getDelayedCalls()), before)

    def test_unix_socket_peer(self):
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport(peerAddress=UNIXAddress(None)))
        protocol.dataReceived(b"garbage\n")
        [line] = self.limit_lines()
        self.assertTrue(line.startswith("local limit announce_malformed"))
