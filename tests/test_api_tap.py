"""``twistd rustdesk-api``'s settings: where it listens and which database it opens."""

from twisted.trial import unittest

from rustdesk_twisted.api import tap
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
