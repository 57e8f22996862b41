"""The web console in a real headless Chromium against real ``twistd rustdesk-api`` and
``rustdesk-hbbs`` processes: sign in, add a user, edit a strategy, look at devices (online
state from hbbs), change a device's ID through hbbs's console, read the audit logs, see the
server key, create an API token, sign out.

Each step leaves a screenshot (tests/services.screenshot: $RUSTDESK_SCREENSHOTS, else
test-screenshots/ at the top of the checkout) for people to look at after the run.
"""

import os
import shutil
import sqlite3
import tempfile

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import insert
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.accounts import hash_password
from rustdesk_twisted.api.console.settings import config_string
from rustdesk_twisted.api.db import Database, engine_url
from rustdesk_twisted.client import ControlledPeer, ReactorHost, ServerAddress

from .services import browser, screenshot
from .livesupport import free_port_block, start_twistd, stop_twistd

PASSWORD = "correct horse battery"
ONLINE_ID = "123456789"
OFFLINE_ID = "987654321"
WAIT = 15


def seed(data_dir, now):
    """The API database before the server starts: an administrator, two devices, a
    connection in the audit log (with a hostile note, which must show as text)."""
    db = Database(engine_url("", data_dir), None, in_thread_pool=False)
    db.open()
    try:
        migrate.upgrade(db)

        def fill(c):
            admin = c.execute(insert(tables.users).values(
                name="admin", display_name="Administrator", password_hash=hash_password(PASSWORD),
                is_admin=True, created_at=now, updated_at=now)).inserted_primary_key[0]
            for rustdesk_id, host, os_name in ((ONLINE_ID, "reception-pc", "Windows 11"),
                                               (OFFLINE_ID, "build-box", "Debian 12")):
                c.execute(insert(tables.devices).values(
                    rustdesk_id=rustdesk_id, hostname=host, username="staff", os=os_name,
                    version="1.4.2", user_id=admin, created_at=now - 86400,
                    last_seen=now - 300, note="<script>alert(1)</script>"))
            c.execute(insert(tables.audit_conn).values(
                guid="c1", rustdesk_id=ONLINE_ID, conn_id=7, ip="198.51.100.7",
                controller_id=OFFLINE_ID, controller_name="build-box", started_at=now - 600,
                closed_at=now - 60))
        db.run_now(fill)
    finally:
        db.close()


class ConsoleInChromiumTests(unittest.TestCase):
    timeout = 120

    async def start_servers(self):
        # Short: the console socket's path must fit a sockaddr_un.
        self.data_dir = tempfile.mkdtemp(prefix="rdcon")
        self.addCleanup(shutil.rmtree, self.data_dir, ignore_errors=True)
        seed(self.data_dir, reactor.seconds())
        hbbs_port = free_port_block((-1, 0, 2, 4))
        hbbs = await start_twistd(
            reactor, "rustdesk-hbbs", ["-p", str(hbbs_port), "--bind", "127.0.0.1",
                                       "--data-dir", self.data_dir, "-r", "127.0.0.1"],
            self.data_dir, b"Relay servers:").ready
        self.addCleanup(stop_twistd, hbbs)
        peer = ControlledPeer(ReactorHost(reactor, "127.0.0.2"),
                              ServerAddress("127.0.0.1", hbbs_port), ONLINE_ID)
        peer.start()
        self.addCleanup(peer.stop)
        await peer.registered()
        api_port = free_port_block((0,))
        api = await start_twistd(
            reactor, "rustdesk-api", ["--port", str(api_port), "--bind", "127.0.0.1",
                                      "--data-dir", self.data_dir,
                                      "--hbbs", f"127.0.0.1:{hbbs_port}"],
            self.data_dir, b"Web console at").ready
        self.addCleanup(stop_twistd, api)
        self.api_process = api
        return f"http://127.0.0.1:{api_port}"

    def test_main_paths(self):
        return Deferred.fromCoroutine(self._main_paths())

    async def _main_paths(self):
        driver = await browser(self)
        base = await self.start_servers()
        try:
            shots = await deferToThread(Walk(driver, base, self.data_dir).run)
        except Exception as e:
            raise AssertionError(f"{e}\nthe API said:\n"
                                 + self.api_process.output.decode(errors="replace")) from e
        self.assertEqual(len(shots), 12)
        self.assertTrue(all(os.path.getsize(path) > 5000 for path in shots))
        database = sqlite3.connect(f"file:{self.data_dir}/db_api.sqlite3?mode=ro", uri=True)
        self.addCleanup(database.close)
        self.assertEqual(database.execute("select name, display_name from users order by id")
                         .fetchall(), [("admin", "Administrator"), ("carol", "Carol Danvers")])
        self.assertEqual(database.execute("select name, options from strategies").fetchall(),
                         [("Locked down", '{"enable-file-transfer":"N",'
                                          '"approve-mode":"password"}')])
        self.assertEqual(database.execute("select action from audit_console order by id")
                         .fetchall(), [("console.login",), ("user.add",), ("strategy.add",),
                                       ("strategy.edit",), ("device.change_id",),
                                       ("api_token.add",), ("console.logout",)])
        self.assertNotIn(PASSWORD.encode(), self.api_process.output)


class Walk:
    """The browser's side, run in a thread: every WebDriver call blocks."""

    def __init__(self, driver, base, data_dir):
        self.driver = driver
        self.base = base
        self.data_dir = data_dir
        self.wait = WebDriverWait(driver, WAIT, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException))
        self.shots = []

    def shot(self, name):
        self.shots.append(screenshot(self.driver, f"console-{len(self.shots) + 1:02}-{name}"))

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def heading(self, text):
        """Wait for the next page: its h1 starts with ``text``."""
        self.wait.until(lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith(text))

    def notice(self):
        return self.find("p.notice").text

    def type_into(self, css, text):
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def nav(self, label, heading):
        self.driver.find_element(By.LINK_TEXT, label).click()
        self.heading(heading)

    def run(self):
        """The walk; a failure leaves console-failed.png of the page it stopped on."""
        try:
            return self.walk()
        except Exception:
            screenshot(self.driver, "console-failed")
            raise

    def walk(self):
        driver = self.driver
        driver.get(self.base + "/devices")
        self.heading("Sign in")
        assert driver.current_url == self.base + "/login?next=%2Fdevices", driver.current_url
        background = self.find("header.top").value_of_css_property("background-color")
        assert background == "rgba(21, 32, 46, 1)", f"stylesheet not applied: {background}"
        self.type_into("#name", "admin")
        self.type_into("#password", PASSWORD)
        self.shot("sign-in")
        self.find("form button[type=submit]").click()
        self.heading("Devices")
        rows = {row.find_element(By.TAG_NAME, "a").text: row.text
                for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr")}
        assert "online" in rows[ONLINE_ID] and "offline" in rows[OFFLINE_ID], rows
        assert "<script>alert(1)</script>" in rows[ONLINE_ID], rows
        self.shot("devices")

        self.nav("Overview", "Overview")
        self.shot("overview")

        self.nav("Users", "Users")
        self.type_into("#name", "carol")
        self.type_into("#display_name", "Carol Danvers")
        self.type_into("#email", "carol@example.com")
        self.type_into("#password", "carols-password")
        self.type_into("#confirm", "carols-password")
        self.find("form[action='/users'] button").click()
        self.heading("carol")
        assert self.notice() == "User carol added.", self.notice()
        self.shot("user-added")

        self.nav("Strategies", "Strategies")
        self.type_into("#name", "Locked down")
        self.find("form[action='/strategies'] button").click()
        self.heading("Locked down")
        self.type_into("#options", "enable-file-transfer=N\napprove-mode=password")
        self.find("form.grid button").click()
        self.wait.until(lambda d: "Saved" in self.notice())
        self.shot("strategy-edited")

        self.nav("Devices", "Devices")
        driver.find_element(By.LINK_TEXT, ONLINE_ID).click()
        self.heading(ONLINE_ID)
        assert "online" in self.find("h1").text
        self.type_into("#new_id", "reception-1")
        self.shot("device")
        self.find("form[action$='/change-id'] button").click()
        self.heading("reception-1")
        reply = f"Reply from hbbs: {ONLINE_ID}: renamed to reception-1"
        assert self.notice() == reply, self.notice()
        self.shot("device-id-changed")

        self.nav("Audit", "Connections")
        assert "198.51.100.7" in self.find("table").text
        self.shot("audit-connections")
        driver.find_element(By.LINK_TEXT, "Console changes").click()
        self.heading("Console changes")
        text = self.find("table").text
        for action in ("console.login", "user.add", "strategy.edit", "device.change_id"):
            assert action in text, text
        self.shot("audit-console")

        self.nav("Keys", "Server keys")
        with open(os.path.join(self.data_dir, "id_ed25519.pub")) as f:
            key = f.read().strip()
        blocks = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "pre.copy")]
        assert blocks[0] == key and blocks[1] == config_string("127.0.0.1", key, self.base), \
            blocks
        self.shot("keys")

        self.nav("Tokens", "API tokens")
        self.type_into("#name", "deploy script")
        Select(self.find("select[name=scope_devices]")).select_by_value("rw")
        self.find("form[action='/tokens'] button").click()
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.created"))
        assert len(self.find("section.created pre").text) == 43
        self.shot("token-created")

        self.find("form.signout button").click()
        self.heading("Sign in")
        driver.get(self.base + "/users")
        self.heading("Sign in")
        self.shot("signed-out")
        return self.shots
