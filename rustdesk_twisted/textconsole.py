"""The official servers' text console transport: one read, one reply, close (PROTOCOL.md 7.8, 7.9).

The commands differ between hbbs and hbbr; the transport is the same:
at most 1024 bytes read within 1 s, valid UTF-8 or no reply.  A command
may answer with a Deferred firing the reply text, for work off the reactor.  Where the
console listens is the operator's choice (a Unix socket by default); on a
TCP listener ``loopback_only`` keeps the official "loopback peers only" rule.
"""

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from .logs import Logger
from .wire.addr_mangle import is_loopback

READ_TIMEOUT = 1.0
MAX_INPUT = 1024


class ConsoleProtocol(Protocol):
    """One read of at most 1024 bytes within 1 s, one reply, close."""

    log = Logger()

    def __init__(self, execute, clock, loopback_only):
        self.execute = execute
        self.clock = clock
        self.loopback_only = loopback_only
        self._timeout = None
        self._answered = False

    def connectionMade(self):
        host = getattr(self.transport.getPeer(), "host", None)
        if self.loopback_only and isinstance(host, str) and not is_loopback(host):
            self.log.warn("console connection from {ip} refused: not loopback", ip=host,
                          event="console_refused")
            self._answered = True
            self.transport.loseConnection()
            return
        self._timeout = self.clock.callLater(READ_TIMEOUT, self._timed_out)

    def _timed_out(self):
        self._timeout = None
        self._answered = True
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._answered:
            return
        self._answered = True
        self._cancel_timeout()
        try:
            text = data[:MAX_INPUT].decode("utf-8")
        except UnicodeDecodeError:
            self.log.info("console input is not UTF-8; no reply", event="console_bad_input")
        else:
            reply = self.execute(text)
            if isinstance(reply, Deferred):
                reply.addCallback(self._reply)
                return
            self.transport.write(reply.encode("utf-8"))
        self.transport.loseConnection()

    def _reply(self, text):
        """A reply that took a while (a backup): written once it is ready."""
        self.transport.write(text.encode("utf-8"))
        self.transport.loseConnection()

    def _cancel_timeout(self):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def connectionLost(self, reason):
        self._cancel_timeout()


class ConsoleFactory(Factory):
    """Console connections running ``execute(text) -> reply``."""

    noisy = False

    def __init__(self, execute, clock, loopback_only=False):
        self.execute = execute
        self.clock = clock
        self.loopback_only = loopback_only

    def buildProtocol(self, addr):
        protocol = ConsoleProtocol(self.execute, self.clock, self.loopback_only)
        protocol.factory = self
        return protocol
