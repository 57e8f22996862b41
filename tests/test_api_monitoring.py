"""The API's /healthz, /readyz and /metrics, and what a failing database does to requests:
a 503 with a JSON error, one log line when it starts failing and one when it works again."""

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rustdesk_twisted.api.db import RECOVERY_HOLD, engine_url
from rustdesk_twisted.api.monitoring import RequestStats

from .apisupport import ApiHarness, on_both_backends
from .services import postgres_url

TOKEN = "scrape-token"


def sample(text, name, **labels):
    """The value of one sample of a Prometheus text exposition, or None."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                     if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class RequestStatsTests(unittest.TestCase):
    def test_cumulative_buckets_and_sum(self):
        stats = RequestStats(buckets=(0.01, 0.1))
        for seconds in (0.005, 0.01, 0.05, 3.0):
            stats.observe("/api/heartbeat", 200, seconds)
        stats.observe("/api/heartbeat", 503, 0.2)
        self.assertEqual(stats.cumulative("/api/heartbeat"),
                         ([("0.01", 2), ("0.1", 3), ("+Inf", 5)], 3.265))
        self.assertEqual(stats.requests, {("/api/heartbeat", 200): 4, ("/api/heartbeat", 503): 1})


@on_both_backends
class MonitoringTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self, admin_token=TOKEN)
        self.api.add_user("alice")

    def metrics(self):
        reply = self.api.request("GET", "/metrics", client="127.0.0.1")
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.header("content-type").startswith("text/plain"))
        return reply.body.decode()

    def test_healthz_and_readyz(self):
        self.assertEqual((self.api.request("GET", "/healthz").body), b"ok\n")
        reply = self.api.request("GET", "/readyz")
        self.assertEqual((reply.status, reply.json()),
                         (200, {"ready": True, "checks": {"database": {
                             "ok": True, "detail": "answers"}}}))

    def test_requests_latency_and_logins_are_counted(self):
        self.api.login("alice")
        self.api.login("alice", "wrong")
        self.api.request("GET", "/nowhere")
        text = self.metrics()
        self.assertEqual(sample(text, "rustdesk_api_requests_total", route="/api/login",
                                status="200"), 2)
        self.assertEqual(sample(text, "rustdesk_api_requests_total", route="unmatched",
                                status="404"), 1)
        self.assertEqual(sample(text, "rustdesk_api_request_seconds_count", route="/api/login"),
                         2)
        self.assertEqual(sample(text, "rustdesk_api_request_seconds_bucket", le="+Inf",
                                route="/api/login"), 2)
        self.assertEqual(sample(text, "rustdesk_api_logins_total", result="ok"), 1)
        self.assertEqual(sample(text, "rustdesk_api_logins_total", result="failed"), 1)
        self.assertEqual(sample(text, "rustdesk_api_db_errors_total"), 0)
        self.assertEqual(sample(text, "rustdesk_api_db_failing"), 0)

    def test_metrics_from_elsewhere_need_the_admin_token(self):
        refused = self.api.request("GET", "/metrics", client="203.0.113.5")
        self.assertEqual((refused.status, refused.json()),
                         (401, {"error": "metrics need Authorization: Bearer ADMIN_TOKEN"}))
        wrong = self.api.request("GET", "/metrics", client="203.0.113.5",
                                 headers={"Authorization": "Bearer nope"})
        self.assertEqual(wrong.status, 401)
        allowed = self.api.request("GET", "/metrics", client="203.0.113.5",
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(allowed.status, 200)
        self.assertEqual(self.api.request("GET", "/metrics", client="::1").status, 200)

    def test_a_local_proxy_forwarding_a_remote_client_needs_the_token(self):
        forwarded = self.api.request("GET", "/metrics", client="127.0.0.1",
                                     headers={"X-Forwarded-For": "203.0.113.5"})
        self.assertEqual(forwarded.status, 401)

    def test_without_a_token_only_this_host_may_scrape(self):
        api = ApiHarness(self)
        self.assertEqual(api.request("GET", "/metrics", client="203.0.113.5",
                                     headers={"Authorization": "Bearer "}).status, 401)
        self.assertEqual(api.request("GET", "/metrics", client="127.0.0.1").status, 200)


@on_both_backends
class FailingDatabaseTests(unittest.TestCase):
    """SQLite refusing writes as a read-only file does; PostgreSQL refusing connections as a
    stopped server does."""

    def setUp(self):
        self.api = ApiHarness(self)
        self.api.add_user("alice")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def server(self):
        engine = create_engine(engine_url(postgres_url(), "."), isolation_level="AUTOCOMMIT",
                               poolclass=NullPool)
        self.addCleanup(engine.dispose)
        return engine

    def database_works(self, works):
        """SQLite: writes refused as in a read-only file (query_only); PostgreSQL: connections
        refused as by a stopped server, the open ones cut."""
        if self.api.db.is_sqlite:
            self.api.db.run_now(lambda c: c.exec_driver_sql(
                f"PRAGMA query_only={'OFF' if works else 'ON'}"))
            return
        name = make_url(self.postgres_url).database
        with self.server().connect() as connection:
            connection.exec_driver_sql(
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if works else "false"}')
            if not works:
                connection.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM "
                                           f"pg_stat_activity WHERE datname = '{name}'")

    def logged(self, event):
        return [e for e in self.events if e.get("event") == event]

    def test_503_json_one_line_each_way_and_readiness(self):
        self.database_works(False)
        for _ in range(3):
            reply = self.api.request("POST", "/api/login",
                                     {"username": "alice", "password": "secret-pass"})
            self.assertEqual((reply.status, reply.json()),
                             (503, {"error": "the database is unavailable, try again later"}))
        [failing] = self.logged("api.db_failing")
        self.assertIn("requests get 503", failing["log_format"])
        self.assertNotIn("\n", failing["reason"])
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        ready = self.api.request("GET", "/readyz")
        self.assertEqual(ready.status, 503)
        self.assertIn("transactions fail: ", ready.json()["checks"]["database"]["detail"])
        text = self.api.request("GET", "/metrics", client="127.0.0.1").body.decode()
        self.assertGreaterEqual(sample(text, "rustdesk_api_db_errors_total"), 3)
        self.assertEqual(sample(text, "rustdesk_api_db_failing"), 1)

        self.database_works(True)
        self.assertEqual(self.api.request("GET", "/readyz").status, 503, "recovered at once")
        self.api.clock.advance(RECOVERY_HOLD)
        self.assertIsNotNone(self.api.login("alice"))
        self.assertEqual(self.api.request("GET", "/readyz").status, 200)
        self.assertEqual(len(self.logged("api.db_recovered")), 1)
        self.assertEqual(len(self.logged("api.db_failing")), 1)
        self.assertEqual([e["event"] for e in self.events if e.get("event") in (
            "not_ready", "ready")], ["not_ready", "ready"])
