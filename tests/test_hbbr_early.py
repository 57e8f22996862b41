"""Early bytes of lonely relay halves (issue 9 item 15): bounded per half and in all,
never dropped, delivered once the partner arrives."""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.bandwidth import BandwidthPolicy
from rustdesk_twisted.hbbr.early import READ_SIZE, EarlyBytes
from rustdesk_twisted.hbbr.protocols import TcpRelayFactory
from rustdesk_twisted.hbbr.server import RelayServer

from .test_hbbr_support import frame_request

EARLY = bytes(range(256)) * 1200  # 300 KB


class Kernel:
    """Bytes a client has sent that the server has not read yet, handed to the server
    protocol a read (64 KiB) at a time while its transport is not paused, as the
    reactor does; a connection the server closes is lost at the next pump."""

    def __init__(self, factory):
        self.factory = factory
        self.unread = {}
        self.port = 40000

    def connect(self, host, *pieces):
        self.port += 1
        peer = IPv4Address("TCP", host, self.port)
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, lenient=True)
        protocol.makeConnection(transport)
        self.unread[protocol] = [memoryview(piece) for piece in pieces]
        return protocol

    def pump(self):
        moved = True
        while moved:
            moved = False
            for protocol, pieces in list(self.unread.items()):
                if protocol.transport.disconnecting:
                    del self.unread[protocol]
                    protocol.connectionLost(None)
                elif pieces and protocol.transport.producerState == "producing":
                    protocol.dataReceived(self._read(pieces))
                    moved = True

    @staticmethod
    def _read(pieces):
        chunk = bytearray()
        while pieces and len(chunk) < READ_SIZE:
            take = READ_SIZE - len(chunk)
            chunk += pieces[0][:take]
            pieces[0] = pieces[0][take:]
            if not pieces[0]:
                del pieces[0]
        return bytes(chunk)


class Half:
    def __init__(self, host="192.0.2.1"):
        self.peer = (host, 1)
        self.early_held = 0
        self.reading = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


class EarlyBytesTests(SynchronousTestCase):
    def test_half_at_its_cap_stops_reading_until_it_leaves(self):
        early = EarlyBytes(MemoryReactorClock(), per_half=100, total=1000)
        half = Half()
        early.join(half, 0)
        early.add(half, 99)
        self.assertTrue(half.reading)
        early.add(half, 1)
        self.assertFalse(half.reading)
        early.leave(half)
        self.assertEqual((early.held, half.early_held), (0, 0))
        self.assertEqual(early.limit_log.hits, {"early-bytes": 1})

    def test_total_stops_every_lonely_half_and_room_resumes_them_in_order(self):
        early = EarlyBytes(MemoryReactorClock(), per_half=10 * READ_SIZE,
                           total=4 * READ_SIZE)
        halves = [Half(f"192.0.2.{n}") for n in range(6)]
        for half in halves[:5]:
            self.assertTrue(early.join(half, 0))
        for half in halves[:4]:
            early.add(half, READ_SIZE)
        self.assertEqual([h.reading for h in halves[:5]], [False] * 5)
        self.assertTrue(early.join(halves[5], 0))
        self.assertFalse(halves[5].reading, "a newcomer does not read while full")
        self.assertFalse(early.join(Half(), 1), "a newcomer with bytes is closed while full")
        early.leave(halves[0])
        early.leave(halves[1])
        self.assertEqual([h.reading for h in halves[2:]], [True, True, False, False])
        self.assertEqual(early.limit_log.hits, {"early-bytes-total": 2})


class LonelyHalvesTests(SynchronousTestCase):
    """2000 halves each sending 300 KB after RequestRelay, through the real TCP protocol."""

    def setUp(self):
        self.relay = RelayServer(MemoryReactorClock(), policy=BandwidthPolicy(enabled=False))
        self.kernel = Kernel(TcpRelayFactory(self.relay))
        self.halves = [self.kernel.connect(f"10.{n // 250}.{n % 250}.1",
                                           frame_request(f"uuid-{n}"), EARLY)
                       for n in range(2000)]
        self.kernel.pump()

    def test_held_bytes_bounded_per_half_and_in_all(self):
        early = self.relay.early
        self.assertLessEqual(early.held, early.total + READ_SIZE)
        self.assertGreaterEqual(early.held, early.total)
        self.assertLessEqual(max(h.early_held for h in self.halves), early.per_half + READ_SIZE)
        self.assertEqual(early.held, sum(len(h._early or b"") for h in self.halves))
        waiting = [h for h in self.halves if not h.transport.disconnecting]
        self.assertEqual(len(self.relay.pending), len(waiting))
        self.assertEqual(early.limit_log.hits["early-bytes-total"], 1 + 2000 - len(waiting),
                         "reached once; only newcomers bringing bytes while full are closed")
        self.assertEqual({h.transport.producerState for h in waiting}, {"paused"})

    def test_pair_still_works_and_gets_every_byte(self):
        first = self.halves[0]
        self.assertEqual(first.transport.producerState, "paused")
        self.assertTrue(self.relay.early.full)
        reply = b"partner's own early bytes"
        partner = self.kernel.connect("198.51.100.1", frame_request("uuid-0"), reply)
        self.kernel.pump()
        self.assertIsNotNone(first.session)
        self.assertFalse(partner.transport.disconnecting,
                         "a newcomer completing a pair is no lonely half, full or not")
        self.assertEqual(partner.transport.value(), EARLY)
        self.assertEqual(first.transport.value(), reply)
        self.assertEqual(first.early_held, 0)
        self.assertLessEqual(self.relay.early.held, self.relay.early.total + READ_SIZE)

    def test_halves_that_leave_make_room_for_the_waiting(self):
        early = self.relay.early
        before = early.held
        for half in self.halves[:100]:
            half.transport.loseConnection()
        self.kernel.pump()
        self.assertLess(early.held, before + READ_SIZE)
        self.assertGreater(sum(h.early_held > 0 for h in self.halves[100:]), 0)

    def test_a_refused_newcomer_is_out_of_pairing_before_its_connection_goes(self):
        refused = self.kernel.connect("198.51.100.2", frame_request("late") + b"x" * 1000)
        refused.dataReceived(self.kernel._read(self.kernel.unread.pop(refused)))
        self.assertTrue(refused.transport.disconnecting)
        partner = self.kernel.connect("198.51.100.3", frame_request("late"))
        self.kernel.pump()
        self.assertIsNone(refused.session, "paired with a connection being closed")
        self.assertIsNone(partner.session)
        self.assertIn("late", self.relay.pending._waiting)
