"""User accounts as an operator manages them: create, password, enable, disable, list, API tokens.

Each function takes a SQLAlchemy connection, so the web console runs it through
``db.run`` (the API's thread pool) and ``rustdesk-admin`` through ``db.run_now``.
Password hashes are made by the caller: argon2 is CPU work that a server does
off the reactor and outside the database's few threads.
"""

import re

from sqlalchemy import delete, func, insert, select, update

from . import tables
from .accounts import new_token, token_row

# Printable, no white space or slash (names appear in URLs, logs and the client's lists).
NAME_FORMAT = re.compile(r"[^\s/\\]{1,%d}" % tables.NAME)
MIN_PASSWORD = 8
# What an API token may be granted: resource -> its levels ("devices:rw" for --deploy/--assign).
API_SCOPES = ("devices", "users", "groups", "ab", "audit", "strategies")
SCOPE_LEVELS = ("r", "rw")
API_TOKEN_DAYS = 365


class UserError(Exception):
    """The account change cannot be made; the message is for the operator."""


def check_name(name):
    if not NAME_FORMAT.fullmatch(name) or not name.isprintable():
        raise UserError(f"invalid user name {name!r}: 1-{tables.NAME} printable characters, "
                        "no spaces or slashes")
    return name


def check_password(password):
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("the password must have at most 1024 characters")
    return password


def find_user(connection, name):
    row = connection.execute(select(tables.users).where(tables.users.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def existing_user(connection, name):
    user = find_user(connection, name)
    if user is None:
        raise UserError(f"no user {name!r}")
    return user


def add_user(connection, name, password_hash, now, is_admin=False, email="", display_name="",
             oidc_provider="", oidc_subject=None):
    """The new user's id; a taken name is refused."""
    check_name(name)
    if find_user(connection, name) is not None:
        raise UserError(f"user {name!r} exists already")
    return connection.execute(insert(tables.users).values(
        name=name, password_hash=password_hash, display_name=display_name[:tables.NAME],
        email=email[:tables.SHORT], note="", status=1, is_admin=is_admin, totp_backup="[]",
        oidc_provider=oidc_provider, oidc_subject=oidc_subject, created_at=now,
        updated_at=now)).inserted_primary_key[0]


def count_users(connection):
    return connection.execute(select(func.count()).select_from(tables.users)).scalar()


def revoke_sessions(connection, user_id):
    """End every login of the user (its API tokens stay, inert while it is disabled)."""
    t = tables.tokens
    return connection.execute(delete(t).where(t.c.user_id == user_id,
                                              t.c.kind == "session")).rowcount


def set_password(connection, name, password_hash, now):
    """Change the password and end the user's sessions (a thief's included); their count."""
    user = existing_user(connection, name)
    connection.execute(update(tables.users).where(tables.users.c.id == user["id"]).values(
        password_hash=password_hash, updated_at=now))
    return revoke_sessions(connection, user["id"])


def set_enabled(connection, name, enabled, now):
    """Enable or disable; disabling ends the user's sessions.  The sessions ended."""
    user = existing_user(connection, name)
    connection.execute(update(tables.users).where(tables.users.c.id == user["id"]).values(
        status=1 if enabled else 0, updated_at=now))
    return 0 if enabled else revoke_sessions(connection, user["id"])


def list_users(connection):
    u = tables.users
    return [dict(row._mapping) for row in connection.execute(select(u).order_by(u.c.id))]


def parse_scopes(text):
    """``devices:rw,audit:r`` checked and normalised (sorted, no duplicates)."""
    scopes = {}
    for part in (p.strip() for p in text.split(",")):
        resource, _, level = part.partition(":")
        if resource not in API_SCOPES or level not in SCOPE_LEVELS:
            raise UserError(f"invalid scope {part!r}: RESOURCE:r or RESOURCE:rw, RESOURCE one "
                            f"of {', '.join(API_SCOPES)}")
        if scopes.get(resource) != "rw":
            scopes[resource] = level
    return ",".join(f"{resource}:{scopes[resource]}" for resource in sorted(scopes))


def create_api_token(connection, owner, name, scopes, now, days=API_TOKEN_DAYS):
    """A new API token of user ``owner`` (None: the first administrator); (token, owner name).

    The token is returned once and stored as its SHA-256 only."""
    u = tables.users
    if owner is None:
        row = connection.execute(select(u).where(u.c.is_admin.is_(True), u.c.status == 1)
                                 .order_by(u.c.id)).first()
        if row is None:
            raise UserError("no enabled administrator to own the token: add one "
                            "(user add NAME --admin) or give --user")
        user = dict(row._mapping)
    else:
        user = existing_user(connection, owner)
    if not name or len(name) > tables.NAME:
        raise UserError(f"the token name must have 1-{tables.NAME} characters")
    if not 1 <= days <= 36500:
        raise UserError("a token is valid for 1 to 36500 days")
    token = new_token()
    connection.execute(insert(tables.tokens).values(**token_row(
        user["id"], token, now, days * 86400, kind="api", name=name,
        scopes=parse_scopes(scopes))))
    return token, user["name"]
