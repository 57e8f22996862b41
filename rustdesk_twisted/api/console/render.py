"""HTML out: the jinja2 templates shipped in this package, autoescaped, and the headers
every console reply carries (no framing, no inline script, no referrer to other sites)."""

from datetime import datetime, timezone
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..http import Reply

HTML_TYPE = b"text/html; charset=utf-8"
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
)


def when(seconds):
    """Unix seconds as UTC minutes; 'never' for none."""
    if not seconds:
        return "never"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M")


def sentence(text):
    """A refusal's reason (written to go after "error: ") as the start of a sentence."""
    return text[:1].upper() + text[1:]


class Pager:
    """Page ``number`` (from 1) of ``total`` rows, with links keeping the other query fields."""

    def __init__(self, path, query, number, size, total):
        self.path = path
        self.query = {k: v for k, v in query.items() if k != "page" and v not in ("", None)}
        self.number = number
        self.size = size
        self.total = total
        self.pages = max(1, -(-total // size))

    def link(self, number):
        return self.path + "?" + urlencode(dict(self.query, page=number))

    @property
    def previous(self):
        return self.link(self.number - 1) if self.number > 1 else None

    @property
    def next(self):
        return self.link(self.number + 1) if self.number < self.pages else None


class Templates:
    """The package's templates, compiled once per process (they never change while it runs)."""

    def __init__(self):
        self.env = Environment(loader=PackageLoader("rustdesk_twisted.api.console", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = when
        self.env.filters["sentence"] = sentence

    def render(self, template, **context):
        return self.env.get_template(template).render(**context).encode("utf-8")


TEMPLATES = Templates()


def html_reply(body, status=200, headers=()):
    return Reply(status, body, HTML_TYPE, SECURITY_HEADERS + tuple(headers))


def redirect(location, headers=()):
    """303 to a path of this site: the browser follows with a GET."""
    return Reply(303, b"", None, SECURITY_HEADERS + ((b"location", location.encode("utf-8")),)
                 + tuple(headers))
