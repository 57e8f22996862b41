"""A, the controlling peer: asks hbbs for B and follows the answer (PROTOCOL.md 4.3, 4.4, 6.2).

``connect(peer_id)`` sends PunchHoleRequest (up to 3 times on one
connection, secured when A is logged in), verifies the signed IdPk with the
server key, then connects directly from the rendezvous connection's local
port, or falls back to asking B for the relay (d2, each attempt on a new
connection).  ``open_session(outcome)`` joins the relay when needed and runs
the peer handshake of section 5.5 over the resulting stream.
"""

from twisted.internet.defer import Deferred, fail

from ..wire import addr_mangle, keys, messages
from ..wire.rendezvous_pb2 import NatType, PunchHoleRequest, PunchHoleResponse, RequestRelay
from .rendezvous import (
    CLIENT_VERSION,
    DIRECT_TIMEOUT,
    DIRECT_TIMEOUT_SHORT,
    PUBLIC_SERVER_KEY,
    PUNCH_ATTEMPTS,
    READ_TIMEOUT,
    REG_TIMEOUT,
    RendezvousClient,
    relay_destination,
)
from .session import ControllingSide, SessionError
from .streams import FramedRendezvousClient, WebSocketRendezvousClient

FAILURE_TEXT = {
    PunchHoleResponse.ID_NOT_EXIST: "ID does not exist",
    PunchHoleResponse.OFFLINE: "Remote desktop is offline",
    PunchHoleResponse.LICENSE_MISMATCH: "Key mismatch",
    PunchHoleResponse.LICENSE_OVERUSE: "Key overuse",
}


class ConnectOutcome:
    """What A ends up with after asking hbbs for B.

    ``kind``: "direct", "local", "relay" or "failure".  ``session`` is the
    connected :class:`~.session.ControllingSide` of a direct or local outcome.
    """

    def __init__(self, kind, **fields):
        self.kind = kind
        self.peer_addr = fields.get("peer_addr")
        self.signed_pk = fields.get("signed_pk", b"")
        self.pk = fields.get("pk")
        self.relay_server = fields.get("relay_server", "")
        self.uuid = fields.get("uuid", "")
        self.nat_type = fields.get("nat_type")
        self.failure = fields.get("failure", "")
        self.response = fields.get("response")
        self.secured = fields.get("secured", False)
        self.attempts = fields.get("attempts", 0)
        self.local_port = fields.get("local_port")
        self.session = fields.get("session")
        self.direct_error = fields.get("direct_error", "")
        self.relay_requested = fields.get("relay_requested", False)

    def __repr__(self):
        return (f"ConnectOutcome({self.kind!r}, peer_addr={self.peer_addr!r}, "
                f"relay_server={self.relay_server!r}, uuid={self.uuid!r}, "
                f"failure={self.failure!r})")


class ControllingPeer(RendezvousClient):
    """A.  ``key`` is A's configured key string (its base64 decodes to the
    server's public key used to verify signed IdPks; empty means the public
    server's key); ``token`` a login token, which together with a key makes A
    run secure_tcp.
    """

    def __init__(self, host, server, key=PUBLIC_SERVER_KEY, token="",
                 nat_type=NatType.ASYMMETRIC, transport="tcp", version=CLIENT_VERSION,
                 licence_key=None):
        super().__init__(host, server, transport, version)
        self.key = key
        self.token = token
        self.licence_key = licence_key if licence_key is not None else (key or PUBLIC_SERVER_KEY)
        self.nat_type = NatType.SYMMETRIC if transport == "ws" else nat_type
        self.streams = []

    @property
    def server_public_key(self):
        return keys.decode_public(self.key or PUBLIC_SERVER_KEY)

    @property
    def wants_secure(self):
        return not self.websocket and bool(self.key) and bool(self.token)

    def connect(self, peer_id, force_relay=False, conn_type=0):
        """Ask for ``peer_id``; a Deferred firing with a :class:`ConnectOutcome`."""
        return _Connect(self, peer_id, force_relay, conn_type).start()

    def open_session(self, outcome, peer_id=None):
        """The handshaken :class:`~.session.ControllingSide` for a successful outcome.

        Direct and local outcomes already hold the connected stream; a relay
        outcome connects to hbbr with ``RequestRelay{licence_key, id, uuid}``.
        """
        if outcome.kind in ("direct", "local"):
            return outcome.session.ready
        if outcome.kind != "relay":
            return fail(SessionError(outcome.failure or "no connection to open a session on"))
        try:
            destination = relay_destination(outcome.relay_server, self.websocket)
        except ValueError as e:
            return fail(SessionError(str(e)))
        peer_id = peer_id if peer_id is not None else outcome.peer_id
        session = ControllingSide("relay", peer_id, outcome.pk)
        stream = WebSocketRendezvousClient(path="/") if self.websocket else \
            FramedRendezvousClient()
        session.attach(stream)
        request = messages.wrap("request_relay", RequestRelay(
            licence_key=self.licence_key, id=peer_id, uuid=outcome.uuid, conn_type=0))

        def ready(s):
            s.send(request)
            session.start()

        stream.on_ready = ready
        self.host.connect_tcp(destination, stream)
        # hbbr never answers; a pairing that never happens ends in hbbr's 30 s
        # timeout, and READ_TIMEOUT bounds our own wait for B's SignedId.
        timer = self.clock.callLater(READ_TIMEOUT, stream.close)

        def settled(result):
            if timer.active():
                timer.cancel()
            return result

        return session.ready.addBoth(settled)


class _Connect:
    """One connection attempt of A, as a small state machine on the clock."""

    def __init__(self, peer, peer_id, force_relay, conn_type):
        self.peer = peer
        self.peer_id = peer_id
        self.force_relay = force_relay
        self.conn_type = conn_type
        self.clock = peer.clock
        self.result = Deferred()
        self.attempts = 0
        self.stream = None
        self.timer = None
        self.relay_attempts = 0
        self.details = {}

    def start(self):
        peer = self.peer
        server_key = peer.server_public_key if peer.wants_secure else None
        self.stream = peer.open_stream(server_key=server_key, on_ready=self._send_request,
                                       on_message=self._message, on_closed=self._closed)
        peer.streams.append(self.stream)
        if server_key is not None and not self.result.called:
            # secure_tcp: the server must speak within READ_TIMEOUT.
            self.timer = self.clock.callLater(READ_TIMEOUT, self._fail,
                                              "Failed to secure tcp: deadline has elapsed")
        return self.result

    def _cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _closed(self, stream):
        if self.stream is None:
            self.stream = stream  # the connection failed before open_stream returned
        if self.result.called or stream is not self.stream or self.details:
            return
        if stream.failure is not None:
            self._fail("Failed to connect to rendezvous server: "
                       + stream.failure.getErrorMessage())
        elif getattr(stream, "handshake_error", None):
            self._fail(stream.handshake_error)

    def _send_request(self, stream=None):
        self._cancel_timer()
        stream = stream or self.stream
        if stream.closed:
            return
        self.attempts += 1
        peer = self.peer
        nat_type = NatType.SYMMETRIC if self.force_relay else peer.nat_type
        stream.send(messages.wrap("punch_hole_request", PunchHoleRequest(
            id=self.peer_id, nat_type=nat_type, licence_key=peer.licence_key,
            conn_type=self.conn_type, token=peer.token, version=peer.version,
            force_relay=self.force_relay)))
        if self.attempts < PUNCH_ATTEMPTS:
            self.timer = self.clock.callLater(self.attempts * REG_TIMEOUT, self._send_request)
        else:
            self.timer = self.clock.callLater(self.attempts * REG_TIMEOUT, self._fail,
                                              "Failed to connect via rendezvous server")

    def _fail(self, text, response=None):
        self._finish(ConnectOutcome("failure", **dict(self.details, failure=text,
                                                      response=response)))

    def _finish(self, outcome):
        self._cancel_timer()
        if self.result.called:
            return
        outcome.attempts = self.attempts
        outcome.secured = self.stream.secured
        outcome.peer_id = self.peer_id
        if not self.stream.closed:
            self.stream.close()
        self.result.callback(outcome)

    def _verify(self, signed):
        server_key = self.peer.server_public_key
        if not signed or server_key is None:
            return None
        return keys.verify_id_pk(server_key, signed, self.peer_id)

    def _message(self, stream, message):
        kind = message.WhichOneof("union")
        if self.result.called:
            return
        if kind == "punch_hole_response":
            self._punch_hole_response(message)
        elif kind == "relay_response":
            self._relay_response(message)

    def _punch_hole_response(self, message):
        ph = message.punch_hole_response
        if not ph.socket_addr:
            self._fail(ph.other_failure or FAILURE_TEXT.get(ph.failure, "unknown failure"),
                       message)
            return
        self._cancel_timer()
        peer_addr = addr_mangle.decode(ph.socket_addr)
        is_local = ph.WhichOneof("union") == "is_local" and ph.is_local
        local_port = self.stream.local[1]
        self.details = dict(peer_addr=peer_addr, signed_pk=ph.pk, pk=self._verify(ph.pk),
                            relay_server=ph.relay_server, response=message,
                            nat_type=None if is_local else ph.nat_type,
                            local_port=local_port)
        self.stream.close()
        if self.force_relay:
            self._no_direct("relay forced")
            return
        kind = "local" if is_local else "direct"
        session = ControllingSide(kind, self.peer_id, self.details["pk"])
        stream = session.attach(FramedRendezvousClient())

        def connected(s):
            session.start()
            if not self.result.called:
                self._finish(ConnectOutcome(kind, session=session, **self.details))

        session_closed = stream.on_closed

        def closed(s):
            if s.failure is not None and not self.result.called:
                # The abandoned session's error is this fallback, not a failure to report.
                session.ready.addErrback(lambda _: None)
                self._no_direct(s.failure.getErrorMessage())
            session_closed(s)

        stream.on_ready = connected
        stream.on_closed = closed
        short = is_local or ph.nat_type == NatType.SYMMETRIC
        self.peer.host.connect_tcp(peer_addr, stream, local_port=local_port,
                                   timeout=DIRECT_TIMEOUT_SHORT if short else DIRECT_TIMEOUT)

    def _no_direct(self, reason):
        self.details["direct_error"] = reason
        if not self.details["relay_server"]:
            self._fail("Failed to make direct connection to remote desktop",
                       self.details["response"])
            return
        self._request_relay()

    def _request_relay(self):
        """d2: RequestRelay on a new connection, up to 3 attempts of READ_TIMEOUT."""
        self.relay_attempts += 1
        self.relay_uuid = self.peer.new_uuid()
        peer = self.peer
        server_key = peer.server_public_key if peer.wants_secure else None
        request = messages.wrap("request_relay", RequestRelay(
            id=self.peer_id, uuid=self.relay_uuid, relay_server=self.details["relay_server"],
            secure=self.details["pk"] is not None, token=peer.token, conn_type=self.conn_type))
        self.stream = peer.open_stream(server_key=server_key,
                                       on_ready=lambda stream: stream.send(request),
                                       on_message=self._message)
        peer.streams.append(self.stream)
        if self.relay_attempts < PUNCH_ATTEMPTS:
            self.timer = self.clock.callLater(READ_TIMEOUT, self._retry_relay)
        else:
            self.timer = self.clock.callLater(READ_TIMEOUT, self._fail,
                                              "Failed to connect via relay server")

    def _retry_relay(self):
        self.stream.close()
        self._request_relay()

    def _relay_response(self, message):
        rr = message.relay_response
        if rr.refuse_reason:
            self._fail(rr.refuse_reason, message)
            return
        if self.relay_attempts:
            # d2: our own uuid and the relay we named.
            details = dict(self.details, response=message, uuid=self.relay_uuid,
                           relay_requested=True)
            self._finish(ConnectOutcome("relay", **details))
            return
        signed = rr.pk if rr.WhichOneof("union") == "pk" else b""
        self._finish(ConnectOutcome("relay", signed_pk=signed, pk=self._verify(signed),
                                    relay_server=rr.relay_server, uuid=rr.uuid,
                                    response=message))
