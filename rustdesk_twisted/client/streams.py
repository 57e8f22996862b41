"""The client ends of RustDesk byte streams: TCP frames or WebSocket messages.

These protocols only translate bytes.  They turn the stream into payloads
(optionally through a secretbox :class:`~rustdesk_twisted.wire.secure.SecretStream`),
and report to callbacks, each given the stream first:

* ``on_ready`` once messages may be sent;
* ``on_message(stream, message)`` for a parsed ``RendezvousMessage``;
* ``on_payload(stream, payload)`` instead of ``on_message``, for peer-to-peer
  streams, whose payloads are ``Message``s or application bytes;
* ``on_heartbeat`` for empty frames;
* ``on_closed`` when the connection ends or could not be made.

The network that connects a stream sets ``stream.connection`` (a handle with
``local`` and ``public`` addresses) before the connection is made.
"""

from twisted.internet.protocol import Protocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
)

from ..wire import messages, secure
from ..wire.framing import FrameDecoder, FrameTooLarge, encode_frame
from ..wire.rendezvous_pb2 import KeyExchange

MAX_FRAME = 1 << 20


class _ClientStream:
    """Callbacks, close state and addresses shared by the TCP and WebSocket ends."""

    on_ready = on_message = on_payload = on_heartbeat = on_closed = None
    connection = None
    closed = False
    failure = None
    cipher = None

    def _call(self, name, *args):
        callback = getattr(self, name)
        if callback is not None:
            callback(self, *args)

    @property
    def secured(self):
        return self.cipher is not None

    _local = None

    @property
    def local(self):
        """This end's ``(host, port)``: the socket's once connected, else the bound one."""
        if self._local is not None:
            return self._local
        return self.connection.local if self.connection is not None else None

    def _connected(self):
        address = self.transport.getHost()
        self._local = (address.host, address.port)

    def connectionFailed(self, reason):
        """The network could not connect this stream (refused, timed out, bind error)."""
        self.closed = True
        self.failure = reason
        self._call("on_closed")

    def _open(self, payload):
        """Decrypt (when secured) and record a received payload; None closes the stream."""
        if self.cipher is not None:
            try:
                payload = self.cipher.open(payload)
            except secure.DecryptionError:
                self.close()
                return None
        self.received.append(payload)
        return payload

    def _deliver(self, payload):
        if self.on_payload is not None:
            self._call("on_payload", payload)
            return
        if not payload:
            self._call("on_heartbeat")
            return
        message = messages.parse(payload)
        if message is not None:
            self._call("on_message", message)


class FramedRendezvousClient(Protocol, _ClientStream):
    """The client end of a framed TCP stream (hbbs 21116/21115, hbbr 21117, peer to peer).

    ``server_key`` (32 bytes) makes it run secure_tcp: wait for the server's
    KeyExchange, verify it, answer, then encrypt.  Without it a leading
    KeyExchange is skipped, as the official readers do.  ``wait_first`` makes
    it wait for the server's first message even without a key (the
    persistent registration loop does, PROTOCOL.md section 4.2 b2 step 2).
    """

    def __init__(self, server_key=None, wait_first=False, symmetric_key=None,
                 max_frame=MAX_FRAME):
        self.server_key = server_key
        self.symmetric_key = symmetric_key
        self.wait_first = wait_first or server_key is not None
        self.decoder = FrameDecoder(max_frame)
        self.first = True
        self.skipped_key_exchange = False
        self.handshake_error = None
        self.received = []
        self.raw_frames = []

    def connectionMade(self):
        self._connected()
        if not self.wait_first:
            self._call("on_ready")

    def send(self, message):
        self.send_payload(message.SerializeToString())

    def send_payload(self, payload):
        if self.cipher is not None:
            payload = self.cipher.seal(payload)
        self.transport.write(encode_frame(payload))

    def send_heartbeat(self):
        self.transport.write(b"\x00")

    def close(self):
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge:
            self.close()
            return
        for payload in frames:
            if self.closed:
                return
            self.raw_frames.append(payload)
            payload = self._open(payload)
            if payload is None:
                return
            if self.on_payload is None and self.first:
                self.first = False
                if self._first_payload(payload):
                    continue
            self._deliver(payload)

    def _first_payload(self, payload):
        """Handle the server's first frame; True if it was consumed (section 5.2)."""
        if not payload:
            return False
        message = messages.parse(payload)
        if message is not None and message.WhichOneof("union") == "key_exchange":
            self._key_exchange(message.key_exchange)
            return True
        if self.wait_first:
            # Not a KeyExchange: continue unencrypted; the message is consumed.
            self._call("on_ready")
            return True
        return False

    def _key_exchange(self, offer):
        self.skipped_key_exchange = True
        if self.server_key is not None:
            try:
                reply, cipher = secure.client_handshake(self.server_key, list(offer.keys),
                                                        symmetric_key=self.symmetric_key)
            except secure.HandshakeError as e:
                self.handshake_error = str(e)
                self.close()
                return
            self.transport.write(encode_frame(
                messages.wrap("key_exchange", KeyExchange(keys=reply)).SerializeToString()))
            self.cipher = cipher
        if self.wait_first:
            self._call("on_ready")

    def connectionLost(self, reason):
        self.closed = True
        self._call("on_closed")


class WebSocketRendezvousClient(Protocol, _ClientStream):
    """The client end of a WebSocket (hbbs 21118, hbbr 21119), with wsproto.

    One binary message per payload; no secure_tcp (section 1.5), but peer
    sessions over a WebSocket relay still encrypt their payloads.
    """

    def __init__(self, path="/", host="hbbs", headers=()):
        self.path = path
        self.host_header = host
        self.headers = list(headers)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.open = False
        self.rejected = False
        self._buffer = b""
        self.received = []

    def connectionMade(self):
        self._connected()
        self.transport.write(self.ws.send(Request(
            host=self.host_header, target=self.path, extra_headers=self.headers)))

    def send(self, message):
        self.send_payload(message.SerializeToString())

    def send_payload(self, payload):
        if self.cipher is not None:
            payload = self.cipher.seal(payload)
        self.transport.write(self.ws.send(BytesMessage(data=payload)))

    def send_heartbeat(self):
        self.transport.write(self.ws.send(BytesMessage(data=b"")))

    def close(self):
        if self.open:
            self.open = False
            self.transport.write(self.ws.send(CloseConnection(code=1000)))
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data):
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.open = True
                self._call("on_ready")
            elif isinstance(event, RejectConnection):
                self.rejected = True
                self.transport.loseConnection()
            elif isinstance(event, BytesMessage):
                self._buffer += event.data
                if event.message_finished:
                    payload, self._buffer = self._buffer, b""
                    self._payload(payload)
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.open:
                    self.open = False
                    self.transport.write(self.ws.send(event.response()))
                self.transport.loseConnection()

    def _payload(self, payload):
        payload = self._open(payload)
        if payload is not None:
            self._deliver(payload)

    def connectionLost(self, reason):
        self.closed = True
        self.open = False
        self._call("on_closed")
