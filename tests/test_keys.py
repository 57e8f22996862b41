"""Key files, the -k option and signed IdPk (PROTOCOL.md section 6, Appendix A.3)."""

import base64
import os
import stat
import threading

from hypothesis import given, settings, strategies as st
from nacl.signing import SigningKey, VerifyKey
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire import keys, message_pb2

PROPERTY = settings(max_examples=200, deadline=None)

SEED = bytes(range(32))
PUBLIC = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
SECRET_B64 = ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
              "DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==")
PUBLIC_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
SIGNED_IDPK = bytes.fromhex(
    "2cc3eaa2de692737e92cfa7487a74c983caa379c153b68f9edc39121c83ad926"
    "1c16b3a63803939abbe40dd47b406f6f6711b15fd68d7fc598ab1f5afefbde03"
    "0a09313233343536373839" "1220") + b"\xaa" * 32
# The public server key a client uses when its Key option is empty (section 6.2).
RUSTDESK_PUBLIC_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="


def write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def read(directory, name):
    with open(os.path.join(directory, name)) as f:
        return f.read()


class VectorTests(SynchronousTestCase):
    def test_a3_identity(self):
        self.assertEqual(bytes(SigningKey(SEED).verify_key), PUBLIC)
        self.assertEqual(base64.b64decode(SECRET_B64), SEED + PUBLIC)
        self.assertEqual(keys.b64(PUBLIC), PUBLIC_B64)

    def test_load_a3_file(self):
        directory = self.mktemp()
        os.mkdir(directory)
        write(directory, "id_ed25519", SECRET_B64)
        self.assertEqual(keys.load_keypair(directory), SEED + PUBLIC)

    def test_load_trims_whitespace(self):
        directory = self.mktemp()
        os.mkdir(directory)
        write(directory, "id_ed25519", "  " + SECRET_B64 + "\n\n")
        self.assertEqual(keys.load_keypair(directory), SEED + PUBLIC)

    def test_signed_idpk_109_bytes(self):
        """A.3: IdPk{id:"123456789", pk:32×aa} signed with the A.3 key, byte for byte."""
        idpk = message_pb2.IdPk(id="123456789", pk=b"\xaa" * 32).SerializeToString()
        self.assertEqual(idpk, bytes.fromhex("0a093132333435363738391220") + b"\xaa" * 32)
        signed = keys.sign_id_pk(keys.signing_key_from_secret(SEED + PUBLIC),
                                 "123456789", b"\xaa" * 32)
        self.assertEqual(len(signed), 109)
        self.assertEqual(bytes(signed), SIGNED_IDPK)

    def test_verify_id_pk(self):
        self.assertEqual(keys.verify_id_pk(PUBLIC, SIGNED_IDPK, "123456789"), b"\xaa" * 32)

    def test_verify_id_pk_failures(self):
        """Every way the client rejects a signed IdPk gives None, never an exception."""
        other = bytes(SigningKey(b"\x01" * 32).verify_key)
        tampered = SIGNED_IDPK[:-1] + b"\xab"
        short_pk = keys.sign_id_pk(SigningKey(SEED), "123456789", b"\xaa" * 31)
        no_pk = keys.sign_id_pk(SigningKey(SEED), "123456789", b"")
        garbage = SigningKey(SEED).sign(b"\xff\xff\xff")
        cases = [
            (other, SIGNED_IDPK, "123456789"),
            (PUBLIC, tampered, "123456789"),
            (PUBLIC, SIGNED_IDPK, "12345678"),
            (PUBLIC, SIGNED_IDPK, "123456789 "),
            (PUBLIC, short_pk, "123456789"),
            (PUBLIC, no_pk, "123456789"),
            (PUBLIC, garbage, "123456789"),
            (PUBLIC, b"", "123456789"),
            (PUBLIC, SIGNED_IDPK[:63], "123456789"),
            (b"short key", SIGNED_IDPK, "123456789"),
        ]
        for public, signed, peer_id in cases:
            with self.subTest(signed=signed[:8], peer_id=peer_id):
                self.assertIsNone(keys.verify_id_pk(public, signed, peer_id))

    @PROPERTY
    @given(st.binary(max_size=200))
    def test_verify_id_pk_never_raises(self, signed):
        self.assertIsNone(keys.verify_id_pk(PUBLIC, signed, "123456789"))

    @PROPERTY
    @given(st.text(max_size=30), st.binary(min_size=32, max_size=32))
    def test_sign_verify_roundtrip(self, peer_id, pk):
        signed = keys.sign_id_pk(SigningKey(SEED), peer_id, pk)
        self.assertEqual(keys.verify_id_pk(PUBLIC, signed, peer_id), pk)

    def test_rustdesk_public_key_is_32_bytes(self):
        self.assertEqual(len(base64.b64decode(RUSTDESK_PUBLIC_KEY, validate=True)), 32)
        self.assertEqual(keys.decode_public(RUSTDESK_PUBLIC_KEY),
                         base64.b64decode(RUSTDESK_PUBLIC_KEY))

    def test_decode_public(self):
        """A client's Key string: standard padded base64 of exactly 32 bytes (section 6.2)."""
        self.assertEqual(keys.decode_public(PUBLIC_B64), PUBLIC)
        self.assertEqual(keys.decode_public(" " + PUBLIC_B64 + "\n"), PUBLIC)
        for text in ("", SECRET_B64, PUBLIC_B64[:-1], PUBLIC_B64.rstrip("="), "not base64!",
                     keys.b64(PUBLIC[:31]), PUBLIC_B64.replace("/", "_")):
            with self.subTest(text=text):
                self.assertIsNone(keys.decode_public(text))

    def test_decode_secret(self):
        self.assertEqual(keys.decode_secret(SECRET_B64), SEED + PUBLIC)
        for text in ("", PUBLIC_B64, SECRET_B64[:-2], "!" * 88):
            with self.subTest(text=text):
                self.assertIsNone(keys.decode_secret(text))

    def test_fingerprint(self):
        fp = keys.fingerprint(PUBLIC)
        self.assertEqual(fp, keys.fingerprint(PUBLIC))
        self.assertNotEqual(fp, keys.fingerprint(bytes(32)))
        self.assertRegex(fp, r"^[0-9a-f]{4}(:[0-9a-f]{4}){3}$")


class KeyFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def test_absent(self):
        self.assertIsNone(keys.load_keypair(self.directory))

    def test_generate(self):
        secret, generated = keys.load_or_generate_keypair(self.directory)
        self.assertTrue(generated)
        self.assertEqual(len(secret), 64)
        public_text = read(self.directory, "id_ed25519.pub")
        secret_text = read(self.directory, "id_ed25519")
        # Files: base64, padded, no newline; .pub is the 44-character Key string.
        self.assertEqual(len(public_text), 44)
        self.assertTrue(public_text.endswith("="))
        self.assertNotIn("/", public_text)
        self.assertEqual(base64.b64decode(public_text, validate=True), secret[32:])
        self.assertEqual(base64.b64decode(secret_text, validate=True), secret)
        self.assertEqual(bytes(SigningKey(secret[:32]).verify_key), secret[32:])
        mode = stat.S_IMODE(os.stat(os.path.join(self.directory, "id_ed25519")).st_mode)
        self.assertEqual(mode, 0o600)
        # The second start loads the same pair and does not rewrite it.
        self.assertEqual(keys.load_or_generate_keypair(self.directory), (secret, False))

    def test_generated_keys_have_no_slash(self):
        for i in range(20):
            directory = os.path.join(self.directory, str(i))
            os.mkdir(directory)
            secret = keys.generate_keypair(directory)
            self.assertNotIn("/", keys.b64(secret[32:]))

    def test_existing_file_is_loaded_not_regenerated(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        self.assertEqual(keys.load_or_generate_keypair(self.directory), (SEED + PUBLIC, False))
        self.assertFalse(os.path.exists(os.path.join(self.directory, "id_ed25519.pub")))

    def test_malformed(self):
        """Anything but base64 of 64 bytes is a clear KeyFileError, never a regeneration."""
        for text in ("", "not base64!", keys.b64(bytes(63)), keys.b64(bytes(65)), PUBLIC_B64,
                     SECRET_B64[:-4]):
            with self.subTest(text=text):
                write(self.directory, "id_ed25519", text)
                with self.assertRaises(keys.KeyFileError) as caught:
                    keys.load_or_generate_keypair(self.directory)
                message = str(caught.exception)
                self.assertIn("malformed private key", message)
                self.assertIn("id_ed25519", message)
                self.assertEqual(read(self.directory, "id_ed25519"), text)

    def test_generation_race(self):
        """hbbs, hbbr and gen-key started together on an empty directory agree on one pair."""
        for attempt in range(30):
            directory = os.path.join(self.directory, str(attempt))
            os.mkdir(directory)
            start = threading.Barrier(4)
            results = []

            def generate():
                start.wait()
                try:
                    results.append(keys.load_or_generate_keypair(directory))
                except keys.KeyFileError as e:
                    results.append((str(e), False))

            threads = [threading.Thread(target=generate) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            secret = keys.load_keypair(directory)
            self.assertEqual(keys.decode_public(read(directory, "id_ed25519.pub")), secret[32:])
            self.assertEqual(sorted(results, key=lambda r: r[1]),
                             [(secret, False)] * 3 + [(secret, True)])
            self.assertEqual(sorted(os.listdir(directory)), ["id_ed25519", "id_ed25519.pub"])

    def test_file_modes_ignore_the_umask(self):
        for umask in (0, 0o077):
            directory = os.path.join(self.directory, oct(umask))
            os.mkdir(directory)
            previous = os.umask(umask)
            try:
                keys.generate_keypair(directory)
            finally:
                os.umask(previous)
            modes = {name: stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
                     for name in os.listdir(directory)}
            self.assertEqual(modes, {"id_ed25519": 0o600, "id_ed25519.pub": 0o644})

    def test_generate_never_replaces(self):
        secret = keys.generate_keypair(self.directory)
        self.assertRaises(keys.KeyFileError, keys.generate_keypair, self.directory)
        self.assertEqual(keys.load_keypair(self.directory), secret)

    def test_lone_public_file_is_never_replaced(self):
        """A relay host's copy (or a lost private key): refuse rather than mint a new Key."""
        write(self.directory, "id_ed25519.pub", PUBLIC_B64)
        for attempt in (keys.load_or_generate_keypair, keys.generate_keypair):
            with self.assertRaises(keys.KeyFileError) as caught:
                attempt(self.directory)
            self.assertIn("exists without id_ed25519", str(caught.exception))
        self.assertEqual(os.listdir(self.directory), ["id_ed25519.pub"])
        self.assertEqual(read(self.directory, "id_ed25519.pub"), PUBLIC_B64)

    def test_mismatched_public_file_is_refused(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        write(self.directory, "id_ed25519.pub", keys.b64(bytes(32)))
        with self.assertRaises(keys.KeyFileError) as caught:
            keys.load_or_generate_keypair(self.directory)
        message = str(caught.exception)
        self.assertIn("does not match", message)
        self.assertIn(keys.fingerprint(PUBLIC), message)
        self.assertIn(keys.fingerprint(bytes(32)), message)
        self.assertNotIn("\n", message)
        self.assertEqual(read(self.directory, "id_ed25519.pub"), keys.b64(bytes(32)))

    def test_matching_public_file_is_accepted(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        write(self.directory, "id_ed25519.pub", PUBLIC_B64 + "\n")
        self.assertEqual(keys.load_or_generate_keypair(self.directory), (SEED + PUBLIC, False))
        self.assertEqual(keys.directory_public_key(self.directory), PUBLIC)

    def test_malformed_public_file(self):
        write(self.directory, "id_ed25519.pub", "not a key")
        with self.assertRaises(keys.KeyFileError) as caught:
            keys.directory_public_key(self.directory)
        self.assertIn("malformed public key", str(caught.exception))

    def test_unwritable_directory(self):
        missing = os.path.join(self.directory, "does-not-exist")
        with self.assertRaises(keys.KeyFileError) as caught:
            keys.load_or_generate_keypair(missing)
        self.assertIn(missing, str(caught.exception))


class HbbsServerKeyTests(SynchronousTestCase):
    """Each row of the section 6.3 hbbs table."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def assertSigns(self, server_key, public):
        self.assertEqual(server_key.public_key, public)
        self.assertEqual(server_key.public_key_b64, keys.b64(public))
        signed = server_key.sign(b"payload")
        self.assertEqual(VerifyKey(public).verify(signed), b"payload")

    def test_unset_dash_underscore_load(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        for option in (None, "-", "_"):
            with self.subTest(option=option):
                server_key = keys.hbbs_server_key(option, self.directory)
                self.assertEqual(server_key.licence, PUBLIC_B64)
                self.assertSigns(server_key, PUBLIC)

    def test_unset_generates(self):
        server_key = keys.hbbs_server_key(None, self.directory)
        public_text = read(self.directory, "id_ed25519.pub")
        self.assertEqual(server_key.licence, public_text)
        self.assertSigns(server_key, base64.b64decode(public_text))
        # Later starts with "-" use the same pair.
        self.assertEqual(keys.hbbs_server_key("-", self.directory).licence, public_text)

    def test_empty_no_check_still_signs(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        server_key = keys.hbbs_server_key("", self.directory)
        self.assertEqual(server_key.licence, "")
        self.assertSigns(server_key, PUBLIC)

    def test_empty_generates(self):
        server_key = keys.hbbs_server_key("", self.directory)
        self.assertEqual(server_key.licence, "")
        self.assertTrue(os.path.exists(os.path.join(self.directory, "id_ed25519")))
        self.assertIsNotNone(server_key.signing)

    def test_secret_key_option(self):
        """Base64 of a 64-byte secret: licence is its public half, files untouched."""
        server_key = keys.hbbs_server_key(SECRET_B64, self.directory)
        self.assertEqual(server_key.licence, PUBLIC_B64)
        self.assertSigns(server_key, PUBLIC)
        self.assertEqual(os.listdir(self.directory), [])

    def test_other_string_no_signing(self):
        """Any other string, including the public key itself, is a bare licence."""
        for option in (PUBLIC_B64, "my licence", "x", RUSTDESK_PUBLIC_KEY):
            with self.subTest(option=option):
                server_key = keys.hbbs_server_key(option, self.directory)
                self.assertEqual(server_key.licence, option)
                self.assertIsNone(server_key.signing)
                self.assertIsNone(server_key.public_key)
                self.assertIsNone(server_key.public_key_b64)
        self.assertEqual(os.listdir(self.directory), [])

    def test_malformed_file(self):
        write(self.directory, "id_ed25519", "garbage")
        self.assertRaises(keys.KeyFileError, keys.hbbs_server_key, "-", self.directory)
        self.assertRaises(keys.KeyFileError, keys.hbbs_server_key, "", self.directory)

    def test_mismatched_pair_refused_at_every_start(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        write(self.directory, "id_ed25519.pub", keys.b64(bytes(32)))
        for option in (None, "-", "_", ""):
            with self.subTest(option=option):
                self.assertRaises(keys.KeyFileError, keys.hbbs_server_key, option, self.directory)


class HbbrLicenceTests(SynchronousTestCase):
    """The section 6.3 hbbr table."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def test_empty_no_check(self):
        self.assertEqual(keys.hbbr_licence("", self.directory), "")
        self.assertEqual(keys.hbbr_licence(None, self.directory), "")
        self.assertEqual(os.listdir(self.directory), [])

    def test_dash_loads(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        self.assertEqual(keys.hbbr_licence("-", self.directory), PUBLIC_B64)
        self.assertEqual(keys.hbbr_licence("_", self.directory), PUBLIC_B64)

    def test_dash_never_generates(self):
        """The official relay creates a pair of its own here; ours says what to do instead."""
        with self.assertRaises(keys.KeyFileError) as caught:
            keys.hbbr_licence("-", self.directory)
        self.assertIn("start hbbs first, or copy id_ed25519.pub from the ID server, or pass -k",
                      str(caught.exception))
        self.assertEqual(os.listdir(self.directory), [])

    def test_dash_with_public_file_only(self):
        """A relay host holds only the .pub; it is used and left alone."""
        write(self.directory, "id_ed25519.pub", PUBLIC_B64)
        self.assertEqual(keys.hbbr_licence("-", self.directory), PUBLIC_B64)
        self.assertEqual(os.listdir(self.directory), ["id_ed25519.pub"])
        self.assertEqual(read(self.directory, "id_ed25519.pub"), PUBLIC_B64)

    def test_dash_refuses_a_mismatched_pair(self):
        write(self.directory, "id_ed25519", SECRET_B64)
        write(self.directory, "id_ed25519.pub", keys.b64(bytes(32)))
        self.assertRaises(keys.KeyFileError, keys.hbbr_licence, "-", self.directory)

    def test_conflict_with_public_file(self):
        write(self.directory, "id_ed25519.pub", PUBLIC_B64)
        self.assertIsNone(keys.relay_key_conflict(PUBLIC_B64, self.directory))
        self.assertIn("differs from hbbs's key",
                      keys.relay_key_conflict(keys.b64(bytes(32)), self.directory))

    def test_secret_key(self):
        self.assertEqual(keys.hbbr_licence(SECRET_B64, self.directory), PUBLIC_B64)
        self.assertEqual(os.listdir(self.directory), [])

    def test_other(self):
        self.assertEqual(keys.hbbr_licence(PUBLIC_B64, self.directory), PUBLIC_B64)
        self.assertEqual(keys.hbbr_licence("anything", self.directory), "anything")
        self.assertEqual(os.listdir(self.directory), [])


class AnnouncePublicKeyTests(SynchronousTestCase):
    """Where hbbr finds the key it checks announcements with: never a key of its own."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def test_key_option(self):
        for option in (PUBLIC_B64, SECRET_B64):
            self.assertEqual(keys.announce_public_key(option, self.directory), PUBLIC)
        self.assertEqual(os.listdir(self.directory), [])

    def test_key_files(self):
        write(self.directory, "id_ed25519.pub", PUBLIC_B64)
        for option in (None, "", "-", "_", "a licence string"):
            with self.subTest(option=option):
                self.assertEqual(keys.announce_public_key(option, self.directory), PUBLIC)
        write(self.directory, "id_ed25519", SECRET_B64)
        self.assertEqual(keys.announce_public_key("-", self.directory), PUBLIC)

    def test_no_key(self):
        with self.assertRaises(keys.KeyFileError) as caught:
            keys.announce_public_key(None, self.directory)
        self.assertIn("copy id_ed25519.pub from the ID server", str(caught.exception))
        self.assertEqual(os.listdir(self.directory), [])
