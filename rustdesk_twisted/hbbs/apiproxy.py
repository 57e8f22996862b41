"""HttpProxyRequest on TCP 21116: the HTTP API reached through hbbs (API.md 1.0, PROTOCOL.md 2.2).

A client that cannot reach the API port (21114) opens a rendezvous
connection, runs secure_tcp, sends one ``HttpProxyRequest`` and reads exactly
one message, which must be the ``HttpProxyResponse``.  :class:`ApiProxy`
checks the request, forwards it with an injected ``IAgent`` to
``--api-server`` and answers on the same connection.  Whatever goes wrong on
our side is the response's ``error``, one sentence; the client shows it as
"TCP proxy error: <error>" (and, when the proxy was only its fallback, keeps
the error of its direct attempt).
"""

import re
from urllib.parse import unquote

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted, untrusted
from ..wire import messages
from ..wire.rendezvous_pb2 import HeaderEntry, HttpProxyResponse

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_RESPONSE = 8 << 20
DEFAULT_TIMEOUT = 12  # the official client's per-attempt HTTP timeout
DEFAULT_IN_FLIGHT_PER_IP = 8
# A proxied request costs this many PunchHoleRequests in the request admission.
REQUEST_COST = 2
# Method, path and headers together, and how many headers.
MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
# Protobuf tags and lengths around body and head, and the secretbox MAC.
FRAME_SLACK = 1024

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD")
PATH_PREFIXES = ("/api/", "/avatar")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te",
                         "trailer"})
# Request headers we set ourselves or must not pass on: Host and Content-Length belong to
# our connection; the client's TCP path reads the body as text, so it must not be
# compressed; the forwarded address is the client's as we see it, never what it claims.
_NOT_FORWARDED = frozenset({"host", "content-length", "accept-encoding", "x-forwarded-for",
                            "x-real-ip", "forwarded"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PATH = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+\Z")


class ResponseTooLarge(Exception):
    """The API's answer is larger than the response cap."""


def _hop_by_hop(name, connection_tokens):
    return name in _HOP_BY_HOP or name.startswith("proxy-") or name in connection_tokens


def _connection_tokens(pairs):
    """Header names listed in Connection, which are hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for name, value in pairs if name.lower() == "connection"
            for token in value.split(",")}


def request_problem(request):
    """Why ``request`` (an HttpProxyRequest) is not forwarded, as the client's one sentence;
    its body size is the caller's cap."""
    if request.method not in METHODS:
        return "the method must be GET, POST, PUT, DELETE or HEAD"
    path = request.path
    if not path.startswith(PATH_PREFIXES):
        return "the path must start with /api/ or /avatar"
    head = len(path.encode("utf-8")) + sum(len(h.name.encode("utf-8")) +
                                           len(h.value.encode("utf-8")) for h in request.headers)
    if head > MAX_HEAD or len(request.headers) > MAX_HEADERS:
        return f"the path and headers must fit in {MAX_HEAD} bytes and {MAX_HEADERS} headers"
    if _PATH.match(path) is None or any(
            segment in (".", "..") for segment in unquote(path.split("?", 1)[0]).split("/")):
        return "the path is not a plain URL path"
    for header in request.headers:
        if _TOKEN.match(header.name) is None or _BAD_VALUE.search(header.value):
            return "a header name or value is malformed"
    return None


def forwarded_headers(entries, client_ip):
    """The request headers for the API: the client's minus hop-by-hop ones, plus its address.

    ``X-Forwarded-For`` and ``X-Real-IP`` both name the client as we see it,
    so an API that prefers either cannot be told another address.
    """
    pairs = [(entry.name, entry.value) for entry in entries]
    tokens = _connection_tokens(pairs)
    headers = Headers()
    for name, value in pairs:
        lower = name.lower()
        if not _hop_by_hop(lower, tokens) and lower not in _NOT_FORWARDED:
            headers.addRawHeader(name.encode("ascii"), value.encode("utf-8"))
    for name in (b"X-Forwarded-For", b"X-Real-IP"):
        headers.setRawHeaders(name, [client_ip.encode("ascii")])
    return headers


def returned_headers(headers):
    """The API's response headers minus hop-by-hop ones, as HeaderEntry messages.

    The agent has already taken Connection and the other connection-control
    headers out of ``headers``.
    """
    return [HeaderEntry(name=name.decode("latin-1"), value=value.decode("latin-1"))
            for name, values in headers.getAllRawHeaders() for value in values
            if not _hop_by_hop(name.decode("latin-1").lower(), ())]


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written at once (no cooperator, no global reactor)."""

    def __init__(self, body):
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _BodyCollector(Protocol):
    """Reads a response body into memory, giving up past ``limit`` bytes.

    ``finished`` fires with the body; cancelling it stops the transfer.
    """

    def __init__(self, length, limit):
        self.length = length
        self.limit = limit
        self.finished = defer.Deferred(lambda _: self.transport.stopProducing())
        self.parts = []
        self.size = 0

    def connectionMade(self):
        if self.length is not UNKNOWN_LENGTH and self.length > self.limit:
            self._too_large()

    def dataReceived(self, data):
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self._too_large()
            return
        self.parts.append(data)

    def _too_large(self):
        self.transport.stopProducing()
        if not self.finished.called:
            self.finished.errback(ResponseTooLarge())

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


def _reason(failure):
    """The first cause of a transport failure, as text of ours (never the client's)."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        failure = reasons[0]
    return failure.getErrorMessage() or type(failure.value).__name__


class ApiProxy:
    """Forwards HttpProxyRequests to the API server; ``url`` None answers every one disabled.

    Bounded: one request in flight per connection (the client reads one
    answer per request, so a second could not be told apart), at most
    ``in_flight_per_ip`` per source, a body cap each way and a timeout on
    the whole exchange, driven by ``clock``.
    """

    log = Logger()

    def __init__(self, clock, agent=None, url=None, max_body=DEFAULT_MAX_BODY,
                 max_response=DEFAULT_MAX_RESPONSE, timeout=DEFAULT_TIMEOUT,
                 in_flight_per_ip=DEFAULT_IN_FLIGHT_PER_IP):
        self.clock = clock
        self.agent = agent
        self.url = url.rstrip("/") if url else None
        self.max_body = max_body
        self.max_response = max_response
        self.timeout = timeout
        self.in_flight_per_ip = in_flight_per_ip
        self.in_flight = {}
        self.counters = {}
        self.limits = LimitLog(self.log)
        self.failures = LimitLog(self.log, line="{source} API proxy {limit}{detail}{more}",
                                 event="api_proxy_failed")

    @property
    def frame_limit(self):
        """The largest frame a secured connection must accept to carry the largest request."""
        return self.max_body + MAX_HEAD + FRAME_SLACK

    @property
    def in_flight_total(self):
        return sum(self.in_flight.values())

    def _count(self, outcome):
        self.counters[outcome] = self.counters.get(outcome, 0) + 1

    def _answer(self, channel, response):
        channel.send(messages.wrap("http_proxy_response", response))

    def _refuse(self, channel, outcome, error):
        self._count(outcome)
        self._answer(channel, HttpProxyResponse(error=error))
        return True

    def handle(self, channel, request, now):
        """Answer ``request`` on ``channel``, now or once the API has; False closes it."""
        source = source_key(channel.key[0])
        if channel.api_request is not None:
            self.limits.hit(now, "api-proxy-per-connection", source,
                            "a second request before the first was answered")
            return False
        if self.url is None:
            return self._refuse(channel, "disabled", "API proxy disabled")
        if not channel.secured:
            return self._refuse(channel, "unsecured", "secure_tcp required")
        problem = request_problem(request)
        if problem is not None:
            self.log.debug("{ip} API proxy refused {method} {path}: {problem}", ip=channel.key[0],
                           method=untrusted(request.method), path=untrusted(request.path),
                           problem=problem, event="api_proxy_refused")
            return self._refuse(channel, "bad_request", problem)
        if len(request.body) > self.max_body:
            self.limits.hit(now, "api-proxy-request-body", source,
                            f"{len(request.body)} bytes (at most {self.max_body})")
            return self._refuse(channel, "request_too_large",
                                f"the request body is larger than {self.max_body} bytes")
        if self.in_flight.get(source, 0) >= self.in_flight_per_ip:
            self.limits.hit(now, "api-proxy-in-flight", source,
                            f"{self.in_flight_per_ip} requests waiting for the API")
            return self._refuse(channel, "in_flight",
                                "too many API requests from your address are in progress")
        self._forward(channel, request, source)
        return True

    def _forward(self, channel, request, source):
        self.in_flight[source] = self.in_flight.get(source, 0) + 1
        method, body = request.method, request.body
        producer = _BytesProducer(body) if body or method in ("POST", "PUT") else None
        d = self.agent.request(method.encode("ascii"), (self.url + request.path).encode("ascii"),
                               forwarded_headers(request.headers, channel.key[0]), producer)
        d.addCallback(self._read_body)
        timer = self.clock.callLater(self.timeout, d.cancel)
        channel.api_request = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(channel, request),
                       errbackArgs=(channel, request, source, timer))
        d.addBoth(self._release, channel, source, timer)
        d.addErrback(lambda failure: self.log.failure("API proxy answer to {ip}", failure,
                                                      ip=channel.key[0]))

    def _read_body(self, response):
        collector = _BodyCollector(response.length, self.max_response)
        response.deliverBody(collector)
        return collector.finished.addCallback(lambda body: (response, body))

    def _answered(self, result, channel, request):
        response, body = result
        self._count("answered")
        self.log.debug("{ip} API proxy {method} {path}: {status}", ip=channel.key[0],
                       method=request.method, path=untrusted(request.path), status=response.code,
                       event="api_proxy_answered")
        self._answer(channel, HttpProxyResponse(status=response.code, body=body,
                                                headers=returned_headers(response.headers)))

    def _failed(self, failure, channel, request, source, timer):
        """The API gave no usable answer; a cancelled request fails in the agent's own words,
        so why it was cancelled is read from the connection and the timer."""
        if channel.closed:
            self._count("abandoned")  # the client left first
            return
        now = self.clock.seconds()
        detail = f"{request.method} {quoted(request.path)}"
        if failure.check(ResponseTooLarge):
            self._count("response_too_large")
            self.limits.hit(now, "api-proxy-response-body", source,
                            f"{detail} (at most {self.max_response} bytes)")
            error = f"the API response is larger than {self.max_response} bytes"
        elif timer.called:
            self._count("timeout")
            self.failures.hit(now, "timeout", source, f"{detail} after {self.timeout:g} s")
            error = f"the API server did not answer within {self.timeout:g} s"
        else:
            self._count("unreachable")
            self.failures.hit(now, "unreachable", source, f"{detail}: {_reason(failure)}")
            error = "the API server could not be reached"
        self._answer(channel, HttpProxyResponse(error=error))

    def _release(self, result, channel, source, timer):
        if timer.active():
            timer.cancel()
        channel.api_request = None
        left = self.in_flight[source] - 1
        if left:
            self.in_flight[source] = left
        else:
            del self.in_flight[source]
        return result

    def forget(self, channel):
        """The connection closed: stop waiting for the API on its behalf."""
        if channel.api_request is not None:
            channel.api_request.cancel()
