"""AddrMangle: RustDesk's obfuscated socket-address encoding (PROTOCOL.md section 3).

Addresses are ``(host, port)`` tuples with ``host`` a textual IP, as Twisted
reports them.  Encoding IPv4 needs a 32-bit microsecond timestamp ``tm``;
callers derive it from their injected clock with :func:`timestamp`.
"""

import ipaddress
import socket

_V4_MAPPED_PREFIXES = (b"\x00" * 10 + b"\xff\xff", b"\x00" * 12)
_LOOPBACK_V6 = b"\x00" * 15 + b"\x01"


def timestamp(now):
    """The ``tm`` value for a clock reading in seconds."""
    return int(now * 1_000_000) & 0xFFFFFFFF


def try_into_v4(host):
    """Rust's ``Ipv6Addr::to_ipv4`` normalisation, except for ``::1`` (section 3.1).

    ``host`` is a textual IP; the result is the textual IPv4 form when the
    address is IPv4-mapped or IPv4-compatible, otherwise ``host`` unchanged.
    """
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return host
    if packed != _LOOPBACK_V6 and packed[:12] in _V4_MAPPED_PREFIXES:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return host


def normalize(address):
    """``address`` with its host passed through :func:`try_into_v4`."""
    host, port = address[0], address[1]
    return (try_into_v4(host), port)


def encode(address, tm):
    """Mangle ``(host, port)``; IPv4 results are 0..16 bytes, IPv6 exactly 18."""
    host, port = normalize(address)
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return packed + (port & 0xFFFF).to_bytes(2, "little")
    ip = int.from_bytes(socket.inet_aton(host), "little")
    tm &= 0xFFFFFFFF
    value = ((ip + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
    return value.to_bytes(16, "little").rstrip(b"\x00")


def decode(data):
    """Unmangle bytes into ``(host, port)``; never raises on any input."""
    if len(data) > 16:
        if len(data) != 18:
            return ("::", 0)
        return (socket.inet_ntop(socket.AF_INET6, data[:16]),
                int.from_bytes(data[16:], "little"))
    n = int.from_bytes(data, "little")
    tm = (n >> 17) & 0xFFFFFFFF
    ip = ((n >> 49) - tm) & 0xFFFFFFFF
    port = ((n & 0xFFFFFF) - (tm & 0xFFFF)) & 0xFFFF
    return (socket.inet_ntoa(ip.to_bytes(4, "little")), port)


def is_loopback(host):
    try:
        return ipaddress.ip_address(try_into_v4(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False
