"""AddrMangle (PROTOCOL.md section 3, Appendix A.2)."""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire import addr_mangle

PROPERTY = settings(max_examples=200, deadline=None)

# Section 3.5, every row (the IPv6 rows with two different tm values, "any").
VECTORS = [
    (("192.168.1.100", 21116), 0x12345678, "f4 a8 f0 ac 68 24 70 fe 6b ec"),
    (("1.2.3.4", 5678), 0, "2e 16 00 00 00 00 02 04 06 08"),
    (("1.2.3.4", 5678), 0xFFFFFFFF, "2d 16 ff ff ff ff 01 04 06 08 02"),
    (("::ffff:203.0.113.7", 40000), 0x89ABCDEF, "2f 6a df 9b 57 13 75 9d 39 22 01"),
    (("127.0.0.1", 1), 1, "02 00 02 00 00 00 00 01 00 02"),
    (("0.0.0.0", 0), 0, ""),
    (("2001:db8::1", 21116), 0, "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 7c 52"),
    (("2001:db8::1", 21116), 0xDEADBEEF,
     "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 7c 52"),
    (("::1", 21116), 0, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 7c 52"),
    (("::1", 21116), 0x12345678, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 7c 52"),
]

ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)
tms = st.integers(0, 2**32 - 1)


class VectorTests(SynchronousTestCase):
    def test_table(self):
        for address, tm, expected in VECTORS:
            with self.subTest(address=address, tm=tm):
                self.assertEqual(addr_mangle.encode(address, tm), bytes.fromhex(expected))

    def test_table_decodes(self):
        """Each table value decodes to the normalised address."""
        for address, tm, expected in VECTORS:
            with self.subTest(address=address, tm=tm):
                self.assertEqual(addr_mangle.decode(bytes.fromhex(expected)),
                                 addr_mangle.normalize(address))

    def test_worked_example_intermediates(self):
        """Section 3.5's step-by-step value for 192.168.1.100:21116, tm=0x12345678."""
        encoded = addr_mangle.encode(("192.168.1.100", 21116), 0x12345678)
        self.assertEqual(int.from_bytes(encoded, "little"), 0xEC6BFE702468ACF0A8F4)
        self.assertEqual(len(encoded), 10)

    def test_mapped_becomes_v4(self):
        self.assertEqual(addr_mangle.encode(("::ffff:203.0.113.7", 40000), 0x89ABCDEF),
                         addr_mangle.encode(("203.0.113.7", 40000), 0x89ABCDEF))
        self.assertEqual(addr_mangle.decode(bytes.fromhex("2f6adf9b5713759d392201")),
                         ("203.0.113.7", 40000))

    def test_empty_decodes_to_unspecified_v4(self):
        self.assertEqual(addr_mangle.decode(b""), ("0.0.0.0", 0))

    def test_long_non_18_is_v6_unspecified(self):
        for length in (17, 19, 20, 32, 40):
            with self.subTest(length=length):
                self.assertEqual(addr_mangle.decode(b"\xab" * length), ("::", 0))

    def test_18_bytes_port_little_endian(self):
        self.assertEqual(addr_mangle.decode(bytes(15) + b"\x01" + b"\x34\x12"), ("::1", 0x1234))


class NormalisationTests(SynchronousTestCase):
    """Section 3.1: Rust's to_ipv4 except for ::1."""

    def test_try_into_v4(self):
        cases = [
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::1.2.3.4", "1.2.3.4"),
            ("::", "0.0.0.0"),
            ("::2", "0.0.0.2"),
            ("::1", "::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::fffe:1.2.3.4", "::fffe:1.2.3.4"),
            ("1:0:0:0:0:ffff:102:304", "1:0:0:0:0:ffff:102:304"),
            ("10.0.0.1", "10.0.0.1"),
            ("not an address", "not an address"),
        ]
        for host, expected in cases:
            with self.subTest(host=host):
                self.assertEqual(addr_mangle.try_into_v4(host), expected)

    def test_normalize_keeps_port(self):
        self.assertEqual(addr_mangle.normalize(("::ffff:10.1.2.3", 21116)), ("10.1.2.3", 21116))
        self.assertEqual(addr_mangle.normalize(("::1", 9)), ("::1", 9))

    def test_encode_compatible_and_unspecified(self):
        self.assertEqual(addr_mangle.encode(("::", 0), 0), b"")
        self.assertEqual(addr_mangle.encode(("::2", 7), 0), addr_mangle.encode(("0.0.0.2", 7), 0))

    def test_is_loopback(self):
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
            with self.subTest(host=host):
                self.assertTrue(addr_mangle.is_loopback(host))
        for host in ("10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "::", "localhost", ""):
            with self.subTest(host=host):
                self.assertFalse(addr_mangle.is_loopback(host))

    def test_timestamp(self):
        """tm is the low 32 bits of the time in microseconds."""
        self.assertEqual(addr_mangle.timestamp(0), 0)
        self.assertEqual(addr_mangle.timestamp(1.5), 1_500_000)
        self.assertEqual(addr_mangle.timestamp(1_700_000_000),
                         (1_700_000_000 * 1_000_000) & 0xFFFFFFFF)


class PropertyTests(SynchronousTestCase):
    @PROPERTY
    @given(ipv4, ports, tms)
    def test_v4_roundtrip(self, host, port, tm):
        encoded = addr_mangle.encode((host, port), tm)
        self.assertLessEqual(len(encoded), 16)
        self.assertEqual(addr_mangle.decode(encoded), (host, port))

    @PROPERTY
    @given(ipv4, ports, tms)
    def test_v4_mapped_roundtrip(self, host, port, tm):
        self.assertEqual(addr_mangle.decode(addr_mangle.encode(("::ffff:" + host, port), tm)),
                         (host, port))

    @PROPERTY
    @given(ipv6, ports, tms)
    def test_v6_roundtrip(self, host, port, tm):
        expected = addr_mangle.normalize((host, port))
        encoded = addr_mangle.encode((host, port), tm)
        if ":" in expected[0]:
            self.assertEqual(len(encoded), 18)
            self.assertEqual(encoded[:16], ipaddress.IPv6Address(host).packed)
        decoded = addr_mangle.decode(encoded)
        self.assertEqual(ipaddress.ip_address(decoded[0]), ipaddress.ip_address(expected[0]))
        self.assertEqual(decoded[1], port)

    @PROPERTY
    @given(st.binary(max_size=40))
    def test_decode_never_raises(self, data):
        host, port = addr_mangle.decode(data)
        ipaddress.ip_address(host)
        self.assertTrue(0 <= port <= 65535)
        if len(data) > 16 and len(data) != 18:
            self.assertEqual((host, port), ("::", 0))
        elif len(data) <= 16:
            self.assertIsInstance(ipaddress.ip_address(host), ipaddress.IPv4Address)

    @PROPERTY
    @given(st.binary(min_size=17, max_size=40).filter(lambda b: len(b) != 18))
    def test_long_garbage_is_unspecified(self, data):
        self.assertEqual(addr_mangle.decode(data), ("::", 0))
