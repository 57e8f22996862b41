"""``twistd rustdesk-hbbs``: options, configuration and the service tree.

Configuration follows the official server (PROTOCOL.md section 9): flags,
``.env`` and ``--config`` INI in the data directory, and environment
variables, with CLI > --config > .env > environment.  Building the service
reads configuration only; keys, the database and sockets open in
``startService``.
"""

import gc
import os
import re
import resource
import socket

from twisted.application import internet, service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.abstract import isIPv6Address
from twisted.web.client import URI, Agent, HTTPConnectionPool

from .. import __version__, adminweb, logs
from ..admission import ConnectionLimits, DescriptorBudget
from ..config import ConfigError, layered_settings
from ..listeners import server_endpoint, unix_socket_in
from ..logs import Logger
from ..pluginoptions import PluginOptions
from ..startup import ExitOnStartupError
from ..wire import keys as keyfiles
from ..wire.addr_mangle import is_loopback
from ..wire.websocket import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_PROXY,
    DEFAULT_MAX_REQUEST_HEAD,
    TrustedProxies,
    WebSocketAdmission,
    websocket_site,
)
from .announce import relay_announcer
from .apiproxy import (
    DEFAULT_IN_FLIGHT_PER_IP,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_RESPONSE,
    DEFAULT_TIMEOUT,
    ApiProxy,
)
from .console import HbbsConsole, console_factory
from .dirlock import DataDirectoryLock
from .limits import IpBlocker
from .registry import PeerRegistry
from .relays import RelayHealthCheck, RelayRotation, parse_relay_list, with_default_port
from .rendezvous import (
    DEFAULT_ANNOUNCES_PER_IP,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_REQUEST_BURST_PER_CONNECTION,
    DEFAULT_REQUESTS_PER_IP,
    LanRules,
    RendezvousServer,
    check_rendezvous_servers,
)
from .store import PeerStore
from .streams import (
    DEFAULT_MAX_FRAME,
    NatTestTCP,
    RendezvousTCPFactory,
)
from .udp import RendezvousUDP
from .websocket import RendezvousWebSocketFactory

BACKLOG = 1024
# 4 MiB holds ~100 ms of heartbeats at 70k/s; the default ~200 KiB overflows during any
# pause of the reactor (bench/README.md: 40k/s instead of 80k/s).
DEFAULT_RMEM = 4 * 1024 * 1024
MAINTENANCE_INTERVAL = 60.0

# (long flag, short flag, setting name, help)
OPTIONS = [
    ("port", "p", "PORT", "Main port (default 21116); also PORT-1 (NAT test) and PORT+2 (WebSocket)."),
    ("bind", "b", "BIND", "IP address every listener binds to (default: all, dual-stack)."),
    ("key", "k", "KEY", "Key: unset/'-'/'_' use id_ed25519 (generated on first start), "
                        "'' signs but checks nothing, a base64 secret key, or a licence string."),
    ("relay-servers", "r", "RELAY-SERVERS", "Comma-separated hbbr addresses suggested to clients."),
    ("relay-announce", None, "RELAY-ANNOUNCE",
     "Comma-separated client endpoints of hbbr announce listeners (e.g. "
     "tcp:relay.example.com:21122); each relay uuid brokered is announced there, signed "
     "with this server's key (the relay needs only id_ed25519.pub), before the client "
     "hears of it."),
    ("rmem", "M", "RMEM", "UDP receive buffer in bytes (default 4194304, capped by the kernel's "
                          "net.core.rmem_max; 0 leaves the system default)."),
    ("mask", None, "MASK", "IPv4 CIDR of the LAN, enables the LAN rules (LOCAL-IP then applies)."),
    ("serial", "s", "SERIAL", "ConfigUpdate serial (deprecated)."),
    ("rendezvous-servers", "R", "RENDEZVOUS-SERVERS", "Servers pushed in ConfigUpdate (deprecated)."),
    ("software-url", "u", "SOFTWARE-URL", "Legacy SoftwareUpdate download URL (deprecated)."),
    ("config", "c", None, "Extra INI file of settings (KEY=value lines)."),
    ("data-dir", None, "DATA-DIR", "Directory of id_ed25519, db_v2.sqlite3 and .env (default: .)."),
    ("listen-tcp", None, "LISTEN-TCP", "Endpoint for TCP rendezvous (default tcp:PORT)."),
    ("listen-udp", None, "LISTEN-UDP", "[address:]port for UDP registration (default PORT)."),
    ("listen-nat", None, "LISTEN-NAT", "Endpoint for the NAT test / online query (default tcp:PORT-1)."),
    ("listen-ws", None, "LISTEN-WS", "Endpoint for WebSocket rendezvous (default tcp:PORT+2)."),
    ("console", None, "CONSOLE", "Endpoint of the admin console (default "
                                 "unix:DATA_DIR/hbbs-console.sock), or 'off'; a Unix socket "
                                 "is never wider than 0600."),
    ("loopback-console", None, "LOOPBACK-CONSOLE",
     "Y: also treat loopback peers on PORT-1 as console clients, and accept a loopback UDP "
     "ConfigureUpdate, as the official server does."),
    ("trusted-proxies", None, "TRUSTED-PROXIES",
     "CIDRs whose X-Real-IP/X-Forwarded-For are believed (default 127.0.0.0/8,::1)."),
    ("keep-alive", None, "KEEP-ALIVE",
     f"Seconds announced to TCP/WebSocket-registered peers (default {DEFAULT_KEEP_ALIVE})."),
    ("max-frame", None, "MAX-FRAME", f"Largest frame accepted, bytes (default {DEFAULT_MAX_FRAME})."),
    ("ip-limit-per-minute", None, "IP-LIMIT-PER-MINUTE",
     "RegisterPk per minute from one IP before TOO_FREQUENT (default 30)."),
    ("ip-limit-ids-per-day", None, "IP-LIMIT-IDS-PER-DAY", "Distinct ids per IP per day (default 300)."),
    ("ip-limit-exempt", None, "IP-LIMIT-EXEMPT", "CIDRs exempt from the IP limits (comma-separated)."),
    ("max-peers", None, "MAX-PEERS", "Bound of the peer table (default 4000000)."),
    ("max-connections-per-ip", None, "MAX-CONNECTIONS-PER-IP",
     "Simultaneous TCP/WebSocket connections per IP (default 256)."),
    ("max-connections-per-proxy", None, "MAX-CONNECTIONS-PER-PROXY",
     "Simultaneous WebSocket connections from one trusted proxy; the clients behind it count "
     f"per IP from their forwarded address (default {DEFAULT_MAX_CONNECTIONS_PER_PROXY})."),
    ("handshake-timeout", None, "HANDSHAKE-TIMEOUT",
     "Seconds from accept within which a WebSocket connection must complete its upgrade "
     f"(default {DEFAULT_HANDSHAKE_TIMEOUT})."),
    ("max-request-head", None, "MAX-REQUEST-HEAD",
     f"Bytes a WebSocket connection may send before its upgrade (default "
     f"{DEFAULT_MAX_REQUEST_HEAD})."),
    ("requests-per-ip", None, "REQUESTS-PER-IP",
     "PunchHoleRequest/RequestRelay per second from one IP (IPv6: one /64), bursts of three "
     "times that, before TOO_MANY_REQUESTS (default 20)."),
    ("request-burst-per-connection", None, "REQUEST-BURST-PER-CONNECTION",
     "PunchHoleRequest/RequestRelay one TCP/WebSocket connection may send at once, then one "
     "per second; past it the connection is closed (default 3)."),
    ("relay-announces-per-ip", None, "RELAY-ANNOUNCES-PER-IP",
     "Relay uuids one requester IP may have announced to the relays per minute (default 60)."),
    ("key-file", None, "KEY-FILE", "File holding the KEY value, so a secret stays off the "
                                   "command line (any NAME_FILE works the same way)."),
    ("admin", None, "ADMIN", "Endpoint of the admin HTTP listener (/healthz, /readyz, /metrics, "
                             "/status; default tcp:PORT+4:interface=127.0.0.1), or 'off'."),
    ("admin-token", None, "ADMIN-TOKEN",
     "Bearer token for /metrics and /status; required when --admin is not loopback."),
    ("admin-token-file", None, "ADMIN-TOKEN-FILE", "File holding ADMIN-TOKEN."),
    ("api-server", None, "API-SERVER",
     "Where API calls that clients send over TCP PORT (HttpProxyRequest, after secure_tcp) "
     "go: an http(s) URL (default http://127.0.0.1:PORT-2), or 'off'. The API sees the "
     "client's address in X-Forwarded-For and X-Real-IP; it must trust them from this host."),
    ("api-proxy-max-body", None, "API-PROXY-MAX-BODY",
     f"Largest request body proxied to the API, bytes (default {DEFAULT_MAX_BODY}); a secured "
     "connection accepts frames this large."),
    ("api-proxy-max-response", None, "API-PROXY-MAX-RESPONSE",
     f"Largest API response body passed back, bytes (default {DEFAULT_MAX_RESPONSE})."),
    ("api-proxy-timeout", None, "API-PROXY-TIMEOUT",
     f"Seconds the API has to answer a proxied request (default {DEFAULT_TIMEOUT:g})."),
    ("api-proxy-in-flight-per-ip", None, "API-PROXY-IN-FLIGHT-PER-IP",
     "Proxied API requests from one IP (IPv6: one /64) waiting for the API at once "
     f"(default {DEFAULT_IN_FLIGHT_PER_IP}); each also counts twice in --requests-per-ip."),
    ("log-format", None, "LOG-FORMAT", "text (default) or json: one JSON object per line."),
    ("log-level", None, "LOG-LEVEL", "debug, info (default), warn or error: events below it "
                                     "are dropped before they cost any output."),
]


class Options(PluginOptions):
    """Every option is also read from the environment, .env and --config under its NAME."""

    synopsis = "[options]"
    longdesc = ("RustDesk ID/rendezvous server (hbbs). Settings may also come from environment "
                "variables (e.g. RELAY_SERVERS, ALWAYS_USE_RELAY=Y, DB_URL, LOCAL-IP), a .env file "
                "in the data directory, or --config; the command line wins.")
    optParameters = [[long, short, None, help_] for long, short, _, help_ in OPTIONS]

    def cli_settings(self):
        """The explicitly given flags, under their setting names."""
        return {name: self[long] for long, _, name, _ in OPTIONS
                if name is not None and self[long] is not None}


def _local_ipv4():
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            host = info[4][0]
            if not host.startswith("127."):
                return host
    except OSError:
        pass
    return ""


def _split(text):
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class HbbsConfig:
    """Validated settings of one hbbs, derived from layered sources."""

    def __init__(self, settings):
        self.settings = settings
        self.port = settings.integer("PORT", 21116, minimum=3, maximum=65534)
        self.bind = settings.get("BIND") or ""
        if self.bind:
            try:
                socket.getaddrinfo(self.bind, None, flags=socket.AI_NUMERICHOST)
            except socket.gaierror:
                raise ConfigError(f"BIND must be an IP address, got {self.bind!r}") from None
        self.key_option = settings.get("KEY")
        self.data_dir = settings.get("DATA-DIR") or "."
        db_url = settings.get("DB-URL") or os.path.join(self.data_dir, "db_v2.sqlite3")
        self.db_url = db_url
        self.relays = parse_relay_list(settings.get("RELAY-SERVERS"))
        self.relay_announce = _split(settings.get("RELAY-ANNOUNCE"))
        self.rmem = settings.integer("RMEM", DEFAULT_RMEM, minimum=0)
        self.mask = settings.get("MASK") or None
        self.local_ip = settings.get("LOCAL-IP") or ""
        self.serial = settings.integer("SERIAL", 0)
        self.rendezvous_servers = parse_relay_list(settings.get("RENDEZVOUS-SERVERS"))
        try:
            check_rendezvous_servers(self.serial, self.rendezvous_servers)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.software_url = settings.get("SOFTWARE-URL") or ""
        self.always_use_relay = str(settings.get("ALWAYS-USE-RELAY") or "").upper() == "Y"
        self.keep_alive = settings.integer("KEEP-ALIVE", DEFAULT_KEEP_ALIVE, minimum=5, maximum=3600)
        self.max_frame = settings.integer("MAX-FRAME", DEFAULT_MAX_FRAME, minimum=1024,
                                          maximum=64 * 1024 * 1024)
        self.ip_limit_per_minute = settings.integer("IP-LIMIT-PER-MINUTE", 30, minimum=1)
        self.ip_limit_ids = settings.integer("IP-LIMIT-IDS-PER-DAY", 300, minimum=1)
        self.ip_limit_exempt = _split(settings.get("IP-LIMIT-EXEMPT"))
        self.max_peers = settings.integer("MAX-PEERS", 4_000_000, minimum=1)
        self.max_per_ip = settings.integer("MAX-CONNECTIONS-PER-IP", 256, minimum=1)
        self.max_per_proxy = settings.integer("MAX-CONNECTIONS-PER-PROXY",
                                              DEFAULT_MAX_CONNECTIONS_PER_PROXY, minimum=1)
        self.handshake_timeout = settings.integer("HANDSHAKE-TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT,
                                                  minimum=1)
        self.max_request_head = settings.integer("MAX-REQUEST-HEAD", DEFAULT_MAX_REQUEST_HEAD,
                                                 minimum=1024)
        self.requests_per_ip = settings.integer("REQUESTS-PER-IP", DEFAULT_REQUESTS_PER_IP,
                                                minimum=1)
        self.request_burst = settings.integer("REQUEST-BURST-PER-CONNECTION",
                                              DEFAULT_REQUEST_BURST_PER_CONNECTION, minimum=1)
        self.announces_per_ip = settings.integer("RELAY-ANNOUNCES-PER-IP",
                                                 DEFAULT_ANNOUNCES_PER_IP, minimum=1)
        self.loopback_console = settings.flag("LOOPBACK-CONSOLE")
        self.api_server = _api_server(settings.get("API-SERVER"), self.port)
        self.api_max_body = settings.integer("API-PROXY-MAX-BODY", DEFAULT_MAX_BODY, minimum=0,
                                             maximum=64 * 1024 * 1024)
        self.api_max_response = settings.integer("API-PROXY-MAX-RESPONSE", DEFAULT_MAX_RESPONSE,
                                                 minimum=0, maximum=256 * 1024 * 1024)
        self.api_timeout = settings.integer("API-PROXY-TIMEOUT", DEFAULT_TIMEOUT, minimum=1,
                                            maximum=300)
        self.api_in_flight = settings.integer("API-PROXY-IN-FLIGHT-PER-IP",
                                              DEFAULT_IN_FLIGHT_PER_IP, minimum=1)
        proxies = settings.get("TRUSTED-PROXIES")
        try:
            self.trusted = TrustedProxies(_split(proxies)) if proxies is not None else TrustedProxies()
            IpBlocker(exempt=self.ip_limit_exempt)
            LanRules(self.mask)
        except ValueError as e:
            raise ConfigError(f"invalid network: {e}") from None
        interface = self.bind.replace(":", "\\:") if self.bind else "\\:\\:"
        self.tcp_endpoint = settings.get("LISTEN-TCP") or self._tcp(self.port, interface)
        self.nat_endpoint = settings.get("LISTEN-NAT") or self._tcp(self.port - 1, interface)
        self.ws_endpoint = settings.get("LISTEN-WS") or self._tcp(self.port + 2, interface)
        self.console_endpoint = settings.get("CONSOLE") or unix_socket_in(self.data_dir,
                                                                          "hbbs-console.sock")
        self.admin_endpoint = settings.get("ADMIN") or adminweb.default_endpoint(self.port)
        self.admin_token = settings.get("ADMIN-TOKEN") or None
        self.admin_warning = adminweb.check_exposure(self.admin_endpoint, self.admin_token)
        try:
            self.log_format = logs.check_format(settings.get("LOG-FORMAT"))
            self.log_level = logs.check_level(settings.get("LOG-LEVEL"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        udp = settings.get("LISTEN-UDP") or str(self.port)
        host, _, port = udp.rpartition(":")
        try:
            self.udp_port = int(port)
        except ValueError:
            raise ConfigError(f"LISTEN-UDP must be [address:]port, got {udp!r}") from None
        self.udp_interface = host.strip("[]") or self.bind or "::"

    @staticmethod
    def _tcp(port, interface):
        return f"tcp:{port}:interface={interface}:backlog={BACKLOG}"


def _api_server(value, port):
    """The API base URL hbbs proxies to, or None for 'off'."""
    if not value:
        return f"http://127.0.0.1:{port - 2}"
    if value.lower() == "off":
        return None
    problem = ConfigError(f"API-SERVER must be an http:// or https:// URL or 'off', got {value!r}")
    if not re.fullmatch(r"[!-~]+", value):
        raise problem
    url = URI.fromBytes(value.encode("ascii"))
    host = url.host.decode("ascii")
    if url.scheme not in (b"http", b"https") or url.query or url.fragment \
            or not (re.fullmatch(r"[A-Za-z0-9.-]+", host) or isIPv6Address(host)):
        raise problem
    return value


class _RelayProbe:
    """Opens and immediately closes a TCP connection to a relay (health check)."""

    def __init__(self, reactor, timeout=3.0):
        self.reactor = reactor
        self.timeout = timeout

    def __call__(self, entry):
        host, _, port = with_default_port(entry).rpartition(":")
        endpoint = HostnameEndpoint(self.reactor, host.strip("[]"), int(port), timeout=self.timeout)
        d = endpoint.connect(Factory.forProtocol(Protocol))
        d.addCallback(lambda protocol: protocol.transport.loseConnection() or True)
        return d


class _LoopbackConsoleGate(Factory):
    """PORT-1 with the official loopback rule: loopback peers get the console."""

    def __init__(self, nat_factory, console_factory):
        self.nat_factory = nat_factory
        self.console_factory = console_factory

    def buildProtocol(self, addr):
        if is_loopback(getattr(addr, "host", "")):
            return self.console_factory.buildProtocol(addr)
        return self.nat_factory.buildProtocol(addr)


class HbbsService(service.MultiService):
    """hbbs as one service: keys, database, controller and listeners.

    ``descriptors``, a :class:`~rustdesk_twisted.admission.BudgetShare`, is
    hbbs's part of a descriptor budget shared with hbbr in one process (its own
    budget when alone); ``rlimits`` is the ``resource`` module, or a stand-in in
    tests.
    """

    log = Logger()

    def __init__(self, config, reactor, descriptors=None, rlimits=resource):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.descriptors = descriptors if descriptors is not None else (
            DescriptorBudget().share("hbbs"))
        self.rlimits = rlimits
        self.server = None
        self.store = None
        self.health = None
        self.udp = None
        self.lock = None
        self.websocket_admission = None
        self.api_pool = None

    def startService(self):
        """Examine the database first (reading only), so that a file we must refuse leaves
        nothing behind, not even a new key; then lock the data directory (one hbbs per
        directory); then bind, then open the database: nothing is
        processed before the reactor runs, and a listener that cannot bind must not leave
        the store's writer thread behind.  The loaded peers are frozen out of the garbage
        collector, whose full passes over a large table would otherwise stall the UDP
        socket (PERF-NOTES.md)."""
        config = self.config
        self.store = PeerStore(config.db_url, self.reactor)
        self.store.examine()
        self.lock = DataDirectoryLock(config.data_dir)
        self.lock.acquire()
        try:
            self._start(config)
        except BaseException:
            self.lock.release()
            raise

    def _start(self, config):
        server_key = keyfiles.hbbs_server_key(config.key_option, config.data_dir)
        blocker = IpBlocker(config.ip_limit_per_minute, config.ip_limit_ids, config.ip_limit_exempt)
        registry = PeerRegistry(self.store, blocker, max_peers=config.max_peers)
        local_ip = (config.local_ip or _local_ipv4()) if config.mask else ""
        relays = RelayRotation(config.relays)
        self.server = RendezvousServer(
            registry, server_key, relays, self.reactor, LanRules(config.mask, local_ip),
            serial=config.serial, rendezvous_servers=config.rendezvous_servers,
            software_url=config.software_url, always_use_relay=config.always_use_relay,
            keep_alive=config.keep_alive, requests_per_ip=config.requests_per_ip,
            request_burst_per_connection=config.request_burst,
            announces_per_ip=config.announces_per_ip,
            loopback_config_update=config.loopback_console, api_proxy=self._api_proxy())
        if config.relay_announce:
            self._announce_to_relays(server_key)
        self.descriptors.budget.open(self.rlimits)
        self._build_listeners()
        self._start_children()
        try:
            registry.load(self.store.open())
        except BaseException:
            self._stop_children(list(self))
            raise
        gc.collect()
        gc.freeze()
        self.health = RelayHealthCheck(relays, _RelayProbe(self.reactor), self.reactor)
        self.health.start()
        self._banner(server_key, registry)

    def _api_proxy(self):
        config = self.config
        agent = None
        if config.api_server is not None:
            self.api_pool = HTTPConnectionPool(self.reactor)
            agent = Agent(self.reactor, pool=self.api_pool)
        return ApiProxy(self.reactor, agent, config.api_server, max_body=config.api_max_body,
                        max_response=config.api_max_response, timeout=config.api_timeout,
                        in_flight_per_ip=config.api_in_flight)

    def _start_children(self):
        """Start every listener, or stop those already started and re-raise."""
        service.Service.startService(self)
        started = []
        try:
            for child in self:
                child.startService()
                started.append(child)
        except BaseException:
            self._stop_children(started)
            raise

    def _stop_children(self, started):
        for child in reversed(started):
            child.stopService()
        self.running = 0

    def _announce_to_relays(self, server_key):
        """Announcements are signed with the key hbbs signs peers' keys with; with a bare
        licence string (no signing key) with the key files'."""
        config = self.config
        signing = server_key.signing
        if signing is None:
            secret, _ = keyfiles.load_or_generate_keypair(config.data_dir)
            signing = keyfiles.signing_key_from_secret(secret)
        try:
            announcer = relay_announcer(config.relay_announce, signing, self.reactor)
        except ValueError as e:
            raise ConfigError(f"invalid RELAY-ANNOUNCE endpoint: {e}") from None
        announcer.setServiceParent(self)
        self.server.relay_announcer = announcer

    def _build_listeners(self):
        config, server, reactor = self.config, self.server, self.reactor
        limits = ConnectionLimits(reactor, max_per_ip=config.max_per_ip,
                                  budget=self.descriptors)
        self.websocket_admission = WebSocketAdmission(
            reactor, limits, config.trusted,
            ConnectionLimits(reactor, max_per_ip=config.max_per_proxy,
                             name="connections-per-proxy", budget=self.descriptors),
            config.handshake_timeout, config.max_request_head)
        console = console_factory(HbbsConsole(server), reactor)
        nat = RendezvousTCPFactory(server, reactor, config.max_frame, offer_secure=False,
                                   limits=limits, protocol_class=NatTestTCP)
        listeners = [
            (config.tcp_endpoint, RendezvousTCPFactory(server, reactor, config.max_frame,
                                                       limits=limits)),
            (config.nat_endpoint, _LoopbackConsoleGate(nat, console) if config.loopback_console
             else nat),
            (config.ws_endpoint, websocket_site(RendezvousWebSocketFactory(server, reactor),
                                                self.websocket_admission, config.max_frame)),
        ]
        if config.console_endpoint != "off":
            listeners.append((config.console_endpoint, console))
        if config.admin_endpoint != "off":
            listeners.append((config.admin_endpoint, adminweb.hbbs_site(
                self, _RelayProbe(reactor), reactor, config.admin_token)))
        for description, factory in listeners:
            try:
                endpoint = server_endpoint(reactor, description)
            except ValueError as e:
                raise ConfigError(f"invalid endpoint {description!r}: {e}") from None
            if description == config.admin_endpoint:
                endpoint = adminweb.RecordedEndpoint(endpoint, description, config.data_dir,
                                                     "hbbs")
            listener = StreamServerEndpointService(endpoint, factory)
            listener._raiseSynchronously = True
            listener.setServiceParent(self)
        self.udp = RendezvousUDP(server, config.rmem)
        internet.UDPServer(config.udp_port, self.udp, interface=config.udp_interface,
                           reactor=reactor).setServiceParent(self)
        self.addService(_Timer(MAINTENANCE_INTERVAL, self._maintenance, reactor))

    def _maintenance(self):
        self.server.registry.prune(self.reactor.seconds())

    def _banner(self, server_key, registry):
        config = self.config
        public = server_key.public_key
        log = self.log
        log.info("rustdesk-twisted hbbs {version}", version=__version__, event="banner")
        if public is not None:
            log.info("Key: {key}", key=keyfiles.b64(public), event="banner")
            log.info("Key fingerprint: {fingerprint} ({source})",
                     fingerprint=keyfiles.fingerprint(public), source=server_key.source,
                     event="banner")
        else:
            log.warn("No signing key ({source}): peers' keys are not signed and secure TCP is off; "
                     "clients will show 'Insecure Connection'", source=server_key.source,
                     event="banner")
        log.info("Key enforcement: {state}",
                 state="on (clients must use this key)" if server_key.licence else "off",
                 event="banner")
        log.info("DB_URL={db} ({count} peers)", db=config.db_url, count=len(registry.peers),
                 event="banner")
        interface = config.udp_interface
        log.info("Listening on udp {interface}:{port}",
                 interface=f"[{interface}]" if ":" in interface else interface,
                 port=config.udp_port, event="banner")
        granted = self.udp.effective_buffer
        if granted is not None and config.rmem and granted < config.rmem:
            log.warn("UDP receive buffer is {granted} bytes, not the {wanted} asked for: raise "
                     "net.core.rmem_max, or heartbeats are lost under load", granted=granted,
                     wanted=config.rmem, event="banner")
        elif granted is not None:
            log.info("UDP receive buffer: {granted} bytes", granted=granted, event="banner")
        log.info("Descriptors: {limit}; at most {connections} TCP/WebSocket connections",
                 limit=self.descriptors.budget.banner(),
                 connections=min(self.descriptors.available(), ConnectionLimits.MAX_TOTAL),
                 event="banner")
        for what, endpoint in (("tcp rendezvous", config.tcp_endpoint),
                               ("tcp NAT test / online", config.nat_endpoint),
                               ("websocket", config.ws_endpoint),
                               ("console", config.console_endpoint),
                               ("admin http", config.admin_endpoint)):
            if endpoint == "off":
                continue
            log.info("Listening on {what} {endpoint}", what=what, endpoint=endpoint,
                     event="banner")
        log.info("Relay servers: {relays}", relays=",".join(config.relays) or
                 "(none: clients use this host's port+1)", event="banner")
        for endpoint in config.relay_announce:
            log.info("Announcing relay uuids to {endpoint}", endpoint=endpoint, event="banner")
        log.info("API proxy (HttpProxyRequest on secured TCP): {target}",
                 target=config.api_server or "off", event="banner")
        if config.always_use_relay:
            log.info("ALWAYS_USE_RELAY=Y", event="banner")
        if config.admin_warning:
            log.warn("{warning}", warning=config.admin_warning, event="banner")

    def stopService(self):
        d = super().stopService()
        if self.health is not None:
            self.health.stop()
        if self.api_pool is not None:
            d.addCallback(lambda result: self.api_pool.closeCachedConnections().addCallback(
                lambda _: result))

        def close_store(result):
            self.server.registry.save_all_seen(self.reactor.seconds())
            return self.store.close().addCallback(lambda _: result)

        def unlock(result):
            if self.lock is not None:
                self.lock.release()
            return result

        return d.addCallback(close_store).addBoth(unlock)


class _Timer(internet.TimerService):
    def __init__(self, interval, call, clock):
        super().__init__(interval, call)
        self.clock = clock


def build_config(options, environ=None):
    """HbbsConfig from parsed Options and the environment; raises ConfigError."""
    cli = options.cli_settings()
    data_dir = cli.get("DATA-DIR") or "."
    settings = layered_settings(environ, data_dir, options["config"], cli)
    return HbbsConfig(settings)


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        config = build_config(options)
    except ConfigError as e:
        raise SystemExit(f"rustdesk-hbbs: {e}")
    logs.set_level(config.log_level)
    return ExitOnStartupError("rustdesk-hbbs", HbbsService(config, reactor), config.log_format)
