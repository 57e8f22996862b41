"""The announce line hbbs sends and hbbr checks: ``<uuid> <unix-seconds> <hex HMAC-SHA256>``.

Both ends derive the HMAC key from the 64-byte secret in the ``id_ed25519``
they share, so an hbbr accepts announcements only from an hbbs holding the
same key file.  The channel's rules (answers, TTL) are described in
``rustdesk_twisted/hbbr/announce.py``.
"""

import hashlib
import hmac

SKEW = 60.0
MAX_UUID_LENGTH = 128


def announce_key(secret):
    """The HMAC key both servers derive from the shared ``id_ed25519`` secret."""
    return hashlib.sha256(b"rustdesk-twisted hbbr announce v1\0" + secret).digest()


def announcement(key, uuid, timestamp):
    """The line (without LF) that announces ``uuid`` at ``timestamp`` (unix seconds)."""
    body = f"{uuid} {int(timestamp)}".encode("ascii")
    return body + b" " + hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")


def verify(key, line, now):
    """The uuid a valid announcement line carries, or None."""
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or len(parts[0]) > MAX_UUID_LENGTH:
        return None
    uuid, stamp, mac = parts
    try:
        timestamp = int(stamp)
        uuid_text = uuid.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(key, uuid + b" " + stamp, hashlib.sha256).hexdigest().encode("ascii")
    if not hmac.compare_digest(expected, mac) or abs(timestamp - now) > SKEW:
        return None
    return uuid_text
