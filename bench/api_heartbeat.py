"""Heartbeats per second from a real ``twistd rustdesk-api`` holding N devices (SQLite).

Not a test.  Seeds DATA_DIR/db_api.sqlite3 with N devices whose sysinfo is
fresh, starts the server on a free loopback port, then runs ``wrk`` (Debian's
package) with a Lua script that posts the client's heartbeat body
(``{id, uuid, ver, modified_at}``, API.md 1.2) for each device in turn over
keep-alive connections.  Prints requests/s per run, their median, and the
server's CPU in cores (the API is one process: the reactor thread answers,
the database thread writes last-seen batches).

    python -m bench.api_heartbeat --devices 10000 --runs 3 --seconds 10
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from sqlalchemy import insert

from rustdesk_twisted.api import migrate, tables
from rustdesk_twisted.api.db import Database, engine_url

from .harness import CpuMeter, Server, free_port_block, median

LUA = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n %% #bodies + 1
  return wrk.format(nil, "/api/heartbeat", nil, bodies[n])
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx %%d errors %%d\\n", summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def seed(directory, count, now):
    """``count`` devices with fresh sysinfo; the heartbeat bodies, one JSON line each."""
    db = Database(engine_url("", directory), None, in_thread_pool=False)
    db.open()
    migrate.upgrade(db)
    rows = [{"rustdesk_id": str(100_000_000 + i), "uuid": f"uuid-{i}", "hostname": f"host-{i}",
             "os": "linux / Debian 12", "version": "1.4.2", "created_at": now,
             "sysinfo_at": now, "last_seen": now} for i in range(count)]
    db.run_now(lambda c: c.execute(insert(tables.devices), rows))
    db.close()
    return [json.dumps({"id": r["rustdesk_id"], "uuid": r["uuid"], "ver": 1004002,
                        "modified_at": 0}) for r in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    directory = tempfile.mkdtemp(prefix="rdapi")
    bodies = os.path.join(directory, "bodies.jsonl")
    with open(bodies, "w") as f:
        f.write("\n".join(seed(directory, args.devices, time.time())) + "\n")
    script = os.path.join(directory, "heartbeat.lua")
    with open(script, "w") as f:
        f.write(LUA % {"bodies": bodies})
    port = free_port_block((0,))
    server = Server("rustdesk-api", ["-p", str(port), "-b", "127.0.0.1", "--hbbs", "off",
                                     "--data-dir", directory], b"Devices: at most", directory)
    rates, cores = [], []
    try:
        for run in range(args.runs):
            with CpuMeter(server.pid) as cpu:
                out = subprocess.run(
                    ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", script,
                     f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                    check=True).stdout
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            failed = re.search(r"non2xx (\d+) errors (\d+)", out).groups()
            rates.append(rate)
            cores.append(cpu.cores)
            print(f"run {run + 1}: {rate:.0f} heartbeats/s, server {cpu.cores:.2f} cores, "
                  f"non-2xx {failed[0]}, socket errors {failed[1]}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"median of {args.runs}: {median(rates):.0f} heartbeats/s at {args.devices} devices "
          f"(server {median(cores):.2f} cores)")


if __name__ == "__main__":
    main()
