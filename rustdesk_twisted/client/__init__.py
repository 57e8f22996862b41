"""A reference RustDesk client on Twisted: both roles, as the official client behaves.

:class:`ControlledPeer` (B) registers and answers hbbs; :class:`ControllingPeer`
(A) asks for B and ends up with a direct or relayed stream carrying the
peer handshake; :func:`http_proxy_request` reaches the API through hbbs.  All
run on a *host* that supplies the clock and sockets: :class:`ReactorHost` for
real sockets, or the in-memory one of the tests.
"""

from .apiproxy import ApiProxyError, http_proxy_request
from .controlled import ControlledPeer
from .controlling import FAILURE_TEXT, ConnectOutcome, ControllingPeer
from .rendezvous import (
    CLIENT_VERSION,
    PUBLIC_SERVER_KEY,
    DatagramCallback,
    RendezvousClient,
    ServerAddress,
    increase_port,
)
from .session import ControlledSide, ControllingSide, PeerSession, SessionError
from .sockets import ReactorHost
from .streams import FramedRendezvousClient, WebSocketRendezvousClient

__all__ = [
    "ApiProxyError",
    "CLIENT_VERSION",
    "FAILURE_TEXT",
    "PUBLIC_SERVER_KEY",
    "ConnectOutcome",
    "ControlledPeer",
    "ControlledSide",
    "ControllingPeer",
    "ControllingSide",
    "DatagramCallback",
    "FramedRendezvousClient",
    "PeerSession",
    "ReactorHost",
    "RendezvousClient",
    "ServerAddress",
    "SessionError",
    "WebSocketRendezvousClient",
    "http_proxy_request",
    "increase_port",
]
