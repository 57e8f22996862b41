"""The API through the rendezvous port (API.md 1.0): one HttpProxyRequest, one answer.

As the official client does it (``tcp_proxy_request``): a fresh TCP
connection to hbbs, secure_tcp with the server's key, one request, and the
first message after the handshake must be the ``HttpProxyResponse``.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.web.http_headers import Headers

from ..wire import messages
from ..wire.rendezvous_pb2 import HeaderEntry, HttpProxyRequest
from .rendezvous import CONNECT_TIMEOUT, READ_TIMEOUT
from .streams import FramedRendezvousClient

# The server's answer carries a response body of up to 8 MiB by default.
MAX_RESPONSE_FRAME = 64 << 20


class ApiProxyError(Exception):
    """No HttpProxyResponse came back: connection, handshake, timeout or another message."""


def http_proxy_request(host, server, server_key, method, path, headers=(), body=b"",
                       timeout=CONNECT_TIMEOUT + READ_TIMEOUT):
    """Send ``method path`` (path with its query) through hbbs; fires with the HttpProxyResponse.

    ``host`` and ``server`` as for :class:`~.rendezvous.RendezvousClient`;
    ``server_key`` is the 32-byte Ed25519 key, or None to skip secure_tcp (the
    server then answers with an ``error``).  ``headers`` are ``(name, value)``
    pairs.  Errbacks with :class:`ApiProxyError` when no answer arrives within
    ``timeout`` seconds, as the official client gives up after connect plus
    read timeouts.  The response's ``error``, when set, is hbbs's refusal.
    """
    request = messages.wrap("http_proxy_request", HttpProxyRequest(
        method=method, path=path, body=body,
        headers=[HeaderEntry(name=name, value=value) for name, value in headers]))
    stream = FramedRendezvousClient(server_key=server_key, max_frame=MAX_RESPONSE_FRAME)
    result = Deferred(lambda _: stream.close())
    timer = host.clock.callLater(timeout, lambda: finish(ApiProxyError(
        f"no answer within {timeout:g} s")))

    def finish(outcome):
        if timer.active():
            timer.cancel()
        if result.called:
            return
        stream.close()
        if isinstance(outcome, Exception):
            result.errback(outcome)
        else:
            result.callback(outcome)

    def answered(_, message):
        kind = message.WhichOneof("union")
        if kind == "http_proxy_response":
            finish(message.http_proxy_response)
        else:
            finish(ApiProxyError(f"unexpected {kind} from the server"))

    def closed(_):
        reason = stream.handshake_error or (stream.failure.getErrorMessage() if stream.failure
                                            else "the connection closed without an answer")
        finish(ApiProxyError(reason))

    stream.on_ready = lambda _: stream.send(request)
    stream.on_message = answered
    stream.on_closed = closed
    host.connect_tcp(server.rendezvous, stream, timeout=timeout)
    return result


class ProxiedHttp:
    """treq's ``request(method, url, headers=, data=)`` carried through hbbs, so that
    :class:`~.api.OfficialApiClient` can make every API call as a client whose port
    21114 is blocked does.  A response with hbbs's ``error`` set fails with
    :class:`ApiProxyError`, as the client reports "TCP proxy error"."""

    def __init__(self, host, server, server_key):
        self.host = host
        self.server = server
        self.server_key = server_key

    def request(self, method, url, headers=None, data=None):
        path = "/" + url.split("://", 1)[-1].partition("/")[2]
        pairs = [(_text(name), _text(value)) for name, values in (headers or {}).items()
                 for value in values]
        d = http_proxy_request(self.host, self.server, self.server_key, method, path, pairs,
                               data or b"")
        return d.addCallback(_ProxiedResponse)


class _ProxiedResponse:
    def __init__(self, response):
        if response.error:
            raise ApiProxyError(response.error)
        self.code = response.status
        self.headers = Headers()
        for header in response.headers:
            self.headers.addRawHeader(header.name.encode("latin-1"),
                                      header.value.encode("latin-1"))
        self.body = response.body

    def content(self):
        return succeed(self.body)


def _text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value
