"""HttpProxyRequest on TCP 21116 (API.md 1.0, 1.11), in memory.

The real hbbs listeners run on the fake network of ``tests/fakenet.py``;
the client is ``rustdesk_twisted.client.http_proxy_request`` (secure_tcp
with the server's key, as the official client); the API is a real
twisted.web resource behind treq's ``RequestTraversalAgent`` (a real
``Agent`` and ``Site`` joined by iosim).
"""

import json
import os

from hypothesis import given, settings, strategies as st
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from treq.testing import RequestTraversalAgent

from rustdesk_twisted import metrics
from rustdesk_twisted.combined_tap import Options as CombinedOptions
from rustdesk_twisted.combined_tap import makeService as make_combined
from rustdesk_twisted.config import ConfigError
from rustdesk_twisted.client import (
    ApiProxyError,
    FramedRendezvousClient,
    ServerAddress,
    WebSocketRendezvousClient,
    http_proxy_request,
)
from rustdesk_twisted.hbbs import apiproxy, tap
from rustdesk_twisted.hbbs.apiproxy import ApiProxy, forwarded_headers, request_problem
from rustdesk_twisted.hbbs.rendezvous import TOO_MANY_REQUESTS
from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.rendezvous_pb2 import HeaderEntry, HttpProxyRequest

from .test_hbbs_flows import KEY, PUBLIC, SERVER_IP, Scenario

API = "http://127.0.0.1:21114"
CLIENT_IP = "203.0.113.10"
OTHER_IP = "203.0.113.11"


class _Api(Resource):
    """The API server: records every request; answers ``answer`` or holds the request open."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []
        self.held = []
        self.hold = False
        self.answer = (200, [(b"Content-Type", b"application/json")], b'{"ok": true}')

    def render(self, request):
        self.seen.append((request.method, request.uri, request.requestHeaders,
                          request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        code, headers, body = self.answer
        request.setResponseCode(code)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body


def header(headers, name):
    """The values of ``name`` among HeaderEntry messages."""
    return [h.value for h in headers if h.name.lower() == name.lower()]


class ProxyScenario(Scenario):
    """hbbs with an ApiProxy whose agent reaches ``self.api`` in memory."""

    def setUp(self):
        super().setUp()
        self.api = _Api()
        self.agent = RequestTraversalAgent(self.api)
        self.start(self.agent)

    def start(self, agent, url=API, **limits):
        self.proxy = ApiProxy(self.clock, agent, url, **limits)
        self.hbbs(api_proxy=self.proxy)

    def host(self, ip=CLIENT_IP):
        return self.network.public_hosts.get(ip) or self.network.add_host(ip)

    def pump(self):
        for _ in range(4):
            self.network.flush()
            self.agent.flush()

    def ask(self, method="GET", path="/api/login-options", headers=(), body=b"", ip=CLIENT_IP,
            server_key=PUBLIC):
        """Start one proxied request; returns a list that will hold its outcome."""
        outcome = []
        d = http_proxy_request(self.host(ip), ServerAddress(SERVER_IP), server_key, method, path,
                               headers, body)
        d.addBoth(outcome.append)
        return outcome

    def request(self, *args, **kwargs):
        """One proxied request, pumped to its end: the HttpProxyResponse."""
        outcome = self.ask(*args, **kwargs)
        self.pump()
        [response] = outcome
        if isinstance(response, Failure):
            response.raiseException()
        return response

    def secured_stream(self, ip=CLIENT_IP):
        """A bare secured connection, for what the official client never sends."""
        stream = FramedRendezvousClient(server_key=PUBLIC)
        self.host(ip).connect_tcp((SERVER_IP, 21116), stream)
        self.network.flush()
        self.assertTrue(stream.secured)
        return stream


class ForwardingTests(ProxyScenario):
    def test_secured_request_reaches_the_api_and_its_answer_comes_back(self):
        response = self.request("GET", "/api/login-options?next=%2Fapi%2Fab&x=1")
        self.assertEqual((response.status, response.error), (200, ""))
        self.assertEqual(json.loads(response.body), {"ok": True})
        self.assertEqual(header(response.headers, "Content-Type"), ["application/json"])
        [(method, uri, _, body)] = self.api.seen
        self.assertEqual((method, uri, body), (b"GET", b"/api/login-options?next=%2Fapi%2Fab&x=1",
                                               b""))
        self.assertEqual(self.proxy.counters, {"answered": 1})
        self.assertEqual(self.proxy.in_flight, {})

    def test_api_status_and_error_body_pass_through(self):
        """A 4xx of the API is the API's answer: status and body, no proxy error."""
        self.api.answer = (401, [(b"Content-Type", b"application/json")],
                           b'{"error": "Invalid token"}')
        response = self.request("POST", "/api/currentUser", body=b"{}")
        self.assertEqual((response.status, response.error), (401, ""))
        self.assertEqual(json.loads(response.body), {"error": "Invalid token"})

    def test_body_and_end_to_end_headers_forwarded_hop_by_hop_dropped(self):
        body = json.dumps({"id": "123456789", "uuid": "dXVpZA=="}).encode()
        sent = [("Authorization", "Bearer t0ken"), ("Content-Type", "application/json"),
                ("Connection", "keep-alive, X-Private"), ("Keep-Alive", "timeout=5"),
                ("X-Private", "secret"), ("Transfer-Encoding", "chunked"),
                ("Upgrade", "websocket"), ("TE", "trailers"), ("Proxy-Authorization", "Basic x"),
                ("Host", "evil.example"), ("Content-Length", "99999"),
                ("X-Forwarded-For", "192.0.2.66"), ("X-Real-IP", "192.0.2.66"),
                ("Forwarded", "for=192.0.2.66"), ("Accept-Encoding", "gzip"),
                ("X-Custom", "one"), ("X-Custom", "two")]
        response = self.request("POST", "/api/heartbeat", sent, body)
        self.assertEqual(response.status, 200)
        [(method, uri, headers, received)] = self.api.seen
        self.assertEqual((method, uri, received), (b"POST", b"/api/heartbeat", body))
        self.assertEqual(headers.getRawHeaders(b"Authorization"), [b"Bearer t0ken"])
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"X-Custom"), [b"one", b"two"])
        self.assertEqual(headers.getRawHeaders(b"X-Forwarded-For"), [CLIENT_IP.encode()])
        self.assertEqual(headers.getRawHeaders(b"X-Real-IP"), [CLIENT_IP.encode()])
        self.assertEqual(headers.getRawHeaders(b"Host"), [b"127.0.0.1:21114"])
        self.assertEqual(headers.getRawHeaders(b"Content-Length"), [str(len(body)).encode()])
        for dropped in (b"Keep-Alive", b"X-Private", b"Transfer-Encoding", b"Upgrade", b"TE",
                        b"Proxy-Authorization", b"Forwarded", b"Accept-Encoding"):
            self.assertFalse(headers.hasHeader(dropped), dropped)
        self.assertNotIn(b"keep-alive", b",".join(headers.getRawHeaders(b"Connection", [])))

    def test_empty_post_is_sent_with_content_length_zero(self):
        """Several address-book POSTs carry an empty body (API.md 1.0)."""
        self.request("POST", "/api/ab/personal")
        [(_, _, headers, body)] = self.api.seen
        self.assertEqual((body, headers.getRawHeaders(b"Content-Length")), (b"", [b"0"]))

    def test_delete_carries_its_body_head_has_no_body(self):
        self.request("DELETE", "/api/ab/peer/x", body=b'["a"]')
        response = self.request("HEAD", "/api/login-options")
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual([(m, b) for m, _, _, b in self.api.seen],
                         [(b"DELETE", b'["a"]'), (b"HEAD", b"")])

    def test_avatar_path_is_proxied(self):
        self.api.answer = (200, [(b"Content-Type", b"image/png")], b"\x89PNG")
        response = self.request("GET", "/avatar/alice.png")
        self.assertEqual((response.status, response.body), (200, b"\x89PNG"))

    def test_response_hop_by_hop_headers_dropped(self):
        self.api.answer = (200, [(b"Keep-Alive", b"timeout=5"), (b"Proxy-Thing", b"x"),
                                 (b"Trailer", b"X-Sum"), (b"X-Api", b"kept")], b"body")
        response = self.request()
        names = {h.name.lower() for h in response.headers}
        self.assertEqual(header(response.headers, "X-Api"), ["kept"])
        self.assertEqual(names & {"keep-alive", "proxy-thing", "connection", "trailer",
                                  "transfer-encoding"}, set())

    def test_chunked_response_body_arrives_whole(self):
        self.api.hold = True
        outcome = self.ask()
        self.pump()
        [held] = self.api.held
        held.write(b"part one, ")
        self.pump()
        self.assertEqual(outcome, [])
        held.write(b"part two")
        held.finish()
        self.pump()
        self.assertEqual(outcome[0].body, b"part one, part two")
        self.assertEqual(header(outcome[0].headers, "Transfer-Encoding"), [])

    def test_ipv6_client_is_forwarded_as_itself(self):
        """A dual-stack server sees IPv4 clients as ::ffff:a.b.c.d; the API gets the IPv4."""
        self.assertEqual(forwarded_headers([], "2001:db8::7").getRawHeaders(b"X-Forwarded-For"),
                         [b"2001:db8::7"])
        self.request()
        [(_, _, headers, _)] = self.api.seen
        self.assertEqual(headers.getRawHeaders(b"X-Forwarded-For"), [CLIENT_IP.encode()])

    def test_debug_line_starts_with_the_client(self):
        self.request("GET", "/api/login-options")
        [event] = self.log_events("api_proxy_answered")
        self.assertEqual(event["ip"], CLIENT_IP)
        self.assertEqual(event["status"], 200)


class RefusalTests(ProxyScenario):
    def refused(self, *args, **kwargs):
        response = self.request(*args, **kwargs)
        self.assertEqual(response.status, 0)
        self.assertEqual(self.api.seen, [])
        return response.error

    def test_unsecured_connection_gets_an_error(self):
        """A client that skipped secure_tcp: "secure_tcp required", which it shows."""
        self.assertEqual(self.refused(server_key=None), "secure_tcp required")
        self.assertEqual(self.proxy.counters, {"unsecured": 1})

    def test_server_without_signing_key_cannot_secure(self):
        self.hbbs(signing=None, licence="", api_proxy=self.proxy)
        self.assertEqual(self.refused(server_key=None), "secure_tcp required")

    def test_websocket_gets_an_error(self):
        stream = WebSocketRendezvousClient()
        stream.on_ready = lambda s: s.send(messages.wrap(
            "http_proxy_request", HttpProxyRequest(method="GET", path="/api/login-options")))
        self.host().connect_tcp((SERVER_IP, 21118), stream)
        self.pump()
        [answer] = [messages.parse(p) for p in stream.received]
        self.assertEqual(answer.http_proxy_response.error, "secure_tcp required")
        self.assertEqual(self.api.seen, [])

    def test_udp_request_is_ignored(self):
        transport, received = self.udp_socket()
        request = messages.wrap("http_proxy_request",
                                HttpProxyRequest(method="GET", path="/api/login-options"))
        transport.write(request.SerializeToString(), (SERVER_IP, 21116))
        self.pump()
        self.assertEqual((received, self.api.seen), ([], []))
        self.assertEqual(self.server.server.counters.get("udp_ignored"), 1)

    def test_disabled_proxy_answers_so(self):
        self.start(None, url=None)
        self.assertEqual(self.refused(), "API proxy disabled")

    def test_methods_other_than_the_five_are_refused(self):
        for method in ("CONNECT", "TRACE", "OPTIONS", "PATCH", "get", "GET /x HTTP/1.1\r\n"):
            self.assertEqual(self.refused(method), "the method must be GET, POST, PUT, DELETE or "
                                                    "HEAD")

    def test_paths_outside_the_api_are_refused(self):
        for path in ("/", "/admin", "api/login", "http://evil/api/", "//evil/api/", "/apix",
                     "/api"):
            self.assertEqual(self.refused(path=path), "the path must start with /api/ or /avatar")
        for path in ("/api/../admin", "/api/%2e%2E/admin", "/api/..%2fadmin", "/avatar/./x",
                     "/api/x y", "/api/x\r\nHost: evil", "/api/\u00e9", "/api/x#frag"):
            self.assertEqual(self.refused(path=path), "the path is not a plain URL path")

    def test_malformed_headers_are_refused(self):
        for name, value in (("Bad Name", "x"), ("X-Split", "a\r\nHost: evil"), ("", "x"),
                            ("X-Nul", "a\x00b"), ("Ünicode", "x")):
            self.assertEqual(self.refused(headers=[(name, value)]),
                             "a header name or value is malformed")
        self.assertEqual(self.proxy.counters, {"bad_request": 5})

    def test_huge_head_is_refused(self):
        error = self.refused(headers=[("X-Big", "x" * apiproxy.MAX_HEAD)])
        self.assertIn("must fit in", error)

    def test_refusal_keeps_the_connection(self):
        """A refused request is answered; the connection stays for the next one."""
        stream = self.secured_stream()
        for path in ("/admin", "/api/login-options"):
            stream.send(messages.wrap("http_proxy_request",
                                      HttpProxyRequest(method="GET", path=path)))
            self.network.advance(1)
            self.pump()
        answers = [messages.parse(p).http_proxy_response for p in stream.received[1:]]
        self.assertEqual([(a.status, a.error) for a in answers],
                         [(0, "the path must start with /api/ or /avatar"), (200, "")])
        self.assertFalse(stream.closed)


class LimitTests(ProxyScenario):
    def test_request_body_over_the_cap_is_answered_with_an_error(self):
        self.start(self.agent, max_body=100)
        response = self.request("POST", "/api/sysinfo", body=b"x" * 101)
        self.assertEqual(response.error, "the request body is larger than 100 bytes")
        self.assertEqual(self.api.seen, [])
        self.assertEqual(self.proxy.limits.hits, {"api-proxy-request-body": 1})
        [event] = self.log_events("limit_reached")
        self.assertEqual(event["source"], CLIENT_IP)
        self.assertEqual(self.request("POST", "/api/sysinfo", body=b"x" * 100).status, 200)

    def test_secured_connection_accepts_a_body_up_to_the_cap(self):
        """Frames are capped at 64 KiB, except on a secured connection with the proxy on."""
        body = b"[" + b"1," * 100_000 + b"1]"
        self.assertGreater(len(body), 64 * 1024)
        response = self.request("POST", "/api/ab", body=body)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.api.seen[0][3], body)

    def test_body_beyond_the_frame_limit_closes_the_connection(self):
        self.start(self.agent, max_body=70_000)
        outcome = self.ask("POST", "/api/ab", body=b"x" * (self.proxy.frame_limit + 1))
        self.pump()
        self.assertIsInstance(outcome[0].value, ApiProxyError)
        self.assertEqual(self.log_events("frame_too_large")[0]["address"][0], "::ffff:" + CLIENT_IP)

    def test_plaintext_connection_keeps_the_frame_limit(self):
        stream = FramedRendezvousClient()
        self.host().connect_tcp((SERVER_IP, 21116), stream)
        stream.send(messages.wrap("punch_hole_request", id="987654321", licence_key=KEY))
        self.network.flush()
        self.assertFalse(stream.closed)
        stream.send_payload(b"x" * (70 * 1024))
        self.network.flush()
        self.assertTrue(stream.closed)
        self.assertEqual(len(self.log_events("frame_too_large")), 1)

    def test_without_proxy_the_frame_limit_stays(self):
        self.start(None, url=None)
        outcome = self.ask("POST", "/api/ab", body=b"x" * (70 * 1024))
        self.pump()
        self.assertIsInstance(outcome[0].value, ApiProxyError)

    def test_response_over_the_cap(self):
        """Known length: refused before reading; chunked: refused once past the cap."""
        self.start(self.agent, max_response=1000)
        self.api.answer = (200, [], b"y" * 1001)
        response = self.request()
        self.assertEqual(response.error, "the API response is larger than 1000 bytes")
        self.api.hold = True
        outcome = self.ask()
        self.pump()
        self.api.held[0].write(b"z" * 600)
        self.pump()
        self.assertEqual(outcome, [])
        self.api.held[0].write(b"z" * 600)
        self.pump()
        self.assertEqual(outcome[0].error, "the API response is larger than 1000 bytes")
        self.assertEqual(self.proxy.counters, {"response_too_large": 2})
        self.assertEqual(self.proxy.limits.hits, {"api-proxy-response-body": 2})
        self.assertEqual(self.proxy.in_flight, {})

    def test_response_up_to_the_cap_passes(self):
        self.start(self.agent, max_response=1000)
        self.api.answer = (200, [], b"y" * 1000)
        self.assertEqual(len(self.request().body), 1000)

    def test_timeout(self):
        self.api.hold = True
        outcome = self.ask("POST", "/api/heartbeat", body=b"{}")
        self.pump()
        self.clock.advance(11.9)
        self.pump()
        self.assertEqual(outcome, [])
        self.clock.advance(0.1)
        self.pump()
        [response] = outcome
        self.assertEqual((response.status, response.error),
                         (0, "the API server did not answer within 12 s"))
        self.assertEqual(self.proxy.counters, {"timeout": 1})
        self.assertEqual(self.proxy.in_flight, {})
        [event] = self.log_events("api_proxy_failed")
        self.assertEqual((event["source"], event["limit"]), (CLIENT_IP, "timeout"))
        self.assertTrue(self.api.held[0]._disconnected)

    def test_option_timeout(self):
        self.start(self.agent, timeout=3)
        self.api.hold = True
        outcome = self.ask()
        self.pump()
        self.clock.advance(3)
        self.pump()
        self.assertEqual(outcome[0].error, "the API server did not answer within 3 s")

    def test_unreachable_api(self):
        reactor = MemoryReactorClock()
        self.start(Agent(reactor))
        outcome = self.ask("POST", "/api/heartbeat", body=b"{}")
        self.network.flush()
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 21114))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        reactor.advance(1)
        self.network.flush()
        self.assertEqual(outcome[0].error, "the API server could not be reached")
        [event] = self.log_events("api_proxy_failed")
        self.assertEqual(event["log_format"].split(" ")[0], "{source}")
        self.assertEqual(event["source"], CLIENT_IP)
        self.assertIn('POST "/api/heartbeat"', event["detail"])
        self.assertEqual(self.proxy.counters, {"unreachable": 1})

    def test_in_flight_cap_per_source(self):
        self.start(self.agent, in_flight_per_ip=2)
        self.api.hold = True
        waiting = [self.ask() for _ in range(2)]
        self.pump()
        refused = self.request()
        self.assertEqual(refused.error, "too many API requests from your address are in progress")
        self.assertEqual(self.proxy.in_flight, {CLIENT_IP: 2})
        other = self.ask(ip=OTHER_IP)
        self.pump()
        self.assertEqual(len(self.api.held), 3)
        self.api.held[0].write(b"done")
        self.api.held[0].finish()
        self.pump()
        self.assertEqual(waiting[0][0].body, b"done")
        self.ask()
        self.pump()
        self.assertEqual(len(self.api.held), 4)
        self.assertEqual(self.proxy.limits.hits, {"api-proxy-in-flight": 1})
        self.assertEqual((waiting[1], other), ([], []))

    def test_second_request_on_a_connection_before_the_answer_closes_it(self):
        """Its answer could not be told from the first's (the request admission would close
        the connection first with the default burst)."""
        self.hbbs(api_proxy=self.proxy, request_burst_per_connection=4)
        self.api.hold = True
        stream = self.secured_stream()
        request = messages.wrap("http_proxy_request",
                                HttpProxyRequest(method="GET", path="/api/login-options"))
        stream.send(request)
        stream.send(request)
        self.pump()
        self.assertTrue(stream.closed)
        self.assertEqual(self.proxy.limits.hits, {"api-proxy-per-connection": 1})
        self.assertEqual(self.proxy.in_flight, {})
        self.assertEqual(self.proxy.counters, {"abandoned": 1})

    def test_client_leaving_cancels_the_api_request(self):
        self.api.hold = True
        outcome = self.ask()
        self.pump()
        [connection] = self.network.connections
        connection.client_transport.loseConnection()
        self.pump()
        self.assertEqual(self.proxy.in_flight, {})
        self.assertEqual(self.proxy.counters, {"abandoned": 1})
        self.assertTrue(self.api.held[0]._disconnected)
        self.assertIsInstance(outcome[0].value, ApiProxyError)

    def test_proxied_request_costs_two_in_the_request_admission(self):
        """--requests-per-ip 1 allows bursts of 3: one proxied request (2), then a punch (1)."""
        self.hbbs(api_proxy=self.proxy, requests_per_ip=1)
        self.assertEqual(self.request().status, 200)
        refused = self.request()
        self.assertEqual(refused.error, TOO_MANY_REQUESTS)
        stream = FramedRendezvousClient()
        self.host().connect_tcp((SERVER_IP, 21116), stream)
        stream.send(messages.wrap("punch_hole_request", id="987654321", licence_key=KEY))
        self.network.flush()
        self.assertEqual(messages.parse(stream.received[-1]).WhichOneof("union"),
                         "punch_hole_response")
        self.assertEqual(messages.parse(stream.received[-1]).punch_hole_response.other_failure,
                         "")

    def test_metrics(self):
        self.request()
        self.request(path="/admin")
        self.api.hold = True
        self.ask()
        self.pump()

        class Service:
            server = self.server.server
            store = None
            websocket_admission = None

        text = metrics.exposition(metrics.registry_for(
            metrics.HbbsCollector(Service(), self.clock))).decode()
        self.assertIn('rustdesk_hbbs_api_proxy_requests_total{outcome="answered"} 1.0', text)
        self.assertIn('rustdesk_hbbs_api_proxy_requests_total{outcome="bad_request"} 1.0', text)
        self.assertIn("rustdesk_hbbs_api_proxy_in_flight 1.0", text)


class RequestProblemTests(ProxyScenario):
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=12), st.text(max_size=40),
           st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=4),
           st.binary(max_size=40))
    def test_any_request_is_refused_in_words_or_forwardable(self, method, path, headers, body):
        """No request makes the checks or the header building raise."""
        request = HttpProxyRequest(method=method, path=path, body=body, headers=[
            HeaderEntry(name=name, value=value) for name, value in headers])
        problem = request_problem(request)
        if problem is None:
            (API + path).encode("ascii")
            forwarded_headers(request.headers, CLIENT_IP)
        else:
            self.assertTrue(problem.endswith(("headers", "path", "malformed", "HEAD",
                                              "/avatar")), problem)


class ConfigTests(SynchronousTestCase):
    def config(self, *argv, environ=None):
        parsed = tap.Options()
        parsed.parseOptions(list(argv))
        return tap.build_config(parsed, environ or {})

    def test_default_is_the_api_port_on_loopback(self):
        self.assertEqual(self.config().api_server, "http://127.0.0.1:21114")
        self.assertEqual(self.config("-p", "31116").api_server, "http://127.0.0.1:31114")

    def test_off_and_urls(self):
        self.assertIsNone(self.config("--api-server", "off").api_server)
        self.assertEqual(self.config("--api-server", "https://api.example.com/base").api_server,
                         "https://api.example.com/base")
        self.assertEqual(self.config("--api-server", "http://[::1]:8080").api_server,
                         "http://[::1]:8080")
        for bad in ("ftp://x", "127.0.0.1:21114", "http://", "http://a b", "http://x?q=1",
                    "http://\u00e9"):
            self.assertRaises(ConfigError, self.config, "--api-server", bad)

    def test_environment_and_dotenv(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write("API_SERVER=http://api.internal:9000\nAPI_PROXY_TIMEOUT=5\n")
        built = self.config("--data-dir", directory, environ={"API-PROXY-MAX-BODY": "2048"})
        self.assertEqual((built.api_server, built.api_timeout, built.api_max_body),
                         ("http://api.internal:9000", 5, 2048))
        self.assertEqual(self.config(environ={"api_server": "off"}).api_server, None)

    def test_limits_and_defaults(self):
        built = self.config()
        self.assertEqual((built.api_max_body, built.api_max_response, built.api_timeout,
                          built.api_in_flight), (1 << 20, 8 << 20, 12, 8))
        self.assertRaises(ConfigError, self.config, "--api-proxy-timeout", "0")
        self.assertRaises(ConfigError, self.config, "--api-proxy-in-flight-per-ip", "0")

    def test_help_lists_the_options(self):
        text = str(tap.Options())
        for name in ("--api-server", "--api-proxy-max-body", "--api-proxy-max-response",
                     "--api-proxy-timeout", "--api-proxy-in-flight-per-ip"):
            self.assertIn(name, text)

    def test_combined_server_passes_them_to_hbbs(self):
        directory = os.path.abspath(self.mktemp())
        parsed = CombinedOptions()
        parsed.parseOptions(["--data-dir", directory, "--api-server", "off",
                             "--api-proxy-in-flight-per-ip", "3"])
        service = make_combined(parsed, reactor=MemoryReactorClock())
        self.assertEqual((service.hbbs.config.api_server, service.hbbs.config.api_in_flight),
                         (None, 3))
