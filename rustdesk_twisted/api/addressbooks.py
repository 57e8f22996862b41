"""Address books (API.md 1.3 and 1.4): a personal book per user, shared books, the legacy book.

Who may do what.  The owner of a book has full control; a personal book is its
owner's alone.  A shared book is opened to others by ``ab_rules`` rows naming a
user, a user group or everyone (no user, no group), with rule 1 read, 2
read/write, 3 full control; the most specific kind present decides (user >
group > everyone, API.md 2.2), the highest rule where one kind has several.
Reading needs rule 1, any change rule 2.  An unknown guid is 404, a known book
the caller may not read or write is 403.  ``/api/ab/personal`` never answers
404 to a signed-in user: that would switch the client to the legacy book.

Edits that run at once lose nothing.  Every entry is its own row; every change
is one transaction that starts by bumping ``address_books.version`` (on
PostgreSQL that row lock also queues the writers of one book, so the capacity
check cannot be raced), and a partial update writes only the fields it was
given.  Two clients editing different entries, or different fields of one
entry, both land.  Deleted entries go to a recycle bin (``deleted_at``): they
are not listed, the console can list and empty the bin (:func:`recycle_bin`,
:func:`empty_recycle_bin`), and adding the same id again brings the entry back
with the new fields over the old.  The bin of a book keeps at most as many
entries as the book may hold, the oldest going first.

The legacy whole-book push (``POST /api/ab``) replaces the user's personal
book with the client's copy, which may be stale: another client may have
added, changed or deleted entries since this one last pulled.  So each legacy
pull records the book version the token saw (``tokens.ab_version``), and each
entry records the version of its last write and the token that made it
(``ab_peers.version``, ``updated_by``).  An entry is *seen* by the pushing
token when it was last written at or before that version, or by that token.
Then, for the push:

- an entry missing from it is deleted only if seen; one added or changed by
  someone else since the pull stays;
- an entry in it overwrites the stored one only if the stored one is seen;
  otherwise the stored one stays and the client gets it at its next pull (a
  true conflict, both sides changing one entry, keeps the earlier write);
- an entry in it that is in the recycle bin comes back unless someone else
  deleted it after the pull (then the push only carries a stale copy);
- ids the book never had are added.

A token that never pulled has seen only its own writes.  The push never
touches the fields the legacy book does not carry (password, note,
forceAlwaysRelay, rdpPort, rdpUsername, loginName).  The book's tags become
the pushed list plus every tag its remaining entries carry, so the one thing a
stale push can drop is a tag nobody uses that was added since the pull.

Answers go out without gzip even when the client accepts it: identity is
always a valid answer, and not every path a client's request takes (the
raw-TCP proxy through hbbs) undoes a Content-Encoding.  A push that arrives
gzipped (the client does that past 1 KiB when told ``licensed_devices``) is
decoded, its decoded size held to the body cap.
"""

import json
import uuid
import zlib

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from twisted.internet.defer import maybeDeferred

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .accounts import text_field
from .http import (
    DEFAULT_MAX_BODY,
    PAGE_QUERY,
    ApiError,
    bad_request,
    empty_reply,
    json_reply,
    page_reply,
    page_schema,
    page_window,
)

READ, READ_WRITE, FULL_CONTROL = 1, 2, 3
DEFAULT_MAX_PEERS = 10_000
DEFAULT_MAX_TAGS = 1_000
PERSONAL_NAME = "My address book"
# The names the client gives its own books; a shared book so named would hide one of them.
RESERVED_NAMES = (PERSONAL_NAME, "Legacy address book")
EXCEED = "exceed_max_devices"
NO_BOOK = "Address book not found"
NO_ACCESS = "You have no access to this address book"
READ_ONLY = "This address book is read-only for you"
NO_PEER = "Peer not found"
NO_TAG = "Tag not found"
TOO_MANY_TAGS = "Too many tags in this address book"
COLOR_MASK = 0xFFFFFFFF

_ab, _rules, _peers, _tags = (tables.address_books, tables.ab_rules, tables.ab_peers,
                              tables.ab_tags)
ID_LIMIT = _peers.c.peer_id.type.length
TAG_LIMIT = _tags.c.name.type.length
GUID_LIMIT = _ab.c.guid.type.length
# The entry's text fields: the client's key and its column.
TEXT_FIELDS = {
    "hash": _peers.c.hash, "password": _peers.c.password, "username": _peers.c.username,
    "hostname": _peers.c.hostname, "platform": _peers.c.platform, "alias": _peers.c.alias,
    "note": _peers.c.note, "rdpPort": _peers.c.rdp_port, "rdpUsername": _peers.c.rdp_username,
    "loginName": _peers.c.login_name,
}
# What the legacy book carries of an entry besides its id and tags (API.md 1.3).
LEGACY_FIELDS = ("hash", "username", "hostname", "platform", "alias")
LEGACY_TEXT = {key: TEXT_FIELDS[key] for key in LEGACY_FIELDS}


class BookLimits:
    """How much one book may hold: ``max_peer_one_ab`` is what clients are told (0: no
    limit of theirs), ``max_peers`` the cap that holds regardless, ``max_tags`` for tags."""

    def __init__(self, max_peer_one_ab=0, max_peers=DEFAULT_MAX_PEERS, max_tags=DEFAULT_MAX_TAGS):
        self.max_peer_one_ab = max_peer_one_ab
        self.max_peers = max_peers
        self.max_tags = max_tags

    @property
    def peers(self):
        if self.max_peer_one_ab > 0:
            return min(self.max_peer_one_ab, self.max_peers)
        return self.max_peers


class Refused(ApiError):
    """A limit of the book refused the change: 400, counted and logged under ``limit``."""

    def __init__(self, limit, message):
        super().__init__(400, message)
        self.limit = limit


# -- what the client sends and gets (no I/O) ----------------------------------------------

def peer_id_of(value):
    if not isinstance(value, str) or not value:
        raise bad_request("id must be a non-empty string")
    if len(value) > ID_LIMIT:
        raise bad_request(f"id is longer than {ID_LIMIT} characters")
    return value


def tag_name(value, what="tag"):
    if not isinstance(value, str) or not value:
        raise bad_request(f"{what} must be a non-empty string")
    if len(value) > TAG_LIMIT:
        raise bad_request(f"{what} is longer than {TAG_LIMIT} characters")
    return value


def tag_names(value, limit, what="tags"):
    """A list of tag names, duplicates dropped, order kept."""
    if not isinstance(value, list):
        raise bad_request(f"{what} must be an array of strings")
    names = list(dict.fromkeys(tag_name(item, what) for item in value))
    if len(names) > limit:
        raise Refused("ab_max_tags", TOO_MANY_TAGS)
    return names


def color_of(value):
    """An ARGB colour as the client's ``Color.value`` (unsigned 32 bits; signed accepted)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -2**31 <= value <= COLOR_MASK:
        raise bad_request("color must be a 32-bit integer")
    return value & COLOR_MASK


def _relay_flag(value):
    """``forceAlwaysRelay``: the client sends the strings "true"/"false"; booleans accepted."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise bad_request('forceAlwaysRelay must be "true" or "false"')


def peer_values(body, limits, fields=TEXT_FIELDS, relay=True):
    """The columns an entry's JSON sets: only the fields present (null counts as absent).

    Fields the server fills itself (``same_server``, ``device_group_name``) and
    any unknown ones are ignored."""
    values = {column.name: text_field(body, key, column.type.length)
              for key, column in fields.items() if body.get(key) is not None}
    if body.get("tags") is not None:
        values["tags"] = tag_names(body["tags"], limits.max_tags)
    if relay and body.get("forceAlwaysRelay") is not None:
        values["force_always_relay"] = _relay_flag(body["forceAlwaysRelay"])
    return values


def for_book(values, personal):
    """Personal books keep ``hash`` and drop ``password``; shared books the reverse."""
    dropped = "password" if personal else "hash"
    return {name: value for name, value in values.items() if name != dropped}


# What /api/ab/peers lists of an entry as stored, first in the columns _peers_page selects.
LISTED = ("id", "username", "hostname", "platform", "alias", "note", "rdpPort", "rdpUsername",
          "loginName")


def listed_peers(rows, personal):
    """Entries as ``/api/ab/peers`` lists them, in the client's Peer.fromJson types.

    A row holds the LISTED columns, then hash (personal) or password (shared),
    tags, forceAlwaysRelay, the id of the device of that id and its group's name."""
    secret = "hash" if personal else "password"
    peers = []
    for row in rows:
        peer = dict(zip(LISTED, row))
        peer[secret], tags, relay, device, group = row[len(LISTED):]
        peer.update(tags=json.loads(tags), forceAlwaysRelay="true" if relay else "false",
                    device_group_name=group or "", same_server=device is not None)
        peers.append(peer)
    return peers


def effective_rule(owner_id, personal, user, rules):
    """The caller's rule on a book: see the module docstring.  ``rules`` are the book's
    rules that name ``user``, the user's group or everyone (objects with ``user_id``,
    ``group_id``, ``rule``)."""
    if owner_id == user["id"]:
        return FULL_CONTROL
    if personal:
        return 0
    levels = ([r.rule for r in rules if r.user_id is not None],
              [r.rule for r in rules if r.user_id is None and r.group_id is not None],
              [r.rule for r in rules if r.user_id is None and r.group_id is None])
    for level in levels:
        valid = [rule for rule in level if READ <= rule <= FULL_CONTROL]
        if valid:
            return max(valid)
    return 0


def _json_object(text, what):
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise bad_request(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request(f"{what} must encode a JSON object")
    return value


def parse_legacy_book(body, limits):
    """``{data: "<JSON string>"}`` of a legacy push as (tags, {tag: colour}, {id: values}).

    ``values`` hold the legacy fields the entry carries, ``tags`` as a list."""
    data = body.get("data")
    if not isinstance(data, str):
        raise bad_request("data must be a JSON string")
    book = _json_object(data, "data")
    tags = tag_names(book.get("tags") or [], limits.max_tags)
    colors = book.get("tag_colors") or {}
    if isinstance(colors, str):
        colors = _json_object(colors, "tag_colors")
    elif not isinstance(colors, dict):
        raise bad_request("tag_colors must be a JSON string or object")
    colors = {tag_name(name, "tag_colors"): color_of(value) for name, value in colors.items()}
    entries = book.get("peers") or []
    if not isinstance(entries, list):
        raise bad_request("peers must be an array")
    if len(entries) > limits.peers:
        raise Refused("ab_max_peers", EXCEED)
    pushed = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise bad_request("each peer must be a JSON object")
        pushed[peer_id_of(entry.get("id"))] = peer_values(entry, limits, LEGACY_TEXT, relay=False)
    return tags, colors, pushed


def legacy_data(peers, tags):
    """The legacy book as the client decodes it: a JSON string of tags, peers, tag_colors."""
    return json.dumps({
        "tags": [tag.name for tag in tags],
        "peers": [dict({key: getattr(row, key) for key in LEGACY_FIELDS}, id=row.peer_id,
                       tags=json.loads(row.tags)) for row in peers],
        "tag_colors": json.dumps({tag.name: tag.color for tag in tags if tag.color}),
    })


class LegacyPlan:
    """What a legacy push changes: rows to insert, to update (or restore), to delete."""

    def __init__(self):
        self.inserts = []   # (peer id, values)
        self.updates = []   # (row id, values, restored)
        self.deletes = []   # row id
        self.kept = []      # peer ids of entries the push could not have seen, left as stored
        self.live_tags = []  # tag lists of the entries alive afterwards


def plan_legacy_push(rows, pushed, writer, seen_version):
    """The rule of the module docstring, as a plan.

    ``rows``: every row of the book (recycle bin included) as dicts with ``id``,
    ``peer_id``, ``version``, ``updated_by``, ``deleted_at`` and the legacy fields
    (``tags`` a list).  ``pushed``: peer id -> the legacy fields the push gives."""
    def seen(row):
        return row["updated_by"] == writer or (
            seen_version is not None and row["version"] <= seen_version)

    plan = LegacyPlan()
    for peer_id, given in pushed.items():
        row = rows.get(peer_id)
        if row is None:
            values = dict({key: "" for key in LEGACY_FIELDS}, tags=[])
            values.update(given)
            plan.inserts.append((peer_id, values))
            plan.live_tags.append(values["tags"])
            continue
        current = {key: row[key] for key in (*LEGACY_FIELDS, "tags")}
        merged = dict(current, **given)
        if row["deleted_at"] is not None:
            if seen(row):
                plan.updates.append((row["id"], merged, True))
                plan.live_tags.append(merged["tags"])
            continue
        if not seen(row):
            plan.kept.append(peer_id)
            plan.live_tags.append(current["tags"])
        elif merged != current:
            plan.updates.append((row["id"], merged, False))
            plan.live_tags.append(merged["tags"])
        else:
            plan.live_tags.append(current["tags"])
    for peer_id, row in rows.items():
        if peer_id in pushed or row["deleted_at"] is not None:
            continue
        if seen(row):
            plan.deletes.append(row["id"])
        else:
            plan.kept.append(peer_id)
            plan.live_tags.append(row["tags"])
    return plan


def gunzip(body, limit):
    """A gzip request body decoded, held to ``limit`` bytes (413 past that)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise bad_request("the body is not valid gzip") from None
    if len(out) > limit:
        raise ApiError(413, "the request body is too large")
    if not decoder.eof:
        raise bad_request("the gzip body is truncated")
    return out


# -- in the database's thread ------------------------------------------------------------

class Edit:
    """Who changes which book, and when: what every change runs with."""

    def __init__(self, call):
        self.guid = call.params["guid"]
        self.user = call.user
        self.writer = call.token["id"]
        self.now = call.now


def _matching(user):
    """The rules that can apply to ``user``: naming them, their group, or everyone."""
    r = _rules
    clauses = [r.c.user_id == user["id"], and_(r.c.user_id.is_(None), r.c.group_id.is_(None))]
    if user["group_id"] is not None:
        clauses.append(and_(r.c.user_id.is_(None), r.c.group_id == user["group_id"]))
    return or_(*clauses)


def _open(c, guid, user, need):
    """The book ``guid`` when ``user`` holds at least rule ``need`` on it; else 404 or 403."""
    book = None
    if len(guid) <= GUID_LIMIT:
        book = c.execute(select(_ab).where(_ab.c.guid == guid)).first()
    if book is None:
        raise ApiError(404, NO_BOOK)
    rules = ()
    if book.owner_id != user["id"] and not book.personal:
        rules = c.execute(select(_rules.c.user_id, _rules.c.group_id, _rules.c.rule).where(
            _rules.c.ab_id == book.id, _matching(user))).all()
    rule = effective_rule(book.owner_id, book.personal, user, rules)
    if rule < need:
        raise ApiError(403, NO_ACCESS if rule < READ else READ_ONLY)
    return book


def _bump(c, book_id, now):
    """Count one change of the book; its new version.  First in every change: on
    PostgreSQL the row lock it takes queues the other writers of the book."""
    c.execute(update(_ab).where(_ab.c.id == book_id).values(version=_ab.c.version + 1,
                                                              updated_at=now))
    return c.execute(select(_ab.c.version).where(_ab.c.id == book_id)).scalar_one()


def _changing(c, book_id, writer, now):
    """Count a change of the book by token ``writer``: what the rows it writes carry."""
    return {"version": _bump(c, book_id, now), "updated_by": writer, "updated_at": now}


def _begin(c, edit):
    """Open ``edit``'s book for writing and count the change: (book, row stamp)."""
    book = _open(c, edit.guid, edit.user, READ_WRITE)
    return book, _changing(c, book.id, edit.writer, edit.now)


def _live(book_id):
    return and_(_peers.c.ab_id == book_id, _peers.c.deleted_at.is_(None))


def _count(c, table, where):
    return c.execute(select(func.count()).select_from(table).where(where)).scalar_one()


def _book_tags(c, book_id):
    return c.execute(select(_tags.c.id, _tags.c.name, _tags.c.color).where(
        _tags.c.ab_id == book_id).order_by(_tags.c.id)).all()


def _known(c, book_id, names):
    """``names`` less those the book has no tag of (the client drops those itself)."""
    if not names:
        return names
    have = set(c.execute(select(_tags.c.name).where(_tags.c.ab_id == book_id,
                                                    _tags.c.name.in_(names))).scalars())
    return [name for name in names if name in have]


def _stored(values):
    return {key: json.dumps(value) if key == "tags" else value for key, value in values.items()}


def _bound_bin(c, book_id, keep):
    """Forget the oldest entries of the recycle bin past ``keep``."""
    old = c.execute(select(_peers.c.id).where(
        _peers.c.ab_id == book_id, _peers.c.deleted_at.is_not(None)).order_by(
        _peers.c.deleted_at.desc(), _peers.c.id.desc()).offset(keep)).scalars().all()
    if old:
        c.execute(delete(_peers).where(_peers.c.id.in_(old)))


def _personal(c, user_id):
    return c.execute(select(_ab).where(_ab.c.owner_id == user_id, _ab.c.personal.is_(True))
                     .order_by(_ab.c.id)).first()


def personal_book(c, user_id, now):
    """The user's personal book, created on first use (with the user's row locked, so two
    first calls at once make one book)."""
    c.execute(select(tables.users.c.id).where(tables.users.c.id == user_id).with_for_update())
    book = _personal(c, user_id)
    if book is None:
        c.execute(insert(_ab).values(guid=str(uuid.uuid4()), name=PERSONAL_NAME, owner_id=user_id,
                                     personal=True, note="", password="", version=0,
                                     created_at=now, updated_at=now))
        book = _personal(c, user_id)
    return book


def _shared_profiles(c, user, offset, limit):
    visible = and_(_ab.c.personal.is_(False), or_(
        _ab.c.owner_id == user["id"],
        exists().where(_rules.c.ab_id == _ab.c.id, _matching(user))))
    total = _count(c, _ab, visible)
    owner = tables.users
    books = c.execute(select(_ab.c.id, _ab.c.guid, _ab.c.name, _ab.c.note, _ab.c.password,
                             _ab.c.owner_id, owner.c.name.label("owner"))
                      .join(owner, owner.c.id == _ab.c.owner_id).where(visible)
                      .order_by(_ab.c.name, _ab.c.id).offset(offset).limit(limit)).all()
    rules = {}
    if books:
        for rule in c.execute(select(_rules.c.ab_id, _rules.c.user_id, _rules.c.group_id,
                                     _rules.c.rule).where(
                _rules.c.ab_id.in_([book.id for book in books]), _matching(user))):
            rules.setdefault(rule.ab_id, []).append(rule)
    return total, [{"guid": book.guid, "name": book.name, "owner": book.owner, "note": book.note,
                    "rule": effective_rule(book.owner_id, False, user, rules.get(book.id, ())),
                    "info": {"password": book.password}} for book in books]


def _peers_page(c, guid, user, offset, limit):
    book = _open(c, guid, user, READ)
    where = _live(book.id)
    devices, groups = tables.devices, tables.device_groups
    columns = [_peers.c.peer_id, *(TEXT_FIELDS[key] for key in LISTED[1:]),
               _peers.c.hash if book.personal else _peers.c.password, _peers.c.tags,
               _peers.c.force_always_relay, devices.c.id, groups.c.name]
    rows = c.execute(
        select(*columns)
        .select_from(_peers.outerjoin(devices, devices.c.rustdesk_id == _peers.c.peer_id)
                     .outerjoin(groups, groups.c.id == devices.c.device_group_id))
        .where(where).order_by(_peers.c.id).offset(offset).limit(limit)).tuples()
    peers = listed_peers(rows, book.personal)
    return _count(c, _peers, where), peers


def _tag_list(c, guid, user):
    book = _open(c, guid, user, READ)
    return [{"name": tag.name, "color": tag.color} for tag in _book_tags(c, book.id)]


def _add_peer(c, edit, peer_id, values, limits):
    book, stamp = _begin(c, edit)
    values = for_book(values, book.personal)
    row = c.execute(select(_peers.c.id, _peers.c.deleted_at).where(
        _peers.c.ab_id == book.id, _peers.c.peer_id == peer_id)).first()
    if (row is None or row.deleted_at is not None) and _count(
            c, _peers, _live(book.id)) >= limits.peers:
        raise Refused("ab_max_peers", EXCEED)
    if "tags" in values:
        values["tags"] = _known(c, book.id, values["tags"])
    stored = dict(_stored(values), deleted_at=None, **stamp)
    if row is None:
        c.execute(insert(_peers).values(ab_id=book.id, peer_id=peer_id, **stored))
    else:
        c.execute(update(_peers).where(_peers.c.id == row.id).values(**stored))


def _update_peer(c, edit, peer_id, values):
    book, stamp = _begin(c, edit)
    values = for_book(values, book.personal)
    if "tags" in values:
        values["tags"] = _known(c, book.id, values["tags"])
    where = and_(_live(book.id), _peers.c.peer_id == peer_id)
    if c.execute(update(_peers).where(where).values(**_stored(values), **stamp)).rowcount == 0:
        raise ApiError(404, NO_PEER)


def _delete_peers(c, edit, peer_ids, limits):
    book, stamp = _begin(c, edit)
    c.execute(update(_peers).where(_live(book.id), _peers.c.peer_id.in_(peer_ids)).values(
        deleted_at=edit.now, **stamp))
    _bound_bin(c, book.id, limits.max_peers)


def _retag(c, book_id, change, stamp):
    """Apply ``change`` to the tag list of every entry of the book, recycle bin included."""
    changed = []
    for row in c.execute(select(_peers.c.id, _peers.c.tags).where(
            _peers.c.ab_id == book_id, _peers.c.tags != "[]")):
        tags = json.loads(row.tags)
        new = change(tags)
        if new != tags:
            changed.append({"row_id": row.id, "new_tags": json.dumps(new)})
    if changed:
        c.execute(update(_peers).where(_peers.c.id == bindparam("row_id")).values(
            tags=bindparam("new_tags"), **stamp), changed)


def _add_tag(c, edit, name, color, limits):
    book, _ = _begin(c, edit)
    where = and_(_tags.c.ab_id == book.id, _tags.c.name == name)
    if c.execute(update(_tags).where(where).values(color=color)).rowcount:
        return
    if _count(c, _tags, _tags.c.ab_id == book.id) >= limits.max_tags:
        raise Refused("ab_max_tags", TOO_MANY_TAGS)
    c.execute(insert(_tags).values(ab_id=book.id, name=name, color=color))


def _rename_tag(c, edit, old, new):
    book, stamp = _begin(c, edit)
    names = {tag.name for tag in _book_tags(c, book.id)}
    if old not in names:
        raise ApiError(404, NO_TAG)
    if old == new:
        return
    if new in names:
        raise bad_request(f"Tag {new} already exists")
    c.execute(update(_tags).where(_tags.c.ab_id == book.id, _tags.c.name == old).values(name=new))
    _retag(c, book.id, lambda tags: list(dict.fromkeys(new if tag == old else tag
                                                       for tag in tags)), stamp)


def _recolor_tag(c, edit, name, color):
    book, _ = _begin(c, edit)
    if not c.execute(update(_tags).where(_tags.c.ab_id == book.id, _tags.c.name == name).values(
            color=color)).rowcount:
        raise ApiError(404, NO_TAG)


def _delete_tags(c, edit, names):
    book, stamp = _begin(c, edit)
    c.execute(delete(_tags).where(_tags.c.ab_id == book.id, _tags.c.name.in_(names)))
    gone = set(names)
    _retag(c, book.id, lambda tags: [tag for tag in tags if tag not in gone], stamp)


def _legacy_pull(c, user_id, token_id, record):
    """(book or None, live entries, tags); ``record``: remember the version this token saw
    (read before the entries, so an entry written meanwhile only looks newer)."""
    book = _personal(c, user_id)
    if record:
        c.execute(update(tables.tokens).where(tables.tokens.c.id == token_id).values(
            ab_version=book.version if book is not None else 0))
    if book is None:
        return None, [], []
    peers = c.execute(select(_peers).where(_live(book.id)).order_by(_peers.c.id)).all()
    return book, peers, _book_tags(c, book.id)


def _legacy_push(c, user_id, token, now, tags, colors, pushed, limits):
    book = personal_book(c, user_id, now)
    stamp = _changing(c, book.id, token["id"], now)
    rows = {}
    for row in c.execute(select(_peers.c.id, _peers.c.peer_id, _peers.c.version,
                                _peers.c.updated_by, _peers.c.deleted_at, _peers.c.tags,
                                *(_peers.c[key] for key in LEGACY_FIELDS)).where(
            _peers.c.ab_id == book.id)):
        rows[row.peer_id] = dict(row._mapping, tags=json.loads(row.tags))
    plan = plan_legacy_push(rows, pushed, token["id"], token["ab_version"])
    before = sum(1 for row in rows.values() if row["deleted_at"] is None)
    after = (before + len(plan.inserts) - len(plan.deletes)
             + sum(1 for _, _, restored in plan.updates if restored))
    if after > limits.peers and after > before:
        raise Refused("ab_max_peers", EXCEED)
    final_tags = list(dict.fromkeys([*tags, *(tag for carried in plan.live_tags
                                              for tag in carried)]))
    if len(final_tags) > limits.max_tags:
        raise Refused("ab_max_tags", TOO_MANY_TAGS)
    if plan.inserts:
        c.execute(insert(_peers), [dict(_stored(values), ab_id=book.id, peer_id=peer_id, **stamp)
                                   for peer_id, values in plan.inserts])
    if plan.updates:
        c.execute(update(_peers).where(_peers.c.id == bindparam("row_id")).values(
            deleted_at=None, **stamp), [dict(_stored(values), row_id=row_id)
                                        for row_id, values, _ in plan.updates])
    if plan.deletes:
        c.execute(update(_peers).where(_peers.c.id.in_(plan.deletes)).values(
            deleted_at=now, **stamp))
        _bound_bin(c, book.id, limits.max_peers)
    _replace_tags(c, book.id, final_tags, colors)


def _replace_tags(c, book_id, names, colors):
    """Make the book's tags ``names``, coloured from ``colors`` where it has them."""
    have = {tag.name: tag for tag in _book_tags(c, book_id)}
    wanted = set(names)
    gone = [tag.id for name, tag in have.items() if name not in wanted]
    if gone:
        c.execute(delete(_tags).where(_tags.c.id.in_(gone)))
    new = [{"ab_id": book_id, "name": name, "color": colors.get(name, 0)}
           for name in names if name not in have]
    if new:
        c.execute(insert(_tags), new)
    recolored = [{"tag_id": tag.id, "new_color": colors[name]} for name, tag in have.items()
                 if name in wanted and name in colors and colors[name] != tag.color]
    if recolored:
        c.execute(update(_tags).where(_tags.c.id == bindparam("tag_id")).values(
            color=bindparam("new_color")), recolored)


# -- for the console ---------------------------------------------------------------------

def _is(column, value):
    return column.is_(None) if value is None else column == value


def _book_id(c, guid, personal=None):
    where = _ab.c.guid == guid
    if personal is not None:
        where = and_(where, _ab.c.personal.is_(personal))
    book_id = c.execute(select(_ab.c.id).where(where)).scalar()
    if book_id is None:
        raise ValueError(f"no such address book: {guid!r}")
    return book_id


def create_shared_book(c, owner_id, name, now, note="", password=""):
    """A new shared book of user ``owner_id``; its guid.  Shared books have distinct names,
    none of the client's own: the client keys the books it lists by name."""
    if not isinstance(name, str) or not name or len(name) > _ab.c.name.type.length:
        raise ValueError("a book name is 1 to 64 characters")
    if name in RESERVED_NAMES or c.execute(select(_ab.c.id).where(
            _ab.c.personal.is_(False), _ab.c.name == name)).first() is not None:
        raise ValueError(f"the name {name!r} is taken")
    guid = str(uuid.uuid4())
    c.execute(insert(_ab).values(guid=guid, name=name, owner_id=owner_id, personal=False,
                                 note=note, password=password, version=0, created_at=now,
                                 updated_at=now))
    return guid


def share_book(c, guid, rule, user_id=None, group_id=None):
    """Give a user, a user group or (neither) everyone ``rule`` on shared book ``guid``,
    replacing what that one had."""
    if rule not in (READ, READ_WRITE, FULL_CONTROL):
        raise ValueError("rule is 1 (read), 2 (read/write) or 3 (full control)")
    if user_id is not None and group_id is not None:
        raise ValueError("a rule names a user or a group, not both")
    book_id = _book_id(c, guid, personal=False)
    c.execute(delete(_rules).where(_rules.c.ab_id == book_id, _is(_rules.c.user_id, user_id),
                                   _is(_rules.c.group_id, group_id)))
    c.execute(insert(_rules).values(ab_id=book_id, user_id=user_id, group_id=group_id, rule=rule))


def recycle_bin(c, guid):
    """The deleted entries of book ``guid``, last deleted first."""
    rows = c.execute(select(_peers).where(
        _peers.c.ab_id == _book_id(c, guid), _peers.c.deleted_at.is_not(None)).order_by(
        _peers.c.deleted_at.desc(), _peers.c.id.desc())).all()
    return [{"id": row.peer_id, "alias": row.alias, "username": row.username,
             "hostname": row.hostname, "platform": row.platform, "note": row.note,
             "tags": json.loads(row.tags), "deleted_at": row.deleted_at} for row in rows]


def empty_recycle_bin(c, guid, peer_ids=None):
    """Forget the deleted entries of book ``guid`` (only ``peer_ids`` if given); how many."""
    where = and_(_peers.c.ab_id == _book_id(c, guid), _peers.c.deleted_at.is_not(None))
    if peer_ids is not None:
        where = and_(where, _peers.c.peer_id.in_(list(peer_ids)))
    return c.execute(delete(_peers).where(where)).rowcount


# -- over HTTP ---------------------------------------------------------------------------

def _text(limit):
    return {"type": ["string", "null"], "maxLength": limit}


TAG_NAME = {"type": "string", "minLength": 1, "maxLength": TAG_LIMIT}
COLOR = {"type": "integer", "minimum": -2**31, "maximum": COLOR_MASK}
PEER_BODY = {
    "type": "object", "required": ["id"],
    "properties": dict({key: _text(column.type.length) for key, column in TEXT_FIELDS.items()},
                       id={"type": "string", "minLength": 1, "maxLength": ID_LIMIT},
                       tags={"type": ["array", "null"], "items": TAG_NAME},
                       forceAlwaysRelay={"enum": ["true", "false", True, False, None]}),
}
PEER = {
    "type": "object", "required": ["id", "tags", "forceAlwaysRelay", "same_server"],
    "properties": dict({key: {"type": "string"} for key in TEXT_FIELDS},
                       id={"type": "string"}, tags={"type": "array", "items": {"type": "string"}},
                       forceAlwaysRelay={"enum": ["true", "false"]},
                       device_group_name={"type": "string"}, same_server={"type": "boolean"}),
}
TAG = {"type": "object", "required": ["name", "color"],
       "properties": {"name": {"type": "string"}, "color": {"type": "integer"}}}
PROFILE = {
    "type": "object", "required": ["guid", "name", "owner", "rule"],
    "properties": {"guid": {"type": "string"}, "name": {"type": "string"},
                   "owner": {"type": "string"}, "note": {"type": "string"},
                   "rule": {"type": "integer", "enum": [READ, READ_WRITE, FULL_CONTROL]},
                   "info": {"type": "object", "properties": {"password": {"type": "string"}}}},
}
LEGACY_BOOK = {"type": "object", "required": ["data"],
               "properties": {"data": {"type": "string"},
                              "licensed_devices": {"type": "integer"}}}
ID_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": ID_LIMIT}}
TAG_LIST = {"type": "array", "items": TAG_NAME}


class AddressBooks:
    """The address-book routes (API.md 1.3, 1.4) over the API database.

    ``authenticate`` is the accounts' bearer check; ``max_body`` holds a gzipped
    legacy push once decoded; ``limit_log`` counts the limit hits (``hits`` for
    /metrics: ab_max_peers, ab_max_tags) and logs them once per source and minute.
    """

    log = Logger()

    def __init__(self, db, authenticate, limits=None, max_body=DEFAULT_MAX_BODY, limit_log=None):
        self.db = db
        self.authenticate = authenticate
        self.limits = limits or BookLimits()
        self.max_body = max_body
        self.limit_log = limit_log or LimitLog(self.log)

    def _guarded(self, handler):
        """``handler`` with its limit refusals counted and logged."""
        def guarded(call):
            return maybeDeferred(handler, call).addErrback(self._refused, call)
        return guarded

    def _refused(self, failure, call):
        failure.trap(Refused)
        self.limit_log.hit(call.now, failure.value.limit, source_key(call.client_ip),
                           detail=f"user {quoted(call.user['name'])}")
        return failure

    def _change(self, call, work, *args):
        return self.db.run(work, Edit(call), *args).addCallback(lambda _: empty_reply())

    # -- personal and shared books (API.md 1.4) --------------------------------------------

    def personal(self, call):
        return self.db.run(personal_book, call.user["id"], call.now).addCallback(
            lambda book: json_reply({"guid": book.guid}))

    def settings(self, call):
        return json_reply({"max_peer_one_ab": self.limits.max_peer_one_ab})

    def shared_profiles(self, call):
        offset, limit = page_window(call)
        return self.db.run(_shared_profiles, call.user, offset, limit).addCallback(
            lambda page: page_reply(*page))

    def peers(self, call):
        guid = call.query.get("ab")
        if not guid:
            raise bad_request("ab (the guid of the address book) is required")
        offset, limit = page_window(call)
        return self.db.run(_peers_page, guid, call.user, offset, limit).addCallback(
            lambda page: page_reply(*page))

    def tags(self, call):
        return self.db.run(_tag_list, call.params["guid"], call.user).addCallback(json_reply)

    def add_peer(self, call):
        body = call.json()
        peer_id = peer_id_of(body.get("id"))
        return self._change(call, _add_peer, peer_id, peer_values(body, self.limits), self.limits)

    def update_peer(self, call):
        body = call.json()
        peer_id = peer_id_of(body.get("id"))
        return self._change(call, _update_peer, peer_id, peer_values(body, self.limits))

    def delete_peers(self, call):
        peer_ids = call.json(kind=list)
        if len(peer_ids) > self.limits.max_peers:
            raise bad_request(f"at most {self.limits.max_peers} ids at once")
        return self._change(call, _delete_peers, list({peer_id_of(i) for i in peer_ids}),
                            self.limits)

    def add_tag(self, call):
        body = call.json()
        name = tag_name(body.get("name"), "name")
        return self._change(call, _add_tag, name, color_of(body.get("color")), self.limits)

    def rename_tag(self, call):
        body = call.json()
        old, new = tag_name(body.get("old"), "old"), tag_name(body.get("new"), "new")
        return self._change(call, _rename_tag, old, new)

    def recolor_tag(self, call):
        body = call.json()
        name = tag_name(body.get("name"), "name")
        return self._change(call, _recolor_tag, name, color_of(body.get("color")))

    def delete_tags(self, call):
        names = tag_names(call.json(kind=list), self.limits.max_tags)
        return self._change(call, _delete_tags, names)

    # -- the legacy book (API.md 1.3) ------------------------------------------------------

    def _pull(self, call):
        return self.db.run(_legacy_pull, call.user["id"], call.token["id"],
                           call.method != "HEAD")

    def legacy_pull(self, call):
        """GET /api/ab: "null" for an empty book, else its data (and the client's cap)."""
        def answer(pulled):
            _, peers, tags = pulled
            if not peers and not tags:
                return json_reply(None)
            reply = {"data": legacy_data(peers, tags)}
            if self.limits.max_peer_one_ab:
                reply["licensed_devices"] = self.limits.max_peer_one_ab
            return json_reply(reply)
        return self._pull(call).addCallback(answer)

    def legacy_get(self, call):
        """POST /api/ab/get (the Sciter client): always data, and when the book last changed."""
        def answer(pulled):
            book, peers, tags = pulled
            return json_reply({"data": legacy_data(peers, tags),
                               "updated_at": book.updated_at if book is not None else 0})
        return self._pull(call).addCallback(answer)

    def legacy_push(self, call):
        encoding = (call.header("content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            call.body = gunzip(call.body, self.max_body)
        elif encoding != "identity":
            raise ApiError(415, "only gzip request bodies are understood")
        tags, colors, pushed = parse_legacy_book(call.json(), self.limits)
        return self.db.run(_legacy_push, call.user["id"], call.token, call.now, tags, colors,
                           pushed, self.limits).addCallback(lambda _: empty_reply())

    def add_routes(self, router):
        guid = "/{guid}"
        routes = [
            ("GET", "/api/ab", self.legacy_pull, "The legacy address book (API.md 1.3)", None,
             {"oneOf": [LEGACY_BOOK, {"type": "null"}]}, None),
            ("POST", "/api/ab", self.legacy_push, "Replace the legacy address book",
             LEGACY_BOOK, "empty", None),
            ("POST", "/api/ab/get", self.legacy_get, "The legacy address book (Sciter client)",
             None, {"type": "object", "required": ["data"], "properties": {
                 "data": {"type": "string"}, "updated_at": {"type": "number"}}}, None),
            ("POST", "/api/ab/personal", self.personal, "The guid of the caller's personal "
             "address book, created on first use", None,
             {"type": "object", "required": ["guid"],
              "properties": {"guid": {"type": "string"}}}, None),
            ("POST", "/api/ab/settings", self.settings, "Address-book limits told to clients",
             None, {"type": "object", "required": ["max_peer_one_ab"],
                    "properties": {"max_peer_one_ab": {"type": "integer"}}}, None),
            ("POST", "/api/ab/shared/profiles", self.shared_profiles,
             "The shared address books the caller owns or may read", None,
             page_schema(PROFILE), PAGE_QUERY),
            ("POST", "/api/ab/peers", self.peers, "The entries of one address book", None,
             page_schema(PEER), dict(PAGE_QUERY, ab={"type": "string"})),
            ("POST", "/api/ab/tags" + guid, self.tags, "The tags of one address book", None,
             {"type": "array", "items": TAG}, None),
            ("POST", "/api/ab/peer/add" + guid, self.add_peer,
             "Add an entry (or bring one back from the recycle bin)", PEER_BODY, "empty", None),
            ("PUT", "/api/ab/peer/update" + guid, self.update_peer,
             "Change the given fields of an entry", PEER_BODY, "empty", None),
            ("DELETE", "/api/ab/peer" + guid, self.delete_peers,
             "Move entries to the recycle bin", ID_LIST, "empty", None),
            ("POST", "/api/ab/tag/add" + guid, self.add_tag, "Add a tag (or recolour it)",
             {"type": "object", "required": ["name", "color"],
              "properties": {"name": TAG_NAME, "color": COLOR}}, "empty", None),
            ("PUT", "/api/ab/tag/rename" + guid, self.rename_tag,
             "Rename a tag, in every entry too",
             {"type": "object", "required": ["old", "new"],
              "properties": {"old": TAG_NAME, "new": TAG_NAME}}, "empty", None),
            ("PUT", "/api/ab/tag/update" + guid, self.recolor_tag, "Recolour a tag",
             {"type": "object", "required": ["name", "color"],
              "properties": {"name": TAG_NAME, "color": COLOR}}, "empty", None),
            ("DELETE", "/api/ab/tag" + guid, self.delete_tags,
             "Delete tags, from every entry too", TAG_LIST, "empty", None),
        ]
        for method, pattern, handler, summary, body, reply, query in routes:
            router.add(method, pattern, self._guarded(handler), auth=self.authenticate,
                       summary=summary, body=body, reply=reply, query=query)
