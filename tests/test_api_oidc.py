"""OIDC login for the client (API.md 1.1) against an OpenID provider in memory.

The provider here is the external party (discovery, key set, token and
UserInfo endpoints, signing with its own RSA key through joserfc); our code
runs whole.  tests.test_api_oidc_live runs the same flow against a real one.
"""

import base64
import hashlib
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.http import ApiError, Call
from rustdesk_twisted.api.oidc import (
    EXPIRED,
    NOT_YET,
    Directory,
    Fetcher,
    OidcError,
    PendingLogins,
    Provider,
    UnknownKey,
    basic_credentials,
    page,
    parse_document,
    providers_from_settings,
    validate_id_token,
)
from rustdesk_twisted.config import ConfigError, Settings

from .apisupport import ApiHarness

ISSUER = "https://idp.test/realm"
CLIENT_ID = "rustdesk-api"
SECRET = "client secret/with:specials"


def new_key(kid):
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"},
                               private=True)


class TestProvider:
    """An OpenID provider, as the API reaches it through its fetcher."""

    def __init__(self, clock):
        self.clock = clock
        self.key = new_key("k1")
        self.codes = {}
        self.access = {}
        self.fetched = []
        self.down = False
        self.metadata = {
            "issuer": ISSUER, "authorization_endpoint": ISSUER + "/auth",
            "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks",
            "userinfo_endpoint": ISSUER + "/userinfo",
            "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    def get_json(self, url, headers=None):
        self.fetched.append(url)
        if self.down:
            return fail(OidcError("cannot reach the provider: ConnectionRefusedError"))
        if url == ISSUER + "/.well-known/openid-configuration":
            return succeed(self.metadata)
        if url == ISSUER + "/jwks":
            return succeed(KeySet([self.key]).as_dict(private=False))
        if url == ISSUER + "/userinfo":
            return succeed(self.access[headers["Authorization"].split()[1]])
        return fail(OidcError(f"the provider answered HTTP 404 for {url}"))

    def post_form(self, url, fields, headers=None):
        assert url == ISSUER + "/token", url
        assert headers["Authorization"] == basic_credentials(CLIENT_ID, SECRET)
        grant = self.codes.pop(fields["code"], None)
        if grant is None or fields["redirect_uri"] != grant["redirect_uri"]:
            return fail(OidcError("the provider answered HTTP 400 (invalid_grant)"))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(
            fields["code_verifier"].encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"]:
            return fail(OidcError("the provider answered HTTP 400 (invalid_grant)"))
        now = int(self.clock.seconds())
        claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": grant["sub"], "iat": now,
                  "exp": now + 300, "nonce": grant["nonce"]}
        access = f"access-{len(self.access)}"
        self.access[access] = {"sub": grant["sub"], **grant["userinfo"]}
        return succeed({"access_token": access, "token_type": "Bearer",
                        "id_token": jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims,
                                               self.key)})

    def sign_in(self, url, subject, **userinfo):
        """The browser at the provider: sign in, then back to our callback (path and query)."""
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == ISSUER + "/auth", url
        params = {name: values[0] for name, values in parse_qs(parts.query).items()}
        assert params["code_challenge_method"] == "S256"
        code = f"code-{len(self.codes)}-{subject}"
        self.codes[code] = {"sub": subject, "userinfo": userinfo, **params}
        callback = urlsplit(params["redirect_uri"])
        return callback.path + "?" + urlencode({"code": code, "state": params["state"]})


class OidcFlowTests(unittest.TestCase):
    def setUp(self):
        self.make_api()

    def make_api(self, public_url=None, pending=None, **provider_options):
        clock_api = ApiHarness(self, oidc_providers=[
            Provider("keycloak", ISSUER, CLIENT_ID, SECRET, **provider_options)],
            public_url=public_url, oidc_pending=pending, oidc_fetcher=_Late(self))
        self.api = clock_api
        self.idp = TestProvider(self.api.clock)

    def start(self, client="192.0.2.10", headers=None):
        return self.api.request("POST", "/api/oidc/auth", {
            "op": "keycloak", "id": "123456789", "uuid": "dXVp+ZA==", "deviceInfo": {
                "os": "linux", "type": "client", "name": "box"}}, client=client, headers=headers)

    def poll(self, code):
        return self.api.request("GET", f"/api/oidc/auth-query?code={code}&id=123456789"
                                "&uuid=dXVp+ZA==").json()

    def login(self, subject="u-1", **userinfo):
        started = self.start().json()
        back = self.api.request("GET", self.idp.sign_in(started["url"], subject, **userinfo))
        return started["code"], back

    def test_login_options_list_the_providers(self):
        self.assertEqual(self.api.request("GET", "/api/login-options").json(), ["oidc/keycloak"])

    def test_first_login_creates_the_user_when_the_provider_allows_it(self):
        self.make_api(signup=True)
        started = self.start().json()
        params = parse_qs(urlsplit(started["url"]).query)
        self.assertEqual(params["redirect_uri"], ["http://api.test/api/oidc/callback"])
        self.assertEqual(params["scope"], ["openid email profile"])
        self.assertEqual(params["client_id"], [CLIENT_ID])
        self.assertEqual(self.poll(started["code"]), {"error": NOT_YET})
        back = self.api.request("GET", self.idp.sign_in(
            started["url"], "u-1", preferred_username="dana", email="dana@example.com",
            email_verified=True, name="Dana Scully"))
        self.assertEqual(back.status, 200)
        self.assertIn(b"Signed in as dana on RustDesk 123456789 (box). You can close this window",
                      back.body)
        self.assertEqual(back.header("content-type"), "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", back.header("content-security-policy"))
        answer = self.poll(started["code"])
        self.assertEqual(answer["type"], "access_token")
        self.assertEqual(answer["user"]["name"], "dana")
        self.assertEqual(answer["user"]["third_auth_type"], "keycloak")
        self.assertEqual(answer["user"]["info"]["other"], {})
        self.assertEqual(self.poll(started["code"]), {"error": EXPIRED})
        me = self.api.request("POST", "/api/currentUser", {}, token=answer["access_token"])
        self.assertEqual((me.json()["name"], me.json()["email"]), ("dana", "dana@example.com"))
        row = self.api.db.run_now(lambda c: c.execute(tables.tokens.select()).first())
        self.assertEqual((row.rustdesk_id, row.device_uuid), ("123456789", "dXVp+ZA=="))

    def test_the_same_subject_logs_in_as_the_same_user(self):
        self.make_api(signup=True)
        code, _ = self.login("u-1", preferred_username="dana")
        self.poll(code)
        code, _ = self.login("u-1", preferred_username="renamed")
        self.assertEqual(self.poll(code)["user"]["name"], "dana")
        code, _ = self.login("u-2", preferred_username="dana")
        self.assertEqual(self.poll(code)["user"]["name"], "dana-2")

    def test_unknown_subject_without_signup_is_an_error_that_stops_the_client(self):
        code, back = self.login("u-1", preferred_username="dana")
        self.assertEqual(back.status, 400)
        self.assertIn(b"no account for this keycloak login", back.body)
        answer = self.poll(code)
        self.assertNotEqual(answer["error"], NOT_YET)
        self.assertIn("no account", answer["error"])
        self.assertEqual(self.poll(code), {"error": EXPIRED})
        self.assertEqual(self.api.app.accounts.logins_failed, 1)

    def test_an_operator_linked_user_logs_in(self):
        self.api.add_user("erin", oidc_provider="keycloak", oidc_subject="u-7")
        code, _ = self.login("u-7")
        self.assertEqual(self.poll(code)["user"]["name"], "erin")

    def test_link_by_verified_email_only_when_the_provider_allows_it(self):
        self.api.add_user("frank", email="Frank@Example.com")
        code, _ = self.login("u-9", email="frank@example.com", email_verified=True)
        self.assertIn("no account", self.poll(code)["error"])
        self.make_api(link_email=True)
        self.api.add_user("frank", email="Frank@Example.com")
        code, _ = self.login("u-9", email="frank@example.com", email_verified=False)
        self.assertIn("no account", self.poll(code)["error"])
        code, _ = self.login("u-9", email="frank@example.com", email_verified=True)
        self.assertEqual(self.poll(code)["user"]["name"], "frank")
        code, _ = self.login("u-9")
        self.assertEqual(self.poll(code)["user"]["name"], "frank")

    def test_disabled_user_is_refused(self):
        self.api.add_user("erin", oidc_provider="keycloak", oidc_subject="u-7", status=0)
        code, back = self.login("u-7")
        self.assertIn(b"disabled", back.body)
        self.assertIn("disabled", self.poll(code)["error"])

    def test_the_state_is_good_for_one_callback(self):
        self.api.add_user("erin", oidc_provider="keycloak", oidc_subject="u-7")
        started = self.start().json()
        callback = self.idp.sign_in(started["url"], "u-7")
        self.assertEqual(self.api.request("GET", callback).status, 200)
        again = self.api.request("GET", callback)
        self.assertEqual(again.status, 400)
        self.assertIn(b"expired or was already completed", again.body)
        forged = self.api.request("GET", "/api/oidc/callback?code=x&state=forged")
        self.assertEqual(forged.status, 400)
        self.assertEqual(self.poll(started["code"])["user"]["name"], "erin")

    def test_provider_error_on_the_callback(self):
        started = self.start().json()
        state = parse_qs(urlsplit(started["url"]).query)["state"][0]
        back = self.api.request("GET", f"/api/oidc/callback?error=access_denied&state={state}")
        self.assertIn(b"access_denied", back.body)
        self.assertIn("access_denied", self.poll(started["code"])["error"])

    def test_pending_logins_expire_with_the_client_polling(self):
        self.api.add_user("erin", oidc_provider="keycloak", oidc_subject="u-7")
        started = self.start().json()
        callback = self.idp.sign_in(started["url"], "u-7")
        self.api.clock.advance(181)
        self.assertEqual(self.api.request("GET", callback).status, 400)
        self.assertEqual(self.poll(started["code"]), {"error": EXPIRED})

    def test_public_url_and_host_header(self):
        oidc = self.api.app.oidc
        for host in ("evil.test/x?", "a b", "", "[::1]:21114", "rd.example.com:8080"):
            call = Call("POST", "/api/oidc/auth", {}, {}, {"host": host}, b"", "192.0.2.1", 0)
            if "/" in host or " " in host or not host:
                self.assertRaises(ApiError, oidc.redirect_uri, call)
            else:
                self.assertEqual(oidc.redirect_uri(call), f"http://{host}/api/oidc/callback")
        self.make_api(public_url="https://rd.example.com/")
        started = self.start().json()
        self.assertEqual(parse_qs(urlsplit(started["url"]).query)["redirect_uri"],
                         ["https://rd.example.com/api/oidc/callback"])

    def test_unknown_provider_and_bad_bodies(self):
        for body in ({"op": "github"}, {"op": 5}, {}, {"op": "keycloak", "id": ["x"]}):
            reply = self.api.request("POST", "/api/oidc/auth", body)
            self.assertEqual(reply.status, 400, body)
            self.assertIn("error", reply.json())
        self.assertEqual(self.poll("nothing"), {"error": EXPIRED})
        self.assertEqual(self.api.request("GET", "/api/oidc/auth-query").json(),
                         {"error": EXPIRED})

    def test_unusable_discovery_documents(self):
        for endpoint in ("http://[broken/auth", "ftp://idp.test/auth", 7):
            self.make_api()
            self.idp.metadata["authorization_endpoint"] = endpoint
            reply = self.start()
            self.assertEqual(reply.status, 502, endpoint)
            self.assertIn("authorization_endpoint", reply.json()["error"])

    def test_unreachable_provider(self):
        self.idp.down = True
        reply = self.start()
        self.assertEqual(reply.status, 502)
        self.assertIn("unavailable", reply.json()["error"])
        self.assertEqual(len(self.api.app.oidc.pending), 0)

    def test_pending_logins_are_bounded_per_source_and_in_all(self):
        self.make_api(pending=PendingLogins(max_entries=5, per_source=3))
        for _ in range(3):
            self.assertEqual(self.start(client="198.51.100.1").status, 200)
        refused = self.start(client="198.51.100.1")
        self.assertEqual(refused.status, 429)
        self.assertIn("Too many", refused.json()["error"])
        self.assertEqual(self.start(client="198.51.100.2").status, 200)
        self.assertEqual(self.start(client="198.51.100.3").status, 200)
        self.assertEqual(self.start(client="198.51.100.4").status, 429)
        self.assertEqual(self.api.app.oidc.limits.hits,
                         {"oidc_pending_per_source": 1, "oidc_pending": 1})
        self.api.clock.advance(180)
        self.assertEqual(self.start(client="198.51.100.1").status, 200)

    def test_documents_are_cached_and_keys_fetched_again_after_rotation(self):
        self.api.add_user("erin", oidc_provider="keycloak", oidc_subject="u-7")
        code, _ = self.login("u-7")
        self.assertIn("access_token", self.poll(code))
        code, _ = self.login("u-7")
        self.assertIn("access_token", self.poll(code))
        self.assertEqual(self.idp.fetched.count(ISSUER + "/.well-known/openid-configuration"), 1)
        self.assertEqual(self.idp.fetched.count(ISSUER + "/jwks"), 1)
        self.idp.key = new_key("k2")
        self.api.clock.advance(61)
        code, _ = self.login("u-7")
        self.assertIn("access_token", self.poll(code))
        self.assertEqual(self.idp.fetched.count(ISSUER + "/jwks"), 2)
        self.api.clock.advance(3600)
        self.login("u-7")
        self.assertEqual(self.idp.fetched.count(ISSUER + "/.well-known/openid-configuration"), 2)


class _Late:
    """The fetcher the test's TestProvider answers through (made after the harness)."""

    def __init__(self, test):
        self.test = test

    def get_json(self, url, headers=None):
        return self.test.idp.get_json(url, headers)

    def post_form(self, url, fields, headers=None):
        return self.test.idp.post_form(url, fields, headers)


class IdTokenTests(unittest.TestCase):
    def setUp(self):
        self.key = new_key("k1")
        self.keys = KeySet.import_key_set(KeySet([self.key]).as_dict(private=False))
        self.claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u-1", "exp": 1000, "iat": 900,
                       "nonce": "n-1"}

    def check(self, key=None, header=None, **changes):
        claims = {**self.claims, **changes}
        claims = {name: value for name, value in claims.items() if value is not None}
        token = jwt.encode(header or {"alg": "RS256", "kid": "k1"}, claims, key or self.key)
        return validate_id_token(token, self.keys, ISSUER, CLIENT_ID, "n-1", 950)

    def test_valid(self):
        self.assertEqual(self.check()["sub"], "u-1")
        self.assertEqual(self.check(aud=[CLIENT_ID, "other"], azp=CLIENT_ID)["sub"], "u-1")
        self.assertEqual(self.check(exp=900)["sub"], "u-1")

    def test_each_claim_is_checked(self):
        for changes in ({"iss": "https://evil.test"}, {"aud": "another-client"},
                        {"aud": [CLIENT_ID, "other"]}, {"exp": 880}, {"exp": None},
                        {"nonce": "n-2"}, {"nonce": None}, {"sub": None}, {"sub": "x" * 300}):
            with self.assertRaises(OidcError, msg=changes):
                self.check(**changes)

    def test_signature_key_and_algorithm(self):
        with self.assertRaises(UnknownKey):
            self.check(key=new_key("k9"), header={"alg": "RS256", "kid": "k9"})
        with self.assertRaises(OidcError):
            self.check(key=new_key("k1"))
        token = jwt.encode({"alg": "RS256", "kid": "k1"}, self.claims, self.key)
        head, body, _ = token.split(".")
        none = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode()
        for forged in (f"{none}.{body}.", f"{head}.{body}.AAAA", "not a token", ""):
            with self.assertRaises(OidcError, msg=forged):
                validate_id_token(forged, self.keys, ISSUER, CLIENT_ID, "n-1", 950)


class DirectoryTests(unittest.TestCase):
    def test_one_fetch_for_concurrent_requests_and_failures_not_cached(self):
        waiting = []

        class Slow:
            def get_json(self, url, headers=None):
                waiting.append(Deferred())
                return waiting[-1]
        from twisted.internet.task import Clock
        directory = Directory(Slow(), Clock())
        provider = Provider("p", ISSUER, CLIENT_ID)
        first, second = directory.metadata(provider), directory.metadata(provider)
        self.assertEqual(len(waiting), 1)
        waiting[0].errback(OidcError("down"))
        self.failureResultOf(first, OidcError)
        self.failureResultOf(second, OidcError)
        third = directory.metadata(provider)
        waiting[1].callback({"issuer": "https://other.test"})
        self.assertIn("issuer", str(self.failureResultOf(third, OidcError).value))


class ProviderSettingsTests(unittest.TestCase):
    def test_from_settings_with_the_secret_in_a_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-a-file\n")
        providers = providers_from_settings(Settings({
            "OIDC": "keycloak, google", "OIDC_KEYCLOAK_ISSUER": ISSUER,
            "OIDC_KEYCLOAK_CLIENT_ID": "rd", "OIDC_KEYCLOAK_CLIENT_SECRET_FILE": path,
            "OIDC_KEYCLOAK_SIGNUP": "Y", "OIDC_GOOGLE_ISSUER": "https://accounts.google.com",
            "OIDC_GOOGLE_CLIENT_ID": "g", "OIDC_GOOGLE_SCOPES": "email"}))
        keycloak, google = providers
        self.assertEqual((keycloak.name, keycloak.client_secret, keycloak.signup),
                         ("keycloak", "from-a-file", True))
        self.assertEqual((google.scopes, google.signup, google.link_email),
                         ("openid email", False, False))
        self.assertEqual(google.discovery_url,
                         "https://accounts.google.com/.well-known/openid-configuration")
        self.assertEqual(providers_from_settings(Settings({})), [])

    def test_errors(self):
        for environ in ({"OIDC": "Key Cloak"}, {"OIDC": "kc"},
                        {"OIDC": "kc,kc", "OIDC_KC_ISSUER": ISSUER, "OIDC_KC_CLIENT_ID": "x"},
                        {"OIDC": "kc", "OIDC_KC_ISSUER": "ftp://x", "OIDC_KC_CLIENT_ID": "x"}):
            self.assertRaises(ConfigError, providers_from_settings, Settings(environ))


class PieceTests(unittest.TestCase):
    def test_page_escapes(self):
        self.assertIn(b"&lt;script&gt;", page(200, "t", "<script>").body)

    def test_provider_answers(self):
        self.assertEqual(parse_document(200, b'{"a": 1}'), {"a": 1})
        for status, body in ((200, b"[1]"), (200, b"<html>"), (400, b'{"error": "bad"}'),
                             (500, b"")):
            self.assertRaises(OidcError, parse_document, status, body)

    def test_basic_credentials_form_encode_each_part(self):
        self.assertEqual(base64.b64decode(basic_credentials("a b", "c:d").split()[1]),
                         b"a%20b:c%3Ad")


class _Documents(Resource):
    """A provider's HTTP server, as far as the Fetcher sees it."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render(self, request):
        self.seen.append((request.path, request.getHeader("authorization"),
                          request.content.read()))
        if request.path == b"/large":
            return b'{"a": "' + b"x" * 4096 + b'"}'
        if request.path == b"/refused":
            request.setResponseCode(400)
            return b'{"error": "invalid_grant"}'
        return b'{"issuer": "here"}'


class FetcherTests(unittest.TestCase):
    """The treq side over real loopback sockets."""

    def setUp(self):
        from twisted.internet import reactor
        self.documents = _Documents()
        self.port = reactor.listenTCP(0, Site(self.documents), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.fetcher = Fetcher(reactor, max_size=1024)

    @inlineCallbacks
    def test_documents_forms_and_headers(self):
        document = yield self.fetcher.get_json(self.base + "/doc", {"Authorization": "Bearer a"})
        self.assertEqual(document, {"issuer": "here"})
        yield self.fetcher.post_form(self.base + "/token", {"code": "c d", "x": "1"})
        self.assertEqual(self.documents.seen, [(b"/doc", "Bearer a", b""),
                                               (b"/token", None, b"code=c+d&x=1")])

    @inlineCallbacks
    def test_refusals_are_oidc_errors(self):
        from twisted.internet import reactor
        closed = reactor.listenTCP(0, Site(self.documents), interface="127.0.0.1")
        closed_port = closed.getHost().port
        yield closed.stopListening()
        for url, words in ((self.base + "/refused", "HTTP 400 (invalid_grant)"),
                           (self.base + "/large", "exceeds 1024"),
                           (f"http://127.0.0.1:{closed_port}/", "cannot reach"),
                           ("http://127.0.0.1:port/", "cannot reach")):
            try:
                yield self.fetcher.get_json(url)
            except OidcError as e:
                self.assertIn(words, str(e))
            else:
                self.fail(url)
