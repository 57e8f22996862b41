"""hbbs over WebSocket (21118): one binary message is one RendezvousMessage (section 1.5).

No KeyExchange is ever sent here: clients skip secure_tcp on WebSocket.
"""


from ..logs import Logger
from ..wire.websocket import client_address, size_guard
from .streams import ChannelSession


class RendezvousWebSocket:
    """A twisted.web.websocket protocol feeding the shared channel logic."""

    log = Logger()

    def __init__(self, factory, address, guard):
        self.factory = factory
        self.address = address
        self.guard = guard
        self.transport = None
        self.session = None

    def negotiationStarted(self, transport):
        self.transport = transport

    def negotiationFinished(self):
        self.session = ChannelSession(
            self.factory.server, self.factory.clock, self.address, True,
            self.transport.sendBytesMessage, lambda: self.transport.sendBytesMessage(b""),
            self.transport.loseConnection)

    def bytesMessageReceived(self, data):
        self._message_done()
        if self.session is not None:
            self.session.payload_received(bytes(data))

    def textMessageReceived(self, message):
        self._message_done()
        if self.session is not None:
            self.session.activity_only()

    def pongReceived(self, payload):
        if self.session is not None:
            self.session.activity_only()

    def _message_done(self):
        if self.guard is not None:
            self.guard.message_done()

    def connectionLost(self, reason):
        if self.session is not None:
            self.session.lost()
        self.factory.connection_closed(self)


class RendezvousWebSocketFactory:
    """The WebSocketServerFactory for 21118."""

    def __init__(self, server, clock, trusted_proxies, limits):
        self.server = server
        self.clock = clock
        self.trusted_proxies = trusted_proxies
        self.limits = limits

    def buildProtocol(self, request):
        address = client_address(request, self.trusted_proxies)
        protocol = RendezvousWebSocket(self, address, size_guard(request))
        protocol.limit_host = request.transport.getPeer().host
        if not self.limits.admit(protocol.limit_host):
            protocol.limit_host = None
            request.transport.abortConnection()
            return protocol
        self._count("websocket_opened")
        return protocol

    def connection_closed(self, protocol):
        if protocol.limit_host is not None:
            self.limits.release(protocol.limit_host)
            self._count("websocket_closed")

    def _count(self, name):
        """Per connection, not per message: metrics read ``opened - closed`` at scrape time."""
        counters = self.server.counters
        counters[name] = counters.get(name, 0) + 1
