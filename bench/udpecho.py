"""Baseline: a Twisted ``DatagramProtocol`` that answers every datagram with RegisterPeerResponse{}.

Not a test.  No parsing, no state: what the reactor and the socket cost per datagram on one
core, the framework's ceiling for any Twisted hbbs.  ``python -m bench.udpecho PORT [HOST]``
(HOST default 127.0.0.1); prints ``ready`` once listening.
"""

import socket
import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

REPLY = b"\x3a\x00"


class Echo(DatagramProtocol):
    def startProtocol(self):
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def datagramReceived(self, data, address):
        self.transport.write(REPLY, address)


if __name__ == "__main__":
    reactor.listenUDP(int(sys.argv[1]), Echo(),
                      interface=sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1")
    reactor.callWhenRunning(print, "ready", flush=True)
    reactor.run()
