"""hbbs's side of the announce channel: every relay uuid hbbs brokers goes to each hbbr.

An hbbr started with ``--announce-endpoint`` pairs only uuids announced in
the last minute (USERS.md 1.12).  ``--relay-announce`` names its listeners
as client endpoint strings; for each one a :class:`ClientService` keeps a
connection up, reconnecting with backoff, and an :class:`AnnounceLink`
decides what to send.  The rendezvous core calls the announcer before it
delivers the message that sends a client to the relay, so on the hbbr
connection the line is written first.  Lines are signed with hbbs's key
(``rustdesk_twisted/wire/announce.py``); hbbr holds only the public key.

While an hbbr is unreachable its uuids wait in a bounded queue (oldest
dropped, with a log line); on reconnection those younger than ``MAX_AGE``
are sent, stamped with the current time.  Lines not yet answered when a
connection drops are queued again: announcing twice is harmless (hbbr
answers ``used`` for a uuid that paired meanwhile).  A keepalive on
connecting and every ``KEEPALIVE_INTERVAL`` keeps hbbr from closing the
connection as idle, and an hbbr that answers nothing for ``ANSWER_TIMEOUT``
is given up on and reconnected.
"""

from collections import deque

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineOnlyReceiver

from ..logs import Logger
from ..logtext import quoted
from ..wire.announce import KEEPALIVE_INTERVAL, announcement, keepalive, valid_uuid

QUEUE_LIMIT = 10_000
# A client waits 30 s at the relay for its partner; an older uuid is of no use.
MAX_AGE = 30.0
MAX_RETRY_DELAY = 30.0
ANSWER_TIMEOUT = 90.0
BENIGN_ANSWERS = (b"ok", b"used")


class AnnounceLink:
    """One hbbr: uuids waiting for a connection and lines waiting for an answer.

    ``unanswered`` holds ``(uuid, brokered)`` per line sent, ``(None, None)``
    for a keepalive.
    """

    log = Logger()

    def __init__(self, name, signing, clock, limit=QUEUE_LIMIT, max_age=MAX_AGE):
        self.name = name
        self.signing = signing
        self.clock = clock
        self.limit = limit
        self.max_age = max_age
        self.waiting = deque()
        self.unanswered = deque()
        self.channel = None
        self.dropped = 0
        self.last_answer = None
        self._keepalive = LoopingCall(self._tick)
        self._keepalive.clock = clock

    def announce(self, uuid):
        now = self.clock.seconds()
        if self.channel is not None:
            self._send(uuid, now, now)
        else:
            self._queue(uuid, now)

    def _queue(self, uuid, brokered):
        if len(self.waiting) >= self.limit:
            self.waiting.popleft()
            if not self.dropped:
                self.log.warn("announce queue for {relay} full ({limit}): dropping the oldest "
                              "until it reconnects", relay=self.name, limit=self.limit,
                              event="announce_dropped")
            self.dropped += 1
        self.waiting.append((uuid, brokered))

    def _send(self, uuid, brokered, now):
        if len(self.unanswered) >= self.limit:
            # hbbr stopped answering; a new connection resends what is unanswered.
            self._queue(uuid, brokered)
            self.channel.close()
            return
        self.channel.send_line(announcement(self.signing, uuid, now))
        self.unanswered.append((uuid, brokered))

    def _tick(self):
        """Every KEEPALIVE_INTERVAL: give up on a silent hbbr, else send a keepalive."""
        now = self.clock.seconds()
        if self.unanswered and now - self.last_answer >= ANSWER_TIMEOUT:
            self.log.warn("{relay} has answered nothing for {seconds:.0f}s; reconnecting",
                          relay=self.name, seconds=now - self.last_answer,
                          event="announce_unanswered")
            self.channel.close()
            return
        self.channel.send_line(keepalive(self.signing, now))
        self.unanswered.append((None, None))

    def connected(self, channel):
        self.channel = channel
        now = self.last_answer = self.clock.seconds()
        waiting, self.waiting = self.waiting, deque()
        fresh = [(uuid, brokered) for uuid, brokered in waiting if now - brokered <= self.max_age]
        for uuid, brokered in fresh:
            self._send(uuid, brokered, now)
        self._keepalive.start(KEEPALIVE_INTERVAL)
        self.log.info("announcing relay uuids to {relay}: connected, sent {sent} queued, "
                      "{expired} expired, {dropped} dropped", relay=self.name, sent=len(fresh),
                      expired=len(waiting) - len(fresh), dropped=self.dropped,
                      event="announce_connected")
        self.dropped = 0

    def answered(self, line):
        if not self.unanswered:
            return
        self.last_answer = self.clock.seconds()
        uuid, _ = self.unanswered.popleft()
        if line not in BENIGN_ANSWERS:
            self.log.error("{relay} refused the {what}: its -k or id_ed25519.pub is not this "
                           "ID server's key, or the clocks differ by more than its "
                           "--announce-skew", relay=self.name,
                           what="keepalive" if uuid is None else f"announcement of {quoted(uuid)}",
                           uuid=uuid, event="announce_refused")

    def disconnected(self, channel):
        if channel is not self.channel:
            return
        self.channel = None
        if self._keepalive.running:
            self._keepalive.stop()
        unanswered, self.unanswered = self.unanswered, deque()
        for uuid, brokered in reversed(unanswered):
            if uuid is not None and len(self.waiting) < self.limit:
                self.waiting.appendleft((uuid, brokered))
        self.log.info("lost the announce connection to {relay}; queueing until it reconnects",
                      relay=self.name, event="announce_disconnected")


class AnnounceClient(LineOnlyReceiver):
    """The connection to one hbbr's announce listener."""

    delimiter = b"\n"
    MAX_LENGTH = 64

    def __init__(self, link):
        self.link = link

    def connectionMade(self):
        self.link.connected(self)

    def send_line(self, line):
        self.transport.write(line + b"\n")

    def close(self):
        """Give up on this connection at once, even if hbbr stopped reading."""
        self.transport.abortConnection()

    def lineReceived(self, line):
        self.link.answered(line.rstrip(b"\r"))

    def lineLengthExceeded(self, line):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.link.disconnected(self)


class RelayAnnouncer(MultiService):
    """``relay_announcer`` for RendezvousServer: one link and ClientService per hbbr."""

    def __init__(self):
        super().__init__()
        self.links = []

    def add(self, link, endpoint, clock):
        self.links.append(link)
        factory = Factory.forProtocol(lambda: AnnounceClient(link))
        ClientService(endpoint, factory, retryPolicy=backoffPolicy(maxDelay=MAX_RETRY_DELAY),
                      clock=clock).setServiceParent(self)

    def __call__(self, uuid):
        # A uuid the line format cannot carry is not announced; the relay refuses it.
        if not valid_uuid(uuid):
            return
        for link in self.links:
            link.announce(uuid)


def relay_announcer(descriptions, signing, reactor):
    """A RelayAnnouncer signing with ``signing`` (a nacl SigningKey) for client endpoint
    strings; raises ValueError for a bad one."""
    announcer = RelayAnnouncer()
    for description in descriptions:
        announcer.add(AnnounceLink(description, signing, reactor),
                      clientFromString(reactor, description), reactor)
    return announcer
