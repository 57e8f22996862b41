"""An OK means it is on disk: registrations are answered after their commit (issue: kill -9 lost
acknowledged keys), and a refused commit is a refusal that leaves nothing behind in memory.

The store here is a stand-in whose commits the test completes or fails by hand, so every
ordering can be pinned down; tests/test_store.py and tests/test_hbbs_disk.py use real SQLite.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbs.registry import PeerRegistry, Result
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.store import StoreUnavailable
from rustdesk_twisted.hbbs.streams import RendezvousTCPFactory
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPk

T0 = 1_700_000_000.0
A = ("203.0.113.10", 40000)
B = ("203.0.113.20", 40000)
UUID = b"8b1e7a64-0c3e-4c1a-9a52-6c6f1f3e2d11"
PK = b"p" * 32
PK2 = b"q" * 32
ID = "123456789"
OK_BYTES = bytes.fromhex("820100")
SERVER_ERROR_BYTES = bytes.fromhex("8201020807")


class HeldStore:
    """Writes wait until the test commits or fails them, in order."""

    def __init__(self):
        self.queued = []

    def _write(self, *op):
        d = Deferred()
        self.queued.append((op, d))
        return d

    def insert(self, guid, peer_id, uuid, pk, ip):
        return self._write("insert", peer_id, pk, ip)

    def update(self, guid, peer_id, pk, ip):
        return self._write("update", peer_id, pk, ip)

    def rename(self, guid, new_id):
        return self._write("rename", new_id)

    def delete(self, guid, peer_id):
        return self._write("delete", peer_id)

    def touch(self, guid, last_seen):
        pass

    def commit(self):
        queued, self.queued = self.queued, []
        for _, d in queued:
            d.callback(None)

    def fail(self):
        queued, self.queued = self.queued, []
        for _, d in queued:
            d.errback(StoreUnavailable("database or disk is full"))


def answer(result):
    """The answer a Deferred already holds, or None while it has none."""
    got = []

    def keep(value):
        got.append(value)
        return value

    result.addCallback(keep)
    return got[0] if got else None


class RegistryTests(SynchronousTestCase):
    def setUp(self):
        self.store = HeldStore()
        self.registry = PeerRegistry(self.store)

    def register(self, pk=PK, address=A, now=T0, peer_id=ID):
        return self.registry.register_pk(peer_id, UUID, pk, address, now)

    def test_new_peer_answered_once_committed(self):
        pending = self.register()
        self.assertIsInstance(pending, Deferred)
        self.assertIsNone(answer(pending))
        self.assertIsNotNone(self.registry.get(ID), "later decisions already see the peer")
        self.store.commit()
        self.assertEqual(answer(pending), Result.OK)
        self.assertEqual(self.registry.register_pk(ID, UUID, PK, A, T0 + 10), Result.OK)

    def test_refused_new_peer_is_forgotten_and_may_register_again(self):
        pending = self.register()
        self.store.fail()
        self.assertEqual(answer(pending), Result.SERVER_ERROR)
        self.assertIsNone(self.registry.get(ID))
        retry = self.register(now=T0 + 3)
        self.assertEqual([op for op, _ in self.store.queued], [("insert", ID, PK, A[0])])
        self.store.commit()
        self.assertEqual(answer(retry), Result.OK)

    def test_refused_update_restores_the_saved_key(self):
        self.register()
        self.store.commit()
        pending = self.register(pk=PK2, now=T0 + 10)
        self.assertEqual(self.registry.get(ID).pk, PK2)
        self.store.fail()
        self.assertEqual(answer(pending), Result.SERVER_ERROR)
        self.assertEqual(self.registry.get(ID).pk, PK)

    def test_a_repeat_waits_for_the_same_commit(self):
        """The client's retry (same request) must not get an OK the first has not earned."""
        first = self.register()
        repeat = self.register(now=T0 + 3)
        self.assertEqual(len(self.store.queued), 1)
        self.assertIsNone(answer(repeat))
        self.store.fail()
        self.assertEqual((answer(first), answer(repeat)),
                         (Result.SERVER_ERROR, Result.SERVER_ERROR))

    def test_later_change_committed_after_an_earlier_one_failed(self):
        self.register()
        self.store.commit()
        key_change = self.register(pk=PK2, now=T0 + 10)
        [(_, first)] = self.store.queued
        self.store.queued = []
        ip_change = self.register(pk=PK2, address=B, now=T0 + 11)
        first.errback(StoreUnavailable("disk I/O error"))
        self.store.commit()
        self.assertEqual((answer(key_change), answer(ip_change)),
                         (Result.SERVER_ERROR, Result.OK))
        peer = self.registry.get(ID)
        self.assertEqual((peer.pk, peer.ip), (PK2, B[0]))

    def test_refused_release_brings_the_peer_back(self):
        self.register()
        self.store.commit()
        released = self.registry.release(ID)
        self.assertIsNone(self.registry.get(ID))
        self.store.fail()
        self.assertFalse(answer(released))
        self.assertEqual(self.registry.get(ID).pk, PK)

    def test_refused_rename_keeps_the_old_id(self):
        self.register()
        self.store.commit()
        renamed = self.registry.rename(ID, "office-pc")
        self.store.fail()
        self.assertIn("refused", answer(renamed))
        self.assertIsNone(self.registry.get("office-pc"))
        self.assertEqual(self.registry.get(ID).id, ID)


class ServerTests(SynchronousTestCase):
    """The same through hbbs's UDP and TCP paths: the reply bytes wait for the commit."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = HeldStore()
        signing = keys.signing_key_from_secret(bytes(range(32)) * 2)
        server_key = keys.ServerKey("", signing, "test")
        self.server = RendezvousServer(PeerRegistry(self.store), server_key,
                                       RelayRotation([]), self.clock)
        self.datagrams = []
        self.server.send_datagram = lambda payload, address: self.datagrams.append(payload)

    def datagram(self):
        message = messages.wrap("register_pk", RegisterPk(id=ID, uuid=UUID, pk=PK))
        self.server.datagram_received(message.SerializeToString(), A)

    def test_udp_ok_only_after_commit(self):
        self.datagram()
        self.assertEqual(self.datagrams, [])
        self.store.commit()
        self.assertEqual(self.datagrams, [OK_BYTES])

    def test_udp_refusal_when_the_commit_fails(self):
        self.datagram()
        self.store.fail()
        self.assertEqual(self.datagrams, [SERVER_ERROR_BYTES])

    def tcp(self):
        factory = RendezvousTCPFactory(self.server, self.clock, offer_secure=False)
        address = IPv4Address("TCP", *A)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        message = messages.wrap("register_pk", RegisterPk(id=ID, uuid=UUID, pk=PK))
        protocol.dataReceived(encode_frame(message.SerializeToString()))
        return protocol, transport

    def replies(self, transport):
        return [messages.parse(p) for p in FrameDecoder(1 << 16).feed(transport.value())]

    def test_tcp_registration_waits_for_the_commit(self):
        protocol, transport = self.tcp()
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(self.server.registry.get(ID).channel)
        self.store.commit()
        [reply] = self.replies(transport)
        self.assertEqual(reply.register_pk_response.result, Result.OK)
        self.assertGreater(reply.register_pk_response.keep_alive, 0)
        self.assertIs(self.server.registry.get(ID).channel, protocol.session)

    def test_tcp_refusal_keeps_the_connection_for_a_retry(self):
        _, transport = self.tcp()
        self.store.fail()
        [reply] = self.replies(transport)
        self.assertEqual(reply.register_pk_response.result, Result.SERVER_ERROR)
        self.assertFalse(transport.disconnecting)
        self.assertIsNone(self.server.registry.get(ID))
