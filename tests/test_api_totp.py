"""TOTP enrolment, backup codes and reset, and logins with them (API.md 1.1, Pro's 2FA)."""

import json
from urllib.parse import parse_qs, urlparse

import pyotp
from twisted.trial import unittest

from rustdesk_twisted.api import totp
from rustdesk_twisted.api.accounts import _use_backup_code
from rustdesk_twisted.api.app import at_once

from .apisupport import ApiHarness


class EnrolmentTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self)
        self.user_id = self.api.add_user("bob")
        self.two_factor = totp.TwoFactor(self.api.db, at_once, issuer="Example Corp")

    def user(self):
        return self.api.db.run_now(totp._user, self.user_id)

    def now(self):
        return self.api.clock.seconds()

    def code(self, secret):
        return pyotp.TOTP(secret).at(int(self.now()))

    def first_step(self, password="secret-pass"):
        return self.api.request("POST", "/api/login", {"username": "bob",
                                                       "password": password}).json()

    def second_step(self, first, code):
        return self.api.request("POST", "/api/login", {
            "username": "bob", "type": "email_code", "verificationCode": code, "tfaCode": code,
            "secret": first["secret"], "id": "1", "uuid": "u"}).json()

    def enrol(self):
        secret, _ = self.successResultOf(self.two_factor.start(self.user(), self.now()))
        codes = self.successResultOf(self.two_factor.confirm(self.user_id, self.code(secret),
                                                             self.now()))
        return secret, codes

    def test_start_gives_a_uri_for_the_qr_code_and_changes_no_login(self):
        secret, uri = self.successResultOf(self.two_factor.start(self.user(), self.now()))
        parsed = urlparse(uri)
        self.assertEqual((parsed.scheme, parsed.netloc), ("otpauth", "totp"))
        self.assertEqual(parse_qs(parsed.query)["secret"], [secret])
        self.assertEqual(parse_qs(parsed.query)["issuer"], ["Example Corp"])
        self.assertIn("bob", parsed.path)
        self.assertEqual(totp.state(self.user()), totp.PENDING)
        self.assertEqual(self.first_step()["type"], "access_token")

    def test_a_wrong_first_code_leaves_it_pending(self):
        secret, _ = self.successResultOf(self.two_factor.start(self.user(), self.now()))
        wrong = f"{(int(self.code(secret)) + 1) % 1_000_000:06d}"
        self.assertIsNone(self.successResultOf(
            self.two_factor.confirm(self.user_id, wrong, self.now())))
        self.assertEqual(totp.state(self.user()), totp.PENDING)

    def test_confirmed_enrolment_asks_logins_for_a_code(self):
        secret, codes = self.enrol()
        self.assertEqual(len(codes), 6)
        self.assertEqual(len(set(codes)), 6)
        self.assertTrue(all(len(code) == 6 and code.isdigit() for code in codes))
        stored = self.user()
        self.assertEqual((totp.state(stored), stored["totp_secret"]), (totp.ON, secret))
        self.assertIsNone(stored["totp_pending"])
        self.assertNotIn(codes[0], stored["totp_backup"])
        first = self.first_step()
        self.assertEqual(first["tfa_type"], "tfa_check")
        self.assertEqual(self.second_step(first, self.code(secret))["type"], "access_token")

    def test_restarted_enrolment_refuses_the_older_secret(self):
        older, _ = self.successResultOf(self.two_factor.start(self.user(), self.now()))
        self.successResultOf(self.two_factor.start(self.user(), self.now()))
        self.assertIsNone(self.successResultOf(
            self.two_factor.confirm(self.user_id, self.code(older), self.now())))
        self.assertEqual(totp.state(self.user()), totp.PENDING)

    def test_each_backup_code_logs_in_once(self):
        _, codes = self.enrol()
        self.assertEqual(self.second_step(self.first_step(), codes[2])["type"], "access_token")
        self.assertEqual(totp.backup_codes_left(self.user()), 5)
        again = self.second_step(self.first_step(), codes[2])
        self.assertEqual(again, {"error": "Wrong username or password"})
        self.assertEqual(self.second_step(self.first_step(), codes[3])["type"], "access_token")

    def test_a_backup_code_raced_by_two_logins_counts_once(self):
        self.enrol()
        before = self.user()["totp_backup"]
        after = json.dumps(json.loads(before)[1:])
        self.assertTrue(self.api.db.run_now(_use_backup_code, self.user_id, before, after))
        self.assertFalse(self.api.db.run_now(_use_backup_code, self.user_id, before, after))

    def test_new_backup_codes_replace_the_old(self):
        _, old = self.enrol()
        new = self.successResultOf(self.two_factor.new_backup_codes(self.user_id, self.now()))
        self.assertEqual(len(new), 6)
        self.assertIn("error", self.second_step(self.first_step(), old[0]))
        self.assertEqual(self.second_step(self.first_step(), new[0])["type"], "access_token")

    def test_no_backup_codes_while_totp_is_off(self):
        self.assertIsNone(self.successResultOf(
            self.two_factor.new_backup_codes(self.user_id, self.now())))
        self.assertEqual(totp.backup_codes_left(self.user()), 0)

    def test_disable_returns_to_password_only(self):
        self.enrol()
        self.assertTrue(self.successResultOf(self.two_factor.disable(self.user_id, self.now())))
        stored = self.user()
        self.assertEqual((totp.state(stored), totp.backup_codes_left(stored)), (totp.OFF, 0))
        self.assertEqual(self.first_step()["type"], "access_token")
        self.assertFalse(self.successResultOf(self.two_factor.disable(self.user_id, self.now())))
