"""Pairing: the pure pending table, then whole request/pair/timeout scenarios in memory."""

from twisted.logger import globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.announce import AllowedUuids
from rustdesk_twisted.hbbr.pairing import PendingTable, TableFull
from rustdesk_twisted.hbbr.server import ANNOUNCE_GRACE
from rustdesk_twisted.wire.framing import encode_frame
from rustdesk_twisted.wire.messages import wrap

from .test_hbbr_support import Harness, frame_request


class PendingTableTests(SynchronousTestCase):
    def test_second_offer_pairs(self):
        table = PendingTable(10)
        self.assertIsNone(table.offer("u", "A", now=0))
        self.assertEqual(table.offer("u", "B", now=5), "A")
        self.assertEqual(len(table), 0)

    def test_expire_after_timeout(self):
        table = PendingTable(10, timeout=30)
        table.offer("u1", "A", now=0)
        table.offer("u2", "B", now=10)
        self.assertEqual(table.expire(29.9), [])
        self.assertEqual(table.expire(30), [("u1", "A")])
        self.assertEqual(table.expire(41), [("u2", "B")])

    def test_withdraw_only_own_entry(self):
        table = PendingTable(10)
        table.offer("u", "A", now=0)
        table.withdraw("u", "someone else")
        self.assertEqual(len(table), 1)
        table.withdraw("u", "A")
        self.assertEqual(len(table), 0)

    def test_bounded(self):
        table = PendingTable(2)
        table.offer("a", 1, now=0)
        table.offer("b", 2, now=0)
        self.assertRaises(TableFull, table.offer, "c", 3, now=0)
        self.assertEqual(table.offer("a", 4, now=0), 1)


class PairingScenarioTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def hbbr_events(self, name):
        return [e for e in self.events if e.get("event") == name]

    def test_pair_tcp_either_order(self):
        for order in ((0, 1), (1, 0)):
            h = Harness()
            a, b = h.tcp(), h.tcp()
            first, second = (a, b)[order[0]], (a, b)[order[1]]
            first[2].write(frame_request("U1"))
            h.flush()
            self.assertEqual(len(h.server.pending), 1)
            second[2].write(frame_request("U1"))
            h.flush()
            self.assertEqual(len(h.server.pending), 0)
            self.assertEqual(len(h.server.sessions), 1)
            first[2].write(b"ping")
            h.flush()
            self.assertEqual(bytes(second[0].received), b"ping")
        self.assertEqual([e["mode"] for e in self.hbbr_events("paired")], ["raw", "raw"])

    def test_lonely_request_times_out(self):
        h = Harness()
        client, proto, _, server_transport = h.tcp()
        client.transport.write(frame_request("lonely"))
        h.flush()
        h.reactor.advance(29)
        self.assertFalse(server_transport.disconnecting)
        h.reactor.advance(2)
        self.assertTrue(server_transport.disconnecting)
        self.assertEqual(len(h.server.pending), 0)
        [event] = self.hbbr_events("timeout")
        self.assertEqual(event["uuid"], "lonely")

    def test_no_first_message_times_out(self):
        h = Harness()
        _, _, _, server_transport = h.tcp()
        h.reactor.advance(31)
        self.assertTrue(server_transport.disconnecting)
        self.assertEqual(len(self.hbbr_events("timeout")), 1)

    def test_waiting_side_that_leaves_is_withdrawn(self):
        h = Harness()
        client, _, client_transport, _ = h.tcp()
        client_transport.write(frame_request("U"))
        h.flush()
        client_transport.loseConnection()
        h.flush()
        self.assertEqual(len(h.server.pending), 0)
        late = h.tcp()
        late[2].write(frame_request("U"))
        h.flush()
        self.assertEqual(len(h.server.pending), 1)
        self.assertEqual(len(h.server.sessions), 0)

    def test_licence_key_mismatch_closes_silently(self):
        h = Harness(licence="right-key")
        client, _, client_transport, server_transport = h.tcp()
        client_transport.write(frame_request("U", licence_key="wrong-key"))
        h.flush()
        self.assertTrue(server_transport.disconnected)
        self.assertEqual(bytes(client.received), b"")
        self.assertEqual(self.hbbr_events("refused")[0]["reason"], "licence key mismatch")
        ok = h.tcp()
        ok[2].write(frame_request("U", licence_key="right-key"))
        h.flush()
        self.assertEqual(len(h.server.pending), 1)

    def test_refusals(self):
        h = Harness()
        cases = [
            (encode_frame(wrap("request_relay", uuid="").SerializeToString()), "empty uuid"),
            (encode_frame(wrap("request_relay", uuid="u" * 30_000).SerializeToString()),
             "uuid too long"),
            (encode_frame(wrap("punch_hole_request", id="123").SerializeToString()),
             "first message is not a RequestRelay"),
            (encode_frame(b"\xff\xff\xff"), "first message is not a RequestRelay"),
            (b"\x03\x00\x00\x10", "first frame too large"),
        ]
        for data, reason in cases:
            _, _, client_transport, server_transport = h.tcp()
            client_transport.write(data)
            h.flush()
            self.assertTrue(server_transport.disconnected)
        self.assertEqual([e["reason"] for e in self.hbbr_events("refused")],
                         [reason for _, reason in cases])
        self.assertEqual(len(h.server.pending), 0)

    def test_pending_table_bounded(self):
        h = Harness(max_pending=1)
        h.tcp()[2].write(frame_request("one"))
        _, _, t, st = h.tcp()
        t.write(frame_request("two"))
        h.flush()
        self.assertTrue(st.disconnected)
        self.assertEqual(self.hbbr_events("refused")[0]["reason"], "pending table full")

    def test_pair_websockets_and_mixed(self):
        h = Harness()
        ws1, ws2 = h.ws(), h.ws()
        ws1[0].transport.sendBytesMessage(wrap("request_relay", uuid="W").SerializeToString())
        ws2[0].transport.sendBytesMessage(wrap("request_relay", uuid="W").SerializeToString())
        h.flush()
        tcp = h.tcp()
        wsx = h.ws()
        tcp[2].write(frame_request("X"))
        wsx[0].transport.sendBytesMessage(wrap("request_relay", uuid="X").SerializeToString())
        h.flush()
        self.assertEqual([e["mode"] for e in self.hbbr_events("paired")], ["framed", "framed"])


class AnnounceModeTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def refusals(self):
        return [e["reason"] for e in self.events if e.get("event") == "refused"]

    def test_request_ahead_of_its_announcement_waits_for_it(self):
        """B reaches the relay right after its RelayResponse; hbbs's announcement may trail."""
        allowed = AllowedUuids(ttl=60)
        h = Harness(allowed=allowed)
        a, b = h.tcp(), h.tcp()
        a[2].write(frame_request("early"))
        h.flush()
        h.reactor.advance(ANNOUNCE_GRACE - 1)
        allowed.announce("early", h.reactor.seconds())
        b[2].write(frame_request("early"))
        h.flush()
        self.assertEqual(len(h.server.sessions), 1)
        self.assertEqual(self.refusals(), [])

    def test_only_announced_uuids_pair(self):
        allowed = AllowedUuids(ttl=60)
        h = Harness(allowed=allowed)
        allowed.announce("known", h.reactor.seconds())
        _, _, t, st = h.tcp()
        t.write(frame_request("stranger"))
        h.flush()
        self.assertFalse(st.disconnected)
        h.reactor.advance(ANNOUNCE_GRACE)
        h.flush()
        self.assertTrue(st.disconnected)
        self.assertEqual(self.refusals(), ["uuid not announced by hbbs"])
        a, b = h.tcp(), h.tcp()
        a[2].write(frame_request("known"))
        b[2].write(frame_request("known"))
        h.flush()
        self.assertEqual(len(h.server.sessions), 1)
