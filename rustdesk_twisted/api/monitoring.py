"""The API's own health and numbers, on its port: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` says the process answers and ``/readyz`` that the database takes a
statement in time and is not failing; both are open, for probes.
``/metrics`` (Prometheus text) needs ``Authorization: Bearer ADMIN_TOKEN``
unless the caller is this host.  The caller is the client address as the
limits see it, so a request a local reverse proxy forwards from elsewhere
needs the token too.
"""

from bisect import bisect_left

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import select

from ..adminweb import Readiness, bearer_matches
from ..metrics import ApiCollector, exposition, registry_for
from ..wire.addr_mangle import is_loopback
from .db import DatabaseUnavailable
from .http import ApiError, Reply, json_reply, text_reply

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METRICS_REFUSED = "metrics need Authorization: Bearer ADMIN_TOKEN"

READY_REPLY = {
    "type": "object",
    "required": ["ready", "checks"],
    "properties": {
        "ready": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"ok": {"type": "boolean"},
                                             "detail": {"type": "string"}}}},
    },
}


class RequestStats:
    """Answers counted by route pattern and status, and a latency histogram per route.

    Plain counters bumped per request and turned into metric families only when
    scraped.  Bounded: routes are the router's patterns plus "unmatched", and a
    status is one of a few dozen codes.
    """

    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets = buckets
        self.requests = {}
        self.latency = {}

    def observe(self, route, status, seconds):
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.get(route)
        if counts is None:
            counts = self.latency[route] = [0] * (len(self.buckets) + 1) + [0.0]
        counts[bisect_left(self.buckets, seconds)] += 1
        counts[-1] += seconds

    def cumulative(self, route):
        """``([(upper bound, requests at most that long), ..., ("+Inf", all)], seconds)``."""
        counts = self.latency[route]
        buckets, running = [], 0
        for bound, count in zip([str(b) for b in self.buckets] + ["+Inf"], counts[:-1]):
            running += count
            buckets.append((bound, running))
        return buckets, counts[-1]


class Monitoring:
    """The three routes, over the API's database and accounts."""

    def __init__(self, db, accounts, clock, admin_token=None):
        self.db = db
        self.stats = RequestStats()
        self.token = admin_token.encode("utf-8") if admin_token else None
        self.registry = registry_for(ApiCollector(self.stats, accounts, db))
        self.readiness = Readiness(self._checks, clock)

    def _checks(self):
        yield "database", self._database

    def _database(self):
        d = self.db.run(lambda connection: connection.execute(select(1)).scalar())
        d.addCallbacks(self._answered, self._unavailable)
        return d

    def _answered(self, _):
        if self.db.failure is not None:
            raise RuntimeError(f"transactions fail: {self.db.failure}")
        return "answers"

    def _unavailable(self, failure):
        failure.trap(DatabaseUnavailable)
        raise RuntimeError(f"transactions fail: {self.db.failure}")

    def healthz(self, call):
        return text_reply("ok\n")

    def readyz(self, call):
        def reply(outcome):
            ready, checks = outcome
            return json_reply({"ready": ready, "checks": checks}, 200 if ready else 503)
        return self.readiness.evaluate().addCallback(reply)

    def may_scrape(self, call):
        """This host, or the admin token."""
        if is_loopback(call.client_ip):
            return
        header = call.header("authorization")
        if self.token is None or not bearer_matches(
                header.encode("latin-1") if header is not None else None, self.token):
            raise ApiError(401, METRICS_REFUSED)

    def metrics(self, call):
        return Reply(200, exposition(self.registry), CONTENT_TYPE_LATEST.encode("ascii"))

    def add_routes(self, router):
        router.add("GET", "/healthz", self.healthz, reply="text",
                   summary="Liveness: the process answers HTTP.")
        router.add("GET", "/readyz", self.readyz, reply=READY_REPLY,
                   summary="Readiness: the database answers a statement in time and its "
                           "transactions do not fail (503 otherwise, with the reason).")
        router.add("GET", "/metrics", self.metrics, auth=self.may_scrape, reply="text",
                   summary="Prometheus metrics; Bearer ADMIN_TOKEN unless from this host.")
