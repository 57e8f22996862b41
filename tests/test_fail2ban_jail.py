"""Real fail2ban: the shipped jail (``tap-configs/fail2ban/rustdesk.local``) and filter ban the
source of repeated limit hits, in an nftables set, inside a network namespace of its own.

Only the log source differs from production (a file instead of the systemd journal), so
the jail's action and thresholds are the ones operators install.
"""

import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from .livesupport import REPOSITORY

CONFIGS = os.path.join(REPOSITORY, "tap-configs", "fail2ban")
ATTACKER = "192.0.2.66"
VICTIM = "192.0.2.99"
TOOLS = ("ip", "nft", "fail2ban-client", "fail2ban-server")


def _unavailable():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for a network namespace and nftables"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages iproute2, nftables, fail2ban)"
    return None


def _line(address, text):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return f"{now} [rustdesk_twisted.hbbs.limits.IpBlocker#warn] {address} {text}\n"


class JailTests(unittest.TestCase):
    timeout = 90

    def setUp(self):
        reason = _unavailable()
        if reason:
            raise unittest.SkipTest(reason)
        self.namespace = f"rd{os.getpid()}f2b"
        subprocess.run(["ip", "netns", "add", self.namespace], check=True, capture_output=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.namespace],
                        capture_output=True)
        self.directory = tempfile.mkdtemp(prefix="rdjail")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.conf = os.path.join(self.directory, "conf")
        shutil.copytree("/etc/fail2ban", self.conf)
        shutil.copy(os.path.join(CONFIGS, "rustdesk.conf"),
                    os.path.join(self.conf, "filter.d", "rustdesk.conf"))
        jails = os.path.join(self.conf, "jail.d")
        for name in os.listdir(jails):
            os.remove(os.path.join(jails, name))
        shutil.copy(os.path.join(CONFIGS, "rustdesk.local"), jails)
        self.log = os.path.join(self.directory, "hbbs.log")
        open(self.log, "w").close()
        with open(os.path.join(jails, "zz-test.local"), "w") as f:
            f.write(f"[rustdesk]\nbackend = polling\nlogpath = {self.log}\n")
        with open(os.path.join(self.conf, "fail2ban.local"), "w") as f:
            f.write(f"[Definition]\nsocket = {self.directory}/f2b.sock\n"
                    f"pidfile = {self.directory}/f2b.pid\ndbfile = :memory:\n"
                    f"logtarget = {self.directory}/f2b.log\n")

    def client(self, *args):
        return subprocess.run(["ip", "netns", "exec", self.namespace, "fail2ban-client",
                               "-c", self.conf, *args], capture_output=True, text=True)

    def ruleset(self):
        return subprocess.run(["ip", "netns", "exec", self.namespace, "nft", "list", "ruleset"],
                              capture_output=True, text=True).stdout

    @inlineCallbacks
    def test_repeated_limit_hits_ban_only_their_source(self):
        started = self.client("start")
        self.assertEqual(started.returncode, 0, started.stderr + started.stdout)
        self.addCleanup(self.client, "stop")
        with open(self.log, "a") as f:
            for _ in range(5):
                f.write(_line(ATTACKER, f'limit ids-per-day reached: 300/day, id "x {VICTIM} "'))
                f.write(_line(VICTIM, 'new peer "123456789"'))
        for _ in range(250):  # the ban shows in the status, then in nftables
            status, rules = self.client("status", "rustdesk").stdout, self.ruleset()
            if ATTACKER in status and ATTACKER in rules:
                break
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertIn(ATTACKER, status, status + open(f"{self.directory}/f2b.log").read())
        self.assertNotIn(VICTIM, status)
        self.assertIn(ATTACKER, rules)
        self.assertNotIn(VICTIM, rules)
        self.assertIn("meta l4proto { tcp, udp }", rules)
