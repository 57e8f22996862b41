"""Real sockets: ``twistd -n rustdesk-hbbs --relay-announce`` and ``twistd -n rustdesk-hbbr
--announce-endpoint`` as two processes, the relay's directory holding only ``id_ed25519.pub``.

hbbs signs with its private key; hbbr checks with the public one, answers a
line signed by another key with ``refused``, a replay for a uuid that paired
with ``used``, closes a connection that sends nothing, and never writes in
its directory.  A relay whose ``.pub`` does not match its ``id_ed25519``
refuses to start with one sentence.
"""

import os
import shutil
import tempfile

from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial import unittest

from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.announce import announcement
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPeer, RegisterPk, RelayResponse

from .livesupport import DatagramClient, FramedClient, free_port_block, start_twistd, stop_twistd
from .test_combined_live import _RelayClient

PEER_ID = "123456789"
PEER_HOST = "127.0.0.2"


class _AnnounceClient(LineOnlyReceiver):
    """Sends lines to the announce listener and collects the answers."""

    delimiter = b"\n"

    def __init__(self):
        self.answers = []
        self.waiters = []
        self.closed = Deferred()

    def answer(self, line):
        """Send ``line``; fires with hbbr's answer to it."""
        d = Deferred()
        self.waiters.append(d)
        self.sendLine(line)
        return d

    def lineReceived(self, line):
        self.answers.append(line)
        self.waiters.pop(0).callback(line)

    def connectionLost(self, reason):
        self.closed.callback(None)


def snapshot(directory):
    """Every file in ``directory`` with its bytes and modification time."""
    result = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            result[name] = (f.read(), os.stat(path).st_mtime_ns)
    return result


class AnnounceLiveTests(unittest.TestCase):
    timeout = 60

    def directory(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    @inlineCallbacks
    def test_relay_with_only_the_public_key(self):
        id_server, relay_dir = self.directory(), self.directory()
        secret = keys.generate_keypair(id_server)
        shutil.copy(os.path.join(id_server, keys.PUBLIC_FILE), relay_dir)
        before = snapshot(relay_dir)
        port = free_port_block((-1, 0, 1, 2, 3, 4, 5, 6, 7))
        relay_port, announce_port = port + 1, port + 6
        sockets = tempfile.mkdtemp(prefix="rda")
        self.addCleanup(shutil.rmtree, sockets)

        hbbr = yield start_twistd(
            reactor, "rustdesk-hbbr",
            ["-p", str(relay_port), "-b", "127.0.0.1", "--data-dir", relay_dir, "-k", "-",
             "--console", "off", "--admin", "off", "--announce-first-line-timeout", "1",
             "--announce-endpoint", f"tcp:{announce_port}:interface=127.0.0.1"],
            relay_dir, b"announcements checked with key").ready
        self.addCleanup(stop_twistd, hbbr)
        hbbs = yield start_twistd(
            reactor, "rustdesk-hbbs",
            ["-p", str(port), "-b", "127.0.0.1", "--data-dir", id_server,
             "--console", f"unix:{sockets}/hbbs.sock", "--admin", "off",
             "--relay-servers", f"127.0.0.1:{relay_port}",
             "--relay-announce", f"tcp:127.0.0.1:{announce_port}"],
            id_server, b"announcing relay uuids to").ready
        self.addCleanup(stop_twistd, hbbs)

        # A relay session brokered by hbbs pairs: hbbs's announcement was accepted.
        peer = DatagramClient()
        udp = reactor.listenUDP(0, peer, interface=PEER_HOST)
        self.addCleanup(udp.stopListening)
        peer.transport.write(messages.wrap("register_pk", RegisterPk(
            id=PEER_ID, uuid=b"machine-uid", pk=b"\x11" * 32)).SerializeToString(),
            ("127.0.0.1", port))
        yield peer.next("register_pk_response")
        peer.transport.write(messages.wrap("register_peer", RegisterPeer(
            id=PEER_ID)).SerializeToString(), ("127.0.0.1", port))
        yield peer.next("register_peer_response")
        requester = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), FramedClient())
        requester.send(messages.wrap("request_relay", id=PEER_ID, uuid="live-uuid",
                                     relay_server=f"127.0.0.1:{relay_port}"))
        notice = yield peer.next("request_relay")
        answer = yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, bindAddress=(PEER_HOST, 0)), FramedClient())
        yield answer.message(1)
        answer.send(messages.wrap("relay_response", RelayResponse(
            socket_addr=notice.request_relay.socket_addr, version="1.4.9")))
        self.assertEqual((yield requester.message(2)).relay_response.refuse_reason, "")
        licence = keys.b64(secret[32:])
        relay = TCP4ClientEndpoint(reactor, "127.0.0.1", relay_port)
        b = yield connectProtocol(relay, _RelayClient("live-uuid", licence, 5))
        a = yield connectProtocol(relay, _RelayClient("live-uuid", licence))
        a.transport.write(b"hello")
        self.assertEqual((yield b.arrived), b"hello")

        announce = TCP4ClientEndpoint(reactor, "127.0.0.1", announce_port)
        hbbs_key = keys.signing_key_from_secret(secret)
        replayer = yield connectProtocol(announce, _AnnounceClient())
        now = reactor.seconds()
        self.assertEqual((yield replayer.answer(announcement(hbbs_key, "fresh", now))), b"ok")
        self.assertEqual((yield replayer.answer(announcement(hbbs_key, "live-uuid", now))),
                         b"used")
        stranger = yield connectProtocol(announce, _AnnounceClient())
        self.assertEqual((yield stranger.answer(announcement(SigningKey.generate(), "x", now))),
                         b"refused")
        yield stranger.closed
        silent = yield connectProtocol(announce, _AnnounceClient())
        yield silent.closed

        a.transport.loseConnection()
        yield b.closed
        requester.transport.loseConnection()
        replayer.transport.loseConnection()
        yield stop_twistd(hbbr)
        output = hbbr.output.decode()
        self.assertIn("paired relay \"live-uuid\"", output)
        self.assertIn("limit announce_bad_signature reached", output)
        self.assertIn("limit announce_first_line_timeout reached", output)
        self.assertEqual(snapshot(relay_dir), before, "hbbr wrote in its directory")

    @inlineCallbacks
    def test_relay_refuses_a_mismatched_pair(self):
        relay_dir = self.directory()
        keys.generate_keypair(relay_dir)
        with open(os.path.join(relay_dir, keys.PUBLIC_FILE), "w") as f:
            f.write(keys.b64(bytes(SigningKey.generate().verify_key)))
        before = snapshot(relay_dir)
        port = free_port_block((0, 2, 4, 5))
        hbbr = start_twistd(
            reactor, "rustdesk-hbbr",
            ["-p", str(port), "-b", "127.0.0.1", "--data-dir", relay_dir, "--console", "off",
             "--announce-endpoint", f"tcp:{port + 5}:interface=127.0.0.1"],
            relay_dir, b"raw TCP pairs:")
        hbbr.ready.addErrback(lambda _: None)
        self.assertEqual((yield hbbr.ended), 1)
        lines = hbbr.output.decode().splitlines()
        refusals = [line for line in lines if "rustdesk-hbbr: " in line]
        self.assertEqual(len(refusals), 1, lines)
        [refusal] = refusals
        self.assertIn("id_ed25519.pub", refusal)
        self.assertIn("does not match", refusal)
        self.assertNotIn("Traceback", hbbr.output.decode())
        self.assertEqual(snapshot(relay_dir), before)
