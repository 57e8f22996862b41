"""One source must not take hbbs down: field sizes (issue 9 item 17), IPv6 sources as /64s
(item 18) and request floods (item 19), on the fake network with a Clock."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.admission import ConnectionLimits
from rustdesk_twisted.hbbs.limits import IpBlocker
from rustdesk_twisted.hbbs.registry import PeerRegistry
from rustdesk_twisted.hbbs.rendezvous import TOO_MANY_REQUESTS
from rustdesk_twisted.wire import fields, messages
from rustdesk_twisted.wire import rendezvous_pb2 as pb

from .test_hbbs_flows import B_ID, KEY, SERVER_IP, Scenario

Result = pb.RegisterPkResponse


def register_pk(peer_id, uuid=b"machine-uid", pk=b"\x11" * 32):
    return messages.wrap("register_pk", pb.RegisterPk(id=peer_id, uuid=uuid, pk=pk))


class FieldSizeTests(Scenario):
    """Item 17: fields larger than a real client's are refused, never stored or forwarded."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        self.socket, self.replies = self.udp_socket()

    def send_udp(self, message):
        self.socket.write(message.SerializeToString(), (SERVER_IP, 21116))
        self.network.flush()

    def test_oversized_udp_registrations_are_dropped(self):
        for message in (register_pk("9" * (fields.MAX_ID + 1)),
                        register_pk("123456789", uuid=b"u" * (fields.MAX_UUID + 1)),
                        register_pk("123456789", pk=b"k" * 33),
                        register_pk("123456789", pk=b"k" * 2600),
                        messages.wrap("register_peer", id="1" * 2600)):
            self.send_udp(message)
        self.assertEqual(self.replies, [])
        self.assertEqual(self.server.registry.peers, {})
        self.assertEqual(self.server.server.limits.hits, {"udp-message-field-size": 5})
        self.assertEqual(self.log_events("limit_reached"), [])  # a UDP source may be forged

    def test_largest_real_fields_still_register(self):
        self.send_udp(register_pk("9" * fields.MAX_ID, uuid=b"u" * fields.MAX_UUID))
        self.assertEqual(messages.parse(self.replies[0]).register_pk_response.result, Result.OK)

    def test_oversized_tcp_id_closes_the_connection(self):
        client = self.raw_client()
        client.send(register_pk("9" * 60_000))
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.server.registry.peers, {})
        (line,) = self.log_events("limit_reached")
        self.assertEqual((line["source"], line["limit"]), ("203.0.113.77", "message-field-size"))

    def test_huge_relay_uuid_is_not_forwarded(self):
        b = self.controlled()
        before = len(b.udp.protocol.received) if hasattr(b.udp.protocol, "received") else None
        sent = len(self.server.sent_datagrams)
        client = self.raw_client()
        client.send(messages.wrap("request_relay", id=B_ID, uuid="u" * 30_000,
                                  relay_server="r:21117", licence_key=KEY))
        self.network.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.server.sent_datagrams[sent:], [])
        self.assertEqual(before, len(b.udp.protocol.received) if before is not None else None)


class PerSlash64Tests(SynchronousTestCase):
    """Item 18: the addresses of one IPv6 /64 are one source."""

    def test_registrations_per_minute(self):
        def granted(addresses):
            blocker = IpBlocker(requests_per_minute=30, ids_per_day=300)
            return sum(blocker.allow(addresses[n % len(addresses)], f"id{n}", 0.0)
                       for n in range(320))

        one_v4 = granted(["198.51.100.9"])
        slash64 = granted([f"2001:db8:1:2::{i:x}" for i in range(1, 11)])
        self.assertEqual(one_v4, 32)
        self.assertEqual(slash64, one_v4)
        other_prefixes = granted([f"2001:db8:1:{i:x}::1" for i in range(1, 11)])
        self.assertEqual(other_prefixes, 320)

    def test_connections(self):
        limits = ConnectionLimits(Clock(), max_per_ip=4)
        admitted = [limits.admit(f"2001:db8:1:2::{i:x}") for i in range(1, 11)]
        self.assertEqual(admitted, [True] * 4 + [False] * 6)
        self.assertTrue(limits.admit("2001:db8:1:3::1"))
        limits.release("2001:db8:1:2::1")
        self.assertTrue(limits.admit("2001:db8:1:2::ffff"))

    def test_registry_per_id_throttle_reports_the_prefix(self):
        registry = PeerRegistry(ip_blocker=IpBlocker(requests_per_minute=10**6))
        for i in range(1, 4):
            registry.register_pk(B_ID, b"uuid", bytes(32), (f"2001:db8:1:2::{i}", 1), 0.0)
        self.assertEqual(registry.register_pk(B_ID, b"uuid", bytes(32),
                                              ("2001:db8:1:2::9", 1), 0.0),
                         Result.TOO_FREQUENT)
        self.assertEqual(list(registry.limits.hits), ["registrations-per-id"])


class RequestFloodTests(Scenario):
    """Item 19: a punch-request flood costs counters, not log lines, and others still get in."""

    def setUp(self):
        super().setUp()
        self.hbbs()
        self.b = self.controlled()

    def punch(self, client, count=1):
        for _ in range(count):
            client.send(messages.wrap("punch_hole_request", id="404404404", licence_key=KEY))
        self.network.flush()

    def answers(self, client):
        parsed = [messages.parse(payload) for payload in client.received]
        return [m.WhichOneof("union") for m in parsed if m is not None and
                m.WhichOneof("union") != "key_exchange"]

    def test_one_connection_gets_its_burst_then_is_closed(self):
        client = self.raw_client()
        self.punch(client, 10)
        self.assertEqual(self.answers(client), ["punch_hole_response"] * 3)
        self.assertTrue(client.closed)
        hits = self.server.server.limits.hits
        self.assertEqual(hits["requests-per-connection"], 1)

    def test_one_source_is_refused_politely_and_others_answered(self):
        refused, closed = 0, 0
        for n in range(40):  # 40 connections x 3 requests = 120 at once from one address
            client = self.raw_client(private_ip=f"10.9.0.{n + 2}")
            self.punch(client, 3)
            closed += client.closed
            for payload in client.received:
                message = messages.parse(payload)
                if message.WhichOneof("union") == "punch_hole_response" and \
                        message.punch_hole_response.other_failure == TOO_MANY_REQUESTS:
                    refused += 1
        # The burst of 60 is answered; each later connection gets one refusal and is closed.
        self.assertEqual((refused, closed), (20, 20))
        self.assertEqual(len(self.log_events("limit_reached")), 1)
        self.assertEqual(self.server.server.limits.hits["requests-per-ip"], 20)

        legit = self.controlling(public_ip="203.0.113.55")
        outcome = self.connect(legit)
        self.assertEqual(outcome.kind, "direct")

        self.clock.advance(3.0)  # 20/s refills: the flooder is answered again
        client = self.raw_client(private_ip="10.9.9.9")
        self.punch(client)
        answer = messages.parse(client.received[-1]).punch_hole_response
        self.assertEqual(answer.failure, pb.PunchHoleResponse.ID_NOT_EXIST)

    def test_routine_refusals_are_not_logged_above_debug(self):
        for n in range(20):
            client = self.raw_client(public_ip=f"203.0.113.{100 + n}",
                                     private_ip=f"10.8.{n}.2")
            self.punch(client, 3)
        loud = [e for e in self.logged if e.get("event") == "punch_refused" and
                e["log_level"].name != "debug"]
        self.assertEqual(loud, [])
        self.assertEqual(self.server.server.counters["punch_ID_NOT_EXIST"], 60)
