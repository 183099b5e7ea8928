"""A Redfish service on 127.0.0.1 over DMTF's mockup files, with what a real BMC does and
``sushy-static`` does not: session login (``POST SessionService/Sessions`` -> 201 with
``X-Auth-Token`` and ``Location``, 401 for bad credentials, every other resource 401 without
a live session or HTTP Basic credentials, ``DELETE`` of the session), sessions that expire,
TLS, readings that move, resources a BMC lacks, and a BMC that hangs.

``sushy-static`` (sushy-tools) serves a mockup folder read-only: its POST answers 204 without
a token, nothing ever needs a login, and it is single-threaded. It is used by one test as
is (see test_redfish.py); everything about sessions, expiry and hanging is this server's.
The mockup files themselves are never changed: ``set`` and ``remove`` patch the JSON as it
is served.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MOCKUPS = Path(__file__).parent / "redfish_mockups"
SESSIONS = "/redfish/v1/SessionService/Sessions"


class FakeBmc:
    def __init__(self, mockup: str, *, user: str = "monitor", password: str = "s3cret-pw",
                 tls: ssl.SSLContext | None = None) -> None:
        self.root = MOCKUPS / mockup
        self.user, self.password = user, password
        self.sessions: dict[str, str] = {}  # token -> session path
        self.logins = 0
        self.refused_logins = 0
        self.unauthorized = 0  # GETs answered 401
        self.requests: list[tuple[str, str]] = []
        self.hang = threading.Event()  # set: every request waits until released
        self.release = threading.Event()
        self.hanging = 0  # requests waiting right now
        self._patches: dict[str, dict[str, Any]] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what tests change

    def set(self, path: str, pointer: str, value: Any) -> None:
        """Serve ``value`` at JSON pointer ``pointer`` of resource ``path`` (None deletes)."""
        with self._lock:
            self._patches.setdefault(path.rstrip("/"), {})[pointer] = value

    def remove(self, path: str) -> None:
        """Answer 404 for ``path`` (a BMC without that resource)."""
        with self._lock:
            self._removed.add(path.rstrip("/"))

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ serving

    def resource(self, path: str) -> dict[str, Any] | None:
        path = path.split("?")[0].rstrip("/") or "/redfish/v1"
        with self._lock:
            if path in self._removed:
                return None
            patches = dict(self._patches.get(path, {}))
        if not path.startswith("/redfish/v1"):
            return None
        file = self.root / path.removeprefix("/redfish/v1").lstrip("/") / "index.json"
        if not file.is_file():
            return None
        body: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        for pointer, value in patches.items():
            body = _patched(body, pointer, value)
        return body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bmc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _wait_if_hung(self) -> None:
                if bmc.hang.is_set():
                    with bmc._lock:
                        bmc.hanging += 1
                    bmc.release.wait(120)
                    with bmc._lock:
                        bmc.hanging -= 1

            def _authorized(self) -> bool:
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    return (user, password) == (bmc.user, bmc.password)
                token = self.headers.get("X-Auth-Token")
                with bmc._lock:
                    return token is not None and token in bmc.sessions

            def do_GET(self) -> None:
                bmc.requests.append(("GET", self.path))
                self._wait_if_hung()
                path = self.path.split("?")[0].rstrip("/")
                if path not in ("/redfish/v1", "/redfish") and not self._authorized():
                    bmc.unauthorized += 1
                    self._send(401, {"error": {"code": "Base.1.0.NoValidSession",
                                               "message": "No valid session"}})
                    return
                body = bmc.resource(path)
                if body is None:
                    self._send(404, {"error": {"code": "Base.1.0.ResourceMissingAtURI",
                                               "message": f"{path} not found"}})
                    return
                self._send(200, body)

            def do_POST(self) -> None:
                bmc.requests.append(("POST", self.path))
                self._wait_if_hung()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") != SESSIONS:
                    self._send(405, {"error": {"message": "not allowed"}})
                    return
                try:
                    creds = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "bad JSON"}})
                    return
                if creds.get("UserName") != bmc.user or creds.get("Password") != bmc.password:
                    bmc.refused_logins += 1
                    self._send(401, {"error": {"message": "Invalid username or password"}})
                    return
                token = secrets.token_hex(16)
                with bmc._lock:
                    bmc.logins += 1
                    location = f"{SESSIONS}/{bmc.logins}"
                    bmc.sessions[token] = location
                self._send(201, {"@odata.id": location, "Id": str(bmc.logins), "UserName": bmc.user},
                           {"X-Auth-Token": token, "Location": location})

            def do_DELETE(self) -> None:
                bmc.requests.append(("DELETE", self.path))
                token = self.headers.get("X-Auth-Token")
                with bmc._lock:
                    known = token is not None and bmc.sessions.get(token) == self.path.rstrip("/")
                    if known:
                        del bmc.sessions[token]  # type: ignore[arg-type]
                self._send(204 if known else 401)

        return Handler


def _patched(body: dict[str, Any], pointer: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    parts = [p for p in pointer.split("/") if p]
    node: Any = out
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out
