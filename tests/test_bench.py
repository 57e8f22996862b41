"""A seconds-long smoke run of ``python -m bench --quick``: every scenario builds, runs and
prints its rows, against servers it starts and against servers given to it that keep the
official per-IP limits.  No timing is asserted; the figures come from running the benchmark
itself.
"""

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_bench(*args):
    """``python -m bench --quick ARGS``: (completed process, {figure: notes})."""
    if shutil.which("cc") is None:
        raise SkipTest("no C compiler")
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    rows = [line.split(" | ") for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| scenario")]
    return result, {row[1]: row[-1] for row in rows}


class BenchSmokeTests(SynchronousTestCase):
    def test_quick_run_prints_every_row(self):
        result, notes = quick_bench()
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        figures = list(notes)
        for expected in ("RegisterPeer/s held, < 0.1 % unanswered: hbbs",
                         "new RegisterPk/s acked after commit, ≥ 99.9 % OK: hbbs",
                         "… baseline: same load, C recvmmsg/sendmmsg answerer (ceiling)",
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


class LimitedServerTests(SynchronousTestCase):
    """Issue 13: the bench measures a server given to it that enforces the official per-IP
    limits (here ours, with its defaults: no --ip-limit-exempt, no raised caps), its
    process read through --server-pid, and meets no refusal."""

    def test_every_scenario_against_servers_with_per_ip_limits(self):
        if shutil.which("cc") is None:
            raise SkipTest("no C compiler")
        hbbs, hbbs_target, licence = harness.start_hbbs()
        self.addCleanup(hbbs.stop)
        hbbr, hbbr_target = harness.start_hbbr("-k", licence)  # it requires the key too
        self.addCleanup(hbbr.stop)
        result, notes = quick_bench("--hbbs", hbbs_target, "--licence", licence,
                                    "--hbbr", hbbr_target,
                                    "--server-pid", f"{hbbs.pid},{hbbr.pid}")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        for figure in ("RegisterPeer/s held, < 0.1 % unanswered: hbbs",
                       "new RegisterPk/s acked after commit, ≥ 99.9 % OK: hbbs",
                       "server RSS per registered peer, 2,000 new peers",
                       "plain TCP: flows/s, 16 in flight", "secure TCP: p99 latency at 100 flows/s",
                       "hbbr raw TCP, kernel splice, 1 stream",
                       "hbbr WebSocket, 64 KiB messages, 1 stream",
                       "pairing rate, 4 client threads",
                       "relay RSS per idle paired session, 200 sessions"):
            self.assertIn(figure, notes, result.stdout)
        self.assertNotIn("(failed)", notes, result.stdout)
        self.assertIn("0 TOO_FREQUENT and 0 other refusals",
                      notes["new RegisterPk/s acked after commit, ≥ 99.9 % OK: hbbs"])
        self.assertIn("0 TOO_FREQUENT, 0 other refusals",
                      notes["server RSS per registered peer, 2,000 new peers"])
        for figure, note in notes.items():
            self.assertNotIn("refused by the server", note, figure)
            self.assertNotIn("did not pair", note, figure)
            self.assertNotIn("run(s) failed", note, figure)
        # The server's CPU comes from /proc of --server-pid (the rate rows show it only
        # for a rate held, which a loaded machine may not give a quick run).
        self.assertNotIn("server ? cores", notes["plain TCP: flows/s, 16 in flight"])
        self.assertIn(f"pid {hbbs.pid}", notes["server RSS per registered peer, 2,000 new peers"])


class TableTests(SynchronousTestCase):
    def test_row_cells(self):
        row = harness.Row("s", "f", "u", [3, 1, 2], "b", "n")
        self.assertEqual(row.cells(), ["s", "f", "2", "1–3", "u", "b", "n"])
        self.assertEqual(harness.Row("s", "f", "u").cells()[2:4], ["–", "–"])

    def test_parse_fields(self):
        self.assertEqual(harness.parse_fields("a=1 b=2.5 c=-3e2"), {"a": 1.0, "b": 2.5, "c": -300.0})
