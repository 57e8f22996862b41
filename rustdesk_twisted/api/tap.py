"""``twistd rustdesk-api``: the HTTP API (accounts, devices, address books) on port 21114.

Settings come from flags, ``--config``, ``DATA_DIR/.env`` and the environment,
as for hbbs (PROTOCOL.md section 9).  The database is SQLite beside hbbs's
(``DATA_DIR/db_api.sqlite3``, 0600) unless ``API_DB_URL=postgresql://…``.
"""

import os

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService

from .. import __version__, logs
from ..config import ConfigError, layered_settings
from ..hbbs.store import path_from_db_url
from ..listeners import server_endpoint
from ..logs import Logger
from ..pluginoptions import PluginOptions
from ..startup import ExitOnStartupError
from ..wire.websocket import TrustedProxies
from . import migrate
from .addressbooks import DEFAULT_MAX_PEERS, DEFAULT_MAX_TAGS, BookLimits
from .audit import DEFAULT_RETENTION_DAYS, DEFAULT_UNKNOWN_PER_MINUTE
from .recordings import DEFAULT_MAX_FILE, DEFAULT_MAX_FILES, DEFAULT_QUOTA, RecordingLimits
from .accounts import ARGON2_PARAMETERS, DEFAULT_TOKEN_LIFETIME, hash_password
from .console import ConsoleOptions
from .console.session import DEFAULT_SESSION_IDLE
from .app import ApiApp, in_reactor_threads
from .hbbs import HbbsLink
from .db import Database, describe, engine_url
from .devices import DEFAULT_MAX_DEVICES, DEFAULT_SEEN_INTERVAL
from .http import DEFAULT_MAX_BODY
from .oidc import (
    CALLBACK_PATH,
    DEFAULT_MAX_PENDING,
    DEFAULT_PENDING_PER_SOURCE,
    PENDING_TTL,
    PendingLogins,
    check_url,
    providers_from_settings,
)
from .users import UserError, add_user, check_name, check_password, count_users

DEFAULT_PORT = 21114

# (long flag, short flag, setting name, help)
OPTIONS = [
    ("port", "p", "API-PORT", f"HTTP port (default PORT-2, {DEFAULT_PORT}: the rendezvous port "
                              "minus 2, where clients look for the API)."),
    ("bind", "b", "BIND", "IP address to listen on (default: all, dual-stack)."),
    ("listen", None, "API-LISTEN", "Endpoint to listen on instead (e.g. ssl:443:privateKey=…)."),
    ("data-dir", None, "DATA-DIR", "Directory of db_api.sqlite3 and .env (default: .)."),
    ("config", "c", None, "Extra INI file of settings (KEY=value lines)."),
    ("db-url", None, "API-DB-URL", "SQLite file path or postgresql://user:pass@host/db "
                                   "(default DATA_DIR/db_api.sqlite3)."),
    ("hbbs", None, "HBBS", "host[:port] of the hbbs whose peers the API shows (default "
                           "127.0.0.1:21116; its PORT-1 answers online queries), or 'off'. "
                           "Its peer table (DB_URL, default DATA_DIR/db_v2.sqlite3) is read "
                           "read-only, its console socket DATA_DIR/hbbs-console.sock drives "
                           "release and change-ID."),
    ("token-lifetime", None, "TOKEN-LIFETIME",
     f"Seconds a login token stays valid (default {DEFAULT_TOKEN_LIFETIME})."),
    ("max-devices", None, "MAX-DEVICES",
     f"Most devices the API keeps (in memory for the heartbeat); sysinfo from new ones past "
     f"it is refused (default {DEFAULT_MAX_DEVICES})."),
    ("last-seen-interval", None, "LAST-SEEN-INTERVAL",
     f"Seconds between batched writes of devices' last-seen times (default "
     f"{DEFAULT_SEEN_INTERVAL})."),
    ("max-body", None, "MAX-BODY", f"Largest request body in bytes (default {DEFAULT_MAX_BODY})."),
    ("trusted-proxies", None, "TRUSTED-PROXIES",
     "CIDRs whose X-Real-IP/X-Forwarded-For are believed (default 127.0.0.0/8,::1: hbbs's "
     "HTTP proxy and a local reverse proxy)."),
    ("max-peer-one-ab", None, "MAX-PEER-ONE-AB",
     "Entries one address book may hold, as clients are told (default 0: no limit told; "
     "--ab-max-peers still holds)."),
    ("ab-max-peers", None, "AB-MAX-PEERS",
     f"Entries one address book holds at most, recycle bin apart (default {DEFAULT_MAX_PEERS})."),
    ("ab-max-tags", None, "AB-MAX-TAGS",
     f"Tags one address book holds at most (default {DEFAULT_MAX_TAGS})."),
    ("audit-retention-days", None, "AUDIT-RETENTION-DAYS",
     f"Days audit logs are kept, pruned hourly (default {DEFAULT_RETENTION_DAYS}; 0 keeps "
     "them)."),
    ("audit-unknown-per-minute", None, "AUDIT-UNKNOWN-PER-MINUTE",
     "Audit posts per minute and source from devices neither this API nor hbbs knows (default "
     f"{DEFAULT_UNKNOWN_PER_MINUTE}); known devices are not limited."),
    ("recording-dir", None, "RECORDING-DIR", "Where uploaded session recordings go, one "
                                             "directory per device (default DATA_DIR/"
                                             "recordings), or 'off'."),
    ("recording-max-file", None, "RECORDING-MAX-FILE",
     f"Largest recording in bytes (default {DEFAULT_MAX_FILE})."),
    ("recording-quota", None, "RECORDING-QUOTA",
     f"Bytes of recordings one device may store (default {DEFAULT_QUOTA})."),
    ("recording-max-files", None, "RECORDING-MAX-FILES",
     f"Recordings one device may store (default {DEFAULT_MAX_FILES})."),
    ("admin-token", None, "ADMIN-TOKEN", "Bearer token for /metrics from other hosts (this "
                                         "host needs none); the one hbbs's admin listener takes."),
    ("admin-token-file", None, "ADMIN-TOKEN-FILE", "File holding ADMIN-TOKEN."),
    ("initial-admin", None, "INITIAL-ADMIN",
     "Create this administrator at start if no user exists yet, with the password from "
     "INITIAL_ADMIN_PASSWORD_FILE (default: none; see rustdesk-admin user add)."),
    ("oidc", None, "OIDC",
     "Comma-separated OIDC provider names, each a button in the client's login dialog; NAME is "
     "set up by OIDC_NAME_ISSUER, OIDC_NAME_CLIENT_ID, OIDC_NAME_CLIENT_SECRET_FILE, "
     "OIDC_NAME_SCOPES, OIDC_NAME_SIGNUP=Y, OIDC_NAME_LINK_EMAIL=Y in the environment, .env or "
     "--config (default: none)."),
    ("public-url", None, "PUBLIC-URL",
     f"The API's address as browsers reach it (https://rd.example.com); providers send them "
     f"back to PUBLIC_URL{CALLBACK_PATH} (default: http:// and the request's Host header, "
     "which the client chooses: set it when OIDC is on)."),
    ("oidc-pending", None, "OIDC-PENDING",
     f"OIDC logins in progress at most, each kept {PENDING_TTL:.0f}s (default "
     f"{DEFAULT_MAX_PENDING})."),
    ("oidc-pending-per-source", None, "OIDC-PENDING-PER-SOURCE",
     f"OIDC logins in progress per client address, IPv6 per /64 (default "
     f"{DEFAULT_PENDING_PER_SOURCE})."),
    ("console-secure-cookies", None, "CONSOLE-SECURE-COOKIES",
     "Y: mark the web console's cookies Secure even on plain http (a TLS proxy in front); "
     "over https they always are."),
    ("console-session-idle", None, "CONSOLE-SESSION-IDLE",
     f"Seconds a web console session lives without a request (default "
     f"{DEFAULT_SESSION_IDLE})."),
    ("log-format", None, "LOG-FORMAT", "text (default) or json: one JSON object per line."),
    ("log-level", None, "LOG-LEVEL", "debug, info (default), warn or error."),
]


class Options(PluginOptions):
    synopsis = "[options]"
    longdesc = ("RustDesk API server: accounts, devices, address books, audit and the web "
                "console, for unmodified RustDesk clients.")
    optParameters = [[long, short, None, help_] for long, short, _, help_ in OPTIONS]

    def cli_settings(self):
        return {name: self[long] for long, _, name, _ in OPTIONS
                if name is not None and self[long] is not None}


class ApiConfig:
    """Validated settings of one API server."""

    def __init__(self, settings):
        self.settings = settings
        self.data_dir = settings.get("DATA-DIR") or "."
        rendezvous = settings.integer("PORT", DEFAULT_PORT + 2, minimum=3, maximum=65535)
        self.port = settings.integer("API-PORT", rendezvous - 2, minimum=1, maximum=65535)
        self.bind = settings.get("BIND") or ""
        interface = self.bind.replace(":", "\\:") if self.bind else "\\:\\:"
        self.endpoint = settings.get("API-LISTEN") or f"tcp:{self.port}:interface={interface}"
        self.db_url = engine_url(settings.get("API-DB-URL"), self.data_dir)
        self.hbbs = _hbbs_address(settings.get("HBBS"))
        self.peer_db = path_from_db_url(settings.get("DB-URL") or
                                        os.path.join(self.data_dir, "db_v2.sqlite3"))
        self.console = os.path.join(self.data_dir, "hbbs-console.sock")
        self.token_lifetime = settings.integer("TOKEN-LIFETIME", DEFAULT_TOKEN_LIFETIME,
                                               minimum=60)
        self.max_devices = settings.integer("MAX-DEVICES", DEFAULT_MAX_DEVICES, minimum=1)
        self.seen_interval = settings.integer("LAST-SEEN-INTERVAL", DEFAULT_SEEN_INTERVAL,
                                              minimum=1, maximum=3600)
        self.max_body = settings.integer("MAX-BODY", DEFAULT_MAX_BODY, minimum=1024,
                                         maximum=256 * 1024 * 1024)
        max_peers = settings.integer("AB-MAX-PEERS", DEFAULT_MAX_PEERS, minimum=1,
                                     maximum=1_000_000)
        self.ab_limits = BookLimits(
            max_peer_one_ab=settings.integer("MAX-PEER-ONE-AB", 0, minimum=0, maximum=max_peers),
            max_peers=max_peers,
            max_tags=settings.integer("AB-MAX-TAGS", DEFAULT_MAX_TAGS, minimum=1, maximum=100_000))
        self.audit_retention_days = settings.integer("AUDIT-RETENTION-DAYS",
                                                     DEFAULT_RETENTION_DAYS, minimum=0)
        self.audit_unknown_per_minute = settings.integer(
            "AUDIT-UNKNOWN-PER-MINUTE", DEFAULT_UNKNOWN_PER_MINUTE, minimum=0)
        recording_dir = settings.get("RECORDING-DIR") or os.path.join(self.data_dir,
                                                                      "recordings")
        self.recording_dir = None if recording_dir.lower() == "off" else recording_dir
        self.recording_limits = RecordingLimits(
            settings.integer("RECORDING-MAX-FILE", DEFAULT_MAX_FILE, minimum=1),
            settings.integer("RECORDING-QUOTA", DEFAULT_QUOTA, minimum=1),
            settings.integer("RECORDING-MAX-FILES", DEFAULT_MAX_FILES, minimum=1))
        self.admin_token = settings.get("ADMIN-TOKEN") or None
        self.console_options = ConsoleOptions(
            secure_cookies=settings.flag("CONSOLE-SECURE-COOKIES"),
            session_idle=settings.integer("CONSOLE-SESSION-IDLE", DEFAULT_SESSION_IDLE,
                                          minimum=60, maximum=30 * 86400))
        proxies = settings.get("TRUSTED-PROXIES")
        try:
            self.trusted = (TrustedProxies(proxies.split(",")) if proxies is not None
                            else TrustedProxies())
        except ValueError as e:
            raise ConfigError(f"invalid TRUSTED-PROXIES: {e}") from None
        self.oidc_providers = providers_from_settings(settings)
        public_url = settings.get("PUBLIC-URL")
        self.public_url = check_url(public_url, "PUBLIC-URL") if public_url else None
        self.oidc_pending = settings.integer("OIDC-PENDING", DEFAULT_MAX_PENDING, minimum=1)
        self.oidc_pending_per_source = settings.integer(
            "OIDC-PENDING-PER-SOURCE", DEFAULT_PENDING_PER_SOURCE, minimum=1)
        self.initial_admin = settings.get("INITIAL-ADMIN") or None
        self.initial_admin_password = None
        if self.initial_admin is not None:
            try:
                check_name(self.initial_admin)
                self.initial_admin_password = check_password(
                    settings.get("INITIAL-ADMIN-PASSWORD") or "")
            except UserError as e:
                raise ConfigError(f"INITIAL-ADMIN: {e} (the password comes from "
                                  "INITIAL_ADMIN_PASSWORD_FILE)") from None
        try:
            self.log_format = logs.check_format(settings.get("LOG-FORMAT"))
            self.log_level = logs.check_level(settings.get("LOG-LEVEL"))
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _hbbs_address(text):
    """(host, PORT-1) of the hbbs at ``text`` ("host[:port]"), or None for 'off'."""
    text = (text or "127.0.0.1").strip()
    if text.lower() == "off":
        return None
    host, port = text, 21116
    if text.count(":") == 1 or text.startswith("["):
        host, _, number = text.rpartition(":")
        try:
            port = int(number)
        except ValueError:
            raise ConfigError(f"HBBS must be host[:port] or 'off', got {text!r}") from None
    if not 2 <= port <= 65535:
        raise ConfigError(f"HBBS port out of range in {text!r}")
    return host.strip("[]"), port - 1


class ApiService(service.MultiService):
    """The database, the app and its listener; the database opens in ``startService``."""

    log = Logger()

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.db = None
        self.app = None

    def startService(self):
        config = self.config
        self.db = Database(config.db_url, self.reactor)
        try:
            migrate.upgrade(self.db)
            self._first_administrator()
            blocking = in_reactor_threads(self.reactor)
            hbbs = HbbsLink(self.reactor, config.hbbs, config.peer_db, config.console, blocking)
            self.app = ApiApp(self.db, self.reactor, blocking,
                              token_lifetime=config.token_lifetime, trusted=config.trusted,
                              max_body=config.max_body, hbbs=hbbs, ab_limits=config.ab_limits,
                              audit_retention_days=config.audit_retention_days,
                              audit_unknown_per_minute=config.audit_unknown_per_minute,
                              recording_dir=config.recording_dir,
                              recording_limits=config.recording_limits,
                              admin_token=config.admin_token,
                              oidc_providers=config.oidc_providers, public_url=config.public_url,
                              oidc_pending=PendingLogins(
                                  max_entries=config.oidc_pending,
                                  per_source=config.oidc_pending_per_source),
                              max_devices=config.max_devices,
                              seen_interval=config.seen_interval, data_dir=config.data_dir,
                              console=config.console_options)
            try:
                endpoint = server_endpoint(self.reactor, config.endpoint)
            except ValueError as e:
                raise ConfigError(f"invalid endpoint {config.endpoint!r}: {e}") from None
            listener = StreamServerEndpointService(endpoint, self.app.site())
            listener._raiseSynchronously = True
            listener.setServiceParent(self)
            for timer in self.app.services:
                timer.setServiceParent(self)
            super().startService()
        except BaseException:
            self.db.close()
            raise
        self._banner()

    def _first_administrator(self):
        """INITIAL_ADMIN on an empty user table; else say how to create the first user."""
        if self.db.run_now(count_users):
            return
        name = self.config.initial_admin
        if name is None:
            self.log.warn("No API user yet: create the first administrator with "
                          "`rustdesk-admin user add NAME --admin` (or set INITIAL_ADMIN and "
                          "INITIAL_ADMIN_PASSWORD_FILE)", event="api.no_users")
            return
        self.db.run_now(add_user, name, hash_password(self.config.initial_admin_password),
                        self.reactor.seconds(), is_admin=True)
        self.log.info("Created the first administrator {name} (INITIAL_ADMIN)", name=name,
                      event="api.initial_admin")

    def _banner(self):
        config, log = self.config, self.log
        log.info("rustdesk-twisted api {version}", version=__version__, event="banner")
        log.info("API_DB_URL={db}", db=describe(config.db_url), event="banner")
        log.info("Listening on http {endpoint}", endpoint=config.endpoint, event="banner")
        if config.hbbs is not None:
            log.info("Online state from hbbs at {host}:{port}; peer keys from {db}",
                     host=config.hbbs[0], port=config.hbbs[1], db=config.peer_db,
                     event="banner")
        log.info("Devices: at most {max_devices} kept; last-seen times written every "
                 "{interval}s", max_devices=config.max_devices, interval=config.seen_interval,
                 event="banner")
        log.info("Audit logs kept {days} days (0: for ever); recordings {recordings}",
                 days=config.audit_retention_days,
                 recordings=config.recording_dir or "off", event="banner")
        console = config.console_options
        log.info("Web console at / (session idle {idle}s, cookies {secure})",
                 idle=console.session_idle, event="banner",
                 secure="always Secure" if console.secure_cookies else "Secure over https")
        log.info("Passwords: argon2id t={time_cost} m={memory_cost}KiB p={parallelism}; tokens "
                 "valid {lifetime}s", lifetime=config.token_lifetime, event="banner",
                 **ARGON2_PARAMETERS)
        limits = config.ab_limits
        log.info("Address books: at most {peers} entries (clients told {told}) and {tags} tags "
                 "each", peers=limits.peers, told=limits.max_peer_one_ab, tags=limits.max_tags,
                 event="banner")
        for provider in config.oidc_providers:
            log.info("OIDC provider {name}: {issuer}, client {client}{signup}",
                     name=provider.name, issuer=provider.issuer, client=provider.client_id,
                     signup=", sign-up on first login" if provider.signup else "",
                     event="banner")
        if config.oidc_providers and config.public_url is None:
            log.warn("OIDC redirect URI from each request's Host header: set PUBLIC-URL to the "
                     "address registered with the providers", event="banner")
        elif config.oidc_providers:
            log.info("OIDC redirect URI {uri}", uri=config.public_url.rstrip("/") + CALLBACK_PATH,
                     event="banner")

    def stopService(self):
        d = super().stopService()

        def close(result):
            if self.db is not None:
                self.db.close()
            return result
        return d.addBoth(close)


def build_config(options, environ=None):
    cli = options.cli_settings()
    data_dir = cli.get("DATA-DIR") or "."
    return ApiConfig(layered_settings(environ, data_dir, options["config"], cli))


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        config = build_config(options)
    except ConfigError as e:
        raise SystemExit(f"rustdesk-api: {e}")
    logs.set_level(config.log_level)
    return ExitOnStartupError("rustdesk-api", ApiService(config, reactor), config.log_format)
