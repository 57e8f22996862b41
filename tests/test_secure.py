"""secure_tcp: KeyExchange and encrypted frames (PROTOCOL.md section 5, Appendix A.3)."""

from hypothesis import given, settings, strategies as st
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire import secure
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame
from rustdesk_twisted.wire.rendezvous_pb2 import KeyExchange, RendezvousMessage

PROPERTY = settings(max_examples=200, deadline=None)

SIGNING = SigningKey(bytes(range(32)))
PUBLIC = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
SERVER_SECRET = PrivateKey(b"\x02" * 32)
CLIENT_SECRET = PrivateKey(b"\x03" * 32)
EPK = bytes.fromhex("ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59")
CPK = bytes.fromhex("5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22")
K = b"\x04" * 32
SB = bytes.fromhex("eb0695edf1b0a61ffc663c80123c2c44e0b2f0dd3e5855f492b88bafcd4948b6"
                   "ab0a8f1097831986f4657d2fea6fa621")
HELLO_1 = bytes.fromhex("b4f3fb266c1c9299b367eb81cc70eebb8665881b39")


class VectorTests(SynchronousTestCase):
    def test_a3_public_keys(self):
        self.assertEqual(bytes(SERVER_SECRET.public_key), EPK)
        self.assertEqual(bytes(CLIENT_SECRET.public_key), CPK)
        self.assertEqual(bytes(SIGNING.verify_key), PUBLIC)

    def test_nonce(self):
        self.assertEqual(secure.nonce(1), bytes.fromhex("0100000000000000") + bytes(16))
        self.assertEqual(secure.nonce(0x0102030405060708),
                         bytes.fromhex("0807060504030201") + bytes(16))
        self.assertEqual(secure.ZERO_NONCE, bytes(24))

    def test_client_box_vector(self):
        """The client half produces the A.3 SB for fixed keys."""
        offer = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET).offer()
        reply, _ = secure.client_handshake(PUBLIC, offer, ephemeral=CLIENT_SECRET,
                                           symmetric_key=K)
        self.assertEqual(reply, [CPK, SB])

    def test_server_opens_sb(self):
        """Server side: the A.3 SB opens to K, and the stream uses K (secretbox vector)."""
        stream = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET).accept([CPK, SB])
        self.assertEqual(stream.open(HELLO_1), b"hello")

    def test_secretbox_vector(self):
        self.assertEqual(secure.SecretStream(K).seal(b"hello"), HELLO_1)
        self.assertEqual(SecretBox(K).encrypt(b"hello", secure.nonce(1)).ciphertext, HELLO_1)

    def test_offer(self):
        """The server offer is one 96-byte key: signature then EPK; framed with header 95 01."""
        offer = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET).offer()
        self.assertEqual(len(offer), 1)
        self.assertEqual(len(offer[0]), 96)
        self.assertEqual(offer[0][64:], EPK)
        self.assertEqual(VerifyKey(PUBLIC).verify(offer[0]), EPK)
        message = RendezvousMessage(key_exchange=KeyExchange(keys=offer)).SerializeToString()
        self.assertEqual(message[:5], bytes.fromhex("ca01620a60"))
        self.assertEqual(len(message), 101)
        frame = encode_frame(message)
        self.assertEqual(frame[:2], bytes.fromhex("9501"))
        self.assertEqual(len(frame), 103)

    def test_fresh_ephemeral_per_connection(self):
        first = secure.ServerHandshake(SIGNING).offer()[0][64:]
        second = secure.ServerHandshake(SIGNING).offer()[0][64:]
        self.assertNotEqual(first, second)


def connected_pair():
    server = secure.ServerHandshake(SIGNING)
    reply, client = secure.client_handshake(PUBLIC, server.offer())
    return server.accept(reply), client


class StreamTests(SynchronousTestCase):
    def test_counters_start_at_one_each_direction(self):
        """After a real handshake, the first frame each way uses nonce 1, then 2, ..."""
        handshake = secure.ServerHandshake(SIGNING)
        reply, client = secure.client_handshake(PUBLIC, handshake.offer(), symmetric_key=K)
        server = handshake.accept(reply)
        box = SecretBox(K)
        self.assertEqual(client.seal(b"first"),
                         box.encrypt(b"first", secure.nonce(1)).ciphertext)
        self.assertEqual(server.seal(b"reply"),
                         box.encrypt(b"reply", secure.nonce(1)).ciphertext)
        self.assertEqual(server.open(box.encrypt(b"up", secure.nonce(1)).ciphertext), b"up")
        self.assertEqual(client.open(box.encrypt(b"down", secure.nonce(1)).ciphertext), b"down")
        self.assertEqual(client.seal(b"second"),
                         box.encrypt(b"second", secure.nonce(2)).ciphertext)
        self.assertEqual(server.open(box.encrypt(b"up2", secure.nonce(2)).ciphertext), b"up2")

    def test_counters_use_exact_nonces(self):
        """With K from A.3: client→server frames are nonces 1, 2, …; server→client as well."""
        server = secure.SecretStream(K)
        client = secure.SecretStream(K)
        box = SecretBox(K)
        self.assertEqual(client.seal(b"a"), box.encrypt(b"a", secure.nonce(1)).ciphertext)
        self.assertEqual(client.seal(b"b"), box.encrypt(b"b", secure.nonce(2)).ciphertext)
        self.assertEqual(server.seal(b"c"), box.encrypt(b"c", secure.nonce(1)).ciphertext)
        self.assertEqual(server.open(box.encrypt(b"x", secure.nonce(1)).ciphertext), b"x")
        self.assertEqual(server.open(box.encrypt(b"y", secure.nonce(2)).ciphertext), b"y")

    def test_empty_message_is_16_bytes(self):
        sealed = secure.SecretStream(K).seal(b"")
        self.assertEqual(len(sealed), 16)
        self.assertEqual(secure.SecretStream(K).open(sealed), b"")

    def test_short_payloads_pass_through(self):
        """0/1-byte payloads are not decrypted and do not advance the receive counter."""
        box = SecretBox(K)
        stream = secure.SecretStream(K)
        self.assertEqual(stream.open(b""), b"")
        self.assertEqual(stream.open(b"\x00"), b"\x00")
        self.assertEqual(stream.open(b"\x7f"), b"\x7f")
        self.assertEqual(stream.open(box.encrypt(b"m1", secure.nonce(1)).ciphertext), b"m1")
        self.assertEqual(stream.open(b""), b"")
        self.assertEqual(stream.open(box.encrypt(b"m2", secure.nonce(2)).ciphertext), b"m2")

    def test_tampered_frame(self):
        server, client = connected_pair()
        sealed = bytearray(client.seal(b"punch hole request"))
        sealed[-1] ^= 1
        self.assertRaises(secure.DecryptionError, server.open, bytes(sealed))

    def test_reordered_frame(self):
        server, client = connected_pair()
        client.seal(b"one")
        self.assertRaises(secure.DecryptionError, server.open, client.seal(b"two"))

    def test_replayed_frame(self):
        stream = secure.SecretStream(K)
        sealed = secure.SecretStream(K).seal(b"one")
        self.assertEqual(stream.open(sealed), b"one")
        self.assertRaises(secure.DecryptionError, stream.open, sealed)

    def test_wrong_key(self):
        sealed = secure.SecretStream(K).seal(b"hello")
        self.assertRaises(secure.DecryptionError, secure.SecretStream(b"\x05" * 32).open, sealed)

    def test_two_byte_garbage_is_an_error(self):
        """Only 0 and 1 byte payloads pass; anything longer must authenticate."""
        self.assertRaises(secure.DecryptionError, secure.SecretStream(K).open, b"\x00\x00")

    @PROPERTY
    @given(st.lists(st.binary(max_size=200), max_size=10), st.data())
    def test_stream_through_frames(self, messages, data):
        """Sealed messages and heartbeats, framed and re-chunked, come out in order."""
        server, client = secure.SecretStream(K), secure.SecretStream(K)
        wire = b""
        expected = []
        heartbeats = data.draw(st.lists(st.booleans(), min_size=len(messages),
                                        max_size=len(messages)))
        for message, heartbeat in zip(messages, heartbeats):
            if heartbeat:
                wire += encode_frame(b"")
                expected.append(b"")
            wire += encode_frame(client.seal(message))
            expected.append(message)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
        decoder = FrameDecoder(1024)
        out = []
        previous = 0
        for cut in cuts + [len(wire)]:
            out.extend(server.open(p) for p in decoder.feed(wire[previous:cut]))
            previous = cut
        self.assertEqual(out, expected)


class ServerHandshakeTests(SynchronousTestCase):
    def test_wrong_sizes(self):
        handshake = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET)
        bad = [
            [],
            [CPK],
            [SB],
            [CPK, SB, b""],
            [CPK[:31], SB],
            [CPK + b"\x00", SB],
            [CPK, SB[:47]],
            [CPK, SB + b"\x00"],
            [SB, CPK],
        ]
        for keys in bad:
            with self.subTest(sizes=[len(k) for k in keys]):
                self.assertRaises(secure.HandshakeError, handshake.accept, keys)

    def test_box_does_not_open(self):
        handshake = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET)
        tampered = SB[:-1] + bytes([SB[-1] ^ 1])
        self.assertRaises(secure.HandshakeError, handshake.accept, [CPK, tampered])
        other = bytes(PrivateKey(b"\x09" * 32).public_key)
        self.assertRaises(secure.HandshakeError, handshake.accept, [other, SB])
        # An all-zero (low-order) client key must not escape as a libsodium error.
        self.assertRaises(secure.HandshakeError, handshake.accept, [bytes(32), SB])

    def test_wrong_key_size_in_box(self):
        """A box carrying a 31-byte key (47 bytes on the wire) is refused."""
        box = Box(CLIENT_SECRET, PublicKey(EPK)).encrypt(b"\x04" * 31, secure.ZERO_NONCE)
        handshake = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET)
        self.assertRaises(secure.HandshakeError, handshake.accept, [CPK, box.ciphertext])

    @PROPERTY
    @given(st.lists(st.binary(max_size=64), max_size=4))
    def test_accept_only_raises_handshake_error(self, keys):
        handshake = secure.ServerHandshake(SIGNING, ephemeral=SERVER_SECRET)
        with self.assertRaises(secure.HandshakeError):
            handshake.accept(keys)


class ClientHandshakeTests(SynchronousTestCase):
    def test_full_handshake(self):
        server, client = connected_pair()
        self.assertEqual(server.open(client.seal(b"ping")), b"ping")
        self.assertEqual(client.open(server.seal(b"pong")), b"pong")

    def test_bad_signature(self):
        offer = secure.ServerHandshake(SigningKey(b"\x07" * 32)).offer()
        with self.assertRaises(secure.HandshakeError) as caught:
            secure.client_handshake(PUBLIC, offer)
        self.assertIn("Signature mismatch", str(caught.exception))
        good = secure.ServerHandshake(SIGNING).offer()[0]
        tampered = good[:-1] + bytes([good[-1] ^ 1])
        self.assertRaises(secure.HandshakeError, secure.client_handshake, PUBLIC, [tampered])

    def test_key_count(self):
        offer = secure.ServerHandshake(SIGNING).offer()
        self.assertRaises(secure.HandshakeError, secure.client_handshake, PUBLIC, [])
        self.assertRaises(secure.HandshakeError, secure.client_handshake, PUBLIC, offer * 2)

    def test_signed_message_not_32_bytes(self):
        for size in (0, 31, 33):
            with self.subTest(size=size):
                self.assertRaises(secure.HandshakeError, secure.client_handshake,
                                  PUBLIC, [SIGNING.sign(b"\x05" * size)])

    def test_short_offer(self):
        self.assertRaises(secure.HandshakeError, secure.client_handshake, PUBLIC, [b"x" * 10])

    def test_configured_key_not_32_bytes(self):
        """Section 5.2: a configured key that is not 32 bytes is a handshake failure."""
        offer = secure.ServerHandshake(SIGNING).offer()
        for key in (b"", PUBLIC[:31], PUBLIC + b"\x00"):
            with self.subTest(size=len(key)):
                self.assertRaises(secure.HandshakeError, secure.client_handshake, key, offer)

    def test_low_order_server_key(self):
        """A signed all-zero ephemeral key is a handshake failure, not a libsodium error."""
        self.assertRaises(secure.HandshakeError, secure.client_handshake,
                          PUBLIC, [SIGNING.sign(bytes(32))])


class HandshakeRotationTests(SynchronousTestCase):
    def test_one_handshake_per_lifetime(self):
        clock = Clock()
        rotation = secure.HandshakeRotation(SIGNING, clock, lifetime=60)
        first = rotation.current()
        clock.advance(59.9)
        self.assertIs(rotation.current(), first)
        self.assertIs(first.offer(), first.offer())
        clock.advance(0.1)
        second = rotation.current()
        self.assertIsNot(second, first)
        self.assertNotEqual(second.offer()[0][64:], first.offer()[0][64:])

    def test_shared_handshake_serves_independent_clients(self):
        """Each client boxes its own key: two clients of one handshake get separate streams."""
        handshake = secure.HandshakeRotation(SIGNING, Clock()).current()
        streams = []
        for _ in range(2):
            reply, client = secure.client_handshake(PUBLIC, handshake.offer())
            streams.append((client, handshake.accept(reply)))
        (client_a, server_a), (client_b, server_b) = streams
        self.assertEqual(server_a.open(client_a.seal(b"for a")), b"for a")
        self.assertRaises(secure.DecryptionError, server_b.open, client_a.seal(b"for a"))
