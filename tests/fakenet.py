"""An in-memory network for scenario tests: hosts, NAT boxes, UDP, TCP and WebSocket.

Nothing here touches a socket or the real time.  One ``Clock`` drives every
timer; :meth:`FakeNetwork.flush` moves queued datagrams and pumps every TCP
connection (``twisted.test.iosim``) until the network is quiet.

The pieces:

* :class:`FakeNAT`: maps private ``(ip, port)`` endpoints to public ones by the
  rules of its kind (full-cone, address-restricted, port-restricted,
  symmetric) and filters inbound traffic the same way.
* :class:`FakeHost`: a machine with a private (or public) IP, optionally
  behind a NAT; it binds UDP protocols, listens for and opens TCP
  connections.  Servers are hosts without NAT whose listeners can be
  "dual-stack" (they then see IPv4 peers as ``::ffff:a.b.c.d``, as an hbbs
  bound to ``::`` does).
* Client ends of rendezvous connections (:class:`FramedRendezvousClient`
  for TCP with optional secure_tcp, :class:`WebSocketRendezvousClient`).
* Simulated RustDesk clients following PROTOCOL.md section 4:
  :class:`ControlledPeer` (B) and :class:`ControllingPeer` (A).
"""

import base64
import binascii
import random
import uuid as uuidlib

from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.test import iosim
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from rustdesk_twisted.wire import addr_mangle, keys, messages, secure
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame
from rustdesk_twisted.wire.rendezvous_pb2 import (
    KeyExchange,
    LocalAddr,
    NatType,
    OnlineRequest,
    PunchHoleRequest,
    PunchHoleResponse,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RegisterPkResponse,
    RelayResponse,
    RequestRelay,
    TestNatRequest,
)

FULL_CONE = "full-cone"
ADDRESS_RESTRICTED = "address-restricted"
PORT_RESTRICTED = "port-restricted"
SYMMETRIC = "symmetric"
NAT_KINDS = (FULL_CONE, ADDRESS_RESTRICTED, PORT_RESTRICTED, SYMMETRIC)

CLIENT_VERSION = "1.4.9"
PUBLIC_SERVER_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="

# Client timings (PROTOCOL.md sections 4.1-4.3, 7.7), in seconds.
TIMER_TICK = 1.0
REG_INTERVAL = 15.0
REG_TIMEOUT = 3.0
READ_TIMEOUT = 18.0
PUNCH_ATTEMPTS = 3
DEDUP_WINDOW = 0.1
DEFAULT_KEEP_ALIVE = 60.0


class ConnectionRefused(Exception):
    """Nothing listens at the destination, or the server refused to build a protocol."""


# NAT and network


class FakeNAT:
    """A NAT box with one public IP.

    Mapping: full-cone and both restricted kinds keep one public port per
    private endpoint (endpoint-independent mapping); symmetric allocates a
    new public port per (private endpoint, destination).  Filtering: full-cone
    accepts anything on a mapped port, address-restricted only from IPs the
    endpoint has sent to, port-restricted and symmetric only from exact
    ``(ip, port)`` destinations it has sent to.
    """

    def __init__(self, kind, public_ip, first_port=40000):
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}")
        self.kind = kind
        self.public_ip = public_ip
        self.hosts = {}
        self._next_port = first_port
        self._mappings = {}
        self._private = {}
        self._sent_to = {}

    def __repr__(self):
        return f"FakeNAT({self.kind!r}, {self.public_ip!r})"

    def outbound(self, proto, private, destination):
        """The public endpoint a packet from ``private`` to ``destination`` leaves with."""
        scope = destination if self.kind == SYMMETRIC else None
        key = (proto, private, scope)
        port = self._mappings.get(key)
        if port is None:
            port = self._next_port
            self._next_port += 1
            self._mappings[key] = port
            self._private[(proto, port)] = private
        self._sent_to.setdefault((proto, port), set()).add(tuple(destination))
        return (self.public_ip, port)

    def inbound(self, proto, public_port, source):
        """The private endpoint a packet from ``source`` to ``public_port`` reaches, or None."""
        private = self._private.get((proto, public_port))
        if private is None:
            return None
        sent = self._sent_to.get((proto, public_port), ())
        if self.kind == FULL_CONE:
            allowed = True
        elif self.kind == ADDRESS_RESTRICTED:
            allowed = any(d[0] == source[0] for d in sent)
        else:
            allowed = tuple(source) in sent
        return private if allowed else None


def _plain_host(host):
    return addr_mangle.try_into_v4(host)


class FakeNetwork:
    """Hosts, NATs, queued datagrams and pumped TCP connections on one clock."""

    def __init__(self, clock, seed=0):
        self.clock = clock
        self.random = random.Random(seed)
        self.nats = {}
        self.public_hosts = {}
        self.datagrams = []
        self.dropped = []
        self.connections = []

    # topology

    def add_nat(self, kind, public_ip):
        nat = FakeNAT(kind, public_ip)
        self.nats[public_ip] = nat
        return nat

    def add_host(self, ip, nat=None, dual_stack=False):
        host = FakeHost(self, ip, nat, dual_stack)
        if nat is None:
            self.public_hosts[ip] = host
        else:
            nat.hosts[ip] = host
        return host

    def _resolve(self, proto, source, destination):
        """The host and private port a packet from public ``source`` to ``destination`` reaches."""
        ip, port = _plain_host(destination[0]), destination[1]
        nat = self.nats.get(ip)
        if nat is not None:
            private = nat.inbound(proto, port, source)
            if private is None:
                return None, None
            return nat.hosts.get(private[0]), private[1]
        return self.public_hosts.get(ip), port

    # UDP

    def send_datagram(self, host, local_port, data, destination):
        destination = (_plain_host(destination[0]), destination[1])
        source = host.public_endpoint("udp", local_port, destination)
        self.datagrams.append((bytes(data), source, destination))

    def _deliver_datagrams(self):
        moved = False
        while self.datagrams:
            data, source, destination = self.datagrams.pop(0)
            moved = True
            host, port = self._resolve("udp", source, destination)
            endpoint = host.udp.get(port) if host is not None else None
            if endpoint is None:
                self.dropped.append((data, source, destination))
                continue
            endpoint.protocol.datagramReceived(data, host.seen(source))
        return moved

    # TCP

    def connect_tcp(self, host, destination, protocol, local_port=None):
        local_port = local_port if local_port is not None else host.ephemeral_port()
        destination = (_plain_host(destination[0]), destination[1])
        source = host.public_endpoint("tcp", local_port, destination)
        server_host, server_port = self._resolve("tcp", source, destination)
        factory = server_host.listeners.get(server_port) if server_host is not None else None
        if factory is None:
            raise ConnectionRefused(destination)
        seen = server_host.address_of("TCP", source)
        server_protocol = factory.buildProtocol(seen)
        if server_protocol is None:
            raise ConnectionRefused(destination)
        server_transport = iosim.FakeTransport(
            server_protocol, isServer=True,
            hostAddress=IPv4Address("TCP", destination[0], destination[1]), peerAddress=seen)
        client_transport = iosim.FakeTransport(
            protocol, isServer=False, hostAddress=IPv4Address("TCP", host.ip, local_port),
            peerAddress=IPv4Address("TCP", destination[0], destination[1]))
        pump = iosim.connect(server_protocol, server_transport, protocol, client_transport,
                             greet=False, clock=self.clock)
        connection = FakeConnection(pump, (host.ip, local_port), source, destination)
        self.connections.append(connection)
        return connection

    def tcp_reachable(self, host, local_port, destination):
        """Would a SYN from ``host:local_port`` reach a listener at ``destination`` now?

        Used for the direct connection after a punch: it goes through the
        sender's NAT (creating its mapping) and the receiver's filter.  A
        private destination is reached only inside the sender's own LAN.
        """
        destination = (_plain_host(destination[0]), destination[1])
        if host.nat is not None and destination[0] in host.nat.hosts:
            target, port = host.nat.hosts[destination[0]], destination[1]
        else:
            source = host.public_endpoint("tcp", local_port, destination)
            target, port = self._resolve("tcp", source, destination)
        return target is not None and target.is_listening(port)

    def flush(self):
        """Deliver datagrams and pump connections until nothing moves."""
        for _ in range(10_000):
            moved = self._deliver_datagrams()
            for connection in list(self.connections):
                if connection.pump.pump():
                    moved = True
                if connection.finished:
                    self.connections.remove(connection)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def advance(self, seconds, step=TIMER_TICK):
        """Let ``seconds`` pass in steps, flushing after each one."""
        self.flush()
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            self.clock.advance(delta)
            remaining -= delta
            self.flush()

    def new_uuid(self):
        return str(uuidlib.UUID(int=self.random.getrandbits(128), version=4))


class FakeConnection:
    """One pumped TCP connection: ``local`` (private), ``public`` (as the server sees it)."""

    def __init__(self, pump, local, public, destination):
        self.pump = pump
        self.local = local
        self.public = public
        self.destination = destination

    @property
    def client_transport(self):
        return self.pump.clientIO

    @property
    def server_transport(self):
        return self.pump.serverIO

    @property
    def server_protocol(self):
        return self.pump.server

    @property
    def finished(self):
        return self.pump.clientIO.disconnected and self.pump.serverIO.disconnected


class FakeDatagramPort:
    """The UDP transport a bound DatagramProtocol writes through."""

    def __init__(self, host, port, protocol):
        self.host = host
        self.port = port
        self.protocol = protocol
        self.written = []

    def write(self, data, address):
        self.written.append((bytes(data), address))
        self.host.network.send_datagram(self.host, self.port, data, address)

    def getHost(self):
        return IPv4Address("UDP", self.host.ip, self.port)

    def stopListening(self):
        self.host.udp.pop(self.port, None)
        self.protocol.doStop()


class FakeHost:
    """A machine on the fake network."""

    def __init__(self, network, ip, nat=None, dual_stack=False):
        self.network = network
        self.ip = ip
        self.nat = nat
        self.dual_stack = dual_stack
        self.udp = {}
        self.listeners = {}
        self.direct_listeners = {}
        self._next_port = 50000

    def __repr__(self):
        return f"FakeHost({self.ip!r}, {self.nat!r})"

    @property
    def public_ip(self):
        return self.nat.public_ip if self.nat is not None else self.ip

    def ephemeral_port(self):
        self._next_port += 1
        return self._next_port

    def public_endpoint(self, proto, local_port, destination):
        if self.nat is None:
            return (self.ip, local_port)
        return self.nat.outbound(proto, (self.ip, local_port), destination)

    def seen(self, source):
        """``source`` as this host's sockets report it."""
        host = source[0]
        if self.dual_stack and ":" not in host:
            host = "::ffff:" + host
        return (host, source[1])

    def address_of(self, kind, source):
        host, port = self.seen(source)
        return IPv6Address(kind, host, port) if ":" in host else IPv4Address(kind, host, port)

    def bind_udp(self, protocol, port=None):
        port = port if port is not None else self.ephemeral_port()
        transport = FakeDatagramPort(self, port, protocol)
        self.udp[port] = transport
        protocol.makeConnection(transport)
        return transport

    def listen_tcp(self, port, factory):
        self.listeners[port] = factory

    def connect_tcp(self, destination, protocol, local_port=None):
        return self.network.connect_tcp(self, destination, protocol, local_port)

    def listen_direct(self, port, seconds):
        """Accept a peer's direct connection on ``port`` for ``seconds`` (after a punch)."""
        self.direct_listeners[port] = self.network.clock.seconds() + seconds

    def is_listening(self, port):
        until = self.direct_listeners.get(port)
        return until is not None and self.network.clock.seconds() < until


# Client ends of rendezvous connections


class _ClientStream:
    """What the simulated clients need from a rendezvous connection.

    Callbacks, each given this stream first: ``on_ready`` once messages may
    be sent, ``on_message(stream, message)``, ``on_heartbeat`` for empty
    frames, ``on_closed``.
    """

    on_ready = on_message = on_heartbeat = on_closed = None
    connection = None
    closed = False

    def _call(self, name, *args):
        callback = getattr(self, name)
        if callback is not None:
            callback(self, *args)

    @property
    def local(self):
        return self.connection.local if self.connection is not None else None


class FramedRendezvousClient(Protocol, _ClientStream):
    """The client end of TCP 21116/21115: frames, KeyExchange handling, secretbox.

    ``server_key`` (32 bytes) makes it run secure_tcp: wait for the server's
    KeyExchange, verify it, answer, then encrypt.  Without it a leading
    KeyExchange is skipped, as the official readers do.  ``wait_first`` makes
    it wait for the server's first message even without a key (the
    persistent registration loop does, section 4.2 b2 step 2).
    """

    def __init__(self, server_key=None, wait_first=False, symmetric_key=None,
                 max_frame=1 << 20):
        self.server_key = server_key
        self.symmetric_key = symmetric_key
        self.wait_first = wait_first or server_key is not None
        self.decoder = FrameDecoder(max_frame)
        self.stream = None
        self.first = True
        self.skipped_key_exchange = False
        self.handshake_error = None
        self.received = []
        self.raw_frames = []

    @property
    def secured(self):
        return self.stream is not None

    def connectionMade(self):
        if not self.wait_first:
            self._call("on_ready")

    def send(self, message):
        payload = message.SerializeToString()
        if self.stream is not None:
            payload = self.stream.seal(payload)
        self.transport.write(encode_frame(payload))

    def send_heartbeat(self):
        self.transport.write(b"\x00")

    def close(self):
        self.transport.loseConnection()

    def dataReceived(self, data):
        for payload in self.decoder.feed(data):
            self.raw_frames.append(payload)
            if self.stream is not None:
                payload = self.stream.open(payload)
            self.received.append(payload)
            if not payload:
                self.first = False
                self._call("on_heartbeat")
                continue
            message = messages.parse(payload)
            if message is None:
                continue
            if self.first:
                self.first = False
                if message.WhichOneof("union") == "key_exchange":
                    self._key_exchange(message.key_exchange)
                    continue
                if self.wait_first:
                    # Not a KeyExchange: continue unencrypted; the message is consumed.
                    self._call("on_ready")
                    continue
            self._call("on_message", message)

    def _key_exchange(self, offer):
        self.skipped_key_exchange = True
        if self.server_key is not None:
            try:
                reply, stream = secure.client_handshake(self.server_key, list(offer.keys),
                                                        symmetric_key=self.symmetric_key)
            except secure.HandshakeError as e:
                self.handshake_error = str(e)
                self.close()
                return
            self.transport.write(encode_frame(
                messages.wrap("key_exchange", KeyExchange(keys=reply)).SerializeToString()))
            self.stream = stream
        if self.wait_first:
            self._call("on_ready")

    def connectionLost(self, reason):
        self.closed = True
        self._call("on_closed")


class WebSocketRendezvousClient(Protocol, _ClientStream):
    """The client end of WebSocket 21118, with wsproto: one binary message per protobuf."""

    def __init__(self, path="/", host="hbbs", headers=()):
        self.path = path
        self.host_header = host
        self.headers = list(headers)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.open = False
        self.rejected = False
        self._buffer = b""
        self.received = []

    secured = False

    def connectionMade(self):
        self.transport.write(self.ws.send(Request(
            host=self.host_header, target=self.path, extra_headers=self.headers)))

    def send(self, message):
        self.transport.write(self.ws.send(BytesMessage(data=message.SerializeToString())))

    def send_heartbeat(self):
        self.transport.write(self.ws.send(BytesMessage(data=b"")))

    def send_text(self, text):
        self.transport.write(self.ws.send(TextMessage(data=text)))

    def close(self):
        if self.open:
            self.open = False
            self.transport.write(self.ws.send(CloseConnection(code=1000)))
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
                    self.received.append(payload)
                    if not payload:
                        self._call("on_heartbeat")
                        continue
                    message = messages.parse(payload)
                    if message is not None:
                        self._call("on_message", message)
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.open:
                    self.open = False
                    self.transport.write(self.ws.send(event.response()))
                self.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed = True
        self.open = False
        self._call("on_closed")


# Simulated RustDesk clients


def increase_port(address, delta):
    """The client's ``increase_port``: ``host:port`` with the port moved by ``delta``.

    A missing port counts as 21116; IPv6 hosts come in brackets.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
        host, port = address, "21116"
    return f"{host}:{int(port) + delta}"


class ServerAddress:
    """Where a client finds hbbs: ``ip`` and the base ``port`` (21116)."""

    def __init__(self, ip, port=21116):
        self.ip = ip
        self.port = port

    @property
    def rendezvous(self):
        return (self.ip, self.port)

    @property
    def nat_test(self):
        return (self.ip, self.port - 1)

    @property
    def websocket(self):
        return (self.ip, self.port + 2)

    @property
    def host_string(self):
        return f"{self.ip}:{self.port}"


class RendezvousClient:
    """What A and B share: connections to hbbs, the NAT test, the online query.

    ``transport``: "udp" (B registers over UDP; A and B's one-shot
    connections use TCP), "tcp" (B registers over a persistent TCP
    connection, as with disable-udp or a proxy) or "ws" (everything over
    WebSocket, NAT type SYMMETRIC).
    """

    def __init__(self, host, server, transport="udp", version=CLIENT_VERSION):
        self.host = host
        self.server = server
        self.transport = transport
        self.version = version
        self.network = host.network
        self.clock = host.network.clock
        self.events = []

    @property
    def websocket(self):
        return self.transport == "ws"

    def _event(self, name, **details):
        self.events.append((name, details))

    def events_of(self, name):
        return [details for n, details in self.events if n == name]

    def open_stream(self, server_key=None, wait_first=False, local_port=None,
                    destination=None, ws_headers=(), tcp=False, **callbacks):
        """A new rendezvous connection (WebSocket in WS mode); returns the client end.

        ``callbacks`` (on_ready, on_message, on_heartbeat, on_closed) are set
        before connecting, because a TCP client is ready at once.
        """
        if self.websocket and not tcp:
            stream = WebSocketRendezvousClient(headers=ws_headers)
            destination = destination or self.server.websocket
        else:
            stream = FramedRendezvousClient(server_key=server_key, wait_first=wait_first)
            destination = destination or self.server.rendezvous
        for name, callback in callbacks.items():
            setattr(stream, name, callback)
        stream.connection = self.host.connect_tcp(destination, stream, local_port)
        return stream

    def one_shot(self, message, local_port=None):
        """B's fresh connection carrying one plaintext message, closed at once (G30)."""
        def ready(stream):
            stream.send(message)
            stream.close()

        return self.open_stream(local_port=local_port, on_ready=ready)

    def test_nat(self, serial=3):
        """The NAT test of section 4.5: returns a Deferred firing with the NatType."""
        if self.websocket:
            return _succeed(NatType.SYMMETRIC)
        result = Deferred()
        ports = []
        local_port = self.host.ephemeral_port()

        def ask(destination):
            def answered(stream, message):
                if message.WhichOneof("union") != "test_nat_response":
                    return
                ports.append(message.test_nat_response.port)
                stream.close()
                if len(ports) == 1:
                    ask(self.server.nat_test)
                    return
                first, second = ports
                if first > 0 and first == second:
                    result.callback(NatType.ASYMMETRIC)
                elif first > 0 and second > 0:
                    result.callback(NatType.SYMMETRIC)
                else:
                    result.callback(NatType.UNKNOWN_NAT)

            self.open_stream(
                destination=destination, local_port=local_port, tcp=True, on_message=answered,
                on_ready=lambda stream: stream.send(
                    messages.wrap("test_nat_request", TestNatRequest(serial=serial))))

        ask(self.server.rendezvous)
        return result

    def query_online(self, own_id, peer_ids):
        """OnlineRequest on 21115 (section 4.6): a Deferred firing with a list of bools."""
        result = Deferred()

        def answered(stream, message):
            if message.WhichOneof("union") == "online_response" and not result.called:
                states = message.online_response.states
                result.callback([bool(states[i >> 3] & (0x80 >> (i & 7)))
                                 for i in range(len(peer_ids))])

        self.open_stream(
            destination=self.server.nat_test, tcp=True, on_message=answered,
            on_ready=lambda stream: stream.send(
                messages.wrap("online_request", OnlineRequest(id=own_id, peers=peer_ids))))
        return result


def _succeed(value):
    d = Deferred()
    d.callback(value)
    return d


class ControlledPeer(RendezvousClient):
    """B: registers and answers the server's notifications (sections 4.1, 4.2 b2, 4.3, 4.4).

    ``nat_type`` is B's tested NAT type; ``key_confirmed`` the persisted flag
    (False on a fresh install, so it starts with RegisterPk).
    """

    def __init__(self, host, server, peer_id, uuid=None, signing_key=None,
                 nat_type=NatType.ASYMMETRIC, transport="udp", key_confirmed=False,
                 relay_server="", server_key=None, version=CLIENT_VERSION, serial=3):
        super().__init__(host, server, transport, version)
        self.id = peer_id
        self.signing_key = signing_key or SigningKey(bytes(self.network.random.getrandbits(8)
                                                           for _ in range(32)))
        self.pk = bytes(self.signing_key.verify_key)
        self.uuid = uuid if uuid is not None else self.network.new_uuid().encode()
        self.nat_type = NatType.SYMMETRIC if transport == "ws" else nat_type
        self.key_confirmed = key_confirmed
        self.relay_option = relay_server
        self.server_key = server_key
        self.serial = serial
        self.results = []
        self.udp = None
        self.channel = None
        self.keep_alive = DEFAULT_KEEP_ALIVE
        self._loop = None
        self._pending_since = None
        self._last_reply = None
        self._timeouts = 0
        self._last_rebind = float("-inf")
        self._last_pk_sent = float("-inf")
        self._last_received = None
        self._recent = {}

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

    def _bind(self):
        if self.udp is not None:
            self.udp.stopListening()
        self.udp = self.host.bind_udp(_DatagramCallback(self._datagram))

    # UDP registration loop (section 4.1)

    def _tick(self):
        if self.transport != "udp":
            self._channel_tick()
            return
        now = self.clock.seconds()
        if self._pending_since is not None:
            if now - self._pending_since >= REG_TIMEOUT:
                self._timeouts += 1
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

    def _register_pk_result(self, response):
        result = response.result
        self.results.append(result)
        if response.keep_alive > 0:
            self.keep_alive = float(response.keep_alive)
        if result == RegisterPkResponse.OK:
            self.key_confirmed = True
        elif result == RegisterPkResponse.UUID_MISMATCH:
            old = self.id
            self.id = str(self.network.random.randrange(1_000_000_000, 2_000_000_000))
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
        self._event("channel_closed")

    # reacting to A (sections 4.3 step 2, 4.4)

    def _duplicate(self, socket_addr):
        key = addr_mangle.decode(socket_addr)
        now = self.clock.seconds()
        last = self._recent.get(key)
        self._recent[key] = now
        return last is not None and now - last < DEDUP_WINDOW

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
        local_port = self.host.ephemeral_port()
        stream = self.one_shot(messages.wrap("punch_hole_sent", PunchHoleSent(
            socket_addr=ph.socket_addr, id=self.id,
            relay_server=self.relay_server_for(ph.relay_server),
            nat_type=self.nat_type, version=self.version)), local_port=local_port)
        # The 30 ms connect attempt from P_B to A opens B's NAT for A.
        self.network.tcp_reachable(self.host, local_port, requester)
        self.host.listen_direct(local_port, READ_TIMEOUT)
        self._event("punched", local=stream.local, public=stream.connection.public,
                    requester=requester)

    def _fetch_local_addr(self, fla):
        if self._duplicate(fla.socket_addr):
            return
        requester = addr_mangle.decode(fla.socket_addr)
        self._event("fetch_local_addr", requester=requester, relay_server=fla.relay_server)
        if self.websocket:
            self._relay(fla.socket_addr, self.relay_server_for(fla.relay_server))
            return
        local_port = self.host.ephemeral_port()
        tm = addr_mangle.timestamp(self.clock.seconds())
        self.one_shot(messages.wrap("local_addr", LocalAddr(
            id=self.id, socket_addr=addr_mangle.encode(requester, tm),
            local_addr=addr_mangle.encode((self.host.ip, local_port), tm),
            relay_server=self.relay_server_for(fla.relay_server), version=self.version)),
            local_port=local_port)
        self.host.listen_direct(local_port, READ_TIMEOUT)
        self._event("local_addr_sent", local=(self.host.ip, local_port))

    def _relay(self, socket_addr, relay_server):
        """d1: B chose relay; a fresh uuid goes to A through hbbs."""
        relay_uuid = self.network.new_uuid()
        self.one_shot(messages.wrap("relay_response", RelayResponse(
            socket_addr=socket_addr, uuid=relay_uuid, relay_server=relay_server, id=self.id,
            version=self.version)))
        self._event("relay", uuid=relay_uuid, relay_server=relay_server,
                    requester=addr_mangle.decode(socket_addr))

    def _request_relay(self, rr):
        """d2: A asked for the relay; answer with the bare RelayResponse, then go to rr's relay."""
        if self._duplicate(rr.socket_addr):
            return
        self.one_shot(messages.wrap("relay_response", RelayResponse(
            socket_addr=rr.socket_addr, version=self.version)))
        self._event("relay", uuid=rr.uuid, relay_server=rr.relay_server,
                    requester=addr_mangle.decode(rr.socket_addr), request=rr)

    # Change ID (section 4.2 b1)

    def change_id(self, new_id):
        """A Deferred firing with the RegisterPkResponse result (None if no reply)."""
        result = Deferred()
        request = messages.wrap("register_pk", RegisterPk(old_id=self.id, id=new_id,
                                                          uuid=self.uuid))

        def answered(stream, message):
            if message.WhichOneof("union") == "register_pk_response" and not result.called:
                outcome = message.register_pk_response.result
                if outcome == RegisterPkResponse.OK:
                    self.id = new_id
                result.callback(outcome)

        def closed(stream):
            if not result.called:
                result.callback(None)

        self.open_stream(on_ready=lambda stream: stream.send(request),
                                  on_message=answered, on_closed=closed)
        return result


class _DatagramCallback(DatagramProtocol):
    def __init__(self, callback):
        self.callback = callback

    def datagramReceived(self, data, address):
        self.callback(data, address)


class ConnectOutcome:
    """What A ends up with after asking hbbs for B (section 4.3 step 4, 4.4).

    ``kind``: "direct", "local", "relay" or "failure".
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

    def __repr__(self):
        return (f"ConnectOutcome({self.kind!r}, peer_addr={self.peer_addr!r}, "
                f"relay_server={self.relay_server!r}, uuid={self.uuid!r}, "
                f"failure={self.failure!r})")


FAILURE_TEXT = {
    PunchHoleResponse.ID_NOT_EXIST: "ID does not exist",
    PunchHoleResponse.OFFLINE: "Remote desktop is offline",
    PunchHoleResponse.LICENSE_MISMATCH: "Key mismatch",
    PunchHoleResponse.LICENSE_OVERUSE: "Key overuse",
}


class ControllingPeer(RendezvousClient):
    """A: asks hbbs for B and follows the answer to direct, LAN or relay (sections 4.3, 4.4).

    ``key`` is A's configured key string (its base64 decodes to the server's
    public key used to verify signed IdPks); ``token`` a login token, which
    together with a key makes A run secure_tcp.
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
        try:
            raw = base64.b64decode(self.key or PUBLIC_SERVER_KEY, validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw if len(raw) == 32 else None

    @property
    def wants_secure(self):
        return not self.websocket and bool(self.key) and bool(self.token)

    def connect(self, peer_id, force_relay=False, conn_type=0):
        """Ask for ``peer_id``; a Deferred firing with a :class:`ConnectOutcome`."""
        return _Connect(self, peer_id, force_relay, conn_type).start()


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

    def start(self):
        peer = self.peer
        server_key = peer.server_public_key if peer.wants_secure else None
        self.stream = peer.open_stream(server_key=server_key, on_ready=self._send_request,
                                       on_message=self._message)
        peer.streams.append(self.stream)
        if server_key is not None:
            # secure_tcp: the server must speak within READ_TIMEOUT.
            self.timer = self.clock.callLater(READ_TIMEOUT, self._fail,
                                              "Failed to secure tcp: deadline has elapsed")
        return self.result

    def _cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

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
        self._finish(ConnectOutcome("failure", failure=text, response=response))

    def _finish(self, outcome):
        self._cancel_timer()
        if self.result.called:
            return
        outcome.attempts = self.attempts
        outcome.secured = self.stream.secured
        if self.stream is not None and not self.stream.closed:
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
        details = dict(peer_addr=peer_addr, signed_pk=ph.pk, pk=self._verify(ph.pk),
                       relay_server=ph.relay_server, response=message,
                       nat_type=None if is_local else ph.nat_type,
                       local_port=self.stream.local[1])
        self.stream.close()
        if not self.force_relay and self.peer.network.tcp_reachable(
                self.peer.host, self.stream.local[1], peer_addr):
            self._finish(ConnectOutcome("local" if is_local else "direct", **details))
            return
        if not ph.relay_server:
            self._fail("Failed to make direct connection to remote desktop", message)
            return
        self.details = details
        self._request_relay()

    def _request_relay(self):
        """d2: RequestRelay on a new connection, up to 3 attempts of READ_TIMEOUT."""
        self.relay_attempts += 1
        self.relay_uuid = self.peer.network.new_uuid()
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
            self._finish(ConnectOutcome(
                "relay", peer_addr=self.details["peer_addr"], signed_pk=self.details["signed_pk"],
                pk=self.details["pk"], relay_server=self.details["relay_server"],
                uuid=self.relay_uuid, response=message))
            return
        signed = rr.pk if rr.WhichOneof("union") == "pk" else b""
        self._finish(ConnectOutcome("relay", signed_pk=signed, pk=self._verify(signed),
                                    relay_server=rr.relay_server, uuid=rr.uuid,
                                    response=message))
