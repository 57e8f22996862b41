"""Who is one *source* for per-source limits.

An IPv4 address is one source (mapped and compatible IPv6 forms fold into
it).  An IPv6 source is its /64: one subscriber's prefix, inside which a
host may use any of 2**64 addresses, so a per-address cap would be no cap
at all.
"""

import resource
import socket

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from .config import ConfigError
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
    in ``refused`` and logged once per source and minute.  With a ``budget``
    (a :class:`BudgetShare`) each connection also holds ``cost`` descriptors
    of it: one for the socket, more where a connection brings its own (the
    relay's splice pipes).
    """

    log = Logger()

    MAX_TOTAL = 65_536

    def __init__(self, clock, max_total=MAX_TOTAL, max_per_ip=256, name="connections-per-ip",
                 budget=None, cost=1):
        self.clock = clock
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.name = name
        self.budget = budget
        self.cost = cost
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
        budget = self.budget
        if budget is not None and not budget.take(self.cost):
            return self._refuse(key, "descriptors", budget.describe())
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
        if self.budget is not None:
            self.budget.give(self.cost)


DESCRIPTOR_RESERVE = 256
# Fewer connections than this is no server: refuse to start with a sentence instead.
MIN_CONNECTIONS = 16


def raise_descriptor_limit(rlimits=resource):
    """Raise the soft RLIMIT_NOFILE to the hard limit; ``(soft before, soft now)``.

    The soft limit is often far below the hard one (1024 against 524288 on
    many systems), so a busy relay would run out of descriptors for no reason.
    """
    soft, hard = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)
    if hard == rlimits.RLIM_INFINITY or hard <= soft:
        return soft, soft
    try:
        rlimits.setrlimit(rlimits.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


class DescriptorBudget:
    """The descriptors a process may spend on connections, shared by its servers.

    It is the soft RLIMIT_NOFILE (raised by :meth:`open`) minus ``reserve``
    for files, the database, logs and listening sockets.  Each server draws
    through its :class:`BudgetShare`; descriptors a share is guaranteed and
    does not use are kept free for it, so in ``twistd rustdesk-server`` a relay
    flood cannot take hbbs's TCP listeners down (issue 9 item 12).
    """

    def __init__(self, reserve=DESCRIPTOR_RESERVE):
        self.reserve = reserve
        self.total = 0
        self.used = 0
        self.limit_before = None
        self.limit = None
        self.shares = []

    def open(self, rlimits=resource):
        """Raise the descriptor limit and size the budget; later calls change nothing."""
        if self.limit is None:
            self.limit_before, self.limit = raise_descriptor_limit(rlimits)
            self.total = max(self.limit - self.reserve, 0)
            if self.total < MIN_CONNECTIONS:
                raise ConfigError(
                    f"the descriptor limit is {self.limit} (ulimit -n), which leaves "
                    f"{self.total} for connections after {self.reserve} kept for files; "
                    f"raise it to at least {self.reserve + MIN_CONNECTIONS}")

    def share(self, name, guaranteed=0):
        share = BudgetShare(self, name, guaranteed)
        self.shares.append(share)
        return share

    def take(self, share, cost):
        held_for_others = sum(max(other.guaranteed - other.used, 0)
                              for other in self.shares if other is not share)
        if self.total - self.used - held_for_others < cost:
            return False
        share.used += cost
        self.used += cost
        return True

    def describe(self):
        return f"{self.used} of {self.total} descriptors in use"

    def banner(self):
        """The startup line: what happened to the limit, and what is left for connections."""
        if self.limit > self.limit_before:
            return f"soft limit raised from {self.limit_before} to {self.limit}"
        return f"soft limit {self.limit}, not raised (the hard limit)"


class BudgetShare:
    """One server's draw on a :class:`DescriptorBudget`, with its guaranteed part."""

    __slots__ = ("budget", "name", "guaranteed", "used")

    def __init__(self, budget, name, guaranteed=0):
        self.budget = budget
        self.name = name
        self.guaranteed = guaranteed
        self.used = 0

    def available(self):
        """Descriptors this share can ever hold: the budget less the others' guarantees."""
        return self.budget.total - sum(other.guaranteed for other in self.budget.shares
                                       if other is not self)

    def take(self, cost=1):
        return self.budget.take(self, cost)

    def give(self, cost=1):
        self.used -= cost
        self.budget.used -= cost

    def describe(self):
        return self.budget.describe()


class _Counted(ProtocolWrapper):
    def connectionLost(self, reason):
        self.factory.admission.release(self.limit_host)
        super().connectionLost(reason)


class AdmittedFactory(WrappingFactory):
    """Counts ``wrapped``'s connections from accept to close in ``admission``.

    ``admission`` has ``admit(host)`` and ``release(host)`` (a
    :class:`ConnectionLimits`, or a server that also checks a blocklist).
    For listeners whose protocol does not count itself (hbbr's announce port).
    """

    protocol = _Counted
    noisy = False

    def __init__(self, wrapped, admission):
        super().__init__(wrapped)
        self.admission = admission

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if not self.admission.admit(host):
            return None
        protocol = super().buildProtocol(addr)
        protocol.limit_host = host
        return protocol
