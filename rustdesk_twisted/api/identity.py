"""Which machine a device-scoped call comes from: its ``id`` and ``uuid`` (API.md 1.0).

Audit posts and recording uploads carry no credentials; the device names
itself by id and proves it by the uuid (base64 of its machine UID), the same
proof hbbs accepts for RegisterPk.  The uuid is checked against the devices
row (written by sysinfo, deploy and the console) and, for an id with no row
or no uuid there, against the peer hbbs registered (its table holds the raw
uuid bytes).  An id neither knows is UNKNOWN: each caller decides what that
is worth.
"""

import base64
import binascii
import re

from sqlalchemy import select

from . import tables
from .accounts import text_field
from .http import bad_request

KNOWN = "known"
UNKNOWN = "unknown"
MISMATCH = "mismatch"

# Generated ids are digits, custom ids [a-zA-Z][\w-]{5,15}; ASCII only, so an id
# is always safe as a directory name and in a log line.
ID_FORMAT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def device_id(value, name="id"):
    """A RustDesk id from a request, or 400.  A ``@server`` suffix (how the controlling
    side names a peer on another server) is dropped."""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    value = value.split("@", 1)[0]
    if not ID_FORMAT.fullmatch(value):
        raise bad_request(f"{name} is not a RustDesk id")
    return value


def device_uuid(body):
    return text_field(body, "uuid", tables.SHORT, required=True)


def uuid_matches(registered, claimed):
    """True when ``claimed`` (the base64 text a device sends) names the ``registered`` uuid
    (raw bytes as hbbs stores them, or that same text as other tools store it)."""
    if registered == claimed.encode("utf-8", "replace"):
        return True
    try:
        return registered == base64.b64decode(claimed, validate=True)
    except (binascii.Error, ValueError):
        return False


def check_device(db, hbbs, rustdesk_id, uuid):
    """Deferred of KNOWN, UNKNOWN or MISMATCH for a call naming itself ``rustdesk_id``/``uuid``."""
    d = db.run(_registered_uuid, rustdesk_id)

    def checked(registered):
        if registered:
            return KNOWN if registered == uuid else MISMATCH
        return hbbs.peer_key(rustdesk_id).addCallback(_against_peer, uuid)
    return d.addCallback(checked)


def _against_peer(peer, uuid):
    if peer is None:
        return UNKNOWN
    return KNOWN if uuid_matches(peer[0], uuid) else MISMATCH


def _registered_uuid(connection, rustdesk_id):
    return connection.execute(select(tables.devices.c.uuid).where(
        tables.devices.c.rustdesk_id == rustdesk_id)).scalar()
