"""An in-memory network for scenario tests: hosts, NAT boxes, UDP and TCP.

Nothing here touches a socket or the real time.  One ``Clock`` drives every
timer; :meth:`FakeNetwork.flush` moves queued datagrams and pumps every TCP
connection (``twisted.test.iosim``) until the network is quiet.

The pieces:

* :class:`FakeNAT`: maps private ``(ip, port)`` endpoints to public ones by the
  rules of its kind (full-cone, address-restricted, port-restricted,
  symmetric) and filters inbound traffic the same way.
* :class:`FakeHost`: a machine with a private (or public) IP, optionally
  behind a NAT; it binds UDP protocols, listens for and opens TCP
  connections.  It is a *host* as ``rustdesk_twisted.client`` expects one,
  so the real client code (both roles) runs on it.  Servers are hosts
  without NAT whose listeners can be "dual-stack" (they then see IPv4 peers
  as ``::ffff:a.b.c.d``, as an hbbs bound to ``::`` does).
"""

import random

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.test import iosim

from rustdesk_twisted.wire import addr_mangle

FULL_CONE = "full-cone"
ADDRESS_RESTRICTED = "address-restricted"
PORT_RESTRICTED = "port-restricted"
SYMMETRIC = "symmetric"
NAT_KINDS = (FULL_CONE, ADDRESS_RESTRICTED, PORT_RESTRICTED, SYMMETRIC)

TIMER_TICK = 1.0


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
        """Connect ``protocol`` from ``host`` (``local_port`` or an ephemeral one).

        The SYN goes through the sender's NAT (creating its mapping) and the
        receiver's filter; a private destination is reached only inside the
        sender's own LAN.  ``protocol.connection`` is set first; a refused
        connection reaches ``protocol.connectionFailed``.
        """
        local_port = local_port if local_port is not None else host.ephemeral_port()
        destination = (_plain_host(destination[0]), destination[1])
        if host.nat is not None and destination[0] in host.nat.hosts:
            source = (host.ip, local_port)
            server_host, server_port = host.nat.hosts[destination[0]], destination[1]
        else:
            source = host.public_endpoint("tcp", local_port, destination)
            server_host, server_port = self._resolve("tcp", source, destination)
        connection = FakeConnection((host.ip, local_port), source, destination)
        protocol.connection = connection
        factory = server_host.listeners.get(server_port) if server_host is not None else None
        seen = server_host.address_of("TCP", source) if factory is not None else None
        server_protocol = factory.buildProtocol(seen) if factory is not None else None
        if server_protocol is None:
            protocol.connectionFailed(Failure(ConnectionRefusedError(str(destination))))
            return connection
        server_transport = iosim.FakeTransport(
            server_protocol, isServer=True,
            hostAddress=IPv4Address("TCP", destination[0], destination[1]), peerAddress=seen)
        client_transport = iosim.FakeTransport(
            protocol, isServer=False, hostAddress=IPv4Address("TCP", host.ip, local_port),
            peerAddress=IPv4Address("TCP", destination[0], destination[1]))
        connection.pump = iosim.connect(server_protocol, server_transport, protocol,
                                        client_transport, greet=False, clock=self.clock)
        self.connections.append(connection)
        return connection

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


class FakeConnection:
    """One pumped TCP connection: ``local`` (private), ``public`` (as the server sees it)."""

    pump = None

    def __init__(self, local, public, destination):
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

    @property
    def clock(self):
        return self.network.clock

    @property
    def random(self):
        return self.network.random

    def listen_tcp(self, port, factory):
        if port in self.listeners:
            raise OSError(f"{self.ip}:{port} is in use")
        self.listeners[port] = factory
        return FakeListener(self, port, factory)

    def connect_tcp(self, destination, protocol, local_port=None, timeout=None):
        return self.network.connect_tcp(self, destination, protocol, local_port)


class FakeListener:
    """A listening TCP port of a FakeHost."""

    def __init__(self, host, port, factory):
        self.host = host
        self.port = port
        self.factory = factory

    def stopListening(self):
        if self.host.listeners.get(self.port) is self.factory:
            del self.host.listeners[self.port]
