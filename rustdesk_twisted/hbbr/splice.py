"""Kernel-side relaying of a raw TCP pair with ``os.splice`` (Linux).

PERF-NOTES.md: a Twisted protocol relay tops out near a third of loopback
speed, a reactor-driven splice through a pipe near three quarters.  Once a
raw pair is formed the Twisted transports stop reading and writing; each
direction moves socket -> pipe -> socket in the kernel, driven by reactor
readiness on the same file descriptors.  Bytes are still counted and
charged to the limiters (a throttled direction simply stops reading), the
idle check still sees activity, and at the end whatever is left in the
pipes is handed back to the Twisted transports, which flush and close as
usual.  Anything other than plain TCP sockets on a reactor with
``IReactorFDSet`` uses the userspace path.
"""

import fcntl
import os

from zope.interface import implementer

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFDSet, IReadWriteDescriptor

PIPE_SIZE = 1024 * 1024
CHUNK = 1024 * 1024
ROUNDS = 16
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def available(reactor):
    return hasattr(os, "splice") and IReactorFDSet.providedBy(reactor)


class Splicer:
    """Hands eligible raw pairs to the kernel."""

    def __init__(self, reactor):
        self.reactor = reactor

    def eligible(self, first, second):
        return all(isinstance(side.transport, tcp.Connection)
                   and not getattr(side.transport, "TLS", False)
                   for side in (first, second))

    def splice(self, session, first, second, early_first, early_second):
        for side in (first, second):
            side.transport.stopReading()
            side.transport.stopWriting()
        _SplicedPair(self.reactor, session, first, second, early_first, early_second)


@implementer(IReadWriteDescriptor)
class _Socket:
    """The reactor's handle on one relayed socket while the kernel pipes it."""

    def __init__(self, pair, fd):
        self.pair = pair
        self.fd = fd
        self.outgoing = None
        self.incoming = None

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "hbbr-splice"

    def doRead(self):
        self.outgoing.pump()

    def doWrite(self):
        self.incoming.pump()

    def connectionLost(self, reason):
        self.pair.finish("reactor shutdown")


class _Direction:
    """source socket -> pipe -> destination socket, for one side's bytes."""

    def __init__(self, pair, side, source, destination, prefix):
        self.pair = pair
        self.side = side
        self.source = source
        self.destination = destination
        self.prefix = prefix
        self.queued = 0
        self.eof = False
        self.reading = False
        self.writing = False
        self._throttle = None
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass

    def pump(self):
        try:
            self._pump()
        except OSError as e:
            self.pair.finish(e.strerror or str(e))

    def _pump(self):
        source, destination = self.source.fd, self.destination.fd
        for _ in range(ROUNDS):
            if self.prefix:
                try:
                    written = os.write(destination, self.prefix)
                except BlockingIOError:
                    self._want(write=True)
                    return
                self.prefix = self.prefix[written:]
                continue
            if self.queued:
                try:
                    moved = os.splice(self.pipe_r, destination, self.queued, flags=_FLAGS)
                except BlockingIOError:
                    self._want(write=True)
                    return
                self.queued -= moved
                continue
            if self.eof:
                self.pair.finish("closed")
                return
            if self._throttle is not None:
                self._want()
                return
            try:
                moved = os.splice(source, self.pipe_w, CHUNK, flags=_FLAGS)
            except BlockingIOError:
                self._want(read=True)
                return
            if moved == 0:
                self.eof = True
                continue
            self.queued += moved
            side = self.side
            side.received += moved
            side.activity += 1
            self.pair.session.charge(side, moved)
        self._want(read=self._throttle is None and not self.queued, write=bool(self.queued))

    def _want(self, read=False, write=False):
        if self.pair.finished:
            return
        reactor = self.pair.reactor
        if read != self.reading:
            (reactor.addReader if read else reactor.removeReader)(self.source)
            self.reading = read
        if write != self.writing:
            (reactor.addWriter if write else reactor.removeWriter)(self.destination)
            self.writing = write

    def throttle(self, delay):
        if self._throttle is None:
            self._throttle = self.pair.reactor.callLater(delay, self._unthrottle)

    def _unthrottle(self):
        self._throttle = None
        self.pump()

    def cancel(self):
        if self._throttle is not None and self._throttle.active():
            self._throttle.cancel()
        self._throttle = None

    def leftover(self):
        """Bytes not yet delivered; the pipe is closed afterwards."""
        chunks = [self.prefix]
        while self.queued > 0:
            try:
                data = os.read(self.pipe_r, min(self.queued, CHUNK))
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            self.queued -= len(data)
        os.close(self.pipe_r)
        os.close(self.pipe_w)
        return b"".join(chunks)


class _SplicedPair:
    def __init__(self, reactor, session, first, second, early_first, early_second):
        self.reactor = reactor
        self.session = session
        self.finished = False
        a = _Socket(self, first.transport.fileno())
        b = _Socket(self, second.transport.fileno())
        self.sockets = (a, b)
        self.sides = (first, second)
        a.outgoing = b.incoming = _Direction(self, first, a, b, early_first)
        b.outgoing = a.incoming = _Direction(self, second, b, a, early_second)
        first.reader = a.outgoing
        second.reader = b.outgoing
        session.engine = self
        a.outgoing.pump()
        b.outgoing.pump()

    def finish(self, reason):
        if self.finished:
            return
        self.release()
        self.session.end(reason)

    def release(self):
        """Give the sockets back to their Twisted transports, with any undelivered bytes."""
        if self.finished:
            return
        self.finished = True
        for socket in self.sockets:
            self.reactor.removeReader(socket)
            self.reactor.removeWriter(socket)
        for socket, side in zip(self.sockets, self.sides):
            socket.outgoing.cancel()
            rest = socket.outgoing.leftover()
            if rest:
                side.partner.transport.write(rest)
