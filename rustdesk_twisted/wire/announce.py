"""Announce lines (v2): signed by hbbs's Ed25519 key, checked by hbbr with the public key only.

One ASCII line per message, LF-terminated, at most ``MAX_LINE`` bytes::

    announce <uuid> <unix-seconds> <base64 signature>
    keepalive <unix-seconds> <base64 signature>

The signature is detached Ed25519, by the ``id_ed25519`` hbbs signs peers'
keys with, over ``DOMAIN`` followed by the line up to the last space.  A relay
host therefore needs only ``id_ed25519.pub``.  The domain prefix, and uuids
limited to printable ASCII without spaces, keep these signatures from ever
verifying as something else hbbs signs (a signed ``IdPk``: no byte of such a
message can encode its ``id`` or ``pk`` field).  The channel's rules (answers,
TTL, replays, timeouts) are in ``rustdesk_twisted/hbbr/announce.py``.
"""

import base64
import binascii
from collections import namedtuple

from nacl.exceptions import BadSignatureError

DOMAIN = b"rustdesk-twisted announce v2\0"
DEFAULT_SKEW = 5.0
# hbbs sends a keepalive on connecting and this often; hbbr's idle timeout must be longer.
KEEPALIVE_INTERVAL = 30.0
MAX_LINE = 512
MAX_UUID_LENGTH = 128
_MAX_STAMP_DIGITS = 12
_SIGNATURE_LENGTH = 64
_UUID_BYTES = frozenset(range(0x21, 0x7F))

Checked = namedtuple("Checked", "result uuid timestamp")
Checked.__doc__ = """What a line is: ``result`` is announce, keepalive, malformed, bad_signature or stale."""


def valid_uuid(uuid):
    """Whether ``uuid`` (str) can be announced: 1 to 128 printable ASCII characters, no space."""
    return 0 < len(uuid) <= MAX_UUID_LENGTH and all(ord(c) in _UUID_BYTES for c in uuid)


def _signed(signing, payload):
    signature = signing.sign(DOMAIN + payload).signature
    return payload + b" " + base64.b64encode(signature)


def announcement(signing, uuid, timestamp):
    """The line (without LF) announcing ``uuid`` at ``timestamp`` (unix seconds)."""
    if not valid_uuid(uuid):
        raise ValueError("uuid cannot be announced")
    return _signed(signing, f"announce {uuid} {int(timestamp)}".encode("ascii"))


def keepalive(signing, timestamp):
    """The line (without LF) that keeps an idle announce connection open."""
    return _signed(signing, f"keepalive {int(timestamp)}".encode("ascii"))


def check(verify_key, line, now, skew=DEFAULT_SKEW):
    """Parse and verify one line (without LF) against the ``nacl`` ``VerifyKey``."""
    payload, _, signature_text = line.rpartition(b" ")
    words = payload.split(b" ")
    if words[0] == b"announce" and len(words) == 3 and _is_uuid(words[1]):
        result, uuid, stamp = "announce", words[1].decode("ascii"), words[2]
    elif words[0] == b"keepalive" and len(words) == 2:
        result, uuid, stamp = "keepalive", None, words[1]
    else:
        return Checked("malformed", None, None)
    signature = _signature(signature_text)
    if signature is None or not stamp.isdigit() or len(stamp) > _MAX_STAMP_DIGITS:
        return Checked("malformed", None, None)
    timestamp = int(stamp)
    try:
        verify_key.verify(DOMAIN + payload, signature)
    except BadSignatureError:
        return Checked("bad_signature", None, timestamp)
    if abs(timestamp - now) > skew:
        return Checked("stale", uuid, timestamp)
    return Checked(result, uuid, timestamp)


def _is_uuid(word):
    return 0 < len(word) <= MAX_UUID_LENGTH and all(b in _UUID_BYTES for b in word)


def _signature(text):
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return signature if len(signature) == _SIGNATURE_LENGTH else None
