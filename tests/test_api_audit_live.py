"""``twistd rustdesk-api`` on a free loopback port: audit, grant and recording calls through its
real thread pools, its pruning timers running, a clean stop."""

import base64
import json
import os
import sqlite3
import time
import uuid as uuidlib
from urllib.parse import urlencode

import treq
from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial import unittest

from rustdesk_twisted.api.switchgrants import signed_message, switch_code_verifier
from rustdesk_twisted.hbbs.store import OFFICIAL_SCHEMA

from .livesupport import free_port_block, start_twistd, stop_twistd

DEVICE = "123456789"
RAW_UUID = b"machine-uid"


class LiveTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        return ensureDeferred(self._start())

    async def _start(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.key = SigningKey.generate()
        peers = sqlite3.connect(os.path.join(self.directory, "db_v2.sqlite3"))
        peers.executescript(OFFICIAL_SCHEMA)
        peers.execute("insert into peer (guid, id, uuid, pk, info) values (?, ?, ?, ?, '{}')",
                      (uuidlib.uuid4().bytes, DEVICE, RAW_UUID, self.key.verify_key.encode()))
        peers.commit()
        peers.close()
        port = free_port_block((0,))
        self.url = f"http://127.0.0.1:{port}"
        self.process = await start_twistd(
            reactor, "rustdesk-api",
            ["-p", str(port), "--bind", "127.0.0.1", "--data-dir", self.directory,
             "--hbbs", "off"], self.directory, b"Audit logs kept").ready
        self.addCleanup(stop_twistd, self.process)

    async def post(self, path, body=None, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        response = await treq.post(self.url + path, data=data, persistent=False)
        return response.code, await treq.content(response)

    def test_device_calls_end_to_end(self):
        return ensureDeferred(self._device_calls())

    async def _device_calls(self):
        uuid = base64.b64encode(RAW_UUID).decode()
        body = {"ip": "127.0.0.9", "action": "new", "id": DEVICE, "uuid": uuid, "conn_id": 1,
                "session_id": 0, "nonce": str(uuidlib.uuid4())}
        self.assertEqual(await self.post("/api/audit/conn", body), (200, b""))
        self.assertEqual(await self.post("/api/audit/conn", body), (200, b""))

        query = urlencode({"type": "new", "file": "s1_2026_VP9.webm", "id": DEVICE, "uuid": uuid})
        self.assertEqual(await self.post("/api/record?" + query, raw=b""), (200, b""))
        query = urlencode({"type": "part", "file": "s1_2026_VP9.webm", "offset": 0, "length": 5,
                           "id": DEVICE, "uuid": uuid})
        self.assertEqual(await self.post("/api/record?" + query, raw=b"video"), (200, b""))
        recording = os.path.join(self.directory, "recordings", DEVICE, "s1_2026_VP9.webm")
        with open(recording, "rb") as f:
            self.assertEqual(f.read(), b"video")

        verifier = switch_code_verifier("code")
        timestamp = str(int(time.time()))
        signature = self.key.sign(signed_message(DEVICE, verifier, timestamp)).signature
        status, reply = await self.post("/api/switch-grant", {
            "id": DEVICE, "switch_code_verifier": verifier, "timestamp": timestamp,
            "signature": base64.b64encode(signature).decode()})
        self.assertEqual((status, json.loads(reply)), (200, {"accepted": True}))

        await stop_twistd(self.process)
        output = self.process.output.decode()
        self.assertIn("Main loop terminated", output)
        self.assertNotIn("Traceback", output)
        self.assertIn("recording \"s1_2026_VP9.webm\" of \"123456789\": new", output)
