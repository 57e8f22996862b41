"""The official client's HTTP API calls (API.md section 1), byte for byte as it sends them.

:class:`OfficialApiClient` is what a RustDesk 1.4 desktop client does against an
API server: the same paths, methods, bodies (empty POST bodies with
``Content-Length: 0``, JSON arrays on DELETE, device-scoped calls without a
token) and the same reading of the answers (``{"error"}``, empty 200 = done,
pagination by ``current``/``pageSize=100`` while ``current*pageSize < total``).
The end-to-end tests replay it against ``twistd rustdesk-api``; operators can
point it at any API server to see what a client would get.
"""

import base64
import hashlib
import json
import time
import uuid as uuidlib

from twisted.internet.defer import inlineCallbacks, returnValue

PAGE_SIZE = 100


class ApiCallError(Exception):
    """What the client would show: the ``error`` text, or ``HTTP <code>, <body>``."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


class Answer:
    def __init__(self, status, body, content_type):
        self.status = status
        self.body = body
        self.content_type = content_type

    def json(self):
        return json.loads(self.body)


class OfficialApiClient:
    """One device (``rustdesk_id``, ``machine_uuid``) talking to the API at ``base``.

    ``http`` is a :class:`treq.client.HTTPClient` (real sockets, or treq's
    in-memory stub).  ``token`` is set by :meth:`login`.
    """

    def __init__(self, http, base, rustdesk_id="123456789", machine_uuid=None, version="1.4.2",
                 hostname="client-host", os_name="linux"):
        self.http = http
        self.base = base.rstrip("/")
        self.id = rustdesk_id
        self.uuid = machine_uuid or base64.b64encode(uuidlib.uuid4().bytes).decode()
        self.version = version
        self.hostname = hostname
        self.os_name = os_name
        self.token = None

    # -- transport ------------------------------------------------------------------

    @inlineCallbacks
    def call(self, method, path, body=None, auth=True, empty=False, raw=None, headers=None):
        """One request; ``empty`` sends a JSON POST with no body, as the client does."""
        all_headers = {b"Content-Type": [b"application/json"]}
        if auth and self.token:
            all_headers[b"Authorization"] = [f"Bearer {self.token}".encode()]
        for name, value in (headers or {}).items():
            all_headers[name.encode()] = [value.encode()]
        if raw is not None:
            data = raw
        elif empty or body is None:
            data = b""
        else:
            data = json.dumps(body).encode()
        response = yield self.http.request(method, self.base + path, headers=all_headers,
                                           data=data if method != "GET" else None)
        content = yield response.content()
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        returnValue(Answer(response.code, content, kind))

    @staticmethod
    def parsed(answer):
        """The client's reading of a JSON answer: ``{"error"}`` or non-200 is an error."""
        try:
            value = answer.json()
        except ValueError:
            raise ApiCallError(answer.status, f"HTTP {answer.status}, {answer.body[:200]!r}")
        if isinstance(value, dict) and isinstance(value.get("error"), str):
            raise ApiCallError(answer.status, value["error"])
        if answer.status != 200:
            raise ApiCallError(answer.status, f"HTTP {answer.status}, {answer.body[:200]!r}")
        return value

    @staticmethod
    def done(answer):
        """Action endpoints: success is 200 with an empty (or null) body."""
        if answer.status == 200 and answer.body.strip() in (b"", b"null"):
            return True
        try:
            value = answer.json()
            if isinstance(value, dict) and isinstance(value.get("error"), str):
                raise ApiCallError(answer.status, value["error"])
        except ValueError:
            pass
        raise ApiCallError(answer.status, f"HTTP {answer.status}, {answer.body[:200]!r}")

    def device_info(self):
        return {"os": self.os_name, "type": "client", "name": self.hostname}

    # -- 1.1 accounts ---------------------------------------------------------------

    def probe(self):
        return self.call("HEAD", "/api/login-options", auth=False)

    def login_options(self):
        return self.call("GET", "/api/login-options", auth=False).addCallback(self.parsed)

    @inlineCallbacks
    def login(self, username, password, code=None):
        """Password login; with ``code``, the TOTP step when the server asks for it."""
        reply = self.parsed((yield self.call("POST", "/api/login", {
            "username": username, "password": password, "id": self.id, "uuid": self.uuid,
            "autoLogin": True, "type": "account", "deviceInfo": self.device_info()},
            auth=False)))
        if reply.get("type") == "email_check":
            if code is None:
                returnValue(reply)
            reply = self.parsed((yield self.call("POST", "/api/login", {
                "username": reply.get("user", {}).get("name", username), "id": self.id,
                "uuid": self.uuid, "autoLogin": True, "type": "email_code",
                "verificationCode": code, "tfaCode": code, "secret": reply.get("secret"),
                "deviceInfo": self.device_info()}, auth=False)))
        if reply.get("type") == "access_token":
            self.token = reply["access_token"]
        returnValue(reply)

    def current_user(self):
        return self.call("POST", "/api/currentUser", {"id": self.id, "uuid": self.uuid}
                         ).addCallback(self.parsed)

    def logout(self):
        d = self.call("POST", "/api/logout", {"id": self.id, "uuid": self.uuid})
        return d.addCallback(lambda answer: setattr(self, "token", None) or answer)

    def oidc_auth(self, provider):
        return self.call("POST", "/api/oidc/auth", {
            "op": provider, "id": self.id, "uuid": self.uuid, "deviceInfo": self.device_info(),
            "apiDomain": self.base}, auth=False).addCallback(self.parsed)

    def oidc_query(self, code):
        return self.call("GET", f"/api/oidc/auth-query?code={code}&id={self.id}&uuid={self.uuid}",
                         auth=False)

    # -- 1.2 device telemetry ---------------------------------------------------------

    def sysinfo(self, **presets):
        body = {"cpu": "Intel(R) Core(TM) i5, 3.4GHz, 8/4 cores", "memory": "15.9GB",
                "os": "debian / Linux 12 (bookworm)", "hostname": self.hostname,
                "username": "user", "version": self.version, "id": self.id, "uuid": self.uuid}
        body.update(presets)
        return self.call("POST", "/api/sysinfo", body, auth=False)

    def sysinfo_ver(self):
        return self.call("POST", "/api/sysinfo_ver", {"id": self.id, "uuid": self.uuid},
                         auth=False)

    def heartbeat(self, conns=(), modified_at=0):
        body = {"id": self.id, "uuid": self.uuid, "ver": version_number(self.version),
                "modified_at": modified_at}
        if conns:
            body["conns"] = list(conns)
        return self.call("POST", "/api/heartbeat", body, auth=False)

    # -- 1.3 legacy address book ------------------------------------------------------

    def legacy_pull(self):
        return self.call("GET", "/api/ab", headers={"Accept-Encoding": "gzip"})

    def legacy_push(self, book):
        return self.call("POST", "/api/ab", {"data": json.dumps(book)})

    def sciter_pull(self):
        return self.call("POST", "/api/ab/get", {})

    # -- 1.4 personal and shared address books ------------------------------------------

    def ab_personal(self):
        return self.call("POST", "/api/ab/personal", empty=True)

    def ab_settings(self):
        return self.call("POST", "/api/ab/settings", empty=True).addCallback(self.parsed)

    def ab_shared_profiles(self):
        return self.paged("POST", "/api/ab/shared/profiles", {})

    def ab_peers(self, guid):
        return self.paged("POST", "/api/ab/peers", {"ab": guid})

    def ab_tags(self, guid):
        return self.call("POST", f"/api/ab/tags/{guid}", empty=True).addCallback(self.parsed)

    def ab_add_peer(self, guid, peer):
        return self.call("POST", f"/api/ab/peer/add/{guid}", peer).addCallback(self.done)

    def ab_update_peer(self, guid, fields):
        return self.call("PUT", f"/api/ab/peer/update/{guid}", fields).addCallback(self.done)

    def ab_delete_peers(self, guid, ids):
        return self.call("DELETE", f"/api/ab/peer/{guid}", list(ids)).addCallback(self.done)

    def ab_add_tag(self, guid, name, color):
        return self.call("POST", f"/api/ab/tag/add/{guid}", {"name": name, "color": color}
                         ).addCallback(self.done)

    def ab_rename_tag(self, guid, old, new):
        return self.call("PUT", f"/api/ab/tag/rename/{guid}", {"old": old, "new": new}
                         ).addCallback(self.done)

    def ab_update_tag(self, guid, name, color):
        return self.call("PUT", f"/api/ab/tag/update/{guid}", {"name": name, "color": color}
                         ).addCallback(self.done)

    def ab_delete_tags(self, guid, names):
        return self.call("DELETE", f"/api/ab/tag/{guid}", list(names)).addCallback(self.done)

    # -- 1.5 accessible devices -----------------------------------------------------------

    def accessible_device_groups(self):
        return self.paged("GET", "/api/device-group/accessible", {})

    def accessible_users(self):
        return self.paged("GET", "/api/users", {"accessible": "", "status": "1"})

    def accessible_peers(self):
        return self.paged("GET", "/api/peers", {"accessible": "", "status": "1"})

    @inlineCallbacks
    def paged(self, method, path, query):
        """Every item, fetching pages of 100 while ``current * pageSize < total``."""
        items, current = [], 1
        while True:
            parameters = dict(query, current=str(current), pageSize=str(PAGE_SIZE))
            url = path + "?" + "&".join(f"{k}={v}" for k, v in parameters.items())
            page = self.parsed((yield self.call(method, url, empty=method == "POST")))
            items.extend(page.get("data") or [])
            if current * PAGE_SIZE >= page.get("total", 0):
                returnValue(items)
            current += 1

    # -- 1.6 audit --------------------------------------------------------------------

    def _audit(self, kind, body):
        body = dict(body, id=self.id, uuid=self.uuid, nonce=str(uuidlib.uuid4()))
        return self.call("POST", f"/api/audit/{kind}", body, auth=False)

    def audit_open(self, conn_id, session_id, ip, conn_audit_ref=None):
        body = {"conn_id": conn_id, "session_id": session_id, "action": "new", "ip": ip}
        if conn_audit_ref:
            body["conn_audit_ref"] = conn_audit_ref
        return self._audit("conn", body)

    def audit_authorised(self, conn_id, session_id, controller_id, controller_name,
                         conn_type=0, primary_auth=3):
        return self._audit("conn", {"conn_id": conn_id, "session_id": session_id,
                                    "peer": [controller_id, controller_name],
                                    "type": conn_type, "primary_auth": primary_auth})

    def audit_close(self, conn_id, session_id):
        return self._audit("conn", {"conn_id": conn_id, "session_id": session_id,
                                    "action": "close"})

    def audit_note(self, remote_id, session_id, note):
        """The controlling side's mid-session note: ``id`` is the remote peer's."""
        return self.call("POST", "/api/audit/conn", {"id": remote_id, "session_id": session_id,
                                                     "note": note}, auth=False)

    def audit_active(self, remote_id, session_id, conn_type=0):
        return self.call("GET", f"/api/audit/conn/active?id={remote_id}&session_id={session_id}"
                                f"&conn_type={conn_type}")

    def audit_put_note(self, guid, note):
        return self.call("PUT", "/api/audit", {"guid": guid, "note": note})

    def audit_file(self, peer_id, conn_id, direction, path, files):
        info = {"ip": "192.0.2.7", "name": "controller", "num": len(files),
                "files": [[name, size] for name, size in files][:10]}
        return self._audit("file", {"peer_id": peer_id, "conn_id": conn_id, "type": direction,
                                    "path": path, "is_file": len(files) == 1,
                                    "info": json.dumps(info)})

    def audit_alarm(self, typ, info, conn_id=0):
        return self._audit("alarm", {"typ": typ, "info": json.dumps(info), "conn_id": conn_id})

    # -- 1.7 provisioning, 1.8 switch sides, 1.9 recordings --------------------------------

    def deploy(self, api_token, public_key, new_id=None):
        body = {"id": new_id or self.id, "uuid": self.uuid,
                "pk": base64.b64encode(public_key).decode()}
        return self.call("POST", "/api/devices/deploy", body, auth=False,
                         headers={"Authorization": f"Bearer {api_token}"})

    def assign(self, api_token, **fields):
        return self.call("POST", "/api/devices/cli", dict(fields, id=self.id, uuid=self.uuid),
                         auth=False, headers={"Authorization": f"Bearer {api_token}"})

    def switch_grant(self, signing_key, now=None):
        """Signed with the device's own Ed25519 key (a ``nacl.signing.SigningKey``)."""
        switch_code = base64.b64encode(hashlib.sha256(self.uuid.encode()).digest()).decode()
        verifier = base64.b64encode(hashlib.sha256(
            b"switch-grant-verifier\0" + switch_code.encode()).digest()).decode()
        timestamp = str(int(time.time() if now is None else now))
        message = b"\0".join([b"switch-grant", self.id.encode(), verifier.encode(),
                              timestamp.encode()])
        signature = base64.b64encode(signing_key.sign(message).signature).decode()
        return self.call("POST", "/api/switch-grant", {
            "id": self.id, "switch_code_verifier": verifier, "timestamp": timestamp,
            "signature": signature}, auth=False)

    def record(self, kind, file_name, data=b"", offset=None, length=None, query=""):
        path = f"/api/record?type={kind}&file={file_name}"
        if offset is not None:
            path += f"&offset={offset}&length={length if length is not None else len(data)}"
        return self.call("POST", path + query, raw=data, auth=False)


def version_number(version):
    """The heartbeat's ``ver`` (API.md 1.2: 1.4.2 → 1004020; a ``-N`` build adds N)."""
    release, _, build = version.partition("-")
    parts = [int(p) if p.isdigit() else 0 for p in release.split(".")][:3]
    parts += [0] * (3 - len(parts))
    return (parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2] * 10
            + (int(build) if build.isdigit() else 0))
