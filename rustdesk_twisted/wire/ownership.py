"""Proof that a client holds the private key of the id it wants to move (change-ID).

The official rule makes the uuid the only proof of ownership, and a
mobile-style peer's uuid is its public key, which hbbs hands to anyone in
the signed IdPk of a PunchHoleResponse.  So change-ID here needs a
signature by the id's registered Ed25519 key over a challenge: 32 random
bytes hbbs sent on that same connection (a KeyExchange with one key, after
its NOT_SUPPORT answer to a change-ID without proof).  The signature rides
in ``RegisterPk.pk``; it fits one connection, once.

An id never contains NUL (a new id matches the change-ID format), so
``old_id NUL new_id`` splits one way only.
"""

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

CONTEXT = b"rustdesk-twisted change-id v1\0"
CHALLENGE_SIZE = 32
PROOF_SIZE = 64
KEY_SIZE = 32


def change_id_message(challenge, old_id, new_id):
    """The bytes a change-ID proof signs."""
    return CONTEXT + challenge + old_id.encode("utf-8") + b"\0" + new_id.encode("utf-8")


def sign_change_id(signing_key, challenge, old_id, new_id):
    """The 64-byte proof, by ``signing_key`` (a ``nacl.signing.SigningKey``)."""
    return signing_key.sign(change_id_message(challenge, old_id, new_id)).signature


def verify_change_id(pk, proof, challenge, old_id, new_id):
    """True if ``proof`` is ``pk``'s signature of this change over ``challenge``."""
    if len(pk) != KEY_SIZE or len(proof) != PROOF_SIZE or len(challenge) != CHALLENGE_SIZE:
        return False
    try:
        VerifyKey(pk).verify(change_id_message(challenge, old_id, new_id), proof)
    except (BadSignatureError, ValueError):
        return False
    return True
