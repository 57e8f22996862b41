"""Real sockets: ``twistd -n rustdesk-hbbs --api-server URL`` proxies to a twisted.web server."""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from rustdesk_twisted.client import ReactorHost, ServerAddress, http_proxy_request
from rustdesk_twisted.client.api import OfficialApiClient
from rustdesk_twisted.client.apiproxy import ProxiedHttp
from rustdesk_twisted.wire import keys

from .livesupport import free_port_block, start_twistd, stop_twistd


class _Heartbeat(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_POST(self, request):
        self.seen.append((request.uri, request.getHeader(b"X-Forwarded-For"),
                          json.loads(request.content.read())))
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"sysinfo": true}'


class LiveApiProxyTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.api = _Heartbeat()
        listener = reactor.listenTCP(0, Site(self.api), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.port = free_port_block((-1, 0, 2))
        self.process = yield start_twistd(
            reactor, "rustdesk-hbbs",
            ["-p", str(self.port), "--bind", "127.0.0.1", "--data-dir", directory,
             "--console", "off", "--admin", "off",
             "--api-server", f"http://127.0.0.1:{listener.getHost().port}"],
            directory, b"Relay servers:").ready
        self.addCleanup(stop_twistd, self.process)
        with open(os.path.join(directory, "id_ed25519.pub")) as f:
            self.key = keys.decode_public(f.read())

    @inlineCallbacks
    def test_secured_client_gets_the_api_answer(self):
        response = yield http_proxy_request(
            ReactorHost(reactor, "127.0.0.1"), ServerAddress("127.0.0.1", self.port), self.key,
            "POST", "/api/heartbeat?v=1", [("Content-Type", "application/json")],
            json.dumps({"id": "123456789", "uuid": "dXVpZA==", "ver": 1004009}).encode())
        self.assertEqual((response.status, response.error), (200, ""))
        self.assertEqual(json.loads(response.body), {"sysinfo": True})
        self.assertEqual(self.api.seen, [(b"/api/heartbeat?v=1", b"127.0.0.1",
                                          {"id": "123456789", "uuid": "dXVpZA==",
                                           "ver": 1004009})])
        self.assertIn(b"API proxy (HttpProxyRequest on secured TCP): http://127.0.0.1:",
                      self.process.output)

    @inlineCallbacks
    def test_the_official_client_calls_through_hbbs(self):
        client = OfficialApiClient(
            ProxiedHttp(ReactorHost(reactor, "127.0.0.1"), ServerAddress("127.0.0.1", self.port),
                        self.key), "http://127.0.0.1:1", rustdesk_id="123456789",
            machine_uuid="dXVpZA==")
        answer = yield client.heartbeat(modified_at=7)
        self.assertEqual((answer.status, answer.json()), (200, {"sysinfo": True}))
        self.assertEqual(self.api.seen[-1][2], {"id": "123456789", "uuid": "dXVpZA==",
                                                "ver": 1004020, "modified_at": 7})
