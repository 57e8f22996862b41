"""The two kinds of relay connection, TCP and WebSocket, behind one small side interface.

A side reads its first message, hands it to :class:`RelayServer`, keeps
(boundedly) whatever arrives until it is paired, then forwards to its
partner through ``send_payload`` (framed) or the partner's transport (raw).
Everything about pairing and policy lives in the server; these classes only
frame, parse and count.
"""

from wsproto.utilities import LocalProtocolError

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol

from ..wire.framing import FrameDecoder, FrameTooLarge, encode_header
from ..wire.messages import parse
from ..wire.websocket import guard_of, websocket_site
from .pipe import Reader

FIRST_FRAME_MAX = 64 * 1024
RELAY_FRAME_MAX = 64 * 1024 * 1024
EARLY_MAX = 256 * 1024


def first_frame(buffer, limit):
    """``(payload, bytes consumed)`` of the first frame in ``buffer``, or None if incomplete.

    Only the first frame is decoded: what follows belongs to the peers and
    is forwarded verbatim, whatever it looks like (G11).
    """
    if not buffer:
        return None
    header = (buffer[0] & 3) + 1
    if len(buffer) < header:
        return None
    length = int.from_bytes(buffer[:header], "little") >> 2
    if length > limit:
        raise FrameTooLarge(f"first frame of {length} bytes")
    end = header + length
    if len(buffer) < end:
        return None
    return bytes(buffer[header:end]), end


def _describe(reason):
    return reason.getErrorMessage() if reason is not None else "closed"


class TcpRelayProtocol(Protocol):
    """A relay connection on the plain (or TLS) TCP port."""

    is_websocket = False

    def __init__(self, server):
        self.server = server
        self.session = None
        self.partner = None
        self.uuid = None
        self.reader = None
        self.peer = None
        self.activity = 0
        self.received = 0
        self.early_held = 0
        self._decoder = None
        self._head = bytearray()
        self._early = None
        self._forward = None
        self._out = None

    def connectionMade(self):
        address = self.transport.getPeer()
        self.peer = (getattr(address, "host", str(address)), getattr(address, "port", 0))
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.reader = Reader(self, self.server.clock)
        self.server.connected(self)

    def dataReceived(self, data):
        forward = self._forward
        if forward is not None:
            forward(data)
            return
        if self._early is not None:
            self._early += data
            self.server.early.add(self, len(data))
            return
        if self._head is None:
            return
        self._head += data
        try:
            first = first_frame(self._head, FIRST_FRAME_MAX)
        except FrameTooLarge:
            self._head = None
            self.server.refuse(self, "first frame too large")
            return
        if first is None:
            return
        payload, consumed = first
        self._early = self._head[consumed:]
        self._head = None
        self.server.request(self, parse(payload))
        # Only a half left waiting (not refused, not paired at once) holds early bytes.
        if self._early is None or self.transport.disconnecting:
            return
        if not self.server.early.join(self, len(self._early)):
            self._early = None
            self.server.withdraw(self)
            self.transport.loseConnection()

    def begin_relay(self, session, partner):
        """Switch to relaying; returns the bytes that arrived after RequestRelay."""
        self.session = session
        self.partner = partner
        early = bytes(self._early or b"")
        self._early = None
        self.server.early.leave(self)
        if session.raw:
            self._out = partner.transport
            self._forward = self._relay_raw
        else:
            self._decoder = FrameDecoder(RELAY_FRAME_MAX)
            self._forward = self._relay_frames
        return early

    def deliver_early(self, early):
        if early:
            self._forward(early)

    def _relay_raw(self, data):
        self._out.write(data)
        n = len(data)
        self.received += n
        self.activity += 1
        self.session.charge(self, n)

    def _relay_frames(self, data):
        self.activity += 1
        try:
            payloads = self._decoder.feed(data)
        except FrameTooLarge:
            self.session.end("frame too large")
            return
        send = self.partner.send_payload
        for payload in payloads:
            send(payload)
        n = len(data)
        self.received += n
        self.session.charge(self, n)

    def send_payload(self, payload):
        self.transport.writeSequence((encode_header(len(payload)), payload))

    def attach_producer(self, producer):
        self.transport.registerProducer(producer, True)

    def pause_reading(self):
        self.transport.pauseProducing()

    def resume_reading(self):
        self.transport.resumeProducing()

    def close(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._early is not None:
            self.server.early.leave(self)
        self.server.release(self.limit_host)
        self.server.lost(self, _describe(reason))


class TcpRelayFactory(Factory):
    """Counts connections itself rather than through a wrapper: a wrapped transport would
    keep raw pairs off the splice path."""

    noisy = False

    def __init__(self, server):
        self.server = server

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if not self.server.admit(host):
            return None
        protocol = TcpRelayProtocol(self.server)
        protocol.limit_host = host
        return protocol


class WsRelayProtocol:
    """A relay connection on the WebSocket port: one binary message per payload."""

    is_websocket = True

    def __init__(self, server, peer, guard):
        self.server = server
        self.peer = peer
        # The connection's WebSocketGuard checks every frame header against
        # FIRST_FRAME_MAX for the RequestRelay, EARLY_MAX while it waits for
        # its partner (reading pauses past that much anyway), then
        # RELAY_FRAME_MAX once paired.
        self.guard = guard
        self.session = None
        self.partner = None
        self.uuid = None
        self.reader = None
        self.ws = None
        self.transport = None
        self.activity = 0
        self.received = 0
        self.lost = False
        self._requested = False
        self._early = []
        self._waiting = False
        self.early_held = 0
        self._forward = None

    def negotiationStarted(self, transport):
        self.ws = transport

    def negotiationFinished(self):
        self.transport = self.ws.transport
        self.reader = Reader(self, self.server.clock)
        self.server.connected(self)

    def bytesMessageReceived(self, data):
        if type(data) is not bytes:
            data = bytes(data)
        forward = self._forward
        if forward is not None:
            forward(data)
            return
        self.activity += 1
        if self._requested:
            self._early.append(data)
            if self._waiting:
                self.server.early.add(self, len(data))
            return
        self._requested = True
        self.guard.limit = EARLY_MAX
        self.server.request(self, parse(data))
        # Left waiting (not refused, not paired at once): its early messages count in the
        # relay's early-bytes bounds, as a TCP half's do.
        if self.session is None and not self.lost and \
                not getattr(self.transport, "disconnecting", False):
            self._waiting = True
            self.server.early.join(self, 0)

    def textMessageReceived(self, text):
        self.activity += 1

    def pongReceived(self, payload):
        self.activity += 1

    def begin_relay(self, session, partner):
        self.session = session
        self.partner = partner
        self.guard.limit = RELAY_FRAME_MAX
        self._forward = self._relay
        self._stop_waiting()
        early, self._early = self._early, []
        return early

    def _stop_waiting(self):
        if self._waiting:
            self._waiting = False
            self.server.early.leave(self)

    def deliver_early(self, early):
        for payload in early:
            self._relay(payload)

    def _relay(self, data):
        self.activity += 1
        self.partner.send_payload(data)
        n = len(data)
        self.received += n
        self.session.charge(self, n)

    def send_payload(self, payload):
        self.ws.sendBytesMessage(payload)

    def attach_producer(self, producer):
        # The HTTP channel registered itself as the transport's producer
        # before the upgrade; the relay takes its place.
        self.ws.detachProducer()
        self.ws.attachProducer(producer)

    def pause_reading(self):
        self.transport.pauseProducing()

    def resume_reading(self):
        self.transport.resumeProducing()

    def close(self):
        if self.lost or self.ws is None:
            return
        try:
            self.ws.loseConnection()
        except LocalProtocolError:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.lost = True
        self._stop_waiting()
        if self.reader is not None:
            self.server.lost(self, _describe(reason))


class WsRelayFactory:
    """Builds a :class:`WsRelayProtocol` per upgraded request."""

    def __init__(self, server):
        self.server = server

    def buildProtocol(self, request):
        guard = guard_of(request)
        return WsRelayProtocol(self.server, guard.address, guard)


def relay_site(server, admission):
    """The WebSocket listener: ``admission`` (a WebSocketAdmission asking ``server.admit``,
    the blocklist, first) counts connections from accept and bounds the handshake."""
    return websocket_site(WsRelayFactory(server), admission, FIRST_FRAME_MAX)
