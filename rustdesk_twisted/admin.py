"""``rustdesk-admin``: keys, peers, backups, health checks and API accounts of a data directory.

Everything works on ``--data-dir`` (default ``.``), the directory hbbs and
hbbr share.  Peer commands go to the running hbbs through its console socket
(``hbbs-console.sock``), so the server's memory and database change together;
when no server holds that socket they edit the database directly, which is
then safe because nobody else writes it.  ``backup`` asks a running hbbs for
an SQLite online backup after its queued writes are committed, so it is
consistent under load; stopped, it copies the file with the same API.
"""

import argparse
import base64
import io
import json
import os
import sqlite3
import sys
import tarfile
import tempfile
from datetime import datetime, timezone

import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import react
from twisted.python import lockfile

from sqlalchemy.exc import SQLAlchemyError

from . import __version__, adminweb
from .api import migrate as api_migrate
from .api.db import Database, engine_url
from .api import usercommands
from .api.users import UserError
from .config import ConfigError, layered_settings
from .hbbr.tap import relay_ports
from .hbbs import dbfile
from .hbbs.registry import ID_FORMAT
from .hbbs.store import path_from_db_url
from .logtext import shown
from .wire import keys

CONSOLE_NAME = "hbbs-console.sock"
CONSOLE_TIMEOUT = 120.0
DB_NAME = "db_v2.sqlite3"
# What a backup holds: the database, the keys, the lists and the settings (USERS.md 4.3).
KEPT_FILES = (keys.SECRET_FILE, keys.PUBLIC_FILE, "blacklist.txt", "blocklist.txt", ".env")
MANIFEST = "MANIFEST.json"
PAGE = 1000
PEER_COLUMNS = ("id", "online", "last_seen", "ip")
NOT_REGISTERED = ": not registered\n"


class AdminError(Exception):
    """A command cannot be carried out; the message is for the operator."""


# Keys


def show_key(data_dir):
    """The public key and its fingerprint, from ``id_ed25519`` (else ``id_ed25519.pub``)."""
    secret = keys.load_keypair(data_dir)
    if secret is not None:
        public = secret[32:]
    else:
        path = os.path.join(data_dir, keys.PUBLIC_FILE)
        try:
            with open(path, encoding="ascii") as f:
                public = keys.decode_public(f.read())
        except FileNotFoundError:
            raise AdminError(f"no key in {os.path.abspath(data_dir)} (hbbs creates one on first "
                             "start, or run gen-key)") from None
        if public is None:
            raise AdminError(f"malformed public key in {path}")
    return f"Key: {keys.b64(public)}\nFingerprint: {keys.fingerprint(public)}\n"


def gen_key(data_dir, if_missing=False):
    """Create the key pair; an existing one is never replaced (clients trust it).

    ``if_missing`` makes an existing key a success, for init containers that
    must create the key once before hbbs and hbbr start side by side.
    """
    _, generated = keys.load_or_generate_keypair(data_dir)
    if not generated and not if_missing:
        raise AdminError(f"{os.path.join(data_dir, keys.SECRET_FILE)} exists; a new key would "
                         "lock out every client configured with the old one. Move it away first.")
    return show_key(data_dir)


def check_key(data_dir, public_text):
    """Whether a client's "Key" string matches the server's private key: (ok, message)."""
    secret = keys.load_keypair(data_dir)
    if secret is None:
        raise AdminError(f"no {keys.SECRET_FILE} in {os.path.abspath(data_dir)}")
    given = keys.decode_public(public_text)
    if given is None:
        return False, "not a public key (base64 of 32 bytes expected)\n"
    if given == secret[32:]:
        return True, f"match: {keys.fingerprint(given)}\n"
    return False, (f"MISMATCH: given {keys.fingerprint(given)}, server "
                   f"{keys.fingerprint(secret[32:])} ({keys.b64(secret[32:])})\n")


# The database when no server is running


class OfflinePeers:
    """The ``peer`` table edited directly; only used while no hbbs holds the data directory.

    The file is examined as hbbs does before anything touches it: another
    application's database is refused, never given our schema.  Listing and
    showing open it read-only; releasing and renaming change only rows.
    """

    def __init__(self, path, write=False):
        kind = dbfile.examine(path)
        if kind == dbfile.NEW:
            raise AdminError(f"no peers in {path}: it does not exist or holds no peer table")
        self.last_seen = kind == dbfile.OURS
        if write:
            dbfile.check_writable(path)
            self.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        else:
            self.conn = sqlite3.connect(dbfile.read_only_uri(path), uri=True, timeout=5.0)

    def close(self):
        self.conn.close()

    def _seen(self):
        """The last-seen join, or none for an official database (it has no such table)."""
        if self.last_seen:
            return "s.last_seen", " left join peer_last_seen as s on s.guid = p.guid"
        return "null", ""

    def list(self):
        """Every peer as a :data:`PEER_COLUMNS` row (none is online: no server runs)."""
        seen, join = self._seen()
        rows = self.conn.execute(
            f"select cast(p.id as text), p.info, {seen} from peer as p{join}"
            " order by p.created_at, p.id")
        return [(peer_id, False, seen, _ip(info)) for peer_id, info, seen in rows]

    def show(self, peer_id):
        seen, join = self._seen()
        row = self.conn.execute(
            f"select p.uuid, p.pk, p.created_at, p.info, {seen} from peer as p{join}"
            " where p.id = ?", (peer_id,)).fetchone()
        if row is None:
            return peer_id + NOT_REGISTERED
        uuid, pk, created, info, seen = row
        return (f"id: {peer_id}\nonline: false (no server running)\nlast seen: {_iso(seen)}\n"
                f"ip: {_ip(info)}\nuuid: {base64.b64encode(_bytes(uuid)).decode('ascii')}\n"
                f"key: {keys.fingerprint(_bytes(pk))}\ncreated: {created}\n")

    def release(self, peer_id):
        with self.conn:
            self.conn.execute("begin immediate")
            if self.last_seen:
                self.conn.execute("delete from peer_last_seen where guid in"
                                  " (select guid from peer where id = ?)", (peer_id,))
            gone = self.conn.execute("delete from peer where id = ?", (peer_id,)).rowcount
        return f"{peer_id}: released\n" if gone else peer_id + NOT_REGISTERED

    def rename(self, old_id, new_id):
        if not ID_FORMAT.fullmatch(new_id):
            return f"error: {new_id} is not a valid id (a letter, then 5-15 letters, digits, _ or -)\n"
        with self.conn:
            self.conn.execute("begin immediate")
            if self.conn.execute("select 1 from peer where id = ?", (new_id,)).fetchone():
                return f"error: {new_id} is already registered\n"
            moved = self.conn.execute("update peer set id = ? where id = ?",
                                      (new_id, old_id)).rowcount
        if not moved:
            return f"error: {old_id} is not registered\n"
        return f"{old_id}: renamed to {new_id}\n"


def live_rows(reply, now):
    """:data:`PEER_COLUMNS` rows from the console's ``peer-list`` (seconds ago, not a time)."""
    rows = []
    for line in reply.splitlines()[1:]:
        peer_id, status, ago, ip = line.rsplit(" ", 3)
        seen = None if ago == "never" else now - int(ago)
        rows.append((peer_id, status == "online", seen, "" if ip == "-" else ip))
    return rows


def format_peers(rows, as_json=False):
    """The ``peers list`` output: aligned columns under a header, or a JSON array."""
    if as_json:
        return json.dumps([dict(zip(PEER_COLUMNS, (peer_id, online, _iso(seen, None), ip)))
                           for peer_id, online, seen, ip in rows], indent=1) + "\n"
    table = [tuple(name.upper().replace("_", " ") for name in PEER_COLUMNS)]
    table += [(shown(peer_id), "online" if online else "offline", _iso(seen), ip or "-")
              for peer_id, online, seen, ip in rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(PEER_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n"
             for row in table]
    return "".join(lines) + f"{len(rows)} peer{'' if len(rows) == 1 else 's'}\n"


def _bytes(value):
    return value if isinstance(value, bytes) else (value or "").encode("utf-8")


def _ip(info):
    try:
        parsed = json.loads(info or "")
    except ValueError:
        return ""
    return parsed.get("ip", "") if isinstance(parsed, dict) else ""


def _iso(seconds, never="never"):
    if seconds is None:
        return never
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Backup and restore


def sqlite_copy(source, target):
    """A consistent copy of ``source`` (SQLite online backup: one read transaction)."""
    src = sqlite3.connect(dbfile.read_only_uri(source), uri=True, timeout=5.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def database_summary(path):
    """``(peer count, quick_check result)`` of a database file."""
    conn = sqlite3.connect(dbfile.read_only_uri(path), uri=True)
    try:
        check = conn.execute("pragma quick_check").fetchone()[0]
        count = conn.execute("select count(*) from peer").fetchone()[0]
    finally:
        conn.close()
    return count, check


def without_wal(path):
    """Put a database copy in rollback-journal mode.

    The copy carries the live file's WAL mode, and reading a WAL file leaves
    ``-wal`` and ``-shm`` files beside it (in the data directory, for a live backup).
    """
    conn = sqlite3.connect(path)
    try:
        conn.execute("pragma journal_mode=delete")
    finally:
        conn.close()


def remove_database(path):
    """Remove a database copy and the -wal/-shm files SQLite may have left beside it."""
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)


def write_archive(archive, database, data_dir, created):
    """A ``.tar.gz`` of the database copy ``database`` and the data directory's key and lists."""
    without_wal(database)
    peers, check = database_summary(database)
    if check != "ok":
        raise AdminError(f"the database copy fails its integrity check: {check}")
    secret = keys.load_keypair(data_dir)
    manifest = {"version": __version__, "created": created, "peers": peers,
                "key_fingerprint": keys.fingerprint(secret[32:]) if secret else None}
    partial = archive + ".partial"
    with _private_file(partial) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(database, arcname=DB_NAME)
        for name in KEPT_FILES:
            path = os.path.join(data_dir, name)
            if os.path.isfile(path):
                tar.add(path, arcname=name)
        body = json.dumps(manifest, indent=2).encode("utf-8")
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    os.replace(partial, archive)
    return manifest


def restore_archive(archive, data_dir, db_path, force=False):
    """Put an archive's database, keys and lists into ``data_dir``; returns its manifest.

    Only the known member names are read, so a crafted archive cannot write
    elsewhere.  Existing keys or database are replaced only with ``force``.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        if DB_NAME not in members:
            raise AdminError(f"{archive} holds no {DB_NAME}: not a rustdesk-admin backup")
        targets = {DB_NAME: db_path}
        targets.update((name, os.path.join(data_dir, name)) for name in KEPT_FILES)
        present = [path for name, path in targets.items()
                   if name in members and os.path.exists(path)]
        if present and not force:
            raise AdminError("refusing to overwrite " + ", ".join(present) + " (use --force)")
        manifest = json.loads(tar.extractfile(members[MANIFEST]).read()) \
            if MANIFEST in members else {}
        os.makedirs(data_dir, exist_ok=True)
        for name, path in targets.items():
            if name not in members:
                continue
            data = tar.extractfile(members[name]).read()
            mode = 0o600 if name in (keys.SECRET_FILE, DB_NAME, ".env") else 0o644
            _write_file(path, data, mode)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    return manifest


def _write_file(path, data, mode):
    partial = path + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(partial, path)


def _private_file(path):
    """A new file only its owner can read (a backup holds the private key), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


# Talking to a running hbbs


class _ConsoleClient(Protocol):
    """Sends one command, collects the reply until the server closes."""

    def __init__(self, command):
        self.command = command
        self.chunks = []
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.command.encode("utf-8"))

    def dataReceived(self, data):
        self.chunks.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.chunks).decode("utf-8", "replace"))


def server_running(console_path):
    """Whether a live hbbs holds its console socket's lock file."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(console_path))):
        return False
    return lockfile.isLocked(console_path + ".lock")


@inlineCallbacks
def console_command(reactor, console_path, command):
    """One console command's reply from the hbbs listening on ``console_path``."""
    endpoint = UNIXClientEndpoint(reactor, console_path, timeout=10)
    client = _ConsoleClient(command)
    yield connectProtocol(endpoint, client)
    reply = yield client.done.addTimeout(CONSOLE_TIMEOUT, reactor)
    return reply


@inlineCallbacks
def live_peer_list(reactor, console_path):
    """Every peer, one console page at a time."""
    lines, start, total = [], 0, None
    while True:
        reply = yield console_command(reactor, console_path, f"peer-list {start} {PAGE}")
        head, *page = reply.splitlines(keepends=True)
        total = head
        lines.extend(page)
        start += len(page)
        if len(page) < PAGE:
            return total + "".join(lines)


# Health check


def health_url(settings, relay=False, ready=False, data_dir=None):
    """Where this machine's hbbs (or hbbr) admin listener answers: the URL the server
    recorded in the data directory when it bound it, else from the shared settings."""
    path = "readyz" if ready else "healthz"
    recorded = adminweb.recorded_url(data_dir, "hbbr" if relay else "hbbs") if data_dir else None
    if recorded is not None:
        return f"{recorded}/{path}"
    if relay:
        port = relay_ports(None, settings)[0]
        description = adminweb.default_endpoint(port)
    else:
        port = settings.integer("PORT", 21116, minimum=3, maximum=65534)
        description = settings.get("ADMIN") or adminweb.default_endpoint(port)
    parts = description.split(":")
    if parts[0] != "tcp":
        raise AdminError(f"admin endpoint {description!r}: give the URL with --url")
    host = "127.0.0.1"
    for part in parts[2:]:
        name, _, value = part.partition("=")
        if name == "interface" and value not in ("", "0.0.0.0", "::"):
            host = value
    return f"http://{host}:{parts[1]}/{path}"


@inlineCallbacks
def healthcheck(reactor, url, timeout):
    try:
        response = yield treq.get(url, timeout=timeout, reactor=reactor)
        body = yield response.text()
    except Exception as e:
        raise AdminError(f"{url}: {e.__class__.__name__}: {e}") from None
    if response.code != 200:
        raise AdminError(f"{url}: HTTP {response.code}: {body.strip()}")
    return f"{url}: {body.strip()}\n"


# The command line


def _common_options(parser, default):
    """The options every command takes, before or after its name (``default``: their value
    when absent; SUPPRESS after the command, so it does not hide one given before)."""
    parser.add_argument("--data-dir", default=default, help="directory shared by hbbs and hbbr "
                        "(keys, db_v2.sqlite3, lists, .env); default: current directory")
    parser.add_argument("--console", default=default, help="hbbs console socket (default "
                        "DATA_DIR/" + CONSOLE_NAME + ")")
    parser.add_argument("--db", default=default, help="database file (default DB_URL or "
                        "DATA_DIR/" + DB_NAME + ")")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="rustdesk-admin",
        description="Keys, peers, backups and health checks of a RustDesk server data "
        "directory, and the API's users and tokens.")
    parser.add_argument("--version", action="version", version=f"rustdesk-admin {__version__}")
    _common_options(parser, None)
    parser.set_defaults(data_dir=".")
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(subparsers, name, **kwargs):
        return subparsers.add_parser(name, parents=[common], **kwargs)

    command(commands, "show-key", help="print the public key and its fingerprint")
    gen = command(commands, "gen-key", help="create id_ed25519 and id_ed25519.pub "
                  "(never replaces one)")
    gen.add_argument("--if-missing", action="store_true",
                     help="an existing key is fine: print it and exit 0")
    check = command(commands, "check-key", help="does this public key match the private key")
    check.add_argument("public_key")
    peers = command(commands, "peers", help="list, show, release or rename peers")
    actions = peers.add_subparsers(dest="action", required=True)
    command(actions, "list", help="every peer: id, online, last seen (UTC), ip").add_argument(
        "--json", action="store_true", help="a JSON array of objects with those fields")
    command(actions, "show").add_argument("id")
    command(actions, "release").add_argument("id")
    rename = command(actions, "rename")
    rename.add_argument("old_id")
    rename.add_argument("new_id")
    backup = command(commands, "backup", help="database (online backup), keys and lists "
                     "into a .tar.gz; consistent while hbbs runs")
    backup.add_argument("archive")
    restore = command(commands, "restore", help="put a backup into the data directory "
                      "(hbbs must be stopped)")
    restore.add_argument("archive")
    restore.add_argument("--force", action="store_true", help="replace existing keys/database")
    health = command(commands, "healthcheck", help="exit 0 when the server answers /healthz")
    health.add_argument("--relay", action="store_true", help="check hbbr instead of hbbs")
    health.add_argument("--ready", action="store_true", help="ask /readyz (database, relays)")
    health.add_argument("--url", help="admin URL to ask instead of the configured one")
    health.add_argument("--timeout", type=float, default=5.0)
    api_db = command(commands, "api-db", help="the API server's database (API_DB_URL or "
                     "DATA_DIR/db_api.sqlite3): its schema revision")
    api_actions = api_db.add_subparsers(dest="action", required=True)
    command(api_actions, "current", help="the schema revision it is at (reads only)")
    command(api_actions, "upgrade", help="bring it to this version's schema, as the API "
            "server does at start, with the same backup (stop the API server first)")
    usercommands.add_commands(commands, command)
    return parser


class Context:
    """The resolved paths and settings of one invocation."""

    def __init__(self, args, environ):
        self.args = args
        self.data_dir = args.data_dir
        self.settings = layered_settings(environ, args.data_dir)
        self.console = args.console or os.path.join(args.data_dir, CONSOLE_NAME)
        self.db = args.db or path_from_db_url(
            self.settings.get("DB-URL") or os.path.join(args.data_dir, DB_NAME))


@inlineCallbacks
def run(reactor, args, environ, out):
    """Carry out one parsed command, writing to ``out``; raises AdminError or SystemExit."""
    ctx = Context(args, environ)
    command = args.command
    if command == "show-key":
        out.write(show_key(ctx.data_dir))
    elif command == "gen-key":
        out.write(gen_key(ctx.data_dir, args.if_missing))
    elif command == "check-key":
        ok, message = check_key(ctx.data_dir, args.public_key)
        out.write(message)
        if not ok:
            raise SystemExit(1)
    elif command == "peers":
        reply = yield _peers(reactor, ctx, args)
        out.write(reply)
        if reply.startswith("error:") or reply.endswith(NOT_REGISTERED):
            raise SystemExit(1)
    elif command == "backup":
        manifest = yield _backup(reactor, ctx, args.archive)
        out.write(f"{args.archive}: {manifest['peers']} peers, key "
                  f"{manifest['key_fingerprint']}\n")
    elif command == "restore":
        if server_running(ctx.console):
            raise AdminError("hbbs is running on this data directory; stop it before restoring")
        manifest = restore_archive(args.archive, ctx.data_dir, ctx.db, args.force)
        out.write(f"restored {manifest.get('peers', '?')} peers, key "
                  f"{manifest.get('key_fingerprint')} into {os.path.abspath(ctx.data_dir)}\n")
    elif command == "healthcheck":
        url = args.url or health_url(ctx.settings, args.relay, args.ready, ctx.data_dir)
        out.write((yield healthcheck(reactor, url, args.timeout)))
    elif command == "api-db":
        out.write(api_database(ctx, args.action))
    elif command in ("user", "token"):
        usercommands.run(args, ctx.settings, ctx.data_dir, out, sys.stderr,
                         reactor.seconds())


def api_database(ctx, action):
    """``api-db current`` / ``api-db upgrade`` on the API's database, inline."""
    url = engine_url(ctx.settings.get("API-DB-URL"), ctx.data_dir)
    if action == "current":
        return api_migrate.current(url) + "\n"
    database = Database(url, None, in_thread_pool=False)
    try:
        before, after = api_migrate.upgrade(database)
    finally:
        database.close()
    place = database.place
    if before == after:
        return f"{place}: already at schema revision {after}\n"
    return f"{place}: {'created at' if before is None else f'upgraded from {before} to'} " \
           f"schema revision {after}\n"


@inlineCallbacks
def _peers(reactor, ctx, args):
    action = args.action
    if server_running(ctx.console):
        if action == "list":
            reply = yield live_peer_list(reactor, ctx.console)
            return format_peers(live_rows(reply, reactor.seconds()), args.json)
        if action == "rename":
            command = f"peer-rename {args.old_id} {args.new_id}"
        else:
            command = f"{'peer' if action == 'show' else 'peer-release'} {args.id}"
        return (yield console_command(reactor, ctx.console, command))
    peers = OfflinePeers(ctx.db, write=action in ("release", "rename"))
    try:
        if action == "list":
            return format_peers(peers.list(), args.json)
        if action == "show":
            return peers.show(args.id)
        if action == "release":
            return peers.release(args.id)
        return peers.rename(args.old_id, args.new_id)
    finally:
        peers.close()


@inlineCallbacks
def _backup(reactor, ctx, archive):
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if server_running(ctx.console):
        name = f"rustdesk-admin-backup-{os.getpid()}.sqlite3"
        reply = yield console_command(reactor, ctx.console, f"backup {name}")
        if not reply.startswith("ok "):
            raise AdminError(f"hbbs could not back up its database: {reply.strip()}")
        snapshot = reply[3:].strip()
        try:
            return write_archive(archive, snapshot, ctx.data_dir, created)
        finally:
            remove_database(snapshot)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = os.path.join(scratch, DB_NAME)
        if not os.path.exists(ctx.db):
            raise AdminError(f"no database at {ctx.db}")
        sqlite_copy(ctx.db, snapshot)
        return write_archive(archive, snapshot, ctx.data_dir, created)


def main(argv=None, environ=None):
    """Console script entry point; exit status 0 on success, 1 on any failure."""
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ

    def command(reactor):
        d = run(reactor, args, environ, sys.stdout)

        def failed(failure):
            failure.trap(AdminError, ConfigError, keys.KeyFileError, OSError, sqlite3.Error,
                         tarfile.TarError, dbfile.DatabaseRefused, UserError, SQLAlchemyError)
            sys.stderr.write(f"rustdesk-admin: {failure.value}\n")
            raise SystemExit(1)

        return d.addErrback(failed)

    react(command)


if __name__ == "__main__":
    main()
