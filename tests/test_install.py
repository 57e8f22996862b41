"""The README's install command and scripts/test.sh's, run in either order, leave the plugins.

An editable install (the old test script) removed ``twisted/plugins/rustdesk_*.py``
from the venv, so ``twistd -n rustdesk-server`` from the Quick start said "Unknown
command".  Both pip commands are taken from the files as written and run against
the checkout without the network: pip's own environment variables turn off the
index, dependencies and build isolation; the new venv reaches Twisted and
setuptools through a ``.pth`` file pointing at the running venv.
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from .livesupport import REPOSITORY
from .test_readme import readme_blocks

PLUGIN_FILES = ["rustdesk_api.py", "rustdesk_hbbr.py", "rustdesk_hbbs.py", "rustdesk_server.py"]
# The web console's package data: a non-editable install must carry it.
CONSOLE_FILES = ["templates/base.html", "templates/login.html", "static/console.css"]
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def pip_arguments(command):
    """The words after ``pip install`` in one shell command line."""
    words = shlex.split(command)
    index = next(i for i, word in enumerate(words) if word.endswith("/pip"))
    return words[index + 2:]


def quick_start_install():
    [command] = [part for part in readme_blocks()[0].split("&&") if "pip install" in part]
    return pip_arguments(command)


def test_script_install():
    with open(os.path.join(REPOSITORY, "scripts", "test.sh"), encoding="utf-8") as f:
        [command] = [line for line in f if "pip install" in line and "--upgrade pip" not in line]
    return pip_arguments(command)


def make_venv(test):
    """A new venv that reaches the running one's packages (Twisted, setuptools) by a .pth file;
    returns its python and its site-packages."""
    directory = tempfile.mkdtemp(prefix="rdvenv")
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", directory], check=True)
    python = os.path.join(directory, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True,
                          text=True).stdout.strip()
    with open(os.path.join(site, "outer.pth"), "w", encoding="utf-8") as f:
        f.write(_outer_packages(directory) + "\n")
    return python, site


def _outer_packages(directory):
    """The running venv's packages, as links, without our plugin files: when the test
    command installed this checkout there too, twisted would find our plugins there first
    and never look at (or cache) the new venv's."""
    outer = sysconfig.get_paths()["purelib"]
    view = os.path.join(directory, "outer")
    for parent, skip in ((outer, {"twisted"}), (os.path.join(outer, "twisted"), {"plugins"})):
        target = os.path.join(view, os.path.relpath(parent, outer))
        os.makedirs(target)
        for name in set(os.listdir(parent)) - skip:
            os.symlink(os.path.join(parent, name), os.path.join(target, name))
    plugins = os.path.join(outer, "twisted", "plugins")
    os.makedirs(os.path.join(view, "twisted", "plugins"))
    for name in os.listdir(plugins):
        if not name.startswith("rustdesk_") and name != "dropin.cache":
            os.symlink(os.path.join(plugins, name), os.path.join(view, "twisted", "plugins", name))
    return view


def checkout_copy(test):
    """The checkout's sources in a new directory: pip builds in the tree it installs, and
    parallel test workers building in one tree collide on its build/ directory."""
    directory = os.path.join(tempfile.mkdtemp(prefix="rdsrc"), "checkout")
    test.addCleanup(shutil.rmtree, os.path.dirname(directory), ignore_errors=True)
    shutil.copytree(REPOSITORY, directory, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "_trial_temp*", ".hypothesis", "__pycache__",
        "*.egg-info"))
    return directory


def pip_install(test, python, arguments):
    """``pip install ARGUMENTS`` into the venv of ``python``, from a copy of the checkout,
    offline."""
    result = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install"]
                            + arguments, cwd=checkout_copy(test),
                            env=dict(os.environ, **OFFLINE), capture_output=True, text=True)
    test.assertEqual(result.returncode, 0, result.stderr)


def venv_environment():
    """The environment of a program of the new venv: no PYTHONPATH (trial -j sets one, and
    the checkout on it would shadow the venv's plugin files)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def twistd_help(python):
    return subprocess.run([python, "-c", "from twisted.scripts.twistd import run; run()",
                           "--help"], capture_output=True, text=True, cwd="/",
                          env=venv_environment()).stdout


def api_db_upgrade(test, python):
    """``rustdesk-admin api-db upgrade`` of the installed package in a new data directory: the
    API's migrations must be in the package, not only in the checkout."""
    directory = tempfile.mkdtemp(prefix="rddata")
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    done = subprocess.run([python, "-m", "rustdesk_twisted.admin", "--data-dir", directory,
                           "api-db", "upgrade"], capture_output=True, text=True, cwd="/",
                          env=venv_environment())
    test.assertEqual(done.returncode, 0, done.stderr)
    return done.stdout


class InstallOrderTests(SynchronousTestCase):
    def check_order(self, first, second):
        python, site = make_venv(self)
        pip_install(self, python, first)
        pip_install(self, python, second)
        plugins = os.path.join(site, "twisted", "plugins")
        self.assertEqual(sorted(n for n in os.listdir(plugins) if n.endswith(".py")),
                         PLUGIN_FILES)
        self.assertIn("rustdesk-server", twistd_help(python))
        self.assertIn("created at schema revision", api_db_upgrade(self, python))
        console = os.path.join(site, "rustdesk_twisted", "api", "console")
        for name in CONSOLE_FILES:
            self.assertTrue(os.path.isfile(os.path.join(console, name)), name)

    def test_quick_start_then_tests(self):
        self.check_order(quick_start_install(), test_script_install())

    def test_tests_then_quick_start(self):
        self.check_order(test_script_install(), quick_start_install())
