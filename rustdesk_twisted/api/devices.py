"""Devices: what each one reports, the policy sent back, provisioning, and the console's list.

API.md sections 1.2 (sysinfo, heartbeat), 1.7 (deploy, assign) and 2.2
(strategies).  The heartbeat is the busiest call the API gets (every device,
every 3 to 15 seconds), so it never waits for the database: every device
known lives in :attr:`Devices.directory` (id -> :class:`Device`) and every
strategy with its assignments in a :class:`StrategyBook`, both loaded at start
and kept current by the writes made through this module.  Last-seen times and
the option keys each device was sent are written in one batch every
``seen_interval`` seconds, and once more at stop.
"""

import base64
import binascii
import json

from sqlalchemy import bindparam, func, insert, select, update
from twisted.internet.defer import succeed
from twisted.application.internet import TimerService

from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .addressbooks import BookLimits
from .groups import Access, device_rows
from .http import ApiError, bad_request, empty_reply, json_reply, text_reply

DEFAULT_MAX_DEVICES = 1_000_000
DEFAULT_SEEN_INTERVAL = 30
SYSINFO_REFRESH = 24 * 3600.0
WRITE_BATCH = 5000
DISCONNECT_TTL = 120.0
MAX_DISCONNECTS = 100_000
MAX_STRATEGY_OPTIONS = 500
SYSINFO_UPDATED = "SYSINFO_UPDATED"
UUID_MISMATCH = "UUID_MISMATCH"
TOO_MANY_DEVICES = "TOO_MANY_DEVICES"
TAG_COLOR = 0xFF1976D2  # opaque, so a tag made by provisioning shows until someone recolours it
NO_KEYS = frozenset()

# What the client reports of itself, each cut to its column: descriptive text, not worth a
# refusal.  NUL characters go (PostgreSQL text cannot hold them).
TELEMETRY = {"cpu": tables.SHORT, "memory": tables.NAME, "os": tables.SHORT,
             "hostname": tables.SHORT, "username": tables.SHORT, "version": tables.NAME}
# The assignment fields of ``--assign`` (API.md 1.7) and their bounds; sysinfo sends the
# same as ``preset-<name with dashes>`` options (1.2), except the two device names, which
# the client writes over username and hostname itself.
ASSIGNMENT = {"user_name": tables.NAME, "strategy_name": tables.NAME,
              "device_group_name": tables.NAME, "note": tables.NOTE,
              "address_book_name": tables.NAME, "address_book_tag": tables.NAME,
              "address_book_alias": tables.SHORT, "address_book_password": tables.SHORT,
              "address_book_note": tables.NOTE, "device_username": tables.SHORT,
              "device_name": tables.SHORT}
PRESETS = {"preset-" + name.replace("_", "-"): name for name in ASSIGNMENT
           if name not in ("device_username", "device_name")}
PLATFORMS = {"windows": "Windows", "linux": "Linux", "macos": "Mac OS", "android": "Android"}

_STRING = {"type": "string"}
_IDENTITY = {"id": _STRING, "uuid": _STRING}
SYSINFO_BODY = {"type": "object", "required": ["id", "uuid"], "properties": dict(
    _IDENTITY, **{name: _STRING for name in TELEMETRY}, **{name: _STRING for name in PRESETS})}
HEARTBEAT_BODY = {"type": "object", "required": ["id", "uuid"], "properties": dict(
    _IDENTITY, ver={"type": "integer"}, conns={"type": "array", "items": {"type": "integer"}},
    modified_at={"type": "integer"})}
HEARTBEAT_REPLY = {"type": "object", "properties": {
    "sysinfo": {"type": "boolean"},
    "disconnect": {"type": "array", "items": {"type": "integer"}},
    "modified_at": {"type": "integer"},
    "strategy": {"type": "object", "properties": {
        "config_options": {"type": "object", "additionalProperties": _STRING},
        "extra": {"type": "object"}}}}}
DEPLOY_BODY = {"type": "object", "required": ["id", "uuid", "pk"],
               "properties": dict(_IDENTITY, pk=_STRING)}
DEPLOY_REPLY = {"type": "object", "properties": {"result": {
    "type": "string", "enum": ["OK", "NOT_ENABLED", "INVALID_INPUT", "ID_TAKEN"]}}}
CLI_BODY = {"type": "object", "required": ["id", "uuid"], "properties": dict(
    _IDENTITY, **{name: _STRING for name in ASSIGNMENT})}


class Device:
    """What the heartbeat needs of one device; ``keys``: option keys it may hold from us."""

    __slots__ = ("uuid", "user_id", "group_id", "strategy_id", "status", "sysinfo_at",
                 "last_seen", "keys")

    def __init__(self, row, keys=NO_KEYS):
        self.uuid = row["uuid"]
        self.user_id = row["user_id"]
        self.group_id = row["device_group_id"]
        self.strategy_id = row["strategy_id"]
        self.status = row["status"]
        self.sysinfo_at = row["sysinfo_at"]
        self.last_seen = row["last_seen"]
        self.keys = keys


class Strategy:
    __slots__ = ("id", "name", "enabled", "options", "keys", "modified_at")

    def __init__(self, row):
        self.id = row["id"]
        self.name = row["name"]
        self.enabled = bool(row["enabled"])
        self.options = json.loads(row["options"] or "{}")
        self.keys = frozenset(self.options)
        self.modified_at = row["modified_at"]


class StrategyBook:
    """Strategies and whom they are assigned to: a device, its owner, its device group."""

    def __init__(self):
        self.strategies = {}
        self.users = {}
        self.groups = {}
        self.last_stamp = 0

    def load(self, strategies, users, groups):
        self.strategies = {row["id"]: Strategy(row) for row in strategies}
        self.users = {row["id"]: row["strategy_id"] for row in users if row["strategy_id"]}
        self.groups = {row["id"]: row["strategy_id"] for row in groups if row["strategy_id"]}
        self.last_stamp = max([s.modified_at for s in self.strategies.values()], default=0)

    def put(self, row):
        self.strategies[row["id"]] = Strategy(row)

    def effective(self, device):
        """The strategy in force: the device's, else its owner's, else its group's (enabled)."""
        strategies = self.strategies
        for strategy_id in (device.strategy_id, self.users.get(device.user_id),
                            self.groups.get(device.group_id)):
            strategy = strategies.get(strategy_id)
            if strategy is not None and strategy.enabled:
                return strategy
        return None

    def next_stamp(self, now):
        """A ``modified_at`` no strategy had before (ms), so every edit reaches every device."""
        self.last_stamp = max(int(now * 1000), self.last_stamp + 1)
        return self.last_stamp


def strategy_update(held, strategy, client_stamp):
    """``(reply fields or None, keys the device may hold after)`` for one heartbeat.

    The client writes each option it is sent and removes those sent empty
    (API.md 1.2), and only those: so a device that had keys from an earlier
    strategy is sent them empty, or they would stay set forever.  Until the
    client reports the new stamp, the old keys are kept to clear again.
    """
    stamp = strategy.modified_at if strategy is not None else 0
    keys = strategy.keys if strategy is not None else NO_KEYS
    if client_stamp == stamp:
        return None, keys
    options = dict(strategy.options) if strategy is not None else {}
    for key in held - keys:
        options[key] = ""
    return ({"modified_at": stamp, "strategy": {"config_options": options, "extra": {}}},
            held | keys if held else keys)


class Disconnects:
    """Connections an administrator asked to close, until the device's heartbeat takes them."""

    def __init__(self, ttl=DISCONNECT_TTL, max_entries=MAX_DISCONNECTS):
        self.ttl = ttl
        self.max_entries = max_entries
        self.pending = {}

    def add(self, rustdesk_id, conn_id, now):
        """False when the table is full of live requests."""
        if rustdesk_id not in self.pending and len(self.pending) >= self.max_entries:
            self.prune(now)
            if len(self.pending) >= self.max_entries:
                return False
        conns, _ = self.pending.get(rustdesk_id, ([], now))
        if conn_id not in conns:
            conns.append(conn_id)
        self.pending[rustdesk_id] = (conns, now)
        return True

    def take(self, rustdesk_id, now):
        conns, since = self.pending.pop(rustdesk_id, ((), now))
        return list(conns) if now - since < self.ttl else []

    def prune(self, now):
        for rustdesk_id, (_, since) in list(self.pending.items()):
            if now - since >= self.ttl:
                del self.pending[rustdesk_id]


class Refused(Exception):
    """A device write that must not happen; its message is the client's error text."""


def api_token_auth(accounts, scope):
    """An ``auth=`` for routes that take only an operator's API token carrying ``scope``.

    Scopes are stored space- or comma-separated (``"devices:rw audit:r"``)."""
    def check(call):
        def scoped(found):
            token = call.token
            if token["kind"] != "api" or scope not in token["scopes"].replace(",", " ").split():
                raise ApiError(403, f"an API token with scope {scope} is required")
            return found
        return accounts.authenticate(call).addCallback(scoped)
    return check


def platform(os_text):
    """The address-book platform name for sysinfo's ``os`` ("<distro> / <version>")."""
    first = os_text.split(" / ", 1)[0].strip().lower()
    if first in PLATFORMS:
        return PLATFORMS[first]
    return "Linux" if "linux" in os_text.lower() else ""


class SeenWriter(TimerService):
    """Writes the devices' last-seen batch every ``interval`` seconds, and once more as it
    stops (before the database closes)."""

    def __init__(self, devices, interval):
        super().__init__(interval, devices.flush)
        self.devices = devices
        self.clock = devices.clock

    def stopService(self):
        return super().stopService().addCallback(lambda _: self.devices.flush())


class Devices:
    """Device telemetry, policy and provisioning over the API database (``app.devices``).

    Every device and strategy is read at construction (the database is open and
    migrated by then); :attr:`writer` is the service that writes last-seen times.
    ``hbbs`` is the :class:`~.hbbs.HbbsLink` (online state, registered keys);
    ``accounts`` authenticates the API-token routes; ``book_limits`` are the address
    books' (provisioning adds devices to books).
    """

    log = Logger()

    def __init__(self, db, clock, hbbs, accounts, max_devices=DEFAULT_MAX_DEVICES,
                 seen_interval=DEFAULT_SEEN_INTERVAL, book_limits=None):
        self.db = db
        self.clock = clock
        self.hbbs = hbbs
        self.accounts = accounts
        self.book_limits = book_limits or BookLimits()
        self.max_devices = max_devices
        self.seen_interval = seen_interval
        self.directory = {}
        self.book = StrategyBook()
        self.disconnects = Disconnects()
        self.strategies = Strategies(self)
        self.limits = LimitLog(self.log)
        self.seen = set()
        self.kept = set()
        self.started_at = int(clock.seconds())
        self.sysinfo_generation = 0
        self.writer = SeenWriter(self, seen_interval)
        self._loaded(db.run_now(_load))
        if len(self.directory) >= max_devices:
            self.log.warn("{count} devices known, --max-devices is {limit}: new devices are "
                          "refused", count=len(self.directory), limit=max_devices,
                          event="api.devices_full")

    def reload(self):
        """Re-read devices and strategy assignments: after edits made outside this module."""
        return self.db.run(_load).addCallback(self._loaded)

    def _loaded(self, loaded):
        """A new directory from the rows; what memory knows better (the keys a device may
        hold, a later last-seen not yet written) carries over."""
        devices, strategies, users, groups = loaded
        self.book.load(strategies, users, groups)
        before, interned, directory = self.directory, {}, {}
        for row in devices:
            previous = before.get(row["rustdesk_id"])
            if previous is not None:
                keys = previous.keys
            else:
                keys = frozenset(json.loads(row["strategy_keys"] or "[]"))
                keys = interned.setdefault(keys, keys)
            device = directory[row["rustdesk_id"]] = Device(row, keys)
            if previous is not None:
                device.last_seen = max(previous.last_seen, device.last_seen)
        self.directory = directory

    def flush(self):
        """Write the pending last-seen times and delivered keys, :data:`WRITE_BATCH` devices
        a transaction, so that other writes never queue behind a million rows."""
        self.disconnects.prune(self.clock.seconds())
        seen, kept = self.seen, self.kept
        self.seen, self.kept = set(), set()
        ids = list(seen | kept)
        d = succeed(None)
        for start in range(0, len(ids), WRITE_BATCH):
            d.addCallback(lambda _, batch=ids[start:start + WRITE_BATCH]:
                          self._write(batch, seen, kept))
        return d

    def _write(self, ids, seen, kept):
        directory = self.directory
        times = [(i, directory[i].last_seen) for i in ids if i in seen and i in directory]
        keys = [(i, json.dumps(sorted(directory[i].keys))) for i in ids
                if i in kept and i in directory]
        return self.db.run(_write_seen, times, keys).addErrback(
            self._not_written, ids, seen, kept)

    def _not_written(self, failure, ids, seen, kept):
        self.log.error("last-seen times of {count} devices not written, kept for the next "
                       "batch: {why}", count=len(ids), why=failure.getErrorMessage(),
                       event="api.devices_not_written")
        self.seen.update(i for i in ids if i in seen)
        self.kept.update(i for i in ids if i in kept)

    # -- the directory ------------------------------------------------------------------

    def _put(self, row):
        """Keep the directory in step with a device row just written."""
        device = self.directory.get(row["rustdesk_id"])
        keys = device.keys if device is not None else NO_KEYS
        fresh = Device(row, keys)
        if device is not None:
            fresh.last_seen = max(device.last_seen, row["last_seen"])
        self.directory[row["rustdesk_id"]] = fresh
        return row

    def _room_for(self, rustdesk_id, client, now):
        """Whether a new device may be added (the directory is bounded)."""
        if rustdesk_id in self.directory or len(self.directory) < self.max_devices:
            return True
        self.limits.hit(now, "max-devices", client,
                        f"device {quoted(rustdesk_id)} refused, {self.max_devices} are known")
        return False

    def _holds(self, rustdesk_id, uuid):
        """False when another machine (another uuid) holds this id."""
        device = self.directory.get(rustdesk_id)
        return device is None or not device.uuid or device.uuid == uuid

    # -- the client's calls (API.md 1.2) ------------------------------------------------

    def heartbeat(self, call):
        """POST /api/heartbeat: last seen, then sysinfo wanted / disconnects / strategy."""
        body = call.json()
        rustdesk_id, uuid = body.get("id"), body.get("uuid")
        stamp = body.get("modified_at", 0)
        if type(rustdesk_id) is not str or type(uuid) is not str:
            raise bad_request("id and uuid must be strings")
        if type(stamp) is not int:
            raise bad_request("modified_at must be an integer")
        device = self.directory.get(rustdesk_id)
        if device is None:
            return json_reply({"sysinfo": True})
        if device.uuid != uuid:
            self.limits.count("device-uuid")
            return json_reply({})
        now = call.now
        device.last_seen = now
        self.seen.add(rustdesk_id)
        reply = {}
        if now - device.sysinfo_at > SYSINFO_REFRESH:
            reply["sysinfo"] = True
        if self.disconnects.pending:
            conns = self.disconnects.take(rustdesk_id, now)
            if conns:
                reply["disconnect"] = conns
        fields, keys = strategy_update(device.keys, self.book.effective(device), stamp)
        if keys is not device.keys and keys != device.keys:
            device.keys = keys
            self.kept.add(rustdesk_id)
        if fields is not None:
            reply.update(fields)
        return json_reply(reply)

    def sysinfo(self, call):
        """POST /api/sysinfo: store what the device reports and apply its ``preset-*`` options."""
        body = call.json()
        rustdesk_id, uuid = _identity(body)
        telemetry = {name: _truncated(body, name, limit) for name, limit in TELEMETRY.items()}
        presets = _assignment(body, PRESETS)
        if not self._holds(rustdesk_id, uuid):
            return self._uuid_refused(call, rustdesk_id)
        if not self._room_for(rustdesk_id, call.client_ip, call.now):
            return text_reply(TOO_MANY_DEVICES)
        telemetry["ip"] = call.client_ip
        d = self.db.run(_save_sysinfo, rustdesk_id, uuid, telemetry, presets, call.now,
                        self.book_limits)
        d.addCallback(self._sysinfo_saved, call, rustdesk_id)
        return d

    def _sysinfo_saved(self, saved, call, rustdesk_id):
        row, problems = saved
        if row is None:
            return self._uuid_refused(call, rustdesk_id)
        self._put(row)
        self.sysinfo_generation += 1
        for problem in problems:
            self.log.info("{client} device {id}: preset not applied, {problem}",
                          client=call.client_ip, id=quoted(rustdesk_id), problem=problem,
                          event="api.preset_not_applied")
        return text_reply(SYSINFO_UPDATED)

    def _uuid_refused(self, call, rustdesk_id):
        self.limits.hit(call.now, "device-uuid", call.client_ip,
                        f"sysinfo for device {quoted(rustdesk_id)} refused, another machine "
                        "(another uuid) holds this id")
        return text_reply(UUID_MISMATCH)

    def sysinfo_ver(self, call):
        """POST /api/sysinfo_ver: changes whenever any stored sysinfo does (dormant in clients)."""
        return text_reply(f"{self.started_at}.{self.sysinfo_generation}")

    # -- provisioning (API.md 1.7) ------------------------------------------------------

    def deploy(self, call):
        """POST /api/devices/deploy {id, uuid, pk}: register a device ahead of its first contact."""
        body = call.json()
        rustdesk_id, uuid, pk = body.get("id"), body.get("uuid"), body.get("pk")
        key = _public_key(pk)
        if (not _bounded_text(rustdesk_id, tables.NAME) or not _bounded_text(uuid, tables.SHORT)
                or key is None):
            return json_reply({"result": "INVALID_INPUT"})
        if not self._holds(rustdesk_id, uuid):
            return json_reply({"result": "ID_TAKEN"})
        if not self._room_for(rustdesk_id, call.client_ip, call.now):
            raise ApiError(503, f"the server knows {self.max_devices} devices, its limit")
        d = self.hbbs.peer_key(rustdesk_id)
        d.addCallback(self._deploy_checked, call, rustdesk_id, uuid, key)
        return d

    def _deploy_checked(self, registered, call, rustdesk_id, uuid, key):
        if registered is not None and registered[0] not in (_uuid_bytes(uuid), uuid.encode()):
            return json_reply({"result": "ID_TAKEN"})
        d = self.db.run(_deploy, rustdesk_id, uuid, key, call.now)
        d.addCallback(self._deployed, call, rustdesk_id)
        return d

    def _deployed(self, outcome, call, rustdesk_id):
        result, row = outcome
        if row is not None:
            self._put(row)
        if result == "OK":
            self.log.info("{client} device {id} deployed by user {user}", client=call.client_ip,
                          id=quoted(rustdesk_id), user=quoted(call.user["name"]),
                          event="api.device_deployed")
        return json_reply({"result": result})

    def assign(self, call):
        """POST /api/devices/cli: owner, strategy, group, note, address book (``--assign``)."""
        body = call.json()
        rustdesk_id, uuid = _identity(body)
        assignment = _assignment(body, {name: name for name in ASSIGNMENT})
        if not self._holds(rustdesk_id, uuid):
            raise ApiError(409, "this id belongs to another device")
        if not self._room_for(rustdesk_id, call.client_ip, call.now):
            raise ApiError(503, f"the server knows {self.max_devices} devices, its limit")
        d = self.db.run(_assign_cli, rustdesk_id, uuid, assignment, call.now,
                        self.book_limits)
        d.addCallbacks(self._assigned, self._assign_refused, callbackArgs=(call,))
        return d

    def _assigned(self, row, call):
        self._put(row)
        self.log.info("{client} device {id} assigned by user {user}", client=call.client_ip,
                      id=quoted(row["rustdesk_id"]), user=quoted(call.user["name"]),
                      event="api.device_assigned")
        return empty_reply()

    @staticmethod
    def _assign_refused(failure):
        failure.trap(Refused)
        raise ApiError(400, str(failure.value))

    # -- for the web console ------------------------------------------------------------

    def disconnect(self, rustdesk_id, conn_id):
        """Ask a device to close one incoming connection at its next heartbeat.

        False when the request table is full.  Kept for :data:`DISCONNECT_TTL` seconds.
        The client reads the ids as 32-bit signed integers and drops the whole list if one
        is not."""
        if type(conn_id) is not int or not -2**31 <= conn_id < 2**31:
            raise ValueError(f"a connection id is a 32-bit integer, not {conn_id!r}")
        return self.disconnects.add(rustdesk_id, conn_id, self.clock.seconds())

    def listing(self, viewer=None, offset=0, limit=100, search=""):
        """Deferred of ``{"total", "data"}``: the devices ``viewer`` (a user row; None: all)
        may see, matching ``search`` (part of id, hostname, user names, note), with online
        state from hbbs and last-seen times fresher than the database's."""
        d = self.db.run(_listing_rows, viewer)
        d.addCallback(self._listed, offset, limit, search.lower())
        return d

    def _listed(self, rows, offset, limit, search):
        if search:
            rows = [r for r in rows if any(search in (r[k] or "").lower() for k in (
                "rustdesk_id", "hostname", "username", "owner_name", "note"))]
        page = rows[offset:offset + limit]
        d = self.hbbs.online([r["rustdesk_id"] for r in page])
        d.addCallback(lambda online: {"total": len(rows),
                                      "data": [self._listed_item(r, online) for r in page]})
        return d

    def _listed_item(self, row, online):
        device = self.directory.get(row["rustdesk_id"])
        return {
            "id": row["rustdesk_id"], "hostname": row["hostname"], "username": row["username"],
            "os": row["os"], "cpu": row["cpu"], "memory": row["memory"],
            "version": row["version"], "ip": row["ip"], "note": row["note"],
            "status": row["status"], "owner": row["owner_name"] or "",
            "device_group": row["group_name"] or "", "strategy": row["strategy_name"] or "",
            "deployed": bool(row["deployed"]), "created_at": row["created_at"],
            "sysinfo_at": row["sysinfo_at"],
            "last_seen": device.last_seen if device is not None else row["last_seen"],
            "online": row["rustdesk_id"] in online,
        }

    def update(self, rustdesk_id, **changes):
        """Deferred of the device row after ``changes`` (note, status, user_id,
        device_group_id, strategy_id), or None for an unknown id."""
        unknown = set(changes) - {"note", "status", "user_id", "device_group_id", "strategy_id"}
        if unknown:
            raise ValueError(f"not a device field: {', '.join(sorted(unknown))}")
        return self.db.run(_update_device, rustdesk_id, changes).addCallback(
            lambda row: self._put(row) if row is not None else None)

    def remove(self, rustdesk_id):
        """Deferred: the device row gone (hbbs's record is ``app.hbbs.release``'s)."""
        self.directory.pop(rustdesk_id, None)
        return self.db.run(lambda c: c.execute(tables.devices.delete().where(
            tables.devices.c.rustdesk_id == rustdesk_id)).rowcount)

    def add_routes(self, router):
        router.add("POST", "/api/heartbeat", self.heartbeat, body=HEARTBEAT_BODY,
                   reply=HEARTBEAT_REPLY,
                   summary="Device heartbeat: last seen; sysinfo wanted, disconnects, strategy")
        router.add("POST", "/api/sysinfo", self.sysinfo, body=SYSINFO_BODY, reply="text",
                   summary="Device telemetry and preset-* provisioning; SYSINFO_UPDATED")
        router.add("POST", "/api/sysinfo_ver", self.sysinfo_ver, reply="text",
                   summary="Opaque version of the stored sysinfo")
        router.add("POST", "/api/devices/deploy", self.deploy,
                   auth=api_token_auth(self.accounts, "devices:rw"), body=DEPLOY_BODY,
                   reply=DEPLOY_REPLY, summary="Register a device (API token, devices:rw)")
        router.add("POST", "/api/devices/cli", self.assign,
                   auth=api_token_auth(self.accounts, "devices:rw"), body=CLI_BODY,
                   reply="empty", summary="Assign a device (rustdesk --assign; API token)")


class Strategies:
    """Create, edit, delete and assign strategies (the web console's), kept in the
    heartbeat's :class:`StrategyBook`.  Every call returns a Deferred."""

    def __init__(self, devices):
        self.devices = devices
        self.db = devices.db
        self.book = devices.book

    def list(self):
        """Deferred of every strategy row, options decoded."""
        return self.db.run(lambda c: [dict(r._mapping, options=json.loads(r.options))
                                      for r in c.execute(select(tables.strategies).order_by(
                                          tables.strategies.c.name))])

    def create(self, name, options, enabled=True):
        """Deferred of the new strategy's id."""
        values = {"name": _strategy_name(name), "options": _strategy_options(options),
                  "enabled": bool(enabled),
                  "modified_at": self.book.next_stamp(self.devices.clock.seconds())}
        return self.db.run(_insert_strategy, values).addCallback(self._stored)

    def edit(self, strategy_id, name=None, options=None, enabled=None):
        """Deferred of the strategy row after the change (None: no such strategy); every
        device it applies to gets it at its next heartbeat."""
        values = {"modified_at": self.book.next_stamp(self.devices.clock.seconds())}
        if name is not None:
            values["name"] = _strategy_name(name)
        if options is not None:
            values["options"] = _strategy_options(options)
        if enabled is not None:
            values["enabled"] = bool(enabled)
        return self.db.run(_update_strategy, strategy_id, values).addCallback(self._stored)

    def _stored(self, row):
        if row is None:
            return None
        self.book.put(row)
        return row

    def delete(self, strategy_id):
        """Deferred: gone, and unassigned everywhere (its devices are sent the options cleared)."""
        self.book.strategies.pop(strategy_id, None)
        return self.db.run(_delete_strategy, strategy_id).addCallback(
            lambda _: self.devices.reload())

    def assign(self, strategy_id, device=None, user_id=None, device_group_id=None):
        """Deferred: ``strategy_id`` (None: none) for one device (its rustdesk id), one user
        or one device group."""
        if [device, user_id, device_group_id].count(None) != 2:
            raise ValueError("assign to exactly one of device, user_id, device_group_id")
        if device is not None:
            return self.devices.update(device, strategy_id=strategy_id)
        table, key, mapping = ((tables.users, user_id, self.book.users) if user_id is not None
                               else (tables.device_groups, device_group_id, self.book.groups))
        d = self.db.run(lambda c: c.execute(update(table).where(table.c.id == key).values(
            strategy_id=strategy_id)).rowcount)

        def stored(count):
            if count:
                if strategy_id is None:
                    mapping.pop(key, None)
                else:
                    mapping[key] = strategy_id
            return count
        return d.addCallback(stored)


# -- input ----------------------------------------------------------------------------------


def _bounded_text(value, limit):
    """A name or id: 1 to ``limit`` printable characters."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _identity(body):
    rustdesk_id, uuid = body.get("id"), body.get("uuid")
    if not _bounded_text(rustdesk_id, tables.NAME):
        raise bad_request(f"id must be 1 to {tables.NAME} printable characters")
    if not _bounded_text(uuid, tables.SHORT):
        raise bad_request(f"uuid must be 1 to {tables.SHORT} printable characters")
    return rustdesk_id, uuid


def _truncated(body, name, limit):
    value = body.get(name, "")
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value.replace("\x00", "")[:limit]


def _assignment(body, names):
    """``{field: value}`` of the assignment fields present (``names``: body key -> field)."""
    found = {}
    for key, field in names.items():
        value = body.get(key)
        if value is None or value == "":
            continue
        limit = ASSIGNMENT[field]
        if not isinstance(value, str) or len(value) > limit:
            raise bad_request(f"{key} must be a string of at most {limit} characters")
        found[field] = value.replace("\x00", "")
    return found


def _public_key(text):
    """The 32 bytes of a base64 Ed25519 public key, or None."""
    if not isinstance(text, str) or len(text) > 100:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


def _uuid_bytes(uuid):
    try:
        return base64.b64decode(uuid, validate=True)
    except (binascii.Error, ValueError):
        return None


def _strategy_name(name):
    if not _bounded_text(name, tables.NAME):
        raise ValueError(f"a strategy name is 1 to {tables.NAME} characters")
    return name


def _strategy_options(options):
    """The options as stored: a JSON object of non-empty option name -> string value."""
    if not isinstance(options, dict) or len(options) > MAX_STRATEGY_OPTIONS:
        raise ValueError(f"strategy options are an object of at most {MAX_STRATEGY_OPTIONS} "
                         "entries")
    for key, value in options.items():
        if not _bounded_text(key, tables.NAME) or not isinstance(value, str) or \
                len(value) > tables.NOTE:
            raise ValueError(f"strategy option {key!r} must be a name with a string value")
    return json.dumps(options, sort_keys=True)


# -- statements (in the database's thread) ---------------------------------------------------


def _mapping(row):
    return dict(row._mapping) if row is not None else None


def _load(connection):
    t = tables
    devices = connection.execute(select(
        t.devices.c.rustdesk_id, t.devices.c.uuid, t.devices.c.user_id,
        t.devices.c.device_group_id, t.devices.c.strategy_id, t.devices.c.status,
        t.devices.c.sysinfo_at, t.devices.c.last_seen, t.devices.c.strategy_keys)).mappings().all()
    strategies = connection.execute(select(t.strategies)).mappings().all()
    users = connection.execute(select(t.users.c.id, t.users.c.strategy_id)).mappings().all()
    groups = connection.execute(select(t.device_groups.c.id,
                                       t.device_groups.c.strategy_id)).mappings().all()
    return devices, strategies, users, groups


def _write_seen(connection, seen, kept):
    d = tables.devices
    if seen:
        connection.execute(update(d).where(d.c.rustdesk_id == bindparam("rid")).values(
            last_seen=bindparam("seen")), [{"rid": i, "seen": t} for i, t in seen])
    if kept:
        connection.execute(update(d).where(d.c.rustdesk_id == bindparam("rid")).values(
            strategy_keys=bindparam("keys")), [{"rid": i, "keys": k} for i, k in kept])


def _device(connection, rustdesk_id):
    return _mapping(connection.execute(select(tables.devices).where(
        tables.devices.c.rustdesk_id == rustdesk_id)).first())


def _claim(connection, rustdesk_id, uuid, now, **values):
    """The device row for ``rustdesk_id`` owned by ``uuid``, created if new, after ``values``;
    None when another uuid holds the id."""
    d = tables.devices
    row = _device(connection, rustdesk_id)
    if row is None:
        connection.execute(insert(d).values(rustdesk_id=rustdesk_id, uuid=uuid, created_at=now,
                                            **values))
    elif row["uuid"] and row["uuid"] != uuid:
        return None
    else:
        connection.execute(update(d).where(d.c.id == row["id"]).values(uuid=uuid, **values))
    return _device(connection, rustdesk_id)


def _save_sysinfo(connection, rustdesk_id, uuid, telemetry, presets, now, limits):
    row = _claim(connection, rustdesk_id, uuid, now, sysinfo_at=now, last_seen=now, **telemetry)
    if row is None:
        return None, []
    problems = _apply(connection, row, presets, now, True, limits)
    return _device(connection, rustdesk_id), problems


def _assign_cli(connection, rustdesk_id, uuid, assignment, now, limits):
    row = _claim(connection, rustdesk_id, uuid, now)
    if row is None:
        raise Refused("this id belongs to another device")
    problems = _apply(connection, row, assignment, now, False, limits)
    if problems:
        raise Refused(problems[0])
    return _device(connection, rustdesk_id)


def _deploy(connection, rustdesk_id, uuid, key, now):
    existing = _device(connection, rustdesk_id)
    if existing is not None and existing["status"] == 0:
        return "NOT_ENABLED", None
    row = _claim(connection, rustdesk_id, uuid, now, pk=key, deployed=True)
    return ("OK", row) if row is not None else ("ID_TAKEN", None)


def _id_by_name(connection, table, name):
    return connection.execute(select(table.c.id).where(table.c.name == name)).scalar()


def _apply(connection, row, assignment, now, only_unset, limits):
    """Write an assignment (``--assign`` or sysinfo's presets) to a device row; the names
    that match nothing come back as problems.  ``only_unset``: presets fill what is empty
    and leave the administrator's later edits alone."""
    t = tables
    problems, values = [], {}
    for field, column, table in (("user_name", "user_id", t.users),
                                 ("strategy_name", "strategy_id", t.strategies),
                                 ("device_group_name", "device_group_id", t.device_groups)):
        name = assignment.get(field)
        if name is None or (only_unset and row[column] is not None):
            continue
        found = _id_by_name(connection, table, name)
        if found is None:
            problems.append(f"{field.replace('_', ' ')} {quoted(name)} not found")
        else:
            values[column] = found
    for field, column in (("note", "note"), ("device_username", "username"),
                          ("device_name", "hostname")):
        if field in assignment and not (only_unset and row[column]):
            values[column] = assignment[field]
    if values:
        connection.execute(update(t.devices).where(t.devices.c.id == row["id"]).values(**values))
    if "address_book_name" in assignment:
        problems.extend(_add_to_book(connection, dict(row, **values), assignment, now,
                                     only_unset, limits))
    return problems


def _add_to_book(connection, row, assignment, now, only_unset, limits):
    """The device in the shared address book named in the assignment (tag, alias, password,
    note), written as :mod:`.addressbooks` writes: the book's version bumped first (on
    PostgreSQL its row lock queues the book's other writers), the entry stamped with it, the
    book's capacity and tag limit held.  A preset leaves an entry already there, or in the
    recycle bin, as its users left it."""
    t, peers, books = tables, tables.ab_peers, tables.address_books
    name = assignment["address_book_name"]
    book = connection.execute(select(books.c.id).where(
        books.c.name == name, books.c.personal.is_(False)).order_by(books.c.id)).scalar()
    if book is None:
        return [f"address book {quoted(name)} not found"]
    entry = connection.execute(select(peers.c.id, peers.c.tags, peers.c.deleted_at).where(
        peers.c.ab_id == book, peers.c.peer_id == row["rustdesk_id"])).first()
    if entry is not None and only_unset:
        return []
    connection.execute(update(books).where(books.c.id == book).values(
        version=books.c.version + 1, updated_at=now))
    version = connection.execute(select(books.c.version).where(books.c.id == book)).scalar()
    live = select(func.count()).where(peers.c.ab_id == book, peers.c.deleted_at.is_(None))
    if (entry is None or entry.deleted_at is not None) and \
            connection.execute(live).scalar() >= limits.peers:
        return [f"address book {quoted(name)} is full"]
    problems = []
    tag = assignment.get("address_book_tag")
    if tag and connection.execute(select(t.ab_tags.c.id).where(
            t.ab_tags.c.ab_id == book, t.ab_tags.c.name == tag)).first() is None:
        if connection.execute(select(func.count()).where(
                t.ab_tags.c.ab_id == book)).scalar() >= limits.max_tags:
            problems.append(f"address book {quoted(name)} has too many tags for {quoted(tag)}")
            tag = None
        else:
            connection.execute(insert(t.ab_tags).values(ab_id=book, name=tag, color=TAG_COLOR))
    values = {column: assignment[field] for field, column in (
        ("address_book_alias", "alias"), ("address_book_password", "password"),
        ("address_book_note", "note")) if field in assignment}
    values.update(version=version, updated_by=None, updated_at=now, deleted_at=None)
    if entry is None:
        connection.execute(insert(peers).values(
            ab_id=book, peer_id=row["rustdesk_id"], username=row["username"],
            hostname=row["hostname"], platform=platform(row["os"]),
            tags=json.dumps([tag] if tag else []), **values))
    else:
        tags = json.loads(entry.tags or "[]")
        if tag and tag not in tags:
            tags.append(tag)
        connection.execute(update(peers).where(peers.c.id == entry.id).values(
            tags=json.dumps(tags), **values))
    return problems


def _update_device(connection, rustdesk_id, changes):
    d = tables.devices
    if changes:
        connection.execute(update(d).where(d.c.rustdesk_id == rustdesk_id).values(**changes))
    return _device(connection, rustdesk_id)


def _listing_rows(connection, viewer):
    rows = device_rows(connection)
    if viewer is None:
        return rows
    access = Access.of(connection, viewer)
    return [r for r in rows if access.device(r)]


def _name_taken(connection, name, strategy_id=None):
    s = tables.strategies
    same = s.c.name == name
    if strategy_id is not None:
        same = same & (s.c.id != strategy_id)
    if connection.execute(select(func.count()).where(same)).scalar():
        raise ValueError(f"a strategy named {name!r} exists")


def _insert_strategy(connection, values):
    s = tables.strategies
    _name_taken(connection, values["name"])
    new_id = connection.execute(insert(s).values(**values)).inserted_primary_key[0]
    return _mapping(connection.execute(select(s).where(s.c.id == new_id)).first())


def _update_strategy(connection, strategy_id, values):
    s = tables.strategies
    if "name" in values:
        _name_taken(connection, values["name"], strategy_id)
    connection.execute(update(s).where(s.c.id == strategy_id).values(**values))
    return _mapping(connection.execute(select(s).where(s.c.id == strategy_id)).first())


def _delete_strategy(connection, strategy_id):
    t = tables
    for table in (t.devices, t.users, t.device_groups):
        connection.execute(update(table).where(table.c.strategy_id == strategy_id).values(
            strategy_id=None))
    connection.execute(t.strategies.delete().where(t.strategies.c.id == strategy_id))
