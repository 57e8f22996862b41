"""The WebSocket limits as options: in --help of hbbs, hbbr and the combined server, with
their defaults, and the combined server handing hbbs's values to hbbr."""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted import combined_tap
from rustdesk_twisted.hbbr import tap as hbbr_tap
from rustdesk_twisted.hbbs import tap as hbbs_tap

FLAGS = ("--max-connections-per-proxy", "--handshake-timeout", "--max-request-head")


def parsed(options_class, *argv):
    options = options_class()
    options.parseOptions(list(argv))
    return options


class WebSocketOptionTests(SynchronousTestCase):
    def test_in_every_help(self):
        for options_class in (hbbs_tap.Options, hbbr_tap.Options, combined_tap.Options):
            text = str(options_class())
            for flag in FLAGS:
                self.assertIn(flag, text, options_class.__module__)
        self.assertIn("--max-connections-per-ip", str(hbbr_tap.Options()))

    def test_hbbs_defaults_and_settings(self):
        config = hbbs_tap.build_config(parsed(hbbs_tap.Options), {})
        self.assertEqual((config.max_per_proxy, config.handshake_timeout,
                          config.max_request_head), (4096, 10, 16384))
        config = hbbs_tap.build_config(parsed(hbbs_tap.Options, "--handshake-timeout", "3"),
                                       {"MAX_CONNECTIONS_PER_PROXY": "9"})
        self.assertEqual((config.max_per_proxy, config.handshake_timeout), (9, 3))

    def test_hbbr_defaults_and_bad_values(self):
        options = parsed(hbbr_tap.Options)
        self.assertEqual([options[name] for name in (
            "max-connections-per-ip", "max-connections-per-proxy", "handshake-timeout",
            "max-request-head")], [1024, 4096, 10, 16384])
        for flag in FLAGS + ("--max-connections-per-ip",):
            self.assertRaises(usage.UsageError, parsed, hbbr_tap.Options, flag, "0")

    def test_combined_server_gives_both_the_same_values(self):
        options = parsed(combined_tap.Options, "--handshake-timeout", "5",
                         "--max-connections-per-proxy", "100", "--max-request-head", "2048")
        config = hbbs_tap.build_config(combined_tap.hbbs_options(options), {})
        relay = combined_tap.hbbr_options(options, config)
        self.assertEqual((config.handshake_timeout, config.max_per_proxy, config.max_request_head),
                         (5, 100, 2048))
        self.assertEqual((relay["handshake-timeout"], relay["max-connections-per-proxy"],
                          relay["max-request-head"]), (5, 100, 2048))
