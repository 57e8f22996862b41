"""Bytes a lonely relay half has read before its partner came, kept within bounds.

Whatever a half sends after its RequestRelay must reach the partner (G11),
so it is kept, not dropped; but 2 000 halves with 300 KB each cost 578 MB
(issue 9 item 15).  A half that holds ``per_half`` bytes stops reading until
it pairs.  When all halves together hold ``total``, every lonely half stops
reading; as bytes leave (a pair forms, a half goes) waiting halves resume in
arrival order, only as many as the room allows one read each.  So the halves
hold at most ``total`` plus one read, each at most ``per_half`` plus one read.
The kernel keeps the rest, and the peer's TCP window slows it down; only a
newcomer left waiting whose RequestRelay came with more bytes while the halves
are full is closed, because those bytes are read already.  One that completes
a pair never waits, so it is never refused.

A half is any object with ``early_held`` (an int this class keeps),
``peer`` (its ``(host, port)``), ``pause_reading()`` and ``resume_reading()``.
"""

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog

MAX_EARLY_BYTES = 64 * 1024
MAX_EARLY_BYTES_TOTAL = 64 * 1024 * 1024
# The most one read hands to dataReceived (Twisted's TCP bufferSize).
READ_SIZE = 64 * 1024


class EarlyBytes:
    log = Logger()

    def __init__(self, clock, per_half=MAX_EARLY_BYTES, total=MAX_EARLY_BYTES_TOTAL):
        self.clock = clock
        self.per_half = per_half
        self.total = total
        self.held = 0
        self.limit_log = LimitLog(self.log)
        self._reading = {}
        self._waiting = {}

    @property
    def full(self):
        return self.held >= self.total

    def join(self, half, nbytes):
        """``half`` has sent its RequestRelay and ``nbytes`` after it in the same read.

        False when the halves are full and ``half`` already brought bytes: it
        is to be closed, since what was read cannot be left unread.  A
        newcomer with nothing more waits for room without reading.
        """
        half.early_held = 0
        if not self.full:
            self._reading[half] = None
        elif nbytes:
            self._hit("early-bytes-total", half, f"{self.held} bytes held by halves waiting "
                      "for their partner (--max-early-bytes-total); closed")
            return False
        else:
            self._wait(half)
        self.add(half, nbytes)
        return True

    def add(self, half, nbytes):
        """``half`` read ``nbytes`` more early bytes and keeps them."""
        half.early_held += nbytes
        self.held += nbytes
        if half.early_held >= self.per_half and half in self._reading:
            del self._reading[half]
            half.pause_reading()
            self._hit("early-bytes", half,
                      f"{half.early_held} bytes held before pairing (--max-early-bytes)")
        if self.full and self._reading:
            for other in self._reading:
                self._wait(other)
            self._reading.clear()
            self._hit("early-bytes-total", half,
                      f"{self.held} bytes held by halves waiting for their partner "
                      f"(--max-early-bytes-total); {len(self._waiting)} stopped reading")

    def leave(self, half):
        """``half`` paired or went: its bytes are no longer held here."""
        self._reading.pop(half, None)
        self._waiting.pop(half, None)
        self.held -= half.early_held
        half.early_held = 0
        room = self.total - self.held - READ_SIZE * len(self._reading)
        while self._waiting and room >= READ_SIZE:
            resumed = next(iter(self._waiting))
            del self._waiting[resumed]
            self._reading[resumed] = None
            resumed.resume_reading()
            room -= READ_SIZE

    def _wait(self, half):
        half.pause_reading()
        self._waiting[half] = None

    def _hit(self, limit, half, detail):
        self.limit_log.hit(self.clock.seconds(), limit, source_key(half.peer[0]), detail)
