"""Helpers of the collector's HTTP tests: a fake ledger with the real interface, batch bodies,
an app with its lifespan running, and a real `wattledger collector` process on loopback."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp

from tests.loopback import free_port, wait_group_gone
from wattledger.collector.accounting.history import HistorySnapshot
from wattledger.collector.api.app import create_app
from wattledger.collector.api.fastpath import FastPath
from wattledger.collector.ingest.transaction import IngestResult, UnknownSite
from wattledger.collector.settings import CollectorSettings, settings_from
from wattledger.wire import ValidBatch

NOW = 1_764_260_000.0
TOKENS = {"gpu-node-01": "tok-one", "gpu-node-02": "tok-two"}
AUTH = {"Authorization": "Bearer tok-one", "Content-Type": "application/json"}


class _FakeCollector(Collector):
    def __init__(self, ledger: FakeLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("wattledger_ingest_readings", "readings committed", labels=["node"])
        for node, n in sorted(self._ledger.readings.items()):
            fam.add_metric([node], n)
        yield fam


@dataclass
class FakeLedger:
    """The Ledger interface with dedupe by (stream, seq) and a count of readings per node, in memory.

    It does no accounting (the real Ledger is tested by its own suite); it records what the HTTP
    layer hands it, so that tests can see what was committed and in how many transactions.
    """

    sites: Sequence[str] = ("default",)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    readings: dict[str, int] = field(default_factory=dict)
    transactions: list[int] = field(default_factory=list)  # batches per ingest() call
    refreshes: int = 0
    closed: bool = False
    fail_with: Exception | None = None
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, batch: ValidBatch) -> None:
        site = batch.batch.labels.get("site", "default")
        if site not in self.sites:
            raise UnknownSite(site)

    def ingest(self, batches: Sequence[ValidBatch]) -> list[IngestResult]:
        with self.lock:
            if self.delay:
                time.sleep(self.delay)
            if self.fail_with is not None:
                raise self.fail_with
            for b in batches:
                self.check(b)
            out = []
            for b in batches:
                key = (b.batch.stream, b.batch.seq)
                if key in self.committed:
                    out.append(IngestResult(0, True))
                    continue
                n = len(b.columns)
                self.committed[key] = n
                self.readings[b.batch.node] = self.readings.get(b.batch.node, 0) + n
                out.append(IngestResult(n, False))
            self.transactions.append(len(batches))
            return out

    def collector(self) -> Collector:
        return _FakeCollector(self)

    def spend(self, *, site: str | None, month: str | None, group_by: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{group_by: node, "month": month or "2025-11", "readings": n}
                    for node, n in sorted(self.readings.items())]

    def jobs(self, *, site: str, since: float, until: float, team: str | None = None) -> list[dict[str, Any]]:
        with self.lock:  # one "job" per node that pushed, as spend has one row per node
            return [{"site": site, "node": node, "owner": {"job": node}, "devices": [], "start": since,
                     "end": until, "team": team, "readings": n} for node, n in sorted(self.readings.items())]

    def node_names(self) -> list[str]:
        return sorted(self.readings)

    def plan_history(self) -> HistorySnapshot:
        return HistorySnapshot()  # the real interface, with no history of any site

    def ping(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def nodes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"node": node, "readings": n} for node, n in sorted(self.readings.items())]

    def refresh(self) -> None:
        self.refreshes += 1

    def close(self) -> None:
        self.closed = True

    def state(self) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
        with self.lock:
            return dict(self.committed), dict(self.readings)


def settings(**over: Any) -> CollectorSettings:
    values: dict[str, Any] = {"listen": "127.0.0.1:0", "db": "sqlite:////nonexistent/unused.db",
                              "tokens": dict(TOKENS), "refresh_interval_seconds": 60}
    values.update(over)
    return settings_from(values)


def batch(node: str = "gpu-node-01", seq: int = 1, n: int = 4, *, stream: str = "s-1",
          t0: float = NOW - 60, e0: float = 1000.0, **labels: str) -> dict[str, Any]:
    """A valid batch of ``n`` readings of one GPU, one second apart, its counter from ``e0`` J."""
    return {
        "node": node, "stream": stream, "seq": seq, "labels": dict(labels),
        "devices": [{"id": "GPU-0000", "kind": "gpu", "index": 0, "model": "NVIDIA H100 80GB HBM3",
                     "power_limit_w": 700.0, "slowdown_c": 87.0, "shutdown_c": 92.0}],
        "readings": {"device": [0] * n, "ts": [t0 + i for i in range(n)],
                     "power_w": [500.0 + i for i in range(n)],
                     "energy_j": [e0 + 500.0 * i for i in range(n)],
                     "temp_c": [60.0] * n, "util": [0.9] * n},
    }


def changed(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with each dotted path (``readings.power_w.1``) set to its value."""
    doc = json.loads(json.dumps(doc))
    for path, value in changes.items():
        where: Any = doc
        *parents, last = path.split(".")
        for part in parents:
            where = where[int(part)] if isinstance(where, list) else where[part]
        if isinstance(where, list):
            where[int(last)] = value
        else:
            where[last] = value
    return doc


def body(doc: Any, *, gz: bool = False) -> bytes:
    raw = json.dumps(doc).encode()
    return gzip.compress(raw) if gz else raw


@contextlib.asynccontextmanager
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app, with the app's lifespan (start-up, shutdown) around it."""
    inner = fastapi_of(app)
    async with inner.router.lifespan_context(inner):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as c:
            yield c


def fastapi_of(app: ASGIApp) -> FastAPI:
    """The FastAPI application of ``create_app``'s answer (inside its FastPath, when it has one)."""
    inner = app.app if isinstance(app, FastPath) else app
    assert isinstance(inner, FastAPI)
    return inner


def make_app(ledger: FakeLedger | None = None, *, fast_ingest: bool = True,
             **over: Any) -> tuple[ASGIApp, FakeLedger]:
    ledger = ledger or FakeLedger()
    return create_app(settings(**over), ledger=ledger, clock=lambda: NOW, fast_ingest=fast_ingest), ledger


# ---------------------------------------------------------------------------- real process

WATTLEDGER = str(Path(sys.executable).parent / "wattledger")


@dataclass
class Collector_:
    """A `wattledger collector` process started by a test."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        wait_group_gone(self.proc.pid)  # its workers too: the next collector takes the ledger
        return int(self.proc.returncode)


def trace(count: int, t0: float, node: str = "gpu-node-01", stream: str = "s-1") -> list[dict[str, Any]]:
    """``count`` consecutive batches of one GPU's continuous trace (4 readings, 1 s apart each)."""
    return [batch(node, seq, 4, stream=stream, t0=t0 + 4 * (seq - 1), e0=1000.0 + 2000.0 * (seq - 1))
            for seq in range(1, count + 1)]


def start_collector(workdir: Path, cfg: dict[str, Any], *, name: str = "collector",
                    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
                    timeout: float = 40.0, scheme: str = "http") -> Collector_:
    port = free_port()
    cfg = {**cfg, "listen": f"127.0.0.1:{port}"}
    conf = workdir / f"{name}.yaml"
    conf.write_text(json.dumps(cfg))
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([WATTLEDGER, "collector", "--config", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{scheme}://127.0.0.1:{port}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited {proc.returncode}: {log.read_text()[-800:]}")
        try:
            if ready(httpx.get(f"{url}/readyz", timeout=2, verify=False)):  # a test's own cert
                return Collector_(proc, url, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"collector not ready in {timeout:.0f}s: {log.read_text()[-800:]}")
