"""The reference client end to end in memory: hbbs and hbbr on the fake NAT network.

The hbbs flows themselves are covered by ``test_hbbs_flows``; here the point
is what the client does after the rendezvous: the direct or relayed stream,
the peer handshake of PROTOCOL.md section 5.5 over it, and the echo.
"""

from nacl.signing import SigningKey
from twisted.internet.protocol import Factory, Protocol

from rustdesk_twisted.client import ControlledPeer, ControllingPeer, ServerAddress, SessionError
from rustdesk_twisted.client.rendezvous import (
    increase_port,
    relay_destination,
    split_host_port,
)
from rustdesk_twisted.hbbr.protocols import TcpRelayFactory, relay_site
from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.wire.websocket import TrustedProxies, WebSocketAdmission
from rustdesk_twisted.hbbr.server import RelayServer
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.framing import encode_frame
from rustdesk_twisted.wire import rendezvous_pb2 as pb

from .fakenet import FULL_CONE, PORT_RESTRICTED, SYMMETRIC
from .test_hbbs_flows import A_PUBLIC_IP, B_ID, KEY, Scenario

RELAY_IP = "198.51.100.2"
RELAY = f"{RELAY_IP}:21117"


class RelayedScenario(Scenario):
    """hbbs suggesting an in-memory hbbr (TCP 21117 and WebSocket 21119) on RELAY_IP."""

    def setUp(self):
        super().setUp()
        self.hbbs(relays=(RELAY,), keep_alive=30)
        self.relay = RelayServer(self.clock, licence=KEY)
        host = self.network.add_host(RELAY_IP)
        host.listen_tcp(21117, TcpRelayFactory(self.relay))
        host.listen_tcp(21119, relay_site(self.relay, WebSocketAdmission(
            self.clock, ConnectionLimits(self.clock), TrustedProxies(["127.0.0.1"]))))

    def controlled(self, *args, **options):
        options.setdefault("key", KEY)
        return super().controlled(*args, **options)

    def session(self, a, peer_id=B_ID, **options):
        """Connect, open the session, echo; returns (outcome, session)."""
        outcome = self.connect(a, peer_id, **options)
        d = a.open_session(outcome)
        self.network.flush()
        return outcome, self.successResultOf(d)

    def echo(self, session, data=b"hello through the stream"):
        d = session.echo(data)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), data)


class DirectSessionTests(RelayedScenario):

    def test_direct_session_is_secured_and_echoes(self):
        b = self.controlled()
        outcome, session = self.session(self.controlling())
        self.assertEqual((outcome.kind, session.route), ("direct", "direct"))
        self.assertTrue(session.secured)
        self.assertTrue(session.signature_ok)
        self.assertTrue(session.stream.secured)
        self.echo(session)
        [event] = b.events_of("session")
        self.assertEqual((event["route"], event["secured"]), ("direct", True))
        # Only the listener on the punched port took A; B's 30 ms probe was refused.
        self.assertEqual(len(b.sessions), 1)

    def test_lan_session(self):
        b = self.controlled(kind=PORT_RESTRICTED, public_ip="203.0.113.5",
                            private_ip="192.168.1.20")
        a = self.controlling(kind=PORT_RESTRICTED, public_ip="203.0.113.5",
                             private_ip="192.168.1.30")
        outcome, session = self.session(a)
        self.assertEqual(outcome.kind, "local")
        self.assertEqual(outcome.peer_addr[0], "192.168.1.20")
        self.assertTrue(session.secured)
        self.echo(session)
        self.assertEqual(b.events_of("session")[0]["route"], "local")

    def test_encrypted_payloads_differ_from_plaintext_on_the_wire(self):
        self.controlled()
        _, session = self.session(self.controlling())
        self.echo(session, b"secret-bytes")
        self.assertNotIn(b"secret-bytes", session.stream.raw_frames)
        self.assertIn(b"secret-bytes", session.stream.received)

    def test_without_a_verified_key_the_session_is_plain(self):
        """A whose key does not verify hbbs's signature sends an empty message (section 5.5)."""
        b = self.controlled()
        a = self.controlling(key="", licence_key=KEY)
        outcome, session = self.session(a)
        self.assertIsNone(outcome.pk)
        self.assertFalse(session.secured)
        self.echo(session)
        self.assertEqual(b.events_of("session")[0]["secured"], False)

    def test_peer_key_not_matching_hbbs_signature_is_rejected(self):
        """B signs with a key hbbs never saw: A sends PublicKey{}, B registers its key again."""
        b = self.controlled()
        b.signing_key = SigningKey(b"\x07" * 32)
        outcome, session = self.session(self.controlling())
        self.assertEqual(outcome.pk, b.pk)
        self.assertFalse(session.signature_ok)
        self.assertFalse(session.secured)
        self.assertEqual(len(b.events_of("key_rejected")), 1)
        self.assertFalse(b.key_confirmed)


class RelaySessionTests(RelayedScenario):

    def test_symmetric_peer_relays_and_the_relay_carries_the_session(self):
        b = self.controlled(kind=SYMMETRIC)
        outcome, session = self.session(self.controlling())
        self.assertEqual((outcome.kind, outcome.relay_server), ("relay", RELAY))
        self.assertEqual(outcome.pk, b.pk)
        self.assertTrue(session.secured)
        self.echo(session)
        self.assertEqual(len(self.relay.sessions), 1)
        [event] = b.events_of("session")
        self.assertEqual((event["route"], event["relay_server"]), ("relay", RELAY))

    def test_failed_direct_attempt_then_requested_relay(self):
        """d2: A is behind a symmetric NAT but believes it is not; the relay saves the day."""
        b = self.controlled(kind=PORT_RESTRICTED)
        a = self.controlling(kind=SYMMETRIC, detect_nat=False, nat_type=pb.ASYMMETRIC)
        outcome, session = self.session(a)
        self.assertEqual(outcome.kind, "relay")
        self.assertTrue(outcome.relay_requested)
        self.assertIn("refused", outcome.direct_error)
        self.assertTrue(b.events_of("relay")[0]["request"].secure)
        self.assertTrue(session.secured)
        self.echo(session)

    def test_forced_relay(self):
        self.controlled()
        outcome, session = self.session(self.controlling(), force_relay=True)
        self.assertEqual(outcome.kind, "relay")
        self.echo(session)

    def test_websocket_clients_relay_over_websocket(self):
        b = self.controlled(transport="ws")
        a = self.controlling(transport="ws")
        outcome, session = self.session(a)
        self.assertEqual(outcome.kind, "relay")
        self.assertTrue(session.secured)
        self.echo(session)
        self.assertEqual(b.events_of("session")[0]["route"], "relay")

    def test_wrong_licence_at_the_relay_is_a_closed_session(self):
        self.relay.licence = "another-key"
        b = self.controlled(kind=SYMMETRIC)
        a = self.controlling()
        d = a.open_session(self.connect(a))
        self.network.flush()
        self.failureResultOf(d, SessionError)
        self.assertEqual(b.events_of("session"), [])
        self.assertEqual(self.relay.sessions, set())

    def test_unreachable_relay(self):
        self.hbbs(relays=("192.0.2.250:21117",))
        b = self.controlled(kind=SYMMETRIC)
        a = self.controlling()
        d = a.open_session(self.connect(a))
        self.network.flush()
        self.assertIn("relay connection failed", str(self.failureResultOf(d, SessionError).value))
        [failed] = b.events_of("relay_failed")
        self.assertEqual(failed["relay_server"], "192.0.2.250:21117")

    def test_pairing_that_never_happens_times_out(self):
        self.controlled(kind=SYMMETRIC)
        a = self.controlling()
        outcome = self.connect(a)
        outcome.uuid = "not-the-uuid-b-used"
        d = a.open_session(outcome)
        self.network.advance(17)
        self.assertNoResult(d)
        self.network.advance(1)
        self.failureResultOf(d, SessionError)


class RegistrationTests(RelayedScenario):

    def test_registered_fires_once_the_server_accepts(self):
        host = self.host_behind(FULL_CONE, "203.0.113.40")
        b = ControlledPeer(host, self.server.address, B_ID)
        d = b.registered()
        b.start()
        self.assertNoResult(d)
        self.network.flush()
        self.assertIs(self.successResultOf(d), b)
        self.assertIs(self.successResultOf(b.registered()), b)

    def test_registration_timeouts_are_reported(self):
        self.server.udp.stopListening()
        host = self.host_behind(FULL_CONE, "203.0.113.41")
        b = ControlledPeer(host, self.server.address, B_ID).start()
        self.network.advance(7)
        self.assertEqual([e["count"] for e in b.events_of("registration_timeout")], [1, 2])

    def test_tcp_registration_with_a_wrong_server_key_fails_the_handshake(self):
        b = self.controlled(transport="tcp", server_key=b"\x01" * 32, detect_nat=False)
        self.assertTrue(b.channel.closed)
        self.assertEqual(b.events_of("channel_closed")[0]["error"],
                         "Signature mismatch in key exchange")
        self.assertIsNone(b.registered_at)


class ControllingFailureTests(RelayedScenario):

    def test_secure_tcp_with_a_wrong_key_fails(self):
        self.controlled()
        a = self.controlling(key=keys.b64(b"\x05" * 32), token="t")
        outcome = self.connect(a)
        self.assertEqual(outcome.failure, "Signature mismatch in key exchange")

    def test_rendezvous_server_unreachable(self):
        self.server.host.listeners.clear()
        a = ControllingPeer(self.host_behind(FULL_CONE, A_PUBLIC_IP), self.server.address,
                            key=KEY)
        outcome = self.connect(a)
        self.assertTrue(outcome.failure.startswith("Failed to connect to rendezvous server"))

    def test_nat_test_without_the_second_port_is_unknown(self):
        del self.server.host.listeners[21115]
        a = ControllingPeer(self.host_behind(FULL_CONE, A_PUBLIC_IP), self.server.address)
        self.assertEqual(self.successResultOf(self.flushed(a.test_nat())), pb.UNKNOWN_NAT)

    def test_events_are_bounded_and_observable(self):
        a = ControllingPeer(self.host_behind(FULL_CONE, A_PUBLIC_IP), self.server.address)
        seen = a.wait_for("tick")
        for i in range(a.MAX_EVENTS + 5):
            a._event("tick", n=i)
        self.assertEqual(self.successResultOf(seen), {"n": 0})
        self.assertEqual(len(a.events), a.MAX_EVENTS)
        self.assertEqual(a.events[0], ("tick", {"n": 5}))


class _OfficialHbbsTcp(Protocol):
    """The official hbbs on TCP 21116: any RegisterPk is answered NOT_SUPPORT, then it closes."""

    def dataReceived(self, data):
        self.transport.write(encode_frame(messages.register_pk_response(
            pb.RegisterPkResponse.NOT_SUPPORT).SerializeToString()))
        self.transport.loseConnection()


class ChangeIdTests(Scenario):

    def test_a_server_without_challenge_leaves_its_answer(self):
        self.network.add_host("198.51.100.9").listen_tcp(21116,
                                                         Factory.forProtocol(_OfficialHbbsTcp))
        b = ControlledPeer(self.host_behind(FULL_CONE, "203.0.113.50"),
                           ServerAddress("198.51.100.9"), B_ID)
        d = b.change_id("alice-pc")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), pb.RegisterPkResponse.NOT_SUPPORT)
        self.assertEqual(b.id, B_ID)


class AddressTests(Scenario):

    def test_split_host_port(self):
        self.assertEqual(split_host_port("relay.example.com", 21117), ("relay.example.com", 21117))
        self.assertEqual(split_host_port("10.0.0.1:3000", 21117), ("10.0.0.1", 3000))
        self.assertEqual(split_host_port("[2001:db8::1]:5", 21117), ("2001:db8::1", 5))
        for text in ("127.0.0.1:99999", "127.0.0.1:0", "[::1]:65536", "host:x"):
            self.assertRaises(ValueError, split_host_port, text, 21117)
        self.assertEqual(split_host_port("[2001:db8::1]", 21117), ("2001:db8::1", 21117))
        self.assertEqual(split_host_port("2001:db8::1", 21117), ("2001:db8::1", 21117))
        self.assertRaises(ValueError, split_host_port, "host:port", 1)

    def test_relay_destination_and_increase_port(self):
        self.assertEqual(relay_destination("r.example.com", False), ("r.example.com", 21117))
        self.assertEqual(relay_destination("r.example.com:30001", True), ("r.example.com", 30003))
        self.assertEqual(increase_port("hbbs.example.com", 1), "hbbs.example.com:21117")
        self.assertEqual(increase_port("[2001:db8::5]:30000", 1), "[2001:db8::5]:30001")
