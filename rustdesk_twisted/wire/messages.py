"""Parsing and building ``RendezvousMessage`` safely (PROTOCOL.md sections 1.7 and 2).

Parsing untrusted bytes never raises: garbage, truncation and deep nesting
all come back as None.  Builders set oneof members even when the
sub-message is empty, so the tag reaches the wire (gotcha G3).
"""

from google.protobuf.message import DecodeError

from .rendezvous_pb2 import (
    ConfigUpdate,
    NatType,
    OnlineResponse,
    PunchHoleResponse,
    RegisterPkResponse,
    RendezvousMessage,
    TestNatResponse,
)

__all__ = ["parse", "kind", "wrap", "NatType", "PunchHoleResponse", "RegisterPkResponse"]


def parse(data):
    """The RendezvousMessage in ``data``, or None if it does not parse."""
    message = RendezvousMessage()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        return None
    return message


def kind(message):
    """The name of the oneof member that is set, or None."""
    return message.WhichOneof("union")


def wrap(field, inner=None, **fields):
    """A RendezvousMessage whose ``field`` member is ``inner`` or built from ``fields``."""
    message = RendezvousMessage()
    member = getattr(message, field)
    if inner is not None:
        member.CopyFrom(inner)
    else:
        member.SetInParent()
        if fields:
            # The constructor accepts repeated and message fields, which setattr refuses.
            member.MergeFrom(type(member)(**fields))
    return message


def register_pk_response(result, keep_alive=0):
    return wrap("register_pk_response", RegisterPkResponse(result=result, keep_alive=keep_alive))


def punch_hole_failure(failure):
    return wrap("punch_hole_response", PunchHoleResponse(failure=failure))


def test_nat_response(port, config_update=None):
    response = TestNatResponse(port=port)
    if config_update is not None:
        response.cu.CopyFrom(config_update)
    return wrap("test_nat_response", response)


def config_update(serial, servers):
    return ConfigUpdate(serial=serial, rendezvous_servers=servers)


def online_bitmap(flags):
    """OnlineResponse.states: MSB-first bits, one per queried peer (section 4.6)."""
    states = bytearray((len(flags) + 7) // 8)
    for i, online in enumerate(flags):
        if online:
            states[i >> 3] |= 0x80 >> (i & 7)
    return wrap("online_response", OnlineResponse(states=bytes(states)))
