"""A paired relay session: moving bytes between two sides (PROTOCOL.md 1.2, 7.4).

Both sides plain TCP: raw mode, bytes forwarded untouched, starting with
whatever each side sent after its RequestRelay frame (G11/G20).  Otherwise
each TCP frame payload becomes one WebSocket binary message and back.  Each
side's reader is the streaming producer of its partner's transport, so a slow
reader pauses the fast writer instead of letting the relay buffer grow.
"""

from zope.interface import implementer

from twisted.internet.interfaces import IPushProducer

# Throttle pauses shorter than this are not worth a timer; the debt carries
# over to the next chunk through the limiter's virtual clock.
MIN_PAUSE = 0.002


@implementer(IPushProducer)
class Reader:
    """Reading on one side, paused for two independent reasons.

    The partner's transport pauses it when full; the bandwidth limiter pauses
    it for a while.  Reading resumes only when neither wants it paused.
    """

    __slots__ = ("side", "clock", "consumer_paused", "_throttle")

    def __init__(self, side, clock):
        self.side = side
        self.clock = clock
        self.consumer_paused = False
        self._throttle = None

    @property
    def paused(self):
        return self.consumer_paused or self._throttle is not None

    def pauseProducing(self):
        if not self.paused:
            self.side.pause_reading()
        self.consumer_paused = True

    def resumeProducing(self):
        self.consumer_paused = False
        if not self.paused:
            self.side.resume_reading()

    def stopProducing(self):
        self.cancel()

    def throttle(self, delay):
        if self._throttle is not None:
            return
        if not self.consumer_paused:
            self.side.pause_reading()
        self._throttle = self.clock.callLater(delay, self._unthrottle)

    def _unthrottle(self):
        self._throttle = None
        if not self.consumer_paused:
            self.side.resume_reading()

    def cancel(self):
        if self._throttle is not None:
            if self._throttle.active():
                self._throttle.cancel()
            self._throttle = None


class Session:
    """Two paired sides, their accounting and the end of it all."""

    def __init__(self, server, first, second, uuid, meter, now):
        self.server = server
        self.first = first
        self.second = second
        self.uuid = uuid
        self.meter = meter
        self.started = now
        self.raw = not first.is_websocket and not second.is_websocket
        self.engine = None
        self.ended = False
        self.throttle_logged = False
        self._last_activity = -1
        self._idle_since = now

    @property
    def spliced(self):
        return self.engine is not None

    @property
    def key(self):
        """``ip:port`` of the second (pairing) connection, as the usage table names it."""
        host, port = self.second.peer
        return f"{host}:{port}"

    def start(self, splicer=None):
        first, second = self.first, self.second
        early_first = first.begin_relay(self, second)
        early_second = second.begin_relay(self, first)
        if self.raw and splicer is not None and splicer.eligible(first, second):
            splicer.splice(self, first, second, early_first, early_second)
            return
        for side, partner, early in ((first, second, early_first), (second, first, early_second)):
            partner.attach_producer(side.reader)
            side.deliver_early(early)
            side.reader.resumeProducing()

    def charge(self, side, nbytes):
        """Account ``nbytes`` read from ``side`` and pause it if a limit says so."""
        now = self.server.clock.seconds()
        delay = self.meter.charge(nbytes, now)
        total = self.server.total_limiter.consume(nbytes * 8, now)
        if total > delay:
            delay = total
        if delay > MIN_PAUSE:
            if not self.throttle_logged:
                self.throttle_logged = True
                self.server.log_throttled(self, delay)
            side.reader.throttle(delay)
        return delay

    def activity(self):
        return self.first.activity + self.second.activity

    def tick(self, now):
        """The per-second check of 7.4; returns a reason to end the session, or None."""
        activity = self.activity()
        if activity != self._last_activity:
            self._last_activity = activity
            self._idle_since = now
        elif now - self._idle_since > self.server.idle_timeout:
            return "idle"
        host = self.second.peer[0]
        if self.server.blocklist.matches(host):
            return "blocked"
        blacklisted = self.server.blacklist.matches(host)
        if blacklisted and not self.meter.blacklisted:
            self.server.log_capped(self, "blacklisted")
        self.meter.blacklisted = blacklisted
        if self.meter.tick(now):
            self.server.log_capped(self, "downgraded")
        return None

    def end(self, reason):
        if self.ended:
            return
        self.ended = True
        if self.engine is not None:
            self.engine.release()
        for side in (self.first, self.second):
            side.reader.cancel()
            side.close()
        self.server.session_ended(self, reason)
