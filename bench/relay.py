"""Relay: bytes per second through hbbr against the loopback limit, pairing, idle memory.

Not a test.  ``python -m bench.relay [--seconds 3] [--runs 3] [--streams 1,8]``
(or ``python -m bench --scenario relay``).

``bench/relayload.c`` (compiled with ``cc``) is the load generator: one sender
and one receiver thread per stream, so the client is never the bottleneck a
Python client is.  Cases, interleaved run by run so the machine's drift hits all
alike:

- direct loopback TCP, no relay: the physical limit;
- a minimal C relay (one thread per stream, socket -> pipe -> socket with
  splice(2)): the ceiling for any relay on this machine;
- hbbr's raw TCP pairs, kernel splice (its default) and userspace
  (``--no-splice``, Twisted transports copying each chunk);
- hbbr's WebSocket port, 64 KiB binary messages;
- pairing rate: sessions paired back to back by 4 threads, one byte crossing each;
- RSS per idle paired session, at 10 000 sessions (or as many as the
  descriptor limit allows: hbbr holds two sockets per session).

Every connection to hbbr comes from one of 1 000 addresses of 127.6.0.0/16
(``--source-addresses``), so per-IP connection caps are not what is measured.
With ``--hbbr HOST:PORT`` the relay is another server: its CPU and idle RSS come
from ``--server-pid`` when given.

hbbr's CPU is its process CPU time over the generator's wall time; the
generator's is its own (``cpu=`` of relayload).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import harness
from .harness import CpuMeter, Row

IDLE_SESSIONS = 10_000
EXTERNAL_IDLE_SESSIONS = 3_000


def compile_loadgen(directory):
    """Path of the compiled load generator, or None when there is no C compiler."""
    try:
        return harness.compile_helper("relayload", directory)
    except harness.Unavailable:
        return None


def run_case(loadgen, mode, streams, seconds, server=None, target=None):
    """relayload's fields, plus ``server_cpu`` (cores) when a server process is measured."""
    if mode in ("direct", "splice"):
        command = [loadgen, mode, str(streams), str(seconds)]
    else:
        command = [loadgen, mode, target, str(streams), str(seconds), harness.settings.licence]
    meter = CpuMeter(server.pid) if server else None
    if meter:
        meter.__enter__()
    try:
        result = harness.run_helper(command, timeout=seconds + 60)[0]
    except RuntimeError as e:
        result = {"gbps": 0.0, "cpu": 0.0, "error": str(e)}
    if meter:
        meter.__exit__()
    result["server_cpu"] = meter.cores if meter else result.get("relay_cpu")
    return result


def pairing(loadgen, target, seconds, server):
    meter = CpuMeter(server.pid) if server else None
    if meter:
        meter.__enter__()
    result = harness.run_helper([loadgen, "pair", target, str(seconds), "4",
                                 harness.settings.licence],
                                timeout=seconds + 60)[0]
    if meter:
        meter.__exit__()
    result["server_cpu"] = meter.cores if meter else None
    return result


def idle_sessions(loadgen, target, sessions, server):
    """(hbbr RSS growth per idle paired session, sessions) with the sessions split over
    enough generator processes to stay under the descriptor limit."""
    before = server.rss()
    per_process = 4000
    processes = []
    try:
        for start in range(0, sessions, per_process):
            count = min(per_process, sessions - start)
            processes.append(subprocess.Popen(
                [loadgen, "idle", target, str(count), harness.settings.licence],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, preexec_fn=harness.raise_fd_limit,
                env=harness.loadgen_env()))
        opened = 0
        for process in processes:
            line = process.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError("relayload idle: " + line)
            opened += int(harness.parse_fields(line)["sessions"])
        time.sleep(1.0)
        after = server.rss()
    finally:
        for process in processes:
            process.stdin.close()
        for process in processes:
            process.wait(60)
    return (after - before) / opened, opened


def measure(build, seconds, runs, stream_counts, quick=False, hbbr_target=None):
    """Every relay row; our two hbbr processes unless ``hbbr_target`` names another relay
    (measured through ``settings.hbbr_pid`` when known)."""
    loadgen = harness.compile_helper("relayload", build)
    servers, targets, measured = {}, {}, {}
    try:
        if hbbr_target:
            host, port = harness.split_target(hbbr_target)
            targets["splice"], targets["ws"] = f"{host}:{port}", f"{host}:{port + 2}"
            if harness.settings.hbbr_pid:
                measured["splice"] = measured["ws"] = harness.Process(harness.settings.hbbr_pid)
            paths = ["splice", "ws"]
        else:
            servers["splice"], targets["splice"] = harness.start_hbbr()
            host, port = harness.split_target(targets["splice"])
            targets["ws"] = f"{host}:{port + 2}"
            servers["ws"] = servers["splice"]
            servers["userspace"], targets["userspace"] = harness.start_hbbr("--no-splice")
            measured.update(servers)
            paths = ["splice", "userspace", "ws"]
            if b"kernel splice" not in servers["splice"].output:
                print("warning: hbbr has no splice path here", file=sys.stderr)
        results = {}
        for _ in range(runs):
            for streams in stream_counts:
                for path in ["direct", "csplice"] + paths:
                    if path == "ws" and streams != 1:
                        continue
                    mode = {"direct": "direct", "csplice": "splice", "ws": "ws"}.get(path, "relay")
                    results.setdefault((path, streams), []).append(run_case(
                        loadgen, mode, streams, seconds, measured.get(path), targets.get(path)))
            results.setdefault("pair", []).append(
                pairing(loadgen, targets["splice"], 0.5 if quick else 2.0, measured.get("splice")))
        idle = {}
        if hbbr_target and "splice" in measured:
            # Another relay: one measurement, sized for 6 descriptors per session in it.
            sessions = 200 if quick else EXTERNAL_IDLE_SESSIONS
            idle["external relay"] = [idle_sessions(loadgen, targets["splice"], sessions,
                                                    measured["splice"])]
        elif "splice" in servers:
            # A fresh hbbr per measurement: memory freed by earlier sessions would be reused.
            # Two sockets per session; the splice path holds two pipes (four more
            # descriptors) per raw session as well.
            limit = harness.raise_fd_limit()
            for _ in range(1 if quick else min(runs, 2)):
                for path, fds, extra in (("userspace", 2, ("--no-splice",)), ("splice", 6, ())):
                    sessions = 200 if quick else min(IDLE_SESSIONS, (limit - 300) // fds)
                    fresh, target = harness.start_hbbr(*extra)
                    try:
                        idle.setdefault(path, []).append(idle_sessions(
                            loadgen, target, sessions, fresh))
                    finally:
                        fresh.stop()
    finally:
        for server in set(servers.values()):
            server.stop()
    return results, idle


NAMES = {"direct": "direct loopback TCP, no relay (C)",
         "csplice": "minimal C splice relay (ceiling)",
         "splice": "hbbr raw TCP, kernel splice", "userspace": "hbbr raw TCP, userspace (--no-splice)",
         "ws": "hbbr WebSocket, 64 KiB messages"}


def rows(results, idle, stream_counts):
    out = []
    for streams in stream_counts:
        base = harness.median([r["gbps"] for r in results[("direct", streams)]])
        for path in NAMES:
            samples = results.get((path, streams))
            if not samples:
                continue
            gbps = [r["gbps"] for r in samples]
            ratio = harness.median(gbps) / base if base else 0
            server = harness.median([r.get("server_cpu") for r in samples])
            gen = harness.median([r.get("cpu") for r in samples])
            who = "relay" if path == "csplice" else "hbbr"
            note = "" if path == "direct" else f"{ratio:.2f}× direct; {who} {server or 0:.2f} cores, "
            note += f"generator {gen or 0:.2f} cores"
            errors = [r["error"] for r in samples if "error" in r]
            if errors:
                note += f"; {len(errors)} run(s) failed: {errors[0][-120:]}"
            out.append(Row("relay", f"{NAMES[path]}, {streams} stream{'s' if streams > 1 else ''}",
                           "GB/s", gbps, "" if path == "direct" else f"direct {base:.2f} GB/s",
                           note, fmt="{:.2f}"))
    pairs = results.get("pair", [])
    if pairs:
        out.append(Row("relay", "pairing rate, 4 client threads", "pairs/s",
                       [p["pairs_per_s"] for p in pairs], "",
                       f"hbbr {harness.median([p['server_cpu'] for p in pairs]) or 0:.2f} cores, "
                       f"generator {harness.median([p['cpu'] for p in pairs]):.2f} cores"
                       + (f"; {sum(p['failures'] for p in pairs):.0f} sessions did not pair"
                          if any(p["failures"] for p in pairs) else "")))
    for path, samples in idle.items():
        sessions = samples[0][1]
        if path == "external relay":
            out.append(Row("relay", f"relay RSS per idle paired session, {sessions:,} sessions",
                           "B/session", [per for per, _ in samples], "",
                           "the --hbbr server's process (--server-pid); one run"))
            continue
        out.append(Row("relay", f"hbbr RSS per idle paired session, {path} path, "
                                f"{sessions:,} sessions", "B/session",
                       [per for per, _ in samples], "",
                       "user memory only; the kernel adds ~4 KB per socket"
                       + ("" if sessions >= IDLE_SESSIONS else
                          f"; {sessions:,} not 10,000: {2 if path == 'userspace' else 6} "
                          f"descriptors per session in hbbr and a limit of "
                          f"{harness.raise_fd_limit():,}")))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case")
    parser.add_argument("--streams", default="1,8", help="comma-separated stream counts")
    args = parser.parse_args(argv)
    stream_counts = [int(n) for n in args.streams.split(",")]
    build = tempfile.mkdtemp(prefix="rdbench")
    try:
        results, idle = measure(build, args.seconds, args.runs, stream_counts,
                                quick=args.seconds < 1)
    except harness.Unavailable as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(build)
    print(f"{args.runs} runs of {args.seconds:g} s each, {os.cpu_count()} CPUs")
    print(harness.table(rows(results, idle, stream_counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
