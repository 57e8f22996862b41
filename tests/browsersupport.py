"""Headless Chromium for the console's browser test, until tests/services.py provides it.

browser(testcase) gives a selenium WebDriver of Debian's chromium; screenshot(driver, name)
writes NAME.png into $RUSTDESK_SCREENSHOTS, else test-screenshots/ at the top of the checkout.
Without chromium and chromium-driver the test skips (CI installs them and sets CI=true, where
their absence fails instead).
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from twisted.internet.threads import deferToThread

from .livesupport import REPOSITORY


def missing(what):
    message = f"{what} is not installed"
    if os.environ.get("CI") == "true":
        raise AssertionError(message)
    raise unittest.SkipTest(message)


def browser(testcase):
    """A Deferred of a headless Chromium WebDriver, quit in cleanup; its calls block, so make
    them through deferToThread."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        missing("Chromium (Debian packages chromium and chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium (the [test] extra)")
    profile = tempfile.mkdtemp(prefix="rustdesk-chromium-")
    testcase.addCleanup(shutil.rmtree, profile, ignore_errors=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", f"--user-data-dir={profile}", "--window-size=1280,900",
                     "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(argument)
    if os.getuid() == 0:
        options.add_argument("--no-sandbox")
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)

    def started(driver):
        testcase.addCleanup(deferToThread, driver.quit)
        return driver
    return deferToThread(webdriver.Chrome, service=service, options=options).addCallback(started)


def screenshot(driver, name):
    """Write the page as NAME.png where people look after the run; returns the path."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"screenshot name {name!r}: letters, digits, '.', '_', '-' only")
    directory = os.environ.get("RUSTDESK_SCREENSHOTS") or os.path.join(REPOSITORY,
                                                                        "test-screenshots")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".png")
    with open(path, "wb") as f:
        f.write(driver.get_screenshot_as_png())
    return path
