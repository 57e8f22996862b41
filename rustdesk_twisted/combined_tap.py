"""``twistd rustdesk-server``: hbbs, hbbr and the API in one process, one data directory, one key.

The simple deployment (USERS.md 1.1, 1.4): both roles read the same
``.env`` and ``id_ed25519``, so the relay can never hold a different key
than the ID server.  hbbs starts first and loads or generates the key;
hbbr then derives its licence check from the same ``-k`` value.  With
``--announced-only`` hbbs hands every relay uuid it brokers straight to
hbbr's allow table, and hbbr pairs nothing else (USERS.md 1.12).  The API
server listens on PORT-2, where clients look for it, unless ``--api off``.
"""

import os
import resource

from twisted.application.service import MultiService
from twisted.python import usage

from . import logs
from .admission import DescriptorBudget
from .api import tap as api_tap
from .api.db import describe
from .config import ConfigError
from .hbbr import tap as hbbr_tap
from .hbbr.announce import AllowedUuids
from .hbbs import tap as hbbs_tap
from .listeners import unix_socket_in
from .logs import Logger
from .pluginoptions import PluginOptions
from .startup import exit_on_startup_error
from .wire import keys


HBBS_SHARE = 4
# hbbr options the combined server sets itself from hbbs's configuration, so that both agree
# on place, key and the WebSocket limits; --relay-port and --relay-console choose the rest.
RELAY_DERIVED = {"port", "bind", "key", "data-dir", "directory", "console", "trusted-proxies",
                 "max-connections-per-proxy", "handshake-timeout", "max-request-head",
                 "log-format", "log-level"}
# hbbr options whose plain "relay-" names would read badly.
RELAY_RENAMED = {"relay": "relay-listen", "websocket": "relay-websocket"}
# API options set from hbbs's configuration (place, address, proxies, admin token, logs);
# the others are --api-NAME.
API_DERIVED = {"bind", "data-dir", "config", "hbbs", "trusted-proxies", "admin-token",
               "admin-token-file", "log-format", "log-level"}
API_PORT_OFFSET = -2


def _relay_name(name):
    return RELAY_RENAMED.get(name, "relay-" + name)


def _relay_parameters():
    """Every hbbr option the combined server passes on, as ``--relay-NAME``."""
    return [[_relay_name(long), None, None, f"hbbr's --{long}: {help_}"]
            for long, _, _, help_, *_ in hbbr_tap.Options.optParameters
            if long not in RELAY_DERIVED]


def _api_parameters():
    """Every API option the combined server passes on, as ``--api-NAME``."""
    return [["api-" + long, None, None, f"the API's --{long}: {help_}"]
            for long, _, _, help_ in api_tap.OPTIONS if long not in API_DERIVED]


class Options(PluginOptions):
    """Every hbbs option under its own name (official flags included), every hbbr option as
    ``--relay-NAME``, every API option as ``--api-NAME``, and the combined server's own."""

    synopsis = "[options]"
    longdesc = ("RustDesk ID/rendezvous server (hbbs), relay (hbbr) and API server in one "
                "process, sharing the data directory and its key. hbbs listens on PORT-1, PORT "
                "(TCP+UDP) and PORT+2 (WebSocket); hbbr on the relay port and relay port+2; the "
                "API on PORT-2. Every hbbs option works as for rustdesk-hbbs; hbbr's are "
                "--relay-NAME, the API's --api-NAME. Settings not given here come from the "
                "environment and DATA_DIR/.env as for the separate servers.")
    optParameters = [[long, short, None, help_] for long, short, _, help_ in hbbs_tap.OPTIONS]
    optParameters += [
        ["relay-port", None, None, "hbbr port (default PORT+1); its WebSocket port is +2"],
        ["relay-console", None, None, "endpoint of the hbbr console, or 'off' (default "
                                      "unix:DATA_DIR/hbbr-console.sock)"],
        ["hbbs-descriptors", None, None, "descriptors kept for hbbs's connections however "
                                         "busy the relay is (default a quarter of the "
                                         "descriptor budget)", int],
        ["api", None, "on", "'off' leaves the API server out (default on, port PORT-2 unless "
                            "--api-port)"],
    ]
    optParameters += _relay_parameters()
    optParameters += _api_parameters()
    optFlags = [
        ["announced-only", None, "hbbr pairs only relay uuids this hbbs brokered in the last "
                                 "minute, each once, so a leaked key does not open the relay"],
    ] + [[_relay_name(long), None, f"hbbr's --{long}: {help_}"]
         for long, _, help_ in hbbr_tap.Options.optFlags]

    def postOptions(self):
        if self["hbbs-descriptors"] is not None and self["hbbs-descriptors"] < 0:
            raise usage.UsageError("--hbbs-descriptors must not be negative")
        if self["api"] not in ("on", "off"):
            raise usage.UsageError(f"--api must be on or off, got {self['api']!r}")
        if self["relay-port"] is not None:
            try:
                self["relay-port"] = int(self["relay-port"])
            except ValueError:
                raise usage.UsageError(f"invalid relay port {self['relay-port']!r}") from None


def hbbs_options(options):
    parsed = hbbs_tap.Options()
    argv = []
    for long, _, _, _ in hbbs_tap.OPTIONS:
        if options[long] is not None:
            argv += [f"--{long}", options[long]]
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
    for long, *_ in hbbr_tap.Options.optParameters:
        if long not in RELAY_DERIVED and options[_relay_name(long)] is not None:
            argv += ["--" + long, str(options[_relay_name(long)])]
    for long, *_ in hbbr_tap.Options.optFlags:
        if options[_relay_name(long)]:
            argv.append("--" + long)
    argv += ["--trusted-proxies", ",".join(str(n) for n in config.trusted.networks),
             "--max-connections-per-proxy", str(config.max_per_proxy),
             "--handshake-timeout", str(config.handshake_timeout),
             "--max-request-head", str(config.max_request_head),
             "--log-format", config.log_format, "--log-level", config.log_level]
    parsed = hbbr_tap.Options()
    parsed.parseOptions(argv)
    return parsed


def api_options(options, config):
    """The API's options: hbbs's place, addresses, proxies, admin token and logs, port PORT-2."""
    host = config.bind if config.bind not in ("", "0.0.0.0", "::") else "127.0.0.1"
    argv = ["--data-dir", config.data_dir, "--port", str(config.port + API_PORT_OFFSET),
            "--hbbs", f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}",
            "--trusted-proxies", ",".join(str(n) for n in config.trusted.networks),
            "--log-format", config.log_format, "--log-level", config.log_level]
    if config.bind:
        argv += ["--bind", config.bind]
    if options["config"]:
        argv += ["--config", options["config"]]
    if config.admin_token:
        argv += ["--admin-token", config.admin_token]
    for long, *_ in api_tap.OPTIONS:
        if long not in API_DERIVED and options["api-" + long] is not None:
            argv += ["--" + long, options["api-" + long]]
    parsed = api_tap.Options()
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
    """hbbs, then hbbr, then the API (``api``, None for none); errors at start become one
    line and exit status 1.

    Both draw their connections from one descriptor budget, sized at start,
    of which ``hbbs_descriptors`` (default a quarter) stay free for hbbs.
    """

    log = Logger()

    def __init__(self, hbbs, hbbr, reactor, hbbs_descriptors=None, rlimits=resource, api=None):
        super().__init__()
        self.hbbs = hbbs
        self.hbbr = hbbr
        self.api = api
        self.reactor = reactor
        self.hbbs_descriptors = hbbs_descriptors
        self.rlimits = rlimits
        hbbs.setServiceParent(self)
        hbbr.setServiceParent(self)
        if api is not None:
            api.setServiceParent(self)

    def setServiceParent(self, parent):
        logs.use_format(parent, self.hbbs.config.log_format)
        super().setServiceParent(parent)

    def startService(self):
        exit_on_startup_error("rustdesk-server", self._start)

    def _start(self):
        share = self.hbbs.descriptors
        share.budget.open(self.rlimits)
        total = share.budget.total
        if self.hbbs_descriptors is not None and self.hbbs_descriptors >= total:
            raise ConfigError(f"--hbbs-descriptors {self.hbbs_descriptors} leaves the relay "
                              f"nothing of the {total} descriptors for connections")
        share.guaranteed = (self.hbbs_descriptors if self.hbbs_descriptors is not None
                            else total // HBBS_SHARE)
        super().startService()
        server, allowed = self.hbbs.server, self.hbbr.allowed
        if allowed is not None:
            server.relay_announcer = LocalAnnouncer(allowed, self.reactor,
                                                    then=server.relay_announcer)
        public = server.server_key.public_key
        api = self.api.config if self.api is not None else None
        self.log.info("hbbs and hbbr share {directory} and key {fingerprint}; relay pairs "
                      "{which} uuids; {kept} of {total} connection descriptors kept for hbbs; "
                      "{api}", directory=os.path.abspath(self.hbbs.config.data_dir),
                      fingerprint=keys.fingerprint(public) if public is not None else "(none)",
                      which="only announced" if allowed is not None else "any",
                      kept=share.guaranteed, total=share.budget.total,
                      api=(f"API on {api.endpoint}, database {describe(api.db_url)}"
                           if api is not None else "API off"), event="combined_ready")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        config = hbbs_tap.build_config(hbbs_options(options))
        relay = hbbr_options(options, config)
        api = (api_tap.build_config(api_options(options, config))
               if options["api"] == "on" else None)
    except (ConfigError, usage.UsageError) as e:
        raise SystemExit(f"rustdesk-server: {e}")
    logs.set_level(config.log_level)
    allowed = AllowedUuids() if options["announced-only"] else None
    budget = DescriptorBudget()
    return CombinedService(
        hbbs_tap.HbbsService(config, reactor, descriptors=budget.share("hbbs")),
        hbbr_tap.HbbrService(relay, reactor, allowed=allowed, descriptors=budget.share("hbbr")),
        reactor, options["hbbs-descriptors"],
        api=api_tap.ApiService(api, reactor) if api is not None else None)
