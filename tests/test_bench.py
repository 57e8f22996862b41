"""A seconds-long smoke run of ``python -m bench --quick``: every scenario builds, runs and
prints its rows.  No timing is asserted; the figures come from running the benchmark itself.
"""

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchSmokeTests(SynchronousTestCase):
    def test_quick_run_prints_every_row(self):
        if shutil.which("cc") is None:
            raise SkipTest("no C compiler")
        result = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        rows = [line.split(" | ")[:2] for line in result.stdout.splitlines()
                if line.startswith("| ") and not line.startswith("| scenario")]
        figures = [figure for _, figure in rows]
        for expected in ("RegisterPeer/s held, < 0.1 % unanswered: hbbs",
                         "… baseline: C recvmmsg/sendmmsg answerer (ceiling)",
                         "… baseline: Twisted DatagramProtocol answerer, no parsing",
                         "hbbs RSS per registered peer, 2,000 peers",
                         "plain TCP: flows/s, 16 in flight", "secure TCP: p99 latency at 100 flows/s",
                         "direct loopback TCP, no relay (C), 1 stream",
                         "minimal C splice relay (ceiling), 8 streams",
                         "hbbr raw TCP, kernel splice, 1 stream",
                         "hbbr raw TCP, userspace (--no-splice), 8 streams",
                         "hbbr WebSocket, 64 KiB messages, 1 stream",
                         "pairing rate, 4 client threads"):
            self.assertIn(expected, figures, result.stdout)
        for path in ("userspace", "splice"):
            self.assertTrue(any(f.startswith(f"hbbr RSS per idle paired session, {path} path")
                                for f in figures), figures)
        self.assertNotIn("(failed)", figures, result.stdout)


class TableTests(SynchronousTestCase):
    def test_row_cells(self):
        row = harness.Row("s", "f", "u", [3, 1, 2], "b", "n")
        self.assertEqual(row.cells(), ["s", "f", "2", "1–3", "u", "b", "n"])
        self.assertEqual(harness.Row("s", "f", "u").cells()[2:4], ["–", "–"])

    def test_parse_fields(self):
        self.assertEqual(harness.parse_fields("a=1 b=2.5 c=-3e2"), {"a": 1.0, "b": 2.5, "c": -300.0})
