"""Option lookup and layering (PROTOCOL.md section 9.1)."""

import itertools
import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rustdesk_twisted.config import (
    ConfigError,
    Settings,
    layered_settings,
    normalize_name,
    read_env_file,
)

PROPERTY = settings(max_examples=200, deadline=None)

# Section 9.1's order, best first, for the option relay-servers.
SPELLINGS = ["RELAY-SERVERS", "RELAY_SERVERS", "relay-servers", "relay_servers",
             "Relay-Servers", "relay_SERVERS"]


class LookupTests(SynchronousTestCase):
    def test_equivalent_spellings(self):
        for name in SPELLINGS:
            with self.subTest(name=name):
                settings_ = Settings({name: "x"})
                for query in SPELLINGS + ["RELAY-servers"]:
                    self.assertEqual(settings_.get(query), "x")
                self.assertIn("relay_servers", settings_)
                self.assertEqual(settings_.origin("RELAY-SERVERS"), "environment")

    def test_normalize_name(self):
        self.assertEqual(normalize_name("relay_servers"), "RELAY-SERVERS")
        self.assertEqual(normalize_name(" Always_Use-Relay "), "ALWAYS-USE-RELAY")

    def test_lookup_order(self):
        """UPPER-DASH > UPPER_UNDERSCORE > lower-dash > lower_underscore > others."""
        for i, winner in enumerate(SPELLINGS[:4]):
            losers = SPELLINGS[i + 1:]
            for order in itertools.permutations([winner] + losers[:3]):
                environ = {name: name for name in order}
                with self.subTest(order=order):
                    self.assertEqual(Settings(environ).get("relay-servers"), winner)

    def test_others_alphabetical(self):
        """Among other spellings, the alphabetically first name wins, whatever the order."""
        names = ["relay-SERVERS", "Relay_Servers", "RELAY-servers", "rELAY_SERVERS"]
        first = min(names)
        for order in itertools.permutations(names):
            with self.subTest(order=order):
                self.assertEqual(Settings({n: n for n in order}).get("RELAY_SERVERS"), first)

    def test_missing(self):
        settings_ = Settings({"PORT": "1"})
        self.assertIsNone(settings_.get("KEY"))
        self.assertEqual(settings_.get("KEY", "-"), "-")
        self.assertNotIn("KEY", settings_)
        self.assertIsNone(settings_.origin("KEY"))
        self.assertIsNone(Settings().get("PORT"))

    def test_empty_value_is_present(self):
        """KEY="" is explicitly empty, not unset (section 6.3 depends on it)."""
        settings_ = Settings({"KEY": ""})
        self.assertIn("key", settings_)
        self.assertEqual(settings_.get("KEY", "-"), "")

    @PROPERTY
    @given(st.permutations(SPELLINGS), st.integers(1, len(SPELLINGS)))
    def test_lookup_order_property(self, order, count):
        present = order[:count]
        expected = min(present, key=lambda n: (SPELLINGS.index(n) if n in SPELLINGS[:4] else 4, n))
        self.assertEqual(Settings({n: n for n in present}).get("relay-servers"), expected)


class HelperTests(SynchronousTestCase):
    def test_integer(self):
        settings_ = Settings({"PORT": " 21116 ", "RMEM": "", "BAD": "12x"})
        self.assertEqual(settings_.integer("port", 1), 21116)
        self.assertEqual(settings_.integer("rmem", 7), 7)
        self.assertEqual(settings_.integer("serial", 0), 0)
        with self.assertRaises(ConfigError) as caught:
            settings_.integer("bad", 0)
        self.assertIn("BAD", str(caught.exception))
        self.assertIn("12x", str(caught.exception))

    def test_integer_range(self):
        settings_ = Settings({"PORT": "2"})
        self.assertEqual(settings_.integer("PORT", 21116, minimum=2, maximum=2), 2)
        with self.assertRaises(ConfigError) as caught:
            settings_.integer("PORT", 21116, minimum=3)
        self.assertIn("PORT=2", str(caught.exception))
        self.assertRaises(ConfigError, settings_.integer, "PORT", 21116, maximum=1)

    def test_flag(self):
        for raw in ("Y", "y", "yes", "TRUE", "1", "on", " Y "):
            with self.subTest(raw=raw):
                self.assertTrue(Settings({"ALWAYS_USE_RELAY": raw}).flag("always-use-relay"))
        for raw in ("N", "no", "0", "false", "off", "x"):
            with self.subTest(raw=raw):
                self.assertFalse(Settings({"ALWAYS_USE_RELAY": raw}).flag("ALWAYS_USE_RELAY"))
        self.assertFalse(Settings().flag("ALWAYS_USE_RELAY"))
        self.assertTrue(Settings().flag("ALWAYS_USE_RELAY", default=True))
        self.assertTrue(Settings({"ALWAYS_USE_RELAY": ""}).flag("ALWAYS_USE_RELAY", True))


class EnvFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)

    def write(self, text, name=".env"):
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_parsing(self):
        path = self.write(
            "# a comment\n"
            "; another comment\n"
            "\n"
            "[section]\n"
            "PORT=21116\n"
            "  relay_servers = r1:21117, r2  \n"
            "KEY=\"quoted value\"\n"
            "SINGLE='single'\n"
            "EMPTY=\n"
            "EMPTY_QUOTED=\"\"\n"
            "MISMATCHED=\"abc'\n"
            "URL=http://h/?a=b\n"
            "LONE=\"\n")
        self.assertEqual(read_env_file(path), {
            "PORT": "21116",
            "relay_servers": "r1:21117, r2",
            "KEY": "quoted value",
            "SINGLE": "single",
            "EMPTY": "",
            "EMPTY_QUOTED": "",
            "MISMATCHED": "\"abc'",
            "URL": "http://h/?a=b",
            "LONE": "\"",
        })

    def test_bad_line(self):
        path = self.write("PORT=1\n# fine\nthis is not an option\n")
        with self.assertRaises(ConfigError) as caught:
            read_env_file(path)
        self.assertIn(f"{path}:3", str(caught.exception))
        self.assertIn("this is not an option", str(caught.exception))

    def test_empty_key(self):
        path = self.write("=value\n")
        with self.assertRaises(ConfigError) as caught:
            read_env_file(path)
        self.assertIn(f"{path}:1", str(caught.exception))

    def test_missing(self):
        path = os.path.join(self.directory, "absent")
        self.assertEqual(read_env_file(path), {})
        with self.assertRaises(ConfigError) as caught:
            read_env_file(path, required=True)
        self.assertIn(path, str(caught.exception))

    def test_not_utf8(self):
        path = os.path.join(self.directory, ".env")
        with open(path, "wb") as f:
            f.write(b"KEY=\xff\xfe\n")
        self.assertRaises(ConfigError, read_env_file, path)

    def test_directory_is_config_error(self):
        self.assertRaises(ConfigError, read_env_file, self.directory)

    def test_crlf(self):
        path = self.write("PORT=1\r\nKEY=k\r\n")
        self.assertEqual(read_env_file(path), {"PORT": "1", "KEY": "k"})

    @settings(max_examples=50, deadline=None)  # writes a file per example
    @given(st.dictionaries(
        st.tuples(st.sampled_from("AZaz"), st.text("AZaz09_-", max_size=10)).map("".join),
        st.text(" =#;:/,.-_aZ09\\é€'\"", max_size=20).map(str.strip)
        .filter(lambda v: len(v) < 2 or v[0] != v[-1] or v[0] not in "'\""),
        max_size=8))
    def test_roundtrip(self, values):
        """Any unquoted value survives a key=value line as written."""
        path = self.write("".join(f"{k}={v}\n" for k, v in values.items()))
        self.assertEqual(read_env_file(path), values)


class LayeringTests(SynchronousTestCase):
    """Precedence: CLI > --config > .env > inherited environment."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.config = os.path.join(self.directory, "hbbs.ini")

    def write(self, path, text):
        with open(path, "w") as f:
            f.write(text)

    def test_precedence(self):
        self.write(os.path.join(self.directory, ".env"),
                   "port=2\nkey=env-file\nrelay_servers=from-env-file\n")
        self.write(self.config, "PORT=3\nKey=config\n")
        environ = {"PORT": "1", "KEY": "environment", "RELAY-SERVERS": "environment",
                   "MASK": "10.0.0.0/8"}
        result = layered_settings(environ, self.directory, self.config,
                                  {"port": "4", "key": None})
        self.assertEqual(result.get("PORT"), "4")
        self.assertEqual(result.origin("PORT"), "command line")
        self.assertEqual(result.get("KEY"), "config")
        self.assertEqual(result.origin("KEY"), self.config)
        self.assertEqual(result.get("RELAY_SERVERS"), "from-env-file")
        self.assertEqual(result.origin("RELAY_SERVERS"), ".env")
        self.assertEqual(result.get("mask"), "10.0.0.0/8")
        self.assertEqual(result.origin("mask"), "environment")

    def test_env_file_beats_best_spelled_environment(self):
        """A .env value wins even over an UPPER-DASH inherited variable."""
        self.write(os.path.join(self.directory, ".env"), "relay_servers=file\n")
        result = layered_settings({"RELAY-SERVERS": "env"}, self.directory)
        self.assertEqual(result.get("RELAY-SERVERS"), "file")

    def test_explicit_empty_cli_wins(self):
        self.write(os.path.join(self.directory, ".env"), "KEY=abc\n")
        result = layered_settings({}, self.directory, cli={"key": ""})
        self.assertEqual(result.get("KEY", "-"), "")

    def test_no_files(self):
        result = layered_settings({"port": "5"}, self.directory)
        self.assertEqual(result.integer("PORT", 21116), 5)

    def test_missing_config_file(self):
        with self.assertRaises(ConfigError):
            layered_settings({}, self.directory, os.path.join(self.directory, "nope.ini"))

    def test_bad_env_file(self):
        path = os.path.join(self.directory, ".env")
        self.write(path, "PORT=1\nnonsense\n")
        with self.assertRaises(ConfigError) as caught:
            layered_settings({}, self.directory)
        self.assertIn(path + ":2", str(caught.exception))

    def test_does_not_touch_environ(self):
        self.write(os.path.join(self.directory, ".env"), "RUSTDESK_TWISTED_TEST_OPTION=1\n")
        layered_settings(None, self.directory)
        self.assertNotIn("RUSTDESK_TWISTED_TEST_OPTION", os.environ)
        self.assertNotIn("RUSTDESK-TWISTED-TEST-OPTION", os.environ)
