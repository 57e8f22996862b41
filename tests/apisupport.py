"""An API server in memory: a real database, a Clock, and HTTP over iosim.

``ApiHarness(testcase)`` builds :class:`~rustdesk_twisted.api.app.ApiApp` on a
fresh database (a SQLite file in the test's temporary directory), with
statements and password hashing run at once (no threads), and speaks real
HTTP/1.1 to its site through in-memory transports, so every request is parsed
exactly as on a socket.

``@on_both_backends`` on a test case adds its PostgreSQL twin: the same tests,
each on a fresh PostgreSQL database of its own (tests/services.py).
"""

import json
import os
import re
import sys
from urllib.parse import urlencode

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web._newclient import HTTP11ClientProtocol, Request
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from rustdesk_twisted.api import migrate
from rustdesk_twisted.api.accounts import hash_password
from rustdesk_twisted.api.app import ApiApp, at_once
from rustdesk_twisted.api.db import Database, engine_url
from rustdesk_twisted.api import tables
from sqlalchemy import insert
from io import BytesIO

from .services import fresh_postgres_database


def database_url(testcase):
    """The database a test works on: its fresh PostgreSQL one in a PostgreSQL twin, else a new
    SQLite file in its temporary directory."""
    return getattr(testcase, "postgres_url", None) or os.path.abspath(testcase.mktemp())


class _OnPostgres:
    """Mixed in before a test case: each test first gets a fresh PostgreSQL database."""

    def setUp(self):
        self.postgres_url = fresh_postgres_database(self)
        return super().setUp()


def on_both_backends(cls):
    """Class decorator: keep ``cls`` (SQLite) and add ``<Name>OnPostgres`` beside it in its
    module, the same tests on PostgreSQL (tests/services.py: skipped where PostgreSQL is not
    installed, except in CI)."""
    twin = type(cls.__name__ + "OnPostgres", (_OnPostgres, cls),
                {"__module__": cls.__module__, "__qualname__": cls.__qualname__ + "OnPostgres"})
    setattr(sys.modules[cls.__module__], twin.__name__, twin)
    return cls


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class ApiHarness:
    def __init__(self, testcase, url=None, clock=None, **app_options):
        if clock is None:
            clock = MemoryReactorClock()
            clock.advance(1_800_000_000)
        self.clock = clock
        self.db = Database(engine_url(url or database_url(testcase), "."), self.clock,
                           in_thread_pool=False)
        testcase.addCleanup(self.db.close)
        migrate.upgrade(self.db)
        self.app = ApiApp(self.db, self.clock, at_once, **app_options)
        self.site = self.app.site()

    def add_user(self, name, password="secret-pass", **fields):
        now = self.clock.seconds()
        row = {"name": name, "password_hash": hash_password(password), "display_name": "",
               "email": "", "note": "", "status": 1, "is_admin": False, "totp_backup": "[]",
               "oidc_provider": "", "created_at": now, "updated_at": now}
        row.update(fields)
        return self.db.run_now(
            lambda c: c.execute(insert(tables.users).values(**row)).inserted_primary_key[0])

    def login(self, name, password="secret-pass", **extra):
        body = {"username": name, "password": password, "id": "123456789", "uuid": "dXVpZA==",
                "autoLogin": True, "type": "account",
                "deviceInfo": {"os": "linux", "type": "client", "name": "host"}}
        body.update(extra)
        reply = self.request("POST", "/api/login", body)
        return reply.json().get("access_token")

    def request(self, method, path, body=None, token=None, headers=None, raw=None,
                client="192.0.2.10"):
        """One HTTP request on a new connection; the Response once the site has answered."""
        server = self.site.buildProtocol(IPv4Address("TCP", client, 40000))
        client_protocol = HTTP11ClientProtocol()
        all_headers = Headers({b"host": [b"api.test"]})
        if token is not None:
            all_headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
        for name, value in (headers or {}).items():
            all_headers.addRawHeader(name.encode(), value.encode())
        if raw is not None:
            payload = raw
        elif body is not None:
            payload = json.dumps(body).encode()
            all_headers.addRawHeader(b"content-type", b"application/json")
        else:
            payload = None
        producer = FileBodyProducer(BytesIO(payload), cooperator=_Immediate()) \
            if payload is not None else None
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client_protocol,
            iosim.makeFakeClient(client_protocol), greet=False, clock=self.clock)
        pump.serverIO.hostAddress = IPv4Address("TCP", "127.0.0.1", 21114)
        pump.serverIO.peerAddress = IPv4Address("TCP", client, 40000)
        result = {}
        d = client_protocol.request(Request(method.encode(), path.encode(), all_headers,
                                            producer, persistent=False))

        def got(response):
            result["response"] = response
            return readBody(response).addCallback(lambda body: result.update(body=body))
        d.addCallback(got)
        d.addErrback(lambda failure: result.update(failure=failure))
        pump.flush()
        for _ in range(100):
            if "body" in result or "failure" in result:
                break
            pump.flush()
        if "failure" in result:
            result["failure"].raiseException()
        response = result["response"]
        return Response(response.code, response.headers, result["body"])


class FormClient:
    """A browser in miniature for the web console: keeps cookies, posts forms from this site.

    Every HTML page it gets leaves its CSRF token in ``csrf``; :meth:`post` sends it
    unless told otherwise, with ``Origin`` naming the harness's host.
    """

    ORIGIN = "http://api.test"

    def __init__(self, api, client="192.0.2.10"):
        self.api = api
        self.client = client
        self.cookies = {}
        self.csrf = None

    def request(self, method, path, raw=None, headers=None):
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        reply = self.api.request(method, path, raw=raw, headers=all_headers, client=self.client)
        for value in reply.headers.getRawHeaders(b"set-cookie") or []:
            name, _, rest = value.decode().partition("=")
            if "Max-Age=0" in rest:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";")[0]
        found = re.search(rb'name="csrf" value="([^"]+)"', reply.body)
        if found:
            self.csrf = found.group(1).decode()
        return reply

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, fields=None, csrf=True, origin=ORIGIN):
        fields = dict(fields or {})
        if csrf and "csrf" not in fields:
            fields["csrf"] = self.csrf or ""
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["origin"] = origin
        return self.request("POST", path, urlencode(fields).encode(), headers)

    def sign_in(self, name, password="secret-pass", code=""):
        self.get("/login")
        return self.post("/login", {"name": name, "password": password, "code": code})


class _Immediate:
    """A cooperator that runs a body producer's steps at once."""

    def cooperate(self, iterator):
        for _ in iterator:
            pass
        return _Done()


class _Done:
    def whenDone(self):
        d = Deferred()
        d.callback(None)
        return d

    def stop(self):
        pass
