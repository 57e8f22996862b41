"""The TCP frame codec of RustDesk ("BytesCodec", PROTOCOL.md section 1.1).

A frame is a 1..4 byte little-endian header whose two low bits hold the
header length minus one and whose remaining bits hold the payload length,
followed by the payload.  The decoder is incremental and refuses any header
announcing more than ``max_frame`` bytes *before* buffering the payload, so a
hostile header cannot make us allocate gigabytes.
"""

MAX_ENCODABLE = 0x3FFFFFFF


class FrameTooLarge(ValueError):
    """A frame header announced more bytes than the decoder accepts."""


def encode_header(length):
    """The shortest header for a payload of ``length`` bytes."""
    if length <= 0x3F:
        return bytes((length << 2,))
    if length <= 0x3FFF:
        return ((length << 2) | 1).to_bytes(2, "little")
    if length <= 0x3FFFFF:
        return ((length << 2) | 2).to_bytes(3, "little")
    if length <= MAX_ENCODABLE:
        return ((length << 2) | 3).to_bytes(4, "little")
    raise FrameTooLarge(f"payload of {length} bytes cannot be framed")


def encode_frame(payload):
    return encode_header(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream, chunked any way, into frame payloads.

    ``feed(data)`` returns the list of complete payloads.  ``remainder()``
    hands out the undecoded bytes, which hbbr forwards verbatim when a pair
    switches to raw mode (gotcha G11/G20).
    """

    __slots__ = ("max_frame", "_buffer")

    def __init__(self, max_frame):
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data):
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        available = len(buffer)
        max_frame = self.max_frame
        while offset < available:
            header_length = (buffer[offset] & 3) + 1
            if available - offset < header_length:
                break
            length = int.from_bytes(
                buffer[offset:offset + header_length], "little") >> 2
            if length > max_frame:
                del buffer[:offset]
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {max_frame}")
            end = offset + header_length + length
            if end > available:
                break
            frames.append(bytes(buffer[offset + header_length:end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    def remainder(self):
        """The bytes received but not yet decoded, removed from the decoder."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def buffered(self):
        return len(self._buffer)
