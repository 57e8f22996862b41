"""The README's ```sh blocks, pasted as they are, in order, into one directory.

The directory looks like a checkout with ``.venv`` (a link to the running
venv, whose plugins the tests' install left in place): ``.venv/bin/...``
commands run as written.  Ports move only through ``PORT``, which the README
documents, so no block touches a default port.  A block starting a server runs
it in the background until the server's banner line; a new hbbs (alone or in
``rustdesk-server``) first stops the servers of earlier blocks, as the README
tells the reader to.  Every other line must exit 0.  Blocks that cannot run
here are listed in SKIPPED with the reason; every other block runs, so a new
README command is checked from the day it is written.
"""

import os
import re
import shutil
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from .livesupport import REPOSITORY, _TwistdProcess, free_port_block, stop_twistd

BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
INSTALL = re.compile(r"^.*\bpip install [^&]*&& ")
SERVER = re.compile(r"\btwistd -n (rustdesk-\w+)")
# What each plugin prints once it listens (hbbs: its relay list; hbbr: its limits).
READY = {"rustdesk-server": b"Relay servers:", "rustdesk-hbbs": b"Relay servers:",
         "rustdesk-hbbr": b"bandwidth:", "rustdesk-api": b"Listening on http"}
SKIPPED = {
    "bash scripts/test.sh": "the suite itself; its install step is run by tests.test_install",
    "useradd ": "sets up a host (user, /opt, /etc, systemd): tests.test_service checks its "
                "files and its plugin-cache step",
    "systemctl stop": "changes a host's service (systemd)",
    "docker build": "needs a Docker engine that can pull python:3.12-slim",
}


def readme_text():
    with open(os.path.join(REPOSITORY, "README.md"), encoding="utf-8") as f:
        return f.read()


def readme_blocks():
    return BLOCK.findall(readme_text())


def skip_reason(block):
    for start, reason in SKIPPED.items():
        if block.startswith(start):
            return reason
    return None


class ReadmeCommandTests(TestCase):
    timeout = 60

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="rdme")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        for name in ("scripts", "tap-configs"):
            os.symlink(os.path.join(REPOSITORY, name), os.path.join(self.directory, name))
        os.symlink(sys.prefix, os.path.join(self.directory, ".venv"))
        self.port = free_port_block([-2, -1, 0, 1, 2, 3, 4, 5])
        self.env = dict(os.environ, PORT=str(self.port), PYTHONUNBUFFERED="1",
                        PYTHONPATH=REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.servers = []

    async def start_server(self, line, plugin):
        if plugin != "rustdesk-hbbr":
            await self.stop_servers()
        process = _TwistdProcess(READY[plugin])
        reactor.spawnProcess(process, "/bin/bash", ["bash", "-c", "exec " + line],
                             env=self.env, path=self.directory)
        self.servers.append(process)
        self.addCleanup(stop_twistd, process)
        await process.ready

    async def stop_servers(self):
        servers, self.servers = self.servers, []
        for process in servers:
            await stop_twistd(process)

    async def run_line(self, line):
        out, err, code = await getProcessOutputAndValue(
            "/bin/bash", ["-c", line], env=self.env, path=self.directory, reactor=reactor)
        self.assertEqual(code, 0, f"{line}\n{out.decode()}{err.decode()}")
        return out.decode()

    async def test_blocks_in_order(self):
        ran, skipped = [], []
        for block in readme_blocks():
            reason = skip_reason(block)
            if reason is None and "socat " in block and shutil.which("socat") is None:
                reason = "socat is not installed"
            if reason is not None:
                skipped.append((block.splitlines()[0], reason))
                continue
            for line in block.splitlines():
                line = INSTALL.sub("", line)
                server = SERVER.search(line)
                if server:
                    await self.start_server(line, server.group(1))
                else:
                    await self.run_line(line)
                ran.append(line)
        await self.stop_servers()
        self.assertNotIn("twistd.pid", os.listdir(self.directory))
        self.assertTrue(any("rustdesk-server" in line for line in ran), ran)

    def test_every_block_is_run_or_skipped_for_a_reason(self):
        blocks = readme_blocks()
        self.assertTrue(blocks)
        for start in SKIPPED:
            self.assertTrue(any(block.startswith(start) for block in blocks), start)
