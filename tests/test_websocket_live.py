"""Real sockets: the WebSocket listeners of ``twistd -n rustdesk-hbbs`` / ``rustdesk-hbbr``
under a slowloris crowd, behind a trusted proxy, and sent a frame header announcing 64 MiB.

Clients are raw TCP protocols writing the HTTP upgrade (and frame headers) themselves, so
they can trickle, forge X-Real-IP and lie about sizes.  Nothing sleeps: every wait is a
Deferred on the real reactor under trial's timeout."""

import os
import re

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from .livesupport import free_port_block, start_twistd, stop_twistd
from .websocket_wire import frame, upgrade

HANDSHAKE_TIMEOUT = 4


class RawWebSocket(Protocol):
    """Sends ``request`` at once, or one byte every ``interval`` seconds."""

    def __init__(self, request, interval=None):
        self.request = request
        self.interval = interval
        self.response = b""
        self.upgraded = Deferred()
        self.closed = Deferred()
        self.lasted = None
        self._sent = 0
        self._call = None

    def connectionMade(self):
        self.opened = reactor.seconds()
        if self.interval is None:
            self.transport.write(self.request)
        else:
            self._trickle()

    def _trickle(self):
        self.transport.write(self.request[self._sent:self._sent + 1])
        self._sent += 1
        self._call = reactor.callLater(self.interval, self._trickle)

    def dataReceived(self, data):
        self.response += data
        if not self.upgraded.called and b"\r\n\r\n" in self.response:
            self.upgraded.callback(self.response.startswith(b"HTTP/1.1 101 "))

    def connectionLost(self, reason):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.lasted = reactor.seconds() - self.opened
        if not self.upgraded.called:
            self.upgraded.callback(False)
        self.closed.callback(self.lasted)


def metric(text, name, limit):
    found = re.search(rf'^{name}\{{limit="{limit}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


class _Live(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self, plugin, args, marker, dotenv=""):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write(dotenv)
        process = yield start_twistd(reactor, plugin, args, directory, marker).ready
        self.addCleanup(stop_twistd, process)
        return process

    def open(self, port, request, interval=None):
        client = RawWebSocket(request, interval)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        return connectProtocol(endpoint, client).addCallback(lambda _: client)

    @inlineCallbacks
    def scrape(self, admin_port):
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{admin_port}/metrics".encode())
        body = yield readBody(response)
        return body.decode()

    def close_all(self, clients):
        for client in clients:
            if client.lasted is None:
                client.transport.abortConnection()
        return gatherResults([c.closed for c in clients])


class HbbsWebSocketLiveTests(_Live):
    @inlineCallbacks
    def start_hbbs(self, *extra, dotenv=""):
        self.port = free_port_block((-1, 0, 2, 4))
        self.process = yield self.start(
            "rustdesk-hbbs", ["-p", str(self.port), "--bind", "127.0.0.1", "--data-dir", ".",
                              "--console", "unix:hbbs-console.sock"] + list(extra),
            b"Relay servers:", dotenv)

    @inlineCallbacks
    def test_slowloris_is_capped_at_accept_and_cut_at_the_deadline(self):
        """300 connections from one IP trickling the upgrade a byte every 2 s: those above
        the per-IP cap are refused at accept, the rest are closed at the deadline."""
        yield self.start_hbbs("--max-connections-per-ip", "50",
                              "--trusted-proxies", "192.0.2.0/24",
                              dotenv=f"HANDSHAKE_TIMEOUT={HANDSHAKE_TIMEOUT}\n")
        clients = yield gatherResults([self.open(self.port + 2, upgrade(), interval=2.0)
                                       for _ in range(300)])
        yield deferLater(reactor, HANDSHAKE_TIMEOUT + 3, lambda: None)
        still_open = [c for c in clients if c.lasted is None]
        yield self.close_all(clients)
        self.assertEqual(len(still_open), 0,
                         f"{len(still_open)} connections open {HANDSHAKE_TIMEOUT + 3}s later")
        refused = [c for c in clients if c.lasted < 1.0]
        cut = [c for c in clients if c.lasted >= 1.0]
        self.assertEqual((len(refused), len(cut)), (250, 50))
        self.assertTrue(all(HANDSHAKE_TIMEOUT - 0.5 < c.lasted < HANDSHAKE_TIMEOUT + 2
                            for c in cut), sorted(c.lasted for c in cut))
        text = yield self.scrape(self.port + 4)
        self.assertEqual(metric(text, "rustdesk_hbbs_websocket_refused_total",
                                "connections"), 250)
        self.assertEqual(metric(text, "rustdesk_hbbs_websocket_refused_total",
                                "websocket-handshake-timeout"), 50)
        output = self.process.output.decode()
        self.assertEqual(output.count("127.0.0.1 limit connections-per-ip reached"), 1)
        self.assertEqual(output.count("127.0.0.1 limit websocket-handshake-timeout reached"), 1)

    @inlineCallbacks
    def test_clients_behind_a_trusted_proxy_are_counted_by_their_forwarded_address(self):
        """Through 127.0.0.1 (trusted by default), with the default per-IP cap of 256: 300
        distinct clients all upgrade; 257 from one forwarded address: the 257th is refused."""
        yield self.start_hbbs()
        distinct = yield gatherResults([
            self.open(self.port + 2, upgrade((b"X-Real-IP", f"10.0.{n // 200}.{n % 200}".encode())))
            for n in range(300)])
        upgraded = yield gatherResults([c.upgraded for c in distinct])
        self.assertEqual(upgraded.count(True), 300)
        same = []
        for _ in range(257):
            client = yield self.open(self.port + 2, upgrade((b"X-Real-IP", b"10.9.9.9")))
            same.append((yield client.upgraded))
        self.assertEqual(same, [True] * 256 + [False])
        yield self.close_all(distinct)

    @inlineCallbacks
    def test_untrusted_sources_never_get_the_forwarded_keying(self):
        yield self.start_hbbs("--max-connections-per-ip", "20",
                              "--trusted-proxies", "192.0.2.0/24")
        results = []
        clients = []
        for n in range(21):
            client = yield self.open(self.port + 2,
                                     upgrade((b"X-Real-IP", f"10.0.0.{n}".encode())))
            clients.append(client)
            results.append((yield client.upgraded))
        self.assertEqual(results, [True] * 20 + [False])
        yield self.close_all(clients)


class HbbrWebSocketLiveTests(_Live):
    @inlineCallbacks
    def test_a_header_announcing_64_mib_is_refused_at_once(self):
        port = free_port_block((0, 2, 4))
        process = yield self.start(
            "rustdesk-hbbr", ["-p", str(port), "--bind", "127.0.0.1", "--no-throttle",
                              "--console", "unix:hbbr-console.sock"], b"raw TCP pairs:")
        client = yield self.open(port + 2, upgrade())
        self.assertTrue((yield client.upgraded))
        sent = reactor.seconds()
        client.transport.write(frame(64 << 20))
        timer = reactor.callLater(5, client.transport.abortConnection)
        yield client.closed
        self.assertTrue(timer.active(), "the relay kept the connection 5 s after the header")
        timer.cancel()
        self.assertLess(reactor.seconds() - sent, 5)
        text = yield self.scrape(port + 4)
        self.assertEqual(metric(text, "rustdesk_hbbr_websocket_refused_total",
                                "websocket-message-size"), 1)
        self.assertIn("127.0.0.1 limit websocket-message-size reached: message of 67108864 "
                      "bytes announced, limit 65536", process.output.decode())
