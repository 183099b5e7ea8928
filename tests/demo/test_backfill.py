"""Backfill: wire-valid batches whose counters carry exactly the simulator's energy, sent in order
through a real HTTP server, re-sent on 503, stopped on a refusal."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from demokit import NOW

from wattledger.agent.sources.simulated import SimulatedSource
from wattledger.demo.backfill import (
    MAX_BATCH_READINGS,
    NodePlan,
    Progress,
    node_batches,
    run_backfill,
    simulated_source,
    timestamps,
)
from wattledger.demo.scenario import Scenario, Server
from wattledger.wire import BatchError, validate


def test_timestamps_end_exactly_at_the_end() -> None:
    assert timestamps(0.0, 10.0, 5.0) == [0.0, 5.0, 10.0]
    assert timestamps(0.0, 12.0, 5.0) == [0.0, 5.0, 10.0, 12.0]
    assert timestamps(3.0, 3.0, 5.0) == []


def test_the_backfill_source_is_the_live_agents_simulator(scenario: Scenario) -> None:
    server = scenario.servers[1]
    ours = simulated_source(server).sample(NOW).readings
    agents = SimulatedSource(server.node, server.gpus, workloads=(server.workload,), seed=server.seed,
                             node_meter_w=server.node_meter_w)
    theirs = agents.sample(NOW).readings
    assert [r.device.id for r in ours] == [r.device.id for r in theirs]
    assert [r.energy_j for r in ours] == [r.energy_j for r in theirs]


def test_batches_validate_and_carry_the_simulators_energy_exactly(scenario: Scenario) -> None:
    server = scenario.servers[0]
    source = simulated_source(server)
    assert isinstance(source, SimulatedSource)
    ts = timestamps(NOW - 3 * 86400, NOW, 300.0)
    labels = server.labels("dc-east")
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    seqs, total = [], 0
    for n, body in node_batches(server.node, source, server.gpus, "backfill-x", labels, ts):
        valid = validate(gzip.decompress(body), NOW)
        b = valid.batch
        assert (b.node, b.stream, b.labels) == (server.node, "backfill-x", labels)
        assert n == len(valid.columns) <= MAX_BATCH_READINGS
        ids = dict(enumerate(d.id for d in b.devices))  # readings name devices by position
        for dev, energy in zip(b.readings.device, b.readings.energy_j or [], strict=True):
            assert energy is not None
            first.setdefault(ids[dev], energy)
            last[ids[dev]] = energy
        seqs.append(b.seq)
        total += n
    assert seqs == list(range(1, len(seqs) + 1))
    assert total == len(ts) * server.devices  # its GPUs and its BMC
    # the counters' rise is the energy the simulated GPUs drew (ground truth), to the millijoule
    for gpu in source.gpus:
        assert last[gpu.info.id] - first[gpu.info.id] == pytest.approx(gpu.drawn_j, abs=0.01)
    drawn_kwh = sum(g.drawn_j for g in source.gpus) / 3.6e6
    assert 3 * 24 * 8 * 0.3 < drawn_kwh < 3 * 24 * 8 * 0.7  # a training server: 300..700 W a GPU


class FakeCollector(ThreadingHTTPServer):
    """POST /v1/batches as the contract answers it: the body validated by the wire module,
    (stream, seq) deduped, and a scripted list of statuses to answer first."""

    def __init__(self, script: list[int] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = list(script or [])
        self.batches: list[dict[str, Any]] = []
        self.seen: set[tuple[str, int]] = set()
        self.tokens: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeCollector

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = self.server.script.pop(0) if self.server.script else 200
            answer = orjson.dumps({"error": "scripted", "detail": None})
            if status == 200:
                try:
                    valid = validate(gzip.decompress(data), NOW)
                except BatchError as exc:  # the backfill then stops with this reason
                    status, answer = exc.status, orjson.dumps(exc.to_json())
                else:
                    key = (valid.batch.stream, valid.batch.seq)
                    if key not in self.server.seen:
                        self.server.seen.add(key)
                        self.server.batches.append(orjson.loads(gzip.decompress(data)))
                    self.server.tokens.append(self.headers["Authorization"])
                    answer = orjson.dumps({"accepted": len(valid.columns), "duplicate": False})
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0.05")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def fake_collector(request: pytest.FixtureRequest) -> Iterator[FakeCollector]:
    server = FakeCollector(getattr(request, "param", None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def plans(scenario: Scenario, start: float) -> list[NodePlan]:
    small = [Server(s.node, s.workload, s.cluster, gpus=2, seed=s.seed) for s in scenario.servers[:2]]
    return [NodePlan(s, s.labels("dc-east"), f"token-{s.node}", start) for s in small]


@pytest.mark.parametrize("fake_collector", [[503, 503]], indirect=True)
def test_run_backfill_delivers_every_reading_in_order_and_retries(
        fake_collector: FakeCollector, scenario: Scenario) -> None:
    progress, stop = Progress(), threading.Event()
    start = NOW - 2 * 86400
    run_backfill(plans(scenario, start), fake_collector.url, NOW - 600, 60.0, progress, stop,
                 clock=None)
    assert progress.done and progress.error is None
    assert progress.sent == progress.total == 2 * 2 * len(timestamps(start, NOW - 600, 60.0))
    for node in ("demo-gpu-01", "demo-gpu-02"):
        mine = [b for b in fake_collector.batches if b["node"] == node]
        assert [b["seq"] for b in mine] == list(range(1, len(mine) + 1))
        assert {b["stream"] for b in mine} == {f"backfill-{node}-{int(start)}"}
        assert sum(len(b["readings"]["ts"]) for b in mine) == progress.total // 2
    assert set(fake_collector.tokens) == {"Bearer token-demo-gpu-01", "Bearer token-demo-gpu-02"}


def test_run_backfill_catches_up_with_the_clock(fake_collector: FakeCollector, scenario: Scenario) -> None:
    """The history first ends where the backfill began; a second pass reaches the clock's now."""
    progress, stop = Progress(), threading.Event()
    run_backfill(plans(scenario, NOW - 7200)[:1], fake_collector.url, NOW - 3600, 300.0, progress, stop,
                 clock=lambda: NOW)
    assert progress.done
    last = max(t for b in fake_collector.batches for t in b["readings"]["ts"])
    assert last == NOW and progress.end == NOW


@pytest.mark.parametrize("fake_collector", [[422]], indirect=True)
def test_a_refused_batch_stops_the_backfill_with_the_collectors_reason(
        fake_collector: FakeCollector, scenario: Scenario) -> None:
    progress, stop = Progress(), threading.Event()
    run_backfill(plans(scenario, NOW - 86400)[:1], fake_collector.url, NOW, 300.0, progress, stop,
                 clock=None)
    assert not progress.done
    assert progress.error is not None and "HTTP 422" in progress.error and "scripted" in progress.error


def test_a_stop_ends_the_backfill_while_the_collector_is_down(scenario: Scenario) -> None:
    progress, stop = Progress(), threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    run_backfill(plans(scenario, NOW - 86400)[:1], "http://127.0.0.1:9", NOW, 300.0, progress, stop,
                 clock=None)
    timer.join()
    assert not progress.done and progress.sent == 0 and progress.error is None
