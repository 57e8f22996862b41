"""Real twistd rustdesk-hbbr: idle connections from one IP stop at the per-IP cap while
another IP still connects (issue 9 item 12); a lonely half's early bytes stay bounded
(item 15).  Waits are Deferreds under trial's timeout, never sleeps."""

import os
import shutil
import tempfile

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from rustdesk_twisted.hbbr.early import MAX_EARLY_BYTES, READ_SIZE

from .livesupport import FramedClient, free_port_block, start_twistd, stop_twistd
from .test_hbbr_support import frame_request

CAP = 20


class Idle(Protocol):
    def __init__(self):
        self.closed = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


class _LiveHbbr(TestCase):
    timeout = 60

    @inlineCallbacks
    def start_hbbr(self, *extra):
        directory = tempfile.mkdtemp(prefix="rdlim")
        self.addCleanup(shutil.rmtree, directory)
        self.port = free_port_block((0, 2, 4))
        process = yield start_twistd(
            reactor, "rustdesk-hbbr",
            ["-p", str(self.port), "-b", "127.0.0.1", "--data-dir", directory] + list(extra),
            directory, b"raw TCP pairs:").ready
        self.addCleanup(stop_twistd, process)
        return process

    @inlineCallbacks
    def metrics(self):
        response = yield treq.get(f"http://127.0.0.1:{self.port + 4}/metrics", persistent=False)
        text = yield response.text()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    def connect(self, source="127.0.0.1", protocol=None):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port,
                                      bindAddress=(source, 0))
        return connectProtocol(endpoint, protocol or Idle())



class RelayLimitsLive(_LiveHbbr):
    @inlineCallbacks
    def test_one_ip_capped_another_still_connects(self):
        process = yield self.start_hbbr("--max-connections-per-ip", str(CAP))
        self.assertIn(b"descriptors: soft limit", process.output)
        clients = []
        for _ in range(CAP + 5):
            client = yield self.connect()
            self.addCleanup(client.transport.loseConnection)
            clients.append(client)
        for client in clients[CAP:]:
            yield client.closed
        other = yield self.connect("127.0.0.2")
        self.addCleanup(other.transport.loseConnection)
        values = yield self.metrics()
        self.assertEqual(values[("rustdesk_hbbr_connections_open", ())], CAP + 1)
        self.assertEqual(values[("rustdesk_hbbr_limit_hits_total",
                                 (("limit", "connections-per-ip"),))], 5)
        self.assertEqual([c.closed.called for c in clients[:CAP]], [False] * CAP)
        self.assertEqual(process.output.count(b"limit connections-per-ip reached"), 1)


class Sender(Protocol):
    """Sends RequestRelay and then ``early`` at once; collects what comes back."""

    def __init__(self, uuid, early=b""):
        self.uuid = uuid
        self.early = early
        self.received = bytearray()
        self.expected = None
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(frame_request(self.uuid) + self.early)

    def dataReceived(self, data):
        self.received += data
        if self.expected is not None and len(self.received) >= self.expected:
            self.done.callback(bytes(self.received))


class EarlyBytesLive(_LiveHbbr):
    @inlineCallbacks
    def test_lonely_half_holds_at_most_its_cap_then_pairs(self):
        yield self.start_hbbr("--no-throttle", "--no-splice")
        early = os.urandom(1024 * 1024)
        lonely = yield self.connect(protocol=Sender("uuid-early", early))
        self.addCleanup(lonely.transport.loseConnection)
        values = yield self.metrics()
        while values[("rustdesk_hbbr_early_bytes_held", ())] < MAX_EARLY_BYTES:
            values = yield self.metrics()
        self.assertLessEqual(values[("rustdesk_hbbr_early_bytes_held", ())],
                             MAX_EARLY_BYTES + READ_SIZE)
        partner = Sender("uuid-early")
        partner.expected = len(early)
        yield self.connect("127.0.0.2", partner)
        self.addCleanup(partner.transport.loseConnection)
        got = yield partner.done
        self.assertEqual(got, early)
        values = yield self.metrics()
        self.assertEqual(values[("rustdesk_hbbr_early_bytes_held", ())], 0)


class CombinedDescriptorsLive(TestCase):
    """``twistd rustdesk-server`` with 400 descriptors: a relay flood from one address is
    refused at the relay's part of the budget, and hbbs still accepts and answers."""

    timeout = 60

    @inlineCallbacks
    def test_relay_flood_leaves_hbbs_tcp_up(self):
        directory = tempfile.mkdtemp(prefix="rdfd")
        self.addCleanup(shutil.rmtree, directory)
        port = free_port_block((-2, -1, 0, 1, 2, 3, 4, 5))
        process = yield start_twistd(
            reactor, "rustdesk-server",
            ["-p", str(port), "-b", "127.0.0.1", "--data-dir", directory,
             "--relay-max-connections-per-ip", "100000", "--relay-max-connections", "100000"],
            directory, b"hbbs and hbbr share", nofile=400).ready
        self.addCleanup(stop_twistd, process)
        flood = []
        for _ in range(450):
            client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port + 1),
                                           Idle())
            self.addCleanup(client.transport.loseConnection)
            flood.append(client)
        kept = (400 - 256 - 36) // 3
        yield DeferredList([client.closed for client in flood[kept:]])
        requester = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=("127.0.0.2", 0)),
            FramedClient())
        self.addCleanup(requester.transport.loseConnection)
        offer = yield requester.message(1)
        self.assertEqual(offer.WhichOneof("union"), "key_exchange")
        self.assertEqual([c.closed.called for c in flood[:kept]], [False] * kept)
        self.assertIn(b"limit descriptors reached", process.output)
