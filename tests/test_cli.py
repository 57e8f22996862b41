"""The operator's command lines: ``--version`` everywhere, and no twistd.pid in the foreground."""

import os
import subprocess
import sys

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted import __version__

from .livesupport import REPOSITORY

PLUGINS = ("rustdesk-hbbs", "rustdesk-hbbr", "rustdesk-server")


def run_python(*argv):
    env = dict(os.environ, PYTHONPATH=REPOSITORY)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          cwd=REPOSITORY)


class VersionTests(SynchronousTestCase):
    def test_plugins(self):
        for plugin in PLUGINS:
            result = run_python("-c", "from twisted.scripts.twistd import run; run()", plugin,
                                "--version")
            self.assertEqual((result.returncode, result.stdout),
                             (0, f"rustdesk-twisted {__version__}\n"), plugin + result.stderr)

    def test_scripts(self):
        for module, name in (("admin", "rustdesk-admin"), ("doctor", "rustdesk-doctor")):
            result = run_python("-c", f"from rustdesk_twisted.{module} import main; main()",
                                "--version")
            self.assertEqual((result.returncode, result.stdout),
                             (0, f"{name} {__version__}\n"), result.stderr)


class PidfileTests(SynchronousTestCase):
    """hbbs and hbbr started with ``-n`` in one directory must not fight over twistd.pid."""

    def parse(self, *argv):
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options["pidfile"]

    def test_foreground_writes_none(self):
        for plugin in PLUGINS:
            self.assertEqual(self.parse("-n", plugin), "", plugin)

    def test_named_pidfile_kept(self):
        self.assertEqual(self.parse("-n", "--pidfile", "hbbs.pid", "rustdesk-hbbs"),
                         os.path.abspath("hbbs.pid"))

    def test_daemon_keeps_the_default(self):
        self.assertEqual(self.parse("rustdesk-hbbr"), os.path.abspath("twistd.pid"))
