"""The table of relay requests waiting for their partner (PROTOCOL.md 4.4 d3).

Pure state: callers pass ``now``; the server's periodic sweep pulls out the
entries whose 30 s are up.  A side only ever removes its own entry (G22), and
the table refuses new entries past ``limit`` so a flood of lonely requests
cannot grow it without bound.
"""

PAIRING_TIMEOUT = 30.0


class TableFull(Exception):
    """The pending table holds ``limit`` entries already."""


class PendingTable:
    __slots__ = ("limit", "timeout", "_waiting")

    def __init__(self, limit, timeout=PAIRING_TIMEOUT):
        self.limit = limit
        self.timeout = timeout
        # uuid -> (side, deadline); insertion order is deadline order because
        # the timeout is constant and ``now`` never goes backwards.
        self._waiting = {}

    def __len__(self):
        return len(self._waiting)

    def offer(self, uuid, side, now):
        """The partner waiting under ``uuid`` (removed), or None after parking ``side``."""
        entry = self._waiting.pop(uuid, None)
        if entry is not None:
            return entry[0]
        if len(self._waiting) >= self.limit:
            raise TableFull(uuid)
        self._waiting[uuid] = (side, now + self.timeout)
        return None

    def withdraw(self, uuid, side):
        """Remove ``side``'s entry; someone else's entry under ``uuid`` stays."""
        entry = self._waiting.get(uuid)
        if entry is not None and entry[0] is side:
            del self._waiting[uuid]

    def expire(self, now):
        """Remove and return ``(uuid, side)`` for every entry whose deadline has passed."""
        expired = []
        for uuid, (side, deadline) in self._waiting.items():
            if deadline > now:
                break
            expired.append((uuid, side))
        for uuid, _ in expired:
            del self._waiting[uuid]
        return expired
