"""Raw WebSocket bytes for tests: frame headers (RFC 6455 section 5.2) and upgrade requests."""


def frame(payload_length, opcode=2, fin=True, masked=True):
    """A frame header announcing ``payload_length`` bytes (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    mask = 0x80 if masked else 0
    if payload_length < 126:
        head = bytes([first, mask | payload_length])
    elif payload_length < 1 << 16:
        head = bytes([first, mask | 126]) + payload_length.to_bytes(2, "big")
    else:
        head = bytes([first, mask | 127]) + payload_length.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if masked else b"")


def masked_frame(payload, opcode=2, fin=True):
    key = b"\x01\x02\x03\x04"
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return frame(len(payload), opcode, fin) + body


UPGRADE = (b"GET /ws/id HTTP/1.1\r\nHost: hbbs\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


def upgrade(*headers):
    return UPGRADE + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
