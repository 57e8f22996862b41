"""Real sockets for the client: a *host* (see :mod:`.rendezvous`) on a Twisted reactor.

The TCP punch needs several sockets on one local port: the rendezvous
connection, the 30 ms connect attempt towards the peer, the listener for the
peer (B), and the direct connection after the rendezvous connection closed
(A).  Linux allows that only when every one of those sockets has
``SO_REUSEADDR`` and ``SO_REUSEPORT`` set before ``bind``.  Twisted's
``tcp.makeBinding(interface, port, reuseAddress, reusePort)`` passed as
``bindAddress`` to ``connectTCP`` (or as the port to ``listenTCP``) sets
exactly these options, so no adopted-socket path is needed: every client
socket here is bound explicitly (port 0 for an ephemeral one), which also
tells us the local port before the connection completes.
"""

import random

from twisted.internet import error
from twisted.internet.abstract import isIPv6Address
from twisted.internet.protocol import ClientFactory
from twisted.internet.tcp import makeBinding


class Connection:
    """What a client knows of one of its TCP connections: the bound ``local`` address.

    ``public``, the address the far end sees, is unknown on a real socket.
    """

    public = None

    def __init__(self, local):
        self.local = local


class _OneProtocol(ClientFactory):
    """Hands one prepared protocol to the connector and reports a failed connect to it."""

    def __init__(self, protocol):
        self.protocol_instance = protocol

    def buildProtocol(self, addr):
        return self.protocol_instance

    def clientConnectionFailed(self, connector, reason):
        self.protocol_instance.connectionFailed(reason)


class ReactorHost:
    """A client's sockets on ``reactor``; ``interface`` is the local IP to bind ("" for any)."""

    def __init__(self, reactor, interface="", rng=None):
        self.reactor = reactor
        self.clock = reactor
        self.interface = interface
        self.random = rng if rng is not None else random.SystemRandom()

    def _interface_for(self, host):
        if self.interface:
            return self.interface
        return "::" if isIPv6Address(host) else "0.0.0.0"

    def bind_udp(self, protocol, port=None):
        return self.reactor.listenUDP(port or 0, protocol, interface=self.interface)

    def connect_tcp(self, destination, protocol, local_port=None, timeout=None):
        host, port = destination
        interface = self._interface_for(host)
        binding = makeBinding(interface, local_port or 0, reuseAddress=True, reusePort=True)
        connector = self.reactor.connectTCP(host, port, _OneProtocol(protocol),
                                            timeout=timeout or 30, bindAddress=binding)
        try:
            local = connector.transport.socket.getsockname()[:2]
        except (AttributeError, OSError):
            local = (interface, local_port or 0)
        protocol.connection = Connection(local)
        return protocol.connection

    def listen_tcp(self, port, factory):
        """Listen on ``port`` beside the connections already bound there; raises OSError."""
        binding = makeBinding(self.interface, port, reuseAddress=True, reusePort=True)
        try:
            return self.reactor.listenTCP(binding, factory, backlog=8)
        except error.CannotListenError as e:
            raise OSError(str(e)) from e
