"""``twistd rustdesk-hbbs``: options, configuration layering, listeners, banner, fatal errors."""

import os

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rustdesk_twisted.config import ConfigError, Settings
from rustdesk_twisted.hbbs import tap
from rustdesk_twisted.startup import ExitOnStartupError
from rustdesk_twisted.wire import keys

from .test_admission import FakeLimits


def config(**values):
    return tap.HbbsConfig(Settings({}, [("test", values)]))


def options(*argv):
    parsed = tap.Options()
    parsed.parseOptions(list(argv))
    return parsed


class ConfigTests(unittest.SynchronousTestCase):
    def test_official_port_arithmetic(self):
        """With -p P the public listeners are TCP P-1, UDP+TCP P and WebSocket P+2."""
        default = config()
        self.assertEqual(default.tcp_endpoint, "tcp:21116:interface=\\:\\::backlog=1024")
        self.assertEqual(default.nat_endpoint, "tcp:21115:interface=\\:\\::backlog=1024")
        self.assertEqual(default.ws_endpoint, "tcp:21118:interface=\\:\\::backlog=1024")
        self.assertEqual((default.udp_interface, default.udp_port), ("::", 21116))
        moved = config(PORT="30000", BIND="192.0.2.1")
        self.assertEqual(moved.tcp_endpoint, "tcp:30000:interface=192.0.2.1:backlog=1024")
        self.assertEqual(moved.nat_endpoint, "tcp:29999:interface=192.0.2.1:backlog=1024")
        self.assertEqual(moved.ws_endpoint, "tcp:30002:interface=192.0.2.1:backlog=1024")
        self.assertEqual((moved.udp_interface, moved.udp_port), ("192.0.2.1", 30000))

    def test_udp_receive_buffer_defaults_to_4_mib(self):
        self.assertEqual(config().rmem, 4 * 1024 * 1024)
        self.assertEqual(config(RMEM="0").rmem, 0)

    def test_console_is_a_unix_socket_by_default(self):
        self.assertEqual(config(**{"DATA-DIR": "/srv/rd"}).console_endpoint,
                         "unix:/srv/rd/hbbs-console.sock:mode=600:lockfile=1")

    def test_endpoint_overrides(self):
        moved = config(**{"LISTEN-WS": "ssl:443:privateKey=k.pem", "LISTEN-UDP": "[::1]:9000"})
        self.assertEqual(moved.ws_endpoint, "ssl:443:privateKey=k.pem")
        self.assertEqual((moved.udp_interface, moved.udp_port), ("::1", 9000))

    def test_misconfigurations_say_what_is_wrong(self):
        for values, message in [
            ({"PORT": "2"}, "PORT=2 is out of range"),
            ({"PORT": "many"}, "PORT must be an integer"),
            ({"BIND": "example.com"}, "BIND must be an IP address"),
            ({"MASK": "192.168.0.0/99"}, "invalid network"),
            ({"TRUSTED-PROXIES": "not-a-net"}, "invalid network"),
            ({"LISTEN-UDP": "x:y"}, "LISTEN-UDP must be [address:]port"),
        ]:
            error = self.assertRaises(ConfigError, config, **values)
            self.assertIn(message, str(error))

    def test_always_use_relay_and_lists(self):
        built = config(ALWAYS_USE_RELAY="y", RELAY_SERVERS="a:21117,b",
                       **{"IP-LIMIT-EXEMPT": "10.0.0.0/8, 192.168.0.0/16"})
        self.assertTrue(built.always_use_relay)
        self.assertEqual(built.relays, ["a:21117", "b"])
        self.assertEqual(built.ip_limit_exempt, ["10.0.0.0/8", "192.168.0.0/16"])


class OptionsTests(unittest.SynchronousTestCase):
    def test_help_documents_every_option(self):
        text = str(tap.Options())
        for long, short, _, _ in tap.OPTIONS:
            self.assertIn(f"--{long}", text)
            if short:
                self.assertIn(f"-{short},", text)

    def test_only_explicit_flags_are_settings(self):
        self.assertEqual(options("-p", "30000", "-k", "_").cli_settings(),
                         {"PORT": "30000", "KEY": "_"})

    def test_precedence_cli_config_dotenv_environment(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write("RELAY_SERVERS=from-dotenv\nSERIAL=5\nRMEM=100\n")
        extra = os.path.join(directory, "extra.ini")
        with open(extra, "w") as f:
            f.write("serial=6\nrmem=200\n")
        parsed = options("--data-dir", directory, "-c", extra, "-M", "300")
        built = tap.build_config(parsed, {"RELAY-SERVERS": "env", "MASK": "10.0.0.0/8",
                                          "PORT": "21116"})
        self.assertEqual((built.relays, built.serial, built.rmem, built.mask),
                         (["from-dotenv"], 6, 300, "10.0.0.0/8"))

    def test_missing_config_file(self):
        parsed = options("-c", "/nonexistent/hbbs.ini")
        self.assertRaises(ConfigError, tap.build_config, parsed, {})


class ServiceTests(unittest.TestCase):
    def make(self, **values):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        values.setdefault("DATA-DIR", directory)
        values.setdefault("LISTEN-TCP", "tcp:0:interface=127.0.0.1")
        values.setdefault("LISTEN-NAT", "tcp:0:interface=127.0.0.1")
        values.setdefault("LISTEN-WS", "tcp:0:interface=127.0.0.1")
        values.setdefault("LISTEN-UDP", "127.0.0.1:0")
        values.setdefault("CONSOLE", "tcp:0:interface=127.0.0.1")
        values.setdefault("ADMIN", "tcp:0:interface=127.0.0.1")
        return directory, tap.HbbsService(config(**values), reactor)

    def test_start_banner_and_clean_stop(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        directory, service = self.make(RELAY_SERVERS="relay.example.com")
        service.startService()
        with open(os.path.join(directory, "id_ed25519.pub")) as f:
            public = f.read()
        banner = [e for e in events if e.get("event") == "banner"]
        text = "\n".join(e["log_format"].format(**e) for e in banner)
        self.assertIn(f"Key: {public}", text)
        self.assertIn(keys.fingerprint(keys.decode_public(public)), text)
        self.assertIn("Key enforcement: on", text)
        self.assertIn("relay.example.com", text)
        self.assertIn("db_v2.sqlite3", text)
        self.assertIn("UDP receive buffer", text)
        return service.stopService()

    def test_descriptor_limit_raised_and_in_banner(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, service = self.make(ADMIN="off")
        service.rlimits = FakeLimits(1024, 4096)
        service.startService()
        self.addCleanup(service.stopService)
        text = "\n".join(e["log_format"].format(**e) for e in events
                         if e.get("event") == "banner")
        self.assertIn("Descriptors: soft limit raised from 1024 to 4096; at most 3840 "
                      "TCP/WebSocket connections", text)
        self.assertEqual(service.descriptors.budget.total, 4096 - 256)

    def test_malformed_key_is_fatal_with_a_message(self):
        directory, service = self.make()
        with open(os.path.join(directory, "id_ed25519"), "w") as f:
            f.write("not a key")
        wrapper = ExitOnStartupError("rustdesk-hbbs", service)
        error = self.assertRaises(SystemExit, wrapper.startService)
        self.assertIn("malformed private key", str(error))
        self.assertFalse(service.running)

    def test_one_hbbs_per_data_directory(self):
        """A second hbbs on the same directory says which process holds it; after the
        first stops, the directory is free again."""
        directory, first = self.make(CONSOLE="off")
        first.startService()
        second = tap.HbbsService(config(**{
            "DATA-DIR": directory, "LISTEN-TCP": "tcp:0:interface=127.0.0.1",
            "LISTEN-NAT": "tcp:0:interface=127.0.0.1", "LISTEN-WS": "tcp:0:interface=127.0.0.1",
            "LISTEN-UDP": "127.0.0.1:0", "CONSOLE": "off",
            "ADMIN": "tcp:0:interface=127.0.0.1"}), reactor)
        error = self.assertRaises(SystemExit,
                                  ExitOnStartupError("rustdesk-hbbs", second).startService)
        self.assertEqual(str(error), f"rustdesk-hbbs: another hbbs (pid {os.getpid()}) uses "
                                     f"{directory}")
        self.assertFalse(second.running)
        self.assertEqual(os.stat(os.path.join(directory, "hbbs.lock")).st_mode & 0o777, 0o600)

        def restart(_):
            again = tap.HbbsService(second.config, reactor)
            again.startService()
            return again.stopService()

        return first.stopService().addCallback(restart)

    def test_port_in_use_is_fatal_with_a_message(self):
        busy = reactor.listenTCP(0, tap.Factory(), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        _, service = self.make(**{"LISTEN-TCP": f"tcp:{busy.getHost().port}:interface=127.0.0.1"})
        error = self.assertRaises(SystemExit,
                                  ExitOnStartupError("rustdesk-hbbs", service).startService)
        self.assertIn("Couldn't listen", str(error))
        self.assertFalse(service.running)
