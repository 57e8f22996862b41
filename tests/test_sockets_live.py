"""Real twistd under umask 000: every Unix socket the servers create is 0600 (issue 9 items 4, 9).

The hbbr console used to be ``srw-rw-rw-`` in the current directory, and an
operator's ``--console unix:/path`` without ``mode=`` was too.
"""

import os
import shutil
import stat
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from .livesupport import free_port_block, start_twistd, stop_twistd


class SocketModeTests(TestCase):
    timeout = 60

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="rdsock")
        self.addCleanup(shutil.rmtree, self.directory)

    @inlineCallbacks
    def start(self, plugin, args, marker):
        process = yield start_twistd(reactor, plugin, args, self.directory, marker,
                                     umask=0).ready
        self.addCleanup(stop_twistd, process)

    def assertOwnerOnly(self, *names):
        modes = {name: stat.filemode(os.stat(os.path.join(self.directory, name)).st_mode)
                 for name in names}
        self.assertEqual(modes, dict.fromkeys(names, "srw-------"))

    @inlineCallbacks
    def test_hbbr_default_console_in_data_dir(self):
        data = os.path.join(self.directory, "data")
        os.makedirs(data)
        port = free_port_block((0, 2, 4))
        yield self.start("rustdesk-hbbr", ["-p", str(port), "-b", "127.0.0.1",
                                           "--data-dir", data], b"raw TCP pairs:")
        self.assertOwnerOnly("data/hbbr-console.sock")
        self.assertFalse(os.path.exists(os.path.join(self.directory, "hbbr-console.sock")))

    @inlineCallbacks
    def test_given_consoles_without_mode(self):
        port = free_port_block((-1, 0, 2, 4, 5, 7, 9))
        yield self.start("rustdesk-hbbs", ["-p", str(port), "-b", "127.0.0.1",
                                           "--console", f"unix:{self.directory}/hbbs.sock"],
                         b"Relay servers:")
        yield self.start("rustdesk-hbbr", ["-p", str(port + 5), "-b", "127.0.0.1",
                                           "--console", f"unix:{self.directory}/hbbr.sock"],
                         b"raw TCP pairs:")
        self.assertOwnerOnly("hbbs.sock", "hbbr.sock")

    @inlineCallbacks
    def test_combined_server(self):
        port = free_port_block((-2, -1, 0, 1, 2, 3, 4, 5))
        yield self.start("rustdesk-server",
                         ["-p", str(port), "-b", "127.0.0.1", "--data-dir", self.directory,
                          "--relay-console", f"unix:{self.directory}/relay.sock:mode=666"],
                         b"hbbs and hbbr share")
        self.assertOwnerOnly("hbbs-console.sock", "relay.sock")
