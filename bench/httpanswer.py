"""Baseline for the API scenario: twisted.web answering ``{}`` to every POST, nothing else.

``python -m bench.httpanswer PORT HOST`` prints "ready" once listening.  It is the
ceiling of Twisted's HTTP/1.1 server on this machine, with the API's reactor.
"""

import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site


class Answer(Resource):
    isLeaf = True

    def render_POST(self, request):
        request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return b"{}"


class QuietSite(Site):
    noisy = False

    def log(self, request):
        """No access log, like the API's site."""


def main():
    port, host = int(sys.argv[1]), sys.argv[2]
    reactor.listenTCP(port, QuietSite(Answer()), interface=host, backlog=1024)
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
