"""Who may see whom, and the client's group tab (API.md 1.5, 2.2 "Users and groups").

:class:`Access` is the one access decision, plain logic over rows, so the
group tab here, the web console's device list and the audit views all answer
alike.  The group tab's three calls page the client through what its user may
access: device groups, users and devices.
"""

from sqlalchemy import select

from . import tables
from .accounts import user_payload
from .http import PAGE_QUERY, ApiError, page_reply, page_schema, page_window

_RULE_TARGETS = ("user", "user_group", "device_group")


class Access:
    """What one user (``viewer``, a users row) may access, given their group's rules.

    An administrator reaches every enabled user and device.  Anyone else
    reaches themselves and the devices they own; the members of their user
    group and those members' devices (same-group access is implicit); and what
    their group's rules grant: a user group (its members and their devices), a
    device group (its devices) or one user (that user and their devices).
    Disabled users and devices are reached by no one.
    """

    def __init__(self, viewer, rules):
        self.admin = bool(viewer["is_admin"])
        group = viewer["group_id"]
        self.users = {viewer["id"]}
        self.user_groups = set()
        self.device_groups = set()
        if group is None:
            return
        self.user_groups.add(group)
        targets = dict(zip(_RULE_TARGETS, (self.users, self.user_groups, self.device_groups)))
        for rule in rules:
            if rule["group_id"] == group and rule["target_kind"] in targets:
                targets[rule["target_kind"]].add(rule["target_id"])

    @classmethod
    def of(cls, connection, viewer):
        """The viewer's access, its group's rules read through ``connection``."""
        r = tables.group_rules
        rules = connection.execute(select(r).where(r.c.group_id == viewer["group_id"])
                                   ).mappings().all() if viewer["group_id"] is not None else []
        return cls(viewer, rules)

    def user(self, row):
        """``row``: a users row (id, group_id, status)."""
        return row["status"] == 1 and (self.admin or row["id"] in self.users
                                       or row["group_id"] in self.user_groups)

    def device(self, row):
        """``row``: a devices row with its owner's group as ``owner_group_id``."""
        if row["status"] != 1:
            return False
        return (self.admin or row["user_id"] in self.users
                or (row["user_id"] is not None and row["owner_group_id"] in self.user_groups)
                or row["device_group_id"] in self.device_groups)

    def device_group(self, row):
        return self.admin or row["id"] in self.device_groups


def device_rows(connection):
    """Every device with its owner's name and group, its group's and strategy's names."""
    d, g, s = tables.devices, tables.device_groups, tables.strategies
    owner = tables.users.alias("owner")
    query = select(
        d.c.rustdesk_id, d.c.hostname, d.c.username, d.c.os, d.c.cpu, d.c.memory,
        d.c.version, d.c.ip, d.c.note, d.c.status, d.c.user_id, d.c.device_group_id,
        d.c.deployed, d.c.created_at, d.c.sysinfo_at, d.c.last_seen,
        owner.c.name.label("owner_name"), owner.c.display_name.label("owner_display_name"),
        owner.c.group_id.label("owner_group_id"), g.c.name.label("group_name"),
        s.c.name.label("strategy_name"),
    ).select_from(
        d.outerjoin(owner, owner.c.id == d.c.user_id)
        .outerjoin(g, g.c.id == d.c.device_group_id)
        .outerjoin(s, s.c.id == d.c.strategy_id)
    ).order_by(d.c.rustdesk_id)
    return [dict(row) for row in connection.execute(query).mappings()]


def peer_payload(row):
    """A device as the group tab's PeerPayload (``info.os`` is "<distro> / <version>")."""
    return {
        "id": row["rustdesk_id"],
        "info": {"username": row["username"], "os": row["os"], "device_name": row["hostname"]},
        "status": row["status"],
        "user": row["owner_name"] or "",
        "user_name": row["owner_display_name"] or row["owner_name"] or "",
        "device_group_name": row["group_name"] or "",
        "note": row["note"],
    }


def paged(call, items, shape):
    """One page of ``items`` as the client reads it, each passed through ``shape``."""
    offset, limit = page_window(call)
    return page_reply(len(items), [shape(item) for item in items[offset:offset + limit]])


_STRING = {"type": "string"}
GROUP_PAGE = page_schema({"type": "object", "properties": {"name": _STRING}})
USER_PAGE = page_schema({"type": "object", "properties": {
    "name": _STRING, "display_name": _STRING, "avatar": _STRING, "email": _STRING,
    "note": _STRING, "status": {"type": "integer"}, "is_admin": {"type": "boolean"}}})
PEER_PAGE = page_schema({"type": "object", "properties": {
    "id": _STRING, "info": {"type": "object", "properties": {
        "username": _STRING, "os": _STRING, "device_name": _STRING}},
    "status": {"type": "integer"}, "user": _STRING, "user_name": _STRING,
    "device_group_name": _STRING, "note": _STRING}})
_LIST_QUERY = dict(PAGE_QUERY, accessible={"type": "string"}, status={"type": "integer"})


class Groups:
    """The group tab's calls; ``accounts`` authenticates them."""

    def __init__(self, db, accounts):
        self.db = db
        self.accounts = accounts

    @staticmethod
    def _listing(call):
        """``(accessible, status filter)``; without ``accessible`` only an admin may list."""
        accessible = "accessible" in call.query
        if not accessible and not call.user["is_admin"]:
            raise ApiError(403, "Admin required!")
        return accessible, call.query_int("status", None)

    def device_groups(self, call):
        def rows(connection):
            access = Access.of(connection, call.user)
            groups = connection.execute(select(tables.device_groups).order_by(
                tables.device_groups.c.name)).mappings().all()
            return [g for g in groups if access.device_group(g)]
        return self.db.run(rows).addCallback(
            lambda items: paged(call, items, lambda g: {"name": g["name"]}))

    def users(self, call):
        accessible, status = self._listing(call)

        def rows(connection):
            access = Access.of(connection, call.user)
            users = connection.execute(select(tables.users).order_by(
                tables.users.c.name)).mappings().all()
            return [u for u in users if (status is None or u["status"] == status)
                    and (not accessible or access.user(u))]
        return self.db.run(rows).addCallback(lambda items: paged(call, items, user_payload))

    def peers(self, call):
        accessible, status = self._listing(call)

        def rows(connection):
            access = Access.of(connection, call.user)
            return [d for d in device_rows(connection) if (status is None or d["status"] == status)
                    and (not accessible or access.device(d))]
        return self.db.run(rows).addCallback(lambda items: paged(call, items, peer_payload))

    def add_routes(self, router):
        auth = self.accounts.authenticate
        router.add("GET", "/api/device-group/accessible", self.device_groups, auth=auth,
                   query=PAGE_QUERY, reply=GROUP_PAGE,
                   summary="Device groups the user may access: {total, data: [{name}]}")
        router.add("GET", "/api/users", self.users, auth=auth, query=_LIST_QUERY, reply=USER_PAGE,
                   summary="Users (accessible=: those the user may access; else admin only)")
        router.add("GET", "/api/peers", self.peers, auth=auth, query=_LIST_QUERY, reply=PEER_PAGE,
                   summary="Devices (accessible=: those the user may access; else admin only)")
