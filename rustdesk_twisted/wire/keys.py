"""Server key files, the ``-k`` option and signed peer keys (PROTOCOL.md section 6).

``id_ed25519`` holds base64 of the 64-byte libsodium secret key (seed then
public key), ``id_ed25519.pub`` base64 of the 32-byte public key.  The public
key's base64 text is the "Key" users paste into their clients.
"""

import base64
import binascii
import hashlib
import os

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import message_pb2

SECRET_FILE = "id_ed25519"
PUBLIC_FILE = SECRET_FILE + ".pub"
_GENERATION_ATTEMPTS = 300


class KeyFileError(Exception):
    """The key files cannot be used; the message is meant for the operator."""


def b64(data):
    return base64.b64encode(data).decode("ascii")


def fingerprint(public_key):
    """A short, stable name for a public key, for banners and logs."""
    digest = hashlib.sha256(public_key).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


def decode_secret(text):
    """The 64-byte secret key in ``text``, or None if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None


def decode_public(text):
    """The 32-byte public key in a client's "Key" string, or None if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def signing_key_from_secret(secret64):
    return SigningKey(secret64[:32])


def load_keypair(directory):
    """Read ``id_ed25519`` from ``directory``; None when the file is absent."""
    path = os.path.join(directory, SECRET_FILE)
    try:
        with open(path, "r", encoding="ascii", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from e
    secret = decode_secret(text)
    if secret is None:
        raise KeyFileError(f"malformed private key in {path}")
    return secret


def generate_keypair(directory):
    """Create a key pair whose base64 public key has no ``/``; write both files."""
    for _ in range(_GENERATION_ATTEMPTS):
        signing = SigningKey.generate()
        public = bytes(signing.verify_key)
        if "/" not in b64(public):
            break
    secret = bytes(signing) + public
    public_path = os.path.join(directory, PUBLIC_FILE)
    secret_path = os.path.join(directory, SECRET_FILE)
    try:
        with open(public_path, "w", encoding="ascii") as f:
            f.write(b64(public))
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(b64(secret))
    except OSError as e:
        raise KeyFileError(f"cannot write key files in {directory}: {e.strerror}") from e
    return secret


def load_or_generate_keypair(directory):
    """The 64-byte secret key from ``directory``, generated on first start.

    Returns ``(secret, generated)``.
    """
    secret = load_keypair(directory)
    if secret is not None:
        return secret, False
    return generate_keypair(directory), True


class ServerKey:
    """What hbbs does with its key: the licence string it compares and what it signs with.

    ``licence`` is the exact string a PunchHoleRequest's ``licence_key`` must
    equal, or "" for no check.  ``signing`` is a ``SigningKey`` or None (then
    nothing is signed and no KeyExchange is offered, gotcha G6).
    """

    def __init__(self, licence, signing, source):
        self.licence = licence
        self.signing = signing
        self.source = source

    @property
    def public_key(self):
        return bytes(self.signing.verify_key) if self.signing is not None else None

    @property
    def public_key_b64(self):
        public = self.public_key
        return b64(public) if public is not None else None

    def sign(self, data):
        return self.signing.sign(data)


def hbbs_server_key(option, directory):
    """Apply the ``-k``/``KEY`` table for hbbs (section 6.3).

    ``option`` None means unset.  Key files are only touched when the option
    asks for them.  Raises KeyFileError for unusable files.
    """
    if option is None or option in ("-", "_"):
        secret, generated = load_or_generate_keypair(directory)
        signing = signing_key_from_secret(secret)
        source = "generated in " if generated else "loaded from "
        return ServerKey(b64(secret[32:]), signing, source + os.path.join(directory, SECRET_FILE))
    if option == "":
        secret, _ = load_or_generate_keypair(directory)
        return ServerKey("", signing_key_from_secret(secret), "key files, no licence check")
    secret = decode_secret(option)
    if secret is not None:
        return ServerKey(b64(secret[32:]), signing_key_from_secret(secret), "-k secret key")
    return ServerKey(option, None, "-k licence string (no signing key)")


def hbbr_licence(option, directory):
    """Apply the ``-k``/``KEY`` table for hbbr: the licence string, "" for none."""
    if not option:
        return ""
    if option in ("-", "_"):
        secret, _ = load_or_generate_keypair(directory)
        return b64(secret[32:])
    secret = decode_secret(option)
    if secret is not None:
        return b64(secret[32:])
    return option


def relay_key_conflict(licence, directory):
    """Why hbbr's key differs from hbbs's ``id_ed25519`` in the shared directory, or None.

    Only a licence that is a public key can be compared; a mismatch would make
    every relayed connection fail silently (USERS.md 1.1), so hbbr refuses it.
    """
    given = decode_public(licence) if licence else None
    if given is None:
        return None
    secret = load_keypair(directory)
    if secret is None or secret[32:] == given:
        return None
    return (f"hbbr key {fingerprint(given)} differs from hbbs's key {fingerprint(secret[32:])} "
            f"in {os.path.join(directory, SECRET_FILE)}; clients configured with one fail on "
            "the other. Use -k - (read the shared key) or the same key for both.")


def sign_id_pk(signing, peer_id, pk):
    """hbbs's signature over ``IdPk{id, pk}`` (section 6.1): 64-byte signature then IdPk."""
    idpk = message_pb2.IdPk(id=peer_id, pk=pk).SerializeToString()
    return signing.sign(idpk)


def verify_id_pk(public_key, signed, expected_id):
    """The peer's pk from a signed IdPk, as a client checks it; None on any failure."""
    try:
        data = VerifyKey(public_key).verify(signed)
        idpk = message_pb2.IdPk.FromString(data)
    except (BadSignatureError, DecodeError, ValueError, TypeError):
        return None
    if idpk.id != expected_id or len(idpk.pk) != 32:
        return None
    return idpk.pk
