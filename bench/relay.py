"""Relay throughput: direct loopback vs hbbr (splice) vs hbbr (userspace), 1 and 8 streams.

Not a test.  Usage (from the repository root)::

    python -m bench.relay [--seconds 3] [--runs 3] [--streams 1,8]

Compiles ``bench/relayload.c`` with ``cc``, starts ``twistd -n rustdesk-hbbr
--no-throttle`` twice (with and without ``--no-splice``), then runs every
(path, streams) case ``--runs`` times, interleaved so that drift of the
machine hits all cases alike.  Prints the median and min-max GB/s, the ratio
to direct loopback with as many streams, and hbbr's CPU use in cores
(process CPU time over the load generator's wall time).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "bench", "relayload.c")
READY = b"raw TCP pairs:"


def compile_loadgen(directory):
    """Path of the compiled load generator, or None when there is no C compiler."""
    compiler = shutil.which("cc")
    if compiler is None:
        return None
    binary = os.path.join(directory, "relayload")
    subprocess.run([compiler, "-O2", "-pthread", SOURCE, "-o", binary], check=True)
    return binary


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Hbbr:
    """``twistd -n rustdesk-hbbr`` on a free loopback port, its output drained by a thread."""

    def __init__(self, directory, *extra):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "--logfile=-", "rustdesk-hbbr", "-p", str(self.port),
             "-b", "127.0.0.1", "--no-throttle", "--websocket", "off", "--console", "off",
             *extra],
            cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.banner = b""
        for line in self.process.stdout:
            self.banner += line
            if READY in line:
                break
        else:
            raise RuntimeError("hbbr did not start:\n" + self.banner.decode(errors="replace"))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        self.process.terminate()
        self.process.wait()


def run_case(loadgen, seconds, streams, hbbr=None):
    """(GB/s, hbbr CPU cores or None) for one run."""
    if hbbr is None:
        command = [loadgen, "direct", str(streams), str(seconds)]
    else:
        command = [loadgen, "relay", str(hbbr.port), str(streams), str(seconds)]
        before = cpu_seconds(hbbr.process.pid)
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    rate = float(output.split("gbps=")[1])
    cpu = None if hbbr is None else (cpu_seconds(hbbr.process.pid) - before) / wall
    return rate, cpu


def measure(loadgen, directory, seconds, runs, stream_counts):
    """{(path, streams): [(GB/s, cpu), ...]} for direct, splice and userspace."""
    servers = {}
    for path, extra in (("splice", ()), ("userspace", ("--no-splice",))):
        where = os.path.join(directory, path)
        os.makedirs(where)
        servers[path] = Hbbr(where, *extra)
    if b"kernel splice" not in servers["splice"].banner:
        print("warning: hbbr has no splice path here; 'splice' runs are userspace",
              file=sys.stderr)
    results = {}
    try:
        for _ in range(runs):
            for streams in stream_counts:
                for path in ("direct", "splice", "userspace"):
                    sample = run_case(loadgen, seconds, streams, servers.get(path))
                    results.setdefault((path, streams), []).append(sample)
    finally:
        for server in servers.values():
            server.stop()
    return results


def table(results, stream_counts):
    names = {"direct": "direct loopback (C, no relay)", "splice": "hbbr, kernel splice",
             "userspace": "hbbr, userspace (--no-splice)"}
    lines = ["| path | streams | GB/s median | min–max | × direct | hbbr CPU (cores) |",
             "|---|---|---|---|---|---|"]
    for streams in stream_counts:
        base = statistics.median(rate for rate, _ in results[("direct", streams)])
        for path in ("direct", "splice", "userspace"):
            samples = results[(path, streams)]
            rates = [rate for rate, _ in samples]
            median = statistics.median(rates)
            cpu = ("–" if path == "direct" else
                   f"{statistics.median(c for _, c in samples):.2f}")
            lines.append(f"| {names[path]} | {streams} | {median:.2f} | "
                         f"{min(rates):.2f}–{max(rates):.2f} | {median / base:.2f} | {cpu} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case")
    parser.add_argument("--streams", default="1,8", help="comma-separated stream counts")
    args = parser.parse_args(argv)
    stream_counts = [int(n) for n in args.streams.split(",")]
    directory = tempfile.mkdtemp(prefix="hbbr-bench")
    try:
        loadgen = compile_loadgen(directory)
        if loadgen is None:
            print("no C compiler (cc) found", file=sys.stderr)
            return 1
        results = measure(loadgen, directory, args.seconds, args.runs, stream_counts)
    finally:
        shutil.rmtree(directory)
    print(f"{args.runs} runs of {args.seconds:g} s each, {os.cpu_count()} CPUs")
    print(table(results, stream_counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
