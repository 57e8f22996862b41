"""The API server (issue 11): heartbeats/s, login latency, address-book sync time.

A data directory is seeded through the API's own schema with 10 000 devices (each
with sysinfo), one admin and one user whose personal address book holds 1 000
peers; ``twistd rustdesk-api`` (SQLite) starts on it, alone (``--hbbs off``).

* Heartbeats: ``wrk`` (Debian) posts the client's heartbeat body, cycling through
  the 10 000 device ids, over 64 keep-alive connections for a few seconds; the
  figure is requests/s with the API process's CPU in cores beside it.  Baseline
  of the same run: twisted.web answering ``{}`` to the same load
  (:mod:`bench.httpanswer`), the framework's ceiling on this machine.
* Login: sequential password logins over one keep-alive connection; p50 and
  p99 latency, beside one argon2 verification measured in the bench process at
  the API's cost parameters (which bound it).
* Address-book sync: the pull of 1 000 entries as ten pages of 100 (what the
  official client sends), loopback round trips summed, and as one page of 1 000;
  beside the same rows read straight from SQLite.
"""

import http.client
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from . import harness
from .harness import CpuMeter, Row

DEVICES = 10_000
BOOK = 1_000
LOGINS = 60
SYNCS = 15
WRK_LUA = """
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local n = counter %% %(devices)d
  local body = string.format('{"id":"B%%07d","uuid":"dXVpZC0%%07d","ver":1004020,"modified_at":0}', n, n)
  return wrk.format(nil, "/api/heartbeat", nil, body)
end
"""


def seed(directory):
    """Users, devices and a 1 000-peer personal book, written with the API's schema."""
    from sqlalchemy import insert
    from twisted.internet import reactor

    from rustdesk_twisted.api import migrate, tables
    from rustdesk_twisted.api.accounts import hash_password
    from rustdesk_twisted.api.db import Database, engine_url

    db = Database(engine_url(None, directory), reactor, in_thread_pool=False)
    db.open()
    now = time.time()
    try:
        migrate.upgrade(db)

        def rows(c):
            user = c.execute(insert(tables.users).values(
                name="bench", password_hash=hash_password("bench-pass"), status=1,
                created_at=now, updated_at=now)).inserted_primary_key[0]
            c.execute(insert(tables.devices), [
                {"rustdesk_id": f"B{n:07d}", "uuid": f"dXVpZC0{n:07d}", "hostname": f"host{n}",
                 "os": "linux / Debian 12", "version": "1.4.2", "created_at": now,
                 "sysinfo_at": now, "last_seen": now} for n in range(DEVICES)])
            book = c.execute(insert(tables.address_books).values(
                guid="bench-personal-book", name="My address book", owner_id=user,
                personal=True, created_at=now, updated_at=now)).inserted_primary_key[0]
            c.execute(insert(tables.ab_peers), [
                {"ab_id": book, "peer_id": f"P{n:07d}", "hash": "x" * 44, "username": "user",
                 "hostname": f"peer{n}", "platform": "Linux", "alias": f"alias {n}",
                 "tags": '["office"]', "updated_at": now} for n in range(BOOK)])
        db.run_now(rows)
    finally:
        db.close()


def wrk(port, seconds, script):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", script,
                          f"http://{harness.settings.bind_host}:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            errors = "Non-2xx" in out or "Socket errors" in out
            return float(line.split()[1]), errors, out
    raise RuntimeError(f"wrk printed no rate:\n{out}")


def post(connection, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = json.dumps(body).encode() if body is not None else b""
    started = time.perf_counter()
    connection.request("POST", path, payload, headers)
    response = connection.getresponse()
    data = response.read()
    return time.perf_counter() - started, response.status, data


def rows(build, runs, quick):
    if shutil.which("wrk") is None:
        raise harness.Unavailable("wrk is not installed (apt-get install wrk)")
    seconds = 2 if quick else 5
    host = harness.settings.bind_host
    directory = tempfile.mkdtemp(prefix="rdapi")
    script = os.path.join(build, "heartbeat.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA % {"devices": DEVICES})
    rates, cores, base_rates, logins, syncs, direct, argon = [], [], [], [], [], [], []
    singles = []
    notes = set()
    try:
        seed(directory)
        for _ in range(runs):
            port = harness.free_port_block((0,), host)
            server = harness.Server("rustdesk-api", ["-p", str(port), "-b", host, "--hbbs",
                                                     "off", "--data-dir", directory],
                                    b"Passwords:", directory=directory)
            try:
                with CpuMeter(server.pid) as meter:
                    rate, errors, _ = wrk(port, seconds, script)
                rates.append(rate)
                cores.append(meter.cores)
                if errors:
                    notes.add("wrk saw non-2xx or socket errors")
                logins.extend(login_latencies(host, port, 10 if quick else LOGINS))
                paged, single = sync_times(host, port, 3 if quick else SYNCS)
                syncs.extend(paged)
                singles.extend(single)
            finally:
                server.stop()
            base_rates.append(baseline_rate(host, seconds, script))
            direct.append(direct_read(directory))
            argon.append(argon2_seconds())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    p = statistics.quantiles(logins, n=100) if len(logins) >= 2 else [0] * 99
    return [
        Row("api", f"heartbeats held ({DEVICES} devices, SQLite)", "req/s", rates,
            baseline=f"twisted.web answering {{}}: {statistics.median(base_rates):.0f} req/s",
            note=f"API process {statistics.median(cores):.2f} cores; " + "; ".join(sorted(notes))),
        Row("api", "login p50 / p99", "ms", [1000 * statistics.median(logins)],
            baseline=f"argon2 verify alone {1000 * statistics.median(argon):.1f} ms",
            note=f"p99 {1000 * p[98]:.1f} ms over {len(logins)} logins", fmt="{:.1f}"),
        Row("api", f"address-book sync of {BOOK} entries (10 pages)", "ms",
            [1000 * s for s in syncs],
            baseline=f"SQLite select alone {1000 * statistics.median(direct):.1f} ms",
            note="loopback round trips summed", fmt="{:.1f}"),
        Row("api", f"address-book sync of {BOOK} entries (one page)", "ms",
            [1000 * s for s in singles],
            baseline=f"SQLite select alone {1000 * statistics.median(direct):.1f} ms",
            note="one loopback round trip", fmt="{:.1f}"),
    ]


def baseline_rate(host, seconds, script):
    port = harness.free_port_block((0,), host)
    env = dict(os.environ, PYTHONPATH=harness.ROOT)
    process = subprocess.Popen([sys.executable, "-m", "bench.httpanswer", str(port), host],
                               stdout=subprocess.PIPE, env=env, cwd=harness.ROOT)
    try:
        if b"ready" not in process.stdout.readline():
            raise RuntimeError("bench.httpanswer did not start")
        return wrk(port, seconds, script)[0]
    finally:
        process.terminate()
        process.wait()


def login_latencies(host, port, count):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    for _ in range(count):
        elapsed, status, data = post(connection, "/api/login", {
            "username": "bench", "password": "bench-pass", "id": "B0000001",
            "uuid": "dXVpZC0000001", "autoLogin": True, "type": "account",
            "deviceInfo": {"os": "linux", "type": "client", "name": "bench"}})
        if status != 200 or b"access_token" not in data:
            raise RuntimeError(f"login failed: {status} {data[:200]!r}")
        times.append(elapsed)
    connection.close()
    return times


def sync_times(host, port, count):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    _, _, data = post(connection, "/api/login", {"username": "bench", "password": "bench-pass",
                                                 "id": "B0000002", "uuid": "dXVpZC0000002"})
    token = json.loads(data)["access_token"]
    _, status, data = post(connection, "/api/ab/personal", None, token)
    guid = json.loads(data).get("guid") if status == 200 else None
    if not guid:
        raise RuntimeError(f"no personal address book: {status} {data[:200]!r}")
    times, single = [], []
    for _ in range(count):
        elapsed, status, data = post(
            connection, f"/api/ab/peers?current=1&pageSize={BOOK}&ab={guid}", None, token)
        if status != 200 or len(json.loads(data)["data"]) != BOOK:
            raise RuntimeError(f"one page of {BOOK}: {status} {data[:200]!r}")
        single.append(elapsed)
        total, seen = 0.0, 0
        for page in range(1, 11):
            elapsed, status, data = post(
                connection, f"/api/ab/peers?current={page}&pageSize=100&ab={guid}", None, token)
            if status != 200:
                raise RuntimeError(f"peers page {page}: {status} {data[:200]!r}")
            total += elapsed
            seen += len(json.loads(data)["data"])
        if seen != BOOK:
            raise RuntimeError(f"the sync returned {seen} peers, not {BOOK}")
        times.append(total)
    connection.close()
    return times, single


def direct_read(directory):
    connection = sqlite3.connect(os.path.join(directory, "db_api.sqlite3"))
    started = time.perf_counter()
    rows = connection.execute("select * from ab_peers where deleted_at is null "
                              "order by id limit 1000").fetchall()
    elapsed = time.perf_counter() - started
    connection.close()
    if len(rows) != BOOK:
        raise RuntimeError(f"{len(rows)} rows")
    return elapsed


def argon2_seconds():
    from rustdesk_twisted.api.accounts import hash_password, password_matches
    stored = hash_password("bench-pass")
    times = []
    for _ in range(5):
        started = time.perf_counter()
        password_matches(stored, "bench-pass")
        times.append(time.perf_counter() - started)
    return statistics.median(times)
