"""blacklist/blocklist: file format, normalised matching, accept-time and mid-session checks."""

import os

from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.hbbr.lists import AddressList

from .test_hbbr_support import Harness, frame_request


class AddressListTests(SynchronousTestCase):
    def test_file_format(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("1.2.3.4 comment here\n  5.6.7.8\n\n::1\r\n")
        listed = AddressList.load("blocklist", path)
        self.assertEqual(listed.entries(), ["1.2.3.4", "5.6.7.8", "::1"])
        self.assertEqual(len(AddressList.load("x", path + ".missing")), 0)

    def test_dual_stack_peers_match_ipv4_entries(self):
        listed = AddressList("blocklist", ["1.2.3.4"])
        self.assertTrue(listed.matches("::ffff:1.2.3.4"))
        self.assertTrue(listed.matches("1.2.3.4"))
        self.assertFalse(listed.matches("1.2.3.5"))

    def test_from_directory(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "blacklist.txt"), "w") as f:
            f.write("9.9.9.9\n")
        self.assertTrue(AddressList.from_directory("blacklist", directory).matches("9.9.9.9"))


class EnforcementTests(SynchronousTestCase):
    def test_blocklisted_peer_refused_at_accept(self):
        h = Harness(blocklist=AddressList("blocklist", ["198.51.100.66"]))
        self.assertIsNone(h.tcp(host="::ffff:198.51.100.66"))
        self.assertIsNotNone(h.tcp(host="198.51.100.67"))

    def test_blocklisting_mid_session_ends_it(self):
        h = Harness()
        a, b = h.tcp(host="192.0.2.1"), h.tcp(host="::ffff:192.0.2.2")
        a[2].write(frame_request("U"))
        b[2].write(frame_request("U"))
        h.flush()
        h.server.blocklist.add("192.0.2.2")
        h.reactor.pump([1, 1])
        h.flush()
        self.assertIsNotNone(a[0].lost)
        self.assertEqual(len(h.server.sessions), 0)

    def test_blacklisted_session_is_capped(self):
        h = Harness(blacklist=AddressList("blacklist", ["192.0.2.2"]))
        a, b = h.tcp(host="192.0.2.1"), h.tcp(host="192.0.2.2")
        a[2].write(frame_request("U"))
        b[2].write(frame_request("U"))
        h.flush()
        h.reactor.pump([1])
        [session] = h.server.sessions
        self.assertTrue(session.meter.capped)
