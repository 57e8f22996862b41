"""rustdesk-doctor against real ``twistd`` hbbs and hbbr on loopback: all green, then broken.

The simulated peers bind 127.0.0.2 and 127.0.0.3, so hbbs sees two hosts and
takes the punch path; the servers listen on 127.0.0.1.
"""

import io
import json
import os
import shutil
import sqlite3
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from rustdesk_twisted import doctor
from rustdesk_twisted.wire import keys

from .livesupport import free_port_block, start_twistd, stop_twistd

WRONG_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


class DoctorTests(unittest.TestCase):
    timeout = 90

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        sockets = tempfile.mkdtemp(prefix="doctor")
        self.addCleanup(shutil.rmtree, sockets)
        self.sockets = sockets
        self.port = free_port_block((-1, 0, 1, 2, 3, 4, 5, 34, 36, 44))
        self.relay_port = self.port + 1

    @inlineCallbacks
    def start(self, hbbs=(), hbbr=(), with_hbbr=True):
        process = yield start_twistd(
            reactor, "rustdesk-hbbs",
            ["-p", str(self.port), "--bind", "127.0.0.1", "--data-dir", self.directory,
             "-r", f"127.0.0.1:{self.relay_port}",
             "--console", f"unix:{self.sockets}/hbbs.sock"] + list(hbbs),
            self.directory, b"Relay servers:").ready
        self.addCleanup(stop_twistd, process)
        self.processes = [process]
        with open(os.path.join(self.directory, "id_ed25519.pub")) as f:
            self.key = f.read()
        if with_hbbr:
            process = yield start_twistd(
                reactor, "rustdesk-hbbr",
                ["-p", str(self.relay_port), "-b", "127.0.0.1", "-k", "-",
                 "--directory", self.directory,
                 "--console", f"unix:{self.sockets}/hbbr.sock"] + list(hbbr),
                self.directory, b"bandwidth:").ready
            self.addCleanup(stop_twistd, process)
            self.processes.append(process)

    @inlineCallbacks
    def diagnose(self, *extra, key=None):
        out = io.StringIO()
        argv = [f"127.0.0.1:{self.port}", "--key", key or self.key, "--json"] + list(extra)
        status = yield doctor.run(reactor, argv, out)
        report = json.loads(out.getvalue())
        self.assertEqual(status, 0 if report["ok"] else 1)
        return {check["name"]: check for check in report["checks"]}

    def assertStatuses(self, checks, expected):
        failed = {name: c["status"] for name, c in checks.items() if c["status"] != "ok"}
        self.assertEqual(failed, expected, json.dumps(checks, indent=1))
        for name in expected:
            self.assertTrue(checks[name]["hint"], name)

    @inlineCallbacks
    def test_all_green(self):
        yield self.start()
        checks = yield self.diagnose()
        self.assertStatuses(checks, {})
        self.assertIn("direct", checks["direct connection"]["detail"])
        self.assertIn("end-to-end encrypted", checks["direct connection"]["detail"])
        self.assertIn(f"relay 127.0.0.1:{self.relay_port}",
                      checks["relay connection (forced)"]["detail"])
        self.assertIn(keys.fingerprint(keys.decode_public(self.key)),
                      checks["key exchange (secure TCP)"]["detail"])

    @inlineCallbacks
    def test_leaves_nothing_in_the_database(self):
        """The test peers are probes: after a full run and a clean stop, no row, no last-seen."""
        yield self.start()
        checks = yield self.diagnose()
        self.assertStatuses(checks, {})
        for process in self.processes:
            yield stop_twistd(process)
        conn = sqlite3.connect(os.path.join(self.directory, "db_v2.sqlite3"))
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("select count(*) from peer").fetchone(), (0,))
        self.assertEqual(conn.execute("select count(*) from peer_last_seen").fetchone(), (0,))

    @inlineCallbacks
    def test_text_report_and_exit_status(self):
        yield self.start()
        out = io.StringIO()
        status = yield doctor.run(reactor, [f"127.0.0.1:{self.port}", "--key", self.key], out)
        self.assertEqual(status, 0)
        self.assertTrue(out.getvalue().rstrip().endswith("all green"))
        self.assertNotIn("[FAIL]", out.getvalue())

    @inlineCallbacks
    def test_hbbr_down(self):
        yield self.start(with_hbbr=False)
        checks = yield self.diagnose()
        relay = self.relay_port
        self.assertStatuses(checks, {
            f"port {relay}/tcp (hbbr relay)": "fail",
            f"port {relay + 2}/tcp (hbbr WebSocket)": "fail",
            "relay connection (forced)": "fail",
            f"WebSocket mode (ports {self.port + 2}, relay +2)": "fail",
        })
        self.assertIn("is hbbr running", checks["relay connection (forced)"]["hint"])
        self.assertIn("refused", checks["relay connection (forced)"]["detail"])

    @inlineCallbacks
    def test_wrong_key(self):
        yield self.start()
        checks = yield self.diagnose(key=WRONG_KEY)
        self.assertStatuses(checks, {
            "key exchange (secure TCP)": "fail",
            "direct connection": "fail",
            "relay connection (forced)": "fail",
            f"WebSocket mode (ports {self.port + 2}, relay +2)": "fail",
        })
        self.assertEqual(checks["key exchange (secure TCP)"]["detail"],
                         "Signature mismatch in key exchange")
        self.assertEqual(checks["direct connection"]["detail"], "Key mismatch")
        self.assertIn("id_ed25519.pub", checks["direct connection"]["hint"])

    @inlineCallbacks
    def test_udp_blocked(self):
        """hbbs's UDP listener is elsewhere: the UDP port is closed, TCP works."""
        yield self.start(hbbs=["--listen-udp", str(self.port + 44)])
        checks = yield self.diagnose()
        self.assertStatuses(checks, {
            f"UDP registration (port {self.port}/udp)": "fail",
            "TCP registration (fallback for the connection tests)": "warn",
        })
        self.assertIn("no UDP reply", checks[f"UDP registration (port {self.port}/udp)"]["detail"])

    @inlineCallbacks
    def test_relay_port_closed(self):
        """hbbr's TCP relay port is closed (WebSocket still open)."""
        yield self.start(hbbr=["--relay", f"tcp:{self.port + 34}:interface=127.0.0.1"])
        checks = yield self.diagnose()
        self.assertStatuses(checks, {
            f"port {self.relay_port}/tcp (hbbr relay)": "fail",
            "relay connection (forced)": "fail",
        })
        self.assertIn(f"hbbr at 127.0.0.1:{self.relay_port}",
                      checks["relay connection (forced)"]["hint"])

    @inlineCallbacks
    def test_bad_arguments(self):
        out = io.StringIO()
        status = yield doctor.run(reactor, ["127.0.0.1:notaport"], out)
        self.assertEqual(status, 2)
        self.assertIn("bad port", out.getvalue())
        out = io.StringIO()
        status = yield doctor.run(reactor, ["127.0.0.1:99999"], out)  # was a traceback
        self.assertEqual((status, out.getvalue()),
                         (2, "rustdesk-doctor: bad port in '127.0.0.1:99999'\n"))
