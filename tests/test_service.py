"""The README's service recipe: files it copies, and the plugin cache it builds at install time.

The recipe itself changes a host (user, /opt, /etc, systemd), so tests.test_readme
does not paste it; here its parts run where they can.
"""

import configparser
import os
import shlex
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.tap import ENV_FILE_KEYS
from rustdesk_twisted.hbbs import tap as hbbs_tap

from .livesupport import REPOSITORY
from .test_install import (
    make_venv,
    pip_install,
    quick_start_install,
    twistd_help,
    venv_environment,
)
from .test_readme import readme_blocks

SYSTEMD = os.path.join(REPOSITORY, "tap-configs", "systemd")
VENV = "/opt/rustdesk-twisted"


def service_block():
    [block] = [b for b in readme_blocks() if b.startswith("useradd ")]
    return block.splitlines()


def env_example(name):
    """``{NAME: value}`` of the commented examples in ``tap-configs/systemd/NAME``."""
    settings = {}
    with open(os.path.join(SYSTEMD, name), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("#") and "=" in line and " " not in line:
                key, _, value = line[1:].partition("=")
                settings[key] = value
            else:
                assert not line or line.startswith("#"), line
    return settings


class ServiceFilesTests(SynchronousTestCase):
    def test_recipe_copies_files_that_exist(self):
        copied = []
        for line in service_block():
            words = shlex.split(line)
            if words[0] == "cp":
                copied += [w for w in words[1:-1] if not w.startswith("-")]
        self.assertEqual(sorted(os.path.basename(path) for path in copied),
                         ["hbbr.env", "hbbs.env", "rustdesk-hbbr.service", "rustdesk-hbbs.service"])
        for path in copied:
            self.assertTrue(os.path.isfile(os.path.join(REPOSITORY, path)), path)

    def test_units_name_no_package_index(self):
        for name in ("rustdesk-hbbs.service", "rustdesk-hbbr.service"):
            with open(os.path.join(SYSTEMD, name), encoding="utf-8") as f:
                text = f.read()
            self.assertNotIn("pip install rustdesk-twisted", text)
            unit = configparser.ConfigParser(strict=False, interpolation=None)
            unit.read_string(text)
            self.assertEqual(unit["Service"]["EnvironmentFile"],
                             f"-/etc/rustdesk-server/{name.split('-')[1].split('.')[0]}.env")

    def test_env_examples_use_real_settings(self):
        hbbs = env_example("hbbs.env")
        self.assertIn("RELAY_SERVERS", hbbs)
        names = {name for _, _, name, _ in hbbs_tap.OPTIONS if name}
        names |= {"ALWAYS-USE-RELAY", "LOCAL-IP", "DB-URL"}  # official, environment only
        for key in hbbs:
            self.assertIn(key.replace("_", "-"), names)
        config = hbbs_tap.build_config(hbbs_tap.Options(), hbbs)
        self.assertEqual(config.relays, ["rustdesk.example.com"])
        hbbr = env_example("hbbr.env")
        self.assertTrue(hbbr)
        for key in hbbr:
            self.assertIn(key.replace("_", "-"), ENV_FILE_KEYS)


class PluginCacheTests(SynchronousTestCase):
    """The service user cannot write the venv: the recipe builds ``dropin.cache`` as root."""

    def test_cache_built_and_current(self):
        python, site = make_venv(self)
        pip_install(self, python, quick_start_install())
        [line] = [line for line in service_block() if "getPlugins" in line]
        words = shlex.split(line)
        self.assertEqual(words[0], VENV + "/bin/python")
        subprocess.run([python] + words[1:], check=True, cwd="/", env=venv_environment())
        cache = os.path.join(site, "twisted", "plugins", "dropin.cache")
        with open(cache, "rb") as f:
            built = f.read()
        before = os.stat(cache).st_mtime_ns
        self.assertIn("rustdesk-server", twistd_help(python))
        self.assertEqual(os.stat(cache).st_mtime_ns, before, "twistd had to rewrite the cache")
        with open(cache, "rb") as f:
            self.assertEqual(f.read(), built)
        self.assertIn(b"rustdesk_server", built)
