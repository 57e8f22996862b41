"""The relay's core: admission, pairing, sessions and the once-a-second sweep.

Sides (TCP or WebSocket protocols) report to a :class:`RelayServer`; it
decides, logs and keeps the bounded tables.  Time comes from the injected
clock only, so tests drive every timeout with ``task.Clock``.
"""

from twisted.internet.task import LoopingCall

from ..admission import ConnectionLimits
from ..logs import Logger
from ..logtext import untrusted
from ..wire.addr_mangle import try_into_v4
from ..wire.fields import MAX_RELAY_UUID
from ..wire.messages import kind
from .bandwidth import BandwidthPolicy, Limiter, SessionMeter, mbit_text
from .early import EarlyBytes
from .lists import AddressList
from .pairing import PendingTable, TableFull
from .pipe import Session

FIRST_MESSAGE_TIMEOUT = 30.0
IDLE_TIMEOUT = 30.0
MAX_PENDING = 100_000
MAX_HELD = 10_000
ANNOUNCE_GRACE = 5.0
SWEEP_INTERVAL = 1.0
# A session is two connections, and one address may be a carrier-grade NAT or
# an office: 1024 is 512 sessions with both ends behind it, far more than a
# few hosts need and far less than the descriptors one source could take.
MAX_CONNECTIONS_PER_IP = 1024


def _peer(side):
    host, port = side.peer
    host = try_into_v4(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RelayServer:
    log = Logger()

    def __init__(self, clock, licence="", policy=None, blacklist=None, blocklist=None,
                 allowed=None, splicer=None, max_pending=MAX_PENDING,
                 idle_timeout=IDLE_TIMEOUT, limits=None, early=None):
        self.clock = clock
        self.licence = licence
        self.policy = policy if policy is not None else BandwidthPolicy()
        self.blacklist = blacklist if blacklist is not None else AddressList("blacklist")
        self.blocklist = blocklist if blocklist is not None else AddressList("blocklist")
        self.allowed = allowed
        self.splicer = splicer
        self.idle_timeout = idle_timeout
        self.limits = limits if limits is not None else ConnectionLimits(
            clock, max_per_ip=MAX_CONNECTIONS_PER_IP)
        self.early = early if early is not None else EarlyBytes(clock)
        self.pending = PendingTable(max_pending)
        self.total_limiter = Limiter(self.policy.total_limiter_rate())
        self.sessions = set()
        self.counters = {}
        self._handshaking = {}
        self._held = {}
        if allowed is not None:
            allowed.listener = self.announced
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def start(self):
        self._sweeper.start(SWEEP_INTERVAL, now=False)

    def stop(self):
        if self._sweeper.running:
            self._sweeper.stop()
        for session in list(self.sessions):
            session.end("shutdown")
        for _, side in self.pending.expire(float("inf")):
            side.close()
        for side in list(self._handshaking) + list(self._held):
            side.close()
        self._handshaking.clear()
        self._held.clear()

    def retune(self):
        """Apply a console change of TOTAL_BANDWIDTH to the global limiter now."""
        self.total_limiter.rate = self.policy.total_limiter_rate()

    def unblocked(self, host):
        """The accept-time blocklist check, on the TCP peer even for WebSocket."""
        if self.blocklist.matches(host):
            self.log.info("{host} refused: blocklisted", event="refused", host=host,
                          reason="blocklisted")
            return False
        return True

    def admit(self, host):
        """:meth:`unblocked` and counted in ``limits``; every True is followed by one
        :meth:`release` when the connection closes."""
        return self.unblocked(host) and self.limits.admit(host)

    def release(self, host):
        self.limits.release(host)

    def connected(self, side):
        self._handshaking[side] = self.clock.seconds() + FIRST_MESSAGE_TIMEOUT

    def _count(self, name, amount=1):
        """Per connection or session, never per chunk: read by the metrics at scrape time."""
        self.counters[name] = self.counters.get(name, 0) + amount

    def refuse(self, side, reason):
        self._handshaking.pop(side, None)
        self._count("refused_" + reason.replace(" ", "_"))
        self.log.info("{peer} refused: {reason}", event="refused", peer=_peer(side),
                      reason=reason)
        side.close()

    def request(self, side, message):
        """The first message of ``side`` arrived (None if it did not parse)."""
        now = self.clock.seconds()
        self._handshaking.pop(side, None)
        if message is None or kind(message) != "request_relay":
            self.refuse(side, "first message is not a RequestRelay")
            return
        request = message.request_relay
        if self.licence and request.licence_key != self.licence:
            self.refuse(side, "licence key mismatch")
            return
        uuid = request.uuid
        if not uuid:
            self.refuse(side, "empty uuid")
            return
        if len(uuid.encode("utf-8")) > MAX_RELAY_UUID:
            self.refuse(side, "uuid too long")
            return
        if self.allowed is not None and not self.allowed.allows(uuid, now):
            self._hold(side, uuid, now)
            return
        self._accept(side, uuid, now)

    def _hold(self, side, uuid, now):
        """Wait briefly for hbbs's announcement, which can trail the client.

        B connects to the relay right after sending its RelayResponse to hbbs,
        so its request may arrive before hbbs's announcement of the uuid.
        """
        if len(self._held) >= MAX_HELD:
            self.refuse(side, "uuid not announced by hbbs")
            return
        self._held[side] = (uuid, now + ANNOUNCE_GRACE)

    def announced(self, uuid):
        """hbbs announced ``uuid``: accept the requests that were waiting for it."""
        now = self.clock.seconds()
        for side in [s for s, (u, _) in self._held.items() if u == uuid]:
            del self._held[side]
            self._accept(side, uuid, now)

    def _accept(self, side, uuid, now):
        try:
            partner = self.pending.offer(uuid, side, now)
        except TableFull:
            self.refuse(side, "pending table full")
            return
        side.uuid = uuid
        if partner is None:
            self.log.info("{peer} relay request {uuid} ({transport}), waiting",
                          event="request", peer=_peer(side), uuid=untrusted(uuid),
                          transport="ws" if side.is_websocket else "tcp")
            return
        self._pair(partner, side, uuid, now)

    def _pair(self, first, second, uuid, now):
        if self.allowed is not None:
            self.allowed.use(uuid, now)
        session = Session(self, first, second, uuid, SessionMeter(self.policy, now), now)
        self.sessions.add(session)
        self._count("sessions")
        session.start(self.splicer)
        mode = "spliced" if session.spliced else "raw" if session.raw else "framed"
        self.log.info("{first} <-> {second} paired relay {uuid} ({mode})",
                      event="paired", first=_peer(first), second=_peer(second),
                      uuid=untrusted(uuid), mode=mode)

    def withdraw(self, side):
        """Take a waiting ``side`` out of pairing at once (it is being closed): a partner
        arriving before its connection is gone must not pair with it."""
        self._held.pop(side, None)
        if side.uuid is not None:
            self.pending.withdraw(side.uuid, side)
            side.uuid = None

    def lost(self, side, reason):
        self._handshaking.pop(side, None)
        self._held.pop(side, None)
        if side.session is not None:
            side.session.end(reason)
        elif side.uuid is not None:
            self.pending.withdraw(side.uuid, side)
            self.log.info("{peer} relay request {uuid} left before pairing: {reason}",
                          event="abandoned", peer=_peer(side), uuid=untrusted(side.uuid),
                          reason=reason)

    def session_ended(self, session, reason):
        self.sessions.discard(session)
        first, second = session.first, session.second
        self._count("bytes", first.received + second.received)
        self.log.info(
            "{first} <-> {second} relay {uuid} closed ({reason}): {first} sent {first_bytes} "
            "bytes, {second} sent {second_bytes} bytes in {duration:.1f}s",
            event="closed", uuid=untrusted(session.uuid), reason=reason, first=_peer(first),
            second=_peer(second), first_bytes=first.received, second_bytes=second.received,
            duration=self.clock.seconds() - session.started)

    def log_throttled(self, session, delay):
        self._count("throttled")
        limit = self.policy.limit if session.meter.capped else self.policy.single
        self.log.info("{key} relay {uuid} throttled at {limit}Mb/s (session) / {total}Mb/s "
                      "(total)", event="throttled", uuid=untrusted(session.uuid), key=session.key,
                      limit=mbit_text(limit), total=mbit_text(self.policy.total), delay=delay)

    def log_capped(self, session, why):
        self.log.info("{key} relay {uuid} {why}: capped at {limit}Mb/s",
                      event=why, uuid=untrusted(session.uuid), key=session.key, why=why,
                      limit=mbit_text(self.policy.limit),
                      total_bits=session.meter.total_bits,
                      elapsed_ms=session.meter.elapsed_ms)

    def sweep(self):
        now = self.clock.seconds()
        for uuid, side in self.pending.expire(now):
            self.log.info("{peer} relay request {uuid} timed out unpaired",
                          event="timeout", peer=_peer(side), uuid=untrusted(uuid))
            side.uuid = None
            side.close()
        handshaking = self._handshaking
        while handshaking:
            side = next(iter(handshaking))
            if handshaking[side] > now:
                break
            del handshaking[side]
            self.log.info("{peer} sent no RequestRelay in time", event="timeout",
                          peer=_peer(side))
            side.close()
        for session in list(self.sessions):
            reason = session.tick(now)
            if reason is not None:
                session.end(reason)
        for side in [s for s, (_, deadline) in self._held.items() if deadline <= now]:
            del self._held[side]
            self.refuse(side, "uuid not announced by hbbs")
        if self.allowed is not None:
            self.allowed.prune(now)

    def usage(self):
        """Console ``u``: sessions with usage, busiest first."""
        rows = [(s.meter.total_bits, s.key, s.meter) for s in self.sessions
                if s.meter.elapsed_ms > 0]
        rows.sort(key=lambda row: row[0], reverse=True)
        return "".join(meter.usage_line(key) for _, key, meter in rows)
