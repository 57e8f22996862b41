"""Connection set-up: complete punch flows, plain and over secured TCP (``punchload``).

Each flow is PunchHoleRequest -> PunchHole to the registered peer over UDP ->
PunchHoleSent on a new TCP connection -> PunchHoleResponse (PROTOCOL.md 4.3);
secured flows first answer the server's KeyExchange (section 5).  Figures: the
most flows per second with 16 in flight (closed loop), and p50 / p99 latency
from A's connect() to the PunchHoleResponse at fixed rates (open loop).  On
loopback the network adds tens of microseconds, so the latency is what the
server adds.  The generator's CPU is printed beside the server's.

Our hbbs runs with its default limits (20 PunchHoleRequest/s per source, bursts of 60;
256 connections per source; 3 requests per connection at once): the generator's A sides
connect from 1 000 addresses of 127.4.0.0/16 and B's PunchHoleSent connections from
1 000 of 127.5.0.0/16 (``--source-addresses``), so 2 000 flows/s is 2 per source and
second.  Answers refusing a flow (TOO_MANY_REQUESTS...) are counted and shown, never
taken for completed flows.

libsodium for the secured flows: the system's ``libsodium.so.23`` or the copy
inside PyNaCl.
"""

import glob
import os

from . import harness
from .harness import CpuMeter, Row

WINDOW = 16


def sodium_library():
    import nacl

    found = glob.glob(os.path.join(os.path.dirname(nacl.__file__), "_sodium*.so"))
    return found[0] if found else ""


def flows(punchload, target, licence, mode, load, seconds, pid):
    host, port = harness.split_target(target)
    meter = CpuMeter(pid) if pid else None
    if meter:
        meter.__enter__()
    result = harness.run_helper([punchload, host, str(port), licence, mode, str(load),
                                 str(seconds), sodium_library()], timeout=seconds + 60)[0]
    if meter:
        meter.__exit__()
    result["server_cpu"] = meter.cores if meter else None
    return result


def rows(build, runs, quick, hbbs_target=None, licence=""):
    if harness.settings.sources == 0:
        # With one address for A and B the server sees one LAN and asks B for its local
        # address (FetchLocalAddr), a flow punchload does not play.
        raise harness.Unavailable("punch flows need distinct source addresses for A and B "
                                  "(--source-addresses 0 given, or a server on another machine)")
    punchload = harness.compile_helper("punchload", build, "-ldl")
    pid = None if not hbbs_target else harness.settings.hbbs_pid
    seconds = 0.5 if quick else 3.0
    rates = [100] if quick else [500, 2000]
    cases = [(mode, f"w{WINDOW}") for mode in ("plain", "secure")]
    cases += [(mode, rate) for mode in ("plain", "secure") for rate in rates]
    results = {case: [] for case in cases}
    for _ in range(runs):
        server = None
        if hbbs_target:
            target = hbbs_target
        else:
            server, target, licence = harness.start_hbbs()
        try:
            for case in cases:
                results[case].append(flows(punchload, target, licence, *case, seconds,
                                           server.pid if server else pid))
        finally:
            if server:
                server.stop()

    def cores(samples):
        server_cores = harness.median([s["server_cpu"] for s in samples])
        gen_cores = harness.median([s["gen_cpu"] for s in samples])
        text = "?" if server_cores is None else f"{server_cores:.2f}"
        return f"server {text} cores, generator {gen_cores:.2f} cores"

    def failures(samples):
        failed = sum(s["failed"] for s in samples)
        refused = sum(s["refused"] for s in samples)
        started = sum(s["started"] for s in samples)
        text = f"; {samples[0]['sources']:.0f} source addresses per side"
        if failed:
            text += f"; {failed:.0f} of {started:.0f} flows failed"
        if refused:
            text += f", {refused:.0f} of them refused by the server (e.g. TOO_MANY_REQUESTS)"
        return text

    out = []
    for mode in ("plain", "secure"):
        samples = results[(mode, f"w{WINDOW}")]
        out.append(Row("punch", f"{mode} TCP: flows/s, {WINDOW} in flight", "flows/s",
                       [s["flows_per_s"] for s in samples], "",
                       cores(samples) + failures(samples)))
        for rate in rates:
            samples = results[(mode, rate)]
            for pct in ("p50", "p99"):
                out.append(Row("punch", f"{mode} TCP: {pct} latency at {rate} flows/s", "ms",
                               [s[f"{pct}_ms"] for s in samples], "",
                               (cores(samples) + failures(samples)) if pct == "p99" else "",
                               fmt="{:.2f}"))
    return out
