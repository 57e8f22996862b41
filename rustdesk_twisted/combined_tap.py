"""``twistd rustdesk-server``: hbbs and hbbr in one process, one data directory, one key.

The simple deployment (USERS.md 1.1, 1.4): both roles read the same
``.env`` and ``id_ed25519``, so the relay can never hold a different key
than the ID server.  hbbs starts first and loads or generates the key;
hbbr then derives its licence check from the same ``-k`` value.  With
``--announced-only`` hbbs hands every relay uuid it brokers straight to
hbbr's allow table, and hbbr pairs nothing else (USERS.md 1.12).
"""

import os
import resource

from twisted.application.service import MultiService
from twisted.python import usage

from . import logs
from .config import ConfigError
from .listeners import unix_socket_in
from .logs import Logger
from .pluginoptions import PluginOptions
from .startup import exit_on_startup_error
from .hbbr import tap as hbbr_tap
from .admission import DescriptorBudget
from .hbbr.announce import AllowedUuids
from .hbbr.early import MAX_EARLY_BYTES, MAX_EARLY_BYTES_TOTAL
from .hbbr.server import MAX_CONNECTIONS_PER_IP
from .hbbs import tap as hbbs_tap
from .wire import keys
from .wire.websocket import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_PROXY,
    DEFAULT_MAX_REQUEST_HEAD,
)


HBBS_SHARE = 4
RELAY_PASSED_ON = ("max-connections-per-ip", "max-connections", "max-early-bytes",
                   "max-early-bytes-total")


class Options(PluginOptions):
    synopsis = "[options]"
    longdesc = ("RustDesk ID/rendezvous server (hbbs) and relay (hbbr) in one process, sharing "
                "the data directory and its key. hbbs listens on PORT-1, PORT (TCP+UDP) and "
                "PORT+2 (WebSocket); hbbr on the relay port and relay port+2. Settings not "
                "given here come from the environment and DATA_DIR/.env as for the separate "
                "servers.")
    optParameters = [
        ["port", "p", None, "hbbs main port (default 21116, or PORT from the environment/.env)"],
        ["bind", "b", None, "IP address every listener of both servers binds to (default: all)"],
        ["key", "k", None, "key of both servers: unset or '-' use id_ed25519 (generated on first "
                           "start) and require it, '' require nothing, or a base64 secret key "
                           "or licence string"],
        ["relay-servers", "r", None, "comma-separated relay addresses given to clients (default: "
                                     "none, so clients use this host's PORT+1; set it when "
                                     "--relay-port is not PORT+1)"],
        ["relay-port", None, None, "hbbr port (default PORT+1); its WebSocket port is +2"],
        ["data-dir", None, None, "directory of id_ed25519, db_v2.sqlite3 and .env (default: .)"],
        ["console", None, None, "endpoint of the hbbs console (default "
                                "unix:DATA_DIR/hbbs-console.sock)"],
        ["relay-console", None, None, "endpoint of the hbbr console, or 'off' (default "
                                      "unix:DATA_DIR/hbbr-console.sock)"],
        ["relay-max-connections-per-ip", None, None, "hbbr's --max-connections-per-ip "
                                                     f"(default {MAX_CONNECTIONS_PER_IP})"],
        ["relay-max-connections", None, None, "hbbr's --max-connections (default: what the "
                                              "descriptors left to hbbr allow)"],
        ["relay-max-early-bytes", None, None, "hbbr's --max-early-bytes (default "
                                              f"{MAX_EARLY_BYTES})"],
        ["relay-max-early-bytes-total", None, None, "hbbr's --max-early-bytes-total "
                                                    f"(default {MAX_EARLY_BYTES_TOTAL})"],
        ["hbbs-descriptors", None, None, "descriptors kept for hbbs's connections however "
                                         "busy the relay is (default a quarter of the "
                                         "descriptor budget)", int],
        ["max-connections-per-proxy", None, None, "WebSocket connections of both servers from "
                                                  "one trusted proxy (default "
                                                  f"{DEFAULT_MAX_CONNECTIONS_PER_PROXY})"],
        ["handshake-timeout", None, None, "seconds from accept within which a WebSocket "
                                          "connection must complete its upgrade (default "
                                          f"{DEFAULT_HANDSHAKE_TIMEOUT})"],
        ["max-request-head", None, None, "bytes a WebSocket connection may send before its "
                                         "upgrade (default "
                                         f"{DEFAULT_MAX_REQUEST_HEAD})"],
    ]
    optFlags = [
        ["announced-only", None, "hbbr pairs only relay uuids this hbbs brokered in the last "
                                 "minute, each once, so a leaked key does not open the relay"],
    ]

    def postOptions(self):
        if self["hbbs-descriptors"] is not None and self["hbbs-descriptors"] < 0:
            raise usage.UsageError("--hbbs-descriptors must not be negative")
        if self["relay-port"] is not None:
            try:
                self["relay-port"] = int(self["relay-port"])
            except ValueError:
                raise usage.UsageError(f"invalid relay port {self['relay-port']!r}") from None


def hbbs_options(options):
    parsed = hbbs_tap.Options()
    argv = []
    for name in ("port", "bind", "key", "relay-servers", "data-dir", "console",
                 "max-connections-per-proxy", "handshake-timeout", "max-request-head"):
        if options[name] is not None:
            argv += [f"--{name}", options[name]]
    parsed.parseOptions(argv)
    return parsed


def hbbr_options(options, config):
    """hbbr's options derived from the hbbs configuration, so both agree on key and place."""
    relay_port = options["relay-port"] if options["relay-port"] is not None else config.port + 1
    argv = ["--directory", config.data_dir, "--port", str(relay_port),
            "--key", "-" if config.key_option is None else config.key_option,
            "--console",
            options["relay-console"] or unix_socket_in(config.data_dir, "hbbr-console.sock")]
    if config.bind:
        argv += ["--bind", config.bind]
    for name in RELAY_PASSED_ON:
        if options["relay-" + name] is not None:
            argv += ["--" + name, options["relay-" + name]]
    argv += ["--max-connections-per-proxy", str(config.max_per_proxy),
             "--handshake-timeout", str(config.handshake_timeout),
             "--max-request-head", str(config.max_request_head)]
    parsed = hbbr_tap.Options()
    parsed.parseOptions(argv)
    return parsed


class LocalAnnouncer:
    """hbbs's ``relay_announcer`` when hbbr lives in the same process."""

    def __init__(self, allowed, clock, then=None):
        self.allowed = allowed
        self.clock = clock
        self.then = then

    def __call__(self, uuid):
        self.allowed.announce(uuid, self.clock.seconds())
        if self.then is not None:
            self.then(uuid)


class CombinedService(MultiService):
    """hbbs, then hbbr; errors at start become one line and exit status 1.

    Both draw their connections from one descriptor budget, sized at start,
    of which ``hbbs_descriptors`` (default a quarter) stay free for hbbs.
    """

    log = Logger()

    def __init__(self, hbbs, hbbr, reactor, hbbs_descriptors=None, rlimits=resource):
        super().__init__()
        self.hbbs = hbbs
        self.hbbr = hbbr
        self.reactor = reactor
        self.hbbs_descriptors = hbbs_descriptors
        self.rlimits = rlimits
        hbbs.setServiceParent(self)
        hbbr.setServiceParent(self)

    def startService(self):
        share = self.hbbs.descriptors
        share.budget.open(self.rlimits)
        share.guaranteed = (self.hbbs_descriptors if self.hbbs_descriptors is not None
                            else share.budget.total // HBBS_SHARE)
        exit_on_startup_error("rustdesk-server", super().startService)
        server, allowed = self.hbbs.server, self.hbbr.allowed
        if allowed is not None:
            server.relay_announcer = LocalAnnouncer(allowed, self.reactor,
                                                    then=server.relay_announcer)
        public = server.server_key.public_key
        self.log.info("hbbs and hbbr share {directory} and key {fingerprint}; relay pairs "
                      "{which} uuids; {kept} of {total} connection descriptors kept for hbbs",
                      directory=os.path.abspath(self.hbbs.config.data_dir),
                      fingerprint=keys.fingerprint(public) if public is not None else "(none)",
                      which="only announced" if allowed is not None else "any",
                      kept=share.guaranteed, total=share.budget.total, event="combined_ready")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        config = hbbs_tap.build_config(hbbs_options(options))
        relay = hbbr_options(options, config)
    except (ConfigError, usage.UsageError) as e:
        raise SystemExit(f"rustdesk-server: {e}")
    logs.set_level(config.log_level)
    allowed = AllowedUuids() if options["announced-only"] else None
    budget = DescriptorBudget()
    return CombinedService(
        hbbs_tap.HbbsService(config, reactor, descriptors=budget.share("hbbs")),
        hbbr_tap.HbbrService(relay, reactor, allowed=allowed, descriptors=budget.share("hbbr")),
        reactor, options["hbbs-descriptors"])
