"""Attacker text in log lines, limit reports, and per-source keys."""

from hypothesis import given, strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted import logs
from rustdesk_twisted.admission import source_key
from rustdesk_twisted.logtext import MAX_QUOTED, LimitLog, quoted, untrusted


class QuotedTests(SynchronousTestCase):
    def test_plain_text_is_only_quoted(self):
        self.assertEqual(quoted("123456789"), '"123456789"')

    def test_structure_characters_are_escaped(self):
        self.assertEqual(quoted('a"b\\c\nd\re\x1b[31m\0'),
                         '"a\\"b\\\\c\\nd\\re\\x1b[31m\\0"')

    def test_bytes_and_non_ascii(self):
        self.assertEqual(quoted(b"\xff\x00ok"), '"\\xff\\0ok"')
        self.assertEqual(quoted("é\u2028😀"), '"\\xe9\\u2028\\U0001f600"')

    def test_long_values_are_capped(self):
        text = quoted("x" * 3000)
        self.assertEqual(text, '"' + "x" * MAX_QUOTED + '"...')

    @given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
    def test_always_one_printable_ascii_token_of_bounded_size(self, value):
        text = quoted(value)
        self.assertTrue(all(0x20 <= ord(c) < 0x7F for c in text), text)
        self.assertTrue(text.startswith('"'))
        self.assertLessEqual(len(text), MAX_QUOTED + 5)
        inner = text[1:text.rindex('"')]
        # No unescaped quote can end the literal early.
        self.assertNotIn('"', inner.replace('\\\\', '').replace('\\"', ''))


class LimitLogTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.limits = LimitLog(Logger(namespace="test"), interval=60.0, max_sources=3)

    def lines(self):
        return [formatEvent(e) for e in self.events if e.get("event") == "limit_reached"]

    def test_once_per_source_and_interval_with_the_count_of_the_rest(self):
        for t in range(100):
            self.limits.hit(t * 0.1, "punch-per-ip", "198.51.100.7")
        self.limits.hit(10.0, "punch-per-ip", "203.0.113.9")
        self.limits.hit(61.0, "punch-per-ip", "198.51.100.7", "20/s")
        self.assertEqual(self.lines(), [
            "198.51.100.7 limit punch-per-ip reached",
            "203.0.113.9 limit punch-per-ip reached",
            "198.51.100.7 limit punch-per-ip reached: 20/s (99 more hits since the last report)",
        ])
        self.assertEqual(self.limits.hits, {"punch-per-ip": 102})

    def test_the_table_of_reports_is_bounded(self):
        for i in range(50):
            self.limits.hit(float(i), "x", f"10.0.0.{i}")
        self.assertLessEqual(len(self.limits._reported), 3)
        self.assertEqual(len(self.lines()), 50)

    def test_many_sources_at_once_cost_a_bounded_number_of_lines(self):
        limits = LimitLog(Logger(namespace="test"), interval=60.0, max_lines=5)
        for i in range(1000):
            limits.hit(1.0, "forged", f"10.0.{i // 256}.{i % 256}")
        limits.hit(61.0, "forged", "192.0.2.1")
        self.assertEqual(len(self.lines()), 6)
        [summary] = [e for e in self.events if e.get("event") == "limit_reports_left_out"]
        self.assertEqual(summary["count"], 995)
        self.assertEqual(limits.hits["forged"], 1001)


class SourceKeyTests(SynchronousTestCase):
    def test_ipv4_and_its_mapped_form_are_one_source(self):
        self.assertEqual(source_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(source_key("::ffff:192.0.2.1"), "192.0.2.1")

    def test_ipv6_aggregates_per_64(self):
        self.assertEqual(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(source_key("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64")
        self.assertNotEqual(source_key("2001:db8:1:3::1"), source_key("2001:db8:1:2::1"))
        self.assertEqual(source_key("fe80::1%eth0"), "fe80::/64")

    def test_loopback_v6_and_non_ip(self):
        self.assertEqual(source_key("::1"), "::/64")
        self.assertEqual(source_key(""), "")


class UntrustedFieldTests(SynchronousTestCase):
    def test_raw_in_the_event_quoted_in_the_line(self):
        events = []
        log = Logger(observer=events.append)
        log.info("{ip} new peer {peer_id}", ip="192.0.2.1", peer_id=untrusted('a"\nb'))
        self.assertEqual(events[0]["peer_id"], 'a"\nb')
        self.assertEqual(formatEvent(events[0]), '192.0.2.1 new peer "a\\"\\nb"')
        self.assertEqual(format(untrusted(b"\xff"), ""), '"\\xff"')


class LevelTests(SynchronousTestCase):
    def setUp(self):
        self.addCleanup(logs.set_level, "info")

    def test_events_below_the_level_are_dropped_before_publishing(self):
        events = []
        log = logs.Logger(observer=events.append)
        log.debug("routine")
        log.info("kept")
        logs.set_level("warn")
        log.info("dropped")
        log.error("kept too")
        logs.set_level("debug")
        log.debug("now kept")
        self.assertEqual([e["log_format"] for e in events], ["kept", "kept too", "now kept"])

    def test_unknown_level_is_refused(self):
        self.assertRaises(ValueError, logs.set_level, "verbose")
        self.assertEqual(logs.check_level(" WARN "), "warn")
