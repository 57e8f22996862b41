"""The WebSocket listener pieces shared by hbbs and hbbr: forwarded addresses and trusted proxies."""

from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.wire.websocket import TrustedProxies, forwarded_address


class ForwardedAddressTests(SynchronousTestCase):
    def test_official_parse(self):
        self.assertEqual(forwarded_address("8.8.8.8"), "8.8.8.8")
        self.assertEqual(forwarded_address(" 2001:db8::1 "), "2001:db8::1")

    def test_lists_ports_and_mixed_forms_are_refused(self):
        for header in ("8.8.8.8, 1.1.1.1", "8.8.8.8:80", "::ffff:1.2.3.4", "[::1]:5", "", None,
                       "example.com"):
            self.assertIsNone(forwarded_address(header), header)


class TrustedProxiesTests(SynchronousTestCase):
    def test_membership(self):
        trusted = TrustedProxies()
        self.assertIn("127.0.0.1", trusted)
        self.assertIn("::1", trusted)
        self.assertIn("::ffff:127.0.0.5", trusted)
        self.assertNotIn("203.0.113.5", trusted)
        self.assertNotIn("not an address", trusted)

    def test_configured_networks(self):
        trusted = TrustedProxies(["10.0.0.0/8", " ", "2001:db8::/32"])
        self.assertIn("10.1.2.3", trusted)
        self.assertIn("2001:db8::7", trusted)
        self.assertNotIn("127.0.0.1", trusted)
        self.assertRaises(ValueError, TrustedProxies, ["nonsense"])
