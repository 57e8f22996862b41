"""HTTP plumbing of the API: routing, JSON in and out, errors, body caps.

Handlers are plain functions of a :class:`Call` returning a :class:`Reply` (or
a Deferred of one).  The client's conventions (API.md section 1.0) live here
once: ``{"error": "..."}`` bodies, empty 200 for action endpoints, empty POST
bodies accepted, JSON arrays on DELETE.  Input that is not what a route
expects is the caller's mistake and gets a 4xx with a JSON error; only our own
bugs give a 500, and those are logged with their traceback.
"""

import json
import re
import time
from urllib.parse import parse_qs

from twisted.internet.defer import maybeDeferred
from twisted.web import server
from twisted.web.resource import Resource

from ..logs import Logger
from ..logtext import quoted

DEFAULT_MAX_BODY = 2 * 1024 * 1024
JSON_TYPE = b"application/json; charset=utf-8"


class ApiError(Exception):
    """A refusal the client should see: HTTP ``status`` with ``{"error": message}``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message):
    return ApiError(400, message)


class Reply:
    """What a handler answers: a status, a content type and bytes."""

    def __init__(self, status=200, body=b"", content_type=None, headers=()):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = tuple(headers)


def json_reply(value, status=200):
    return Reply(status, json.dumps(value, separators=(",", ":")).encode(), JSON_TYPE)


def text_reply(text, status=200):
    return Reply(status, text.encode(), b"text/plain; charset=utf-8")


def empty_reply():
    """Success for action endpoints: the client wants 200 with nothing in it."""
    return Reply(200)


def error_reply(status, message):
    return json_reply({"error": message}, status)


class Call:
    """One request as a handler sees it."""

    def __init__(self, method, path, params, query, headers, body, client_ip, now,
                 secure=False):
        self.method = method
        self.path = path
        self.params = params
        self.query = query
        self.headers = headers
        self.body = body
        self.client_ip = client_ip
        self.now = now
        self.secure = secure
        self.user = None
        self.token = None

    def header(self, name):
        return self.headers.get(name.lower())

    @property
    def bearer(self):
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def json(self, kind=dict, empty=None):
        """The body parsed as JSON of type ``kind``; an empty body gives ``empty``."""
        if not self.body.strip():
            if empty is not None:
                return empty
            if kind is dict:
                return {}
            if kind is list:
                return []
            raise bad_request("a JSON body is required")
        try:
            value = json.loads(self.body)
        except (ValueError, RecursionError):
            raise bad_request("the body is not valid JSON") from None
        if not isinstance(value, kind):
            raise bad_request(f"the body must be a JSON {_JSON_NAMES.get(kind, kind.__name__)}")
        return value

    def query_int(self, name, default, minimum=None, maximum=None):
        text = self.query.get(name)
        if text in (None, ""):
            return default
        try:
            value = int(text)
        except ValueError:
            raise bad_request(f"{name} must be an integer") from None
        if minimum is not None and value < minimum:
            raise bad_request(f"{name} must be at least {minimum}")
        if maximum is not None and value > maximum:
            value = maximum
        return value


_JSON_NAMES = {dict: "object", list: "array", str: "string"}


class Route:
    """One route and what the OpenAPI document says of it (:mod:`.openapi`)."""

    def __init__(self, method, pattern, handler, auth, name, summary, body, reply, query):
        self.method = method
        self.pattern = pattern
        self.regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.handler = handler
        self.auth = auth
        self.name = name
        self.summary = summary
        self.body = body
        self.reply = reply
        self.query = query


class Router:
    """Method + path pattern (``/api/ab/peers/{guid}``) to handler.

    ``auth`` is a function of the Call that authorises it (setting ``call.user``)
    or raises ApiError; it may return a Deferred.  ``summary``, ``body`` and
    ``reply`` (JSON Schemas of the request and success bodies; ``reply`` may be
    the string "text", "html" or "empty"; ``body`` may be ``{"form": schema}`` for
    an HTML form post, ``{"raw": schema}`` for bytes) and ``query`` (name -> JSON Schema) describe the route in
    the OpenAPI document.
    """

    def __init__(self):
        self.routes = []

    def add(self, method, pattern, handler, auth=None, name=None, summary="", body=None,
            reply=None, query=None):
        self.routes.append(Route(method, pattern, handler, auth, name or pattern, summary,
                                 body, reply, query or {}))

    def match(self, method, path):
        """(route, params), or raises ApiError 404/405."""
        allowed = False
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found.groupdict()
            allowed = True
        if allowed:
            raise ApiError(405, "method not allowed")
        raise ApiError(404, "not found")


class CappedRequest(server.Request):
    """A request whose body is kept only up to the site's cap; past it, 413 without parsing."""

    too_large = False

    def gotLength(self, length):
        cap = self.channel.site.max_body
        if length is not None and length > cap:
            self.too_large = True
        super().gotLength(min(length, cap) if length is not None else None)

    def handleContentChunk(self, data):
        if self.too_large:
            return
        cap = self.channel.site.max_body
        if self.content.tell() + len(data) > cap:
            self.too_large = True
            return
        super().handleContentChunk(data)


class ApiResource(Resource):
    """Every path of the site, dispatched through a :class:`Router`.

    ``client_ip`` is a function of the twisted.web request giving the address
    limits and logs use (the peer, or a trusted proxy's forwarded one);
    ``observe(route_name, status, seconds)`` feeds the metrics.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, router, clock, client_ip, observe=None, seconds=time.perf_counter):
        super().__init__()
        self.router = router
        self.clock = clock
        self.client_ip = client_ip
        self.observe = observe
        self.seconds = seconds

    def render(self, request):
        started = self.seconds()
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        route_name = "unmatched"
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            if getattr(request, "too_large", False):
                raise ApiError(413, "the request body is too large")
            route, params = self.router.match(method, path)
            route_name = route.name
            call = Call(method, path, params, _query(request), _headers(request),
                        request.content.read() if request.content is not None else b"",
                        self.client_ip(request), self.clock.seconds(),
                        secure=request.isSecure())
            d = maybeDeferred(self._authorised, route, call)
        except ApiError as e:
            self._finish(error_reply(e.status, e.message), request, route_name, started, gone)
            return server.NOT_DONE_YET
        d.addCallback(self._checked)
        d.addErrback(self._failure, request, method, path)
        d.addCallback(self._finish, request, route_name, started, gone)
        return server.NOT_DONE_YET

    @staticmethod
    def _authorised(route, call):
        if route.auth is None:
            return route.handler(call)
        return maybeDeferred(route.auth, call).addCallback(lambda _: route.handler(call))

    @staticmethod
    def _checked(reply):
        if not isinstance(reply, Reply):
            raise TypeError(f"handler answered {type(reply).__name__}, not a Reply")
        return reply

    def _failure(self, failure, request, method, path):
        if failure.check(ApiError):
            return error_reply(failure.value.status, failure.value.message)
        self.log.failure("{client} {method} {path}: internal error", failure,
                         client=self.client_ip(request), method=method, path=quoted(path),
                         event="api.internal_error")
        return error_reply(500, "internal server error")

    def _finish(self, reply, request, route_name, started, gone):
        if gone:
            return
        request.setResponseCode(reply.status)
        if reply.content_type is not None:
            request.setHeader(b"content-type", reply.content_type)
        request.setHeader(b"cache-control", b"no-store")
        for name, value in reply.headers:
            request.setHeader(name, value)
        request.setHeader(b"content-length", str(len(reply.body)).encode())
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()
        if self.observe is not None:
            self.observe(route_name, reply.status, self.seconds() - started)


def _query(request):
    query = parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"),
                     keep_blank_values=True)
    return {name: values[0] for name, values in query.items()}


def _headers(request):
    return {name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()}


class ApiSite(server.Site):
    """A twisted.web Site with capped request bodies and no request log of its own.

    Form bodies are not parsed into ``request.args``: every route reads its
    body itself, and that parse (the email package on every POST's
    Content-Type) cost the heartbeat a third of its time."""

    requestFactory = CappedRequest
    noisy = False

    def __init__(self, resource, max_body=DEFAULT_MAX_BODY, timeout=60, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, timeout=timeout, **kwargs)
        self.max_body = max_body

    def log(self, request):
        """Requests are counted in /metrics; a line per request would log tokens' timing
        and flood the log under the 3-second heartbeats."""



MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000

PAGE_QUERY = {
    "current": {"type": "integer", "minimum": 1},
    "pageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
}


def page_window(call, max_size=MAX_PAGE_SIZE):
    """(offset, limit) of the client's 1-based ``current`` and ``pageSize`` (API.md 1.0).

    A page size past ``max_size`` is refused rather than cut: the client steps
    through pages with its own size, so a shorter page would make it skip entries."""
    size = call.query_int("pageSize", 100, minimum=1)
    if size > max_size:
        raise bad_request(f"pageSize must be at most {max_size}")
    current = call.query_int("current", 1, minimum=1, maximum=MAX_PAGE)
    return (current - 1) * size, size


def page_reply(total, data):
    """One page as the client reads it: ``{"total": N, "data": [...]}``."""
    return json_reply({"total": total, "data": data})


def page_schema(item):
    """The JSON Schema of a page of ``item``s."""
    return {"type": "object", "required": ["total", "data"],
            "properties": {"total": {"type": "integer"}, "data": {"type": "array", "items": item}}}
