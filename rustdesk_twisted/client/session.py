"""The peer-to-peer handshake of PROTOCOL.md section 5.5, then an echo of application bytes.

A :class:`PeerSession` runs over one stream (a direct TCP connection or a
relay connection) from :mod:`.streams`.  B (``ControlledSide``) opens with
``Message{signed_id}``: its id and a fresh X25519 key, signed with its
Ed25519 identity key.  A (``ControllingSide``) verifies that with B's key as
signed by hbbs, answers ``Message{public_key}`` carrying a box of a fresh
symmetric key, and both switch to secretbox frames.  After that B echoes
every payload, which lets A prove the stream carries a session end to end.
"""

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey
from nacl.utils import random
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..wire import message_pb2, secure


class SessionError(Exception):
    """The peer session could not be set up or did not echo."""


def _parse_message(payload):
    message = message_pb2.Message()
    try:
        message.ParseFromString(payload)
    except (DecodeError, RecursionError, ValueError):
        return None
    return message


def _wrap(field, inner):
    message = message_pb2.Message()
    getattr(message, field).CopyFrom(inner)
    return message.SerializeToString()


class PeerSession:
    """One end of a peer-to-peer stream; ``ready`` fires with this session after the handshake.

    ``stream`` is attached with :meth:`attach` (before or after it is
    connected); ``secured`` tells whether the handshake agreed on a key.
    ``route`` names how the stream was made ("direct", "local", "relay").
    """

    log = Logger()

    def __init__(self, route):
        self.route = route
        self.stream = None
        self.ready = Deferred()
        self.closed = Deferred()
        self.secured = False
        self.established = False

    def attach(self, stream):
        self.stream = stream
        stream.on_payload = self._payload
        stream.on_closed = self._stream_closed
        return stream

    def _stream_closed(self, stream):
        if not self.ready.called:
            if stream.failure is not None:
                reason = f"{self.route} connection failed: {stream.failure.getErrorMessage()}"
            else:
                reason = f"{self.route} stream closed before the peer handshake finished"
            self.ready.errback(SessionError(reason))
        if not self.closed.called:
            self.closed.callback(self)

    def _established(self, secured):
        self.secured = secured
        self.established = True
        self.ready.callback(self)

    def close(self):
        self.stream.close()


class ControlledSide(PeerSession):
    """B's end: sends SignedId when asked to be secure, then echoes payloads."""

    def __init__(self, route, peer_id, signing_key, signed=True, on_key_rejected=None):
        super().__init__(route)
        self.peer_id = peer_id
        self.signing_key = signing_key
        self.signed = signed
        self.on_key_rejected = on_key_rejected
        self._ephemeral = None

    def start(self):
        """Open the handshake; called once the stream can carry messages."""
        if not self.signed:
            return
        self._ephemeral = PrivateKey.generate()
        idpk = message_pb2.IdPk(id=self.peer_id, pk=bytes(self._ephemeral.public_key))
        signed = self.signing_key.sign(idpk.SerializeToString())
        self.stream.send_payload(_wrap("signed_id", message_pb2.SignedId(id=signed)))

    def _payload(self, stream, payload):
        if self.established:
            stream.send_payload(payload)
            return
        if not payload:
            # A has no verified key for us: it proceeds unencrypted (section 5.5).
            self._established(False)
            return
        message = _parse_message(payload)
        if message is None or message.WhichOneof("union") != "public_key":
            return
        offer = message.public_key
        if not offer.asymmetric_value or self._ephemeral is None:
            if self.on_key_rejected is not None:
                self.on_key_rejected()
            self._established(False)
            return
        try:
            key = Box(self._ephemeral, PublicKey(offer.asymmetric_value)).decrypt(
                offer.symmetric_value, secure.ZERO_NONCE)
        except (CryptoError, ValueError, TypeError):
            self.log.warn("peer session: PublicKey box from the controlling side does not open")
            stream.close()
            return
        if len(key) != 32:
            stream.close()
            return
        stream.cipher = secure.SecretStream(key)
        self._established(True)


class ControllingSide(PeerSession):
    """A's end: verifies B's SignedId with ``pk`` (B's key from hbbs) and sends PublicKey.

    ``pk`` None means A has no verified key: it sends an empty message and
    goes on unencrypted, as the official client does.
    """

    def __init__(self, route, peer_id, pk):
        super().__init__(route)
        self.peer_id = peer_id
        self.pk = pk
        self.signature_ok = None
        self._echoes = []

    def start(self):
        if self.pk is None:
            self.stream.send_payload(b"")
            self._established(False)

    def _payload(self, stream, payload):
        if self.established:
            if self._echoes:
                self._echoes.pop(0).callback(payload)
            return
        message = _parse_message(payload) if payload else None
        if message is None or message.WhichOneof("union") != "signed_id":
            return
        peer_key = self._verify(message.signed_id.id)
        self.signature_ok = peer_key is not None
        if peer_key is None:
            stream.send_payload(_wrap("public_key", message_pb2.PublicKey()))
            self._established(False)
            return
        ours = PrivateKey.generate()
        key = random(32)
        sealed = Box(ours, PublicKey(peer_key)).encrypt(key, secure.ZERO_NONCE).ciphertext
        stream.send_payload(_wrap("public_key", message_pb2.PublicKey(
            asymmetric_value=bytes(ours.public_key), symmetric_value=sealed)))
        stream.cipher = secure.SecretStream(key)
        self._established(True)

    def _verify(self, signed):
        """B's X25519 key from its SignedId, or None if it does not verify for ``peer_id``."""
        try:
            data = VerifyKey(self.pk).verify(signed)
            idpk = message_pb2.IdPk.FromString(data)
        except (BadSignatureError, DecodeError, ValueError, TypeError):
            return None
        if idpk.id != self.peer_id or len(idpk.pk) != 32:
            return None
        return idpk.pk

    def echo(self, data):
        """Send ``data``; a Deferred firing with the payload B sends back."""
        answer = Deferred()
        self._echoes.append(answer)
        self.stream.send_payload(data)
        return answer

    def _stream_closed(self, stream):
        echoes, self._echoes = self._echoes, []
        for answer in echoes:
            answer.errback(SessionError(f"{self.route} stream closed before the echo came back"))
        super()._stream_closed(stream)
