"""Just enough of the collector's ``POST /v1/batches`` for the agent's own tests."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wattledger.wire import validate


class StubCollector:
    """Just enough of POST /v1/batches: checks the token and the batch, counts readings."""

    def __init__(self, token: str) -> None:
        self.readings = 0
        self.seqs: list[int] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                ok = self.headers.get("Authorization") == f"Bearer {token}"
                if ok:
                    batch = validate(raw, time.time())
                    stub.readings += len(batch.columns)
                    stub.seqs.append(batch.batch.seq)
                body = json.dumps({"accepted": stub.readings, "duplicate": False} if ok else {"error": "x"})
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
