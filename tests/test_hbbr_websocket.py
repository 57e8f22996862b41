"""hbbr's WebSocket listener reads frame headers before payloads: a message announced above
the limit of the side's state (RequestRelay 64 KiB, waiting for the partner 256 KiB, paired
64 MiB) aborts the connection after the header, in memory with iosim."""

from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.early import EarlyBytes
from rustdesk_twisted.hbbr.protocols import EARLY_MAX, FIRST_FRAME_MAX, RELAY_FRAME_MAX

from .test_hbbr_support import Harness, request_relay
from .websocket_wire import frame


class RelayMessageSizeTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()

    def hits(self):
        return self.h.site.admission.limit_log.hits

    def test_a_first_message_announcing_64_mib_is_refused_after_its_header(self):
        client, _, client_transport, server_transport = self.h.ws()
        client_transport.write(frame(64 << 20))
        self.h.flush()
        self.assertTrue(server_transport.disconnecting)
        self.assertEqual(self.hits(), {"websocket-message-size": 1})
        self.assertEqual(len(self.h.server.pending), 0)

    def test_a_first_message_just_over_64_kib_is_refused(self):
        _, _, client_transport, server_transport = self.h.ws()
        client_transport.write(frame(FIRST_FRAME_MAX + 1))
        self.h.flush()
        self.assertTrue(server_transport.disconnecting)

    def test_a_waiting_half_may_not_send_more_than_the_early_bound_in_one_message(self):
        client, _, _, server_transport = self.h.ws()
        client.transport.sendBytesMessage(request_relay("lonely"))
        client.transport.sendBytesMessage(b"e" * EARLY_MAX)
        self.h.flush()
        self.assertFalse(server_transport.disconnecting)
        client.transport.sendBytesMessage(b"f" * (EARLY_MAX + 1))
        self.h.flush()
        self.assertTrue(server_transport.disconnecting)

    def test_paired_sides_relay_large_messages(self):
        (a, _, _, a_server), (b, _, _, _) = self.h.ws(), self.h.ws()
        a.transport.sendBytesMessage(request_relay("pair"))
        b.transport.sendBytesMessage(request_relay("pair"))
        self.h.flush()
        big = b"k" * (2 * 1024 * 1024)
        a.transport.sendBytesMessage(big)
        self.h.flush()
        self.assertEqual([len(m) for m in b.messages], [len(big)])
        self.assertFalse(a_server.disconnecting)
        self.assertEqual(a_server.protocol.limit, RELAY_FRAME_MAX)
        self.assertEqual(self.hits(), {})

    def test_a_message_sent_with_the_request_is_checked_against_the_waiting_bound(self):
        """Both arrive in one read: the request is handed on first, which raises the limit."""
        client, _, client_transport, server_transport = self.h.ws()
        client.transport.sendBytesMessage(request_relay("eager"))
        client_transport.write(frame(EARLY_MAX))
        self.h.flush()
        self.assertFalse(server_transport.disconnecting)
        self.assertEqual(len(self.h.server.pending), 1)


class WebSocketEarlyBytesTests(SynchronousTestCase):
    """A lonely WebSocket half's early messages count in the relay's early-bytes bounds."""

    def test_waiting_halves_are_held_to_the_per_half_bound_then_pair(self):
        h = Harness()
        h.server.early = EarlyBytes(h.reactor, per_half=100_000)
        a, _, _, a_server = h.ws()
        a.transport.sendBytesMessage(request_relay("ws-early"))
        for _ in range(5):
            a.transport.sendBytesMessage(b"e" * 60_000)
        h.flush()
        early = h.server.early
        self.assertLess(early.held, 100_000 + EARLY_MAX)
        self.assertGreaterEqual(early.held, 100_000)
        self.assertEqual(early.limit_log.hits, {"early-bytes": 1})
        self.assertFalse(a_server.disconnecting)

        b, _, _, _ = h.ws()
        b.transport.sendBytesMessage(request_relay("ws-early"))
        h.flush()
        self.assertEqual(early.held, 0)
        self.assertEqual(sum(len(m) for m in b.messages), 5 * 60_000)
