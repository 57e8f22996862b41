"""The official client's calls (rustdesk_twisted.client.api) replayed against the API."""

from treq.testing import StubTreq
from twisted.trial import unittest

from rustdesk_twisted.client.api import ApiCallError, OfficialApiClient, version_number

from .apisupport import ApiHarness


class AccountReplayTests(unittest.TestCase):
    def setUp(self):
        self.api = ApiHarness(self)
        self.api.add_user("alice", "alice-pass")
        self.http = StubTreq(self.api.app.resource())
        self.client = OfficialApiClient(self.http, "http://api.test")

    def run_client(self, d):
        self.http.flush()
        return self.successResultOf(d)

    def test_login_current_user_logout(self):
        self.assertEqual(self.run_client(self.client.probe()).status, 200)
        self.assertEqual(self.run_client(self.client.login_options()), [])
        reply = self.run_client(self.client.login("alice", "alice-pass"))
        self.assertEqual(reply["type"], "access_token")
        self.assertEqual(self.run_client(self.client.current_user())["name"], "alice")
        token = self.client.token
        self.run_client(self.client.logout())
        self.client.token = token
        failure = self.failureResultOf(self.client.current_user(), ApiCallError)
        self.assertEqual((failure.value.status, failure.value.text), (401, "Invalid token"))

    def test_versions_as_the_client_counts_them(self):
        self.assertEqual(version_number("1.4.2"), 1004020)
        self.assertEqual(version_number("1.3.9-2"), 1003092)
