"""OpenID Connect login for the client (API.md 1.1): ``/api/oidc/auth``, ``auth-query``, callback.

The client asks for a login (``POST /api/oidc/auth``), opens the provider's
page in the browser and polls ``auth-query`` every second for 180 s.  The
browser comes back to ``/api/oidc/callback``: the code is exchanged with PKCE,
the state is used once, the ID token is checked (signature against the
provider's key set, issuer, audience, expiry, nonce) with joserfc, and its
subject is mapped to a user.  The next poll gets a bearer token, once.

Providers are the operator's (``OIDC=name,...``; per name
``OIDC_<NAME>_ISSUER``, ``_CLIENT_ID``, ``_CLIENT_SECRET`` or
``_CLIENT_SECRET_FILE``, ``_SCOPES``, ``_SIGNUP``, ``_LINK_EMAIL``).  Their
discovery documents and key sets are fetched with treq when first needed and
cached; one fetch per document at a time, whatever the number of clicks.
"""

import base64
import html
import json
import re
import secrets
from collections import Counter, OrderedDict
from urllib.parse import quote, urlsplit

import treq
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from ..admission import source_key
from ..config import ConfigError
from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .accounts import text_field, user_payload
from .http import Reply, bad_request, json_reply
from .users import UserError, add_user

CALLBACK_PATH = "/api/oidc/callback"
PENDING_TTL = 180.0
DEFAULT_MAX_PENDING = 1000
DEFAULT_PENDING_PER_SOURCE = 10
DOCUMENT_TTL = 3600.0
KEYS_REFRESH_INTERVAL = 60.0
FETCH_TIMEOUT = 10.0
MAX_DOCUMENT = 512 * 1024
CLOCK_LEEWAY = 60
DEFAULT_SCOPES = "openid email profile"
# Asymmetric signatures only: never "none", never an HMAC keyed with the client secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")
NOT_YET = "No authed oidc is found"
EXPIRED = "OIDC login expired or unknown, please try again"
BUSY = "Too many OIDC logins in progress, please try again later"
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
PAGE_HEADERS = ((b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
                (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"))


class OidcError(Exception):
    """A login that cannot go on; the message is shown to the user and logged (quoted)."""


class UnknownKey(OidcError):
    """The ID token names a key the cached key set lacks (the provider rotated its keys)."""


class Provider:
    """One identity provider the operator configured."""

    def __init__(self, name, issuer, client_id, client_secret="", scopes=DEFAULT_SCOPES,
                 signup=False, link_email=False):
        self.name = name
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        words = scopes.split()
        self.scopes = " ".join(words if "openid" in words else ["openid", *words])
        self.signup = signup
        self.link_email = link_email

    @property
    def discovery_url(self):
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def check_url(url, what):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ConfigError(f"{what} must be an http(s) URL without query, got {url!r}")
    return url


def providers_from_settings(settings):
    """The providers named by ``OIDC``, each from its ``OIDC_<NAME>_*`` settings."""
    providers = {}
    for name in (n.strip() for n in (settings.get("OIDC") or "").split(",")):
        if not name:
            continue
        if not PROVIDER_NAME.fullmatch(name):
            raise ConfigError(f"OIDC provider name {name!r}: lower-case letters, digits, _ or -,"
                              " at most 32")
        if name in providers:
            raise ConfigError(f"OIDC provider {name} is named twice")
        prefix = f"OIDC_{name.upper()}_"
        issuer, client_id = settings.get(prefix + "ISSUER"), settings.get(prefix + "CLIENT_ID")
        if not issuer or not client_id:
            raise ConfigError(f"OIDC provider {name} needs {prefix}ISSUER and {prefix}CLIENT_ID")
        providers[name] = Provider(
            name, check_url(issuer, prefix + "ISSUER"), client_id,
            settings.get(prefix + "CLIENT_SECRET") or "",
            settings.get(prefix + "SCOPES") or DEFAULT_SCOPES, settings.flag(prefix + "SIGNUP"),
            settings.flag(prefix + "LINK_EMAIL"))
    return list(providers.values())


# Talking to the provider


class Fetcher:
    """JSON documents over HTTP(S) with treq: a timeout and a size cap on every answer."""

    def __init__(self, reactor, timeout=FETCH_TIMEOUT, max_size=MAX_DOCUMENT):
        self.reactor = reactor
        self.timeout = timeout
        self.max_size = max_size

    def get_json(self, url, headers=None):
        return self._json(treq.get, url, headers=headers)

    def post_form(self, url, fields, headers=None):
        return self._json(treq.post, url, data=fields, headers=headers)

    def _json(self, method, url, **kwargs):
        """A new connection each time: these requests are rare (documents are cached), and
        no idle connection outlives them."""
        d = maybeDeferred(method, url, timeout=self.timeout, reactor=self.reactor,
                          persistent=False, **kwargs)
        d.addCallback(self._read)
        d.addErrback(self._unreachable, url)
        return d

    def _read(self, response):
        chunks, size = [], [0]

        def collect(data):
            size[0] += len(data)
            if size[0] > self.max_size:
                raise OidcError(f"the provider's answer exceeds {self.max_size} bytes")
            chunks.append(data)
        return treq.collect(response, collect).addCallback(
            lambda _: parse_document(response.code, b"".join(chunks)))

    @staticmethod
    def _unreachable(failure, url):
        if failure.check(OidcError):
            return failure
        raise OidcError(f"cannot reach {url}: {failure.type.__name__}")


def parse_document(status, body):
    """A provider's JSON object answer; an error status or other content is an OidcError."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if status != 200:
        error = document.get("error") if isinstance(document, dict) else None
        raise OidcError(f"the provider answered HTTP {status}"
                        + (f" ({str(error)[:100]})" if error else ""))
    if not isinstance(document, dict):
        raise OidcError("the provider's answer is not a JSON object")
    return document


def check_metadata(document, provider):
    """The discovery document, if it is one for ``provider``'s issuer."""
    if not isinstance(document.get("issuer"), str) or \
            document["issuer"].rstrip("/") != provider.issuer.rstrip("/"):
        raise OidcError(f"the discovery document is for issuer {document.get('issuer')!r}")
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(field)
        try:
            usable = isinstance(value, str) and urlsplit(value).scheme in ("http", "https")
        except ValueError:
            usable = False
        if not usable:
            raise OidcError(f"the discovery document has no usable {field}")
    return document


class Directory:
    """Discovery documents and key sets, fetched when first needed and kept an hour.

    A key set is fetched again sooner when a token names a key it lacks (the
    provider rotated its keys), at most once a minute.  Concurrent requests for
    one document share one fetch.
    """

    def __init__(self, fetcher, clock, ttl=DOCUMENT_TTL):
        self.fetcher = fetcher
        self.clock = clock
        self.ttl = ttl
        self.cache = {}
        self.in_flight = {}

    def metadata(self, provider):
        return self._cached(("metadata", provider.name), False, lambda: self.fetcher.get_json(
            provider.discovery_url).addCallback(check_metadata, provider))

    def keys(self, provider, metadata, refresh=False):
        return self._cached(("keys", provider.name), refresh, lambda: self.fetcher.get_json(
            metadata["jwks_uri"]).addCallback(_key_set))

    def _cached(self, key, refresh, fetch):
        now = self.clock.seconds()
        cached = self.cache.get(key)
        if cached is not None:
            age = now - cached[0]
            if age < self.ttl and not (refresh and age >= KEYS_REFRESH_INTERVAL):
                return succeed(cached[1])
        d = Deferred()
        if key in self.in_flight:
            self.in_flight[key].append(d)
        else:
            self.in_flight[key] = [d]
            fetch().addBoth(self._fetched, key, now)
        return d

    def _fetched(self, result, key, started):
        if not isinstance(result, Failure):
            self.cache[key] = (started, result)
        for d in self.in_flight.pop(key):
            (d.errback if isinstance(result, Failure) else d.callback)(result)


def _key_set(document):
    try:
        return KeySet.import_key_set(document)
    except (JoseError, KeyError, TypeError, ValueError):
        raise OidcError("the provider's key set (jwks_uri) is not a usable JWK set") from None


def validate_id_token(id_token, key_set, issuer, client_id, nonce, now):
    """The claims of ``id_token`` once its signature and claims hold (OpenID Connect Core
    3.1.3.7); raises UnknownKey or OidcError."""
    try:
        token = jwt.decode(id_token, key_set, algorithms=list(ALGORITHMS))
        jwt.JWTClaimsRegistry(
            now=int(now), leeway=CLOCK_LEEWAY, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id}, sub={"essential": True},
            exp={"essential": True}, nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except InvalidKeyIdError:
        raise UnknownKey("the ID token is signed with a key the provider does not list") \
            from None
    except (JoseError, ValueError, TypeError) as e:
        raise OidcError(f"the ID token is not valid: {e}") from None
    claims = token.claims
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise OidcError("the ID token is meant for several audiences and not authorised to us")
    if len(claims["sub"]) > tables.SHORT:
        raise OidcError("the ID token's subject is too long")
    return claims


# Users


def resolve_user(connection, provider, claims, now):
    """``(user, how)`` for the provider's subject: "known", "linked" (an unlinked user with
    the same verified e-mail, when the provider allows it), "created" (when it allows
    sign-up), or ``(None, "unknown")``."""
    u = tables.users
    subject = claims["sub"]
    row = connection.execute(select(u).where(u.c.oidc_provider == provider.name,
                                             u.c.oidc_subject == subject)).first()
    if row is not None:
        return dict(row._mapping), "known"
    email = claims.get("email") if claims.get("email_verified") is True else None
    email = email if isinstance(email, str) and len(email) <= tables.SHORT else ""
    if provider.link_email and email:
        rows = connection.execute(select(u).where(func.lower(u.c.email) == email.lower(),
                                                  u.c.oidc_subject.is_(None)).limit(2)).all()
        if len(rows) == 1:
            connection.execute(update(u).where(u.c.id == rows[0].id).values(
                oidc_provider=provider.name, oidc_subject=subject, updated_at=now))
            return _user_row(connection, rows[0].id), "linked"
    if not provider.signup:
        return None, "unknown"
    display = claims.get("name") if isinstance(claims.get("name"), str) else ""
    user_id = add_user(connection, unique_name(connection, provider, claims), None, now,
                       email=email, display_name=display, oidc_provider=provider.name,
                       oidc_subject=subject)
    return _user_row(connection, user_id), "created"


def _user_row(connection, user_id):
    return dict(connection.execute(select(tables.users).where(
        tables.users.c.id == user_id)).first()._mapping)


def unique_name(connection, provider, claims):
    """A free user name from ``preferred_username``, else ``email``, else provider-subject."""
    base = ""
    for claim in (claims.get("preferred_username"), claims.get("email")):
        if isinstance(claim, str):
            base = re.sub(r"[\s/\\]", "_", "".join(c for c in claim if c.isprintable()))
            if base:
                break
    base = (base or f"{provider.name}-{claims['sub']}")[:tables.NAME - 8]
    u = tables.users
    candidates = [base] + [f"{base}-{n}" for n in range(2, 10)]
    taken = {row.name for row in connection.execute(select(u.c.name).where(
        u.c.name.in_(candidates)))}
    for name in candidates:
        if name not in taken:
            return name
    return f"{base}-{secrets.token_hex(3)}"


# Logins in progress


class LimitReached(Exception):
    def __init__(self, limit):
        super().__init__(limit)
        self.limit = limit


class PendingLogin:
    """One client's OIDC login, from ``/oidc/auth`` until its token is fetched."""

    def __init__(self, provider, redirect_uri, body, client, now):
        self.code = secrets.token_urlsafe(32)
        self.state = secrets.token_urlsafe(32)
        self.nonce = secrets.token_urlsafe(32)
        self.verifier = secrets.token_urlsafe(48)
        self.provider = provider
        self.redirect_uri = redirect_uri
        self.body = body
        self.client = client
        self.source = source_key(client)
        self.created = now
        self.user = None
        self.error = None


class PendingLogins:
    """Logins in progress by code (the client's polls) and by state (the callback).

    Each lives ``ttl`` seconds (the client polls that long); at most
    ``max_entries`` in all and ``per_source`` per client address (IPv6: /64).
    The state is good for one callback.
    """

    def __init__(self, ttl=PENDING_TTL, max_entries=DEFAULT_MAX_PENDING,
                 per_source=DEFAULT_PENDING_PER_SOURCE):
        self.ttl = ttl
        self.max_entries = max_entries
        self.per_source = per_source
        self.by_code = OrderedDict()
        self.by_state = {}
        self.sources = Counter()

    def __len__(self):
        return len(self.by_code)

    def add(self, login, now):
        self.prune(now)
        if len(self.by_code) >= self.max_entries:
            raise LimitReached("oidc_pending")
        if self.sources[login.source] >= self.per_source:
            raise LimitReached("oidc_pending_per_source")
        self.by_code[login.code] = login
        self.by_state[login.state] = login
        self.sources[login.source] += 1

    def for_state(self, state, now):
        """The login waiting for this callback (the state is then used up), or None."""
        login = self.by_state.pop(state, None) if isinstance(state, str) else None
        return login if login is not None and now - login.created < self.ttl else None

    def for_code(self, code, now):
        login = self.by_code.get(code) if isinstance(code, str) else None
        return login if login is not None and now - login.created < self.ttl else None

    def remove(self, login):
        if self.by_code.pop(login.code, None) is None:
            return
        self.by_state.pop(login.state, None)
        self.sources[login.source] -= 1
        if not self.sources[login.source]:
            del self.sources[login.source]

    def prune(self, now):
        while self.by_code:
            login = next(iter(self.by_code.values()))
            if now - login.created < self.ttl:
                break
            self.remove(login)


# The routes


def page(status, title, text):
    """The small HTML page the browser shows at the end of the provider's login."""
    body = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title></head><body style=\"font-family:sans-serif;margin:3em\"><h1>"
            f"{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
    return Reply(status, body.encode(), b"text/html; charset=utf-8", PAGE_HEADERS)


def basic_credentials(client_id, secret):
    """``client_secret_basic`` (RFC 6749 2.3.1: each part form-encoded, then base64)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class Oidc:
    """The OIDC part of the API.

    ``public_url`` is the API's address as browsers reach it (the provider
    sends them back to ``<public_url>/api/oidc/callback``, which must be
    registered with it); unset, the request's Host header gives it over
    plain http.
    """

    log = Logger()

    def __init__(self, providers, accounts, db, clock, fetcher, public_url=None, pending=None):
        self.providers = {provider.name: provider for provider in providers}
        self.accounts = accounts
        self.db = db
        self.clock = clock
        self.directory = Directory(fetcher, clock)
        self.fetcher = fetcher
        self.public_url = public_url.rstrip("/") if public_url else None
        self.pending = pending if pending is not None else PendingLogins()
        self.limits = LimitLog(self.log)

    def login_options(self):
        return [f"oidc/{name}" for name in self.providers]

    def redirect_uri(self, call):
        if self.public_url is not None:
            return self.public_url + CALLBACK_PATH
        host = call.header("host") or ""
        if not HOST.fullmatch(host):
            raise bad_request("no usable Host header: the operator must set --public-url")
        return f"http://{host}{CALLBACK_PATH}"

    # POST /api/oidc/auth

    def auth(self, call):
        body = call.json()
        provider = self.providers.get(text_field(body, "op", required=True))
        if provider is None:
            raise bad_request("no such OIDC provider")
        info = body.get("deviceInfo")
        kept = {"id": text_field(body, "id"), "uuid": text_field(body, "uuid", tables.SHORT),
                "deviceInfo": info if isinstance(info, dict) else {}}
        login = PendingLogin(provider, self.redirect_uri(call), kept, call.client_ip, call.now)
        try:
            self.pending.add(login, call.now)
        except LimitReached as e:
            self.limits.hit(call.now, e.limit, login.source, f"{len(self.pending)} in progress")
            return json_reply({"error": BUSY}, 429)
        d = self.directory.metadata(provider)
        d.addCallback(self._authorization_url, login)
        d.addErrback(self._unavailable, login)
        return d

    def _authorization_url(self, metadata, login):
        provider = login.provider
        url = add_params_to_uri(metadata["authorization_endpoint"], [
            ("response_type", "code"), ("client_id", provider.client_id),
            ("redirect_uri", login.redirect_uri), ("scope", provider.scopes),
            ("state", login.state), ("nonce", login.nonce),
            ("code_challenge", create_s256_code_challenge(login.verifier)),
            ("code_challenge_method", "S256")])
        self.log.info("{client} OIDC login with {provider} started", client=login.client,
                      provider=provider.name, event="api.oidc_started")
        return json_reply({"code": login.code, "url": url})

    def _unavailable(self, failure, login):
        failure.trap(OidcError)
        self.pending.remove(login)
        self.log.warn("{client} OIDC provider {provider} unavailable: {why}", client=login.client,
                      provider=login.provider.name, why=quoted(str(failure.value)),
                      event="api.oidc_unavailable")
        return json_reply({"error": f"The {login.provider.name} login is unavailable: "
                                    f"{failure.value}"}, 502)

    # GET /api/oidc/auth-query

    def auth_query(self, call):
        """The token once the browser came back, exactly once.  The code alone identifies
        the login (256 random bits); ``id`` and ``uuid`` are not compared, since the client
        does not escape them ('+' in a base64 uuid arrives as a space)."""
        login = self.pending.for_code(call.query.get("code"), call.now)
        if login is None:
            return json_reply({"error": EXPIRED})
        if login.error is not None:
            self.pending.remove(login)
            return json_reply({"error": login.error})
        if login.user is None:
            return json_reply({"error": NOT_YET})
        self.pending.remove(login)
        user = login.user
        self.accounts.logins_ok += 1
        self.log.info("{client} user {name} logged in through OIDC {provider}",
                      client=call.client_ip, name=quoted(user["name"]),
                      provider=login.provider.name, event="api.login")
        return self.accounts.issue_token(user["id"], call.now, login.body, call.client_ip) \
            .addCallback(lambda token: json_reply({"type": "access_token", "access_token": token,
                                                   "user": user_payload(user)}))

    # GET /api/oidc/callback

    def callback(self, call):
        login = self.pending.for_state(call.query.get("state"), call.now)
        if login is None:
            return page(400, "Sign-in expired", "This sign-in has expired or was already "
                        "completed. Start again from RustDesk.")
        if call.query.get("error") or not call.query.get("code"):
            error = call.query.get("error") or "no authorization code"
            return self._failed(Failure(OidcError(
                f"the provider did not sign you in ({error[:100]})")), login, call)
        d = self.directory.metadata(login.provider)
        d.addCallback(self._exchange, login, call.query["code"])
        d.addCallback(self._resolve, login, call.now)
        d.addCallbacks(self._signed_in, self._failed, callbackArgs=(login, call),
                       errbackArgs=(login, call))
        return d

    def _exchange(self, metadata, login, code):
        provider = login.provider
        fields = {"grant_type": "authorization_code", "code": code,
                  "redirect_uri": login.redirect_uri, "code_verifier": login.verifier}
        headers = {}
        methods = metadata.get("token_endpoint_auth_methods_supported") or [
            "client_secret_basic"]
        if provider.client_secret and "client_secret_basic" in methods:
            headers["Authorization"] = basic_credentials(provider.client_id,
                                                         provider.client_secret)
        else:
            fields["client_id"] = provider.client_id
            if provider.client_secret:
                fields["client_secret"] = provider.client_secret
        d = self.fetcher.post_form(metadata["token_endpoint"], fields, headers)
        return d.addCallback(self._tokens, metadata, login)

    def _tokens(self, tokens, metadata, login):
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the provider's token answer has no ID token")
        d = self._validated(id_token, metadata, login, refresh=False)
        access = tokens.get("access_token")
        if isinstance(access, str) and isinstance(metadata.get("userinfo_endpoint"), str):
            d.addCallback(self._with_userinfo, metadata["userinfo_endpoint"], access)
        return d

    def _validated(self, id_token, metadata, login, refresh):
        provider = login.provider

        def check(key_set):
            return validate_id_token(id_token, key_set, metadata["issuer"], provider.client_id,
                                     login.nonce, self.clock.seconds())

        def rotated(failure):
            failure.trap(UnknownKey)
            if refresh:
                return failure
            return self._validated(id_token, metadata, login, refresh=True)
        d = self.directory.keys(provider, metadata, refresh).addCallback(check)
        return d.addErrback(rotated)

    def _with_userinfo(self, claims, url, access_token):
        """The ID token's claims over the UserInfo ones (providers such as oidc-provider
        put e-mail and names there only)."""
        def merge(info):
            if info.get("sub") != claims["sub"]:
                raise OidcError("the UserInfo answer is for another subject")
            return {**info, **claims}
        return self.fetcher.get_json(url, {"Authorization": f"Bearer {access_token}"}) \
            .addCallback(merge)

    def _resolve(self, claims, login, now):
        def retry(failure):
            failure.trap(IntegrityError)
            return self.db.run(resolve_user, login.provider, claims, now)
        return self.db.run(resolve_user, login.provider, claims, now).addErrback(retry) \
            .addCallback(self._resolved, login, claims)

    def _resolved(self, found, login, claims):
        user, how = found
        if user is None:
            raise OidcError(f"no account for this {login.provider.name} login; ask an "
                            "administrator to create or link one")
        if user["status"] != 1:
            raise OidcError(f"the account {user['name']} is disabled")
        return user, how

    def _signed_in(self, found, login, call):
        user, how = found
        login.user = user
        self.log.info("{client} OIDC {provider} subject {subject} is user {name} ({how})",
                      client=call.client_ip, provider=login.provider.name,
                      subject=quoted(user["oidc_subject"]), name=quoted(user["name"]), how=how,
                      event="api.oidc_signed_in")
        device = login.body["deviceInfo"].get("name")
        device = f" ({device[:tables.NAME]})" if isinstance(device, str) and device else ""
        return page(200, "Signed in", f"Signed in as {user['name']} on RustDesk "
                    f"{login.body['id']}{device}. You can close this window and return to "
                    "RustDesk.")

    def _failed(self, failure, login, call):
        failure.trap(OidcError, UserError)
        login.error = f"OIDC login failed: {failure.value}"
        self.accounts.logins_failed += 1
        self.log.warn("{client} OIDC login with {provider} failed: {why}", client=call.client_ip,
                      provider=login.provider.name, why=quoted(str(failure.value)),
                      event="api.oidc_failed")
        return page(400, "Sign-in failed", f"{login.error}. You can close this window.")

    def add_routes(self, router):
        device = {"type": "object", "properties": {"os": {"type": "string"},
                                                   "type": {"type": "string"},
                                                   "name": {"type": "string"}}}
        router.add("POST", "/api/oidc/auth", self.auth,
                   summary="Start an OIDC login: the provider's URL for the browser and a code "
                           "to poll with",
                   body={"type": "object", "required": ["op"], "properties": {
                       "op": {"type": "string"}, "id": {"type": "string"},
                       "uuid": {"type": "string"}, "deviceInfo": device,
                       "apiDomain": {"type": "string"}}},
                   reply={"type": "object", "required": ["code", "url"], "properties": {
                       "code": {"type": "string"}, "url": {"type": "string"}}})
        router.add("GET", "/api/oidc/auth-query", self.auth_query,
                   summary="Poll an OIDC login: {error: 'No authed oidc is found'} until the "
                           "browser came back, then the login's token once",
                   query={"code": {"type": "string"}, "id": {"type": "string"},
                          "uuid": {"type": "string"}},
                   reply={"type": "object", "properties": {
                       "type": {"type": "string"}, "access_token": {"type": "string"},
                       "user": {"type": "object"}, "error": {"type": "string"}}})
        router.add("GET", CALLBACK_PATH, self.callback,
                   summary="Where the provider sends the browser back (an HTML page)",
                   query={"state": {"type": "string"}, "code": {"type": "string"},
                          "error": {"type": "string"}},
                   reply="html")
