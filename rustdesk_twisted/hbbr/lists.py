"""blacklist.txt and blocklist.txt (PROTOCOL.md 7.5).

Files are parsed the way the official server reads them, but a peer matches
an entry under its raw text *or* its ``try_into_v4`` form, so IPv4 peers on a
dual-stack socket (``::ffff:1.2.3.4``) are not missed (G12).
"""

import os

from ..wire.addr_mangle import try_into_v4

MAX_ENTRIES = 65536


class AddressList:
    """A bounded set of textual IPs, editable through the console."""

    __slots__ = ("name", "_entries")

    def __init__(self, name, entries=()):
        self.name = name
        self._entries = set()
        for entry in entries:
            self.add(entry)

    @classmethod
    def load(cls, name, path):
        """The list in ``path``; a missing file is an empty list."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return cls(name)
        entries = []
        for line in text.split("\n"):
            line = line.strip().split(" ", 1)[0]
            if line:
                entries.append(line)
        return cls(name, entries)

    @classmethod
    def from_directory(cls, name, directory):
        return cls.load(name, os.path.join(directory, name + ".txt"))

    def add(self, entry):
        """False when the list is full and ``entry`` is new."""
        if entry not in self._entries and len(self._entries) >= MAX_ENTRIES:
            return False
        self._entries.add(entry)
        return True

    def remove(self, entry):
        self._entries.discard(entry)

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def __contains__(self, entry):
        """Exact text of the entry (the console's question)."""
        return entry in self._entries

    def matches(self, host):
        """Whether a peer host is listed, under its raw or normalised text."""
        entries = self._entries
        return bool(entries) and (host in entries or try_into_v4(host) in entries)

    def entries(self):
        return sorted(self._entries)
