"""``python -m bench``: every scenario against our hbbs / hbbr (or any compatible server).

    python -m bench                       # every scenario, 3 interleaved runs each
    python -m bench --quick               # a seconds-long smoke: tiny sizes, 1 run
    python -m bench --scenario punch      # one scenario (repeatable)
    python -m bench --hbbs 10.0.0.5:21116 --licence KEY --hbbr 10.0.0.5:21117
    python -m bench --hbbs 127.0.0.1:21116 --hbbr 127.0.0.1:21117 --server-pid 4242,4243

Prints one table: the figure, the median of the runs, min–max, and the
baseline measured in the same run.  Without --hbbs / --hbbr our servers are
started as ``twistd -n`` processes on free ports of --bind-host, with their
default (official) per-IP limits; with them, the figures that need the
server's process (CPU, memory, idle RSS) come from /proc of --server-pid, and
are skipped without it.  Every generator spreads its traffic over many source
addresses of 127.0.0.0/8, so that no source exceeds the official per-IP limits,
and reports refusals such as TOO_FREQUENT instead of counting them.  Load
generators are C programs under bench/, compiled with ``cc`` at start.
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

from . import api, harness, punch, registration, relay
from .harness import Row

SCENARIOS = ("registration", "register-new", "memory", "punch", "relay")
CHOICES = SCENARIOS + ("api",)


def run(scenario, build, args):
    runs = 1 if args.quick else args.runs
    if scenario == "registration":
        return registration.rate_rows(build, runs, args.quick, args.hbbs)
    if scenario == "register-new":
        return registration.register_new_rows(build, runs, args.quick, args.hbbs)
    if scenario == "memory":
        sizes = [int(n) for n in args.peers.split(",")] if args.peers else None
        if not args.hbbs:
            return registration.memory_rows(build, runs, args.quick, sizes)
        if harness.settings.hbbs_pid is None:
            return [Row("registration", "hbbs RSS per registered peer", "B/peer",
                        note="skipped: needs the server's process (--server-pid)")]
        return registration.external_memory_rows(
            build, args.hbbs, harness.settings.hbbs_pid,
            sizes or ([2_000] if args.quick else [100_000]))
    if scenario == "punch":
        return punch.rows(build, runs, args.quick, args.hbbs, args.licence)
    if scenario == "relay":
        seconds = 0.3 if args.quick else args.seconds
        results, idle = relay.measure(build, seconds, runs, [1, 8], args.quick, args.hbbr)
        return relay.rows(results, idle, [1, 8])
    if scenario == "api":
        return api.rows(build, runs, args.quick)
    raise ValueError(scenario)


def configure(parser, args):
    """Fill ``harness.settings`` from the options."""
    settings = harness.settings
    if not harness.is_local(args.bind_host):
        parser.error(f"--bind-host {args.bind_host} is not an address of this machine")
    settings.bind_host = args.bind_host
    settings.licence = args.licence
    if args.server_pid:
        try:
            pids = [int(pid) for pid in args.server_pid.split(",")]
        except ValueError:
            parser.error("--server-pid takes PID or HBBS_PID,HBBR_PID")
        settings.hbbs_pid, settings.hbbr_pid = pids[0], pids[-1]
    settings.sources = args.source_addresses
    remote = [target for target in (args.hbbs, args.hbbr)
              if target and not harness.is_local(harness.split_target(target)[0])]
    if remote and settings.sources is None:
        settings.sources = 0
        print(f"{', '.join(remote)}: not this machine, so the generators send from this "
              f"machine's own address; per-IP limits of that server will apply to it",
              file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--scenario", action="append", choices=CHOICES,
                        help="run only this scenario (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per relay run")
    parser.add_argument("--peers", help="comma-separated peer counts for the memory scenario "
                                        "(default 100000,1000000)")
    parser.add_argument("--hbbs", metavar="HOST:PORT", help="measure this rendezvous server "
                        "(UDP and TCP PORT) instead of starting ours")
    parser.add_argument("--licence", default="", help="licence key the --hbbs server (and the "
                        "--hbbr relay) requires")
    parser.add_argument("--hbbr", metavar="HOST:PORT", help="measure this relay (WebSocket on "
                        "PORT+2) instead of starting ours")
    parser.add_argument("--server-pid", metavar="PID[,PID]",
                        help="process of the --hbbs server (and of the --hbbr one, if it is "
                             "another) whose CPU and memory /proc shows")
    parser.add_argument("--bind-host", default="127.0.0.1", metavar="IPV4",
                        help="address of this machine our servers listen on (default "
                             "127.0.0.1), for servers that treat loopback specially")
    parser.add_argument("--source-addresses", type=int, metavar="N",
                        help="addresses of 127.0.0.0/8 each generator spreads over (default: "
                             "enough for the official per-IP limits; 0: none, for a server on "
                             "another machine)")
    args = parser.parse_args(argv)
    configure(parser, args)
    scenarios = args.scenario or SCENARIOS
    build = tempfile.mkdtemp(prefix="rdbench")
    rows = []
    started = time.perf_counter()
    try:
        for scenario in scenarios:
            try:
                found = run(scenario, build, args)
            except harness.Unavailable as e:
                found = [Row(scenario, "(not run)", "", note=str(e))]
            except Exception as e:  # one broken scenario must not lose the others' figures
                found = [Row(scenario, "(failed)", "", note=f"{type(e).__name__}: {e}"[:300])]
            rows += found
            print(harness.table(found), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    print(f"{'quick, 1 run' if args.quick else f'{args.runs} runs'}; {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}; {time.perf_counter() - started:.0f} s")
    print(harness.table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
