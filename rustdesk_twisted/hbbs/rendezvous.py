"""The rendezvous decisions of hbbs: one controller for UDP, TCP and WebSocket.

Transports hand parsed ``RendezvousMessage``s to :class:`RendezvousServer`;
it answers through the ``channel`` that carried the request (``send``,
``close``, ``address``, ``is_websocket``) or, for a peer's notifications,
through that peer's persistent channel or its UDP address.  The time comes
from the injected clock.  Flows: PROTOCOL.md sections 4.1-4.9.
"""

import ipaddress
import re

from nacl.utils import random as random_bytes
from twisted.internet.defer import Deferred

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted, untrusted
from ..wire import addr_mangle, fields, keys, messages, ownership
from ..wire.rendezvous_pb2 import (
    FetchLocalAddr,
    HttpProxyResponse,
    KeyExchange,
    NatType,
    PunchHole,
    PunchHoleResponse,
    RegisterPeerResponse,
    RegisterPkResponse,
    RelayResponse,
    RendezvousMessage,
    SoftwareUpdate,
)
from .apiproxy import REQUEST_COST, ApiProxy
from .limits import PunchLog, SourceRates, spend
from .registry import Result

Failure = PunchHoleResponse.Failure

DEFAULT_KEEP_ALIVE = 30
# PunchHoleRequest + RequestRelay: per source, per second on average (bursts of three
# seconds' worth); per connection, a burst (a client tries three times) then one a second.
DEFAULT_REQUESTS_PER_IP = 20
DEFAULT_REQUEST_BURST_PER_CONNECTION = 3
# Relay uuids announced to hbbr per requesting source and minute (USERS.md 1.12).
DEFAULT_ANNOUNCES_PER_IP = 60
# A ConfigUpdate goes to every registered peer whose serial is behind (in answer to a
# 13-byte RegisterPeer), so the list it carries stays small.
MAX_RENDEZVOUS_SERVERS = 8
MAX_CONFIG_UPDATE = 512
TOO_MANY_REQUESTS = "Too many connection requests from your address; try again in a minute"
SIGNED_CACHE_SIZE = 65_536
_KNOWN_NAT_TYPES = (NatType.UNKNOWN_NAT, NatType.ASYMMETRIC, NatType.SYMMETRIC)
_REQUEST_PK = {
    request_pk: messages.wrap("register_peer_response",
                              RegisterPeerResponse(request_pk=request_pk)).SerializeToString()
    for request_pk in (False, True)
}
_REGISTER_PK_ANSWERS = {
    result: messages.register_pk_response(result).SerializeToString()
    for result in RegisterPkResponse.Result.values()
}
_VERSION_IN_URL = re.compile(r"(\d+(?:\.\d+)+)")


def _when_known(result, then):
    """Call ``then(result)`` now, or when a Deferred result fires."""
    if isinstance(result, Deferred):
        result.addCallback(then)
    else:
        then(result)


def decode_register_peer(data):
    """``(id, serial)`` of a datagram holding a RegisterPeer in its usual shape, else None.

    The usual shape is what every client sends 4 times a minute (PROTOCOL.md
    2.5): ``32 L 0a N <N bytes of UTF-8 id> [10 S]`` with L, N and S each one
    varint byte and nothing else.  Anything else (other field order, repeated or
    unknown fields, longer varints, bad UTF-8) returns None and goes through the
    protobuf parser, so both paths agree on every input they both accept.
    """
    size = len(data)
    if size < 4 or data[0] != 0x32 or data[1] != size - 2 or data[2] != 0x0A \
            or data[3] > fields.MAX_ID:
        return None
    end = 4 + data[3]
    if end == size:
        serial = 0
    elif end + 2 == size and data[end] == 0x10 and data[end + 1] < 0x80:
        serial = data[end + 1]
    else:
        return None
    try:
        return data[4:end].decode("utf-8"), serial
    except UnicodeDecodeError:
        return None


class WaitingRequesters:
    """A's connections waiting for B's answer, by ``try_into_v4`` address (section 4.3).

    An entry is consumed by its first delivery and removed when its
    connection closes; the table is bounded (oldest entry evicted).
    """

    log = Logger()

    def __init__(self, max_entries=100_000):
        self.max_entries = max_entries
        self.channels = {}

    def park(self, key, channel):
        if key not in self.channels and len(self.channels) >= self.max_entries:
            oldest = next(iter(self.channels))
            self.channels.pop(oldest).parked_key = None
            self.log.warn("waiting-connection table full; dropped the oldest ({key})",
                          key=oldest, event="waiting_table_full")
        previous = self.channels.get(key)
        if previous is not None and previous is not channel:
            previous.parked_key = None
        self.channels[key] = channel
        channel.parked_key = key

    def deliver(self, key, message):
        channel = self.channels.pop(key, None)
        if channel is None:
            return False
        channel.parked_key = None
        channel.send(message)
        return True

    def forget(self, channel):
        key = channel.parked_key
        if key is not None and self.channels.get(key) is channel:
            del self.channels[key]
        channel.parked_key = None


class LanRules:
    """``--mask`` and ``LOCAL-IP`` (section 4.8); without a mask nothing is LAN."""

    def __init__(self, mask=None, local_ip=""):
        self.mask = ipaddress.IPv4Network(mask, strict=False) if mask else None
        self.local_ip = local_ip

    def is_lan(self, host):
        if self.mask is None:
            return False
        try:
            address = ipaddress.ip_address(addr_mangle.try_into_v4(host))
        except ValueError:
            return False
        return address.version == 4 and address in self.mask


def software_version(url):
    """The version named in ``--software-url`` (its last dotted number), or ""."""
    found = _VERSION_IN_URL.findall(url.rsplit("/", 1)[-1] if url else "")
    return found[-1] if found else ""


def check_rendezvous_servers(serial, servers):
    """ValueError when a ConfigUpdate of ``serial`` and ``servers`` is too big to push."""
    size = messages.config_update(serial, list(servers)).ByteSize()
    if len(servers) > MAX_RENDEZVOUS_SERVERS or size > MAX_CONFIG_UPDATE:
        raise ValueError(f"rendezvous servers: at most {MAX_RENDEZVOUS_SERVERS} names and "
                         f"{MAX_CONFIG_UPDATE} bytes in all, got {len(servers)} names in "
                         f"{size} bytes")


class RendezvousServer:
    """hbbs's message handling, transport-neutral."""

    log = Logger()

    def __init__(self, registry, server_key, relays, clock, lan=None, serial=0,
                 rendezvous_servers=(), software_url="", always_use_relay=False,
                 keep_alive=DEFAULT_KEEP_ALIVE, max_waiting=100_000,
                 requests_per_ip=DEFAULT_REQUESTS_PER_IP,
                 request_burst_per_connection=DEFAULT_REQUEST_BURST_PER_CONNECTION,
                 announces_per_ip=DEFAULT_ANNOUNCES_PER_IP, loopback_config_update=False,
                 api_proxy=None):
        self.registry = registry
        self.server_key = server_key
        self.relays = relays
        self.clock = clock
        self.lan = lan if lan is not None else LanRules()
        self.serial = 0
        self.rendezvous_servers = []
        self.configure(serial, rendezvous_servers)
        self.loopback_config_update = loopback_config_update
        self.software_url = software_url
        self.always_use_relay = always_use_relay
        self.keep_alive = keep_alive
        self.waiting = WaitingRequesters(max_waiting)
        self.punch_log = PunchLog()
        self.send_datagram = None
        self.send_reply = None
        self.relay_announcer = None
        self.counters = {}
        self.limits = LimitLog(self.log)
        self.request_rates = SourceRates(requests_per_ip, 3 * requests_per_ip)
        self.request_burst_per_connection = request_burst_per_connection
        self.announce_rates = SourceRates(announces_per_ip / 60.0, announces_per_ip)
        self._signed, self._signed_by = {}, None
        self.api_proxy = api_proxy if api_proxy is not None else ApiProxy(clock)

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    # UDP (section 2.1: only registration, loopback ConfigUpdate and SoftwareUpdate)

    def datagram_received(self, data, address):
        # RegisterPeer arrives every 15 s from every online peer: its usual shape
        # skips the protobuf parser and answers with cached bytes (PERF-NOTES.md).
        # data[1] == size - 2 < 0x80 holds for every such datagram (at most 129 bytes).
        if len(data) <= 129 and data[:1] == b"\x32":
            decoded = decode_register_peer(data)
            if decoded is not None:
                self._register_peer(decoded[0], decoded[1], address)
                return
        message = messages.parse(data)
        if message is None:
            self._count("udp_garbage")
            return
        kind = message.WhichOneof("union")
        if kind is not None and fields.problem(kind, getattr(message, kind)) is not None:
            # Counted, never logged: a UDP source may be forged, so it is no one to name.
            self.limits.count("udp-message-field-size")
            return
        now = self.clock.seconds()
        if kind == "register_peer":
            self._register_peer(message.register_peer.id, message.register_peer.serial, address)
        elif kind == "register_pk":
            request = message.register_pk
            if request.old_id:
                # Change-ID needs a challenge on a connection; official clients use TCP anyway.
                self._count("change_id_udp_ignored")
                return
            result = self.registry.register_pk(request.id, request.uuid, request.pk, address, now)
            if result is None:
                return
            self._count("register_pk")
            _when_known(result, lambda answer: self._answer_register_pk(answer, address))
        elif kind == "configure_update":
            self._configure_update(message.configure_update, address)
        elif kind == "software_update":
            self._software_update(message.software_update, len(data), address)
        else:
            self._count("udp_ignored")

    def _answer_register_pk(self, result, address):
        """Over UDP, once the registration is committed (or refused): OK means on disk.

        The answer goes to the datagram's source, from the socket it came in on.
        """
        if result == Result.SERVER_ERROR:
            self._count("register_pk_refused_unsaved")
        send = self.send_reply if self.send_reply is not None else self.send_datagram
        if send is not None:
            send(_REGISTER_PK_ANSWERS[result], address)

    def _register_peer(self, peer_id, serial, address):
        if not peer_id:
            return
        request_pk = self.registry.register_peer(peer_id, address, self.clock.seconds())
        counters = self.counters
        counters["register_peer"] = counters.get("register_peer", 0) + 1
        # The reply goes back to the source the datagram came from: no address check needed.
        send = self.send_reply if self.send_reply is not None else self.send_datagram
        send(_REQUEST_PK[request_pk], address)
        if self.serial > serial and not request_pk:
            # Larger than the request, so only for a source whose IP the peer registered from.
            self.send_datagram(self._config_update().SerializeToString(), address)

    def _config_update(self):
        return messages.wrap("configure_update",
                             messages.config_update(self.serial, self.rendezvous_servers))

    def configure(self, serial, servers):
        """Set the serial and rendezvous-server list pushed in ConfigUpdate (section 2.1).

        ValueError when the list is too long to send to every peer.
        """
        servers = list(servers)
        check_rendezvous_servers(serial, servers)
        self.serial = serial
        self.rendezvous_servers = servers

    def _configure_update(self, update, address):
        """The official loopback ConfigureUpdate: any local process could set what every peer
        is sent, so it is refused unless ``--loopback-console Y`` restores it."""
        if not addr_mangle.is_loopback(address[0]):
            self._count("udp_ignored")
            return
        now = self.clock.seconds()
        if not self.loopback_config_update:
            self.limits.hit(now, "config-update-over-udp", address[0],
                            "refused: use the console command rendezvous-servers")
            return
        if update.serial <= self.serial:
            return
        try:
            self.configure(update.serial, update.rendezvous_servers)
        except ValueError as e:
            self.limits.hit(now, "config-update-size", address[0], str(e))
            return
        self.log.info("{ip} set serial {serial}, rendezvous servers {servers}", ip=address[0],
                      serial=self.serial, servers=untrusted(",".join(self.rendezvous_servers)),
                      event="config_update")

    def _software_update(self, update, request_length, address):
        version = software_version(self.software_url)
        if not version or update.url == version:
            return
        reply = messages.wrap("software_update", SoftwareUpdate(url=self.software_url))
        payload = reply.SerializeToString()
        if len(payload) <= request_length:
            self.send_datagram(payload, address)

    # Streams: TCP 21116 and WebSocket 21118 (sections 4.2-4.4, 4.6, 4.7)

    def stream_message(self, channel, message):
        """Handle one message from a stream; return False when the connection should close."""
        kind = message.WhichOneof("union")
        if kind is None:
            return False
        now = self.clock.seconds()
        problem = fields.problem(kind, getattr(message, kind))
        if problem is not None:
            self.limits.hit(now, "message-field-size", source_key(channel.key[0]), problem)
            return False
        if kind == "punch_hole_request":
            if not self._admit_request(channel, kind, now):
                return False
            self._punch_hole_request(channel, message.punch_hole_request, now)
            return True
        if kind == "request_relay":
            if not self._admit_request(channel, kind, now):
                return False
            self._request_relay(channel, message.request_relay, now)
            return True
        if kind == "register_pk":
            return self._stream_register_pk(channel, message.register_pk, now)
        if kind == "http_proxy_request":
            if not self._admit_request(channel, kind, now, REQUEST_COST):
                return False
            return self.api_proxy.handle(channel, message.http_proxy_request, now)
        if kind == "punch_hole_sent":
            self._punch_hole_sent(channel, message.punch_hole_sent)
        elif kind == "local_addr":
            self._local_addr(message.local_addr)
        elif kind == "relay_response":
            self._relay_response(channel, message.relay_response)
        elif kind == "test_nat_request":
            self.test_nat(channel, message.test_nat_request, with_config=True)
        elif kind == "online_request":
            self.online(channel, message.online_request, now)
        return False

    def stream_heartbeat(self, channel):
        """An empty frame: a registration channel's echo keeps its peer online."""
        peer_id = channel.registered_id
        if peer_id is None:
            return False
        peer = self.registry.get(peer_id)
        if peer is None or peer.channel is not channel:
            return False
        peer.last_reg_time = self.clock.seconds()
        return True

    def stream_closed(self, channel):
        self.waiting.forget(channel)
        self.api_proxy.forget(channel)
        peer_id = channel.registered_id
        if peer_id is None:
            return
        peer = self.registry.get(peer_id)
        if peer is not None and peer.channel is channel:
            peer.channel = None
            self.log.info("{ip} closed the {transport} registration of {peer_id}",
                          ip=channel.key[0], peer_id=untrusted(peer_id),
                          transport=channel.transport_name, event="channel_registration_closed")

    def _stream_register_pk(self, channel, request, now):
        if request.old_id:
            return self._change_id(channel, request, now)
        if not request.pk:
            return False
        result = self.registry.register_pk(request.id, request.uuid, request.pk,
                                           channel.address, now)
        if result is None:
            return False
        _when_known(result, lambda answer: self._registered_on_channel(channel, request.id, answer))
        return True

    def _change_id(self, channel, request, now):
        """Change-ID (section 4.2 b1), only with a proof of the id's key (wire/ownership.py).

        A request without proof, which is all an official client sends, is
        answered NOT_SUPPORT (it shows "server_not_support"; it reads one
        answer and skips at most one KeyExchange, the secure_tcp offer).  A
        challenge follows it, and the connection stays open for the signed
        request; the challenge is used up by that request, so a proof fits
        only this connection.
        """
        if not request.pk:
            self._count("change_id_without_proof")
            self.log.debug("{ip} change id {old_id} -> {new_id}: NOT_SUPPORT (no proof of its "
                           "key)", ip=channel.key[0], old_id=untrusted(request.old_id),
                           new_id=untrusted(request.id), event="change_id_challenged")
            channel.send(messages.register_pk_response(Result.NOT_SUPPORT))
            channel.change_id_challenge = random_bytes(ownership.CHALLENGE_SIZE)
            channel.send(messages.wrap("key_exchange",
                                       KeyExchange(keys=[channel.change_id_challenge])))
            return True
        challenge, channel.change_id_challenge = channel.change_id_challenge, None
        result = self.registry.change_id(request.old_id, request.id, request.uuid, request.pk,
                                         challenge, channel.address, now)
        _when_known(result, lambda answer: self._answer_and_close(channel, answer))
        return True

    def _answer_and_close(self, channel, result):
        """After the commit: the answer, then the end of the one-shot connection."""
        self._count("change_id_ok" if result == Result.OK else "change_id_refused")
        channel.send(messages.register_pk_response(result))
        channel.close()

    def _registered_on_channel(self, channel, peer_id, result):
        """TCP/WebSocket RegisterPk answered (after its commit): OK makes the channel B's."""
        peer = self.registry.get(peer_id) if result == Result.OK else None
        if channel.closed:
            if peer is not None and peer.channel is None and peer.address == channel.address:
                peer.address = None  # the registration's connection is gone: B is not reachable
            return
        if peer is None:
            channel.send(messages.register_pk_response(result))
            return
        previous = peer.channel
        if previous is not channel:
            if previous is not None:
                previous.registered_id = None
                previous.close()
            peer.channel = channel
            peer.address = None
            channel.registered_id = peer_id
            channel.start_heartbeats(self.keep_alive / 2.0)
            self.log.info("{ip} registered {peer_id} over {transport}",
                          ip=channel.key[0], peer_id=untrusted(peer_id),
                          transport=channel.transport_name, event="channel_registration")
        channel.send(messages.register_pk_response(result, keep_alive=self.keep_alive))

    def _notify(self, peer, message):
        """Deliver a server-to-B message over B's channel, else to its UDP address."""
        if peer.channel is not None:
            peer.channel.send(message)
        elif peer.address is not None and self.send_datagram is not None:
            self.send_datagram(message.SerializeToString(), peer.address)

    def _admit_request(self, channel, kind, now, cost=1):
        """PunchHoleRequest / RequestRelay / HttpProxyRequest within their rates, per
        connection and per source; a request takes ``cost`` of each.

        A connection past its burst is closed; a source past its rate gets a
        refusal the client shows (then the connection closes), so that a flood
        costs counters, not lookups, notices to peers or log lines.
        """
        burst = self.request_burst_per_connection
        bucket = getattr(channel, "request_bucket", None)
        if bucket is None:
            bucket = channel.request_bucket = [burst, now]
        source = source_key(channel.key[0])
        if not spend(bucket, 1.0, burst, now, min(cost, burst)):
            self.limits.hit(now, "requests-per-connection", source,
                            f"more than {burst} in a burst")
            return False
        if self.request_rates.allow(source, now, cost):
            return True
        self.limits.hit(now, "requests-per-ip", source, f"{self.request_rates.rate:g}/s")
        if kind == "http_proxy_request":
            channel.send(messages.wrap("http_proxy_response",
                                       HttpProxyResponse(error=TOO_MANY_REQUESTS)))
            return False
        self._park(channel)
        if kind == "punch_hole_request":
            refusal = messages.wrap("punch_hole_response",
                                    PunchHoleResponse(other_failure=TOO_MANY_REQUESTS))
        else:
            refusal = messages.wrap("relay_response",
                                    RelayResponse(refuse_reason=TOO_MANY_REQUESTS))
        self.waiting.deliver(channel.key, refusal)
        return False

    def _log_refusal(self, channel, target, outcome, kind):
        """Routine refusals are counted (and logged at debug); a wrong key is a warning."""
        log = self.log.warn if outcome == "LICENSE_MISMATCH" else self.log.debug
        log("{requester} {kind} {outcome} to {target}", kind=kind, outcome=outcome,
            requester=channel.key[0], target=untrusted(target), event="punch_refused")
        self._count(f"{kind}_{outcome}")

    def _park(self, channel):
        if channel.parked_key is None:
            self.waiting.park(channel.key, channel)

    def _punch_hole_request(self, channel, request, now):
        self._park(channel)
        key = channel.key
        target = request.id
        licence = self.server_key.licence
        if licence and request.licence_key != licence:
            self._log_refusal(channel, target, "LICENSE_MISMATCH", "punch")
            self.waiting.deliver(key, messages.punch_hole_failure(Failure.LICENSE_MISMATCH))
            return
        peer = self.registry.get(target)
        if peer is None:
            self._log_refusal(channel, target, "ID_NOT_EXIST", "punch")
            self.waiting.deliver(key, messages.punch_hole_failure(Failure.ID_NOT_EXIST))
            return
        if not peer.online(now):
            self._log_refusal(channel, target, "OFFLINE", "punch")
            self.waiting.deliver(key, messages.punch_hole_failure(Failure.OFFLINE))
            return
        requester_host = key[0]
        self.punch_log.record(now, key[0], peer.ip, target)
        relay = self.relays.next()
        nat_type = request.nat_type
        requester_lan = self.lan.is_lan(requester_host)
        target_lan = self.lan.is_lan(peer.ip)
        if self.always_use_relay or requester_lan != target_lan:
            if target_lan:
                relay = self.lan.local_ip
            nat_type = NatType.SYMMETRIC
        same_intranet = not channel.is_websocket and (
            (requester_lan and target_lan) or key[0] == peer.ip)
        socket_addr = addr_mangle.encode(channel.address, addr_mangle.timestamp(now))
        if same_intranet:
            notice = messages.wrap("fetch_local_addr",
                                   FetchLocalAddr(socket_addr=socket_addr, relay_server=relay))
            outcome = "fetch_local_addr"
        else:
            notice = messages.wrap("punch_hole", PunchHole(socket_addr=socket_addr,
                                                           nat_type=nat_type, relay_server=relay))
            outcome = "punch_hole"
        self._notify(peer, notice)
        channel.expected_answer = (peer.id, None)
        self._count(f"punch_{outcome}")
        self.log.debug("{requester} punch {outcome} to {target} relay {relay}",
                       outcome=outcome, requester=requester_host, target=untrusted(target),
                       relay=untrusted(relay), event="punch_forwarded")

    def _request_relay(self, channel, request, now):
        """A's RequestRelay (section 4.4 d2): forward to B with A's address."""
        self._park(channel)
        peer = self.registry.get(request.id)
        if peer is None or not peer.online(now):
            outcome = "ID_NOT_EXIST" if peer is None else "OFFLINE"
            self._log_refusal(channel, request.id, outcome, "relay")
            reason = ("ID does not exist" if peer is None else "Remote desktop is offline")
            self.waiting.deliver(channel.key, messages.wrap(
                "relay_response", RelayResponse(uuid=request.uuid, refuse_reason=reason)))
            return
        request.socket_addr = addr_mangle.encode(channel.address, addr_mangle.timestamp(now))
        forwarded = RendezvousMessage()
        forwarded.request_relay.CopyFrom(request)
        if forwarded.ByteSize() > fields.MAX_FORWARDED:
            self.limits.hit(now, "message-field-size", source_key(channel.key[0]),
                            f"request_relay of {forwarded.ByteSize()} bytes to forward")
            return
        self._notify(peer, forwarded)
        channel.expected_answer = (peer.id, request.uuid)
        self._count("relay_forwarded")
        self.log.debug("{requester} relay request {uuid} to {target}", uuid=untrusted(request.uuid),
                       requester=channel.key[0], target=untrusted(request.id),
                       event="relay_forwarded")

    def signed_pk(self, version, peer_id):
        """get_pk (section 6.1): the signed IdPk, or empty bytes when it cannot be signed."""
        if not version or self.server_key.signing is None:
            return b""
        peer = self.registry.get(peer_id)
        if peer is None:
            return b""
        # Ed25519 signatures are deterministic: the same (id, pk) always signs to the
        # same bytes, so the ~50 us of signing is paid once per peer key, not per punch.
        signing = self.server_key.signing
        if self._signed_by is not signing:
            self._signed, self._signed_by = {}, signing
        cached = self._signed.get((peer_id, peer.pk))
        if cached is None:
            if len(self._signed) >= SIGNED_CACHE_SIZE:
                self._signed.clear()
            cached = self._signed[(peer_id, peer.pk)] = keys.sign_id_pk(signing, peer_id, peer.pk)
        return cached

    def _punch_hole_sent(self, channel, sent):
        requester = addr_mangle.normalize(addr_mangle.decode(sent.socket_addr))
        response = PunchHoleResponse(
            socket_addr=addr_mangle.encode(channel.address,
                                           addr_mangle.timestamp(self.clock.seconds())),
            pk=self.signed_pk(sent.version, sent.id), relay_server=sent.relay_server)
        if sent.nat_type in _KNOWN_NAT_TYPES:
            response.nat_type = sent.nat_type
        self._deliver_answer(requester, messages.wrap("punch_hole_response", response), sent.id)

    def _local_addr(self, local):
        requester = addr_mangle.normalize(addr_mangle.decode(local.socket_addr))
        response = PunchHoleResponse(socket_addr=local.local_addr,
                                     pk=self.signed_pk(local.version, local.id),
                                     relay_server=local.relay_server, is_local=True)
        self._deliver_answer(requester, messages.wrap("punch_hole_response", response), local.id)

    def _relay_response(self, channel, response):
        """B's RelayResponse (section 4.4 d1 steps 1-4), forwarded with unknown fields kept."""
        requester = addr_mangle.normalize(addr_mangle.decode(response.socket_addr))
        uuid = self._brokered_uuid(channel, requester, response)
        response.ClearField("socket_addr")
        if response.WhichOneof("union") == "id" and response.id:
            response.pk = self.signed_pk(response.version, response.id)
        if response.relay_server and self.lan.mask is not None:
            if self.lan.is_lan(requester[0]):
                response.relay_server = self.lan.local_ip
            elif response.relay_server == self.lan.local_ip:
                response.relay_server = self.relays.next()
        if uuid is not None:
            self.relay_announcer(uuid)
        forwarded = RendezvousMessage()
        forwarded.relay_response.CopyFrom(response)
        self._deliver_answer(requester, forwarded, "relay")

    def _deliver_answer(self, requester, message, source):
        kind = message.WhichOneof("union")
        if self.waiting.deliver(requester, message):
            self._count(f"answer_{kind}_delivered")
        else:
            self._count(f"answer_{kind}_unclaimed")
            self.log.debug("{kind} from {source} for {requester}: nobody waiting", kind=kind,
                           source=source, requester=requester, event="answer_unclaimed")

    def _brokered_uuid(self, channel, requester, response):
        """The relay uuid this RelayResponse may announce to hbbr, or None.

        Only B's answer to a request hbbs itself forwarded to B: the requester
        is still waiting for it, the answer comes from B's address, and that
        requester has announced fewer than its quota of uuids this minute.
        The uuid is A's (RequestRelay, section 4.4 d2) or B's (d1).  Anything
        else is still forwarded, as the official server does, but the relay
        will not pair it.
        """
        if self.relay_announcer is None:
            return None
        now = self.clock.seconds()
        waiting = self.waiting.channels.get(requester)
        expected = getattr(waiting, "expected_answer", None)
        uuid, reason = None, None
        if expected is None:
            reason = "answers no request forwarded to its sender"
        else:
            target, uuid = expected
            peer = self.registry.get(target)
            if response.WhichOneof("union") == "id" and response.id != target:
                reason = "names another peer than the one asked"
            elif peer is None or source_key(channel.key[0]) != source_key(peer.ip):
                reason = f"comes from another address than {quoted(target)}'s"
            elif uuid is None:
                uuid = response.uuid
                reason = None if uuid else "carries no uuid"
        if reason is None and not self.announce_rates.allow(source_key(requester[0]), now):
            reason = f"requester {requester[0]} is over its relay uuid quota"
        if reason is not None:
            self.limits.hit(now, "relay-response-not-announced", source_key(channel.key[0]),
                            reason)
            return None
        waiting.expected_answer = None
        return uuid

    # Also served on TCP 21115

    def test_nat(self, channel, request, with_config):
        config = None
        if with_config and self.serial > request.serial:
            config = messages.config_update(self.serial, self.rendezvous_servers)
        channel.send(messages.test_nat_response(channel.address[1], config))

    def online(self, channel, request, now):
        is_online = self.registry.is_online
        channel.send(messages.online_bitmap([is_online(p, now) for p in request.peers]))
