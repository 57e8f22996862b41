"""Audit logs: connections, file transfers, alarms and console changes, filtered, paged,
and exported as CSV."""

import csv
import io
from datetime import datetime, timezone
from urllib.parse import urlencode

from ..http import ApiError, Reply, bad_request
from . import data
from .core import LIST_QUERY, Pages, list_args, pager
from .render import when

TITLES = {"conn": "Connections", "file": "File transfers", "alarm": "Alarms",
          "console": "Console changes"}
DAY = 86400
AUDIT_QUERY = dict(LIST_QUERY, since={"type": "string", "format": "date"},
                   until={"type": "string", "format": "date"})
# A cell starting with one of these is a formula to a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _kind(call):
    kind = call.params["kind"]
    if kind not in data.AUDIT:
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


def _filters(call):
    q, _, _ = list_args(call)
    until = _day(call, "until")
    return q, _day(call, "since"), until + DAY if until is not None else None


def _cell(value, column):
    if column.endswith("_at"):
        return when(value) if value else ""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class AuditPages(Pages):
    def add_routes(self, router):
        route = self.console.route
        route(router, "GET", "/audit/{kind}", self.list,
              "An audit log (conn, file, alarm or console)", query=AUDIT_QUERY)
        route(router, "GET", "/audit/{kind}/csv", self.export, "An audit log as CSV",
              query=AUDIT_QUERY)

    async def list(self, call, viewer):
        kind = _kind(call)
        q, since, until = _filters(call)
        _, number, offset = list_args(call)
        total, rows = await self.db.run(data.audit_rows, kind, q, since, until, offset)
        shown = {k: call.query[k] for k in ("q", "since", "until") if call.query.get(k)}
        export = f"{call.path}/csv" + ("?" + urlencode(shown) if shown else "")
        return self.console.page(viewer, "audit.html", section="audit", title=TITLES[kind],
                                 kind=kind, kinds=TITLES, rows=rows, columns=data.AUDIT[kind][2],
                                 q=q, since=call.query.get("since", ""),
                                 until=call.query.get("until", ""), export=export,
                                 pager=pager(call, number, total))

    async def export(self, call, viewer):
        kind = _kind(call)
        rows = await self.db.run(data.audit_export, kind, *_filters(call))
        columns = data.AUDIT[kind][2]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c], c) for c in columns])
        return Reply(200, out.getvalue().encode("utf-8"), b"text/csv; charset=utf-8", (
            (b"content-disposition", f'attachment; filename="audit-{kind}.csv"'.encode()),
            (b"x-content-type-options", b"nosniff")))
