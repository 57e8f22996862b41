"""hbbs over WebSocket (21118): one binary message is one RendezvousMessage (section 1.5).

No KeyExchange is ever sent here: clients skip secure_tcp on WebSocket.
"""

from ..logs import Logger
from ..wire.websocket import guard_of
from .streams import ChannelSession


class RendezvousWebSocket:
    """A twisted.web.websocket protocol feeding the shared channel logic."""

    log = Logger()

    def __init__(self, factory, address):
        self.factory = factory
        self.address = address
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
        if self.session is not None:
            self.session.payload_received(bytes(data))

    def textMessageReceived(self, message):
        if self.session is not None:
            self.session.activity_only()

    def pongReceived(self, payload):
        if self.session is not None:
            self.session.activity_only()

    def connectionLost(self, reason):
        if self.session is not None:
            self.session.lost()
        self.factory.connection_closed(self)


class RendezvousWebSocketFactory:
    """The WebSocketServerFactory for 21118; connections were counted and admitted at accept
    (:func:`~rustdesk_twisted.wire.websocket.websocket_site`)."""

    def __init__(self, server, clock):
        self.server = server
        self.clock = clock

    def buildProtocol(self, request):
        self._count("websocket_opened")
        return RendezvousWebSocket(self, guard_of(request).address)

    def connection_closed(self, protocol):
        self._count("websocket_closed")

    def _count(self, name):
        """Per connection, not per message: metrics read ``opened - closed`` at scrape time."""
        counters = self.server.counters
        counters[name] = counters.get(name, 0) + 1
