"""OIDC end to end: a real ``twistd rustdesk-api``, a real OpenID provider (oidc-provider from
tests/services.py), the official client's calls over sockets, and the person's part at the
provider scripted as a browser does it."""

import os

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from rustdesk_twisted.api.oidc import EXPIRED, NOT_YET
from rustdesk_twisted.client.api import ApiCallError, OfficialApiClient

from .livesupport import free_port_block, start_twistd, stop_twistd
from .services import oidc_provider


class OidcLiveTests(unittest.TestCase):
    timeout = 240

    @inlineCallbacks
    def error_of(self, answer):
        try:
            OfficialApiClient.parsed((yield answer))
        except ApiCallError as e:
            return e.text
        self.fail("an answer without an error")

    @inlineCallbacks
    def test_client_login_through_the_provider(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port_block((0,))
        base = f"http://127.0.0.1:{port}"
        provider = yield oidc_provider(self, base + "/api/oidc/callback")
        secret_file = os.path.join(directory, "oidc-secret")
        with open(secret_file, "w") as f:
            f.write(provider.client_secret + "\n")
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write(f"OIDC=testidp\nOIDC_TESTIDP_ISSUER={provider.issuer}\n"
                    f"OIDC_TESTIDP_CLIENT_ID={provider.client_id}\n"
                    f"OIDC_TESTIDP_CLIENT_SECRET_FILE={secret_file}\nOIDC_TESTIDP_SIGNUP=Y\n")
        server = start_twistd(reactor, "rustdesk-api",
                              ["-p", str(port), "-b", "127.0.0.1", "--data-dir", directory,
                               "--hbbs", "off", "--public-url", base], directory,
                              b"Listening on http")
        self.addCleanup(stop_twistd, server)
        yield server.ready
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = OfficialApiClient(HTTPClient(Agent(reactor, pool=pool)), base)
        self.assertEqual((yield client.login_options()), ["oidc/testidp"])

        started = yield client.oidc_auth("testidp")
        self.assertEqual((yield self.error_of(client.oidc_query(started["code"]))), NOT_YET)
        back = yield provider.login(started["url"], "dana", email="dana@example.com",
                                    name="Dana Scully")
        landed = yield treq.get(back, persistent=False)
        page = yield landed.text()
        self.assertEqual(landed.code, 200, page)
        self.assertIn("Signed in as dana@example.com on RustDesk 123456789", page)

        answer = OfficialApiClient.parsed((yield client.oidc_query(started["code"])))
        self.assertEqual(answer["type"], "access_token")
        self.assertEqual((answer["user"]["name"], answer["user"]["info"]["other"]),
                         ("dana@example.com", {}))
        self.assertEqual((yield self.error_of(client.oidc_query(started["code"]))), EXPIRED)
        client.token = answer["access_token"]
        me = yield client.current_user()
        self.assertEqual((me["name"], me["email"], me["display_name"]),
                         ("dana@example.com", "dana@example.com", "Dana Scully"))

        again = yield client.oidc_auth("testidp")
        back = yield provider.login(again["url"], "dana")
        yield (yield treq.get(back, persistent=False)).text()
        answer = OfficialApiClient.parsed((yield client.oidc_query(again["code"])))
        self.assertEqual(answer["user"]["name"], "dana@example.com")
        self.assertNotIn(b"Traceback", server.output, server.output[-4000:])
        self.assertNotIn(provider.client_secret.encode(), server.output)
        self.assertNotIn(answer["access_token"].encode(), server.output)
