"""The whole traversal on real Linux NATs (network namespaces, see ``tests/netns.py``).

hbbs and hbbr run in the "public" namespace; the controlled peer (B) and the
controlling peer (A) run as ``python -m rustdesk_twisted.client`` processes
in their own namespaces behind cone-like or symmetric NATs.  The punch must
succeed between cones, the relay must be chosen or fallen back to where the
NAT is symmetric, and the relay must carry the encrypted session.
"""

import json
import os
import shutil
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from . import netns
from .livesupport import REPOSITORY

B_ID = "424242424"
REASON = netns.unavailable()
if REASON is None:
    netns.remove_stale()


class _Process(ProcessProtocol):
    """Collects stdout lines; ``line(predicate)`` fires on the first matching one."""

    def __init__(self):
        self.output = b""
        self.lines = []
        self.waiters = []
        self.ended = Deferred()

    def outReceived(self, data):
        self.output += data
        *complete, rest = self.output.split(b"\n")
        self.output = rest
        for raw in complete:
            self.lines.append(raw.decode(errors="replace"))
        self._wake()

    def errReceived(self, data):
        self.lines.append(data.decode(errors="replace"))
        self._wake()

    def _wake(self):
        for predicate, d in list(self.waiters):
            for line in self.lines:
                if predicate(line):
                    self.waiters.remove((predicate, d))
                    d.callback(line)
                    break

    def line(self, predicate):
        d = Deferred()
        self.waiters.append((predicate, d))
        self._wake()
        return d

    def processEnded(self, reason):
        for _, d in self.waiters:
            d.errback(RuntimeError("process ended:\n" + "\n".join(self.lines)))
        self.waiters = []
        self.ended.callback(reason.value.exitCode)


def _event(name):
    def match(line):
        try:
            return json.loads(line).get("event") == name
        except ValueError:
            return False
    return match


class NamespaceTraversalTests(unittest.TestCase):
    timeout = 120

    if REASON is not None:
        skip = f"network namespaces unavailable: {REASON}"

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="rdnetns")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def spawn(self, ns, argv):
        process = _Process()
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = self.topology.command(ns, sys.executable, *argv)
        reactor.spawnProcess(process, command[0], command, env=env, path=self.directory)
        self.addCleanup(self._stop, process)
        return process

    def _stop(self, process):
        if process.ended.called:
            return None
        process.transport.signalProcess("TERM")
        return process.ended

    def twistd(self, plugin, args, marker):
        process = self.spawn(self.topology.public, [
            "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
            "--logfile=-", plugin] + args)
        return process.line(lambda line: marker in line)

    @inlineCallbacks
    def network(self, a_nat, b_nat):
        """Build the namespaces and start hbbs, hbbr and B; returns the key."""
        self.topology = netns.Topology(a_nat, b_nat)
        self.addCleanup(self.topology.teardown)
        self.topology.build()
        yield self.twistd("rustdesk-hbbs", [
            "--data-dir", self.directory, "-r", f"{netns.SERVER_IP}:21117",
            "--console", f"unix:{self.directory}/hbbs.sock"], "Relay servers:")
        yield self.twistd("rustdesk-hbbr", [
            "-k", "-", "--directory", self.directory,
            "--console", f"unix:{self.directory}/hbbr.sock"], "bandwidth:")
        with open(os.path.join(self.directory, "id_ed25519.pub")) as f:
            self.key = f.read()
        self.b = self.spawn(self.topology.client["b"], [
            "-m", "rustdesk_twisted.client", "controlled", "--server", netns.SERVER_IP,
            "--key", self.key, "--id", B_ID])
        nat = yield self.b.line(_event("nat_type"))
        yield self.b.line(_event("registered"))
        return json.loads(nat)["nat_type"]

    @inlineCallbacks
    def connect(self, *extra):
        a = self.spawn(self.topology.client["a"], [
            "-m", "rustdesk_twisted.client", "controlling", "--server", netns.SERVER_IP,
            "--key", self.key, "--id", B_ID] + list(extra))
        line = yield a.line(lambda line: line.startswith("{") and '"kind"' in line)
        status = yield a.ended
        result = json.loads(line)
        self.assertEqual(status, 0, result)
        self.assertTrue(result["echo"], result)
        self.assertTrue(result["secured"], result)
        self.assertTrue(result["verified_pk"], result)
        return result

    @inlineCallbacks
    def test_punch_between_cone_nats(self):
        b_nat = yield self.network("cone", "cone")
        self.assertEqual(b_nat, "ASYMMETRIC")
        result = yield self.connect()
        self.assertEqual((result["nat_type"], result["kind"]), ("ASYMMETRIC", "direct"))
        # A reached B at B's NAT's public address, not at a private one.
        self.assertEqual(result["peer_addr"][0], self.topology.public_ip("b"))
        session = yield self.b.line(_event("session"))
        self.assertEqual(json.loads(session)["route"], "direct")

    @inlineCallbacks
    def test_forced_relay_between_cone_nats(self):
        yield self.network("cone", "cone")
        result = yield self.connect("--force-relay")
        self.assertEqual((result["kind"], result["relay_server"]),
                         ("relay", f"{netns.SERVER_IP}:21117"))

    @inlineCallbacks
    def test_symmetric_nat_relays(self):
        yield self.network("symmetric", "cone")
        result = yield self.connect()
        self.assertEqual((result["nat_type"], result["kind"]), ("SYMMETRIC", "relay"))
        self.assertFalse(result["relay_requested"])
        session = yield self.b.line(_event("session"))
        self.assertEqual(json.loads(session)["route"], "relay")

    @inlineCallbacks
    def test_failed_punch_falls_back_to_the_relay(self):
        """A behind a symmetric NAT claims a cone: the punch fails, A asks B for the relay."""
        yield self.network("symmetric", "cone")
        result = yield self.connect("--assume-nat", "cone")
        self.assertEqual(result["kind"], "relay")
        self.assertTrue(result["relay_requested"])
        self.assertTrue(result["direct_error"])

    @inlineCallbacks
    def test_symmetric_controlled_side_relays(self):
        b_nat = yield self.network("cone", "symmetric")
        self.assertEqual(b_nat, "SYMMETRIC")
        result = yield self.connect()
        self.assertEqual(result["kind"], "relay")
