"""Real sockets: ``twistd -n rustdesk-hbbs`` on free ports, driven over UDP, TCP and WebSocket."""

import os
import shutil
import sqlite3
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest
from twisted.web.websocket import WebSocketClientEndpoint

from rustdesk_twisted.client import ControlledPeer, ReactorHost, ServerAddress
from rustdesk_twisted.wire import addr_mangle, keys, messages
from rustdesk_twisted.wire.rendezvous_pb2 import (
    OnlineRequest,
    PunchHoleRequest,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RegisterPkResponse,
    TestNatRequest,
)

from .livesupport import (
    REPOSITORY,
    DatagramClient,
    FramedClient,
    free_port_block,
    start_twistd,
    stop_twistd,
)

PEER_ID = "123456789"
# Distinct loopback addresses, so the server sees two hosts (same IP would mean "same LAN").
PEER_HOST = "127.0.0.2"
REQUESTER_HOST = "127.0.0.3"


class _WebSocketClient:
    def __init__(self):
        self.messages = []
        self.arrived = Deferred()
        self.waiters = []

    def negotiationStarted(self, transport):
        self.transport = transport

    def negotiationFinished(self):
        pass

    def bytesMessageReceived(self, data):
        self.messages.append(messages.parse(bytes(data)) if data else None)
        if not self.arrived.called:
            self.arrived.callback(self.messages[0])
        waiters, self.waiters = self.waiters, []
        for count, d in waiters:
            self._check(count, d)

    def _check(self, count, d):
        if len(self.messages) >= count:
            d.callback(self.messages[count - 1])
        else:
            self.waiters.append((count, d))

    def message(self, count):
        """Fires with the ``count``-th message (1-based); None stands for an empty one."""
        d = Deferred()
        self._check(count, d)
        return d

    def textMessageReceived(self, text):
        pass

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        pass


class _ClientFactory:
    def __init__(self, client):
        self.client = client

    def buildProtocol(self, url):
        return self.client


class LiveHbbsTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.port = free_port_block((-1, 0, 2, 4))
        console = tempfile.mkdtemp(prefix="hbbs")
        self.addCleanup(shutil.rmtree, console)
        self.process = yield start_twistd(
            reactor, "rustdesk-hbbs",
            ["-p", str(self.port), "--bind", "127.0.0.1", "--data-dir", self.directory,
             "-r", "relay.example.com", "--console", f"unix:{console}/console.sock"],
            self.directory, b"Relay servers:").ready
        self.addCleanup(stop_twistd, self.process)
        with open(os.path.join(self.directory, "id_ed25519.pub")) as f:
            self.key = f.read()

    def test_banner(self):
        output = self.process.output.decode()
        self.assertIn(f"Key: {self.key}", output)
        self.assertIn(f"Key fingerprint: {keys.fingerprint(keys.decode_public(self.key))}", output)
        for port in (self.port - 1, self.port, self.port + 2):
            self.assertIn(f"tcp:{port}:", output)
        self.assertIn("relay.example.com", output)

    @inlineCallbacks
    def test_healthcheck_finds_the_port_hbbs_was_started_with(self):
        """-p moved the admin listener to PORT+4; rustdesk-admin reads where it really is."""
        with open(os.path.join(self.directory, "hbbs-admin.url")) as f:
            self.assertEqual(f.read(), f"http://127.0.0.1:{self.port + 4}\n")
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rustdesk_twisted.admin", "--data-dir", self.directory,
                             "healthcheck"], env=dict(os.environ, PYTHONPATH=REPOSITORY))
        self.assertEqual(code, 0, err)
        self.assertIn(f"http://127.0.0.1:{self.port + 4}/healthz", out.decode())

    @inlineCallbacks
    def _register(self):
        peer = DatagramClient()
        port = reactor.listenUDP(0, peer, interface=PEER_HOST)
        self.addCleanup(port.stopListening)
        server = ("127.0.0.1", self.port)
        peer.transport.write(messages.wrap(
            "register_peer", RegisterPeer(id=PEER_ID, serial=3)).SerializeToString(), server)
        first = yield peer.next("register_peer_response")
        self.assertTrue(first.register_peer_response.request_pk)
        peer.transport.write(messages.wrap("register_pk", RegisterPk(
            id=PEER_ID, uuid=b"machine-uid", pk=b"\x11" * 32)).SerializeToString(), server)
        answer = yield peer.next("register_pk_response")
        self.assertEqual(answer.SerializeToString(), bytes.fromhex("820100"))
        peer.transport.write(messages.wrap(
            "register_peer", RegisterPeer(id=PEER_ID, serial=3)).SerializeToString(), server)
        steady = yield peer.next("register_peer_response")
        self.assertFalse(steady.register_peer_response.request_pk)
        return peer

    def _connect(self, port, source="127.0.0.1"):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
        return connectProtocol(endpoint, FramedClient())

    @inlineCallbacks
    def test_register_and_punch_over_udp_and_tcp(self):
        peer = yield self._register()
        requester = yield self._connect(self.port, REQUESTER_HOST)
        offer = yield requester.message(1)
        self.assertEqual(offer.WhichOneof("union"), "key_exchange")
        requester.send(messages.wrap("punch_hole_request", PunchHoleRequest(
            id=PEER_ID, licence_key=self.key, nat_type=1, version="1.4.9")))
        punch = yield peer.next("punch_hole")
        a_address = addr_mangle.decode(punch.punch_hole.socket_addr)
        self.assertEqual(a_address, (REQUESTER_HOST, requester.transport.getHost().port))
        self.assertEqual(punch.punch_hole.relay_server, "relay.example.com")

        answering = yield self._connect(self.port, PEER_HOST)
        answering_port = answering.transport.getHost().port
        answering.send(messages.wrap("punch_hole_sent", PunchHoleSent(
            socket_addr=punch.punch_hole.socket_addr, id=PEER_ID,
            relay_server="relay.example.com", nat_type=1, version="1.4.9")))
        response = (yield requester.message(2)).punch_hole_response
        self.assertEqual(addr_mangle.decode(response.socket_addr),
                         (PEER_HOST, answering_port))
        signed_pk = keys.verify_id_pk(keys.decode_public(self.key), response.pk, PEER_ID)
        self.assertEqual(signed_pk, b"\x11" * 32)
        requester.transport.loseConnection()
        yield answering.closed

    @inlineCallbacks
    def test_nat_test_and_online_query(self):
        yield self._register()
        nat = yield self._connect(self.port - 1)
        nat.send(messages.wrap("test_nat_request", TestNatRequest(serial=3)))
        answer = yield nat.message(1)
        self.assertEqual(answer.test_nat_response.port, nat.transport.getHost().port)
        yield nat.closed
        online = yield self._connect(self.port - 1)
        online.send(messages.wrap("online_request", OnlineRequest(
            id="me", peers=[PEER_ID, "nobody", PEER_ID])))
        answer = yield online.message(1)
        self.assertEqual(answer.online_response.states, b"\xa0")

    @inlineCallbacks
    def test_websocket_punch_request(self):
        yield self._register()
        endpoint = WebSocketClientEndpoint.new(reactor, f"ws://127.0.0.1:{self.port + 2}/ws/id")
        client = _WebSocketClient()
        yield endpoint.connect(_ClientFactory(client))
        client.transport.sendBytesMessage(messages.wrap("punch_hole_request", PunchHoleRequest(
            id="unknown-id", licence_key=self.key, nat_type=2)).SerializeToString())
        answer = yield client.arrived
        self.assertEqual(answer.SerializeToString(), bytes.fromhex("5a00"))
        client.transport.loseConnection()

    def _punch_request(self):
        return messages.wrap("punch_hole_request", PunchHoleRequest(
            id=PEER_ID, licence_key=self.key, nat_type=1, version="1.4.9"))

    def _register_pk(self):
        return messages.wrap("register_pk", RegisterPk(
            id=PEER_ID, uuid=b"machine-uid", pk=b"\x11" * 32))

    @inlineCallbacks
    def test_tcp_registration_receives_punch_over_its_connection(self):
        peer = yield self._connect(self.port, PEER_HOST)
        offer = yield peer.message(1)
        self.assertEqual(offer.WhichOneof("union"), "key_exchange")
        peer.send(self._register_pk())
        answer = (yield peer.message(2)).register_pk_response
        self.assertEqual((answer.result, answer.keep_alive), (0, 30))
        requester = yield self._connect(self.port, REQUESTER_HOST)
        yield requester.message(1)
        requester.send(self._punch_request())
        punch = (yield peer.message(3)).punch_hole
        self.assertEqual(addr_mangle.decode(punch.socket_addr),
                         (REQUESTER_HOST, requester.transport.getHost().port))
        requester.transport.loseConnection()
        peer.transport.loseConnection()

    @inlineCallbacks
    def test_websocket_registration_and_online_query(self):
        endpoint = WebSocketClientEndpoint.new(reactor, f"ws://127.0.0.1:{self.port + 2}/")
        peer = _WebSocketClient()
        yield endpoint.connect(_ClientFactory(peer))
        peer.transport.sendBytesMessage(self._register_pk().SerializeToString())
        answer = (yield peer.message(1)).register_pk_response
        self.assertEqual((answer.result, answer.keep_alive), (0, 30))
        query = _WebSocketClient()
        yield WebSocketClientEndpoint.new(
            reactor, f"ws://127.0.0.1:{self.port + 2}/ws/id").connect(_ClientFactory(query))
        query.transport.sendBytesMessage(messages.wrap("online_request", OnlineRequest(
            id="me", peers=["nobody", PEER_ID])).SerializeToString())
        states = (yield query.message(1)).online_response.states
        self.assertEqual(states, b"\x40")
        requester = yield self._connect(self.port, REQUESTER_HOST)
        yield requester.message(1)
        requester.send(self._punch_request())
        punch = (yield peer.message(2)).punch_hole
        self.assertEqual(addr_mangle.decode(punch.socket_addr)[0], REQUESTER_HOST)
        requester.transport.loseConnection()
        peer.transport.loseConnection()

    @inlineCallbacks
    def test_change_id_needs_the_key(self):
        """Our client proves its key and the rename is on disk when it hears OK; the
        official client's request, which carries no proof, is answered NOT_SUPPORT."""
        peer = ControlledPeer(ReactorHost(reactor, PEER_HOST),
                              ServerAddress("127.0.0.1", self.port), PEER_ID, key=self.key)
        peer.start()
        self.addCleanup(peer.stop)
        yield peer.registered()
        official = yield self._connect(self.port, REQUESTER_HOST)
        official.send(messages.wrap("register_pk", RegisterPk(old_id=PEER_ID, id="stolen-id",
                                                              uuid=peer.pk)))
        self.assertEqual((yield official.message(1)).WhichOneof("union"), "key_exchange")
        answer = yield official.message(2)
        self.assertEqual(answer.register_pk_response.result, RegisterPkResponse.NOT_SUPPORT)
        official.transport.loseConnection()
        result = yield peer.change_id("alice-pc")
        self.assertEqual(result, RegisterPkResponse.OK)
        database = sqlite3.connect(f"file:{self.directory}/db_v2.sqlite3?mode=ro", uri=True)
        self.addCleanup(database.close)
        self.assertEqual(database.execute("select id, pk from peer").fetchall(),
                         [("alice-pc", peer.pk)])
