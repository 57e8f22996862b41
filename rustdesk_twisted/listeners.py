"""Server endpoints from endpoint strings, with Unix sockets never wider than 0600.

Twisted's ``unix:`` endpoint defaults to mode 0666, so an operator's
``--console unix:/path`` gave every local user the console (issue 9 item
9).  Here a Unix socket's mode is the one given (``mode=``) with every bit
beyond 0600 removed (Twisted's default 0666 becomes 0600).  Twisted applies it by chmod
right after bind and before listen; until listen a connect is refused, so
the umask leaves no window in which another user could connect.
"""

import os

from twisted.internet.endpoints import UNIXServerEndpoint, _parseServer, serverFromString

OWNER_ONLY = 0o600


def server_endpoint(reactor, description):
    """The IStreamServerEndpoint of ``description``; raises ValueError when it does not parse."""
    kind, args, kwargs = _parseServer(description, None)
    if kind != "UNIX":
        return serverFromString(reactor, description)
    address, _ = args
    return UNIXServerEndpoint(reactor, address, backlog=kwargs["backlog"],
                              mode=kwargs["mode"] & OWNER_ONLY,
                              wantPID=kwargs["wantPID"])


def unix_socket_in(directory, name):
    """The endpoint string of a console socket ``name`` in ``directory``, locked, owner only."""
    path = os.path.join(directory, name).replace(":", "\\:")
    return f"unix:{path}:mode=600:lockfile=1"
