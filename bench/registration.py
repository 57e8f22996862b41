"""Registration over UDP: the highest RegisterPeer rate held, and hbbs's memory per peer.

Rate: ``udpload`` registers PEERS simulated machines (RegisterPk, each from its own
source IP and port), then offers RegisterPeer at each rate of a ladder for a few
seconds; a rate is *held* when fewer than 0.1 % of the datagrams go unanswered
and the generator really sent at that rate.  The same ladder runs, in the same
run, against two baselines: a C server answering every datagram (recvmmsg /
sendmmsg, the machine's ceiling with this generator) and a Twisted
``DatagramProtocol`` that answers without parsing (the framework's ceiling).

Memory (our hbbs only: it needs the process): a ``db_v2.sqlite3`` in the
official schema is pre-populated with N peers (10-character ids, 16-byte uuid,
32-byte pk, 16-byte guid), hbbs starts on it, and every peer then sends one
RegisterPeer (from 4000 source ports), so each record holds a live address and
registration time.  RSS per peer = (RSS - RSS of an hbbs with no peers) / N.

New registrations (issue 9, item 1): ``udpload new`` offers RegisterPk of ids never
registered before at each rate of a ladder, from fresh source addresses with at most
``PER_SOURCE`` ids each, so hbbs keeps its official per-IP limits; a rate is held when
99.9 % are answered OK in time.  hbbs answers only after the row is committed, so the
figure is registrations acknowledged after commit; the acknowledged ids are then counted
among the rows of ``db_v2.sqlite3``.  Baselines of the same run: the same load against
both answerers, and SQLite alone running hbbs's INSERT.
"""


import collections
import contextlib
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

LOSS_LIMIT = 0.1  # percent
FULL_LADDER = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 65_000, 70_000, 75_000,
               80_000, 90_000, 100_000, 120_000, 140_000, 160_000]
QUICK_LADDER = [2_000, 5_000]
RMEM = 4 << 20  # what both baselines ask for (and net.core.rmem_max allows here)


class EchoServer:
    """A baseline UDP answerer: ``udpload echo`` (C) or ``bench.udpecho`` (Twisted)."""

    def __init__(self, command):
        self.host = harness.settings.bind_host
        self.port = harness.free_port_block((0,), self.host)
        env = dict(os.environ, PYTHONPATH=harness.ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(command + [str(self.port), self.host],
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                        env=env, cwd=harness.ROOT)
        if b"ready" not in self.process.stdout.readline():
            raise RuntimeError(f"{command} did not start")

    @property
    def pid(self):
        return self.process.pid

    @property
    def target(self):
        return f"{self.host}:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait()


def sockets_for(peers):
    """One socket, so one source address, per peer unless --source-addresses says fewer."""
    return min(peers, harness.settings.sources or peers)


def ladder(udpload, target, pid, rates, seconds, peers, prefix):
    """(highest rate held or 0, server cores there, generator cores there, max achieved)."""
    host, port = harness.split_target(target)
    held, server_cores, gen_cores = 0, None, None
    for rate in rates:
        meter = CpuMeter(pid) if pid else None
        if meter:
            meter.__enter__()
        step = harness.run_helper([udpload, "peer", host, str(port), prefix, str(peers),
                                   str(sockets_for(peers)), str(seconds), str(rate)],
                                  timeout=seconds + 60)[0]
        if meter:
            meter.__exit__()
        if step["lost_pct"] >= LOSS_LIMIT or step["achieved"] < 0.97 * rate:
            break
        held, gen_cores = rate, step["gen_cpu"]
        server_cores = meter.cores if meter else None
    return held, server_cores, gen_cores


def register_peers(udpload, target, peers, prefix):
    host, port = harness.split_target(target)
    result = harness.run_helper([udpload, "pk", host, str(port), prefix, str(peers),
                                 str(sockets_for(peers)), "3000"], timeout=120)[0]
    if result["ok"] < peers:
        raise RuntimeError(f"only {result['ok']:.0f} of {peers} RegisterPk answered OK "
                           f"({result['too_frequent']:.0f} TOO_FREQUENT, {result['refused']:.0f} "
                           f"other refusals, {peers - result['answered']:.0f} unanswered) from "
                           f"{result['sources']:.0f} source addresses")


def rate_rows(build, runs, quick, hbbs_target=None):
    """Highest RegisterPeer rate held: hbbs, C ceiling, Twisted ceiling, interleaved runs."""
    udpload = harness.compile_helper("udpload", build)
    rates = QUICK_LADDER if quick else FULL_LADDER
    seconds = 0.3 if quick else 1.5
    peers = 200 if quick else 2000
    names = ("c", "twisted", "hbbs") if hbbs_target else ("c", "twisted", "hbbs", "hbbs-rmem")
    samples = {name: [] for name in names}
    cores = {name: [] for name in names}
    for run in range(runs):
        for name in names:
            if name == "hbbs-rmem":
                server, target = harness.start_hbbs("--rmem", str(RMEM))[:2]
                pid = server.pid
            elif name == "hbbs":
                server, target = ((None, hbbs_target) if hbbs_target
                                  else harness.start_hbbs("--rmem", "0")[:2])
                pid = server.pid if server else harness.settings.hbbs_pid
            else:
                command = ([udpload, "echo"] if name == "c" else
                           [sys.executable, "-m", "bench.udpecho"])
                server = EchoServer(command)
                target, pid = server.target, server.pid
            try:
                prefix = f"r{os.getpid() % 1000}x{run}y"
                if name.startswith("hbbs"):
                    register_peers(udpload, target, peers, prefix)
                held, server_cores, gen_cores = ladder(udpload, target, pid, rates, seconds,
                                                       peers, prefix)
            finally:
                if server:
                    server.stop()
            samples[name].append(held)
            cores[name].append((server_cores, gen_cores))

    def note(name):
        server_cores = harness.median([c for c, _ in cores[name]])
        gen_cores = harness.median([g for _, g in cores[name]])
        fmt = lambda v: "?" if v is None else f"{v:.2f}"
        return f"at that rate: server {fmt(server_cores)} cores, generator {fmt(gen_cores)} cores"

    base = harness.median(samples["c"])
    rmem = ([Row("registration", f"… same, hbbs --rmem {RMEM} (the baselines' buffer)", "msg/s",
                 samples["hbbs-rmem"], f"C ceiling {base:.0f}" if base else "",
                 note("hbbs-rmem"))] if "hbbs-rmem" in samples else [])
    return [
        Row("registration", "RegisterPeer/s held, < 0.1 % unanswered: hbbs", "msg/s",
            samples["hbbs"], f"C ceiling {base:.0f}" if base else "",
            note("hbbs") + ("" if hbbs_target else "; --rmem 0: the system default receive buffer")),
        *rmem,
        Row("registration", "… baseline: C recvmmsg/sendmmsg answerer (ceiling)", "msg/s",
            samples["c"], "", note("c") + "; 4 MiB receive buffer"),
        Row("registration", "… baseline: Twisted DatagramProtocol answerer, no parsing",
            "msg/s", samples["twisted"], "", note("twisted") + "; 4 MiB receive buffer"),
    ]


def populate(path, count):
    """A db_v2.sqlite3 in the official schema with ``count`` peers, ids ``m<9 digits>``."""
    from rustdesk_twisted.hbbs.store import LAST_SEEN_SCHEMA, OFFICIAL_SCHEMA

    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(OFFICIAL_SCHEMA + LAST_SEEN_SCHEMA)
    conn.execute("begin")
    rows = ((os.urandom(16), f"m{i:09d}", os.urandom(16), os.urandom(32),
             f'{{"ip":"127.2.{i // 250 % 250}.{i % 250 + 1}"}}') for i in range(count))
    conn.executemany("insert into peer(guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)", rows)
    conn.execute("commit")
    conn.close()


def memory_rows(build, runs, quick, sizes=None):
    """RSS of our hbbs with N registered peers, per peer, for each size."""
    udpload = harness.compile_helper("udpload", build)
    sizes = sizes or ([2_000] if quick else [100_000, 1_000_000])
    templates = {}
    for size in sizes:
        templates[size] = os.path.join(build, f"peers{size}.sqlite3")
        if not os.path.exists(templates[size]):
            populate(templates[size], size)
    per_peer = {size: [] for size in sizes}
    totals = {size: [] for size in sizes}
    empty = []
    for _ in range(runs):
        server, _, _ = harness.start_hbbs()
        try:
            time.sleep(0.5)
            empty.append(server.rss())
        finally:
            server.stop()
        for size in sizes:
            directory = tempfile.mkdtemp(prefix="rdb")
            shutil.copy(templates[size], os.path.join(directory, "db_v2.sqlite3"))
            server, target, _ = harness.start_hbbs(directory=directory, timeout=600)
            try:
                host, port = harness.split_target(target)
                harness.run_helper([udpload, "peer", host, str(port), "m", str(size),
                                    str(sockets_for(min(size, 4000))), "0", "40000"],
                                   timeout=600)
                time.sleep(0.5)
                rss = server.rss()
            finally:
                server.stop()
                shutil.rmtree(directory, ignore_errors=True)
            totals[size].append(rss)
            per_peer[size].append((rss - empty[-1]) / size)
    rows = []
    base = harness.median(empty)
    for size in sizes:
        total = harness.median(totals[size]) / 2**20
        rows.append(Row("registration", f"hbbs RSS per registered peer, {size:,} peers", "B/peer",
                        per_peer[size], f"empty hbbs {base / 2**20:.1f} MiB",
                        f"total RSS {total:.0f} MiB; db pre-populated, one RegisterPeer each"))
    return rows


def external_memory_rows(build, target, pid, sizes):
    """RSS growth of a server given with --hbbs and --server-pid, per peer registered through
    it: new ids by RegisterPk at ``MEMORY_RATE``/s from fresh sources, ≤ 25 ids each."""
    udpload = harness.compile_helper("udpload", build)
    host, port = harness.split_target(target)
    rows = []
    for size in sizes:
        before = harness.rss_bytes(pid)
        step = new_step(udpload, host, port, f"e{os.getpid() % 1000}z", size / MEMORY_RATE,
                        MEMORY_RATE)
        time.sleep(0.5)
        after = harness.rss_bytes(pid)
        rows.append(Row("registration", f"server RSS per registered peer, {size:,} new peers",
                        "B/peer", [(after - before) / max(step["ok"], 1)],
                        f"server RSS before {before / 2**20:.1f} MiB",
                        f"pid {pid}, total {after / 2**20:.0f} MiB; {step['ok']:.0f} OK of "
                        f"{step['sent']:.0f} RegisterPk, {step['too_frequent']:.0f} "
                        f"TOO_FREQUENT, {step['refused']:.0f} other refusals; one run"))
    return rows


MEMORY_RATE = 2_000
NEW_FULL_LADDER = [2_000, 4_000, 6_000, 8_000, 10_000, 12_500, 15_000, 17_500, 20_000, 25_000,
                   30_000, 40_000, 50_000, 60_000, 80_000]
NEW_QUICK_LADDER = [200, 500]
# RegisterPk per source address: the official limits are 30 a minute and 300 ids a day per IP.
PER_SOURCE = 25
TARGET = 20_000  # issue 9, item 1
SQLITE_BATCH = 1000


def new_step(udpload, host, port, prefix, seconds, rate):
    """``udpload new`` at one rate, from source addresses no earlier step used."""
    step = harness.run_helper([udpload, "new", host, str(port), prefix, str(PER_SOURCE),
                               str(harness.settings.fresh_source), str(seconds), str(rate)],
                              timeout=seconds + 120)[0]
    harness.settings.fresh_source += int(step["sources"])
    return step


def new_ladder(udpload, target, pid, rates, seconds, prefix, answer):
    """Offer RegisterPk of new ids at each rate until one is not held (``answer``: the
    field that must reach 99.9 % of ``sent``: ``ok`` for hbbs, ``answered`` for a
    baseline).  Returns the highest rate held, the cores there and the totals of every
    step."""
    host, port = harness.split_target(target)
    found = {"held": 0, "server_cores": None, "gen_cores": None, "sources": 0}
    totals = dict.fromkeys(("sent", "ok", "too_frequent", "refused"), 0)
    for index, rate in enumerate(rates):
        with CpuMeter(pid) if pid else contextlib.nullcontext() as meter:
            step = new_step(udpload, host, port, f"{prefix}x{index}s", seconds, rate)
        for key in totals:
            totals[key] += int(step[key])
        if step[answer] < (1 - LOSS_LIMIT / 100) * step["sent"] or step["achieved"] < 0.97 * rate:
            break
        found.update(held=rate, gen_cores=step["gen_cpu"], sources=int(step["sources"]),
                     server_cores=meter.cores if meter else None)
    return found, totals


def rows_named(path, prefix):
    """Rows of ``db_v2.sqlite3`` whose id starts with ``prefix``, read-only while hbbs runs."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("select count(*) from peer where id like ? || '%'",
                            (prefix,)).fetchone()[0]
    finally:
        conn.close()


def sqlite_insert_rate(seconds):
    """(rows/s, median seconds per COMMIT) of hbbs's own INSERT into a fresh file like
    hbbs's (WAL, synchronous=full), ``SQLITE_BATCH`` rows per commit: what the disk and
    SQLite allow without any server."""
    from rustdesk_twisted.hbbs.store import _INSERT, LAST_SEEN_SCHEMA, OFFICIAL_SCHEMA

    directory = tempfile.mkdtemp(prefix="rdb")
    conn = sqlite3.connect(os.path.join(directory, "db_v2.sqlite3"), isolation_level=None)
    try:
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=full")
        conn.executescript(OFFICIAL_SCHEMA + LAST_SEEN_SCHEMA)
        written, elapsed, batch, commits = 0, 0.0, 0, []
        while elapsed < seconds:
            rows = [{"guid": os.urandom(16), "id": f"q{batch}_{k}", "uuid": os.urandom(16),
                     "pk": os.urandom(32), "ip": "127.16.0.1"} for k in range(SQLITE_BATCH)]
            started = time.perf_counter()
            conn.execute("begin immediate")
            conn.executemany(_INSERT, rows)
            committing = time.perf_counter()
            conn.execute("commit")
            commits.append(time.perf_counter() - committing)
            elapsed += time.perf_counter() - started
            written += SQLITE_BATCH
            batch += 1
        return written / elapsed, statistics.median(commits)
    finally:
        conn.close()
        shutil.rmtree(directory, ignore_errors=True)


def register_new_rows(build, runs, quick, hbbs_target=None):
    """Highest rate of new RegisterPk acknowledged after commit: hbbs and baselines."""
    udpload = harness.compile_helper("udpload", build)
    rates = NEW_QUICK_LADDER if quick else NEW_FULL_LADDER
    seconds = 0.5 if quick else 1.5
    names = ("c", "twisted", "hbbs")
    samples = {name: [] for name in names + ("sqlite",)}
    commit_seconds = []
    cores = {name: [] for name in names}
    totals = collections.Counter()
    checked = {"acked": 0, "rows": 0}
    for run in range(runs):
        for name in names:
            server = None
            if name == "hbbs":
                server, target = ((None, hbbs_target) if hbbs_target
                                  else harness.start_hbbs()[:2])
                pid = server.pid if server else harness.settings.hbbs_pid
            else:
                server = EchoServer([udpload, "echo"] if name == "c" else
                                    [sys.executable, "-m", "bench.udpecho"])
                target, pid = server.target, server.pid
            prefix = f"n{os.getpid() % 1000}r{run}{name[0]}"
            try:
                found, counts = new_ladder(udpload, target, pid, rates, seconds, prefix,
                                           "ok" if name == "hbbs" else "answered")
                if name == "hbbs":
                    totals.update(counts)
                    if server:
                        checked["acked"] += counts["ok"]
                        checked["rows"] += rows_named(
                            os.path.join(server.directory, "db_v2.sqlite3"), prefix)
            finally:
                if server:
                    server.stop()
            samples[name].append(found["held"])
            cores[name].append(found)
        rate, commit = sqlite_insert_rate(0.5 if quick else 2.0)
        samples["sqlite"].append(rate)
        commit_seconds.append(commit)

    def note(name):
        server_cores = harness.median([c["server_cores"] for c in cores[name]])
        gen_cores = harness.median([c["gen_cores"] for c in cores[name]])
        sources = harness.median([c["sources"] for c in cores[name]])
        fmt = lambda v: "?" if v is None else f"{v:.2f}"
        return (f"at that rate: server {fmt(server_cores)} cores, generator {fmt(gen_cores)} "
                f"cores, {sources or 0:.0f} source addresses")

    if hbbs_target:
        verified = "rows not counted: the database of a server given with --hbbs is not ours"
    else:
        verified = (f"{checked['acked']} OK answers, {checked['rows']} rows with the run's ids "
                    f"in db_v2.sqlite3" + (": none acknowledged and lost"
                                           if checked["rows"] >= checked["acked"]
                                           else ": ACKNOWLEDGED BUT NOT STORED"))
    refusals = (f"{totals['too_frequent']} TOO_FREQUENT and {totals['refused']} other refusals "
                f"of {totals['sent']} sent, none counted as acked")
    sqlite = harness.median(samples["sqlite"])
    base = harness.median(samples["c"])
    return [
        Row("register-new", "new RegisterPk/s acked after commit, ≥ 99.9 % OK: hbbs", "msg/s",
            samples["hbbs"], f"target {TARGET}; C ceiling {base:.0f}; sqlite alone {sqlite:.0f}",
            f"{note('hbbs')}, ≤ {PER_SOURCE} ids each, the official per-IP limits on; "
            f"{verified}; {refusals}"),
        Row("register-new", "… baseline: same load, C recvmmsg/sendmmsg answerer (ceiling)",
            "msg/s", samples["c"], "", note("c")),
        Row("register-new", "… baseline: same load, Twisted DatagramProtocol answerer, "
                            "no parsing", "msg/s", samples["twisted"], "", note("twisted")),
        Row("register-new", f"… baseline: sqlite alone, hbbs's INSERT, {SQLITE_BATCH} rows per "
                            "commit (WAL, synchronous=full)", "rows/s", samples["sqlite"], "",
            f"in the bench's process, no server; a COMMIT (its fsync) takes "
            f"{harness.median(commit_seconds) * 1e3:.1f} ms (median)"),
    ]
