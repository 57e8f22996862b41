"""Who is one *source* for per-source limits.

An IPv4 address is one source (mapped and compatible IPv6 forms fold into
it).  An IPv6 source is its /64: one subscriber's prefix, inside which a
host may use any of 2**64 addresses, so a per-address cap would be no cap
at all.
"""

import socket

from .logs import Logger
from .logtext import LimitLog
from .wire.addr_mangle import try_into_v4


def source_key(host):
    """The per-source key of a textual peer IP: the IPv4 text, or ``prefix::/64`` for IPv6.

    Anything that is not an IP (a Unix socket's empty host) is its own key.
    """
    host = try_into_v4(host)
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return host
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


class ConnectionLimits:
    """Caps on simultaneous connections, in total and per source (:func:`source_key`).

    A listener calls :meth:`admit` when it accepts a connection, before any
    byte is read, and :meth:`release` when it closes.  Refusals are counted
    in ``refused`` and logged once per source and minute.
    """

    log = Logger()

    def __init__(self, clock, max_total=65_536, max_per_ip=256, name="connections-per-ip"):
        self.clock = clock
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.name = name
        self.per_source = {}
        self.total = 0
        self.refused = 0
        self.limit_log = LimitLog(self.log)

    def admit(self, host):
        """True, and counted, when a connection from ``host`` may open."""
        key = source_key(host)
        count = self.per_source.get(key, 0)
        if self.total >= self.max_total:
            return self._refuse(key, "connections-total", f"{self.total} open in all")
        if count >= self.max_per_ip:
            return self._refuse(key, self.name, f"{count} open from it")
        self.per_source[key] = count + 1
        self.total += 1
        return True

    def _refuse(self, key, limit, detail):
        self.refused += 1
        self.limit_log.hit(self.clock.seconds(), limit, key, detail)
        return False

    def release(self, host):
        """Forget one connection ``admit`` let in from ``host``."""
        key = source_key(host)
        count = self.per_source.get(key, 0) - 1
        if count > 0:
            self.per_source[key] = count
        else:
            self.per_source.pop(key, None)
        self.total -= 1
