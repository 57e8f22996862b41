"""Bandwidth policy: the official knobs (PROTOCOL.md 7.4, 9.3) as plain arithmetic.

Rates are in bits per second; "Mb" is 2**20 bits as in the official server.
Limiters work in virtual time: each charge pushes a "free at" instant
forward by ``bits / rate`` and the caller pauses reading for however far that
instant lies ahead.  Nothing here reads a clock; callers pass ``now``.
"""

from decimal import Decimal

from ..config import ConfigError

MBIT = 1024 * 1024

DEFAULT_SINGLE = 128 * MBIT
DEFAULT_TOTAL = 1024 * MBIT
DEFAULT_LIMIT = 32 * MBIT
DEFAULT_THRESHOLD_100 = 66
DEFAULT_START_CHECK_MS = 1_800_000

# A limiter may run this far ahead of its rate before asking for a pause, so
# a session that was quiet a moment ago is not paused for every small chunk.
BURST_SECONDS = 0.05


def rust_float(value):
    """``value`` printed like Rust's ``{}`` for f64: ``32``, ``0.66``, never ``32.0`` (G25)."""
    if value == int(value):
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def mbit_text(bits):
    return rust_float(bits / 1024 / 1024)


def parse_positive(text):
    """A float > 0 from ``text``, or None, as the official server filters its knobs."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 and value != float("inf") else None


class Limiter:
    """A token bucket for one rate; ``rate`` None means unlimited."""

    __slots__ = ("rate", "_free_at")

    def __init__(self, rate):
        self.rate = rate
        self._free_at = 0.0

    def consume(self, bits, now):
        """Seconds to wait before reading more, after sending ``bits``."""
        rate = self.rate
        if rate is None:
            return 0.0
        start = self._free_at
        if start < now - BURST_SECONDS:
            start = now - BURST_SECONDS
        self._free_at = start + bits / rate
        delay = self._free_at - now
        return delay if delay > 0.0 else 0.0


class BandwidthPolicy:
    """Current settings; the console changes them at run time."""

    def __init__(self, single=DEFAULT_SINGLE, total=DEFAULT_TOTAL, limit=DEFAULT_LIMIT,
                 threshold_100=DEFAULT_THRESHOLD_100, start_check_ms=DEFAULT_START_CHECK_MS,
                 enabled=True):
        self.single = single
        self.total = total
        self.limit = limit
        self.threshold_100 = threshold_100
        self.start_check_ms = start_check_ms
        self.enabled = enabled

    @classmethod
    def from_settings(cls, settings, enabled=True):
        """Read the official variables; values <= 0 or unparsable keep the default."""
        policy = cls(enabled=enabled)
        for name, attribute in (("SINGLE_BANDWIDTH", "single"), ("TOTAL_BANDWIDTH", "total"),
                                ("LIMIT_SPEED", "limit")):
            value = parse_positive(settings.get(name, ""))
            if value is not None:
                setattr(policy, attribute, int(value * MBIT))
        value = parse_positive(settings.get("DOWNGRADE_THRESHOLD", ""))
        if value is not None:
            policy.threshold_100 = int(value * 100)
        raw = str(settings.get("DOWNGRADE_START_CHECK", "")).strip()
        if raw.isdigit() and int(raw) > 0:
            policy.start_check_ms = int(raw) * 1000
        throttle = str(settings.get("THROTTLE", "Y")).strip().upper()
        if throttle in ("N", "NO", "OFF", "0", "FALSE"):
            policy.enabled = False
        elif throttle not in ("Y", "YES", "ON", "1", "TRUE"):
            raise ConfigError(f"THROTTLE must be Y or N, got {throttle!r}")
        return policy

    def describe(self):
        """One line for the startup banner."""
        if not self.enabled:
            return "throttling off"
        return (f"single {mbit_text(self.single)}Mb/s, total {mbit_text(self.total)}Mb/s, "
                f"limit {mbit_text(self.limit)}Mb/s, downgrade above "
                f"{rust_float(self.threshold_100 / 100)} after {self.start_check_ms // 1000}s")

    def total_limiter_rate(self):
        return self.total if self.enabled else None


class SessionMeter:
    """One session's usage counters, its limiters and the downgrade rule (7.4).

    ``tick`` runs about once a second; it updates ``speed``/``highest`` (bits
    per millisecond, which the console labels kb/s) and returns True on the
    tick that downgrades the session.
    """

    __slots__ = ("policy", "total_bits", "window_bits", "elapsed_ms", "highest", "speed",
                 "downgraded", "blacklisted", "_single", "_limited", "_threshold", "_last")

    def __init__(self, policy, now):
        self.policy = policy
        self.total_bits = 0
        self.window_bits = 0
        self.elapsed_ms = 0
        self.highest = 0
        self.speed = 0
        self.downgraded = False
        self.blacklisted = False
        enabled = policy.enabled
        self._single = Limiter(policy.single if enabled else None)
        self._limited = Limiter(policy.limit if enabled else None)
        self._threshold = int(policy.single * policy.threshold_100 / 100 / 1000)
        self._last = now

    @property
    def capped(self):
        """Whether LIMIT_SPEED applies instead of SINGLE_BANDWIDTH."""
        return self.downgraded or self.blacklisted

    def charge(self, nbytes, now):
        """Account ``nbytes`` and return the session limiter's delay."""
        bits = nbytes * 8
        self.total_bits += bits
        self.window_bits += bits
        limiter = self._limited if self.downgraded or self.blacklisted else self._single
        return limiter.consume(bits, now)

    def tick(self, now):
        n = int((now - self._last) * 1000)
        if n <= 0:
            return False
        self._last = now
        self.speed = self.window_bits // n
        self.window_bits = 0
        if self.speed > self.highest:
            self.highest = self.speed
        self.elapsed_ms += n
        if (self.policy.enabled and not self.downgraded
                and self.elapsed_ms > self.policy.start_check_ms
                and self.total_bits > self.elapsed_ms * self._threshold):
            self.downgraded = True
            return True
        return False

    def usage_line(self, key):
        """The console ``u`` line for this session, byte-exact with the official one."""
        return (f"{key}: {self.elapsed_ms // 1000}s "
                f"{self.total_bits / 1024 / 1024 / 8:.2f}MB {self.highest}kb/s "
                f"{self.total_bits // self.elapsed_ms}kb/s {self.speed}kb/s\n")
