"""Accounts: passwords, bearer tokens, the login flow with TOTP, and who may call what.

Passwords are argon2id at :data:`ARGON2_PARAMETERS` (about 20 ms of one core
per check on the machines we measured; that bounds the login p99).  Hashing runs
in a thread, never on the reactor.  A bearer token is 32 random bytes handed
out once; the database keeps its SHA-256 only.  Failed logins are counted per
source address and per user name (:class:`LoginThrottle`), so neither a
password sprayer nor a guesser against one account gets far.
"""

import hashlib
import json
import secrets

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update

from ..admission import source_key
from ..logs import Logger
from ..logtext import quoted
from . import tables
from .http import ApiError, bad_request, json_reply

ARGON2_PARAMETERS = {"time_cost": 2, "memory_cost": 19 * 1024, "parallelism": 1}
DEFAULT_TOKEN_LIFETIME = 30 * 24 * 3600
SECOND_FACTOR_TTL = 300.0
MAX_PENDING_SECOND_FACTORS = 10_000
MAX_NAME = tables.NAME
MAX_PASSWORD = 1024
INVALID_TOKEN = "Invalid token"
WRONG_CREDENTIALS = "Wrong username or password"
TOO_MANY_ATTEMPTS = "Too many failed attempts, try again later"

hasher = PasswordHasher(**ARGON2_PARAMETERS)


def hash_password(password):
    return hasher.hash(password)


def password_matches(stored, password):
    """True when ``password`` matches the stored argon2 hash (False for no hash at all)."""
    if not stored:
        return False
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token):
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token():
    return secrets.token_urlsafe(32)


def token_row(user_id, token, now, lifetime, kind="session", name="", scopes="", body=None,
              ip=""):
    """The ``tokens`` row of a new token: its hash, never the token."""
    body = body or {}
    info = body.get("deviceInfo")
    return {
        "user_id": user_id, "token_hash": token_hash(token), "kind": kind, "name": name,
        "scopes": scopes, "rustdesk_id": _bounded(body.get("id")),
        "device_uuid": _bounded(body.get("uuid"), tables.SHORT),
        "device_info": json.dumps(info if isinstance(info, dict) else {})[:2000],
        "ip": ip, "created_at": now, "expires_at": now + lifetime, "last_used_at": now,
    }


def user_payload(user):
    """The client's UserPayload; ``info`` always present (the Rust side has no default)."""
    return {
        "name": user["name"],
        "display_name": user["display_name"],
        "avatar": "",
        "email": user["email"],
        "note": user["note"],
        "status": user["status"],
        "is_admin": bool(user["is_admin"]),
        "verifier": "",
        "third_auth_type": user["oidc_provider"],
        "info": {
            "email_verification": False,
            "email_alarm_notification": False,
            "login_device_whitelist": [],
            "other": {},
        },
    }


def text_field(body, name, limit=MAX_NAME, required=False):
    """``body[name]`` as a bounded string; a missing optional one is ''."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if len(value) > limit:
        raise bad_request(f"{name} is longer than {limit} characters")
    if required and not value:
        raise bad_request(f"{name} is required")
    return value


class LoginThrottle:
    """Failed logins per source (IPv6: per /64) and per user name, in a sliding window.

    Past ``per_source`` failures from one source, or ``per_user`` against one name,
    within ``window`` seconds, further attempts are refused without checking the
    password until the window has moved on.  Bounded: at most ``max_entries`` keys.
    """

    def __init__(self, per_source=20, per_user=10, window=300.0, max_entries=100_000):
        self.per_source = per_source
        self.per_user = per_user
        self.window = window
        self.max_entries = max_entries
        self.failures = {}

    def _recent(self, key, now):
        times = [t for t in self.failures.get(key, ()) if now - t < self.window]
        if times:
            self.failures[key] = times
        else:
            self.failures.pop(key, None)
        return times

    def refused(self, source, name, now):
        """The reason this attempt is refused, or None."""
        if len(self._recent(("ip", source_key(source)), now)) >= self.per_source:
            return "source"
        if len(self._recent(("user", name.lower()), now)) >= self.per_user:
            return "user"
        return None

    def failed(self, source, name, now):
        if len(self.failures) >= self.max_entries:
            self.prune(now)
            if len(self.failures) >= self.max_entries:
                return
        for key in (("ip", source_key(source)), ("user", name.lower())):
            self.failures.setdefault(key, []).append(now)

    def succeeded(self, name):
        self.failures.pop(("user", name.lower()), None)

    def prune(self, now):
        for key in list(self.failures):
            self._recent(key, now)


class PendingSecondFactors:
    """Logins that passed the password and wait for a TOTP code, keyed by an opaque secret."""

    def __init__(self, ttl=SECOND_FACTOR_TTL, max_entries=MAX_PENDING_SECOND_FACTORS):
        self.ttl = ttl
        self.max_entries = max_entries
        self.pending = {}

    def add(self, user_id, now):
        self.prune(now)
        if len(self.pending) >= self.max_entries:
            oldest = min(self.pending, key=lambda k: self.pending[k][1])
            del self.pending[oldest]
        secret = secrets.token_urlsafe(24)
        self.pending[secret] = (user_id, now)
        return secret

    def take(self, secret, now):
        """The user id waiting under ``secret`` (and forget it), or None."""
        entry = self.pending.pop(secret, None) if isinstance(secret, str) else None
        if entry is None or now - entry[1] >= self.ttl:
            return None
        return entry[0]

    def prune(self, now):
        for secret, (_, since) in list(self.pending.items()):
            if now - since >= self.ttl:
                del self.pending[secret]


def totp_matches(secret, code, now):
    """A 6-digit code of ``secret`` for ``now``, one 30-second step either side accepted."""
    if not secret or not isinstance(code, str) or not code.strip().isdigit():
        return False
    return pyotp.TOTP(secret).verify(code.strip(), for_time=int(now), valid_window=1)


class Accounts:
    """Users and their tokens, over the API database.

    ``blocking(f, *args)`` runs CPU-heavy work (argon2) off the reactor thread and
    returns a Deferred.
    """

    log = Logger()

    def __init__(self, db, blocking, token_lifetime=DEFAULT_TOKEN_LIFETIME, throttle=None):
        self.db = db
        self.blocking = blocking
        self.token_lifetime = token_lifetime
        self.throttle = throttle or LoginThrottle()
        self.second_factors = PendingSecondFactors()
        self.logins_ok = 0
        self.logins_failed = 0

    # -- who is calling ------------------------------------------------------------------

    def authenticate(self, call):
        """Set ``call.user`` and ``call.token`` from the bearer token, or raise 401."""
        token = call.bearer
        if token is None:
            raise ApiError(401, INVALID_TOKEN)
        return self.db.run(_user_for_token, token_hash(token), call.now).addCallback(
            self._authenticated, call)

    @staticmethod
    def _authenticated(found, call):
        if found is None:
            raise ApiError(401, INVALID_TOKEN)
        call.user, call.token = found
        return found

    def authenticate_admin(self, call):
        def check(found):
            if not call.user["is_admin"]:
                raise ApiError(403, "Admin required!")
            return found
        return self.authenticate(call).addCallback(check)

    # -- tokens -------------------------------------------------------------------------

    def issue_token(self, user_id, now, body, ip, kind="session", name="", scopes=""):
        """Deferred of a new bearer token for ``user_id`` (stored hashed)."""
        token = new_token()
        row = token_row(user_id, token, now, self.token_lifetime, kind, name, scopes, body, ip)
        return self.db.run(lambda c: c.execute(insert(tables.tokens).values(**row))).addCallback(
            lambda _: token)

    def revoke(self, token_id):
        return self.db.run(lambda c: c.execute(delete(tables.tokens).where(
            tables.tokens.c.id == token_id)))

    # -- the login flow -----------------------------------------------------------------

    def login(self, call):
        """POST /api/login: password, then TOTP when the user has it (API.md 1.1)."""
        body = call.json()
        if body.get("type") in ("email_code", "tfa_code") or body.get("secret"):
            return self._second_step(call, body)
        name = text_field(body, "username", required=True)
        password = text_field(body, "password", MAX_PASSWORD)
        refused = self.throttle.refused(call.client_ip, name, call.now)
        if refused is not None:
            self.logins_failed += 1
            self.log.warn("{client} login refused for user {name}: too many failures from the "
                          "{which}", client=call.client_ip, name=quoted(name),
                          which="source" if refused == "source" else "account",
                          event="api.login_throttled")
            return json_reply({"error": TOO_MANY_ATTEMPTS})
        d = self.db.run(_user_by_name, name)
        d.addCallback(lambda user: self.blocking(_check_password, user, password))
        d.addCallback(self._password_checked, call, body, name)
        return d

    def _password_checked(self, user, call, body, name):
        if user is None or user["status"] != 1:
            return self._failed(call, name, "disabled" if user is not None else "wrong password")
        self.throttle.succeeded(name)
        if user["totp_secret"]:
            secret = self.second_factors.add(user["id"], call.now)
            return json_reply({"type": "email_check", "tfa_type": "tfa_check", "secret": secret,
                               "user": {"name": user["name"]}})
        return self._logged_in(user, call, body)

    def _second_step(self, call, body):
        name = text_field(body, "username")
        refused = self.throttle.refused(call.client_ip, name, call.now)
        if refused is not None:
            self.logins_failed += 1
            return json_reply({"error": TOO_MANY_ATTEMPTS})
        user_id = self.second_factors.take(body.get("secret"), call.now)
        if user_id is None:
            return self._failed(call, name, "second factor expired or unknown")
        code = body.get("tfaCode") or body.get("verificationCode")
        d = self.db.run(_user_by_id, user_id)
        d.addCallback(lambda user: self.blocking(_check_second_factor, user, code, call.now))
        d.addCallback(self._second_factor_checked, call, body, name)
        return d

    def second_factor(self, user, code, now):
        """Deferred of ``user`` when ``code`` is its TOTP code or an unused backup code (then
        struck), else None: the check the client's login and the web console share."""
        d = self.blocking(_check_second_factor, user, code, now)

        def checked(found):
            if found is None:
                return None
            user, backups_left = found
            if backups_left is None:
                return user
            return self.db.run(_use_backup_code, user["id"], user["totp_backup"],
                               backups_left).addCallback(lambda used: user if used else None)
        return d.addCallback(checked)

    def _second_factor_checked(self, checked, call, body, name):
        if checked is None:
            return self._failed(call, name, "wrong second-factor code")
        user, backups_left = checked
        if backups_left is None:
            return self._logged_in(user, call, body)
        d = self.db.run(_use_backup_code, user["id"], user["totp_backup"], backups_left)

        def used(consumed):
            if not consumed:
                return self._failed(call, name, "backup code used concurrently")
            self.log.info("{client} user {name} used a backup code, {left} left",
                          client=call.client_ip, name=quoted(user["name"]),
                          left=len(json.loads(backups_left)), event="api.backup_code_used")
            return self._logged_in(user, call, body)
        return d.addCallback(used)

    def _failed(self, call, name, why):
        self.logins_failed += 1
        self.throttle.failed(call.client_ip, name, call.now)
        self.log.info("{client} login failed for user {name}: {why}", client=call.client_ip,
                      name=quoted(name), why=why, event="api.login_failed")
        return json_reply({"error": WRONG_CREDENTIALS})

    def _logged_in(self, user, call, body):
        self.logins_ok += 1
        self.log.info("{client} user {name} logged in", client=call.client_ip,
                      name=quoted(user["name"]), event="api.login")
        d = self.issue_token(user["id"], call.now, body, call.client_ip)
        d.addCallback(lambda token: json_reply({"type": "access_token", "access_token": token,
                                                "user": user_payload(user)}))
        return d

    def current_user(self, call):
        return json_reply(user_payload(call.user))

    def logout(self, call):
        return self.revoke(call.token["id"]).addCallback(lambda _: json_reply({}))

    def add_routes(self, router):
        router.add("POST", "/api/login", self.login, summary="Log in (password, then TOTP)",
                   body=LOGIN_BODY, reply=AUTH_BODY)
        router.add("POST", "/api/currentUser", self.current_user, auth=self.authenticate,
                   summary="The logged-in user", body=DEVICE_BODY, reply=USER_PAYLOAD)
        router.add("POST", "/api/logout", self.logout, auth=self.authenticate,
                   summary="Revoke this token", body=DEVICE_BODY, reply={"type": "object"})


DEVICE_INFO = {"type": "object", "properties": {
    "os": {"type": "string"}, "type": {"type": "string"}, "name": {"type": "string"}}}
DEVICE_BODY = {"type": "object", "properties": {"id": {"type": "string"},
                                                "uuid": {"type": "string"}}}
LOGIN_BODY = {"type": "object", "properties": {
    "username": {"type": "string", "maxLength": MAX_NAME},
    "password": {"type": "string", "maxLength": MAX_PASSWORD},
    "id": {"type": "string"}, "uuid": {"type": "string"}, "autoLogin": {"type": "boolean"},
    "type": {"type": "string"}, "verificationCode": {"type": ["string", "null"]},
    "tfaCode": {"type": ["string", "null"]}, "secret": {"type": ["string", "null"]},
    "deviceInfo": DEVICE_INFO}}
USER_PAYLOAD = {"type": "object", "required": ["name", "info"], "properties": {
    "name": {"type": "string"}, "display_name": {"type": "string"},
    "avatar": {"type": "string"}, "email": {"type": "string"}, "note": {"type": "string"},
    "status": {"type": "integer"}, "is_admin": {"type": "boolean"},
    "verifier": {"type": "string"}, "third_auth_type": {"type": "string"},
    "info": {"type": "object"}}}
AUTH_BODY = {"type": "object", "properties": {
    "type": {"type": "string"}, "access_token": {"type": "string"},
    "tfa_type": {"type": "string"}, "secret": {"type": "string"}, "user": {"type": "object"},
    "error": {"type": "string"}}}


def _bounded(value, limit=MAX_NAME):
    return value[:limit] if isinstance(value, str) else ""


def _check_password(user, password):
    if user is None:
        hasher.hash(password)
        return None
    return user if password_matches(user["password_hash"], password) else None


def _check_second_factor(user, code, now):
    """``(user, None)`` for its TOTP code, ``(user, backups left as JSON)`` for one of its
    unused backup codes, None otherwise.  CPU work (argon2): runs off the reactor, and
    leaves the database to :func:`_use_backup_code`."""
    if user is None or user["status"] != 1 or not isinstance(code, str):
        return None
    if totp_matches(user["totp_secret"], code, now):
        return user, None
    backups = json.loads(user["totp_backup"] or "[]")
    for stored in backups:
        if password_matches(stored, code.strip()):
            return user, json.dumps([b for b in backups if b != stored])
    return None


def _use_backup_code(connection, user_id, before, after):
    """Strike the used code; False when another login changed the codes first (each
    backup code logs in once, even when two logins race with it)."""
    u = tables.users
    return connection.execute(update(u).where(u.c.id == user_id, u.c.totp_backup == before)
                              .values(totp_backup=after)).rowcount == 1


def _user_by_name(connection, name):
    row = connection.execute(select(tables.users).where(tables.users.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def _user_by_id(connection, user_id):
    row = connection.execute(select(tables.users).where(tables.users.c.id == user_id)).first()
    return dict(row._mapping) if row is not None else None


def _user_for_token(connection, digest, now):
    t, u = tables.tokens, tables.users
    row = connection.execute(
        select(t, u).join(u, u.c.id == t.c.user_id).where(t.c.token_hash == digest)).first()
    if row is None:
        return None
    token = {c.name: row._mapping[c] for c in t.columns}
    user = {c.name: row._mapping[c] for c in u.columns}
    if token["expires_at"] <= now or user["status"] != 1:
        return None
    if now - token["last_used_at"] > 60:
        connection.execute(update(t).where(t.c.id == token["id"]).values(last_used_at=now))
    return user, token
