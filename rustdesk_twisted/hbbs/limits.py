"""Bounded per-source and per-ID bookkeeping of hbbs (PROTOCOL.md sections 7.2, 7.3, 7.6).

The official thresholds are the defaults, but they are settings here, with
exempt networks, because the hard-coded ones hurt sites behind one NAT
(USERS.md section 1.15).  A source is an IPv4 address or an IPv6 /64
(``admission.source_key``): per-address counting would let one IPv6 host
multiply every limit by 2**64.  Every table has a size bound and is pruned
by time.
"""

import ipaddress
from collections import deque

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted


class IpBlocker:
    """The RegisterPk limiter per source IP: requests per minute and distinct ids per day."""

    log = Logger()

    def __init__(self, requests_per_minute=30, ids_per_day=300, exempt=(), max_entries=1_000_000):
        self.requests_per_minute = requests_per_minute
        self.ids_per_day = ids_per_day
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in exempt]
        self.max_entries = max_entries
        self.entries = {}
        self.blocked = 0
        self.limits = LimitLog(self.log)

    def _exempt(self, ip):
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)

    def allow(self, ip, peer_id, now):
        """Apply the official rule (section 7.2) to ``ip``'s source and record the attempt."""
        if self._exempt(ip):
            return True
        ip = source_key(ip)
        entry = self.entries.get(ip)
        if entry is None:
            if len(self.entries) >= self.max_entries:
                self.prune(now, aggressive=True)
            self.entries[ip] = [0, now, set(), now]
            return True
        if int(now - entry[1]) > 60:
            entry[0] = 0
        elif entry[0] > self.requests_per_minute:
            self.blocked += 1
            self.limits.hit(now, "registrations-per-minute", ip,
                            f"{self.requests_per_minute}/min, id {quoted(peer_id)}")
            return False
        entry[0] += 1
        entry[1] = now
        ids = entry[2]
        is_new = peer_id not in ids
        if int(now - entry[3]) > 86400:
            ids.clear()
        elif len(ids) > self.ids_per_day:
            if is_new:
                self.blocked += 1
                self.limits.hit(now, "ids-per-day", ip,
                                f"{self.ids_per_day}/day, id {quoted(peer_id)}")
            return not is_new
        if is_new:
            ids.add(peer_id)
        entry[3] = now
        return True

    def prune(self, now, aggressive=False):
        """Drop entries whose timers have both expired; under pressure, every idle minute counter."""
        stale = [ip for ip, (_, t1, _, t2) in self.entries.items()
                 if int(now - t1) > 60 and (aggressive or int(now - t2) > 86400)]
        for ip in stale:
            del self.entries[ip]
        if aggressive and stale:
            self.log.warn("ip-blocker table full: forgot {count} idle addresses", count=len(stale))
        return len(stale)


class IpChanges:
    """Which ids registered from several IPs recently (console ``ic``)."""

    WINDOW = 180
    SHOWN = 360

    def __init__(self, max_entries=100_000):
        self.max_entries = max_entries
        self.entries = {}

    def record(self, peer_id, ip, now):
        entry = self.entries.get(peer_id)
        if entry is None or int(now - entry[0]) > self.WINDOW:
            if entry is None and len(self.entries) >= self.max_entries:
                self.prune(now)
                if len(self.entries) >= self.max_entries:
                    return
            self.entries[peer_id] = (now, {ip: 1})
            return
        counts = entry[1]
        counts[ip] = counts.get(ip, 0) + 1

    def prune(self, now):
        """Keep what the console shows: younger than 360 s and more than one IP."""
        for peer_id in [p for p, (t, ips) in self.entries.items()
                        if now - t >= self.SHOWN or len(ips) <= 1]:
            del self.entries[peer_id]


class PunchLog:
    """Recent punch requests (console ``pr``), deduplicated per (source, target) for 60 s."""

    def __init__(self, max_entries=10_000):
        self.entries = deque(maxlen=max_entries)

    def record(self, now, from_ip, to_ip, to_id):
        scanned = 0
        for entry in reversed(self.entries):
            if scanned == 30:
                break
            scanned += 1
            if entry[1] == from_ip and entry[3] == to_id:
                if now - entry[0] < 60:
                    return False
                break
        self.entries.append((now, from_ip, to_ip, to_id))
        return True


def spend(bucket, rate, burst, now, cost=1.0):
    """Take ``cost`` tokens from ``bucket`` (``[tokens, last time]``, refilled at ``rate`` up
    to ``burst``); False, taking nothing, when there are fewer."""
    tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
    bucket[1] = now
    if tokens < cost:
        bucket[0] = tokens
        return False
    bucket[0] = tokens - cost
    return True


class SourceRates:
    """A token bucket per source: ``rate`` requests per second on average, bursts of ``burst``.

    Bounded: when ``max_sources`` buckets exist, those that have been idle
    long enough to be full again are dropped (they carry no information),
    and if none has, the oldest.
    """

    def __init__(self, rate, burst, max_sources=100_000):
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets = {}

    def allow(self, source, now, cost=1.0):
        """Take ``cost`` tokens from ``source``'s bucket; False when it holds fewer."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self.prune(now)
            bucket = self._buckets[source] = [self.burst, now]
        return spend(bucket, self.rate, self.burst, now, cost)

    def prune(self, now):
        """Forget buckets that would be full by now; if none, the oldest one."""
        refill = self.burst / self.rate if self.rate > 0 else float("inf")
        buckets = self._buckets
        for source in [s for s, (tokens, last) in buckets.items()
                       if tokens + (now - last) * self.rate >= self.burst or now - last >= refill]:
            del buckets[source]
        while len(buckets) >= self.max_sources:
            del buckets[next(iter(buckets))]

    def __len__(self):
        return len(self._buckets)
