"""hbbs's UDP 21116 listener: datagrams in, the controller decides, replies out."""

import socket

from twisted.internet.protocol import DatagramProtocol


class RendezvousUDP(DatagramProtocol):
    """Hands each datagram to the controller and gives it a way to send."""

    def __init__(self, server, receive_buffer=0):
        self.server = server
        self.receive_buffer = receive_buffer
        self.effective_buffer = None

    def startProtocol(self):
        get_handle = getattr(self.transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if handle is not None:
            if self.receive_buffer:
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            # Linux reports twice what it grants (bookkeeping included), capped by rmem_max.
            self.effective_buffer = handle.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
            self._sendto = handle.sendto
            self.server.send_reply = self.reply
        self.server.send_datagram = self.send

    def stopProtocol(self):
        if self.server.send_datagram == self.send:
            self.server.send_datagram = None
        if self.server.send_reply == self.reply:
            self.server.send_reply = None

    def send(self, payload, address):
        """Best effort, like any UDP send: an unreachable or invalid address is counted."""
        try:
            self.transport.write(payload, address)
        except (OSError, ValueError):
            self.server.counters["udp_send_failed"] = self.server.counters.get(
                "udp_send_failed", 0) + 1

    def reply(self, payload, address):
        """Answer the source of a datagram just received, straight to the socket.

        ``address`` came from ``recvfrom`` on this very socket, so the checks
        ``transport.write`` makes on every call (numeric address of the right
        family, several microseconds) cannot fail; a full send buffer drops the
        reply, as any UDP loss would, and is counted.
        """
        try:
            self._sendto(payload, address)
        except OSError:
            self.server.counters["udp_send_failed"] = self.server.counters.get(
                "udp_send_failed", 0) + 1

    def datagramReceived(self, data, address):
        self.server.datagram_received(data, address)
