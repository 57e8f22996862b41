"""hbbs's text console (PROTOCOL.md section 7.8).

Operators and their scripts parse this output, so every official command
answers byte for byte as the official server does (gotcha G25), including its
quirks, except ``aur``, which here leaves the relay list alone (G17).  Our
additions (``peer``, ``peer-list``, ``peer-release``, ``peer-rename``,
``backup``) are listed after the official help lines; ``rustdesk-admin``
drives them.
"""

import base64
import ipaddress
import math
import os
import re
import unicodedata
from datetime import datetime, timezone
from itertools import islice

from twisted.internet.defer import Deferred

from ..logs import Logger
from ..logtext import quoted, shown
from ..textconsole import ConsoleFactory
from ..wire.keys import fingerprint
from .relays import parse_relay_list


HELP = (
    "relay-servers(rs) <separated by ,>\n"
    "reload-geo(rg)\n"
    "ip-blocker(ib) [<ip>|<number>] [-]\n"
    "ip-changes(ic) [<id>|<number>] [-]\n"
    "punch-requests(pr) [<number>] [-]\n"
    "always-use-relay(aur)\n"
    "test-geo(tg) <ip1> <ip2>\n"
    "peer <id>\n"
    "peer-list [<start>] [<count>]\n"
    "peer-release <id>\n"
    "peer-rename <old id> <new id>\n"
    "backup <file name>\n"
    "rendezvous-servers [<serial> <separated by ,>]\n"
)
PEER_LIST_PAGE = 1000
PEER_LIST_MAX = 100_000
_BACKUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Rust's str::trim strips White_Space, which (unlike Python's isspace) excludes U+001C..U+001F.
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_SIGNED = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"\+?[0-9]+")
I32 = (-2**31, 2**31 - 1)
USIZE = (0, 2**64 - 1)
IC_INDEX_MAX = 10_000_000
_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs", "Mn", "Me"}


def rust_int(token, bounds, default):
    """Rust's ``token.parse::<T>()`` for an integer type with ``bounds``, else ``default``.

    Python's ``int`` would also take spaces, underscores and non-ASCII digits.
    """
    low, high = bounds
    pattern = _SIGNED if low < 0 else _UNSIGNED
    if token is None or not pattern.fullmatch(token):
        return default
    value = int(token)
    return value if low <= value <= high else default


def rust_debug_str(text):
    """Rust's ``{:?}`` of a string; Mn/Me stand in for Unicode's Grapheme_Extend."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch != " " and unicodedata.category(ch) in _UNPRINTABLE:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def rust_debug_counts(counts):
    """Rust's ``{:?}`` of a ``HashMap<String, i32>``, in our (insertion) order."""
    return "{" + ", ".join(f"{rust_debug_str(k)}: {v}" for k, v in counts.items()) + "}"


def rfc3339(t):
    """UTC, whole seconds, ``Z`` suffix, as chrono's ``to_rfc3339_opts(Secs, true)``."""
    return datetime.fromtimestamp(math.floor(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_ip(token):
    """Whether Rust's ``IpAddr`` parser accepts ``token`` (it knows no ``%scope``)."""
    if "%" in token:
        return False
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True


def _secs(now, then):
    """``Instant::elapsed().as_secs()``: whole seconds, never negative."""
    return max(0, int(now - then))


def _page(items, start, count):
    """Items ``start`` to ``start + count`` of a sized iterable; any huge index is fine."""
    size = len(items)
    return islice(items, min(start, size), min(start + count, size))


class HbbsConsole:
    """The console's commands over a live :class:`RendezvousServer`."""

    log = Logger()

    def __init__(self, server):
        self.server = server
        self._commands = {}
        for names, handler in (
                (("h",), self._help),
                (("rs", "relay-servers"), self._relay_servers),
                (("rg", "reload-geo"), self._reload_geo),
                (("ib", "ip-blocker"), self._ip_blocker),
                (("ic", "ip-changes"), self._ip_changes),
                (("pr", "punch-requests"), self._punch_requests),
                (("aur", "always-use-relay"), self._always_use_relay),
                (("tg", "test-geo"), self._test_geo),
                (("peer",), self._peer),
                (("peer-list",), self._peer_list),
                (("peer-release",), self._peer_release),
                (("peer-rename",), self._peer_rename),
                (("backup",), self._backup),
                (("rendezvous-servers",), self._rendezvous_servers)):
            for name in names:
                self._commands[name] = handler

    def execute(self, text, now):
        """The reply to one console input; unknown commands get an empty reply."""
        line = text.strip(_WHITESPACE)
        args = iter(line.split(" "))
        handler = self._commands.get(next(args))
        if handler is None:
            return ""
        self.log.info("console: {command}", command=quoted(line, 200), event="console_command")
        return handler(args, now)

    def _help(self, args, now):
        return HELP

    def _relay_servers(self, args, now):
        relays = self.server.relays
        arg = next(args, None)
        if arg is not None:
            relays.configure(parse_relay_list(arg))
            return ""
        return "".join(f"{relay}\n" for relay in relays.active)

    def _rendezvous_servers(self, args, now):
        """``rendezvous-servers [SERIAL NAME,NAME...]``: what ConfigUpdate pushes to peers."""
        server = self.server
        serial = next(args, None)
        if serial is not None:
            try:
                server.configure(int(serial), parse_relay_list(next(args, "")))
            except ValueError as e:
                return f"refused: {e}\n"
        return f"serial {server.serial}: {','.join(server.rendezvous_servers)}\n"

    def _reload_geo(self, args, now):
        return ""

    def _ip_blocker(self, args, now):
        blocker = self.server.registry.ip_blocker
        blocker.prune(now)
        entries = blocker.entries

        def show(entry):
            count, t1, ids, t2 = entry
            return f"{count}/{_secs(now, t1)}s {len(ids)}/{_secs(now, t2)}s"

        out = [f"{len(entries)}\n"]
        arg = next(args, None)
        start = rust_int(arg, I32, -1)
        if start < 0:
            if arg is None:
                start = 0
            else:
                if arg in entries:
                    out.append(f"{show(entries[arg])}\n")
                if next(args, None) == "-":
                    entries.pop(arg, None)
        if start >= 0:
            out.extend(f"{ip}: {show(entries[ip])}\n" for ip in _page(entries, start, 10))
        return "".join(out)

    def _ip_changes(self, args, now):
        changes = self.server.registry.ip_changes
        changes.prune(now)
        entries = changes.entries

        def show(entry):
            first, counts = entry
            return f"{_secs(now, first)}s {rust_debug_counts(counts)}"

        out = [f"{len(entries)}\n"]
        arg = next(args, None)
        start = rust_int(arg, I32, -1)
        if not 0 <= start <= IC_INDEX_MAX:
            if arg is None:
                start = 0
            else:
                if arg in entries:
                    out.append(f"{show(entries[arg])}\n")
                if next(args, None) == "-":
                    entries.pop(arg, None)
        if start >= 0:
            out.extend(f"{peer_id}: {show(entries[peer_id])}\n"
                       for peer_id in _page(entries, start, 10))
        return "".join(out)

    def _punch_requests(self, args, now):
        log = self.server.punch_log.entries
        arg = next(args, None)
        if arg == "-":
            log.clear()
            return ""
        start = rust_int(arg, USIZE, 0)
        page_size = rust_int(next(args, None), USIZE, 10) or 10
        return "".join(f"{rfc3339(t)} {from_ip} -> {to_id}@{to_ip}\n"
                       for t, from_ip, to_ip, to_id in _page(log, start, page_size))

    def _always_use_relay(self, args, now):
        arg = next(args, None)
        if arg is None:
            return f"ALWAYS_USE_RELAY: {'true' if self.server.always_use_relay else 'false'}\n"
        self.server.always_use_relay = arg.upper() == "Y"
        return ""

    def _test_geo(self, args, now):
        first = next(args, None)
        if first is None or not is_ip(first):
            return ""
        second = next(args, None)
        if second is not None and not is_ip(second):
            return ""
        return rust_debug_str(self.server.relays.next())

    def _peer(self, args, now):
        """Ours: is this id registered, when was it last seen, from where."""
        peer_id = next(args, None)
        if peer_id is None:
            return ""
        peer = self.server.registry.get(peer_id)
        if peer is None:
            return f"{peer_id}: not registered\n"
        seen = peer.last_seen
        if peer.channel is not None:
            channel = peer.channel.transport_name
        else:
            channel = "udp" if peer.address is not None else "none"
        return (f"id: {peer.id}\n"
                f"online: {'true' if peer.online(now) else 'false'}\n"
                f"last seen: {'never' if seen is None else f'{_secs(now, seen)}s ago'}\n"
                f"ip: {peer.ip}\n"
                f"uuid: {base64.b64encode(peer.uuid).decode('ascii')}\n"
                f"key: {fingerprint(peer.pk)}\n"
                f"channel: {channel}\n")


    def _peer_list(self, args, now):
        """Ours: a page of ``id online|offline last-seen-seconds|never ip``, after the total."""
        peers = self.server.registry.peers
        start = rust_int(next(args, None), USIZE, 0)
        count = min(rust_int(next(args, None), USIZE, PEER_LIST_PAGE), PEER_LIST_MAX)
        out = [f"{len(peers)}\n"]
        for peer in _page(peers.values(), start, count):
            seen = peer.last_seen
            out.append(f"{shown(peer.id)} {'online' if peer.online(now) else 'offline'} "
                       f"{'never' if seen is None else _secs(now, seen)} {peer.ip or '-'}\n")
        return "".join(out)

    def _peer_release(self, args, now):
        """Ours: forget an id (memory and database) so another machine may register it.

        The reply waits for the commit: "released" means the row is gone from the disk.
        """
        peer_id = next(args, None)
        if peer_id is None:
            return ""
        registered = self.server.registry.release(peer_id)
        if not registered:
            return f"{peer_id}: not registered\n"
        if registered is True:
            return f"{peer_id}: released\n"
        return registered.addCallback(
            lambda gone: f"{peer_id}: released\n" if gone else
            f"error: {peer_id} could not be released: the database refused the change\n")

    def _peer_rename(self, args, now):
        old_id, new_id = next(args, None), next(args, None)
        if old_id is None or new_id is None:
            return ""

        def reply(error):
            return f"error: {error}\n" if error else f"{old_id}: renamed to {new_id}\n"

        error = self.server.registry.rename(old_id, new_id)
        return error.addCallback(reply) if isinstance(error, Deferred) else reply(error)

    def _backup(self, args, now):
        """Ours: an online backup of the database, beside it, once queued writes are in.

        Last-seen times held in memory are queued first, so the copy has them.

        Only a plain file name is taken, so the console cannot be made to
        write anywhere but the data directory; ``rustdesk-admin`` moves it.
        """
        name = next(args, None)
        store = self.server.registry.store
        if name is None or store is None:
            return ""
        if not _BACKUP_NAME.fullmatch(name):
            return f"error: {name!r} is not a plain file name\n"
        target = os.path.join(os.path.dirname(os.path.abspath(store.path)), name)
        if os.path.lexists(target):
            return f"error: {target} exists\n"
        self.server.registry.save_all_seen(now)
        d = store.backup(target)
        d.addCallbacks(lambda _: f"ok {target}\n", lambda failure: f"error: {failure.value}\n")
        return d


def console_factory(console, clock, loopback_only=False):
    """The hbbs console on the shared one-read transport."""
    return ConsoleFactory(lambda text: console.execute(text, clock.seconds()), clock,
                          loopback_only)
