"""Putting what clients send into log lines without letting it shape the line.

Log lines are read by people, grepped by scripts and matched by fail2ban,
so text an attacker chose (ids, uuids, versions, relay names, console input)
must never be able to look like structure: :func:`quoted` turns any value
into printable ASCII in double quotes, escaped and capped.  Lines about a
client start with its address (``"{source} ..."``), before any such text, so a
filter anchored on that position cannot be fooled by what follows.

:class:`LimitLog` reports limit hits once per source and interval, with a
count of the hits it did not log, so a flood costs counters, not log I/O.
"""

from .logs import Logger

MAX_QUOTED = 64
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}
_NAMED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def _escape(char):
    if char in _PLAIN:
        return char
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def quoted(value, limit=MAX_QUOTED):
    """``value`` (str, bytes or anything printable) as a double-quoted printable-ASCII literal.

    At most ``limit`` characters of escaped text appear between the quotes;
    a longer value ends in ``...`` after the closing quote.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        chars = map(chr, bytes(value))
    else:
        chars = str(value)
    out = []
    size = 0
    for char in chars:
        piece = _escape(char)
        size += len(piece)
        if size > limit:
            return '"' + "".join(out) + '"...'
        out.append(piece)
    return '"' + "".join(out) + '"'


_BARE = _PLAIN - {" "}


def shown(value):
    """``value`` as is when it is printable ASCII without spaces or quotes (every real id),
    else :func:`quoted`: for listings an operator reads in a terminal or a script splits."""
    text = str(value)
    if text and all(char in _BARE for char in text):
        return text
    return quoted(text, 200)


class Untrusted(str):
    """A client's text as a log event field: the raw value for structured consumers (JSON
    lines, filters on ``event``), :func:`quoted` wherever it is formatted into a line."""

    __slots__ = ()

    def __format__(self, spec):
        return quoted(str(self))


def untrusted(value):
    """``value`` as an event field that formats quoted (bytes are decoded as Latin-1)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("latin-1")
    return Untrusted(value)


class LimitLog:
    """Logs a limit hit once per ``(limit, source)`` and ``interval``; counts every hit.

    ``hits[limit]`` holds the total for ``/metrics``.  The table of recent
    reports is bounded: past ``max_sources`` entries the stale ones go, and
    if none is stale the oldest.  Many sources at once (forged UDP sources,
    a botnet) cannot flood the log either: past ``max_lines`` reports in an
    interval, reports are only counted, and the next interval starts with
    one line saying how many were left out.  ``line`` and ``event`` give
    reports that are not limit hits (a failing upstream) the same bounds.
    """

    LINE = "{source} limit {limit} reached{detail}{more}"

    def __init__(self, logger=None, interval=60.0, max_sources=10_000, max_lines=100,
                 line=LINE, event="limit_reached"):
        self.log = logger if logger is not None else Logger()
        self.line = line
        self.event = event
        self.interval = interval
        self.max_sources = max_sources
        self.max_lines = max_lines
        self.hits = {}
        self._reported = {}
        self._window = None
        self._lines = 0
        self._left_out = 0

    def count(self, limit):
        """Count a hit of ``limit`` without a line: for sources that may be forged."""
        self.hits[limit] = self.hits.get(limit, 0) + 1

    def hit(self, now, limit, source, detail=""):
        """Count a hit of ``limit`` by ``source`` (a source key or address) and maybe log it."""
        self.hits[limit] = self.hits.get(limit, 0) + 1
        key = (limit, source)
        entry = self._reported.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if not self._line_allowed(now):
            return
        suppressed = entry[1] if entry is not None else 0
        if entry is None and len(self._reported) >= self.max_sources:
            self._make_room(now)
        self._reported.pop(key, None)
        self._reported[key] = [now, 0]
        self.log.warn(
            self.line, source=source, limit=limit, detail=f": {detail}" if detail else "",
            more=f" ({suppressed} more hits since the last report)" if suppressed else "",
            event=self.event, suppressed=suppressed)

    def _line_allowed(self, now):
        """Within this interval's budget of report lines; opens a new interval when due."""
        if self._window is None or now - self._window >= self.interval:
            if self._left_out:
                self.log.warn("{count} limit reports left out in the last {interval:.0f}s "
                              "(too many sources at once)", count=self._left_out,
                              interval=self.interval, event="limit_reports_left_out")
            self._window, self._lines, self._left_out = now, 0, 0
        if self._lines >= self.max_lines:
            self._left_out += 1
            return False
        self._lines += 1
        return True

    def _make_room(self, now):
        reported = self._reported
        for key in [k for k, (when, _) in reported.items() if now - when >= self.interval]:
            del reported[key]
        while len(reported) >= self.max_sources:
            del reported[next(iter(reported))]
