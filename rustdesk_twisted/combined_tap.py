"""``twistd rustdesk-server``: hbbs and hbbr in one process, one data directory, one key.

The simple deployment (USERS.md 1.1, 1.4): both roles read the same
``.env`` and ``id_ed25519``, so the relay can never hold a different key
than the ID server.  hbbs starts first and loads or generates the key;
hbbr then derives its licence check from the same ``-k`` value.  With
``--announced-only`` hbbs hands every relay uuid it brokers straight to
hbbr's allow table, and hbbr pairs nothing else (USERS.md 1.12).
"""

import os

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from .config import ConfigError
from .pluginoptions import PluginOptions
from .startup import exit_on_startup_error
from .hbbr import tap as hbbr_tap
from .hbbr.announce import AllowedUuids
from .hbbs import tap as hbbs_tap
from .wire import keys


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
    ]
    optFlags = [
        ["announced-only", None, "hbbr pairs only relay uuids this hbbs brokered in the last "
                                 "minute, each once, so a leaked key does not open the relay"],
    ]

    def postOptions(self):
        if self["relay-port"] is not None:
            try:
                self["relay-port"] = int(self["relay-port"])
            except ValueError:
                raise usage.UsageError(f"invalid relay port {self['relay-port']!r}") from None


def _unix(directory, name):
    return "unix:" + os.path.join(directory, name).replace(":", "\\:") + ":mode=600:lockfile=1"


def hbbs_options(options):
    parsed = hbbs_tap.Options()
    argv = []
    for name in ("port", "bind", "key", "relay-servers", "data-dir", "console"):
        if options[name] is not None:
            argv += [f"--{name}", options[name]]
    parsed.parseOptions(argv)
    return parsed


def hbbr_options(options, config):
    """hbbr's options derived from the hbbs configuration, so both agree on key and place."""
    relay_port = options["relay-port"] if options["relay-port"] is not None else config.port + 1
    argv = ["--directory", config.data_dir, "--port", str(relay_port),
            "--key", "-" if config.key_option is None else config.key_option,
            "--console", options["relay-console"] or _unix(config.data_dir, "hbbr-console.sock")]
    if config.bind:
        argv += ["--bind", config.bind]
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
    """hbbs, then hbbr; errors at start become one line and exit status 1."""

    log = Logger()

    def __init__(self, hbbs, hbbr, reactor):
        super().__init__()
        self.hbbs = hbbs
        self.hbbr = hbbr
        self.reactor = reactor
        hbbs.setServiceParent(self)
        hbbr.setServiceParent(self)

    def startService(self):
        exit_on_startup_error("rustdesk-server", super().startService)
        server, allowed = self.hbbs.server, self.hbbr.allowed
        if allowed is not None:
            server.relay_announcer = LocalAnnouncer(allowed, self.reactor,
                                                    then=server.relay_announcer)
        public = server.server_key.public_key
        self.log.info("hbbs and hbbr share {directory} and key {fingerprint}; relay pairs "
                      "{which} uuids", directory=os.path.abspath(self.hbbs.config.data_dir),
                      fingerprint=keys.fingerprint(public) if public is not None else "(none)",
                      which="only announced" if allowed is not None else "any",
                      event="combined_ready")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        config = hbbs_tap.build_config(hbbs_options(options))
        relay = hbbr_options(options, config)
    except (ConfigError, usage.UsageError) as e:
        raise SystemExit(f"rustdesk-server: {e}")
    allowed = AllowedUuids() if options["announced-only"] else None
    return CombinedService(hbbs_tap.HbbsService(config, reactor),
                           hbbr_tap.HbbrService(relay, reactor, allowed=allowed), reactor)
