"""Switch-sides grants (API.md 1.8): real Ed25519 signatures checked against hbbs's peer table."""

import base64
import hashlib

from nacl.signing import SigningKey
from sqlalchemy import select
from twisted.trial import unittest

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.switchgrants import signed_message, switch_code_verifier

from .apisupport import ApiHarness
from .test_api_audit import OnPostgres, OnSQLite, hbbs_peers

DEVICE = "123456789"


class SwitchGrantTests(OnSQLite, unittest.TestCase):
    def setUp(self):
        self.key = SigningKey.generate()
        hbbs = hbbs_peers(self, [(DEVICE, b"uuid", self.key.verify_key.encode())])
        self.api = ApiHarness(self, url=self.database(), hbbs=hbbs)
        self.grants = self.api.app.switch_grants
        switch_uuid = "3f2c9a1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f"
        self.switch_code = base64.b64encode(hashlib.sha256(switch_uuid.encode()).digest()).decode()
        self.verifier = switch_code_verifier(self.switch_code)

    def grant(self, at=None, key=None, rustdesk_id=DEVICE, **fields):
        """The client's body (register_switch_grant in hbbs_http/sync.rs), signed at ``at``;
        ``fields`` replace what was signed."""
        timestamp = str(int(self.api.clock.seconds())) if at is None else at
        signature = (key or self.key).sign(
            signed_message(rustdesk_id, self.verifier, timestamp)).signature
        body = {"id": rustdesk_id, "switch_code_verifier": self.verifier,
                "timestamp": timestamp, "signature": base64.b64encode(signature).decode()}
        body.update(fields)
        return self.api.request("POST", "/api/switch-grant", body)

    def matches(self, code):
        return self.successResultOf(self.grants.matches(DEVICE, code))

    def stored(self):
        return self.api.db.run_now(lambda c: c.execute(select(tables.switch_grants)).all())

    def test_the_clients_verifier_vector(self):
        self.assertEqual(switch_code_verifier("code-abc"),
                         "dMIn3uiPe77XodFB5IKi7PrKJ7l7+zVquNn0ObSaHQc=")
        self.assertEqual(signed_message("id1", "c1", "1700000000"),
                         b"switch-grant\0id1\0c1\0" + b"1700000000")

    def test_a_signed_grant_is_accepted_and_matches_its_switch_code_until_it_expires(self):
        reply = self.grant()
        self.assertEqual((reply.status, reply.json()), (200, {"accepted": True}))
        self.assertTrue(self.matches(self.switch_code))
        self.assertFalse(self.matches("another-code"))
        self.assertFalse(self.successResultOf(self.grants.matches("555555555",
                                                                  self.switch_code)))
        self.assertEqual(self.grant().json(), {"accepted": True})
        self.assertEqual(len(self.stored()), 1)
        self.api.clock.advance(601)
        self.assertFalse(self.matches(self.switch_code))
        self.assertEqual(self.successResultOf(self.grants.prune()), 1)
        self.assertEqual(self.stored(), [])

    def test_pruned_by_its_timer(self):
        self.grant()
        self.grants.pruner.startService()
        self.addCleanup(self.grants.pruner.stopService)
        self.api.clock.advance(600)
        self.assertEqual(len(self.stored()), 1)
        self.api.clock.advance(300)
        self.assertEqual(self.stored(), [])

    def test_clock_skew_gives_the_server_time_and_the_retry_is_accepted(self):
        now = int(self.api.clock.seconds())
        for skewed in (now - 61, now + 61):
            reply = self.grant(at=str(skewed))
            self.assertEqual(reply.json(), {"accepted": False, "server_time": now})
        self.assertEqual(self.stored(), [])
        server_time = self.grant(at=str(now - 3600)).json()["server_time"]
        self.assertEqual(self.grant(at=str(server_time)).json(), {"accepted": True})
        self.assertEqual(self.grant(at=str(now + 60)).json(), {"accepted": True})

    def test_a_bad_signature_or_an_unknown_id_is_refused(self):
        now = int(self.api.clock.seconds())
        refused = {"accepted": False, "server_time": now}
        self.assertEqual(self.grant(key=SigningKey.generate()).json(), refused)
        self.assertEqual(self.grant(rustdesk_id="555555555").json(), refused)
        signature = self.key.sign(signed_message(DEVICE, self.verifier, str(now))).signature
        tampered = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
        self.assertEqual(self.grant(signature=tampered).json(), refused)
        self.assertEqual(self.stored(), [])
        self.assertEqual((self.grants.accepted, self.grants.refused), (0, 3))
        self.assertEqual(self.grants.limits.hits, {"switch-grant-refused": 3})

    def test_without_an_hbbs_peer_table_nothing_is_accepted(self):
        api = ApiHarness(self)
        body = {"id": DEVICE, "switch_code_verifier": self.verifier,
                "timestamp": str(int(api.clock.seconds())),
                "signature": base64.b64encode(b"s" * 64).decode()}
        self.assertFalse(api.request("POST", "/api/switch-grant", body).json()["accepted"])

    def test_bad_input_is_4xx(self):
        for fields in ({"id": "../x"}, {"id": 5}, {"timestamp": "12a"}, {"timestamp": 1700000000},
                       {"timestamp": "-5"}, {"signature": "not base64!"},
                       {"signature": base64.b64encode(b"short").decode()},
                       {"switch_code_verifier": "abc"}, {"switch_code_verifier": None}):
            reply = self.grant(**fields)
            self.assertEqual(reply.status, 400, fields)
            self.assertIn("error", reply.json())
        self.assertEqual(self.api.request("POST", "/api/switch-grant", raw=b"[]").status, 400)
        self.assertEqual(self.stored(), [])


class PostgresSwitchGrantTests(OnPostgres, SwitchGrantTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""
