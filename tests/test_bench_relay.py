"""A seconds-long smoke run of ``python -m bench.relay``: it builds, runs and prints its table.

No timing is asserted; the figures come from running the benchmark itself.
"""

import io
import shutil
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench import relay


class BenchSmokeTests(SynchronousTestCase):
    def test_driver_prints_every_path(self):
        if shutil.which("cc") is None:
            raise SkipTest("no C compiler")
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        self.assertEqual(relay.main(["--seconds", "0.1", "--runs", "1", "--streams", "1"]), 0)
        rows = [line for line in output.getvalue().splitlines() if line.startswith("| ")]
        self.assertEqual([row.split(" | ")[0] for row in rows[1:]],
                         ["| direct loopback (C, no relay)", "| hbbr, kernel splice",
                          "| hbbr, userspace (--no-splice)"])
