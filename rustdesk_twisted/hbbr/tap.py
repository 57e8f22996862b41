"""``twistd rustdesk-hbbr``: options, and the service tree built from them.

``makeService`` only records the options; the working directory's ``.env``,
key files and list files are read, and sockets opened, in
:meth:`HbbrService.startService`.
"""

import base64
import binascii
import ipaddress
import os
import resource
import socket

from nacl.signing import VerifyKey
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.python import usage

from .. import __version__, adminweb, logs
from ..admission import AdmittedFactory, ConnectionLimits, DescriptorBudget
from ..config import ConfigError, Settings, read_env_file
from ..listeners import server_endpoint, unix_socket_in
from ..logs import Logger
from ..pluginoptions import PluginOptions
from ..startup import ExitOnStartupError
from ..wire.announce import DEFAULT_SKEW, KEEPALIVE_INTERVAL
from ..wire.websocket import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_PROXY,
    DEFAULT_MAX_REQUEST_HEAD,
    TrustedProxies,
    WebSocketAdmission,
)
from ..wire.keys import (
    announce_public_key,
    fingerprint,
    hbbr_licence,
    relay_key_conflict,
)
from . import splice
from .announce import (
    FIRST_LINE_TIMEOUT,
    IDLE_TIMEOUT,
    AllowedUuids,
    AnnounceFactory,
    AnnounceGate,
)
from .bandwidth import BandwidthPolicy
from .early import MAX_EARLY_BYTES, MAX_EARLY_BYTES_TOTAL, EarlyBytes
from .console import console_factory
from .lists import AddressList
from .protocols import TcpRelayFactory, relay_site
from .server import MAX_CONNECTIONS_PER_IP, RelayServer

DEFAULT_PORT = 21117
BACKLOG = 1024
ANNOUNCE_CONNECTIONS_PER_IP = 16
# A raw pair relayed by splice holds one pipe (two descriptors) per direction:
# two more descriptors for each of its two connections.
SPLICED_CONNECTION_DESCRIPTORS = 3
ENV_FILE_KEYS = {"PORT", "BIND", "KEY", "SINGLE-BANDWIDTH", "TOTAL-BANDWIDTH", "LIMIT-SPEED",
                 "DOWNGRADE-THRESHOLD", "DOWNGRADE-START-CHECK", "THROTTLE"}


class Options(PluginOptions):
    synopsis = "[options]"
    longdesc = ("RustDesk relay server (hbbr). Listens on PORT (TCP) and PORT+2 "
                "(WebSocket); PORT=N from the environment or .env means N+1 and N+3.")
    optParameters = [
        ["port", "p", None, "relay port (WebSocket on port+2)"],
        ["bind", "b", None, "IP address for all listeners (default: all, dual-stack)"],
        ["key", "k", None, "licence key clients must send: '' none, '-' key files, or a key"],
        ["relay", None, None, "endpoint string for the TCP relay listener (overrides -p/-b)"],
        ["websocket", None, None, "endpoint string for the WebSocket listener, or 'off'"],
        ["console", None, None,
         "endpoint string for the admin console, or 'off' (default "
         "unix:DATA_DIR/hbbr-console.sock); a Unix socket is never wider than 0600"],
        ["announce-endpoint", None, None,
         "endpoint string for hbbs announcements; when set, only announced uuids pair. They "
         "are checked with hbbs's public key: -k KEY, else id_ed25519.pub"],
        ["announce-skew", None, DEFAULT_SKEW, "seconds an announcement's timestamp may differ "
                                              "from this host's clock", float],
        ["announce-first-line-timeout", None, FIRST_LINE_TIMEOUT,
         "seconds an announce connection has to send its first valid line", float],
        ["announce-idle-timeout", None, IDLE_TIMEOUT,
         f"seconds of silence after which an announce connection is closed (more than "
         f"hbbs's {KEEPALIVE_INTERVAL:g} s keepalive)", float],
        ["max-connections-per-ip", None, MAX_CONNECTIONS_PER_IP,
         "relay connections (TCP and WebSocket together, counted from accept) one source "
         "(IPv4 address or IPv6 /64) may hold open; a session is two; behind a trusted proxy, "
         "per forwarded client", int],
        ["max-connections", None, None,
         "relay connections open at once in all (default: what the descriptor limit allows, "
         "see the startup banner)", int],
        ["announce-max-connections-per-ip", None, ANNOUNCE_CONNECTIONS_PER_IP,
         "connections one IP may hold open to --announce-endpoint", int],
        ["max-early-bytes", None, MAX_EARLY_BYTES,
         "bytes one relay connection (TCP or WebSocket) may send before its partner "
         "arrives; then it is "
         "not read until it pairs", int],
        ["max-early-bytes-total", None, MAX_EARLY_BYTES_TOTAL,
         "bytes all waiting relay connections together may hold; beyond it none of them "
         "is read until pairs form", int],
        ["trusted-proxies", None, "127.0.0.0/8,::1",
         "comma-separated CIDRs whose X-Real-IP/X-Forwarded-For headers are believed"],
        ["max-connections-per-proxy", None, DEFAULT_MAX_CONNECTIONS_PER_PROXY,
         "simultaneous WebSocket connections from one trusted proxy", int],
        ["handshake-timeout", None, DEFAULT_HANDSHAKE_TIMEOUT,
         "seconds from accept within which a WebSocket connection must complete its upgrade",
         int],
        ["max-request-head", None, DEFAULT_MAX_REQUEST_HEAD,
         "bytes a WebSocket connection may send before its upgrade", int],
        ["data-dir", None, None, "directory shared with hbbs: .env, id_ed25519 and list "
                                 "files (default: .)"],
        ["directory", None, None, "old name of --data-dir"],
        ["admin", None, None, "endpoint of the admin HTTP listener (/healthz, /readyz, /metrics, "
                              "/status; default tcp:PORT+4:interface=127.0.0.1), or 'off'"],
        ["admin-token", None, None, "bearer token for /metrics and /status (default "
                                    "ADMIN_TOKEN or ADMIN_TOKEN_FILE from the environment)"],
        ["log-format", None, "text", "text or json: one JSON object per line"],
        ["log-level", None, "info", "debug, info, warn or error: events below it are dropped "
                                    "before they cost any output"],
    ]
    optFlags = [
        ["no-throttle", None, "turn every bandwidth limit off"],
        ["no-splice", None, "never use the zero-copy os.splice path"],
    ]

    def postOptions(self):
        if self["port"] is not None:
            try:
                port = int(self["port"])
            except ValueError:
                raise usage.UsageError(f"invalid port {self['port']!r}") from None
            if not 0 < port < 65534:
                raise usage.UsageError(f"invalid port {port}")
            self["port"] = port
        if self["bind"] is not None:
            _check_ip(self["bind"], usage.UsageError)
        self["directory"] = self["data-dir"] = self["data-dir"] or self["directory"] or "."
        try:
            self["log-format"] = logs.check_format(self["log-format"])
            self["log-level"] = logs.check_level(self["log-level"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self["trusted-proxies"] = TrustedProxies(self["trusted-proxies"].split(","))
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxies: {e}") from None
        for name in ("max-connections", "announce-max-connections-per-ip", "max-early-bytes",
                     "max-early-bytes-total"):
            if self[name] is not None and self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        for name in ("announce-skew", "announce-first-line-timeout", "announce-idle-timeout",
                     "max-connections-per-ip", "max-connections-per-proxy", "handshake-timeout",
                     "max-request-head"):
            if not self[name] > 0:
                raise usage.UsageError(f"--{name} must be a positive number")
        if self["announce-idle-timeout"] <= KEEPALIVE_INTERVAL:
            raise usage.UsageError(f"--announce-idle-timeout must exceed hbbs's keepalive "
                                   f"interval ({KEEPALIVE_INTERVAL:g} s)")


def _check_ip(text, error):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise error(f"bind address must be an IP literal, got {text!r}") from None


def with_backlog(description):
    """Every stream listener gets a backlog of at least 1024 (PERF-NOTES.md)."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return f"{description}:backlog={BACKLOG}"
    return description


def tcp_description(port, bind):
    if bind is None:
        if socket.has_ipv6:
            return f"tcp6:{port}:interface=\\:\\::backlog={BACKLOG}"
        return f"tcp:{port}:backlog={BACKLOG}"
    if ":" in bind:
        return f"tcp6:{port}:interface={bind.replace(':', chr(92) + ':')}:backlog={BACKLOG}"
    return f"tcp:{port}:interface={bind}:backlog={BACKLOG}"


def relay_ports(cli_port, settings):
    """PROTOCOL.md 9.3: ``-p N`` gives N and N+2; ``PORT=N`` gives N+1 and N+3."""
    if cli_port is not None:
        return cli_port, cli_port + 2
    raw = settings.get("PORT")
    if raw is not None:
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
        if 0 < value < 65532:
            return value + 1, value + 3
    return DEFAULT_PORT, DEFAULT_PORT + 2


def _key_fingerprint(licence):
    try:
        raw = base64.b64decode(licence, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    return fingerprint(raw if len(raw) == 32 else licence.encode("utf-8"))


class HbbrService(MultiService):
    """hbbr as a service; everything with side effects happens in startService.

    ``allowed`` turns announce mode on with a table someone in this process
    fills (hbbs beside it in ``twistd rustdesk-server``); ``--announce-endpoint``
    also feeds it from other processes.  ``descriptors`` is this relay's share
    of the process's :class:`DescriptorBudget` (its own budget when alone);
    ``rlimits`` is the ``resource`` module, or a stand-in in tests.
    """

    log = Logger()

    def __init__(self, options, reactor, environ=None, allowed=None, descriptors=None,
                 rlimits=resource):
        super().__init__()
        self.options = options
        self.reactor = reactor
        self.environ = os.environ if environ is None else environ
        self.allowed = allowed
        self.descriptors = descriptors if descriptors is not None else (
            DescriptorBudget().share("hbbr"))
        self.rlimits = rlimits
        self.relay = None
        self.announce_gate = None
        self.announce_limits = None
        self.websocket_admission = None

    def _settings(self, directory):
        env_file = {name: value for name, value in
                    read_env_file(os.path.join(directory, ".env")).items()
                    if name.strip().upper().replace("_", "-") in ENV_FILE_KEYS}
        return Settings(self.environ, [(".env", env_file)])

    def startService(self):
        options = self.options
        directory = options["directory"]
        settings = self._settings(directory)
        bind = options["bind"] if options["bind"] is not None else settings.get("BIND") or None
        if bind is not None:
            _check_ip(bind, ConfigError)
        key = options["key"] if options["key"] is not None else settings.get("KEY", "")
        licence = hbbr_licence(key, directory)
        conflict = relay_key_conflict(licence, directory)
        if conflict:
            self.log.critical("refusing to start: {why}", why=conflict, event="key_mismatch")
            raise ConfigError(conflict)
        policy = BandwidthPolicy.from_settings(settings, enabled=not options["no-throttle"])
        allowed = self.allowed
        if options["announce-endpoint"]:
            public = announce_public_key(key, directory)
            if allowed is None:
                allowed = AllowedUuids(skew=options["announce-skew"])
            self.announce_gate = AnnounceGate(allowed, VerifyKey(public),
                                              options["announce-skew"])
        splicer = None
        if not options["no-splice"] and splice.available(self.reactor):
            splicer = splice.Splicer(self.reactor)
        self.descriptors.budget.open(self.rlimits)
        cost = SPLICED_CONNECTION_DESCRIPTORS if splicer is not None else 1
        ceiling = self.descriptors.available() // cost
        limits = ConnectionLimits(self.reactor, options["max-connections"] or ceiling,
                                  options["max-connections-per-ip"], budget=self.descriptors,
                                  cost=cost)
        self.relay = relay = RelayServer(
            self.reactor, licence=licence, policy=policy,
            blacklist=AddressList.from_directory("blacklist", directory),
            blocklist=AddressList.from_directory("blocklist", directory),
            allowed=allowed, splicer=splicer, limits=limits,
            early=EarlyBytes(self.reactor, options["max-early-bytes"],
                             options["max-early-bytes-total"]))

        relay_port, ws_port = relay_ports(options["port"], settings)
        listeners = [("relay", with_backlog(options["relay"] or tcp_description(relay_port, bind)),
                      TcpRelayFactory(relay))]
        websocket = options["websocket"] or tcp_description(ws_port, bind)
        if websocket != "off":
            self.websocket_admission = WebSocketAdmission(
                self.reactor, limits, options["trusted-proxies"],
                ConnectionLimits(self.reactor, max_per_ip=options["max-connections-per-proxy"],
                                 name="connections-per-proxy", budget=self.descriptors),
                options["handshake-timeout"], options["max-request-head"],
                admit=relay.unblocked)
            listeners.append(("websocket", with_backlog(websocket),
                              relay_site(relay, self.websocket_admission)))
        console = options["console"] or unix_socket_in(directory, "hbbr-console.sock")
        if console != "off":
            listeners.append(("console", with_backlog(console), console_factory(relay)))
        admin = options["admin"] or adminweb.default_endpoint(relay_port)
        if admin != "off":
            token = options["admin-token"] or settings.get("ADMIN-TOKEN") or None
            warning = adminweb.check_exposure(admin, token)
            if warning:
                self.log.warn("{warning}", warning=warning, event="banner")
            listeners.append(("admin", admin, adminweb.hbbr_site(self, self.reactor, token)))
        if options["announce-endpoint"]:
            self.announce_limits = ConnectionLimits(
                self.reactor, limits.max_total, options["announce-max-connections-per-ip"],
                "announce-connections-per-ip", budget=self.descriptors)
            announce = AnnounceFactory(self.announce_gate, self.reactor,
                                       options["announce-first-line-timeout"],
                                       options["announce-idle-timeout"])
            listeners.append(("announce", with_backlog(options["announce-endpoint"]),
                              AdmittedFactory(announce, self.announce_limits)))
        for name, description, factory in listeners:
            endpoint = server_endpoint(self.reactor, description)
            if name == "admin":
                endpoint = adminweb.RecordedEndpoint(endpoint, description, directory, "hbbr")
            child = StreamServerEndpointService(endpoint, factory)
            child._raiseSynchronously = True
            child.setName(name)
            child.setServiceParent(self)
        relay.start()
        super().startService()
        self._banner(licence, policy, listeners, allowed, splicer)

    def _banner(self, licence, policy, listeners, allowed, splicer):
        log = self.log
        log.info("rustdesk-twisted hbbr {version} starting in {directory}",
                 version=__version__, directory=os.path.abspath(self.options["directory"]))
        if licence:
            log.info("licence key required, fingerprint {fingerprint}",
                     fingerprint=_key_fingerprint(licence))
        else:
            log.info("no licence key: any client may use this relay")
        for name, description, _ in listeners:
            log.info("listening: {listener} on {endpoint}", listener=name,
                     endpoint=description)
        budget = self.descriptors.budget
        log.info("descriptors: {limit}; at most {connections} connections, {per_ip} per IP "
                 "(IPv6: per /64)", limit=budget.banner(),
                 connections=self.relay.limits.max_total,
                 per_ip=self.relay.limits.max_per_ip, event="banner")
        early = self.relay.early
        log.info("early bytes (sent before the partner arrives): at most {per_half} per "
                 "connection, {total} in all", per_half=early.per_half, total=early.total,
                 event="banner")
        log.info("bandwidth: {bandwidth}", bandwidth=policy.describe())
        log.info("raw TCP pairs: {path}",
                 path="kernel splice" if splicer is not None else "userspace copy")
        if allowed is not None:
            log.info("announce mode: only uuids announced by hbbs are paired")
        if self.announce_gate is not None:
            log.info("announcements checked with key {fingerprint}, clock skew up to {skew:g}s",
                     fingerprint=fingerprint(bytes(self.announce_gate.verify_key)),
                     skew=self.announce_gate.skew)

    def setServiceParent(self, parent):
        logs.use_format(parent, self.options["log-format"])
        super().setServiceParent(parent)

    def stopService(self):
        if self.relay is not None:
            self.relay.stop()
        return super().stopService()


def makeService(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    logs.set_level(config["log-level"])
    return ExitOnStartupError("rustdesk-hbbr", HbbrService(config, reactor))
