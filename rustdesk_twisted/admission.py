"""Who is one *source* for per-source limits.

An IPv4 address is one source (mapped and compatible IPv6 forms fold into
it).  An IPv6 source is its /64: one subscriber's prefix, inside which a
host may use any of 2**64 addresses, so a per-address cap would be no cap
at all.
"""

import socket

from .wire.addr_mangle import try_into_v4


def source_key(host):
    """The per-source key of a textual peer IP: the IPv4 text, or ``prefix::/64`` for IPv6.

    Anything that is not an IP (a Unix socket's empty host) is its own key.
    """
    host = try_into_v4(host)
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return host
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"
