"""Real sockets: ``twistd -n rustdesk-server --announced-only`` on free ports; a relay
pair forms only for the uuid its hbbs brokered, and bytes flow through it."""

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from rustdesk_twisted.wire import addr_mangle, messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPeer, RegisterPk, RelayResponse

from .livesupport import DatagramClient, FramedClient, free_port_block, start_twistd, stop_twistd
from .test_hbbr_support import frame_request

PEER_ID = "123456789"
PEER_HOST = "127.0.0.2"
REQUESTER_HOST = "127.0.0.3"
ATTACKER_HOST = "127.0.0.4"


class _RelayClient(Protocol):
    def __init__(self, uuid, licence_key, expected=0):
        self.uuid = uuid
        self.licence_key = licence_key
        self.expected = expected
        self.received = b""
        self.arrived = Deferred()
        self.closed = Deferred()

    def connectionMade(self):
        self.transport.write(frame_request(self.uuid, self.licence_key))

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.expected and not self.arrived.called:
            self.arrived.callback(self.received)

    def connectionLost(self, reason):
        self.closed.callback(None)


class LiveCombinedTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_relay_pairs_brokered_uuid(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port_block((-2, -1, 0, 1, 2, 3, 4, 5))
        sockets = tempfile.mkdtemp(prefix="rds")
        self.addCleanup(shutil.rmtree, sockets)
        process = yield start_twistd(
            reactor, "rustdesk-server",
            ["-p", str(port), "-b", "127.0.0.1", "--data-dir", directory, "--announced-only",
             "--console", f"unix:{sockets}/hbbs.sock", "--relay-console",
             f"unix:{sockets}/hbbr.sock"],
            directory, b"relay pairs only announced uuids").ready
        self.addCleanup(stop_twistd, process)
        with open(os.path.join(directory, "id_ed25519.pub")) as f:
            key = f.read()

        peer = DatagramClient()
        udp = reactor.listenUDP(0, peer, interface=PEER_HOST)
        self.addCleanup(udp.stopListening)
        hbbs = ("127.0.0.1", port)
        peer.transport.write(messages.wrap("register_pk", RegisterPk(
            id=PEER_ID, uuid=b"machine-uid", pk=b"\x11" * 32)).SerializeToString(), hbbs)
        yield peer.next("register_pk_response")
        peer.transport.write(messages.wrap(
            "register_peer", RegisterPeer(id=PEER_ID)).SerializeToString(), hbbs)
        yield peer.next("register_peer_response")

        requester = yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, bindAddress=(REQUESTER_HOST, 0)), FramedClient())
        yield requester.message(1)
        requester.send(messages.wrap("request_relay", id=PEER_ID, uuid="live-uuid",
                                     relay_server=f"127.0.0.1:{port + 1}"))
        notice = yield peer.next("request_relay")
        self.assertEqual(notice.request_relay.uuid, "live-uuid")

        # An attacker's unsolicited RelayResponse must not open the relay.
        attacker = yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, bindAddress=(ATTACKER_HOST, 0)), FramedClient())
        yield attacker.message(1)
        attacker.send(messages.wrap("relay_response", RelayResponse(
            socket_addr=addr_mangle.encode((ATTACKER_HOST, 4444), 0), uuid="forged-uuid")))
        yield attacker.closed
        relay = TCP4ClientEndpoint(reactor, "127.0.0.1", port + 1)
        first = yield connectProtocol(relay, _RelayClient("forged-uuid", key))
        second = yield connectProtocol(relay, _RelayClient("forged-uuid", key))
        yield first.closed
        yield second.closed

        # B answers on a fresh connection (section 4.4 d2): now A's uuid is brokered.
        answer = yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, bindAddress=(PEER_HOST, 0)), FramedClient())
        yield answer.message(1)
        answer.send(messages.wrap("relay_response", RelayResponse(
            socket_addr=notice.request_relay.socket_addr, version="1.4.9")))
        response = (yield requester.message(2)).relay_response
        self.assertEqual(response.refuse_reason, "")  # A goes to the relay with its own uuid

        stranger = yield connectProtocol(relay, _RelayClient("not-brokered", key))
        yield stranger.closed
        payload = os.urandom(256 * 1024)
        b = yield connectProtocol(relay, _RelayClient("live-uuid", key, len(payload)))
        a = yield connectProtocol(relay, _RelayClient("live-uuid", key))
        a.transport.write(payload)
        received = yield b.arrived
        self.assertEqual(received, payload)
        a.transport.loseConnection()
        yield b.closed
        requester.transport.loseConnection()
        yield requester.closed
        output = process.output.decode()
        self.assertIn("uuid not announced by hbbs", output)
        self.assertIn("paired relay \"live-uuid\"", output)
        self.assertNotRegex(output, r"relay \S*forged-uuid\S* paired")
