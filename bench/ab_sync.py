"""``python -m bench.ab_sync``: server time of one address-book sync of 1 000 entries.

The API runs in this process as it does under twistd: SQLite in a temporary
directory, statements in the database's thread pool, HTTP over a real socket
on 127.0.0.1.  A personal book gets ``--peers`` entries (tags, notes, half of
them devices known to the server); the client then syncs it the two ways the
issue names: one ``POST /api/ab/peers?pageSize=1000`` and ten pages of 100.
Server time is what :class:`~rustdesk_twisted.api.http.ApiResource` measures
per request (from parsing to the last byte written, thread-pool hops
included), summed over the requests of one sync; the median of ``--runs``
syncs is printed with the min–max.
"""

import argparse
import statistics
import tempfile

import treq
from sqlalchemy import insert
from twisted.internet import defer, task

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.app import ApiApp, in_reactor_threads
from rustdesk_twisted.api.db import Database, engine_url
from rustdesk_twisted.api.http import ApiResource, ApiSite


def fill(connection, user_id, book_id, peers, now):
    """The book's entries, tags and the devices half of them are."""
    connection.execute(insert(tables.ab_tags), [
        {"ab_id": book_id, "name": f"tag{n}", "color": 0xFF000000 + n} for n in range(20)])
    connection.execute(insert(tables.ab_peers), [
        {"ab_id": book_id, "peer_id": str(100_000_000 + n), "hash": "x" * 44,
         "username": f"user{n}", "hostname": f"host-{n}", "platform": "Windows",
         "alias": f"Desk {n}", "tags": f'["tag{n % 20}", "tag{(n + 1) % 20}"]',
         "note": "a note", "updated_at": now, "version": 1, "updated_by": None}
        for n in range(peers)])
    connection.execute(insert(tables.devices), [
        {"rustdesk_id": str(100_000_000 + n), "created_at": now} for n in range(0, peers, 2)])


@defer.inlineCallbacks
def main(reactor, args):
    directory = tempfile.mkdtemp(prefix="ab-bench-")
    db = Database(engine_url("", directory), reactor)
    db.open()
    migrate.upgrade(db)
    app = ApiApp(db, reactor, in_reactor_threads(reactor))
    seconds = []
    resource = ApiResource(app.router, reactor, app.client_ip,
                           observe=lambda route, status, spent: seconds.append(spent))
    port = reactor.listenTCP(0, ApiSite(resource, reactor=reactor), interface="127.0.0.1")
    try:
        now = reactor.seconds()
        user_id = db.run_now(lambda c: c.execute(insert(tables.users).values(
            name="bench", created_at=now, updated_at=now)).inserted_primary_key[0])
        token = yield app.accounts.issue_token(user_id, now, {}, "127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        response = yield treq.post(base + "/api/ab/personal", b"", headers=headers)
        guid = (yield response.json())["guid"]
        db.run_now(fill, user_id, 1, args.peers, now)
        figures = {}
        for name, size in (("one page of 1000", 1000), ("pages of 100", 100)):
            totals = []
            for _ in range(args.runs):
                seconds.clear()
                page, total = 0, None
                while total is None or page * size < total:
                    page += 1
                    response = yield treq.post(
                        f"{base}/api/ab/peers?current={page}&pageSize={size}&ab={guid}", b"",
                        headers=headers)
                    body = yield response.json()
                    total = body["total"]
                response = yield treq.post(f"{base}/api/ab/tags/{guid}", b"", headers=headers)
                yield response.content()
                totals.append(sum(seconds) * 1000)
            figures[name] = totals
        for name, totals in figures.items():
            print(f"sync of {args.peers} entries, {name} + tags: median "
                  f"{statistics.median(totals):.1f} ms server time "
                  f"(min {min(totals):.1f}, max {max(totals):.1f}, {args.runs} runs)")
    finally:
        yield port.stopListening()
        db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=11)
    task.react(main, [parser.parse_args()])
