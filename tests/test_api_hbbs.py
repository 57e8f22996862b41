"""HbbsLink against a real hbbs core in memory: OnlineRequest on PORT-1 (NatTestTCP), the
console socket (release / rename) and hbbs's peer table read read-only."""

import os
import sqlite3

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import lockfile
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest

from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.api.app import at_once
from rustdesk_twisted.api.hbbs import ONLINE_BATCH, ONLINE_CACHE_SECONDS, ONLINE_TIMEOUT, HbbsLink
from rustdesk_twisted.hbbs.console import HbbsConsole, console_factory
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.hbbs.store import OFFICIAL_SCHEMA
from rustdesk_twisted.hbbs.streams import NatTestTCP, RendezvousTCPFactory
from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.keys import ServerKey
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPk

from .apisupport import ApiHarness

NAT = ("127.0.0.1", 21115)


class InMemoryHbbs:
    """hbbs's rendezvous core and its PORT-1 protocol (NatTestTCP), answering the connections
    the API opens on ``clock`` (a MemoryReactorClock) to :data:`NAT`."""

    def __init__(self, clock):
        self.clock = clock
        self.registry = PeerRegistry()
        self.server = RendezvousServer(self.registry, ServerKey("", None, "test"),
                                       RelayRotation([]), clock)
        self.server.send_datagram = lambda payload, address: None
        self.factory = RendezvousTCPFactory(self.server, clock, offer_secure=False,
                                            limits=ConnectionLimits(clock),
                                            protocol_class=NatTestTCP)

    def register(self, peer_id, uuid=b"machine-a", pk=bytes(32)):
        """A RegisterPk datagram from the peer: registered, and online for a while."""
        request = messages.wrap("register_pk", RegisterPk(id=peer_id, uuid=uuid, pk=pk))
        self.server.datagram_received(request.SerializeToString(), ("203.0.113.8", 40000))

    def online(self, *ids):
        for peer_id in ids:
            self.register(peer_id, uuid=peer_id.encode())

    def _next(self):
        host, port, factory, _timeout, _bind = self.clock.tcpClients.pop(0)
        connector = self.clock.connectors.pop(0)
        assert (host, port) == NAT, (host, port)
        return factory, connector

    def answer(self):
        """Join every connection the API opened to hbbs and let them run; how many there were."""
        count = 0
        while self.clock.tcpClients:
            factory, _ = self._next()
            source = IPv4Address("TCP", "127.0.0.1", 50000 + count)
            client, server = factory.buildProtocol(None), self.factory.buildProtocol(source)
            server_io = iosim.makeFakeServer(server)
            server_io.peerAddress, server_io.hostAddress = source, IPv4Address("TCP", *NAT)
            iosim.connect(server, server_io, client, iosim.makeFakeClient(client), greet=False,
                          clock=self.clock).flush()
            count += 1
        return count

    def refuse(self):
        factory, connector = self._next()
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))


class OnlineTests(unittest.TestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.clock.advance(1_800_000_000)
        self.hbbs = InMemoryHbbs(self.clock)
        self.link = HbbsLink(self.clock, nat=NAT)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def ask(self, ids):
        d = self.link.online(ids)
        connections = self.hbbs.answer()
        return self.successResultOf(d), connections

    def test_online_subset_through_the_official_request(self):
        self.hbbs.online("111111111", "333333333")
        self.assertEqual(self.ask(["111111111", "222222222", "333333333", "111111111"]), ({"111111111", "333333333"}, 1))

    def test_answers_are_cached_for_a_few_seconds(self):
        self.hbbs.online("111111111")
        self.ask(["111111111", "222222222"])
        self.hbbs.online("222222222")
        self.assertEqual(self.ask(["111111111", "222222222"]), ({"111111111"}, 0))
        self.clock.advance(ONLINE_CACHE_SECONDS)
        self.assertEqual(self.ask(["111111111", "222222222"]), ({"111111111", "222222222"}, 1))

    def test_many_ids_go_in_batches(self):
        ids = [str(100_000_000 + i) for i in range(ONLINE_BATCH * 2 + 5)]
        self.hbbs.online(ids[0], ids[-1])
        self.assertEqual(self.ask(ids), ({ids[0], ids[-1]}, 3))

    def test_no_hbbs_means_offline_said_once_then_recovery_said_once(self):
        for _ in range(2):
            d = self.link.online(["111111111"])
            self.hbbs.refuse()
            self.clock.advance(ONLINE_TIMEOUT)
            self.assertEqual(self.successResultOf(d), set())
            self.clock.advance(ONLINE_CACHE_SECONDS)
        [warning] = [e for e in self.logged if e.get("event") == "api.hbbs_link"]
        self.assertIn("does not answer", warning["log_format"])
        self.hbbs.online("111111111")
        self.assertEqual(self.ask(["111111111"]), ({"111111111"}, 1))
        self.assertEqual(len([e for e in self.logged if e.get("event") == "api.hbbs_link"]), 2)

    def test_an_hbbs_that_never_answers_times_out(self):
        d = self.link.online(["111111111"])
        [(_host, _port, factory, _timeout, _bind)] = self.clock.tcpClients
        silent, client = Protocol(), factory.buildProtocol(None)
        iosim.connect(silent, iosim.makeFakeServer(silent), client, iosim.makeFakeClient(client),
                      greet=False, clock=self.clock).flush()
        self.assertNoResult(d)
        self.clock.advance(ONLINE_TIMEOUT)
        self.assertEqual(self.successResultOf(d), set())

    def test_without_hbbs_everything_is_offline_at_once(self):
        link = HbbsLink(self.clock)
        self.assertEqual(self.successResultOf(link.online(["111111111"])), set())
        self.assertEqual(self.clock.tcpClients, [])

    def test_device_listing_shows_online_state(self):
        api = ApiHarness(self, clock=self.clock, hbbs=self.link)
        for peer_id in ("111111111", "222222222"):
            api.request("POST", "/api/sysinfo", {"id": peer_id, "uuid": "dQ=="})
        self.hbbs.online("222222222")
        d = api.app.devices.listing()
        self.hbbs.answer()
        self.assertEqual([(d["id"], d["online"]) for d in self.successResultOf(d)["data"]],
                         [("111111111", False), ("222222222", True)])


class ConsoleTests(unittest.TestCase):
    """release and rename reach hbbs's registry through its console socket."""

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.clock.advance(1_800_000_000)
        self.hbbs = InMemoryHbbs(self.clock)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.socket = os.path.join(directory, "hbbs-console.sock")
        self.link = HbbsLink(self.clock, console=self.socket)

    def run_console(self, d):
        """Answer the API's console connection with hbbs's console; the reply."""
        [(path, factory, _timeout, _pid)] = self.clock.unixClients
        self.assertEqual(path, self.socket)
        client = factory.buildProtocol(None)
        server = console_factory(HbbsConsole(self.hbbs.server), self.clock).buildProtocol(None)
        iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
                      greet=False, clock=self.clock).flush()
        return self.successResultOf(d)

    def command(self, d_factory):
        """``d_factory()`` while the socket's lock is held, as by a running hbbs."""
        lock = lockfile.FilesystemLock(self.socket + ".lock")
        self.assertTrue(lock.lock())
        try:
            d = d_factory()
        finally:
            lock.unlock()
        return d

    def test_release_forgets_the_peer(self):
        self.hbbs.register("111111111")
        self.assertIsNotNone(self.hbbs.registry.get("111111111"))
        d = self.command(lambda: self.link.release("111111111"))
        self.assertEqual(self.run_console(d), "111111111: released\n")
        self.assertIsNone(self.hbbs.registry.get("111111111"))

    def test_rename_moves_the_peer(self):
        self.hbbs.register("111111111")
        d = self.command(lambda: self.link.rename("111111111", "kiosk777"))
        self.assertEqual(self.run_console(d), "111111111: renamed to kiosk777\n")
        self.assertIsNone(self.hbbs.registry.get("111111111"))
        self.assertIsNotNone(self.hbbs.registry.get("kiosk777"))

    def test_without_a_running_hbbs_the_reply_says_so(self):
        reply = self.successResultOf(self.link.release("111111111"))
        self.assertIn("hbbs is not running", reply)
        self.assertEqual(self.clock.unixClients, [])


class PeerKeyTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        connection = sqlite3.connect(self.path)
        connection.executescript(OFFICIAL_SCHEMA)
        connection.execute("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, '{}')",
                           (b"g1", "111111111", b"machine-a", bytes(range(32))))
        connection.commit()
        connection.close()

    def test_registered_key_and_uuid(self):
        link = HbbsLink(None, peer_db=self.path, blocking=at_once)
        self.assertEqual(self.successResultOf(link.peer_key("111111111")),
                         (b"machine-a", bytes(range(32))))
        self.assertIsNone(self.successResultOf(link.peer_key("222222222")))

    def test_read_only_and_harmless_without_a_table(self):
        before = os.stat(self.path).st_mtime_ns
        HbbsLink(None, peer_db=self.path, blocking=at_once).peer_key("111111111")
        self.assertEqual(os.stat(self.path).st_mtime_ns, before)
        for path in (self.path + ".missing", self.mktemp()):
            link = HbbsLink(None, peer_db=path, blocking=at_once)
            self.assertIsNone(self.successResultOf(link.peer_key("111111111")))
        self.assertIsNone(self.successResultOf(HbbsLink(None).peer_key("111111111")))
