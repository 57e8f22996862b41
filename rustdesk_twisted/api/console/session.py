"""Who is at the console: session cookies, CSRF tokens, the same-origin check, notices.

A console session is a random cookie; the ``tokens`` table keeps its SHA-256
under kind ``console``, so a copy of the database opens no session.  It ends
after ``idle`` seconds without a request.  The cookie is HttpOnly,
SameSite=Strict, and Secure when the console is served over https (or an
option says a TLS proxy is in front).  Every form carries a CSRF token
derived from the cookie (an HMAC, so nothing more is stored), and every post
must also come from a page of this site (Origin, else Referer).
"""

import hashlib
import hmac
import secrets
from collections import OrderedDict
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, update
from twisted.internet.defer import succeed

from .. import tables
from ..accounts import token_hash
from .data import Actor, record

DEFAULT_SESSION_IDLE = 12 * 3600
MAX_SESSIONS_PER_USER = 10
SESSION_COOKIE = "rdconsole"
LOGIN_COOKIE = "rdconsole_login"
TOUCH_INTERVAL = 60.0
MAX_COOKIE = 128


def read_cookies(call):
    """The request's cookies as a dict; a malformed header is no cookies."""
    header = call.header("cookie") or ""
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items() if len(morsel.value) <= MAX_COOKIE}


def cookie_header(name, value, secure, path="/", expire=False):
    """One Set-Cookie value: HttpOnly, SameSite=Strict, Secure when asked."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if expire:
        parts.append("Max-Age=0")
    return "; ".join(parts).encode("ascii")


def form_token(secret, purpose):
    """The CSRF token of a cookie value: an attacker without the cookie cannot make it."""
    return hmac.new(secret.encode("ascii", "replace"), purpose.encode("ascii"),
                    hashlib.sha256).hexdigest()


def form_token_matches(secret, purpose, presented):
    if not secret or not isinstance(presented, str):
        return False
    return hmac.compare_digest(form_token(secret, purpose), presented)


def same_origin(call):
    """Whether a post names this site as its origin (Origin, else Referer, against Host)."""
    host = (call.header("host") or "").strip().lower()
    source = call.header("origin") or call.header("referer")
    if not host or not source or source == "null":
        return False
    try:
        return urlsplit(source).netloc.lower() == host
    except ValueError:
        return False


def new_secret():
    return secrets.token_urlsafe(32)


class Viewer:
    """The signed-in user of one request, and what the page needs of the session."""

    def __init__(self, user, token_id, secret):
        self.user = user
        self.token_id = token_id
        self.key = token_hash(secret)
        self.csrf = form_token(secret, "session")

    @property
    def is_admin(self):
        return bool(self.user["is_admin"])


class ConsoleSessions:
    """Console sessions in the tokens table (kind ``console``), ending after ``idle`` seconds."""

    def __init__(self, db, idle=DEFAULT_SESSION_IDLE):
        self.db = db
        self.idle = idle

    def open(self, user, ip, now):
        """Deferred of the new session's cookie value; the user's oldest sessions past
        :data:`MAX_SESSIONS_PER_USER` and its expired ones are closed."""
        secret = new_secret()
        return self.db.run(_open_session, Actor(user, ip, now), token_hash(secret),
                           self.idle).addCallback(lambda _: secret)

    def viewer(self, secret, now):
        """Deferred of the :class:`Viewer` of a cookie value, or None."""
        if not secret:
            return succeed(None)
        d = self.db.run(_session_user, token_hash(secret), now, self.idle)
        return d.addCallback(lambda found: Viewer(found[0], found[1], secret)
                             if found is not None else None)

    def close(self, viewer, ip, now):
        return self.db.run(_close_session, Actor(viewer.user, ip, now), viewer.token_id)


def _open_session(connection, actor, digest, idle):
    t, user_id, now = tables.tokens, actor.user_id, actor.now
    connection.execute(delete(t).where(t.c.user_id == user_id, t.c.kind == "console",
                                       t.c.expires_at <= now))
    kept = connection.execute(select(t.c.id).where(
        t.c.user_id == user_id, t.c.kind == "console").order_by(
        t.c.last_used_at.desc(), t.c.id.desc())).scalars().all()
    stale = kept[MAX_SESSIONS_PER_USER - 1:]
    if stale:
        connection.execute(delete(t).where(t.c.id.in_(stale)))
    connection.execute(insert(t).values(
        user_id=user_id, token_hash=digest, kind="console", name="web console", scopes="",
        rustdesk_id="", device_uuid="", device_info="{}", ip=actor.ip[:64], created_at=now,
        expires_at=now + idle, last_used_at=now))
    record(connection, actor, "console.login")


def _close_session(connection, actor, token_id):
    connection.execute(delete(tables.tokens).where(tables.tokens.c.id == token_id))
    record(connection, actor, "console.logout")


def _session_user(connection, digest, now, idle):
    t, u = tables.tokens, tables.users
    row = connection.execute(select(
        t.c.id.label("session_id"), t.c.expires_at.label("session_expires"),
        t.c.last_used_at.label("session_used"), u).join(u, u.c.id == t.c.user_id).where(
        t.c.token_hash == digest, t.c.kind == "console")).first()
    if row is None or row.session_expires <= now or row.status != 1:
        return None
    if now - row.session_used >= TOUCH_INTERVAL:
        connection.execute(update(t).where(t.c.id == row.session_id).values(
            last_used_at=now, expires_at=now + idle))
    return {c.name: row._mapping[c] for c in u.columns}, row.session_id


class Notices:
    """One-shot messages for the page after a post (post, redirect, get), per session.

    In memory and bounded: at most ``max_entries`` sessions' notices, the oldest
    dropped first, each forgotten after ``ttl`` seconds or once shown.
    """

    def __init__(self, max_entries=10_000, ttl=600.0):
        self.max_entries = max_entries
        self.ttl = ttl
        self.entries = OrderedDict()

    def put(self, key, kind, text, now):
        entry = self.entries.pop(key, None)
        notices = entry[1] if entry is not None else []
        notices = (notices + [(kind, text)])[-5:]
        self.entries[key] = (now, notices)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def take(self, key, now):
        entry = self.entries.pop(key, None)
        if entry is None or now - entry[0] >= self.ttl:
            return []
        return entry[1]
