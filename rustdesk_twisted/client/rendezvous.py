"""What both client roles share: where the servers are, client timings, rendezvous streams.

A client runs on a *host*: the object that gives it a clock and sockets.
:class:`~rustdesk_twisted.client.sockets.ReactorHost` is the real one;
``tests/fakenet.py`` has an in-memory one behind simulated NATs.  A host has

* ``clock`` (``IReactorTime``) and ``random`` (a ``random.Random``);
* ``bind_udp(protocol, port=None)``: a port with ``write(data, address)``
  and ``stopListening()``;
* ``connect_tcp(destination, protocol, local_port=None, timeout=None)``:
  sets ``protocol.connection`` and connects; failures reach
  ``protocol.connectionFailed(reason)``.  Sockets allow address and port
  reuse, so a later connection or listener may bind the same local port
  (the TCP punch needs that);
* ``listen_tcp(port, factory)``: a listener with ``stopListening()``.
"""

import uuid as uuidlib

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol

from ..wire import messages
from ..wire.rendezvous_pb2 import NatType, OnlineRequest, TestNatRequest
from .streams import FramedRendezvousClient, WebSocketRendezvousClient

CLIENT_VERSION = "1.4.9"
PUBLIC_SERVER_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="
RENDEZVOUS_PORT = 21116
RELAY_PORT = 21117

# Client timings (PROTOCOL.md sections 4.1-4.3, 7.7), in seconds.
TIMER_TICK = 1.0
REG_INTERVAL = 15.0
REG_TIMEOUT = 3.0
READ_TIMEOUT = 18.0
CONNECT_TIMEOUT = 18.0
PUNCH_ATTEMPTS = 3
DEDUP_WINDOW = 0.1
DEFAULT_KEEP_ALIVE = 60.0
PUNCH_PROBE_TIMEOUT = 0.03
# A's direct attempt: 1 s to a LAN address or a symmetric peer, as the
# official client; otherwise 3 s, which covers one SYN retransmission.
DIRECT_TIMEOUT_SHORT = 1.0
DIRECT_TIMEOUT = 3.0


def increase_port(address, delta):
    """The client's ``increase_port``: ``host:port`` with the port moved by ``delta``.

    A missing port counts as 21116; IPv6 hosts come in brackets.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
        host, port = address, str(RENDEZVOUS_PORT)
    return f"{host}:{int(port) + delta}"


def split_host_port(text, default_port):
    """``(host, port)`` from ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {text!r}")
    return host, int(port) if port else default_port


def relay_destination(relay_server, websocket):
    """Where to connect for ``relay_server`` (port 21117 if absent; WebSocket on port+2)."""
    host, port = split_host_port(relay_server, RELAY_PORT)
    return (host, port + 2) if websocket else (host, port)


class ServerAddress:
    """Where a client finds hbbs: ``ip`` and the base ``port`` (21116)."""

    def __init__(self, ip, port=RENDEZVOUS_PORT):
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
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


class DatagramCallback(DatagramProtocol):
    """A UDP protocol handing each datagram to ``callback(data, source)``."""

    def __init__(self, callback):
        self.callback = callback

    def datagramReceived(self, data, address):
        self.callback(data, address)


class RendezvousClient:
    """What A and B share: connections to hbbs, the NAT test, the online query, events.

    ``transport``: "udp" (B registers over UDP; A and B's one-shot
    connections use TCP), "tcp" (B registers over a persistent TCP
    connection, as with disable-udp or a proxy) or "ws" (everything over
    WebSocket, NAT type SYMMETRIC).  ``events`` is a bounded record of what
    happened, for tests and the doctor.
    """

    MAX_EVENTS = 1000

    def __init__(self, host, server, transport="udp", version=CLIENT_VERSION):
        if transport not in ("udp", "tcp", "ws"):
            raise ValueError(f"unknown transport {transport!r}")
        self.host = host
        self.server = server
        self.transport = transport
        self.version = version
        self.clock = host.clock
        self.events = []
        self.observers = []

    @property
    def websocket(self):
        return self.transport == "ws"

    def _event(self, name, **details):
        if len(self.events) >= self.MAX_EVENTS:
            del self.events[0]
        self.events.append((name, details))
        for observer in list(self.observers):
            observer(name, details)

    def events_of(self, name):
        return [details for n, details in self.events if n == name]

    def wait_for(self, name):
        """A Deferred firing with the details of the next ``name`` event; cancellable."""
        def observe(event, details):
            if event == name:
                self.observers.remove(observe)
                result.callback(details)

        result = Deferred(lambda _: self.observers.remove(observe))
        self.observers.append(observe)
        return result

    def new_uuid(self):
        return str(uuidlib.UUID(int=self.host.random.getrandbits(128), version=4))

    def open_stream(self, server_key=None, wait_first=False, local_port=None,
                    destination=None, ws_headers=(), tcp=False, timeout=CONNECT_TIMEOUT,
                    **callbacks):
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
        self.host.connect_tcp(destination, stream, local_port=local_port, timeout=timeout)
        return stream

    def one_shot(self, message, local_port=None, **callbacks):
        """B's fresh connection carrying one plaintext message, closed at once (G30)."""
        def ready(stream):
            stream.send(message)
            stream.close()

        return self.open_stream(local_port=local_port, on_ready=ready, **callbacks)

    def test_nat(self, serial=3):
        """The NAT test of section 4.5: returns a Deferred firing with the NatType.

        Both connections leave from one local port; UNKNOWN_NAT when a
        connection fails or an answer is missing.
        """
        if self.websocket:
            return succeed(NatType.SYMMETRIC)
        result = Deferred()
        ports = []
        local_port = []

        def finish(value):
            if not result.called:
                result.callback(value)

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
                    finish(NatType.ASYMMETRIC)
                elif first > 0 and second > 0:
                    finish(NatType.SYMMETRIC)
                else:
                    finish(NatType.UNKNOWN_NAT)

            def ready(stream):
                if not local_port:
                    local_port.append(stream.local[1])
                stream.send(messages.wrap("test_nat_request", TestNatRequest(serial=serial)))

            def closed(stream):
                if len(ports) < (1 if destination == self.server.rendezvous else 2):
                    finish(NatType.UNKNOWN_NAT)

            self.open_stream(destination=destination, local_port=local_port[0] if local_port
                             else None, tcp=True, on_message=answered, on_ready=ready,
                             on_closed=closed, timeout=READ_TIMEOUT)

        ask(self.server.rendezvous)
        return result

    def query_online(self, own_id, peer_ids):
        """OnlineRequest on 21115 (section 4.6): a Deferred firing with a list of bools."""
        result = Deferred()

        def answered(stream, message):
            if message.WhichOneof("union") == "online_response" and not result.called:
                states = message.online_response.states
                result.callback([bool(states[i >> 3] & (0x80 >> (i & 7)))
                                 if (i >> 3) < len(states) else False
                                 for i in range(len(peer_ids))])

        def closed(stream):
            if not result.called:
                result.callback(None)

        self.open_stream(
            destination=self.server.nat_test, tcp=True, on_message=answered, on_closed=closed,
            on_ready=lambda stream: stream.send(
                messages.wrap("online_request", OnlineRequest(id=own_id, peers=peer_ids))))
        return result
