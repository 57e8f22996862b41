"""The console: byte-exact replies (G25), list edits, usage, and the one-read protocol."""

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.bandwidth import MBIT
from rustdesk_twisted.hbbr.console import HELP, console_factory, run_command
from rustdesk_twisted.hbbr.server import RelayServer

from .test_hbbr_support import Harness, frame_request


class CommandTests(SynchronousTestCase):
    def setUp(self):
        self.server = RelayServer(MemoryReactorClock())

    def command(self, text):
        return run_command(self.server, text)

    def test_help(self):
        self.assertEqual(self.command("h"), HELP)
        self.assertEqual(HELP.count("\n"), 12)
        self.assertTrue(HELP.endswith("usage(u)\n"))

    def test_defaults_print_like_rust(self):
        self.assertEqual([self.command(c) for c in ("dt", "t", "ls", "tb", "sb")],
                         ["0.66\n", "1800s\n", "32Mb/s\n", "1024Mb/s\n", "128Mb/s\n"])

    def test_setters(self):
        for command in ("dt 0.5", "t 60", "ls 2.5", "sb 64", "tb 512", "ls -1", "t x"):
            self.assertEqual(self.command(command), "")
        self.assertEqual([self.command(c) for c in ("dt", "t", "ls", "sb", "tb")],
                         ["0.5\n", "60s\n", "2.5Mb/s\n", "64Mb/s\n", "512Mb/s\n"])
        self.assertEqual(self.server.total_limiter.rate, 512 * MBIT)

    def test_lists(self):
        self.assertEqual(self.command("ba 1.1.1.1|2.2.2.2"), "")
        self.assertEqual(self.command("b"), "1.1.1.1\n2.2.2.2\n")
        self.assertEqual(self.command("b 1.1.1.1"), "true\n")
        self.assertEqual(self.command("br 1.1.1.1"), "")
        self.assertEqual(self.command("b 1.1.1.1"), "false\n")
        self.assertEqual(self.command("Ba 3.3.3.3"), "")
        self.assertEqual(self.command("B"), "3.3.3.3\n")
        self.assertEqual(self.command("Br all"), "")
        self.assertEqual(self.command("B"), "")
        self.assertEqual(self.command("nonsense"), "")

    def test_usage_lists_active_sessions(self):
        h = Harness()
        a, b = h.tcp(host="192.0.2.1"), h.tcp(host="192.0.2.2")
        a[2].write(frame_request("U"))
        b[2].write(frame_request("U"))
        h.flush()
        a[2].write(b"x" * 200000)
        h.flush()
        self.assertEqual(run_command(h.server, "u"), "")
        h.reactor.pump([1, 1])
        line = run_command(h.server, "usage")
        self.assertEqual(line, "192.0.2.2:40002: 2s 0.19MB 1600kb/s 800kb/s 0kb/s\n")


class ConsoleProtocolTests(SynchronousTestCase):
    def connect(self, peer):
        reactor = MemoryReactorClock()
        protocol = console_factory(RelayServer(reactor)).buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return reactor, protocol, transport

    def test_one_read_one_reply(self):
        _, protocol, transport = self.connect(UNIXAddress(None))
        protocol.dataReceived(b"ls\n")
        self.assertEqual(transport.value(), b"32Mb/s\n")
        self.assertTrue(transport.disconnecting)

    def test_invalid_utf8_gets_no_reply(self):
        _, protocol, transport = self.connect(UNIXAddress(None))
        protocol.dataReceived(b"\xff\xfe")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_silent_client_dropped_after_one_second(self):
        reactor, _, transport = self.connect(UNIXAddress(None))
        reactor.advance(0.999)
        self.assertFalse(transport.disconnecting)
        reactor.advance(0.001)
        self.assertTrue(transport.disconnecting)

    def test_non_loopback_tcp_peer_refused(self):
        _, protocol, transport = self.connect(IPv4Address("TCP", "203.0.113.1", 5))
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"h")
        self.assertEqual(transport.value(), b"")
