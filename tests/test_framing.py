"""The TCP frame codec (PROTOCOL.md section 1.1, Appendix A.1)."""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire.framing import (
    MAX_ENCODABLE,
    FrameDecoder,
    FrameTooLarge,
    encode_frame,
    encode_header,
)

PROPERTY = settings(max_examples=200, deadline=None)

# Section 1.1 "Header examples", verbatim.
HEADER_VECTORS = [
    (0, "00"),
    (1, "04"),
    (63, "fc"),
    (64, "01 01"),
    (16_383, "fd ff"),
    (16_384, "02 00 01"),
    (4_194_303, "fe ff ff"),
    (4_194_304, "03 00 00 01"),
    (1_073_741_823, "ff ff ff ff"),
]


class HeaderTests(SynchronousTestCase):
    def test_header_table(self):
        """Every row of the section 1.1 header table encodes byte for byte."""
        for length, expected in HEADER_VECTORS:
            with self.subTest(length=length):
                self.assertEqual(encode_header(length), bytes.fromhex(expected))

    def test_header_table_decodes(self):
        """Each table header, fed alone, is waiting for exactly N payload bytes."""
        for length, expected in HEADER_VECTORS:
            with self.subTest(length=length):
                decoder = FrameDecoder(MAX_ENCODABLE)
                self.assertEqual(decoder.feed(bytes.fromhex(expected)), [] if length else [b""])
                self.assertEqual(decoder.buffered(), len(expected.split()) if length else 0)

    def test_overflow(self):
        """2**30 bytes and more cannot be framed."""
        self.assertEqual(MAX_ENCODABLE, 0x3FFFFFFF)
        self.assertRaises(FrameTooLarge, encode_header, 0x40000000)
        self.assertRaises(FrameTooLarge, encode_header, 2**40)

    def test_boundaries_use_shortest_form(self):
        for length, size in [(0x3F, 1), (0x40, 2), (0x3FFF, 2), (0x4000, 3),
                             (0x3FFFFF, 3), (0x400000, 4)]:
            with self.subTest(length=length):
                header = encode_header(length)
                self.assertEqual(len(header), size)
                self.assertEqual(header[0] & 3, size - 1)

    @PROPERTY
    @given(st.integers(min_value=0, max_value=MAX_ENCODABLE))
    def test_header_roundtrip(self, length):
        header = encode_header(length)
        self.assertEqual((header[0] & 3) + 1, len(header))
        self.assertEqual(int.from_bytes(header, "little") >> 2, length)


class FrameVectorTests(SynchronousTestCase):
    def test_register_pk_response_ok(self):
        """Section 1.1 / A.1: RegisterPkResponse{OK} frames as 0c 82 01 00."""
        self.assertEqual(encode_frame(bytes.fromhex("820100")), bytes.fromhex("0c820100"))

    def test_online_response(self):
        """A.1: OnlineResponse{states:a0 40} frames as 1c c2 01 04 0a 02 a0 40."""
        self.assertEqual(encode_frame(bytes.fromhex("c201040a02a040")),
                         bytes.fromhex("1cc201040a02a040"))

    def test_key_exchange_frame(self):
        """A.1: a 101-byte KeyExchange message gets the header 95 01, 103 bytes in all."""
        message = bytes.fromhex("ca01620a60") + bytes(range(96))
        self.assertEqual(len(message), 101)
        frame = encode_frame(message)
        self.assertEqual(frame[:2], bytes.fromhex("9501"))
        self.assertEqual(len(frame), 103)
        self.assertEqual(FrameDecoder(1024).feed(frame), [message])

    def test_heartbeat(self):
        """Section 1.6: the empty heartbeat frame is the single byte 00."""
        self.assertEqual(encode_frame(b""), b"\x00")
        self.assertEqual(FrameDecoder(16).feed(b"\x00\x00"), [b"", b""])


class DecoderTests(SynchronousTestCase):
    def test_non_shortest_headers(self):
        """Section 1.1: 01 00 is a valid header for N=0, and so are longer forms."""
        decoder = FrameDecoder(1024)
        self.assertEqual(decoder.feed(bytes.fromhex("0100")), [b""])
        self.assertEqual(decoder.feed(bytes.fromhex("020000")), [b""])
        self.assertEqual(decoder.feed(bytes.fromhex("03000000")), [b""])
        # N=1 in a two-byte header, then N=2 in a four-byte header.
        self.assertEqual(decoder.feed(bytes.fromhex("0500") + b"a"
                                      + bytes.fromhex("0b000000") + b"bc"), [b"a", b"bc"])
        self.assertEqual(decoder.buffered(), 0)

    def test_partial_header_waits(self):
        decoder = FrameDecoder(1 << 20)
        self.assertEqual(decoder.feed(b"\x02"), [])
        self.assertEqual(decoder.feed(b"\x00"), [])
        self.assertEqual(decoder.buffered(), 2)
        self.assertEqual(decoder.feed(b"\x01"), [])
        self.assertEqual(decoder.buffered(), 3)
        payload = bytes(16_384)
        self.assertEqual(decoder.feed(payload), [payload])
        self.assertEqual(decoder.buffered(), 0)

    def test_too_large_before_payload(self):
        """A header above max_frame raises as soon as the header is complete."""
        decoder = FrameDecoder(63)
        self.assertEqual(decoder.feed(b"\x01"), [])
        with self.assertRaises(FrameTooLarge):
            decoder.feed(b"\x01")  # header 01 01: N=64, no payload byte sent yet
        # The largest header there is, alone, with a small limit.
        self.assertRaises(FrameTooLarge, FrameDecoder(1 << 20).feed, b"\xff\xff\xff\xff")

    def test_too_large_after_good_frames(self):
        """Frames before the oversize header are not lost from the buffer accounting."""
        decoder = FrameDecoder(4)
        self.assertRaises(FrameTooLarge, decoder.feed, b"\x04a" + encode_header(5) + b"xx")
        self.assertEqual(decoder.remainder(), encode_header(5) + b"xx")

    def test_limit_is_inclusive(self):
        decoder = FrameDecoder(64)
        self.assertEqual(decoder.feed(encode_frame(bytes(64))), [bytes(64)])
        self.assertRaises(FrameTooLarge, decoder.feed, encode_header(65))

    def test_remainder(self):
        """Undecoded bytes after complete frames come back verbatim, headers included."""
        decoder = FrameDecoder(1024)
        first = encode_frame(b"request relay")
        rest = encode_frame(b"signed id") + b"\x0cpa"
        self.assertEqual(decoder.feed(first + rest), [b"request relay", b"signed id"])
        self.assertEqual(decoder.buffered(), 3)
        self.assertEqual(decoder.remainder(), b"\x0cpa")
        self.assertEqual(decoder.buffered(), 0)
        self.assertEqual(decoder.remainder(), b"")

    @PROPERTY
    @given(st.lists(st.binary(max_size=100), max_size=10), st.data())
    def test_any_chunking(self, payloads, data):
        """Any split of a stream of frames decodes to the same payloads."""
        stream = b"".join(encode_frame(p) for p in payloads)
        self.assertEqual(feed_in_chunks(FrameDecoder(100), stream, data), payloads)

    @PROPERTY
    @given(st.lists(st.tuples(st.binary(max_size=80), st.integers(1, 4)), max_size=10),
           st.data())
    def test_any_header_width(self, frames, data):
        """Non-shortest headers of every width decode, however the stream is chunked."""
        frames = [(p, k) for p, k in frames if k > 1 or len(p) < 64]
        stream = b"".join(((len(p) << 2) | (k - 1)).to_bytes(k, "little") + p
                          for p, k in frames)
        self.assertEqual(feed_in_chunks(FrameDecoder(80), stream, data),
                         [p for p, _ in frames])

    @PROPERTY
    @given(st.binary(max_size=200), st.integers(0, 100))
    def test_arbitrary_bytes(self, stream, limit):
        """Arbitrary input yields payloads within the limit or FrameTooLarge, nothing else."""
        decoder = FrameDecoder(limit)
        try:
            frames = decoder.feed(stream)
        except FrameTooLarge:
            return
        self.assertTrue(all(len(f) <= limit for f in frames))
        self.assertLessEqual(sum(len(f) for f in frames) + decoder.buffered(), len(stream))


def feed_in_chunks(decoder, stream, data):
    """Feed ``stream`` cut at hypothesis-chosen points; the payloads, or None if bytes remain."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    out = []
    previous = 0
    for cut in cuts + [len(stream)]:
        out.extend(decoder.feed(stream[previous:cut]))
        previous = cut
    return out if decoder.buffered() == 0 else None
