"""Server key files, the ``-k`` option and signed peer keys (PROTOCOL.md section 6).

``id_ed25519`` holds base64 of the 64-byte libsodium secret key (seed then
public key), ``id_ed25519.pub`` base64 of the 32-byte public key.  The public
key's base64 text is the "Key" users paste into their clients.
"""

import base64
import binascii
import hashlib
import os
import tempfile

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
    text = _read(path)
    if text is None:
        return None
    secret = decode_secret(text)
    if secret is None:
        raise KeyFileError(f"malformed private key in {path}")
    return secret


def load_public_file(directory):
    """The 32-byte key in ``id_ed25519.pub``; None when the file is absent."""
    path = os.path.join(directory, PUBLIC_FILE)
    text = _read(path)
    if text is None:
        return None
    public = decode_public(text)
    if public is None:
        raise KeyFileError(f"malformed public key in {path}")
    return public


def _read(path):
    try:
        with open(path, "r", encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from e


def _check_pair(directory, secret, public):
    """Refuse a directory whose ``.pub`` is not the public half of its ``id_ed25519``."""
    if secret is None or public is None or secret[32:] == public:
        return
    raise KeyFileError(
        f"{os.path.join(directory, PUBLIC_FILE)} (key {fingerprint(public)}) does not match "
        f"{os.path.join(directory, SECRET_FILE)} (key {fingerprint(secret[32:])}), so clients "
        f"and relays configured with one fail on the other: restore the pair from a backup, "
        f"or replace {PUBLIC_FILE} with the Key that rustdesk-admin show-key prints")


def directory_public_key(directory):
    """The public key of ``directory``'s key files, or None when it has neither file.

    That is the public half of ``id_ed25519`` when it exists, else
    ``id_ed25519.pub`` (a relay host needs only that).  Raises KeyFileError
    when a file is malformed or the two disagree.
    """
    secret = load_keypair(directory)
    public = load_public_file(directory)
    _check_pair(directory, secret, public)
    return secret[32:] if secret is not None else public


def _new_secret():
    """A new 64-byte secret whose base64 public key has no ``/``."""
    for _ in range(_GENERATION_ATTEMPTS):
        signing = SigningKey.generate()
        public = bytes(signing.verify_key)
        if "/" not in b64(public):
            break
    return bytes(signing) + public


def _refuse_lone_public(directory):
    """A ``.pub`` without ``id_ed25519`` is a relay's copy or a lost key: never replace it.

    Generators link ``id_ed25519`` before ``.pub``, so reading the secret again
    after seeing the ``.pub`` tells a generation that just finished apart from
    a lone ``.pub``.
    """
    if load_public_file(directory) is not None and load_keypair(directory) is None:
        raise KeyFileError(
            f"{os.path.join(directory, PUBLIC_FILE)} exists without {SECRET_FILE}: copy "
            f"{SECRET_FILE} from the ID server or a backup, or move {PUBLIC_FILE} away to "
            "generate a new key (clients then need the new Key)")


def _temp_file(directory, text, mode):
    fd, path = tempfile.mkstemp(prefix=".id_ed25519-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise
    return path


def _install(directory, secret):
    """Put a new pair in place atomically; False when another process's key won the race.

    Both files are written in full to temporary files, then hard-linked to
    their names, which fails if the name exists, so no reader ever sees a
    partial file and no key is ever replaced.  ``id_ed25519`` goes first: a
    losing generator then fails on its first link and reads the winner's
    complete key, a reader seeing the new ``.pub`` also finds the secret, and a
    crash between the links leaves a working secret rather than a lone ``.pub``.
    """
    _refuse_lone_public(directory)
    secret_path = os.path.join(directory, SECRET_FILE)
    public_path = os.path.join(directory, PUBLIC_FILE)
    temporary = []
    try:
        temporary.append(_temp_file(directory, b64(secret), 0o600))
        # The public key is what clients type in; other local accounts may read it.
        temporary.append(_temp_file(directory, b64(secret[32:]), 0o644))
        try:
            os.link(temporary[0], secret_path)
        except FileExistsError:
            return False
        try:
            os.link(temporary[1], public_path)
        except FileExistsError:
            _check_pair(directory, secret, load_public_file(directory))
        _sync_directory(directory)
        return True
    except OSError as e:
        raise KeyFileError(f"cannot write key files in {directory}: {e.strerror}") from e
    finally:
        for path in temporary:
            os.unlink(path)


def _sync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(directory):
    """Create a new key pair in ``directory``; KeyFileError if one exists (never replaced)."""
    secret = _new_secret()
    if not _install(directory, secret):
        raise KeyFileError(f"{os.path.join(directory, SECRET_FILE)} already exists")
    return secret


def load_or_generate_keypair(directory):
    """The 64-byte secret key from ``directory``, generated on first start.

    Returns ``(secret, generated)``.  Refuses (KeyFileError) a ``.pub`` that
    does not match, or that exists alone.  Safe when several processes start
    together on an empty directory: all of them end up with the winner's key.
    """
    secret = load_keypair(directory)
    if secret is None:
        fresh = _new_secret()
        if _install(directory, fresh):
            return fresh, True
        secret = load_keypair(directory)
    _check_pair(directory, secret, load_public_file(directory))
    return secret, False


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


def relay_public_key(directory):
    """hbbs's public key as a relay finds it in ``directory``; a relay never creates a key.

    The official relay generates a pair of its own when none exists, which
    races with an hbbs starting beside it and can never match a remote hbbs.
    """
    public = directory_public_key(directory)
    if public is None:
        raise KeyFileError(
            f"no {SECRET_FILE} or {PUBLIC_FILE} in {os.path.abspath(directory)}: start hbbs "
            f"first, or copy {PUBLIC_FILE} from the ID server, or pass -k KEY")
    return public


def hbbr_licence(option, directory):
    """Apply the ``-k``/``KEY`` table for hbbr: the licence string, "" for none."""
    if not option:
        return ""
    if option in ("-", "_"):
        return b64(relay_public_key(directory))
    secret = decode_secret(option)
    if secret is not None:
        return b64(secret[32:])
    return option


def announce_public_key(option, directory):
    """The 32-byte key hbbr checks hbbs's announcements with: a public key is enough.

    ``-k`` when it is a key (public, or secret whose public half is taken),
    otherwise the key files of ``directory`` (:func:`relay_public_key`).
    """
    if option:
        public = decode_public(option)
        if public is not None:
            return public
        secret = decode_secret(option)
        if secret is not None:
            return secret[32:]
    return relay_public_key(directory)


def relay_key_conflict(licence, directory):
    """Why hbbr's key differs from hbbs's key files in the shared directory, or None.

    Only a licence that is a public key can be compared; a mismatch would make
    every relayed connection fail silently (USERS.md 1.1), so hbbr refuses it.
    """
    given = decode_public(licence) if licence else None
    if given is None:
        return None
    public = directory_public_key(directory)
    if public is None or public == given:
        return None
    return (f"hbbr key {fingerprint(given)} differs from hbbs's key {fingerprint(public)} "
            f"in {os.path.abspath(directory)}; clients configured with one fail on "
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
