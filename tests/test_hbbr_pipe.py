"""The pipe: raw vs framed forwarding, early bytes, TCP<->WS conversion,
backpressure, throttling pauses, idle timeout and ends, all in memory."""

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.bandwidth import MBIT, BandwidthPolicy
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame
from rustdesk_twisted.wire.messages import wrap

from .test_hbbr_support import Harness, frame_request, request_relay

SIGNED_ID = encode_frame(b"\x0a\x20" + b"s" * 32)


class RawPipeTests(SynchronousTestCase):
    def test_early_bytes_forwarded_verbatim(self):
        """B's SignedId sent in the same segment as RequestRelay reaches A unchanged (G11)."""
        h = Harness()
        b, a = h.tcp(), h.tcp()
        # A non-shortest header for the early frame must survive as sent.
        odd_header = b"\x01\x00"
        b[2].write(frame_request("U") + SIGNED_ID + odd_header + b"partial")
        h.flush()
        a[2].write(frame_request("U") + b"from-a")
        h.flush()
        self.assertEqual(bytes(a[0].received), SIGNED_ID + odd_header + b"partial")
        self.assertEqual(bytes(b[0].received), b"from-a")

    def test_raw_bytes_untouched_both_ways(self):
        h = Harness()
        a, b = h.tcp(), h.tcp()
        a[2].write(frame_request("U"))
        b[2].write(frame_request("U"))
        h.flush()
        blob = bytes(range(256)) * 40
        a[2].write(blob)
        b[2].write(b"\x00")
        h.flush()
        self.assertEqual(bytes(b[0].received), blob)
        self.assertEqual(bytes(a[0].received), b"\x00")


class FramedPipeTests(SynchronousTestCase):
    def test_tcp_to_ws_conversion(self):
        h = Harness()
        tcp, ws = h.tcp(), h.ws()
        tcp[2].write(frame_request("M") + SIGNED_ID)
        h.flush()
        ws[0].transport.sendBytesMessage(wrap("request_relay", uuid="M").SerializeToString())
        h.flush()
        self.assertEqual(ws[0].messages, [SIGNED_ID[1:]])
        payloads = [b"", b"x" * 70, b"y" * 20000]
        tcp[2].write(b"".join(encode_frame(p) for p in payloads))
        ws[0].transport.sendBytesMessage(b"hello")
        ws[0].transport.sendBytesMessage(b"w" * 100000)
        ws[0].transport.sendTextMessage("not forwarded")
        h.flush()
        self.assertEqual(ws[0].messages[1:], payloads)
        decoder = FrameDecoder(1 << 20)
        self.assertEqual(decoder.feed(bytes(tcp[0].received)), [b"hello", b"w" * 100000])

    def test_ws_to_ws(self):
        h = Harness()
        one, two = h.ws(), h.ws()
        for peer in (one, two):
            peer[0].transport.sendBytesMessage(request_relay("W"))
        h.flush()
        one[0].transport.sendBytesMessage(b"\x01\x02")
        two[0].transport.sendBytesMessage(b"back")
        h.flush()
        self.assertEqual(two[0].messages, [b"\x01\x02"])
        self.assertEqual(one[0].messages, [b"back"])


class FlowControlTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def paired(self, **options):
        h = Harness(**options)
        a, b = h.tcp(), h.tcp()
        a[2].write(frame_request("U"))
        b[2].write(frame_request("U"))
        h.flush()
        return h, a, b

    def test_backpressure_pauses_the_other_side(self):
        """Each side's reader is the producer of its partner's transport."""
        h, a, b = self.paired()
        a_transport, b_transport = a[3], b[3]
        self.assertIs(b_transport.producer, a[1].reader)
        self.assertTrue(b_transport.streamingProducer)
        b_transport.producer.pauseProducing()   # B's transport is full
        self.assertTrue(a_transport.paused)
        self.assertFalse(b_transport.paused)
        b_transport.producer.resumeProducing()
        self.assertFalse(a_transport.paused)

    def test_backpressure_for_websocket_partner(self):
        h = Harness()
        tcp, ws = h.tcp(), h.ws()
        tcp[2].write(frame_request("M"))
        ws[0].transport.sendBytesMessage(request_relay("M"))
        h.flush()
        ws_transport = ws[3]
        self.assertIs(ws_transport.producer, tcp[1].reader)
        ws_transport.producer.pauseProducing()
        self.assertTrue(tcp[3].paused)

    def test_throttle_pause_survives_consumer_resume(self):
        policy = BandwidthPolicy(single=8 * 1000, total=1024 * MBIT)
        h, a, b = self.paired(policy=policy)
        a[2].write(b"z" * 1000)      # 8000 bits at 8000 bit/s: about one second of debt
        h.flush()
        self.assertTrue(a[3].paused)
        b[3].producer.pauseProducing()
        b[3].producer.resumeProducing()
        self.assertTrue(a[3].paused)
        h.reactor.advance(1.0)
        self.assertFalse(a[3].paused)
        [event] = [e for e in self.events if e.get("event") == "throttled"]
        self.assertEqual(event["limit"], "0.00762939453125")

    def test_no_throttle_configuration(self):
        h, a, b = self.paired(policy=BandwidthPolicy(single=8, total=8, enabled=False))
        a[2].write(b"z" * 100000)
        h.flush()
        self.assertFalse(a[3].paused)
        self.assertEqual(len(b[0].received), 100000)

    def test_idle_timeout_ends_both(self):
        h, a, b = self.paired()
        h.reactor.pump([1] * 20)
        a[2].write(b"keepalive")
        h.flush()
        h.reactor.pump([1] * 25)
        self.assertFalse(a[3].disconnecting)
        h.reactor.pump([1] * 8)
        h.flush()
        self.assertIsNotNone(a[0].lost)
        self.assertIsNotNone(b[0].lost)
        [closed] = [e for e in self.events if e.get("event") == "closed"]
        self.assertEqual(closed["reason"], "idle")
        self.assertEqual(closed["first_bytes"] + closed["second_bytes"], 9)
        self.assertEqual(len(h.server.sessions), 0)

    def test_one_side_closing_ends_both_after_flush(self):
        h, a, b = self.paired()
        a[2].write(b"last words")
        a[2].loseConnection()
        h.flush()
        self.assertEqual(bytes(b[0].received), b"last words")
        self.assertIsNotNone(b[0].lost)
        self.assertEqual(len(h.server.sessions), 0)

    def test_oversized_frame_in_framed_mode_ends_session(self):
        h = Harness()
        tcp, ws = h.tcp(), h.ws()
        tcp[2].write(frame_request("M"))
        ws[0].transport.sendBytesMessage(request_relay("M"))
        h.flush()
        tcp[2].write(b"\x03\x00\x00\x80")   # announces 512 MiB
        h.flush()
        self.assertIsNotNone(tcp[0].lost)
        self.assertIsNotNone(ws[0].lost)
