"""Session recordings uploaded by the client (API.md 1.9), one directory per device.

The client's uploader (``record_upload.rs``) is dormant in official builds and
its calls name no device, so any client that uploads is a patched one, and the
contract is ours: every call carries the device's ``id`` and ``uuid`` as query
parameters beside the official ones::

    POST /api/record?type=new|part|tail|remove&file=NAME[&offset=N&length=N]&id=ID&uuid=UUID

and the device must be registered (a devices row or hbbs's peer table) with
that uuid.  ``new`` (empty body) starts NAME, or starts it over; ``part``
writes its body at ``offset``, which may not lie past the bytes stored so far
(the official uploader sends exactly that size; resending a range rewrites
it); ``tail`` rewrites the container header (at most 1 KiB at offset 0) and
marks the file complete; ``remove`` deletes it.  Success is 200 with an empty
body; any refusal is ``{"error": ...}``, which stops the client's upload.

NAME is a bare file name ending in .webm or .mp4 -- never a path.  Files live
in RECORDING_DIR/<id>/ (directories 0700, files 0600, symlinks never
followed), each at most ``max_file`` bytes, a device at most ``quota`` bytes
in at most ``max_files`` files.  Disk writes run in a thread, one call per
device at a time, so the quota holds under concurrent calls.
"""

import os
import re

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from twisted.internet.defer import DeferredLock

from ..admission import source_key
from ..logs import Logger
from ..logtext import LimitLog, quoted
from . import tables
from .db import page
from .http import ApiError, bad_request, empty_reply, error_reply
from .identity import KNOWN, check_device, device_id

DEFAULT_MAX_FILE = 2 << 30
DEFAULT_QUOTA = 10 << 30
DEFAULT_MAX_FILES = 1000
MAX_HEADER = 1024
OPERATIONS = ("new", "part", "tail", "remove")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}\.(webm|mp4)")


def file_name(value):
    """A recording's file name from the query, or 400: no directory part, no '..'."""
    if not isinstance(value, str) or not FILE_NAME.fullmatch(value) or ".." in value:
        raise bad_request("file must be a plain .webm or .mp4 file name")
    return value


class RecordingLimits:
    def __init__(self, max_file=DEFAULT_MAX_FILE, quota=DEFAULT_QUOTA,
                 max_files=DEFAULT_MAX_FILES):
        self.max_file = max_file
        self.quota = quota
        self.max_files = max_files


def plan(operation, row, device_bytes, device_files, offset, length, body_size, limits):
    """What one upload call does: ``(action, offset, new size, complete)`` with action
    "truncate", "write" or "remove"; or raises the ApiError the client gets.

    ``row`` is the file's recordings row (None if unknown), ``device_bytes`` and
    ``device_files`` what the device stores in all."""
    if length is not None and length != body_size:
        raise bad_request(f"length {length} differs from the body's {body_size} bytes")
    if operation == "remove":
        return "remove", 0, 0, False
    if operation == "new":
        if body_size:
            raise bad_request("type=new carries no body")
        if row is None and device_files >= limits.max_files:
            raise ApiError(413, f"this device already stores {limits.max_files} recordings")
        return "truncate", 0, 0, False
    if row is None:
        raise ApiError(404, "no such recording: send type=new first")
    size = row["size"]
    if operation == "tail":
        if offset not in (None, 0):
            raise bad_request("type=tail writes at offset 0")
        if body_size > MAX_HEADER:
            raise ApiError(413, f"a tail is at most {MAX_HEADER} bytes")
        if body_size > size:
            raise ApiError(409, "the tail is longer than the recording")
        return "write", 0, size, True
    if row["complete"]:
        raise ApiError(409, "the recording is complete")
    if offset is None:
        raise bad_request("offset is required")
    if offset > size:
        raise ApiError(409, f"offset {offset} is past the {size} bytes stored")
    new_size = max(size, offset + body_size)
    if new_size > limits.max_file:
        raise ApiError(413, f"a recording is at most {limits.max_file} bytes")
    if device_bytes - size + new_size > limits.quota:
        raise ApiError(413, f"this device's recordings may use at most {limits.quota} bytes")
    return "write", offset, new_size, False


class Recordings:
    """``POST /api/record`` and the console's view of the files (:meth:`list`, :meth:`path`,
    :meth:`delete`).  ``directory`` None turns uploads off."""

    log = Logger()

    def __init__(self, db, blocking, hbbs, directory, limits=None):
        self.db = db
        self.blocking = blocking
        self.hbbs = hbbs
        self.directory = directory
        self.limits = limits or RecordingLimits()
        self.limit_log = LimitLog(self.log)
        self.locks = {}
        self.bytes_written = 0

    def post(self, call):
        if self.directory is None:
            raise ApiError(404, "recording upload is off on this server")
        operation = call.query.get("type")
        if operation not in OPERATIONS:
            raise bad_request("type must be new, part, tail or remove")
        name = file_name(call.query.get("file"))
        rustdesk_id = device_id(call.query.get("id"))
        uuid = call.query.get("uuid") or ""
        if not uuid or len(uuid) > tables.SHORT:
            raise bad_request("uuid is required")
        offset = call.query_int("offset", None, minimum=0)
        length = call.query_int("length", None, minimum=0)

        def checked(verdict):
            if verdict != KNOWN:
                self.limit_log.hit(call.now, "recording-unregistered-device",
                                   source_key(call.client_ip), f"id {quoted(rustdesk_id)}")
                raise ApiError(403, "recordings are taken only from registered devices")
            return self._locked(rustdesk_id, self._run, operation, rustdesk_id, name, offset,
                                length, call.body, call.now, call.client_ip)
        return check_device(self.db, self.hbbs, rustdesk_id, uuid).addCallback(checked)

    def _locked(self, rustdesk_id, work, *args):
        """``work(*args)`` once the device's earlier calls are done."""
        lock = self.locks.get(rustdesk_id)
        if lock is None:
            lock = self.locks[rustdesk_id] = DeferredLock()

        def forget(result):
            if not lock.locked and not lock.waiting and self.locks.get(rustdesk_id) is lock:
                del self.locks[rustdesk_id]
            return result
        return lock.run(work, *args).addBoth(forget)

    def _run(self, operation, rustdesk_id, name, offset, length, body, now, client):
        d = self.db.run(_state, rustdesk_id, name)

        def planned(state):
            row, device_bytes, device_files = state
            try:
                step = plan(operation, row, device_bytes, device_files, offset, length,
                            len(body), self.limits)
            except ApiError as e:
                if e.status == 413:
                    self.limit_log.hit(now, "recording-size", source_key(client), e.message)
                raise
            d = self.blocking(_apply, self.directory, rustdesk_id, name, step[0], step[1], body)
            d.addCallback(lambda _: self.db.run(_recorded, rustdesk_id, name, step, now))
            d.addCallback(lambda _: self._done(client, rustdesk_id, name, operation, body))
            return d
        d.addCallback(planned)
        d.addErrback(self._failed, client, rustdesk_id, name)
        return d

    def _done(self, client, rustdesk_id, name, operation, body):
        self.bytes_written += len(body)
        if operation != "part":
            self.log.info("{client} recording {file} of {id}: {operation}", client=client,
                          file=quoted(name), id=quoted(rustdesk_id), operation=operation,
                          event="api.recording")
        return empty_reply()

    def _failed(self, failure, client, rustdesk_id, name):
        failure.trap(OSError, SQLAlchemyError)
        self.log.warn("{client} recording {file} of {id} not stored: {why}", client=client,
                      file=quoted(name), id=quoted(rustdesk_id),
                      why=getattr(failure.value, "strerror", None) or type(failure.value).__name__,
                      event="api.recording_failed")
        return error_reply(503, "the recording could not be stored")

    def list(self, rustdesk_id=None, current=1, page_size=100):
        """Deferred of ``{"total", "data"}``: recordings rows, most recently written first."""
        r = tables.recordings
        statement = select(r)
        if rustdesk_id:
            statement = statement.where(r.c.rustdesk_id == rustdesk_id)
        statement = statement.order_by(r.c.updated_at.desc(), r.c.id.desc())
        return self.db.run(page, statement, current, page_size)

    def path(self, rustdesk_id, name):
        """The file of a recording, for download; ValueError for names no upload could make."""
        if self.directory is None:
            raise ValueError("recording upload is off")
        try:
            return os.path.join(self.directory, device_id(rustdesk_id), file_name(name))
        except ApiError as e:
            raise ValueError(e.message) from None

    def delete(self, rustdesk_id, name):
        """Deferred of the reply of removing a recording (the console's delete button)."""
        return self._locked(rustdesk_id, self._run, "remove", device_id(rustdesk_id),
                            file_name(name), None, None, b"", 0.0, "console")

    def add_routes(self, router):
        router.add("POST", "/api/record", self.post,
                   summary="Upload a session recording in parts (patched clients: id and uuid "
                           "in the query)",
                   query={"type": {"enum": list(OPERATIONS)}, "file": {"type": "string"},
                          "offset": {"type": "integer", "minimum": 0},
                          "length": {"type": "integer", "minimum": 0},
                          "id": {"type": "string"}, "uuid": {"type": "string"}},
                   body={"raw": {"type": "string", "format": "binary"}}, reply="empty")


def _state(connection, rustdesk_id, name):
    r = tables.recordings
    row = connection.execute(select(r).where(r.c.rustdesk_id == rustdesk_id,
                                             r.c.file == name)).first()
    total, count = connection.execute(
        select(func.coalesce(func.sum(r.c.size), 0), func.count())
        .where(r.c.rustdesk_id == rustdesk_id)).one()
    return (dict(row._mapping) if row is not None else None), total, count


def _recorded(connection, rustdesk_id, name, step, now):
    action, _, size, complete = step
    r = tables.recordings
    this = (r.c.rustdesk_id == rustdesk_id, r.c.file == name)
    if action == "remove":
        connection.execute(delete(r).where(*this))
    elif connection.execute(update(r).where(*this).values(
            size=size, complete=complete, updated_at=now)).rowcount == 0:
        connection.execute(insert(r).values(rustdesk_id=rustdesk_id, file=name, size=size,
                                            complete=complete, created_at=now, updated_at=now))


def _apply(root, rustdesk_id, name, action, offset, data):
    """The disk side of one call (in a thread): no symlink followed below ``root``."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(rustdesk_id, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        dir_fd = os.open(rustdesk_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=root_fd)
    finally:
        os.close(root_fd)
    try:
        if action == "remove":
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        if action == "truncate":
            flags |= os.O_TRUNC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
