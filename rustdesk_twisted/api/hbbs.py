"""What the API asks of the hbbs beside it, through hbbs's own doors.

* Who is online: the official ``OnlineRequest`` on TCP PORT-1 (PROTOCOL.md
  section 4.6), the same question a client asks, so any hbbs answers it.
* A peer's registered key and uuid (switch-sides grants, deployment): read from
  hbbs's peer table, opened read-only, never written.
* Release and rename (the web console's change-ID): hbbs's console socket
  (``peer-release``, ``peer-rename``), so hbbs's memory and disk stay one.

None of this is needed for the API to answer clients: without an hbbs every
device shows offline and console actions say why they cannot be done.
"""

import sqlite3

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from ..admin import console_command, server_running
from ..hbbs.dbfile import read_only_uri
from ..logs import Logger
from ..wire import messages
from ..wire.framing import FrameDecoder, encode_frame
from ..wire.rendezvous_pb2 import OnlineRequest

ONLINE_TIMEOUT = 3.0
ONLINE_BATCH = 1000
ONLINE_CACHE_SECONDS = 5.0
MAX_FRAME = 1 << 20


class _OnlineQuery(Protocol):
    """One OnlineRequest, one OnlineResponse (a leading KeyExchange skipped), close."""

    def __init__(self, ids):
        self.ids = ids
        self.done = Deferred()
        self.decoder = FrameDecoder(MAX_FRAME)

    def connectionMade(self):
        self.transport.write(encode_frame(messages.wrap(
            "online_request", OnlineRequest(id="rustdesk-api", peers=self.ids)
        ).SerializeToString()))

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
        except ValueError:
            frames = []
            self.transport.loseConnection()
        for frame in frames:
            message = messages.parse(frame)
            if message is None or messages.kind(message) == "key_exchange":
                continue
            if messages.kind(message) == "online_response" and not self.done.called:
                states = message.online_response.states
                self.done.callback({peer for i, peer in enumerate(self.ids)
                                    if (i >> 3) < len(states)
                                    and states[i >> 3] & (0x80 >> (i & 7))})
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


class HbbsLink:
    """``online(ids)``, ``peer_key(id)``, ``release(id)``, ``rename(old, new)``.

    ``nat`` is ``(host, port)`` of hbbs's PORT-1 listener (None: no hbbs);
    ``peer_db`` the path of its db_v2.sqlite3; ``console`` the path of its console
    socket; ``blocking(f, *args)`` runs file reads off the reactor thread.
    """

    log = Logger()

    def __init__(self, reactor, nat=None, peer_db=None, console=None, blocking=None):
        self.reactor = reactor
        self.nat = nat
        self.peer_db = peer_db
        self.console = console
        self.blocking = blocking
        self.cache = {}
        self.reachable = True

    def online(self, ids):
        """Deferred of the subset of ``ids`` online now (empty when hbbs cannot be asked)."""
        ids = list(dict.fromkeys(ids))
        now = self.reactor.seconds()
        fresh = {i for i in ids if i in self.cache and now - self.cache[i][1] < ONLINE_CACHE_SECONDS}
        wanted = [i for i in ids if i not in fresh]
        result = {i for i in fresh if self.cache[i][0]}
        if not wanted or self.nat is None:
            return succeed(result)
        batches = [wanted[k:k + ONLINE_BATCH] for k in range(0, len(wanted), ONLINE_BATCH)]
        d = succeed(None)
        for batch in batches:
            d.addCallback(lambda _, batch=batch: self._ask(batch))
            d.addCallback(self._remember, batch, result)
        d.addErrback(self._unreachable)
        return d.addCallback(lambda _: result)

    def _ask(self, batch):
        host, port = self.nat
        query = _OnlineQuery(batch)
        endpoint = HostnameEndpoint(self.reactor, host, port, timeout=ONLINE_TIMEOUT)
        d = connectProtocol(endpoint, query)
        d.addCallback(lambda _: query.done.addTimeout(ONLINE_TIMEOUT, self.reactor))
        return d

    def _remember(self, online, batch, result):
        now = self.reactor.seconds()
        if len(self.cache) > 200_000:
            self.cache.clear()
        for peer in batch:
            self.cache[peer] = (peer in online, now)
        result.update(online)
        if not self.reachable:
            self.reachable = True
            self.log.info("hbbs answers online queries again at {host}:{port}",
                          host=self.nat[0], port=self.nat[1], event="api.hbbs_link")

    def _unreachable(self, failure):
        if self.reachable:
            self.reachable = False
            self.log.warn("hbbs does not answer online queries at {host}:{port} ({why}); "
                          "devices show offline until it does", host=self.nat[0],
                          port=self.nat[1], why=failure.getErrorMessage(),
                          event="api.hbbs_link")

    def peer_key(self, rustdesk_id):
        """Deferred of ``(uuid bytes, pk bytes)`` hbbs registered for the id, or None."""
        if self.peer_db is None or self.blocking is None:
            return succeed(None)
        return self.blocking(_read_peer, self.peer_db, rustdesk_id)

    def release(self, rustdesk_id):
        return self._console(f"peer-release {rustdesk_id}")

    def rename(self, old_id, new_id):
        return self._console(f"peer-rename {old_id} {new_id}")

    def _console(self, command):
        if self.console is None or not server_running(self.console):
            return succeed("hbbs is not running beside this API server (no console socket)\n")
        return console_command(self.reactor, self.console, command)


def _read_peer(path, rustdesk_id):
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        row = connection.execute("select uuid, pk from peer where id = ?",
                                 (rustdesk_id,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return (bytes(row[0]), bytes(row[1])) if row is not None else None
