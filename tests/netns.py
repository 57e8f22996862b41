"""Real NATs on this machine: Linux network namespaces, veth pairs and iptables masquerading.

Topology (all addresses private and created here; nothing leaves the machine)::

    client A ns (10.200.11.2) -- nat A ns (10.200.11.1 | 10.200.0.2) --+
                                                                        public ns: bridge with
    client B ns (10.200.12.2) -- nat B ns (10.200.12.1 | 10.200.0.3) --+  the servers, 10.200.0.1

The servers sit on the same segment as the NATs' WAN addresses, so their
UDP replies leave from the address the clients wrote to (a second address
on another interface would break the NAT's reply matching).

Each NAT namespace masquerades its LAN behind its WAN address and, like a
home router, drops unsolicited inbound connections.  "cone" is plain
MASQUERADE (Linux keeps the source port when it is free: endpoint-independent
mapping in practice); "symmetric" is MASQUERADE --random-fully (a new port per
destination).
"""

import itertools
import os
import re
import shutil
import subprocess

SERVER_IP = "10.200.0.1"
_counter = itertools.count()


def unavailable():
    """Why namespace NAT tests cannot run here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            package = "iproute2" if tool == "ip" else "iptables"
            return f"{tool} is not installed (Debian package {package})"
    probe = f"rdprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except subprocess.CalledProcessError as e:
        return f"cannot create a network namespace: {e.stderr.strip()}"
    try:
        _run("ip", "netns", "exec", probe, "iptables", "-t", "nat", "-A", "POSTROUTING",
             "-o", "lo", "-j", "MASQUERADE", "--random-fully")
    except subprocess.CalledProcessError as e:
        return f"iptables NAT is unusable in a namespace: {e.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def remove_stale():
    """Delete namespaces left by test runs whose process is gone (a killed run skips cleanup)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        match = re.match(r"(rd(\d+)x\d+(?:pub|na|nb|ca|cb))\b", line)
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            subprocess.run(["ip", "netns", "del", match.group(1)], capture_output=True)


def _run(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True)


class Topology:
    """The namespaces of one test; ``teardown()`` removes them all (idempotent)."""

    def __init__(self, a_nat, b_nat):
        tag = f"rd{os.getpid()}x{next(_counter)}"
        self.public = f"{tag}pub"
        self.nat = {"a": f"{tag}na", "b": f"{tag}nb"}
        self.client = {"a": f"{tag}ca", "b": f"{tag}cb"}
        self.kinds = {"a": a_nat, "b": b_nat}
        self.created = []

    def public_ip(self, side):
        """The WAN address of ``side``'s NAT, which the servers see."""
        return f"10.200.0.{2 if side == 'a' else 3}"

    def _ns(self, name):
        _run("ip", "netns", "add", name)
        self.created.append(name)
        self._in(name, "ip", "link", "set", "lo", "up")

    def _in(self, ns, *command):
        return _run("ip", "netns", "exec", ns, *command)

    def _link(self, ns1, if1, ip1, ns2, if2, ip2):
        _run("ip", "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2,
             "netns", ns2)
        for ns, interface, ip in ((ns1, if1, ip1), (ns2, if2, ip2)):
            self._in(ns, "ip", "addr", "add", ip, "dev", interface)
            self._in(ns, "ip", "link", "set", interface, "up")

    def build(self):
        self._ns(self.public)
        self._in(self.public, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.public, "ip", "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        self._in(self.public, "ip", "link", "set", "br0", "up")
        for side, number in (("a", 1), ("b", 2)):
            nat, client, lan = self.nat[side], self.client[side], 10 + number
            self._ns(nat)
            self._ns(client)
            _run("ip", "link", "add", f"pub{side}", "netns", self.public, "type", "veth",
                 "peer", "name", "wan", "netns", nat)
            self._in(self.public, "ip", "link", "set", f"pub{side}", "master", "br0", "up")
            self._in(nat, "ip", "addr", "add", f"10.200.0.{1 + number}/24", "dev", "wan")
            self._in(nat, "ip", "link", "set", "wan", "up")
            self._link(nat, "lan", f"10.200.{lan}.1/24", client, "eth0", f"10.200.{lan}.2/24")
            self._in(client, "ip", "route", "add", "default", "via", f"10.200.{lan}.1")
            self._in(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan",
                          "-j", "MASQUERADE"]
            if self.kinds[side] == "symmetric":
                masquerade.append("--random-fully")
            self._in(nat, *masquerade)
            for chain in ("INPUT", "FORWARD"):
                self._in(nat, "iptables", "-A", chain, "-i", "wan", "-m", "conntrack",
                         "--ctstate", "NEW,INVALID", "-j", "DROP")
        return self

    def teardown(self):
        while self.created:
            subprocess.run(["ip", "netns", "del", self.created.pop()], capture_output=True)

    def command(self, ns, *argv):
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns] + list(argv)
