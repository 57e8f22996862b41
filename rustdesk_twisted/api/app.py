"""The API as one object: its parts, its route table and its twisted.web site.

Each part (accounts, devices, address books, audit, console) registers its
own routes here; :class:`ApiApp` is what the twistd plugin serves and what an
existing Twisted application can mount (``ApiApp(...).site()``).
"""

from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import deferToThreadPool

from ..wire.websocket import TrustedProxies, client_address
from . import openapi
from .hbbs import HbbsLink
from .accounts import DEFAULT_TOKEN_LIFETIME, Accounts
from .devices import DEFAULT_MAX_DEVICES, DEFAULT_SEEN_INTERVAL, Devices
from .groups import Groups
from .addressbooks import AddressBooks
from .audit import DEFAULT_RETENTION_DAYS, DEFAULT_UNKNOWN_PER_MINUTE, Audit
from .recordings import Recordings
from .switchgrants import SwitchGrants
from .console import Console
from .http import DEFAULT_MAX_BODY, ApiResource, ApiSite, Router, json_reply
from .monitoring import Monitoring
from .oidc import Fetcher, Oidc, PendingLogins
from .totp import TwoFactor


def in_reactor_threads(reactor):
    """``blocking(f, *args)`` for CPU-heavy work: the reactor's thread pool."""
    def blocking(f, *args):
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
    return blocking


def at_once(f, *args):
    """``blocking`` for the in-memory tests: run now, a Deferred of the result."""
    return maybeDeferred(f, *args)


class ApiApp:
    """``hbbs`` is the :class:`~.hbbs.HbbsLink` to the rendezvous server beside the API;
    :attr:`services` are the parts' timers, for the service that runs the app;
    ``data_dir`` holds hbbs's key files; ``console`` the :class:`~.console.ConsoleOptions`."""

    def __init__(self, db, clock, blocking, token_lifetime=DEFAULT_TOKEN_LIFETIME,
                 trusted=None, max_body=DEFAULT_MAX_BODY, hbbs=None, ab_limits=None,
                 audit_retention_days=DEFAULT_RETENTION_DAYS,
                 audit_unknown_per_minute=DEFAULT_UNKNOWN_PER_MINUTE, recording_dir=None,
                 recording_limits=None, admin_token=None, oidc_providers=(),
                 public_url=None, oidc_fetcher=None, oidc_pending=None,
                 max_devices=DEFAULT_MAX_DEVICES, seen_interval=DEFAULT_SEEN_INTERVAL,
                 data_dir=".", console=None):
        self.db = db
        self.clock = clock
        self.trusted = trusted if trusted is not None else TrustedProxies()
        self.max_body = max_body
        self.hbbs = hbbs if hbbs is not None else HbbsLink(clock)
        self.accounts = Accounts(db, blocking, token_lifetime)
        self.two_factor = TwoFactor(db, blocking)
        self.oidc = Oidc(oidc_providers, self.accounts, db, clock,
                         oidc_fetcher or Fetcher(clock), public_url,
                         oidc_pending if oidc_pending is not None else PendingLogins())
        self.login_options = self.oidc.login_options()
        self.router = Router()
        self.router.add("GET", "/api/login-options", self._login_options,
                        summary="The login dialog's third-party buttons",
                        reply={"type": "array", "items": {"type": "string"}})
        self.accounts.add_routes(self.router)
        self.address_books = AddressBooks(db, self.accounts.authenticate, ab_limits, max_body)
        self.address_books.add_routes(self.router)
        self.audit = Audit(db, clock, self.hbbs, self.accounts.authenticate,
                           audit_retention_days, audit_unknown_per_minute)
        self.switch_grants = SwitchGrants(db, clock, self.hbbs)
        self.recordings = Recordings(db, blocking, self.hbbs, recording_dir, recording_limits)
        for part in (self.audit, self.switch_grants, self.recordings):
            part.add_routes(self.router)
        self.monitoring = Monitoring(db, self.accounts, clock, admin_token)
        self.monitoring.add_routes(self.router)
        self.oidc.add_routes(self.router)
        self.devices = Devices(db, clock, self.hbbs, self.accounts, max_devices, seen_interval,
                               self.address_books.limits)
        self.devices.add_routes(self.router)
        Groups(db, self.accounts).add_routes(self.router)
        self.services = [self.audit.pruner, self.switch_grants.pruner,
                         self.devices.writer]
        self.console = Console(self, data_dir, console)
        self.console.add_routes(self.router)
        openapi.add_routes(self.router)

    def _login_options(self, call):
        """The buttons of the login dialog: ``oidc/<provider>`` per configured provider."""
        return json_reply(list(self.login_options))

    def client_ip(self, request):
        return client_address(request, self.trusted)[0]

    def resource(self):
        return ApiResource(self.router, self.clock, self.client_ip,
                           observe=self.monitoring.stats.observe)

    def site(self):
        return ApiSite(self.resource(), max_body=self.max_body, reactor=self.clock)
