"""The Docker image built from the checkout as written, run on a named volume, checked by the doctor.

Skipped without a running Docker engine or without the base image
(python:3.12-slim) already present: the engine's registry may be out of reach,
as in CI's sandbox, where an image built from Debian packages stands in for it.
The container shares the host's network so ``PORT`` (which the README
documents) moves it to free ports.
"""

import io
import json
import os
import shutil
import subprocess

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from rustdesk_twisted import __version__, doctor

from .livesupport import REPOSITORY, _TwistdProcess, free_port_block, stop_twistd
from .test_deploy import dockerfile_instructions, read

BASE_IMAGE = "python:3.12-slim"


def docker(*argv, check=True):
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=check,
                          timeout=600)


class DockerImageTests(TestCase):
    timeout = 600

    def setUp(self):
        if shutil.which("docker") is None or docker("info", check=False).returncode:
            raise SkipTest("no running Docker engine")
        if docker("image", "inspect", BASE_IMAGE, check=False).returncode:
            raise SkipTest(f"base image {BASE_IMAGE} is not present (no registry access)")
        self.name = f"rustdesk-test-{os.getpid()}"
        self.image = f"rustdesk-twisted:{__version__}-test{os.getpid()}"

    async def test_build_run_and_diagnose(self):
        built = docker("build", "-q", "-f", os.path.join(REPOSITORY, "tap-configs", "docker",
                                                          "Dockerfile"),
                       "-t", self.image, REPOSITORY, check=False)
        self.assertEqual(built.returncode, 0, built.stderr)
        self.addCleanup(docker, "rmi", "-f", self.image, check=False)
        port = free_port_block([-1, 0, 1, 2, 3, 4, 5])
        docker("volume", "create", self.name)
        self.addCleanup(docker, "volume", "rm", "-f", self.name, check=False)
        docker("run", "-d", "--name", self.name, "--network", "host", "-e", f"PORT={port}",
               "-v", f"{self.name}:/data", self.image)
        self.addCleanup(docker, "rm", "-f", self.name, check=False)
        logs = _TwistdProcess(b"bandwidth:")
        reactor.spawnProcess(logs, "docker", ["docker", "logs", "-f", self.name],
                             env=dict(os.environ))
        self.addCleanup(stop_twistd, logs)
        await logs.ready

        key = docker("exec", self.name, "cat", "/data/id_ed25519.pub").stdout
        out = io.StringIO()
        status = await doctor.run(reactor, [f"127.0.0.1:{port}", "--key", key, "--json"], out)
        report = json.loads(out.getvalue())
        self.assertEqual(status, 0, json.dumps(report, indent=1))

        healthcheck = dict(dockerfile_instructions(read("docker", "Dockerfile")))["HEALTHCHECK"]
        command = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
        done = docker("exec", self.name, *command, check=False)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        owners = docker("exec", self.name, "stat", "-c", "%u %n", "/data", "/data/id_ed25519",
                        "/data/db_v2.sqlite3").stdout.split("\n")
        self.assertEqual([line.split()[0] for line in owners if line], ["10001"] * 3)
        rows = docker("exec", self.name, "python", "-c", "import sqlite3; print(sqlite3.connect("
                      "'file:/data/db_v2.sqlite3?mode=ro', uri=True).execute("
                      "'select count(*) from peer').fetchone()[0])").stdout
        self.assertEqual(rows, "0\n", "the doctor's probe peers reached the database")
