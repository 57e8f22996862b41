"""schemathesis against a real ``twistd rustdesk-api``: every operation of /openapi.json,
generated and mutated inputs, zero 5xx (issue 11), and no internal-error line in its log."""

import os
import shutil
import sys

from sqlalchemy import insert
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.accounts import hash_password, token_hash
from rustdesk_twisted.api.db import Database, engine_url

from .livesupport import free_port_block, start_twistd, stop_twistd

SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
TOKEN = "fuzz-admin-token-0123456789abcdef"
# Revoking the fuzzer's own token would turn every later call into a 401.
SPARED = "^/api/logout$"


def seed(directory, now):
    """An admin user with a known bearer token in a fresh API database."""
    db = Database(engine_url(None, directory), reactor, in_thread_pool=False)
    try:
        migrate.upgrade(db)

        def rows(c):
            user_id = c.execute(insert(tables.users).values(
                name="admin", password_hash=hash_password("admin-pass"), status=1,
                is_admin=True, created_at=now, updated_at=now)).inserted_primary_key[0]
            c.execute(insert(tables.tokens).values(
                user_id=user_id, token_hash=token_hash(TOKEN), kind="session", created_at=now,
                expires_at=now + 86400, last_used_at=now))
        db.run_now(rows)
    finally:
        db.close()


class SchemathesisTests(unittest.TestCase):
    timeout = 600

    @inlineCallbacks
    def test_no_server_error_anywhere(self):
        if not os.path.exists(SCHEMATHESIS):
            raise unittest.SkipTest("schemathesis is not installed (pip install '.[test]')")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        seed(directory, reactor.seconds())
        port = free_port_block((0,))
        server = start_twistd(reactor, "rustdesk-api",
                              ["-p", str(port), "-b", "127.0.0.1", "--data-dir", directory,
                               "--hbbs", "off"], directory, b"Listening on http")
        self.addCleanup(stop_twistd, server)
        yield server.ready
        out, err, code = yield getProcessOutputAndValue(SCHEMATHESIS, [
            "run", f"http://127.0.0.1:{port}/openapi.json",
            "--checks", "not_a_server_error", "-H", f"Authorization: Bearer {TOKEN}",
            "--exclude-path-regex", SPARED, "--max-examples", "30", "--workers", "2",
            "--suppress-health-check", "all", "--no-color"],
            env=dict(os.environ, SCHEMATHESIS_HOOKS=""), path=directory)
        report = (out + err).decode(errors="replace")
        self.assertEqual(code, 0, report[-6000:])
        self.assertNotIn(b"internal error", server.output, server.output[-4000:])
        self.assertNotIn(b"Traceback", server.output, server.output[-4000:])
        shutil.rmtree(os.path.join(directory, ".hypothesis"), ignore_errors=True)


class DocumentTests(unittest.TestCase):
    def test_every_route_is_documented(self):
        from .apisupport import ApiHarness
        api = ApiHarness(self)
        document = api.request("GET", "/openapi.json").json()
        served = {(route.method.lower(), route.pattern) for route in api.app.router.routes}
        listed = {(method, path) for path, operations in document["paths"].items()
                  for method in operations}
        self.assertEqual(served, listed)
        undocumented = [f"{route.method} {route.pattern}" for route in api.app.router.routes
                        if not route.summary or route.reply is None]
        self.assertEqual(undocumented, [], "routes need a summary and a reply schema")
