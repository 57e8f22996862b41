"""hbbs text console: byte-exact replies (PROTOCOL.md section 7.8, G17, G25) and its connection."""

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbs.console import HbbsConsole, console_factory, rust_debug_str
from rustdesk_twisted.hbbs.registry import PeerRegistry, Result
from rustdesk_twisted.hbbs.relays import RelayHealthCheck, RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.store import StoredPeer
from rustdesk_twisted.hbbs.streams import ChannelSession
from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.keys import ServerKey
from rustdesk_twisted.wire.rendezvous_pb2 import PunchHoleRequest, RegisterPk

T0 = 1784890616.0  # 2026-07-24T10:56:56Z
UUID = b"machine-uuid-1"
UUID_B64 = "bWFjaGluZS11dWlkLTE="
PK = bytes(range(32))
PK_FINGERPRINT = "630d:cd29:66c4:3366"
HELP = (b"relay-servers(rs) <separated by ,>\n"
        b"reload-geo(rg)\n"
        b"ip-blocker(ib) [<ip>|<number>] [-]\n"
        b"ip-changes(ic) [<id>|<number>] [-]\n"
        b"punch-requests(pr) [<number>] [-]\n"
        b"always-use-relay(aur)\n"
        b"test-geo(tg) <ip1> <ip2>\n")
OURS = (b"peer <id>\n"
        b"peer-list [<start>] [<count>]\n"
        b"peer-release <id>\n"
        b"peer-rename <old id> <new id>\n"
        b"backup <file name>\n"
        b"rendezvous-servers [<serial> <separated by ,>]\n")


class ConsoleTestCase(SynchronousTestCase):
    """A real RendezvousServer on a Clock, fed through its own message paths."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(T0)
        self.registry = PeerRegistry()
        self.relays = RelayRotation(["r1.example.com:21117", "r2.example.com"])
        self.server = RendezvousServer(self.registry, ServerKey("", None, "test"), self.relays,
                                       self.clock)
        self.datagrams = []
        self.server.send_datagram = lambda payload, address: self.datagrams.append(payload)
        self.console = HbbsConsole(self.server)

    def run_command(self, text):
        return self.console.execute(text, self.clock.seconds())

    def register(self, peer_id, ip, uuid=UUID, pk=PK):
        """A RegisterPk datagram from ``ip``; returns the result the server sent back."""
        request = messages.wrap("register_pk", RegisterPk(id=peer_id, uuid=uuid, pk=pk))
        self.server.datagram_received(request.SerializeToString(), (ip, 40000))
        return messages.parse(self.datagrams[-1]).register_pk_response.result

    def channel(self, ip):
        return ChannelSession(self.server, self.clock, (ip, 50000), False, lambda payload: None,
                              lambda: None, lambda: None)

    def punch(self, from_ip, target):
        request = messages.wrap("punch_hole_request", PunchHoleRequest(id=target))
        self.server.stream_message(self.channel(from_ip), request)


class HelpAndUnknownTests(ConsoleTestCase):
    def test_help_official_lines_then_ours(self):
        self.assertEqual(self.run_command("h").encode(), HELP + OURS)

    def test_reload_geo_is_empty(self):
        self.assertEqual(self.run_command("rg"), "")
        self.assertEqual(self.run_command("reload-geo"), "")

    def test_unknown_and_empty(self):
        for text in ("", "   ", "x", "H", "help", "rs,", "\x1crs", "rs\x1c"):
            self.assertEqual(self.run_command(text), "", text)

    def test_input_is_trimmed_as_rust_trims(self):
        self.assertEqual(self.run_command(" \t\u3000rs \r\n"),
                         "r1.example.com:21117\nr2.example.com\n")


class RelayServersTests(ConsoleTestCase):
    def test_list_active(self):
        self.assertEqual(self.run_command("rs"), "r1.example.com:21117\nr2.example.com\n")

    def test_set_list(self):
        self.assertEqual(self.run_command("relay-servers a.example:1,b.example:2 c:3"), "")
        self.assertEqual(self.relays.configured, ["a.example:1", "b.example:2"])
        self.assertEqual(self.run_command("rs"), "a.example:1\nb.example:2\n")

    def test_lists_active_not_configured(self):
        checker = RelayHealthCheck(self.relays, lambda entry: succeed(entry == "r2.example.com"),
                                   self.clock)
        checker.check()
        self.assertEqual(self.run_command("rs"), "r2.example.com\n")

    def test_double_space_sets_empty_list(self):
        self.assertEqual(self.run_command("rs  a:1"), "")
        self.assertEqual(self.run_command("rs"), "")
        self.assertEqual(self.run_command("tg 1.2.3.4"), '""')


class IpBlockerTests(ConsoleTestCase):
    def setUp(self):
        super().setUp()
        self.assertEqual(self.register("123456789", "1.1.1.1"), Result.OK)
        self.clock.advance(5)
        self.assertEqual(self.register("123456789", "1.1.1.1"), Result.OK)
        self.assertEqual(self.register("987654321", "::ffff:2.2.2.2"), Result.OK)
        self.clock.advance(7)

    def test_list(self):
        self.assertEqual(self.run_command("ib"), "2\n1.1.1.1: 1/7s 1/7s\n2.2.2.2: 0/7s 0/7s\n")
        self.assertEqual(self.run_command("ip-blocker 0"), self.run_command("ib"))

    def test_list_from_index(self):
        self.assertEqual(self.run_command("ib 1"), "2\n2.2.2.2: 0/7s 0/7s\n")
        self.assertEqual(self.run_command("ib 2"), "2\n")
        self.assertEqual(self.run_command("ib 2147483647"), "2\n")

    def test_pages_of_ten(self):
        for i in range(10):
            self.register(f"10000000{i:02d}", f"10.0.0.{i}")
        listing = self.run_command("ib").splitlines()
        self.assertEqual(listing[0], "12")
        self.assertEqual(len(listing), 11)
        self.assertEqual(self.run_command("ib 10"),
                         "12\n10.0.0.8: 0/0s 0/0s\n10.0.0.9: 0/0s 0/0s\n")

    def test_one_ip(self):
        self.assertEqual(self.run_command("ib 1.1.1.1"), "2\n1/7s 1/7s\n")
        self.assertEqual(self.run_command("ib 9.9.9.9"), "2\n")

    def test_negative_number_is_an_ip(self):
        self.assertEqual(self.run_command("ib -1"), "2\n")
        self.assertEqual(self.run_command("ib  1.1.1.1"), "2\n")

    def test_delete(self):
        self.assertEqual(self.run_command("ib 1.1.1.1 -"), "2\n1/7s 1/7s\n")
        self.assertEqual(self.run_command("ib"), "1\n2.2.2.2: 0/7s 0/7s\n")
        self.assertEqual(self.run_command("ib 9.9.9.9 -"), "1\n")
        self.assertEqual(self.run_command("ib 2.2.2.2 x"), "1\n0/7s 0/7s\n")

    def test_counts_registrations_and_ids(self):
        self.clock.advance(1)
        self.register("123456789", "1.1.1.1")
        self.register("223456789", "1.1.1.1")
        self.assertEqual(self.run_command("ib 1.1.1.1"), "2\n3/0s 2/0s\n")

    def test_pruned_when_both_timers_are_stale(self):
        self.clock.advance(86400 - 7)
        self.assertEqual(self.run_command("ib"),
                         "2\n1.1.1.1: 1/86400s 1/86400s\n2.2.2.2: 0/86400s 0/86400s\n")
        self.clock.advance(1)
        self.assertEqual(self.run_command("ib"), "0\n")


class IpChangesTests(ConsoleTestCase):
    def setUp(self):
        super().setUp()
        for peer_id, ip in (("office-pc", "1.1.1.1"), ("123456789", "7.7.7.7"),
                            ("555555555", "4.4.4.4")):
            self.assertEqual(self.register(peer_id, ip), Result.OK)
        for peer_id, ip in (("office-pc", "2.2.2.2"), ("123456789", "8.8.8.8"),
                            ("555555555", "5.5.5.5"), ("office-pc", "3.3.3.3"),
                            ("123456789", "7.7.7.7"), ("office-pc", "2.2.2.2")):
            self.clock.advance(10)
            self.assertEqual(self.register(peer_id, ip), Result.OK)
        self.clock.advance(5)

    def test_list(self):
        self.assertEqual(self.run_command("ic"),
                         '2\noffice-pc: 55s {"2.2.2.2": 2, "3.3.3.3": 1}\n'
                         '123456789: 45s {"8.8.8.8": 1, "7.7.7.7": 1}\n')
        self.assertEqual(self.run_command("ip-changes 1"),
                         '2\n123456789: 45s {"8.8.8.8": 1, "7.7.7.7": 1}\n')
        self.assertEqual(self.run_command("ic 2"), "2\n")

    def test_one_id(self):
        self.assertEqual(self.run_command("ic office-pc"),
                         '2\n55s {"2.2.2.2": 2, "3.3.3.3": 1}\n')
        self.assertEqual(self.run_command("ic 555555555"), "2\n")

    def test_numeric_id_above_ten_million_prints_its_line_only(self):
        self.assertEqual(self.run_command("ic 123456789"), '2\n45s {"8.8.8.8": 1, "7.7.7.7": 1}\n')

    def test_delete(self):
        self.assertEqual(self.run_command("ic office-pc -"),
                         '2\n55s {"2.2.2.2": 2, "3.3.3.3": 1}\n')
        self.assertEqual(self.run_command("ic"), '1\n123456789: 45s {"8.8.8.8": 1, "7.7.7.7": 1}\n')

    def test_pruned_after_360_seconds(self):
        self.clock.advance(359 - 55)
        self.assertEqual(self.run_command("ic"),
                         '2\noffice-pc: 359s {"2.2.2.2": 2, "3.3.3.3": 1}\n'
                         '123456789: 349s {"8.8.8.8": 1, "7.7.7.7": 1}\n')
        self.clock.advance(1)
        self.assertEqual(self.run_command("ic"),
                         '1\n123456789: 350s {"8.8.8.8": 1, "7.7.7.7": 1}\n')
        self.clock.advance(10)
        self.assertEqual(self.run_command("ic"), "0\n")


class PunchRequestTests(ConsoleTestCase):
    def setUp(self):
        super().setUp()
        self.clock.advance(0.75)
        self.register("123456789", "5.6.7.8")
        self.punch("1.2.3.4", "123456789")
        self.clock.advance(1)
        self.punch("1.2.3.5", "123456789")
        self.punch("1.2.3.4", "123456789")
        self.clock.advance(1)
        self.punch("::ffff:1.2.3.6", "123456789")

    def test_list(self):
        self.assertEqual(self.run_command("pr"),
                         "2026-07-24T10:56:56Z 1.2.3.4 -> 123456789@5.6.7.8\n"
                         "2026-07-24T10:56:57Z 1.2.3.5 -> 123456789@5.6.7.8\n"
                         "2026-07-24T10:56:58Z 1.2.3.6 -> 123456789@5.6.7.8\n")

    def test_start_and_page_size(self):
        self.assertEqual(self.run_command("pr 1 1"),
                         "2026-07-24T10:56:57Z 1.2.3.5 -> 123456789@5.6.7.8\n")
        self.assertEqual(self.run_command("punch-requests 2"),
                         "2026-07-24T10:56:58Z 1.2.3.6 -> 123456789@5.6.7.8\n")
        self.assertEqual(self.run_command("pr x 1"),
                         "2026-07-24T10:56:56Z 1.2.3.4 -> 123456789@5.6.7.8\n")
        self.assertEqual(self.run_command("pr 0 0"), self.run_command("pr"))
        self.assertEqual(self.run_command("pr -0"), self.run_command("pr"))
        self.assertEqual(self.run_command("pr 18446744073709551616"), self.run_command("pr"))
        self.assertEqual(self.run_command("pr 18446744073709551615"), "")

    def test_pages_of_ten(self):
        for i in range(10):
            self.punch(f"10.0.0.{i}", "123456789")
        self.assertEqual(len(self.run_command("pr").splitlines()), 10)
        self.assertEqual(self.run_command("pr 12"),
                         "2026-07-24T10:56:58Z 10.0.0.9 -> 123456789@5.6.7.8\n")

    def test_clear(self):
        self.assertEqual(self.run_command("pr -"), "")
        self.assertEqual(self.run_command("pr"), "")
        self.punch("1.2.3.4", "123456789")
        self.assertEqual(self.run_command("pr"),
                         "2026-07-24T10:56:58Z 1.2.3.4 -> 123456789@5.6.7.8\n")


class AlwaysUseRelayTests(ConsoleTestCase):
    def test_show_and_set(self):
        self.assertEqual(self.run_command("aur"), "ALWAYS_USE_RELAY: false\n")
        self.assertEqual(self.run_command("aur y"), "")
        self.assertTrue(self.server.always_use_relay)
        self.assertEqual(self.run_command("always-use-relay"), "ALWAYS_USE_RELAY: true\n")
        self.assertEqual(self.run_command("aur N"), "")
        self.assertEqual(self.run_command("aur"), "ALWAYS_USE_RELAY: false\n")

    def test_anything_but_y_clears(self):
        for text in ("aur yes", "aur x", "aur  Y"):
            self.server.always_use_relay = True
            self.assertEqual(self.run_command(text), "")
            self.assertFalse(self.server.always_use_relay, text)

    def test_relay_list_untouched(self):
        """G17 fixed: the official server would reparse "Y" as the relay list."""
        self.run_command("tg 1.2.3.4")
        self.run_command("aur Y")
        self.assertEqual(self.relays.configured, ["r1.example.com:21117", "r2.example.com"])
        self.assertEqual(self.run_command("rs"), "r1.example.com:21117\nr2.example.com\n")
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"r2.example.com"')


class TestGeoTests(ConsoleTestCase):
    def test_advances_the_rotation(self):
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"r1.example.com:21117"')
        self.assertEqual(self.run_command("tg 1.2.3.4 ::1"), '"r2.example.com"')
        self.assertEqual(self.run_command("test-geo 2001:db8::1 ::ffff:1.2.3.4"),
                         '"r1.example.com:21117"')

    def test_bad_addresses_leave_the_rotation_alone(self):
        for text in ("tg", "tg bogus", "tg 1.2.3.4 bogus", "tg 01.2.3.4", "tg fe80::1%eth0",
                     "tg  1.2.3.4", "tg 1.2.3.4  5.6.7.8"):
            self.assertEqual(self.run_command(text), "", text)
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"r1.example.com:21117"')

    def test_single_and_empty_lists(self):
        self.run_command("rs only:21117")
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"only:21117"')
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"only:21117"')
        self.run_command("rs ,")
        self.assertEqual(self.run_command("tg 1.2.3.4"), '""')

    def test_rust_debug_quoting(self):
        self.run_command('rs a"b\\c\td\u200be\u00e9')
        self.assertEqual(self.run_command("tg 1.2.3.4"), '"a\\"b\\\\c\\td\\u{200b}e\u00e9"')

    def test_debug_str_escapes(self):
        self.assertEqual(rust_debug_str("\0\r\n'x y\u0301\u00a0"),
                         '"\\0\\r\\n\'x y\\u{301}\\u{a0}"')


class PeerTests(ConsoleTestCase):
    def test_unknown(self):
        self.assertEqual(self.run_command("peer"), "")
        self.assertEqual(self.run_command("peer nobody1"), "nobody1: not registered\n")

    def test_udp_registration(self):
        self.register("123456789", "::ffff:1.2.3.4")
        self.clock.advance(4)
        expected = ("id: 123456789\nonline: {}\nlast seen: {}s ago\nip: 1.2.3.4\n"
                    f"uuid: {UUID_B64}\nkey: {PK_FINGERPRINT}\nchannel: udp\n")
        self.assertEqual(self.run_command("peer 123456789"), expected.format("true", 4))
        self.clock.advance(26)
        self.assertEqual(self.run_command("peer 123456789"), expected.format("false", 30))

    def test_tcp_registration(self):
        request = messages.wrap("register_pk", RegisterPk(id="123456789", uuid=UUID, pk=PK))
        self.assertTrue(self.server.stream_message(self.channel("5.6.7.8"), request))
        reply = self.run_command("peer 123456789")
        self.assertIn("online: true\nlast seen: 0s ago\nip: 5.6.7.8\n", reply)
        self.assertTrue(reply.endswith("channel: tcp\n"))

    def test_loaded_but_not_seen(self):
        self.registry.load([StoredPeer(b"g" * 16, "stored-pc", UUID, PK, "9.9.9.9", None)])
        self.assertEqual(self.run_command("peer stored-pc"),
                         "id: stored-pc\nonline: false\nlast seen: never\nip: 9.9.9.9\n"
                         f"uuid: {UUID_B64}\nkey: {PK_FINGERPRINT}\nchannel: none\n")


class ConsoleProtocolTests(ConsoleTestCase):
    def connect(self):
        protocol = console_factory(self.console, self.clock).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_reply_then_close(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"h\n")
        self.assertEqual(transport.value(), HELP + OURS)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_read_only(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"aur")
        protocol.dataReceived(b" Y")
        self.assertEqual(transport.value(), b"ALWAYS_USE_RELAY: false\n")
        self.assertFalse(self.server.always_use_relay)

    def test_empty_reply_still_closes(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"nonsense")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_utf8_reply(self):
        protocol, transport = self.connect()
        protocol.dataReceived("peer pc-\u00e4\u00f6\u00fc".encode())
        self.assertEqual(transport.value(), "pc-\u00e4\u00f6\u00fc: not registered\n".encode())

    def test_invalid_utf8_gets_no_reply(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"aur Y\xff")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.server.always_use_relay)

    def test_timeout_after_one_second(self):
        protocol, transport = self.connect()
        self.clock.advance(0.999)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"h")
        self.assertEqual(transport.value(), b"")

    def test_only_first_1024_bytes_count(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"aur" + b" " * 1021 + b"Y")
        self.assertEqual(transport.value(), b"ALWAYS_USE_RELAY: false\n")
        self.assertEqual(self.run_command("aur" + " " * 1021 + "Y"), "")

    def test_character_cut_at_1024_bytes_is_invalid(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"aur" + b" " * 1020 + "\u00e9".encode())
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_lost_connection_cancels_timeout(self):
        protocol, transport = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
