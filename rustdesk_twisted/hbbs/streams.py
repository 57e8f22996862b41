"""hbbs's stream transports: framed TCP on 21116 and 21115, and the channel logic they share.

A *channel* is what the rendezvous controller talks to: ``send(message)``,
``close()``, ``address`` (as the peer is seen), ``key`` (its
``try_into_v4`` form, the waiting-table key), ``is_websocket``, ``secured``
(secure_tcp done, so a proxied API request may be served on it).  The TCP
protocol adds secure_tcp (PROTOCOL.md section 5) on 21116 when the server
has a signing key; the WebSocket protocol in ``websocket.py`` reuses
:class:`ChannelSession` for everything above the framing.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

from ..admission import ConnectionLimits
from ..logs import Logger
from ..wire import addr_mangle, messages, secure
from ..wire.framing import FrameDecoder, FrameTooLarge, encode_frame
from ..wire.rendezvous_pb2 import KeyExchange

IDLE_TIMEOUT = 30.0
DEFAULT_MAX_FRAME = 64 * 1024


class ChannelSession:
    """Idle timeout, heartbeats and dispatch of one rendezvous connection.

    ``write_message(bytes)`` and ``write_heartbeat()`` come from the
    transport-specific owner; decisions come from the controller.
    """

    log = Logger()

    def __init__(self, server, clock, address, is_websocket, write_message,
                 write_heartbeat, lose_connection):
        self.server = server
        self.clock = clock
        self.address = address
        self.key = addr_mangle.normalize(address)
        self.is_websocket = is_websocket
        self.transport_name = "websocket" if is_websocket else "tcp"
        self.parked_key = None
        self.registered_id = None
        self.change_id_challenge = None  # the nonce a change-ID proof must sign (rendezvous.py)
        self.secured = False  # secure_tcp done: the API may be proxied over it (apiproxy.py)
        self.api_request = None
        self._write_message = write_message
        self._write_heartbeat = write_heartbeat
        self._lose_connection = lose_connection
        self._heartbeats = None
        self.idle_timeout = IDLE_TIMEOUT
        self._idle = clock.callLater(IDLE_TIMEOUT, self._timed_out)
        self.closed = False

    def send(self, message):
        if not self.closed:
            self._write_message(message.SerializeToString())

    def close(self):
        if not self.closed:
            self.closed = True
            self._lose_connection()

    def start_heartbeats(self, interval):
        # A registration channel only hears from its peer when it echoes a
        # heartbeat: the idle limit must outlast two heartbeat periods.
        self.idle_timeout = max(IDLE_TIMEOUT, 2.0 * interval)
        self._activity()
        if self._heartbeats is None:
            self._heartbeats = LoopingCall(self._write_heartbeat)
            self._heartbeats.clock = self.clock
            self._heartbeats.start(interval, now=False)

    def _timed_out(self):
        self._idle = None
        self.log.debug("closing idle {transport} connection from {address}",
                       transport=self.transport_name, address=self.address)
        self.close()

    def _activity(self):
        if self._idle is not None:
            self._idle.reset(self.idle_timeout)

    def payload_received(self, payload):
        """One frame or WebSocket message; returns False once the connection is to close."""
        if self.closed:
            return False
        self._activity()
        if not payload:
            keep = self.server.stream_heartbeat(self)
        else:
            message = messages.parse(payload)
            keep = message is not None and self.server.stream_message(self, message)
        if not keep:
            self.close()
        return keep

    def activity_only(self):
        """A message that is not data (WebSocket text, ping) still counts as activity."""
        self._activity()

    def _stop_timers(self):
        self.closed = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self._heartbeats is not None and self._heartbeats.running:
            self._heartbeats.stop()

    def lost(self):
        self._stop_timers()
        self.server.stream_closed(self)


class RendezvousTCP(Protocol):
    """TCP 21116: frames, optional secure_tcp, then the shared channel logic."""

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.decoder = FrameDecoder(factory.max_frame)
        self.session = None
        self.handshake = None
        self.stream = None
        self.first = True

    def connectionMade(self):
        # Small replies must leave at once: with Nagle, the reply that follows the
        # KeyExchange waited for its ACK (punch p99 of 12 ms at 100 flows/s).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        peer = self.transport.getPeer()
        self.session = ChannelSession(
            self.factory.server, self.factory.clock, (peer.host, peer.port), False,
            self._write_message, self._write_heartbeat, self.transport.loseConnection)
        self.handshake = self.factory.handshake()
        if self.handshake is not None:
            offer = messages.wrap("key_exchange", KeyExchange(keys=self.handshake.offer()))
            self.transport.write(encode_frame(offer.SerializeToString()))
            # The client sends its request right behind its KeyExchange, often in one
            # segment: the frame limit of a secured connection applies from the start
            # and is lowered if the connection stays in plaintext.
            self.decoder.max_frame = self.factory.secured_max_frame()

    def _write_message(self, payload):
        if self.stream is not None:
            payload = self.stream.seal(payload)
        self.transport.write(encode_frame(payload))

    def _write_heartbeat(self):
        self.transport.write(b"\x00")

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as e:
            self.log.warn("closing {address}: {error}", address=self.session.address, error=e,
                          event="frame_too_large")
            self.session.close()
            return
        for payload in frames:
            if self.stream is not None:
                try:
                    payload = self.stream.open(payload)
                except secure.DecryptionError:
                    self.log.warn("closing {address}: decryption error",
                                  address=self.session.address, event="decryption_error")
                    self.session.close()
                    return
            elif self.first and self.handshake is not None and self._key_exchange(payload):
                continue
            self.first = False
            if not self.session.payload_received(payload):
                return

    def _key_exchange(self, payload):
        """The client's first message: a KeyExchange switches the connection to encrypted."""
        self.first = False
        message = messages.parse(payload) if payload else None
        if message is None or message.WhichOneof("union") != "key_exchange":
            self.decoder.max_frame = self.factory.max_frame
            return False
        try:
            self.stream = self.handshake.accept(list(message.key_exchange.keys))
        except secure.HandshakeError as e:
            self.log.warn("closing {address}: secure_tcp failed: {error}",
                          address=self.session.address, error=e, event="handshake_failed")
            self.session.close()
        else:
            self.session.secured = True
        self.handshake = None
        return True

    def connectionLost(self, reason):
        if self.session is not None:
            self.session.lost()
        self.factory.connection_closed(self)


class RendezvousTCPFactory(Factory):
    """Builds TCP 21116 protocols; ``offer_secure`` sends the KeyExchange on accept."""

    noisy = False

    def __init__(self, server, clock, max_frame=DEFAULT_MAX_FRAME, offer_secure=True,
                 limits=None, protocol_class=RendezvousTCP):
        self.server = server
        self.clock = clock
        self.max_frame = max_frame
        self.offer_secure = offer_secure
        self.limits = limits if limits is not None else ConnectionLimits(clock)
        self.protocol_class = protocol_class
        self._handshakes = None

    def handshake(self):
        """The current secure_tcp handshake, or None when this listener offers none."""
        signing = self.server.server_key.signing
        if not self.offer_secure or signing is None:
            return None
        if self._handshakes is None or self._handshakes.signing_key is not signing:
            self._handshakes = secure.HandshakeRotation(signing, self.clock)
        return self._handshakes.current()

    def secured_max_frame(self):
        """A proxied API request is one frame: a secured connection takes the largest body
        the proxy allows."""
        proxy = self.server.api_proxy
        return max(self.max_frame, proxy.frame_limit) if proxy.url is not None else self.max_frame

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if not self.limits.admit(host):
            return None
        protocol = self.protocol_class(self)
        protocol.limit_host = host
        return protocol

    def connection_closed(self, protocol):
        self.limits.release(protocol.limit_host)


class NatTestTCP(RendezvousTCP):
    """TCP 21115: one TestNatRequest or OnlineRequest, one answer, close (section 4.5, 4.6)."""

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.session = _OneShotSession(
            self.factory.server, self.factory.clock, (peer.host, peer.port), False,
            self._write_message, self._write_heartbeat, self.transport.loseConnection)


class _OneShotSession(ChannelSession):
    def payload_received(self, payload):
        if self.closed:
            return False
        message = messages.parse(payload) if payload else None
        kind = message.WhichOneof("union") if message is not None else None
        if kind == "test_nat_request":
            self.server.test_nat(self, message.test_nat_request, with_config=False)
        elif kind == "online_request":
            self.server.online(self, message.online_request, self.clock.seconds())
        self.close()
        return False

    def lost(self):
        self._stop_timers()
