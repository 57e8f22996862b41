"""Quick one-stream throughput figure: direct loopback vs hbbr (splice) vs hbbr (userspace).

Not a test.  Usage: python bench/relay_quick.py [megabytes]   (default 300)
Starts ``twistd -n rustdesk-hbbr --no-throttle`` in a temporary directory for
each relay path, pairs two TCP clients on loopback and pushes one stream.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rustdesk_twisted.wire.framing import encode_frame  # noqa: E402
from rustdesk_twisted.wire.messages import wrap  # noqa: E402

CHUNK = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pump(sender, receiver, total):
    block = b"\xa5" * CHUNK

    def send():
        left = total
        while left > 0:
            sender.sendall(block[:min(CHUNK, left)])
            left -= CHUNK
    thread = threading.Thread(target=send)
    buffer = bytearray(CHUNK)
    start = time.perf_counter()
    thread.start()
    got = 0
    while got < total:
        n = receiver.recv_into(buffer)
        if not n:
            break
        got += n
    elapsed = time.perf_counter() - start
    thread.join()
    return got / elapsed / 1e9


def direct(total):
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    try:
        return pump(sender, receiver, total)
    finally:
        for s in (sender, receiver, listener):
            s.close()


def through_hbbr(total, *extra):
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "rustdesk-hbbr", "-p", str(port), "-b", "127.0.0.1",
             "--no-throttle", "--websocket", "off", "--console", "off", *extra],
            cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for line in process.stdout:
                if b"raw TCP pairs:" in line:
                    break
            request = encode_frame(wrap("request_relay", uuid="bench").SerializeToString())
            a = socket.create_connection(("127.0.0.1", port))
            a.sendall(request)
            b = socket.create_connection(("127.0.0.1", port))
            b.sendall(request)
            rate = pump(a, b, total)
            a.close()
            b.close()
            return rate
        finally:
            process.terminate()
            process.wait()


def main():
    total = int(sys.argv[1] if len(sys.argv) > 1 else 300) * 1024 * 1024
    results = [("direct loopback", direct(total)),
               ("hbbr splice", through_hbbr(total)),
               ("hbbr userspace", through_hbbr(total, "--no-splice"))]
    base = results[0][1]
    for name, rate in results:
        print(f"{name:16s} {rate:6.2f} GB/s  {rate / base:5.2f}x direct")


if __name__ == "__main__":
    main()
