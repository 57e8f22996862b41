"""``rustdesk-doctor``: check a RustDesk server the way a client uses it, and say what is wrong.

It runs the reference client (:mod:`rustdesk_twisted.client`) against hbbs
and hbbr: every port, UDP registration, the key (the KeyExchange signature
and the signed IdPk), the NAT test, a full connection between two simulated
peers (direct, then forced through the relay, each ending in the peer
handshake and an echo) and WebSocket mode.  Every failure comes with a hint
naming the likely cause (USERS.md 1.1-1.3); the exit status is 1 when
anything failed.
"""

import argparse
import json
import sys

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.task import react

from .client import (
    ControlledPeer,
    ControllingPeer,
    FramedRendezvousClient,
    ReactorHost,
    ServerAddress,
    SessionError,
)
from . import __version__
from .client.rendezvous import RELAY_PORT, RENDEZVOUS_PORT, relay_destination, split_host_port
from .hbbs.registry import PROBE_PREFIX
from .wire import addr_mangle, keys
from .wire.rendezvous_pb2 import NatType

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PORT_TIMEOUT = 3.0
KEY_EXCHANGE_TIMEOUT = 3.0
UDP_TIMEOUT = 7.0
REGISTRATION_TIMEOUT = 10.0
CONNECT_TIMEOUT = 25.0
SESSION_TIMEOUT = 20.0
ECHO = b"rustdesk-doctor echo"
PEER_ID = PROBE_PREFIX + "doctor{:06d}"


class Check:
    """One line of the report."""

    def __init__(self, name, status, detail, hint=""):
        self.name = name
        self.status = status
        self.detail = detail
        self.hint = hint

    def as_dict(self):
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "hint": self.hint}


class Report:
    def __init__(self, server):
        self.server = server
        self.checks = []

    def add(self, name, status, detail, hint=""):
        check = Check(name, status, detail, hint)
        self.checks.append(check)
        return check

    @property
    def ok(self):
        return all(check.status != FAIL for check in self.checks)

    def as_dict(self):
        return {"server": self.server, "ok": self.ok,
                "checks": [check.as_dict() for check in self.checks]}

    def text(self):
        marks = {OK: "[ ok ]", WARN: "[warn]", FAIL: "[FAIL]", SKIP: "[skip]"}
        lines = [f"rustdesk-doctor: {self.server}"]
        for check in self.checks:
            lines.append(f"{marks[check.status]} {check.name}: {check.detail}")
            if check.hint and check.status != OK:
                lines.append(f"       hint: {check.hint}")
        failed = sum(check.status == FAIL for check in self.checks)
        lines.append("all green" if failed == 0 else f"{failed} check(s) failed")
        return "\n".join(lines)


def _within(d, seconds, clock):
    return d.addTimeout(seconds, clock)


class Doctor:
    """The checks, in order; ``hosts`` gives the client hosts (two, for A and B).

    ``server`` is ``(ip, port)`` of hbbs, ``relay`` hbbr's ``host:port`` text
    or None for the address hbbs suggests, ``key`` the key clients are given
    (None: unknown, so the signature checks are skipped).
    """

    def __init__(self, clock, server, key=None, relay=None, hosts=None):
        self.clock = clock
        self.server = ServerAddress(server[0], server[1])
        self.key = key
        self.server_key = keys.decode_public(key) if key else None
        self.relay = relay
        self.controlled_host, self.controlling_host = hosts
        self.report = Report(self.server.host_string)
        self.peer_id = PEER_ID.format(self.controlled_host.random.randrange(1_000_000))

    @inlineCallbacks
    def run(self):
        if self.key is not None and self.server_key is None:
            self.report.add("key", FAIL, f"{self.key!r} is not a base64 32-byte public key",
                            "give the content of id_ed25519.pub (44 characters ending in '=')")
        yield self.check_ports()
        yield self.check_key_exchange()
        b = yield self.check_udp_registration()
        if b is None:
            b = yield self.check_tcp_registration()
        yield self.check_nat()
        if b is not None:
            yield self.check_connection(b, force_relay=False)
            yield self.check_connection(b, force_relay=True)
            b.stop()
        else:
            for name in ("direct connection", "relay connection"):
                self.report.add(name, SKIP, "no registered peer to connect to",
                                "fix the registration checks above first")
        yield self.check_websocket()
        return self.report

    # ports

    def _relay_target(self):
        if self.relay:
            return relay_destination(self.relay, False)
        return (self.server.ip, self.server.port + 1)

    @inlineCallbacks
    def check_ports(self):
        relay = self._relay_target()
        targets = [
            ("hbbs NAT test / online", (self.server.ip, self.server.port - 1)),
            ("hbbs rendezvous", self.server.rendezvous),
            ("hbbs WebSocket", self.server.websocket),
            ("hbbr relay", relay),
            ("hbbr WebSocket", (relay[0], relay[1] + 2)),
        ]
        for label, destination in targets:
            name = f"port {destination[1]}/tcp ({label})"
            try:
                yield self._tcp_connect(destination)
            except Exception as e:
                hint = (f"nothing accepts TCP on {destination[0]}:{destination[1]}: is "
                        f"{label.split()[0]} running, listening on that port, and is the port "
                        f"open in the firewall / published by Docker?")
                self.report.add(name, FAIL, f"connect failed: {e or 'timed out'}", hint)
            else:
                self.report.add(name, OK, "accepts connections")

    def _tcp_connect(self, destination):
        done = Deferred()
        stream = FramedRendezvousClient()

        def ready(s):
            s.close()
            if not done.called:
                done.callback(None)

        def closed(s):
            if not done.called:
                done.errback(RuntimeError(s.failure.getErrorMessage() if s.failure
                                          else "closed"))

        stream.on_ready, stream.on_closed = ready, closed
        self.controlling_host.connect_tcp(destination, stream, timeout=PORT_TIMEOUT)
        return done

    # the key

    @inlineCallbacks
    def check_key_exchange(self):
        done = Deferred()
        stream = FramedRendezvousClient(server_key=self.server_key, wait_first=True)
        stream.on_ready = lambda s: done.called or done.callback(s)
        stream.on_closed = lambda s: done.called or done.callback(s)
        self.controlling_host.connect_tcp(self.server.rendezvous, stream,
                                          timeout=KEY_EXCHANGE_TIMEOUT)
        name = "key exchange (secure TCP)"
        try:
            yield _within(done, KEY_EXCHANGE_TIMEOUT, self.clock)
        except TimeoutError:
            self.report.add(name, WARN, "hbbs sent no KeyExchange on TCP "
                            f"{self.server.port}",
                            "hbbs has no signing key (started with -k <public key>, G6) or is "
                            "the official OSS hbbs: logged-in clients and TCP/WebSocket "
                            "registration will fail")
            return
        finally:
            stream.close()
        if stream.failure is not None:
            self.report.add(name, FAIL, f"cannot connect: {stream.failure.getErrorMessage()}",
                            f"hbbs is not reachable on TCP {self.server.port}")
        elif stream.handshake_error:
            self.report.add(name, FAIL, stream.handshake_error,
                            "the key you gave is not this server's key: clients configured "
                            "with it show 'Key mismatch'; copy id_ed25519.pub from hbbs's "
                            "data directory (USERS.md 1.1)")
        elif stream.secured:
            self.report.add(name, OK, "KeyExchange signed by the given key "
                            f"(fingerprint {keys.fingerprint(self.server_key)})")
        elif stream.skipped_key_exchange:
            self.report.add(name, SKIP, "KeyExchange received; no --key given to verify it",
                            "pass --key with the content of id_ed25519.pub to check it")
        else:
            self.report.add(name, WARN, "first message was not a KeyExchange",
                            "hbbs has no signing key: logged-in clients fail (G1)")

    # registration

    def _controlled(self, transport):
        return ControlledPeer(self.controlled_host, self.server, self.peer_id,
                              transport=transport, key=self.key or "",
                              relay_server=self.relay or "",
                              server_key=self.server_key if transport == "tcp" else None)

    @inlineCallbacks
    def _register(self, transport, timeout):
        b = self._controlled(transport)
        registered = b.registered()
        b.start()
        try:
            yield _within(registered, timeout, self.clock)
        except TimeoutError:
            b.stop()
            return None, b
        return b, b

    @inlineCallbacks
    def check_udp_registration(self):
        name = f"UDP registration (port {self.server.port}/udp)"
        b, attempt = yield self._register("udp", UDP_TIMEOUT)
        if b is None:
            refused = attempt.events_of("register_pk_refused")
            if refused:
                self.report.add(name, FAIL, f"RegisterPk refused: {refused[-1]['result']}",
                                "the server rate-limits or blocks this IP (TOO_FREQUENT)")
            else:
                timeouts = len(attempt.events_of("registration_timeout"))
                self.report.add(name, FAIL, f"no UDP reply to RegisterPk after {timeouts} "
                                "attempt(s)",
                                f"UDP {self.server.port} is blocked (firewall, Docker port "
                                "published as TCP only) or hbbs's UDP listener is elsewhere: "
                                "clients stay 'Not ready' / offline (USERS.md 1.3)")
            return None
        self.report.add(name, OK, f"peer {b.id} registered, key confirmed")
        return b

    @inlineCallbacks
    def check_tcp_registration(self):
        name = "TCP registration (fallback for the connection tests)"
        b, attempt = yield self._register("tcp", REGISTRATION_TIMEOUT)
        if b is None:
            closed = attempt.events_of("channel_closed")
            detail = closed[-1]["error"] if closed and closed[-1]["error"] else \
                "no RegisterPkResponse"
            self.report.add(name, FAIL, detail,
                            "hbbs accepts no TCP registration either: is it this project's "
                            "hbbs (the official one answers NOT_SUPPORT)?")
            return None
        self.report.add(name, WARN, f"peer {b.id} registered over TCP instead",
                        "connection tests below use TCP registration because UDP failed")
        return b

    # NAT test

    @inlineCallbacks
    def check_nat(self):
        a = ControllingPeer(self.controlling_host, self.server, key=self.key or "")
        name = f"NAT type test (ports {self.server.port}, {self.server.port - 1})"
        try:
            nat = yield _within(a.test_nat(), REGISTRATION_TIMEOUT, self.clock)
        except TimeoutError:
            nat = NatType.UNKNOWN_NAT
        if nat == NatType.UNKNOWN_NAT:
            self.report.add(name, FAIL, "no usable TestNatResponse",
                            f"TCP {self.server.port - 1} must be reachable; without it clients "
                            "cannot tell their NAT type and punching suffers")
        else:
            label = {NatType.ASYMMETRIC: "cone-like (ASYMMETRIC): direct connections possible",
                     NatType.SYMMETRIC: "SYMMETRIC: connections will use the relay"}[nat]
            self.report.add(name, OK, label)
        self.nat_type = nat

    # connections

    @inlineCallbacks
    def check_connection(self, b, force_relay):
        name = "relay connection (forced)" if force_relay else "direct connection"
        nat = self.nat_type if self.nat_type != NatType.UNKNOWN_NAT else NatType.ASYMMETRIC
        a = ControllingPeer(self.controlling_host, self.server,
                            key=self.key if self.key is not None else "", nat_type=nat)
        try:
            outcome = yield _within(a.connect(b.id, force_relay=force_relay), CONNECT_TIMEOUT,
                                    self.clock)
        except TimeoutError:
            self.report.add(name, FAIL, "no answer from hbbs", "hbbs did not answer the "
                            "PunchHoleRequest in time")
            return
        if outcome.kind == "failure":
            self.report.add(name, FAIL, outcome.failure, self._failure_hint(outcome.failure))
            return
        self._signed_idpk(outcome, b)
        try:
            session = yield _within(a.open_session(outcome), SESSION_TIMEOUT, self.clock)
            echoed = yield _within(session.echo(ECHO), SESSION_TIMEOUT, self.clock)
        except (SessionError, TimeoutError) as e:
            detail = f"{outcome.kind} via {outcome.relay_server or 'direct'}: " \
                     f"{e or 'timed out'}"
            self.report.add(name, FAIL, detail, self._session_hint(outcome, b))
            return
        session.close()
        if echoed != ECHO:
            self.report.add(name, FAIL, "echo came back altered", "something between the "
                            "peers rewrites the stream")
            return
        route = outcome.kind
        if route == "relay":
            route = f"relay {outcome.relay_server}"
        encryption = "end-to-end encrypted" if session.secured else "NOT encrypted"
        status = OK if session.secured or self.server_key is None else WARN
        if force_relay or outcome.kind != "relay":
            self.report.add(name, status, f"{route}, handshake done, {encryption}, echo ok")
        else:
            self.report.add(name, WARN, f"fell back to {route} ({outcome.direct_error}); "
                            f"{encryption}, echo ok", "the direct attempt failed: a firewall "
                            "between the peers or a symmetric NAT")

    def _signed_idpk(self, outcome, b):
        name = "signed peer key (IdPk)"
        if any(check.name == name for check in self.report.checks):
            return
        if not outcome.signed_pk:
            self.report.add(name, FAIL, "hbbs sent no signed key",
                            "hbbs has no secret key (-k set to the public key, G6): every "
                            "session shows 'Insecure Connection'")
        elif self.server_key is None:
            self.report.add(name, SKIP, "signed key received; no --key to verify it",
                            "pass --key to check the signature")
        elif outcome.pk == b.pk:
            self.report.add(name, OK, "signature verifies with the given key")
        else:
            self.report.add(name, FAIL, "signature does not verify with the given key",
                            "hbbs signs with another key than the one clients have")

    def _failure_hint(self, text):
        if text == "Key mismatch" and self.key is None:
            return "hbbs enforces a key: pass --key with the content of id_ed25519.pub"
        if text == "Key mismatch":
            return ("hbbs enforces a different key than --key: give clients the content of "
                    "id_ed25519.pub from hbbs's data directory (USERS.md 1.1)")
        if text in ("ID does not exist", "Remote desktop is offline"):
            return ("the registered test peer is unknown or offline to hbbs: two hbbs "
                    "instances, or registration not reaching it (USERS.md 1.2)")
        if text.startswith("Failed to connect via relay"):
            return "the peer never answered the relay request (its UDP notifications are lost)"
        if text == "Failed to connect via rendezvous server":
            return ("hbbs's notification to the peer never got an answer: UDP from hbbs to the "
                    "peer is blocked, or the peer cannot reach hbbs's TCP port")
        return "see the hbbs log for this request"

    def _session_hint(self, outcome, b):
        if outcome.kind != "relay":
            return "the direct TCP connection or the peer handshake failed"
        failed = b.events_of("relay_failed")
        relay = outcome.relay_server
        if failed:
            return (f"the peer could not reach hbbr at {relay} ({failed[-1]['reason']}): is "
                    "hbbr running there, its port open, and hbbs's -r pointing at it?")
        return (f"hbbr at {relay} closed the relay stream: its key (-k) differs from the "
                "clients' key, or the pairing timed out (USERS.md 1.3)")

    # WebSocket

    @inlineCallbacks
    def check_websocket(self):
        name = f"WebSocket mode (ports {self.server.port + 2}, relay +2)"
        b = ControlledPeer(self.controlled_host, self.server, self.peer_id + "w",
                           transport="ws", key=self.key or "", relay_server=self.relay or "")
        registered = b.registered()
        b.start()
        try:
            yield _within(registered, REGISTRATION_TIMEOUT, self.clock)
        except TimeoutError:
            b.stop()
            self.report.add(name, FAIL, "no WebSocket registration",
                            f"WebSocket {self.server.port + 2} unreachable or not proxied "
                            "(nginx: proxy_read_timeout > 60 s, Upgrade headers)")
            return
        a = ControllingPeer(self.controlling_host, self.server,
                            key=self.key if self.key is not None else "", transport="ws")
        try:
            outcome = yield _within(a.connect(b.id), CONNECT_TIMEOUT, self.clock)
        except TimeoutError:
            outcome = None
        if outcome is None or outcome.kind == "failure":
            b.stop()
            failure = outcome.failure if outcome is not None else "no answer from hbbs"
            self.report.add(name, FAIL, f"registered, but the connect request failed: "
                            f"{failure}", self._failure_hint(failure))
            return
        try:
            session = yield _within(a.open_session(outcome), SESSION_TIMEOUT, self.clock)
            echoed = yield _within(session.echo(ECHO), SESSION_TIMEOUT, self.clock)
            session.close()
        except (SessionError, TimeoutError) as e:
            self.report.add(name, FAIL, f"relayed session via {outcome.relay_server} failed: "
                            f"{e or 'timed out'}", self._session_hint(outcome, b))
            return
        finally:
            b.stop()
        status = OK if echoed == ECHO else FAIL
        self.report.add(name, status, f"registered, relayed via {outcome.relay_server} over "
                        f"WebSocket, echo {'ok' if status == OK else 'altered'}")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="rustdesk-doctor",
        description="Check a RustDesk server (hbbs + hbbr) as clients use it.",
        epilog=f"The test peers register with ids starting {PROBE_PREFIX!r}: hbbs keeps such "
               "peers in memory only, forgets them a minute or two after they go offline and "
               "never writes them to its database, so checking a production server leaves "
               "nothing behind.")
    parser.add_argument("--version", action="version", version=f"rustdesk-doctor {__version__}")
    parser.add_argument("server", metavar="SERVER[:PORT]", help="hbbs address (port 21116)")
    parser.add_argument("--key", help="the key clients are given (content of id_ed25519.pub)")
    parser.add_argument("--relay", metavar="HOST[:PORT]",
                        help="hbbr address (default: what hbbs suggests, else SERVER:PORT+1)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bind", action="append", default=[], metavar="IP",
                        help="local IP for the simulated peers (give twice: controlled, then "
                             "controlling); by default 127.0.0.2/127.0.0.3 for a loopback "
                             "server, so hbbs sees two hosts")
    return parser.parse_args(argv)


def _with_port(relay):
    """``host:port`` text for ``--relay`` (clients add 21117 when it has no port)."""
    host, port = split_host_port(relay, RELAY_PORT)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _local_interfaces(server_ip, bind):
    if bind:
        return (bind[0], bind[-1])
    if addr_mangle.is_loopback(server_ip) and not isIPv6Address(server_ip):
        return ("127.0.0.2", "127.0.0.3")
    return ("", "")


@inlineCallbacks
def run(reactor, argv, out=sys.stdout):
    """Parse ``argv``, run the checks, print the report; returns the exit status."""
    options = parse_arguments(argv)
    try:
        host, port = split_host_port(options.server, RENDEZVOUS_PORT)
        relay = _with_port(options.relay) if options.relay else None
    except ValueError as e:
        out.write(f"rustdesk-doctor: {e}\n")
        return 2
    if not (isIPAddress(host) or isIPv6Address(host)):
        try:
            host = yield reactor.resolve(host)
        except Exception as e:
            out.write(f"rustdesk-doctor: cannot resolve {host}: {e}\n")
            return 2
    controlled, controlling = _local_interfaces(host, options.bind)
    doctor = Doctor(reactor, (host, port), key=options.key, relay=relay,
                    hosts=(ReactorHost(reactor, controlled), ReactorHost(reactor, controlling)))
    report = yield doctor.run()
    out.write((json.dumps(report.as_dict(), indent=2) if options.json else report.text())
              + "\n")
    return 0 if report.ok else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def go(reactor):
        return run(reactor, argv).addCallback(_exit)

    react(go)


def _exit(status):
    if status:
        raise SystemExit(status)
