"""Audit logs: connections, file transfers and alarms (read through :class:`..audit.Audit`)
and the console's own changes; filtered, paged, and exported as CSV."""

import csv
import io
from datetime import datetime, timezone
from urllib.parse import urlencode

from ..audit import _csv_cell
from ..http import ApiError, Reply, bad_request
from . import data
from .core import LIST_QUERY, Pages, list_args, pager
from .forms import MAX_ID

TITLES = {"conn": "Connections", "file": "File transfers", "alarm": "Alarms",
          "console": "Console changes"}
COLUMNS = {
    "conn": ("started_at", "closed_at", "rustdesk_id", "controller_id", "controller_name", "ip",
             "conn_type", "note"),
    "file": ("created_at", "rustdesk_id", "peer_id", "direction", "path", "is_file"),
    "alarm": ("created_at", "rustdesk_id", "typ", "info"),
    "console": data.CONSOLE_COLUMNS,
}
DAY = 86400
MAX_CSV_BYTES = 32 * 1024 * 1024
CSV_CHUNK = 1000
DATE = {"type": "string", "format": "date"}
AUDIT_QUERY = dict(LIST_QUERY, since=DATE, until=DATE, id={"type": "string"},
                   type={"type": "integer", "minimum": 0})
FILTERS = ("q", "id", "type", "since", "until")


class CsvTooLarge(Exception):
    """The export passed :data:`MAX_CSV_BYTES`."""


def _kind(call):
    kind = call.params["kind"]
    if kind not in TITLES:
        raise ApiError(404, "no such audit log")
    return kind


def _day(call, name):
    """A YYYY-MM-DD query field as unix seconds of that UTC midnight, or None."""
    text = call.query.get(name, "").strip()
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise bad_request(f"{name} must be a date like 2026-01-31") from None
    return day.timestamp()


class Filters:
    """What a log page or export is narrowed to: a device and a type (device logs) or any
    text (console changes), and days [since, until]."""

    def __init__(self, call):
        self.q, _ = list_args(call)
        self.device = call.query.get("id", "").strip()[:data.tables.NAME] or None
        self.type = call.query_int("type", None, minimum=0, maximum=MAX_ID)
        self.since = _day(call, "since")
        until = _day(call, "until")
        self.until = until + DAY if until is not None else None
        self.shown = {k: call.query[k] for k in FILTERS if call.query.get(k)}

    def device_log(self):
        return {"rustdesk_id": self.device, "since": self.since, "until": self.until,
                "typ": self.type}


class Collected:
    """CSV bytes gathered up to ``limit``, then :class:`CsvTooLarge`."""

    def __init__(self, limit=MAX_CSV_BYTES):
        self.limit = limit
        self.chunks = []
        self.size = 0

    def write(self, data_bytes):
        self.size += len(data_bytes)
        if self.size > self.limit:
            raise CsvTooLarge()
        self.chunks.append(data_bytes)

    def body(self):
        return b"".join(self.chunks)


class AuditPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/audit/{kind}", self.list,
              "An audit log (conn, file, alarm or console)", query=AUDIT_QUERY)
        route(router, "GET", "/audit/{kind}/csv", self.export, "An audit log as CSV",
              query=AUDIT_QUERY)

    async def list(self, call, viewer):
        kind, filters = _kind(call), Filters(call)
        _, number = list_args(call)
        if kind == "console":
            total, rows = await self.db.run(data.console_log, filters.q, filters.since,
                                            filters.until, number)
        else:
            found = await self.console.audit.query(kind, current=number,
                                                   page_size=data.PAGE_SIZE,
                                                   **filters.device_log())
            total, rows = found["total"], found["data"]
        export = f"{call.path}/csv" + ("?" + urlencode(filters.shown) if filters.shown else "")
        return self.console.page(viewer, "audit.html", section="audit", title=TITLES[kind],
                                 kind=kind, kinds=TITLES, rows=rows, columns=COLUMNS[kind],
                                 filters=filters.shown, export=export,
                                 pager=pager(call, number, total))

    async def export(self, call, viewer):
        """Every matching row as CSV (times as unix seconds), up to :data:`MAX_CSV_BYTES`."""
        kind, filters = _kind(call), Filters(call)
        out = Collected()
        try:
            if kind == "console":
                await self._console_csv(filters, out.write)
            else:
                await self.console.audit.export_csv(kind, out.write, **filters.device_log())
        except CsvTooLarge:
            raise ApiError(413, f"the export is larger than {MAX_CSV_BYTES >> 20} MiB: choose "
                                "fewer days") from None
        return Reply(200, out.body(), b"text/csv; charset=utf-8", (
            (b"content-disposition", f'attachment; filename="audit-{kind}.csv"'.encode()),
            (b"x-content-type-options", b"nosniff")))

    async def _console_csv(self, filters, write):
        names = ("id",) + data.CONSOLE_COLUMNS
        header = io.StringIO()
        csv.writer(header).writerow(names)
        write(header.getvalue().encode())
        below = None
        while True:
            rows = await self.db.run(data.console_log_chunk, filters.q, filters.since,
                                     filters.until, below, CSV_CHUNK)
            out = io.StringIO()
            writer = csv.writer(out)
            for row in rows:
                writer.writerow([_csv_cell(row[name]) for name in names])
            write(out.getvalue().encode())
            if len(rows) < CSV_CHUNK:
                return
            below = rows[-1]["id"]
