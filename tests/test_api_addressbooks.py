"""Address books over HTTP (API.md 1.3, 1.4), with the official client's exact requests.

The client POSTs empty bodies (Content-Length: 0) to personal, settings,
shared/profiles, peers and tags; DELETEs carry JSON arrays; action endpoints
succeed with an empty 200.
"""

import gzip
import json

from sqlalchemy import insert, select, update
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.addressbooks import (
    BookLimits,
    create_shared_book,
    effective_rule,
    empty_recycle_bin,
    plan_legacy_push,
    recycle_bin,
    share_book,
)
from rustdesk_twisted.api.tap import ApiConfig, Options
from rustdesk_twisted.config import ConfigError, Settings

from .apisupport import ApiHarness

JSON = {"content-type": "application/json"}


class Books:
    """An ApiHarness with users and the client's address-book calls."""

    def __init__(self, testcase, **options):
        self.testcase = testcase
        self.api = ApiHarness(testcase, **options)
        self.ids = {}
        self.tokens = {}

    def user(self, name, **fields):
        """A user and a session token of theirs (no password: login is not under test here)."""
        now = self.api.clock.seconds()
        self.ids[name] = self.api.db.run_now(lambda c: c.execute(insert(tables.users).values(
            name=name, created_at=now, updated_at=now, **fields)).inserted_primary_key[0])
        issued = self.api.app.accounts.issue_token(self.ids[name], now, {}, "192.0.2.10")
        self.tokens[name] = self.testcase.successResultOf(issued)
        return self.tokens[name]

    def empty_post(self, path, who):
        return self.api.request("POST", path, token=self.tokens[who], raw=b"", headers=JSON)

    def call(self, method, path, who, body):
        return self.api.request(method, path, body, token=self.tokens[who])

    def personal(self, who):
        reply = self.empty_post("/api/ab/personal", who)
        assert reply.status == 200, reply.body
        return reply.json()["guid"]

    def shared(self, owner, name, password=""):
        now = self.api.clock.seconds()
        return self.api.db.run_now(create_shared_book, self.ids[owner], name, now,
                                   password=password)

    def share(self, guid, rule, **target):
        self.api.db.run_now(share_book, guid, rule, **target)

    def peers(self, guid, who, page=1, size=100):
        return self.empty_post(f"/api/ab/peers?current={page}&pageSize={size}&ab={guid}", who)

    def entries(self, guid, who):
        reply = self.peers(guid, who)
        assert reply.status == 200, reply.body
        return {peer["id"]: peer for peer in reply.json()["data"]}

    def tags(self, guid, who):
        return self.empty_post(f"/api/ab/tags/{guid}", who)

    def add(self, guid, who, **peer):
        return self.call("POST", f"/api/ab/peer/add/{guid}", who, peer)

    def edit(self, guid, who, **fields):
        return self.call("PUT", f"/api/ab/peer/update/{guid}", who, fields)

    def remove(self, guid, who, ids):
        return self.call("DELETE", f"/api/ab/peer/{guid}", who, ids)

    def add_tag(self, guid, who, name, color=0xFF00FF00):
        return self.call("POST", f"/api/ab/tag/add/{guid}", who, {"name": name, "color": color})

    def later(self):
        self.api.clock.advance(1)


class AliceCase(unittest.TestCase):
    """Alice and her personal book."""

    def setUp(self):
        self.books = Books(self)
        self.books.user("alice")
        self.guid = self.books.personal("alice")


class PersonalBookTests(AliceCase):

    def test_personal_book_is_made_once_and_settings_say_unlimited(self):
        self.assertEqual(self.books.personal("alice"), self.guid)
        reply = self.books.empty_post("/api/ab/settings", "alice")
        self.assertEqual((reply.status, reply.json()), (200, {"max_peer_one_ab": 0}))
        reply = self.books.tags(self.guid, "alice")
        self.assertEqual((reply.status, reply.json()), (200, []))
        self.assertEqual(self.books.peers(self.guid, "alice").json(), {"total": 0, "data": []})

    def test_every_peer_field_with_the_clients_types(self):
        books = self.books
        self.assertEqual(books.add_tag(self.guid, "alice", "office", 0xFF2196F3).status, 200)
        reply = books.add(self.guid, "alice", id="123456789", alias="Front desk",
                          tags=["office", "unknown"], password="secret", hash="h4sh",
                          username="bob", hostname="desk", platform="Windows", note="n",
                          forceAlwaysRelay="true", rdpPort="3389", rdpUsername="admin",
                          loginName="carol", device_group_name="ignored", same_server=None)
        self.assertEqual((reply.status, reply.body), (200, b""))
        now = books.api.clock.seconds()
        books.api.db.run_now(lambda c: c.execute(insert(tables.device_groups).values(
            id=7, name="Lab", note="", created_at=now)))
        books.api.db.run_now(lambda c: c.execute(insert(tables.devices).values(
            rustdesk_id="123456789", device_group_id=7, created_at=now)))
        books.add(self.guid, "alice", id="987654321")
        self.assertEqual(books.entries(self.guid, "alice"), {
            "123456789": {
                "id": "123456789", "hash": "h4sh", "username": "bob", "hostname": "desk",
                "platform": "Windows", "alias": "Front desk", "tags": ["office"], "note": "n",
                "forceAlwaysRelay": "true", "rdpPort": "3389", "rdpUsername": "admin",
                "loginName": "carol", "device_group_name": "Lab", "same_server": True},
            "987654321": {
                "id": "987654321", "hash": "", "username": "", "hostname": "", "platform": "",
                "alias": "", "tags": [], "note": "", "forceAlwaysRelay": "false", "rdpPort": "",
                "rdpUsername": "", "loginName": "", "device_group_name": "",
                "same_server": False}})
        self.assertEqual(books.tags(self.guid, "alice").json(),
                         [{"name": "office", "color": 0xFF2196F3}])

    def test_pages_of_entries(self):
        for n in range(25):
            self.books.add(self.guid, "alice", id=str(1000 + n))
        seen = []
        for page in (1, 2, 3):
            body = self.books.peers(self.guid, "alice", page, 10).json()
            self.assertEqual(body["total"], 25)
            seen += [peer["id"] for peer in body["data"]]
        self.assertEqual(seen, [str(1000 + n) for n in range(25)])
        self.assertEqual(self.books.peers(self.guid, "alice", 4, 10).json()["data"], [])

    def test_partial_update_touches_only_the_given_fields(self):
        books = self.books
        books.add_tag(self.guid, "alice", "a")
        books.add(self.guid, "alice", id="1", alias="one", note="keep", tags=["a"])
        self.assertEqual(books.edit(self.guid, "alice", id="1", hash="new").status, 200)
        entry = books.entries(self.guid, "alice")["1"]
        self.assertEqual((entry["alias"], entry["note"], entry["tags"], entry["hash"]),
                         ("one", "keep", ["a"], "new"))
        reply = books.edit(self.guid, "alice", id="2", alias="x")
        self.assertEqual((reply.status, reply.json()), (404, {"error": "Peer not found"}))

    def test_two_clients_editing_at_once_lose_nothing(self):
        """Each client sends only what it changed, computed from its own stale view."""
        books = self.books
        books.user("alice-laptop")
        books.api.db.run_now(lambda c: c.execute(update(tables.tokens).values(
            user_id=books.ids["alice"])))
        for peer_id in ("1", "2"):
            books.add(self.guid, "alice", id=peer_id)
        version = self._version()
        books.edit(self.guid, "alice", id="1", alias="from desktop")
        books.edit(self.guid, "alice-laptop", id="2", alias="from laptop")
        books.edit(self.guid, "alice-laptop", id="1", note="laptop note")
        books.add(self.guid, "alice", id="3")
        books.add(self.guid, "alice-laptop", id="4")
        entries = books.entries(self.guid, "alice")
        self.assertEqual(sorted(entries), ["1", "2", "3", "4"])
        self.assertEqual((entries["1"]["alias"], entries["1"]["note"]),
                         ("from desktop", "laptop note"))
        self.assertEqual(entries["2"]["alias"], "from laptop")
        self.assertEqual(self._version(), version + 5)

    def _version(self):
        return self.books.api.db.run_now(lambda c: c.execute(select(
            tables.address_books.c.version)).scalar_one())

    def test_renaming_and_deleting_a_tag_reach_every_entry(self):
        books = self.books
        for name in ("work", "home"):
            books.add_tag(self.guid, "alice", name)
        books.add(self.guid, "alice", id="1", tags=["work", "home"])
        books.add(self.guid, "alice", id="2", tags=["work"])
        books.add(self.guid, "alice", id="3", tags=["home"])
        books.remove(self.guid, "alice", ["3"])
        reply = books.call("PUT", f"/api/ab/tag/rename/{self.guid}", "alice",
                           {"old": "work", "new": "office"})
        self.assertEqual((reply.status, reply.body), (200, b""))
        reply = books.call("PUT", f"/api/ab/tag/rename/{self.guid}", "alice",
                           {"old": "office", "new": "home"})
        self.assertEqual((reply.status, reply.json()), (400, {"error": "Tag home already exists"}))
        reply = books.call("PUT", f"/api/ab/tag/update/{self.guid}", "alice",
                           {"name": "office", "color": 0xFFFF0000})
        self.assertEqual(reply.status, 200)
        self.assertEqual(books.tags(self.guid, "alice").json(),
                         [{"name": "office", "color": 0xFFFF0000},
                          {"name": "home", "color": 0xFF00FF00}])
        entries = books.entries(self.guid, "alice")
        self.assertEqual((entries["1"]["tags"], entries["2"]["tags"]), (["office", "home"],
                                                                        ["office"]))
        reply = books.call("DELETE", f"/api/ab/tag/{self.guid}", "alice", ["home"])
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertEqual(books.tags(self.guid, "alice").json(),
                         [{"name": "office", "color": 0xFFFF0000}])
        self.assertEqual(books.entries(self.guid, "alice")["1"]["tags"], ["office"])
        binned = books.api.db.run_now(recycle_bin, self.guid)
        self.assertEqual(binned[0]["tags"], [])
        for path, body in (("rename", {"old": "nope", "new": "x"}),
                           ("update", {"name": "nope", "color": 1})):
            reply = books.call("PUT", f"/api/ab/tag/{path}/{self.guid}", "alice", body)
            self.assertEqual((reply.status, reply.json()), (404, {"error": "Tag not found"}))


class SharedBookTests(unittest.TestCase):
    def setUp(self):
        books = self.books = Books(self)
        now = books.api.clock.seconds()
        books.api.db.run_now(lambda c: c.execute(insert(tables.user_groups).values(
            id=5, name="support", note="", created_at=now)))
        books.user("owner")
        books.user("member", group_id=5)
        books.user("stranger")
        self.team = books.shared("owner", "Team", password="book-pass")

    def profiles(self, who, page=1, size=100):
        return self.books.empty_post(f"/api/ab/shared/profiles?current={page}&pageSize={size}",
                                     who)

    def test_profiles_list_owned_and_shared_books_with_the_callers_rule(self):
        books = self.books
        books.personal("owner")
        other = books.shared("stranger", "Other")
        books.share(other, 1, group_id=5)
        books.shared("stranger", "Private")
        self.assertEqual(self.profiles("owner").json(), {"total": 1, "data": [
            {"guid": self.team, "name": "Team", "owner": "owner", "note": "", "rule": 3,
             "info": {"password": "book-pass"}}]})
        body = self.profiles("member").json()
        self.assertEqual((body["total"], [(p["name"], p["owner"], p["rule"])
                                          for p in body["data"]]), (1, [("Other", "stranger", 1)]))
        books.share(self.team, 2)
        names = [[p["name"] for p in self.profiles("member", page, 1).json()["data"]]
                 for page in (1, 2)]
        self.assertEqual(names, [["Other"], ["Team"]])

    def test_shared_books_keep_password_and_drop_hash(self):
        books = self.books
        books.add(self.team, "owner", id="1", hash="h", password="p")
        entry = books.entries(self.team, "owner")["1"]
        self.assertEqual(entry["password"], "p")
        self.assertNotIn("hash", entry)
        books.edit(self.team, "owner", id="1", hash="h2", password="p2")
        self.assertEqual(books.entries(self.team, "owner")["1"]["password"], "p2")
        stored = books.api.db.run_now(lambda c: c.execute(select(tables.ab_peers.c.hash))
                                      .scalar_one())
        self.assertEqual(stored, "")

    def test_unknown_book_is_404_and_other_peoples_books_403(self):
        books = self.books
        reply = books.peers("no-such-guid", "member")
        self.assertEqual((reply.status, reply.json()), (404, {"error": "Address book not found"}))
        personal = books.personal("owner")
        for guid in (personal, self.team):
            reply = books.peers(guid, "stranger")
            self.assertEqual(reply.status, 403)
            self.assertEqual(reply.json(), {"error": "You have no access to this address book"})
            self.assertEqual(books.add(guid, "stranger", id="1").status, 403)
            self.assertEqual(books.tags(guid, "stranger").status, 403)

    def test_read_rule_reads_but_cannot_write(self):
        books = self.books
        books.add_tag(self.team, "owner", "t")
        books.add(self.team, "owner", id="1")
        books.share(self.team, 1, user_id=books.ids["member"])
        self.assertEqual(list(books.entries(self.team, "member")), ["1"])
        self.assertEqual(books.tags(self.team, "member").status, 200)
        g = self.team
        for method, path, body in (
                ("POST", f"/api/ab/peer/add/{g}", {"id": "2"}),
                ("PUT", f"/api/ab/peer/update/{g}", {"id": "1", "alias": "x"}),
                ("DELETE", f"/api/ab/peer/{g}", ["1"]),
                ("POST", f"/api/ab/tag/add/{g}", {"name": "u", "color": 1}),
                ("PUT", f"/api/ab/tag/rename/{g}", {"old": "t", "new": "u"}),
                ("PUT", f"/api/ab/tag/update/{g}", {"name": "t", "color": 1}),
                ("DELETE", f"/api/ab/tag/{g}", ["t"])):
            reply = books.call(method, path, "member", body)
            self.assertEqual((reply.status, reply.json()),
                             (403, {"error": "This address book is read-only for you"}), path)
        self.assertEqual(list(books.entries(self.team, "owner")), ["1"])

    def test_group_and_everyone_rules(self):
        books = self.books
        books.share(self.team, 2, group_id=5)
        self.assertEqual(books.add(self.team, "member", id="1").status, 200)
        self.assertEqual(books.peers(self.team, "stranger").status, 403)
        books.share(self.team, 1)
        self.assertEqual(books.peers(self.team, "stranger").status, 200)
        self.assertEqual(books.add(self.team, "stranger", id="2").status, 403)

    def test_user_rule_beats_group_rule_beats_everyone(self):
        books = self.books
        books.share(self.team, 3)
        books.share(self.team, 1, group_id=5)
        self.assertEqual(books.add(self.team, "member", id="1").status, 403)
        self.assertEqual(books.add(self.team, "stranger", id="1").status, 200)
        books.share(self.team, 2, user_id=books.ids["member"])
        self.assertEqual(books.add(self.team, "member", id="2").status, 200)
        books.share(self.team, 1, user_id=books.ids["member"])
        self.assertEqual(self.profiles("member").json()["data"][0]["rule"], 1)

    def test_console_names_are_unique_and_not_the_clients_own(self):
        for name in ("Team", "My address book", "Legacy address book", "", "x" * 65):
            self.assertRaises(ValueError, self.books.shared, "member", name)
        self.assertRaises(ValueError, self.books.share, self.team, 4)
        self.assertRaises(ValueError, self.books.share, self.books.personal("owner"), 1)


class RuleTests(unittest.TestCase):
    class Rule:
        def __init__(self, rule, user_id=None, group_id=None):
            self.rule, self.user_id, self.group_id = rule, user_id, group_id

    def test_priority_and_ownership(self):
        user = {"id": 1}
        R = self.Rule
        self.assertEqual(effective_rule(1, True, user, ()), 3)
        self.assertEqual(effective_rule(2, True, user, [R(3, user_id=1)]), 0)
        self.assertEqual(effective_rule(2, False, user, [R(3), R(1, group_id=4)]), 1)
        self.assertEqual(effective_rule(2, False, user, [R(3), R(1, group_id=4),
                                                         R(2, user_id=1)]), 2)
        self.assertEqual(effective_rule(2, False, user, [R(1), R(2)]), 2)
        self.assertEqual(effective_rule(2, False, user, [R(9, user_id=1), R(1)]), 1)
        self.assertEqual(effective_rule(2, False, user, []), 0)


class RecycleBinTests(unittest.TestCase):
    def setUp(self):
        self.books = Books(self, ab_limits=BookLimits(max_peers=3))
        self.books.user("alice")
        self.guid = self.books.personal("alice")

    def test_deleted_entries_wait_in_the_bin_and_come_back_when_added_again(self):
        books = self.books
        books.add(self.guid, "alice", id="1", alias="old", note="kept")
        books.add(self.guid, "alice", id="2")
        books.later()
        reply = books.remove(self.guid, "alice", ["1", "unknown"])
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertEqual(list(books.entries(self.guid, "alice")), ["2"])
        self.assertEqual([(e["id"], e["alias"], e["deleted_at"])
                          for e in books.api.db.run_now(recycle_bin, self.guid)],
                         [("1", "old", books.api.clock.seconds() - 0)])
        books.add(self.guid, "alice", id="1", alias="new")
        entry = books.entries(self.guid, "alice")["1"]
        self.assertEqual((entry["alias"], entry["note"]), ("new", "kept"))
        self.assertEqual(books.api.db.run_now(recycle_bin, self.guid), [])

    def test_the_console_empties_the_bin(self):
        books = self.books
        for peer_id in ("1", "2", "3"):
            books.add(self.guid, "alice", id=peer_id)
        books.remove(self.guid, "alice", ["1", "2", "3"])
        self.assertEqual(books.api.db.run_now(empty_recycle_bin, self.guid, ["2"]), 1)
        self.assertEqual(sorted(e["id"] for e in books.api.db.run_now(recycle_bin, self.guid)),
                         ["1", "3"])
        self.assertEqual(books.api.db.run_now(empty_recycle_bin, self.guid), 2)
        self.assertRaises(ValueError, books.api.db.run_now, recycle_bin, "nope")

    def test_the_bin_keeps_as_many_entries_as_the_book_holds(self):
        books = self.books
        for round_ in range(3):
            ids = [f"{round_}-{n}" for n in range(3)]
            for peer_id in ids:
                books.add(self.guid, "alice", id=peer_id)
            books.later()
            books.remove(self.guid, "alice", ids)
        self.assertEqual(sorted(e["id"] for e in books.api.db.run_now(recycle_bin, self.guid)),
                         ["2-0", "2-1", "2-2"])


class CapacityTests(unittest.TestCase):
    def setUp(self):
        self.books = Books(self, ab_limits=BookLimits(max_peer_one_ab=2, max_peers=5, max_tags=2))
        self.books.user("alice")
        self.guid = self.books.personal("alice")

    def test_adding_past_max_peer_one_ab_is_exceed_max_devices(self):
        books = self.books
        self.assertEqual(books.empty_post("/api/ab/settings", "alice").json(),
                         {"max_peer_one_ab": 2})
        for peer_id in ("1", "2"):
            self.assertEqual(books.add(self.guid, "alice", id=peer_id).status, 200)
        self.assertEqual(books.add(self.guid, "alice", id="2", alias="again").status, 200)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reply = books.add(self.guid, "alice", id="3")
        self.assertEqual((reply.status, reply.json()), (400, {"error": "exceed_max_devices"}))
        self.assertEqual(books.api.app.address_books.limit_log.hits, {"ab_max_peers": 1})
        lines = [formatEvent(e) for e in events if e.get("event") == "limit_reached"]
        self.assertEqual(lines, ['192.0.2.10 limit ab_max_peers reached: user "alice"'])
        books.remove(self.guid, "alice", ["1"])
        self.assertEqual(books.add(self.guid, "alice", id="3").status, 200)
        self.assertEqual(books.add(self.guid, "alice", id="1").status, 400)

    def test_tags_are_capped(self):
        books = self.books
        for name in ("a", "b"):
            self.assertEqual(books.add_tag(self.guid, "alice", name).status, 200)
        self.assertEqual(books.add_tag(self.guid, "alice", "a", 5).status, 200)
        reply = books.add_tag(self.guid, "alice", "c")
        self.assertEqual((reply.status, reply.json()),
                         (400, {"error": "Too many tags in this address book"}))
        reply = books.edit(self.guid, "alice", id="1", tags=["a", "b", "c"])
        self.assertEqual(reply.status, 400)
        self.assertEqual(books.api.app.address_books.limit_log.hits, {"ab_max_tags": 2})


class LegacyTests(unittest.TestCase):
    def setUp(self):
        self.books = Books(self)
        self.books.user("alice")
        self.books.user("alice-2")
        self.books.api.db.run_now(lambda c: c.execute(update(tables.tokens).values(
            user_id=self.books.ids["alice"])))

    def pull(self, who="alice"):
        reply = self.books.api.request("GET", "/api/ab", token=self.books.tokens[who],
                                       headers={"accept-encoding": "gzip"})
        self.assertEqual(reply.status, 200)
        self.assertIsNone(reply.header("content-encoding"))
        body = reply.json()
        if body is None:
            return None
        book = json.loads(body["data"])
        book["tag_colors"] = json.loads(book["tag_colors"])
        book["peers"] = {peer.pop("id"): peer for peer in book["peers"]}
        return book

    def push(self, peers, tags=(), tag_colors=None, who="alice"):
        data = {"tags": list(tags), "peers": peers}
        if tag_colors is not None:
            data["tag_colors"] = json.dumps(tag_colors)
        self.books.later()
        reply = self.books.call("POST", "/api/ab", who, {"data": json.dumps(data)})
        self.assertEqual((reply.status, reply.body), (200, b""), reply.body)

    def test_empty_book_is_null_and_a_push_round_trips(self):
        self.assertIsNone(self.pull())
        self.push([{"id": "1", "username": "u", "hostname": "h", "platform": "Linux",
                    "alias": "a", "tags": ["t"], "hash": "x"}], ["t", "unused"],
                  {"t": 0xFF112233})
        self.assertEqual(self.pull(), {
            "tags": ["t", "unused"], "tag_colors": {"t": 0xFF112233},
            "peers": {"1": {"username": "u", "hostname": "h", "platform": "Linux",
                            "alias": "a", "tags": ["t"], "hash": "x"}}})
        self.push([])
        self.assertIsNone(self.pull())

    def test_legacy_book_is_the_personal_book_and_keeps_what_it_does_not_carry(self):
        books = self.books
        self.pull()
        self.push([{"id": "1", "alias": "a"}])
        guid = books.personal("alice")
        books.edit(guid, "alice", id="1", note="n", rdpPort="3389", password="ignored")
        self.pull()
        self.push([{"id": "1", "alias": "b"}, {"id": "2"}])
        entries = books.entries(guid, "alice")
        self.assertEqual((entries["1"]["alias"], entries["1"]["note"], entries["1"]["rdpPort"]),
                         ("b", "n", "3389"))
        self.assertEqual(sorted(entries), ["1", "2"])

    def test_a_stale_push_keeps_what_others_did_since_its_pull(self):
        books = self.books
        self.pull()
        self.push([{"id": "1", "alias": "one"}, {"id": "2"}, {"id": "3"}])
        self.pull("alice-2")
        self.pull()
        guid = books.personal("alice")
        books.later()
        books.add(guid, "alice-2", id="4", alias="added elsewhere")
        books.edit(guid, "alice-2", id="1", alias="renamed elsewhere")
        books.remove(guid, "alice-2", ["3"])
        self.push([{"id": "1", "alias": "one"}, {"id": "3"}, {"id": "5"}])
        book = self.pull()
        self.assertEqual(sorted(book["peers"]), ["1", "4", "5"])
        self.assertEqual(book["peers"]["1"]["alias"], "renamed elsewhere")

    def test_own_pushes_without_a_pull_between_still_apply(self):
        self.pull()
        self.push([{"id": "1"}, {"id": "2"}])
        self.push([{"id": "1", "alias": "first"}, {"id": "2"}])
        self.push([{"id": "1", "alias": "second"}])
        self.push([{"id": "1", "alias": "second"}, {"id": "2", "alias": "back"}])
        book = self.pull()
        self.assertEqual({peer_id: peer["alias"] for peer_id, peer in book["peers"].items()},
                         {"1": "second", "2": "back"})

    def test_a_token_that_never_pulled_deletes_nothing_of_others(self):
        self.pull("alice-2")
        self.push([{"id": "1"}], who="alice-2")
        self.push([{"id": "2"}])
        self.push([{"id": "2", "alias": "mine"}])
        guid = self.books.personal("alice")
        self.assertEqual(sorted(self.books.entries(guid, "alice-2")), ["1", "2"])
        self.push([])
        self.assertEqual(sorted(self.books.entries(guid, "alice-2")), ["1"])
        self.pull()
        self.push([])
        self.assertIsNone(self.pull())

    def test_head_is_not_a_pull(self):
        self.pull("alice-2")
        self.push([{"id": "1"}], who="alice-2")
        reply = self.books.api.request("HEAD", "/api/ab", token=self.books.tokens["alice"])
        self.assertEqual(reply.status, 200)
        self.push([])
        self.assertEqual(sorted(self.pull()["peers"]), ["1"])

    def test_gzipped_push_and_licensed_devices(self):
        books = Books(self, ab_limits=BookLimits(max_peer_one_ab=50), max_body=4096)
        token = books.user("bob")
        peers = [{"id": str(n), "alias": "x" * 20} for n in range(40)]
        body = gzip.compress(json.dumps({"data": json.dumps({"tags": [], "peers": peers})})
                             .encode())
        reply = books.api.request("POST", "/api/ab", token=token, raw=body,
                                  headers=dict(JSON, **{"content-encoding": "gzip"}))
        self.assertEqual((reply.status, reply.body), (200, b""))
        reply = books.api.request("GET", "/api/ab", token=token)
        self.assertEqual(reply.json()["licensed_devices"], 50)
        self.assertEqual(len(json.loads(reply.json()["data"])["peers"]), 40)
        huge = gzip.compress(json.dumps({"data": "x" * 10_000}).encode())
        for raw, status in ((b"not gzip", 400), (body[:-10], 400), (huge, 413)):
            reply = books.api.request("POST", "/api/ab", token=token, raw=raw,
                                      headers={"content-encoding": "gzip"})
            self.assertEqual(reply.status, status)
            self.assertIn("error", reply.json())
        reply = books.api.request("POST", "/api/ab", token=token, raw=b"{}",
                                  headers={"content-encoding": "br"})
        self.assertEqual(reply.status, 415)

    def test_sciter_pull(self):
        reply = self.books.call("POST", "/api/ab/get", "alice", {})
        self.assertEqual(json.loads(reply.json()["data"]),
                         {"tags": [], "peers": [], "tag_colors": "{}"})
        self.push([{"id": "1"}])
        body = self.books.call("POST", "/api/ab/get", "alice", {}).json()
        self.assertEqual([p["id"] for p in json.loads(body["data"])["peers"]], ["1"])
        self.assertEqual(body["updated_at"], self.books.api.clock.seconds())

    def test_push_past_the_cap_is_refused_whole(self):
        books = Books(self, ab_limits=BookLimits(max_peer_one_ab=2))
        books.user("bob")
        peers = [{"id": str(n)} for n in range(3)]
        reply = books.call("POST", "/api/ab", "bob", {"data": json.dumps({"peers": peers})})
        self.assertEqual((reply.status, reply.json()), (400, {"error": "exceed_max_devices"}))
        self.assertIsNone(books.api.request("GET", "/api/ab", token=books.tokens["bob"]).json())


class LegacyPlanTests(unittest.TestCase):
    """The push rule alone: rows as stored, what the push says, who pushes, what it saw."""

    def row(self, row_id, peer_id, version, updated_by, deleted_at=None, alias=""):
        return peer_id, {"id": row_id, "peer_id": peer_id, "version": version,
                         "updated_by": updated_by, "deleted_at": deleted_at, "hash": "",
                         "username": "", "hostname": "", "platform": "", "alias": alias,
                         "tags": []}

    def test_seen_rows_follow_the_push_and_unseen_ones_stay(self):
        rows = dict([self.row(1, "seen", 3, 9), self.row(2, "newer", 6, 9),
                     self.row(3, "mine", 7, 1), self.row(4, "binned-before", 2, 9, 100.0),
                     self.row(5, "binned-after", 6, 9, 200.0), self.row(6, "gone", 3, 9)])
        plan = plan_legacy_push(rows, {"seen": {"alias": "x"}, "newer": {"alias": "stale"},
                                       "binned-before": {}, "binned-after": {}, "new": {}},
                                writer=1, seen_version=5)
        self.assertEqual([peer_id for peer_id, _ in plan.inserts], ["new"])
        self.assertEqual([(row_id, restored) for row_id, _, restored in plan.updates],
                         [(1, False), (4, True)])
        self.assertEqual(sorted(plan.deletes), [3, 6])
        self.assertEqual(sorted(plan.kept), ["newer"])

    def test_without_a_pull_only_own_rows_are_seen(self):
        rows = dict([self.row(1, "theirs", 1, 9), self.row(2, "mine", 1, 1)])
        plan = plan_legacy_push(rows, {}, writer=1, seen_version=None)
        self.assertEqual((plan.deletes, plan.kept), ([2], ["theirs"]))


class BadInputTests(AliceCase):

    def test_wrong_types_and_sizes_are_400_json(self):
        g = self.guid
        cases = [
            ("POST", f"/api/ab/peer/add/{g}", {"alias": "no id"}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": 123}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "x" * 65}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "1", "alias": 5}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "1", "note": "n" * 2001}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "1", "tags": "t"}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "1", "tags": [1]}),
            ("POST", f"/api/ab/peer/add/{g}", {"id": "1", "forceAlwaysRelay": "yes"}),
            ("POST", f"/api/ab/peer/add/{g}", ["1"]),
            ("PUT", f"/api/ab/peer/update/{g}", {"id": "1", "rdpPort": "9" * 17}),
            ("DELETE", f"/api/ab/peer/{g}", {"id": "1"}),
            ("DELETE", f"/api/ab/peer/{g}", [1]),
            ("POST", f"/api/ab/tag/add/{g}", {"name": "t"}),
            ("POST", f"/api/ab/tag/add/{g}", {"name": "t", "color": "red"}),
            ("POST", f"/api/ab/tag/add/{g}", {"name": "t", "color": True}),
            ("POST", f"/api/ab/tag/add/{g}", {"name": "t", "color": 2**40}),
            ("POST", f"/api/ab/tag/add/{g}", {"name": "", "color": 1}),
            ("PUT", f"/api/ab/tag/rename/{g}", {"old": "t"}),
            ("DELETE", f"/api/ab/tag/{g}", "t"),
            ("POST", "/api/ab", {"data": {"peers": []}}),
            ("POST", "/api/ab", {"data": "{not json"}),
            ("POST", "/api/ab", {"data": "[]"}),
            ("POST", "/api/ab", {"data": json.dumps({"peers": [{"id": 1}]})}),
            ("POST", "/api/ab", {"data": json.dumps({"peers": "all"})}),
            ("POST", "/api/ab", {"data": json.dumps({"tag_colors": "{bad"})}),
            ("POST", "/api/ab", {"data": json.dumps({"tag_colors": {"t": "red"}})}),
        ]
        for method, path, body in cases:
            reply = self.books.call(method, path, "alice", body)
            self.assertEqual(reply.status, 400, (path, body, reply.body))
            self.assertIsInstance(reply.json()["error"], str)
        self.assertEqual(self.books.entries(self.guid, "alice"), {})

    def test_paging_and_query_mistakes(self):
        for query, status in ((f"ab={self.guid}&pageSize=1001", 400),
                              (f"ab={self.guid}&pageSize=0", 400),
                              (f"ab={self.guid}&current=x", 400),
                              (f"ab={self.guid}&current=99999999999999999999", 200),
                              ("current=1&pageSize=100", 400),
                              ("ab=" + "g" * 5000, 404)):
            reply = self.books.empty_post(f"/api/ab/peers?{query}", "alice")
            self.assertEqual(reply.status, status, query)
            self.assertIn("error" if status != 200 else "total", reply.json())
        reply = self.books.empty_post("/api/ab/shared/profiles?pageSize=5000", "alice")
        self.assertEqual(reply.status, 400)

    def test_without_a_token_every_route_is_401(self):
        for method, path in (("GET", "/api/ab"), ("POST", "/api/ab"), ("POST", "/api/ab/get"),
                             ("POST", "/api/ab/personal"), ("POST", "/api/ab/settings"),
                             ("POST", "/api/ab/shared/profiles"), ("POST", "/api/ab/peers"),
                             ("POST", f"/api/ab/tags/{self.guid}"),
                             ("POST", f"/api/ab/peer/add/{self.guid}"),
                             ("PUT", f"/api/ab/peer/update/{self.guid}"),
                             ("DELETE", f"/api/ab/peer/{self.guid}"),
                             ("POST", f"/api/ab/tag/add/{self.guid}"),
                             ("PUT", f"/api/ab/tag/rename/{self.guid}"),
                             ("PUT", f"/api/ab/tag/update/{self.guid}"),
                             ("DELETE", f"/api/ab/tag/{self.guid}")):
            reply = self.books.api.request(method, path, raw=b"")
            self.assertEqual((reply.status, reply.json()), (401, {"error": "Invalid token"}),
                             path)


class OptionTests(unittest.TestCase):
    def config(self, **values):
        return ApiConfig(Settings({name.replace("_", "-").upper(): str(value)
                                   for name, value in values.items()}))

    def test_limits_from_settings(self):
        limits = self.config(max_peer_one_ab=100, ab_max_peers=500, ab_max_tags=20).ab_limits
        self.assertEqual((limits.max_peer_one_ab, limits.peers, limits.max_tags), (100, 100, 20))
        self.assertEqual(self.config().ab_limits.peers, 10_000)
        self.assertRaises(ConfigError, self.config, max_peer_one_ab=600, ab_max_peers=500)
        self.assertRaises(ConfigError, self.config, ab_max_tags=0)

    def test_options_in_help(self):
        text = str(Options())
        for flag in ("--max-peer-one-ab", "--ab-max-peers", "--ab-max-tags"):
            self.assertIn(flag, text)
