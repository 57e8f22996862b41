"""tap-configs/: every deployment file parses and its command lines pass the real option parsers.

Docker cannot run here, so the Dockerfile's HEALTHCHECK command is run as a
process against a live ``twistd rustdesk-hbbs`` instead, up and down.
"""

import configparser
import json
import os
import re
import runpy
import shlex
import shutil
import sys
import tempfile

import yaml
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger, formatEventAsClassicLogText
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustdesk_twisted import admin, combined_tap
from rustdesk_twisted.config import ConfigError
from rustdesk_twisted.hbbr import tap as hbbr_tap
from rustdesk_twisted.hbbr.server import RelayServer
from rustdesk_twisted.hbbs import tap as hbbs_tap
from rustdesk_twisted.hbbs.limits import IpBlocker
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer
from rustdesk_twisted.wire import keys, messages
from rustdesk_twisted.wire.rendezvous_pb2 import PunchHoleRequest

from .livesupport import REPOSITORY, free_port_block, start_twistd, stop_twistd

CONFIGS = os.path.join(REPOSITORY, "tap-configs")
PLUGINS = {"rustdesk-hbbs": hbbs_tap.Options, "rustdesk-hbbr": hbbr_tap.Options,
           "rustdesk-server": combined_tap.Options}


def read(*parts):
    with open(os.path.join(CONFIGS, *parts), encoding="utf-8") as f:
        return f.read()


def check_twistd_args(test, argv):
    """``twistd [twistd options] PLUGIN [plugin options]``: the plugin's own parser accepts them."""
    for index, word in enumerate(argv):
        if word in PLUGINS:
            test.assertIn("--pidfile=", argv[:index], "twistd would write a pid file")
            PLUGINS[word]().parseOptions(argv[index + 1:])
            return word
    test.fail(f"no rustdesk plugin in {argv}")


def check_admin_args(test, argv):
    test.assertEqual(argv[0], "rustdesk-admin")
    return admin.build_parser().parse_args(argv[1:])


def dockerfile_instructions(text):
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            yield keyword.upper(), rest.strip()


class SystemdTests(SynchronousTestCase):
    def units(self):
        for name in ("rustdesk-hbbs.service", "rustdesk-hbbr.service"):
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.optionxform = str
            parser.read_string(read("systemd", name))
            yield name, parser

    def test_hardened_and_runnable(self):
        plugins = []
        for name, unit in self.units():
            service = unit["Service"]
            self.assertNotIn(service.get("User", "root"), ("", "root", "0"), name)
            for directive, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                                     ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                                     ("CapabilityBoundingSet", "")):
                self.assertEqual(service.get(directive), value, f"{name} {directive}")
            self.assertEqual(service["StateDirectory"], "rustdesk-server")
            argv = shlex.split(service["ExecStart"])
            plugin = check_twistd_args(self, argv)
            plugins.append(plugin)
            self.assertEqual(argv[argv.index("--data-dir") + 1], "/var/lib/rustdesk-server")
            self.assertEqual(unit["Install"]["WantedBy"], "multi-user.target")
        self.assertEqual(plugins, ["rustdesk-hbbs", "rustdesk-hbbr"])


class DockerTests(SynchronousTestCase):
    def test_dockerfile(self):
        found = dict(dockerfile_instructions(read("docker", "Dockerfile")))
        entrypoint = json.loads(found["ENTRYPOINT"])
        check_twistd_args(self, entrypoint + json.loads(found["CMD"]))
        self.assertEqual(found["USER"], "rustdesk")
        self.assertEqual(found["VOLUME"], "/data")
        healthcheck = found["HEALTHCHECK"]
        command = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
        args = check_admin_args(self, command)
        self.assertEqual((args.command, args.data_dir), ("healthcheck", "/data"))

    def test_compose_one_volume_both_servers(self):
        compose = yaml.safe_load(read("docker", "docker-compose.yml"))
        services = compose["services"]
        self.assertEqual(sorted(services), ["hbbr", "hbbs"])
        entrypoint = json.loads(dict(dockerfile_instructions(read("docker", "Dockerfile")))
                                ["ENTRYPOINT"])
        for name, service in services.items():
            self.assertEqual(service["volumes"], ["rustdesk-data:/data"])
            plugin = check_twistd_args(self, entrypoint + service["command"])
            self.assertEqual(plugin, f"rustdesk-{name}")
            test = service["healthcheck"]["test"]
            self.assertEqual(test[0], "CMD")
            args = check_admin_args(self, test[1:])
            self.assertEqual(args.relay, name == "hbbr")
        self.assertEqual(services["hbbr"]["depends_on"]["hbbs"]["condition"], "service_healthy")


class KubernetesTests(SynchronousTestCase):
    def test_probes_and_args(self):
        documents = list(yaml.safe_load_all(read("kubernetes", "rustdesk.yaml")))
        [deployment] = [d for d in documents if d["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        [init] = pod["initContainers"]
        self.assertEqual(check_admin_args(self, init["command"]).if_missing, True)
        entrypoint = json.loads(dict(dockerfile_instructions(read("docker", "Dockerfile")))
                                ["ENTRYPOINT"])
        names = []
        for container in pod["containers"]:
            names.append(check_twistd_args(self, entrypoint + container["args"]))
            for probe in ("livenessProbe", "readinessProbe"):
                args = check_admin_args(self, container[probe]["exec"]["command"])
                self.assertEqual(args.command, "healthcheck")
                self.assertEqual(args.ready, probe == "readinessProbe")
                self.assertEqual(args.relay, container["name"] == "hbbr")
            self.assertEqual(container["volumeMounts"][0]["mountPath"], "/data")
        self.assertEqual(names, ["rustdesk-hbbs", "rustdesk-hbbr"])
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])


class TacTests(SynchronousTestCase):
    def test_tac_files_build_applications(self):
        names = sorted(n for n in os.listdir(CONFIGS) if n.endswith(".tac"))
        self.assertIn("hbbs.tac", names)
        for name in names:
            application = runpy.run_path(os.path.join(CONFIGS, name))["application"]
            self.assertTrue(list(IService(application)), name)


class Fail2banTests(SynchronousTestCase):
    """The filter matches the lines our code really writes, and finds the offender's address."""

    def failregexes(self):
        parser = configparser.ConfigParser()
        parser.read_string(read("fail2ban", "rustdesk.conf"))
        host = r"(?:::f{4,6}:)?(?P<host>[0-9a-fA-F.:]+?)"
        return [re.compile(line.strip().replace("<HOST>", host))
                for line in parser["Definition"]["failregex"].splitlines() if line.strip()]

    def lines(self):
        events = []
        observer = events.append
        registry = PeerRegistry(ip_blocker=IpBlocker(requests_per_minute=0))
        server = RendezvousServer(registry, keys.ServerKey("licence", None, "test"),
                                  RelayRotation(), MemoryReactorClock())
        for obj in (server, registry, registry.ip_blocker):
            obj.log = Logger(namespace="rustdesk_twisted.test", observer=observer)
            obj.limits.log = obj.log
        channel = _Channel(("::ffff:203.0.113.7", 5000))
        server.stream_message(channel, messages.wrap("punch_hole_request",
                                                     PunchHoleRequest(id="123456789")))
        for _ in range(3):
            registry.register_pk("123456789", b"uuid", bytes(32), ("198.51.100.2", 1), 0)
        relay = RelayServer(MemoryReactorClock(), licence="x")
        relay.log = Logger(namespace="rustdesk_twisted.test", observer=observer)
        relay.refuse(_Side(("2001:db8::5", 7000)), "licence key mismatch")
        return [formatEventAsClassicLogText(e).rstrip("\n") for e in events]

    def test_offenders_found(self):
        regexes = self.failregexes()
        hosts = []
        for line in self.lines():
            for regex in regexes:
                match = regex.match(line)
                if match:
                    hosts.append(match.group("host"))
                    break
        self.assertEqual(hosts, ["203.0.113.7", "198.51.100.2", "2001:db8::5"])


class _Channel:
    def __init__(self, address):
        self.address = address
        self.key = address
        self.is_websocket = False
        self.parked_key = None

    def send(self, message):
        pass


class _Side:
    def __init__(self, peer):
        self.peer = peer

    def close(self):
        pass


class HbbrDataDirTests(SynchronousTestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def start(self, *argv):
        options = hbbr_tap.Options()
        options.parseOptions(["--console", "off", "--admin", "off", *argv])
        service = hbbr_tap.makeService(options, reactor=MemoryReactorClock()).inner
        service.environ = {}
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_data_dir_and_old_name(self):
        for flag in ("--data-dir", "--directory"):
            options = hbbr_tap.Options()
            options.parseOptions([flag, self.directory])
            self.assertEqual((options["data-dir"], options["directory"]),
                             (self.directory, self.directory))

    def test_shared_key_is_used(self):
        secret = keys.generate_keypair(self.directory)
        service = self.start("--data-dir", self.directory, "-k", "-")
        self.assertEqual(service.relay.licence, keys.b64(secret[32:]))

    def test_refuses_a_different_key(self):
        keys.generate_keypair(self.directory)
        other = keys.b64(bytes(range(32)))
        options = hbbr_tap.Options()
        options.parseOptions(["--data-dir", self.directory, "-k", other, "--console", "off"])
        service = hbbr_tap.makeService(options, reactor=MemoryReactorClock()).inner
        service.environ = {}
        error = self.assertRaises(ConfigError, service.startService)
        self.assertIn("differs from hbbs's key", str(error))

    def test_exposed_admin_needs_a_token(self):
        options = hbbr_tap.Options()
        options.parseOptions(["--data-dir", self.directory, "--admin", "tcp:0",
                              "--console", "off"])
        service = hbbr_tap.makeService(options, reactor=MemoryReactorClock()).inner
        service.environ = {}
        self.assertRaises(ConfigError, service.startService)


class HealthcheckLiveTests(TestCase):
    """The Dockerfile's HEALTHCHECK command against a real hbbs: 0 while up, 1 once down."""

    timeout = 60

    def healthcheck_argv(self, data_dir):
        found = dict(dockerfile_instructions(read("docker", "Dockerfile")))
        command = json.loads(found["HEALTHCHECK"][found["HEALTHCHECK"].index("CMD") + 3:])
        args = [data_dir if word == "/data" else word for word in command[1:]]
        return ["-m", "rustdesk_twisted.admin"] + args

    async def run_healthcheck(self, data_dir):
        env = dict(os.environ, PYTHONPATH=REPOSITORY)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, self.healthcheck_argv(data_dir), env=env, reactor=reactor)
        return out + err, code

    async def test_up_then_down(self):
        directory = tempfile.mkdtemp(prefix="rdhc")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        base = free_port_block([-1, 0, 2, 4])
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write(f"PORT={base}\n")
        process = start_twistd(reactor, "rustdesk-hbbs",
                               ["--data-dir", directory, "--bind", "127.0.0.1"],
                               directory, b"Relay servers:")
        self.addCleanup(stop_twistd, process)
        await process.ready
        output, code = await self.run_healthcheck(directory)
        self.assertEqual(code, 0, output)
        self.assertIn(f"http://127.0.0.1:{base + 4}/healthz: ok".encode(), output)
        await stop_twistd(process)
        output, code = await self.run_healthcheck(directory)
        self.assertEqual(code, 1, output)
        self.assertIn(b"rustdesk-admin:", output)
