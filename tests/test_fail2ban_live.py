"""Real sockets: crafted ids sent to ``twistd -n rustdesk-hbbs`` cannot make the fail2ban
filter (``tap-configs/fail2ban/rustdesk.conf``, checked by Debian's ``fail2ban-regex``)
name anyone but the sender, and cannot break or colour the log."""

import os
import re
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.rendezvous_pb2 import PunchHoleRequest, RegisterPk

from .livesupport import (
    REPOSITORY,
    DatagramClient,
    FramedClient,
    free_port_block,
    start_twistd,
    stop_twistd,
)

ATTACKER = "127.0.0.66"
VICTIM = "127.0.0.99"
FILTER = os.path.join(REPOSITORY, "tap-configs", "fail2ban", "rustdesk.conf")
FAIL2BAN_REGEX = shutil.which("fail2ban-regex")
CRAFTED = [
    f'a" from {VICTIM} to b',
    f"x punch LICENSE_MISMATCH from {VICTIM} to y",
    f"x) rate-limit y for {VICTIM} (id z",
    f'\n2026-12-04T00:00:00+0000 [rustdesk_twisted.x#warn] {VICTIM} punch LICENSE_MISMATCH to "1"',
    f"x [rustdesk_twisted.y#warn] {VICTIM} limit ids-per-day reached",
    f"\x1b[2J\x00 {VICTIM} ",
    f"z\r{VICTIM}:1 refused: licence key mismatch",
]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT")
MATCHED_HOST = re.compile(r"^\|\s+(\S+)\s+\w{3} \w{3} ", re.MULTILINE)


class CraftedIdTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_only_the_sender_is_named(self):
        if FAIL2BAN_REGEX is None:
            raise unittest.SkipTest("fail2ban-regex (Debian package fail2ban) is not installed")
        directory = tempfile.mkdtemp(prefix="rdf")
        self.addCleanup(shutil.rmtree, directory)
        port = free_port_block((-1, 0, 2))
        hbbs = yield start_twistd(
            reactor, "rustdesk-hbbs",
            ["-p", str(port), "-b", "127.0.0.1", "--data-dir", directory,
             "--console", f"unix:{directory}/console.sock", "--admin", "off",
             "--ip-limit-per-minute", "3"],
            directory, b"Relay servers").ready
        self.addCleanup(stop_twistd, hbbs)

        # Punch requests with a wrong key: one LICENSE_MISMATCH line per request.
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(ATTACKER, 0))
        for crafted in CRAFTED:
            client = yield connectProtocol(endpoint, FramedClient())
            yield client.message(1)
            client.send(messages.wrap("punch_hole_request", PunchHoleRequest(
                id=crafted, licence_key="wrong key")))
            answer = yield client.message(2)
            self.assertEqual(answer.WhichOneof("union"), "punch_hole_response")
            client.transport.loseConnection()

        # Registrations past --ip-limit-per-minute: a limit line carrying the crafted id.
        peer = DatagramClient()
        udp = reactor.listenUDP(0, peer, interface=ATTACKER)
        self.addCleanup(udp.stopListening)
        for number, crafted in enumerate(CRAFTED * 2):
            peer.transport.write(messages.wrap("register_pk", RegisterPk(
                id=f"{crafted}{number}", uuid=b"u", pk=bytes(32))).SerializeToString(),
                ("127.0.0.1", port))
            yield peer.next("register_pk_response")

        yield stop_twistd(hbbs)
        output = hbbs.output.decode("utf-8")
        log = os.path.join(directory, "hbbs.log")
        with open(log, "w") as f:
            f.write(output)
        report, _, code = yield getProcessOutputAndValue(
            FAIL2BAN_REGEX, ["-v", log, FILTER], env=os.environ)
        self.assertEqual(code, 0, report)
        hosts = MATCHED_HOST.findall(report.decode())
        self.assertEqual(set(hosts), {ATTACKER}, report.decode()[-3000:])
        self.assertGreaterEqual(len(hosts), len(CRAFTED) + 1)
        self.assertIn("LICENSE_MISMATCH", output)
        self.assertIn("limit registrations-per-minute reached", output)
        for line in output.splitlines():
            self.assertRegex(line, TIMESTAMP, "a client broke a log line")
        self.assertNotIn("#debug]", output)  # routine refusals cost no output by default
        self.assertNotIn("\x1b", output)
        self.assertNotIn("\x00", output)
