"""hbbs's UDP 21116 listener: datagrams in, the controller decides, replies out."""

import socket

from twisted.internet.protocol import DatagramProtocol


class RendezvousUDP(DatagramProtocol):
    """Hands each datagram to the controller and gives it a way to send."""

    def __init__(self, server, receive_buffer=0):
        self.server = server
        self.receive_buffer = receive_buffer

    def startProtocol(self):
        if self.receive_buffer:
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        self.server.send_datagram = self.send

    def stopProtocol(self):
        if self.server.send_datagram == self.send:
            self.server.send_datagram = None

    def send(self, payload, address):
        """Best effort, like any UDP send: an unreachable or invalid address is counted."""
        try:
            self.transport.write(payload, address)
        except (OSError, ValueError):
            self.server.counters["udp_send_failed"] = self.server.counters.get(
                "udp_send_failed", 0) + 1

    def datagramReceived(self, data, address):
        self.server.datagram_received(data, address)
