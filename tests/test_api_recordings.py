"""Session-recording upload (API.md 1.9): the uploader's call sequence, names, offsets, quotas."""

import os
import stat
from urllib.parse import urlencode

from sqlalchemy import select
from twisted.trial import unittest

from rustdesk_twisted.api import tables
from rustdesk_twisted.api.tap import Options, build_config
from rustdesk_twisted.config import ConfigError
from rustdesk_twisted.api.recordings import RecordingLimits

from .apisupport import ApiHarness
from .test_api_audit import DEVICE, UUID, OnPostgres, OnSQLite, add_device

NAME = "s987654321_20261204183000_VP9.webm"


class Uploading(OnSQLite):
    def upload(self, kind, body=b"", name=NAME, rustdesk_id=DEVICE, uuid=UUID, **params):
        """One call of record_upload.rs, plus the id and uuid our contract adds."""
        query = {"type": kind, "file": name, **{k: str(v) for k, v in params.items()}}
        if rustdesk_id is not None:
            query["id"] = rustdesk_id
        if uuid is not None:
            query["uuid"] = uuid
        return self.api.request("POST", "/api/record?" + urlencode(query), raw=body)

    def assertDone(self, reply):
        self.assertEqual((reply.status, reply.body), (200, b""))

    def assertRefused(self, reply, status):
        self.assertEqual(reply.status, status, reply.body)
        self.assertIn("error", reply.json())

    def file(self, name=NAME, rustdesk_id=DEVICE):
        return os.path.join(self.directory, rustdesk_id, name)

    def rows(self):
        return self.api.db.run_now(lambda c: [dict(r._mapping) for r in c.execute(
            select(tables.recordings).order_by(tables.recordings.c.id))])


class UploadTests(Uploading, unittest.TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.api = ApiHarness(self, url=self.database(), recording_dir=self.directory)
        add_device(self.api)

    def test_new_parts_tail_make_the_file_private_and_complete(self):
        self.assertDone(self.upload("new"))
        self.assertDone(self.upload("part", b"HEADER--frames1", offset=0, length=15))
        self.assertDone(self.upload("part", b"frames2", offset=15, length=7))
        self.assertDone(self.upload("tail", b"HEADER++", offset=0, length=8))
        with open(self.file(), "rb") as f:
            self.assertEqual(f.read(), b"HEADER++frames1frames2")
        self.assertEqual(stat.S_IMODE(os.stat(self.file()).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.file())).st_mode), 0o700)
        [row] = self.rows()
        self.assertEqual((row["rustdesk_id"], row["file"], row["size"], row["complete"]),
                         (DEVICE, NAME, 22, True))
        self.assertRefused(self.upload("part", b"more", offset=22), 409)
        self.assertEqual(self.api.app.recordings.bytes_written, 30)

    def test_offsets_within_the_stored_bytes_rewrite_past_them_are_refused(self):
        self.upload("new")
        self.upload("part", b"abcdef", offset=0, length=6)
        self.assertDone(self.upload("part", b"XY", offset=2, length=2))
        self.assertRefused(self.upload("part", b"gh", offset=7, length=2), 409)
        self.assertRefused(self.upload("part", b"gh", offset=6, length=3), 400)
        self.assertRefused(self.upload("part", b"gh"), 400)
        self.assertRefused(self.upload("part", b"gh", offset=-1), 400)
        self.assertRefused(self.upload("part", b"gh", offset="x"), 400)
        with open(self.file(), "rb") as f:
            self.assertEqual(f.read(), b"abXYef")
        self.assertRefused(self.upload("tail", b"1234567", offset=0), 409)
        self.assertRefused(self.upload("tail", b"12", offset=3), 400)
        self.assertRefused(self.upload("new", b"body"), 400)
        self.assertRefused(self.upload("part", b"x", offset=0, name="other.webm"), 404)

    def test_a_tail_is_at_most_one_kibibyte(self):
        self.upload("new")
        self.upload("part", b"x" * 2000, offset=0)
        self.assertRefused(self.upload("tail", b"h" * 1025, offset=0), 413)
        self.assertDone(self.upload("tail", b"h" * 1024, offset=0))

    def test_new_starts_over_and_remove_deletes(self):
        self.upload("new")
        self.upload("part", b"abc", offset=0)
        self.assertDone(self.upload("new"))
        self.assertEqual(os.path.getsize(self.file()), 0)
        self.assertEqual(self.rows()[0]["size"], 0)
        self.assertDone(self.upload("remove"))
        self.assertFalse(os.path.exists(self.file()))
        self.assertEqual(self.rows(), [])
        self.assertDone(self.upload("remove"))

    def test_names_that_are_paths_are_refused_and_nothing_is_written(self):
        outside = os.path.join(os.path.dirname(self.directory), "escaped.webm")
        for name in ("../escaped.webm", "../../escaped.webm", outside, "/etc/passwd",
                     "a/b.webm", "..webm", "x..webm", ".hidden.webm", "clip.exe", "clip.webm/",
                     "clip.webm\0.exe", "a\\b.webm", "", "é.webm", "x" * 200 + ".webm"):
            self.assertRefused(self.upload("new", name=name), 400)
        for rustdesk_id in ("../x", "..", "/tmp", "a/b", ""):
            self.assertRefused(self.upload("new", rustdesk_id=rustdesk_id), 400)
        self.assertRefused(self.upload("bogus"), 400)
        self.assertFalse(os.path.exists(outside))
        self.assertFalse(os.path.exists(self.directory))

    def test_a_symlinked_device_directory_is_not_followed(self):
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        os.makedirs(self.directory)
        os.symlink(elsewhere, os.path.join(self.directory, DEVICE))
        self.assertRefused(self.upload("new"), 503)
        self.assertEqual(os.listdir(elsewhere), [])
        self.assertEqual(self.rows(), [])

    def test_only_registered_devices_with_their_uuid(self):
        self.assertRefused(self.upload("new", uuid="b3RoZXI="), 403)
        self.assertRefused(self.upload("new", rustdesk_id="555555555"), 403)
        self.assertRefused(self.upload("new", uuid=None), 400)
        self.assertRefused(self.upload("new", rustdesk_id=None), 400)
        self.assertEqual(self.rows(), [])

    def test_console_lists_finds_and_deletes(self):
        self.upload("new")
        self.upload("new", name="c111_20261204_VP8.webm")
        page = self.successResultOf(self.api.app.recordings.list(rustdesk_id=DEVICE))
        self.assertEqual(page["total"], 2)
        recordings = self.api.app.recordings
        self.assertEqual(recordings.path(DEVICE, NAME), self.file())
        self.assertRaises(ValueError, recordings.path, DEVICE, "../x.webm")
        self.assertEqual(self.successResultOf(recordings.delete(DEVICE, NAME)).status, 200)
        self.assertFalse(os.path.exists(self.file()))
        self.assertEqual(self.successResultOf(recordings.list())["total"], 1)


class QuotaTests(Uploading, unittest.TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.api = ApiHarness(self, url=self.database(), recording_dir=self.directory,
                              recording_limits=RecordingLimits(max_file=10, quota=15,
                                                               max_files=2))
        add_device(self.api)

    def test_file_size_device_quota_and_file_count(self):
        self.upload("new")
        self.assertRefused(self.upload("part", b"x" * 11, offset=0), 413)
        self.assertDone(self.upload("part", b"x" * 10, offset=0))
        self.upload("new", name="second.webm")
        self.assertRefused(self.upload("part", b"y" * 6, offset=0, name="second.webm"), 413)
        self.assertDone(self.upload("part", b"y" * 5, offset=0, name="second.webm"))
        self.assertRefused(self.upload("new", name="third.webm"), 413)
        self.assertEqual(os.path.getsize(self.file(name="second.webm")), 5)
        self.assertEqual(self.api.app.recordings.limit_log.hits, {"recording-size": 3})
        self.upload("remove")
        self.assertDone(self.upload("new", name="third.webm"))
        self.assertDone(self.upload("part", b"z" * 10, offset=0, name="third.webm"))


class DisabledTests(Uploading, unittest.TestCase):
    def test_without_a_directory_uploads_are_refused(self):
        self.api = ApiHarness(self)
        add_device(self.api)
        self.assertRefused(self.upload("new"), 404)


class OptionTests(unittest.TestCase):
    def config(self, *argv):
        options = Options()
        options.parseOptions(["--data-dir", self.directory, *argv])
        return build_config(options, environ={})

    def setUp(self):
        self.directory = self.mktemp()

    def test_defaults_and_settings(self):
        config = self.config()
        self.assertEqual(config.recording_dir, os.path.join(self.directory, "recordings"))
        self.assertEqual((config.recording_limits.max_file, config.recording_limits.quota,
                          config.recording_limits.max_files), (2 << 30, 10 << 30, 1000))
        self.assertEqual((config.audit_retention_days, config.audit_unknown_per_minute),
                         (180, 120))
        config = self.config("--recording-dir", "off", "--recording-quota", "100",
                             "--audit-retention-days", "0")
        self.assertIsNone(config.recording_dir)
        self.assertEqual((config.recording_limits.quota, config.audit_retention_days), (100, 0))
        self.assertRaises(ConfigError, self.config, "--recording-max-file", "0")
        self.assertRaises(ConfigError, self.config, "--audit-retention-days", "-1")

    def test_help_lists_them(self):
        help_text = str(Options())
        for flag in ("--audit-retention-days", "--audit-unknown-per-minute", "--recording-dir",
                     "--recording-max-file", "--recording-quota", "--recording-max-files"):
            self.assertIn(flag, help_text)


class PostgresQuotaTests(OnPostgres, QuotaTests):
    """The same on PostgreSQL, whose SQL (subqueries, paging, text keys) differs."""
