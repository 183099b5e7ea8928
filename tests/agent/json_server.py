"""A small JSON-over-HTTP(S) server on 127.0.0.1 for the allocation sources' tests: the
Kubernetes API server's pod and namespace objects, slurmrestd's recorded /jobs answer.

``routes`` maps a path (query string ignored) to a JSON document; a request must carry every
header of ``required`` with its value (a bearer token, slurmrestd's X-SLURM-USER-TOKEN),
else 401 with a JSON status, as the real services answer; an unknown path is 404. ``paths``
lists what was asked, ``headers`` the headers of each request, ``down`` answers 503. A route
whose document is ``bytes`` is sent as it is (a broken answer); ``stall_seconds`` holds every
answer back that long (a server that hangs).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme


def tls_for(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 issued by the test CA."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    return tls


class JsonServer:
    def __init__(self, routes: Mapping[str, Any], *, required: Mapping[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.routes = dict(routes)
        self.required = dict(required or {})
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.down = False
        self.stall_seconds = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.paths.append(path)
                outer.headers.append(dict(self.headers.items()))
                if outer.stall_seconds:
                    time.sleep(outer.stall_seconds)
                if outer.down:
                    self._send(503, {"kind": "Status", "status": "Failure", "code": 503})
                elif any(self.headers.get(k) != v for k, v in outer.required.items()):
                    self._send(401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized",
                                     "code": 401})
                elif path not in outer.routes:
                    self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound",
                                     "code": 404})
                else:
                    self._send(200, outer.routes[path])

        return Handler
