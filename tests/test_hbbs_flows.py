"""hbbs end to end, in memory: the reference client behind fake NATs (PROTOCOL.md section 4).

Every scenario runs the real RendezvousServer, RendezvousUDP,
RendezvousTCP/NatTestTCP and the WebSocket site on a :class:`FakeNetwork`
(``tests/fakenet.py``), driven by one ``MemoryReactorClock``; both client
roles are ``rustdesk_twisted.client``.  The server is
dual-stack by default, as hbbs bound to ``::`` is: it sees IPv4 peers as
``::ffff:a.b.c.d``; :class:`PunchIPv4OnlyTests` re-runs the punch flows with a
plain IPv4 server.
"""

import functools

from hypothesis import given, settings, strategies as st
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted import logs
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import LanRules, RendezvousServer
from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.hbbs.streams import NatTestTCP, RendezvousTCPFactory
from rustdesk_twisted.hbbs.udp import RendezvousUDP
from rustdesk_twisted.hbbs.websocket import RendezvousWebSocketFactory
from rustdesk_twisted.wire import addr_mangle, keys, messages, ownership, secure
from rustdesk_twisted.wire import rendezvous_pb2 as pb
from rustdesk_twisted.wire.framing import encode_frame
from rustdesk_twisted.wire.websocket import WebSocketAdmission, websocket_site

from rustdesk_twisted.client import (
    CLIENT_VERSION,
    PUBLIC_SERVER_KEY,
    ControlledPeer,
    ControllingPeer,
    DatagramCallback,
    FramedRendezvousClient,
    ServerAddress,
    WebSocketRendezvousClient,
)

from .fakenet import ADDRESS_RESTRICTED, FULL_CONE, PORT_RESTRICTED, SYMMETRIC, FakeNetwork

START = 1_700_000_000.0
SERVER_IP = "198.51.100.1"
SIGNING = SigningKey(bytes(range(32)))
PUBLIC = bytes(SIGNING.verify_key)
KEY = keys.b64(PUBLIC)  # A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=
RELAY = "relay.example.com:21117"
B_ID = "123456789"
A_PUBLIC_IP = "203.0.113.10"
B_PUBLIC_IP = "203.0.113.20"

Result = pb.RegisterPkResponse
Failure = pb.PunchHoleResponse

# Appendix A.3
EPK = bytes.fromhex("ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59")
CPK = bytes.fromhex("5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22")
K = b"\x04" * 32
SB = bytes.fromhex("eb0695edf1b0a61ffc663c80123c2c44e0b2f0dd3e5855f492b88bafcd4948b6"
                   "ab0a8f1097831986f4657d2fea6fa621")
NOTICES = ("punch_hole", "fetch_local_addr", "request_relay")
HELLO_1 = bytes.fromhex("b4f3fb266c1c9299b367eb81cc70eebb8665881b39")


def frame(message):
    return encode_frame(message.SerializeToString())


class Hbbs:
    """tap.py's hbbs listeners on a fake host: UDP+TCP 21116, TCP 21115, WebSocket 21118."""

    def __init__(self, network, relays=(RELAY,), licence=KEY, signing=SIGNING, dual_stack=True,
                 offer_secure=True, **server_options):
        clock = network.clock
        self.registry = PeerRegistry()
        self.server_key = keys.ServerKey(licence, signing, "test")
        self.rotation = RelayRotation(relays)
        self.server = RendezvousServer(self.registry, self.server_key, self.rotation, clock,
                                       **server_options)
        self.host = network.add_host(SERVER_IP, dual_stack=dual_stack)
        self.udp = self.host.bind_udp(RendezvousUDP(self.server), 21116)
        limits = ConnectionLimits(clock)
        self.tcp = RendezvousTCPFactory(self.server, clock, offer_secure=offer_secure,
                                        limits=limits)
        self.host.listen_tcp(21116, self.tcp)
        self.host.listen_tcp(21115, RendezvousTCPFactory(
            self.server, clock, offer_secure=False, limits=limits, protocol_class=NatTestTCP))
        self.websocket = RendezvousWebSocketFactory(self.server, clock)
        self.host.listen_tcp(21118, websocket_site(
            self.websocket, WebSocketAdmission(clock, limits), 64 * 1024))
        self.address = ServerAddress(SERVER_IP)
        self.clock = clock

    @property
    def sent_datagrams(self):
        """Everything the UDP socket wrote, parsed, with the destination."""
        return [(messages.parse(data), address) for data, address in self.udp.written]

    def online(self, peer_id):
        return self.registry.is_online(peer_id, self.clock.seconds())


class Scenario(SynchronousTestCase):
    """A clock, a network, captured log events and helpers to build the cast."""

    DUAL_STACK = True

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.clock.advance(START)
        self.network = FakeNetwork(self.clock)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        logs.set_level("debug")  # the scenarios read routine events too
        self.addCleanup(logs.set_level, "info")

    def hbbs(self, **options):
        options.setdefault("dual_stack", self.DUAL_STACK)
        self.server = Hbbs(self.network, **options)
        return self.server

    def seen(self, ip):
        """How the server writes an IPv4 host."""
        return "::ffff:" + ip if self.DUAL_STACK else ip

    def host_behind(self, kind, public_ip, private_ip="10.0.0.2"):
        nat = self.network.nats.get(public_ip) or self.network.add_nat(kind, public_ip)
        return self.network.add_host(private_ip, nat)

    def controlled(self, kind=FULL_CONE, public_ip=B_PUBLIC_IP, private_ip="10.0.0.2",
                   peer_id=B_ID, detect_nat=True, **options):
        """B, started and registered; its NAT type comes from its own NAT test."""
        host = self.host_behind(kind, public_ip, private_ip)
        peer = ControlledPeer(host, self.server.address, peer_id, **options)
        if detect_nat and peer.transport != "ws":
            peer.nat_type = self.successResultOf(self.flushed(peer.test_nat()))
        peer.start()
        self.network.flush()
        return peer

    def controlling(self, kind=FULL_CONE, public_ip=A_PUBLIC_IP, private_ip="10.0.0.3",
                    detect_nat=True, **options):
        host = self.host_behind(kind, public_ip, private_ip)
        options.setdefault("key", KEY)
        peer = ControllingPeer(host, self.server.address, **options)
        if detect_nat and peer.transport != "ws":
            peer.nat_type = self.successResultOf(self.flushed(peer.test_nat()))
        return peer

    def flushed(self, d):
        self.network.flush()
        return d

    def connect(self, a, peer_id=B_ID, **options):
        return self.successResultOf(self.flushed(a.connect(peer_id, **options)))

    def raw_client(self, kind=FULL_CONE, public_ip="203.0.113.77", private_ip="10.9.0.2",
                   port=21116, **options):
        """A bare framed TCP client (no peer logic) and its connection."""
        host = self.host_behind(kind, public_ip, private_ip)
        client = FramedRendezvousClient(**options)
        client.connection = host.connect_tcp((SERVER_IP, port), client)
        return client

    def udp_socket(self, ip="192.0.2.50", port=None):
        """A socket on a public host (no NAT), to write raw datagrams to the server."""
        host = self.network.public_hosts.get(ip) or self.network.add_host(ip)
        received = []
        transport = host.bind_udp(DatagramCallback(
            lambda data, source: received.append(data)), port)
        return transport, received

    def log_events(self, name):
        return [e for e in self.logged if e.get("event") == name]

    def exchange(self, client, *requests):
        """Send ``requests`` on a raw client; the messages it got, parsed, after each."""
        seen = []
        for request in requests:
            start = len(client.received)
            client.send(messages.wrap("register_pk", request))
            self.network.flush()
            seen.append([messages.parse(p) for p in client.received[start:]])
        return seen

    def official_change_id(self, client, new_id, uuid, pk=b""):
        """What an official client does: one request, then the first message that is not a
        KeyExchange among the next two (get_next_nonkeyexchange_msg); None if there is none."""
        [replies] = self.exchange(client, pb.RegisterPk(old_id=B_ID, id=new_id, uuid=uuid,
                                                        pk=pk))
        for message in replies[:2]:
            if message.WhichOneof("union") != "key_exchange":
                return message
        return None

    def lose_notices(self, b, count=None):
        """Lose the server's UDP notifications to B (all, or the first ``count``)."""
        deliver = b.udp.protocol.callback
        lost = []

        def lossy(data, source):
            message = messages.parse(data)
            kind = message.WhichOneof("union") if message is not None else None
            if kind in NOTICES and (count is None or len(lost) < count):
                lost.append(kind)
                return
            deliver(data, source)

        b.udp.protocol.callback = lossy
        return lost


class RegistrationTests(Scenario):
    """Section 4.1: the UDP registration loop against the registration rules."""

    def setUp(self):
        super().setUp()
        self.hbbs()

    def test_request_pk_then_register_pk_then_steady(self):
        """A confirmed client the server does not know: request_pk, RegisterPk OK, steady."""
        b = self.controlled(key_confirmed=True, detect_nat=False)
        replies = [data for data, _ in self.server.udp.written]
        self.assertEqual(replies, [bytes.fromhex("3a 02 10 01"), bytes.fromhex("82 01 00")])
        self.assertTrue(b.key_confirmed)
        peer = self.server.registry.get(B_ID)
        public = b.host.nat.outbound("udp", (b.host.ip, b.udp.port), (SERVER_IP, 21116))
        self.assertEqual(peer.address, (self.seen(public[0]), public[1]))
        self.assertEqual(peer.pk, b.pk)
        self.assertEqual(peer.uuid, b.uuid)

        self.network.advance(14)
        self.assertEqual(len(self.server.udp.written), 2)
        self.network.advance(1)
        self.assertEqual(self.server.udp.written[-1][0], bytes.fromhex("3a 00"))
        self.assertEqual(len(self.server.udp.written), 3)

    def test_fresh_install_sends_register_pk_first(self):
        b = self.controlled(detect_nat=False)
        self.assertEqual([data for data, _ in self.server.udp.written],
                         [bytes.fromhex("82 01 00")])
        self.assertEqual(b.results, [Result.OK])
        self.assertTrue(self.server.online(B_ID))
        [added] = self.log_events("peer_added")
        self.assertEqual((added["peer_id"], added["ip"]), (B_ID, B_PUBLIC_IP))

    def test_online_window_is_30_seconds(self):
        b = self.controlled(detect_nat=False)
        b.stop()
        self.network.advance(29.5, step=0.5)
        self.assertTrue(self.server.online(B_ID))
        self.network.advance(0.5)
        self.assertFalse(self.server.online(B_ID))

    def test_reregistration_every_15_seconds_keeps_online(self):
        b = self.controlled(detect_nat=False)
        self.network.advance(120)
        self.assertTrue(self.server.online(B_ID))
        kinds = [m.WhichOneof("union") for m, _ in self.server.sent_datagrams]
        # One RegisterPk at t=0, then a RegisterPeer every 15 s.
        self.assertEqual(kinds, ["register_pk_response"] + ["register_peer_response"] * 8)
        self.assertEqual(b.results, [Result.OK])

    def test_lost_replies_are_retried_every_3_seconds(self):
        """With nothing listening, B resends every 3 s and rebinds after 4 timeouts."""
        self.server.udp.stopListening()
        b = self.controlled(detect_nat=False)
        first_port = b.udp.port
        self.network.advance(11)
        sent = [d for d in self.network.dropped if d[2] == (SERVER_IP, 21116)]
        self.assertEqual(len(sent), 4)
        self.network.advance(1)
        self.assertNotEqual(b.udp.port, first_port)

    def test_server_serial_sends_config_update_to_registered_address_only(self):
        self.server.server.serial = 7
        self.server.server.rendezvous_servers = ["hbbs.example.com"]
        b = self.controlled(detect_nat=False)
        self.network.advance(15)
        self.assertEqual(b.events_of("config_update"), [{"serial": 7}])
        # The same RegisterPeer from elsewhere gets only the 4-byte request_pk.
        spoofer, received = self.udp_socket()
        spoofer.write(messages.wrap("register_peer", id=B_ID, serial=3).SerializeToString(),
                      (SERVER_IP, 21116))
        self.network.flush()
        self.assertEqual(received, [bytes.fromhex("3a 02 10 01")])


class UuidMismatchTests(Scenario):
    """UUID_MISMATCH renames the client, so it is sent only in the official cases (G7)."""

    def setUp(self):
        super().setUp()
        self.hbbs()

    def test_short_id_renames_client(self):
        b = self.controlled(peer_id="12345", detect_nat=False)
        [change] = b.events_of("id_changed")
        self.assertEqual(change["old"], "12345")
        self.assertEqual(len(change["new"]), 10)
        self.assertEqual(b.results, [Result.UUID_MISMATCH, Result.OK])
        self.assertTrue(self.server.online(b.id))

    def test_id_of_another_machine(self):
        self.controlled(detect_nat=False)
        other = self.controlled(public_ip="203.0.113.30", detect_nat=False)
        self.assertEqual(other.results[0], Result.UUID_MISMATCH)
        self.assertNotEqual(other.id, B_ID)
        [warning] = self.log_events("uuid_mismatch")
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertEqual((warning["peer_id"], warning["ip"]), (B_ID, "203.0.113.30"))

    def test_same_machine_new_ip_and_new_key(self):
        b = self.controlled(detect_nat=False)
        moved = self.controlled(public_ip="203.0.113.30", detect_nat=False, uuid=b.uuid)
        self.assertEqual(moved.results[0], Result.UUID_MISMATCH)

    def test_same_machine_new_ip_or_new_key_is_ok(self):
        """A desktop moving while its old address is still online, then getting a new key."""
        b = self.controlled(detect_nat=False)
        moved = self.controlled(public_ip="203.0.113.30", detect_nat=False, uuid=b.uuid,
                                signing_key=b.signing_key)
        self.assertEqual(moved.results, [Result.OK])
        self.assertEqual(self.connect(self.controlling()).kind, "direct")
        b.stop()
        moved.stop()
        # A new key is taken once the address the id moved from is out of its online window.
        self.network.advance(30)
        rekeyed = self.controlled(public_ip="203.0.113.30", private_ip="10.0.0.9",
                                  detect_nat=False, uuid=b.uuid)
        self.assertEqual(rekeyed.results, [Result.OK])
        self.assertEqual(self.server.registry.get(B_ID).pk, rekeyed.pk)
        self.assertEqual(self.log_events("uuid_mismatch"), [])


class RateLimitTests(Scenario):
    """TOO_FREQUENT (section 7.1 step 6, section 7.2)."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        self.socket, self.received = self.udp_socket()

    def register_pk(self, peer_id=B_ID, uuid=b"u" * 36, pk=b"p" * 32, socket=None):
        (socket or self.socket).write(
            messages.wrap("register_pk", id=peer_id, uuid=uuid, pk=pk).SerializeToString(),
            (SERVER_IP, 21116))
        self.network.flush()

    def test_fourth_register_pk_within_7_seconds(self):
        for _ in range(3):
            self.register_pk()
            self.clock.advance(2)
        self.register_pk()
        self.assertEqual(self.received, [bytes.fromhex("82 01 00")] * 3
                         + [bytes.fromhex("82 01 02 08 04")])
        # 7 s after the last accepted one (t=4), the burst is over.
        self.clock.advance(4)
        self.register_pk()
        self.assertEqual(self.received[-1], bytes.fromhex("82 01 02 08 04"))
        self.clock.advance(1)
        self.register_pk()
        self.assertEqual(self.received[-1], bytes.fromhex("82 01 00"))
        # Two hits, one report: limits are logged once per source and minute.
        limited = self.log_events("limit_reached")
        self.assertEqual([(e["limit"], e["source"], e["detail"], e["log_level"]) for e in limited],
                         [("registrations-per-id", "192.0.2.50", f': id "{B_ID}"',
                           LogLevel.warn)])
        self.assertEqual(self.server.registry.limits.hits, {"registrations-per-id": 2})

    def test_33rd_register_pk_per_minute_from_one_ip(self):
        for i in range(32):
            socket, _ = self.udp_socket()
            self.register_pk(peer_id=f"peer{i:05d}", socket=socket)
            self.clock.advance(1.5)
        self.assertEqual(self.server.server.counters["register_pk"], 32)
        self.register_pk(peer_id="peer-new")
        self.assertEqual(self.received, [bytes.fromhex("82 01 02 08 04")])
        self.assertIsNone(self.server.registry.get("peer-new"))
        limited = self.log_events("limit_reached")
        self.assertEqual([(e["limit"], e["source"]) for e in limited],
                         [("registrations-per-minute", "192.0.2.50")])
        self.clock.advance(61 - 1.5)
        self.register_pk(peer_id="peer-new")
        self.assertEqual(self.received[-1], bytes.fromhex("82 01 00"))


class UdpSilenceTests(Scenario):
    """G8 and the amplification rule: UDP is for registration only."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        self.b = self.controlled(detect_nat=False)
        self.socket, self.received = self.udp_socket()
        self.before = len(self.server.udp.written)

    def send(self, message):
        data = message if isinstance(message, bytes) else message.SerializeToString()
        self.socket.write(data, (SERVER_IP, 21116))
        self.network.flush()

    def test_punch_and_nat_messages_get_no_reply(self):
        a_addr = addr_mangle.encode(("192.0.2.50", 4000), 1)
        for message in [
            messages.wrap("punch_hole_request", id=B_ID, licence_key=KEY, nat_type=1),
            messages.wrap("punch_hole_sent", socket_addr=a_addr, id=B_ID, version="1.4.9"),
            messages.wrap("local_addr", socket_addr=a_addr, local_addr=a_addr, id=B_ID,
                          version="1.4.9"),
            messages.wrap("test_nat_request", serial=3),
            messages.wrap("request_relay", id=B_ID, uuid="u"),
            messages.wrap("relay_response", socket_addr=a_addr, uuid="u", id=B_ID),
            messages.wrap("online_request", peers=[B_ID]),
            messages.wrap("register_pk", id=B_ID, uuid=b"", pk=b"p" * 32),
            messages.wrap("register_pk", id=B_ID, uuid=b"u", pk=b""),
            messages.wrap("register_peer", id="", serial=3),
            messages.wrap("configure_update", serial=99, rendezvous_servers=["x"]),
            b"\xff\xff\xff",
            b"",
        ]:
            self.send(message)
        self.assertEqual(self.received, [])
        self.assertEqual(len(self.server.udp.written), self.before)
        self.assertEqual(self.b.events_of("punch_hole"), [])
        self.assertEqual(self.server.server.serial, 0)

    @settings(max_examples=150, deadline=None)
    @given(st.one_of(
        st.binary(max_size=64),
        st.builds(lambda i, s: messages.wrap("register_peer", id=i, serial=s).SerializeToString(),
                  st.sampled_from(["", "1", B_ID, "abcdef"]), st.integers(0, 1 << 31 - 1)),
        st.builds(lambda i, u, p: messages.wrap("register_pk", id=i, uuid=u, pk=p)
                  .SerializeToString(),
                  st.sampled_from(["1", B_ID, "zzzzzz"]), st.binary(min_size=1, max_size=8),
                  st.binary(min_size=1, max_size=8)),
        st.builds(lambda u: messages.wrap("software_update", url=u).SerializeToString(),
                  st.text(max_size=8)),
    ))
    def test_no_reply_larger_than_request_from_unverified_source(self, data):
        self.server.server.serial = 9
        self.server.server.software_url = "https://example.com/rustdesk-1.4.9-x86_64.exe"
        written = len(self.server.udp.written)
        self.send(data)
        for reply, address in self.server.udp.written[written:]:
            self.assertLessEqual(len(reply), len(data))
            self.assertEqual(addr_mangle.try_into_v4(address[0]), "192.0.2.50")


class PunchTests(Scenario):
    """Section 4.3: A asks for B; B punches, answers from its LAN, or relays."""

    def setUp(self):
        super().setUp()
        self.hbbs(relays=(RELAY,))

    def assertSignedFor(self, signed, b, peer_id=B_ID):
        self.assertEqual(keys.verify_id_pk(PUBLIC, signed, peer_id), b.pk)

    def test_direct_between_full_cone_peers(self):
        b = self.controlled()
        a = self.controlling()
        self.assertEqual((a.nat_type, b.nat_type), (pb.ASYMMETRIC, pb.ASYMMETRIC))
        outcome = self.connect(a)

        a_public = a.streams[0].connection.public
        [punch] = b.events_of("punch_hole")
        self.assertEqual(punch["requester"], a_public)
        self.assertEqual(punch["relay_server"], RELAY)
        self.assertEqual(punch["nat_type"], pb.ASYMMETRIC)
        [punched] = b.events_of("punched")
        b_udp = self.server.registry.get(B_ID).address

        self.assertEqual(outcome.kind, "direct")
        self.assertEqual(outcome.peer_addr, punched["public"])
        self.assertNotEqual(outcome.peer_addr[1], b_udp[1])  # G9: not the UDP address
        self.assertEqual(outcome.relay_server, RELAY)
        self.assertEqual(outcome.nat_type, pb.ASYMMETRIC)
        self.assertSignedFor(outcome.signed_pk, b)
        self.assertEqual(outcome.pk, b.pk)
        self.assertEqual(outcome.attempts, 1)
        self.assertFalse(outcome.secured)
        # Delivered once; the waiting entry is consumed, B's one-shot connection closed.
        self.assertEqual(self.server.server.waiting.channels, {})
        self.assertEqual(self.server.server.counters["answer_punch_hole_response_delivered"], 1)
        [forwarded] = self.log_events("punch_forwarded")
        self.assertEqual((forwarded["outcome"], forwarded["requester"], forwarded["target"]),
                         ("punch_hole", A_PUBLIC_IP, B_ID))
        self.assertEqual(self.server.server.punch_log.entries[-1][1:],
                         (A_PUBLIC_IP, B_PUBLIC_IP, B_ID))

    def check_direct(self, a_kind, b_kind):
        b = self.controlled(kind=b_kind)
        a = self.controlling(kind=a_kind)
        outcome = self.connect(a)
        self.assertEqual(outcome.kind, "direct", (a_kind, b_kind))
        self.assertEqual(outcome.peer_addr, b.events_of("punched")[0]["public"])
        self.assertSignedFor(outcome.signed_pk, b)

    def test_direct_between_restricted_cones(self):
        self.check_direct(ADDRESS_RESTRICTED, PORT_RESTRICTED)

    def test_direct_port_restricted_to_address_restricted(self):
        self.check_direct(PORT_RESTRICTED, ADDRESS_RESTRICTED)

    def assertRelayedByB(self, outcome, b):
        """d1: B's RelayResponse reaches A with the signed pk, no socket_addr, B's uuid."""
        [relay] = b.events_of("relay")
        self.assertEqual(outcome.kind, "relay")
        self.assertEqual(outcome.uuid, relay["uuid"])
        self.assertEqual(outcome.relay_server, relay["relay_server"])
        rr = outcome.response.relay_response
        self.assertEqual(rr.socket_addr, b"")
        self.assertEqual(rr.WhichOneof("union"), "pk")
        self.assertEqual(rr.version, CLIENT_VERSION)
        self.assertSignedFor(rr.pk, b)
        self.assertEqual(outcome.pk, b.pk)
        return relay

    def test_symmetric_controlled_side_relays(self):
        b = self.controlled(kind=SYMMETRIC)
        self.assertEqual(b.nat_type, pb.SYMMETRIC)
        a = self.controlling()
        outcome = self.connect(a)
        relay = self.assertRelayedByB(outcome, b)
        self.assertEqual(relay["relay_server"], RELAY)
        self.assertEqual(b.events_of("punched"), [])

    def test_symmetric_controlling_side_relays(self):
        b = self.controlled(kind=PORT_RESTRICTED)
        a = self.controlling(kind=SYMMETRIC)
        self.assertEqual(a.nat_type, pb.SYMMETRIC)
        outcome = self.connect(a)
        self.assertRelayedByB(outcome, b)
        self.assertEqual(b.events_of("punch_hole")[0]["nat_type"], pb.SYMMETRIC)

    def test_force_relay(self):
        b = self.controlled()
        a = self.controlling()
        outcome = self.connect(a, force_relay=True)
        self.assertRelayedByB(outcome, b)

    def test_always_use_relay(self):
        self.hbbs(always_use_relay=True)
        b = self.controlled()
        a = self.controlling()
        outcome = self.connect(a)
        self.assertRelayedByB(outcome, b)
        self.assertEqual(b.events_of("punch_hole")[0]["nat_type"], pb.SYMMETRIC)

    def test_relay_rotation(self):
        self.hbbs(relays=("r1.example.com:21117", "r2.example.com:21117"))
        b = self.controlled(kind=SYMMETRIC)
        a = self.controlling()
        servers = [self.connect(a).relay_server for _ in range(3)]
        self.assertEqual(servers, ["r1.example.com:21117", "r2.example.com:21117",
                                   "r1.example.com:21117"])
        self.assertEqual(len(b.events_of("relay")), 3)

    def test_empty_relay_list_lets_b_derive_its_own(self):
        self.hbbs(relays=())
        b = self.controlled(kind=SYMMETRIC)
        outcome = self.connect(self.controlling())
        self.assertEqual(outcome.relay_server, f"{SERVER_IP}:21117")
        self.assertEqual(b.events_of("punch_hole")[0]["relay_server"], "")

    def test_same_public_ip_fetch_local_addr(self):
        b = self.controlled(kind=PORT_RESTRICTED, public_ip="203.0.113.5",
                            private_ip="192.168.1.20")
        a = self.controlling(kind=PORT_RESTRICTED, public_ip="203.0.113.5",
                             private_ip="192.168.1.30")
        outcome = self.connect(a)
        self.assertEqual(b.events_of("punch_hole"), [])
        [fetch] = b.events_of("fetch_local_addr")
        self.assertEqual(fetch["requester"], a.streams[0].connection.public)
        [sent] = b.events_of("local_addr_sent")
        self.assertEqual(outcome.kind, "local")
        self.assertEqual(outcome.peer_addr, sent["local"])
        self.assertEqual(outcome.peer_addr[0], "192.168.1.20")
        self.assertTrue(outcome.response.punch_hole_response.is_local)
        self.assertEqual(outcome.relay_server, RELAY)
        self.assertSignedFor(outcome.signed_pk, b)

    def test_always_use_relay_keeps_the_lan_hole(self):
        """G19: same-IP peers still get FetchLocalAddr; A forcing relay then asks B itself (d2)."""
        self.hbbs(always_use_relay=True)
        b = self.controlled(public_ip="203.0.113.5", private_ip="192.168.1.20")
        a = self.controlling(public_ip="203.0.113.5", private_ip="192.168.1.30")
        outcome = self.connect(a, force_relay=True)
        self.assertEqual(len(b.events_of("fetch_local_addr")), 1)
        [relay] = b.events_of("relay")
        self.assertEqual(outcome.kind, "relay")
        self.assertEqual(outcome.uuid, relay["uuid"])
        self.assertEqual(outcome.relay_server, RELAY)
        self.assertEqual(relay["request"].relay_server, RELAY)
        self.assertTrue(relay["request"].secure)

    def test_failed_direct_attempt_falls_back_to_requested_relay(self):
        """d2: A's NAT is symmetric but A believes it is not; B's NAT drops A's direct SYN."""
        b = self.controlled(kind=PORT_RESTRICTED)
        a = self.controlling(kind=SYMMETRIC, detect_nat=False, nat_type=pb.ASYMMETRIC)
        outcome = self.connect(a)
        self.assertEqual(len(b.events_of("punched")), 1)
        [relay] = b.events_of("relay")
        rr = relay["request"]
        second = a.streams[1].connection.public
        self.assertNotEqual(second, a.streams[0].connection.public)
        self.assertEqual(addr_mangle.decode(rr.socket_addr), second)
        self.assertEqual((rr.id, rr.uuid, rr.relay_server), (B_ID, outcome.uuid, RELAY))
        self.assertEqual(outcome.kind, "relay")
        self.assertEqual(outcome.relay_server, RELAY)
        self.assertEqual(outcome.response.relay_response.socket_addr, b"")
        self.assertEqual(outcome.response.relay_response.WhichOneof("union"), None)
        self.assertSignedFor(outcome.signed_pk, b)
        [logged] = self.log_events("relay_forwarded")
        self.assertEqual((logged["uuid"], logged["target"]), (outcome.uuid, B_ID))

    def test_request_relay_forwarded_with_unknown_fields(self):
        """G28: the parsed RequestRelay goes to B with only socket_addr replaced."""
        b = self.controlled()
        client = self.raw_client()
        request = messages.wrap("request_relay", id=B_ID, uuid="fixed-uuid",
                                relay_server=RELAY, secure=True, token="tok",
                                switch_code="sc", licence_key="whatever")
        request.request_relay.control_permissions.permissions = 5
        unknown = bytes.fromhex("f8 06 2a")  # field 111, varint 42: unknown to the schema
        # The unknown field goes inside the RequestRelay sub-message.
        inner = request.request_relay.SerializeToString() + unknown
        payload = b"\x92\x01" + bytes([len(inner)]) + inner
        client.transport.write(encode_frame(payload))
        self.network.flush()
        [relay] = b.events_of("relay")
        forwarded = relay["request"]
        self.assertEqual(addr_mangle.decode(forwarded.socket_addr), client.connection.public)
        self.assertEqual((forwarded.uuid, forwarded.token, forwarded.switch_code,
                          forwarded.licence_key, forwarded.control_permissions.permissions),
                         ("fixed-uuid", "tok", "sc", "whatever", 5))
        self.assertTrue(forwarded.SerializeToString().endswith(unknown))
        # B's bare RelayResponse comes back to the raw client.
        [answer] = [messages.parse(p) for p in client.received[1:]]
        self.assertEqual(answer.WhichOneof("union"), "relay_response")
        self.assertEqual(answer.relay_response.socket_addr, b"")
        self.assertEqual(answer.relay_response.version, CLIENT_VERSION)

    def test_unknown_id(self):
        self.controlled()
        client = self.raw_client()
        client.send(messages.wrap("punch_hole_request", id="987654321", licence_key=KEY))
        self.network.flush()
        self.assertEqual(client.received[1:], [b"\x5a\x00"])
        self.assertTrue(client.skipped_key_exchange)
        outcome = self.connect(self.controlling(), "987654321")
        self.assertEqual((outcome.kind, outcome.failure), ("failure", "ID does not exist"))

    def test_offline_after_30_seconds(self):
        b = self.controlled()
        a = self.controlling()
        b.stop()
        self.network.advance(29)
        self.assertTrue(self.server.online(B_ID))
        self.network.advance(1)
        client = self.raw_client()
        client.send(messages.wrap("punch_hole_request", id=B_ID, licence_key=KEY))
        self.network.flush()
        self.assertEqual(client.received[1:], [bytes.fromhex("5a 02 18 02")])
        outcome = self.connect(a)
        self.assertEqual((outcome.kind, outcome.failure),
                         ("failure", "Remote desktop is offline"))

    def test_key_mismatch(self):
        self.controlled()
        client = self.raw_client(public_ip="203.0.113.66")
        client.send(messages.wrap("punch_hole_request", id=B_ID, licence_key="wrong"))
        self.network.flush()
        self.assertEqual(client.received[1:], [bytes.fromhex("5a 02 18 03")])
        a = self.controlling(key=PUBLIC_SERVER_KEY)
        outcome = self.connect(a)
        self.assertEqual((outcome.kind, outcome.failure), ("failure", "Key mismatch"))
        warnings = [e for e in self.log_events("punch_refused") if e["log_level"] == LogLevel.warn]
        self.assertEqual([(e["outcome"], e["requester"], e["target"]) for e in warnings],
                         [("LICENSE_MISMATCH", "203.0.113.66", B_ID),
                          ("LICENSE_MISMATCH", A_PUBLIC_IP, B_ID)])

    def test_no_licence_check_with_empty_key(self):
        self.hbbs(licence="")
        b = self.controlled()
        outcome = self.connect(self.controlling(key=""))
        self.assertEqual(outcome.kind, "direct")
        # A with no key verifies with the public server key, so the signature does not verify.
        self.assertIsNone(outcome.pk)
        self.assertSignedFor(outcome.signed_pk, b)

    def test_three_attempts_on_one_connection_then_failure(self):
        """B is online but its notifications are lost: A retries at 3 s and 9 s, fails at 18 s."""
        self.lose_notices(self.controlled())
        a = self.controlling()
        d = a.connect(B_ID)
        self.network.advance(17)
        self.assertNoResult(d)
        self.network.advance(1)
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.kind, outcome.failure, outcome.attempts),
                         ("failure", "Failed to connect via rendezvous server", 3))
        self.assertEqual(len(a.streams), 1)
        self.assertEqual(self.server.server.counters["punch_punch_hole"], 3)

    def test_late_answer_on_same_connection(self):
        """G14: the entry stays parked across attempts until the first delivery."""
        b = self.controlled()
        lost = self.lose_notices(b, count=2)
        d = self.controlling().connect(B_ID)
        self.network.advance(10)
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.kind, outcome.attempts), ("direct", 3))
        self.assertEqual(lost, ["punch_hole", "punch_hole"])
        self.assertEqual(len(b.events_of("punched")), 1)

    def test_answer_for_nobody_is_dropped(self):
        self.controlled()
        client = self.raw_client()
        client.send(messages.wrap("punch_hole_sent", id=B_ID, version="1.4.9",
                                  socket_addr=addr_mangle.encode(("192.0.2.99", 1234), 5)))
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.server.server.counters["answer_punch_hole_response_unclaimed"], 1)

    def test_waiting_connection_closes_after_30_idle_seconds(self):
        self.lose_notices(self.controlled())
        client = self.raw_client()
        client.send(messages.wrap("punch_hole_request", id=B_ID, licence_key=KEY))
        self.network.advance(29)
        self.assertFalse(client.closed)
        self.assertEqual(len(self.server.server.waiting.channels), 1)
        self.network.advance(1)
        self.assertTrue(client.closed)
        self.assertEqual(self.server.server.waiting.channels, {})


class PunchIPv4OnlyTests(PunchTests):
    """The same flows with a server that sees plain IPv4 addresses."""

    DUAL_STACK = False


class SecureTcpTests(Scenario):
    """Section 5: the server speaks first on TCP 21116; clients may answer or ignore it."""

    def setUp(self):
        super().setUp()
        self.hbbs()

    def test_key_exchange_first(self):
        client = self.raw_client()
        self.network.flush()
        [offer] = client.received
        self.assertEqual(offer[:3], bytes.fromhex("ca 01 62"))
        message = messages.parse(offer)
        [signed] = message.key_exchange.keys
        self.assertEqual(len(signed), 96)
        self.assertEqual(len(VerifyKey(PUBLIC).verify(signed)), 32)
        self.assertFalse(client.closed)

    def test_no_key_exchange_on_nat_port_or_without_signing_key(self):
        client = self.raw_client(port=21115)
        self.network.flush()
        self.assertEqual(client.received, [])
        self.hbbs(signing=None, licence="some-licence")
        client = self.raw_client(private_ip="10.9.0.3")
        self.network.flush()
        self.assertEqual(client.received, [])

    def test_logged_in_client_gets_encrypted_answer(self):
        b = self.controlled()
        a = self.controlling(token="login-token")
        self.assertTrue(a.wants_secure)
        outcome = self.connect(a)
        self.assertEqual(outcome.kind, "direct")
        self.assertTrue(outcome.secured)
        self.assertEqual(keys.verify_id_pk(PUBLIC, outcome.signed_pk, B_ID), b.pk)

    def test_secured_connection_counters_start_at_one(self):
        b = self.controlled()
        client = self.raw_client(server_key=PUBLIC, symmetric_key=K)
        self.network.flush()
        self.assertTrue(client.secured)
        client.send(messages.wrap("punch_hole_request", id=B_ID, licence_key=KEY))
        self.network.flush()
        # The answer is the second frame from the server; its ciphertext opens with nonce 1.
        self.assertEqual(len(client.raw_frames), 2)
        answer = SecretBox(K).decrypt(client.raw_frames[1], secure.nonce(1))
        response = messages.parse(answer).punch_hole_response
        self.assertEqual(addr_mangle.decode(response.socket_addr),
                         b.events_of("punched")[0]["public"])
        self.assertEqual(keys.verify_id_pk(PUBLIC, response.pk, B_ID), b.pk)

    def test_appendix_a3_vectors_through_the_protocol(self):
        """A fixed server ephemeral key: the A.3 client box opens, then secretbox nonces 1, 2."""
        fixed = functools.partial(secure.ServerHandshake, ephemeral=PrivateKey(b"\x02" * 32))
        self.patch(secure, "ServerHandshake", fixed)
        client = self.raw_client()
        self.network.flush()
        [offer] = client.received
        self.assertEqual(len(encode_frame(offer)), 103)
        self.assertEqual(encode_frame(offer)[:2], bytes.fromhex("95 01"))
        [signed] = messages.parse(offer).key_exchange.keys
        self.assertEqual(VerifyKey(PUBLIC).verify(signed), EPK)

        transport = client.transport
        transport.write(frame(messages.wrap("key_exchange", keys=[CPK, SB])))
        request = messages.wrap("punch_hole_request", id="987654321", licence_key=KEY)
        transport.write(encode_frame(SecretBox(K).encrypt(
            request.SerializeToString(), secure.nonce(1)).ciphertext))
        self.network.flush()
        # "ID does not exist" is 5a 00, sealed with the server's first nonce.
        expected = SecretBox(K).encrypt(b"\x5a\x00", secure.nonce(1)).ciphertext
        self.assertEqual(client.raw_frames[1:], [expected])
        # The A.3 "hello" vector is the client's second frame: it decrypts (no
        # decryption error) and, not being a message, ends the connection.
        transport.write(b"\x54" + SecretBox(K).encrypt(b"hello", secure.nonce(2)).ciphertext)
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.log_events("decryption_error"), [])
        self.assertEqual(SecretBox(K).encrypt(b"hello", secure.nonce(1)).ciphertext, HELLO_1)

    def test_wrong_counter_is_a_decryption_error(self):
        self.patch(secure, "ServerHandshake",
                   functools.partial(secure.ServerHandshake, ephemeral=PrivateKey(b"\x02" * 32)))
        client = self.raw_client()
        self.network.flush()
        client.transport.write(frame(messages.wrap("key_exchange", keys=[CPK, SB])))
        client.transport.write(encode_frame(SecretBox(K).encrypt(
            b"hello", secure.nonce(2)).ciphertext))
        self.network.flush()
        self.assertTrue(client.closed)
        [error] = self.log_events("decryption_error")
        self.assertEqual(error["log_level"], LogLevel.warn)

    def test_client_ignoring_key_exchange_stays_plaintext(self):
        b = self.controlled()
        a = self.controlling()
        self.assertFalse(a.wants_secure)
        outcome = self.connect(a)
        self.assertEqual(outcome.kind, "direct")
        self.assertFalse(outcome.secured)
        self.assertTrue(a.streams[0].skipped_key_exchange)
        self.assertEqual(messages.parse(a.streams[0].received[1]).WhichOneof("union"),
                         "punch_hole_response")
        self.assertEqual(outcome.pk, b.pk)


class TcpRegistrationTests(Scenario):
    """Section 4.2 b2 ([INFERRED] Pro behaviour): B registered over a TCP connection."""

    def setUp(self):
        super().setUp()
        self.hbbs(keep_alive=30)

    def tcp_peer(self, **options):
        options.setdefault("server_key", PUBLIC)
        return self.controlled(transport="tcp", **options)

    def test_register_pk_answered_ok_with_keep_alive(self):
        b = self.tcp_peer()
        self.assertTrue(b.channel.secured)
        self.assertEqual(b.results, [Result.OK])
        self.assertEqual(b.keep_alive, 30.0)
        self.assertTrue(self.server.online(B_ID))
        self.assertEqual(self.server.udp.written, [])
        [logged] = self.log_events("channel_registration")
        self.assertEqual((logged["peer_id"], logged["transport"], logged["ip"]),
                         (B_ID, "tcp", B_PUBLIC_IP))

    def test_plaintext_registration_works_too(self):
        b = self.tcp_peer(server_key=None)
        self.assertFalse(b.channel.secured)
        self.assertEqual(b.results, [Result.OK])

    def test_heartbeats_every_half_keep_alive_and_echoes_keep_online(self):
        b = self.tcp_peer()
        self.network.advance(14)
        self.assertEqual(b.events_of("heartbeat"), [])
        self.network.advance(1)
        self.assertEqual(len(b.events_of("heartbeat")), 1)
        # Heartbeats pass unencrypted on a secured connection.
        self.assertEqual(b.channel.raw_frames[-1], b"")
        self.network.advance(300)
        self.assertEqual(len(b.events_of("heartbeat")), 21)
        self.assertTrue(self.server.online(B_ID))
        # Each echo counts as the peer's last registration (last_seen for the console and DB).
        self.assertEqual(self.server.registry.get(B_ID).last_seen, START + 315)
        self.assertFalse(b.channel.closed)

    def test_without_echoes_the_connection_idles_out(self):
        b = self.tcp_peer()
        b.channel.on_heartbeat = lambda stream: None
        self.network.advance(29)
        self.assertTrue(self.server.online(B_ID))
        self.network.advance(1)
        self.assertTrue(b.channel.closed)
        self.assertFalse(self.server.online(B_ID))

    def test_punch_hole_delivered_over_the_connection(self):
        b = self.tcp_peer()
        self.network.advance(60)
        a = self.controlling()
        outcome = self.connect(a)
        self.assertEqual(outcome.kind, "direct")
        [received] = [e for e in b.events_of("received") if e["message"] == "punch_hole"]
        self.assertEqual(received["via"], "tcp")
        self.assertEqual(self.server.udp.written, [])
        self.assertEqual(outcome.peer_addr, b.events_of("punched")[0]["public"])
        # It arrived encrypted: the frame on the wire is not the plaintext PunchHole.
        [plain] = [p for p in b.channel.received
                   if messages.parse(p).WhichOneof("union") == "punch_hole"]
        self.assertNotIn(plain, b.channel.raw_frames)
        self.assertEqual(len(b.channel.raw_frames), len(b.channel.received))

    def test_closing_the_connection_makes_it_offline(self):
        b = self.tcp_peer()
        self.network.advance(5)
        b.stop()
        self.network.flush()
        self.assertFalse(self.server.online(B_ID))
        [closed] = self.log_events("channel_registration_closed")
        self.assertEqual((closed["peer_id"], closed["transport"]), (B_ID, "tcp"))
        outcome = self.connect(self.controlling())
        self.assertEqual(outcome.failure, "Remote desktop is offline")

    def test_long_keep_alive_stays_connected_and_online(self):
        """KEEP-ALIVE 120: heartbeats every 60 s; no idle close, never outside the window."""
        self.hbbs(keep_alive=120)
        b = self.tcp_peer()
        self.assertEqual(b.keep_alive, 120.0)
        offline_at = []
        for _ in range(300):
            self.network.advance(1)
            if not self.server.online(B_ID):
                offline_at.append(self.clock.seconds() - START)
        self.assertEqual(offline_at, [])
        self.assertFalse(b.channel.closed)
        self.assertEqual(len(b.events_of("heartbeat")), 5)
        self.assertEqual(self.connect(self.controlling()).kind, "direct")

    def test_dead_peer_with_long_keep_alive_goes_offline(self):
        self.hbbs(keep_alive=120)
        b = self.tcp_peer()
        b.channel.on_heartbeat = lambda stream: None
        self.network.advance(119)
        self.assertTrue(self.server.online(B_ID))
        self.network.advance(1)
        self.assertTrue(b.channel.closed)
        self.assertFalse(self.server.online(B_ID))

    def test_change_id_keeps_the_registration_channel(self):
        b = self.tcp_peer()
        self.assertEqual(self.successResultOf(self.flushed(b.change_id("alice-pc"))), Result.OK)
        self.network.advance(60)
        self.assertFalse(b.channel.closed)
        self.assertTrue(self.server.online("alice-pc"))
        outcome = self.connect(self.controlling(), "alice-pc")
        self.assertEqual(outcome.kind, "direct")
        self.assertEqual(keys.verify_id_pk(PUBLIC, outcome.signed_pk, "alice-pc"), b.pk)

    def test_a_second_registration_replaces_the_first(self):
        b = self.tcp_peer()
        again = ControlledPeer(b.host, self.server.address, B_ID, uuid=b.uuid,
                               signing_key=b.signing_key, transport="tcp", server_key=PUBLIC)
        again.start()
        self.network.flush()
        self.assertTrue(b.channel.closed)
        self.assertEqual(again.results, [Result.OK])
        self.assertEqual(self.server.registry.get(B_ID).channel.registered_id, B_ID)
        self.assertTrue(self.server.online(B_ID))


class ChangeIdTests(Scenario):
    """Section 4.2 b1: RegisterPk{old_id, id, uuid} on a fresh connection, then the proof of
    the id's key over the challenge hbbs sends on it (wire/ownership.py)."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        self.b = self.controlled(detect_nat=False)

    def change(self, new_id, peer=None):
        return self.successResultOf(self.flushed((peer or self.b).change_id(new_id)))

    def test_rename(self):
        self.assertEqual(self.change("alice-pc"), Result.OK)
        [challenged] = self.log_events("change_id_challenged")
        self.assertEqual(challenged["ip"], B_PUBLIC_IP)
        self.assertEqual(self.b.id, "alice-pc")
        self.assertIsNone(self.server.registry.get(B_ID))
        self.assertEqual(self.server.registry.get("alice-pc").uuid, self.b.uuid)
        [logged] = self.log_events("id_changed")
        self.assertEqual((logged["old_id"], logged["new_id"]), (B_ID, "alice-pc"))

    def test_id_exists(self):
        self.controlled(public_ip="203.0.113.30", peer_id="taken-id", detect_nat=False)
        self.assertEqual(self.change("taken-id"), Result.ID_EXISTS)
        self.assertEqual(self.b.id, B_ID)

    def test_invalid_format(self):
        for bad in ("1abcdef", "abc", "a" * 17, "ab cdef", ""):
            self.assertEqual(self.change(bad), Result.INVALID_ID_FORMAT, bad)
        self.assertIsNotNone(self.server.registry.get(B_ID))

    def test_wrong_uuid(self):
        impostor = ControlledPeer(self.host_behind(FULL_CONE, "203.0.113.31"),
                                  self.server.address, B_ID)
        self.assertEqual(self.change("stolen-id", impostor), Result.UUID_MISMATCH)
        self.assertIsNotNone(self.server.registry.get(B_ID))
        [refused] = self.log_events("change_id_refused")
        self.assertEqual(refused["log_level"], LogLevel.warn)

    def test_official_client_gets_not_support(self):
        """An official client's change-ID carries no proof: "server_not_support"."""
        answer = self.official_change_id(self.raw_client(), "alice-pc", self.b.uuid)
        self.assertEqual(answer.SerializeToString(), bytes.fromhex("82 01 02 08 06"))
        ws = WebSocketRendezvousClient()
        ws.connection = self.host_behind(FULL_CONE, "203.0.113.78").connect_tcp(
            (SERVER_IP, 21118), ws)
        self.network.flush()
        answer = self.official_change_id(ws, "alice-pc", self.b.uuid)
        self.assertEqual(answer.register_pk_response.result, Result.NOT_SUPPORT)
        self.assertIsNotNone(self.server.registry.get(B_ID))
        self.assertIsNone(self.server.registry.get("alice-pc"))

    def test_proof_fits_only_its_connection(self):
        """A proof seen on one connection (signed by the owner) fails on any other."""
        bare = pb.RegisterPk(old_id=B_ID, id="alice-pc", uuid=self.b.uuid)
        first, second, third = self.raw_client(), self.raw_client(), self.raw_client()
        [[offer, refusal, challenge]] = self.exchange(first, bare)
        self.assertEqual((offer.WhichOneof("union"), refusal.register_pk_response.result),
                         ("key_exchange", Result.NOT_SUPPORT))
        [nonce] = challenge.key_exchange.keys
        proved = pb.RegisterPk(old_id=B_ID, id="alice-pc", uuid=self.b.uuid,
                               pk=ownership.sign_change_id(self.b.signing_key, nonce, B_ID,
                                                           "alice-pc"))
        [_, [replayed]] = self.exchange(second, bare, proved)
        self.assertEqual(replayed.register_pk_response.result, Result.UUID_MISMATCH)
        self.assertTrue(second.closed)
        [[unasked]] = self.exchange(third, proved)
        self.assertEqual(unasked.register_pk_response.result, Result.UUID_MISMATCH)
        self.assertIsNotNone(self.server.registry.get(B_ID))
        [[answer]] = self.exchange(first, proved)
        self.assertEqual(answer.register_pk_response.result, Result.OK)
        self.assertTrue(first.closed)
        self.assertEqual(self.server.registry.get("alice-pc").pk, self.b.pk)
        self.assertEqual({k: v for k, v in self.server.server.counters.items()
                          if k.startswith("change_id_")},
                         {"change_id_without_proof": 2, "change_id_refused": 2,
                          "change_id_ok": 1})

    def test_change_over_websocket(self):
        b = self.controlled(transport="ws", peer_id="987654321", public_ip="203.0.113.40")
        self.assertEqual(self.change("bob-laptop", b), Result.OK)
        self.assertEqual(self.server.registry.get("bob-laptop").pk, b.pk)
        self.assertEqual(len(self.log_events("change_id_challenged")), 1)


class IdTakeoverTests(Scenario):
    """Issue 9 item 7: a mobile-style peer (uuid = pk) hands its pk to anyone who connects;
    with it, a stranger must not move the id, nor give it another key."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        key = SigningKey(bytes(range(40, 72)))
        self.victim = self.controlled(detect_nat=False, signing_key=key,
                                      uuid=bytes(key.verify_key))
        self.attacker = self.controlling(public_ip="203.0.113.66")
        outcome = self.connect(self.attacker)
        self.pk = keys.verify_id_pk(PUBLIC, outcome.signed_pk, B_ID)
        self.assertEqual(self.pk, self.victim.pk)

    def assert_id_stays_with_the_victim(self):
        peer = self.server.registry.get(B_ID)
        self.assertEqual((peer.uuid, peer.pk), (self.victim.pk, self.victim.pk))
        self.assertIsNone(self.server.registry.get("stolen-id"))
        self.network.advance(15)
        outcome = self.connect(self.controlling(public_ip="203.0.113.67"))
        self.assertEqual(keys.verify_id_pk(PUBLIC, outcome.signed_pk, B_ID), self.victim.pk)
        self.assertEqual(outcome.kind, "direct")

    def test_change_id_over_tcp(self):
        answer = self.official_change_id(self.raw_client(public_ip="203.0.113.66"), "stolen-id",
                                         self.pk)
        self.assertEqual(answer.register_pk_response.result, Result.NOT_SUPPORT)
        client = self.raw_client(public_ip="203.0.113.66")
        self.exchange(client, pb.RegisterPk(old_id=B_ID, id="stolen-id", uuid=self.pk,
                                            pk=self.pk))
        self.assertTrue(client.closed)
        impostor = ControlledPeer(self.host_behind(FULL_CONE, "203.0.113.66"),
                                  self.server.address, B_ID, uuid=self.pk)
        self.assertEqual(self.successResultOf(self.flushed(impostor.change_id("stolen-id"))),
                         Result.UUID_MISMATCH)
        self.assert_id_stays_with_the_victim()

    def test_over_udp(self):
        """Change-ID is not carried over UDP; re-registering the victim's key from elsewhere
        moves its address until it registers again, but its key cannot be replaced."""
        socket, received = self.udp_socket("203.0.113.68")
        for request in (dict(old_id=B_ID, id="stolen-id", uuid=self.pk),
                        dict(old_id=B_ID, id="stolen-id", uuid=self.pk, pk=self.pk * 2),
                        dict(id=B_ID, uuid=self.pk, pk=self.pk),
                        dict(id=B_ID, uuid=self.pk, pk=bytes(32))):
            socket.write(messages.wrap("register_pk", **request).SerializeToString(),
                         (SERVER_IP, 21116))
            self.network.flush()
        self.assertEqual([messages.parse(r).register_pk_response.result for r in received],
                         [Result.OK, Result.UUID_MISMATCH])
        self.assertEqual(self.server.server.counters["change_id_udp_ignored"], 2)
        self.assert_id_stays_with_the_victim()


class WebSocketTests(Scenario):
    """Sections 1.5, 4.7: the same logic carried in binary WebSocket messages on 21118."""

    def setUp(self):
        super().setUp()
        self.hbbs(keep_alive=30)

    def test_registration_heartbeats_and_relay(self):
        b = self.controlled(transport="ws")
        self.assertEqual(b.results, [Result.OK])
        self.assertEqual(b.keep_alive, 30.0)
        self.assertNotIn("key_exchange", [messages.parse(p).WhichOneof("union")
                                          for p in b.channel.received if p])
        self.network.advance(15)
        self.assertEqual(len(b.events_of("heartbeat")), 1)
        self.assertEqual(b.channel.received[-1], b"")
        self.network.advance(120)
        self.assertTrue(self.server.online(B_ID))

        a = self.controlling()
        outcome = self.connect(a)
        # B in WS mode always relays (section 4.3 step 2).
        [relay] = b.events_of("relay")
        self.assertEqual(outcome.kind, "relay")
        self.assertEqual(outcome.uuid, relay["uuid"])
        self.assertEqual(keys.verify_id_pk(PUBLIC, outcome.signed_pk, B_ID), b.pk)
        [received] = [e for e in b.events_of("received") if e["message"] == "punch_hole"]
        self.assertEqual(received["via"], "ws")

        b.stop()
        self.network.flush()
        self.assertFalse(self.server.online(B_ID))
        self.assertEqual(self.log_events("channel_registration_closed")[0]["transport"],
                         "websocket")

    def test_websocket_requester_never_gets_fetch_local_addr(self):
        b = self.controlled(public_ip="203.0.113.5", private_ip="192.168.1.20")
        a = self.controlling(public_ip="203.0.113.5", private_ip="192.168.1.30",
                             transport="ws")
        outcome = self.connect(a)
        self.assertEqual(b.events_of("fetch_local_addr"), [])
        self.assertEqual(b.events_of("punch_hole")[0]["nat_type"], pb.SYMMETRIC)
        self.assertEqual(outcome.kind, "relay")
        self.assertEqual(outcome.pk, b.pk)

    def test_unknown_id_over_websocket(self):
        host = self.host_behind(FULL_CONE, A_PUBLIC_IP)
        client = WebSocketRendezvousClient()
        client.on_ready = lambda stream: stream.send(
            messages.wrap("punch_hole_request", id="987654321", licence_key=KEY))
        client.connection = host.connect_tcp((SERVER_IP, 21118), client)
        self.network.flush()
        self.assertEqual(client.received, [b"\x5a\x00"])

    def forwarded_punch(self, proxy_ip, header):
        b = self.controlled()
        host = self.network.add_host(proxy_ip)
        client = WebSocketRendezvousClient(headers=[(b"X-Real-IP", header)])
        client.on_ready = lambda stream: stream.send(
            messages.wrap("punch_hole_request", id=B_ID, licence_key=KEY, nat_type=2))
        client.connection = host.connect_tcp((SERVER_IP, 21118), client)
        self.network.flush()
        return b.events_of("punch_hole")[0]["requester"], client

    def test_x_real_ip_from_trusted_proxy_gives_port_zero(self):
        requester, _ = self.forwarded_punch("127.0.0.1", b"203.0.113.99")
        self.assertEqual(requester, ("203.0.113.99", 0))

    def test_x_real_ip_from_anyone_else_is_ignored(self):
        requester, client = self.forwarded_punch("192.0.2.44", b"203.0.113.99")
        self.assertEqual(requester, client.connection.public)


class NatTestAndOnlineTests(Scenario):
    """Sections 4.5 and 4.6 over TCP 21116 and 21115."""

    def setUp(self):
        super().setUp()
        self.hbbs(serial=5, rendezvous_servers=["hbbs.example.com"])

    def test_nat_type_from_two_ports(self):
        for kind, expected in [(FULL_CONE, pb.ASYMMETRIC), (ADDRESS_RESTRICTED, pb.ASYMMETRIC),
                               (PORT_RESTRICTED, pb.ASYMMETRIC), (SYMMETRIC, pb.SYMMETRIC)]:
            public_ip = f"203.0.113.{40 + len(self.network.nats)}"
            a = ControllingPeer(self.host_behind(kind, public_ip), self.server.address)
            self.assertEqual(self.successResultOf(self.flushed(a.test_nat())), expected, kind)

    def test_port_is_the_source_port_seen(self):
        for port, with_config in [(21116, True), (21115, False)]:
            client = self.raw_client(port=port, private_ip=f"10.9.0.{port - 21110}")
            client.send(messages.wrap("test_nat_request", serial=3))
            self.network.flush()
            [answer] = [messages.parse(p) for p in client.received
                        if messages.parse(p).WhichOneof("union") == "test_nat_response"]
            response = answer.test_nat_response
            self.assertEqual(response.port, client.connection.public[1])
            self.assertEqual(response.HasField("cu"), with_config)
            if with_config:
                self.assertEqual((response.cu.serial, list(response.cu.rendezvous_servers)),
                                 (5, ["hbbs.example.com"]))
            self.assertTrue(client.closed)

    def test_online_bitmap(self):
        ids = [f"peer-{i}" for i in range(10)]
        peers = {i: self.controlled(peer_id=ids[i], public_ip=f"203.0.113.{100 + i}",
                                    detect_nat=False) for i in (0, 2, 5, 9)}
        self.network.advance(15)
        peers[5].stop()
        self.network.advance(30)
        client = self.raw_client(port=21115)
        client.send(messages.wrap("online_request", id="me", peers=ids))
        self.network.flush()
        self.assertEqual(client.received, [bytes.fromhex("c2 01 04 0a 02 a0 40")])
        self.assertTrue(client.closed)
        a = ControllingPeer(self.host_behind(FULL_CONE, A_PUBLIC_IP), self.server.address)
        self.assertEqual(self.successResultOf(self.flushed(a.query_online("me", ids))),
                         [i in (0, 2, 9) for i in range(10)])


class LanMaskTests(Scenario):
    """Section 4.8, ``--mask 192.168.0.0/16`` and LOCAL-IP 192.168.1.1 (LAN hosts: no NAT)."""

    def setUp(self):
        super().setUp()
        self.hbbs(lan=LanRules("192.168.0.0/16", "192.168.1.1"))

    def lan_controlled(self, ip="192.168.1.50"):
        peer = ControlledPeer(self.network.add_host(ip), self.server.address, B_ID)
        peer.start()
        self.network.flush()
        return peer

    def lan_controlling(self, ip="192.168.1.60"):
        return ControllingPeer(self.network.add_host(ip), self.server.address, key=KEY)

    def test_outside_requester_to_lan_peer(self):
        """B inside: relay via LOCAL-IP, rewritten to a public relay for A (d1 step 3)."""
        b = self.lan_controlled()
        outcome = self.connect(self.controlling())
        [punch] = b.events_of("punch_hole")
        self.assertEqual((punch["nat_type"], punch["relay_server"]), (pb.SYMMETRIC, "192.168.1.1"))
        [relay] = b.events_of("relay")
        self.assertEqual(relay["relay_server"], "192.168.1.1")
        self.assertEqual((outcome.kind, outcome.uuid, outcome.relay_server),
                         ("relay", relay["uuid"], RELAY))

    def test_lan_requester_to_outside_peer(self):
        """A inside: forced relay; B's relay is replaced by LOCAL-IP on the way to A."""
        b = self.controlled()
        outcome = self.connect(self.lan_controlling())
        [punch] = b.events_of("punch_hole")
        self.assertEqual((punch["nat_type"], punch["relay_server"]), (pb.SYMMETRIC, RELAY))
        self.assertEqual((outcome.kind, outcome.relay_server), ("relay", "192.168.1.1"))
        self.assertEqual(outcome.pk, b.pk)

    def test_both_inside_mask(self):
        b = self.lan_controlled()
        outcome = self.connect(self.lan_controlling())
        self.assertEqual(len(b.events_of("fetch_local_addr")), 1)
        self.assertEqual(outcome.kind, "local")
        self.assertEqual(outcome.peer_addr, b.events_of("local_addr_sent")[0]["local"])


class Ipv6RequesterTests(Scenario):
    """G10 with a native IPv6 requester: an 18-byte socket_addr keys the waiting connection."""

    def test_ipv6_requester(self):
        self.hbbs()
        b = self.controlled()
        a = ControllingPeer(self.network.add_host("2001:db8::10"), self.server.address, key=KEY)
        outcome = self.connect(a)
        [punch] = b.events_of("punch_hole")
        self.assertEqual(punch["requester"], ("2001:db8::10", a.streams[0].local[1]))
        self.assertEqual(outcome.kind, "direct")
        self.assertEqual(outcome.peer_addr, b.events_of("punched")[0]["public"])
        self.assertEqual(self.server.server.waiting.channels, {})
