"""``python -m rustdesk_twisted.client``: run one client role as a process.

``controlled`` registers a peer and serves sessions until stopped, printing
one JSON line per event; ``controlling`` runs the NAT test, connects to a
peer, opens the session, echoes, prints one JSON result line and exits 0 on
success.  The namespace tests run these inside network namespaces.
"""

import argparse
import json
import sys

from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.task import react

from ..wire.rendezvous_pb2 import NatType
from . import ControlledPeer, ControllingPeer, ReactorHost, ServerAddress, SessionError
from .rendezvous import RENDEZVOUS_PORT, split_host_port

NAT_NAMES = {"unknown": NatType.UNKNOWN_NAT, "cone": NatType.ASYMMETRIC,
             "symmetric": NatType.SYMMETRIC}
ECHO = b"echo through the session"
ECHO_TIMEOUT = 20.0


def _emit(out, **fields):
    out.write(json.dumps(fields, default=repr) + "\n")
    out.flush()


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m rustdesk_twisted.client")
    parser.add_argument("role", choices=["controlled", "controlling"])
    parser.add_argument("--server", required=True, help="hbbs HOST[:PORT]")
    parser.add_argument("--key", default="", help="the server key clients are given")
    parser.add_argument("--id", required=True, help="the controlled peer's id")
    parser.add_argument("--bind", default="", help="local IP to bind")
    parser.add_argument("--transport", choices=["udp", "tcp", "ws"], default=None)
    parser.add_argument("--force-relay", action="store_true")
    parser.add_argument("--assume-nat", choices=sorted(NAT_NAMES),
                        help="skip the NAT test and claim this NAT type")
    return parser.parse_args(argv)


@inlineCallbacks
def controlled(reactor, options, out):
    host, port = split_host_port(options.server, RENDEZVOUS_PORT)
    peer = ControlledPeer(ReactorHost(reactor, options.bind), ServerAddress(host, port),
                          options.id, key=options.key, transport=options.transport or "udp")
    peer.observers.append(lambda name, details: _emit(out, event=name, **{
        k: v for k, v in details.items() if k != "request"}))
    if peer.transport != "ws":
        peer.nat_type = yield peer.test_nat()
    _emit(out, event="nat_type", nat_type=NatType.Name(peer.nat_type))
    peer.start()
    reactor.addSystemEventTrigger("before", "shutdown", peer.stop)
    yield Deferred()  # serve until the process is stopped


@inlineCallbacks
def controlling(reactor, options, out):
    host, port = split_host_port(options.server, RENDEZVOUS_PORT)
    peer = ControllingPeer(ReactorHost(reactor, options.bind), ServerAddress(host, port),
                           key=options.key, transport=options.transport or "tcp")
    if options.assume_nat:
        peer.nat_type = NAT_NAMES[options.assume_nat]
    elif not peer.websocket:
        peer.nat_type = yield peer.test_nat()
    result = {"nat_type": NatType.Name(peer.nat_type)}
    outcome = yield peer.connect(options.id, force_relay=options.force_relay)
    result.update(kind=outcome.kind, failure=outcome.failure, peer_addr=outcome.peer_addr,
                  relay_server=outcome.relay_server, relay_requested=outcome.relay_requested,
                  direct_error=outcome.direct_error, verified_pk=outcome.pk is not None)
    if outcome.kind == "failure":
        _emit(out, **result)
        return 1
    try:
        session = yield peer.open_session(outcome)
        echoed = yield session.echo(ECHO).addTimeout(ECHO_TIMEOUT, reactor)
    except (SessionError, TimeoutError) as e:
        result.update(session_error=str(e))
        _emit(out, **result)
        return 1
    session.close()
    result.update(secured=session.secured, echo=echoed == ECHO)
    _emit(out, **result)
    return 0 if echoed == ECHO else 1


def main(argv=None, out=sys.stdout):
    options = _arguments(sys.argv[1:] if argv is None else argv)
    role = controlled if options.role == "controlled" else controlling

    def go(reactor):
        def done(status):
            if status:
                raise SystemExit(status)

        return role(reactor, options, out).addCallback(done)

    react(go)


if __name__ == "__main__":
    main()
