"""Which relay hbbs suggests (PROTOCOL.md section 4.9).

Entries are kept as written.  Unlike the official server, names that do not
resolve at start are not dropped for good (gotcha G18): with more than one
entry the health check decides, every few seconds, which are usable.
"""

from twisted.internet.defer import DeferredList
from twisted.internet.task import LoopingCall

from ..logs import Logger

HEALTH_INTERVAL = 3.0


def parse_relay_list(text):
    """The comma-separated list as the official server splits it (no trimming)."""
    return [entry for entry in (text or "").split(",") if entry]


def with_default_port(entry, port=21117):
    return entry if ":" in entry.rsplit("]", 1)[-1] else f"{entry}:{port}"


class RelayRotation:
    """The configured relays, the currently usable ones, and a shared rotation counter."""

    def __init__(self, configured=()):
        self._counter = 0
        self.configure(configured)

    def configure(self, configured):
        self.configured = list(configured)
        self.active = list(self.configured)

    def next(self):
        active = self.active
        if not active:
            return ""
        if len(active) == 1:
            return active[0]
        relay = active[self._counter % len(active)]
        self._counter += 1
        return relay


class RelayHealthCheck:
    """Every 3 s, probe each configured relay; the reachable ones become active.

    ``probe(entry)`` returns a Deferred firing True when the relay accepted a
    TCP connection within the timeout.  Only lists of two or more are checked.
    """

    log = Logger()

    def __init__(self, rotation, probe, clock, interval=HEALTH_INTERVAL):
        self.rotation = rotation
        self.probe = probe
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self.interval = interval
        self._running_check = None

    def start(self):
        self._loop.start(self.interval, now=True)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def check(self):
        configured = list(self.rotation.configured)
        if len(configured) < 2 or self._running_check is not None:
            return None
        reachable = []

        def record(ok, entry):
            if ok:
                reachable.append(entry)

        probes = []
        for entry in configured:
            d = self.probe(entry)
            d.addCallbacks(record, lambda _failure: None, callbackArgs=(entry,))
            probes.append(d)

        def done(_):
            self._running_check = None
            if self.rotation.configured != configured:
                return
            if reachable:
                if reachable != self.rotation.active:
                    self.log.info("usable relays: {relays}", relays=",".join(reachable),
                                  event="relays_active")
                self.rotation.active = reachable
            else:
                self.log.warn("no configured relay is reachable; keeping {relays}",
                              relays=",".join(self.rotation.active), event="relays_unreachable")

        self._running_check = DeferredList(probes).addCallback(done)
        return self._running_check
