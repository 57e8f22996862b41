"""WebSocket listener pieces shared by hbbs (21118) and hbbr (21119).

Any request path is accepted (clients use ``/``, ``/ws/id`` or
``/ws/relay``).  ``X-Real-IP`` / ``X-Forwarded-For`` are honoured only when
the TCP peer is a configured trusted proxy (USERS.md section 1.13); then the
address becomes ``ip:0`` as in the official server (gotcha G15).

Every connection is wrapped in a :class:`WebSocketGuard` from accept: it is
counted per source before any HTTP is parsed, must finish the upgrade within
an absolute deadline and a bounded request head, and afterwards every frame
header is read as it arrives, so a message announced larger than the limit
of the moment is refused before its payload is buffered.
"""

import ipaddress

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.websocket import WebSocketResource

from ..admission import ConnectionLimits, source_key
from ..logs import Logger
from ..logtext import LimitLog

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
DEFAULT_HANDSHAKE_TIMEOUT = 10
DEFAULT_MAX_REQUEST_HEAD = 16 * 1024
DEFAULT_MAX_CONNECTIONS_PER_PROXY = 4096


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


def _frame_header(head):
    """``(header size, fin, opcode, payload length)`` of the frame starting ``head``, or None
    while the header is incomplete (RFC 6455 section 5.2)."""
    available = len(head)
    if available < 2:
        return None
    length = head[1] & 0x7F
    size = 2
    if length == 126:
        size = 4
        if available < size:
            return None
        length = int.from_bytes(head[2:4], "big")
    elif length == 127:
        size = 10
        if available < size:
            return None
        length = int.from_bytes(head[2:10], "big")
    if head[1] & 0x80:
        size += 4
    if available < size:
        return None
    return size, head[0] & 0x80, head[0] & 0x0F, length


class FrameHeaders:
    """Finds every frame header in a WebSocket byte stream, stepping over payloads unread.

    A message may be split into continuation frames: its size is the sum of
    its frames' announced lengths, so a client cannot dodge a message limit
    with many small fragments.
    """

    def __init__(self):
        self._skip = 0
        self._partial = b""
        self._message = 0

    def feed(self, data):
        """Yields ``(offset, size)`` for each frame header completed in ``data``.

        ``offset`` is where the header starts in ``data`` (negative when it
        began in an earlier chunk); ``size`` is what the message will hold
        once this frame is in (a control frame: its own length).
        """
        end = len(data)
        pos = self._skip
        while pos < end:
            partial = self._partial
            if partial:
                start = -len(partial)
                head = partial + data[:14]
            else:
                start = pos
                head = data[pos:pos + 14]
            parsed = _frame_header(head)
            if parsed is None:
                self._partial = bytes(head)
                self._skip = 0
                return
            self._partial = b""
            size, fin, opcode, length = parsed
            if opcode & 8:
                total = length
            else:
                total = (self._message if opcode == 0 else 0) + length
                self._message = 0 if fin else total
            yield start, total
            pos = start + size + length
        self._skip = pos - end


class WebSocketAdmission:
    """Who may open a WebSocket connection and for how long it may take to upgrade.

    ``limits`` counts connections per source from accept (anything with
    ``admit(host)`` and ``release(host)``, such as a ConnectionLimits, which
    logs its own refusals).  A trusted proxy is counted in ``proxy_limits``
    instead, and once a request's head names the client behind it, the
    client is counted in ``limits`` like a direct one.  ``admit(host)``, if
    given, is asked first (a blocklist).  Limit hits of the WebSocket layer
    are counted in ``limit_log.hits`` (refusals by ``limits`` as
    ``connections``, by ``proxy_limits`` as ``connections-per-proxy``) and
    the layer's own limits are logged once per source and minute.
    """

    log = Logger()

    def __init__(self, clock, limits, trusted=None, proxy_limits=None,
                 handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT,
                 max_request_head=DEFAULT_MAX_REQUEST_HEAD, admit=None):
        self.clock = clock
        self.limits = limits
        self.trusted = trusted if trusted is not None else TrustedProxies()
        self.proxy_limits = proxy_limits if proxy_limits is not None else ConnectionLimits(
            clock, max_per_ip=DEFAULT_MAX_CONNECTIONS_PER_PROXY, name="connections-per-proxy")
        self.handshake_timeout = handshake_timeout
        self.max_request_head = max_request_head
        self.admit = admit
        self.limit_log = LimitLog(self.log)

    def _limits_for(self, host):
        return self.proxy_limits if host in self.trusted else self.limits

    def accept(self, host):
        """True, and counted, when a TCP peer may connect."""
        if self.admit is not None and not self.admit(host):
            return False
        if host in self.trusted:
            return self._count(self.proxy_limits, "connections-per-proxy", host)
        return self._count(self.limits, "connections", host)

    def forwarded(self, host):
        """True, and counted, when the client a trusted proxy forwards may connect."""
        return self._count(self.limits, "connections", host)

    def _count(self, limits, name, host):
        if limits.admit(host):
            return True
        self.limit_log.count(name)
        return False

    def release(self, host, forwarded_host):
        self._limits_for(host).release(host)
        if forwarded_host is not None:
            self.limits.release(forwarded_host)

    def refused(self, limit, host, detail):
        self.limit_log.hit(self.clock.seconds(), limit, source_key(host), detail)


class WebSocketGuard(ProtocolWrapper):
    """One WebSocket connection, from accept: deadline, request head, message sizes.

    Until the upgrade, the bytes of the request head are counted and the
    connection is aborted at the absolute deadline, however slowly bytes
    trickle in.  After it, each frame header is checked before the frame
    reaches the WebSocket parser: a message announced above ``limit``
    aborts the connection, its payload never read.  The protocol behind it
    raises ``limit`` when its state allows larger messages (a relay once
    paired).
    """

    def __init__(self, factory, wrapped, host, limit):
        super().__init__(factory, wrapped)
        self.admission = factory.admission
        self.host = host
        self.limit = limit
        self.address = None
        self.forwarded_host = None
        self._head = 0
        self._frames = None
        self._deadline = None

    def makeConnection(self, transport):
        admission = self.admission
        self._deadline = admission.clock.callLater(admission.handshake_timeout, self._expired)
        super().makeConnection(transport)

    def _expired(self):
        self._deadline = None
        self._refuse("websocket-handshake-timeout",
                     f"no upgrade {self.admission.handshake_timeout:g}s after accept")

    def _refuse(self, limit, detail):
        self.admission.refused(limit, self.forwarded_host or self.host, detail)
        self.transport.abortConnection()

    def request_head(self, request):
        """A request's head is read: key the connection by the client a trusted proxy names.

        One connection carries one client: a second, different forwarded
        address is refused.  False when the connection was refused.
        """
        address = client_address(request, self.admission.trusted)
        host = address[0]
        if host != self.host and host != self.forwarded_host:
            if self.forwarded_host is not None or not self.admission.forwarded(host):
                self.transport.abortConnection()
                return False
            self.forwarded_host = host
        self.address = address
        return True

    def upgraded(self):
        """The WebSocket handshake succeeded: from now on frames are read."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._frames = FrameHeaders()

    def dataReceived(self, data):
        frames = self._frames
        if frames is None:
            self._head += len(data)
            if self._head > self.admission.max_request_head:
                self._refuse("websocket-request-head-size",
                             f"{self._head} bytes before the upgrade")
                return
            self.wrappedProtocol.dataReceived(data)
            return
        delivered = 0
        for offset, size in frames.feed(data):
            if size <= self.limit:
                continue
            if offset > delivered:
                # What precedes the header may change the limit (a relay pairs).
                self.wrappedProtocol.dataReceived(data[delivered:offset])
                delivered = offset
                if size <= self.limit:
                    continue
            self._refuse("websocket-message-size",
                         f"message of {size} bytes announced, limit {self.limit}")
            return
        if delivered < len(data):
            self.wrappedProtocol.dataReceived(data[delivered:] if delivered else data)

    def connectionLost(self, reason):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.admission.release(self.host, self.forwarded_host)
        super().connectionLost(reason)


class _GuardFactory(WrappingFactory):
    """Counts each TCP peer at accept, before any HTTP is parsed."""

    noisy = False

    def __init__(self, site, admission, max_message):
        super().__init__(site)
        self.admission = admission
        self.max_message = max_message

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if not self.admission.accept(host):
            return None
        return WebSocketGuard(self, self.wrappedFactory.buildProtocol(addr), host,
                              self.max_message)


class _AnyPath(Resource):
    """Serves the WebSocket resource at every path, once the request head passed the guard."""

    isLeaf = True

    def __init__(self, websocket):
        super().__init__()
        self.websocket = websocket

    def render(self, request):
        if not guard_of(request).request_head(request):
            return NOT_DONE_YET
        return self.websocket.render(request)


class _Upgrading:
    """Tells the guard when the handshake succeeded, then builds the real protocol."""

    def __init__(self, factory):
        self.factory = factory

    def buildProtocol(self, request):
        guard_of(request).upgraded()
        return self.factory.buildProtocol(request)


def websocket_site(factory, admission, max_message):
    """An IProtocolFactory serving ``factory``'s WebSocket protocols on any path.

    ``admission`` (a :class:`WebSocketAdmission`) decides at accept and
    bounds the handshake; ``max_message`` is the message limit a new
    connection starts with.
    """
    resource = WebSocketResource(_Upgrading(factory))
    site = Site(_AnyPath(resource), timeout=None, reactor=admission.clock)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None
    return _GuardFactory(site, admission, max_message)


def guard_of(request):
    """The :class:`WebSocketGuard` under ``request``'s connection."""
    return request.channel.transport
