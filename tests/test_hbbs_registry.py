"""The pure rules of hbbs: registration (PROTOCOL.md sections 4.1, 7.1), limits (7.2, 7.3, 7.6),
Change-ID (4.2 b1) and relay rotation (4.9).  Times are plain numbers; no transport."""

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbs.limits import IpBlocker, IpChanges, PunchLog
from rustdesk_twisted.hbbs.registry import ONLINE_WINDOW, PROBE_PREFIX, PeerRegistry, Result
from rustdesk_twisted.hbbs.relays import RelayRotation, parse_relay_list, with_default_port
from rustdesk_twisted.hbbs.store import StoredPeer
from rustdesk_twisted.wire import ownership

T0 = 1_700_000_000.0
A = ("::ffff:203.0.113.10", 40000)
A_OTHER_PORT = ("::ffff:203.0.113.10", 40001)
B = ("::ffff:203.0.113.20", 40000)
UUID = b"u" * 36
PK = b"p" * 32
PK2 = b"q" * 32
ID = "123456789"


class RecordingStore:
    """An in-memory stand-in for PeerStore's write interface; every write commits at once."""

    def __init__(self):
        self.writes = []

    def insert(self, guid, peer_id, uuid, pk, ip):
        self.writes.append(("insert", peer_id, uuid, pk, ip))
        return succeed(None)

    def update(self, guid, peer_id, pk, ip):
        self.writes.append(("update", peer_id, pk, ip))
        return succeed(None)

    def rename(self, guid, new_id):
        self.writes.append(("rename", new_id))
        return succeed(None)

    def delete(self, guid, peer_id):
        self.writes.append(("delete", peer_id))
        return succeed(None)

    def touch(self, guid, last_seen):
        self.writes.append(("touch", last_seen))


def settled(result):
    """The answer of a registry call, once its (already committed) write has fired."""
    if isinstance(result, Deferred):
        answers = []
        result.addCallback(answers.append)
        [result] = answers
    return result


class RegisterPeerTests(SynchronousTestCase):
    def setUp(self):
        self.registry = PeerRegistry(store=RecordingStore())

    def test_unknown_id_requests_pk_and_stores_nothing(self):
        self.assertTrue(self.registry.register_peer(ID, A, T0))
        self.assertIsNone(self.registry.get(ID))

    def test_known_peer_is_refreshed(self):
        self.assertEqual(settled(self.registry.register_pk(ID, UUID, PK, A, T0)), Result.OK)
        self.assertFalse(self.registry.register_peer(ID, A_OTHER_PORT, T0 + 20))
        peer = self.registry.get(ID)
        self.assertEqual((peer.address, peer.last_reg_time), (A_OTHER_PORT, T0 + 20))

    def test_ip_change_requests_pk_without_refresh(self):
        self.registry.register_pk(ID, UUID, PK, A, T0)
        self.assertTrue(self.registry.register_peer(ID, B, T0 + 20))
        peer = self.registry.get(ID)
        self.assertEqual((peer.address, peer.last_reg_time), (A, T0))

    def test_mapped_and_plain_ipv4_are_the_same_address(self):
        self.registry.register_pk(ID, UUID, PK, ("203.0.113.10", 5), T0)
        self.assertFalse(self.registry.register_peer(ID, A, T0 + 1))

    def test_loopback_is_never_an_ip_change(self):
        self.registry.register_pk(ID, UUID, PK, A, T0)
        self.assertFalse(self.registry.register_peer(ID, ("127.0.0.1", 9), T0 + 1))
        self.assertFalse(self.registry.register_peer(ID, ("::1", 9), T0 + 2))

    def test_stored_ip_used_when_address_unknown(self):
        """After a restart the peer comes from the DB with no socket address (rule 3, else)."""
        self.registry.load([StoredPeer(b"g" * 16, ID, UUID, PK, "203.0.113.10", None)])
        self.assertFalse(self.registry.register_peer(ID, A, T0))
        self.assertTrue(self.registry.register_peer("other-id", A, T0))
        registry = PeerRegistry()
        registry.load([StoredPeer(b"g" * 16, ID, UUID, PK, "203.0.113.10", None)])
        self.assertTrue(registry.register_peer(ID, B, T0))

    def test_empty_pk_requests_pk(self):
        self.registry.load([StoredPeer(b"g" * 16, ID, UUID, b"", "203.0.113.10", None)])
        self.assertTrue(self.registry.register_peer(ID, A, T0))

    def test_ip_change_logged(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.registry.register_pk(ID, UUID, PK, A, T0)
        self.registry.register_peer(ID, B, T0 + 1)
        [event] = [e for e in logged if e.get("event") == "ip_change"]
        self.assertEqual((event["peer_id"], event["old"], event["new"]),
                         (ID, "203.0.113.10", "203.0.113.20"))

    def test_online_window(self):
        self.registry.register_pk(ID, UUID, PK, A, T0)
        self.assertTrue(self.registry.is_online(ID, T0 + ONLINE_WINDOW - 0.001))
        self.assertFalse(self.registry.is_online(ID, T0 + ONLINE_WINDOW))
        self.assertFalse(self.registry.is_online("nobody", T0))
        self.assertEqual(self.registry.online_count(T0 + 1), 1)

    def test_live_channel_means_online(self):
        """A TCP/WebSocket registration counts as online while it is attached (section 4.2 b2)."""
        self.registry.register_pk(ID, UUID, PK, A, T0)
        peer = self.registry.get(ID)
        peer.channel = object()
        self.assertTrue(self.registry.is_online(ID, T0 + 3600))
        self.assertEqual(self.registry.online_count(T0 + 3600), 1)
        peer.channel = None
        self.assertFalse(self.registry.is_online(ID, T0 + 3600))

    def test_last_seen_persisted_at_most_every_five_minutes(self):
        store = self.registry.store
        self.registry.register_pk(ID, UUID, PK, A, T0)
        self.registry.register_peer(ID, A, T0 + 15)
        self.registry.register_peer(ID, A, T0 + 30)
        self.assertEqual([w for w in store.writes if w[0] == "touch"], [("touch", T0 + 15)])
        self.registry.register_peer(ID, A, T0 + 315)
        self.assertEqual([w for w in store.writes if w[0] == "touch"],
                         [("touch", T0 + 15), ("touch", T0 + 315)])


class RegisterPkTests(SynchronousTestCase):
    """Section 7.1, rule by rule."""

    def setUp(self):
        self.store = RecordingStore()
        self.registry = PeerRegistry(store=self.store)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def register(self, peer_id=ID, uuid=UUID, pk=PK, address=A, now=T0):
        return settled(self.registry.register_pk(peer_id, uuid, pk, address, now))

    def test_empty_uuid_or_pk_is_ignored(self):
        self.assertIsNone(self.register(uuid=b""))
        self.assertIsNone(self.register(pk=b""))
        self.assertIsNone(self.registry.get(ID))
        self.assertEqual(self.registry.ip_blocker.entries, {})

    def test_short_id_is_uuid_mismatch(self):
        self.assertEqual(self.register(peer_id="12345"), Result.UUID_MISMATCH)
        # Byte length counts: six bytes in three characters is long enough.
        self.assertEqual(self.register(peer_id="ééé"), Result.OK)

    def test_new_peer(self):
        self.assertEqual(self.register(), Result.OK)
        peer = self.registry.get(ID)
        self.assertEqual((peer.uuid, peer.pk, peer.ip, peer.address, peer.last_reg_time),
                         (UUID, PK, "203.0.113.10", A, T0))
        self.assertEqual(len(peer.guid), 16)
        self.assertEqual(self.store.writes, [("insert", ID, UUID, PK, "203.0.113.10")])

    def test_unchanged_registration_writes_nothing(self):
        self.register()
        self.assertEqual(self.register(address=A_OTHER_PORT, now=T0 + 10), Result.OK)
        self.assertEqual(len(self.store.writes), 1)
        self.assertEqual(self.registry.get(ID).last_reg_time, T0 + 10)

    def test_another_machine_is_uuid_mismatch(self):
        self.register()
        self.assertEqual(self.register(uuid=b"v" * 36, now=T0 + 10), Result.UUID_MISMATCH)
        self.assertEqual(self.registry.get(ID).uuid, UUID)
        [event] = [e for e in self.logged if e.get("event") == "uuid_mismatch"]
        self.assertEqual(event["log_level"], LogLevel.warn)

    def test_new_ip_and_new_key_is_uuid_mismatch(self):
        self.register()
        self.assertEqual(self.register(pk=PK2, address=B, now=T0 + 10), Result.UUID_MISMATCH)
        self.assertEqual(self.registry.get(ID).pk, PK)

    def test_new_ip_alone(self):
        self.register()
        self.assertEqual(self.register(address=B, now=T0 + 10), Result.OK)
        peer = self.registry.get(ID)
        self.assertEqual((peer.ip, peer.address), ("203.0.113.20", B))
        self.assertEqual(self.store.writes[-1], ("update", ID, PK, "203.0.113.20"))
        self.assertEqual(self.registry.ip_changes.entries[ID][1], {"203.0.113.20": 1})

    def test_new_key_alone(self):
        self.register()
        self.assertEqual(self.register(pk=PK2, now=T0 + 10), Result.OK)
        self.assertEqual(self.registry.get(ID).pk, PK2)
        self.assertEqual(self.store.writes[-1], ("update", ID, PK2, "203.0.113.10"))

    def test_new_key_for_a_uuid_that_is_the_key(self):
        """A mobile-style peer (uuid = pk, section 4.1): anyone learns its pk from a
        PunchHoleResponse, so a new key for that uuid is never taken, even from its own IP."""
        self.register(uuid=PK)
        self.assertEqual(self.register(uuid=PK, pk=PK2, now=T0 + 10), Result.UUID_MISMATCH)
        self.assertEqual(self.register(uuid=PK, address=B, now=T0 + 20), Result.OK)
        self.assertEqual(self.register(uuid=PK, pk=PK2, address=B, now=T0 + 60),
                         Result.UUID_MISMATCH)
        self.assertEqual(self.registry.get(ID).pk, PK)
        self.assertNotIn(("update", ID, PK2, "203.0.113.20"), self.store.writes)

    def test_new_key_while_online_at_another_address(self):
        """Moving the id (same uuid and key) then changing the key: refused while the
        address it moved from is in its online window or holds the registration channel."""
        self.register(address=B)
        self.assertEqual(self.register(now=T0 + 10), Result.OK)
        self.assertEqual(self.register(pk=PK2, now=T0 + 20), Result.TOO_FREQUENT)
        self.assertEqual(self.registry.get(ID).pk, PK)
        [event] = [e for e in self.logged if e.get("event") == "key_change_refused"]
        self.assertEqual((event["ip"], event["log_level"]), ("203.0.113.10", LogLevel.warn))
        self.assertEqual(self.register(pk=PK2, now=T0 + 10 + ONLINE_WINDOW), Result.OK)
        self.assertEqual(self.registry.get(ID).pk, PK2)

    def test_new_key_while_another_address_holds_the_channel(self):
        self.register(address=B)
        self.registry.get(ID).channel = type("Channel", (), {"key": B})()
        self.assertEqual(self.register(now=T0 + 100), Result.OK)
        self.assertEqual(self.register(pk=PK2, now=T0 + 200), Result.TOO_FREQUENT)
        self.assertEqual(self.registry.get(ID).pk, PK)

    def test_move_from_an_offline_address_keeps_the_official_rule(self):
        self.register(address=B)
        self.assertEqual(self.register(now=T0 + ONLINE_WINDOW), Result.OK)
        self.assertEqual(self.register(pk=PK2, now=T0 + ONLINE_WINDOW + 10), Result.OK)

    def test_burst_of_three_then_too_frequent_for_7_seconds(self):
        for i in range(3):
            self.assertEqual(self.register(now=T0 + i), Result.OK)
        self.assertEqual(self.register(now=T0 + 3), Result.TOO_FREQUENT)
        # Refusals leave the state alone: 7 s after the last accepted one (T0+2).
        self.assertEqual(self.register(now=T0 + 8.99), Result.TOO_FREQUENT)
        self.assertEqual(self.register(now=T0 + 9), Result.OK)
        self.assertEqual(self.register(now=T0 + 10), Result.OK)

    def test_too_frequent_after_uuid_rules(self):
        """A throttled peer still gets UUID_MISMATCH for a foreign uuid (rule 5 before rule 6)."""
        for i in range(3):
            self.register(now=T0 + i)
        self.assertEqual(self.register(uuid=b"v" * 36, now=T0 + 3), Result.UUID_MISMATCH)

    def test_ip_blocker_applies_before_lookup(self):
        registry = PeerRegistry(ip_blocker=IpBlocker(requests_per_minute=1))
        for i in range(3):
            self.assertEqual(settled(registry.register_pk(f"peer-{i}", UUID, PK, A, T0)), Result.OK)
        self.assertEqual(settled(registry.register_pk("peer-x", UUID, PK, A, T0)), Result.TOO_FREQUENT)
        self.assertIsNone(registry.get("peer-x"))

    def test_table_bound(self):
        registry = PeerRegistry(max_peers=1)
        registry.register_pk(ID, UUID, PK, A, T0)
        self.assertEqual(settled(registry.register_pk("another", UUID, PK, B, T0)), Result.SERVER_ERROR)
        self.assertEqual(settled(registry.register_pk(ID, UUID, PK, A, T0 + 1)), Result.OK)

    def test_loaded_peer_keeps_its_guid(self):
        self.registry.load([StoredPeer(b"g" * 16, ID, UUID, PK, "::ffff:203.0.113.10", T0 - 5)])
        peer = self.registry.get(ID)
        self.assertEqual(peer.ip, "203.0.113.10")
        self.assertEqual(peer.last_seen, T0 - 5)
        self.assertFalse(peer.online(T0))
        self.assertEqual(self.register(), Result.OK)
        self.assertEqual(self.store.writes, [])
        self.assertTrue(self.registry.is_online(ID, T0))


KEY = SigningKey(bytes(range(32)))
KEY_PK = bytes(KEY.verify_key)
CHALLENGE = bytes(range(100, 132))


class ChangeIdTests(SynchronousTestCase):
    """Change-ID needs the uuid and a signature by the id's key over the connection's challenge."""

    def setUp(self):
        self.store = RecordingStore()
        self.registry = PeerRegistry(store=self.store)
        self.registry.register_pk(ID, UUID, KEY_PK, A, T0)
        self.registry.register_pk("taken-id", b"w" * 36, PK2, B, T0)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def change(self, new_id, old_id=ID, uuid=UUID, now=T0 + 10, key=KEY, challenge=CHALLENGE,
               signed=None):
        proof = ownership.sign_change_id(key, CHALLENGE, old_id, signed or new_id)
        return settled(self.registry.change_id(old_id, new_id, uuid, proof, challenge, A, now))

    def test_rename(self):
        self.assertEqual(self.change("alice-pc"), Result.OK)
        self.assertIsNone(self.registry.get(ID))
        peer = self.registry.get("alice-pc")
        self.assertEqual((peer.id, peer.uuid, peer.pk), ("alice-pc", UUID, KEY_PK))
        self.assertEqual(self.store.writes[-1], ("rename", "alice-pc"))

    def test_format(self):
        for bad in ("abcde", "a" * 17, "1abcdef", "-abcdef", "abc def", "abc.def", ""):
            self.assertEqual(self.change(bad), Result.INVALID_ID_FORMAT, bad)
        for good in ("abcdef", "a" * 16, "Z_1-x9"):
            self.registry = PeerRegistry()
            self.registry.register_pk(ID, UUID, KEY_PK, A, T0)
            self.assertEqual(self.change(good), Result.OK, good)

    def test_exists(self):
        self.assertEqual(self.change("taken-id"), Result.ID_EXISTS)
        self.assertIsNotNone(self.registry.get(ID))

    def test_wrong_uuid_or_unknown_old_id(self):
        self.assertEqual(self.change("alice-pc", uuid=b"x" * 36), Result.UUID_MISMATCH)
        self.assertEqual(self.change("alice-pc", old_id="nobody-here"), Result.UUID_MISMATCH)

    def test_uuid_and_pk_without_the_key_are_refused(self):
        """What anyone knows of a mobile-style peer: its uuid and pk, not its key."""
        self.registry.register_pk("mobile-1", KEY_PK, KEY_PK, B, T0)
        for proof in (KEY_PK * 2, b""):
            self.assertEqual(settled(self.registry.change_id(
                "mobile-1", "stolen", KEY_PK, proof, CHALLENGE, A, T0 + 10)), Result.UUID_MISMATCH)
        self.assertEqual(self.change("stolen", old_id="mobile-1", uuid=KEY_PK,
                                     key=SigningKey(b"\x07" * 32)), Result.UUID_MISMATCH)
        self.assertEqual(self.registry.get("mobile-1").pk, KEY_PK)
        self.assertIsNone(self.registry.get("stolen"))
        refused = [e for e in self.logged if e.get("event") == "change_id_refused"]
        self.assertEqual([(e["ip"], e["log_level"]) for e in refused],
                         [("203.0.113.10", LogLevel.warn)] * 3)
        self.assertEqual(self.change("new-mobile", old_id="mobile-1", uuid=KEY_PK), Result.OK)

    def test_proof_fits_one_challenge_and_one_change(self):
        self.assertEqual(self.change("alice-pc", challenge=bytes(32)), Result.UUID_MISMATCH)
        self.assertEqual(self.change("alice-pc", challenge=None), Result.UUID_MISMATCH)
        self.assertEqual(self.change("mallory", signed="alice-pc"), Result.UUID_MISMATCH)
        self.assertIsNotNone(self.registry.get(ID))

    def test_same_id(self):
        self.assertEqual(self.change("abcdefg", old_id="abcdefg"), Result.UUID_MISMATCH)
        self.change("abcdefg")
        self.assertEqual(self.change("abcdefg", old_id="abcdefg", now=T0 + 20), Result.OK)

    def test_throttled_with_registrations(self):
        self.registry.register_pk(ID, UUID, KEY_PK, A, T0 + 1)
        self.registry.register_pk(ID, UUID, KEY_PK, A, T0 + 2)
        self.assertEqual(self.change("alice-pc", now=T0 + 3), Result.TOO_FREQUENT)


class IpBlockerTests(SynchronousTestCase):
    """Section 7.2."""

    def test_32_allowed_33rd_blocked_until_61_seconds(self):
        blocker = IpBlocker()
        results = [blocker.allow("192.0.2.1", f"id{i}", T0 + i) for i in range(33)]
        self.assertEqual(results, [True] * 32 + [False])
        self.assertFalse(blocker.allow("192.0.2.1", "id-x", T0 + 31 + 60.99))
        self.assertTrue(blocker.allow("192.0.2.1", "id-x", T0 + 31 + 61))
        self.assertTrue(blocker.allow("192.0.2.2", "id0", T0 + 32))
        self.assertEqual(blocker.blocked, 2)

    def test_gaps_over_a_minute_reset_the_count(self):
        blocker = IpBlocker(requests_per_minute=2)
        now = T0
        for _ in range(10):
            self.assertTrue(blocker.allow("192.0.2.1", "id", now))
            now += 61

    def test_distinct_ids_per_day(self):
        blocker = IpBlocker(requests_per_minute=10_000, ids_per_day=2)
        self.assertTrue(blocker.allow("192.0.2.1", "first", T0))  # creates the entry only
        for name in ("b", "c", "d"):
            self.assertTrue(blocker.allow("192.0.2.1", name, T0 + 1))
        self.assertFalse(blocker.allow("192.0.2.1", "e", T0 + 2))
        self.assertTrue(blocker.allow("192.0.2.1", "b", T0 + 3))
        # A day after the last new id, the set starts over.
        self.assertTrue(blocker.allow("192.0.2.1", "e", T0 + 1 + 86401))

    def test_default_is_301_distinct_ids(self):
        blocker = IpBlocker(requests_per_minute=10_000)
        allowed = [blocker.allow("192.0.2.1", f"id{i}", T0) for i in range(305)]
        self.assertEqual(allowed, [True] * 302 + [False] * 3)

    def test_exempt_networks(self):
        blocker = IpBlocker(requests_per_minute=0, exempt=["10.0.0.0/8"])
        for _ in range(5):
            self.assertTrue(blocker.allow("10.1.2.3", "id", T0))
        blocker.allow("192.0.2.1", "id", T0)
        blocker.allow("192.0.2.1", "id", T0)
        self.assertFalse(blocker.allow("192.0.2.1", "id", T0))

    def test_prune_and_bound(self):
        blocker = IpBlocker(max_entries=2)
        blocker.allow("192.0.2.1", "a", T0)
        blocker.allow("192.0.2.2", "a", T0)
        blocker.allow("192.0.2.3", "a", T0 + 61)
        self.assertEqual(set(blocker.entries), {"192.0.2.3"})
        self.assertEqual(blocker.prune(T0 + 61 + 86401), 1)
        self.assertEqual(blocker.entries, {})


class IpChangesTests(SynchronousTestCase):
    def test_window_and_prune(self):
        changes = IpChanges()
        changes.record("p", "1.1.1.1", T0)
        changes.record("p", "2.2.2.2", T0 + 100)
        changes.record("p", "2.2.2.2", T0 + 180)
        self.assertEqual(changes.entries["p"], (T0, {"1.1.1.1": 1, "2.2.2.2": 2}))
        changes.record("p", "3.3.3.3", T0 + 181)
        self.assertEqual(changes.entries["p"], (T0 + 181, {"3.3.3.3": 1}))
        changes.record("q", "1.1.1.1", T0)
        changes.record("q", "4.4.4.4", T0)
        changes.prune(T0 + 200)
        self.assertEqual(set(changes.entries), {"q"})
        changes.prune(T0 + 360)
        self.assertEqual(changes.entries, {})


class PunchLogTests(SynchronousTestCase):
    def test_deduplicated_for_60_seconds(self):
        log = PunchLog()
        self.assertTrue(log.record(T0, "1.1.1.1", "2.2.2.2", ID))
        self.assertFalse(log.record(T0 + 59, "1.1.1.1", "2.2.2.2", ID))
        self.assertTrue(log.record(T0 + 59, "1.1.1.9", "2.2.2.2", ID))
        self.assertTrue(log.record(T0 + 60, "1.1.1.1", "2.2.2.2", ID))
        self.assertEqual(len(log.entries), 3)

    def test_scan_stops_after_30_entries(self):
        log = PunchLog()
        log.record(T0, "1.1.1.1", "2.2.2.2", ID)
        for i in range(30):
            log.record(T0, f"10.0.0.{i}", "2.2.2.2", ID)
        self.assertTrue(log.record(T0 + 1, "1.1.1.1", "2.2.2.2", ID))

    def test_bounded(self):
        log = PunchLog(max_entries=3)
        for i in range(5):
            log.record(T0, f"10.0.0.{i}", "2.2.2.2", ID)
        self.assertEqual([e[1] for e in log.entries], ["10.0.0.2", "10.0.0.3", "10.0.0.4"])


class RelayRotationTests(SynchronousTestCase):
    def test_rotation(self):
        self.assertEqual(RelayRotation().next(), "")
        single = RelayRotation(["r1:21117"])
        self.assertEqual([single.next() for _ in range(3)], ["r1:21117"] * 3)
        many = RelayRotation(["r1", "r2", "r3"])
        self.assertEqual([many.next() for _ in range(4)], ["r1", "r2", "r3", "r1"])

    def test_parsing(self):
        self.assertEqual(parse_relay_list("a:1,b, c,,"), ["a:1", "b", " c"])
        self.assertEqual(parse_relay_list(None), [])
        self.assertEqual(with_default_port("relay"), "relay:21117")
        self.assertEqual(with_default_port("relay:1"), "relay:1")
        self.assertEqual(with_default_port("[2001:db8::1]"), "[2001:db8::1]:21117")
        self.assertEqual(with_default_port("[2001:db8::1]:5"), "[2001:db8::1]:5")


class ProbeTests(SynchronousTestCase):
    """rustdesk-doctor's peers (ids starting PROBE_PREFIX) work but never reach the store."""

    def setUp(self):
        self.store = RecordingStore()
        self.registry = PeerRegistry(store=self.store)
        self.probe = PROBE_PREFIX + "doctor000001"

    def test_registered_in_memory_only(self):
        address = ("203.0.113.10", 5000)
        self.assertEqual(settled(self.registry.register_pk(self.probe, UUID, PK, address, T0)),
                         Result.OK)
        self.assertEqual(settled(self.registry.register_pk(self.probe, UUID, PK2, address, T0 + 7)),
                         Result.OK)
        self.assertFalse(self.registry.register_peer(self.probe, address, T0 + 400))
        self.registry.save_all_seen(T0 + 401)
        self.assertTrue(self.registry.is_online(self.probe, T0 + 401))
        self.assertEqual(self.store.writes, [])

    def test_forgotten_once_offline(self):
        self.registry.register_pk(self.probe, UUID, PK, ("203.0.113.10", 5000), T0)
        settled(self.registry.register_pk(ID, UUID, PK, ("203.0.113.11", 5000), T0))
        self.registry.prune(T0 + 10)
        self.assertIsNotNone(self.registry.get(self.probe))
        self.registry.prune(T0 + 60)
        self.assertIsNone(self.registry.get(self.probe))
        self.assertIsNotNone(self.registry.get(ID))
        self.assertEqual(self.registry.probes, {})
