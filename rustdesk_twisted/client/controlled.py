"""B, the controlled peer: registration and answering hbbs (PROTOCOL.md sections 4.1-4.4).

B registers over UDP (RegisterPeer / RegisterPk on a 1 s timer) or over a
persistent TCP/WebSocket connection with secure_tcp and echoed heartbeats.
It answers PunchHole by punching (a fresh connection to hbbs carrying
PunchHoleSent, a 30 ms connect attempt towards A from the same local port,
then listening there), FetchLocalAddr with LocalAddr, and both RequestRelay
and relay decisions by connecting to hbbr.  Every resulting stream becomes a
:class:`~.session.ControlledSide` that signs B's key and echoes A's bytes.
"""

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall

from ..wire import addr_mangle, keys, messages, ownership
from ..wire.rendezvous_pb2 import (
    LocalAddr,
    NatType,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RegisterPkResponse,
    RelayResponse,
    RequestRelay,
)
from .rendezvous import (
    CLIENT_VERSION,
    DEDUP_WINDOW,
    DEFAULT_KEEP_ALIVE,
    PUNCH_PROBE_TIMEOUT,
    READ_TIMEOUT,
    REG_INTERVAL,
    REG_TIMEOUT,
    TIMER_TICK,
    DatagramCallback,
    RendezvousClient,
    increase_port,
    relay_destination,
)
from .session import ControlledSide
from .streams import FramedRendezvousClient, WebSocketRendezvousClient

MAX_SESSIONS = 64
MAX_RECENT = 256


class _DirectFactory(Factory):
    """Accepts A's direct connection on the punched (or LAN) port."""

    def __init__(self, peer, route):
        self.peer = peer
        self.route = route

    def buildProtocol(self, addr):
        return self.peer._session_stream(FramedRendezvousClient(), self.route, signed=True)


class ControlledPeer(RendezvousClient):
    """B: registers and answers the server's notifications.

    ``nat_type`` is B's tested NAT type; ``key_confirmed`` the persisted flag
    (False on a fresh install, so it starts with RegisterPk).  ``key`` is B's
    configured key string: the licence key it shows hbbr and, unless
    ``server_key`` is given, the key its secure_tcp verifies.
    """

    def __init__(self, host, server, peer_id, uuid=None, signing_key=None,
                 nat_type=NatType.ASYMMETRIC, transport="udp", key_confirmed=False,
                 relay_server="", server_key=None, key="", version=CLIENT_VERSION, serial=3):
        super().__init__(host, server, transport, version)
        self.id = peer_id
        self.signing_key = signing_key or SigningKey(bytes(host.random.getrandbits(8)
                                                           for _ in range(32)))
        self.pk = bytes(self.signing_key.verify_key)
        self.uuid = uuid if uuid is not None else self.new_uuid().encode()
        self.nat_type = NatType.SYMMETRIC if transport == "ws" else nat_type
        self.key_confirmed = key_confirmed
        self.relay_option = relay_server
        self.key = key
        self.server_key = server_key if server_key is not None else (
            keys.decode_public(key) if key else None)
        self.serial = serial
        self.results = []
        self.udp = None
        self.channel = None
        self.keep_alive = DEFAULT_KEEP_ALIVE
        self.sessions = set()
        self._loop = None
        self._pending_since = None
        self._last_reply = None
        self._timeouts = 0
        self._last_rebind = float("-inf")
        self._last_pk_sent = float("-inf")
        self._last_received = None
        self._recent = {}
        self._listeners = []
        self.registered_at = None

    # start / stop

    def start(self):
        if self.transport == "udp":
            self._bind()
        else:
            self._open_channel()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(TIMER_TICK, now=True)
        return self

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.udp is not None:
            self.udp.stopListening()
            self.udp = None
        if self.channel is not None:
            self.channel.close()
        for listener, timer in self._listeners:
            listener.stopListening()
            if timer.active():
                timer.cancel()
        self._listeners = []
        for session in list(self.sessions):
            session.close()

    def registered(self):
        """A Deferred firing once hbbs accepted a registration (steady RegisterPeer or OK)."""
        if self.registered_at is not None:
            return succeed(self)
        return self.wait_for("registered").addCallback(lambda _: self)

    def _bind(self):
        if self.udp is not None:
            self.udp.stopListening()
        self.udp = self.host.bind_udp(DatagramCallback(self._datagram))

    # UDP registration loop (section 4.1)

    def _tick(self):
        if self.transport != "udp":
            self._channel_tick()
            return
        now = self.clock.seconds()
        if self._pending_since is not None:
            if now - self._pending_since >= REG_TIMEOUT:
                self._timeouts += 1
                self._event("registration_timeout", count=self._timeouts)
                if self._timeouts >= 4 and now - self._last_rebind >= 60:
                    self._last_rebind = now
                    self._bind()
                self._register()
        elif self._last_reply is None or now - self._last_reply >= REG_INTERVAL:
            self._register()

    def _register(self):
        self._pending_since = self.clock.seconds()
        if self.key_confirmed:
            message = messages.wrap("register_peer", RegisterPeer(id=self.id, serial=self.serial))
        else:
            message = self._register_pk_message()
        self.udp.write(message.SerializeToString(), self.server.rendezvous)

    def _register_pk_message(self):
        return messages.wrap("register_pk", RegisterPk(id=self.id, uuid=self.uuid, pk=self.pk))

    def _datagram(self, data, source):
        message = messages.parse(data)
        if message is not None:
            self._rendezvous_message(message, via="udp")

    def _reply_received(self):
        self._pending_since = None
        self._last_reply = self.clock.seconds()
        self._timeouts = 0

    def _rendezvous_message(self, message, via):
        kind = message.WhichOneof("union")
        self._event("received", message=kind, via=via)
        if kind == "register_peer_response":
            self._reply_received()
            if message.register_peer_response.request_pk:
                self.key_confirmed = False
                self._register()
            else:
                self._registered()
        elif kind == "register_pk_response":
            self._reply_received()
            self._register_pk_result(message.register_pk_response)
        elif kind == "punch_hole":
            self._punch_hole(message.punch_hole)
        elif kind == "fetch_local_addr":
            self._fetch_local_addr(message.fetch_local_addr)
        elif kind == "request_relay":
            self._request_relay(message.request_relay)
        elif kind == "configure_update":
            self._event("config_update", serial=message.configure_update.serial)

    def _registered(self):
        first = self.registered_at is None
        self.registered_at = self.clock.seconds()
        if first:
            self._event("registered", id=self.id)

    def _register_pk_result(self, response):
        result = response.result
        self.results.append(result)
        if response.keep_alive > 0:
            self.keep_alive = float(response.keep_alive)
        if result == RegisterPkResponse.OK:
            self.key_confirmed = True
            self._registered()
        elif result == RegisterPkResponse.UUID_MISMATCH:
            old = self.id
            self.id = str(self.host.random.randrange(1_000_000_000, 2_000_000_000))
            self.key_confirmed = False
            self._event("id_changed", old=old, new=self.id)
            if self.transport == "udp":
                self._register()
            else:
                self._last_pk_sent = float("-inf")
                self._channel_tick()
        else:
            self._event("register_pk_refused",
                        result=RegisterPkResponse.Result.Name(result))

    # TCP / WebSocket registration (section 4.2 b2)

    def _open_channel(self):
        self.key_confirmed = False
        self._last_pk_sent = float("-inf")
        self._last_received = self.clock.seconds()
        self.channel = self.open_stream(
            server_key=self.server_key, wait_first=not self.websocket,
            on_ready=lambda stream: self._channel_tick(), on_message=self._channel_message,
            on_heartbeat=self._channel_heartbeat, on_closed=self._channel_closed)

    def _channel_ready(self):
        channel = self.channel
        if self.websocket:
            return channel.open
        return not channel.first

    def _channel_tick(self):
        channel = self.channel
        if channel is None or channel.closed:
            return
        now = self.clock.seconds()
        if now - self._last_received > 1.5 * self.keep_alive:
            self._event("channel_timeout")
            channel.close()
            return
        if not self._channel_ready() or self.key_confirmed:
            return
        if now - self._last_pk_sent >= REG_INTERVAL:
            self._last_pk_sent = now
            channel.send(self._register_pk_message())

    def _channel_message(self, stream, message):
        self._last_received = self.clock.seconds()
        self._rendezvous_message(message, via=self.transport)

    def _channel_heartbeat(self, stream):
        self._last_received = self.clock.seconds()
        self._event("heartbeat")
        self.channel.send_heartbeat()

    def _channel_closed(self, stream):
        self._event("channel_closed", error=stream.handshake_error
                    if isinstance(stream, FramedRendezvousClient) else None)

    # reacting to A (sections 4.3 step 2, 4.4)

    def _duplicate(self, socket_addr):
        key = addr_mangle.decode(socket_addr)
        now = self.clock.seconds()
        for old in [k for k, t in self._recent.items() if now - t >= DEDUP_WINDOW]:
            del self._recent[old]
        last = self._recent.get(key)
        if len(self._recent) < MAX_RECENT:
            self._recent[key] = now
        return last is not None

    def relay_server_for(self, suggested):
        return self.relay_option or suggested or increase_port(self.server.host_string, 1)

    def _punch_hole(self, ph):
        if self._duplicate(ph.socket_addr):
            return
        requester = addr_mangle.decode(ph.socket_addr)
        self._event("punch_hole", requester=requester, nat_type=ph.nat_type,
                    relay_server=ph.relay_server)
        if (ph.nat_type == NatType.SYMMETRIC or self.nat_type == NatType.SYMMETRIC
                or self.websocket or ph.force_relay):
            self._relay(ph.socket_addr, self.relay_server_for(ph.relay_server))
            return
        sent = messages.wrap("punch_hole_sent", PunchHoleSent(
            socket_addr=ph.socket_addr, id=self.id,
            relay_server=self.relay_server_for(ph.relay_server),
            nat_type=self.nat_type, version=self.version))

        def punch(stream):
            local_port = stream.local[1]
            # The 30 ms connect attempt from P_B to A opens B's NAT for A; if A's
            # SYN crosses it (simultaneous open), that connection is the session.
            self.host.connect_tcp(requester, self._session_stream(
                FramedRendezvousClient(), "direct", signed=True, quiet=True),
                local_port=local_port, timeout=PUNCH_PROBE_TIMEOUT)
            stream.send(sent)
            stream.close()
            self._listen_direct(local_port, "direct")
            self._event("punched", local=stream.local, public=stream.connection.public,
                        requester=requester)

        self.open_stream(on_ready=punch)

    def _fetch_local_addr(self, fla):
        if self._duplicate(fla.socket_addr):
            return
        requester = addr_mangle.decode(fla.socket_addr)
        self._event("fetch_local_addr", requester=requester, relay_server=fla.relay_server)
        if self.websocket:
            self._relay(fla.socket_addr, self.relay_server_for(fla.relay_server))
            return

        def answer(stream):
            local = stream.local
            tm = addr_mangle.timestamp(self.clock.seconds())
            stream.send(messages.wrap("local_addr", LocalAddr(
                id=self.id, socket_addr=addr_mangle.encode(requester, tm),
                local_addr=addr_mangle.encode(local, tm),
                relay_server=self.relay_server_for(fla.relay_server), version=self.version)))
            stream.close()
            self._listen_direct(local[1], "local")
            self._event("local_addr_sent", local=local)

        self.open_stream(on_ready=answer)

    def _listen_direct(self, port, route):
        """Accept A on ``port`` for READ_TIMEOUT seconds (section 4.3 step 2)."""
        try:
            listener = self.host.listen_tcp(port, _DirectFactory(self, route))
        except OSError as e:
            self._event("listen_failed", port=port, error=str(e))
            return
        entry = []

        def expire():
            listener.stopListening()
            if entry[0] in self._listeners:
                self._listeners.remove(entry[0])

        entry.append((listener, self.clock.callLater(READ_TIMEOUT, expire)))
        self._listeners.append(entry[0])

    def _relay(self, socket_addr, relay_server):
        """d1: B chose relay; a fresh uuid goes to A through hbbs, then B goes to hbbr."""
        relay_uuid = self.new_uuid()
        self.one_shot(messages.wrap("relay_response", RelayResponse(
            socket_addr=socket_addr, uuid=relay_uuid, relay_server=relay_server, id=self.id,
            version=self.version)))
        self._event("relay", uuid=relay_uuid, relay_server=relay_server,
                    requester=addr_mangle.decode(socket_addr))
        self._connect_relay(relay_server, relay_uuid, signed=True)

    def _request_relay(self, rr):
        """d2: A asked for the relay; answer with the bare RelayResponse, then go to rr's relay."""
        if self._duplicate(rr.socket_addr):
            return
        self.one_shot(messages.wrap("relay_response", RelayResponse(
            socket_addr=rr.socket_addr, version=self.version)))
        self._event("relay", uuid=rr.uuid, relay_server=rr.relay_server,
                    requester=addr_mangle.decode(rr.socket_addr), request=rr)
        self._connect_relay(rr.relay_server, rr.uuid, signed=rr.secure)

    def _connect_relay(self, relay_server, relay_uuid, signed):
        """RequestRelay{licence_key, uuid} to hbbr, SignedId right behind it (G11)."""
        try:
            destination = relay_destination(relay_server, self.websocket)
        except ValueError:
            self._event("relay_failed", relay_server=relay_server, reason="bad relay address")
            return
        stream = WebSocketRendezvousClient(path="/") if self.websocket else \
            FramedRendezvousClient()
        request = messages.wrap("request_relay", RequestRelay(licence_key=self.key,
                                                              uuid=relay_uuid))
        self._session_stream(stream, "relay", signed=signed, first=request,
                             relay_server=relay_server)
        self.host.connect_tcp(destination, stream)

    def _session_stream(self, stream, route, signed, first=None, relay_server=None,
                        quiet=False):
        """Attach a B-side peer session to ``stream``; it starts when the stream is ready."""
        if len(self.sessions) >= MAX_SESSIONS:
            stream.on_ready = lambda s: s.close()
            return stream
        session = ControlledSide(route, self.id, self.signing_key, signed=signed,
                                 on_key_rejected=self._key_rejected)
        session.attach(stream)

        def ready(s):
            self.sessions.add(session)
            if first is not None:
                s.send(first)
            session.start()

        def closed(_):
            self.sessions.discard(session)
            if stream.failure is not None and not quiet:
                self._event(f"{route}_failed", relay_server=relay_server,
                            reason=stream.failure.getErrorMessage())
            return _

        stream.on_ready = ready
        session.ready.addCallback(lambda s: self._event(
            "session", route=route, secured=s.secured, relay_server=relay_server))
        session.ready.addErrback(lambda f: None)
        session.closed.addCallback(closed)
        return stream

    def _key_rejected(self):
        """A could not verify our key (section 5.5): register the key again."""
        self.key_confirmed = False
        self._event("key_rejected")

    # Change ID (section 4.2 b1)

    def change_id(self, new_id):
        """A Deferred firing with the RegisterPkResponse result (None if no reply).

        hbbs answers the bare request NOT_SUPPORT, then sends a challenge (a
        KeyExchange with one 32-byte key); the request goes again on the same
        connection with our key's signature over it (wire/ownership.py).  A
        server that sends no challenge leaves its first answer as the result.
        """
        result = Deferred()
        old_id = self.id
        request = RegisterPk(old_id=old_id, id=new_id, uuid=self.uuid)
        answers = []

        def finish(outcome):
            if not result.called:
                if outcome == RegisterPkResponse.OK:
                    self.id = new_id
                result.callback(outcome)

        def answered(stream, message):
            kind = message.WhichOneof("union")
            if kind == "register_pk_response":
                answers.append(message.register_pk_response.result)
                if len(answers) > 1 or answers[0] != RegisterPkResponse.NOT_SUPPORT:
                    finish(answers[-1])
                    stream.close()
            elif kind == "key_exchange" and answers and request.pk == b"":
                challenge = list(message.key_exchange.keys)
                if len(challenge) == 1 and len(challenge[0]) == ownership.CHALLENGE_SIZE:
                    request.pk = ownership.sign_change_id(self.signing_key, challenge[0],
                                                          old_id, new_id)
                    stream.send(messages.wrap("register_pk", request))

        def closed(stream):
            finish(answers[-1] if answers else None)

        self.open_stream(on_ready=lambda s: s.send(messages.wrap("register_pk", request)),
                         on_message=answered, on_closed=closed)
        return result
