"""Real sockets: ``twistd -n rustdesk-hbbr`` in a subprocess, tens of megabytes
each way through TCP and WebSocket pairs, zero-copy and userspace paths.
Nothing sleeps: every wait is a Deferred under trial's timeout."""

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from twisted.web.websocket import WebSocketClientEndpoint

from rustdesk_twisted.hbbr import splice

from .livesupport import free_port_block, start_twistd, stop_twistd
from .test_hbbr_support import frame_request, request_relay

SIZE = 24 * 1024 * 1024
CHUNK = 256 * 1024


def blob(seed):
    block = hashlib.sha256(seed).digest() * (CHUNK // 32)
    return [bytes([i % 251]) + block[1:] for i in range(SIZE // CHUNK)]


class _Hasher:
    def __init__(self, expected):
        self.expected = expected
        self.digest = hashlib.sha256()
        self.count = 0
        self.done = Deferred()

    def add(self, data):
        self.digest.update(data)
        self.count += len(data)
        if self.count >= self.expected and not self.done.called:
            self.done.callback(self.digest.hexdigest())


class TcpClient(Protocol):
    def __init__(self, uuid, chunks):
        self.uuid = uuid
        self.chunks = chunks
        self.hasher = _Hasher(SIZE)

    def connectionMade(self):
        self.transport.write(frame_request(self.uuid))
        for chunk in self.chunks:
            self.transport.write(chunk)

    def dataReceived(self, data):
        self.hasher.add(data)


class WsClient:
    def __init__(self, uuid, chunks):
        self.uuid = uuid
        self.chunks = chunks
        self.hasher = _Hasher(SIZE)

    def negotiationStarted(self, transport):
        self.transport = transport

    def negotiationFinished(self):
        self.transport.sendBytesMessage(request_relay(self.uuid))
        for chunk in self.chunks:
            self.transport.sendBytesMessage(chunk)

    def bytesMessageReceived(self, data):
        self.hasher.add(bytes(data))

    def textMessageReceived(self, text):
        pass

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        pass

    def buildProtocol(self, url):
        return self


def sha(chunks):
    return hashlib.sha256(b"".join(chunks)).hexdigest()


class RelayOverRealSockets(TestCase):
    timeout = 120

    @inlineCallbacks
    def start_hbbr(self, *extra):
        directory = self.mktemp()
        os.makedirs(directory)
        port = free_port_block((0, 2, 4))
        process = yield start_twistd(
            reactor, "rustdesk-hbbr",
            ["-p", str(port), "--bind", "127.0.0.1", "--no-throttle",
             "--console", "unix:hbbr-console.sock"] + list(extra),
            directory, b"raw TCP pairs:").ready
        self.addCleanup(stop_twistd, process)
        self.outputs = getattr(self, "outputs", [])
        self.outputs.append(process)
        return port, process.output

    @inlineCallbacks
    def tcp_pair(self, port):
        a_chunks, b_chunks = blob(b"a"), blob(b"b")
        b = TcpClient("uuid-tcp", b_chunks)
        a = TcpClient("uuid-tcp", a_chunks)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), b)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), a)
        got_by_b = yield b.hasher.done
        got_by_a = yield a.hasher.done
        self.assertEqual(got_by_b, sha(a_chunks))
        self.assertEqual(got_by_a, sha(b_chunks))
        a.transport.loseConnection()
        return got_by_a, got_by_b

    @inlineCallbacks
    def test_tcp_pair_spliced_and_userspace_identical(self):
        port, banner = yield self.start_hbbr()
        expected_path = b"kernel splice" if splice.available(reactor) else b"userspace copy"
        self.assertIn(expected_path, banner)
        spliced = yield self.tcp_pair(port)
        port2, banner2 = yield self.start_hbbr("--no-splice")
        self.assertIn(b"userspace copy", banner2)
        userspace = yield self.tcp_pair(port2)
        self.assertEqual(spliced, userspace)
        self.addCleanup(lambda: self.assertIn(b"(spliced)" if splice.available(reactor)
                                              else b"(raw)", self.outputs[0].output))

    @inlineCallbacks
    def test_websocket_pair(self):
        port, _ = yield self.start_hbbr()
        a_chunks, b_chunks = blob(b"wa"), blob(b"wb")
        a, b = WsClient("uuid-ws", a_chunks), WsClient("uuid-ws", b_chunks)
        url = f"http://127.0.0.1:{port + 2}/ws/relay"
        yield WebSocketClientEndpoint.new(reactor, url).connect(b)
        yield WebSocketClientEndpoint.new(reactor, url).connect(a)
        got_by_b = yield b.hasher.done
        got_by_a = yield a.hasher.done
        self.assertEqual(got_by_b, sha(a_chunks))
        self.assertEqual(got_by_a, sha(b_chunks))
        a.transport.loseConnection()
