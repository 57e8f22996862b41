"""WebSocket listener pieces shared by hbbs (21118) and hbbr (21119).

Any request path is accepted (clients use ``/``, ``/ws/id`` or
``/ws/relay``).  ``X-Real-IP`` / ``X-Forwarded-For`` are honoured only when
the TCP peer is a configured trusted proxy (USERS.md section 1.13); then the
address becomes ``ip:0`` as in the official server (gotcha G15).  A message
size guard stops a client from making us buffer an endless message.
"""

import ipaddress

from ..logs import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
HANDSHAKE_TIMEOUT = 30


class TrustedProxies:
    """Networks whose forwarded-address headers we believe."""

    def __init__(self, networks=DEFAULT_TRUSTED_PROXIES):
        self.networks = [ipaddress.ip_network(n.strip(), strict=False)
                         for n in networks if n.strip()]

    def __contains__(self, host):
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def forwarded_address(value):
    """The official parse of a forwarded header (section 4.7), else None.

    A dotted value must be an IPv4 literal, any other an IPv6 literal; lists
    and ``ip:port`` values are refused.
    """
    if not value:
        return None
    value = value.strip()
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ("." in value) != (address.version == 4):
        return None
    return str(address)


def client_address(request, trusted):
    """``(host, port)`` of a WebSocket client, through a trusted proxy's headers."""
    peer = request.transport.getPeer()
    if peer.host in trusted:
        for header in (b"x-real-ip", b"x-forwarded-for"):
            raw = request.getHeader(header)
            host = forwarded_address(raw.decode("latin-1") if isinstance(raw, bytes) else raw)
            if host is not None:
                return (host, 0)
    return (peer.host, peer.port)


class _AnyPath(Resource):
    """Serves the WebSocket resource at every path."""

    def __init__(self, websocket):
        super().__init__()
        self.websocket = websocket

    def getChild(self, path, request):
        return self.websocket

    def render(self, request):
        return self.websocket.render(request)


class MessageSizeGuard(ProtocolWrapper):
    """Aborts a connection that sends more than ``limit`` bytes without finishing a message.

    The WebSocket protocol calls :meth:`message_done` for each message it
    receives, which resets the count.
    """

    log = Logger()

    def __init__(self, factory, wrapped):
        super().__init__(factory, wrapped)
        self.pending = 0

    def dataReceived(self, data):
        self.pending += len(data)
        if self.pending > self.factory.limit:
            self.log.warn("closing {peer}: WebSocket message over {limit} bytes",
                          peer=self.getPeer(), limit=self.factory.limit, event="frame_too_large")
            self.transport.abortConnection()
            return
        super().dataReceived(data)

    def message_done(self):
        self.pending = 0


class _GuardFactory(WrappingFactory):
    protocol = MessageSizeGuard
    noisy = False

    def __init__(self, wrapped, limit, admit):
        super().__init__(wrapped)
        self.limit = limit
        self.admit = admit

    def buildProtocol(self, addr):
        if self.admit is not None and not self.admit(getattr(addr, "host", "")):
            return None
        return super().buildProtocol(addr)


def websocket_site(factory, max_message, reactor=None, admit=None):
    """An IProtocolFactory serving ``factory``'s WebSocket protocols on any path.

    ``admit(host)`` may refuse a TCP peer before any HTTP is parsed; a
    connection that has not upgraded within 30 s is closed.
    """
    resource = WebSocketResource(factory)
    resource.isLeaf = True
    site = Site(_AnyPath(resource), timeout=HANDSHAKE_TIMEOUT, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None
    return _GuardFactory(site, max_message + 64 * 1024, admit)


def size_guard(request):
    """The MessageSizeGuard under ``request``'s connection, if any."""
    transport = request.channel.transport
    return transport if isinstance(transport, MessageSizeGuard) else None
