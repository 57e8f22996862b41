"""The RegisterPeer fast path: the hand decoder agrees with protobuf on every input it accepts,
and a server fed through it answers exactly as through the parser."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.relays import RelayRotation
from rustdesk_twisted.hbbs.rendezvous import RendezvousServer, decode_register_peer
from rustdesk_twisted.wire import messages
from rustdesk_twisted.wire.rendezvous_pb2 import RegisterPeer, RendezvousMessage


def encode(peer_id, serial):
    return messages.wrap("register_peer", RegisterPeer(id=peer_id, serial=serial)).SerializeToString()


class DecoderTests(SynchronousTestCase):
    def test_protocol_vector(self):
        data = bytes.fromhex("320d0a09313233343536373839 1003".replace(" ", ""))
        self.assertEqual(decode_register_peer(data), ("123456789", 3))

    def test_unusual_shapes_fall_back(self):
        for data in (b"", b"\x32", b"\x32\x00", b"\x32\x02\x10\x03",   # no id field first
                     encode("a" * 200, 3),                              # multi-byte lengths
                     encode("123456789", 300),                          # multi-byte serial
                     encode("123456789", -1),
                     bytes.fromhex("32050a03616263") + b"\x00",         # trailing byte
                     bytes.fromhex("32050a03ff6263"),                   # invalid UTF-8
                     bytes.fromhex("32070a036162631003")[:-1]):         # truncated
            self.assertIsNone(decode_register_peer(data), data.hex())

    @settings(max_examples=500)
    @given(st.text(max_size=40), st.integers(min_value=-2**31, max_value=2**31 - 1))
    def test_agrees_with_protobuf_on_messages(self, peer_id, serial):
        self.check(encode(peer_id, serial))

    @settings(max_examples=2000)
    @given(st.binary(max_size=40))
    def test_agrees_with_protobuf_on_any_bytes(self, data):
        self.check(b"\x32" + bytes([max(len(data) - 1, 0) & 0x7f]) + data[1:])
        self.check(data)

    def check(self, data):
        fields = decode_register_peer(data)
        if fields is None:
            return
        message = RendezvousMessage()
        message.ParseFromString(data)
        self.assertEqual(message.WhichOneof("union"), "register_peer")
        self.assertEqual(fields, (message.register_peer.id, message.register_peer.serial))


class FastPathServerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = PeerRegistry()
        self.server = RendezvousServer(self.registry, _Key(), RelayRotation([]), self.clock,
                                       serial=5)
        self.sent = []
        self.server.send_datagram = lambda payload, address: self.sent.append((payload, address))

    def test_unknown_then_registered(self):
        address = ("198.51.100.7", 40000)
        self.server.datagram_received(encode("123456789", 3), address)
        self.assertEqual(self.sent, [(b"\x3a\x02\x10\x01", address)])
        self.registry.register_pk("123456789", b"u" * 16, b"k" * 32, address, 0.0)
        del self.sent[:]
        self.clock.advance(10)
        self.server.datagram_received(encode("123456789", 3), address)
        self.assertEqual(self.sent[0], (b"\x3a\x00", address))
        # serial 3 < 5: the ConfigUpdate follows, as on the parser path
        self.assertEqual(messages.parse(self.sent[1][0]).WhichOneof("union"), "configure_update")
        self.assertEqual(self.registry.get("123456789").last_reg_time, 10)
        self.assertEqual(self.server.counters["register_peer"], 2)

    def test_reply_prefers_send_reply(self):
        replies = []
        self.server.send_reply = lambda payload, address: replies.append(payload)
        self.server.datagram_received(encode("123456789", 9), ("198.51.100.7", 1))
        self.assertEqual((replies, self.sent), ([b"\x3a\x02\x10\x01"], []))

    def test_empty_id_ignored(self):
        self.server.datagram_received(encode("", 3), ("198.51.100.7", 1))
        self.assertEqual(self.sent, [])

    def test_address_shares_the_ip_string(self):
        host = "".join(["198.51.100.", "7"])
        self.registry.register_pk("123456789", b"u" * 16, b"k" * 32, (host, 1), 0.0)
        peer = self.registry.get("123456789")
        self.server.datagram_received(encode("123456789", 9), ("".join(["198.51.100.", "7"]), 2))
        self.assertEqual(peer.address, ("198.51.100.7", 2))
        self.assertIs(peer.address[0], peer.ip)


class _Key:
    licence = ""
    signing = None


class SignedPkCacheTests(SynchronousTestCase):
    def test_cached_signature_is_the_signature(self):
        from nacl.signing import SigningKey

        from rustdesk_twisted.wire import keys

        key = _Key()
        key.signing = SigningKey(b"s" * 32)
        registry = PeerRegistry()
        server = RendezvousServer(registry, key, RelayRotation([]), Clock())
        registry.register_pk("123456789", b"u" * 16, b"k" * 32, ("198.51.100.7", 1), 0.0)
        first = server.signed_pk("1.4.2", "123456789")
        self.assertEqual(first, keys.sign_id_pk(key.signing, "123456789", b"k" * 32))
        self.assertIs(server.signed_pk("1.4.2", "123456789"), first)
        registry.get("123456789").pk = b"j" * 32          # a new key is signed anew
        self.assertEqual(server.signed_pk("1.4.2", "123456789"),
                         keys.sign_id_pk(key.signing, "123456789", b"j" * 32))
        key.signing = SigningKey(b"t" * 32)              # and so is a new server key
        self.assertEqual(server.signed_pk("1.4.2", "123456789"),
                         keys.sign_id_pk(key.signing, "123456789", b"j" * 32))
