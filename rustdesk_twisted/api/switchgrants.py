"""Switch-sides grants (API.md 1.8): a controller's signed promise that its peer may connect back.

Before asking the peer to switch sides, the controlling desktop posts
``{id, switch_code_verifier, timestamp, signature}``: the verifier is
base64(SHA-256("switch-grant-verifier\\0" + switch_code)), the signature a
detached Ed25519 signature by the device's own key over
``"switch-grant\\0" + id + "\\0" + verifier + "\\0" + timestamp``.  The key is
the one hbbs registered for ``id`` (RegisterPk), read from hbbs's peer table;
an id hbbs does not know, or a bad signature, is refused.  A timestamp more
than :data:`MAX_SKEW` seconds from our clock is refused with our time, and the
client signs once more with it.

Accepted verifiers live :data:`GRANT_TTL` seconds.  The peer later sends the
raw ``switch_code`` in PunchHoleRequest/RequestRelay towards ``id``; hbbs can
then ask :meth:`SwitchGrants.matches` whether that code was granted.  That
use is inferred (API.md 1.8: the client alone does not show what the server
allows): a match neither consumes the grant nor authorises anything by itself.
"""

import base64
import binascii
import hashlib

from nacl.exceptions import BadSignatureError, ValueError as NaclValueError
from nacl.signing import VerifyKey
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from twisted.application.internet import TimerService

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .accounts import text_field
from .http import bad_request, error_reply, json_reply
from .identity import device_id

GRANT_TTL = 600.0
MAX_SKEW = 60
MAX_GRANTS_PER_ID = 16
PRUNE_INTERVAL = 300.0


def switch_code_verifier(switch_code):
    """What the controller posts for ``switch_code`` (the peer sends the code itself)."""
    digest = hashlib.sha256(b"switch-grant-verifier\0" + switch_code.encode()).digest()
    return base64.b64encode(digest).decode()


def signed_message(rustdesk_id, verifier, timestamp):
    return b"\0".join((b"switch-grant", rustdesk_id.encode(), verifier.encode(),
                       timestamp.encode()))


def _decoded(text, size, name):
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise bad_request(f"{name} must be base64 of {size} bytes")
    return raw


def signature_valid(pk, message, signature):
    try:
        VerifyKey(pk).verify(message, signature)
    except (BadSignatureError, NaclValueError, TypeError):
        return False
    return True


class SwitchGrants:
    """``POST /api/switch-grant`` and the grants it stores (pruned by :attr:`pruner`)."""

    log = Logger()

    def __init__(self, db, clock, hbbs, ttl=GRANT_TTL):
        self.db = db
        self.clock = clock
        self.hbbs = hbbs
        self.ttl = ttl
        self.limits = LimitLog(self.log)
        self.accepted = 0
        self.refused = 0
        self.pruner = TimerService(PRUNE_INTERVAL, self.prune)
        self.pruner.clock = clock

    def post(self, call):
        body = call.json()
        rustdesk_id = device_id(body.get("id"))
        verifier = text_field(body, "switch_code_verifier", 44, required=True)
        _decoded(verifier, 32, "switch_code_verifier")
        timestamp = text_field(body, "timestamp", 20, required=True)
        if not timestamp.isascii() or not timestamp.isdigit():
            raise bad_request("timestamp must be unix seconds")
        signature = _decoded(text_field(body, "signature", 88, required=True), 64, "signature")
        if abs(int(timestamp) - call.now) > MAX_SKEW:
            return self._refused(call, rustdesk_id, "timestamp outside the accepted window")
        message = signed_message(rustdesk_id, verifier, timestamp)

        def verify(peer):
            if peer is None:
                return self._refused(call, rustdesk_id, "id not registered with hbbs")
            if not signature_valid(peer[1], message, signature):
                return self._refused(call, rustdesk_id, "bad signature")
            d = self.db.run(_granted, rustdesk_id, verifier, call.now)
            d.addCallbacks(lambda _: self._accepted(call, rustdesk_id), self._not_stored,
                           errbackArgs=(call, rustdesk_id))
            return d
        return self.hbbs.peer_key(rustdesk_id).addCallback(verify)

    def _not_stored(self, failure, call, rustdesk_id):
        failure.trap(SQLAlchemyError)
        self.log.warn("{client} switch-sides grant for {id} not stored: {why}",
                      client=call.client_ip, id=quoted(rustdesk_id),
                      why=type(failure.value).__name__, event="api.switch_grant_not_stored")
        return error_reply(503, "the grant was not stored, try again")

    def _accepted(self, call, rustdesk_id):
        self.accepted += 1
        self.log.info("{client} switch-sides grant stored for {id}", client=call.client_ip,
                      id=quoted(rustdesk_id), event="api.switch_grant")
        return json_reply({"accepted": True})

    def _refused(self, call, rustdesk_id, why):
        self.refused += 1
        self.limits.hit(call.now, "switch-grant-refused", source_key(call.client_ip),
                        f"{why}, id {quoted(rustdesk_id)}")
        return json_reply({"accepted": False, "server_time": int(call.now)})

    def matches(self, rustdesk_id, switch_code):
        """Deferred of True when ``rustdesk_id`` granted ``switch_code`` within the TTL."""
        verifier = switch_code_verifier(switch_code)
        return self.db.run(_matches, rustdesk_id, verifier, self.clock.seconds() - self.ttl)

    def prune(self):
        d = self.db.run(_expired, self.clock.seconds() - self.ttl)
        d.addErrback(self._prune_failed)
        return d

    def _prune_failed(self, failure):
        failure.trap(SQLAlchemyError)
        self.log.warn("switch grants not pruned this time: {why}",
                      why=type(failure.value).__name__, event="api.switch_grants_prune_failed")

    def add_routes(self, router):
        router.add("POST", "/api/switch-grant", self.post,
                   summary="Store a switch-sides grant signed with the device's registered key",
                   body={"type": "object",
                         "required": ["id", "switch_code_verifier", "timestamp", "signature"],
                         "properties": {"id": {"type": "string"},
                                        "switch_code_verifier": {"type": "string"},
                                        "timestamp": {"type": "string"},
                                        "signature": {"type": "string"}}},
                   reply={"type": "object", "required": ["accepted"], "properties": {
                       "accepted": {"type": "boolean"}, "server_time": {"type": "integer"}}})


def _granted(connection, rustdesk_id, verifier, now):
    """Store (or refresh) the grant; an id keeps its newest :data:`MAX_GRANTS_PER_ID`."""
    g = tables.switch_grants
    same = and_(g.c.rustdesk_id == rustdesk_id, g.c.verifier == verifier)
    if connection.execute(update(g).where(same).values(created_at=now)).rowcount == 0:
        connection.execute(insert(g).values(rustdesk_id=rustdesk_id, verifier=verifier,
                                            created_at=now))
    keep = select(g.c.id).where(g.c.rustdesk_id == rustdesk_id).order_by(
        g.c.created_at.desc(), g.c.id.desc()).limit(MAX_GRANTS_PER_ID)
    connection.execute(delete(g).where(g.c.rustdesk_id == rustdesk_id, g.c.id.not_in(keep)))


def _matches(connection, rustdesk_id, verifier, oldest):
    g = tables.switch_grants
    return connection.execute(select(func.count()).where(
        g.c.rustdesk_id == rustdesk_id, g.c.verifier == verifier,
        g.c.created_at >= oldest)).scalar() > 0


def _expired(connection, oldest):
    g = tables.switch_grants
    return connection.execute(delete(g).where(g.c.created_at < oldest)).rowcount
