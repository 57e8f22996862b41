"""The web console in memory: sign-in, sessions, CSRF, every page, every change and its
audit row, escaping, bounds (issue 11)."""

import base64
import csv
import io
import os

import pyotp
from sqlalchemy import insert, select
from twisted.internet.defer import succeed
from twisted.trial import unittest

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.accounts import password_matches, token_hash
from rustdesk_twisted.api.console import ConsoleOptions
from rustdesk_twisted.api.console.audit import Collected, CsvTooLarge
from rustdesk_twisted.api.console.settings import config_string
from rustdesk_twisted.wire.keys import fingerprint

from .apisupport import ApiHarness, FormClient, on_both_backends


class FakeHbbs:
    """The hbbs beside the API, as the console sees it: who is online, and console replies."""

    def __init__(self, online=(), reply=None):
        self.online_ids = set(online)
        self.reply = reply
        self.commands = []

    def online(self, ids):
        return succeed({i for i in ids if i in self.online_ids})

    def rename(self, old_id, new_id):
        self.commands.append(("rename", old_id, new_id))
        return succeed(self.reply if self.reply is not None else
                       f"{old_id}: renamed to {new_id}\n")

    def release(self, rustdesk_id):
        self.commands.append(("release", rustdesk_id))
        return succeed(self.reply if self.reply is not None else f"{rustdesk_id}: released\n")


def rows(api, table, *where):
    return api.db.run_now(lambda c: [dict(r._mapping) for r in c.execute(
        select(table).where(*where).order_by(table.c.id))])


def audit_actions(api):
    return [r["action"] for r in rows(api, tables.audit_console)]


def add_device(api, rustdesk_id, **fields):
    row = {"rustdesk_id": rustdesk_id, "created_at": api.clock.seconds(), "hostname": "box",
           "last_seen": api.clock.seconds()}
    row.update(fields)
    return api.db.run_now(lambda c: c.execute(
        insert(tables.devices).values(**row)).inserted_primary_key[0])


def add_row(api, table, **fields):
    return api.db.run_now(
        lambda c: c.execute(insert(table).values(**fields)).inserted_primary_key[0])


class ConsoleCase(unittest.TestCase):
    def setUp(self):
        self.hbbs = FakeHbbs()
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)
        self.api = ApiHarness(self, hbbs=self.hbbs, data_dir=self.data_dir,
                              **self.app_options())
        self.admin_id = self.api.add_user("admin", is_admin=True)
        self.browser = FormClient(self.api)

    def app_options(self):
        return {}

    def signed_in(self):
        reply = self.browser.sign_in("admin")
        self.assertEqual((reply.status, reply.header("location")), (303, "/"))
        return self.browser


@on_both_backends
class SignInTests(ConsoleCase):
    def test_sign_in_opens_a_hashed_console_session_with_a_strict_http_only_cookie(self):
        reply = self.browser.sign_in("admin")
        self.assertEqual((reply.status, reply.header("location")), (303, "/"))
        cookie = reply.header("set-cookie")
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertNotIn("Secure", cookie)
        secret = self.browser.cookies["rdconsole"]
        [session] = rows(self.api, tables.tokens)
        self.assertEqual((session["kind"], session["token_hash"]), ("console", token_hash(secret)))
        self.assertEqual(session["expires_at"], self.api.clock.seconds() + 12 * 3600)
        self.assertEqual(self.browser.get("/").status, 200)
        [entry] = rows(self.api, tables.audit_console)
        self.assertEqual((entry["action"], entry["user_name"], entry["ip"]),
                         ("console.login", "admin", "192.0.2.10"))

    def test_pages_without_a_session_lead_to_the_sign_in_page_and_back(self):
        reply = self.browser.get("/devices?q=abc")
        self.assertEqual(reply.status, 303)
        self.assertEqual(reply.header("location"), "/login?next=%2Fdevices%3Fq%3Dabc")
        self.browser.get(reply.header("location"))
        reply = self.browser.post("/login", {"name": "admin", "password": "secret-pass",
                                             "next": "/devices?q=abc"})
        self.assertEqual(reply.header("location"), "/devices?q=abc")

    def test_next_never_leads_off_the_site(self):
        self.browser.get("/login")
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            reply = self.browser.post("/login", {"name": "admin", "password": "secret-pass",
                                                 "next": target})
            self.assertEqual(reply.header("location"), "/")

    def test_a_wrong_password_is_refused_and_logged_without_the_password(self):
        self.browser.get("/login")
        reply = self.browser.post("/login", {"name": "admin", "password": "wrong-one"})
        self.assertEqual(reply.status, 403)
        self.assertIn(b"Wrong name, password or code.", reply.body)
        self.assertNotIn("rdconsole", self.browser.cookies)
        self.assertEqual(rows(self.api, tables.tokens), [])
        self.assertEqual(self.api.app.accounts.logins_failed, 1)

    def test_failures_are_throttled_with_the_api_login(self):
        """The console and the client login count failures in one throttle."""
        for _ in range(5):
            self.api.request("POST", "/api/login", {"username": "admin", "password": "nope"})
        self.browser.get("/login")
        for _ in range(5):
            self.browser.post("/login", {"name": "admin", "password": "nope"})
        reply = self.browser.post("/login", {"name": "admin", "password": "secret-pass"})
        self.assertEqual(reply.status, 429)
        self.assertIn(b"Too many failed attempts", reply.body)
        self.assertEqual(self.api.app.console.limits.hits["login-failures"], 1)
        self.api.clock.advance(301)
        self.assertEqual(self.browser.post("/login", {"name": "admin",
                                                      "password": "secret-pass"}).status, 303)

    def test_totp_users_need_their_code(self):
        secret = pyotp.random_base32()
        self.api.add_user("tina", totp_secret=secret)
        self.assertEqual(self.browser.sign_in("tina").status, 403)
        code = pyotp.TOTP(secret).at(int(self.api.clock.seconds()))
        self.assertEqual(self.browser.sign_in("tina", code="000000" if code != "000000"
                                              else "111111").status, 403)
        self.assertEqual(self.browser.sign_in("tina", code=code).status, 303)

    def test_disabled_users_cannot_sign_in(self):
        self.api.add_user("dora", status=0)
        self.assertEqual(self.browser.sign_in("dora").status, 403)

    def test_sign_out_ends_the_session(self):
        self.signed_in().get("/")
        secret = self.browser.cookies["rdconsole"]
        reply = self.browser.post("/logout")
        self.assertEqual((reply.status, reply.header("location")), (303, "/login"))
        self.assertNotIn("rdconsole", self.browser.cookies)
        self.assertEqual(rows(self.api, tables.tokens), [])
        self.browser.cookies["rdconsole"] = secret
        self.assertEqual(self.browser.get("/users").status, 303)
        self.assertEqual(audit_actions(self.api), ["console.login", "console.logout"])

    def test_a_session_ends_after_twelve_idle_hours_and_use_keeps_it(self):
        self.signed_in()
        for _ in range(3):
            self.api.clock.advance(11 * 3600)
            self.assertEqual(self.browser.get("/users").status, 200)
        self.api.clock.advance(12 * 3600 + 1)
        self.assertEqual(self.browser.get("/users").status, 303)

    def test_a_user_keeps_at_most_ten_sessions(self):
        for _ in range(12):
            FormClient(self.api).sign_in("admin")
        self.assertEqual(len(rows(self.api, tables.tokens)), 10)

    def test_the_console_session_is_no_client_session_and_back(self):
        """A client's bearer token opens no console page."""
        token = self.api.login("admin")
        self.browser.cookies["rdconsole"] = token
        self.assertEqual(self.browser.get("/users").status, 303)

    def test_every_reply_carries_the_security_headers(self):
        for reply in (self.browser.get("/login"), self.signed_in().get("/users"),
                      self.browser.get("/nope/5")):
            if reply.status == 404:
                continue
            self.assertEqual(reply.header("x-frame-options"), "DENY")
            self.assertIn("default-src 'self'", reply.header("content-security-policy"))
            self.assertIn("frame-ancestors 'none'", reply.header("content-security-policy"))
            self.assertEqual(reply.header("referrer-policy"), "same-origin")
            self.assertEqual(reply.header("content-type"), "text/html; charset=utf-8")
            self.assertNotIn(b"<script", reply.body)
            self.assertNotIn(b" style=", reply.body)


class SecureCookieTests(ConsoleCase):
    def app_options(self):
        return {"console": ConsoleOptions(secure_cookies=True, session_idle=600)}

    def test_the_option_marks_cookies_secure_and_sets_the_idle_time(self):
        self.assertIn("Secure", self.browser.get("/login").header("set-cookie"))
        reply = self.browser.sign_in("admin")
        self.assertIn("; Secure", reply.header("set-cookie"))
        self.api.clock.advance(601)
        self.assertEqual(self.browser.get("/users").status, 303)


class ForgeryTests(ConsoleCase):
    def test_a_post_without_the_session_token_changes_nothing(self):
        browser = self.signed_in()
        for fields, csrf in (({"name": "eve", "password": "password1",
                               "confirm": "password1"}, False),
                             ({"name": "eve", "password": "password1", "confirm": "password1",
                               "csrf": "0" * 64}, True)):
            reply = browser.post("/users", fields, csrf=csrf)
            self.assertEqual(reply.status, 403)
            self.assertIn(b"This form has expired", reply.body)
        self.assertEqual([u["name"] for u in rows(self.api, tables.users)], ["admin"])

    def test_a_post_from_another_site_is_refused(self):
        browser = self.signed_in()
        browser.get("/users")
        fields = {"name": "eve", "password": "password1", "confirm": "password1"}
        for origin in ("http://evil.example", "null", None):
            reply = browser.post("/users", fields, origin=origin)
            self.assertEqual(reply.status, 403)
            self.assertIn(b"not sent from a page of this site", reply.body)
        reply = browser.request("POST", "/users", raw=b"csrf=" + browser.csrf.encode() +
                                b"&name=eve&password=password1&confirm=password1", headers={
            "content-type": "application/x-www-form-urlencoded",
            "referer": "http://api.test/users"})
        self.assertEqual(reply.status, 303)

    def test_the_sign_in_form_needs_its_own_token(self):
        reply = self.browser.post("/login", {"name": "admin", "password": "secret-pass"})
        self.assertEqual(reply.status, 403)
        self.browser.get("/login")
        reply = self.browser.post("/login", {"name": "admin", "password": "secret-pass",
                                             "csrf": "x"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(rows(self.api, tables.tokens), [])

    def test_one_sessions_token_does_not_fit_another(self):
        browser = self.signed_in()
        browser.get("/users")
        other = FormClient(self.api)
        other.sign_in("admin")
        other.csrf = browser.csrf
        self.assertEqual(other.post("/strategies", {"name": "x"}).status, 403)

    def test_bad_forms_are_refused_in_a_sentence(self):
        browser = self.signed_in()
        browser.get("/users")
        headers = {"origin": FormClient.ORIGIN}
        reply = browser.request("POST", "/users", raw=b'{"name": "x"}',
                                headers=dict(headers, **{"content-type": "application/json"}))
        self.assertEqual(reply.status, 415)
        form = {"content-type": "application/x-www-form-urlencoded"}
        reply = browser.request("POST", "/users", raw=b"a=" + b"x" * 70_000,
                                headers=dict(headers, **form))
        self.assertEqual(reply.status, 413)
        reply = browser.request("POST", "/users", raw="&".join(f"f{i}=1" for i in range(300))
                                .encode(), headers=dict(headers, **form))
        self.assertEqual(reply.status, 400)
        reply = browser.request("POST", "/users", raw=b"name=%ff%fe", headers=dict(headers,
                                                                                  **form))
        self.assertEqual(reply.status, 400)
        self.assertIn(b"not UTF-8", reply.body)


class AdminOnlyTests(ConsoleCase):
    def test_users_see_their_own_page_and_no_admin_page(self):
        bob = self.api.add_user("bob")
        add_device(self.api, "111222333", user_id=bob, hostname="bobs-box")
        add_device(self.api, "999888777", hostname="not-bobs")
        self.hbbs.online_ids = {"111222333"}
        browser = FormClient(self.api)
        browser.sign_in("bob")
        self.assertEqual(browser.get("/").header("location"), "/me")
        for path in ("/users", "/devices", "/keys", "/tokens", "/audit/console",
                     "/strategies", "/address-books", "/user-groups"):
            reply = browser.get(path)
            self.assertEqual(reply.status, 403, path)
        page = browser.get("/me")
        self.assertIn(b"bobs-box", page.body)
        self.assertIn(b"online", page.body)
        self.assertNotIn(b"not-bobs", page.body)
        reply = browser.post("/users", {"name": "eve", "password": "password1",
                                        "confirm": "password1"})
        self.assertEqual(reply.status, 403)

    def test_users_change_their_own_password(self):
        bob = self.api.add_user("bob")
        browser = FormClient(self.api)
        browser.sign_in("bob")
        FormClient(self.api).sign_in("bob")
        browser.get("/me")
        reply = browser.post("/me/password", {"current": "wrong", "password": "new-password",
                                              "confirm": "new-password"})
        self.assertEqual(reply.header("location"), "/me")
        self.assertIn(b"The current password is wrong", browser.get("/me").body)
        browser.post("/me/password", {"current": "secret-pass", "password": "new-password",
                                      "confirm": "new-password"})
        [user] = rows(self.api, tables.users, tables.users.c.id == bob)
        self.assertTrue(password_matches(user["password_hash"], "new-password"))
        self.assertEqual(len(rows(self.api, tables.tokens)), 1, "the other session ended")
        self.assertEqual(browser.get("/me").status, 200)
        self.assertEqual(audit_actions(self.api)[-1], "user.password_change")


@on_both_backends
class PageTests(ConsoleCase):
    def fill(self):
        api = self.api
        now = api.clock.seconds()
        group = add_row(api, tables.user_groups, name="staff", note="", created_at=now)
        dgroup = add_row(api, tables.device_groups, name="servers", note="", created_at=now)
        strategy = add_row(api, tables.strategies, name="locked", enabled=True,
                           options='{"enable-file-transfer": "N"}', modified_at=1)
        bob = api.add_user("bob", group_id=group)
        device = add_device(api, "111222333", user_id=bob, device_group_id=dgroup,
                            strategy_id=strategy)
        book = add_row(api, tables.address_books, guid="g1", name="Team", owner_id=bob,
                       personal=False, created_at=now, updated_at=now)
        add_row(api, tables.ab_peers, ab_id=book, peer_id="444555666", alias="printer",
                tags='["office"]', updated_at=now)
        add_row(api, tables.ab_peers, ab_id=book, peer_id="777888999", updated_at=now,
                deleted_at=now)
        add_row(api, tables.audit_conn, guid="c1", rustdesk_id="111222333", conn_id=1,
                ip="198.51.100.7", started_at=now)
        add_row(api, tables.audit_file, rustdesk_id="111222333", path="/etc/passwd",
                created_at=now)
        add_row(api, tables.audit_alarm, rustdesk_id="111222333", typ=2, created_at=now)
        return {"group": group, "dgroup": dgroup, "strategy": strategy, "bob": bob,
                "device": device, "book": book}

    def test_every_page_renders(self):
        ids = self.fill()
        browser = self.signed_in()
        pages = {
            "/": b"Overview", "/users": b"bob", f"/users/{ids['bob']}": b"111222333",
            "/user-groups": b"staff", f"/user-groups/{ids['group']}": b"Access rules",
            "/device-groups": b"servers", f"/device-groups/{ids['dgroup']}": b"servers",
            "/devices": b"111222333", f"/devices/{ids['device']}": b"Change ID",
            "/address-books": b"Team", f"/address-books/{ids['book']}": b"printer",
            f"/address-books/{ids['book']}/bin": b"777888999",
            "/audit/conn": b"198.51.100.7", "/audit/file": b"/etc/passwd",
            "/audit/alarm": b"111222333", "/audit/console": b"console.login",
            "/strategies": b"locked", f"/strategies/{ids['strategy']}":
                b"enable-file-transfer=N",
            "/keys": b"no key in", "/tokens": b"No API tokens", "/me": b"Change password",
        }
        for path, text in pages.items():
            reply = browser.get(path)
            self.assertEqual(reply.status, 200, path)
            self.assertIn(text, reply.body, path)

    def test_unknown_rows_and_kinds_are_404_pages(self):
        browser = self.signed_in()
        for path in ("/users/999", "/devices/abc", "/audit/nope", "/strategies/2147483648",
                     "/address-books/7", "/user-groups/-1"):
            reply = browser.get(path)
            self.assertEqual(reply.status, 404, path)
            self.assertIn(b"<h1>Error 404</h1>", reply.body)

    def test_lists_are_paged_and_searched(self):
        for n in range(60):
            self.api.db.run_now(lambda c, n=n: c.execute(insert(tables.users).values(
                name=f"user{n:02}", created_at=0, updated_at=0)))
        browser = self.signed_in()
        first = browser.get("/users")
        self.assertIn(b"Page 1 of 2", first.body)
        self.assertIn(b'href="/users?page=2"', first.body)
        self.assertIn(b"user48", first.body)
        self.assertNotIn(b"user49", first.body)
        second = browser.get("/users?page=2")
        self.assertIn(b"user59", second.body)
        self.assertNotIn(b"user48", second.body)
        found = browser.get("/users?q=ER0_")
        self.assertNotIn(b"user05", found.body)
        found = browser.get("/users?q=ER05")
        self.assertIn(b"user05", found.body)
        self.assertIn(b"1 in all", found.body)
        self.assertEqual(browser.get("/users?page=x").status, 400)

    def test_devices_show_hbbs_online_state(self):
        add_device(self.api, "111222333")
        add_device(self.api, "444555666")
        self.hbbs.online_ids = {"444555666"}
        body = self.signed_in().get("/devices").body
        first, second = body.split(b"444555666</a>")
        self.assertIn(b"badge offline", first.split(b"111222333</a>")[1])
        self.assertIn(b"badge online", second.split(b"</tr>")[0])


class HostileTextTests(ConsoleCase):
    SCRIPT = "<script>alert(1)</script>"

    def test_hostile_names_and_fields_are_escaped(self):
        self.api.add_user(self.SCRIPT, display_name='"><img src=x onerror=alert(1)>')
        device = add_device(self.api, "111222333", hostname=self.SCRIPT, note=self.SCRIPT)
        add_row(self.api, tables.audit_conn, guid="c1", rustdesk_id=self.SCRIPT, conn_id=1,
                started_at=self.api.clock.seconds())
        browser = self.signed_in()
        for path in ("/users", "/devices", f"/devices/{device}", "/audit/conn"):
            body = browser.get(path).body
            self.assertNotIn(b"<script>alert", body, path)
            self.assertNotIn(b"<img", body, path)
            self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt;", body, path)

    def test_a_user_named_script_added_through_the_form_is_shown_escaped(self):
        browser = self.signed_in()
        browser.get("/users")
        reply = browser.post("/users", {"name": self.SCRIPT, "password": "password1",
                                        "confirm": "password1"})
        body = browser.get(reply.header("location")).body
        self.assertIn(b"User &lt;script&gt;alert(1)&lt;/script&gt; added.", body)
        self.assertNotIn(b"<script>", body)

    def test_csv_cells_that_a_spreadsheet_would_run_are_defused(self):
        add_row(self.api, tables.audit_conn, guid="c1", rustdesk_id="=HYPERLINK(1)",
                conn_id=1, started_at=1_800_000_000, ip="+1")
        browser = self.signed_in()
        reply = browser.get("/audit/conn/csv")
        self.assertEqual(reply.header("content-type"), "text/csv; charset=utf-8")
        self.assertIn("attachment", reply.header("content-disposition"))
        header, row = list(csv.reader(io.StringIO(reply.body.decode())))
        cells = dict(zip(header, row))
        self.assertEqual((cells["rustdesk_id"], cells["ip"], cells["started_at"]),
                         ("'=HYPERLINK(1)", "'+1", "1800000000.0"))
        browser.get("/users")
        browser.post("/users", {"name": "@SUM(A1)", "password": "password1",
                                "confirm": "password1"})
        reply = browser.get("/audit/console/csv?q=SUM")
        header, row = list(csv.reader(io.StringIO(reply.body.decode())))
        self.assertEqual(header, ["id", "created_at", "user_name", "ip", "action", "detail"])
        self.assertEqual(row[4:], ["user.add", "user '@SUM(A1)'"])


@on_both_backends
class AuditTests(ConsoleCase):
    def test_device_logs_filter_by_device_type_and_days(self):
        day = 86400
        for n, (device, kind, when) in enumerate((("111222333", 0, 0), ("111222333", 1, day),
                                                   ("444555666", 0, 2 * day))):
            add_row(self.api, tables.audit_conn, guid=f"c{n}", rustdesk_id=device, conn_id=n,
                    conn_type=kind, ip=f"198.51.100.{n}", started_at=1_800_000_000 + when)
        browser = self.signed_in()

        def shown(query):
            body = browser.get("/audit/conn" + query).body
            return [n for n in range(3) if f"198.51.100.{n}<".encode() in body]
        self.assertEqual(shown(""), [0, 1, 2])
        self.assertEqual(shown("?id=111222333"), [0, 1])
        self.assertEqual(shown("?id=111222333&type=1"), [1])
        self.assertEqual(shown("?since=2027-01-16"), [1, 2])
        self.assertEqual(shown("?since=2027-01-16&until=2027-01-16"), [1])
        page = browser.get("/audit/conn?id=111222333&type=1").body
        self.assertIn(b'href="/audit/conn/csv?id=111222333&amp;type=1"', page)
        rows = list(csv.reader(io.StringIO(browser.get(
            "/audit/conn/csv?id=111222333&type=1").body.decode())))
        self.assertEqual(len(rows), 2)
        self.assertEqual(browser.get("/audit/conn?since=yesterday").status, 400)

    def test_console_changes_are_searched(self):
        browser = self.signed_in()
        browser.get("/strategies")
        browser.post("/strategies", {"name": "night shift"})
        body = browser.get("/audit/console?q=night").body
        self.assertIn(b"strategy.add", body)
        self.assertNotIn(b"console.login", body)

    def test_an_export_past_the_cap_stops(self):
        out = Collected(limit=10)
        out.write(b"12345")
        self.assertRaises(CsvTooLarge, out.write, b"678901")
        self.assertEqual(out.body(), b"12345")


class UserActionTests(ConsoleCase):
    def setUp(self):
        super().setUp()
        self.signed_in().get("/users")

    def user(self, name):
        [row] = rows(self.api, tables.users, tables.users.c.name == name)
        return row

    def test_add_edit_disable_enable_and_reset(self):
        browser = self.browser
        group = add_row(self.api, tables.user_groups, name="staff", note="", created_at=0)
        reply = browser.post("/users", {"name": "carol", "password": "password1",
                                        "confirm": "password1", "group_id": str(group),
                                        "email": "c@example.com"})
        carol = self.user("carol")
        self.assertEqual(reply.header("location"), f"/users/{carol['id']}")
        self.assertEqual((carol["group_id"], carol["email"], carol["is_admin"]),
                         (group, "c@example.com", False))
        self.assertTrue(password_matches(carol["password_hash"], "password1"))
        path = f"/users/{carol['id']}"
        browser.get(path)
        browser.post(path, {"name": "carol", "display_name": "Carol", "is_admin": "on",
                            "group_id": ""})
        carol = self.user("carol")
        self.assertEqual((carol["display_name"], carol["is_admin"], carol["group_id"]),
                         ("Carol", True, None))
        browser.post(path + "/status", {"status": "0"})
        self.assertEqual(self.user("carol")["status"], 0)
        browser.post(path + "/status", {"status": "1"})
        self.assertEqual(self.user("carol")["status"], 1)
        token = self.api.login("carol", "password1")
        browser.post(path + "/password", {"password": "password2", "confirm": "password2"})
        self.assertTrue(password_matches(self.user("carol")["password_hash"], "password2"))
        self.assertEqual(self.api.request("POST", "/api/currentUser", {}, token=token).status,
                         401)
        self.api.db.run_now(lambda c: c.execute(tables.users.update().where(
            tables.users.c.name == "carol").values(totp_secret="ABC", totp_backup='["x"]')))
        browser.post(path + "/totp-reset")
        self.assertEqual((self.user("carol")["totp_secret"], self.user("carol")["totp_backup"]),
                         (None, "[]"))
        self.assertEqual(audit_actions(self.api)[1:], [
            "user.add", "user.edit", "user.edit", "user.edit", "user.password_reset",
            "user.totp_reset"])
        details = [r["detail"] for r in rows(self.api, tables.audit_console)]
        self.assertNotIn("password2", " ".join(details))
        self.assertIn("is_admin=True", details[2])

    def test_refusals_come_back_as_notices(self):
        browser = self.browser
        reply = browser.post("/users", {"name": "admin", "password": "password1",
                                        "confirm": "password1"})
        self.assertEqual(reply.header("location"), "/users")
        self.assertIn(b"A user named &#39;admin&#39; exists already", browser.get("/users").body)
        browser.post("/users", {"name": "x", "password": "short", "confirm": "short"})
        self.assertIn(b"at least 8 characters", browser.get("/users").body)
        browser.post("/users", {"name": "x", "password": "password1", "confirm": "password2"})
        self.assertIn(b"The two passwords differ", browser.get("/users").body)
        browser.post("/users", {"name": "x", "password": "password1", "confirm": "password1",
                                "group_id": "77"})
        self.assertIn(b"There is no such user group", browser.get("/users").body)
        browser.post("/users", {"name": "x", "password": "password1", "confirm": "password1",
                                "group_id": "2147483648"})
        self.assertIn(b"Group id is out of range", browser.get("/users").body)
        self.assertNotIn(b"There is no such", browser.get("/users").body, "shown once")
        self.assertEqual(audit_actions(self.api), ["console.login"])

    def test_an_admin_cannot_lock_themselves_out(self):
        path = f"/users/{self.admin_id}"
        self.browser.post(path + "/status", {"status": "0"})
        self.browser.post(path, {"name": "admin"})
        self.assertIn(b"You cannot disable yourself", self.browser.get(path).body)
        admin = self.user("admin")
        self.assertEqual((admin["status"], admin["is_admin"]), (1, True))


@on_both_backends
class GroupActionTests(ConsoleCase):
    def test_groups_and_their_rules(self):
        browser = self.signed_in()
        browser.get("/user-groups")
        browser.post("/user-groups", {"name": "staff", "note": "everyone"})
        browser.post("/device-groups", {"name": "servers"})
        [staff] = rows(self.api, tables.user_groups)
        [servers] = rows(self.api, tables.device_groups)
        self.api.add_user("bob", group_id=staff["id"])
        base = f"/user-groups/{staff['id']}"
        browser.post(base, {"name": "team", "note": "renamed"})
        self.assertEqual(rows(self.api, tables.user_groups)[0]["name"], "team")
        browser.post(base + "/rules", {"target_kind": "device_group", "target": "servers"})
        browser.post(base + "/rules", {"target_kind": "user", "target": "admin"})
        browser.post(base + "/rules", {"target_kind": "user", "target": "nobody"})
        self.assertIn(b"There is no user &#39;nobody&#39;", browser.get(base).body)
        rules = rows(self.api, tables.group_rules)
        self.assertEqual([(r["target_kind"], r["target_id"]) for r in rules],
                         [("device_group", servers["id"]), ("user", self.admin_id)])
        self.assertIn(b"servers", browser.get(base).body)
        browser.post(f"{base}/rules/{rules[1]['id']}/delete")
        self.assertEqual(len(rows(self.api, tables.group_rules)), 1)
        browser.post(f"/device-groups/{servers['id']}/delete")
        self.assertEqual(rows(self.api, tables.group_rules), [])
        browser.post(base + "/delete")
        self.assertEqual(rows(self.api, tables.user_groups), [])
        [bob] = rows(self.api, tables.users, tables.users.c.name == "bob")
        self.assertIsNone(bob["group_id"])
        self.assertEqual(audit_actions(self.api)[1:], [
            "user_group.add", "device_group.add", "user_group.edit", "group_rule.add",
            "group_rule.add", "group_rule.delete", "device_group.delete", "user_group.delete"])


@on_both_backends
class DeviceActionTests(ConsoleCase):
    def setUp(self):
        super().setUp()
        self.device = add_device(self.api, "111222333")
        self.path = f"/devices/{self.device}"
        self.signed_in().get(self.path)

    def device_row(self):
        [row] = rows(self.api, tables.devices)
        return row

    def test_edit(self):
        group = add_row(self.api, tables.device_groups, name="servers", note="", created_at=0)
        strategy = add_row(self.api, tables.strategies, name="s", enabled=True, options="{}",
                           modified_at=1)
        self.browser.post(self.path, {"owner": "admin", "device_group_id": str(group),
                                      "strategy_id": str(strategy), "note": "rack 4",
                                      "status": "0"})
        row = self.device_row()
        self.assertEqual((row["user_id"], row["device_group_id"], row["strategy_id"],
                          row["note"], row["status"]),
                         (self.admin_id, group, strategy, "rack 4", 0))
        self.browser.post(self.path, {"owner": "ghost", "status": "1"})
        self.assertIn(b"There is no user &#39;ghost&#39;", self.browser.get(self.path).body)
        self.assertEqual(audit_actions(self.api)[1:], ["device.edit"])

    def test_change_id_through_hbbs_shows_its_reply_and_follows_it(self):
        self.browser.post(self.path + "/change-id", {"new_id": "office-pc"})
        self.assertEqual(self.hbbs.commands, [("rename", "111222333", "office-pc")])
        self.assertEqual(self.device_row()["rustdesk_id"], "office-pc")
        page = self.browser.get(self.path).body
        self.assertIn(b"Reply from hbbs: 111222333: renamed to office-pc", page)
        [entry] = rows(self.api, tables.audit_console, tables.audit_console.c.action ==
                       "device.change_id")
        self.assertIn("renamed to office-pc", entry["detail"])

    def test_a_refused_change_id_leaves_the_row(self):
        self.hbbs.reply = "error: office-pc is already registered\n"
        self.browser.post(self.path + "/change-id", {"new_id": "office-pc"})
        self.assertEqual(self.device_row()["rustdesk_id"], "111222333")
        self.assertIn(b"office-pc is already registered", self.browser.get(self.path).body)
        self.assertEqual(audit_actions(self.api)[-1], "device.change_id")

    def test_ids_that_could_carry_a_console_command_are_never_sent(self):
        for new_id in ("x", "ab cdefg", "abcdefg\nbackup x", "1abcdefg"):
            self.browser.post(self.path + "/change-id", {"new_id": new_id})
        crafted = add_device(self.api, "evil id\npeer-release 1")
        self.browser.post(f"/devices/{crafted}/release")
        self.browser.post(f"/devices/{crafted}/change-id", {"new_id": "abcdefg"})
        self.assertEqual(self.hbbs.commands, [])
        self.assertIn(b"cannot take", self.browser.get(f"/devices/{crafted}").body)

    def test_release(self):
        self.browser.post(self.path + "/release")
        self.assertEqual(self.hbbs.commands, [("release", "111222333")])
        self.assertIn(b"Reply from hbbs: 111222333: released", self.browser.get(self.path).body)
        self.assertEqual(audit_actions(self.api)[-1], "device.release")


class NoHbbsTests(unittest.TestCase):
    def test_without_hbbs_the_console_says_so(self):
        api = ApiHarness(self)
        api.add_user("admin", is_admin=True)
        device = add_device(api, "111222333")
        browser = FormClient(api)
        browser.sign_in("admin")
        self.assertIn(b"badge offline", browser.get("/devices").body)
        browser.get(f"/devices/{device}")
        browser.post(f"/devices/{device}/release")
        self.assertIn(b"hbbs is not running beside this API server",
                      browser.get(f"/devices/{device}").body)


@on_both_backends
class BookActionTests(ConsoleCase):
    def test_share_rules_restore_and_empty_the_bin(self):
        now = self.api.clock.seconds()
        bob = self.api.add_user("bob")
        group = add_row(self.api, tables.user_groups, name="staff", note="", created_at=0)
        book = add_row(self.api, tables.address_books, guid="g", name="Team", owner_id=bob,
                       personal=False, created_at=now, updated_at=now, version=3)
        personal = add_row(self.api, tables.address_books, guid="p", name="My address book",
                           owner_id=bob, personal=True, created_at=now, updated_at=now)
        gone = add_row(self.api, tables.ab_peers, ab_id=book, peer_id="1", updated_at=now,
                       deleted_at=now)
        add_row(self.api, tables.ab_peers, ab_id=book, peer_id="2", updated_at=now,
                deleted_at=now)
        browser = self.signed_in()
        base = f"/address-books/{book}"
        browser.get(base)
        browser.post(base + "/rules", {"target_kind": "user", "name": "admin", "rule": "2"})
        browser.post(base + "/rules", {"target_kind": "group", "name": "staff", "rule": "1"})
        browser.post(base + "/rules", {"target_kind": "everyone", "name": "", "rule": "1"})
        browser.post(base + "/rules", {"target_kind": "group", "name": "staff", "rule": "3"})
        got = {(r["user_id"], r["group_id"], r["rule"]) for r in rows(self.api, tables.ab_rules)}
        self.assertEqual(got, {(self.admin_id, None, 2), (None, group, 3), (None, None, 1)})
        browser.post(f"/address-books/{personal}/rules", {"target_kind": "user",
                                                          "name": "admin", "rule": "1"})
        self.assertIn(b"A personal address book is not shared",
                      browser.get(f"/address-books/{personal}").body)
        rule = rows(self.api, tables.ab_rules)[0]["id"]
        browser.post(f"{base}/rules/{rule}/delete")
        self.assertEqual(len(rows(self.api, tables.ab_rules)), 2)
        browser.post(f"{base}/bin/{gone}/restore")
        peers = rows(self.api, tables.ab_peers)
        self.assertEqual([p["deleted_at"] for p in peers], [None, now])
        browser.post(f"{base}/bin/empty")
        self.assertEqual([p["peer_id"] for p in rows(self.api, tables.ab_peers)], ["1"])
        [team] = rows(self.api, tables.address_books, tables.address_books.c.id == book)
        self.assertEqual(team["version"], 4, "the restore is a change of the book")
        [restored] = rows(self.api, tables.ab_peers)
        self.assertEqual((restored["version"], restored["updated_by"]), (4, None))
        self.assertEqual(audit_actions(self.api)[1:], [
            "ab_rule.set", "ab_rule.set", "ab_rule.set", "ab_rule.set", "ab_rule.delete",
            "ab_peer.restore", "ab_bin.empty"])


    def test_create_a_shared_book(self):
        browser = self.signed_in()
        browser.get("/address-books")
        reply = browser.post("/address-books", {"name": "Support", "owner": "admin",
                                                "note": "helpdesk"})
        [book] = rows(self.api, tables.address_books)
        self.assertEqual((book["name"], book["owner_id"], book["personal"], book["note"]),
                         ("Support", self.admin_id, False, "helpdesk"))
        self.assertEqual(reply.header("location"), f"/address-books/{book['id']}")
        browser.post("/address-books", {"name": "Support", "owner": "admin"})
        self.assertIn(b"The name &#39;Support&#39; is taken", browser.get("/address-books").body)
        browser.post("/address-books", {"name": "Other", "owner": "ghost"})
        self.assertIn(b"There is no user &#39;ghost&#39;", browser.get("/address-books").body)
        self.assertEqual(audit_actions(self.api)[1:], ["ab.add"])


@on_both_backends
class StrategyActionTests(ConsoleCase):
    def test_create_edit_assign_delete(self):
        browser = self.signed_in()
        browser.get("/strategies")
        browser.post("/strategies", {"name": "locked"})
        [strategy] = rows(self.api, tables.strategies)
        self.assertEqual((strategy["options"], strategy["enabled"]), ("{}", True))
        path = f"/strategies/{strategy['id']}"
        browser.post(path, {"name": "locked down", "enabled": "on", "options":
                            "enable-file-transfer=N\r\n\r\napprove-mode = password\n"})
        [edited] = rows(self.api, tables.strategies)
        self.assertEqual(edited["name"], "locked down")
        self.assertEqual(edited["options"], '{"enable-file-transfer":"N","approve-mode":'
                                            '"password"}')
        self.assertGreater(edited["modified_at"], strategy["modified_at"])
        browser.post(path, {"name": "locked down", "options": "x"})
        self.assertIn(b"Line 1: write option=value", browser.get(path).body)
        browser.post(path, {"name": "locked down", "options": "a=1\na=2"})
        self.assertIn(b"Line 2: a is set twice", browser.get(path).body)
        device = add_device(self.api, "111222333")
        browser.post(path + "/assign", {"target_kind": "device", "name": "111222333"})
        browser.post(path + "/assign", {"target_kind": "user", "name": "admin"})
        self.assertEqual(rows(self.api, tables.devices)[0]["strategy_id"], strategy["id"])
        self.assertEqual(rows(self.api, tables.users)[0]["strategy_id"], strategy["id"])
        self.assertIn(b"<td class=\"num\">1</td>", browser.get("/strategies").body)
        browser.post(path + "/delete")
        self.assertEqual(rows(self.api, tables.strategies), [])
        self.assertIsNone(rows(self.api, tables.devices, tables.devices.c.id == device)[0][
            "strategy_id"])
        self.assertEqual(audit_actions(self.api)[1:], [
            "strategy.add", "strategy.edit", "strategy.assign", "strategy.assign",
            "strategy.delete"])

    def test_a_second_edit_in_the_same_second_still_moves_modified_at(self):
        browser = self.signed_in()
        browser.get("/strategies")
        browser.post("/strategies", {"name": "s"})
        [strategy] = rows(self.api, tables.strategies)
        path = f"/strategies/{strategy['id']}"
        browser.post(path, {"name": "s", "enabled": "on", "options": "a=1"})
        browser.post(path, {"name": "s", "enabled": "on", "options": "a=2"})
        stamps = [strategy["modified_at"]] + [r["modified_at"] for r in
                                              rows(self.api, tables.strategies)]
        self.assertEqual(stamps[1] - stamps[0], 2)


class KeyPageTests(ConsoleCase):
    def test_the_config_string_is_the_clients_format(self):
        """The client's own test vector (rustdesk src/custom_server.rs)."""
        self.assertEqual(
            config_string("1.1.1.1", "5Qbwsde3unUcJBtrx9ZkvUmwFNoExHzpryHuPUdqlWM="),
            "0nI900VsFHZVBVdIlncwpHS4V0bOZ0dtVldrpVO4JHdCp0YV5WdzUGZzdnYRVjI6ISeltmIsISMuEjLx4SMi"
            "ojI0N3boJye")

    def test_the_key_its_fingerprint_and_the_config_string(self):
        public = bytes(range(32))
        key = base64.b64encode(public).decode()
        with open(os.path.join(self.data_dir, "id_ed25519.pub"), "w") as f:
            f.write(key)
        body = self.signed_in().get("/keys").body.decode()
        self.assertIn(key, body)
        self.assertIn(fingerprint(public), body)
        self.assertIn(config_string("api.test", key, "http://api.test"), body)
        body = self.browser.get("/keys?host=rd.example.com&relay=relay.example.com"
                                "&api=https://rd.example.com").body.decode()
        self.assertIn(config_string("rd.example.com", key, "https://rd.example.com",
                                    "relay.example.com"), body)
        body = self.browser.get("/keys?host=a%20b").body.decode()
        self.assertIn("Not a host name or URL: host", body)

    def test_a_broken_key_file_is_said(self):
        with open(os.path.join(self.data_dir, "id_ed25519.pub"), "w") as f:
            f.write("not a key")
        self.assertIn(b"malformed public key", self.signed_in().get("/keys").body)


@on_both_backends
class TokenActionTests(ConsoleCase):
    def test_a_token_is_shown_once_stored_hashed_and_revoked(self):
        browser = self.signed_in()
        browser.get("/tokens")
        reply = browser.post("/tokens", {"name": "deploy", "days": "30",
                                         "scope_devices": "rw", "scope_audit": "r"})
        self.assertEqual(reply.status, 200)
        token = reply.body.split(b'<pre class="copy">')[1].split(b"</pre>")[0].decode()
        [row] = rows(self.api, tables.tokens, tables.tokens.c.kind == "api")
        self.assertEqual((row["token_hash"], row["scopes"], row["name"]),
                         (token_hash(token), "devices:rw,audit:r", "deploy"))
        self.assertEqual(row["expires_at"] - row["created_at"], 30 * 86400)
        listing = browser.get("/tokens").body
        self.assertIn(b"deploy", listing)
        self.assertNotIn(token.encode(), listing)
        details = " ".join(r["detail"] for r in rows(self.api, tables.audit_console))
        self.assertNotIn(token, details)
        browser.post(f"/tokens/{row['id']}/revoke")
        self.assertEqual(rows(self.api, tables.tokens, tables.tokens.c.kind == "api"), [])
        console_session = rows(self.api, tables.tokens)[0]
        browser.post(f"/tokens/{console_session['id']}/revoke")
        self.assertIn(b"No such API token", browser.get("/tokens").body)
        self.assertEqual(audit_actions(self.api)[1:], ["api_token.add", "api_token.revoke"])

    def test_bad_scopes_are_refused(self):
        browser = self.signed_in()
        browser.get("/tokens")
        browser.post("/tokens", {"name": "x", "days": "30", "scope_devices": "admin"})
        self.assertIn(b"Scope devices must be one of", browser.get("/tokens").body)
        self.assertEqual(rows(self.api, tables.tokens, tables.tokens.c.kind == "api"), [])

