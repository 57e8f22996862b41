"""TOTP second factor: enrolment confirmed by a first code, six one-time backup codes, reset.

Enrolment stores the new secret in ``users.totp_pending``; only a correct code
from it moves it to ``totp_secret`` (from then on logins ask for a code), so a
user who never scanned the QR code is not locked out.  Backup codes are six
digits because the client's 2FA field takes six digits only; they are stored
as argon2 hashes, shown once, and each logs in once (``accounts``).

The functions of a connection serve ``rustdesk-admin`` (``db.run_now``);
:class:`TwoFactor` strings them together for the web console, with the
database in its thread pool and argon2 off the reactor.
"""

import json
import secrets

import pyotp
from sqlalchemy import select, update

from . import tables
from .accounts import hash_password, totp_matches

ISSUER = "RustDesk"
BACKUP_CODES = 6
OFF, PENDING, ON = "off", "pending", "on"


def new_secret():
    return pyotp.random_base32()


def provisioning_uri(secret, account, issuer=ISSUER):
    """The ``otpauth://totp/...`` URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def new_backup_codes(count=BACKUP_CODES):
    """``(codes, JSON list of their argon2 hashes)``: distinct six-digit codes."""
    codes = set()
    while len(codes) < count:
        codes.add(f"{secrets.randbelow(1_000_000):06d}")
    codes = sorted(codes)
    return codes, json.dumps([hash_password(code) for code in codes])


def state(user):
    """OFF, PENDING (enrolment started, not confirmed) or ON."""
    if user["totp_secret"]:
        return ON
    return PENDING if user["totp_pending"] else OFF


def backup_codes_left(user):
    return len(json.loads(user["totp_backup"] or "[]"))


def _user(connection, user_id):
    row = connection.execute(select(tables.users).where(tables.users.c.id == user_id)).first()
    return dict(row._mapping) if row is not None else None


def start(connection, user_id, secret, now):
    """Store ``secret`` as the user's pending one (replacing an unconfirmed one)."""
    return connection.execute(update(tables.users).where(tables.users.c.id == user_id).values(
        totp_pending=secret, updated_at=now)).rowcount == 1


def pending_secret(connection, user_id):
    user = _user(connection, user_id)
    return user["totp_pending"] if user is not None else None


def activate(connection, user_id, secret, backup_hashes, now):
    """Make the pending ``secret`` active with new backup codes; False when it is no longer
    the pending one (enrolment restarted or reset meanwhile)."""
    u = tables.users
    return connection.execute(update(u).where(u.c.id == user_id, u.c.totp_pending == secret)
                              .values(totp_secret=secret, totp_pending=None,
                                      totp_backup=backup_hashes, updated_at=now)).rowcount == 1


def replace_backup_codes(connection, user_id, backup_hashes, now):
    """New backup codes for a user whose TOTP is on (the old ones stop working)."""
    u = tables.users
    return connection.execute(update(u).where(u.c.id == user_id, u.c.totp_secret.is_not(None))
                              .values(totp_backup=backup_hashes, updated_at=now)).rowcount == 1


def reset(connection, user_id, now):
    """Turn TOTP off: secret, pending enrolment and backup codes gone.  False if it was off."""
    user = _user(connection, user_id)
    if user is None or (state(user) == OFF and backup_codes_left(user) == 0):
        return False
    connection.execute(update(tables.users).where(tables.users.c.id == user_id).values(
        totp_secret=None, totp_pending=None, totp_backup="[]", updated_at=now))
    return True


class TwoFactor:
    """Enrolment for the web console.  Every method returns a Deferred.

    ``blocking(f, *args)`` runs argon2 off the reactor (as for ``Accounts``).
    """

    def __init__(self, db, blocking, issuer=ISSUER):
        self.db = db
        self.blocking = blocking
        self.issuer = issuer

    def start(self, user, now):
        """A new pending secret for ``user`` (a users row): ``(secret, otpauth URI)``."""
        secret = new_secret()
        return self.db.run(start, user["id"], secret, now).addCallback(
            lambda _: (secret, provisioning_uri(secret, user["name"], self.issuer)))

    def confirm(self, user_id, code, now):
        """The backup codes (shown once) when ``code`` is right for the pending secret;
        None when it is wrong or nothing is pending."""
        def check(secret):
            if not secret or not totp_matches(secret, code, now):
                return None
            return self.blocking(new_backup_codes).addCallback(store, secret)

        def store(made, secret):
            codes, hashes = made
            return self.db.run(activate, user_id, secret, hashes, now).addCallback(
                lambda activated: codes if activated else None)
        return self.db.run(pending_secret, user_id).addCallback(check)

    def new_backup_codes(self, user_id, now):
        """Six fresh backup codes replacing the old ones; None when TOTP is off."""
        def store(made):
            codes, hashes = made
            return self.db.run(replace_backup_codes, user_id, hashes, now).addCallback(
                lambda replaced: codes if replaced else None)
        return self.blocking(new_backup_codes).addCallback(store)

    def disable(self, user_id, now):
        return self.db.run(reset, user_id, now)
