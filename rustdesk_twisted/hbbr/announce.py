"""Announced-uuid mode: hbbr pairs only relay uuids that our hbbs announced.

The official relay pairs any two strangers who agree on a uuid, so anyone
holding the (public) key can use it (USERS.md 1.12).  In this mode hbbs tells
hbbr about each uuid it hands out, and hbbr refuses the rest.  Clients do not
change: they still send the uuid hbbs gave them.

Channel (``--announce-endpoint``, e.g. ``tcp:21120:interface=127.0.0.1:backlog=1024``):
one ASCII line per announcement, LF-terminated, at most 512 bytes::

    <uuid> <unix-seconds> <hex HMAC-SHA256(K, "<uuid> <unix-seconds>")>

``K = SHA-256("rustdesk-twisted hbbr announce v1\\0" || secret)`` where
``secret`` is the 64-byte key in ``id_ed25519`` that hbbs and hbbr share
(``rustdesk_twisted/wire/announce.py`` builds and checks the line;
``rustdesk_twisted/hbbs/announce.py`` is the sending side).
hbbr answers ``ok`` or ``refused`` per line and drops the connection after a
refusal.  A timestamp more than ``SKEW`` seconds away from hbbr's clock is
refused, so a captured line is useless after a minute; replaying it within
that minute only re-allows a uuid that was allowed anyway.  hbbs in the same
process can call :meth:`AllowedUuids.announce` directly.
"""

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from ..wire.announce import verify

ANNOUNCE_TTL = 60.0
MAX_UUIDS = 100_000


class AllowedUuids:
    """Uuids announced in the last ``ttl`` seconds; bounded, oldest dropped first."""

    __slots__ = ("ttl", "limit", "_expires", "listener")

    def __init__(self, ttl=ANNOUNCE_TTL, limit=MAX_UUIDS):
        self.ttl = ttl
        self.limit = limit
        self._expires = {}
        self.listener = None

    def __len__(self):
        return len(self._expires)

    def announce(self, uuid, now):
        self._expires.pop(uuid, None)
        self._expires[uuid] = now + self.ttl
        self.prune(now)
        while len(self._expires) > self.limit:
            del self._expires[next(iter(self._expires))]
        if self.listener is not None:
            self.listener(uuid)

    def allows(self, uuid, now):
        expires = self._expires.get(uuid)
        return expires is not None and expires > now

    def prune(self, now):
        expires = self._expires
        while expires:
            uuid = next(iter(expires))
            if expires[uuid] > now:
                break
            del expires[uuid]


class AnnounceProtocol(LineOnlyReceiver):
    """One hbbs connection sending announcement lines."""

    delimiter = b"\n"
    MAX_LENGTH = 512
    log = Logger()

    def __init__(self, allowed, key, clock):
        self.allowed = allowed
        self.key = key
        self.clock = clock

    def lineReceived(self, line):
        now = self.clock.seconds()
        uuid = verify(self.key, line.rstrip(b"\r"), now)
        if uuid is None:
            self.log.warn("announce refused from {peer}", peer=str(self.transport.getPeer()))
            self.transport.write(b"refused\n")
            self.transport.loseConnection()
            return
        self.allowed.announce(uuid, now)
        self.transport.write(b"ok\n")

    def lineLengthExceeded(self, line):
        self.transport.loseConnection()


class AnnounceFactory(Factory):
    noisy = False

    def __init__(self, allowed, key, clock):
        self.allowed = allowed
        self.key = key
        self.clock = clock

    def buildProtocol(self, addr):
        return AnnounceProtocol(self.allowed, self.key, self.clock)
