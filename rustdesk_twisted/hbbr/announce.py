"""Announced-uuid mode: hbbr pairs only relay uuids that our hbbs announced.

The official relay pairs any two strangers who agree on a uuid, so anyone
holding the (public) key can use it (USERS.md 1.12).  In this mode hbbs tells
hbbr about each uuid it hands out, and hbbr refuses the rest.  Clients do not
change: they still send the uuid hbbs gave them.

Channel (``--announce-endpoint``, e.g. ``tcp:21122:interface=127.0.0.1``): the
signed lines of ``rustdesk_twisted/wire/announce.py``, checked with hbbs's
public key (``rustdesk_twisted/hbbs/announce.py`` is the sending side).
hbbr answers each line:

- ``ok``: the uuid may pair for ``ANNOUNCE_TTL`` seconds (or: keepalive seen);
- ``used``: a pair already formed under that uuid, which stays closed: hbbs
  resending a line after a reconnection gets this, and so does a replay;
- ``refused``: bad signature, timestamp further than the skew (default 5 s)
  from hbbr's clock, or a malformed line; hbbr then drops the connection.

A connection must send a valid line within ``FIRST_LINE_TIMEOUT`` of accept
and then one at least every ``IDLE_TIMEOUT`` (hbbs sends a keepalive every
30 s), or it is closed.  hbbs in the same process calls
:meth:`AllowedUuids.announce` directly.
"""

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted
from ..wire.announce import DEFAULT_SKEW, MAX_LINE, check
from ..wire.keys import fingerprint

ANNOUNCE_TTL = 60.0
MAX_UUIDS = 100_000
FIRST_LINE_TIMEOUT = 10.0
IDLE_TIMEOUT = 90.0
OK, USED, REFUSED = b"ok", b"used", b"refused"
RESULTS = ("accepted", "keepalive", "used", "bad_signature", "stale", "malformed",
           "first_line_timeout", "idle_timeout")


class AllowedUuids:
    """Uuids announced in the last ``ttl`` seconds, and uuids that already paired.

    A used uuid is remembered for ``remember_used`` seconds, during which
    announcing it again changes nothing.  A line verifies until ``skew``
    seconds after its stamp; hbbs stamps a uuid's lines within its ``MAX_AGE``
    (30 s, less than ``ttl``) of the first, which is at most ``skew`` later
    than the pair.  So no line hbbs signed for the uuid verifies later than
    ``ttl + 2 * skew`` after the pair.  Both tables are bounded, oldest dropped first.
    """

    __slots__ = ("ttl", "limit", "remember_used", "_expires", "_used", "listener")

    def __init__(self, ttl=ANNOUNCE_TTL, limit=MAX_UUIDS, skew=DEFAULT_SKEW):
        self.ttl = ttl
        self.limit = limit
        self.remember_used = ttl + 2 * skew
        self._expires = {}
        self._used = {}
        self.listener = None

    def __len__(self):
        return len(self._expires)

    def announce(self, uuid, now):
        """Allow ``uuid`` for ``ttl`` seconds; False, changing nothing, if it was used."""
        used_until = self._used.get(uuid)
        if used_until is not None and used_until > now:
            return False
        self._expires.pop(uuid, None)
        self._expires[uuid] = now + self.ttl
        self.prune(now)
        _bound(self._expires, self.limit)
        if self.listener is not None:
            self.listener(uuid)
        return True

    def use(self, uuid, now):
        """A pair formed under ``uuid``: no other pair may, and it cannot be announced again."""
        self._expires.pop(uuid, None)
        self._used.pop(uuid, None)
        self._used[uuid] = now + self.remember_used
        _bound(self._used, self.limit)

    def allows(self, uuid, now):
        expires = self._expires.get(uuid)
        return expires is not None and expires > now

    def prune(self, now):
        _expire(self._expires, now)
        _expire(self._used, now)


def _expire(table, now):
    """Drop the entries of an insertion-ordered ``uuid -> deadline`` table that have passed."""
    while table:
        uuid = next(iter(table))
        if table[uuid] > now:
            break
        del table[uuid]


def _bound(table, limit):
    while len(table) > limit:
        del table[next(iter(table))]


class AnnounceGate:
    """What hbbr answers to each line, and the counts and log lines that go with it.

    Refusals and timeouts are logged once per source and minute
    (:class:`LimitLog`); ``counts`` holds every result for ``/metrics``.
    """

    log = Logger()

    def __init__(self, allowed, verify_key, skew=DEFAULT_SKEW):
        self.allowed = allowed
        self.verify_key = verify_key
        self.skew = skew
        self.counts = dict.fromkeys(RESULTS, 0)
        self.limit_log = LimitLog(self.log)

    def line(self, line, source, now):
        """The answer to ``line`` from ``source``; after ``REFUSED`` the connection closes."""
        checked = check(self.verify_key, line, now, self.skew)
        if checked.result == "announce":
            if self.allowed.announce(checked.uuid, now):
                self.counts["accepted"] += 1
                return OK
            self.counts["used"] += 1
            return USED
        if checked.result == "keepalive":
            self.counts["keepalive"] += 1
            return OK
        if checked.result == "bad_signature":
            detail = ("announce line not signed by the key this relay checks with "
                      f"({fingerprint(bytes(self.verify_key))})")
        elif checked.result == "stale":
            detail = (f"announce line stamped {checked.timestamp - now:+.0f}s from this relay's "
                      f"clock (--announce-skew {self.skew:g}s)")
        else:
            detail = f"malformed announce line {quoted(line)}"
        self.refuse(checked.result, source, now, detail)
        return REFUSED

    def refuse(self, result, source, now, detail):
        self.counts[result] += 1
        self.limit_log.hit(now, "announce_" + result, source, detail)


class AnnounceProtocol(LineOnlyReceiver):
    """One connection to the announce listener: lines in, answers out, two deadlines."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, gate, clock, first_line_timeout, idle_timeout):
        self.gate = gate
        self.clock = clock
        self.first_line_timeout = first_line_timeout
        self.idle_timeout = idle_timeout
        self.source = None
        self.waiting_for = "first_line"
        self._deadline = None

    def connectionMade(self):
        host = getattr(self.transport.getPeer(), "host", "")
        self.source = source_key(host) if host else "local"
        self._deadline = self.clock.callLater(self.first_line_timeout, self._timed_out)

    def lineReceived(self, line):
        answer = self.gate.line(line.rstrip(b"\r"), self.source, self.clock.seconds())
        self.transport.write(answer + b"\n")
        if answer == REFUSED:
            self.transport.loseConnection()
            return
        self.waiting_for = "idle"
        self._deadline.reset(self.idle_timeout)

    def lineLengthExceeded(self, line):
        self.gate.refuse("malformed", self.source, self.clock.seconds(),
                         f"announce line longer than {self.MAX_LENGTH} bytes")
        self.transport.write(REFUSED + b"\n")
        self.transport.loseConnection()

    def _timed_out(self):
        if self.waiting_for == "first_line":
            detail = f"no valid announce line within {self.first_line_timeout:g}s of connecting"
        else:
            detail = f"announce connection silent for {self.idle_timeout:g}s"
        self.gate.refuse(self.waiting_for + "_timeout", self.source, self.clock.seconds(), detail)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()


class AnnounceFactory(Factory):
    """A plain Factory, so the listener wiring can wrap it (per-source connection caps)."""

    noisy = False

    def __init__(self, gate, clock, first_line_timeout=FIRST_LINE_TIMEOUT,
                 idle_timeout=IDLE_TIMEOUT):
        self.gate = gate
        self.clock = clock
        self.first_line_timeout = first_line_timeout
        self.idle_timeout = idle_timeout

    def buildProtocol(self, addr):
        return AnnounceProtocol(self.gate, self.clock, self.first_line_timeout,
                                self.idle_timeout)
