"""Accounts over HTTP: login, TOTP, tokens, currentUser, logout, throttling (API.md 1.1)."""

import pyotp
from twisted.trial import unittest

from rustdesk_twisted.api.accounts import LoginThrottle, token_hash
from rustdesk_twisted.api import tables
from sqlalchemy import select

from .apisupport import ApiHarness, on_both_backends


@on_both_backends
class LoginTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self)
        self.api.add_user("alice", email="alice@example.com", is_admin=True)

    def test_password_login_gives_a_token_and_the_user_with_info(self):
        reply = self.api.request("POST", "/api/login", {
            "username": "alice", "password": "secret-pass", "id": "123456789",
            "uuid": "dXVpZA==", "autoLogin": True, "type": "account",
            "deviceInfo": {"os": "linux", "type": "client", "name": "box"}})
        self.assertEqual(reply.status, 200)
        body = reply.json()
        self.assertEqual(body["type"], "access_token")
        self.assertEqual(body["user"]["name"], "alice")
        self.assertEqual(body["user"]["info"]["login_device_whitelist"], [])
        self.assertTrue(body["user"]["is_admin"])
        stored = self.api.db.run_now(lambda c: c.execute(select(tables.tokens)).first())
        self.assertEqual(stored.token_hash, token_hash(body["access_token"]))
        self.assertNotIn(body["access_token"], repr(tuple(stored)))
        self.assertEqual(stored.rustdesk_id, "123456789")

    def test_wrong_password_is_an_error_without_a_token(self):
        body = self.api.request("POST", "/api/login",
                                {"username": "alice", "password": "nope"}).json()
        self.assertEqual(body, {"error": "Wrong username or password"})
        body = self.api.request("POST", "/api/login",
                                {"username": "mallory", "password": "nope"}).json()
        self.assertEqual(body, {"error": "Wrong username or password"})

    def test_current_user_and_logout(self):
        token = self.api.login("alice")
        reply = self.api.request("POST", "/api/currentUser", {"id": "1", "uuid": "u"}, token=token)
        self.assertEqual(reply.json()["name"], "alice")
        self.assertEqual(self.api.request("POST", "/api/logout", {}, token=token).status, 200)
        reply = self.api.request("POST", "/api/currentUser", {}, token=token)
        self.assertEqual((reply.status, reply.json()), (401, {"error": "Invalid token"}))

    def test_expired_token_is_refused(self):
        token = self.api.login("alice")
        self.api.clock.advance(31 * 24 * 3600)
        self.assertEqual(self.api.request("POST", "/api/currentUser", {}, token=token).status,
                         401)

    def test_disabled_user_cannot_log_in_and_loses_its_tokens(self):
        token = self.api.login("alice")
        self.api.db.run_now(lambda c: c.execute(tables.users.update().values(status=0)))
        self.assertEqual(self.api.request("POST", "/api/currentUser", {}, token=token).status,
                         401)
        self.assertIsNone(self.api.login("alice"))

    def test_totp_second_step(self):
        secret = pyotp.random_base32()
        self.api.add_user("bob", totp_secret=secret)
        first = self.api.request("POST", "/api/login",
                                 {"username": "bob", "password": "secret-pass"}).json()
        self.assertEqual((first["type"], first["tfa_type"]), ("email_check", "tfa_check"))
        self.assertNotIn("access_token", first)
        code = pyotp.TOTP(secret).at(int(self.api.clock.seconds()))
        second = self.api.request("POST", "/api/login", {
            "username": "bob", "type": "email_code", "verificationCode": code, "tfaCode": code,
            "secret": first["secret"], "id": "1", "uuid": "u"}).json()
        self.assertEqual(second["type"], "access_token")
        self.assertEqual(second["user"]["name"], "bob")

    def test_totp_wrong_code_and_replayed_secret_fail(self):
        secret = pyotp.random_base32()
        self.api.add_user("bob", totp_secret=secret)
        first = self.api.request("POST", "/api/login",
                                 {"username": "bob", "password": "secret-pass"}).json()
        wrong = self.api.request("POST", "/api/login", {
            "username": "bob", "type": "email_code", "tfaCode": "000000",
            "secret": first["secret"]}).json()
        self.assertIn("error", wrong)
        code = pyotp.TOTP(secret).at(int(self.api.clock.seconds()))
        again = self.api.request("POST", "/api/login", {
            "username": "bob", "type": "email_code", "tfaCode": code,
            "secret": first["secret"]}).json()
        self.assertIn("error", again)

    def test_guessing_is_throttled_per_account(self):
        for _ in range(10):
            self.api.request("POST", "/api/login", {"username": "alice", "password": "x"},
                             client="198.51.100.1")
        body = self.api.request("POST", "/api/login",
                                {"username": "alice", "password": "secret-pass"}).json()
        self.assertEqual(body, {"error": "Too many failed attempts, try again later"})
        self.api.clock.advance(301)
        self.assertIsNotNone(self.api.login("alice"))


@on_both_backends
class BadInputTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self, max_body=1024)

    def test_not_json_wrong_type_and_too_large_are_4xx_json(self):
        for raw, status in ((b"{nope", 400), (b"[1,2]", 400), (b'{"username": 5}', 400),
                            (b"[" * 100_000, 413), (b"x" * 5000, 413)):
            reply = self.api.request("POST", "/api/login", raw=raw)
            self.assertEqual(reply.status, status, raw[:20])
            self.assertIn("error", reply.json())

    def test_unknown_path_and_method(self):
        self.assertEqual(self.api.request("GET", "/api/nothing").status, 404)
        self.assertEqual(self.api.request("DELETE", "/api/login").status, 405)

    def test_head_login_options_is_the_tls_probe(self):
        reply = self.api.request("HEAD", "/api/login-options")
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertEqual(self.api.request("GET", "/api/login-options").json(), [])


class ThrottleTests(unittest.TestCase):
    def test_sources_count_per_slash_64(self):
        throttle = LoginThrottle(per_source=2, per_user=100)
        throttle.failed("2001:db8::1", "a", 0)
        throttle.failed("2001:db8::2", "b", 1)
        self.assertEqual(throttle.refused("2001:db8::3", "c", 2), "source")
        self.assertIsNone(throttle.refused("2001:db8:1::3", "c", 2))
        self.assertIsNone(throttle.refused("2001:db8::3", "c", 301))
