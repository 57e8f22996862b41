"""Server keys (what clients must be told) and API tokens (for scripts and ``--deploy``).

The key is hbbs's public key from ``DATA_DIR/id_ed25519.pub`` (or the public half
of ``id_ed25519``).  The config string is what the client's ``--config`` and its
``rustdesk-licensed-<string>.exe`` file name take: the JSON of host, key, api and
relay, base64url without padding, reversed.
"""

import base64
import json
import re
from urllib.parse import urlsplit

from ...wire.keys import KeyFileError, b64, directory_public_key, fingerprint
from .. import tables
from ..accounts import new_token, token_hash
from . import data
from .core import LIST_QUERY, Pages, actor, list_args, pager, path_id

HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
API_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]{1,255}(/[A-Za-z0-9._~/-]*)?")
SCOPE_LEVELS = ("", "r", "rw")
DAY = 86400


def config_string(host, key, api="", relay=""):
    """The client's custom-server string; empty fields are left out, as the client does."""
    fields = {name: value for name, value in (("host", host), ("key", key), ("api", api),
                                              ("relay", relay)) if value}
    text = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(text).decode("ascii").rstrip("=")[::-1]


def _host_of(host_header):
    """The host part of a Host header (brackets kept around an IPv6 address)."""
    try:
        name = urlsplit("//" + host_header).hostname or ""
    except ValueError:
        return ""
    return f"[{name}]" if ":" in name else name


def _read_key(data_dir):
    """(base64 key, fingerprint, problem): the key, or why there is none."""
    try:
        public = directory_public_key(data_dir)
    except KeyFileError as e:
        return None, None, str(e)
    if public is None:
        return None, None, (f"no key in {data_dir} yet: hbbs writes id_ed25519 there when it "
                            "first starts")
    return b64(public), fingerprint(public), None


class SettingsPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/keys", self.keys, "The server key and the client config string",
              query={name: {"type": "string"} for name in ("host", "relay", "api")})
        route(router, "GET", "/tokens", self.tokens, "API tokens", query=LIST_QUERY)
        route(router, "POST", "/tokens", self.add_token, "Create an API token", back="/tokens",
              fields=("name", "days") + tuple(f"scope_{area}" for area in data.SCOPE_AREAS))
        route(router, "POST", "/tokens/{id}/revoke", self.revoke, "Revoke an API token",
              back="/tokens")

    async def keys(self, call, viewer):
        key, print_, problem = await self.console.blocking(_read_key, self.console.data_dir)
        header = call.header("host") or ""
        scheme = "https" if self.console.secure(call) else "http"
        host = call.query.get("host", "").strip() or _host_of(header)
        api = call.query.get("api", "").strip() or (f"{scheme}://{header}" if header else "")
        relay = call.query.get("relay", "").strip()
        wrong = [name for name, value, pattern in (("host", host, HOST), ("relay", relay, HOST),
                                                   ("api", api, API_URL))
                 if value and not pattern.fullmatch(value)]
        config = config_string(host, key, api, relay) if key and host and not wrong else None
        return self.console.page(viewer, "keys.html", section="keys", title="Server keys",
                                 key=key, fingerprint=print_, problem=problem, host=host,
                                 api=api, relay=relay, wrong=wrong, config=config)

    async def tokens(self, call, viewer, created=None):
        _, number = list_args(call)
        total, rows = await self.db.run(data.list_api_tokens, number)
        return self.console.page(viewer, "tokens.html", section="tokens", title="API tokens",
                                 tokens=rows, pager=pager(call, number, total),
                                 areas=data.SCOPE_AREAS, created=created)

    async def add_token(self, call, viewer):
        """The token is shown on this one page and never again: only its hash is kept."""
        form = call.form
        name = form.text("name", tables.NAME, required=True)
        days = form.integer("days", minimum=1, maximum=3650)
        scopes = ",".join(f"{area}:{level}" for area in data.SCOPE_AREAS
                          if (level := form.choice(f"scope_{area}", SCOPE_LEVELS)))
        token = new_token()
        await self.db.run(data.add_api_token, actor(call, viewer), token_hash(token), name,
                          scopes, days * DAY)
        call.query = {}
        return await self.tokens(call, viewer, created={"name": name, "token": token,
                                                        "scopes": scopes})

    async def revoke(self, call, viewer):
        await self.db.run(data.revoke_api_token, actor(call, viewer), path_id(call))
        return self.console.done(viewer, "/tokens", "Token revoked.")
