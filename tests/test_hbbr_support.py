"""In-memory hbbr harness shared by the hbbr tests: real server protocols,
throwaway clients, iosim pumps and one MemoryReactorClock for all time."""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.websocket import WebSocketClientEndpoint

from rustdesk_twisted.hbbr.protocols import TcpRelayFactory, relay_site
from rustdesk_twisted.wire.websocket import TrustedProxies, WebSocketAdmission
from rustdesk_twisted.hbbr.server import RelayServer
from rustdesk_twisted.wire.framing import encode_frame
from rustdesk_twisted.wire.messages import wrap


def request_relay(uuid, licence_key="", **fields):
    return wrap("request_relay", uuid=uuid, licence_key=licence_key, **fields).SerializeToString()


class PausableTransport(iosim.FakeTransport):
    """An iosim transport that remembers whether its reading is paused."""

    paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


class TcpPeer(Protocol):
    def __init__(self):
        self.received = bytearray()
        self.lost = None

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = reason


class WsPeer:
    def __init__(self):
        self.messages = []
        self.lost = None
        self.transport = None

    def negotiationStarted(self, transport):
        self.transport = transport

    def negotiationFinished(self):
        pass

    def bytesMessageReceived(self, data):
        self.messages.append(bytes(data))

    def textMessageReceived(self, text):
        self.messages.append(text)

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        self.lost = reason


class _WsPeerFactory:
    def buildProtocol(self, url):
        return WsPeer()


def address(host, port):
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)


class Harness:
    """One relay server and any number of simulated clients."""

    def __init__(self, trusted="127.0.0.0/8,::1", **server_options):
        self.reactor = MemoryReactorClock()
        self.server = RelayServer(self.reactor, **server_options)
        self.server.start()
        self.tcp_factory = TcpRelayFactory(self.server)
        self.site = relay_site(self.server, WebSocketAdmission(
            self.reactor, self.server.limits, TrustedProxies(trusted.split(",")),
            admit=self.server.unblocked))
        self.pumps = []
        self._port = 40000

    def _next_port(self):
        self._port += 1
        return self._port

    def tcp(self, host="198.51.100.7"):
        """Returns (client, server_protocol, client_transport, server_transport)."""
        peer = address(host, self._next_port())
        server_protocol = self.tcp_factory.buildProtocol(peer)
        if server_protocol is None:
            return None
        client = TcpPeer()
        server_transport = PausableTransport(server_protocol, True, peerAddress=peer)
        client_transport = PausableTransport(client, False)
        self.pumps.append(iosim.connect(server_protocol, server_transport, client,
                                        client_transport, greet=False, clock=self.reactor))
        return client, server_protocol, client_transport, server_transport

    def ws(self, host="203.0.113.9", path="/ws/relay"):
        """Returns (client, server_protocol, client_transport, server_transport)."""
        endpoint = WebSocketClientEndpoint.new(self.reactor, f"http://relay.example:21119{path}")
        connected = Deferred.fromCoroutine(endpoint.connect(_WsPeerFactory()))
        _, _, client_factory, _, _ = self.reactor.tcpClients.pop()
        peer = address(host, self._next_port())
        channel = self.site.buildProtocol(peer)
        wire = client_factory.buildProtocol(None)
        server_transport = PausableTransport(channel, True, peerAddress=peer)
        client_transport = PausableTransport(wire, False)
        self.pumps.append(iosim.connect(channel, server_transport, wire, client_transport,
                                        greet=False, clock=self.reactor))
        self.flush()
        results = []
        connected.addBoth(results.append)
        client = results[0]
        server_protocol = self.server_sides()[-1] if self.server_sides() else None
        return client, server_protocol, client_transport, server_transport

    def server_sides(self):
        return list(self.server._handshaking)

    def flush(self):
        moved = True
        while moved:
            moved = False
            for pump in self.pumps:
                if pump.flush():
                    moved = True


def frame_request(uuid, licence_key=""):
    return encode_frame(request_relay(uuid, licence_key))
