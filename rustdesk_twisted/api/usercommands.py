"""``rustdesk-admin user ...`` and ``token create``: API accounts from the command line.

They open the API database the server uses (``API_DB_URL`` from the
environment, ``DATA_DIR/.env`` or ``--api-db-url``; else
``DATA_DIR/db_api.sqlite3``), bring it to the current schema and change rows
directly; the running server reads them on the next request.  Passwords never
come from the command line: a prompt, or a file (``-`` for standard input).
"""

import getpass
import json
import sys
import time

from . import migrate, totp
from .accounts import hash_password
from .db import Database, engine_url
from .users import (
    API_SCOPES,
    API_TOKEN_DAYS,
    UserError,
    add_user,
    check_name,
    check_password,
    create_api_token,
    existing_user,
    list_users,
    set_enabled,
    set_password,
)

USER_COLUMNS = ("name", "admin", "status", "2fa", "oidc", "created")
STATUS = {1: "enabled", 0: "disabled", -1: "unverified"}


def add_commands(commands, command):
    """The ``user`` and ``token`` subcommands, made with admin.py's ``command`` helper."""
    def database_option(parser):
        parser.add_argument("--api-db-url", help="API database (default API_DB_URL, else "
                            "DATA_DIR/db_api.sqlite3)")

    def password_option(parser):
        parser.add_argument("--password-file", help="read the password from this file "
                            "('-': standard input) instead of prompting for it")

    user = command(commands, "user", help="API accounts: add, passwd, disable, enable, list, "
                   "totp-reset")
    actions = user.add_subparsers(dest="action", required=True)
    add = command(actions, "add", help="create a user (the first one: --admin)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may use the web console and "
                     "manage everything")
    add.add_argument("--email", default="", help="e-mail address (OIDC can link by it)")
    password_option(add)
    database_option(add)
    passwd = command(actions, "passwd", help="set a new password (ends the user's sessions)")
    passwd.add_argument("name")
    password_option(passwd)
    database_option(passwd)
    for name, text in (("disable", "refuse its logins and end its sessions"),
                       ("enable", "allow its logins again"),
                       ("totp-reset", "turn its two-factor login off (lost authenticator)")):
        parser = command(actions, name, help=text)
        parser.add_argument("name")
        database_option(parser)
    listing = command(actions, "list", help="every user: name, admin, status, 2FA, OIDC, "
                      "created (UTC)")
    listing.add_argument("--json", action="store_true", help="a JSON array of objects")
    database_option(listing)
    token = command(commands, "token", help="API tokens for scripts and rustdesk --deploy / "
                    "--assign")
    token_actions = token.add_subparsers(dest="action", required=True)
    create = command(token_actions, "create", help="print a new API token once (stored hashed)")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--scopes", required=True, help="comma-separated RESOURCE:r or "
                        f"RESOURCE:rw, RESOURCE one of {', '.join(API_SCOPES)} (--deploy and "
                        "--assign need devices:rw)")
    create.add_argument("--user", help="owner (default: the first enabled administrator)")
    create.add_argument("--days", type=int, default=API_TOKEN_DAYS,
                        help=f"days until it expires (default {API_TOKEN_DAYS})")
    database_option(create)


def open_database(settings, data_dir, url=None):
    """The API database at the current schema, statements run in the calling thread."""
    db = Database(engine_url(url or settings.get("API-DB-URL"), data_dir), reactor=None,
                  in_thread_pool=False)
    db.open()
    try:
        migrate.upgrade(db)
    except BaseException:
        db.close()
        raise
    return db


def read_password(path, stdin=None, ask=getpass.getpass):
    """The new password from ``path`` ('-': ``stdin``), else asked twice on the terminal."""
    stdin = stdin or sys.stdin
    if path == "-":
        password = stdin.readline().rstrip("\r\n")
    elif path:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    else:
        if not stdin.isatty():
            raise UserError("no terminal to ask for the password: give --password-file FILE "
                            "(or - for standard input)")
        password = ask("Password: ")
        if ask("Password again: ") != password:
            raise UserError("the passwords differ")
    return check_password(password)


def run(args, settings, data_dir, out, err, now, stdin=None, ask=getpass.getpass):
    """Carry out a ``user`` or ``token`` command at time ``now`` (the caller's clock);
    raises UserError for the operator."""
    password = None
    if args.command == "user" and args.action in ("add", "passwd"):
        check_name(args.name)
        password = hash_password(read_password(args.password_file, stdin, ask))
    db = open_database(settings, data_dir, args.api_db_url)
    try:
        if args.command == "token":
            token, owner = db.run_now(create_api_token, args.user, args.name, args.scopes, now,
                                      args.days)
            err.write(f"API token {args.name!r} of {owner}, valid {args.days} days; it is shown "
                      "once, store it now:\n")
            out.write(token + "\n")
        else:
            out.write(db.run_now(_user_action, args, password, now))
    finally:
        db.close()


def _user_action(connection, args, password_hash, now):
    action, name = args.action, getattr(args, "name", None)
    if action == "add":
        add_user(connection, name, password_hash, now, is_admin=args.admin, email=args.email)
        return f"user {name} added{' (administrator)' if args.admin else ''}\n"
    if action == "passwd":
        ended = set_password(connection, name, password_hash, now)
        return f"password of {name} changed, {_sessions(ended)} ended\n"
    if action in ("enable", "disable"):
        ended = set_enabled(connection, name, action == "enable", now)
        return f"{name} {action}d" + (f", {_sessions(ended)} ended\n" if action == "disable"
                                      else "\n")
    if action == "totp-reset":
        user = existing_user(connection, name)
        done = totp.reset(connection, user["id"], now)
        return f"two-factor login of {name} {'turned off' if done else 'was off'}\n"
    return format_users(list_users(connection), args.json)


def _sessions(count):
    return f"{count} session{'' if count == 1 else 's'}"


def format_users(users, as_json=False):
    """The ``user list`` output: aligned columns, or a JSON array."""
    rows = [(user["name"], "yes" if user["is_admin"] else "no",
             STATUS.get(user["status"], str(user["status"])), totp.state(user),
             user["oidc_provider"] or "-", _iso(user["created_at"])) for user in users]
    if as_json:
        return json.dumps([dict(zip(USER_COLUMNS, row)) for row in rows], indent=1) + "\n"
    table = [tuple(column.upper() for column in USER_COLUMNS)] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(USER_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n"
             for row in table]
    return "".join(lines) + f"{len(rows)} user{'' if len(rows) == 1 else 's'}\n"


def _iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
