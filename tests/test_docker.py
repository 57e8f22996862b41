"""The Docker image's build context and data ownership, without a Docker engine.

tests.test_docker_live builds and runs the image where an engine and the base
image are at hand; these checks run everywhere: which files of a used checkout
COPY takes (Docker's .dockerignore rules), and that the volume the servers
write is owned by the uid they run as, in the Dockerfile, docker-compose.yml
and Kubernetes.
"""

import os
import re
import shutil
import tempfile

import yaml
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted import __version__

from .livesupport import REPOSITORY
from .test_deploy import dockerfile_instructions, read
from .test_readme import readme_text

IMAGE = f"rustdesk-twisted:{__version__}"
# What a checkout holds after the Quick start, the tests and a compose run with ./data.
USED_CHECKOUT = [
    "id_ed25519", "id_ed25519.pub", "db_v2.sqlite3", "db_v2.sqlite3-wal", "db_v2.sqlite3-shm",
    "rustdesk-2026-01-01.tar.gz", ".env", "hbbs-console.sock", "hbbs-console.sock.lock",
    ".venv/bin/python", ".venv-test/bin/python", "_trial_temp/test.log", ".git/config",
    "tap-configs/docker/data/id_ed25519", "tap-configs/docker/data/db_v2.sqlite3",
    "restored/id_ed25519", "rustdesk_twisted/__pycache__/admin.cpython-311.pyc",
]


def ignore_patterns():
    with open(os.path.join(REPOSITORY, ".dockerignore"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def pattern_regex(pattern):
    """Docker's matching: ``**`` any directories, ``*`` within one name, from the root."""
    out = ""
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out + r"\Z")


def context_files(root, patterns):
    """The files ``COPY . /src`` takes: a file is out if it or a parent directory matches."""
    regexes = [pattern_regex(p) for p in patterns]
    taken = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.relpath(os.path.join(directory, name), root)
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if not any(r.match(prefix) for r in regexes for prefix in prefixes):
                taken.append(path)
    return sorted(taken)


class BuildContextTests(SynchronousTestCase):
    def test_secrets_and_venvs_stay_out(self):
        root = tempfile.mkdtemp(prefix="rdctx")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        shutil.copytree(os.path.join(REPOSITORY, "rustdesk_twisted"),
                        os.path.join(root, "rustdesk_twisted"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy(os.path.join(REPOSITORY, name), root)
        for path in USED_CHECKOUT:
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write("x")
        taken = context_files(root, ignore_patterns())
        for path in USED_CHECKOUT:
            self.assertNotIn(path, taken)
        self.assertIn("setup.cfg", taken)
        self.assertIn("rustdesk_twisted/admin.py", taken)
        self.assertIn("rustdesk_twisted/wire/keys.py", taken)


class OwnershipTests(SynchronousTestCase):
    """The servers run as uid 10001 and must be able to write /data on the first start."""

    def test_image_user_owns_the_volume(self):
        steps = list(dockerfile_instructions(read("docker", "Dockerfile")))
        [run] = [rest for keyword, rest in steps if keyword == "RUN"]
        self.assertIn("useradd --system --uid 10001", run)
        self.assertIn("chown rustdesk:rustdesk /data", run)
        keywords = [keyword for keyword, _ in steps]
        # The volume is declared after /data is chowned, so Docker copies that ownership into
        # a new named volume; USER makes the servers run as its owner.
        self.assertLess(keywords.index("RUN"), keywords.index("VOLUME"))
        self.assertEqual(dict(steps)["USER"], "rustdesk")

    def test_compose_uses_a_named_volume(self):
        compose = yaml.safe_load(read("docker", "docker-compose.yml"))
        for service in compose["services"].values():
            [volume] = service["volumes"]
            source = volume.split(":")[0]
            self.assertIn(source, compose["volumes"], "a host path would be root-owned")

    def test_kubernetes_runs_as_the_image_user(self):
        documents = list(yaml.safe_load_all(read("kubernetes", "rustdesk.yaml")))
        [deployment] = [d for d in documents if d["kind"] == "Deployment"]
        context = deployment["spec"]["template"]["spec"]["securityContext"]
        self.assertEqual((context["runAsUser"], context["fsGroup"]), (10001, 10001))


class ImageNameTests(SynchronousTestCase):
    """One tagged image name everywhere, and the README says what to edit."""

    def test_tagged_with_the_version(self):
        compose = yaml.safe_load(read("docker", "docker-compose.yml"))
        self.assertEqual({s["image"] for s in compose["services"].values()}, {IMAGE})
        kubernetes = read("kubernetes", "rustdesk.yaml")
        self.assertEqual(set(re.findall(r"^ +image: (\S+)$", kubernetes, re.M)), {IMAGE})
        self.assertIn(f"-t {IMAGE} .", read("docker", "Dockerfile"))
        self.assertIn(f"docker build -f tap-configs/docker/Dockerfile -t {IMAGE} .",
                      readme_text())

    def test_placeholders_explained(self):
        text = readme_text()
        for placeholder in ("rustdesk.example.com", "image:", "chown -R 10001:10001 data"):
            self.assertIn(placeholder, text)
        for name in ("docker/docker-compose.yml", "kubernetes/rustdesk.yaml"):
            if "rustdesk.example.com" in read(*name.split("/")):
                self.assertIn(f"tap-configs/{name}", text)
