"""Real services for the tests: PostgreSQL, headless Chromium, an OpenID Connect provider.

They come from Debian's packages (and npm, for the provider), which .ci/run installs; it also
starts PostgreSQL. Where one is missing a test skips, except under CI=true, where it fails:
CI is where they must all be present.

PostgreSQL:  postgres_url(), fresh_postgres_database(testcase)
Chromium:    browser(testcase), screenshot(driver, name)
OpenID:      oidc_provider(testcase, redirect_uri)
"""

import atexit
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import unittest
import uuid
from http.cookiejar import CookieJar
from urllib.parse import urljoin, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from treq.client import HTTPClient
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent

__all__ = ["browser", "fresh_postgres_database", "oidc_provider", "postgres_url", "screenshot"]

TESTS = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(TESTS)
PGCLUSTER = os.path.join(TESTS, "pgcluster.sh")
OIDC_DIRECTORY = os.path.join(TESTS, "oidc-provider")
# pgcluster.sh's exit status when no PostgreSQL server binaries are installed.
NO_POSTGRES = 3
START_SECONDS = 30
NPM_SECONDS = 100


def missing(what):
    """A service the test needs is absent: a skip for a developer, a failure in CI."""
    message = f"{what} is not installed"
    if os.environ.get("CI") == "true":
        raise AssertionError(message)
    raise unittest.SkipTest(message)


_cluster = {}


def postgres_url():
    """The ``postgresql://postgres@127.0.0.1:PORT/rustdesk_test`` URL of a running server.

    .ci/run starts one and exports it as RUSTDESK_TEST_POSTGRES; without that, the first call
    starts a private cluster for this test process (stopped at exit), if PostgreSQL is
    installed. The URL suits psycopg as it is; SQLAlchemy wants ``postgresql+psycopg://``.
    """
    url = os.environ.get("RUSTDESK_TEST_POSTGRES")
    if url:
        return url
    if "url" not in _cluster:
        directory = tempfile.mkdtemp(prefix="rustdesk-pg-")
        started = subprocess.run(["bash", PGCLUSTER, "start", directory],
                                 capture_output=True, text=True)
        if started.returncode:
            subprocess.run(["bash", PGCLUSTER, "stop", directory], capture_output=True)
            if started.returncode == NO_POSTGRES:
                missing("PostgreSQL (Debian package postgresql)")
            raise RuntimeError(f"pgcluster.sh start failed:\n{started.stderr}")
        atexit.register(subprocess.run, ["bash", PGCLUSTER, "stop", directory],
                        capture_output=True)
        _cluster["url"] = started.stdout.strip()
    return _cluster["url"]


def fresh_postgres_database(testcase):
    """A new empty database for this test, dropped in its cleanup; returns its URL.

    The URL has the form of postgres_url()'s. Dropping forces out connections a server under
    test still holds, so a test that forgets to close its pool does not leak the database.
    """
    server = postgres_url()
    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} STRATEGY = FILE_COPY").format(
            sql.Identifier(name)))
    testcase.addCleanup(_drop_database, server, name)
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def _drop_database(server, name):
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def browser(testcase):
    """A Deferred firing with a headless Chromium WebDriver (selenium), quit in cleanup.

    Every WebDriver call blocks until the browser answers: when this reactor serves the page,
    make the calls through twisted.internet.threads.deferToThread, or the page never loads.
    """
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        missing("Chromium (Debian packages chromium and chromium-driver)")
    profile = tempfile.mkdtemp(prefix="rustdesk-chromium-")
    testcase.addCleanup(shutil.rmtree, profile, ignore_errors=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", f"--user-data-dir={profile}", "--window-size=1280,900",
                     "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(argument)
    if os.getuid() == 0:
        options.add_argument("--no-sandbox")
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)

    def started(driver):
        testcase.addCleanup(deferToThread, driver.quit)
        return driver

    return deferToThread(webdriver.Chrome, service=service, options=options).addCallback(started)


def screenshot(driver, name):
    """Write the page as NAME.png where people look after the run; returns the path.

    The directory is $RUSTDESK_SCREENSHOTS, else test-screenshots/ at the top of the checkout.
    A blocking WebDriver call, like the others.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"screenshot name {name!r}: letters, digits, '.', '_', '-' only")
    directory = os.environ.get("RUSTDESK_SCREENSHOTS") or os.path.join(REPOSITORY,
                                                                        "test-screenshots")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".png")
    with open(path, "wb") as f:
        f.write(driver.get_screenshot_as_png())
    return path


class OIDCLoginError(Exception):
    """The provider did not lead a scripted login back to the redirect URI."""


class OpenIDProvider:
    """A running oidc-provider with one confidential client (client_secret_basic at the token
    endpoint, PKCE optional, as oidc-provider does for confidential clients by default).

    Claims: ``sub`` (the login), and with the scopes ``email`` and ``profile`` the ``email``,
    ``email_verified`` and ``name`` given to login(). As OIDC Core says for the code flow, the
    id_token carries ``sub`` only; the other claims come from the userinfo endpoint.
    """

    def __init__(self, issuer, client_id, client_secret, redirect_uri):
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.discovery_url = issuer + "/.well-known/openid-configuration"

    def login(self, authorization_url, username, email=None, name=None):
        """Do what a person's browser does at the provider; a Deferred firing with the final
        redirect to the redirect URI (carrying code, state and iss), which is not followed.

        ``email`` and ``name`` become the account's claims when given.
        """
        form = {"login": username, "email": email or "", "name": name or ""}
        return Deferred.fromCoroutine(self._login(authorization_url, form))

    async def _login(self, url, form):
        client = HTTPClient(Agent(reactor), cookiejar=CookieJar())
        method, data = "GET", None
        for _ in range(12):
            response = await client.request(method, url, data=data, allow_redirects=False,
                                            timeout=START_SECONDS)
            body = await response.content()
            location = response.headers.getRawHeaders(b"location", [b""])[0].decode()
            if response.code in (302, 303) and location:
                url, method, data = urljoin(url, location), "GET", None
                if url.startswith(self.redirect_uri):
                    return url
            elif response.code == 200 and method == "GET" and "/interaction/" in url:
                method, data = "POST", form
            else:
                raise OIDCLoginError(f"{method} {url} answered {response.code}: "
                                     f"{body[:500].decode(errors='replace')}")
        raise OIDCLoginError(f"no redirect to {self.redirect_uri} after 12 requests")


class _ProviderProcess(protocol.ProcessProtocol):
    """Fires ``issuer`` with the URL the provider prints once it listens."""

    def __init__(self):
        self.output = b""
        self.issuer = Deferred()
        self.ended = Deferred()

    def outReceived(self, data):
        self.output += data
        found = re.search(rb"^issuer (\S+)\n", self.output, re.MULTILINE)
        if found and not self.issuer.called:
            self.issuer.callback(found.group(1).decode())

    def errReceived(self, data):
        self.output += data

    def processEnded(self, reason):
        if not self.issuer.called:
            self.issuer.errback(RuntimeError(
                "oidc-provider exited:\n" + self.output.decode(errors="replace")))
        self.ended.callback(None)

    def stop(self):
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended


def _node_modules():
    """npm ci in tests/oidc-provider when its lock file is newer than the installed tree;
    flock keeps parallel trial workers from installing at once."""
    script = ("test node_modules/.package-lock.json -nt package-lock.json"
              " || npm ci --no-audit --no-fund --loglevel=error")
    done = getProcessOutputAndValue(shutil.which("flock"), [OIDC_DIRECTORY, "sh", "-c", script],
                                    env=os.environ, path=OIDC_DIRECTORY)

    def checked(result):
        out, err, code = result
        if code:
            raise RuntimeError(f"npm ci failed ({code}):\n{(out + err).decode(errors='replace')}")

    return done.addCallback(checked).addTimeout(NPM_SECONDS, reactor)


def oidc_provider(testcase, redirect_uri):
    """A Deferred firing with an OpenIDProvider whose one client may redirect to
    ``redirect_uri`` (the API's ``<base>/api/oidc/callback``); stopped in cleanup."""
    if not (shutil.which("node") and shutil.which("npm")):
        missing("Node.js (20 or later) and npm")
    client_id, client_secret = "rustdesk-api", secrets.token_urlsafe(24)

    def start(_):
        process = _ProviderProcess()
        config = {"client_id": client_id, "client_secret": client_secret,
                  "redirect_uris": [redirect_uri]}
        node = shutil.which("node")
        reactor.spawnProcess(process, node, [node, "server.mjs", json.dumps(config)],
                             env=os.environ, path=OIDC_DIRECTORY)
        testcase.addCleanup(process.stop)
        return process.issuer.addTimeout(START_SECONDS, reactor)

    d = _node_modules().addCallback(start)
    return d.addCallback(OpenIDProvider, client_id, client_secret, redirect_uri)
