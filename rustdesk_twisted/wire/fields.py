"""How big a field of a real client's message can be, and which messages are too big to be one.

The official server takes any size, so a 2.6 KB id was stored (10 KB per
peer) and a RequestRelay with a 30 KB uuid was forwarded to a peer as a
30 KB datagram.  The limits below are what the official client sends, with
room to spare: ids are 9-10 digits (custom ones at most 16 characters, and
the database column is ``varchar(100)``), a machine uid is a 36-character
GUID, 32 hex digits or a 32-byte key, peer keys are 32 bytes (a change-ID
carries a 64-byte signature in that field instead, wire/ownership.py), relay uuids
are 36-character UUIDv4 text, a version is like ``1.4.9``, a mangled address
is at most 18 bytes.  :func:`problem` says why a message is not one a client
would send, or returns None.
"""

from .ownership import PROOF_SIZE

MAX_ID = 100
MAX_UUID = 64
PK_SIZE = 32
MAX_RELAY_UUID = 64
MAX_LICENCE = 128
MAX_TOKEN = 1024
MAX_VERSION = 64
MAX_HOST = 260
MAX_ADDR = 18
MAX_FORWARDED = 2048

# message kind -> ((field, limit), ...); text is measured in UTF-8 bytes.
_LIMITS = {
    "register_peer": (("id", MAX_ID),),
    "register_pk": (("id", MAX_ID), ("uuid", MAX_UUID), ("old_id", MAX_ID)),
    "punch_hole_request": (("id", MAX_ID), ("licence_key", MAX_LICENCE),
                           ("token", MAX_TOKEN), ("version", MAX_VERSION),
                           ("socket_addr_v6", MAX_ADDR)),
    "request_relay": (("id", MAX_ID), ("uuid", MAX_RELAY_UUID), ("relay_server", MAX_HOST),
                      ("licence_key", MAX_LICENCE), ("token", MAX_TOKEN),
                      ("switch_code", MAX_TOKEN)),
    "punch_hole_sent": (("socket_addr", MAX_ADDR), ("id", MAX_ID), ("relay_server", MAX_HOST),
                        ("version", MAX_VERSION), ("socket_addr_v6", MAX_ADDR)),
    "local_addr": (("socket_addr", MAX_ADDR), ("local_addr", MAX_ADDR), ("id", MAX_ID),
                   ("relay_server", MAX_HOST), ("version", MAX_VERSION),
                   ("socket_addr_v6", MAX_ADDR)),
    "relay_response": (("socket_addr", MAX_ADDR), ("uuid", MAX_RELAY_UUID),
                       ("relay_server", MAX_HOST), ("id", MAX_ID), ("version", MAX_VERSION),
                       ("socket_addr_v6", MAX_ADDR)),
}


def _size(value):
    return len(value.encode("utf-8")) if isinstance(value, str) else len(value)


def problem(kind, inner):
    """Why ``inner`` (the ``kind`` member of a RendezvousMessage) is not a client's, or None."""
    for field, limit in _LIMITS.get(kind, ()):
        size = _size(getattr(inner, field))
        if size > limit:
            return f"{kind}.{field} of {size} bytes (at most {limit})"
    if kind == "register_pk" and inner.pk:
        size, expected = len(inner.pk), PROOF_SIZE if inner.old_id else PK_SIZE
        if size != expected:
            what = "a change-ID proof" if inner.old_id else "a key"
            return f"register_pk.pk of {size} bytes ({what} has {expected})"
    return None
