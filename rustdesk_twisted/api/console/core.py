"""The web console's frame: sign-in, sessions, the checks every page passes, and its routes.

Pages are plain functions ``async handler(call, viewer)`` of the area modules
(:mod:`.users`, :mod:`.devices`, ...), registered through :meth:`Console.route`,
which wraps each one in the same order of checks: a post must come from this
site and carry the session's CSRF token; then a live session is required (else
the sign-in page), and an administrator for the admin pages.  A refusal in a
post comes back on the page it belongs to, as a notice after a redirect.
"""

from importlib import resources
from urllib.parse import urlencode

from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import ensureDeferred

from ...admission import source_key
from ...logs import Logger
from ...logtext import LimitLog, quoted
from .. import tables
from ..accounts import MAX_PASSWORD, TOO_MANY_ATTEMPTS, _check_password, \
    _user_by_name
from ..http import ApiError, Reply
from . import data
from .forms import MAX_ID, Form
from .render import TEMPLATES, Pager, html_reply, redirect
from .session import LOGIN_COOKIE, SESSION_COOKIE, ConsoleSessions, DEFAULT_SESSION_IDLE, \
    Notices, cookie_header, form_token, form_token_matches, new_secret, read_cookies, same_origin

WRONG_LOGIN = "Wrong name, password or code."
MAX_NEXT = 500
MAX_SEARCH = 100
MAX_PAGE = 100_000
RECENT = 8


class ConsoleOptions:
    """The console's settings: Secure cookies even over plain http (a TLS proxy in front),
    and how long an unused session lives."""

    def __init__(self, secure_cookies=False, session_idle=DEFAULT_SESSION_IDLE):
        self.secure_cookies = secure_cookies
        self.session_idle = session_idle


def path_id(call, name="id"):
    """A numeric path parameter; anything else is a page that does not exist."""
    text = call.params.get(name, "")
    if not text.isdigit() or len(text) > 10 or int(text) > MAX_ID:
        raise ApiError(404, "no such page")
    return int(text)


LIST_QUERY = {"q": {"type": "string", "maxLength": MAX_SEARCH},
              "page": {"type": "integer", "minimum": 1}}


def form_schema(fields):
    """A post's form for the OpenAPI document: text fields, the CSRF token required."""
    names = ("csrf",) + tuple(fields)
    return {"form": {"type": "object", "required": ["csrf"],
                     "properties": {name: {"type": "string"} for name in names}}}


def list_args(call):
    """The search text and the page number of a list page."""
    q = call.query.get("q", "").strip()[:MAX_SEARCH]
    return q, call.query_int("page", 1, minimum=1, maximum=MAX_PAGE)


def pager(call, number, total):
    return Pager(call.path, call.query, number, data.PAGE_SIZE, total)


def actor(call, viewer):
    return data.Actor(viewer.user, call.client_ip, call.now)


class Pages:
    """An area of the console: its handlers, and the routes :meth:`add_routes` registers."""

    def __init__(self, console):
        self.console = console
        self.db = console.db


def safe_next(value):
    """A path of this site to go to after signing in, or '/'."""
    if (not isinstance(value, str) or not value.startswith("/") or value.startswith("//")
            or "\\" in value or len(value) > MAX_NEXT or any(ord(c) < 0x21 for c in value)):
        return "/"
    return value


class ConsoleCore:
    """The console of one API server; ``app`` gives the database, clock, accounts and hbbs.

    ``parts`` are the page classes whose routes it serves (see the package)."""

    parts = ()

    log = Logger()

    def __init__(self, app, data_dir, options=None):
        options = options or ConsoleOptions()
        self.db = app.db
        self.clock = app.clock
        self.accounts = app.accounts
        self.blocking = app.accounts.blocking
        self.hbbs = app.hbbs
        self.audit = app.audit
        self.data_dir = data_dir
        self.secure_cookies = options.secure_cookies
        self.sessions = ConsoleSessions(app.db, options.session_idle)
        self.notices = Notices()
        self.templates = TEMPLATES
        self.limits = LimitLog(self.log)
        self.css = resources.files(__package__).joinpath("static", "console.css").read_bytes()

    # -- replies ---------------------------------------------------------------------------

    def page(self, viewer, template, status=200, headers=(), **context):
        """A page of ``template``; the viewer's pending notices shown once."""
        notices = self.notices.take(viewer.key, self.clock.seconds()) if viewer else []
        return html_reply(self.templates.render(
            template, viewer=viewer, csrf=viewer.csrf if viewer else "", notices=notices,
            section=context.pop("section", ""), **context), status, headers)

    def error_page(self, viewer, status, message):
        return self.page(viewer, "error.html", status=status, message=message,
                         title=f"Error {status}")

    def done(self, viewer, location, text, kind="ok"):
        """After a change: a notice, and back to a page with a GET."""
        self.notices.put(viewer.key, kind, text, self.clock.seconds())
        return redirect(location)

    def secure(self, call):
        return self.secure_cookies or call.secure

    # -- the checks around every page ------------------------------------------------------

    def route(self, router, method, pattern, handler, summary, admin=True, back=None,
              fields=(), query=None):
        """Register a console page: ``back`` (a pattern of the path's parameters) is where a
        refused post returns to, with the reason as a notice; ``fields`` (a post's form) and
        ``query`` describe it in the OpenAPI document."""
        def serve(call):
            return ensureDeferred(self._serve(call, handler, admin, back))
        router.add(method, pattern, serve, summary=summary, reply="html", query=query,
                   body=form_schema(fields) if method == "POST" else None)

    async def _serve(self, call, handler, admin, back):
        secret = read_cookies(call).get(SESSION_COOKIE)
        viewer = None
        try:
            if call.method == "POST":
                refused = self._post_refused(call, secret, "session")
                if refused is not None:
                    return self.error_page(None, 403, refused)
            viewer = await self.sessions.viewer(secret, call.now)
            if viewer is None:
                if call.method == "POST":
                    return redirect("/login")
                return redirect("/login?" + urlencode({"next": _here(call)}))
            if admin and not viewer.is_admin:
                return self.error_page(viewer, 403, "This page is for administrators.")
            return await handler(call, viewer)
        except IntegrityError:
            return self._refused(call, viewer, back, 409,
                                 "That conflicts with an existing entry (a name already taken?)")
        except ApiError as e:
            return self._refused(call, viewer, back, e.status, e.message)

    def _refused(self, call, viewer, back, status, message):
        if call.method == "POST" and viewer is not None and back is not None and status < 500:
            return self.done(viewer, back.format(**call.params), message, "error")
        return self.error_page(viewer, status, message)

    def _post_refused(self, call, secret, purpose):
        """Why a post is refused (another site's, no valid form, no CSRF token), or None;
        ``call.form`` holds the parsed form when it is accepted."""
        if not same_origin(call):
            return "This form was not sent from a page of this site."
        call.form = Form.parse(call.header("content-type"), call.body)
        if not form_token_matches(secret, purpose, call.form.get("csrf")):
            return "This form has expired. Go back, reload the page and try again."
        return None

    # -- signing in and out ----------------------------------------------------------------

    async def login_page(self, call):
        secret = read_cookies(call).get(SESSION_COOKIE)
        if await self.sessions.viewer(secret, call.now) is not None:
            return redirect(safe_next(call.query.get("next")))
        return self._login_form(call)

    def _login_form(self, call, status=200, error=None, name=""):
        nonce = read_cookies(call).get(LOGIN_COOKIE)
        headers = ()
        if not nonce:
            nonce = new_secret()
            headers = ((b"set-cookie", cookie_header(LOGIN_COOKIE, nonce, self.secure(call),
                                                     path="/login")),)
        next_path = call.form.get("next") if call.method == "POST" else call.query.get("next")
        return html_reply(self.templates.render(
            "login.html", viewer=None, notices=[], section="login", title="Sign in", error=error,
            name=name, next=safe_next(next_path), csrf=form_token(nonce, "login")), status,
            headers)

    async def login(self, call):
        try:
            refused = self._post_refused(call, read_cookies(call).get(LOGIN_COOKIE), "login")
        except ApiError as e:
            return self.error_page(None, e.status, e.message)
        if refused is not None:
            return self.error_page(None, 403, refused)
        form = call.form
        try:
            name = form.text("name", tables.NAME, required=True)
            password = form.secret("password", MAX_PASSWORD)
            code = form.text("code", 16)
        except ApiError as e:
            return self._login_form(call, 400, e.message)
        ip, now = call.client_ip, call.now
        if self.accounts.throttle.refused(ip, name, now) is not None:
            self.accounts.logins_failed += 1
            self.limits.hit(now, "login-failures", source_key(ip), "console sign-in refused")
            return self._login_form(call, 429, TOO_MANY_ATTEMPTS, name)
        user = await self.db.run(_user_by_name, name)
        user = await self.blocking(_check_password, user, password)
        if user is not None and user["totp_secret"]:
            user = await self.accounts.second_factor(user, code, now)
        if user is None or user["status"] != 1:
            self.accounts.logins_failed += 1
            self.accounts.throttle.failed(ip, name, now)
            self.log.info("{client} console sign-in failed for user {name}", client=ip,
                          name=quoted(name), event="api.console_login_failed")
            return self._login_form(call, 403, WRONG_LOGIN, name)
        self.accounts.throttle.succeeded(name)
        self.accounts.logins_ok += 1
        secret = await self.sessions.open(user, ip, now)
        self.log.info("{client} user {name} signed in to the console", client=ip,
                      name=quoted(user["name"]), event="api.console_login")
        return redirect(safe_next(form.get("next")), headers=(
            (b"set-cookie", cookie_header(SESSION_COOKIE, secret, self.secure(call))),))

    async def logout(self, call, viewer):
        await self.sessions.close(viewer, call.client_ip, call.now)
        return redirect("/login", headers=((b"set-cookie", cookie_header(
            SESSION_COOKIE, "", self.secure(call), expire=True)),))

    # -- the rest --------------------------------------------------------------------------

    async def home(self, call, viewer):
        if not viewer.is_admin:
            return redirect("/me")
        counts = await self.db.run(data.overview)
        _, recent = await self.db.run(data.console_log, "", None, None, 1, RECENT)
        return self.page(viewer, "home.html", section="home", title="Overview", counts=counts,
                         recent=recent)

    def stylesheet(self, call):
        return Reply(200, self.css, b"text/css; charset=utf-8")

    def add_routes(self, router):
        router.add("GET", "/static/console.css", self.stylesheet,
                   summary="The console's stylesheet", reply="text")
        router.add("GET", "/login", lambda call: ensureDeferred(self.login_page(call)),
                   summary="Console sign-in page", reply="html",
                   query={"next": {"type": "string", "maxLength": MAX_NEXT}})
        router.add("POST", "/login", lambda call: ensureDeferred(self.login(call)),
                   summary="Console sign-in (form post)", reply="html",
                   body=form_schema(("name", "password", "code", "next")))
        self.route(router, "POST", "/logout", self.logout, "Console sign-out", admin=False)
        self.route(router, "GET", "/", self.home, "Console overview", admin=False)
        for part in self.parts:
            part(self).add_routes(router)


def _here(call):
    return call.path + ("?" + urlencode(call.query) if call.query else "")

