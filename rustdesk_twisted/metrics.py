"""Prometheus metrics of hbbs, hbbr and the API, read from their own counters at scrape time.

The hot paths only bump plain ints and dict entries (``RendezvousServer.counters``,
``RelayServer.counters``, ``IpBlocker.blocked``...); these collectors turn
them into metric families when Prometheus asks, so a registration costs no
more with metrics on than off (PERF-NOTES.md).
"""

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest

PUNCH_PREFIX = "punch_"
RELAY_PREFIX = "relay_"
ANSWER_PREFIX = "answer_"
CHANGE_ID_PREFIX = "change_id_"
REGISTRATIONS = ("register_peer", "register_pk")
WEBSOCKET = ("websocket_opened", "websocket_closed")
ANNOUNCE_LINES = ("accepted", "keepalive", "used", "bad_signature", "stale", "malformed")
ANNOUNCE_PHASES = ("first_line", "idle")


def _counter(name, doc, labels=(), samples=()):
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def _gauge(name, doc, value):
    return GaugeMetricFamily(name, doc, value=value)


def _websocket_refusals(name, service):
    """WebSocket connections refused or aborted by the listener's guard, by limit."""
    admission = service.websocket_admission
    hits = admission.limit_log.hits if admission is not None else {}
    return _counter(name, "WebSocket connections refused at accept or aborted before their "
                    "payload was read (request head, handshake deadline, message size), by "
                    "limit.", ["limit"], (((limit,), hits[limit]) for limit in sorted(hits)))


class HbbsCollector:
    """hbbs: peers, registrations, punch and relay requests, limits, WebSocket, database.

    ``service`` is a started ``HbbsService`` (its ``server`` and ``store``),
    ``clock`` gives ``now`` for the online count.
    """

    def __init__(self, service, clock):
        self.service = service
        self.clock = clock

    def collect(self):
        server = self.service.server
        if server is None:
            return
        registry = server.registry
        counters = dict(server.counters)
        yield _gauge("rustdesk_hbbs_peers_registered", "Peers known (memory and database).",
                     len(registry.peers))
        yield _gauge("rustdesk_hbbs_peers_online",
                     "Peers registered in the last 30 s or holding a TCP/WebSocket registration.",
                     registry.online_count(self.clock.seconds()))
        yield _counter("rustdesk_hbbs_registrations", "Registrations answered, by message.",
                       ["kind"], (((kind,), counters.pop(kind, 0)) for kind in REGISTRATIONS))
        punch, relay = [], []
        for name in sorted(counters):
            if name.startswith(PUNCH_PREFIX):
                punch.append(((name[len(PUNCH_PREFIX):],), counters[name]))
            elif name.startswith(RELAY_PREFIX):
                relay.append(((name[len(RELAY_PREFIX):],), counters[name]))
        yield _counter("rustdesk_hbbs_punch_requests",
                       "PunchHoleRequests by outcome (punch_hole and fetch_local_addr were "
                       "forwarded; the others are the failure sent back).", ["outcome"], punch)
        yield _counter("rustdesk_hbbs_relay_requests", "RequestRelay by outcome.", ["outcome"],
                       relay)
        answers = [(tuple(name[len(ANSWER_PREFIX):].rsplit("_", 1)), counters[name])
                   for name in sorted(counters) if name.startswith(ANSWER_PREFIX)]
        yield _counter("rustdesk_hbbs_answers",
                       "B's answers (punch_hole_response, relay_response) by whether A was "
                       "still waiting.", ["kind", "result"], answers)
        yield _counter("rustdesk_hbbs_change_id",
                       "Change-ID requests by outcome (without_proof: NOT_SUPPORT and a "
                       "challenge; ok and refused: requests with a proof of the id's key; "
                       "udp_ignored: never taken over UDP).", ["outcome"],
                       (((name[len(CHANGE_ID_PREFIX):],), counters[name])
                        for name in sorted(counters) if name.startswith(CHANGE_ID_PREFIX)))
        limits = (("ip_per_minute_or_ids_per_day", registry.ip_blocker.blocked),
                  ("registrations_per_id", registry.throttled),
                  ("key_change_while_online_elsewhere", registry.key_changes_refused))
        yield _counter("rustdesk_hbbs_rate_limit_hits", "Registrations refused TOO_FREQUENT.",
                       ["limit"], (((name,), value) for name, value in limits))
        proxy = server.api_proxy
        yield _counter("rustdesk_hbbs_api_proxy_requests",
                       "HttpProxyRequests by outcome (answered: the API's answer passed back; "
                       "the others are the error sent instead; abandoned: the client left "
                       "first).", ["outcome"],
                       (((name,), proxy.counters[name]) for name in sorted(proxy.counters)))
        yield _gauge("rustdesk_hbbs_api_proxy_in_flight", "HttpProxyRequests waiting for the API.",
                     proxy.in_flight_total)
        hits = {}
        sources = [server.limits, registry.limits, registry.ip_blocker.limits, proxy.limits]
        admission = getattr(self.service, "websocket_admission", None)
        if admission is not None:  # the TCP and WebSocket connection caps
            sources += [admission.limits.limit_log, admission.proxy_limits.limit_log]
        for source in sources:
            for name, value in source.hits.items():
                hits[name] = hits.get(name, 0) + value
        yield _counter("rustdesk_hbbs_limit_hits",
                       "Every limit hit, by limit (each is logged once per source and minute).",
                       ["limit"], (((name,), hits[name]) for name in sorted(hits)))
        opened = counters.get(WEBSOCKET[0], 0)
        yield _counter("rustdesk_hbbs_websocket_connections", "WebSocket connections accepted.",
                       samples=[((), opened)])
        yield _gauge("rustdesk_hbbs_websocket_connections_open", "WebSocket connections open.",
                     opened - counters.get(WEBSOCKET[1], 0))
        yield _websocket_refusals("rustdesk_hbbs_websocket_refused", self.service)
        yield _gauge("rustdesk_hbbs_relays_active", "Configured relays currently usable.",
                     len(server.relays.active))
        yield _gauge("rustdesk_hbbs_relays_configured", "Relays configured.",
                     len(server.relays.configured))
        store = self.service.store
        if store is not None:
            yield SummaryMetricFamily(
                "rustdesk_hbbs_db_write_seconds", "Time of one batched database commit.",
                count_value=store.writes, sum_value=store.write_seconds)
            yield _gauge("rustdesk_hbbs_db_pending_ops", "Database writes queued, not committed.",
                         store.pending)
            yield _counter("rustdesk_hbbs_db_failed_ops",
                           "Database writes whose own data was rejected (duplicate id...).",
                           samples=[((), store.failed_ops)])
            yield _counter("rustdesk_hbbs_db_refused_ops",
                           "Database writes refused because the commit failed (disk full, "
                           "read-only...); their clients were refused and retry.",
                           samples=[((), store.refused_ops)])
            yield _gauge("rustdesk_hbbs_db_failing",
                         "1 while commits fail (registrations are refused), else 0.",
                         int(store.failure is not None))


class HbbrCollector:
    """hbbr: sessions, bytes, throttling and refusals of a started ``HbbrService``."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        relay = self.service.relay
        if relay is None:
            return
        counters = relay.counters
        active = list(relay.sessions)
        yield _gauge("rustdesk_hbbr_sessions_active", "Paired relay sessions now.", len(active))
        yield _gauge("rustdesk_hbbr_pending", "Relay requests waiting for their partner.",
                     len(relay.pending))
        yield _counter("rustdesk_hbbr_sessions", "Relay sessions paired.",
                       samples=[((), counters.get("sessions", 0))])
        live_bytes = sum(s.first.received + s.second.received for s in active)
        yield _counter("rustdesk_hbbr_relayed_bytes",
                       "Bytes relayed (ended sessions plus the running ones so far).",
                       samples=[((), counters.get("bytes", 0) + live_bytes)])
        yield _counter("rustdesk_hbbr_throttled_sessions",
                       "Sessions that a bandwidth limit slowed down.",
                       samples=[((), counters.get("throttled", 0))])
        refused = [((name[len("refused_"):],), value) for name, value in sorted(counters.items())
                   if name.startswith("refused_")]
        yield _counter("rustdesk_hbbr_refused", "Connections refused, by reason (licence key "
                       "mismatch is an authentication failure).", ["reason"], refused)
        hits = {}
        for limits in (relay.limits, self.service.announce_limits, relay.early):
            if limits is not None:
                for name, value in limits.limit_log.hits.items():
                    hits[name] = hits.get(name, 0) + value
        yield _counter("rustdesk_hbbr_limit_hits", "Limit hits: connections refused at "
                       "accept, waiting connections no longer read (each is logged once per "
                       "source and minute).", ["limit"],
                       (((name,), hits[name]) for name in sorted(hits)))
        yield _gauge("rustdesk_hbbr_connections_open", "Relay connections (TCP and WebSocket) "
                     "open, counted from accept.", relay.limits.total)
        yield _gauge("rustdesk_hbbr_early_bytes_held", "Bytes read from connections waiting "
                     "for their partner, held until it arrives.", relay.early.held)
        budget = relay.limits.budget
        if budget is not None:
            yield _gauge("rustdesk_hbbr_descriptors_used", "Descriptors this relay's "
                         "connections hold.", budget.used)
            yield _gauge("rustdesk_hbbr_descriptors_budget", "Descriptors all connections of "
                         "this process may hold (the descriptor limit minus a reserve).",
                         budget.budget.total)
        yield _websocket_refusals("rustdesk_hbbr_websocket_refused", self.service)
        gate = self.service.announce_gate
        if gate is not None:
            counts = gate.counts
            yield _counter("rustdesk_hbbr_announce_lines", "Lines on the announce listener by "
                           "result (accepted, keepalive, used: a replay or resend for a uuid "
                           "that already paired; the others were refused).", ["result"],
                           (((result,), counts[result]) for result in ANNOUNCE_LINES))
            yield _counter("rustdesk_hbbr_announce_timeouts", "Announce connections closed for "
                           "sending no valid line in time.", ["phase"],
                           (((phase,), counts[phase + "_timeout"]) for phase in ANNOUNCE_PHASES))


class ApiCollector:
    """The API: requests by route and status, latency per route, logins, the database.

    ``stats`` is the API's ``RequestStats``, ``accounts`` its ``Accounts``, ``db``
    its ``Database`` (whose thread pool exists once it is open).
    """

    def __init__(self, stats, accounts, db):
        self.stats = stats
        self.accounts = accounts
        self.db = db

    def collect(self):
        stats = self.stats
        yield _counter("rustdesk_api_requests", "HTTP requests answered, by route pattern and "
                       "status (unmatched: no route).", ["route", "status"],
                       (((route, str(status)), count)
                        for (route, status), count in sorted(stats.requests.items())))
        latency = HistogramMetricFamily("rustdesk_api_request_seconds", "Time from a request's "
                                        "arrival to its answer, by route pattern.",
                                        labels=["route"])
        for route in sorted(stats.latency):
            buckets, total = stats.cumulative(route)
            latency.add_metric([route], buckets, sum_value=total)
        yield latency
        yield _counter("rustdesk_api_logins", "Login attempts by result (failed: wrong "
                       "password or code, disabled account, throttled).", ["result"],
                       ((("ok",), self.accounts.logins_ok),
                        (("failed",), self.accounts.logins_failed)))
        db = self.db
        yield _counter("rustdesk_api_db_errors", "Database transactions that failed because "
                       "the database did (disk full, read-only, unreachable); each got a 503.",
                       samples=[((), db.errors)])
        yield _gauge("rustdesk_api_db_failing", "1 while database transactions fail, else 0.",
                     int(db.failure is not None))
        if db.pool is not None:
            yield _gauge("rustdesk_api_db_queue", "Database transactions waiting for a thread of "
                         "the API's pool.", db.pool.q.qsize())
            yield _gauge("rustdesk_api_db_busy_threads", "Threads of the API's database pool "
                         "running a transaction.", len(db.pool.working))


def registry_for(*collectors):
    """A registry of our collectors only (no process-global default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry):
    """The body of a scrape, in the text format of ``CONTENT_TYPE_LATEST``."""
    return generate_latest(registry)
