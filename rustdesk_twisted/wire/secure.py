"""secure_tcp: the KeyExchange handshake and encrypted frames (PROTOCOL.md section 5).

The server opens with ``KeyExchange{keys:[sign(EPK)]}``; a client that wants
encryption answers ``KeyExchange{keys:[CPK, box(K)]}`` and from then on every
frame payload longer than one byte is a secretbox under ``K`` with a nonce
made of a per-direction counter, incremented before use.
"""

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import VerifyKey
from nacl.utils import random

ZERO_NONCE = bytes(24)


class HandshakeError(Exception):
    """The peer's KeyExchange cannot be used."""


class DecryptionError(Exception):
    """A frame failed authentication; the connection must be closed."""


def nonce(counter):
    return counter.to_bytes(8, "little") + bytes(16)


class SecretStream:
    """The two counters and the key of one secured connection."""

    __slots__ = ("_box", "_sent", "_received")

    def __init__(self, key):
        self._box = SecretBox(key)
        self._sent = 0
        self._received = 0

    def seal(self, plaintext):
        self._sent += 1
        return self._box.encrypt(plaintext, nonce(self._sent)).ciphertext

    def open(self, payload):
        """Decrypt a received frame payload; payloads of 0 or 1 bytes pass through."""
        if len(payload) <= 1:
            return payload
        self._received += 1
        try:
            return self._box.decrypt(payload, nonce(self._received))
        except CryptoError as e:
            raise DecryptionError("decryption error") from e


class ServerHandshake:
    """The server half of secure_tcp for one connection.

    ``offer()`` is the list of keys for the first KeyExchange; ``accept(keys)``
    takes the client's two keys and returns the SecretStream.
    """

    def __init__(self, signing_key, ephemeral=None):
        self._signing = signing_key
        self._ephemeral = ephemeral if ephemeral is not None else PrivateKey.generate()
        self._offer = None

    def offer(self):
        if self._offer is None:
            self._offer = [self._signing.sign(bytes(self._ephemeral.public_key))]
        return self._offer

    def accept(self, keys):
        if len(keys) != 2 or len(keys[0]) != 32 or len(keys[1]) != 48:
            raise HandshakeError("client KeyExchange must carry a 32-byte key and a 48-byte box")
        try:
            key = Box(self._ephemeral, PublicKey(keys[0])).decrypt(keys[1], ZERO_NONCE)
        except CryptoError as e:
            raise HandshakeError("client KeyExchange box does not open") from e
        if len(key) != 32:
            raise HandshakeError("client KeyExchange carries a key of the wrong size")
        return SecretStream(key)


class HandshakeRotation:
    """One ServerHandshake shared by the connections of ``lifetime`` seconds.

    Signing a fresh ephemeral key was a quarter of the server's CPU per punch
    flow (bench/README.md).  A handshake holds no per-connection state: each
    client boxes its own random key to the ephemeral key, so sharing it for a
    minute costs only forward secrecy within that minute.
    """

    def __init__(self, signing_key, clock, lifetime=60.0):
        self.signing_key = signing_key
        self.clock = clock
        self.lifetime = lifetime
        self._current = None
        self._expires = 0.0

    def current(self):
        now = self.clock.seconds()
        if self._current is None or now >= self._expires:
            self._current = ServerHandshake(self.signing_key)
            self._current.offer()
            self._expires = now + self.lifetime
        return self._current


def client_handshake(server_public_key, offer_keys, ephemeral=None, symmetric_key=None):
    """The client half: verify the server's offer, return (reply keys, SecretStream).

    Used by the test client and rustdesk-doctor; raises HandshakeError as the
    real client would fail.
    """
    if len(offer_keys) != 1:
        raise HandshakeError("server KeyExchange must carry exactly one key")
    if len(server_public_key) != 32:
        raise HandshakeError("Handshake failed: invalid public key from rendezvous server")
    try:
        server_ephemeral = VerifyKey(server_public_key).verify(offer_keys[0])
    except BadSignatureError as e:
        raise HandshakeError("Signature mismatch in key exchange") from e
    if len(server_ephemeral) != 32:
        raise HandshakeError("server ephemeral key is not 32 bytes")
    ephemeral = ephemeral if ephemeral is not None else PrivateKey.generate()
    key = symmetric_key if symmetric_key is not None else random(32)
    try:
        sealed = Box(ephemeral, PublicKey(server_ephemeral)).encrypt(key, ZERO_NONCE).ciphertext
    except CryptoError as e:  # a low-order ephemeral key has no shared secret
        raise HandshakeError("server ephemeral key is unusable") from e
    return [bytes(ephemeral.public_key), sealed], SecretStream(key)
