"""``twistd rustdesk-api``'s settings: where it listens, which database it opens, OIDC
providers, public URL, limits and the first admin."""

import os

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rustdesk_twisted.api import tap
from rustdesk_twisted.api.users import list_users
from rustdesk_twisted.config import ConfigError


def config(*argv, **environ):
    options = tap.Options()
    options.parseOptions(list(argv))
    return tap.build_config(options, environ)


class PortTests(unittest.TestCase):
    def test_port_follows_the_rendezvous_port(self):
        self.assertEqual(config().port, 21114)
        self.assertEqual(config(PORT="31116").port, 31114)
        self.assertEqual(config(PORT="31116", API_PORT="8080").port, 8080)
        self.assertEqual(config("-p", "9000", PORT="31116").endpoint,
                         "tcp:9000:interface=\\:\\:")
        self.assertRaises(ConfigError, config, PORT="2")


class DatabaseUrlTests(unittest.TestCase):
    def test_sqlite_beside_hbbs_or_postgresql(self):
        self.assertEqual(config("--data-dir", "/srv/rd").db_url.database,
                         "/srv/rd/db_api.sqlite3")
        url = config(API_DB_URL="postgresql://api:secret@db.example/rustdesk").db_url
        self.assertEqual((url.drivername, url.host, url.database),
                         ("postgresql+psycopg", "db.example", "rustdesk"))
        self.assertRaises(ConfigError, config, API_DB_URL="mysql://x@y/z")


class ApiOptionTests(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.password_file = os.path.join(self.dir, "admin-password")
        with open(self.password_file, "w") as f:
            f.write("first admin password\n")

    def config(self, *argv, **environ):
        options = tap.Options()
        options.parseOptions(["--data-dir", self.dir, "--listen", "tcp:0", *argv])
        return tap.build_config(options, environ)

    def start(self, config):
        service = tap.ApiService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_oidc_and_limits(self):
        config = self.config("--oidc", "keycloak", "--public-url", "https://rd.example.com",
                             "--oidc-pending", "50", OIDC_KEYCLOAK_ISSUER="https://kc.test/r",
                             OIDC_KEYCLOAK_CLIENT_ID="rd",
                             OIDC_KEYCLOAK_CLIENT_SECRET_FILE=self.password_file)
        self.assertEqual([p.name for p in config.oidc_providers], ["keycloak"])
        self.assertEqual(config.oidc_providers[0].client_secret, "first admin password")
        self.assertEqual((config.public_url, config.oidc_pending, config.oidc_pending_per_source),
                         ("https://rd.example.com", 50, 10))
        service = self.start(config)
        self.assertEqual(service.app.login_options, ["oidc/keycloak"])
        self.assertEqual(service.app.oidc.pending.max_entries, 50)

    def test_misconfigurations_say_what_is_wrong(self):
        for argv, environ, words in (
                (("--oidc", "kc"), {}, "OIDC_KC_ISSUER"),
                (("--public-url", "rd.example.com"), {}, "PUBLIC-URL"),
                (("--oidc-pending", "0"), {}, "OIDC-PENDING"),
                (("--initial-admin", "root"), {}, "INITIAL_ADMIN_PASSWORD_FILE"),
                (("--initial-admin", "a b"), {"INITIAL_ADMIN_PASSWORD_FILE": self.password_file},
                 "invalid user name")):
            with self.assertRaisesRegex(ConfigError, words):
                self.config(*argv, **environ)

    def test_initial_admin_is_created_once_on_an_empty_database(self):
        config = self.config("--initial-admin", "root",
                             INITIAL_ADMIN_PASSWORD_FILE=self.password_file)
        service = self.start(config)
        users = service.db.run_now(list_users)
        self.assertEqual([(u["name"], u["is_admin"]) for u in users], [("root", True)])
        service.stopService()
        other = self.config("--initial-admin", "another",
                            INITIAL_ADMIN_PASSWORD_FILE=self.password_file)
        service = self.start(other)
        self.assertEqual([u["name"] for u in service.db.run_now(list_users)], ["root"])

    def test_an_empty_user_table_is_pointed_out(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start(self.config())
        events = [e for e in logged if e.get("event") == "api.no_users"]
        self.assertEqual(len(events), 1)
        self.assertIn("rustdesk-admin user add NAME --admin", events[0]["log_format"])
