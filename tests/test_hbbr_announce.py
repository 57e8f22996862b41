"""Announced-uuid mode: the TTL table, the HMAC line format and the announce protocol."""

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.announce import AllowedUuids, AnnounceFactory
from rustdesk_twisted.wire.announce import announce_key, announcement, verify

KEY = announce_key(b"\x01" * 64)


class AllowedUuidsTests(SynchronousTestCase):
    def test_ttl(self):
        allowed = AllowedUuids(ttl=60)
        allowed.announce("u", now=100)
        self.assertTrue(allowed.allows("u", now=159))
        self.assertFalse(allowed.allows("u", now=160))
        self.assertFalse(allowed.allows("other", now=100))
        allowed.prune(now=200)
        self.assertEqual(len(allowed), 0)

    def test_bounded(self):
        allowed = AllowedUuids(ttl=60, limit=2)
        for i, uuid in enumerate("abc"):
            allowed.announce(uuid, now=i)
        self.assertEqual(len(allowed), 2)
        self.assertFalse(allowed.allows("a", now=3))
        self.assertTrue(allowed.allows("c", now=3))


class VerifyTests(SynchronousTestCase):
    def test_round_trip(self):
        self.assertEqual(verify(KEY, announcement(KEY, "abc-123", 1000), now=1010), "abc-123")

    def test_rejections(self):
        good = announcement(KEY, "abc", 1000)
        other_key = announce_key(b"\x02" * 64)
        for line, now in ((good, 1100), (announcement(other_key, "abc", 1000), 1000),
                          (good.replace(b"abc", b"abd"), 1000), (b"garbage", 1000),
                          (b"a 1 2 3", 1000)):
            self.assertIsNone(verify(KEY, line, now))


class AnnounceProtocolTests(SynchronousTestCase):
    def test_lines(self):
        clock = MemoryReactorClock()
        clock.advance(5000)
        allowed = AllowedUuids()
        protocol = AnnounceFactory(allowed, KEY, clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(announcement(KEY, "u1", 5000) + b"\n")
        self.assertTrue(allowed.allows("u1", clock.seconds()))
        self.assertEqual(transport.value(), b"ok\n")
        protocol.dataReceived(announcement(KEY, "u2", 1) + b"\n")
        self.assertEqual(transport.value(), b"ok\nrefused\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(allowed.allows("u2", clock.seconds()))
