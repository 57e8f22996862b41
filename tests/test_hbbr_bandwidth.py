"""Bandwidth arithmetic: limiters, the downgrade rule, settings and console number format."""

from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.config import ConfigError, Settings
from rustdesk_twisted.hbbr.bandwidth import (
    MBIT, BandwidthPolicy, Limiter, SessionMeter, rust_float)


class LimiterTests(SynchronousTestCase):
    def test_delay_is_debt_over_rate(self):
        limiter = Limiter(1000)
        self.assertEqual(limiter.consume(40, now=10.0), 0.0)      # within the burst
        self.assertAlmostEqual(limiter.consume(1000, now=10.0), 0.99)
        self.assertAlmostEqual(limiter.consume(1000, now=11.0), 0.99)

    def test_idle_time_is_not_banked_beyond_the_burst(self):
        limiter = Limiter(1000)
        limiter.consume(1000, now=0.0)
        self.assertAlmostEqual(limiter.consume(1000, now=100.0), 0.95)

    def test_unlimited(self):
        self.assertEqual(Limiter(None).consume(10 ** 12, now=0.0), 0.0)


class SessionMeterTests(SynchronousTestCase):
    def test_downgrade_after_start_check_when_average_exceeds_threshold(self):
        policy = BandwidthPolicy(single=1000 * 1000, threshold_100=66, start_check_ms=3000)
        meter = SessionMeter(policy, now=0.0)   # threshold: 660 bit/ms
        for second in range(1, 4):
            meter.charge(700 * 1000 // 8, now=second - 0.5)
            self.assertFalse(meter.tick(now=float(second)))
        meter.charge(700 * 1000 // 8, now=3.5)
        self.assertTrue(meter.tick(now=4.0))
        self.assertTrue(meter.capped)
        self.assertEqual((meter.elapsed_ms, meter.speed, meter.highest), (4000, 700, 700))

    def test_below_threshold_never_downgrades(self):
        policy = BandwidthPolicy(single=1000 * 1000, start_check_ms=1000)
        meter = SessionMeter(policy, now=0.0)
        for second in range(1, 10):
            meter.charge(600 * 1000 // 8, now=second - 0.5)
            self.assertFalse(meter.tick(now=float(second)))

    def test_capped_session_uses_limit_speed(self):
        policy = BandwidthPolicy(single=8000 * 1000, limit=8000)
        meter = SessionMeter(policy, now=0.0)
        self.assertEqual(meter.charge(100, now=1.0), 0.0)
        meter.blacklisted = True
        self.assertAlmostEqual(meter.charge(1000, now=1.0), 0.95)

    def test_usage_line(self):
        meter = SessionMeter(BandwidthPolicy(), now=0.0)
        meter.charge(3 * 1024 * 1024, now=0.5)
        meter.tick(now=2.0)
        self.assertEqual(meter.usage_line("1.2.3.4:5"),
                         "1.2.3.4:5: 2s 3.00MB 12582kb/s 12582kb/s 12582kb/s\n")


class PolicyTests(SynchronousTestCase):
    def test_defaults_match_official(self):
        policy = BandwidthPolicy.from_settings(Settings({}))
        self.assertEqual((policy.single, policy.total, policy.limit),
                         (128 * MBIT, 1024 * MBIT, 32 * MBIT))
        self.assertEqual((policy.threshold_100, policy.start_check_ms), (66, 1_800_000))

    def test_official_variables_and_ignored_values(self):
        policy = BandwidthPolicy.from_settings(Settings({
            "single_bandwidth": "2.5", "TOTAL_BANDWIDTH": "-3", "LIMIT_SPEED": "x",
            "DOWNGRADE_THRESHOLD": "0.5", "DOWNGRADE_START_CHECK": "60"}))
        self.assertEqual(policy.single, int(2.5 * MBIT))
        self.assertEqual((policy.total, policy.limit), (1024 * MBIT, 32 * MBIT))
        self.assertEqual((policy.threshold_100, policy.start_check_ms), (50, 60_000))

    def test_throttle_off(self):
        self.assertFalse(BandwidthPolicy.from_settings(Settings({"THROTTLE": "off"})).enabled)
        self.assertIsNone(BandwidthPolicy(enabled=False).total_limiter_rate())
        self.assertRaises(ConfigError, BandwidthPolicy.from_settings,
                          Settings({"THROTTLE": "maybe"}))

    def test_rust_float(self):
        self.assertEqual([rust_float(v) for v in (32.0, 0.66, 1024.0, 2.5, 1e-7)],
                         ["32", "0.66", "1024", "2.5", "0.0000001"])
