"""A real twistd hbbs against a real disk: ``kill -9``, a full disk and a read-only mount.

An OK to RegisterPk means the row is committed: killing the process mid-burst
loses no acknowledged id; a disk that cannot take the commit turns the answer
into a refusal, ``/readyz`` red with the reason, one log line, and everything
comes back when space does.  The disk tests mount small tmpfs file systems,
so they need root (CI runs as root); elsewhere they skip.
"""

import os
import shutil
import sqlite3
import subprocess
import tempfile

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPk

from .livesupport import free_port_block, run_twistd, start_twistd, stop_twistd

OK, SERVER_ERROR = 0, 7


class Registrar(DatagramProtocol):
    """One socket, one RegisterPk in flight: every answer belongs to a known id."""

    def __init__(self, server, ids, answered):
        self.server = server
        self.ids = ids
        self.answered = answered
        self.current = None

    def startProtocol(self):
        self.next()

    def next(self):
        if not self.ids:
            self.current = None
            return
        self.current = self.ids.pop()
        request = messages.wrap("register_pk", RegisterPk(
            id=self.current, uuid=f"uuid-{self.current}".encode(), pk=os.urandom(32)))
        self.transport.write(request.SerializeToString(), self.server)

    def datagramReceived(self, data, address):
        message = messages.parse(data)
        if message is None or message.WhichOneof("union") != "register_pk_response":
            return
        self.answered.append((self.current, message.register_pk_response.result))
        self.next()


class Burst:
    """``sockets`` registrars working through ``count`` fresh ids against ``server``."""

    def __init__(self, server, prefix, count, sockets=32):
        self.answered = []
        ids = [f"{prefix}{n:08d}" for n in range(count)]
        self.ports = [reactor.listenUDP(0, Registrar(server, ids, self.answered),
                                        interface="127.0.0.1") for _ in range(sockets)]

    def stop(self):
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()

    def results(self, result):
        return {peer_id for peer_id, got in self.answered if got == result}


def until(condition, step=0.05, limit=400):
    """Fires once ``condition()`` holds, checking every ``step`` seconds (at most ``limit``)."""
    @inlineCallbacks
    def poll():
        for _ in range(limit):
            if condition():
                return
            yield deferLater(reactor, step, lambda: None)
        raise AssertionError(f"condition not reached in {step * limit:.0f}s")
    return poll()


def stored_ids(path):
    conn = sqlite3.connect(path)
    try:
        return {peer_id for (peer_id,) in conn.execute("select id from peer")}
    finally:
        conn.close()


class HbbsProcess:
    """``twistd -n rustdesk-hbbs`` in ``directory`` on free loopback ports."""

    def __init__(self, test, directory, *extra):
        self.port = free_port_block((-1, 0, 2, 4))
        self.directory = directory
        console = tempfile.mkdtemp(prefix="hbbs")  # a socket path must be short
        test.addCleanup(shutil.rmtree, console, ignore_errors=True)
        self.args = ["-p", str(self.port), "--bind", "127.0.0.1", "--data-dir", directory,
                     "--ip-limit-exempt", "127.0.0.0/8", "--console", f"unix:{console}/c.sock",
                     "--admin", f"tcp:{self.port + 4}:interface=127.0.0.1", *extra]
        self.test = test
        self.process = None

    @inlineCallbacks
    def start(self):
        self.process = yield start_twistd(reactor, "rustdesk-hbbs", self.args, self.directory,
                                          b"Relay servers:").ready
        self.test.addCleanup(stop_twistd, self.process)

    @property
    def udp(self):
        return ("127.0.0.1", self.port)

    @property
    def output(self):
        return self.process.output.decode(errors="replace")

    @inlineCallbacks
    def readiness(self):
        response = yield treq.get(f"http://127.0.0.1:{self.port + 4}/readyz", reactor=reactor,
                                  persistent=False)
        body = yield response.json()
        return response.code, body


class KillTests(unittest.TestCase):
    timeout = 120

    @inlineCallbacks
    def test_kill_9_mid_burst_loses_no_acknowledged_registration(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        hbbs = HbbsProcess(self, directory)
        yield hbbs.start()
        burst = Burst(hbbs.udp, "k", 200_000)
        self.addCleanup(burst.stop)
        yield until(lambda: len(burst.answered) >= 3000)
        ended = hbbs.process.ended
        hbbs.process.transport.signalProcess("KILL")
        yield ended
        burst.stop()
        acknowledged = burst.results(OK)
        self.assertGreaterEqual(len(acknowledged), 3000)
        lost = acknowledged - stored_ids(os.path.join(directory, "db_v2.sqlite3"))
        self.assertEqual(len(lost), 0, f"{len(lost)} of {len(acknowledged)} acknowledged "
                                       f"registrations lost, e.g. {sorted(lost)[:5]}")


class MountedTestCase(unittest.TestCase):
    """A tmpfs of its own for each test (root only)."""

    timeout = 120

    def mount(self, size="2m", read_only=False):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a tmpfs needs root (CI runs as root)")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                               directory], capture_output=True, text=True)
        if done.returncode != 0:
            raise unittest.SkipTest(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", directory], capture_output=True)
        return directory

    def remount(self, directory, mode):
        subprocess.run(["mount", "-o", f"remount,{mode}", directory], check=True)


class FullDiskTests(MountedTestCase):
    @inlineCallbacks
    def test_full_disk_refuses_goes_unready_and_recovers(self):
        directory = self.mount("2m")
        hbbs = HbbsProcess(self, directory)
        yield hbbs.start()
        filler = os.path.join(directory, "filler")
        with open(filler, "wb") as f:
            while True:
                try:
                    f.write(b"\0" * 65536)
                    f.flush()
                except OSError:
                    break
        burst = Burst(hbbs.udp, "f", 20_000, sockets=8)
        self.addCleanup(burst.stop)
        yield until(lambda: len(burst.results(SERVER_ERROR)) >= 50)
        burst.stop()
        code, body = yield hbbs.readiness()
        self.assertEqual(code, 503)
        self.assertFalse(body["checks"]["database"]["ok"])
        self.assertIn("full", body["checks"]["database"]["detail"])
        yield until(lambda: "not ready:" in hbbs.output)  # the line may trail the answer
        output = hbbs.output
        self.assertEqual(output.count("registrations are refused until"), 1, output[-3000:])
        self.assertEqual(output.count("not ready:"), 1, output[-3000:])
        self.assertNotIn("Traceback", output)

        os.remove(filler)
        yield until(lambda: "commits work again" in hbbs.output, step=0.2, limit=100)
        code, _ = yield hbbs.readiness()
        self.assertEqual(code, 200)
        again = Burst(hbbs.udp, "g", 200, sockets=4)
        self.addCleanup(again.stop)
        yield until(lambda: len(again.answered) == 200)
        self.assertEqual(len(again.results(OK)), 200)

        acknowledged = burst.results(OK) | again.results(OK)
        yield stop_twistd(hbbs.process)
        stored = stored_ids(os.path.join(directory, "db_v2.sqlite3"))
        self.assertEqual(acknowledged - stored, set())
        self.assertEqual(burst.results(SERVER_ERROR) & stored, set())


class ReadOnlyTests(MountedTestCase):
    def test_read_only_mount_at_start(self):
        """One sentence naming the database, exit status 1, no traceback."""
        directory = self.mount("4m")
        path = os.path.join(directory, "db_v2.sqlite3")
        conn = sqlite3.connect(path)
        conn.executescript("create table peer (guid blob primary key not null,"
                           " id varchar(100) not null, uuid blob not null, pk blob not null,"
                           " created_at datetime not null default(current_timestamp),"
                           " user blob, status tinyint, note varchar(300),"
                           " info text not null) without rowid;")
        conn.close()
        self.remount(directory, "ro")
        code, output = run_twistd(
            "rustdesk-hbbs", ["--data-dir", directory, "--listen-tcp", "tcp:0", "--listen-nat",
                              "tcp:0", "--listen-ws", "tcp:0", "--listen-udp", "127.0.0.1:0",
                              "--admin", "off", "--console", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(code, 1, output)
        self.assertIn(f"rustdesk-hbbs: the database {path} is read-only", output)
        self.assertNotIn("Traceback", output)
