"""A real ``twistd rustdesk-api`` on a free port: a private database, a login over real HTTP,
metrics, a clean stop; a read-only disk refused at start and a full one survived (503s, one
log line each way, ready again once there is space)."""

import json
import os
import sqlite3
import stat

import treq
from sqlalchemy import insert
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.accounts import hash_password
from rustdesk_twisted.api.db import Database, engine_url

from .livesupport import free_port_block, run_twistd, start_twistd, stop_twistd
from .test_hbbs_disk import MountedTestCase

LOGIN = {"username": "alice", "password": "alice-pass", "id": "123456789", "uuid": "dXVpZA==",
         "autoLogin": True, "type": "account", "deviceInfo": {"os": "linux", "type": "client",
                                                              "name": "box"}}


def add_user(directory):
    """alice, written beside a running server (SQLite's WAL lets both in)."""
    db = Database(engine_url(None, directory), reactor, in_thread_pool=False)
    db.open()
    try:
        now = reactor.seconds()
        db.run_now(lambda c: c.execute(insert(tables.users).values(
            name="alice", password_hash=hash_password("alice-pass"), display_name="", email="",
            note="", status=1, is_admin=False, totp_backup="[]", oidc_provider="",
            created_at=now, updated_at=now)))
    finally:
        db.close()


class ApiProcess:
    """``twistd -n rustdesk-api`` in ``directory`` on a free loopback port."""

    def __init__(self, test, directory):
        self.test = test
        self.directory = directory
        self.port = free_port_block((0,))
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    @inlineCallbacks
    def start(self, umask=None):
        self.process = yield start_twistd(
            reactor, "rustdesk-api", ["-p", str(self.port), "-b", "127.0.0.1", "--data-dir",
                                      self.directory, "--hbbs", "off"],
            self.directory, b"Listening on http", umask=umask).ready
        self.test.addCleanup(stop_twistd, self.process)

    @property
    def output(self):
        return self.process.output.decode(errors="replace")

    @inlineCallbacks
    def call(self, method, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = yield treq.request(method, self.url + path, json=body, headers=headers,
                                      reactor=reactor, persistent=False)
        text = yield response.text()
        return response.code, text


class LiveApiTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_private_database_login_metrics_and_clean_stop(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        api = ApiProcess(self, directory)
        yield api.start(umask=0)
        path = os.path.join(directory, "db_api.sqlite3")
        for name in ("db_api.sqlite3", "db_api.sqlite3-wal", "db_api.sqlite3-shm"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode), 0o600,
                             name)
        self.assertIn(f"created at schema revision {migrate.revisions()[-1]}", api.output)
        self.assertIn(f"API_DB_URL=sqlite:///{path}", api.output)
        add_user(directory)

        code, text = yield api.call("POST", "/api/login", LOGIN)
        self.assertEqual(code, 200, text)
        token = json.loads(text)["access_token"]
        code, text = yield api.call("POST", "/api/currentUser", {"id": "123456789"}, token)
        self.assertEqual((code, json.loads(text)["name"]), (200, "alice"))
        code, text = yield api.call("GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertIn('rustdesk_api_logins_total{result="ok"} 1.0', text)
        self.assertIn('rustdesk_api_requests_total{route="/api/login",status="200"} 1.0', text)
        self.assertIn("rustdesk_api_db_queue 0.0", text)

        yield stop_twistd(api.process)
        self.assertIn("Server Shut Down.", api.output)
        self.assertNotIn("Traceback", api.output)
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("pragma quick_check").fetchone(), ("ok",))
            self.assertEqual(conn.execute("select count(*) from tokens").fetchone(), (1,))
        finally:
            conn.close()
        self.assertNotIn(token, api.output)
        self.assertNotIn("alice-pass", api.output)


class ReadOnlyDiskTests(MountedTestCase):
    def test_read_only_mount_at_start(self):
        """One sentence naming the database, exit status 1, no traceback."""
        directory = self.mount("4m")
        path = os.path.join(directory, "db_api.sqlite3")
        db = Database(engine_url(path, directory), reactor, in_thread_pool=False)
        migrate.upgrade(db)
        db.close()
        self.remount(directory, "ro")
        code, output = run_twistd("rustdesk-api", ["--data-dir", directory, "--listen", "tcp:0",
                                                   "--hbbs", "off"])
        self.assertEqual(code, 1, output)
        self.assertIn(f"rustdesk-api: the database {path} is read-only", output)
        self.assertNotIn("Traceback", output)


class FullDiskTests(MountedTestCase):
    @inlineCallbacks
    def test_full_disk_gives_503_one_line_each_way_and_recovers(self):
        directory = self.mount("4m")
        api = ApiProcess(self, directory)
        yield api.start()
        add_user(directory)
        code, _ = yield api.call("POST", "/api/login", LOGIN)
        self.assertEqual(code, 200)
        filler = os.path.join(directory, "filler")
        with open(filler, "wb") as f:
            while True:
                try:
                    f.write(b"\0" * 65536)
                    f.flush()
                except OSError:
                    break
        answers = []
        for _ in range(20):
            answers.append((yield api.call("POST", "/api/login", LOGIN)))
        self.assertIn((503, '{"error":"the database is unavailable, try again later"}'),
                      answers)
        self.assertEqual({code for code, _ in answers} - {200, 503}, set())
        code, text = yield api.call("GET", "/readyz")
        self.assertEqual(code, 503)
        self.assertIn("full", text)
        self.assertEqual(api.output.count("requests get 503 until it works again"), 1,
                         api.output[-3000:])
        self.assertNotIn("Traceback", api.output)

        os.remove(filler)
        for _ in range(40):
            code, _ = yield api.call("GET", "/readyz")
            if code == 200:
                break
            yield deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(code, 200, "not ready again within 20 s of freeing the disk")
        code, _ = yield api.call("POST", "/api/login", LOGIN)
        self.assertEqual(code, 200)
        self.assertEqual(api.output.count("works again (failing for"), 1, api.output[-3000:])
        self.assertEqual(api.output.count("requests get 503 until it works again"), 1)
