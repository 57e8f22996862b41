"""No test may listen on a default port (21115-21121): the suite must pass beside a running server.

A cheap guard over the test sources: a default port literal handed to a real
listener (``listenTCP``/``listenUDP``, ``-p``/``--port`` of a twistd command,
or an endpoint string) fails here.  In-memory hosts and strings that are only
parsed may use them.  What a grep cannot see (a service left on its default
admin port) was found by running the suite with every default port held.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from .livesupport import REPOSITORY

DEFAULT = r"211(?:1[5-9]|2[01])\b"
BINDING = re.compile(
    r"listen(?:TCP|UDP|SSL)\(\s*" + DEFAULT
    + r"|[\"'](?:-p|--port|--relay-port)[\"'],\s*[\"']" + DEFAULT
    + r"|[\"'](?:-p|--port|--relay-port) " + DEFAULT
    + r"|(?:LISTEN-\w+|ADMIN|CONSOLE)[\"']?\s*[:=]\s*[\"'](?:tcp:|udp:)?" + DEFAULT)


def offending_lines(directory):
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py") or name == os.path.basename(__file__):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if BINDING.search(line):
                    yield f"{name}:{number}: {line.strip()}"


class DefaultPortTests(SynchronousTestCase):
    def test_pattern(self):
        for text in ('reactor.listenTCP(21116, f)', '["-p", "21116"]', "'--port 21117'",
                     '"ADMIN": "tcp:21120:interface=127.0.0.1"', "LISTEN-TCP='tcp:21116'"):
            self.assertTrue(BINDING.search(text), text)
        for text in ('host.listen_tcp(21116, f)', '("10.0.0.1", 21116)', '"r1:21117"',
                     'is_exposed("tcp:21120")', '["-p", str(port)]'):
            self.assertFalse(BINDING.search(text), text)

    def test_no_test_listens_on_a_default_port(self):
        self.assertEqual(list(offending_lines(os.path.join(REPOSITORY, "tests"))), [])
