"""Shared helpers of the delivery tests: readings of fake devices, and a small fake collector
on 127.0.0.1 that speaks the contract's /v1/batches (validates every body with
``wattledger.wire.validate``, dedupes on (stream, seq), answers what a test scripts)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wattledger.agent.reading import DeviceReading
from wattledger.contract import Device
from wattledger.wire import BatchError, validate


def make_devices(n: int, prefix: str = "GPU-test") -> list[Device]:
    return [Device(id=f"{prefix}-{i}", kind="gpu", index=i, model="NVIDIA H100 80GB HBM3",
                       power_limit_w=700.0, slowdown_c=87.0, shutdown_c=92.0) for i in range(n)]


def make_sample(devices: list[Device], k: int, t0: float = 1_700_000_000.0) -> list[DeviceReading]:
    """Sample number ``k`` (1 s apart): every device, a power and a growing energy counter."""
    return [DeviceReading(device=d, ts=t0 + k, power_w=300.0 + d.index,
                          energy_j=1000.0 + k * (300.0 + d.index), temp_c=60.0, util=0.9) for d in devices]


@dataclass
class Scripted:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, object] = field(default_factory=lambda: {"error": "scripted"})
    commit: bool = False  # commit the batch, then answer this (or drop the answer: status 0)


class FakeCollector:
    """A fake of the collector's ingest endpoint, for the shipper's retry behaviour.

    Normal behaviour: a valid body with a known token is committed once per (stream, seq)
    and answered ``200 {"accepted": n, "duplicate": bool}``; an invalid one gets the wire's
    4xx. ``script`` holds answers for the next requests (before any of that)."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {"node-a": "tok-a"})
        self.script: deque[Scripted] = deque()
        self.committed: dict[tuple[str, int], int] = {}  # (stream, seq) -> readings
        self.readings: list[tuple[str, float]] = []  # (device id, ts) committed, in order
        self.answers: list[int] = []  # status of every request (0: answer dropped)
        self.claimed: list[str | None] = []  # the X-Wattledger-Node header of every request
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                status, headers, payload = collector.handle(self.headers, raw)
                if status == 0:  # the answer is lost: close without a word
                    self.close_connection = True
                    return
                out = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def handle(self, headers: object, raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
        with self.lock:
            self.claimed.append(headers.get("X-Wattledger-Node"))  # type: ignore[attr-defined]
            scripted = self.script.popleft() if self.script else None
            if scripted is not None and not scripted.commit:
                self.answers.append(scripted.status)
                return scripted.status, scripted.headers, scripted.body
            auth = headers.get("Authorization", "")  # type: ignore[attr-defined]
            try:
                body = gzip.decompress(raw) if headers.get("Content-Encoding") == "gzip" else raw  # type: ignore[attr-defined]
                valid = validate(body, time.time() + 10 * 365 * 86400)
            except BatchError as exc:
                self.answers.append(exc.status)
                return exc.status, {}, exc.to_json()
            batch = valid.batch
            if auth != f"Bearer {self.tokens.get(batch.node, '')}":
                self.answers.append(401)
                return 401, {}, {"error": "unknown token"}
            key = (batch.stream, batch.seq)
            duplicate = key in self.committed
            if not duplicate:
                self.committed[key] = len(valid.columns)
                ids = {d.index: d.id for d in batch.devices}
                self.readings += [(ids[int(i)], float(t)) for i, t in
                                  zip(valid.columns.device, valid.columns.ts, strict=True)]
            status = scripted.status if scripted is not None else 200
            self.answers.append(status)
            return status, {}, {"accepted": 0 if duplicate else len(valid.columns), "duplicate": duplicate}

    def wait_for(self, readings: int, timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.readings) >= readings:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    fake = FakeCollector()
    yield fake
    fake.close()
