"""What the console reads and changes, as SQLAlchemy Core on the API's tables.

Every function takes a connection and runs inside one ``db.run`` transaction;
every change writes its ``audit_console`` row in that same transaction, so a
change and its record are committed together or not at all.  Lists are pages:
``(total, rows)`` of a page number (:func:`..db.page`), never a whole table.
"""

import json

from sqlalchemy import and_, delete, func, insert, or_, select, update

from .. import addressbooks, tables
from ..db import page
from ..http import ApiError, bad_request

PAGE_SIZE = 50
MAX_OPTIONS = 1000
USER_STATUS = {1: "active", 0: "disabled", -1: "unverified"}
RULE_NAMES = {1: "read", 2: "read/write", 3: "full control"}
RULE_TARGETS = ("user", "user_group", "device_group")
SCOPE_AREAS = ("devices", "users", "groups", "address_books", "audit", "strategies")


class Actor:
    """Who makes a change, from where and when: the audit row's fields."""

    def __init__(self, user, ip, now):
        self.user_id = user["id"]
        self.name = user["name"]
        self.ip = ip
        self.now = now


def record(connection, actor, action, detail=""):
    connection.execute(insert(tables.audit_console).values(
        user_id=actor.user_id, user_name=actor.name[:tables.NAME], ip=actor.ip[:64],
        action=action, detail=detail[:tables.NOTE], created_at=actor.now))


def _rows(result):
    return [dict(row._mapping) for row in result]


def _page(connection, query, number, size):
    found = page(connection, query, number, size)
    return found["total"], found["data"]


def _search(q, *columns):
    return or_(*(column.icontains(q, autoescape=True) for column in columns))


def _one(connection, query, what):
    row = connection.execute(query).first()
    if row is None:
        raise ApiError(404, f"no such {what}")
    return dict(row._mapping)


def _id_of(connection, table, column, value, what):
    """The id of the row whose ``column`` is ``value``; 400 naming ``what`` if none."""
    found = connection.execute(select(table.c.id).where(column == value)).scalar()
    if found is None:
        raise bad_request(f"there is no {what} {value!r}")
    return found


def _check_reference(connection, table, row_id, what):
    if row_id is not None and connection.execute(
            select(table.c.id).where(table.c.id == row_id)).scalar() is None:
        raise bad_request(f"there is no such {what}")


def _unique(connection, table, name, what, exclude=None):
    query = select(table.c.id).where(table.c.name == name)
    if exclude is not None:
        query = query.where(table.c.id != exclude)
    if connection.execute(query).scalar() is not None:
        raise ApiError(409, f"a {what} named {name!r} exists already")


def _changes(before, after):
    return ", ".join(f"{name}={after[name]!r}" for name in after if before.get(name) != after[name])


def choices(connection):
    """Names and ids for the select boxes: groups and strategies (bounded)."""
    def named(table):
        return _rows(connection.execute(select(table.c.id, table.c.name).order_by(
            table.c.name).limit(MAX_OPTIONS)))
    return {"user_groups": named(tables.user_groups),
            "device_groups": named(tables.device_groups),
            "strategies": named(tables.strategies)}


def overview(connection):
    counted = {}
    for name, table in (("users", tables.users), ("devices", tables.devices),
                        ("address_books", tables.address_books),
                        ("strategies", tables.strategies),
                        ("user_groups", tables.user_groups),
                        ("device_groups", tables.device_groups)):
        counted[name] = connection.execute(select(func.count()).select_from(table)).scalar_one()
    return counted


# -- users ---------------------------------------------------------------------------------

def _user_query():
    u, g, s = tables.users, tables.user_groups, tables.strategies
    return select(u.c.id, u.c.name, u.c.display_name, u.c.email, u.c.note, u.c.status,
                  u.c.is_admin, (u.c.totp_secret.is_not(None)).label("has_totp"),
                  u.c.oidc_provider, u.c.group_id, u.c.strategy_id, u.c.created_at,
                  g.c.name.label("group_name"), s.c.name.label("strategy_name")).select_from(
        u.outerjoin(g, g.c.id == u.c.group_id).outerjoin(s, s.c.id == u.c.strategy_id))


def list_users(connection, q, number, size=PAGE_SIZE):
    u = tables.users
    query = _user_query().order_by(u.c.name)
    if q:
        query = query.where(_search(q, u.c.name, u.c.display_name, u.c.email))
    return _page(connection, query, number, size)


def get_user(connection, user_id):
    return _one(connection, _user_query().where(tables.users.c.id == user_id), "user")


def add_user(connection, actor, values):
    u = tables.users
    _unique(connection, u, values["name"], "user")
    _check_reference(connection, tables.user_groups, values.get("group_id"), "user group")
    row = dict(values, status=1, totp_backup="[]", oidc_provider="", created_at=actor.now,
               updated_at=actor.now)
    user_id = connection.execute(insert(u).values(**row)).inserted_primary_key[0]
    record(connection, actor, "user.add", f"user {values['name']!r}"
           f"{' (administrator)' if values.get('is_admin') else ''}")
    return user_id


def edit_user(connection, actor, user_id, values):
    """Change a user's fields; an administrator cannot disable or demote themselves."""
    u = tables.users
    before = get_user(connection, user_id)
    if user_id == actor.user_id and (values.get("status", 1) != 1
                                     or not values.get("is_admin", True)):
        raise bad_request("you cannot disable yourself or take away your own administrator "
                          "rights")
    if "name" in values:
        _unique(connection, u, values["name"], "user", exclude=user_id)
    _check_reference(connection, tables.user_groups, values.get("group_id"), "user group")
    _check_reference(connection, tables.strategies, values.get("strategy_id"), "strategy")
    changed = _changes(before, values)
    if not changed:
        return
    connection.execute(update(u).where(u.c.id == user_id).values(updated_at=actor.now,
                                                                  **values))
    record(connection, actor, "user.edit", f"user {before['name']!r}: {changed}")


def set_password(connection, actor, user_id, password_hash, keep_token=None):
    """A new password; the user's other sessions end (``keep_token``: the one in use)."""
    u, t = tables.users, tables.tokens
    user = get_user(connection, user_id)
    connection.execute(update(u).where(u.c.id == user_id).values(
        password_hash=password_hash, updated_at=actor.now))
    sessions = and_(t.c.user_id == user_id, t.c.kind.in_(("session", "console")))
    if keep_token is not None:
        sessions = and_(sessions, t.c.id != keep_token)
    connection.execute(delete(t).where(sessions))
    action = "user.password_change" if user_id == actor.user_id else "user.password_reset"
    record(connection, actor, action, f"user {user['name']!r}")


def reset_totp(connection, actor, user_id):
    u = tables.users
    user = get_user(connection, user_id)
    connection.execute(update(u).where(u.c.id == user_id).values(
        totp_secret=None, totp_backup="[]", updated_at=actor.now))
    record(connection, actor, "user.totp_reset", f"user {user['name']!r}")


def user_devices(connection, user_id, number, size=PAGE_SIZE):
    d = tables.devices
    return _page(connection, _device_query().where(d.c.user_id == user_id).order_by(
        d.c.rustdesk_id), number, size)


# -- groups and access rules -----------------------------------------------------------------

GROUPS = {"user": (tables.user_groups, tables.users, "group_id", "user group"),
          "device": (tables.device_groups, tables.devices, "device_group_id", "device group")}


def list_groups(connection, kind, q, number, size=PAGE_SIZE):
    table, members, column, _ = GROUPS[kind]
    count = select(func.count()).where(members.c[column] == table.c.id).scalar_subquery()
    query = select(table.c.id, table.c.name, table.c.note, count.label("members")).order_by(
        table.c.name)
    if q:
        query = query.where(_search(q, table.c.name, table.c.note))
    return _page(connection, query, number, size)


def get_group(connection, kind, group_id):
    table = GROUPS[kind][0]
    return _one(connection, select(table).where(table.c.id == group_id), GROUPS[kind][3])


def add_group(connection, actor, kind, name, note):
    table, _, _, what = GROUPS[kind]
    _unique(connection, table, name, what)
    group_id = connection.execute(insert(table).values(
        name=name, note=note, created_at=actor.now)).inserted_primary_key[0]
    record(connection, actor, f"{kind}_group.add", f"{what} {name!r}")
    return group_id


def edit_group(connection, actor, kind, group_id, values):
    table, _, _, what = GROUPS[kind]
    before = get_group(connection, kind, group_id)
    _unique(connection, table, values["name"], what, exclude=group_id)
    changed = _changes(before, values)
    if changed:
        connection.execute(update(table).where(table.c.id == group_id).values(**values))
        record(connection, actor, f"{kind}_group.edit", f"{what} {before['name']!r}: {changed}")


def delete_group(connection, actor, kind, group_id):
    """Members stay, without a group; rules naming the group go with it."""
    table, members, column, what = GROUPS[kind]
    group = get_group(connection, kind, group_id)
    connection.execute(update(members).where(members.c[column] == group_id).values(
        **{column: None}))
    target = "user_group" if kind == "user" else "device_group"
    r = tables.group_rules
    connection.execute(delete(r).where(r.c.target_kind == target, r.c.target_id == group_id))
    connection.execute(delete(table).where(table.c.id == group_id))
    record(connection, actor, f"{kind}_group.delete", f"{what} {group['name']!r}")


_RULE_TABLES = {"user": tables.users, "user_group": tables.user_groups,
                "device_group": tables.device_groups}


def group_rules(connection, group_id):
    """The access rules of a user group, each with its target's name."""
    r = tables.group_rules
    rows = _rows(connection.execute(select(r).where(r.c.group_id == group_id).order_by(
        r.c.target_kind, r.c.id).limit(MAX_OPTIONS)))
    for row in rows:
        table = _RULE_TABLES.get(row["target_kind"])
        row["target_name"] = connection.execute(select(table.c.name).where(
            table.c.id == row["target_id"])).scalar() if table is not None else None
    return rows


def add_rule(connection, actor, group_id, target_kind, target_name):
    group = get_group(connection, "user", group_id)
    table = _RULE_TABLES[target_kind]
    target_id = _id_of(connection, table, table.c.name, target_name,
                       target_kind.replace("_", " "))
    r = tables.group_rules
    if connection.execute(select(r.c.id).where(
            r.c.group_id == group_id, r.c.target_kind == target_kind,
            r.c.target_id == target_id)).scalar() is not None:
        raise ApiError(409, "that rule exists already")
    connection.execute(insert(r).values(group_id=group_id, target_kind=target_kind,
                                        target_id=target_id))
    record(connection, actor, "group_rule.add",
           f"user group {group['name']!r} may access {target_kind} {target_name!r}")


def delete_rule(connection, actor, group_id, rule_id):
    group = get_group(connection, "user", group_id)
    r = tables.group_rules
    rule = _one(connection, select(r).where(r.c.id == rule_id, r.c.group_id == group_id), "rule")
    connection.execute(delete(r).where(r.c.id == rule_id))
    record(connection, actor, "group_rule.delete",
           f"user group {group['name']!r}: {rule['target_kind']} #{rule['target_id']}")


# -- devices ---------------------------------------------------------------------------------

def _device_query():
    d, u, g, s = tables.devices, tables.users, tables.device_groups, tables.strategies
    return select(d.c.id, d.c.rustdesk_id, d.c.hostname, d.c.username, d.c.os, d.c.version,
                  d.c.ip, d.c.note, d.c.status, d.c.user_id, d.c.device_group_id,
                  d.c.strategy_id, d.c.created_at, d.c.last_seen, d.c.cpu, d.c.memory,
                  u.c.name.label("owner_name"), g.c.name.label("group_name"),
                  s.c.name.label("strategy_name")).select_from(
        d.outerjoin(u, u.c.id == d.c.user_id).outerjoin(g, g.c.id == d.c.device_group_id)
        .outerjoin(s, s.c.id == d.c.strategy_id))


def list_devices(connection, q, number, size=PAGE_SIZE):
    d, u = tables.devices, tables.users
    query = _device_query().order_by(d.c.rustdesk_id)
    if q:
        query = query.where(_search(q, d.c.rustdesk_id, d.c.hostname, d.c.username, d.c.note,
                                    u.c.name))
    return _page(connection, query, number, size)


def get_device(connection, device_id):
    return _one(connection, _device_query().where(tables.devices.c.id == device_id), "device")


def edit_device(connection, actor, device_id, values, owner_name):
    d = tables.devices
    before = get_device(connection, device_id)
    values = dict(values, user_id=_id_of(connection, tables.users, tables.users.c.name,
                                         owner_name, "user") if owner_name else None)
    _check_reference(connection, tables.device_groups, values.get("device_group_id"),
                     "device group")
    _check_reference(connection, tables.strategies, values.get("strategy_id"), "strategy")
    changed = _changes(before, values)
    if changed:
        connection.execute(update(d).where(d.c.id == device_id).values(**values))
        record(connection, actor, "device.edit", f"device {before['rustdesk_id']!r}: {changed}")


def device_renamed(connection, actor, device_id, old_id, new_id, reply, renamed):
    """hbbs answered a change of ID: the row follows when hbbs made the change."""
    d = tables.devices
    if renamed and connection.execute(select(d.c.id).where(
            d.c.rustdesk_id == new_id)).scalar() is None:
        connection.execute(update(d).where(d.c.id == device_id).values(rustdesk_id=new_id))
    record(connection, actor, "device.change_id",
           f"{old_id!r} -> {new_id!r}: hbbs said {reply.strip()!r}")


def device_released(connection, actor, rustdesk_id, reply):
    record(connection, actor, "device.release", f"{rustdesk_id!r}: hbbs said {reply.strip()!r}")


# -- address books ---------------------------------------------------------------------------

def list_books(connection, q, number, size=PAGE_SIZE):
    b, u, p, r = tables.address_books, tables.users, tables.ab_peers, tables.ab_rules
    peers = select(func.count()).where(p.c.ab_id == b.c.id,
                                       p.c.deleted_at.is_(None)).scalar_subquery()
    binned = select(func.count()).where(p.c.ab_id == b.c.id,
                                        p.c.deleted_at.is_not(None)).scalar_subquery()
    rules = select(func.count()).where(r.c.ab_id == b.c.id).scalar_subquery()
    query = select(b.c.id, b.c.name, b.c.personal, b.c.note, b.c.updated_at,
                   u.c.name.label("owner_name"), peers.label("peers"),
                   binned.label("binned"), rules.label("rules")).select_from(
        b.join(u, u.c.id == b.c.owner_id)).order_by(u.c.name, b.c.name)
    if q:
        query = query.where(_search(q, b.c.name, u.c.name))
    return _page(connection, query, number, size)


def get_book(connection, book_id):
    b, u = tables.address_books, tables.users
    return _one(connection, select(b.c.id, b.c.guid, b.c.name, b.c.personal, b.c.note,
                                   b.c.version, b.c.owner_id,
                                   u.c.name.label("owner_name")).select_from(
        b.join(u, u.c.id == b.c.owner_id)).where(b.c.id == book_id), "address book")


def book_peers(connection, book_id, deleted, q, number, size=PAGE_SIZE):
    p = tables.ab_peers
    query = select(p.c.id, p.c.peer_id, p.c.alias, p.c.hostname, p.c.username, p.c.platform,
                   p.c.tags, p.c.note, p.c.updated_at, p.c.deleted_at).where(
        p.c.ab_id == book_id,
        p.c.deleted_at.is_not(None) if deleted else p.c.deleted_at.is_(None)).order_by(
        p.c.peer_id)
    if q:
        query = query.where(_search(q, p.c.peer_id, p.c.alias, p.c.hostname, p.c.note))
    total, rows = _page(connection, query, number, size)
    for row in rows:
        try:
            tags = json.loads(row["tags"])
        except ValueError:
            tags = []
        row["tags"] = [str(t) for t in tags] if isinstance(tags, list) else []
    return total, rows


def book_rules(connection, book_id):
    r, u, g = tables.ab_rules, tables.users, tables.user_groups
    return _rows(connection.execute(select(
        r.c.id, r.c.rule, u.c.name.label("user_name"), g.c.name.label("group_name")).select_from(
        r.outerjoin(u, u.c.id == r.c.user_id).outerjoin(g, g.c.id == r.c.group_id)).where(
        r.c.ab_id == book_id).order_by(r.c.id).limit(MAX_OPTIONS)))


def add_book(connection, actor, owner_name, name, note):
    """A new shared book of user ``owner_name`` (:func:`.addressbooks.create_shared_book`)."""
    owner_id = _id_of(connection, tables.users, tables.users.c.name, owner_name, "user")
    try:
        guid = addressbooks.create_shared_book(connection, owner_id, name, actor.now, note)
    except ValueError as e:
        raise bad_request(str(e)) from None
    record(connection, actor, "ab.add", f"shared address book {name!r} of {owner_name!r}")
    return connection.execute(select(tables.address_books.c.id).where(
        tables.address_books.c.guid == guid)).scalar_one()


def add_book_rule(connection, actor, book_id, target_kind, name, rule):
    """Share a book with a user, a user group or everyone (:func:`.addressbooks.share_book`:
    the rule replaces what that one had)."""
    book = get_book(connection, book_id)
    if book["personal"]:
        raise bad_request("a personal address book is not shared")
    user_id = group_id = None
    if target_kind == "user":
        user_id = _id_of(connection, tables.users, tables.users.c.name, name, "user")
        if user_id == book["owner_id"]:
            raise bad_request("the owner has full control already")
    elif target_kind == "group":
        group_id = _id_of(connection, tables.user_groups, tables.user_groups.c.name, name,
                          "user group")
    addressbooks.share_book(connection, book["guid"], rule, user_id, group_id)
    who = f"{target_kind} {name!r}" if target_kind != "everyone" else "everyone"
    record(connection, actor, "ab_rule.set",
           f"address book {book['name']!r} of {book['owner_name']!r}: {who} "
           f"{RULE_NAMES[rule]}")


def delete_book_rule(connection, actor, book_id, rule_id):
    book = get_book(connection, book_id)
    r = tables.ab_rules
    _one(connection, select(r).where(r.c.id == rule_id, r.c.ab_id == book_id), "rule")
    connection.execute(delete(r).where(r.c.id == rule_id))
    record(connection, actor, "ab_rule.delete",
           f"address book {book['name']!r} of {book['owner_name']!r}: rule #{rule_id}")


def restore_peer(connection, actor, book_id, peer_row_id):
    """Bring an entry back from the recycle bin as a change of the book (a new version, by
    the console), so a client's stale whole-book push does not delete it again."""
    book = get_book(connection, book_id)
    p = tables.ab_peers
    peer = _one(connection, select(p).where(p.c.id == peer_row_id, p.c.ab_id == book_id,
                                            p.c.deleted_at.is_not(None)), "deleted peer")
    stamp = addressbooks._changing(connection, book_id, None, actor.now)
    connection.execute(update(p).where(p.c.id == peer_row_id).values(deleted_at=None, **stamp))
    record(connection, actor, "ab_peer.restore",
           f"address book {book['name']!r} of {book['owner_name']!r}: {peer['peer_id']!r}")


def empty_bin(connection, actor, book_id):
    book = get_book(connection, book_id)
    gone = addressbooks.empty_recycle_bin(connection, book["guid"])
    record(connection, actor, "ab_bin.empty",
           f"address book {book['name']!r} of {book['owner_name']!r}: {gone} peers")


# -- the console's own audit log ------------------------------------------------------------

CONSOLE_COLUMNS = ("created_at", "user_name", "ip", "action", "detail")


def _console_log(q, since, until):
    a = tables.audit_console
    query = select(*(a.c[name] for name in CONSOLE_COLUMNS), a.c.id).order_by(
        a.c.created_at.desc(), a.c.id.desc())
    if q:
        query = query.where(_search(q, a.c.user_name, a.c.ip, a.c.action, a.c.detail))
    if since is not None:
        query = query.where(a.c.created_at >= since)
    if until is not None:
        query = query.where(a.c.created_at < until)
    return query


def console_log(connection, q, since, until, number, size=PAGE_SIZE):
    """A page of console changes, newest first (the device logs are :mod:`..audit`'s)."""
    return _page(connection, _console_log(q, since, until), number, size)


def console_log_chunk(connection, q, since, until, below, size):
    """The next ``size`` console changes older than row id ``below`` (None: the newest)."""
    query = _console_log(q, since, until)
    if below is not None:
        query = query.where(tables.audit_console.c.id < below)
    return _rows(connection.execute(query.order_by(None).order_by(
        tables.audit_console.c.id.desc()).limit(size)))


# -- strategies ------------------------------------------------------------------------------

def list_strategies(connection, q, number, size=PAGE_SIZE):
    s, u, d = tables.strategies, tables.users, tables.devices
    users = select(func.count()).where(u.c.strategy_id == s.c.id).scalar_subquery()
    devices = select(func.count()).where(d.c.strategy_id == s.c.id).scalar_subquery()
    query = select(s.c.id, s.c.name, s.c.enabled, s.c.options, s.c.modified_at,
                   users.label("users"), devices.label("devices")).order_by(s.c.name)
    if q:
        query = query.where(_search(q, s.c.name))
    total, rows = _page(connection, query, number, size)
    for row in rows:
        row["options"] = _options(row["options"])
    return total, rows


def _options(text):
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def get_strategy(connection, strategy_id):
    s = tables.strategies
    row = _one(connection, select(s).where(s.c.id == strategy_id), "strategy")
    row["options"] = _options(row["options"])
    return row


def _next_modified(previous, now):
    """Strictly increasing, so a client holding the last value sees every edit."""
    return max(int(now), (previous or 0) + 1)


def add_strategy(connection, actor, name):
    s = tables.strategies
    _unique(connection, s, name, "strategy")
    strategy_id = connection.execute(insert(s).values(
        name=name, enabled=True, options="{}",
        modified_at=_next_modified(0, actor.now))).inserted_primary_key[0]
    record(connection, actor, "strategy.add", f"strategy {name!r}")
    return strategy_id


def edit_strategy(connection, actor, strategy_id, name, enabled, options):
    s = tables.strategies
    before = get_strategy(connection, strategy_id)
    _unique(connection, s, name, "strategy", exclude=strategy_id)
    after = {"name": name, "enabled": enabled, "options": options}
    changed = _changes(before, after)
    if not changed:
        return
    connection.execute(update(s).where(s.c.id == strategy_id).values(
        name=name, enabled=enabled, options=json.dumps(options, separators=(",", ":")),
        modified_at=_next_modified(before["modified_at"], actor.now)))
    record(connection, actor, "strategy.edit", f"strategy {before['name']!r}: {changed}")


def delete_strategy(connection, actor, strategy_id):
    s = tables.strategies
    before = get_strategy(connection, strategy_id)
    for table in (tables.users, tables.devices):
        connection.execute(update(table).where(table.c.strategy_id == strategy_id).values(
            strategy_id=None))
    connection.execute(delete(s).where(s.c.id == strategy_id))
    record(connection, actor, "strategy.delete", f"strategy {before['name']!r}")


def assign_strategy(connection, actor, strategy_id, target_kind, name):
    """Give a user (by name) or a device (by RustDesk ID) this strategy."""
    strategy = get_strategy(connection, strategy_id)
    if target_kind == "user":
        table, column = tables.users, tables.users.c.name
    else:
        table, column = tables.devices, tables.devices.c.rustdesk_id
    row_id = _id_of(connection, table, column, name, target_kind)
    connection.execute(update(table).where(table.c.id == row_id).values(
        strategy_id=strategy_id))
    record(connection, actor, "strategy.assign",
           f"strategy {strategy['name']!r} to {target_kind} {name!r}")


# -- API tokens ------------------------------------------------------------------------------

def list_api_tokens(connection, number, size=PAGE_SIZE):
    t, u = tables.tokens, tables.users
    query = select(t.c.id, t.c.name, t.c.scopes, t.c.created_at, t.c.expires_at,
                   t.c.last_used_at, u.c.name.label("user_name")).select_from(
        t.join(u, u.c.id == t.c.user_id)).where(t.c.kind == "api").order_by(t.c.id.desc())
    return _page(connection, query, number, size)


def add_api_token(connection, actor, digest, name, scopes, lifetime):
    connection.execute(insert(tables.tokens).values(
        user_id=actor.user_id, token_hash=digest, kind="api", name=name, scopes=scopes,
        rustdesk_id="", device_uuid="", device_info="{}", ip=actor.ip[:64],
        created_at=actor.now, expires_at=actor.now + lifetime, last_used_at=actor.now))
    record(connection, actor, "api_token.add", f"token {name!r} scopes {scopes!r}")


def revoke_api_token(connection, actor, token_id):
    t = tables.tokens
    token = _one(connection, select(t).where(t.c.id == token_id, t.c.kind == "api"),
                 "API token")
    connection.execute(delete(t).where(t.c.id == token_id))
    record(connection, actor, "api_token.revoke", f"token {token['name']!r}")
