"""The peer table and the registration rules (PROTOCOL.md sections 4.1, 4.2, 7.1).

Every peer the database knows is held in memory (loaded at start), so every
decision on the hot path is a dictionary lookup; the store only receives
writes, group-committed off the reactor thread.  IPs are compared in their
``try_into_v4`` form, so a dual-stack socket's ``::ffff:a.b.c.d`` and a
plain ``a.b.c.d`` (what the official server stored before) are the same peer
address.

Ownership: the official rule, kept for RegisterPk, is that the uuid is the
only proof that an id belongs to a machine.  A mobile-style peer's uuid is
its public key, which any PunchHoleResponse reveals, so two things are
tighter here: such a peer's key is never replaced (UUID_MISMATCH), and no
peer's key is replaced while the peer is online at another address
(TOO_FREQUENT; it is retried later).  Change-ID needs more than the uuid: a
signature by the registered key over a challenge (``wire/ownership.py``).

An accepted change is applied in memory at once, so the next decision sees
it, and acknowledged only when its row is committed: the methods that write
return a Deferred of their answer.  If the commit fails, the peer goes back
to the state on disk and the answer is a refusal.
"""

import re

from twisted.internet.defer import Deferred

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted, untrusted
from ..wire import ownership
from ..wire.addr_mangle import is_loopback, try_into_v4
from ..wire.rendezvous_pb2 import RegisterPkResponse
from .limits import IpBlocker, IpChanges
from .store import new_guid

ONLINE_WINDOW = 30.0
PK_BURST = 2
PK_BURST_SECONDS = 6
SEEN_PERSIST_INTERVAL = 300.0
ID_FORMAT = re.compile(r"[a-zA-Z][\w-]{5,15}")
# rustdesk-doctor's test peers: "~" is outside every id a client is given or may change to.
PROBE_PREFIX = "~probe-"

# RegisterPkResponse.Result's values as plain class attributes: the protobuf enum wrapper
# resolves every attribute access in Python, a cost paid on each registration.
Result = type("Result", (), dict(RegisterPkResponse.Result.items()))
_NEVER = float("-inf")  # one shared object: three fresh floats per peer cost 72 bytes


def is_probe(peer_id):
    """A diagnostic peer: served like any other, but never written to the database."""
    return peer_id.startswith(PROBE_PREFIX)


class Peer:
    """One registered peer.

    ``address`` is where to reach it over UDP (its last registration source),
    ``channel`` its persistent TCP/WebSocket registration, if any;
    ``moved_until`` the end of the online window of the address it last moved
    away from, during which its key is not replaced.
    """

    __slots__ = ("id", "guid", "uuid", "pk", "ip", "address", "last_reg_time",
                 "pk_count", "pk_time", "channel", "seen_saved", "moved_until")

    def __init__(self, peer_id, guid=b"", uuid=b"", pk=b"", ip="", last_seen=None):
        self.id = peer_id
        self.guid = guid
        self.uuid = uuid
        self.pk = pk
        self.ip = ip
        self.address = None
        self.last_reg_time = _NEVER
        self.pk_count = 0
        self.pk_time = _NEVER
        self.channel = None
        self.seen_saved = last_seen if last_seen is not None else _NEVER
        self.moved_until = _NEVER

    def online(self, now):
        """Registered within the window, or holding a live TCP/WebSocket registration."""
        if self.channel is not None:
            return True
        return self.address is not None and now - self.last_reg_time < ONLINE_WINDOW

    @property
    def last_seen(self):
        seen = max(self.last_reg_time, self.seen_saved)
        return seen if seen != _NEVER else None


class _Change:
    """One queued write of a peer: its state once written, and who awaits the commit."""

    __slots__ = ("after", "waiters")

    def __init__(self, after):
        self.after = after
        self.waiters = []


class _Unsaved:
    """A peer with writes not yet all committed: the state on disk, and the newest change."""

    __slots__ = ("committed", "latest")

    def __init__(self, committed):
        self.committed = committed
        self.latest = None


def _snapshot(peer):
    return (peer.id, peer.guid, peer.uuid, peer.pk, peer.ip)


def _refused_or(result):
    """The answer once the commit is known: ``result`` if written, SERVER_ERROR if not."""
    return lambda written: result if written else Result.SERVER_ERROR


def _compact(address, ip):
    """``address`` sharing the peer's ``ip`` string when equal (58 bytes less per peer)."""
    return (ip, address[1]) if address[0] == ip and address[0] is not ip else address


class PeerRegistry:
    """Peers by id, with the official registration rules and our bounds."""

    log = Logger()

    def __init__(self, store=None, ip_blocker=None, max_peers=4_000_000):
        self.store = store
        self.ip_blocker = ip_blocker if ip_blocker is not None else IpBlocker()
        self.ip_changes = IpChanges()
        self.max_peers = max_peers
        self.peers = {}
        self.probes = {}  # in memory only, forgotten by prune once offline
        self.throttled = 0
        self.key_changes_refused = 0
        self.limits = LimitLog(self.log)
        self._unsaved = {}

    def load(self, rows):
        """Take the stored peers (``StoredPeer`` rows) into memory."""
        for row in rows:
            self.peers[row.id] = Peer(row.id, row.guid, row.uuid, row.pk,
                                      try_into_v4(row.ip), row.last_seen)

    def get(self, peer_id):
        return self.peers.get(peer_id)

    def is_online(self, peer_id, now):
        peer = self.peers.get(peer_id)
        return peer is not None and peer.online(now)

    def online_count(self, now):
        return sum(1 for p in self.peers.values() if p.online(now))

    def register_peer(self, peer_id, address, now):
        """RegisterPeer (section 4.1): refresh a known peer; return ``request_pk``."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return True
        host = address[0]
        known = peer.address
        if known is not None and known[1] != 0:
            changed = host != known[0] and try_into_v4(host) != try_into_v4(known[0])
        else:
            changed = try_into_v4(host) != peer.ip
        if changed and is_loopback(host):
            changed = False
        if not peer.pk or changed:
            if changed and peer.pk_count <= PK_BURST:
                self.log.info("{new} is the new address of {peer_id} (was {old})",
                              new=try_into_v4(host), peer_id=untrusted(peer_id), old=peer.ip,
                              event="ip_change")
            return True
        if known != address:
            peer.address = _compact(address, peer.ip)
        peer.last_reg_time = now
        if now - peer.seen_saved >= SEEN_PERSIST_INTERVAL:
            self._save_seen(peer, now)
        return False

    def _save_seen(self, peer, now):
        peer.seen_saved = now
        if self.store is not None and peer.guid:
            self.store.touch(peer.guid, now)

    def register_pk(self, peer_id, uuid, pk, address, now):
        """RegisterPk (section 7.1); None means "ignore, no reply"."""
        if not uuid or not pk:
            return None
        if len(peer_id.encode("utf-8")) < 6:
            self.log.info("{ip} register {peer_id}: {result} (id shorter than 6 bytes)",
                          ip=try_into_v4(address[0]), peer_id=untrusted(peer_id),
                          result="UUID_MISMATCH", event="register_refused")
            return Result.UUID_MISMATCH
        ip = try_into_v4(address[0])
        if not self.ip_blocker.allow(ip, peer_id, now):
            return Result.TOO_FREQUENT
        peer = self.peers.get(peer_id)
        if peer is None:
            if len(self.peers) >= self.max_peers:
                self.log.error("{ip} new id {peer_id} refused: peer table full ({max_peers})",
                               ip=ip, peer_id=untrusted(peer_id), max_peers=self.max_peers,
                               event="peer_table_full")
                return Result.SERVER_ERROR
            peer = Peer(peer_id)
        if not peer.uuid:
            changed, ip_changed = True, False
        elif peer.uuid == uuid:
            if peer.pk != pk:
                if peer.uuid == peer.pk:
                    return self._uuid_mismatch(peer, ip, "new key for a uuid that is its key")
                if peer.ip != ip:
                    return self._uuid_mismatch(peer, ip, "ip and key both changed")
                if self._online_elsewhere(peer, ip, now):
                    return self._key_change_refused(peer, ip)
            ip_changed = peer.ip != ip
            changed = ip_changed or peer.pk != pk
        else:
            return self._uuid_mismatch(peer, ip, "id registered by another machine")
        if not self._throttle(peer, now):
            self.throttled += 1
            self.limits.hit(now, "registrations-per-id", source_key(ip),
                            f"id {quoted(peer_id)}")
            return Result.TOO_FREQUENT
        if ip_changed:
            self.ip_changes.record(peer_id, ip, now)
            if peer.online(now):
                peer.moved_until = now + ONLINE_WINDOW
        written = self._save(peer, uuid, pk, ip) if changed else self._pending(peer)
        peer.address = _compact(address, peer.ip)
        peer.last_reg_time = now
        if written is None:
            return Result.OK
        return written.addCallback(_refused_or(Result.OK))

    def _uuid_mismatch(self, peer, ip, reason):
        self.log.warn("{ip} register {peer_id}: {result} ({reason})", ip=ip,
                      peer_id=untrusted(peer.id), result="UUID_MISMATCH", reason=reason,
                      event="uuid_mismatch")
        return Result.UUID_MISMATCH

    @staticmethod
    def _online_elsewhere(peer, ip, now):
        """Online at another IP: over a live channel, or just moved away from an online one."""
        channel = peer.channel
        if channel is not None and try_into_v4(channel.key[0]) != ip:
            return True
        return now < peer.moved_until

    def _key_change_refused(self, peer, ip):
        self.key_changes_refused += 1
        self.log.warn("{ip} register {peer_id}: {result} (new key while the peer is online "
                      "at another address)", ip=ip, peer_id=untrusted(peer.id),
                      result="TOO_FREQUENT", event="key_change_refused")
        return Result.TOO_FREQUENT

    def _throttle(self, peer, now):
        """At most three accepted RegisterPk per peer in a burst (section 7.1 step 6)."""
        if now - peer.pk_time >= PK_BURST_SECONDS + 1:
            peer.pk_count = 0
        elif peer.pk_count > PK_BURST:
            return False
        peer.pk_count += 1
        peer.pk_time = now
        return True

    def _save(self, peer, uuid, pk, ip):
        """Apply a registration's change; the Deferred of its commit, None without a store."""
        new = not peer.guid
        before = None if new else _snapshot(peer)
        old_pk, old_ip = peer.pk, peer.ip
        if new:
            if is_probe(peer.id):
                self.probes[peer.id] = peer
            else:
                peer.guid = new_guid()
            self.peers[peer.id] = peer
        peer.uuid = uuid
        peer.pk = pk
        peer.ip = ip
        # Routine, and as frequent as registrations: debug lines; /metrics counts them.
        if new:
            self.log.debug("{ip} new peer {peer_id}", ip=ip, peer_id=untrusted(peer.id),
                           event="peer_added")
        else:
            self.log.debug("{ip} updated peer {peer_id}: key {key_change}, ip {old_ip} -> {ip}",
                          peer_id=untrusted(peer.id), key_change="changed" if old_pk != pk else "same",
                          old_ip=old_ip, ip=ip, event="peer_updated")
        if self.store is None or not peer.guid:
            return None
        if new:
            return self._persist(peer, before, self.store.insert(peer.guid, peer.id, uuid, pk, ip))
        return self._persist(peer, before, self.store.update(peer.guid, peer.id, pk, ip))

    def _persist(self, peer, before, commit):
        """Track ``commit``, the store's Deferred for ``peer``'s new state; ``before`` is what
        it replaces (None: not on disk).  Returns a Deferred firing True once written,
        False if refused; then the peer is put back to its state on disk."""
        record = self._unsaved.get(peer)
        if record is None:
            record = self._unsaved[peer] = _Unsaved(before)
        change = _Change(_snapshot(peer) if peer.guid else None)
        record.latest = change
        answer = self._await(change)
        commit.addCallbacks(self._written, self._not_written, (peer, record, change), None,
                            (peer, record, change))
        return answer

    def _pending(self, peer):
        """A Deferred of ``peer``'s newest uncommitted change, or None when all is on disk."""
        record = self._unsaved.get(peer)
        return self._await(record.latest) if record is not None else None

    @staticmethod
    def _await(change):
        d = Deferred()
        change.waiters.append(d)
        return d

    def _written(self, _, peer, record, change):
        record.committed = change.after
        self._settled(peer, record, change, True)

    def _not_written(self, failure, peer, record, change):
        if record.latest is change:
            self._restore(peer, record.committed)
        self._settled(peer, record, change, False)

    def _settled(self, peer, record, change, written):
        if record.latest is change and self._unsaved.get(peer) is record:
            del self._unsaved[peer]
        for waiter in change.waiters:
            waiter.callback(written)

    def _restore(self, peer, state):
        """Put ``peer`` back as the database has it, after a write that did not happen."""
        if self.peers.get(peer.id) is peer:
            del self.peers[peer.id]
        if state is None:
            peer.guid = b""
            self.log.debug("{ip} peer {peer_id} forgotten: its registration could not be saved",
                           ip=peer.ip, peer_id=untrusted(peer.id), event="peer_not_saved")
            return
        peer.id, peer.guid, peer.uuid, peer.pk, peer.ip = state
        if peer.id not in self.peers:
            self.peers[peer.id] = peer
        if peer.channel is not None:
            peer.channel.registered_id = peer.id
        self.log.debug("{ip} peer {peer_id} back to its saved state: a change could not be "
                       "saved", ip=peer.ip, peer_id=untrusted(peer.id), event="peer_not_saved")

    def change_id(self, old_id, new_id, uuid, proof, challenge, address, now):
        """Change-ID (section 4.2 b1): rename ``old_id`` for the holder of its key.

        ``proof`` signs the change over ``challenge``, the nonce hbbs sent on
        the request's connection (None if it sent none); see wire/ownership.py.
        """
        ip = try_into_v4(address[0])
        if not ID_FORMAT.fullmatch(new_id):
            return Result.INVALID_ID_FORMAT
        if not self.ip_blocker.allow(ip, new_id, now):
            return Result.TOO_FREQUENT
        peer = self.peers.get(old_id)
        if peer is None or not peer.guid or peer.uuid != uuid:
            return self._change_refused(ip, old_id, new_id, "not registered with this uuid")
        if challenge is None or not ownership.verify_change_id(peer.pk, proof, challenge,
                                                               old_id, new_id):
            return self._change_refused(ip, old_id, new_id, "no valid proof of its key")
        if new_id == old_id:
            return Result.OK
        if new_id in self.peers:
            return Result.ID_EXISTS
        if not self._throttle(peer, now):
            return Result.TOO_FREQUENT
        written = self._move(peer, new_id)
        self.log.info("{ip} changed id {old_id} -> {new_id}", ip=ip, old_id=untrusted(old_id),
                      new_id=untrusted(new_id), event="id_changed")
        if written is None:
            return Result.OK
        return written.addCallback(_refused_or(Result.OK))

    def _change_refused(self, ip, old_id, new_id, reason):
        self.log.warn("{ip} change id {old_id} -> {new_id}: {result} ({reason})", ip=ip,
                      old_id=untrusted(old_id), new_id=untrusted(new_id), result="UUID_MISMATCH",
                      reason=reason, event="change_id_refused")
        return Result.UUID_MISMATCH

    def _move(self, peer, new_id):
        """Give ``peer`` the id ``new_id``; the Deferred of its commit, None without a store."""
        before = _snapshot(peer)
        del self.peers[peer.id]
        peer.id = new_id
        self.peers[new_id] = peer
        if peer.channel is not None:
            peer.channel.registered_id = new_id
        if self.store is None or not peer.guid:
            return None
        return self._persist(peer, before, self.store.rename(peer.guid, new_id))

    def release(self, peer_id):
        """Admin: forget ``peer_id`` in memory and in the database, so any machine may take it.

        Returns whether it was registered, or a Deferred of that once the row is gone
        (False if the database refused; then the peer is back).
        """
        peer = self.peers.get(peer_id)
        if peer is None:
            return False
        before = _snapshot(peer)
        del self.peers[peer_id]
        if peer.channel is not None:
            peer.channel.registered_id = None
            peer.channel.close()
            peer.channel = None
        self.log.info("id {peer_id} released by the administrator (was {ip})",
                      peer_id=untrusted(peer_id),
                      ip=peer.ip, event="id_released")
        if self.store is None or not peer.guid:
            return True
        commit = self.store.delete(peer.guid, peer_id)
        peer.guid = b""
        return self._persist(peer, before, commit)

    def rename(self, old_id, new_id):
        """Admin: move ``old_id``'s row (key, uuid, last seen) to ``new_id``.

        None when done, or why not; a Deferred of that while the row is written.
        """
        peer = self.peers.get(old_id)
        if peer is None:
            return f"{old_id} is not registered"
        if not ID_FORMAT.fullmatch(new_id):
            return f"{new_id} is not a valid id (a letter, then 5-15 letters, digits, _ or -)"
        if new_id in self.peers:
            return f"{new_id} is already registered"
        written = self._move(peer, new_id)
        self.log.info("id changed {old_id} -> {new_id} by the administrator",
                      old_id=untrusted(old_id), new_id=untrusted(new_id), event="id_changed")
        if written is None:
            return None
        return written.addCallback(
            lambda ok: None if ok else "the database refused the change (the log says why)")

    def save_all_seen(self, now):
        """Persist last-seen of every peer seen since its last save (used at shutdown)."""
        for peer in self.peers.values():
            if peer.last_reg_time > peer.seen_saved:
                self._save_seen(peer, peer.last_reg_time)

    def prune(self, now):
        for peer_id, peer in list(self.probes.items()):
            if not peer.online(now):
                del self.probes[peer_id]
                if self.peers.get(peer_id) is peer:
                    del self.peers[peer_id]
        self.ip_blocker.prune(now)
        self.ip_changes.prune(now)
