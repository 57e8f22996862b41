"""RendezvousMessage building and safe parsing (PROTOCOL.md sections 1.7, 2, Appendix A)."""

from hypothesis import given, settings, strategies as st
from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire import addr_mangle, keys, messages
from rustdesk_twisted.wire import rendezvous_pb2 as pb
from rustdesk_twisted.wire.framing import FrameDecoder, encode_frame

PROPERTY = settings(max_examples=200, deadline=None)

SIGNED_IDPK = bytes.fromhex(
    "2cc3eaa2de692737e92cfa7487a74c983caa379c153b68f9edc39121c83ad926"
    "1c16b3a63803939abbe40dd47b406f6f6711b15fd68d7fc598ab1f5afefbde03"
    "0a09313233343536373839" "1220") + b"\xaa" * 32
RELAY = "relay.example.com:21117"


def hexbytes(text):
    return bytes.fromhex(text)


class ExampleEncodingTests(SynchronousTestCase):
    """Section 2.5, every row."""

    def assertEncodes(self, message, expected):
        self.assertEqual(message.SerializeToString(), expected)
        # And it parses back to an equal message.
        self.assertEqual(messages.parse(expected), message)

    def test_register_peer(self):
        self.assertEncodes(
            messages.wrap("register_peer", id="123456789", serial=3),
            hexbytes("32 0d 0a 09 31 32 33 34 35 36 37 38 39 10 03"))

    def test_register_peer_response(self):
        self.assertEncodes(messages.wrap("register_peer_response", request_pk=True),
                           hexbytes("3a 02 10 01"))
        self.assertEncodes(messages.wrap("register_peer_response", request_pk=False),
                           hexbytes("3a 00"))
        self.assertEncodes(messages.wrap("register_peer_response"), hexbytes("3a 00"))

    def test_register_pk_response(self):
        for result, expected in [
            (pb.RegisterPkResponse.OK, "82 01 00"),
            (pb.RegisterPkResponse.UUID_MISMATCH, "82 01 02 08 02"),
            (pb.RegisterPkResponse.TOO_FREQUENT, "82 01 02 08 04"),
            (pb.RegisterPkResponse.NOT_SUPPORT, "82 01 02 08 06"),
        ]:
            with self.subTest(result=result):
                self.assertEncodes(messages.register_pk_response(result), hexbytes(expected))

    def test_register_pk_response_keep_alive(self):
        message = messages.register_pk_response(pb.RegisterPkResponse.OK, keep_alive=30)
        self.assertEqual(message.SerializeToString(), hexbytes("82 01 02 10 1e"))

    def test_punch_hole_failures(self):
        for failure, expected in [
            (pb.PunchHoleResponse.ID_NOT_EXIST, "5a 00"),
            (pb.PunchHoleResponse.OFFLINE, "5a 02 18 02"),
            (pb.PunchHoleResponse.LICENSE_MISMATCH, "5a 02 18 03"),
        ]:
            with self.subTest(failure=failure):
                self.assertEncodes(messages.punch_hole_failure(failure), hexbytes(expected))

    def test_test_nat_request(self):
        self.assertEncodes(messages.wrap("test_nat_request"), hexbytes("a2 01 00"))
        self.assertEncodes(messages.wrap("test_nat_request", serial=3),
                           hexbytes("a2 01 02 08 03"))

    def test_test_nat_response(self):
        self.assertEncodes(messages.test_nat_response(40000), hexbytes("aa 01 04 08 c0 b8 02"))

    def test_test_nat_response_with_config_update(self):
        message = messages.test_nat_response(
            1, messages.config_update(2, ["a", "b"]))
        self.assertEqual(message.test_nat_response.cu.rendezvous_servers, ["a", "b"])
        self.assertEqual(message.SerializeToString(),
                         hexbytes("aa 01 0c 08 01 12 08 08 02 12 01 61 12 01 62"))

    def test_online_response(self):
        """Section 2.5 and A.4: p0, p2 and p9 online of ten peers gives a0 40."""
        flags = [i in (0, 2, 9) for i in range(10)]
        message = messages.online_bitmap(flags)
        self.assertEqual(message.online_response.states, hexbytes("a0 40"))
        self.assertEncodes(message, hexbytes("c2 01 04 0a 02 a0 40"))
        self.assertEqual(encode_frame(message.SerializeToString()),
                         hexbytes("1c c2 01 04 0a 02 a0 40"))

    def test_online_bitmap_sizes(self):
        self.assertEqual(messages.online_bitmap([]).SerializeToString(), hexbytes("c2 01 00"))
        self.assertEqual(messages.online_bitmap([True] * 8).online_response.states, b"\xff")
        self.assertEqual(messages.online_bitmap([False] * 9).online_response.states, bytes(2))
        self.assertEqual(messages.online_bitmap([False] * 7 + [True]).online_response.states,
                         b"\x01")

    def test_register_pk(self):
        self.assertEncodes(
            messages.wrap("register_pk", id="123456789", uuid=b"abc", pk=bytes(32)),
            hexbytes("7a 32 0a 09 31 32 33 34 35 36 37 38 39 12 03 61 62 63 1a 20")
            + bytes(32))

    def test_request_relay(self):
        self.assertEncodes(messages.wrap("request_relay", uuid="u", licence_key="k"),
                           hexbytes("92 01 06 12 01 75 32 01 6b"))

    def test_punch_hole(self):
        message = messages.wrap(
            "punch_hole",
            socket_addr=addr_mangle.encode(("192.168.1.100", 21116), 0x12345678),
            relay_server=RELAY,
            nat_type=pb.SYMMETRIC)
        self.assertEncodes(message, hexbytes(
            "4a 27 0a 0a f4 a8 f0 ac 68 24 70 fe 6b ec 12 17 72 65 6c 61 79 2e 65 78 61 6d"
            " 70 6c 65 2e 63 6f 6d 3a 32 31 31 31 37 18 02"))

    def test_wrap_field_kinds(self):
        """wrap() takes scalar oneof defaults, repeated fields and sub-messages."""
        self.assertEqual(messages.wrap("punch_hole_response", nat_type=pb.UNKNOWN_NAT)
                         .SerializeToString(), hexbytes("5a 02 28 00"))
        self.assertEqual(messages.wrap("relay_response", pk=b"").SerializeToString(),
                         hexbytes("9a 01 02 2a 00"))
        self.assertEqual(messages.wrap("online_request", peers=["a", "b"]).SerializeToString(),
                         hexbytes("ba 01 06 12 01 61 12 01 62"))
        self.assertEqual(
            messages.wrap("test_nat_response", port=1, cu=pb.ConfigUpdate(serial=2))
            .SerializeToString(), hexbytes("aa 01 06 08 01 12 02 08 02"))

    def test_wrap_copies_inner(self):
        inner = pb.RegisterPkResponse()
        self.assertEqual(messages.wrap("register_pk_response", inner).SerializeToString(),
                         hexbytes("82 01 00"))
        self.assertEqual(messages.kind(messages.wrap("key_exchange")), "key_exchange")
        self.assertEqual(messages.wrap("key_exchange").SerializeToString(), hexbytes("ca 01 00"))


class OneofScalarTests(SynchronousTestCase):
    """Section 1.7: scalar oneof members reach the wire even at their default."""

    def test_nat_type_unknown(self):
        response = pb.PunchHoleResponse(nat_type=pb.UNKNOWN_NAT)
        self.assertEqual(response.SerializeToString(), hexbytes("28 00"))

    def test_relay_response_empty_pk(self):
        self.assertEqual(pb.RelayResponse(pk=b"").SerializeToString(), hexbytes("2a 00"))

    def test_failure_default_omitted(self):
        self.assertEqual(pb.PunchHoleResponse(failure=pb.PunchHoleResponse.ID_NOT_EXIST)
                         .SerializeToString(), b"")


class AppendixTests(SynchronousTestCase):
    def test_register_pk_response_frame(self):
        """A.1: 0c 82 01 00."""
        frame = encode_frame(messages.register_pk_response(pb.RegisterPkResponse.OK)
                             .SerializeToString())
        self.assertEqual(frame, hexbytes("0c 82 01 00"))

    def test_key_exchange_frame(self):
        """A.1: KeyExchange with one 96-byte key is ca 01 62 0a 60 <96>, header 95 01."""
        key = bytes(range(96))
        payload = messages.wrap("key_exchange", keys=[key]).SerializeToString()
        self.assertEqual(payload, hexbytes("ca 01 62 0a 60") + key)
        frame = encode_frame(payload)
        self.assertEqual(frame, hexbytes("95 01") + payload)
        self.assertEqual(len(frame), 103)
        (decoded,) = FrameDecoder(1024).feed(frame)
        self.assertEqual(list(messages.parse(decoded).key_exchange.keys), [key])

    def test_signed_punch_hole_response(self):
        """A.3: the full 154-byte PunchHoleResponse carrying the signed IdPk, header 69 02."""
        signing = SigningKey(bytes(range(32)))
        signed = keys.sign_id_pk(signing, "123456789", b"\xaa" * 32)
        self.assertEqual(bytes(signed), SIGNED_IDPK)
        message = messages.wrap(
            "punch_hole_response",
            socket_addr=addr_mangle.encode(("203.0.113.7", 40000), 0x89ABCDEF),
            pk=bytes(signed),
            relay_server=RELAY,
            nat_type=pb.ASYMMETRIC)
        expected = (
            hexbytes("5a 97 01 0a 0b 2f 6a df 9b 57 13 75 9d 39 22 01 12 6d")
            + SIGNED_IDPK
            + hexbytes("22 17 72 65 6c 61 79 2e 65 78 61 6d 70 6c 65 2e 63 6f 6d 3a 32 31"
                       " 31 31 37 28 01"))
        self.assertEqual(len(expected), 154)
        self.assertEqual(message.SerializeToString(), expected)
        frame = encode_frame(expected)
        self.assertEqual(frame[:2], hexbytes("69 02"))
        self.assertEqual(len(frame), 156)
        parsed = messages.parse(expected)
        self.assertEqual(messages.kind(parsed), "punch_hole_response")
        response = parsed.punch_hole_response
        self.assertEqual(addr_mangle.decode(response.socket_addr), ("203.0.113.7", 40000))
        self.assertEqual(keys.verify_id_pk(bytes(signing.verify_key), response.pk, "123456789"),
                         b"\xaa" * 32)
        self.assertEqual(response.WhichOneof("union"), "nat_type")


class SchemaTests(SynchronousTestCase):
    """Spot checks of the section 2 field tables against the generated modules."""

    def fields(self, message):
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    def test_rendezvous_union(self):
        union = pb.RendezvousMessage.DESCRIPTOR.oneofs_by_name["union"]
        numbers = {f.name: f.number for f in union.fields}
        self.assertEqual(numbers, {
            "register_peer": 6, "register_peer_response": 7, "punch_hole_request": 8,
            "punch_hole": 9, "punch_hole_sent": 10, "punch_hole_response": 11,
            "fetch_local_addr": 12, "local_addr": 13, "configure_update": 14,
            "register_pk": 15, "register_pk_response": 16, "software_update": 17,
            "request_relay": 18, "relay_response": 19, "test_nat_request": 20,
            "test_nat_response": 21, "peer_discovery": 22, "online_request": 23,
            "online_response": 24, "key_exchange": 25, "hc": 26,
            "http_proxy_request": 27, "http_proxy_response": 28})

    def test_punch_hole_response(self):
        self.assertEqual(self.fields(pb.PunchHoleResponse), {
            "socket_addr": 1, "pk": 2, "failure": 3, "relay_server": 4, "nat_type": 5,
            "is_local": 6, "other_failure": 7, "feedback": 8, "is_udp": 9, "upnp_port": 10,
            "socket_addr_v6": 11})
        union = pb.PunchHoleResponse.DESCRIPTOR.oneofs_by_name["union"]
        self.assertEqual({f.name for f in union.fields}, {"nat_type", "is_local"})
        self.assertEqual(dict(pb.PunchHoleResponse.Failure.items()),
                         {"ID_NOT_EXIST": 0, "OFFLINE": 2, "LICENSE_MISMATCH": 3,
                          "LICENSE_OVERUSE": 4})

    def test_relay_response(self):
        self.assertEqual(self.fields(pb.RelayResponse), {
            "socket_addr": 1, "uuid": 2, "relay_server": 3, "id": 4, "pk": 5,
            "refuse_reason": 6, "version": 7, "feedback": 9, "socket_addr_v6": 10,
            "upnp_port": 11})
        union = pb.RelayResponse.DESCRIPTOR.oneofs_by_name["union"]
        self.assertEqual({f.name for f in union.fields}, {"id", "pk"})

    def test_register_pk_response_enum(self):
        self.assertEqual(dict(pb.RegisterPkResponse.Result.items()), {
            "OK": 0, "UUID_MISMATCH": 2, "ID_EXISTS": 3, "TOO_FREQUENT": 4,
            "INVALID_ID_FORMAT": 5, "NOT_SUPPORT": 6, "SERVER_ERROR": 7, "NOT_DEPLOYED": 8})
        self.assertEqual(self.fields(pb.RegisterPkResponse), {"result": 1, "keep_alive": 2})

    def test_top_level_enums(self):
        self.assertEqual(dict(pb.NatType.items()),
                         {"UNKNOWN_NAT": 0, "ASYMMETRIC": 1, "SYMMETRIC": 2})
        self.assertEqual(dict(pb.ConnType.items()), {
            "DEFAULT_CONN": 0, "FILE_TRANSFER": 1, "PORT_FORWARD": 2, "RDP": 3,
            "VIEW_CAMERA": 4, "TERMINAL": 5})


def nested_groups(depth):
    """``depth`` nested start-group tags of an unknown field (number 1000)."""
    start = bytes([0xC3, 0x3E])  # field 1000, wire type 3
    end = bytes([0xC4, 0x3E])  # field 1000, wire type 4
    return start * depth + end * depth


class ParseTests(SynchronousTestCase):
    def test_empty_is_no_message(self):
        message = messages.parse(b"")
        self.assertIsNotNone(message)
        self.assertIsNone(messages.kind(message))

    def test_garbage(self):
        for data in (b"\xff", b"\x0a\x05ab", b"\x80", b"\x32\x03\x0a\x01\xff",
                     b"\x07", b"\x0c", bytes(5)):
            with self.subTest(data=data):
                self.assertIsNone(messages.parse(data))

    def test_deep_nested_unknown_groups(self):
        """Section 1.7: 300 000-deep nested groups give a parse error, never a crash."""
        self.assertIsNone(messages.parse(nested_groups(300_000)))
        self.assertIsNone(messages.parse(bytes([0xC3, 0x3E]) * 300_000))

    def test_truncated_lengths(self):
        """Length prefixes that promise more than is there, however many, give None."""
        self.assertIsNone(messages.parse(b"\x32\xff\xff\x03" * 300_000))
        self.assertIsNone(messages.parse(b"\x32\x0d\x0a\x09123"))

    def test_nested_groups_inside_known_message(self):
        """Deep unknown groups inside a known sub-message are refused too."""
        inner = nested_groups(300_000)
        data = b"\x32" + encode_varint(len(inner)) + inner
        self.assertIsNone(messages.parse(data))

    def test_unknown_fields_survive(self):
        """Section 1.7: unknown fields are kept and re-emitted when forwarding."""
        data = hexbytes("92 01 09 12 01 75 32 01 6b f8 3e 07")
        message = messages.parse(data)
        self.assertEqual(message.request_relay.uuid, "u")
        message.request_relay.relay_server = "r"
        self.assertIn(hexbytes("f8 3e 07"), message.SerializeToString())

    def test_open_enums(self):
        message = messages.parse(hexbytes("5a 02 28 07"))
        self.assertEqual(message.punch_hole_response.nat_type, 7)

    @PROPERTY
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, data):
        result = messages.parse(data)
        self.assertTrue(result is None or isinstance(result, pb.RendezvousMessage))

    @PROPERTY
    @given(st.sampled_from([
        hexbytes("32 0d 0a 09 31 32 33 34 35 36 37 38 39 10 03"),
        hexbytes("7a 32 0a 09 31 32 33 34 35 36 37 38 39 12 03 61 62 63 1a 20") + bytes(32),
        hexbytes("92 01 06 12 01 75 32 01 6b"),
    ]), st.data())
    def test_mutated_messages(self, data, draw):
        """Flipped, cut and spliced real messages parse or give None."""
        index = draw.draw(st.integers(0, len(data) - 1))
        value = draw.draw(st.integers(0, 255))
        cut = draw.draw(st.integers(0, len(data)))
        for candidate in (data[:index] + bytes([value]) + data[index + 1:], data[:cut],
                          data[cut:] + data[:cut]):
            result = messages.parse(candidate)
            self.assertTrue(result is None or isinstance(result, pb.RendezvousMessage))


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
