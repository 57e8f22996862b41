"""The admin HTTP listener of hbbs and hbbr: ``/healthz``, ``/readyz``, ``/metrics``, ``/status``.

It has its own endpoint (``--admin``; loopback ``PORT+4`` by default, never a
service port, USERS.md 1.24).  ``/healthz`` and ``/readyz`` say only whether
the server works, so container and Kubernetes probes need no secret;
``/metrics`` and ``/status`` need ``Authorization: Bearer <token>`` when a
token is configured, and a token is required whenever the listener is not
loopback or a Unix socket.
"""

import hmac
import ipaddress
import json
import os

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from . import __version__
from .config import ConfigError
from .logs import Logger
from .metrics import HbbrCollector, HbbsCollector, exposition, registry_for
from .wire import keys

READY_TIMEOUT = 5.0
ADMIN_OFFSET = 4


def address_file(directory, server):
    """``DATA_DIR/hbbs-admin.url`` (or hbbr's): where the admin listener really answers."""
    return os.path.join(directory, f"{server}-admin.url")


@implementer(IStreamServerEndpoint)
class RecordedEndpoint:
    """An endpoint that writes, once bound, the URL of its admin listener to ``path``.

    ``rustdesk-admin healthcheck`` reads it, so it probes the port the server was really
    started with (``-p``, ``--admin``, port 0), not one guessed from settings.  A listener
    that is no TCP (a Unix socket) writes nothing.
    """

    def __init__(self, endpoint, description, directory, server):
        self.endpoint = endpoint
        self.path = address_file(directory, server)
        self.scheme = "https" if description.startswith("ssl:") else "http"

    def listen(self, factory):
        return self.endpoint.listen(factory).addCallback(self._record)

    def _record(self, port):
        address = port.getHost()
        host = getattr(address, "host", None)
        if host is not None:
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            shown = f"[{host}]" if ":" in host else host
            with open(self.path, "w", encoding="ascii", opener=_private) as f:
                f.write(f"{self.scheme}://{shown}:{address.port}\n")
        return port


def _private(path, flags):
    return os.open(path, flags, 0o600)


def recorded_url(directory, server):
    """The URL a running ``server`` ("hbbs" or "hbbr") recorded in ``directory``, or None."""
    try:
        with open(address_file(directory, server), encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def default_endpoint(port):
    """Loopback ``port + 4``: 21120 for hbbs (PORT 21116), 21121 for hbbr (21117)."""
    return f"tcp:{port + ADMIN_OFFSET}:interface=127.0.0.1"


def is_exposed(description):
    """Whether the endpoint Twisted builds from ``description`` listens beyond this host.

    The endpoint itself is examined, not the string: Twisted takes the last of
    repeated ``interface=`` arguments and also accepts it positionally.  A Unix
    socket is local; an endpoint type other than TCP, SSL or Unix counts as exposed.
    """
    try:
        endpoint = serverFromString(None, description)
    except Exception as e:
        raise ConfigError(f"admin endpoint {description!r} is not usable: {e}") from None
    if isinstance(endpoint, UNIXServerEndpoint):
        return False
    if not 0 <= getattr(endpoint, "_port", 0) <= 65535:
        raise ConfigError(f"admin endpoint {description!r} is not usable: port out of range")
    interface = getattr(endpoint, "_interface", None)
    if interface is None:
        return True
    try:
        return not ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return True


def check_exposure(description, token):
    """Refuse an exposed admin listener without a token; returns a warning or None."""
    if description == "off" or not is_exposed(description):
        return None
    if not token:
        raise ConfigError(f"admin listener {description!r} is reachable from other hosts: "
                          "set ADMIN_TOKEN (or ADMIN_TOKEN_FILE), or bind it to 127.0.0.1")
    if not description.startswith("ssl:"):
        return (f"admin listener {description!r} is exposed without TLS; the bearer token "
                "travels in clear (use an ssl: endpoint or a TLS proxy)")
    return None


class _Text(Resource):
    isLeaf = True

    def __init__(self, body, content_type=b"text/plain; charset=utf-8"):
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request):
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-store")
        return self.body()


def _json(value):
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


class Readiness(Resource):
    """Runs every check; 200 when all pass, 503 with the failures otherwise.

    A check is ``(name, callable)``; the callable returns a value or a
    Deferred, and raises or fails when the check fails.  The log says when
    the set of failing checks changes, not on every probe (a Kubernetes
    probe asks every few seconds).
    """

    isLeaf = True
    log = Logger()

    def __init__(self, checks, clock):
        super().__init__()
        self.checks = checks
        self.clock = clock
        self._failing = ()

    def run(self):
        """Fires with ``(ready, {name: detail})``."""
        names, probes = [], []
        for name, check in self.checks():
            names.append(name)
            probes.append(maybeDeferred(check).addTimeout(READY_TIMEOUT, self.clock))

        def summarize(results):
            details = {}
            for name, (ok, value) in zip(names, results):
                details[name] = {"ok": ok, "detail": str(value if ok else value.value)}
            return all(ok for ok, _ in results), details

        return DeferredList(probes, consumeErrors=True).addCallback(summarize)

    def _report(self, details):
        failing = tuple(sorted(name for name, d in details.items() if not d["ok"]))
        if failing == self._failing:
            return
        self._failing = failing
        if failing:
            self.log.warn("not ready: {failed}", event="not_ready", failed=", ".join(
                f"{name} ({details[name]['detail']})" for name in failing))
        else:
            self.log.info("ready again", event="ready")

    def evaluate(self):
        """Fires with ``(ready, {name: detail})``, a change in the failing checks logged."""
        return self.run().addCallback(self._reported)

    def _reported(self, outcome):
        self._report(outcome[1])
        return outcome

    def render_GET(self, request):
        def respond(outcome):
            ready, details = outcome
            request.setResponseCode(200 if ready else 503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(_json({"ready": ready, "checks": details}))
            request.finish()

        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.evaluate()
        d.addCallback(lambda outcome: None if finished else respond(outcome))
        return NOT_DONE_YET


class TokenGate(Resource):
    """Serves ``children`` only to requests carrying the bearer token (when one is set)."""

    def __init__(self, token, children):
        super().__init__()
        self.token = token.encode("utf-8") if token else None
        self.gated = children

    def getChild(self, path, request):
        child = self.gated.get(path)
        if child is None:
            return _NotFound()
        if self.token is not None and not bearer_matches(request.getHeader(b"authorization"),
                                                          self.token):
            return _Unauthorized()
        return child


def bearer_matches(header, token):
    """Whether the Authorization header value ``header`` (bytes or None) is ``Bearer token``
    (bytes), compared in constant time."""
    scheme, _, value = (header or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(404)
        return b"not found\n"


class _Unauthorized(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="rustdesk-admin"')
        return b"bearer token required\n"


def admin_site(checks, collector, status, clock, token=None):
    """The admin Site: open health checks, token-gated metrics and status."""
    registry = registry_for(collector)
    metrics_resource = _Text(lambda: exposition(registry), CONTENT_TYPE_LATEST.encode("ascii"))
    open_children = {
        b"healthz": _Text(lambda: b"ok\n"),
        b"readyz": Readiness(checks, clock),
    }
    gated = {
        b"metrics": metrics_resource,
        b"status": _Text(lambda: _json(status()), b"application/json"),
    }
    root = TokenGate(token, gated)
    for name, child in open_children.items():
        root.putChild(name, child)
    site = _QuietSite(root)
    site.displayTracebacks = False
    return site


class _QuietSite(Site):
    """No access log line per request: probes every few seconds would bury the server's own."""

    noisy = False

    def log(self, request):
        pass


def _listeners_bound(service):
    def check():
        idle = [child.name or type(child).__name__ for child in service if not child.running]
        if not service.running or idle:
            raise RuntimeError("not started: " + (", ".join(idle) or "service"))
        return f"{len(list(service))} services running"
    return check


def hbbs_site(service, probe, clock, token=None):
    """The admin site of a started ``HbbsService``; ``probe(entry)`` tests a relay (Deferred)."""
    started = clock.seconds()

    def checks():
        yield "listeners", _listeners_bound(service)
        yield "database", lambda: service.store.check_writable().addCallback(
            lambda seconds: f"writable ({seconds * 1000:.1f} ms)")
        for entry in service.server.relays.configured:
            yield f"relay {entry}", _relay_check(probe, entry)

    def status():
        server = service.server
        public = server.server_key.public_key
        now = clock.seconds()
        return {
            "server": "hbbs",
            "version": __version__,
            "uptime_seconds": round(now - started, 1),
            "key": keys.b64(public) if public is not None else None,
            "key_fingerprint": keys.fingerprint(public) if public is not None else None,
            "key_enforced": bool(server.server_key.licence),
            "peers": {"registered": len(server.registry.peers),
                      "online": server.registry.online_count(now)},
            "relays": {"configured": list(server.relays.configured),
                       "active": list(server.relays.active)},
            "always_use_relay": server.always_use_relay,
            "database": {"path": service.store.path, "pending_ops": service.store.pending,
                         "failed_ops": service.store.failed_ops,
                         "refused_ops": service.store.refused_ops,
                         "failing": service.store.failure},
            "counters": dict(server.counters),
        }

    return admin_site(checks, HbbsCollector(service, clock), status, clock, token)


def _relay_check(probe, entry):
    def check():
        return probe(entry).addCallback(lambda ok: "reachable")
    return check


def hbbr_site(service, clock, token=None):
    """The admin site of a started ``HbbrService``."""
    started = clock.seconds()

    def checks():
        yield "listeners", _listeners_bound(service)

    def status():
        relay = service.relay
        return {
            "server": "hbbr",
            "version": __version__,
            "uptime_seconds": round(clock.seconds() - started, 1),
            "licence_required": bool(relay.licence),
            "sessions_active": len(relay.sessions),
            "pending": len(relay.pending),
            "announced_only": relay.allowed is not None,
            "bandwidth": relay.policy.describe(),
            "counters": dict(relay.counters),
        }

    return admin_site(checks, HbbrCollector(service), status, clock, token)
