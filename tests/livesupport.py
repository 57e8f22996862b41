"""Running the real twistd plugins on free loopback ports, for the few real-socket tests."""

import os
import subprocess
import sys

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Protocol

from bench.harness import free_port_block
from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame

__all__ = ["DatagramClient", "FramedClient", "free_port_block", "run_twistd", "start_twistd",
           "stop_twistd"]

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _TwistdProcess(protocol.ProcessProtocol):
    """Collects output and fires ``ready`` when a marker line has been printed."""

    def __init__(self, marker):
        self.marker = marker
        self.output = b""
        self.ready = Deferred()
        self.ended = Deferred()

    def _received(self, data):
        self.output += data
        if self.ready is not None and self.marker in self.output:
            ready, self.ready = self.ready, None
            ready.callback(self)

    outReceived = _received
    errReceived = _received

    def processEnded(self, reason):
        if self.ready is not None:
            ready, self.ready = self.ready, None
            ready.errback(RuntimeError("twistd exited early:\n" + self.output.decode(errors="replace")))
        self.ended.callback(reason.value.exitCode)


def start_twistd(reactor, plugin, args, directory, marker, umask=None, nofile=None):
    """Start ``twistd -n plugin args`` in ``directory``; fires when ``marker`` is printed.

    ``umask`` (an int) is set in the child before twistd runs, and so is
    ``nofile``, as both the soft and the hard RLIMIT_NOFILE.
    """
    process = _TwistdProcess(marker)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", ""))
    prelude = f"import os; os.umask({umask:#o}); " if umask is not None else ""
    if nofile is not None:
        prelude += (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
                    f"({nofile}, {nofile})); ")
    command = [sys.executable, "-c", prelude + "from twisted.scripts.twistd import run; run()",
               "-n", "--pidfile=", "--logfile=-", plugin] + list(args)
    reactor.spawnProcess(process, sys.executable, command, env=env, path=directory)
    return process


def run_twistd(plugin, args, directory=REPOSITORY):
    """``twistd -n plugin args`` to its end, for a server that must refuse to start:
    ``(exit status, stdout and stderr)``."""
    done = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", plugin] + list(args),
        capture_output=True, text=True, timeout=60, cwd=directory,
        env=dict(os.environ, PYTHONPATH=REPOSITORY))
    return done.returncode, done.stdout + done.stderr


def stop_twistd(process):
    if process.ended.called:
        return defer.succeed(None)
    process.transport.signalProcess("TERM")
    return process.ended


class FramedClient(Protocol):
    """A TCP client that collects decoded messages, for real-socket tests."""

    def __init__(self):
        self.decoder = FrameDecoder(1 << 20)
        self.received = []
        self.waiters = []
        self.closed = Deferred()

    def dataReceived(self, data):
        for payload in self.decoder.feed(data):
            self.received.append(messages.parse(payload))
        self._wake()

    def _wake(self):
        waiters, self.waiters = self.waiters, []
        for count, d in waiters:
            if len(self.received) >= count:
                d.callback(self.received[count - 1])
            else:
                self.waiters.append((count, d))

    def message(self, number):
        """Fires with the ``number``-th message received (1-based)."""
        d = Deferred()
        self.waiters.append((number, d))
        self._wake()
        return d

    def send(self, message):
        self.transport.write(encode_frame(message.SerializeToString()))

    def connectionLost(self, reason):
        self.closed.callback(None)


class DatagramClient(DatagramProtocol):
    """A UDP socket that collects parsed messages."""

    def __init__(self):
        self.received = []
        self.waiters = []

    def datagramReceived(self, data, address):
        self.received.append(messages.parse(data))
        waiters, self.waiters = self.waiters, []
        for kind, d in waiters:
            self._match(kind, d)

    def _match(self, kind, d):
        for message in self.received:
            if message is not None and message.WhichOneof("union") == kind:
                self.received.remove(message)
                d.callback(message)
                return
        self.waiters.append((kind, d))

    def next(self, kind):
        d = Deferred()
        self._match(kind, d)
        return d
