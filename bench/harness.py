"""What every scenario shares: compiled helpers, servers under test, /proc readings, the table.

Not a test.  The servers run as real ``twistd -n`` processes on free loopback
ports, each in its own short temporary directory, with their output drained by
a thread (and kept, for the error message when they do not start).
"""

import collections
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

class Unavailable(Exception):
    """A scenario cannot run here (no C compiler, no libsodium...); its rows say why."""


class Settings:
    """What ``python -m bench`` was told about the servers and the sources, set once at start.

    ``bind_host``: where our servers listen and the generators aim.  ``sources``: how many
    addresses of 127.0.0.0/8 each generator spreads its connections and datagrams over
    (None: each generator's default, enough for the official per-IP limits; 0: bind none,
    for a server on another machine).  ``hbbs_pid`` / ``hbbr_pid``: the process of a server
    given with --hbbs / --hbbr, for its CPU and memory.  ``fresh_source``: the first
    address of ``udpload new``'s pool no step has used yet, so that a server given with
    --hbbs never sees an address twice in a run.  ``licence``: the key the --hbbs server
    requires, which a relay given with --hbbr (the same deployment) requires too.
    """

    def __init__(self):
        self.licence = ""
        self.bind_host = "127.0.0.1"
        self.sources = None
        self.hbbs_pid = None
        self.hbbr_pid = None
        self.fresh_source = 0


settings = Settings()


def is_local(host):
    """Whether ``host`` is an address of this machine (so 127/8 sources can reach it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
        return True
    except OSError:
        return False


def loadgen_env():
    """The environment of a load generator: LOADGEN_SOURCES when the sources are set."""
    if settings.sources is None:
        return None
    return dict(os.environ, LOADGEN_SOURCES=str(settings.sources))


def compile_helper(name, directory, *flags):
    """Compile ``bench/NAME.c`` into ``directory``; Unavailable without ``cc``."""
    compiler = shutil.which("cc")
    if compiler is None:
        raise Unavailable("no C compiler (cc)")
    binary = os.path.join(directory, name)
    if not os.path.exists(binary):
        subprocess.run([compiler, "-O2", "-pthread", os.path.join(BENCH, name + ".c"), "-o",
                        binary, *flags], check=True)
    return binary


def parse_fields(line):
    """``a=1 b=2.5`` -> {"a": 1.0, "b": 2.5}."""
    return {key: float(value) for key, value in re.findall(r"(\w+)=([-0-9.e+]+)", line)}


def run_helper(command, timeout):
    """Run a compiled helper; its stdout lines parsed with ``parse_fields``."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=loadgen_env())
    if result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(command[0])} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    return [parse_fields(line) for line in result.stdout.splitlines() if "=" in line]


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port_block(offsets, host="127.0.0.1"):
    """A base port P with P+offset free for TCP and UDP on ``host``, for every offset."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1]
        if base + max(offsets) > 65535 or base + min(offsets) < 1024:
            continue
        held = []
        try:
            for offset in offsets:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    held.append(s)
                    s.bind((host, base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free block of ports")


def rss_bytes(pid):
    """VmRSS of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """A process's CPU use in cores over a ``with`` block."""

    def __init__(self, pid):
        self.pid = pid
        self.cores = None

    def __enter__(self):
        self.cpu, self.wall = cpu_seconds(self.pid), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        self.cores = (cpu_seconds(self.pid) - self.cpu) / wall if wall > 0 else 0.0


class Process:
    """A running server known only by its pid (--server-pid): its /proc figures."""

    def __init__(self, pid):
        self.pid = pid

    def rss(self):
        return rss_bytes(self.pid)


class Server(Process):
    """``twistd -n PLUGIN ARGS`` in a fresh short directory, ready once ``marker`` is printed."""

    def __init__(self, plugin, args, marker, directory=None, timeout=120.0):
        self.directory = directory or tempfile.mkdtemp(prefix="rdb")
        self.owns_directory = directory is None
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "--logfile=-", plugin, *args],
            cwd=self.directory, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit)
        super().__init__(self.process.pid)
        self.output = b""
        lines = []
        found = threading.Event()

        self.tail = collections.deque(maxlen=200)

        def drain():
            for line in self.process.stdout:
                self.tail.append(line)
                if not found.is_set():
                    lines.append(line)
                    if marker in line:
                        found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(timeout)
        self.output = b"".join(lines)
        if marker not in self.output:
            self.stop()
            raise RuntimeError(f"{plugin} did not start:\n" + self.output.decode(errors="replace"))

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_hbbs(*extra, directory=None, timeout=120.0):
    """Our hbbs on the bind host, with its default limits: (server, "HOST:PORT", licence key)."""
    host = settings.bind_host
    port = free_port_block((-1, 0, 2, 4), host)
    server = Server("rustdesk-hbbs", ["-p", str(port), "-b", host, "--admin", "off", *extra],
                    b"Relay servers", directory, timeout)
    found = re.search(rb"Key: (\S+)", server.output)
    return server, f"{host}:{port}", found.group(1).decode() if found else ""


def start_hbbr(*extra):
    """Our hbbr on the bind host (WebSocket on PORT+2): (server, "HOST:PORT")."""
    host = settings.bind_host
    port = free_port_block((0, 2, 4), host)
    server = Server("rustdesk-hbbr", ["-p", str(port), "-b", host, "--no-throttle",
                                      "--console", "off", *extra], b"raw TCP pairs:")
    return server, f"{host}:{port}"


def split_target(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class Row:
    """One figure of the table: samples, the unit, the baseline it is compared with."""

    def __init__(self, scenario, figure, unit, samples=(), baseline="", note="", fmt="{:.0f}"):
        self.scenario = scenario
        self.figure = figure
        self.unit = unit
        self.samples = list(samples)
        self.baseline = baseline
        self.note = note
        self.fmt = fmt

    def cells(self):
        if not self.samples:
            return [self.scenario, self.figure, "–", "–", self.unit, self.baseline, self.note]
        f = self.fmt.format
        return [self.scenario, self.figure, f(statistics.median(self.samples)),
                f"{f(min(self.samples))}–{f(max(self.samples))}", self.unit, self.baseline,
                self.note]


HEADER = ["scenario", "figure", "median", "min–max", "unit", "baseline (same run)", "notes"]


def table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row.cells()) + " |")
    return "\n".join(lines)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
