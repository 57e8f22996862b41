"""Connection caps counted from accept, and the descriptor budget hbbs and hbbr share
(issue 9 item 12): one source cannot take the relay, nor the relay hbbs, down."""

import resource

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.admission import (
    AdmittedFactory,
    ConnectionLimits,
    DescriptorBudget,
    raise_descriptor_limit,
)
from rustdesk_twisted.config import ConfigError

from .test_hbbr_support import Harness


class FakeLimits:
    """``resource``'s RLIMIT_NOFILE calls over a pair of numbers."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft, hard, refuse=False):
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


class DescriptorLimitTests(SynchronousTestCase):
    def test_soft_raised_to_hard(self):
        limits = FakeLimits(1024, 524288)
        self.assertEqual(raise_descriptor_limit(limits), (1024, 524288))
        self.assertEqual(limits.limits, (524288, 524288))

    def test_left_alone_when_already_hard_or_unbounded_or_refused(self):
        for limits in (FakeLimits(20000, 20000), FakeLimits(1024, resource.RLIM_INFINITY),
                       FakeLimits(1024, 4096, refuse=True)):
            before = limits.limits
            self.assertEqual(raise_descriptor_limit(limits), (before[0], before[0]))
            self.assertEqual(limits.limits, before)

    def test_a_limit_that_leaves_almost_nothing_is_refused_with_a_sentence(self):
        error = self.assertRaises(ConfigError, DescriptorBudget().open, FakeLimits(260, 260))
        self.assertEqual(str(error), "the descriptor limit is 260 (ulimit -n), which leaves 4 "
                                     "for connections after 256 kept for files; raise it to at "
                                     "least 272")

    def test_budget_is_limit_minus_reserve_and_banner_says_so(self):
        budget = DescriptorBudget()
        budget.open(FakeLimits(1024, 20000))
        self.assertEqual(budget.total, 20000 - 256)
        self.assertEqual(budget.banner(), "soft limit raised from 1024 to 20000")
        budget.open(FakeLimits(10, 10))
        self.assertEqual(budget.total, 20000 - 256, "a second open changes nothing")
        unraised = DescriptorBudget()
        unraised.open(FakeLimits(20000, 20000))
        self.assertEqual(unraised.banner(), "soft limit 20000, not raised (the hard limit)")


class BudgetSharingTests(SynchronousTestCase):
    """hbbr's connections (3 descriptors each with splice) and hbbs's on one budget."""

    def setUp(self):
        self.clock = Clock()
        self.budget = DescriptorBudget()
        self.budget.total = 1000
        self.hbbs = ConnectionLimits(self.clock, max_per_ip=10_000,
                                     budget=self.budget.share("hbbs", guaranteed=250))
        self.hbbr = ConnectionLimits(self.clock, max_per_ip=10_000,
                                     budget=self.budget.share("hbbr"), cost=3)

    def fill(self, limits, prefix):
        admitted = 0
        while limits.admit(f"{prefix}.{admitted // 250}.{admitted % 250}"):
            admitted += 1
        return admitted

    def test_relay_flood_leaves_hbbs_its_guarantee(self):
        self.assertEqual(self.fill(self.hbbr, "10.0"), 250)
        self.assertEqual(self.budget.used, 750)
        self.assertEqual(self.fill(self.hbbs, "10.1"), 250)
        self.assertEqual(self.budget.used, 1000)
        self.assertEqual(self.hbbr.limit_log.hits, {"descriptors": 1})
        self.assertEqual(self.hbbs.limit_log.hits, {"descriptors": 1})

    def test_hbbs_may_use_what_the_relay_does_not(self):
        self.assertEqual(self.fill(self.hbbs, "10.1"), 1000)
        self.assertFalse(self.hbbr.admit("10.0.0.1"))

    def test_release_gives_descriptors_back(self):
        self.fill(self.hbbr, "10.0")
        self.hbbr.release("10.0.0.0")
        self.assertEqual(self.budget.used, 747)
        self.assertTrue(self.hbbr.admit("10.0.0.0"))
        self.assertFalse(self.hbbr.admit("10.0.0.0"))


class AdmittedFactoryTests(SynchronousTestCase):
    def test_counts_from_accept_to_close(self):
        limits = ConnectionLimits(Clock(), max_per_ip=2)
        factory = AdmittedFactory(Factory.forProtocol(Protocol), limits)
        peer = IPv4Address("TCP", "192.0.2.1", 1)
        first, second = factory.buildProtocol(peer), factory.buildProtocol(peer)
        self.assertIsNone(factory.buildProtocol(peer))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1)))
        first.makeConnection(StringTransport())
        first.connectionLost(None)
        self.assertEqual(limits.per_source, {"192.0.2.1": 1, "192.0.2.2": 1})
        self.assertIsNotNone(factory.buildProtocol(peer))
        self.assertIsNotNone(second)


class RelayCapTests(SynchronousTestCase):
    """Every relay listener counts from accept, before any byte, per source."""

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.harness = Harness(limits=ConnectionLimits(Clock(), max_per_ip=3))

    def test_tcp_capped_per_source_and_released(self):
        h = self.harness
        held = [h.tcp("198.51.100.7") for _ in range(3)]
        self.assertIsNone(h.tcp("198.51.100.7"))
        self.assertIsNone(h.tcp("198.51.100.7"))
        self.assertIsNotNone(h.tcp("198.51.100.8"))
        _, _, client_transport, _ = held[0]
        client_transport.loseConnection()
        h.flush()
        self.assertIsNotNone(h.tcp("198.51.100.7"))
        lines = [formatEvent(e) for e in self.events if e.get("event") == "limit_reached"]
        self.assertEqual(lines, ["198.51.100.7 limit connections-per-ip reached: 3 open from it"])

    def test_websocket_counted_before_the_upgrade(self):
        h = self.harness
        peer = IPv4Address("TCP", "203.0.113.9", 1)
        held = [h.site.buildProtocol(peer) for _ in range(3)]
        self.assertNotIn(None, held)
        self.assertIsNone(h.site.buildProtocol(peer))
        self.assertIsNone(h.tcp("203.0.113.9"), "TCP and WebSocket share the per-source cap")
        held[0].makeConnection(StringTransport())
        held[0].connectionLost(None)
        self.assertIsNotNone(h.site.buildProtocol(peer))

    def test_blocklisted_not_counted(self):
        h = self.harness
        h.server.blocklist.add("198.51.100.7")
        self.assertIsNone(h.tcp("198.51.100.7"))
        self.assertEqual(h.server.limits.total, 0)
