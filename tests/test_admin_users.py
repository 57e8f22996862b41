"""rustdesk-admin user/token: API accounts from the command line, checked against the API."""

import io
import json
import os
import subprocess
import sys

from sqlalchemy import select
from twisted.trial.unittest import TestCase

from rustdesk_twisted import admin
from rustdesk_twisted.api import tables, usercommands
from rustdesk_twisted.api.accounts import token_hash
from rustdesk_twisted.api.users import UserError
from rustdesk_twisted.config import layered_settings

from .apisupport import ApiHarness

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_000.0


class Terminal(io.StringIO):
    def isatty(self):
        return True


class UserCommandTests(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.db_path = os.path.join(self.dir, "db_api.sqlite3")
        self.password_file = os.path.join(self.dir, "pw")
        with open(self.password_file, "w") as f:
            f.write("correct horse\n")

    def admin(self, *argv, stdin=None, answers=(), environ=None):
        """(stdout, stderr) of one command, as rustdesk-admin parses it."""
        args = admin.build_parser().parse_args(["--data-dir", self.dir, *argv])
        out, err = io.StringIO(), io.StringIO()
        replies = iter(answers)
        usercommands.run(args, layered_settings(environ or {}, self.dir), self.dir, out, err,
                         now=NOW, stdin=stdin or io.StringIO(), ask=lambda _: next(replies))
        return out.getvalue(), err.getvalue()

    def api(self):
        return ApiHarness(self, url=self.db_path)

    def test_added_user_logs_in_to_the_api(self):
        out, _ = self.admin("user", "add", "alice", "--admin", "--password-file",
                            self.password_file)
        self.assertEqual(out, "user alice added (administrator)\n")
        api = self.api()
        token = api.login("alice", "correct horse")
        user = api.request("POST", "/api/currentUser", {}, token=token).json()
        self.assertEqual((user["name"], user["is_admin"]), ("alice", True))
        self.assertIsNone(api.login("alice", "wrong"))

    def test_password_prompt_twice_or_stdin(self):
        self.admin("user", "add", "bob", stdin=Terminal(), answers=("s3cret-pw", "s3cret-pw"))
        self.admin("user", "add", "carol", "--password-file", "-",
                   stdin=io.StringIO("from-stdin-pw\n"))
        api = self.api()
        self.assertIsNotNone(api.login("bob", "s3cret-pw"))
        self.assertIsNotNone(api.login("carol", "from-stdin-pw"))

    def test_bad_passwords_and_names_are_refused(self):
        with self.assertRaisesRegex(UserError, "differ"):
            self.admin("user", "add", "bob", stdin=Terminal(), answers=("s3cret-pw", "other-pw"))
        with self.assertRaisesRegex(UserError, "no terminal"):
            self.admin("user", "add", "bob")
        with self.assertRaisesRegex(UserError, "at least 8"):
            self.admin("user", "add", "bob", "--password-file", "-", stdin=io.StringIO("short"))
        with self.assertRaisesRegex(UserError, "invalid user name"):
            self.admin("user", "add", "two words", "--password-file", self.password_file)
        self.admin("user", "add", "bob", "--password-file", self.password_file)
        with self.assertRaisesRegex(UserError, "exists already"):
            self.admin("user", "add", "bob", "--password-file", self.password_file)
        with self.assertRaisesRegex(UserError, "no user 'nobody'"):
            self.admin("user", "disable", "nobody")

    def test_passwd_ends_the_sessions(self):
        self.admin("user", "add", "alice", "--password-file", self.password_file)
        api = self.api()
        token = api.login("alice", "correct horse")
        out, _ = self.admin("user", "passwd", "alice", "--password-file", "-",
                            stdin=io.StringIO("new password\n"))
        self.assertEqual(out, "password of alice changed, 1 session ended\n")
        self.assertEqual(api.request("POST", "/api/currentUser", {}, token=token).status, 401)
        self.assertIsNone(api.login("alice", "correct horse"))
        self.assertIsNotNone(api.login("alice", "new password"))

    def test_disable_ends_sessions_and_enable_restores_logins(self):
        self.admin("user", "add", "alice", "--password-file", self.password_file)
        api = self.api()
        token = api.login("alice", "correct horse")
        api.login("alice", "correct horse")
        self.assertEqual(self.admin("user", "disable", "alice")[0],
                         "alice disabled, 2 sessions ended\n")
        self.assertIsNone(api.login("alice", "correct horse"))
        self.assertEqual(self.admin("user", "enable", "alice")[0], "alice enabled\n")
        self.assertEqual(api.request("POST", "/api/currentUser", {}, token=token).status, 401)
        self.assertIsNotNone(api.login("alice", "correct horse"))

    def test_list_as_table_and_json(self):
        self.admin("user", "add", "alice", "--admin", "--password-file", self.password_file)
        self.admin("user", "add", "bob", "--password-file", self.password_file)
        self.admin("user", "disable", "bob")
        out, _ = self.admin("user", "list")
        self.assertEqual(out, "NAME   ADMIN  STATUS    2FA  OIDC  CREATED\n"
                              "alice  yes    enabled   off  -     2027-01-15T08:00:00Z\n"
                              "bob    no     disabled  off  -     2027-01-15T08:00:00Z\n"
                              "2 users\n")
        listed = json.loads(self.admin("user", "list", "--json")[0])
        self.assertEqual(listed[1], {"name": "bob", "admin": "no", "status": "disabled",
                                     "2fa": "off", "oidc": "-",
                                     "created": "2027-01-15T08:00:00Z"})

    def test_totp_reset(self):
        self.admin("user", "add", "alice", "--password-file", self.password_file)
        api = self.api()
        api.db.run_now(lambda c: c.execute(tables.users.update().values(
            totp_secret="JBSWY3DPEHPK3PXP", totp_backup='["x"]')))
        self.assertEqual(api.request("POST", "/api/login", {"username": "alice", "password":
                                     "correct horse"}).json()["tfa_type"], "tfa_check")
        self.assertEqual(self.admin("user", "totp-reset", "alice")[0],
                         "two-factor login of alice turned off\n")
        self.assertIsNotNone(api.login("alice", "correct horse"))
        self.assertEqual(self.admin("user", "totp-reset", "alice")[0],
                         "two-factor login of alice was off\n")

    def test_token_create_prints_it_once_and_stores_its_hash(self):
        with self.assertRaisesRegex(UserError, "no enabled administrator"):
            self.admin("token", "create", "--name", "deploy", "--scopes", "devices:rw")
        self.admin("user", "add", "alice", "--admin", "--password-file", self.password_file)
        out, err = self.admin("token", "create", "--name", "deploy", "--scopes",
                              "devices:r,devices:rw,audit:r", "--days", "10")
        token = out.strip()
        self.assertIn("shown once", err)
        self.assertNotIn(token, err)
        api = self.api()
        row = api.db.run_now(lambda c: c.execute(select(tables.tokens)).first())
        self.assertEqual((row.kind, row.name, row.scopes, row.expires_at),
                         ("api", "deploy", "audit:r,devices:rw", NOW + 10 * 86400))
        self.assertEqual(row.token_hash, token_hash(token))
        self.assertEqual(api.request("POST", "/api/currentUser", {}, token=token).json()["name"],
                         "alice")
        with self.assertRaisesRegex(UserError, "1 to 36500 days"):
            self.admin("token", "create", "--name", "x", "--scopes", "ab:r", "--days", "0")
        with self.assertRaisesRegex(UserError, "invalid scope 'devices:all'"):
            self.admin("token", "create", "--name", "x", "--scopes", "devices:all")

    def test_api_db_url_from_the_data_directory_env_file(self):
        elsewhere = os.path.join(self.dir, "elsewhere.sqlite3")
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write(f"API_DB_URL={elsewhere}\n")
        self.admin("user", "add", "alice", "--password-file", self.password_file)
        self.assertTrue(os.path.exists(elsewhere))
        self.assertFalse(os.path.exists(self.db_path))


class UserCommandLineTests(TestCase):
    """The console script: exit status and one line on standard error, no traceback."""

    def run_admin(self, *argv, stdin=""):
        return subprocess.run([sys.executable, "-m", "rustdesk_twisted.admin", "--data-dir",
                               self.dir, *argv], input=stdin, capture_output=True, text=True,
                              timeout=60, cwd=REPOSITORY)

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_add_list_and_errors(self):
        done = self.run_admin("user", "add", "alice", "--admin", "--password-file", "-",
                              stdin="long enough\n")
        self.assertEqual((done.returncode, done.stdout), (0, "user alice added (administrator)\n"),
                         done.stderr)
        done = self.run_admin("user", "list", "--json")
        self.assertEqual([user["name"] for user in json.loads(done.stdout)], ["alice"])
        for argv in (("user", "add", "bob"), ("user", "passwd", "nobody", "--password-file", "-"),
                     ("token", "create", "--name", "t", "--scopes", "nothing")):
            done = self.run_admin(*argv, stdin="long enough\n")
            self.assertEqual(done.returncode, 1, argv)
            self.assertTrue(done.stderr.startswith("rustdesk-admin: "), done.stderr)
            self.assertNotIn("Traceback", done.stderr)
