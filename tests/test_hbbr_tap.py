"""twistd plugin options, port arithmetic (9.3), and the service tree on a memory reactor."""

import os

from twisted.internet.address import IPv4Address
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.config import Settings
from rustdesk_twisted.hbbr.tap import Options, makeService, relay_ports, with_backlog
from rustdesk_twisted.wire.keys import KeyFileError, b64, fingerprint, generate_keypair

from .test_admission import FakeLimits


def options(*argv):
    config = Options()
    config.parseOptions(list(argv))
    return config


class OptionTests(SynchronousTestCase):
    def test_official_flags(self):
        config = options("-p", "30000", "-b", "10.0.0.1", "-k", "secret")
        self.assertEqual((config["port"], config["bind"], config["key"]),
                         (30000, "10.0.0.1", "secret"))

    def test_bad_values(self):
        for argv in (["-p", "x"], ["-b", "host.example"], ["--trusted-proxies", "nope"],
                     ["--announce-skew", "x"], ["--announce-skew", "0"],
                     ["--announce-first-line-timeout", "-1"],
                     ["--announce-idle-timeout", "30"]):
            self.assertRaises(usage.UsageError, options, *argv)

    def test_announce_limits_in_help(self):
        config = options()
        self.assertEqual((config["announce-skew"], config["announce-first-line-timeout"],
                          config["announce-idle-timeout"]), (5.0, 10.0, 90.0))
        text = str(config)
        for flag in ("--announce-skew=", "--announce-first-line-timeout=",
                     "--announce-idle-timeout="):
            self.assertIn(flag, text)

    def test_port_arithmetic(self):
        self.assertEqual(relay_ports(30000, Settings({"PORT": "21116"})), (30000, 30002))
        self.assertEqual(relay_ports(None, Settings({"PORT": "21116"})), (21117, 21119))
        self.assertEqual(relay_ports(None, Settings({"PORT": "-5"})), (21117, 21119))
        self.assertEqual(relay_ports(None, Settings({})), (21117, 21119))

    def test_backlog_added(self):
        self.assertEqual(with_backlog("unix:x.sock"), "unix:x.sock:backlog=1024")
        self.assertEqual(with_backlog("tcp:1:backlog=4096"), "tcp:1:backlog=4096")


class ServiceTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, *argv, environ=None):
        reactor = MemoryReactorClock()
        before = sorted(os.listdir(self.directory))
        service = makeService(options("--directory", self.directory, *argv), reactor=reactor).inner
        service.environ = environ or {}
        service.rlimits = FakeLimits(20000, 20000)
        self.assertEqual(sorted(os.listdir(self.directory)), before,
                         "makeService touched the disk")
        service.startService()
        self.addCleanup(service.stopService)
        return reactor, service

    def messages(self):
        return [formatEvent(e) for e in self.events]

    def test_env_port_and_listeners(self):
        with open(os.path.join(self.directory, ".env"), "w") as f:
            f.write("PORT=31000\nRELAY_SERVERS=ignored\nSINGLE_BANDWIDTH=64\n")
        reactor, service = self.start("--console", "tcp:0:interface=127.0.0.1")
        ports = sorted((port, backlog) for port, _, backlog, _ in reactor.tcpServers)
        self.assertEqual(ports, [(0, 1024), (31001, 1024), (31003, 1024), (31005, 50)])
        self.assertEqual(service.relay.policy.single, 64 * 1024 * 1024)
        text = "\n".join(self.messages())
        self.assertIn("no licence key", text)
        self.assertIn("bandwidth: single 64Mb/s, total 1024Mb/s", text)

    def test_cli_overrides_env_and_default_console_is_unix_in_data_dir(self):
        with open(os.path.join(self.directory, ".env"), "w") as f:
            f.write("PORT=31000\n")
        reactor, _ = self.start("-p", "32000", "-b", "127.0.0.1")
        self.assertEqual(sorted((p, i) for p, _, _, i in reactor.tcpServers),
                         [(32000, "127.0.0.1"), (32002, "127.0.0.1"), (32004, "127.0.0.1")])
        [(path, _, _, mode, locked)] = [u[:5] for u in reactor.unixServers]
        self.assertEqual((path, mode, locked),
                         (os.path.join(self.directory, "hbbr-console.sock"), 0o600, True))

    def test_console_given_without_mode_is_owner_only(self):
        for given, mode in (("unix:c.sock", 0o600), ("unix:c.sock:mode=666", 0o600),
                            ("unix:c.sock:mode=640", 0o600), ("unix:c.sock:mode=400", 0o400)):
            reactor, service = self.start("--console", given)
            [(_, _, _, got)] = [u[:4] for u in reactor.unixServers]
            self.assertEqual(got, mode, given)
            service.stopService()

    def test_limits_in_help_and_banner(self):
        text = str(options())
        for flag in ("--max-connections-per-ip=", "--max-connections=",
                     "--announce-max-connections-per-ip=", "--max-early-bytes=",
                     "--max-early-bytes-total="):
            self.assertIn(flag, text)
        for argv in (["--max-connections-per-ip", "0"], ["--max-early-bytes", "-1"]):
            self.assertRaises(usage.UsageError, options, *argv)
        service = makeService(options("--directory", self.directory, "--no-splice",
                                      "--max-connections-per-ip", "7"),
                              reactor=MemoryReactorClock()).inner
        service.rlimits = FakeLimits(1024, 4096)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual((service.relay.limits.max_total, service.relay.limits.max_per_ip),
                         (4096 - 256, 7))
        self.assertIn("descriptors: soft limit raised from 1024 to 4096; at most 3840 "
                      "connections, 7 per IP (IPv6: per /64)", "\n".join(self.messages()))

    def test_key_fingerprint_in_banner(self):
        secret = generate_keypair(self.directory)
        _, service = self.start("-k", "-", "--no-throttle")
        self.assertEqual(service.relay.licence, b64(secret[32:]))
        text = "\n".join(self.messages())
        self.assertIn(fingerprint(secret[32:]), text)
        self.assertIn("throttling off", text)

    def write_public_file(self):
        public = bytes(range(32))
        with open(os.path.join(self.directory, "id_ed25519.pub"), "w") as f:
            f.write(b64(public))
        return public

    def written(self):
        """What is in the data directory besides the admin address file hbbr keeps there."""
        return sorted(n for n in os.listdir(self.directory) if n != "hbbr-admin.url")

    def test_announce_endpoint_with_the_public_key_only(self):
        public = self.write_public_file()
        reactor, service = self.start("--announce-endpoint", "tcp:21122:interface=127.0.0.1",
                                      "--announce-skew", "2")
        self.assertIsNotNone(service.relay.allowed)
        self.assertEqual(bytes(service.announce_gate.verify_key), public)
        self.assertEqual(service.announce_gate.skew, 2)
        self.assertEqual(service.relay.allowed.remember_used, 60 + 2 * 2)
        self.assertIn(21122, [p for p, _, _, _ in reactor.tcpServers])
        self.assertEqual(self.written(), ["id_ed25519.pub"])
        self.assertIn(f"announcements checked with key {fingerprint(public)}",
                      "\n".join(self.messages()))

    def test_announce_listener_capped_per_source_from_accept(self):
        self.write_public_file()
        reactor, service = self.start("--announce-endpoint", "tcp:21122:interface=127.0.0.1",
                                      "--announce-max-connections-per-ip", "2")
        [factory] = [f for p, f, _, _ in reactor.tcpServers if p == 21122]
        peer = IPv4Address("TCP", "192.0.2.1", 1)
        built = [factory.buildProtocol(peer) for _ in range(3)]
        self.assertEqual([p is not None for p in built], [True, True, False])
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1)))
        self.assertEqual(service.announce_limits.limit_log.hits,
                         {"announce-connections-per-ip": 1})

    def test_announce_endpoint_key_option(self):
        public = bytes(range(1, 33))
        _, service = self.start("--announce-endpoint", "tcp:21122", "-k", b64(public))
        self.assertEqual(bytes(service.announce_gate.verify_key), public)
        self.assertEqual(self.written(), [])

    def test_announce_endpoint_without_a_key_refuses_to_start(self):
        service = makeService(options("--directory", self.directory, "--announce-endpoint",
                                      "tcp:21122"), reactor=MemoryReactorClock()).inner
        service.environ = {}
        error = self.assertRaises(KeyFileError, service.startService)
        self.assertIn("copy id_ed25519.pub from the ID server", str(error))
        self.assertEqual(os.listdir(self.directory), [])
